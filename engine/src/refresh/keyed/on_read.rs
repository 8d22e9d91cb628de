//! Merge-on-read: a key-wise refresh that marks the affected keys' old rows deleted in
//! deletion vectors and appends their new rows in a new file, in one Delta commit.
//!
//! A copy-on-write MERGE rewrites every file holding an affected key: with keys spread over
//! the whole model (a late correction to old transactions, a dimension change) that is the
//! whole model, as dear as a full refresh. Here the model's files are only read for their
//! key columns (row groups whose key statistics miss every affected key are skipped), and
//! each file holding affected keys gets a deletion vector: the union of its old vector and
//! the positions of those rows. Delete-then-insert is the same result as the MERGE: every
//! row of an affected key goes, the affected keys' new rows come.
//!
//! The commit carries its change data (the old rows as deletes, the new rows as inserts; an
//! updated row is a delete and an insert) in a change-data file, see [`write_change_data`].

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{HashSet, ScalarValue};
use deltalake::DeltaTable;
use deltalake::kernel::Action;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::parquet::arrow::ProjectionMask;
use deltalake::parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use deltalake::parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::DeltaOperation;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use roaring::RoaringTreemap;

use crate::error::{Error, Result};
use crate::storage::{deletion, delta};

/// What a merge-on-read wrote.
pub struct Marked {
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
pub enum Outcome {
    Committed(Marked),
    /// The model held another number of rows of the affected keys than the caller expected;
    /// nothing was written.
    Unexpected {
        table: DeltaTable,
        commit: CommitProperties,
        found: u64,
    },
}

/// Replaces the rows of the affected keys (`affected`: one column per key column, in
/// `key_columns` order) with `new_rows` in one commit. With `expected_old_rows`, the merge
/// writes nothing unless the model holds exactly as many rows of the affected keys, and
/// then takes them as the rows it deletes (the caller vouches that equal counts mean equal
/// rows, see `from_feed`) instead of reading them from the model's files.
pub async fn merge(
    table: DeltaTable,
    key_columns: &[String],
    affected: &[RecordBatch],
    new_rows: Vec<RecordBatch>,
    (commit, layout): (CommitProperties, Option<WriterProperties>),
    expected_old_rows: Option<Vec<RecordBatch>>,
) -> Result<Outcome> {
    let started = std::time::Instant::now();
    let old_keys = KeySet::of(affected, key_columns)?;
    let new_columns: Vec<Vec<ArrayRef>> = new_rows
        .iter()
        .map(|b| key_arrays(b, key_columns))
        .collect::<Result<_>>()?;
    let new_keys = KeySet::from_arrays(&old_keys.types, &new_columns)?;

    let store = table.log_store().object_store(None);
    #[allow(deprecated)] // delta-rs' replacement (raw Arrow arrays) has no Add builder yet
    let files: Vec<_> = table
        .snapshot()?
        .log_data()
        .iter()
        .map(|view| (view.object_store_path(), view.add_action()))
        .collect();
    let files_total = files.len();
    let mut files_read = 0;
    let mut marked = Vec::new();
    let mut replaced = 0u64;
    let mut rows_deleted = 0u64;
    let mut found_in = Vec::new();
    // Each file's key columns are decoded and matched on a task of its own, so the files of
    // a large model are searched on every core.
    let (old_keys, new_keys) = (Arc::new(old_keys), Arc::new(new_keys));
    let mut searches = Vec::with_capacity(files.len());
    for (path, add) in files {
        let old = match &add.deletion_vector {
            Some(dv) => deletion::read(&table, dv).await?,
            None => RoaringTreemap::new(),
        };
        let (store, key_columns) = (store.clone(), key_columns.to_vec());
        let (old_keys, new_keys) = (old_keys.clone(), new_keys.clone());
        searches.push(async move {
            tokio::spawn(async move {
                let size = add.size as u64;
                let found =
                    positions(store, &path, size, &key_columns, &old_keys, &new_keys, &old).await?;
                Ok::<_, Error>((path, add, old, found))
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
    for (path, add, old, found) in searched {
        let Some(found) = found else {
            continue;
        };
        files_read += 1;
        if found.positions.is_empty() {
            continue;
        }
        replaced += found.replaced;
        rows_deleted += found.positions.len();
        marked.push((add, &old | &found.positions));
        found_in.push((path, found.positions));
    }
    let scan_ms = started.elapsed().as_millis() as u64;
    let deleted_rows = match expected_old_rows {
        Some(expected) => {
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
        None => {
            let mut rows = Vec::new();
            for ((path, positions), (add, _)) in found_in.iter().zip(&marked) {
                rows.extend(rows_at(store.clone(), path, add.size as u64, positions).await?);
            }
            rows
        }
    };

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
    if let Some(cdc) = write_change_data(&table, &schema, &deleted_rows, &new_rows).await? {
        actions.push(Action::Cdc(cdc));
    }
    if inserted > 0 {
        for batch in new_rows {
            writer.write(delta::conform(&batch, &schema)?).await?;
        }
        actions.extend(writer.flush().await?.into_iter().map(Action::Add));
    }
    let operation = DeltaOperation::Merge {
        predicate: None,
        merge_predicate: Some(format!(
            "delete rows of {} affected key(s) ({}) by deletion vector, insert their new rows",
            old_keys.len,
            key_columns.join(", ")
        )),
        matched_predicates: Vec::new(),
        not_matched_predicates: Vec::new(),
        not_matched_by_source_predicates: Vec::new(),
    };
    let finalized = CommitBuilder::from(commit)
        .with_actions(actions)
        .build(Some(table.snapshot()?), table.log_store(), operation)
        .await?;
    let mut table = table;
    table.load_version(finalized.version()).await?;
    // A key whose old rows went without a new row was deleted; the others were updated (one
    // row each, as the MERGE counts them) or inserted.
    let deleted_only = rows_deleted.saturating_sub(replaced);
    tracing::info!(
        keys = old_keys.len,
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

/// A set of keys, for membership tests of a file's rows. A single integer key is kept as
/// integers; other keys as Arrow's row encoding (one byte string per key, NULLs included,
/// so NULL keys match NULL keys as GROUP BY groups them).
struct KeySet {
    types: Vec<DataType>,
    len: usize,
    /// Per key column, the least and greatest key, when every key has a non-null,
    /// comparable value there (row groups outside the range hold no affected key).
    ranges: Vec<Option<(ScalarValue, ScalarValue)>>,
    members: Members,
}

enum Members {
    Integers {
        values: HashSet<i64>,
        null: bool,
    },
    Rows {
        converter: RowConverter,
        rows: HashSet<Box<[u8]>>,
    },
}

impl KeySet {
    fn of(batches: &[RecordBatch], key_columns: &[String]) -> Result<Self> {
        let types: Vec<DataType> = match batches.first() {
            Some(b) => (0..key_columns.len())
                .map(|k| b.column(k).data_type().clone())
                .collect(),
            None => return Err(Error::Internal("merge on read without keys".into())),
        };
        let arrays: Vec<Vec<ArrayRef>> = batches
            .iter()
            .map(|b| {
                (0..key_columns.len())
                    .map(|k| b.column(k).clone())
                    .collect()
            })
            .collect();
        Self::from_arrays(&types, &arrays)
    }

    fn from_arrays(types: &[DataType], batches: &[Vec<ArrayRef>]) -> Result<Self> {
        let mut set = Self {
            types: types.to_vec(),
            len: 0,
            ranges: vec![None; types.len()],
            members: if is_integer_key(types) {
                Members::Integers {
                    values: HashSet::default(),
                    null: false,
                }
            } else {
                Members::Rows {
                    converter: RowConverter::new(
                        types.iter().map(|t| SortField::new(t.clone())).collect(),
                    )?,
                    rows: HashSet::default(),
                }
            },
        };
        let mut rangeable = vec![true; types.len()];
        for columns in batches {
            let columns = set.cast(columns)?;
            set.len += columns.first().map_or(0, |c| c.len());
            for (k, column) in columns.iter().enumerate() {
                if !rangeable[k] {
                    continue;
                }
                if column.null_count() > 0 {
                    rangeable[k] = false;
                    set.ranges[k] = None;
                    continue;
                }
                for row in 0..column.len() {
                    let value = ScalarValue::try_from_array(column, row)?;
                    set.ranges[k] = match set.ranges[k].take() {
                        None => Some((value.clone(), value)),
                        Some((low, high)) => {
                            match (value.partial_cmp(&low), value.partial_cmp(&high)) {
                                (Some(l), Some(h)) => Some((
                                    if l.is_lt() { value.clone() } else { low },
                                    if h.is_gt() { value } else { high },
                                )),
                                _ => {
                                    rangeable[k] = false;
                                    None
                                }
                            }
                        }
                    };
                }
            }
            match &mut set.members {
                Members::Integers { values, null } => {
                    let column = columns[0].as_primitive::<Int64Type>();
                    for value in column.iter() {
                        match value {
                            Some(v) => {
                                values.insert(v);
                            }
                            None => *null = true,
                        }
                    }
                }
                Members::Rows { converter, rows } => {
                    let converted = converter.convert_columns(&columns)?;
                    rows.extend(converted.iter().map(|r| Box::<[u8]>::from(r.as_ref())));
                }
            }
        }
        Ok(set)
    }

    /// The columns cast to the set's key types.
    fn cast(&self, columns: &[ArrayRef]) -> Result<Vec<ArrayRef>> {
        let target = |t: &DataType| {
            if is_integer_key(&self.types) {
                DataType::Int64
            } else {
                t.clone()
            }
        };
        columns
            .iter()
            .zip(&self.types)
            .map(|(c, t)| Ok(cast(c, &target(t))?))
            .collect()
    }

    /// For each row of `columns` (the key columns of a batch), whether its key is in the set.
    fn contains_each(&self, columns: &[ArrayRef]) -> Result<Vec<bool>> {
        let columns = self.cast(columns)?;
        Ok(match &self.members {
            Members::Integers { values, null } => columns[0]
                .as_primitive::<Int64Type>()
                .iter()
                .map(|v| v.map_or(*null, |v| values.contains(&v)))
                .collect(),
            Members::Rows { converter, rows } => converter
                .convert_columns(&columns)?
                .iter()
                .map(|r| rows.contains(r.as_ref()))
                .collect(),
        })
    }
}

fn is_integer_key(types: &[DataType]) -> bool {
    matches!(
        types,
        [DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64]
    )
}

/// The key columns of a batch of model rows, by name.
fn key_arrays(batch: &RecordBatch, key_columns: &[String]) -> Result<Vec<ArrayRef>> {
    key_columns
        .iter()
        .map(|c| {
            batch.column_by_name(c).cloned().ok_or_else(|| {
                Error::Internal(format!("merge on read: the new rows lack key column {c}"))
            })
        })
        .collect()
}

/// The affected rows of one data file.
struct Found {
    /// Positions (in the file, before any deletion vector) of live rows with affected keys.
    positions: RoaringTreemap,
    /// How many of them have a key among the new rows.
    replaced: u64,
}

/// Reads a data file's key columns (the row groups whose statistics admit an affected key)
/// and finds its live rows with affected keys; `None` when no row group needed reading.
async fn positions(
    store: Arc<dyn object_store::ObjectStore>,
    path: &Path,
    size: u64,
    key_columns: &[String],
    keys: &KeySet,
    new_keys: &KeySet,
    deleted: &RoaringTreemap,
) -> Result<Option<Found>> {
    let (reader, metadata) = crate::storage::scan::open_parquet(store, path, size).await?;
    let parquet = metadata.metadata().clone();
    let arrow_schema = metadata.schema().clone();
    let groups = parquet.row_groups();
    let mut keep = vec![true; groups.len()];
    for (k, column) in key_columns.iter().enumerate() {
        let Some((low, high)) = &keys.ranges[k] else {
            continue;
        };
        let converter = StatisticsConverter::try_new(
            column,
            &arrow_schema,
            parquet.file_metadata().schema_descr(),
        )?;
        let mins = cast(&converter.row_group_mins(groups.iter())?, &keys.types[k])?;
        let maxes = cast(&converter.row_group_maxes(groups.iter())?, &keys.types[k])?;
        for (g, keep) in keep.iter_mut().enumerate() {
            if mins.is_null(g) || maxes.is_null(g) {
                continue;
            }
            let min = ScalarValue::try_from_array(&mins, g)?;
            let max = ScalarValue::try_from_array(&maxes, g)?;
            let outside = max.partial_cmp(low).is_some_and(|o| o.is_lt())
                || min.partial_cmp(high).is_some_and(|o| o.is_gt());
            if outside {
                *keep = false;
            }
        }
    }
    // (first row, rows) of each row group read, in file order.
    let mut starts = Vec::new();
    let mut first_row = 0u64;
    for (g, group) in groups.iter().enumerate() {
        if keep[g] {
            starts.push((g, first_row, group.num_rows() as u64));
        }
        first_row += group.num_rows() as u64;
    }
    if starts.is_empty() {
        return Ok(None);
    }
    let mask = ProjectionMask::columns(
        parquet.file_metadata().schema_descr(),
        key_columns.iter().map(String::as_str),
    );
    let mut stream = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, metadata)
        .with_projection(mask)
        .with_row_groups(starts.iter().map(|(g, _, _)| *g).collect())
        .with_batch_size(64 * 1024)
        .build()?;
    let mut found = Found {
        positions: RoaringTreemap::new(),
        replaced: 0,
    };
    let (mut group, mut offset) = (0usize, 0u64);
    while let Some(batch) = stream.try_next().await? {
        let columns = key_arrays(&batch, key_columns)?;
        let hits = keys.contains_each(&columns)?;
        let mut hit_rows = Vec::new();
        for (row, hit) in hits.into_iter().enumerate() {
            let (_, start, rows) = starts[group];
            let position = start + offset;
            offset += 1;
            if offset == rows {
                group += 1;
                offset = 0;
            }
            if hit && !deleted.contains(position) {
                found.positions.insert(position);
                hit_rows.push(row as u32);
            }
        }
        if !hit_rows.is_empty() {
            let indices = datafusion::arrow::array::UInt32Array::from(hit_rows);
            let hit_columns: Vec<ArrayRef> = columns
                .iter()
                .map(|c| datafusion::arrow::compute::take(c, &indices, None))
                .collect::<std::result::Result<_, _>>()?;
            found.replaced += new_keys
                .contains_each(&hit_columns)?
                .into_iter()
                .filter(|h| *h)
                .count() as u64;
        }
    }
    Ok(Some(found))
}

/// The rows of a data file at `positions` (all columns).
async fn rows_at(
    store: Arc<dyn object_store::ObjectStore>,
    path: &Path,
    size: u64,
    positions: &RoaringTreemap,
) -> Result<Vec<RecordBatch>> {
    use deltalake::parquet::arrow::arrow_reader::{RowSelection, RowSelector};
    let (reader, metadata) = crate::storage::scan::open_parquet(store, path, size).await?;
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

/// Writes the commit's change data: the old rows it marks deleted and the rows it inserts.
///
/// With a change-data file in a commit, Delta readers take the commit's changes from it
/// alone. Without one, delta-rs 1.1 derives them from the deletion vectors, but its reader
/// mis-selects rows in files of more than one row group (it applies every row group's
/// positions to each row group), so Tributary always writes the file.
async fn write_change_data(
    table: &DeltaTable,
    schema: &datafusion::arrow::datatypes::SchemaRef,
    deleted: &[RecordBatch],
    inserted: &[RecordBatch],
) -> Result<Option<deltalake::kernel::AddCDCFile>> {
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::{Field, Schema};
    use deltalake::parquet::arrow::ArrowWriter;
    use object_store::ObjectStoreExt;
    if deleted.iter().chain(inserted).all(|b| b.num_rows() == 0) {
        return Ok(None);
    }
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("_change_type", DataType::Utf8, false));
    let cdc_schema = Arc::new(Schema::new(fields));
    let mut buffer = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buffer, cdc_schema.clone(), None)?;
    for (batches, kind) in [(deleted, "delete"), (inserted, "insert")] {
        for batch in batches.iter().filter(|b| b.num_rows() > 0) {
            let mut columns = delta::conform(batch, schema)?.columns().to_vec();
            columns.push(Arc::new(StringArray::from(vec![kind; batch.num_rows()])));
            writer.write(&RecordBatch::try_new(cdc_schema.clone(), columns)?)?;
        }
    }
    writer.close()?;
    let path = format!("_change_data/cdc-{}.parquet", uuid::Uuid::new_v4());
    let size = buffer.len() as i64;
    table
        .log_store()
        .object_store(None)
        .put(
            &Path::from(path.as_str()),
            bytes::Bytes::from(buffer).into(),
        )
        .await
        .map_err(deltalake::DeltaTableError::from)?;
    Ok(Some(deltalake::kernel::AddCDCFile {
        path,
        size,
        partition_values: std::collections::HashMap::new(),
        data_change: false,
        tags: None,
    }))
}
