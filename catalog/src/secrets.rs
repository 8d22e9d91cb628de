//! Secrets and connections as the catalog stores them.
//!
//! A secret is either the name of an environment variable (resolved by the engine each time it
//! is used, so rotating it needs no DDL) or a literal value kept in the catalog. Literal values
//! are stored as written: the catalog file is the server's own state, like a `.pgpass` file, and
//! is protected the same way (file permissions); there is no key to encrypt them with that would
//! not sit next to them. What the catalog guarantees is that a value never leaves it through a
//! `Debug` or `Display` of any type here: [`SecretValue`] prints `***`.
//!
//! Secrets and connections live in one namespace per kind for the whole database (they are not
//! schema objects, as in PostgreSQL's user mappings and foreign servers).

use std::collections::BTreeMap;
use std::fmt;

/// A secret's value. Its `Debug` and `Display` print `***`; read it with [`Self::expose`] only
/// where it is handed to the system that needs it (a PostgreSQL login, an HTTP header).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself. Never log, format or return it to a client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `AS ENV 'VAR'`: the server's environment variable, read at each use.
    Env(String),
    /// `AS 'literal'`: the value, kept in the catalog.
    Literal(SecretValue),
}

impl SecretSource {
    /// `env` or `literal`, as `tributary.secrets` shows it.
    pub fn kind(&self) -> &'static str {
        match self {
            SecretSource::Env(_) => "env",
            SecretSource::Literal(_) => "literal",
        }
    }
}

/// A secret as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    pub name: String,
    pub source: SecretSource,
    pub created_at: String,
}

/// A named connection to an external system (`CREATE CONNECTION name TO POSTGRES (...)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub name: String,
    /// The system it connects to: `postgres`.
    pub kind: String,
    /// Settings other than the password: `host`, `port`, `database`, `user`, `sslmode`, ...
    pub options: BTreeMap<String, String>,
    /// The secret holding the password, if any.
    pub password_secret: Option<String>,
    pub created_at: String,
}
