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

use tributary_sql::error::{Error, Result};

/// A set of keys, for membership tests of a file's rows. A single integer key is kept as
/// integers; other keys as Arrow's row encoding (one byte string per key, NULLs included,
/// so NULL keys match NULL keys as GROUP BY groups them).
pub(super) struct KeySet {
    pub(super) types: Vec<DataType>,
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
    values: Integers,
}

enum Members {
    Integers(Integers),
    Rows {
        converter: RowConverter,
        rows: HashSet<Box<[u8]>>,
    },
}

/// Integers for membership tests, NULL included or not. Keys often fill much of their range
/// (ids, dates): then a bit per value of the range is a smaller and much faster set than a
/// hash set, which matters when every row of a large model is looked up.
struct Integers {
    null: bool,
    lookup: Lookup,
}

enum Lookup {
    Bits { low: i64, bits: Vec<u64> },
    Hashed(HashSet<i64>),
}

/// A range of at most this many values, or of 128 per member, is kept as bits.
const MIN_BITS: u64 = 1 << 24;

impl Integers {
    fn new(values: Vec<i64>, null: bool) -> Self {
        let (Some(low), Some(high)) = (values.iter().min(), values.iter().max()) else {
            return Self {
                null,
                lookup: Lookup::Hashed(HashSet::default()),
            };
        };
        let span = (*high as i128 - *low as i128 + 1) as u128;
        let lookup = if span <= MIN_BITS.max(128 * values.len() as u64) as u128 {
            let mut bits = vec![0u64; (span as usize).div_ceil(64)];
            for v in &values {
                let at = (v - low) as usize;
                bits[at / 64] |= 1 << (at % 64);
            }
            Lookup::Bits { low: *low, bits }
        } else {
            Lookup::Hashed(values.into_iter().collect())
        };
        Self { null, lookup }
    }

    /// Whether each value of an Int64 array is in the set.
    fn contains_each(&self, column: &ArrayRef) -> Vec<bool> {
        let column = column.as_primitive::<Int64Type>();
        let values = column.values();
        let mut hits: Vec<bool> = match &self.lookup {
            Lookup::Bits { low, bits } => values
                .iter()
                .map(|v| {
                    let at = v.wrapping_sub(*low) as u64 as usize;
                    bits.get(at / 64).is_some_and(|w| w & (1 << (at % 64)) != 0) && *v >= *low
                })
                .collect(),
            Lookup::Hashed(set) => values.iter().map(|v| set.contains(v)).collect(),
        };
        if let Some(nulls) = column.nulls() {
            for row in nulls
                .iter()
                .enumerate()
                .filter(|(_, valid)| !valid)
                .map(|(r, _)| r)
            {
                hits[row] = self.null;
            }
        }
        hits
    }
}

/// The non-null values of an Int64 array, and whether it has NULLs.
fn integers_of(column: &ArrayRef, into: &mut Vec<i64>) -> bool {
    let column = column.as_primitive::<Int64Type>();
    into.extend(column.iter().flatten());
    column.null_count() > 0
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
                    .map(|k| Arc::clone(b.column(k)))
                    .collect()
            })
            .collect();
        Self::from_arrays(&types, &arrays)
    }

    pub(super) fn from_arrays(types: &[DataType], batches: &[Vec<ArrayRef>]) -> Result<Self> {
        let integer_key = is_integer_key(types);
        let sieve_column = (types.len() > 1)
            .then(|| types.iter().position(integer_like))
            .flatten();
        let mut ranges: Vec<Option<(ScalarValue, ScalarValue)>> = vec![None; types.len()];
        let mut rangeable = vec![true; types.len()];
        let mut rows = match integer_key {
            true => None,
            false => Some((
                RowConverter::new(types.iter().map(|t| SortField::new(t.clone())).collect())?,
                HashSet::default(),
            )),
        };
        let (mut integers, mut null) = (Vec::new(), false);
        for columns in batches {
            let columns = cast_to(types, columns)?;
            for (k, column) in columns.iter().enumerate() {
                if rangeable[k] {
                    ranges[k] = widened(ranges[k].take(), column);
                    rangeable[k] = ranges[k].is_some();
                }
            }
            match &mut rows {
                Some((converter, rows)) => {
                    let converted = converter.convert_columns(&columns)?;
                    rows.extend(converted.iter().map(|r| Box::<[u8]>::from(r.as_ref())));
                }
                None => null |= integers_of(&columns[0], &mut integers),
            }
            if let Some(k) = sieve_column {
                null |= integers_of(&cast(&columns[k], &DataType::Int64)?, &mut integers);
            }
        }
        let members = match rows {
            Some((converter, rows)) => Members::Rows { converter, rows },
            None => Members::Integers(Integers::new(std::mem::take(&mut integers), null)),
        };
        let sieve = sieve_column.map(|column| Sieve {
            column,
            values: Integers::new(integers, null),
        });
        Ok(Self {
            types: types.to_vec(),
            ranges,
            members,
            sieve,
        })
    }

    /// The columns cast to the set's key types.
    fn cast(&self, columns: &[ArrayRef]) -> Result<Vec<ArrayRef>> {
        cast_to(&self.types, columns)
    }

    /// For each row of `columns` (the key columns of a batch), whether its key is in the set.
    pub(super) fn contains_each(&self, columns: &[ArrayRef]) -> Result<Vec<bool>> {
        let columns = self.cast(columns)?;
        Ok(match &self.members {
            Members::Integers(integers) => integers.contains_each(&columns[0]),
            Members::Rows { converter, rows } => converter
                .convert_columns(&columns)?
                .iter()
                .map(|r| rows.contains(r.as_ref()))
                .collect(),
        })
    }
}

impl Sieve {
    /// Whether each value of `column` (of the sieve's key type) is among the values.
    fn contains_each(&self, column: &ArrayRef, key_type: &DataType) -> Result<Vec<bool>> {
        let integers = cast(&cast(column, key_type)?, &DataType::Int64)?;
        Ok(self.values.contains_each(&integers))
    }
}

/// The columns cast to the key types (a single integer key to Int64).
fn cast_to(types: &[DataType], columns: &[ArrayRef]) -> Result<Vec<ArrayRef>> {
    let integer_key = is_integer_key(types);
    columns
        .iter()
        .zip(types)
        .map(|(c, t)| {
            let target = if integer_key { &DataType::Int64 } else { t };
            Ok(cast(c, target)?)
        })
        .collect()
}

/// `range` widened to the values of `column`; `None` when the column has NULLs or values
/// that do not order.
fn widened(
    range: Option<(ScalarValue, ScalarValue)>,
    column: &ArrayRef,
) -> Option<(ScalarValue, ScalarValue)> {
    use datafusion::functions_aggregate::min_max::{MaxAccumulator, MinAccumulator};
    use datafusion::logical_expr::Accumulator;
    if column.null_count() > 0 {
        return None;
    }
    if column.is_empty() {
        return range;
    }
    let extreme = |mut acc: Box<dyn Accumulator>| -> Option<ScalarValue> {
        acc.update_batch(std::slice::from_ref(column)).ok()?;
        acc.evaluate().ok().filter(|v| !v.is_null())
    };
    let low = extreme(Box::new(MinAccumulator::try_new(column.data_type()).ok()?))?;
    let high = extreme(Box::new(MaxAccumulator::try_new(column.data_type()).ok()?))?;
    match range {
        None => Some((low, high)),
        Some((old_low, old_high)) => {
            let low = match low.partial_cmp(&old_low)? {
                std::cmp::Ordering::Less => low,
                _ => old_low,
            };
            let high = match high.partial_cmp(&old_high)? {
                std::cmp::Ordering::Greater => high,
                _ => old_high,
            };
            Some((low, high))
        }
    }
}

/// Types whose values cast to distinct 64-bit integers.
fn integer_like(data_type: &DataType) -> bool {
    (data_type.is_integer() && *data_type != DataType::UInt64)
        || matches!(
            data_type,
            DataType::Date32
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

/// Reads a data file's key columns (the row groups whose statistics admit an affected key)
/// and finds the positions of its live rows with affected keys; `None` when no row group
/// needed reading.
pub(super) async fn positions(
    store: Arc<dyn object_store::ObjectStore>,
    path: &Path,
    size: u64,
    key_columns: &[String],
    keys: &KeySet,
    deleted: &RoaringTreemap,
) -> Result<Option<RoaringTreemap>> {
    let (reader, metadata) =
        tributary_storage::scan::open_parquet(Arc::clone(&store), path, size).await?;
    let parquet = Arc::clone(metadata.metadata());
    let arrow_schema = Arc::clone(metadata.schema());
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
            // A reader of its own: the pass below reads the file again, with this metadata.
            let first = tributary_storage::scan::parquet_reader(store, path, size)?;
            let stream =
                ParquetRecordBatchStreamBuilder::new_with_metadata(first, metadata.clone())
                    .with_projection(mask)
                    .with_row_groups(row_groups.clone())
                    .with_batch_size(64 * 1024)
                    .build()?;
            let key_type = &keys.types[sieve.column];
            let on_values = |b: &RecordBatch| sieve.contains_each(b.column(0), key_type);
            let candidates = sifted(stream, &starts, deleted, on_values).await?;
            if candidates.is_empty() {
                return Ok(Some(RoaringTreemap::new()));
            }
            Some(candidates)
        }
        None => None,
    };
    // The rows to match on every key column: the candidates, or every live row.
    let mask = ProjectionMask::columns(schema, key_columns.iter().map(String::as_str));
    let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, metadata);
    if let Some(candidates) = &candidates {
        builder = builder.with_row_selection(selection(&starts, candidates));
    }
    let stream = builder
        .with_projection(mask)
        .with_row_groups(row_groups)
        .with_batch_size(64 * 1024)
        .build()?;
    let on_hits = |batch: &RecordBatch| -> Result<Vec<bool>> {
        let columns = key_arrays(batch, key_columns)?;
        keys.contains_each(&columns)
    };
    let hits = match &candidates {
        Some(candidates) => matched_candidates(stream, candidates, on_hits).await?,
        None => sifted(stream, &starts, deleted, on_hits).await?,
    };
    Ok(Some(hits.into_iter().collect()))
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
    // Rows read before each row group: a row read is found in its group by bisection, so
    // only matching rows (few) are placed in the file.
    let mut read_before = Vec::with_capacity(starts.len());
    let mut total = 0u64;
    for (_, _, rows) in starts {
        read_before.push(total);
        total += rows;
    }
    let position = |read: u64| {
        let group = read_before.partition_point(|&r| r <= read) - 1;
        starts[group].1 + read - read_before[group]
    };
    let mut batches = stream.map(|b| b.map_err(Error::from));
    let mut positions = Vec::new();
    let mut read = 0u64;
    while let Some(batch) = batches.try_next().await? {
        for (row, _) in matches(&batch)?.iter().enumerate().filter(|(_, hit)| **hit) {
            let at = position(read + row as u64);
            if !deleted.contains(at) {
                positions.push(at);
            }
        }
        read += batch.num_rows() as u64;
    }
    Ok(positions)
}

/// Of the candidate rows (read in order, one stream row per candidate), the positions of
/// those `matches` accepts.
async fn matched_candidates(
    stream: deltalake::parquet::arrow::async_reader::ParquetRecordBatchStream<
        Box<dyn deltalake::parquet::arrow::async_reader::AsyncFileReader>,
    >,
    candidates: &[u64],
    matches: impl Fn(&RecordBatch) -> Result<Vec<bool>>,
) -> Result<Vec<u64>> {
    let mut batches = stream.map(|b| b.map_err(Error::from));
    let mut positions = Vec::new();
    let mut next = 0usize;
    while let Some(batch) = batches.try_next().await? {
        for hit in matches(&batch)? {
            let position = *candidates.get(next).ok_or_else(|| {
                Error::Internal("merge on read read more rows than it selected".into())
            })?;
            next += 1;
            if hit {
                positions.push(position);
            }
        }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Int64Array};

    use super::{Integers, Lookup, selection};

    fn column(values: &[Option<i64>]) -> ArrayRef {
        Arc::new(Int64Array::from(values.to_vec()))
    }

    #[test]
    fn integers_match_as_a_hash_set_would_in_bits_and_hashed() {
        let probe = column(&[
            Some(i64::MIN),
            Some(-1),
            Some(0),
            Some(6),
            Some(7),
            Some(8),
            Some(1_000_007),
            None,
            Some(i64::MAX),
        ]);
        let dense = Integers::new(vec![7, 1_000_007, 0], false);
        assert!(matches!(dense.lookup, Lookup::Bits { .. }));
        assert_eq!(
            dense.contains_each(&probe),
            [false, false, true, false, true, false, true, false, false]
        );
        // Far apart: a bitmap of the range would be too large.
        let sparse = Integers::new(vec![i64::MIN, i64::MAX, 7], true);
        assert!(matches!(sparse.lookup, Lookup::Hashed(_)));
        assert_eq!(
            sparse.contains_each(&probe),
            [true, false, false, false, true, false, false, true, true]
        );
        // Near the top of the range, where a wrapped difference could alias a member.
        let top = Integers::new(vec![i64::MAX - 5, i64::MAX], false);
        assert!(matches!(top.lookup, Lookup::Bits { .. }));
        assert_eq!(
            top.contains_each(&column(&[
                Some(i64::MIN),
                Some(i64::MAX - 5),
                Some(i64::MAX)
            ])),
            [false, true, true]
        );
    }

    #[test]
    fn selection_places_file_positions_among_the_rows_read() {
        // Row groups 0 (rows 0..10) and 2 (rows 25..40) are read; 1 is skipped.
        let starts = [(0, 0, 10), (2, 25, 15)];
        let selected: Vec<_> = selection(&starts, &[3, 9, 25, 39]).into();
        let picked: Vec<(bool, usize)> = selected.iter().map(|s| (s.skip, s.row_count)).collect();
        // Position 25 is the 11th row read, right after position 9.
        assert_eq!(
            picked,
            [
                (true, 3),
                (false, 1),
                (true, 5),
                (false, 2),
                (true, 13),
                (false, 1)
            ]
        );
    }
}
