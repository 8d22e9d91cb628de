//! `tributary.freshness`: per source, table and model, when its data was last known current,
//! how stale it is now, its `max_staleness` objective and whether it meets it.
//!
//! What "last data time" means per kind:
//! - model: when its last successful refresh finished (an `unchanged` refresh counts: it
//!   confirmed the model was current then);
//! - file source: the newest modification time among its files (listed when queried);
//! - http source: when its last successful poll finished (an unchanged body counts);
//! - postgres source: its newest cursor value, when the cursor column is a time (asked of
//!   PostgreSQL when queried; unknown without a time cursor);
//! - table: its last published commit (the catalog's `updated_at` of the object).
//!
//! Status: `fresh` (staleness within the objective), `stale` (over it), `unknown` (an
//! objective but no data time yet, e.g. a model never refreshed), `no objective`.

use chrono::{DateTime, SecondsFormat, Utc};
use datafusion::arrow::record_batch::RecordBatch;
use tributary_catalog::{ObjectKind, ObjectName, RunStatus};
use tributary_sources::SourceKind;

use super::rows::{Col, RowsBuilder};
use crate::env::QueryEnv;
use tributary_sql::error::Result;

pub const TABLE: &str = "freshness";

/// One object's freshness as of a moment.
#[derive(Debug, Clone)]
pub struct Freshness {
    pub kind: ObjectKind,
    pub name: ObjectName,
    /// When its data was last known current.
    pub last_data_at: Option<DateTime<Utc>>,
    pub staleness_seconds: Option<i64>,
    /// The `max_staleness` option as written.
    pub max_staleness: Option<String>,
    pub objective_seconds: Option<i64>,
    /// `fresh`, `stale`, `unknown` or `no objective`.
    pub status: &'static str,
}

/// Every source, table and model's freshness as of `now`.
pub async fn freshness(engine: &QueryEnv, now: DateTime<Utc>) -> Result<Vec<Freshness>> {
    let catalog = &engine.catalog;
    let mut last_success = std::collections::HashMap::new();
    for run in catalog.runs()? {
        if let (RunStatus::Succeeded, Some(finished)) = (run.status, run.finished_at) {
            last_success.insert(run.object_id, finished);
        }
    }
    let mut all = Vec::new();
    for object in catalog.objects()? {
        let last: Option<DateTime<Utc>> = match object.kind {
            ObjectKind::Model => last_success.get(&object.id).and_then(|t| parse(t)),
            ObjectKind::Table => object
                .published_version
                .and_then(|_| parse(&object.updated_at)),
            ObjectKind::Source => match SourceKind::of(&object) {
                // An HTTP source was current when its last successful poll finished.
                Some(SourceKind::Http) => last_success.get(&object.id).and_then(|t| parse(t)),
                Some(SourceKind::Files) => newest_file(engine, &object).await,
                // A federated table's newest data is its newest cursor time (unknown when it
                // cannot be asked, has no time cursor, or is empty).
                Some(SourceKind::Postgres) => {
                    tributary_sources::postgres::newest_cursor_time(&engine.catalog, &object)
                        .await
                        .unwrap_or_else(|e| {
                            tracing::warn!(source = %object.name, error = %e, "freshness of a postgres source is unknown");
                            None
                        })
                }
                None => None,
            },
            _ => continue,
        };
        let max_staleness = object.options.get("max_staleness").cloned();
        let objective = max_staleness
            .as_deref()
            .and_then(|t| tributary_sql::options::parse_duration("max_staleness", t).ok())
            .map(|d| d.as_secs() as i64);
        let staleness = last.map(|t| (now - t).num_seconds().max(0));
        let status = match (objective, staleness) {
            (None, _) => "no objective",
            (Some(_), None) => "unknown",
            (Some(max), Some(s)) if s <= max => "fresh",
            (Some(_), Some(_)) => "stale",
        };
        all.push(Freshness {
            kind: object.kind,
            name: object.name,
            last_data_at: last,
            staleness_seconds: staleness,
            max_staleness,
            objective_seconds: objective,
            status,
        });
    }
    Ok(all)
}

/// Builds the table as of `now`.
pub(crate) async fn build(engine: &QueryEnv, now: DateTime<Utc>) -> Result<RecordBatch> {
    let mut b = RowsBuilder::new(&[
        ("kind", Col::Text),
        ("name", Col::Text),
        ("last_data_at", Col::Timestamp),
        ("staleness_seconds", Col::Int),
        ("max_staleness", Col::Text),
        ("objective_seconds", Col::Int),
        ("status", Col::Text),
    ]);
    for row in freshness(engine, now).await? {
        let last_text = row
            .last_data_at
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true));
        b.text(Some(row.kind.as_str()))
            .text(Some(&row.name.to_string()))
            .timestamp(last_text.as_deref())
            .int(row.staleness_seconds)
            .text(row.max_staleness.as_deref())
            .int(row.objective_seconds)
            .text(Some(row.status));
    }
    b.finish()
}

fn parse(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The newest modification time among a file source's files (`None` without files or when
/// they cannot be listed).
async fn newest_file(
    engine: &QueryEnv,
    object: &tributary_catalog::CatalogObject,
) -> Option<DateTime<Utc>> {
    let spec = tributary_sources::files::FileSourceSpec::from_options(&object.options).ok()?;
    let listing = spec.list_files(engine.base_state()).await.ok()?;
    let newest = listing.values().map(|stamp| stamp.modified_ms).max()?;
    DateTime::from_timestamp_millis(newest)
}
