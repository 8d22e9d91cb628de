//! The catalog's one error type. The server maps each variant to a SQLSTATE.

/// Everything that can go wrong while reading or changing the catalog.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{kind} \"{name}\" already exists")]
    Duplicate { kind: &'static str, name: String },
    #[error("{kind} \"{name}\" does not exist")]
    NotFound { kind: &'static str, name: String },
    #[error("cannot drop {kind} \"{name}\" because other objects depend on it")]
    HasDependents {
        kind: &'static str,
        name: String,
        dependents: Vec<String>,
    },
    #[error("catalog storage error: {0}")]
    Storage(#[from] rusqlite::Error),
    #[error("catalog data is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Corrupt(e.to_string())
    }
}
