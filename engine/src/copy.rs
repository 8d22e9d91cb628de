//! COPY: bulk load into tables (`FROM STDIN`, or a server-side file) and export of a table or
//! query (`TO STDOUT`, or a server-side file), in PostgreSQL's text and CSV formats.

use std::io::Cursor;
use std::sync::Arc;
use tributary_catalog::ObjectClass;

use datafusion::arrow::array::{ArrayRef, new_null_array};
use datafusion::arrow::csv;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::sql::sqlparser::ast::{self, CopyLegacyOption, CopyOption, CopySource, CopyTarget};
use deltalake::protocol::SaveMode;
use futures::StreamExt;
use tributary_catalog::ObjectName;

use crate::context::StatementContext;
use crate::error::{Error, Result};
use crate::names;
use crate::session::Output;
use crate::storage::delta;
use crate::types::schema_of_columns;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    Text,
    Csv,
    Binary,
    /// Parquet files, for `COPY ... TO 'file'` exports only.
    Parquet,
}

/// A COPY data format with its options.
#[derive(Debug, Clone)]
pub struct CopyFormat {
    pub kind: CopyKind,
    pub delimiter: u8,
    pub header: bool,
    pub null: String,
    pub quote: u8,
}

impl CopyFormat {
    fn new(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> Result<Self> {
        let mut kind = CopyKind::Text;
        let mut delimiter = None;
        let mut header = false;
        let mut null = None;
        let mut quote = b'"';
        let set_kind = |name: &str| -> Result<CopyKind> {
            match name.to_lowercase().as_str() {
                "text" => Ok(CopyKind::Text),
                "csv" => Ok(CopyKind::Csv),
                "binary" => Ok(CopyKind::Binary),
                "parquet" => Ok(CopyKind::Parquet),
                other => Err(Error::bad_input(format!(
                    "COPY format \"{other}\" not recognized"
                ))),
            }
        };
        for option in options {
            match option {
                CopyOption::Format(f) => kind = set_kind(&f.value)?,
                CopyOption::Delimiter(c) => delimiter = Some(*c as u8),
                CopyOption::Header(h) => header = *h,
                CopyOption::Null(n) => null = Some(n.clone()),
                CopyOption::Quote(q) => quote = *q as u8,
                other => return Err(Error::NotSupported(format!("COPY option {other}"))),
            }
        }
        for option in legacy {
            match option {
                CopyLegacyOption::Binary => kind = CopyKind::Binary,
                CopyLegacyOption::Delimiter(c) => delimiter = Some(*c as u8),
                CopyLegacyOption::Null(n) => null = Some(n.clone()),
                CopyLegacyOption::Csv(csv_options) => {
                    kind = CopyKind::Csv;
                    for o in csv_options {
                        match o {
                            ast::CopyLegacyCsvOption::Header => header = true,
                            ast::CopyLegacyCsvOption::Quote(q) => quote = *q as u8,
                            other => {
                                return Err(Error::NotSupported(format!("COPY option {other}")));
                            }
                        }
                    }
                }
                other => return Err(Error::NotSupported(format!("COPY option {other}"))),
            }
        }
        Ok(Self {
            kind,
            delimiter: delimiter.unwrap_or(if kind == CopyKind::Csv { b',' } else { b'\t' }),
            header,
            null: null.unwrap_or_else(|| {
                if kind == CopyKind::Csv {
                    String::new()
                } else {
                    "\\N".into()
                }
            }),
            quote,
        })
    }
}

/// A pending `COPY ... FROM STDIN`.
#[derive(Debug, Clone)]
pub struct CopyIn {
    pub table: ObjectName,
    pub object_id: i64,
    /// The columns the data holds, in order.
    pub columns: Vec<String>,
    pub format: CopyFormat,
}

pub async fn copy_statement(
    cx: &StatementContext<'_>,
    source: CopySource,
    to: bool,
    target: CopyTarget,
    options: Vec<CopyOption>,
    legacy: Vec<CopyLegacyOption>,
) -> Result<Output> {
    let format = CopyFormat::new(&options, &legacy)?;
    if format.kind == CopyKind::Binary {
        return Err(Error::NotSupported("COPY in binary format".into()));
    }
    if format.kind == CopyKind::Parquet && !(to && matches!(target, CopyTarget::File { .. })) {
        return Err(Error::NotSupported(
            "COPY in parquet format other than TO a file".into(),
        ));
    }
    if !to {
        let CopySource::Table {
            table_name,
            columns,
        } = source
        else {
            return Err(Error::Syntax("COPY FROM needs a table".into()));
        };
        let object = crate::dml::target_table(cx, &table_name, "copy into")?;
        let columns: Vec<String> = if columns.is_empty() {
            object.columns.iter().map(|c| c.name.clone()).collect()
        } else {
            columns.iter().map(names::ident).collect()
        };
        for c in &columns {
            if !object.columns.iter().any(|o| &o.name == c) {
                return Err(Error::UndefinedColumn(format!(
                    "column \"{c}\" of relation \"{}\" does not exist",
                    object.name
                )));
            }
        }
        let copy = CopyIn {
            table: object.name.clone(),
            object_id: object.id,
            columns,
            format,
        };
        return match target {
            CopyTarget::Stdin => Ok(Output::CopyIn(copy)),
            CopyTarget::File { filename } => {
                let data = std::fs::read(&filename).map_err(|e| {
                    Error::bad_input(format!(
                        "could not open file \"{filename}\" for reading: {e}"
                    ))
                })?;
                let rows = copy_in(cx, &copy, &data).await?;
                Ok(Output::Command(format!("COPY {rows}")))
            }
            other => Err(Error::NotSupported(format!("COPY FROM {other}"))),
        };
    }
    let query = match source {
        CopySource::Query(q) => ast::Statement::Query(q),
        CopySource::Table {
            table_name,
            columns,
        } => {
            let cols = if columns.is_empty() {
                "*".to_string()
            } else {
                columns
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let sql = format!("SELECT {cols} FROM {table_name}");
            match crate::dialect::parse_statement(&sql)? {
                crate::dialect::Statement::Sql(s) => *s,
                _ => return Err(Error::Internal("COPY query did not parse".into())),
            }
        }
    };
    if let (CopyKind::Parquet, CopyTarget::File { filename }) = (format.kind, &target) {
        let plan = crate::planning::plan_statement(&cx.state(), query).await?;
        let df = datafusion::dataframe::DataFrame::new(cx.state(), plan);
        let written = df
            .write_parquet(
                filename,
                datafusion::dataframe::DataFrameWriteOptions::new().with_single_file_output(true),
                None,
            )
            .await?;
        let rows: u64 = written
            .first()
            .and_then(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::UInt64Array>()
            })
            .map_or(0, |a| a.value(0));
        return Ok(Output::Command(format!("COPY {rows}")));
    }
    let Output::Rows { schema, stream, .. } = cx.query(query, None).await? else {
        return Err(Error::Internal("COPY query returned no rows".into()));
    };
    match target {
        CopyTarget::Stdout => Ok(Output::CopyOut {
            schema,
            stream,
            format,
        }),
        CopyTarget::File { filename } => {
            let rows = write_file(&filename, stream, &format).await?;
            Ok(Output::Command(format!("COPY {rows}")))
        }
        other => Err(Error::NotSupported(format!("COPY TO {other}"))),
    }
}

async fn write_file(
    filename: &str,
    mut stream: datafusion::execution::SendableRecordBatchStream,
    format: &CopyFormat,
) -> Result<u64> {
    let path = std::path::Path::new(filename);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("tmp-copy");
    let file = std::fs::File::create(&tmp).map_err(|e| {
        Error::bad_input(format!(
            "could not open file \"{filename}\" for writing: {e}"
        ))
    })?;
    let mut writer = csv::WriterBuilder::new()
        .with_header(format.header)
        .with_delimiter(format.delimiter)
        .with_quote(format.quote)
        .with_null(format.null.clone())
        .build(file);
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        writer.write(&batch)?;
    }
    let file = writer.into_inner();
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(rows)
}

/// Loads the data of a `COPY ... FROM STDIN` (or a server file) into its table as one commit.
pub(crate) async fn copy_in(cx: &StatementContext<'_>, copy: &CopyIn, data: &[u8]) -> Result<u64> {
    let engine = Arc::clone(&cx.engine.inner);
    let lock = engine.store().write_lock(copy.object_id);
    let _guard = lock.lock().await;
    let object = engine
        .catalog()
        .object_by_id(copy.object_id)?
        .ok_or_else(|| Error::UndefinedObject {
            kind: ObjectClass::Relation,
            name: copy.table.to_string(),
        })?;
    let table_schema = schema_of_columns(&object.columns)?;
    let data_schema = Arc::new(Schema::new(
        copy.columns
            .iter()
            .map(|c| {
                let f = table_schema.field_with_name(c)?;
                Ok(f.as_ref().clone().with_nullable(true))
            })
            .collect::<Result<Vec<_>, datafusion::arrow::error::ArrowError>>()?,
    ));
    let batches = parse_copy_data(data, &data_schema, &copy.format, &copy.table)?;
    let mut rows = 0u64;
    let mut full = Vec::new();
    for batch in batches {
        rows += batch.num_rows() as u64;
        full.push(widen(&batch, &table_schema, &copy.table)?);
    }
    if rows == 0 {
        return Ok(0);
    }
    let table = delta::latest(engine.store().published_table(&object).await?).await?;
    let table = table
        .write(full)
        .with_save_mode(SaveMode::Append)
        .with_commit_properties(delta::commit_properties(Default::default()))
        .await?;
    engine.store().publish(&object, table)?;
    Ok(rows)
}

fn parse_copy_data(
    data: &[u8],
    schema: &SchemaRef,
    format: &CopyFormat,
    table: &ObjectName,
) -> Result<Vec<RecordBatch>> {
    let data: Vec<u8> = if format.kind == CopyKind::Text {
        // psql ends text-format data with a "\." line in old protocol versions.
        let text = String::from_utf8_lossy(data);
        text.lines()
            .filter(|l| *l != "\\.")
            .flat_map(|l| l.bytes().chain(std::iter::once(b'\n')))
            .collect()
    } else {
        data.to_vec()
    };
    let null_regex = regex_for_null(&format.null)?;
    let mut builder = csv::ReaderBuilder::new(Arc::clone(schema))
        .with_header(format.header)
        .with_delimiter(format.delimiter)
        .with_null_regex(null_regex)
        .with_batch_size(8192);
    if format.kind == CopyKind::Csv {
        builder = builder.with_quote(format.quote);
    } else {
        builder = builder.with_quote(0);
    }
    let reader = builder.build(Cursor::new(data))?;
    reader
        .map(|b| {
            b.map_err(|e| Error::BadInput {
                message: format!("invalid COPY data for \"{table}\": {e}"),
                detail: None,
            })
        })
        .collect()
}

fn regex_for_null(null: &str) -> datafusion::common::Result<regex::Regex> {
    regex::Regex::new(&format!("^{}$", regex::escape(null)))
        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))
}

/// Adds null columns for table columns the COPY data did not list.
fn widen(batch: &RecordBatch, table_schema: &SchemaRef, table: &ObjectName) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(table_schema.fields().len());
    for field in table_schema.fields() {
        match batch.schema().index_of(field.name()) {
            Ok(i) => {
                let column = Arc::clone(batch.column(i));
                if !field.is_nullable() && column.null_count() > 0 {
                    return Err(Error::BadInput {
                        message: format!(
                            "null value in column \"{}\" of relation \"{table}\" violates not-null constraint",
                            field.name()
                        ),
                        detail: None,
                    });
                }
                columns.push(column);
            }
            Err(_) => {
                if !field.is_nullable() {
                    return Err(Error::BadInput {
                        message: format!(
                            "null value in column \"{}\" of relation \"{table}\" violates not-null constraint",
                            field.name()
                        ),
                        detail: None,
                    });
                }
                columns.push(new_null_array(field.data_type(), batch.num_rows()));
            }
        }
    }
    Ok(RecordBatch::try_new(Arc::clone(table_schema), columns)?)
}
