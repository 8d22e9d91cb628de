//! Bulk reads from PostgreSQL with `COPY (query) TO STDOUT (FORMAT binary)`.
//!
//! `datafusion-table-providers` reads a federated query's result row by row (`query_raw`, one
//! `Row` and one conversion per value through `FromSql`). For the large extracts models make,
//! the binary COPY format is the cheapest thing PostgreSQL can send: no per-row protocol
//! messages beyond `CopyData`, no text formatting on the server, and values that decode with a
//! byte swap straight into Arrow builders, column by column.
//!
//! [`CopyExecutor`] is the source's federation executor: it delegates everything (dialect,
//! compute context, statistics) to the provider's `SqlTable` and only changes how a query runs.
//! It prepares the query first (one round trip, nothing executed) to learn the result's
//! PostgreSQL types; when every column is one this module decodes into the Arrow type the plan
//! expects (booleans, integers, floats, numeric, text, date, timestamp[tz]), the rows come by
//! COPY, and otherwise by the provider's row path, so a type we do not decode never fails.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::Statistics;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{PhysicalExpr, SendableRecordBatchStream};
use datafusion::sql::unparser::dialect::Dialect;
use datafusion_federation::sql::{AstAnalyzer, LogicalOptimizer, SQLExecutor};
use datafusion_table_providers::sql::db_connection_pool::postgrespool::PostgresConnectionPool;
use futures::{StreamExt, TryStreamExt};
use tokio_postgres::types::Type;

mod column;

use column::Column;

/// Rows per record batch (DataFusion's default batch size).
const BATCH_ROWS: usize = 8192;

/// The binary COPY header's fixed signature.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// Microseconds from 1970-01-01 (Arrow's epoch) to 2000-01-01 (PostgreSQL's).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days from 1970-01-01 to 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;

/// A PostgreSQL source's federation executor that reads results by binary COPY.
pub(crate) struct CopyExecutor {
    /// The provider's own executor: everything but running a query is its.
    inner: Arc<dyn SQLExecutor>,
    pool: Arc<PostgresConnectionPool>,
    /// The source, for error messages.
    source: String,
}

impl CopyExecutor {
    pub(crate) fn new(
        inner: Arc<dyn SQLExecutor>,
        pool: Arc<PostgresConnectionPool>,
        source: String,
    ) -> Self {
        Self {
            inner,
            pool,
            source,
        }
    }
}

fn external(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

#[async_trait]
impl SQLExecutor for CopyExecutor {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn compute_context(&self) -> Option<String> {
        self.inner.compute_context()
    }

    fn dialect(&self) -> Arc<dyn Dialect> {
        self.inner.dialect()
    }

    fn logical_optimizer(&self) -> Option<LogicalOptimizer> {
        self.inner.logical_optimizer()
    }

    fn ast_analyzer(&self) -> Option<AstAnalyzer> {
        self.inner.ast_analyzer()
    }

    fn execute(
        &self,
        query: &str,
        schema: SchemaRef,
        filters: &[Arc<dyn PhysicalExpr>],
    ) -> Result<SendableRecordBatchStream> {
        let inner = Arc::clone(&self.inner);
        let pool = Arc::clone(&self.pool);
        let source = self.source.clone();
        let query = query.to_string();
        let filters = filters.to_vec();
        let result_schema = Arc::clone(&schema);
        let stream = futures::stream::once(async move {
            let conn = pool.connect_direct().await.map_err(external)?;
            let prepared = conn.conn.prepare(&query).await.map_err(external)?;
            let types: Vec<Type> = prepared
                .columns()
                .iter()
                .map(|c| c.type_().clone())
                .collect();
            drop(prepared);
            let Some(decoder) = CopyDecoder::new(&types, Arc::clone(&schema), source) else {
                drop(conn);
                return inner.execute(&query, schema, &filters);
            };
            let copy_sql = format!("COPY ({query}) TO STDOUT (FORMAT binary)");
            let copy = conn
                .conn
                .copy_out(copy_sql.as_str())
                .await
                .map_err(external)?;
            let state = (Box::pin(copy), decoder, conn, false);
            let batches = futures::stream::try_unfold(
                state,
                |(mut copy, mut decoder, conn, done)| async move {
                    if done {
                        return Ok(None);
                    }
                    while let Some(chunk) = copy.next().await {
                        decoder.push(&chunk.map_err(external)?)?;
                        if decoder.rows() >= BATCH_ROWS {
                            let batch = decoder.batch()?;
                            return Ok(Some((batch, (copy, decoder, conn, false))));
                        }
                    }
                    decoder.finish()?;
                    let batch = decoder.batch()?;
                    Ok(Some((batch, (copy, decoder, conn, true))))
                },
            )
            .try_filter(|batch| futures::future::ready(batch.num_rows() > 0));
            let stream: SendableRecordBatchStream =
                Box::pin(RecordBatchStreamAdapter::new(schema, batches));
            Ok(stream)
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            result_schema,
            stream,
        )))
    }

    async fn statistics(&self, plan: &LogicalPlan) -> Result<Statistics> {
        self.inner.statistics(plan).await
    }

    async fn table_names(&self) -> Result<Vec<String>> {
        self.inner.table_names().await
    }

    async fn get_table_schema(&self, table_name: &str) -> Result<SchemaRef> {
        self.inner.get_table_schema(table_name).await
    }

    fn metrics(&self) -> Option<MetricsSet> {
        self.inner.metrics()
    }
}

/// Decodes a binary COPY stream, in whatever pieces it arrives, into record batches.
struct CopyDecoder {
    schema: SchemaRef,
    columns: Vec<Column>,
    source: String,
    /// Bytes of an incomplete tuple (or header) carried to the next piece.
    pending: Vec<u8>,
    header_read: bool,
    trailer_read: bool,
    rows: usize,
}

impl CopyDecoder {
    /// A decoder for a result of these PostgreSQL types read into `schema`, or `None` when a
    /// column is not one this module decodes.
    fn new(types: &[Type], schema: SchemaRef, source: String) -> Option<Self> {
        if types.is_empty() || types.len() != schema.fields().len() {
            return None;
        }
        let columns = types
            .iter()
            .zip(schema.fields())
            .map(|(pg, field)| Column::new(pg, field))
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            schema,
            columns,
            source,
            pending: Vec::new(),
            header_read: false,
            trailer_read: false,
            rows: 0,
        })
    }

    fn rows(&self) -> usize {
        self.rows
    }

    fn error(&self, column: Option<usize>, message: impl std::fmt::Display) -> DataFusionError {
        let column = column
            .map(|i| format!(", column \"{}\"", self.schema.field(i).name()))
            .unwrap_or_default();
        DataFusionError::Execution(format!(
            "cannot read PostgreSQL source \"{}\"{column}: {message}",
            self.source
        ))
    }

    /// Takes the next piece of the stream.
    fn push(&mut self, piece: &[u8]) -> Result<()> {
        if self.pending.is_empty() {
            let used = self.parse(piece)?;
            self.pending.extend_from_slice(&piece[used..]);
        } else {
            let mut buffer = std::mem::take(&mut self.pending);
            buffer.extend_from_slice(piece);
            let used = self.parse(&buffer)?;
            buffer.drain(..used);
            self.pending = buffer;
        }
        Ok(())
    }

    /// Decodes the header and every complete tuple at the start of `bytes`; returns how many
    /// bytes it used.
    fn parse(&mut self, bytes: &[u8]) -> Result<usize> {
        let mut at = 0;
        if !self.header_read {
            let Some(header) = header_length(bytes).map_err(|m| self.error(None, m))? else {
                return Ok(0);
            };
            at = header;
            self.header_read = true;
        }
        while !self.trailer_read {
            let Some(length) = self.tuple_length(&bytes[at..])? else {
                break;
            };
            self.decode_tuple(&bytes[at..at + length])?;
            at += length;
        }
        if self.trailer_read && at < bytes.len() {
            return Err(self.error(None, "data after the end of the COPY stream"));
        }
        Ok(at)
    }

    /// The length of the tuple (or trailer) at the start of `bytes`, or `None` when it has not
    /// fully arrived.
    fn tuple_length(&self, bytes: &[u8]) -> Result<Option<usize>> {
        let Some(count) = bytes.get(..2) else {
            return Ok(None);
        };
        let count = i16::from_be_bytes([count[0], count[1]]);
        if count == -1 {
            return Ok(Some(2));
        }
        if count as usize != self.columns.len() {
            return Err(self.error(
                None,
                format!(
                    "a row has {count} columns, the query {}",
                    self.columns.len()
                ),
            ));
        }
        let mut at = 2;
        for _ in 0..count {
            let Some(length) = bytes.get(at..at + 4) else {
                return Ok(None);
            };
            let length = i32::from_be_bytes([length[0], length[1], length[2], length[3]]);
            at += 4 + length.max(0) as usize;
            if at > bytes.len() {
                return Ok(None);
            }
        }
        Ok(Some(at))
    }

    /// Appends one complete tuple (or notes the trailer).
    fn decode_tuple(&mut self, tuple: &[u8]) -> Result<()> {
        if tuple[..2] == (-1i16).to_be_bytes() {
            self.trailer_read = true;
            return Ok(());
        }
        let mut at = 2;
        for i in 0..self.columns.len() {
            let length =
                i32::from_be_bytes([tuple[at], tuple[at + 1], tuple[at + 2], tuple[at + 3]]);
            at += 4;
            if length < 0 {
                self.columns[i].append_null();
                continue;
            }
            let value = &tuple[at..at + length as usize];
            at += length as usize;
            if let Err(message) = self.columns[i].append(value) {
                return Err(self.error(Some(i), message));
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// Checks the stream ended where it should.
    fn finish(&self) -> Result<()> {
        if !self.trailer_read || !self.pending.is_empty() {
            return Err(self.error(None, "the COPY stream ended early"));
        }
        Ok(())
    }

    /// The rows decoded since the last batch.
    fn batch(&mut self) -> Result<RecordBatch> {
        let mut arrays = Vec::with_capacity(self.columns.len());
        for i in 0..self.columns.len() {
            let array = self.columns[i]
                .finish()
                .map_err(|m| self.error(Some(i), m))?;
            arrays.push(array);
        }
        self.rows = 0;
        RecordBatch::try_new(Arc::clone(&self.schema), arrays).map_err(|e| self.error(None, e))
    }
}

/// The header's length, or `None` when it has not fully arrived.
fn header_length(bytes: &[u8]) -> std::result::Result<Option<usize>, String> {
    let fixed_part = SIGNATURE.len() + 8;
    if bytes.len() < fixed_part {
        return Ok(None);
    }
    if &bytes[..SIGNATURE.len()] != SIGNATURE {
        return Err("the COPY stream does not start with the binary signature".into());
    }
    let word =
        |at: usize| i32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let flags = word(SIGNATURE.len());
    if flags & (1 << 16) != 0 {
        return Err("the COPY stream carries row OIDs".into());
    }
    let extension = word(SIGNATURE.len() + 4).max(0) as usize;
    if bytes.len() < fixed_part + extension {
        return Ok(None);
    }
    Ok(Some(fixed_part + extension))
}

#[cfg(test)]
mod tests;
