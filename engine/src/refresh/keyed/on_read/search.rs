//! Finding the rows of affected keys in a model's data file: only its key columns are read,
//! row groups whose key statistics miss every affected key are skipped, and a key of several
//! columns is first matched on one integer-like column alone, so only the few rows that match
//! there are read whole (decoding every key column of every row is most of a search's cost
//! when a key has many columns, as a `SELECT DISTINCT` over a wide row has).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{HashSet, ScalarValue};
use deltalake::parquet::arrow::ProjectionMask;
use deltalake::parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use deltalake::parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use roaring::RoaringTreemap;

use crate::error::{Error, Result};

/// A set of keys, for membership tests of a file's rows. A single integer key is kept as
/// integers; other keys as Arrow's row encoding (one byte string per key, NULLs included,
/// so NULL keys match NULL keys as GROUP BY groups them).
pub(super) struct KeySet {
    pub(super) types: Vec<DataType>,
    pub(super) len: usize,
    /// Per key column, the least and greatest key, when every key has a non-null,
    /// comparable value there (row groups outside the range hold no affected key).
    ranges: Vec<Option<(ScalarValue, ScalarValue)>>,
    members: Members,
    /// For a key of several columns, one integer-like column's values: a file's rows are
    /// first matched on that column alone, and only the few that match are read whole.
    sieve: Option<Sieve>,
}

/// The affected keys' values in one key column (integers, dates, times), for a first,
/// cheap pass over a file.
struct Sieve {
    column: usize,
    values: HashSet<i64>,
    null: bool,
}

impl Sieve {
    /// Whether each value of `column` (of the sieve's key type) is among the values.
    fn contains_each(&self, column: &ArrayRef, key_type: &DataType) -> Result<Vec<bool>> {
        let integers = cast(&cast(column, key_type)?, &DataType::Int64)?;
        Ok(integers
            .as_primitive::<Int64Type>()
            .iter()
            .map(|v| v.map_or(self.null, |v| self.values.contains(&v)))
            .collect())
    }
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
    pub(super) fn of(batches: &[RecordBatch], key_columns: &[String]) -> Result<Self> {
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

    pub(super) fn from_arrays(types: &[DataType], batches: &[Vec<ArrayRef>]) -> Result<Self> {
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
            sieve: (types.len() > 1)
                .then(|| types.iter().position(integer_like))
                .flatten()
                .map(|column| Sieve {
                    column,
                    values: HashSet::default(),
                    null: false,
                }),
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
            if let Some(sieve) = &mut set.sieve {
                let integers = cast(&columns[sieve.column], &DataType::Int64)?;
                for value in integers.as_primitive::<Int64Type>().iter() {
                    match value {
                        Some(v) => {
                            sieve.values.insert(v);
                        }
                        None => sieve.null = true,
                    }
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

/// Types whose values cast to distinct 64-bit integers.
fn integer_like(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::Date32
            | DataType::Date64
            | DataType::Time32(_)
            | DataType::Time64(_)
            | DataType::Timestamp(_, _)
    )
}

fn is_integer_key(types: &[DataType]) -> bool {
    matches!(
        types,
        [DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64]
    )
}

/// The key columns of a batch of model rows, by name.
pub(super) fn key_arrays(batch: &RecordBatch, key_columns: &[String]) -> Result<Vec<ArrayRef>> {
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
pub(super) struct Found {
    /// Positions (in the file, before any deletion vector) of live rows with affected keys.
    pub(super) positions: RoaringTreemap,
    /// How many of them have a key among the new rows.
    pub(super) replaced: u64,
}

/// Reads a data file's key columns (the row groups whose statistics admit an affected key)
/// and finds its live rows with affected keys; `None` when no row group needed reading.
pub(super) async fn positions(
    store: Arc<dyn object_store::ObjectStore>,
    path: &Path,
    size: u64,
    key_columns: &[String],
    keys: &KeySet,
    new_keys: &KeySet,
    deleted: &RoaringTreemap,
) -> Result<Option<Found>> {
    let (reader, metadata) = crate::storage::scan::open_parquet(store.clone(), path, size).await?;
    let mut reader = Some(reader);
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
    let row_groups: Vec<usize> = starts.iter().map(|(g, _, _)| *g).collect();
    let schema = parquet.file_metadata().schema_descr();
    let candidates = match &keys.sieve {
        Some(sieve) => {
            let mask = ProjectionMask::columns(schema, [key_columns[sieve.column].as_str()]);
            let reader = reader.take().expect("the file's reader is unused");
            let stream =
                ParquetRecordBatchStreamBuilder::new_with_metadata(reader, metadata.clone())
                    .with_projection(mask)
                    .with_row_groups(row_groups.clone())
                    .with_batch_size(64 * 1024)
                    .build()?;
            let key_type = &keys.types[sieve.column];
            let candidates = sifted(stream, &starts, deleted, |b| {
                sieve.contains_each(b.column(0), key_type)
            })
            .await?;
            if candidates.is_empty() {
                return Ok(Some(Found {
                    positions: RoaringTreemap::new(),
                    replaced: 0,
                }));
            }
            Some(candidates)
        }
        None => None,
    };
    // The rows to match on every key column: the candidates, or every live row.
    let mask = ProjectionMask::columns(schema, key_columns.iter().map(String::as_str));
    let reader = match reader {
        Some(reader) => reader,
        None => {
            crate::storage::scan::open_parquet(store, path, size)
                .await?
                .0
        }
    };
    let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, metadata);
    if let Some(candidates) = &candidates {
        builder = builder.with_row_selection(selection(&starts, candidates));
    }
    let stream = builder
        .with_projection(mask)
        .with_row_groups(row_groups)
        .with_batch_size(64 * 1024)
        .build()?;
    let mut found = Found {
        positions: RoaringTreemap::new(),
        replaced: 0,
    };
    let mut hit_batches = Vec::new();
    let on_hits = |batch: &RecordBatch| -> Result<Vec<bool>> {
        let columns = key_arrays(batch, key_columns)?;
        keys.contains_each(&columns)
    };
    let hits = match &candidates {
        Some(candidates) => {
            matched_candidates(stream, candidates, &mut hit_batches, on_hits).await?
        }
        None => {
            let mut batches = stream.map(|b| b.map_err(Error::from));
            let mut hits = Vec::new();
            let (mut group, mut offset) = (0usize, 0u64);
            while let Some(batch) = batches.try_next().await? {
                let matched = on_hits(&batch)?;
                let mut rows = Vec::new();
                for (row, hit) in matched.into_iter().enumerate() {
                    let (_, start, count) = starts[group];
                    let position = start + offset;
                    offset += 1;
                    if offset == count {
                        group += 1;
                        offset = 0;
                    }
                    if hit && !deleted.contains(position) {
                        hits.push(position);
                        rows.push(row as u32);
                    }
                }
                hit_batches.push((batch, rows));
            }
            hits
        }
    };
    found.positions.extend(hits);
    for (batch, rows) in hit_batches.into_iter().filter(|(_, r)| !r.is_empty()) {
        let indices = datafusion::arrow::array::UInt32Array::from(rows);
        let hit_columns: Vec<ArrayRef> = key_arrays(&batch, key_columns)?
            .iter()
            .map(|c| datafusion::arrow::compute::take(c, &indices, None))
            .collect::<std::result::Result<_, _>>()?;
        found.replaced += new_keys
            .contains_each(&hit_columns)?
            .into_iter()
            .filter(|h| *h)
            .count() as u64;
    }
    Ok(Some(found))
}

/// The positions of the live rows of a stream over row groups `starts` (in file order) that
/// `matches` accepts.
async fn sifted(
    stream: deltalake::parquet::arrow::async_reader::ParquetRecordBatchStream<
        Box<dyn deltalake::parquet::arrow::async_reader::AsyncFileReader>,
    >,
    starts: &[(usize, u64, u64)],
    deleted: &RoaringTreemap,
    matches: impl Fn(&RecordBatch) -> Result<Vec<bool>>,
) -> Result<Vec<u64>> {
    let mut batches = stream.map(|b| b.map_err(Error::from));
    let mut positions = Vec::new();
    let (mut group, mut offset) = (0usize, 0u64);
    while let Some(batch) = batches.try_next().await? {
        for hit in matches(&batch)? {
            let (_, start, count) = starts[group];
            let position = start + offset;
            offset += 1;
            if offset == count {
                group += 1;
                offset = 0;
            }
            if hit && !deleted.contains(position) {
                positions.push(position);
            }
        }
    }
    Ok(positions)
}

/// Of the candidate rows (read in order, one stream row per candidate), the positions of
/// those `matches` accepts; each batch is kept with its accepted rows.
async fn matched_candidates(
    stream: deltalake::parquet::arrow::async_reader::ParquetRecordBatchStream<
        Box<dyn deltalake::parquet::arrow::async_reader::AsyncFileReader>,
    >,
    candidates: &[u64],
    kept: &mut Vec<(RecordBatch, Vec<u32>)>,
    matches: impl Fn(&RecordBatch) -> Result<Vec<bool>>,
) -> Result<Vec<u64>> {
    let mut batches = stream.map(|b| b.map_err(Error::from));
    let mut positions = Vec::new();
    let mut next = 0usize;
    while let Some(batch) = batches.try_next().await? {
        let mut rows = Vec::new();
        for (row, hit) in matches(&batch)?.into_iter().enumerate() {
            let position = *candidates.get(next).ok_or_else(|| {
                Error::Internal("merge on read read more rows than it selected".into())
            })?;
            next += 1;
            if hit {
                positions.push(position);
                rows.push(row as u32);
            }
        }
        kept.push((batch, rows));
    }
    if next != candidates.len() {
        return Err(Error::Internal(
            "merge on read read fewer rows than it selected".into(),
        ));
    }
    Ok(positions)
}

/// The selection of `positions` (ascending, in the file) within the rows of row groups
/// `starts`, read one after the other.
fn selection(
    starts: &[(usize, u64, u64)],
    positions: &[u64],
) -> deltalake::parquet::arrow::arrow_reader::RowSelection {
    use deltalake::parquet::arrow::arrow_reader::RowSelector;
    let mut selectors = Vec::new();
    // Offset of each position among the rows read: its row group's offset among them plus
    // its place in the row group.
    let (mut group, mut read_before) = (0usize, 0u64);
    let mut cursor = 0u64;
    for &position in positions {
        while position >= starts[group].1 + starts[group].2 {
            read_before += starts[group].2;
            group += 1;
        }
        let at = read_before + position - starts[group].1;
        if at > cursor {
            selectors.push(RowSelector::skip((at - cursor) as usize));
        }
        selectors.push(RowSelector::select(1));
        cursor = at + 1;
    }
    let total: u64 = starts.iter().map(|(_, _, rows)| rows).sum();
    if total > cursor {
        selectors.push(RowSelector::skip((total - cursor) as usize));
    }
    selectors.into()
}
