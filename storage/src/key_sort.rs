//! Sorting a clustered model's rows by its key in memory: one permutation, two cache-friendly
//! copies per row.
//!
//! DataFusion's sort (55) concatenates each partition's batches into runs, sorts and copies
//! each run, merges a partition's runs, then merges the partitions: every row of a 10M-row
//! model was copied four times, most of the model's build after its query. A model written
//! in key order needs all of its rows before its first file is final anyway, so this sort
//! gathers the input (each partition on a task of its own, so the query still runs on every
//! core), sorts the key columns alone into one permutation, and copies the rows into output
//! batches in key order a pass at a time ([`in_key_order`]).
//!
//! The gathered rows are reserved in the session's memory pool. When the pool cannot hold
//! them, the sort drops what it gathered and runs DataFusion's sort, which spills, over the
//! input executed again.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, UInt32Array};
use datafusion::arrow::compute::{
    SortColumn, concat, interleave_record_batch, lexsort_to_indices, take_record_batch,
};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::LexOrdering;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{StreamExt, TryStreamExt};

/// `input`'s rows (all partitions) as one stream sorted by `ordering`.
pub fn sorted(
    input: Arc<dyn ExecutionPlan>,
    ordering: LexOrdering,
    context: Arc<TaskContext>,
) -> SendableRecordBatchStream {
    let schema = input.schema();
    let batch_size = context.session_config().batch_size();
    let stream = futures::stream::once(async move {
        match gather(&input, &context).await? {
            Some(gathered) => in_key_order(gathered, &ordering, batch_size),
            None => spilling_sort(input, ordering, context),
        }
    })
    .try_flatten();
    Box::pin(RecordBatchStreamAdapter::new(schema, stream))
}

/// Every row of the input, held within the memory pool.
struct Gathered {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    reservation: Arc<MemoryReservation>,
}

/// Reads every partition of `input` at once; `None` when the memory pool cannot hold the
/// rows (or they are more than a permutation of `u32` indices can address).
async fn gather(
    input: &Arc<dyn ExecutionPlan>,
    context: &Arc<TaskContext>,
) -> DfResult<Option<Gathered>> {
    let reservation =
        Arc::new(MemoryConsumer::new("ClusteredExec").register(context.memory_pool()));
    let partitions = input.properties().partitioning.partition_count();
    // Dropping the set (returning early) aborts the readers still running.
    let mut readers = tokio::task::JoinSet::new();
    for partition in 0..partitions {
        let mut stream = input.execute(partition, Arc::clone(context))?;
        let reservation = Arc::clone(&reservation);
        readers.spawn(async move {
            let mut batches = Vec::new();
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                if batch.num_rows() == 0 {
                    continue;
                }
                if reservation
                    .try_grow(super::write::slice_bytes(&batch))
                    .is_err()
                {
                    return Ok(None);
                }
                batches.push(batch);
            }
            Ok::<_, DataFusionError>(Some((partition, batches)))
        });
    }
    let mut read = Vec::with_capacity(partitions);
    while let Some(joined) = readers.join_next().await {
        match joined.map_err(|e| DataFusionError::External(Box::new(e)))?? {
            Some(partition) => read.push(partition),
            None => return Ok(None),
        }
    }
    // In partition order, so that rows with equal keys come out in the same order each time.
    read.sort_by_key(|(partition, _)| *partition);
    let batches: Vec<RecordBatch> = read.into_iter().flat_map(|(_, batches)| batches).collect();
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if rows > u32::MAX as usize {
        return Ok(None);
    }
    Ok(Some(Gathered {
        schema: input.schema(),
        batches,
        reservation,
    }))
}

/// Output rows copied per pass: the source rows of one pass are gathered in the order they
/// were read, then put in key order within the pass ([`in_key_order`]).
const PASS_ROWS: usize = 1024 * 1024;

/// The gathered rows in `ordering`, in batches of `batch_size` rows.
///
/// Copying each row straight to its place in key order reads the gathered rows at random, a
/// cache and TLB miss per value: for 10M rows of 16 columns that was most of the sort. Each
/// pass instead takes the next [`PASS_ROWS`] rows of the order, copies them in the order of
/// their source rows (one forward sweep over the gathered batches), and then permutes that
/// copy, which is small enough to stay in cache, into key order.
fn in_key_order(
    gathered: Gathered,
    ordering: &LexOrdering,
    batch_size: usize,
) -> DfResult<SendableRecordBatchStream> {
    in_key_order_by_passes(gathered, ordering, batch_size, PASS_ROWS)
}

fn in_key_order_by_passes(
    gathered: Gathered,
    ordering: &LexOrdering,
    batch_size: usize,
    pass_rows: usize,
) -> DfResult<SendableRecordBatchStream> {
    let Gathered {
        schema,
        batches,
        reservation,
    } = gathered;
    let order = permutation(&batches, ordering)?;
    let starts: Vec<usize> = batches
        .iter()
        .scan(0, |start, batch| {
            let this = *start;
            *start += batch.num_rows();
            Some(this)
        })
        .collect();
    let batch_size = batch_size.max(1);
    let pass_rows = pass_rows.max(batch_size);
    let rows = order.len();
    let passes = (0..rows).step_by(pass_rows);
    let stream = futures::stream::iter(passes)
        .map(move |from| {
            let _held = &reservation;
            let pass = &order[from..(from + pass_rows).min(rows)];
            // The pass's rows by source row, and where each of them goes in key order.
            let mut by_source: Vec<u32> = (0..pass.len() as u32).collect();
            by_source.sort_unstable_by_key(|&i| pass[i as usize]);
            let positions: Vec<(usize, usize)> = by_source
                .iter()
                .map(|&i| {
                    let row = pass[i as usize] as usize;
                    let batch = starts.partition_point(|&start| start <= row) - 1;
                    (batch, row - starts[batch])
                })
                .collect();
            let sources: Vec<&RecordBatch> = batches.iter().collect();
            let copied = interleave_record_batch(&sources, &positions)?;
            let mut placed = vec![0u32; by_source.len()];
            for (at, &i) in by_source.iter().enumerate() {
                placed[i as usize] = at as u32;
            }
            let out = placed
                .chunks(batch_size)
                .map(|chunk| {
                    let indices = UInt32Array::from(chunk.to_vec());
                    Ok(take_record_batch(&copied, &indices)?)
                })
                .collect::<DfResult<Vec<RecordBatch>>>();
            Ok::<_, DataFusionError>(futures::stream::iter(out?.into_iter().map(Ok)))
        })
        .try_flatten();
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
}

/// The row numbers (counted across `batches`) in `ordering`, from the key columns alone.
fn permutation(batches: &[RecordBatch], ordering: &LexOrdering) -> DfResult<Vec<u32>> {
    if batches.is_empty() {
        return Ok(Vec::new());
    }
    let keys = ordering
        .iter()
        .map(|sort| {
            let parts = batches
                .iter()
                .map(|batch| sort.expr.evaluate(batch)?.into_array(batch.num_rows()))
                .collect::<DfResult<Vec<ArrayRef>>>()?;
            let parts: Vec<&dyn datafusion::arrow::array::Array> =
                parts.iter().map(|a| a.as_ref()).collect();
            Ok(SortColumn {
                values: concat(&parts)?,
                options: Some(sort.options),
            })
        })
        .collect::<DfResult<Vec<_>>>()?;
    Ok(lexsort_to_indices(&keys, None)?.values().to_vec())
}

/// DataFusion's sort of every partition and a merge of the sorted partitions: it spills
/// when the rows do not fit in memory.
fn spilling_sort(
    input: Arc<dyn ExecutionPlan>,
    ordering: LexOrdering,
    context: Arc<TaskContext>,
) -> DfResult<SendableRecordBatchStream> {
    tracing::info!("the rows to cluster do not fit in the memory pool; sorting with spilling");
    let partitions = input.properties().partitioning.partition_count();
    let sort = Arc::new(SortExec::new(ordering.clone(), input).with_preserve_partitioning(true));
    let merged: Arc<dyn ExecutionPlan> = if partitions == 1 {
        sort
    } else {
        Arc::new(SortPreservingMergeExec::new(ordering, sort))
    };
    merged.execute(0, context)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::compute::SortOptions;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::execution::memory_pool::GreedyMemoryPool;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::physical_expr::PhysicalSortExpr;
    use datafusion::physical_expr::expressions::col;

    fn input(partitions: &[&[i64]]) -> (SchemaRef, Arc<dyn ExecutionPlan>) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let data = partitions
            .iter()
            .map(|ids| {
                ids.chunks(3)
                    .map(|ids| {
                        let names: Vec<String> = ids.iter().map(|id| format!("row {id}")).collect();
                        RecordBatch::try_new(
                            Arc::clone(&schema),
                            vec![
                                Arc::new(Int64Array::from(ids.to_vec())),
                                Arc::new(StringArray::from(names)),
                            ],
                        )
                        .unwrap()
                    })
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>();
        let exec = MemorySourceConfig::try_new_exec(&data, Arc::clone(&schema), None).unwrap();
        (schema, exec as _)
    }

    fn by_id(schema: &SchemaRef) -> LexOrdering {
        LexOrdering::new(vec![PhysicalSortExpr::new(
            col("id", schema).unwrap(),
            SortOptions {
                descending: false,
                nulls_first: false,
            },
        )])
        .unwrap()
    }

    async fn ids_of(stream: SendableRecordBatchStream) -> (Vec<i64>, Vec<String>, Vec<usize>) {
        let batches: Vec<RecordBatch> = stream.try_collect().await.unwrap();
        let mut ids = Vec::new();
        let mut names = Vec::new();
        for batch in &batches {
            let id = batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            let name = batch
                .column(1)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            ids.extend(id.values().iter().copied());
            names.extend(name.iter().map(|n| n.unwrap().to_string()));
        }
        (
            ids,
            names,
            batches.iter().map(RecordBatch::num_rows).collect(),
        )
    }

    #[tokio::test]
    async fn every_partition_is_sorted_into_one_stream_with_its_rows_whole() {
        let (schema, exec) = input(&[&[9, 3, 7, 1, 12], &[4, 11, 2], &[], &[10, 5, 8, 6]]);
        let context = Arc::new(
            TaskContext::default()
                .with_session_config(datafusion::prelude::SessionConfig::new().with_batch_size(5)),
        );
        let (ids, names, sizes) = ids_of(sorted(exec, by_id(&schema), context)).await;
        assert_eq!(ids, (1..=12).collect::<Vec<_>>());
        assert_eq!(
            names,
            (1..=12).map(|id| format!("row {id}")).collect::<Vec<_>>()
        );
        assert_eq!(sizes, vec![5, 5, 2]);
    }

    #[tokio::test]
    async fn rows_are_put_in_key_order_a_pass_at_a_time() {
        let (schema, exec) = input(&[&[9, 3, 7, 1, 12], &[4, 11, 2], &[10, 5, 8, 6]]);
        let context = Arc::new(TaskContext::default());
        let gathered = gather(&exec, &context).await.unwrap().unwrap();
        // Passes of 5, 5 and 2 rows, each cut into batches of 2.
        let stream = in_key_order_by_passes(gathered, &by_id(&schema), 2, 5).unwrap();
        let (ids, names, sizes) = ids_of(stream).await;
        assert_eq!(ids, (1..=12).collect::<Vec<_>>());
        assert_eq!(
            names,
            (1..=12).map(|id| format!("row {id}")).collect::<Vec<_>>()
        );
        assert_eq!(sizes, vec![2, 2, 1, 2, 2, 1, 2]);
    }

    #[tokio::test]
    async fn rows_the_pool_cannot_hold_are_sorted_by_the_spilling_sort() {
        let (schema, exec) = input(&[&[5, 3, 1], &[4, 2, 6]]);
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(GreedyMemoryPool::new(64)))
            .build_arc()
            .unwrap();
        let context = Arc::new(TaskContext::default().with_runtime(runtime));
        // The pool is too small even for the spilling sort's buffers: the error shows that
        // it, not the in-memory sort, was asked.
        let result: DfResult<Vec<RecordBatch>> = sorted(Arc::clone(&exec), by_id(&schema), context)
            .try_collect()
            .await;
        let error = result.unwrap_err().to_string();
        assert!(error.contains("Resources exhausted"), "{error}");
        let roomy = Arc::new(TaskContext::default());
        let (ids, _, _) = ids_of(sorted(exec, by_id(&schema), roomy)).await;
        assert_eq!(ids, vec![1, 2, 3, 4, 5, 6]);
    }
}
