//! Lineage as rows: `tributary.lineage` (every table and column edge) and
//! `SHOW LINEAGE FOR name [UPSTREAM | DOWNSTREAM]`, which walks the object graph from one
//! object breadth-first and returns each edge it crosses once, with its depth (1 for the
//! object's own inputs or readers).

use std::collections::{BTreeSet, HashMap, VecDeque};

use datafusion::arrow::record_batch::RecordBatch;
use tributary_catalog::{Catalog, CatalogObject};

use crate::system::{Col, RowsBuilder};
use tributary_sql::error::Result;

pub use tributary_sql::dialect::LineageDirection as Direction;

/// A table edge (`edge` = `table`, no columns) or a column edge.
struct EdgeRow {
    upstream: i64,
    upstream_column: Option<String>,
    downstream: i64,
    downstream_column: Option<String>,
    edge: String,
}

/// Table edges from the dependency graph, each followed by its column edges.
fn edges(catalog: &Catalog) -> Result<Vec<EdgeRow>> {
    let mut columns: HashMap<(i64, i64), Vec<EdgeRow>> = HashMap::new();
    for e in catalog.column_lineage()? {
        columns
            .entry((e.upstream_id, e.object_id))
            .or_default()
            .push(EdgeRow {
                upstream: e.upstream_id,
                upstream_column: Some(e.upstream_column),
                downstream: e.object_id,
                downstream_column: e.downstream_column,
                edge: e.kind,
            });
    }
    let mut rows = Vec::new();
    for (down, up) in catalog.dependencies()? {
        rows.push(EdgeRow {
            upstream: up,
            upstream_column: None,
            downstream: down,
            downstream_column: None,
            edge: "table".into(),
        });
        rows.extend(columns.remove(&(up, down)).unwrap_or_default());
    }
    Ok(rows)
}

const EDGE_COLUMNS: [(&str, Col); 7] = [
    ("upstream", Col::Text),
    ("upstream_kind", Col::Text),
    ("upstream_column", Col::Text),
    ("downstream", Col::Text),
    ("downstream_kind", Col::Text),
    ("downstream_column", Col::Text),
    ("edge", Col::Text),
];

fn push_edge(b: &mut RowsBuilder, objects: &HashMap<i64, CatalogObject>, row: &EdgeRow) {
    let (up, down) = (&objects[&row.upstream], &objects[&row.downstream]);
    b.text(Some(&up.name.to_string()))
        .text(Some(up.kind.as_str()))
        .text(row.upstream_column.as_deref())
        .text(Some(&down.name.to_string()))
        .text(Some(down.kind.as_str()))
        .text(row.downstream_column.as_deref())
        .text(Some(&row.edge));
}

fn objects(catalog: &Catalog) -> Result<HashMap<i64, CatalogObject>> {
    Ok(catalog.objects()?.into_iter().map(|o| (o.id, o)).collect())
}

/// `tributary.lineage`.
pub fn lineage_table(catalog: &Catalog) -> Result<RecordBatch> {
    let objects = objects(catalog)?;
    let mut b = RowsBuilder::new(&EDGE_COLUMNS);
    for row in edges(catalog)? {
        if objects.contains_key(&row.upstream) && objects.contains_key(&row.downstream) {
            push_edge(&mut b, &objects, &row);
        }
    }
    b.finish()
}

/// `SHOW LINEAGE FOR name [UPSTREAM | DOWNSTREAM]`: upstream rows first, each direction by
/// depth.
pub fn show_lineage(catalog: &Catalog, root: i64, direction: Direction) -> Result<RecordBatch> {
    let objects = objects(catalog)?;
    let rows: Vec<EdgeRow> = edges(catalog)?
        .into_iter()
        .filter(|r| objects.contains_key(&r.upstream) && objects.contains_key(&r.downstream))
        .collect();
    let mut columns = vec![("direction", Col::Text), ("depth", Col::Int)];
    columns.extend(EDGE_COLUMNS);
    let mut b = RowsBuilder::new(&columns);
    let walks: &[(&str, bool)] = match direction {
        Direction::Upstream => &[("upstream", true)],
        Direction::Downstream => &[("downstream", false)],
        Direction::Both => &[("upstream", true), ("downstream", false)],
    };
    for (name, upstream) in walks {
        for (depth, row) in walk(&rows, root, *upstream) {
            b.text(Some(name)).int(Some(depth));
            push_edge(&mut b, &objects, row);
        }
    }
    b.finish()
}

/// The edges reachable from `root` going up (towards inputs) or down (towards readers), each
/// once, with the depth of the object it leads to.
fn walk(rows: &[EdgeRow], root: i64, upstream: bool) -> Vec<(i64, &EdgeRow)> {
    let mut from: HashMap<i64, Vec<&EdgeRow>> = HashMap::new();
    for row in rows {
        let near = if upstream {
            row.downstream
        } else {
            row.upstream
        };
        from.entry(near).or_default().push(row);
    }
    let mut out = Vec::new();
    let mut seen = BTreeSet::from([root]);
    let mut queue = VecDeque::from([(root, 0)]);
    while let Some((object, depth)) = queue.pop_front() {
        for row in from.get(&object).into_iter().flatten() {
            out.push((depth + 1, *row));
            let far = if upstream {
                row.upstream
            } else {
                row.downstream
            };
            if seen.insert(far) {
                queue.push_back((far, depth + 1));
            }
        }
    }
    out
}
