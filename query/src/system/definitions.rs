//! System tables of the definitions statement handlers keep in the catalog: secrets and
//! connections (names and kinds, never values), data tests and their results, jobs and their
//! runs. Each reads the catalog only.

use std::collections::HashMap;

use datafusion::arrow::record_batch::RecordBatch;
use tributary_catalog::{Catalog, SecretSource};

use super::rows::{Col, RowsBuilder};
use tributary_sql::error::Result;

/// `tributary.secrets`: names, kinds and the variable an `ENV` secret reads; never a value.
pub fn secrets_table(catalog: &Catalog) -> Result<RecordBatch> {
    let mut b = RowsBuilder::new(&[
        ("name", Col::Text),
        ("kind", Col::Text),
        ("env_var", Col::Text),
        ("created_at", Col::Timestamp),
    ]);
    for s in catalog.secrets()? {
        let env = match &s.source {
            SecretSource::Env(var) => Some(var.as_str()),
            SecretSource::Literal(_) => None,
        };
        b.text(Some(&s.name))
            .text(Some(s.source.kind()))
            .text(env)
            .timestamp(Some(&s.created_at));
    }
    b.finish()
}

/// `tributary.connections`: settings and the name of the password secret.
pub fn connections_table(catalog: &Catalog) -> Result<RecordBatch> {
    let mut b = RowsBuilder::new(&[
        ("name", Col::Text),
        ("kind", Col::Text),
        ("host", Col::Text),
        ("port", Col::Int),
        ("database", Col::Text),
        ("user", Col::Text),
        ("sslmode", Col::Text),
        ("password_secret", Col::Text),
        ("created_at", Col::Timestamp),
    ]);
    for c in catalog.connections()? {
        let get = |k: &str| c.options.get(k).map(String::as_str);
        b.text(Some(&c.name))
            .text(Some(&c.kind))
            .text(get("host"))
            .int(get("port").and_then(|p| p.parse().ok()))
            .text(get("database"))
            .text(get("user"))
            .text(get("sslmode"))
            .text(c.password_secret.as_deref())
            .timestamp(Some(&c.created_at));
    }
    b.finish()
}

pub fn object_names(catalog: &Catalog) -> Result<HashMap<i64, String>> {
    Ok(catalog
        .objects()?
        .into_iter()
        .map(|o| (o.id, o.name.to_string()))
        .collect())
}

/// The latest execution of each test, by test id.
pub fn latest_results(catalog: &Catalog) -> Result<HashMap<i64, tributary_catalog::TestResult>> {
    Ok(catalog
        .latest_test_results()?
        .into_iter()
        .map(|r| (r.test_id, r))
        .collect())
}

/// `tributary.tests`: one row per test, with its last outcome.
pub fn tests_table(catalog: &Catalog) -> Result<RecordBatch> {
    let names = object_names(catalog)?;
    let latest = latest_results(catalog)?;
    let mut b = RowsBuilder::new(&[
        ("name", Col::Text),
        ("object", Col::Text),
        ("kind", Col::Text),
        ("columns", Col::Text),
        ("severity", Col::Text),
        ("store_failures", Col::Bool),
        ("failures_limit", Col::Int),
        ("query", Col::Text),
        ("definition", Col::Text),
        ("created_at", Col::Timestamp),
        ("last_status", Col::Text),
        ("last_failing_rows", Col::Int),
        ("last_run_at", Col::Timestamp),
    ]);
    for t in catalog.tests()? {
        let last = latest.get(&t.id);
        let object = t.object_id.and_then(|id| names.get(&id));
        let columns = (!t.columns.is_empty()).then(|| t.columns.join(", "));
        b.text(Some(&t.name))
            .text(object.map(String::as_str))
            .text(Some(&t.kind))
            .text(columns.as_deref())
            .text(Some(t.severity.as_str()))
            .bool(Some(t.store_failures))
            .int(Some(t.failures_limit))
            .text(Some(&t.query))
            .text(Some(&t.sql))
            .timestamp(Some(&t.created_at))
            .text(last.map(|r| r.status.as_str()))
            .int(last.map(|r| r.failing_rows))
            .timestamp(last.map(|r| r.started_at.as_str()));
    }
    b.finish()
}

/// `tributary.test_results`: every execution, by refresh run or `RUN TESTS`.
pub fn results_table(catalog: &Catalog) -> Result<RecordBatch> {
    let mut b = RowsBuilder::new(&[
        ("result_id", Col::Int),
        ("test", Col::Text),
        ("object", Col::Text),
        ("run_id", Col::Int),
        ("delta_version", Col::Int),
        ("status", Col::Text),
        ("severity", Col::Text),
        ("failing_rows", Col::Int),
        ("scope", Col::Text),
        ("started_at", Col::Timestamp),
        ("duration_ms", Col::Int),
        ("error", Col::Text),
    ]);
    for r in catalog.test_results()? {
        b.int(Some(r.id))
            .text(Some(&r.test_name))
            .text((!r.object_name.is_empty()).then_some(r.object_name.as_str()))
            .int(r.run_id)
            .int(r.delta_version)
            .text(Some(r.status.as_str()))
            .text(Some(r.severity.as_str()))
            .int(Some(r.failing_rows))
            .text(Some(&r.scope))
            .timestamp(Some(&r.started_at))
            .int(Some(r.duration_ms))
            .text(r.error.as_deref());
    }
    b.finish()
}

/// `tributary.test_failures`: the failing rows of each test's latest failing execution, as
/// JSON objects, at most the test's `failures_limit`.
pub fn failures_table(catalog: &Catalog) -> Result<RecordBatch> {
    let mut b = RowsBuilder::new(&[
        ("result_id", Col::Int),
        ("test", Col::Text),
        ("row_number", Col::Int),
        ("row", Col::Text),
    ]);
    for f in catalog.test_failures()? {
        b.int(Some(f.result_id))
            .text(Some(&f.test_name))
            .int(Some(f.row_number))
            .text(Some(&f.row_json));
    }
    b.finish()
}

/// `tributary.jobs`: every job with its schedule and last run.
pub fn jobs_table(catalog: &tributary_catalog::Catalog) -> Result<RecordBatch> {
    let mut b = RowsBuilder::new(&[
        ("name", Col::Text),
        ("schedule", Col::Text),
        ("statement", Col::Text),
        ("owner", Col::Text),
        ("options", Col::Text),
        ("description", Col::Text),
        ("definition", Col::Text),
        ("created_at", Col::Timestamp),
        ("last_run_time", Col::Timestamp),
        ("last_status", Col::Text),
        ("last_error", Col::Text),
    ]);
    for job in catalog.jobs()? {
        let last = catalog.latest_job_runs(job.id, 1)?.pop();
        let last = last.as_ref();
        b.text(Some(&job.name))
            .text(Some(
                job.options.get("schedule").map_or("manual", String::as_str),
            ))
            .text(Some(&job.statement));
        b.text(Some(&job.owner))
            .text(Some(
                &serde_json::to_string(&job.options).unwrap_or_default(),
            ))
            .text(job.options.get("description").map(String::as_str))
            .text(Some(&job.sql))
            .timestamp(Some(&job.created_at))
            .timestamp(last.map(|r| r.run_time.as_str()))
            .text(last.map(|r| r.status.as_str()))
            .text(last.and_then(|r| r.error.as_deref()));
    }
    b.finish()
}

/// `tributary.job_runs`: every run of every job, with the statement as it ran.
pub fn job_runs_table(catalog: &tributary_catalog::Catalog) -> Result<RecordBatch> {
    let mut b = RowsBuilder::new(&[
        ("run_id", Col::Int),
        ("job", Col::Text),
        ("trigger", Col::Text),
        ("run_time", Col::Timestamp),
        ("status", Col::Text),
        ("started_at", Col::Timestamp),
        ("finished_at", Col::Timestamp),
        ("rows", Col::Int),
        ("statement", Col::Text),
        ("error", Col::Text),
    ]);
    for r in catalog.job_runs()? {
        b.int(Some(r.id))
            .text(Some(&r.job_name))
            .text(Some(&r.trigger))
            .timestamp(Some(&r.run_time))
            .text(Some(r.status.as_str()))
            .timestamp(Some(&r.started_at))
            .timestamp(r.finished_at.as_deref())
            .int(r.rows)
            .text(r.statement.as_deref())
            .text(r.error.as_deref());
    }
    b.finish()
}
