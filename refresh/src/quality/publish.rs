//! Write-audit-publish. A refresh writes its Delta commit, then every test on or reading the
//! model runs against that commit before the catalog publishes it. A failing `error` test
//! leaves the previous version published (readers never see the new one), restores the table
//! to it with a new commit that carries the previous input bookmarks (so the next refresh
//! starts from what was published, not from the rejected commit), and fails the refresh with
//! an integrity error naming the test. A failing `warn` test publishes and is recorded.

use deltalake::DeltaTable;
use serde_json::json;
use std::sync::Arc;
use tributary_catalog::{CatalogObject, DataTest, Severity, TestStatus};

use super::check::{self, Candidate};
use crate::changes::{self, FeedRows};
use crate::runtime::Runtime;
use tributary_sql::error::{Error, Result};
use tributary_storage::bookmarks::{Bookmarks, CommitMetadata};
use tributary_storage::delta;

/// Commit metadata key marking a commit that restored the table after a failed audit (the
/// value is the id of the run whose commit it undid).
pub const RESTORED_RUN_KEY: &str = "tributary.restored_run_id";

/// The model's table as it was before the refresh wrote.
pub(crate) struct Before {
    /// The Delta version the refresh wrote on top of.
    pub version: i64,
    /// The input bookmarks recorded with that version.
    pub bookmarks: Bookmarks,
}

/// Audits `table` (the version a refresh of `object` just committed) and publishes it if no
/// `error` test fails. `appended` says the commit only added rows.
pub(crate) async fn publish_audited(
    engine: &Runtime,
    object: &CatalogObject,
    table: DeltaTable,
    before: &Before,
    appended: bool,
    run_id: i64,
) -> Result<i64> {
    let tests = engine.catalog().tests_reading(object.id)?;
    if tests.is_empty() {
        return engine.store().publish(object, table);
    }
    let version = delta::version(&table);
    let provider = delta::provider(&table).await?;
    // Rows an append added, for tests that held on the published version it appended to.
    let appended_rows = match object.published_version {
        Some(published) if appended && published == before.version => Some(
            changes::feed_rows(
                engine.base_state(),
                &table,
                (before.version, version),
                FeedRows::Inserted,
                &provider,
            )
            .await?,
        ),
        _ => None,
    };
    let latest = super::latest_results(engine.catalog())?;
    let mut failed: Vec<(DataTest, i64, Option<String>)> = Vec::new();
    for test in &tests {
        let held_before = latest.get(&test.id).is_some_and(|r| {
            r.status == TestStatus::Pass && r.delta_version == object.published_version
        });
        let candidate = Candidate {
            name: object.name.clone(),
            object_id: Some(object.id),
            provider: Arc::clone(&provider),
            version,
            appended: appended_rows.clone().filter(|_| held_before),
        };
        let result = check::execute(engine, test, Some(&candidate), Some(run_id), None).await;
        engine.catalog().record_test_result(test, &result)?;
        crate::metrics::test_finished(&test.name, &object.name, result.status.as_str());
        tracing::info!(test = %test.name, model = %object.name, status = result.status.as_str(),
            failing_rows = result.failing_rows, scope = %result.scope, "test ran");
        if test.severity == Severity::Error
            && matches!(result.status, TestStatus::Fail | TestStatus::Error)
        {
            failed.push((test.clone(), result.failing_rows, result.error.clone()));
        }
    }
    if failed.is_empty() {
        return engine.store().publish(object, table);
    }
    restore(table, before, Some(run_id)).await?;
    Err(test_failed(object, version, &failed))
}

/// Undoes a rejected commit: a new commit with the content and input bookmarks of `before`.
async fn restore(table: DeltaTable, before: &Before, run_id: Option<i64>) -> Result<()> {
    let mut metadata = CommitMetadata {
        inputs: Some(before.bookmarks.clone()),
        ..Default::default()
    }
    .into_map();
    if let Some(run_id) = run_id {
        metadata.insert(RESTORED_RUN_KEY.into(), json!(run_id));
    }
    let started = std::time::Instant::now();
    let (table, _) = table
        .restore()
        .with_version_to_restore(before.version.max(0) as u64)
        .with_commit_properties(delta::commit_properties(metadata))
        .await?;
    tributary_storage::metrics::delta_commit(started.elapsed());
    tracing::info!(
        version = delta::version(&table),
        restored = before.version,
        "rejected commit undone"
    );
    Ok(())
}

/// The error a refresh fails with: the first failing test, its failing rows, and what readers
/// keep seeing.
fn test_failed(
    object: &CatalogObject,
    version: i64,
    failed: &[(DataTest, i64, Option<String>)],
) -> Error {
    let (test, rows, error) = &failed[0];
    let what = match error {
        Some(e) => format!("could not run: {e}"),
        None => format!(
            "found {rows} failing row{}",
            if *rows == 1 { "" } else { "s" }
        ),
    };
    let others = match failed.len() - 1 {
        0 => String::new(),
        n => format!(
            " (and {n} more failing test{})",
            if n == 1 { "" } else { "s" }
        ),
    };
    let kept = match object.published_version {
        Some(v) => format!("version {v} stays published"),
        None => "the model stays unpublished".into(),
    };
    Error::TestFailed {
        kind: if error.is_some() {
            "error".into()
        } else {
            test.kind.clone()
        },
        message: format!(
            "test \"{}\" on model \"{}\" {what}{others}; version {version} was not published and {kept}",
            test.name, object.name
        ),
    }
}

/// At start-up: a model commit that landed without its tests having run (the server stopped
/// between writing and auditing) is undone rather than published. Returns whether it was.
pub(crate) async fn undo_unaudited(
    engine: &Runtime,
    object: &CatalogObject,
    latest: DeltaTable,
) -> Result<bool> {
    if engine.catalog().tests_reading(object.id)?.is_empty() {
        return Ok(false);
    }
    let published = object.published_version.unwrap_or(0);
    let before = Before {
        version: published,
        bookmarks: changes::bookmarks_at(&latest, published).await?,
    };
    restore(latest, &before, None).await?;
    Ok(true)
}
