//! HTTP JSON sources: `CREATE SOURCE ... FROM HTTP 'url' FORMAT JSON`.
//!
//! An API answers with what is true *now*; to query it, join it and refresh models over it
//! incrementally, each poll is kept as a snapshot. The source is stored as a Delta table in the
//! warehouse (like a table): every poll that brings a new body appends its records with a
//! `_loaded_at timestamptz` column, in one Delta commit whose metadata carries the body's
//! SHA-256. A poll whose body equals the last snapshot's appends nothing, so the source's Delta
//! versions are exactly "the API said something new": models over it see appended versions
//! (incremental refreshes append only the new snapshot's rows) and `schedule = 'on change'`
//! fires only then.
//!
//! A poll that fails (connection refused, timeout, a non-2xx answer, a body that is not JSON,
//! records that no longer fit the source's columns) commits nothing: readers keep the last good
//! snapshot, and the failure is recorded as a failed run of the source (`tributary.runs`) and
//! shown in `tributary.sources` (`last_polled_at`, `last_poll_status`, `last_error`).
//!
//! Polls happen at `CREATE SOURCE` (which fails, storing nothing, when the first poll fails:
//! a wrong URL or a records path that matches nothing is caught while the author is looking),
//! on `REFRESH SOURCE name`, and by the server's scheduler every `poll` interval.
//!
//! Fetching with retries is in [`fetch`]; reading records out of a body, checking them against
//! the columns and turning them into Arrow is in [`records`].

mod fetch;
mod records;
#[cfg(test)]
mod tests;

pub use fetch::parse_headers;
use fetch::*;
pub use records::RecordsPath;
use records::*;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::sql::sqlparser::ast;
use deltalake::protocol::SaveMode;
use serde_json::Value;
use tributary_catalog::{
    Catalog, CatalogObject, NewObject, ObjectKind, ObjectName, RunOutcome, RunStatus,
};

use tributary_sql::dialect::CreateSource;
use tributary_sql::error::{Error, Result};
use tributary_storage::TableStore;
use tributary_storage::bookmarks::CommitMetadata;
use tributary_storage::delta;

/// The option naming a source's connector in the catalog (`http`; file sources have none).
pub const CONNECTOR_KEY: &str = crate::kind::CONNECTOR_OPTION;
/// The column every snapshot row gets: when the poll that brought it happened.
pub const LOADED_AT: &str = "_loaded_at";
/// Commit metadata key holding the SHA-256 of the body a snapshot commit holds.
pub const BODY_HASH_KEY: &str = "tributary.http.sha256";

/// The options `CREATE SOURCE ... FROM HTTP` understands.
pub const OPTION_KEYS: &[&str] = &[
    "records",
    "headers_secret",
    "poll",
    "timeout",
    "retries",
    "retry_delay",
    "max_staleness",
    "description",
];

/// Largest response body read (bytes); a larger one is an error, not an out-of-memory.
pub const MAX_BODY: usize = 256 << 20;
/// Default time limit of one request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of retries after a failed attempt.
pub const DEFAULT_RETRIES: u32 = 2;
/// Default wait before the first retry (doubled for each further one).
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Longest wait between two attempts, however many retries.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Whether a catalog object is an HTTP source.
pub fn is_http(object: &CatalogObject) -> bool {
    crate::SourceKind::of(object) == Some(crate::SourceKind::Http)
}

/// The settings of an HTTP source, as kept in the catalog's options.
#[derive(Debug, Clone)]
pub struct HttpSourceSpec {
    pub url: String,
    pub records: RecordsPath,
    pub headers_secret: Option<String>,
    pub poll: Option<Duration>,
    pub timeout: Duration,
    pub retries: u32,
    pub retry_delay: Duration,
}

impl HttpSourceSpec {
    /// Reads (and checks) the spec from catalog options (`url` and the `WITH` options).
    pub fn from_options(options: &BTreeMap<String, String>) -> Result<Self> {
        for key in options.keys() {
            let internal = ["url", "format", CONNECTOR_KEY].contains(&key.as_str());
            if !internal && !OPTION_KEYS.contains(&key.as_str()) {
                return Err(Error::InvalidOption {
                    option: key.clone(),
                    message: format!(
                        "unknown option for an http source (expected one of: {})",
                        OPTION_KEYS.join(", ")
                    ),
                });
            }
        }
        let url = options
            .get("url")
            .cloned()
            .ok_or_else(|| Error::Internal("http source without a url".into()))?;
        let parsed = url::Url::parse(&url)
            .map_err(|e| Error::bad_input(format!("invalid http source url \"{url}\": {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::bad_input(format!(
                "invalid http source url \"{url}\": the scheme must be http or https"
            )));
        }
        let records = RecordsPath::parse(options.get("records").map_or("$", String::as_str))?;
        let duration = |key: &str| -> Result<Option<Duration>> {
            options
                .get(key)
                .map(|text| tributary_sql::options::parse_duration(key, text))
                .transpose()
        };
        let poll = duration("poll")?;
        if poll.is_some_and(|p| p < Duration::from_secs(1)) {
            return Err(Error::InvalidOption {
                option: "poll".into(),
                message: "the interval must be at least 1 second".into(),
            });
        }
        let timeout = duration("timeout")?.unwrap_or(DEFAULT_TIMEOUT);
        if timeout.is_zero() {
            return Err(Error::InvalidOption {
                option: "timeout".into(),
                message: "must be longer than zero".into(),
            });
        }
        let retries = match options.get("retries") {
            Some(text) => text
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n <= 10)
                .ok_or_else(|| Error::InvalidOption {
                    option: "retries".into(),
                    message: format!("\"{text}\" is not a whole number from 0 to 10"),
                })?,
            None => DEFAULT_RETRIES,
        };
        Ok(Self {
            url,
            records,
            headers_secret: options.get("headers_secret").cloned(),
            poll,
            timeout,
            retries,
            retry_delay: duration("retry_delay")?.unwrap_or(DEFAULT_RETRY_DELAY),
        })
    }

    /// The wait before retry `n` (1-based): `retry_delay`, doubled for each further retry.
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.retry_delay
            .checked_mul(factor)
            .unwrap_or(MAX_BACKOFF)
            .min(MAX_BACKOFF)
    }
}

/// The stored schema: the source's columns, then `_loaded_at timestamptz`.
fn stored_schema(columns: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = columns
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(
        LOADED_AT,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    ));
    Arc::new(Schema::new(fields))
}

/// The source's own columns (the stored ones without `_loaded_at`).
fn data_columns(object: &CatalogObject) -> Result<Schema> {
    let stored = tributary_sql::types::schema_of_columns(&object.columns)?;
    Ok(Schema::new(
        stored
            .fields()
            .iter()
            .filter(|f| f.name() != LOADED_AT)
            .map(|f| f.as_ref().clone())
            .collect::<Vec<_>>(),
    ))
}

/// Fetches and parses one snapshot.
async fn fetch_snapshot(
    catalog: &Catalog,
    spec: &HttpSourceSpec,
    name: &ObjectName,
) -> Result<(Snapshot, bytes::Bytes)> {
    let headers = request_headers(catalog, spec)?;
    let body = fetch(spec, &headers, name).await?;
    let hash = body_hash(&body);
    let records = parse_body(spec, name, &body)?;
    Ok((Snapshot { hash, records }, body))
}

/// Appends a snapshot's rows in one commit recording the body's hash; returns the table.
async fn commit_snapshot(
    table: deltalake::DeltaTable,
    batch: RecordBatch,
    hash: &str,
    run_id: i64,
) -> Result<deltalake::DeltaTable> {
    // The run id lets start-up recovery tell which run a snapshot that landed belongs to.
    let mut metadata = CommitMetadata {
        run_id: Some(run_id),
        ..Default::default()
    }
    .into_map();
    metadata.insert(BODY_HASH_KEY.into(), Value::String(hash.to_string()));
    Ok(table
        .write(vec![batch])
        .with_save_mode(SaveMode::Append)
        .with_commit_properties(delta::commit_properties(metadata))
        .await?)
}

/// The body hash the latest snapshot commit recorded. Housekeeping commits (compaction)
/// carry none, so the recent history is read back to the newest commit that has one (a
/// compaction needs many snapshots, so a few commits back is always enough).
async fn last_hash(table: &deltalake::DeltaTable) -> Result<Option<String>> {
    use futures::TryStreamExt;
    let infos: Vec<_> = table.history(Some(64)).try_collect().await?;
    // Newest first; version 0 (the empty table) has no hash either.
    Ok(infos.iter().find_map(|info| {
        info.info
            .get(BODY_HASH_KEY)
            .and_then(Value::as_str)
            .map(str::to_string)
    }))
}

/// `CREATE SOURCE name [(columns)] FROM HTTP 'url' FORMAT JSON [WITH (...)]`: checks the
/// options, polls once, and stores the source with that first snapshot. A failed first poll
/// fails the statement and stores nothing.
pub async fn create(
    catalog: &Catalog,
    store: &TableStore,
    name: ObjectName,
    source: CreateSource,
    text: &str,
) -> Result<()> {
    let mut options = source.options.clone();
    options.insert(
        CONNECTOR_KEY.into(),
        crate::SourceKind::Http.as_str().into(),
    );
    options.insert("url".into(), source.path.clone());
    options.insert("format".into(), source.format.as_str().into());
    let spec = HttpSourceSpec::from_options(&options)?;
    tributary_sql::options::max_staleness(&options)?;
    let declared = declared_columns(&source.columns)?;
    let (snapshot, body) = fetch_snapshot(catalog, &spec, &name).await?;
    let columns = match declared {
        Some(columns) => columns,
        None => {
            let order = field_order(&spec.records, &body);
            infer_schema(&spec, &name, &snapshot.records, &order)?
        }
    };
    if columns.field_with_name(LOADED_AT).is_ok() {
        return Err(Error::bad_input(format!(
            "http source \"{name}\": column \"{LOADED_AT}\" is added by tributary and cannot be \
             a column of the source"
        )));
    }
    let loaded_at = Utc::now();
    let rows = conform(&spec, &name, &columns, snapshot.records)?;
    let batch = to_batch(&spec, &name, &columns, &rows, loaded_at)?;
    let stored = stored_schema(&columns);
    let id = uuid::Uuid::new_v4().simple().to_string();
    let location = format!("{}/{}-{}", name.schema, name.name, &id[..12]);
    let table = store
        .warehouse()
        .create(&location, &name.name, &stored)
        .await?;
    let description = options.get("description").cloned();
    let object = catalog.create_object(
        &NewObject {
            name: name.clone(),
            kind: ObjectKind::Source,
            sql: text.to_string(),
            query: None,
            default_schema: None,
            options,
            columns: tributary_sql::types::columns_of_schema(&stored),
            location: Some(location.clone()),
            comment: description,
        },
        &[],
    );
    let object = match object {
        Ok(o) => o,
        Err(e) => {
            let _ = store.warehouse().remove(&location);
            return Err(e.into());
        }
    };
    let run_id = catalog.start_run(&object, "create")?;
    let written = async {
        let rows = batch.num_rows() as i64;
        let table = commit_snapshot(table, batch, &snapshot.hash, run_id).await?;
        let version = store.publish(&object, table)?;
        Ok::<_, Error>((rows, version))
    }
    .await;
    match written {
        Ok((rows, version)) => {
            catalog.finish_run(
                run_id,
                &RunOutcome {
                    status: Some(RunStatus::Succeeded),
                    strategy: Some("append".into()),
                    reason: Some("first poll".into()),
                    rows_written: Some(rows),
                    delta_version: Some(version),
                    ..Default::default()
                },
            )?;
            Ok(())
        }
        Err(e) => {
            catalog.drop_objects(&[object.id])?;
            store.forget(object.id);
            let _ = store.warehouse().remove(&location);
            Err(e)
        }
    }
}

fn declared_columns(columns: &[ast::ColumnDef]) -> Result<Option<Schema>> {
    if columns.is_empty() {
        return Ok(None);
    }
    let fields = columns
        .iter()
        .map(|c| {
            let not_null = c
                .options
                .iter()
                .any(|o| matches!(o.option, ast::ColumnOption::NotNull));
            Ok(Field::new(
                tributary_sql::names::ident(&c.name),
                tributary_sql::types::arrow_type(&c.data_type)?,
                !not_null,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(Schema::new(fields)))
}

/// What one poll did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Polled {
    /// A new snapshot of this many rows, at this Delta version.
    Appended { rows: i64, version: i64 },
    /// The body equals the last snapshot's: nothing appended.
    Unchanged,
}

/// Polls an HTTP source once: fetches (with retries), and appends a snapshot when the body is
/// new. Recorded as a run of the source; a failure leaves the last good snapshot served.
pub async fn poll(
    catalog: &Catalog,
    store: &TableStore,
    object: &CatalogObject,
    trigger: &str,
) -> Result<Polled> {
    let (_guard, object) = store.lock_for_write(object).await?;
    let run_id = catalog.start_run(&object, trigger)?;
    let result = poll_locked(catalog, store, &object, run_id).await;
    let outcome = match &result {
        Ok(Polled::Appended { rows, version }) => RunOutcome {
            status: Some(RunStatus::Succeeded),
            strategy: Some("append".into()),
            reason: Some("new response body".into()),
            rows_written: Some(*rows),
            delta_version: Some(*version),
            ..Default::default()
        },
        Ok(Polled::Unchanged) => RunOutcome {
            status: Some(RunStatus::Succeeded),
            strategy: Some("unchanged".into()),
            reason: Some("the response body equals the last snapshot's".into()),
            rows_written: Some(0),
            delta_version: object.published_version,
            ..Default::default()
        },
        Err(e) => RunOutcome {
            status: Some(RunStatus::Failed),
            error: Some(e.to_string()),
            ..Default::default()
        },
    };
    catalog.finish_run(run_id, &outcome)?;
    match &result {
        Ok(polled) => tracing::info!(source = %object.name, ?polled, "http source polled"),
        Err(e) => tracing::warn!(source = %object.name, error = %e, "http source poll failed"),
    }
    result
}

async fn poll_locked(
    catalog: &Catalog,
    store: &TableStore,
    object: &CatalogObject,
    run_id: i64,
) -> Result<Polled> {
    let spec = HttpSourceSpec::from_options(&object.options)?;
    let columns = data_columns(object)?;
    let headers = request_headers(catalog, &spec)?;
    let body = fetch(&spec, &headers, &object.name).await?;
    let hash = body_hash(&body);
    let table = delta::latest(store.published_table(object).await?).await?;
    // A snapshot committed but never published (the server stopped in between) is published
    // now, whatever this poll brings.
    if delta::version(&table) != object.published_version.unwrap_or(-1) {
        store.publish(object, table.clone())?;
    }
    // An unchanged body is not even parsed.
    if last_hash(&table).await?.as_deref() == Some(hash.as_str()) {
        return Ok(Polled::Unchanged);
    }
    let records = parse_body(&spec, &object.name, &body)?;
    drop(body);
    let rows = conform(&spec, &object.name, &columns, records)?;
    let batch = to_batch(&spec, &object.name, &columns, &rows, Utc::now())?;
    let count = batch.num_rows() as i64;
    let table = commit_snapshot(table, batch, &hash, run_id).await?;
    let version = store.publish(object, table)?;
    Ok(Polled::Appended {
        rows: count,
        version,
    })
}

/// Whether a source polled every `every` is due at `now`, given when its last poll started
/// (or when it was created, before any poll).
pub fn poll_due(
    every: Duration,
    last_started: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> bool {
    let since = last_started.unwrap_or(created_at);
    match chrono::Duration::from_std(every) {
        Ok(every) => now >= since + every,
        Err(_) => false,
    }
}

/// The HTTP sources whose `poll` interval has passed at `now` (the scheduler's question).
pub fn due_sources(catalog: &Catalog, now: DateTime<Utc>) -> Result<Vec<CatalogObject>> {
    let mut due = Vec::new();
    for object in catalog.objects()? {
        if !is_http(&object) {
            continue;
        }
        let Ok(spec) = HttpSourceSpec::from_options(&object.options) else {
            continue;
        };
        let Some(every) = spec.poll else {
            continue;
        };
        let last = catalog.latest_runs(object.id, 1)?;
        if last.iter().any(|r| r.status == RunStatus::Running) {
            continue;
        }
        let parse = |t: &str| DateTime::parse_from_rfc3339(t).ok().map(|t| t.to_utc());
        let last_started = last.last().and_then(|r| parse(&r.started_at));
        let created_at = parse(&object.created_at).unwrap_or(now);
        if poll_due(every, last_started, created_at, now) {
            due.push(object);
        }
    }
    Ok(due)
}
