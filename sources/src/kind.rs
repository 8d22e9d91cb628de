//! Which connector reads a source. The catalog keeps it in a source's `connector` option,
//! which file sources (the first kind) never had; every branch on the kind of a source goes
//! through [`SourceKind::of`] instead of reading that option.

use tributary_catalog::{CatalogObject, ObjectKind};

/// The option that names a source's connector.
pub const CONNECTOR_OPTION: &str = "connector";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// CSV, JSON or Parquet files read in place ([`crate::files`]).
    Files,
    /// A federated PostgreSQL table ([`crate::postgres`]).
    Postgres,
    /// A JSON API polled into Delta snapshots ([`crate::http`]).
    Http,
}

impl SourceKind {
    /// The kind of source `object` is; `None` when it is not a source, or names a connector
    /// this build does not know.
    pub fn of(object: &CatalogObject) -> Option<Self> {
        if object.kind != ObjectKind::Source {
            return None;
        }
        match object.options.get(CONNECTOR_OPTION).map(String::as_str) {
            None => Some(Self::Files),
            Some(name) => Self::from_name(name),
        }
    }

    /// The kind a `connector` option names.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "files" => Some(Self::Files),
            "postgres" => Some(Self::Postgres),
            "http" => Some(Self::Http),
            _ => None,
        }
    }

    /// The name kept in the `connector` option (and shown in `tributary.sources`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Files => "files",
            Self::Postgres => "postgres",
            Self::Http => "http",
        }
    }

    /// Whether the source's data is kept in the warehouse as a Delta table (snapshots),
    /// rather than read where it lives on every use.
    pub fn is_stored(self) -> bool {
        self == Self::Http
    }
}

/// Whether `object`'s data is a Delta table in the warehouse: tables, models, and sources
/// whose kind stores snapshots. These are what publishing, time travel, recovery and
/// housekeeping deal with.
pub fn stored_in_delta(object: &CatalogObject) -> bool {
    object.kind.is_stored() || SourceKind::of(object).is_some_and(SourceKind::is_stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(kind: ObjectKind, connector: Option<&str>) -> CatalogObject {
        CatalogObject {
            id: 1,
            name: tributary_catalog::ObjectName::new("s", "o"),
            kind,
            sql: String::new(),
            query: None,
            default_schema: None,
            options: connector
                .map(|c| (CONNECTOR_OPTION.to_string(), c.to_string()))
                .into_iter()
                .collect(),
            columns: Vec::new(),
            location: None,
            comment: None,
            published_version: None,
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    #[test]
    fn the_connector_option_names_the_kind() {
        assert_eq!(
            SourceKind::of(&object(ObjectKind::Source, None)),
            Some(SourceKind::Files)
        );
        assert_eq!(
            SourceKind::of(&object(ObjectKind::Source, Some("postgres"))),
            Some(SourceKind::Postgres)
        );
        assert_eq!(
            SourceKind::of(&object(ObjectKind::Source, Some("http"))),
            Some(SourceKind::Http)
        );
        assert_eq!(
            SourceKind::of(&object(ObjectKind::Source, Some("kafka"))),
            None
        );
        assert_eq!(SourceKind::of(&object(ObjectKind::Model, None)), None);
        for kind in [SourceKind::Files, SourceKind::Postgres, SourceKind::Http] {
            assert_eq!(SourceKind::from_name(kind.as_str()), Some(kind));
        }
    }

    #[test]
    fn tables_models_and_http_snapshots_are_stored_in_delta() {
        assert!(stored_in_delta(&object(ObjectKind::Table, None)));
        assert!(stored_in_delta(&object(ObjectKind::Model, None)));
        assert!(stored_in_delta(&object(ObjectKind::Source, Some("http"))));
        assert!(!stored_in_delta(&object(ObjectKind::Source, None)));
        assert!(!stored_in_delta(&object(
            ObjectKind::Source,
            Some("postgres")
        )));
        assert!(!stored_in_delta(&object(ObjectKind::View, None)));
    }
}
