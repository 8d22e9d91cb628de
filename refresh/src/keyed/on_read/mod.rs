//! Merge-on-read: a key-wise refresh that marks the affected keys' old rows deleted in
//! deletion vectors and appends their new rows in a new file, in one Delta commit.
//!
//! A copy-on-write MERGE rewrites every file holding an affected key: with keys spread over
//! the whole model (a late correction to old transactions, a dimension change) that is the
//! whole model, as dear as a full refresh. Here the model's files are only read for their
//! key columns ([`search`]), and each file holding affected keys gets a deletion vector: the
//! union of its old vector and the positions of those rows. Delete-then-insert is the same result as the MERGE: every
//! row of an affected key goes, the affected keys' new rows come.
//!
//! The commit carries its change data (the old rows as deletes, the new rows as inserts; an
//! updated row is a delete and an insert) in a change-data file, see [`encode_change_data`].

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use deltalake::DeltaTable;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{Action, Add};
use deltalake::parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::DeltaOperation;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use roaring::RoaringTreemap;

use search::{KeySet, key_arrays, positions};
use tributary_sql::error::{Error, Result};
use tributary_storage::{deletion, delta};

mod search;

/// What a merge-on-read wrote.
pub(super) struct Marked {
    pub table: DeltaTable,
    /// Rows inserted, updated or deleted, counted as a MERGE counts them.
    pub rows_written: i64,
    pub files_read: usize,
    pub files_total: usize,
    /// Files that got a new deletion vector, and the rows it newly marks.
    pub files_marked: usize,
    pub rows_deleted: u64,
}

/// How a merge on read ended.
pub(super) enum Outcome {
    Committed(Marked),
    /// The model held another number of rows of the affected keys than the caller expected;
    /// nothing was written.
    Unexpected {
        table: DeltaTable,
        commit: CommitProperties,
        found: u64,
    },
}

/// The live rows of a set of keys in a table version's files, found once: a fold reads the
/// groups' old values from them, and the merge then marks them deleted without searching
/// the files again.
pub(super) struct Located {
    /// The files holding rows of the keys, with their old deletion vector and the rows'
    /// positions.
    files: Vec<(Add, RoaringTreemap, RoaringTreemap)>,
    files_read: usize,
    files_total: usize,
    /// The rows at those positions, every column, file by file (`None` when not read).
    rows: Option<Vec<RecordBatch>>,
}

impl Located {
    /// The rows found (every column of the model).
    pub(super) fn rows(&self) -> &[RecordBatch] {
        self.rows.as_deref().unwrap_or_default()
    }
}

/// Finds the live rows of the keys (`affected`: one column per key column, in `key_columns`
/// order) in the table's files, and reads them whole when `read_rows`.
pub(super) async fn locate(
    table: &DeltaTable,
    key_columns: &[String],
    affected: &[RecordBatch],
    read_rows: bool,
) -> Result<Located> {
    let keys = Arc::new(KeySet::of(affected, key_columns)?);
    let store = table.log_store().object_store(None);
    #[allow(deprecated)] // delta-rs' replacement (raw Arrow arrays) has no Add builder yet
    let files: Vec<_> = table
        .snapshot()?
        .log_data()
        .iter()
        .map(|view| (view.object_store_path(), view.add_action()))
        .collect();
    let files_total = files.len();
    // Each file's key columns are decoded and matched on a task of its own, so the files of
    // a large model are searched on every core.
    let mut searches = Vec::with_capacity(files.len());
    for (path, add) in files {
        let old = match &add.deletion_vector {
            Some(dv) => deletion::read(table, dv).await?,
            None => RoaringTreemap::new(),
        };
        let (store, key_columns, keys) =
            (Arc::clone(&store), key_columns.to_vec(), Arc::clone(&keys));
        searches.push(async move {
            tokio::spawn(async move {
                let size = add.size as u64;
                let found =
                    positions(Arc::clone(&store), &path, size, &key_columns, &keys, &old).await?;
                let rows = match &found {
                    Some(found) if read_rows && !found.is_empty() => {
                        rows_at(store, &path, size, found).await?
                    }
                    _ => Vec::new(),
                };
                Ok::<_, Error>((add, old, found, rows))
            })
            .await
            .map_err(|e| Error::Internal(format!("merge on read search failed: {e}")))?
        });
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let searched: Vec<_> = futures::stream::iter(searches)
        .buffered(cores)
        .try_collect()
        .await?;
    let mut located = Located {
        files: Vec::new(),
        files_read: 0,
        files_total,
        rows: read_rows.then(Vec::new),
    };
    for (add, old, found, rows) in searched {
        let Some(found) = found else {
            continue;
        };
        located.files_read += 1;
        if found.is_empty() {
            continue;
        }
        located.files.push((add, old, found));
        if let Some(all) = located.rows.as_mut() {
            all.extend(rows);
        }
    }
    Ok(located)
}

/// Where a merge takes the old rows of the affected keys from.
pub(super) enum OldRows {
    /// Search the model's files for them.
    Search,
    /// Found already, against the same table version ([`locate`]).
    Located(Located),
    /// The merge writes nothing unless the model holds exactly this many rows of the
    /// affected keys, and then takes these as the rows it deletes (the caller vouches that
    /// equal counts mean equal rows, see `from_feed`) instead of reading them from the
    /// model's files.
    Expected(Vec<RecordBatch>),
}

/// Replaces the rows of the affected keys (`affected`: one column per key column, in
/// `key_columns` order) with `new_rows` in one commit.
pub(super) async fn merge(
    table: DeltaTable,
    key_columns: &[String],
    affected: &[RecordBatch],
    new_rows: Vec<RecordBatch>,
    (commit, layout): (CommitProperties, Option<WriterProperties>),
    old_rows: OldRows,
) -> Result<Outcome> {
    let started = std::time::Instant::now();
    let (located, expected) = match old_rows {
        OldRows::Located(located) => (located, None),
        OldRows::Search => (locate(&table, key_columns, affected, true).await?, None),
        OldRows::Expected(rows) => (
            locate(&table, key_columns, affected, false).await?,
            Some(rows),
        ),
    };
    let scan_ms = started.elapsed().as_millis() as u64;
    let rows_deleted: u64 = located.files.iter().map(|(_, _, p)| p.len()).sum();
    let deleted_rows = match (expected, located.rows) {
        (Some(expected), _) => {
            let expected_rows: u64 = expected.iter().map(|b| b.num_rows() as u64).sum();
            if expected_rows != rows_deleted {
                return Ok(Outcome::Unexpected {
                    table,
                    commit,
                    found: rows_deleted,
                });
            }
            expected
        }
        (None, Some(rows)) => rows,
        (None, None) => return Err(Error::Internal("located rows were not read".into())),
    };
    // Deleted rows whose key has a new row were replaced (updated, as a MERGE counts them).
    let new_columns: Vec<Vec<ArrayRef>> = new_rows
        .iter()
        .map(|b| key_arrays(b, key_columns))
        .collect::<Result<_>>()?;
    let key_types: Vec<DataType> = match new_columns.first() {
        Some(columns) => columns.iter().map(|c| c.data_type().clone()).collect(),
        None => Vec::new(),
    };
    let replaced = if new_columns.is_empty() || deleted_rows.is_empty() {
        0
    } else {
        let new_keys = KeySet::from_arrays(&key_types, &new_columns)?;
        let mut replaced = 0u64;
        for batch in &deleted_rows {
            replaced += new_keys
                .contains_each(&key_arrays(batch, key_columns)?)?
                .into_iter()
                .filter(|hit| *hit)
                .count() as u64;
        }
        replaced
    };
    let (files_read, files_total) = (located.files_read, located.files_total);
    let marked: Vec<(Add, RoaringTreemap)> = located
        .files
        .into_iter()
        .map(|(add, old, positions)| {
            let vector = &old | &positions;
            (add, vector)
        })
        .collect();

    let vectors = deletion::write(&table, marked.iter().map(|(_, v)| v.clone()).collect()).await?;
    let mut actions = Vec::with_capacity(marked.len() * 2 + 1);
    for ((add, _), vector) in marked.iter().zip(vectors) {
        actions.push(Action::Remove(delta::removal(add, true)));
        let mut kept = add.clone();
        kept.deletion_vector = Some(vector);
        kept.data_change = true;
        actions.push(Action::Add(kept));
    }
    let inserted: u64 = new_rows.iter().map(|b| b.num_rows() as u64).sum();
    let mut writer = RecordBatchWriter::for_table(&table)?;
    if let Some(layout) = layout {
        writer = writer.with_writer_properties(layout);
    }
    let schema = writer.arrow_schema();
    // The change data is encoded on a thread of its own while the new rows are written.
    let change_data = {
        let (schema, inserted) = (Arc::clone(&schema), new_rows.clone());
        tokio::task::spawn_blocking(move || encode_change_data(&schema, &deleted_rows, &inserted))
    };
    if inserted > 0 {
        for batch in new_rows {
            writer.write(delta::conform(&batch, &schema)?).await?;
        }
        actions.extend(writer.flush().await?.into_iter().map(Action::Add));
    }
    let change_data = change_data
        .await
        .map_err(|e| Error::Internal(format!("encoding the change data failed: {e}")))??;
    if let Some(encoded) = change_data {
        actions.push(Action::Cdc(put_change_data(&table, encoded).await?));
    }
    let operation = DeltaOperation::Merge {
        predicate: None,
        merge_predicate: Some(format!(
            "delete rows of {} affected key(s) ({}) by deletion vector, insert their new rows",
            affected.iter().map(|b| b.num_rows()).sum::<usize>(),
            key_columns.join(", ")
        )),
        matched_predicates: Vec::new(),
        not_matched_predicates: Vec::new(),
        not_matched_by_source_predicates: Vec::new(),
    };
    let table = delta::commit(table, commit, actions, operation).await?;
    // A key whose old rows went without a new row was deleted; the others were updated (one
    // row each, as the MERGE counts them) or inserted.
    let deleted_only = rows_deleted.saturating_sub(replaced);
    tracing::info!(
        keys = affected.iter().map(|b| b.num_rows()).sum::<usize>(),
        files_read,
        files_total,
        files_marked = marked.len(),
        rows_deleted,
        inserted,
        scan_ms,
        total_ms = started.elapsed().as_millis() as u64,
        "merge on read committed"
    );
    Ok(Outcome::Committed(Marked {
        table,
        rows_written: (inserted + deleted_only) as i64,
        files_read,
        files_total,
        files_marked: marked.len(),
        rows_deleted,
    }))
}

/// The rows of a data file at `positions` (all columns).
async fn rows_at(
    store: Arc<dyn object_store::ObjectStore>,
    path: &Path,
    size: u64,
    positions: &RoaringTreemap,
) -> Result<Vec<RecordBatch>> {
    use deltalake::parquet::arrow::arrow_reader::{RowSelection, RowSelector};
    let (reader, metadata) = tributary_storage::scan::open_parquet(store, path, size).await?;
    let total = metadata.metadata().file_metadata().num_rows() as u64;
    let mut selectors = Vec::new();
    let mut cursor = 0u64;
    for position in positions.iter() {
        if position > cursor {
            selectors.push(RowSelector::skip((position - cursor) as usize));
        }
        selectors.push(RowSelector::select(1));
        cursor = position + 1;
    }
    if total > cursor {
        selectors.push(RowSelector::skip((total - cursor) as usize));
    }
    let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, metadata)
        .with_row_selection(RowSelection::from(selectors))
        .build()?;
    Ok(stream.try_collect().await?)
}

/// The commit's change data as a Parquet file: the old rows it marks deleted and the rows
/// it inserts.
///
/// With a change-data file in a commit, Delta readers take the commit's changes from it
/// alone. Without one, delta-rs 1.1 derives them from the deletion vectors, but its reader
/// mis-selects rows in files of more than one row group (it applies every row group's
/// positions to each row group), so Tributary always writes the file.
fn encode_change_data(
    schema: &datafusion::arrow::datatypes::SchemaRef,
    deleted: &[RecordBatch],
    inserted: &[RecordBatch],
) -> Result<Option<Vec<u8>>> {
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::{Field, Schema};
    use deltalake::parquet::arrow::ArrowWriter;
    if deleted.iter().chain(inserted).all(|b| b.num_rows() == 0) {
        return Ok(None);
    }
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("_change_type", DataType::Utf8, false));
    let cdc_schema = Arc::new(Schema::new(fields));
    let mut buffer = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buffer, Arc::clone(&cdc_schema), None)?;
    for (batches, kind) in [(deleted, "delete"), (inserted, "insert")] {
        for batch in batches.iter().filter(|b| b.num_rows() > 0) {
            let mut columns = delta::conform(batch, schema)?.columns().to_vec();
            columns.push(Arc::new(StringArray::from(vec![kind; batch.num_rows()])));
            writer.write(&RecordBatch::try_new(Arc::clone(&cdc_schema), columns)?)?;
        }
    }
    writer.close()?;
    Ok(Some(buffer))
}

/// Stores an encoded change-data file in the table's `_change_data` folder.
async fn put_change_data(
    table: &DeltaTable,
    encoded: Vec<u8>,
) -> Result<deltalake::kernel::AddCDCFile> {
    use object_store::ObjectStoreExt;
    let path = format!("_change_data/cdc-{}.parquet", uuid::Uuid::new_v4());
    let size = encoded.len() as i64;
    table
        .log_store()
        .object_store(None)
        .put(
            &Path::from(path.as_str()),
            bytes::Bytes::from(encoded).into(),
        )
        .await
        .map_err(deltalake::DeltaTableError::from)?;
    Ok(deltalake::kernel::AddCDCFile {
        path,
        size,
        partition_values: std::collections::HashMap::new(),
        data_change: false,
        tags: None,
    })
}
