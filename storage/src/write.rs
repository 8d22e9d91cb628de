//! Writing a plan's rows into new data files of a table, several files encoded at once.
//!
//! delta-rs' `WriteBuilder` drains every partition of an unpartitioned table into one writer
//! task, so Parquet encoding, most of a large model's build once its query has run, used one
//! core: a 10M-row model spent about 6 s encoding on a 2-core machine while the other core
//! idled. Here each partition of the plan cuts its rows into files of at most [`FILE_SIZE`]
//! and hands each finished file to an encoder task;
//! as many files are encoded at once as the session has target partitions.
//!
//! A clustered model ([`super::cluster`]) arrives as one sorted partition: its files are
//! consecutive runs of it, so their key ranges stay disjoint and a lookup still opens one
//! file. What is left over at the end of each partition is gathered into as few files as it
//! fills, so a small model is still one file.
//!
//! [`commit`] records the files as delta-rs' write would: a `WRITE` operation with its mode,
//! the removal of every live file for an overwrite, and the operation metrics
//! ([`super::delta::last_commit_rows`] reads them).

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::execute_stream_partitioned;
use deltalake::DeltaTable;
use deltalake::kernel::{Action, Add};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use tributary_sql::{Error, Result};

/// How big a data file may grow.
#[derive(Debug, Clone, Copy)]
pub struct FileSize {
    pub rows: usize,
    /// Arrow memory, so that wide rows make smaller files (and the buffers stay bounded).
    pub bytes: usize,
}

/// 1 Mi rows (16 row groups of a keyed model's layout, one of the default layout) or
/// 256 MiB of Arrow memory.
pub const FILE_SIZE: FileSize = FileSize {
    rows: 1024 * 1024,
    bytes: 256 * 1024 * 1024,
};

/// New data files, not yet committed.
#[derive(Debug, Default)]
pub struct Written {
    /// In the plan's order for a single-partition plan.
    pub adds: Vec<Add>,
    pub rows: u64,
}

/// Executes `plan` and writes its rows into new data files of `table`, with `layout` (the
/// session's Parquet options when `None`).
pub async fn write_plan(
    table: &DeltaTable,
    state: &SessionState,
    plan: &LogicalPlan,
    layout: Option<WriterProperties>,
) -> Result<Written> {
    write_plan_in_files(table, state, plan, layout, FILE_SIZE).await
}

/// [`write_plan`] with files of at most `size`.
pub async fn write_plan_in_files(
    table: &DeltaTable,
    state: &SessionState,
    plan: &LogicalPlan,
    layout: Option<WriterProperties>,
    size: FileSize,
) -> Result<Written> {
    let physical = state.create_physical_plan(plan).await?;
    tracing::debug!(
        plan = %datafusion::physical_plan::displayable(physical.as_ref()).indent(false),
        "writing the rows of"
    );
    let streams = execute_stream_partitioned(physical, state.task_ctx())?;
    let layout = match layout {
        Some(layout) => layout,
        None => state
            .config_options()
            .execution
            .parquet
            .into_writer_properties_builder()?
            .build(),
    };
    let encoder = Encoder {
        table: Arc::new(table.clone()),
        layout,
        permits: Arc::new(Semaphore::new(state.config().target_partitions().max(1))),
        size,
    };
    write_streams(encoder, streams).await
}

/// Commits `written` to `table` as a `WRITE` in `mode`, with `metadata` in the commit info.
pub async fn commit(
    table: DeltaTable,
    written: Written,
    mode: SaveMode,
    metadata: serde_json::Map<String, serde_json::Value>,
) -> Result<DeltaTable> {
    let mut actions = Vec::with_capacity(written.adds.len());
    let mut removed = 0usize;
    if mode == SaveMode::Overwrite {
        #[allow(deprecated)] // delta-rs' replacement (raw Arrow arrays) has no Add builder yet
        for file in table.snapshot()?.log_data().iter() {
            actions.push(Action::Remove(super::delta::removal(
                &file.add_action(),
                true,
            )));
            removed += 1;
        }
    }
    let added = written.adds.len();
    actions.extend(written.adds.into_iter().map(Action::Add));
    let mut metadata = metadata;
    metadata.insert(
        "operationMetrics".into(),
        serde_json::json!({
            "num_added_rows": written.rows,
            "num_added_files": added,
            "num_removed_files": removed,
        }),
    );
    let operation = DeltaOperation::Write {
        mode,
        partition_by: None,
        predicate: None,
    };
    super::delta::commit(
        table,
        super::delta::commit_properties(metadata),
        actions,
        operation,
    )
    .await
}

/// Writes the streams' rows: each stream on a task of its own (its query work runs there),
/// full files encoded as they fill, then the streams' remainders gathered into files.
async fn write_streams(
    encoder: Encoder,
    streams: Vec<SendableRecordBatchStream>,
) -> Result<Written> {
    let mut producers = JoinSet::new();
    for (index, stream) in streams.into_iter().enumerate() {
        let encoder = encoder.clone();
        producers.spawn(async move { (index, cut_into_files(encoder, stream).await) });
    }
    let mut cuts = Vec::new();
    while let Some(joined) = producers.join_next().await {
        let (index, cut) = joined.map_err(task_failed)?;
        cuts.push((index, cut?));
    }
    cuts.sort_by_key(|(index, _)| *index);

    let mut written = Written::default();
    let mut remainder = Chunk::new(encoder.size);
    let mut last_files = Files::default();
    for (_, cut) in cuts {
        for (adds, rows) in cut.files {
            written.add(adds, rows);
        }
        for batch in cut.remainder {
            for file in remainder.take(batch) {
                last_files.spawn(&encoder, file).await?;
            }
        }
    }
    if !remainder.batches.is_empty() {
        last_files.spawn(&encoder, remainder.batches).await?;
    }
    for (adds, rows) in last_files.finish().await? {
        written.add(adds, rows);
    }
    Ok(written)
}

impl Written {
    fn add(&mut self, adds: Vec<Add>, rows: u64) {
        self.adds.extend(adds);
        self.rows += rows;
    }
}

/// One encoded data file: its actions and its rows.
type File = (Vec<Add>, u64);

/// What one stream wrote: its full files, in its order, and the rows that filled no file.
struct Cut {
    files: Vec<File>,
    remainder: Vec<RecordBatch>,
}

/// Reads `stream`, encoding each file's worth of rows on a task of its own as soon as it is
/// complete (waiting for a free encoder first, which holds the stream back).
async fn cut_into_files(encoder: Encoder, mut stream: SendableRecordBatchStream) -> Result<Cut> {
    let mut files = Files::default();
    let mut chunk = Chunk::new(encoder.size);
    while let Some(batch) = stream.next().await {
        for file in chunk.take(batch?) {
            files.spawn(&encoder, file).await?;
        }
    }
    Ok(Cut {
        files: files.finish().await?,
        remainder: chunk.batches,
    })
}

/// Files being encoded, numbered in the order their rows came.
#[derive(Default)]
struct Files {
    encoding: JoinSet<(usize, Result<File>)>,
    done: Vec<(usize, File)>,
    next: usize,
}

impl Files {
    /// Starts encoding `batches` as the next file once an encoder is free; fails with the
    /// error of any file that failed meanwhile.
    async fn spawn(&mut self, encoder: &Encoder, batches: Vec<RecordBatch>) -> Result<()> {
        while let Some(joined) = self.encoding.try_join_next() {
            let (index, file) = joined.map_err(task_failed)?;
            self.done.push((index, file?));
        }
        let permit = Arc::clone(&encoder.permits)
            .acquire_owned()
            .await
            .map_err(|e| Error::Internal(format!("file encoders closed: {e}")))?;
        let (encoder, index) = (encoder.clone(), self.next);
        self.next += 1;
        self.encoding
            .spawn(async move { (index, encoder.encode(batches, permit).await) });
        Ok(())
    }

    /// Every file's actions and rows, in order.
    async fn finish(mut self) -> Result<Vec<File>> {
        while let Some(joined) = self.encoding.join_next().await {
            let (index, file) = joined.map_err(task_failed)?;
            self.done.push((index, file?));
        }
        self.done.sort_by_key(|(index, _)| *index);
        Ok(self.done.into_iter().map(|(_, file)| file).collect())
    }
}

fn task_failed(e: tokio::task::JoinError) -> Error {
    Error::Internal(format!("a file writer task failed: {e}"))
}

/// Rows gathered for the next file.
struct Chunk {
    size: FileSize,
    batches: Vec<RecordBatch>,
    rows: usize,
    bytes: usize,
}

impl Chunk {
    fn new(size: FileSize) -> Self {
        Self {
            size,
            batches: Vec::new(),
            rows: 0,
            bytes: 0,
        }
    }

    /// Adds `batch`, returning the files' worth of rows it completed.
    fn take(&mut self, batch: RecordBatch) -> Vec<Vec<RecordBatch>> {
        let mut full = Vec::new();
        let mut batch = batch;
        loop {
            if batch.num_rows() == 0 {
                return full;
            }
            let room = self.size.rows - self.rows;
            let (now, later) = if batch.num_rows() > room {
                (
                    batch.slice(0, room),
                    Some(batch.slice(room, batch.num_rows() - room)),
                )
            } else {
                (batch, None)
            };
            self.rows += now.num_rows();
            self.bytes += slice_bytes(&now);
            self.batches.push(now);
            if self.rows >= self.size.rows || self.bytes >= self.size.bytes {
                full.push(std::mem::take(&mut self.batches));
                self.rows = 0;
                self.bytes = 0;
            }
            match later {
                Some(rest) => batch = rest,
                None => return full,
            }
        }
    }
}

/// The bytes of the rows `batch` holds (a file's size, a sort's reservation). Not
/// `get_array_memory_size`: an aggregate emits slices of buffers holding all of its groups,
/// and each 8,192-row slice counted the whole buffer (a 10M-row `DISTINCT` was written as 1,221 files of one batch each).
pub(crate) fn slice_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|column| {
            let data = column.to_data();
            data.get_slice_memory_size()
                .unwrap_or_else(|_| column.get_array_memory_size())
        })
        .sum()
}

/// Encodes files of one table with one layout, at most as many at once as it has permits.
#[derive(Clone)]
struct Encoder {
    table: Arc<DeltaTable>,
    layout: WriterProperties,
    permits: Arc<Semaphore>,
    size: FileSize,
}

impl Encoder {
    /// Writes `batches` as one data file (delta-rs computes its statistics).
    async fn encode(
        self,
        batches: Vec<RecordBatch>,
        _permit: OwnedSemaphorePermit,
    ) -> Result<File> {
        let mut writer =
            RecordBatchWriter::for_table(&self.table)?.with_writer_properties(self.layout);
        let schema = writer.arrow_schema();
        let mut rows = 0u64;
        for batch in batches {
            rows += batch.num_rows() as u64;
            let batch = if batch.schema() == schema {
                batch
            } else {
                super::delta::conform(&batch, &schema)?
            };
            writer.write(batch).await?;
        }
        Ok((writer.flush().await?, rows))
    }
}

#[cfg(test)]
mod tests;
