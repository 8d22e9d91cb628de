//! The background housekeeping pass over every table and model (the table-level work is
//! [`tributary_storage::housekeeping`]): which objects are maintained, which input versions a
//! model may still read (its bookmarks), and publishing a rewrite under the object's write
//! lock before anything is vacuumed.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tributary_catalog::{CatalogObject, ObjectKind};
use tributary_storage::delta;
use tributary_storage::housekeeping::{
    HousekeepingPolicy, HousekeepingReport, MaintainOptions, humanize, rewrite, vacuum,
};

use crate::engine::Engine;
use crate::error::Result;
use crate::refresh::Runtime;

/// One object's outcome in a pass.
#[derive(Debug)]
pub struct PassOutcome {
    pub name: tributary_catalog::ObjectName,
    /// `None` when the object was skipped (dropped, replaced or being written meanwhile).
    pub result: Result<Option<HousekeepingReport>>,
}

impl Engine {
    /// Starts the background loop: a pass every `policy.interval`, the first one an interval
    /// from now. The loop ends when the engine is dropped.
    pub fn start_housekeeping(&self, policy: HousekeepingPolicy) -> tokio::task::JoinHandle<()> {
        self.inner
            .store()
            .housekeeping()
            .note_retention(policy.vacuum_retention);
        let engine: Weak<Runtime> = Arc::downgrade(&self.inner);
        tracing::info!(
            interval = ?policy.interval,
            retention = %humanize(policy.vacuum_retention),
            compact_min_files = policy.compact_min_files,
            "housekeeping started"
        );
        tokio::spawn(async move {
            let period = policy.interval.max(Duration::from_millis(100));
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(inner) = engine.upgrade() else {
                    return;
                };
                let engine = Engine { inner };
                engine.housekeeping_pass(&policy).await;
            }
        })
    }

    /// One pass over every table and model. Errors are logged and returned, never raised.
    pub async fn housekeeping_pass(&self, policy: &HousekeepingPolicy) -> Vec<PassOutcome> {
        let inner = &self.inner;
        inner
            .store()
            .housekeeping()
            .note_retention(policy.vacuum_retention);
        let objects = match inner.catalog().objects() {
            Ok(objects) => objects,
            Err(e) => {
                tracing::error!(error = %e, "housekeeping cannot read the catalog");
                return Vec::new();
            }
        };
        let bookmarks = oldest_bookmarks(inner, &objects).await;
        let session = inner.base_state().clone();
        let mut outcomes = Vec::new();
        for object in objects.iter().filter(|o| is_maintained(o)) {
            let options = MaintainOptions {
                keep_since: bookmarks.get(&object.name.to_string()).copied(),
                session: Some(session.clone()),
                layout: Some(crate::storage::cluster::layout_of(object)),
            };
            let result = maintain_object(inner, object.id, policy, &options).await;
            match &result {
                Ok(Some(report)) if report.did_work() => {
                    tracing::info!(object = %object.name, %report, "housekeeping");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(object = %object.name, error = %e, "housekeeping failed");
                }
            }
            outcomes.push(PassOutcome {
                name: object.name.clone(),
                result,
            });
        }
        outcomes
    }
}

fn is_maintained(object: &CatalogObject) -> bool {
    // HTTP sources keep their snapshots as a Delta table too: one small file per poll.
    crate::sources::stored_in_delta(object)
        && object.location.is_some()
        && object.published_version.is_some()
}

/// For every stored input, the oldest version a model's latest commit says it read.
async fn oldest_bookmarks(inner: &Runtime, objects: &[CatalogObject]) -> BTreeMap<String, i64> {
    let mut oldest: BTreeMap<String, i64> = BTreeMap::new();
    for model in objects
        .iter()
        .filter(|o| o.kind == ObjectKind::Model && is_maintained(o))
    {
        let table = match inner.store().published_table(model).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(object = %model.name, error = %e, "housekeeping cannot read bookmarks");
                continue;
            }
        };
        for (input, bookmark) in tributary_storage::bookmarks::bookmarks(&table).await {
            let Some(version) = bookmark.version() else {
                continue;
            };
            oldest
                .entry(input)
                .and_modify(|v| *v = (*v).min(version))
                .or_insert(version);
        }
    }
    oldest
}

/// Maintains one object under its write lock and publishes the result.
async fn maintain_object(
    inner: &Runtime,
    id: i64,
    policy: &HousekeepingPolicy,
    options: &MaintainOptions,
) -> Result<Option<HousekeepingReport>> {
    let lock = inner.store().write_lock(id);
    let _guard = lock.lock().await;
    // Read the object again under the lock: it may have been dropped, replaced or written.
    let Some(object) = inner.catalog().object_by_id(id)? else {
        return Ok(None);
    };
    if !is_maintained(&object) {
        return Ok(None);
    }
    let published = object.published_version.unwrap_or(-1);
    let table = delta::latest(inner.store().published_table(&object).await?).await?;
    if delta::version(&table) != published {
        // A commit landed but was never published (its statement was cancelled); the next
        // write or restart publishes it. Housekeeping must not be what makes it visible.
        tracing::debug!(object = %object.name, "housekeeping skipped: unpublished commits");
        return Ok(None);
    }
    let (table, mut report) = rewrite(table, policy, options).await?;
    if delta::version(&table) != published {
        let current = inner.catalog().object_by_id(id)?;
        let unchanged = current.as_ref().is_some_and(|c| {
            c.location == object.location && c.published_version == object.published_version
        });
        match current {
            Some(current) if unchanged => {
                inner.store().publish(&current, table.clone())?;
            }
            _ => {
                tracing::warn!(object = %object.name, "housekeeping result not published: the object changed meanwhile");
                return Ok(Some(report));
            }
        }
    }
    // Only now: a reader that looks the table up from here on gets the rewritten version,
    // which does not name the files vacuum may delete.
    let (vacuumed, kept) = vacuum(&table, policy.vacuum_retention, options).await?;
    report.files_vacuumed = vacuumed;
    report.files_kept_for_models = kept;
    Ok(Some(report))
}
