//! Tributary's one error type. Variants say *what* went wrong in terms a user can act on;
//! each names its PostgreSQL condition ([`Error::sqlstate`], in `sqlstate.rs`), which the
//! server writes to the wire in one place. The conversions from the engines below (the
//! catalog, DataFusion, delta-rs) live here because Rust allows them only beside the type.

use datafusion::error::DataFusionError;
pub use tributary_catalog::ObjectClass;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("syntax error: {0}")]
    Syntax(String),
    #[error("{kind} \"{name}\" does not exist")]
    UndefinedObject { kind: ObjectClass, name: String },
    #[error("{0}")]
    UndefinedColumn(String),
    #[error("{kind} \"{name}\" already exists")]
    DuplicateObject { kind: ObjectClass, name: String },
    #[error("cannot drop {kind} \"{name}\" because other objects depend on it")]
    DependentObjects {
        kind: ObjectClass,
        name: String,
        dependents: Vec<String>,
    },
    /// A column that a model replacement would drop or retype while another object reads it.
    #[error(
        "cannot drop or change the type of column \"{column}\" because other objects depend on it"
    )]
    ColumnInUse {
        column: String,
        dependents: Vec<String>,
    },
    #[error("{0}")]
    WrongObjectType(String),
    #[error("dependency cycle: {0}")]
    Cycle(String),
    #[error("{message}")]
    BadInput {
        message: String,
        detail: Option<String>,
    },
    #[error("invalid value for option \"{option}\": {message}")]
    InvalidOption { option: String, message: String },
    #[error("{0} is not supported")]
    NotSupported(String),
    /// A source could not be read: unreachable, timed out, or answered with an error status.
    #[error("{0}")]
    SourceUnavailable(String),
    /// A source's data no longer fits its columns (a field changed type or went away).
    #[error("{0}")]
    SchemaDrift(String),
    #[error("permission denied: {0}")]
    InsufficientPrivilege(String),
    #[error("canceling statement due to user request")]
    Cancelled,
    #[error("canceling statement due to statement timeout")]
    StatementTimeout,
    #[error("refresh of model \"{model}\" failed: {source}")]
    RefreshFailed {
        model: String,
        #[source]
        source: Box<Error>,
    },
    #[error("job \"{job}\" failed: {source}")]
    JobFailed {
        job: String,
        #[source]
        source: Box<Error>,
    },
    /// A data test found failing rows in a refresh's new version (write-audit-publish);
    /// `kind` is the test's kind (`unique`, `not_null`, ...), which picks the SQLSTATE.
    #[error("{message}")]
    TestFailed { kind: String, message: String },
    #[error(transparent)]
    Catalog(tributary_catalog::Error),
    #[error("{}", clean_datafusion_message(.0))]
    DataFusion(#[from] DataFusionError),
    #[error("storage error: {0}")]
    Delta(deltalake::DeltaTableError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<datafusion::sql::sqlparser::parser::ParserError> for Error {
    fn from(e: datafusion::sql::sqlparser::parser::ParserError) -> Self {
        use datafusion::sql::sqlparser::parser::ParserError as P;
        Error::Syntax(match e {
            P::ParserError(m) | P::TokenizerError(m) => m,
            P::RecursionLimitExceeded => "statement nests too deeply".into(),
        })
    }
}

/// Catalog errors that are about the user's objects become the same variants the engine
/// raises itself; the rest stay catalog (storage) errors.
impl From<tributary_catalog::Error> for Error {
    fn from(e: tributary_catalog::Error) -> Self {
        use tributary_catalog::Error as C;
        match e {
            C::Duplicate { kind, name } => Error::DuplicateObject { kind, name },
            C::NotFound { kind, name } => Error::UndefinedObject { kind, name },
            C::HasDependents {
                kind,
                name,
                dependents,
            } => Error::DependentObjects {
                kind,
                name,
                dependents,
            },
            other => Error::Catalog(other),
        }
    }
}

/// Delta operations wrap the errors of the queries they run (a bad CSV row read during a
/// refresh); those keep their own meaning instead of becoming storage errors.
impl From<deltalake::DeltaTableError> for Error {
    fn from(e: deltalake::DeltaTableError) -> Self {
        use deltalake::DeltaTableError as D;
        match e {
            D::Arrow { source } => source.into(),
            D::GenericError { source } => match source.downcast::<DataFusionError>() {
                Ok(df) => Error::DataFusion(*df),
                Err(source) => Error::Delta(D::GenericError { source }),
            },
            // Some Delta write paths flatten the query's error into text; a value that does not
            // parse is still bad input, not a storage failure.
            D::Generic(message)
                if message.contains("Parser error") || message.contains("Cast error") =>
            {
                let text = message
                    .rsplit_once("Parser error: ")
                    .or_else(|| message.rsplit_once("Cast error: "))
                    .map_or(message.as_str(), |(_, rest)| rest);
                Error::bad_input(lowercase_first(text))
            }
            other => Error::Delta(other),
        }
    }
}

impl From<datafusion::arrow::error::ArrowError> for Error {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        Error::DataFusion(DataFusionError::ArrowError(Box::new(e), None))
    }
}

impl From<deltalake::parquet::errors::ParquetError> for Error {
    fn from(e: deltalake::parquet::errors::ParquetError) -> Self {
        Error::DataFusion(DataFusionError::from(e))
    }
}

impl Error {
    pub fn bad_input(message: impl Into<String>) -> Self {
        Error::BadInput {
            message: message.into(),
            detail: None,
        }
    }

    /// The error a user should see first: refresh failures wrap the underlying cause.
    pub fn root(&self) -> &Error {
        match self {
            Error::RefreshFailed { source, .. } => source.root(),
            other => other,
        }
    }
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// DataFusion prefixes messages with its own category ("Error during planning: ..."), and
/// nests context; users want the sentence that says what is wrong.
fn clean_datafusion_message(e: &DataFusionError) -> String {
    let inner = e.find_root();
    let text = inner.to_string();
    const PREFIXES: &[&str] = &[
        "Error during planning: ",
        "Schema error: ",
        "Execution error: ",
        "Arrow error: ",
        "External error: ",
        "Invalid argument error: ",
        "Parser error: ",
        "Cast error: ",
        "SQL error: ",
        "This feature is not implemented: ",
        "Optimizer rule '",
    ];
    let mut out = text.as_str();
    loop {
        let before = out;
        for prefix in PREFIXES {
            if let Some(rest) = out.strip_prefix(prefix) {
                out = rest;
            }
        }
        if before == out {
            break;
        }
    }
    let mut msg = out.trim().to_string();
    if let Some(first) = msg.get(..1)
        && msg
            .get(1..2)
            .is_some_and(|c| c.chars().all(|c| c.is_lowercase() || !c.is_alphabetic()))
    {
        msg = first.to_lowercase() + &msg[1..];
    }
    msg
}
