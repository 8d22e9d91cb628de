//! Engine outputs as pgwire responses: rows encoded by arrow-pg in the formats the client
//! asked for, command tags, and COPY streams.

use std::sync::Arc;

use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use arrow_pg::encoder::encode_value;
use bytes::Bytes;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use futures::{StreamExt, stream};
use pgwire::api::portal::Format;
use pgwire::api::results::{
    CopyCsvOptions, CopyEncoder, CopyResponse, CopyTextOptions, QueryResponse, Response, Tag,
};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::copy::CopyData;
use pgwire::types::format::FormatOptions;
use tributary_engine::copy::{CopyFormat, CopyKind};
use tributary_engine::{Error, Output};

use super::sqlstate::error_info;

pub(super) fn pg_error(e: &Error) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(e)))
}

fn df_error(e: datafusion::error::DataFusionError) -> PgWireError {
    pg_error(&Error::DataFusion(e))
}

/// Rows as a query response in the given formats.
pub(super) fn rows_response(
    schema: &SchemaRef,
    stream: SendableRecordBatchStream,
    tag: &str,
    format: &Format,
    options: Option<Arc<FormatOptions>>,
) -> PgWireResult<QueryResponse> {
    let fields = Arc::new(arrow_schema_to_pg_fields(schema, format, options)?);
    let row_fields = Arc::clone(&fields);
    let format = format.clone();
    let rows = stream
        .flat_map(move |batch| match batch {
            Ok(batch) => stream::iter(encode_recordbatch(
                Arc::clone(&row_fields),
                super::text::render(batch, &format),
            ))
            .boxed(),
            Err(e) => stream::iter(vec![Err(df_error(e))]).boxed(),
        })
        .inspect(|row| {
            if let Ok(row) = row {
                // The field count (2 bytes) precedes the fields.
                crate::metrics::get().message_sent(row.data.len() + 2);
            }
        });
    let mut response = QueryResponse::new(fields, rows);
    if tag != "SELECT" {
        response.set_command_tag(tag);
    }
    Ok(response)
}

/// The tag of a completed command, split so pgwire prints it as PostgreSQL does.
pub(super) fn command_tag(tag: &str) -> Tag {
    Tag::new(tag)
}

/// An engine output as a response; `CopyIn` is handled by the caller.
pub(super) fn response(
    output: Output,
    format: &Format,
    options: Option<Arc<FormatOptions>>,
) -> PgWireResult<Response> {
    Ok(match output {
        Output::Rows {
            schema,
            stream,
            tag,
        } => Response::Query(rows_response(&schema, stream, &tag, format, options)?),
        Output::Command(tag) if tag.is_empty() => Response::EmptyQuery,
        Output::Command(tag) => Response::Execution(command_tag(&tag)),
        Output::CopyIn(copy) => {
            Response::CopyIn(CopyResponse::new(0, copy.columns.len(), stream::empty()))
        }
        Output::CopyOut {
            schema,
            stream,
            format: copy_format,
        } => copy_out(schema, stream, copy_format, options)?,
    })
}

fn copy_out(
    schema: SchemaRef,
    stream: SendableRecordBatchStream,
    format: CopyFormat,
    options: Option<Arc<FormatOptions>>,
) -> PgWireResult<Response> {
    let fields = Arc::new(arrow_schema_to_pg_fields(
        &schema,
        &Format::UnifiedText,
        options,
    )?);
    let columns = fields.len();
    let delimiter = (format.delimiter as char).to_string();
    let new_encoder = {
        let fields = Arc::clone(&fields);
        let format = format.clone();
        move || match format.kind {
            CopyKind::Csv => CopyEncoder::new_csv(
                Arc::clone(&fields),
                CopyCsvOptions {
                    delimiter: delimiter.as_str().into(),
                    quote: (format.quote as char).to_string().as_str().into(),
                    escape: (format.quote as char).to_string().as_str().into(),
                    null_string: format.null.as_str().into(),
                    force_quote: Vec::new(),
                },
            ),
            _ => CopyEncoder::new_text(
                Arc::clone(&fields),
                CopyTextOptions {
                    delimiter: delimiter.as_str().into(),
                    null_string: format.null.as_str().into(),
                },
            ),
        }
    };
    let header = if format.header && format.kind == CopyKind::Csv {
        let line = schema
            .fields()
            .iter()
            .map(|f| csv_quote(f.name(), format.delimiter, format.quote))
            .collect::<Vec<_>>()
            .join(&(format.delimiter as char).to_string());
        Some(Ok(CopyData::new(Bytes::from(format!("{line}\n")))))
    } else {
        None
    };
    let text = format.kind == CopyKind::Text;
    let (delimiter, null) = (format.delimiter, format.null.clone());
    let rows = stream.flat_map(move |batch| {
        let encoded: Vec<PgWireResult<CopyData>> = match batch {
            Ok(batch) => {
                let batch = super::text::render(batch, &Format::UnifiedText);
                let direct = (text && super::copy_text::supported(&batch))
                    .then(|| super::copy_text::encode(&batch, delimiter, &null))
                    .flatten();
                match direct {
                    Some(rows) => rows.into_iter().map(|r| Ok(CopyData::new(r))).collect(),
                    None => encode_copy_rows(&batch, &fields, &mut new_encoder()),
                }
            }
            Err(e) => vec![Err(df_error(e))],
        };
        stream::iter(encoded)
    });
    let all = stream::iter(header).chain(rows).inspect(|data| {
        if let Ok(data) = data {
            crate::metrics::get().message_sent(data.data.len());
        }
    });
    Ok(Response::CopyOut(CopyResponse::new(0, columns, all)))
}

fn encode_copy_rows(
    batch: &RecordBatch,
    fields: &Arc<Vec<pgwire::api::results::FieldInfo>>,
    encoder: &mut CopyEncoder,
) -> Vec<PgWireResult<CopyData>> {
    let schema = batch.schema();
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let mut result = Ok(());
        for (i, column) in batch.columns().iter().enumerate() {
            result = encode_value(encoder, column, row, schema.field(i), &fields[i]);
            if result.is_err() {
                break;
            }
        }
        out.push(result.map(|_| encoder.take_copy()));
    }
    out
}

fn csv_quote(value: &str, delimiter: u8, quote: u8) -> String {
    let q = quote as char;
    if value.contains(delimiter as char) || value.contains(q) || value.contains('\n') {
        format!("{q}{}{q}", value.replace(q, &format!("{q}{q}")))
    } else {
        value.to_string()
    }
}
