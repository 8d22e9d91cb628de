//! The catalog's one error type. The server maps each variant to a SQLSTATE.

/// Everything that can go wrong while reading or changing the catalog.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{kind} \"{name}\" already exists")]
    Duplicate { kind: ObjectClass, name: String },
    #[error("{kind} \"{name}\" does not exist")]
    NotFound { kind: ObjectClass, name: String },
    #[error("cannot drop {kind} \"{name}\" because other objects depend on it")]
    HasDependents {
        kind: ObjectClass,
        name: String,
        dependents: Vec<String>,
    },
    #[error("catalog storage error: {0}")]
    Storage(#[from] rusqlite::Error),
    #[error("catalog data is corrupt: {0}")]
    Corrupt(String),
}

/// What an error names, in PostgreSQL's words (`relation "x" does not exist`). It also picks
/// the condition: relations are 42P01 when missing, other objects 42704.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectClass {
    /// A table, model, source or view named where any of them would do.
    Relation,
    Table,
    Model,
    Source,
    View,
    Schema,
    Column,
    Job,
    Secret,
    Connection,
    Test,
    /// A configuration parameter (`SHOW name`).
    Setting,
    /// Anything else.
    Object,
}

impl ObjectClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Relation => "relation",
            Self::Table => "table",
            Self::Model => "model",
            Self::Source => "source",
            Self::View => "view",
            Self::Schema => "schema",
            Self::Column => "column",
            Self::Job => "job",
            Self::Secret => "secret",
            Self::Connection => "connection",
            Self::Test => "test",
            Self::Setting => "configuration parameter",
            Self::Object => "object",
        }
    }

    /// Whether PostgreSQL calls it a relation (tables, models, sources and views).
    pub fn is_relation(self) -> bool {
        matches!(
            self,
            Self::Relation | Self::Table | Self::Model | Self::Source | Self::View
        )
    }
}

impl std::fmt::Display for ObjectClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<crate::ObjectKind> for ObjectClass {
    fn from(kind: crate::ObjectKind) -> Self {
        use crate::ObjectKind as K;
        match kind {
            K::Table => Self::Table,
            K::Model => Self::Model,
            K::Source => Self::Source,
            K::View => Self::View,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Corrupt(e.to_string())
    }
}
