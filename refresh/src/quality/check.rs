//! Running one test: plan its query, point the tested model at the version under audit (or
//! at just the rows an append added, where checking those alone is equivalent), count the
//! failing rows and keep the first few as JSON.

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::logical_expr::{JoinType, LogicalPlan, col, lit};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use tributary_catalog::{DataTest, NewTestResult, ObjectName, Severity, TestStatus};

use crate::runtime::Runtime;
use tributary_query::planning;
use tributary_sql::error::{Error, Result};

/// A model version written by a refresh and not yet published.
pub(crate) struct Candidate {
    pub name: ObjectName,
    pub object_id: Option<i64>,
    /// The new version, as a provider.
    pub provider: Arc<dyn TableProvider>,
    pub version: i64,
    /// The rows this refresh appended, when it only appended to a version whose tests
    /// passed: UNIQUE and NOT NULL then only need to look at these.
    pub appended: Option<Arc<dyn TableProvider>>,
}

/// What to check: everything, or only the rows an append added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    All,
    NewRows,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::All => "all rows",
            Scope::NewRows => "new rows",
        }
    }
}

/// Runs `test` against the published versions of everything it reads (`RUN TESTS`);
/// `version` is the published version of the object it tests, recorded with the result.
/// Never fails: a test whose query cannot run gets status `error`.
pub async fn execute_on_published(
    runtime: &Runtime,
    test: &DataTest,
    version: Option<i64>,
) -> NewTestResult {
    execute(runtime, test, None, None, version).await
}

/// Runs `test` against the published versions of everything it reads, except `candidate`.
/// Never fails: a test whose query cannot run is recorded with status `error`.
pub(crate) async fn execute(
    engine: &Runtime,
    test: &DataTest,
    candidate: Option<&Candidate>,
    run_id: Option<i64>,
    delta_version: Option<i64>,
) -> NewTestResult {
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let clock = std::time::Instant::now();
    let scope = match candidate {
        Some(c)
            if c.appended.is_some()
                && matches!(test.kind.as_str(), "unique" | "not_null")
                && test.object_id.is_some() =>
        {
            Scope::NewRows
        }
        _ => Scope::All,
    };
    let outcome = failing_rows(engine, test, candidate, scope).await;
    let duration_ms = clock.elapsed().as_millis() as i64;
    let (status, failing_rows, failures, error) = match outcome {
        Ok((0, _)) => (TestStatus::Pass, 0, Vec::new(), None),
        Ok((count, rows)) => {
            let status = match test.severity {
                Severity::Error => TestStatus::Fail,
                Severity::Warn => TestStatus::Warn,
            };
            (status, count, rows, None)
        }
        Err(e) => (TestStatus::Error, 0, Vec::new(), Some(e.to_string())),
    };
    NewTestResult {
        test_id: test.id,
        run_id,
        // The version of the test's own object: the candidate's only when the test is on it.
        delta_version: candidate
            .filter(|c| test.object_id.is_some() && c.object_id == test.object_id)
            .map(|c| c.version)
            .or(delta_version),
        status,
        failing_rows,
        scope: scope.as_str().into(),
        started_at,
        duration_ms,
        error,
        failures: if test.store_failures {
            failures
        } else {
            Vec::new()
        },
    }
}

/// The number of failing rows, and the first `failures_limit` of them as JSON objects.
async fn failing_rows(
    engine: &Runtime,
    test: &DataTest,
    candidate: Option<&Candidate>,
    scope: Scope,
) -> Result<(i64, Vec<String>)> {
    let state = planning::state_in_schema(engine.base_state(), Some(&test.default_schema));
    // The tested model's name reads the version under audit (or only its appended rows).
    let mut overrides = std::collections::HashMap::new();
    if let Some(c) = candidate {
        let provider = match scope {
            Scope::NewRows => c
                .appended
                .clone()
                .ok_or_else(|| Error::Internal("a new-rows check without appended rows".into()))?,
            Scope::All => Arc::clone(&c.provider),
        };
        overrides.insert(c.name.clone(), provider);
    }
    let plan = match (candidate, scope) {
        (Some(c), Scope::NewRows) if test.kind == "unique" => unique_among_appended(
            &state,
            test,
            Arc::clone(&c.provider),
            Arc::clone(&overrides[&c.name]),
        )?,
        _ => {
            tributary_query::provider::with_overrides(
                overrides,
                planning::plan_query_text(&state, &test.query),
            )
            .await?
        }
    };
    let ctx = SessionContext::new_with_state(state);
    let mut stream = ctx
        .execute_logical_plan(plan)
        .await?
        .execute_stream()
        .await?;
    let limit = test.failures_limit.max(0) as usize;
    let mut count = 0i64;
    let mut kept = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        if kept.len() < limit && batch.num_rows() > 0 {
            let take = (limit - kept.len()).min(batch.num_rows());
            kept.extend(rows_as_json(&batch.slice(0, take))?);
        }
        count += batch.num_rows() as i64;
    }
    Ok((count, kept))
}

/// UNIQUE after an append to a version where it held: a duplicate must involve a new row, so
/// only keys that appear among the new rows are counted (over old and new rows together).
fn unique_among_appended(
    state: &datafusion::execution::context::SessionState,
    test: &DataTest,
    table: Arc<dyn TableProvider>,
    appended: Arc<dyn TableProvider>,
) -> Result<LogicalPlan> {
    use datafusion::functions_aggregate::expr_fn::count;
    let ctx = SessionContext::new_with_state(state.clone());
    let keys: Vec<String> = test.columns.clone();
    let key_cols = || keys.iter().map(|k| col(quoted(k))).collect::<Vec<_>>();
    let new_names: Vec<String> = keys.iter().map(|k| format!("__new_{k}")).collect();
    let new_keys = ctx
        .read_table(appended)?
        .select(
            keys.iter()
                .zip(&new_names)
                .map(|(k, n)| col(quoted(k)).alias(n))
                .collect::<Vec<_>>(),
        )?
        .distinct()?;
    let left: Vec<&str> = keys.iter().map(String::as_str).collect();
    let right: Vec<&str> = new_names.iter().map(String::as_str).collect();
    let failing = ctx
        .read_table(table)?
        .join(new_keys, JoinType::LeftSemi, &left, &right, None)?
        .aggregate(key_cols(), vec![count(lit(1)).alias("occurrences")])?
        .filter(col("occurrences").gt(lit(1i64)))?;
    Ok(failing.into_unoptimized_plan())
}

/// A column name as `col` must see it (case kept).
fn quoted(name: &str) -> String {
    crate::quality::definition::quote(name)
}

/// Each row of `batch` as one JSON object (nulls kept as `null`).
fn rows_as_json(batch: &RecordBatch) -> Result<Vec<String>> {
    use datafusion::arrow::json::writer::{LineDelimited, WriterBuilder};
    let mut buffer = Vec::new();
    {
        let mut writer = WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, LineDelimited>(&mut buffer);
        writer.write(batch)?;
        writer.finish()?;
    }
    let text = String::from_utf8(buffer).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(text.lines().map(str::to_string).collect())
}
