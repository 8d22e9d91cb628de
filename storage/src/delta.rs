//! The warehouse: where Delta tables live, and the few Delta operations Tributary uses.
//! Every table is created with the change data feed on (so later incremental refreshes see
//! updates and deletes), a long log retention (so time travel keeps working) and deletion
//! vectors (so key-wise merges need not rewrite files).

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::catalog::TableProvider;
use deltalake::kernel::Action;
use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableBuilder};
use url::Url;

use tributary_sql::types::storage_schema;
use tributary_sql::{Error, Result};

#[derive(Debug, Clone)]
pub struct Warehouse {
    root: Url,
}

impl Warehouse {
    /// Opens the warehouse at a local folder (created if missing) or a URL.
    pub fn open(dir_or_url: &str) -> Result<Self> {
        super::durable::install();
        let root = if dir_or_url.contains("://") {
            let mut url = Url::parse(dir_or_url).map_err(|e| {
                Error::bad_input(format!("invalid warehouse url \"{dir_or_url}\": {e}"))
            })?;
            if !url.path().ends_with('/') {
                url.set_path(&format!("{}/", url.path()));
            }
            url
        } else {
            let path = PathBuf::from(dir_or_url);
            std::fs::create_dir_all(&path)?;
            let abs = std::fs::canonicalize(&path)?;
            Url::from_directory_path(&abs)
                .map_err(|_| Error::bad_input(format!("invalid warehouse path \"{dir_or_url}\"")))?
        };
        Ok(Self { root })
    }

    /// The local folder of the warehouse, when it is one.
    pub fn local_root(&self) -> Option<PathBuf> {
        self.root.to_file_path().ok()
    }

    pub fn table_url(&self, location: &str) -> Result<Url> {
        self.root
            .join(&format!("{}/", location.trim_end_matches('/')))
            .map_err(|e| Error::Internal(format!("bad table location {location}: {e}")))
    }

    /// Creates an empty Delta table (version 0) with the given schema.
    pub async fn create(&self, location: &str, name: &str, schema: &Schema) -> Result<DeltaTable> {
        let url = self.table_url(location)?;
        if let Ok(path) = url.to_file_path() {
            std::fs::create_dir_all(path)?;
        }
        let stored = storage_schema(schema);
        let delta_schema: StructType = stored.as_ref().try_into_kernel()?;
        let table = DeltaTableBuilder::from_url(url)?.build()?;
        let table = table
            .create()
            .with_table_name(name)
            .with_columns(delta_schema.fields().cloned())
            .with_configuration([
                ("delta.enableChangeDataFeed", Some("true")),
                ("delta.logRetentionDuration", Some("interval 36500 days")),
                // Key-wise merges mark replaced rows deleted instead of rewriting files.
                super::deletion::table_property(),
            ])
            .with_save_mode(SaveMode::ErrorIfExists)
            .await?;
        Ok(table)
    }

    /// Loads a table at a version (the latest when `None`).
    pub async fn load(&self, location: &str, version: Option<i64>) -> Result<DeltaTable> {
        let url = self.table_url(location)?;
        let mut builder = DeltaTableBuilder::from_url(url)?;
        if let Some(v) = version {
            builder = builder.with_version(
                u64::try_from(v)
                    .map_err(|_| Error::bad_input(format!("invalid table version {v}")))?,
            );
        }
        Ok(builder.load().await?)
    }

    /// Loads the table as it was at a point in time.
    pub async fn load_at(
        &self,
        location: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<DeltaTable> {
        let url = self.table_url(location)?;
        Ok(DeltaTableBuilder::from_url(url)?
            .with_timestamp(at)
            .load()
            .await?)
    }

    /// Removes a dropped table's files (local warehouses; remote ones keep them for vacuum).
    pub fn remove(&self, location: &str) -> Result<()> {
        if let Ok(path) = self.table_url(location)?.to_file_path() {
            match std::fs::remove_dir_all(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// Commit properties carrying Tributary's metadata (run id, input bookmarks).
pub fn commit_properties(metadata: serde_json::Map<String, serde_json::Value>) -> CommitProperties {
    CommitProperties::default().with_metadata(metadata)
}

/// Commits `actions` to `table` and returns the table at the new version.
///
/// The commit's post-commit step already brought the snapshot it was given up to the new
/// version (files included); the table takes that snapshot rather than replaying the log a
/// second time, which was a fixed cost of every incremental merge.
pub async fn commit(
    mut table: DeltaTable,
    properties: CommitProperties,
    actions: Vec<Action>,
    operation: DeltaOperation,
) -> Result<DeltaTable> {
    let finalized = CommitBuilder::from(properties)
        .with_actions(actions)
        .build(Some(table.snapshot()?), table.log_store(), operation)
        .await?;
    table.state = Some(finalized.snapshot);
    Ok(table)
}

/// The scan settings every Delta provider reads with: strings as `Utf8`, like every other
/// source (the engine's sessions set the same), and filters pushed into the Parquet reader.
///
/// delta-rs would otherwise read strings as `Utf8View`. DataFusion's operators measure each
/// output batch's memory for their `output_bytes` metric, which for a view array clones its
/// list of data buffers; after a hash join every output batch references all of the build
/// side's buffers, and that accounting was 45% of a 1M-row model refresh (`perf`, see the
/// README's benchmark notes). Plain `Utf8` arrays cost a copy of their strings instead.
static SCAN_SETTINGS: std::sync::LazyLock<Arc<datafusion::execution::SessionState>> =
    std::sync::LazyLock::new(|| {
        let config = datafusion::prelude::SessionConfig::new()
            .set_bool(
                "datafusion.execution.parquet.schema_force_view_types",
                false,
            )
            .set_bool("datafusion.execution.parquet.pushdown_filters", true);
        Arc::new(
            datafusion::execution::SessionStateBuilder::new()
                .with_config(config)
                .build(),
        )
    });

/// A DataFusion provider for the table's loaded version: Tributary's own scan
/// ([`super::scan`]) unless the table uses a layout only delta-rs reads.
pub async fn provider(table: &DeltaTable) -> Result<Arc<dyn TableProvider>> {
    if super::scan::supported(table) {
        return Ok(Arc::new(super::scan::DeltaScan::new(table, None).await?));
    }
    Ok(table
        .table_provider()
        .with_session(SCAN_SETTINGS.clone())
        .await?)
}

/// A provider over some of the table's live files only (their deletion vectors applied).
pub async fn provider_of_files(
    table: &DeltaTable,
    adds: Vec<deltalake::kernel::Add>,
) -> Result<Arc<dyn TableProvider>> {
    if super::scan::supported(table) {
        let paths: Vec<String> = adds
            .iter()
            .map(|add| {
                object_store::path::Path::from_url_path(&add.path)
                    .map_or_else(|_| add.path.clone(), |p| p.to_string())
            })
            .collect();
        return Ok(Arc::new(
            super::scan::DeltaScan::new(table, Some(&paths)).await?,
        ));
    }
    Ok(table
        .table_provider()
        .with_session(SCAN_SETTINGS.clone())
        .with_adds(adds)
        .await?)
}

/// The Remove action that takes a live file out of the table (with its deletion vector).
pub fn removal(add: &deltalake::kernel::Add, data_change: bool) -> deltalake::kernel::Remove {
    deltalake::kernel::Remove {
        path: add.path.clone(),
        data_change,
        deletion_timestamp: Some(chrono::Utc::now().timestamp_millis()),
        extended_file_metadata: Some(true),
        partition_values: Some(add.partition_values.clone()),
        size: Some(add.size),
        tags: add.tags.clone(),
        deletion_vector: add.deletion_vector.clone(),
        base_row_id: add.base_row_id,
        default_row_commit_version: add.default_row_commit_version,
    }
}

/// A batch with a writer's schema: columns by name, cast to its types.
pub fn conform(
    batch: &datafusion::arrow::record_batch::RecordBatch,
    schema: &datafusion::arrow::datatypes::SchemaRef,
) -> Result<datafusion::arrow::record_batch::RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let column = batch.column_by_name(f.name()).ok_or_else(|| {
                Error::Internal(format!("rows to write lack column {}", f.name()))
            })?;
            Ok(datafusion::arrow::compute::cast(column, f.data_type())?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(datafusion::arrow::record_batch::RecordBatch::try_new(
        Arc::clone(schema),
        columns,
    )?)
}

/// Moves a loaded table to the newest commit in its log. Writers start from the newest commit
/// (not the published one) so a write that committed but was never published (its statement
/// was cancelled or the server stopped) cannot make later writes conflict.
pub async fn latest(mut table: DeltaTable) -> Result<DeltaTable> {
    table.update_state().await?;
    Ok(table)
}

/// The loaded version as Tributary counts versions.
pub fn version(table: &DeltaTable) -> i64 {
    table.version().map_or(-1, |v| v as i64)
}

/// Rows added by the table's latest commit, from the commit's operation metrics.
pub async fn last_commit_rows(table: &DeltaTable) -> Option<i64> {
    use futures::TryStreamExt;
    let infos: Vec<_> = table.history(Some(1)).try_collect().await.ok()?;
    let metrics = infos.first()?.info.get("operationMetrics")?;
    ["num_added_rows", "numOutputRows", "num_output_rows"]
        .iter()
        .find_map(|k| metrics.get(k))
        .and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
}
