//! Object definitions as the catalog stores them.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// What kind of relation an object is. All kinds share one namespace per schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    /// Data that lives outside Tributary and is read in place (files, PostgreSQL, HTTP).
    Source,
    /// A Delta table written with INSERT, COPY, UPDATE and DELETE.
    Table,
    /// Materialized SQL stored as a Delta table and refreshed.
    Model,
    /// A stored query, expanded at every use.
    View,
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Source => "source",
            ObjectKind::Table => "table",
            ObjectKind::Model => "model",
            ObjectKind::View => "view",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "source" => ObjectKind::Source,
            "table" => ObjectKind::Table,
            "model" => ObjectKind::Model,
            "view" => ObjectKind::View,
            _ => return None,
        })
    }

    /// Whether the object's rows are stored as a Delta table in the warehouse.
    pub fn is_stored(self) -> bool {
        matches!(self, ObjectKind::Table | ObjectKind::Model)
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A schema-qualified name, already case-folded the way PostgreSQL folds identifiers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectName {
    pub schema: String,
    pub name: String,
}

impl ObjectName {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// One column of an object: its SQL type as PostgreSQL spells it (`bigint`, `numeric(18,2)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnDef {
    pub name: String,
    pub data_type: String,
    pub nullable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// What the engine hands the catalog to create or replace an object.
#[derive(Debug, Clone)]
pub struct NewObject {
    pub name: ObjectName,
    pub kind: ObjectKind,
    /// The statement as the user sent it, kept for `tributary.*` and `apply`'s change detection.
    pub sql: String,
    /// For models and views: the defining query.
    pub query: Option<String>,
    /// The schema unqualified names in `query` resolve to (the creator's search path).
    pub default_schema: Option<String>,
    /// `WITH (...)` options, plus source settings such as `path` and `format`.
    pub options: BTreeMap<String, String>,
    pub columns: Vec<ColumnDef>,
    /// Where the Delta table lives, relative to the warehouse root (tables and models).
    pub location: Option<String>,
    pub comment: Option<String>,
}

/// An object as stored in the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogObject {
    pub id: i64,
    pub name: ObjectName,
    pub kind: ObjectKind,
    pub sql: String,
    pub query: Option<String>,
    pub default_schema: Option<String>,
    pub options: BTreeMap<String, String>,
    pub columns: Vec<ColumnDef>,
    pub location: Option<String>,
    pub comment: Option<String>,
    /// The Delta version readers see; `None` until the first commit is published.
    pub published_version: Option<i64>,
    pub created_at: String,
    pub updated_at: String,
}
