//! Housekeeping: keeps months of small commits fast to read without changing any result.
//!
//! Every INSERT, COPY and incremental refresh adds a small Parquet file and a JSON commit, so a
//! table that lives for months ends up with thousands of both, and every read pays for them:
//! log replay grows with the commits since the last checkpoint, and a scan opens every file.
//! A background pass (the engine's `housekeeping` module) visits every table and model,
//! under the object's write lock so no writer races it, and calls [`rewrite`] and [`vacuum`]
//! here, which:
//!
//! - **compacts** small files with Delta's `OPTIMIZE` once there are
//!   [`HousekeepingPolicy::compact_min_files`] of them (smaller than the target size). The
//!   commit only holds `dataChange = false` actions: same rows, fewer files. The commit carries
//!   the model's input bookmarks forward so incremental refresh keeps its place, and the new
//!   version is published like any write (catalog and table cache);
//! - **purges** files whose deletion vectors (left by key-wise merges) mark a fifth or more of
//!   their rows: their live rows are rewritten, again with `dataChange = false` actions
//!   ([`deletion::purge`]);
//! - **checkpoints** the log. delta-rs already writes a checkpoint on every commit whose
//!   version + 1 is a multiple of `delta.checkpointInterval` (100 by default), so this only
//!   catches up when [`HousekeepingPolicy::checkpoint_every`] commits passed without one (a
//!   checkpoint hook that failed, commits written by other tools);
//! - **vacuums** data files that were removed from the table longer than
//!   [`HousekeepingPolicy::vacuum_retention`] ago. Time travel to a version older than the
//!   retention then fails with a clear error ([`ensure_readable`]) instead of a missing-file
//!   error from the scan. Whatever their age, files a model may still read are kept: every
//!   file of the input version the model last read (its bookmark; an incremental refresh
//!   may read the input as of that version) and every file added since (it reads those
//!   from the change feed). So a model that was not refreshed for a while still refreshes
//!   incrementally; the price is that compacted-away files stay until every model over the
//!   table has committed a newer bookmark. To keep them, vacuum runs as a dry run to get the
//!   candidates and Tributary deletes the rest itself; as a side effect vacuum adds no
//!   commits to the log.
//!
//! A pass publishes its rewrites before it vacuums, so a query planned after the deletion
//! reads the new version. A query that planned against the previous version and is still
//! reading it when vacuum runs never notices with a retention of minutes or more; a retention
//! near zero (tests) can make such a query fail.

use std::collections::HashSet;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use datafusion::execution::context::SessionState;
use deltalake::DeltaTable;
use deltalake::kernel::Action;
use deltalake::logstore::get_actions;
use deltalake::table::config::TablePropertiesExt;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use tributary_catalog::CatalogObject;

use tributary_sql::{Error, Result};

use crate::bookmarks::INPUTS_KEY;
use crate::deletion;
use crate::delta;

/// What housekeeping does and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HousekeepingPolicy {
    /// Time between two passes over every table and model.
    pub interval: Duration,
    /// Compact a table once it has at least this many files smaller than the target size.
    pub compact_min_files: usize,
    /// Size of the files compaction writes; files at least this big are left alone.
    pub target_file_size: u64,
    /// Data files removed from a table longer ago than this are deleted from storage; time
    /// travel reaches back this far.
    pub vacuum_retention: Duration,
    /// Write a checkpoint when this many commits passed without one.
    pub checkpoint_every: u64,
}

impl Default for HousekeepingPolicy {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10 * 60),
            compact_min_files: 16,
            target_file_size: 128 << 20,
            vacuum_retention: Duration::from_secs(7 * 24 * 3600),
            checkpoint_every: 100,
        }
    }
}

/// What maintaining one table did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HousekeepingReport {
    pub version_before: i64,
    pub version_after: i64,
    pub live_files_before: usize,
    pub live_files_after: usize,
    /// Small files compaction replaced.
    pub files_compacted: u64,
    /// Files compaction wrote.
    pub files_written: u64,
    /// Files rewritten because their deletion vectors marked many of their rows.
    pub files_purged: usize,
    /// The version a checkpoint was written for.
    pub checkpoint: Option<i64>,
    /// Removed files deleted from storage.
    pub files_vacuumed: usize,
    /// Removed files older than the retention kept because a model has not consumed them yet.
    pub files_kept_for_models: usize,
}

impl HousekeepingReport {
    pub fn did_work(&self) -> bool {
        self.files_compacted > 0
            || self.files_purged > 0
            || self.checkpoint.is_some()
            || self.files_vacuumed > 0
    }
}

impl std::fmt::Display for HousekeepingReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "version {} -> {}, files {} -> {} ({} compacted into {}), {} vacuumed",
            self.version_before,
            self.version_after,
            self.live_files_before,
            self.live_files_after,
            self.files_compacted,
            self.files_written,
            self.files_vacuumed,
        )?;
        if self.files_kept_for_models > 0 {
            write!(
                f,
                " ({} kept for unrefreshed models)",
                self.files_kept_for_models
            )?;
        }
        if self.files_purged > 0 {
            write!(f, ", {} purged of deleted rows", self.files_purged)?;
        }
        if let Some(v) = self.checkpoint {
            write!(f, ", checkpoint at version {v}")?;
        }
        Ok(())
    }
}

/// Inputs to a pass over one table that come from outside the table.
#[derive(Debug, Default)]
pub struct MaintainOptions {
    /// Keep every file of this version and every file added after it (the oldest input
    /// version a model's bookmark names).
    pub keep_since: Option<i64>,
    /// The DataFusion state compaction runs with (the engine's memory pool).
    pub session: Option<SessionState>,
    /// The Parquet layout compaction writes (a keyed model's lookup layout), when not the
    /// default.
    pub layout: Option<deltalake::parquet::file::properties::WriterProperties>,
}

/// Housekeeping state shared with readers: the shortest retention any pass used, so time
/// travel knows which versions may have lost files.
#[derive(Debug)]
pub struct Shared {
    /// In milliseconds; `u64::MAX` while nothing was vacuumed by this process.
    min_retention_ms: AtomicU64,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            min_retention_ms: AtomicU64::new(u64::MAX),
        }
    }
}

impl Shared {
    /// Records the retention a pass or the background loop uses.
    pub fn note_retention(&self, retention: Duration) {
        let ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX - 1);
        self.min_retention_ms.fetch_min(ms, Ordering::Relaxed);
    }

    /// The shortest retention used so far, if any pass may have deleted files.
    pub fn min_retention(&self) -> Option<Duration> {
        match self.min_retention_ms.load(Ordering::Relaxed) {
            u64::MAX => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }
}

/// Rewrites one Delta table where due: purge, compaction, checkpoint. Returns the table at its
/// newest version (a new one when a rewrite committed); the caller publishes it before
/// [`vacuum`] deletes anything, so no reader is handed a version whose files are gone.
pub async fn rewrite(
    table: DeltaTable,
    policy: &HousekeepingPolicy,
    options: &MaintainOptions,
) -> Result<(DeltaTable, HousekeepingReport)> {
    let mut report = HousekeepingReport {
        version_before: delta::version(&table),
        ..Default::default()
    };
    let target = policy.target_file_size.max(1);
    let (live, small) = file_counts(&table, target)?;
    report.live_files_before = live;
    report.live_files_after = live;

    let metadata = carried_metadata(&table).await?;
    let (mut table, purged) = deletion::purge(table, metadata, options.layout.clone()).await?;
    report.files_purged = purged;
    if purged > 0 {
        report.live_files_after = file_counts(&table, target)?.0;
    }
    if small >= policy.compact_min_files.max(2) {
        let (compacted, metrics) = compact(table, target, options).await?;
        table = compacted;
        report.files_compacted = metrics.num_files_removed;
        report.files_written = metrics.num_files_added;
        report.live_files_after = file_counts(&table, target)?.0;
    }

    let version = delta::version(&table);
    let last_checkpoint = last_checkpoint_version(&table).await?;
    if version >= 0
        && version > last_checkpoint
        && version - last_checkpoint.max(0) >= policy.checkpoint_every.max(1) as i64
    {
        deltalake::checkpoints::create_checkpoint(&table, None).await?;
        report.checkpoint = Some(version);
    }
    report.version_after = version;
    Ok((table, report))
}

/// Live files, and how many of them are smaller than `target`.
fn file_counts(table: &DeltaTable, target: u64) -> Result<(usize, usize)> {
    let state = table.snapshot()?;
    let mut live = 0;
    let mut small = 0;
    for file in state.log_data().iter() {
        live += 1;
        if u64::try_from(file.size()).unwrap_or(0) < target {
            small += 1;
        }
    }
    Ok((live, small))
}

async fn compact(
    table: DeltaTable,
    target: u64,
    options: &MaintainOptions,
) -> Result<(DeltaTable, deltalake::operations::optimize::Metrics)> {
    let metadata = carried_metadata(&table).await?;
    let workers = std::thread::available_parallelism()
        .map(|n| n.get().div_ceil(2))
        .unwrap_or(1);
    let mut builder = table
        .optimize()
        .with_target_size(NonZeroU64::new(target).unwrap_or(NonZeroU64::MIN))
        .with_max_concurrent_tasks(workers)
        .with_commit_properties(delta::commit_properties(metadata));
    if let Some(state) = &options.session {
        builder = builder.with_session_state(Arc::new(state.clone()));
    }
    if let Some(layout) = &options.layout {
        builder = builder.with_writer_properties(layout.clone());
    }
    Ok(builder.await?)
}

/// A model's input bookmarks live in its latest commit: housekeeping commits carry them over
/// so the model's next refresh still knows which input versions it read.
async fn carried_metadata(
    table: &DeltaTable,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    let mut metadata = serde_json::Map::new();
    if let Some(inputs) = last_commit_info(table)
        .await?
        .and_then(|mut i| i.remove(INPUTS_KEY))
    {
        metadata.insert(INPUTS_KEY.into(), inputs);
    }
    Ok(metadata)
}

/// The `info` map of the table's latest commit.
async fn last_commit_info(
    table: &DeltaTable,
) -> Result<Option<std::collections::HashMap<String, serde_json::Value>>> {
    let infos: Vec<_> = table.history(Some(1)).try_collect().await?;
    Ok(infos.into_iter().next().map(|i| i.info))
}

/// The version of the newest checkpoint (`_delta_log/_last_checkpoint`), -1 without one.
async fn last_checkpoint_version(table: &DeltaTable) -> Result<i64> {
    let store = table.log_store().object_store(None);
    let bytes = match store.get(&Path::from("_delta_log/_last_checkpoint")).await {
        Ok(got) => got
            .bytes()
            .await
            .map_err(deltalake::DeltaTableError::from)?,
        Err(object_store::Error::NotFound { .. }) => return Ok(-1),
        Err(e) => return Err(deltalake::DeltaTableError::from(e).into()),
    };
    Ok(serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("version")?.as_i64())
        .unwrap_or(-1))
}

/// Deletes files removed longer than `retention` ago, except files of version `keep_since`
/// or added after it. Returns (deleted, kept for models).
pub async fn vacuum(
    table: &DeltaTable,
    retention: Duration,
    options: &MaintainOptions,
) -> Result<(usize, usize)> {
    let table_default = table
        .snapshot()?
        .table_config()
        .deleted_file_retention_duration();
    let period = chrono::Duration::from_std(retention)
        .map_err(|e| Error::bad_input(format!("vacuum retention out of range: {e}")))?;
    let (_, plan) = table
        .clone()
        .vacuum()
        .with_retention_period(period)
        // Below the table's own minimum only because the operator configured it so.
        .with_enforce_retention_duration(retention >= table_default)
        .with_dry_run(true)
        .await?;
    if plan.files_deleted.is_empty() {
        return Ok((0, 0));
    }
    let keep = match options.keep_since {
        Some(since) if since < delta::version(table) => referenced_since(table, since).await?,
        _ => HashSet::new(),
    };
    let doomed: Vec<Path> = plan
        .files_deleted
        .iter()
        .map(|f| store_path(f))
        .filter(|p| !keep.contains(p))
        .collect();
    let kept = plan.files_deleted.len() - doomed.len();
    if doomed.is_empty() {
        return Ok((0, kept));
    }
    let store = table.log_store().object_store(None);
    let deleted = store
        .delete_stream(futures::stream::iter(doomed.into_iter().map(Ok)).boxed())
        .filter(|r| std::future::ready(!matches!(r, Err(object_store::Error::NotFound { .. }))))
        .try_collect::<Vec<_>>()
        .await
        .map_err(deltalake::DeltaTableError::from)?;
    Ok((deleted.len(), kept))
}

/// A table-relative path as the object store spells it (log paths are percent-encoded).
fn store_path(path: &str) -> Path {
    Path::parse(path).unwrap_or_else(|_| Path::from(path))
}

/// Files of version `since` and files added by the commits after it, up to the table's
/// version, with their deletion vectors: what a model whose bookmark is `since` may still
/// read.
async fn referenced_since(table: &DeltaTable, since: i64) -> Result<HashSet<Path>> {
    let mut added = HashSet::new();
    if since >= 0 {
        let mut old = table.clone();
        old.load_version(since as u64).await?;
        for file in old.snapshot()?.log_data().iter() {
            added.insert(file.object_store_path());
            if let Some(dv) = file.deletion_vector_descriptor()
                && let Some(path) = deletion::store_path(table, &dv)?
            {
                added.insert(path);
            }
        }
    }
    let log = table.log_store();
    for version in (since + 1).max(0)..=delta::version(table) {
        let Some(bytes) = log.read_commit_entry(version as u64).await? else {
            continue;
        };
        for action in get_actions(version as u64, &bytes)? {
            if let Action::Add(add) = action {
                added.insert(store_path(&add.path));
                if let Some(dv) = &add.deletion_vector
                    && let Some(path) = deletion::store_path(table, dv)?
                {
                    added.insert(path);
                }
            }
        }
    }
    Ok(added)
}

/// Time travel guard: a snapshot older than the vacuum retention may have lost data files.
/// Fails with a clear error when one is missing, rather than letting the scan fail on it.
pub async fn ensure_readable(
    shared: &Shared,
    object: &CatalogObject,
    table: &DeltaTable,
) -> Result<()> {
    let Some(retention) = shared.min_retention() else {
        return Ok(());
    };
    let version = delta::version(table);
    if object.published_version.is_some_and(|p| version >= p) {
        return Ok(());
    }
    let state = table.snapshot()?;
    let cutoff = chrono::Utc::now().timestamp_millis()
        - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    if state
        .version_timestamp(version as u64)
        .is_some_and(|ts| ts >= cutoff)
    {
        return Ok(());
    }
    let store = table.log_store().object_store(None);
    let paths: Vec<Path> = state
        .log_data()
        .iter()
        .map(|f| f.object_store_path())
        .collect();
    let missing = futures::stream::iter(paths)
        .map(|path| {
            let store = Arc::clone(&store);
            async move {
                match store.head(&path).await {
                    Ok(_) => Ok(false),
                    Err(object_store::Error::NotFound { .. }) => Ok(true),
                    Err(e) => Err(e),
                }
            }
        })
        .buffer_unordered(16)
        .try_any(std::future::ready)
        .await
        .map_err(deltalake::DeltaTableError::from)?;
    if missing {
        return Err(Error::BadInput {
            message: format!(
                "version {version} of \"{}\" is no longer available: its data files were \
                 vacuumed (files removed more than {} ago are deleted)",
                object.name,
                humanize(retention)
            ),
            detail: Some(format!(
                "time travel reaches back as far as the vacuum retention; \"{}\" is at version {}",
                object.name,
                object.published_version.unwrap_or(-1)
            )),
        });
    }
    Ok(())
}

/// A retention as people say it (`7 days`, `90 seconds`).
pub fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => format!("{}ms", d.as_millis()),
        s if s % 86400 == 0 => format!("{} days", s / 86400),
        s if s % 3600 == 0 => format!("{} hours", s / 3600),
        s if s % 60 == 0 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}
