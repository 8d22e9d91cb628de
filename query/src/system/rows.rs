//! A small column-oriented builder for system tables: rows are appended value by value and
//! turned into one Arrow batch.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;

use tributary_sql::error::Result;

/// Column types system tables use.
#[derive(Debug, Clone, Copy)]
pub enum Col {
    Text,
    Int,
    Bool,
    /// `timestamp with time zone`, given as RFC 3339 text.
    Timestamp,
}

enum Builder {
    Text(StringBuilder),
    Int(Int64Builder),
    Bool(BooleanBuilder),
    Timestamp(TimestampMicrosecondBuilder),
}

pub struct RowsBuilder {
    schema: SchemaRef,
    builders: Vec<Builder>,
    next: usize,
}

impl std::fmt::Debug for RowsBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowsBuilder")
            .field("schema", &self.schema)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl RowsBuilder {
    pub fn new(columns: &[(&str, Col)]) -> Self {
        let fields: Vec<Field> = columns
            .iter()
            .map(|(name, col)| {
                let dt = match col {
                    Col::Text => DataType::Utf8,
                    Col::Int => DataType::Int64,
                    Col::Bool => DataType::Boolean,
                    Col::Timestamp => {
                        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
                    }
                };
                Field::new(*name, dt, true)
            })
            .collect();
        let builders = columns
            .iter()
            .map(|(_, col)| match col {
                Col::Text => Builder::Text(StringBuilder::new()),
                Col::Int => Builder::Int(Int64Builder::new()),
                Col::Bool => Builder::Bool(BooleanBuilder::new()),
                Col::Timestamp => {
                    Builder::Timestamp(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
                }
            })
            .collect();
        Self {
            schema: Arc::new(Schema::new(fields)),
            builders,
            next: 0,
        }
    }

    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn slot(&mut self) -> &mut Builder {
        let i = self.next;
        self.next = (self.next + 1) % self.builders.len();
        &mut self.builders[i]
    }

    pub fn text(&mut self, v: Option<&str>) -> &mut Self {
        match self.slot() {
            Builder::Text(b) => b.append_option(v),
            _ => panic!("system table column type mismatch (text)"),
        }
        self
    }

    pub fn int(&mut self, v: Option<i64>) -> &mut Self {
        match self.slot() {
            Builder::Int(b) => b.append_option(v),
            _ => panic!("system table column type mismatch (int)"),
        }
        self
    }

    pub fn bool(&mut self, v: Option<bool>) -> &mut Self {
        match self.slot() {
            Builder::Bool(b) => b.append_option(v),
            _ => panic!("system table column type mismatch (bool)"),
        }
        self
    }

    pub fn timestamp(&mut self, rfc3339: Option<&str>) -> &mut Self {
        let micros = rfc3339
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.timestamp_micros());
        match self.slot() {
            Builder::Timestamp(b) => b.append_option(micros),
            _ => panic!("system table column type mismatch (timestamp)"),
        }
        self
    }

    pub fn finish(mut self) -> Result<RecordBatch> {
        let arrays: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .map(|b| -> ArrayRef {
                match b {
                    Builder::Text(b) => Arc::new(b.finish()),
                    Builder::Int(b) => Arc::new(b.finish()),
                    Builder::Bool(b) => Arc::new(b.finish()),
                    Builder::Timestamp(b) => Arc::new(b.finish()),
                }
            })
            .collect();
        Ok(RecordBatch::try_new(self.schema, arrays)?)
    }
}
