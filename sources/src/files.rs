//! File sources (CSV, JSON, NDJSON, Parquet) as DataFusion listing tables. The schema is
//! fixed when the source is created (declared, or inferred once) and stored in the catalog,
//! so a file that later changes shape is an error naming the file, not a silent new schema.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::context::SessionState;

use super::sized::SizedListing;
use tributary_sql::dialect::SourceFormat;
use tributary_sql::error::{Error, Result};

/// The settings of a file source, as kept in the catalog's options.
#[derive(Debug, Clone)]
pub struct FileSourceSpec {
    pub path: String,
    pub format: SourceFormat,
    pub header: bool,
    pub delimiter: u8,
    pub null_value: Option<String>,
}

/// The option keys file sources understand (others are rejected with a clear error).
pub const OPTION_KEYS: &[&str] = &[
    "header",
    "delimiter",
    "null_value",
    "mode",
    "on_bad_row",
    "poll",
    "max_staleness",
    "description",
];

impl FileSourceSpec {
    /// Reads the spec back from catalog options (`path`, `format` and the `WITH` options).
    pub fn from_options(options: &BTreeMap<String, String>) -> Result<Self> {
        let path = options
            .get("path")
            .cloned()
            .ok_or_else(|| Error::Internal("file source without a path".into()))?;
        let format = options
            .get("format")
            .and_then(|f| SourceFormat::parse(f))
            .ok_or_else(|| Error::Internal("file source without a format".into()))?;
        for key in options.keys() {
            if !OPTION_KEYS.contains(&key.as_str()) && key != "path" && key != "format" {
                return Err(Error::InvalidOption {
                    option: key.clone(),
                    message: format!(
                        "unknown option for a file source (expected one of: {})",
                        OPTION_KEYS.join(", ")
                    ),
                });
            }
        }
        let header = match options.get("header").map(|s| s.to_ascii_lowercase()) {
            None => true,
            Some(v) if v == "true" => true,
            Some(v) if v == "false" => false,
            Some(v) => {
                return Err(Error::InvalidOption {
                    option: "header".into(),
                    message: format!("expected true or false, found \"{v}\""),
                });
            }
        };
        let delimiter = match options.get("delimiter") {
            None => b',',
            Some(d) if d.len() == 1 => d.as_bytes()[0],
            Some(d) if d == "\\t" => b'\t',
            Some(d) => {
                return Err(Error::InvalidOption {
                    option: "delimiter".into(),
                    message: format!("expected one character, found \"{d}\""),
                });
            }
        };
        match options.get("mode").map(String::as_str) {
            None | Some("snapshot") | Some("append") => {}
            Some(other) => {
                return Err(Error::InvalidOption {
                    option: "mode".into(),
                    message: format!("expected 'snapshot' or 'append', found \"{other}\""),
                });
            }
        }
        match options.get("on_bad_row").map(String::as_str) {
            None | Some("fail") => {}
            Some("quarantine") => {
                return Err(Error::NotSupported("on_bad_row = 'quarantine'".into()));
            }
            Some(other) => {
                return Err(Error::InvalidOption {
                    option: "on_bad_row".into(),
                    message: format!("expected 'fail' or 'quarantine', found \"{other}\""),
                });
            }
        }
        Ok(Self {
            path,
            format,
            header,
            delimiter,
            null_value: options.get("null_value").cloned(),
        })
    }

    fn file_format(&self) -> Arc<dyn FileFormat> {
        match self.format {
            SourceFormat::Csv => {
                let mut csv = CsvFormat::default()
                    .with_has_header(self.header)
                    .with_delimiter(self.delimiter);
                if let Some(null) = &self.null_value {
                    csv = csv.with_null_regex(Some(format!("^{}$", regex_escape(null))));
                }
                Arc::new(csv)
            }
            SourceFormat::Json => Arc::new(JsonFormat::default().with_newline_delimited(false)),
            SourceFormat::NdJson => Arc::new(JsonFormat::default()),
            SourceFormat::Parquet => Arc::new(ParquetFormat::default()),
        }
    }

    fn extension(&self) -> &'static str {
        match self.format {
            SourceFormat::Csv => ".csv",
            SourceFormat::Json => ".json",
            SourceFormat::NdJson => ".ndjson",
            SourceFormat::Parquet => ".parquet",
        }
    }

    /// The listing URL: a file, a glob, or a folder (every file with the format's extension).
    fn url(&self) -> Result<(ListingTableUrl, &'static str)> {
        let is_dir = !self.path.contains("://") && Path::new(&self.path).is_dir();
        let (path, extension) = if is_dir && !self.path.ends_with('/') {
            (format!("{}/", self.path), self.extension())
        } else if is_dir || self.path.ends_with('/') {
            (self.path.clone(), self.extension())
        } else {
            (self.path.clone(), "")
        };
        let url = ListingTableUrl::parse(&path).map_err(|e| Error::BadInput {
            message: format!("invalid source path \"{}\": {e}", self.path),
            detail: None,
        })?;
        Ok((url, extension))
    }

    fn listing_options(&self, extension: &str) -> ListingOptions {
        ListingOptions::new(self.file_format()).with_file_extension(extension)
    }

    /// Infers the schema from the files as they are now. Fails when no file matches.
    pub async fn infer_schema(&self, state: &SessionState) -> Result<SchemaRef> {
        let (url, extension) = self.url()?;
        let options = self.listing_options(extension);
        let schema = options
            .infer_schema(state, &url)
            .await
            .map_err(|e| Error::BadInput {
                message: format!(
                    "cannot read source files \"{}\": {}",
                    self.path,
                    Error::from(e)
                ),
                detail: None,
            })?;
        if schema.fields().is_empty() {
            return Err(Error::BadInput {
                message: format!("no files match \"{}\"", self.path),
                detail: Some("a source without a column list needs at least one file to infer its columns from".into()),
            });
        }
        Ok(schema)
    }

    /// A table provider reading the files with a fixed schema.
    pub fn provider(&self, schema: SchemaRef) -> Result<Arc<SizedListing>> {
        let (url, extension) = self.url()?;
        let config = ListingTableConfig::new(url)
            .with_listing_options(self.listing_options(extension))
            .with_schema(schema);
        Ok(Arc::new(SizedListing::new(Arc::new(
            ListingTable::try_new(config)?,
        ))))
    }
}

pub use tributary_storage::bookmarks::{FileStamp, Listing};

impl FileSourceSpec {
    /// The files the source reads now, with their stamps.
    pub async fn list_files(&self, state: &SessionState) -> Result<Listing> {
        use futures::TryStreamExt;
        let (url, extension) = self.url()?;
        let store = state.runtime_env().object_store(&url)?;
        let base = url.object_store();
        let files: Vec<_> = url
            .list_all_files(state, store.as_ref(), extension)
            .await?
            .try_collect()
            .await?;
        Ok(files
            .into_iter()
            .map(|meta| {
                let stamp = FileStamp {
                    size: meta.size,
                    modified_ms: meta.last_modified.timestamp_millis(),
                };
                (format!("{}{}", base.as_str(), meta.location), stamp)
            })
            .collect())
    }

    /// A provider reading exactly `files` (URLs from [`Self::list_files`]) with a fixed
    /// schema, so a refresh reads the files its bookmark records and no file that lands
    /// while it runs.
    pub fn files_provider<'a>(
        &self,
        schema: SchemaRef,
        files: impl IntoIterator<Item = &'a String>,
    ) -> Result<Arc<dyn datafusion::catalog::TableProvider>> {
        let urls = files
            .into_iter()
            .map(ListingTableUrl::parse)
            .collect::<std::result::Result<Vec<_>, _>>()?;
        if urls.is_empty() {
            return Ok(Arc::new(datafusion::datasource::empty::EmptyTable::new(
                schema,
            )));
        }
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(self.listing_options(""))
            .with_schema(schema);
        Ok(Arc::new(SizedListing::new(Arc::new(
            ListingTable::try_new(config)?,
        ))))
    }
}

impl FileSourceSpec {
    /// Finds the file a read error comes from by reading each file on its own; the message
    /// names the file and keeps the reader's line number. Only used after a failure.
    pub async fn locate_bad_file(&self, state: &SessionState, schema: SchemaRef) -> Option<String> {
        use futures::TryStreamExt;
        let (url, extension) = self.url().ok()?;
        let store = state.runtime_env().object_store(&url).ok()?;
        let files: Vec<_> = url
            .list_all_files(state, store.as_ref(), extension)
            .await
            .ok()?
            .try_collect()
            .await
            .ok()?;
        let ctx = datafusion::prelude::SessionContext::new_with_state(state.clone());
        for meta in files {
            let path = format!("/{}", meta.location);
            let single = FileSourceSpec {
                path: path.clone(),
                ..self.clone()
            };
            let provider = single.provider(Arc::clone(&schema)).ok()?;
            let result = match ctx.read_table(provider) {
                Ok(df) => df.collect().await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                return Some(format!("file \"{path}\": {}", Error::from(e)));
            }
        }
        None
    }
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
