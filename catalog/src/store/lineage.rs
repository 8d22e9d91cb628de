//! Column lineage edges: which columns of an object's direct inputs each of its columns is
//! computed from (`downstream_column` set), and which input columns decide its rows
//! (`downstream_column` NULL: filters, join conditions, GROUP BY keys). The engine extracts
//! them from query plans; the catalog only stores them, replaced as a whole per object.

use rusqlite::params;

use super::{Catalog, now};
use crate::Result;

/// One stored edge into `object_id`'s column (or rows) from a column of `upstream_id`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ColumnEdge {
    pub object_id: i64,
    pub upstream_id: i64,
    pub upstream_column: String,
    /// `None` when the upstream column shapes the object's rows rather than one column.
    pub downstream_column: Option<String>,
    /// `direct`, `filter`, `join` or `group` (the engine's vocabulary).
    pub kind: String,
}

impl Catalog {
    /// Replaces the column edges into `object_id` and marks its lineage as computed. Every
    /// upstream object of an edge is recorded as a dependency too (catalogs from before views
    /// counted as inputs lack those).
    pub fn set_column_lineage(&self, object_id: i64, edges: &[ColumnEdge]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM column_lineage WHERE object_id = ?1",
            [object_id],
        )?;
        {
            let mut insert = tx.prepare(
                "INSERT INTO column_lineage (object_id, upstream_id, upstream_column, \
                 downstream_column, kind) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut depend = tx.prepare(
                "INSERT OR IGNORE INTO dependencies (object_id, upstream_id) VALUES (?1, ?2)",
            )?;
            for e in edges {
                insert.execute(params![
                    object_id,
                    e.upstream_id,
                    e.upstream_column,
                    e.downstream_column,
                    e.kind
                ])?;
                depend.execute(params![object_id, e.upstream_id])?;
            }
        }
        tx.execute(
            "UPDATE objects SET lineage_at = ?2 WHERE id = ?1",
            params![object_id, now()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Every column edge, ordered by downstream object, column, upstream object and column.
    pub fn column_lineage(&self) -> Result<Vec<ColumnEdge>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT object_id, upstream_id, upstream_column, downstream_column, kind \
             FROM column_lineage ORDER BY object_id, downstream_column IS NULL, \
             downstream_column, upstream_id, upstream_column, kind",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(ColumnEdge {
                object_id: r.get(0)?,
                upstream_id: r.get(1)?,
                upstream_column: r.get(2)?,
                downstream_column: r.get(3)?,
                kind: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Models and views whose lineage was never computed (catalogs from before lineage).
    pub fn objects_without_lineage(&self) -> Result<Vec<i64>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id FROM objects WHERE kind IN ('model', 'view') AND lineage_at IS NULL \
             ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Removes the edges into and out of an object being dropped (inside the drop's transaction).
pub(super) fn forget(tx: &rusqlite::Transaction<'_>, id: i64) -> Result<()> {
    tx.execute(
        "DELETE FROM column_lineage WHERE object_id = ?1 OR upstream_id = ?1",
        [id],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{NewObject, ObjectKind, ObjectName};

    fn object(catalog: &Catalog, name: &str, kind: ObjectKind, upstream: &[i64]) -> i64 {
        let new = NewObject {
            name: ObjectName::new("public", name),
            kind,
            sql: String::new(),
            query: None,
            default_schema: None,
            options: BTreeMap::new(),
            columns: vec![],
            location: None,
            comment: None,
        };
        catalog.create_object(&new, upstream).unwrap().id
    }

    #[test]
    fn edges_are_replaced_per_object_and_dropped_with_it() {
        let catalog = Catalog::open_in_memory().unwrap();
        let t = object(&catalog, "t", ObjectKind::Table, &[]);
        let m = object(&catalog, "m", ObjectKind::Model, &[]);
        assert_eq!(catalog.objects_without_lineage().unwrap(), vec![m]);
        let edge = |column: &str, down: Option<&str>, kind: &str| ColumnEdge {
            object_id: m,
            upstream_id: t,
            upstream_column: column.into(),
            downstream_column: down.map(str::to_string),
            kind: kind.into(),
        };
        catalog
            .set_column_lineage(m, &[edge("a", Some("x"), "direct")])
            .unwrap();
        catalog
            .set_column_lineage(
                m,
                &[edge("b", Some("y"), "direct"), edge("c", None, "filter")],
            )
            .unwrap();
        assert_eq!(
            catalog.column_lineage().unwrap(),
            vec![edge("b", Some("y"), "direct"), edge("c", None, "filter")]
        );
        assert!(catalog.objects_without_lineage().unwrap().is_empty());
        assert_eq!(catalog.dependencies().unwrap(), vec![(m, t)]);
        catalog.drop_objects(&[m]).unwrap();
        assert!(catalog.column_lineage().unwrap().is_empty());
    }
}
