//! The `tributary` schema: the catalog's contents as read-only tables, rebuilt on each query
//! from the catalog (which is small), so they are never stale.

use std::collections::HashMap;

use datafusion::arrow::record_batch::RecordBatch;
use tributary_catalog::{Catalog, CatalogObject, ObjectKind};

use super::rows::{Col, RowsBuilder};
use tributary_sql::error::Result;

pub const SCHEMA: &str = "tributary";

pub const TABLES: &[&str] = &[
    "sources",
    "tables",
    "models",
    "views",
    "columns",
    "lineage",
    "runs",
    "freshness",
    "secrets",
    "connections",
    "tests",
    "test_results",
    "test_failures",
    "jobs",
    "job_runs",
];

/// Builds one system table, or `None` if there is no such table.
pub fn build(catalog: &Catalog, table: &str) -> Result<Option<RecordBatch>> {
    Ok(Some(match table {
        "sources" => objects(catalog, ObjectKind::Source)?,
        "tables" => objects(catalog, ObjectKind::Table)?,
        "models" => objects(catalog, ObjectKind::Model)?,
        "views" => objects(catalog, ObjectKind::View)?,
        "columns" => columns(catalog)?,
        "lineage" => crate::lineage::show::lineage_table(catalog)?,
        "runs" => runs(catalog)?,
        "secrets" => super::definitions::secrets_table(catalog)?,
        "connections" => super::definitions::connections_table(catalog)?,
        "tests" => super::definitions::tests_table(catalog)?,
        "test_results" => super::definitions::results_table(catalog)?,
        "test_failures" => super::definitions::failures_table(catalog)?,
        "jobs" => super::definitions::jobs_table(catalog)?,
        "job_runs" => super::definitions::job_runs_table(catalog)?,
        _ => return Ok(None),
    }))
}

fn opt<'a>(o: &'a CatalogObject, key: &str) -> Option<&'a str> {
    o.options.get(key).map(String::as_str)
}

fn objects(catalog: &Catalog, kind: ObjectKind) -> Result<RecordBatch> {
    let objects: Vec<CatalogObject> = catalog
        .objects()?
        .into_iter()
        .filter(|o| o.kind == kind)
        .collect();
    let description = |o: &CatalogObject| {
        o.comment
            .clone()
            .or_else(|| o.options.get("description").cloned())
    };
    let options_json = |o: &CatalogObject| serde_json::to_string(&o.options).unwrap_or_default();
    Ok(match kind {
        ObjectKind::Source => {
            let mut b = RowsBuilder::new(&[
                ("schema_name", Col::Text),
                ("name", Col::Text),
                ("kind", Col::Text),
                ("format", Col::Text),
                ("location", Col::Text),
                ("options", Col::Text),
                ("description", Col::Text),
                ("definition", Col::Text),
                ("created_at", Col::Timestamp),
                ("version", Col::Int),
                ("last_polled_at", Col::Timestamp),
                ("last_poll_status", Col::Text),
                ("last_error", Col::Text),
            ]);
            // Polled sources (HTTP) record each poll as a run; the last one says how the
            // source is doing, and its error stays visible while the last good data is served.
            let last_runs = last_runs(catalog)?;
            for o in &objects {
                let last = last_runs.get(&o.id);
                b.text(Some(&o.name.schema))
                    .text(Some(&o.name.name))
                    .text(tributary_sources::SourceKind::of(o).map(|k| k.as_str()))
                    .text(opt(o, "format"))
                    .text(opt(o, "path").or(opt(o, "url")))
                    .text(Some(&options_json(o)))
                    .text(description(o).as_deref())
                    .text(Some(&o.sql))
                    .timestamp(Some(&o.created_at))
                    .int(o.published_version)
                    .timestamp(last.map(|r| r.started_at.as_str()))
                    .text(last.map(|r| r.status.as_str()))
                    .text(last.and_then(|r| r.error.as_deref()));
            }
            b.finish()?
        }
        ObjectKind::Table => {
            let mut b = RowsBuilder::new(&[
                ("schema_name", Col::Text),
                ("name", Col::Text),
                ("location", Col::Text),
                ("version", Col::Int),
                ("description", Col::Text),
                ("definition", Col::Text),
                ("created_at", Col::Timestamp),
                ("updated_at", Col::Timestamp),
            ]);
            for o in &objects {
                b.text(Some(&o.name.schema))
                    .text(Some(&o.name.name))
                    .text(o.location.as_deref())
                    .int(o.published_version)
                    .text(description(o).as_deref())
                    .text(Some(&o.sql))
                    .timestamp(Some(&o.created_at))
                    .timestamp(Some(&o.updated_at));
            }
            b.finish()?
        }
        ObjectKind::Model => {
            let last_runs = last_runs(catalog)?;
            let mut b = RowsBuilder::new(&[
                ("schema_name", Col::Text),
                ("name", Col::Text),
                ("query", Col::Text),
                ("refresh", Col::Text),
                ("schedule", Col::Text),
                ("options", Col::Text),
                ("location", Col::Text),
                ("version", Col::Int),
                ("last_run_status", Col::Text),
                ("last_refreshed_at", Col::Timestamp),
                ("description", Col::Text),
                ("definition", Col::Text),
                ("created_at", Col::Timestamp),
                ("updated_at", Col::Timestamp),
            ]);
            for o in &objects {
                let last = last_runs.get(&o.id);
                b.text(Some(&o.name.schema))
                    .text(Some(&o.name.name))
                    .text(o.query.as_deref())
                    .text(Some(opt(o, "refresh").unwrap_or("auto")))
                    .text(Some(opt(o, "schedule").unwrap_or("manual")))
                    .text(Some(&options_json(o)))
                    .text(o.location.as_deref())
                    .int(o.published_version)
                    .text(last.map(|r| r.status.as_str()))
                    .timestamp(last.and_then(|r| r.finished_at.as_deref()))
                    .text(description(o).as_deref())
                    .text(Some(&o.sql))
                    .timestamp(Some(&o.created_at))
                    .timestamp(Some(&o.updated_at));
            }
            b.finish()?
        }
        ObjectKind::View => {
            let mut b = RowsBuilder::new(&[
                ("schema_name", Col::Text),
                ("name", Col::Text),
                ("query", Col::Text),
                ("description", Col::Text),
                ("definition", Col::Text),
                ("created_at", Col::Timestamp),
            ]);
            for o in &objects {
                b.text(Some(&o.name.schema))
                    .text(Some(&o.name.name))
                    .text(o.query.as_deref())
                    .text(description(o).as_deref())
                    .text(Some(&o.sql))
                    .timestamp(Some(&o.created_at));
            }
            b.finish()?
        }
    })
}

fn last_runs(catalog: &Catalog) -> Result<HashMap<i64, tributary_catalog::Run>> {
    let mut last = HashMap::new();
    for run in catalog.runs()? {
        last.insert(run.object_id, run);
    }
    Ok(last)
}

fn columns(catalog: &Catalog) -> Result<RecordBatch> {
    let mut b = RowsBuilder::new(&[
        ("schema_name", Col::Text),
        ("object_name", Col::Text),
        ("object_kind", Col::Text),
        ("column_name", Col::Text),
        ("ordinal_position", Col::Int),
        ("data_type", Col::Text),
        ("is_nullable", Col::Bool),
        ("description", Col::Text),
    ]);
    for o in catalog.objects()? {
        for (i, c) in o.columns.iter().enumerate() {
            b.text(Some(&o.name.schema))
                .text(Some(&o.name.name))
                .text(Some(o.kind.as_str()))
                .text(Some(&c.name))
                .int(Some(i as i64 + 1))
                .text(Some(&c.data_type))
                .bool(Some(c.nullable))
                .text(c.comment.as_deref());
        }
    }
    b.finish()
}

fn runs(catalog: &Catalog) -> Result<RecordBatch> {
    let mut b = RowsBuilder::new(&[
        ("run_id", Col::Int),
        ("model", Col::Text),
        ("trigger", Col::Text),
        ("strategy", Col::Text),
        ("reason", Col::Text),
        ("status", Col::Text),
        ("started_at", Col::Timestamp),
        ("finished_at", Col::Timestamp),
        ("duration_ms", Col::Int),
        ("rows_read", Col::Int),
        ("rows_written", Col::Int),
        ("late_rows", Col::Int),
        ("delta_version", Col::Int),
        ("input_versions", Col::Text),
        ("error", Col::Text),
    ]);
    for r in catalog.runs()? {
        let duration = match (
            chrono::DateTime::parse_from_rfc3339(&r.started_at).ok(),
            r.finished_at
                .as_deref()
                .and_then(|f| chrono::DateTime::parse_from_rfc3339(f).ok()),
        ) {
            (Some(s), Some(f)) => Some((f - s).num_milliseconds()),
            _ => None,
        };
        b.int(Some(r.id))
            .text(Some(&r.object_name))
            .text(Some(&r.trigger))
            .text(r.strategy.as_deref())
            .text(r.reason.as_deref())
            .text(Some(r.status.as_str()))
            .timestamp(Some(&r.started_at))
            .timestamp(r.finished_at.as_deref())
            .int(duration)
            .int(r.rows_read)
            .int(r.rows_written)
            .int(r.late_rows)
            .int(r.delta_version)
            .text(r.input_versions.as_deref())
            .text(r.error.as_deref());
    }
    b.finish()
}
