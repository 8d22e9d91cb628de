//! HTTP JSON sources: `CREATE SOURCE ... FROM HTTP 'url' FORMAT JSON`.
//!
//! An API answers with what is true *now*; to query it, join it and refresh models over it
//! incrementally, each poll is kept as a snapshot. The source is stored as a Delta table in the
//! warehouse (like a table): every poll that brings a new body appends its records with a
//! `_loaded_at timestamptz` column, in one Delta commit whose metadata carries the body's
//! SHA-256. A poll whose body equals the last snapshot's appends nothing, so the source's Delta
//! versions are exactly "the API said something new": models over it see appended versions
//! (incremental refreshes append only the new snapshot's rows) and `schedule = 'on change'`
//! fires only then.
//!
//! A poll that fails (connection refused, timeout, a non-2xx answer, a body that is not JSON,
//! records that no longer fit the source's columns) commits nothing: readers keep the last good
//! snapshot, and the failure is recorded as a failed run of the source (`tributary.runs`) and
//! shown in `tributary.sources` (`last_polled_at`, `last_poll_status`, `last_error`).
//!
//! Polls happen at `CREATE SOURCE` (which fails, storing nothing, when the first poll fails:
//! a wrong URL or a records path that matches nothing is caught while the author is looking),
//! on `REFRESH SOURCE name`, and by the server's scheduler every `poll` interval.
//!
//! `records` is a small JSONPath subset: `$` (the body itself), `$.a.b` (object keys) and an
//! optional trailing `[*]` (`$.rates[*]`, `$[*]`): the value reached must be an array of
//! objects (one record each) or a single object (one record).
//!
//! Columns: declared ones are checked on every poll; without a list they are inferred from the
//! first poll's records (integers as bigint, other numbers as double precision, booleans,
//! strings and nested values as text holding JSON) and then fixed. A field whose JSON type no
//! longer fits its column, or a column missing from every record, is schema drift: an error,
//! not a silent null. Fields the API adds later are ignored.
//!
//! JSON becomes Arrow through arrow's own JSON decoder; this module only checks each value's
//! JSON type against its column first, to name the field and record in errors.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{ArrayRef, RecordBatch, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::sql::sqlparser::ast;
use deltalake::protocol::SaveMode;
use serde_json::Value;
use tributary_catalog::{CatalogObject, NewObject, ObjectKind, ObjectName, RunOutcome, RunStatus};

use crate::dialect::CreateSource;
use crate::engine::{Engine, EngineInner};
use crate::error::{Error, Result};
use crate::session::{Output, Session};
use crate::storage::delta;

/// The option naming a source's connector in the catalog (`http`; file sources have none).
pub const CONNECTOR_KEY: &str = "connector";
/// The column every snapshot row gets: when the poll that brought it happened.
pub const LOADED_AT: &str = "_loaded_at";
/// Commit metadata key holding the SHA-256 of the body a snapshot commit holds.
pub const BODY_HASH_KEY: &str = "tributary.http.sha256";

/// The options `CREATE SOURCE ... FROM HTTP` understands.
pub const OPTION_KEYS: &[&str] = &[
    "records",
    "headers_secret",
    "poll",
    "timeout",
    "retries",
    "retry_delay",
    "max_staleness",
    "description",
];

/// Largest response body read (bytes); a larger one is an error, not an out-of-memory.
pub const MAX_BODY: usize = 256 << 20;
/// Default time limit of one request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of retries after a failed attempt.
pub const DEFAULT_RETRIES: u32 = 2;
/// Default wait before the first retry (doubled for each further one).
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Longest wait between two attempts, however many retries.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Whether a catalog object is an HTTP source.
pub fn is_http(object: &CatalogObject) -> bool {
    object.kind == ObjectKind::Source
        && object.options.get(CONNECTOR_KEY).map(String::as_str) == Some("http")
}

/// The `records` path: object keys to follow, then whether `[*]` asks for an array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordsPath {
    text: String,
    keys: Vec<String>,
    each: bool,
}

impl RecordsPath {
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| Error::InvalidOption {
            option: "records".into(),
            message: format!("\"{text}\" {why} (write '$', '$.a.b', '$.a[*]' or '$[*]')"),
        };
        let trimmed = text.trim();
        let Some(mut rest) = trimmed.strip_prefix('$') else {
            return Err(bad("does not start with $"));
        };
        let mut keys = Vec::new();
        let mut each = false;
        while !rest.is_empty() {
            if each {
                return Err(bad("has more after [*] (only a trailing [*] is supported)"));
            }
            if let Some(after) = rest.strip_prefix("[*]") {
                each = true;
                rest = after;
            } else if let Some(after) = rest.strip_prefix('.') {
                let end = after.find(['.', '[']).unwrap_or(after.len());
                let key = &after[..end];
                if key.is_empty() || key == "*" {
                    return Err(bad("has an empty or wildcard key"));
                }
                keys.push(key.to_string());
                rest = &after[end..];
            } else {
                return Err(bad("is not a supported path"));
            }
        }
        Ok(Self {
            text: trimmed.to_string(),
            keys,
            each,
        })
    }

    /// The records in a parsed body, each a JSON object.
    pub fn records(
        &self,
        body: Value,
    ) -> std::result::Result<Vec<serde_json::Map<String, Value>>, String> {
        let mut value = body;
        let mut at = String::from("$");
        for key in &self.keys {
            value = match value {
                Value::Object(mut map) => match map.remove(key) {
                    Some(v) => v,
                    None => {
                        return Err(format!(
                            "records path {}: {at} has no key \"{key}\"",
                            self.text
                        ));
                    }
                },
                other => {
                    return Err(format!(
                        "records path {}: {at} is {}, not an object",
                        self.text,
                        kind_of(&other)
                    ));
                }
            };
            at = format!("{at}.{key}");
        }
        let items = match value {
            Value::Array(items) => items,
            Value::Object(map) if !self.each => return Ok(vec![map]),
            other => {
                return Err(format!(
                    "records path {}: {at} is {}, not an array{}",
                    self.text,
                    kind_of(&other),
                    if self.each { "" } else { " or an object" }
                ));
            }
        };
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Object(map) => Ok(map),
                other => Err(format!(
                    "records path {}: record {} is {}, not an object",
                    self.text,
                    i + 1,
                    kind_of(&other)
                )),
            })
            .collect()
    }
}

impl std::fmt::Display for RecordsPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The settings of an HTTP source, as kept in the catalog's options.
#[derive(Debug, Clone)]
pub struct HttpSourceSpec {
    pub url: String,
    pub records: RecordsPath,
    pub headers_secret: Option<String>,
    pub poll: Option<Duration>,
    pub timeout: Duration,
    pub retries: u32,
    pub retry_delay: Duration,
}

impl HttpSourceSpec {
    /// Reads (and checks) the spec from catalog options (`url` and the `WITH` options).
    pub fn from_options(options: &BTreeMap<String, String>) -> Result<Self> {
        for key in options.keys() {
            let internal = ["url", "format", CONNECTOR_KEY].contains(&key.as_str());
            if !internal && !OPTION_KEYS.contains(&key.as_str()) {
                return Err(Error::InvalidOption {
                    option: key.clone(),
                    message: format!(
                        "unknown option for an http source (expected one of: {})",
                        OPTION_KEYS.join(", ")
                    ),
                });
            }
        }
        let url = options
            .get("url")
            .cloned()
            .ok_or_else(|| Error::Internal("http source without a url".into()))?;
        let parsed = url::Url::parse(&url)
            .map_err(|e| Error::bad_input(format!("invalid http source url \"{url}\": {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::bad_input(format!(
                "invalid http source url \"{url}\": the scheme must be http or https"
            )));
        }
        let records = RecordsPath::parse(options.get("records").map_or("$", String::as_str))?;
        let duration = |key: &str| -> Result<Option<Duration>> {
            options
                .get(key)
                .map(|text| crate::schedule::parse_duration(key, text))
                .transpose()
        };
        let poll = duration("poll")?;
        if poll.is_some_and(|p| p < Duration::from_secs(1)) {
            return Err(Error::InvalidOption {
                option: "poll".into(),
                message: "the interval must be at least 1 second".into(),
            });
        }
        let timeout = duration("timeout")?.unwrap_or(DEFAULT_TIMEOUT);
        if timeout.is_zero() {
            return Err(Error::InvalidOption {
                option: "timeout".into(),
                message: "must be longer than zero".into(),
            });
        }
        let retries = match options.get("retries") {
            Some(text) => text
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n <= 10)
                .ok_or_else(|| Error::InvalidOption {
                    option: "retries".into(),
                    message: format!("\"{text}\" is not a whole number from 0 to 10"),
                })?,
            None => DEFAULT_RETRIES,
        };
        Ok(Self {
            url,
            records,
            headers_secret: options.get("headers_secret").cloned(),
            poll,
            timeout,
            retries,
            retry_delay: duration("retry_delay")?.unwrap_or(DEFAULT_RETRY_DELAY),
        })
    }

    /// The wait before retry `n` (1-based): `retry_delay`, doubled for each further retry.
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.retry_delay
            .checked_mul(factor)
            .unwrap_or(MAX_BACKOFF)
            .min(MAX_BACKOFF)
    }
}

/// How an attempt failed, and whether another attempt may help.
struct Failure {
    message: String,
    retryable: bool,
}

/// The body of one successful GET, with retries and exponential backoff. Connection errors,
/// timeouts, 5xx, 408 and 429 answers are retried; other answers are final.
async fn fetch(
    spec: &HttpSourceSpec,
    headers: &[(String, String)],
    name: &ObjectName,
) -> Result<bytes::Bytes> {
    let client = client()?;
    let attempts = spec.retries + 1;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let failure = match fetch_once(client, spec, headers).await {
            Ok(body) => return Ok(body),
            Err(failure) => failure,
        };
        if !failure.retryable || attempt >= attempts {
            let tries = if attempt > 1 {
                format!(" (after {attempt} attempts)")
            } else {
                String::new()
            };
            return Err(Error::SourceUnavailable(format!(
                "http source \"{name}\" ({}): {}{tries}",
                spec.url, failure.message
            )));
        }
        let wait = spec.backoff(attempt);
        tracing::info!(
            source = %name,
            attempt,
            wait_ms = wait.as_millis() as u64,
            error = %failure.message,
            "http source poll failed, retrying"
        );
        tokio::time::sleep(wait).await;
    }
}

fn client() -> Result<&'static reqwest::Client> {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    if let Some(client) = CLIENT.get() {
        return Ok(client);
    }
    let client = reqwest::Client::builder()
        .user_agent(concat!("tributary/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| {
            Error::Internal(format!("cannot build the http client: {}", error_chain(&e)))
        })?;
    Ok(CLIENT.get_or_init(|| client))
}

async fn fetch_once(
    client: &reqwest::Client,
    spec: &HttpSourceSpec,
    headers: &[(String, String)],
) -> std::result::Result<bytes::Bytes, Failure> {
    let mut request = client
        .get(&spec.url)
        .header(reqwest::header::ACCEPT, "application/json");
    for (name, value) in headers {
        let (Ok(name), Ok(mut value)) = (
            reqwest::header::HeaderName::from_bytes(name.as_bytes()),
            reqwest::header::HeaderValue::from_str(value),
        ) else {
            continue; // checked by parse_headers
        };
        // Kept out of reqwest's and hyper's debug output.
        value.set_sensitive(true);
        request = request.header(name, value);
    }
    let timed_out = || Failure {
        message: format!(
            "timed out after {}",
            humantime::format_duration(spec.timeout)
        ),
        retryable: true,
    };
    let read = async {
        let mut response = request.send().await.map_err(|e| request_failure(e, spec))?;
        let status = response.status();
        if !status.is_success() {
            let retryable = status.is_server_error()
                || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                || status == reqwest::StatusCode::REQUEST_TIMEOUT;
            return Err(Failure {
                message: format!("the server answered {status}"),
                retryable,
            });
        }
        if let Some(length) = response.content_length()
            && length > MAX_BODY as u64
        {
            return Err(too_large());
        }
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| request_failure(e, spec))?
        {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    // reqwest's own timeout covers connecting, the headers and the body; this one also
    // bounds anything it does not (a resolver that hangs).
    match tokio::time::timeout(spec.timeout, read).await {
        Ok(result) => result,
        Err(_) => Err(timed_out()),
    }
}

fn too_large() -> Failure {
    Failure {
        message: format!("the response is larger than {} MiB", MAX_BODY >> 20),
        retryable: false,
    }
}

fn request_failure(e: reqwest::Error, spec: &HttpSourceSpec) -> Failure {
    if e.is_timeout() {
        return Failure {
            message: format!(
                "timed out after {}",
                humantime::format_duration(spec.timeout)
            ),
            retryable: true,
        };
    }
    Failure {
        message: format!("request failed: {}", error_chain(&e.without_url())),
        retryable: true,
    }
}

/// An error and its causes, as one lowercase line (reqwest's own text says little alone).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = cause.source();
    }
    parts.join(": ").to_lowercase()
}

/// The request headers a secret holds: a JSON object of strings, or `Name: value` lines.
/// Errors never quote the value.
pub fn parse_headers(secret: &str, value: &str) -> Result<Vec<(String, String)>> {
    let bad = |why: String| {
        Error::bad_input(format!(
            "secret \"{secret}\" does not hold request headers: {why} (write a JSON object or \
             'Name: value' lines)"
        ))
    };
    let trimmed = value.trim();
    let pairs: Vec<(String, String)> = if trimmed.starts_with('{') {
        let Ok(Value::Object(map)) = serde_json::from_str::<Value>(trimmed) else {
            return Err(bad("it is not a valid JSON object".into()));
        };
        map.into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k, s)),
                _ => Err(bad(format!("the value of header \"{k}\" is not a string"))),
            })
            .collect::<Result<_>>()?
    } else {
        trimmed
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, line)| match line.split_once(':') {
                Some((k, v)) => Ok((k.trim().to_string(), v.trim().to_string())),
                None => Err(bad(format!("line {} has no ':'", i + 1))),
            })
            .collect::<Result<_>>()?
    };
    for (name, value) in &pairs {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(bad(format!("\"{name}\" is not a valid header name")));
        }
        if reqwest::header::HeaderValue::from_str(value).is_err() {
            return Err(bad(format!("the value of header \"{name}\" is not valid")));
        }
    }
    Ok(pairs)
}

/// The headers of `headers_secret`, resolved at each poll (an `ENV` secret follows the
/// server's environment).
fn request_headers(engine: &EngineInner, spec: &HttpSourceSpec) -> Result<Vec<(String, String)>> {
    let Some(secret) = &spec.headers_secret else {
        return Ok(Vec::new());
    };
    let value = match crate::secrets::resolve_secret(&engine.catalog, secret) {
        // An unquoted name in WITH (...) keeps its case; secret names fold to lower case.
        Err(Error::UndefinedObject { .. }) if secret.to_lowercase() != *secret => {
            crate::secrets::resolve_secret(&engine.catalog, &secret.to_lowercase())?
        }
        other => other?,
    };
    parse_headers(secret, value.expose())
}

/// A fetched body, parsed into records.
struct Snapshot {
    hash: String,
    records: Vec<serde_json::Map<String, Value>>,
}

fn body_hash(body: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_body(
    spec: &HttpSourceSpec,
    name: &ObjectName,
    body: &[u8],
) -> Result<Vec<serde_json::Map<String, Value>>> {
    let value: Value = serde_json::from_slice(body).map_err(|e| Error::BadInput {
        message: format!(
            "http source \"{name}\" ({}): the response is not json: {e}",
            spec.url
        ),
        detail: Some(format!("the body starts with: {}", body_preview(body))),
    })?;
    spec.records
        .records(value)
        .map_err(|why| Error::bad_input(format!("http source \"{name}\" ({}): {why}", spec.url)))
}

/// The first bytes of a body, for error details.
fn body_preview(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(80)]);
    let mut text: String = text.chars().filter(|c| !c.is_control()).collect();
    if body.len() > 80 {
        text.push_str("...");
    }
    format!("\"{text}\"")
}

/// Infers columns from a first snapshot's records (keys in order of first appearance).
/// Columns follow the order of the fields in the body (`order`, from [`field_order`]; keys
/// it misses come after, by name).
fn infer_schema(
    spec: &HttpSourceSpec,
    name: &ObjectName,
    records: &[serde_json::Map<String, Value>],
    order: &[String],
) -> Result<Schema> {
    let mut order: Vec<String> = order.to_vec();
    let mut types: BTreeMap<String, Option<DataType>> =
        order.iter().map(|k| (k.clone(), None)).collect();
    for record in records {
        for (key, value) in record {
            let seen = types.entry(key.clone()).or_insert_with(|| {
                order.push(key.clone());
                None
            });
            let this = match value {
                Value::Null => continue,
                Value::Bool(_) => DataType::Boolean,
                Value::Number(n) if n.is_i64() => DataType::Int64,
                Value::Number(_) => DataType::Float64,
                Value::String(_) | Value::Array(_) | Value::Object(_) => DataType::Utf8,
            };
            *seen = Some(match (seen.take(), this) {
                (None, t) => t,
                (Some(a), b) if a == b => a,
                (Some(DataType::Int64), DataType::Float64)
                | (Some(DataType::Float64), DataType::Int64) => DataType::Float64,
                (Some(a), b) => {
                    return Err(Error::bad_input(format!(
                        "http source \"{name}\" ({}): cannot infer a type for field \"{key}\": \
                         it holds {} and {} values; declare the source's columns",
                        spec.url,
                        crate::types::pg_type_name(&a),
                        crate::types::pg_type_name(&b)
                    )));
                }
            });
        }
    }
    order.retain(|k| records.iter().any(|r| r.contains_key(k)));
    if order.is_empty() {
        return Err(Error::bad_input(format!(
            "http source \"{name}\" ({}): no records at {} to infer columns from; declare the \
             source's columns",
            spec.url, spec.records
        )));
    }
    Ok(Schema::new(
        order
            .into_iter()
            .map(|key| {
                let dt = types.remove(&key).flatten().unwrap_or(DataType::Utf8);
                Field::new(key, dt, true)
            })
            .collect::<Vec<_>>(),
    ))
}

/// A JSON value that keeps the order of object keys (serde_json's `Value` sorts them), only
/// to name inferred columns in the order the API writes its fields.
enum Ordered {
    Object(Vec<(String, Ordered)>),
    Array(Vec<Ordered>),
    Scalar,
}

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a json value")
            }
            fn visit_bool<E>(self, _: bool) -> std::result::Result<Ordered, E> {
                Ok(Ordered::Scalar)
            }
            fn visit_i64<E>(self, _: i64) -> std::result::Result<Ordered, E> {
                Ok(Ordered::Scalar)
            }
            fn visit_u64<E>(self, _: u64) -> std::result::Result<Ordered, E> {
                Ok(Ordered::Scalar)
            }
            fn visit_f64<E>(self, _: f64) -> std::result::Result<Ordered, E> {
                Ok(Ordered::Scalar)
            }
            fn visit_str<E>(self, _: &str) -> std::result::Result<Ordered, E> {
                Ok(Ordered::Scalar)
            }
            fn visit_unit<E>(self) -> std::result::Result<Ordered, E> {
                Ok(Ordered::Scalar)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Ordered, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Ordered::Array(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Ordered, A::Error> {
                let mut entries = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, Ordered>()? {
                    entries.push((key, value));
                }
                Ok(Ordered::Object(entries))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// The record fields of a body in the order they first appear (empty when the body does not
/// parse; [`parse_body`] reports why).
fn field_order(records: &RecordsPath, body: &[u8]) -> Vec<String> {
    let Ok(mut value) = serde_json::from_slice::<Ordered>(body) else {
        return Vec::new();
    };
    for key in &records.keys {
        let Ordered::Object(entries) = value else {
            return Vec::new();
        };
        let Some((_, next)) = entries.into_iter().find(|(k, _)| k == key) else {
            return Vec::new();
        };
        value = next;
    }
    let objects = match value {
        Ordered::Array(items) => items,
        object @ Ordered::Object(_) => vec![object],
        Ordered::Scalar => Vec::new(),
    };
    let mut order: Vec<String> = Vec::new();
    for object in objects {
        if let Ordered::Object(entries) = object {
            for (key, _) in entries {
                if !order.contains(&key) {
                    order.push(key);
                }
            }
        }
    }
    order
}

/// Checks each record against the columns and returns them as rows with exactly the
/// columns' keys (nested values of text columns as JSON text), ready for arrow's decoder.
fn conform(
    spec: &HttpSourceSpec,
    name: &ObjectName,
    columns: &Schema,
    records: Vec<serde_json::Map<String, Value>>,
) -> Result<Vec<serde_json::Map<String, Value>>> {
    let drift = |message: String| {
        Error::SchemaDrift(format!(
            "http source \"{name}\" ({}): schema drift: {message}",
            spec.url
        ))
    };
    if !records.is_empty() {
        for field in columns.fields() {
            if records.iter().all(|r| !r.contains_key(field.name())) {
                return Err(drift(format!(
                    "column \"{}\" is missing from every record",
                    field.name()
                )));
            }
        }
    }
    let mut rows = Vec::with_capacity(records.len());
    for (i, mut record) in records.into_iter().enumerate() {
        let mut row = serde_json::Map::with_capacity(columns.fields().len());
        for field in columns.fields() {
            let value = record.remove(field.name()).unwrap_or(Value::Null);
            let fits = match (&value, field.data_type()) {
                (Value::Null, _) => {
                    if !field.is_nullable() {
                        return Err(Error::bad_input(format!(
                            "http source \"{name}\" ({}): record {} has no value for column \
                             \"{}\", which is NOT NULL",
                            spec.url,
                            i + 1,
                            field.name()
                        )));
                    }
                    true
                }
                (Value::Number(n), dt) if dt.is_integer() => n.is_i64() || n.is_u64(),
                (Value::Number(_), dt) if dt.is_floating() || dt.is_decimal() => true,
                (Value::Bool(_), DataType::Boolean) => true,
                (Value::String(_), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => {
                    true
                }
                (Value::Array(_) | Value::Object(_), DataType::Utf8) => {
                    row.insert(field.name().clone(), Value::String(value.to_string()));
                    continue;
                }
                (
                    Value::String(_),
                    DataType::Date32 | DataType::Date64 | DataType::Timestamp(..),
                ) => true,
                (Value::String(_), dt) if dt.is_decimal() => true,
                _ => false,
            };
            if !fits {
                return Err(drift(format!(
                    "field \"{}\" of record {} is {}, but the column is {}",
                    field.name(),
                    i + 1,
                    kind_of(&value),
                    crate::types::pg_type_name(field.data_type())
                )));
            }
            row.insert(field.name().clone(), value);
        }
        rows.push(row);
    }
    Ok(rows)
}

/// The snapshot's rows as one batch of the stored schema (`columns` and `_loaded_at`).
fn to_batch(
    spec: &HttpSourceSpec,
    name: &ObjectName,
    columns: &Schema,
    rows: &[serde_json::Map<String, Value>],
    loaded_at: DateTime<Utc>,
) -> Result<RecordBatch> {
    let data_schema: SchemaRef = Arc::new(columns.clone());
    let mut decoder = datafusion::arrow::json::ReaderBuilder::new(data_schema.clone())
        .with_batch_size(rows.len().max(1))
        .build_decoder()?;
    let bad_value = |e: datafusion::arrow::error::ArrowError| {
        Error::SchemaDrift(format!(
            "http source \"{name}\" ({}): schema drift: {}",
            spec.url,
            e.to_string()
                .trim_start_matches("Json error: ")
                .trim_start_matches("Parser error: ")
        ))
    };
    decoder.serialize(rows).map_err(bad_value)?;
    let batch = decoder
        .flush()
        .map_err(bad_value)?
        .unwrap_or_else(|| RecordBatch::new_empty(data_schema.clone()));
    let loaded: ArrayRef = Arc::new(
        TimestampMicrosecondArray::from_value(loaded_at.timestamp_micros(), batch.num_rows())
            .with_timezone("UTC"),
    );
    let mut arrays = batch.columns().to_vec();
    arrays.push(loaded);
    Ok(RecordBatch::try_new(stored_schema(columns), arrays)?)
}

/// The stored schema: the source's columns, then `_loaded_at timestamptz`.
fn stored_schema(columns: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = columns
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(
        LOADED_AT,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    ));
    Arc::new(Schema::new(fields))
}

/// The source's own columns (the stored ones without `_loaded_at`).
fn data_columns(object: &CatalogObject) -> Result<Schema> {
    let stored = crate::types::schema_of_columns(&object.columns)?;
    Ok(Schema::new(
        stored
            .fields()
            .iter()
            .filter(|f| f.name() != LOADED_AT)
            .map(|f| f.as_ref().clone())
            .collect::<Vec<_>>(),
    ))
}

/// Fetches and parses one snapshot.
async fn fetch_snapshot(
    engine: &EngineInner,
    spec: &HttpSourceSpec,
    name: &ObjectName,
) -> Result<(Snapshot, bytes::Bytes)> {
    let headers = request_headers(engine, spec)?;
    let body = fetch(spec, &headers, name).await?;
    let hash = body_hash(&body);
    let records = parse_body(spec, name, &body)?;
    Ok((Snapshot { hash, records }, body))
}

/// Appends a snapshot's rows in one commit recording the body's hash; returns the table.
async fn commit_snapshot(
    table: deltalake::DeltaTable,
    batch: RecordBatch,
    hash: &str,
    run_id: i64,
) -> Result<deltalake::DeltaTable> {
    let mut metadata = serde_json::Map::new();
    metadata.insert(BODY_HASH_KEY.into(), Value::String(hash.to_string()));
    // Lets start-up recovery tell which run a snapshot that landed belongs to.
    metadata.insert(delta::RUN_ID_KEY.into(), Value::from(run_id));
    Ok(table
        .write(vec![batch])
        .with_save_mode(SaveMode::Append)
        .with_commit_properties(delta::commit_properties(metadata))
        .await?)
}

/// The body hash the latest snapshot commit recorded. Housekeeping commits (compaction)
/// carry none, so the recent history is read back to the newest commit that has one (a
/// compaction needs many snapshots, so a few commits back is always enough).
async fn last_hash(table: &deltalake::DeltaTable) -> Result<Option<String>> {
    use futures::TryStreamExt;
    let infos: Vec<_> = table.history(Some(64)).try_collect().await?;
    // Newest first; version 0 (the empty table) has no hash either.
    Ok(infos.iter().find_map(|info| {
        info.info
            .get(BODY_HASH_KEY)
            .and_then(Value::as_str)
            .map(str::to_string)
    }))
}

/// `CREATE SOURCE name [(columns)] FROM HTTP 'url' FORMAT JSON [WITH (...)]`: checks the
/// options, polls once, and stores the source with that first snapshot. A failed first poll
/// fails the statement and stores nothing.
pub async fn create(
    session: &mut Session,
    name: ObjectName,
    source: CreateSource,
    text: &str,
) -> Result<Output> {
    let mut options = source.options.clone();
    options.insert(CONNECTOR_KEY.into(), "http".into());
    options.insert("url".into(), source.path.clone());
    options.insert("format".into(), source.format.as_str().into());
    let spec = HttpSourceSpec::from_options(&options)?;
    crate::schedule::max_staleness(&options)?;
    let engine = session.engine.inner.clone();
    let declared = declared_columns(&source.columns)?;
    let (snapshot, body) = fetch_snapshot(&engine, &spec, &name).await?;
    let columns = match declared {
        Some(columns) => columns,
        None => {
            let order = field_order(&spec.records, &body);
            infer_schema(&spec, &name, &snapshot.records, &order)?
        }
    };
    if columns.field_with_name(LOADED_AT).is_ok() {
        return Err(Error::bad_input(format!(
            "http source \"{name}\": column \"{LOADED_AT}\" is added by tributary and cannot be \
             a column of the source"
        )));
    }
    let loaded_at = Utc::now();
    let rows = conform(&spec, &name, &columns, snapshot.records)?;
    let batch = to_batch(&spec, &name, &columns, &rows, loaded_at)?;
    let stored = stored_schema(&columns);
    let id = uuid::Uuid::new_v4().simple().to_string();
    let location = format!("{}/{}-{}", name.schema, name.name, &id[..12]);
    let table = engine
        .warehouse
        .create(&location, &name.name, &stored)
        .await?;
    let description = options.get("description").cloned();
    let object = engine.catalog.create_object(
        &NewObject {
            name: name.clone(),
            kind: ObjectKind::Source,
            sql: text.to_string(),
            query: None,
            default_schema: None,
            options,
            columns: crate::types::columns_of_schema(&stored),
            location: Some(location.clone()),
            comment: description,
        },
        &[],
    );
    let object = match object {
        Ok(o) => o,
        Err(e) => {
            let _ = engine.warehouse.remove(&location);
            return Err(e.into());
        }
    };
    let run_id = engine.catalog.start_run(&object, "create")?;
    let written = async {
        let rows = batch.num_rows() as i64;
        let table = commit_snapshot(table, batch, &snapshot.hash, run_id).await?;
        let version = engine.publish(&object, table)?;
        Ok::<_, Error>((rows, version))
    }
    .await;
    match written {
        Ok((rows, version)) => {
            engine.catalog.finish_run(
                run_id,
                &RunOutcome {
                    status: Some(RunStatus::Succeeded),
                    strategy: Some("append".into()),
                    reason: Some("first poll".into()),
                    rows_written: Some(rows),
                    delta_version: Some(version),
                    ..Default::default()
                },
            )?;
            Ok(Output::Command("CREATE SOURCE".into()))
        }
        Err(e) => {
            engine.catalog.drop_objects(&[object.id])?;
            engine.forget(object.id);
            let _ = engine.warehouse.remove(&location);
            Err(e)
        }
    }
}

fn declared_columns(columns: &[ast::ColumnDef]) -> Result<Option<Schema>> {
    if columns.is_empty() {
        return Ok(None);
    }
    let fields = columns
        .iter()
        .map(|c| {
            let not_null = c
                .options
                .iter()
                .any(|o| matches!(o.option, ast::ColumnOption::NotNull));
            Ok(Field::new(
                crate::names::ident(&c.name),
                crate::types::arrow_type(&c.data_type)?,
                !not_null,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(Schema::new(fields)))
}

/// What one poll did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Polled {
    /// A new snapshot of this many rows, at this Delta version.
    Appended { rows: i64, version: i64 },
    /// The body equals the last snapshot's: nothing appended.
    Unchanged,
}

/// `REFRESH SOURCE name`: polls an HTTP source now.
pub async fn refresh_statement(session: &mut Session, name: &ast::ObjectName) -> Result<Output> {
    let object = session.resolve(name, "source")?;
    if !is_http(&object) {
        return Err(Error::WrongObjectType(format!(
            "\"{}\" is not an http source (only http sources are polled; file sources are \
             read in place)",
            object.name
        )));
    }
    poll(&session.engine, &object, "manual").await?;
    Ok(Output::Command("REFRESH SOURCE".into()))
}

/// Polls an HTTP source once: fetches (with retries), and appends a snapshot when the body is
/// new. Recorded as a run of the source; a failure leaves the last good snapshot served.
pub async fn poll(engine: &Engine, object: &CatalogObject, trigger: &str) -> Result<Polled> {
    let inner = &engine.inner;
    let lock = inner.write_lock(object.id);
    let _guard = lock.lock().await;
    let object = inner
        .catalog
        .object_by_id(object.id)?
        .ok_or_else(|| Error::UndefinedObject {
            kind: "source",
            name: object.name.to_string(),
        })?;
    let run_id = inner.catalog.start_run(&object, trigger)?;
    let result = poll_locked(inner, &object, run_id).await;
    let outcome = match &result {
        Ok(Polled::Appended { rows, version }) => RunOutcome {
            status: Some(RunStatus::Succeeded),
            strategy: Some("append".into()),
            reason: Some("new response body".into()),
            rows_written: Some(*rows),
            delta_version: Some(*version),
            ..Default::default()
        },
        Ok(Polled::Unchanged) => RunOutcome {
            status: Some(RunStatus::Succeeded),
            strategy: Some("unchanged".into()),
            reason: Some("the response body equals the last snapshot's".into()),
            rows_written: Some(0),
            delta_version: object.published_version,
            ..Default::default()
        },
        Err(e) => RunOutcome {
            status: Some(RunStatus::Failed),
            error: Some(e.to_string()),
            ..Default::default()
        },
    };
    inner.catalog.finish_run(run_id, &outcome)?;
    match &result {
        Ok(polled) => tracing::info!(source = %object.name, ?polled, "http source polled"),
        Err(e) => tracing::warn!(source = %object.name, error = %e, "http source poll failed"),
    }
    result
}

async fn poll_locked(engine: &EngineInner, object: &CatalogObject, run_id: i64) -> Result<Polled> {
    let spec = HttpSourceSpec::from_options(&object.options)?;
    let columns = data_columns(object)?;
    let headers = request_headers(engine, &spec)?;
    let body = fetch(&spec, &headers, &object.name).await?;
    let hash = body_hash(&body);
    let table = delta::latest(engine.published_table(object).await?).await?;
    // A snapshot committed but never published (the server stopped in between) is published
    // now, whatever this poll brings.
    if delta::version(&table) != object.published_version.unwrap_or(-1) {
        engine.publish(object, table.clone())?;
    }
    // An unchanged body is not even parsed.
    if last_hash(&table).await?.as_deref() == Some(hash.as_str()) {
        return Ok(Polled::Unchanged);
    }
    let records = parse_body(&spec, &object.name, &body)?;
    drop(body);
    let rows = conform(&spec, &object.name, &columns, records)?;
    let batch = to_batch(&spec, &object.name, &columns, &rows, Utc::now())?;
    let count = batch.num_rows() as i64;
    let table = commit_snapshot(table, batch, &hash, run_id).await?;
    let version = engine.publish(object, table)?;
    Ok(Polled::Appended {
        rows: count,
        version,
    })
}

/// Whether a source polled every `every` is due at `now`, given when its last poll started
/// (or when it was created, before any poll).
pub fn poll_due(
    every: Duration,
    last_started: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> bool {
    let since = last_started.unwrap_or(created_at);
    match chrono::Duration::from_std(every) {
        Ok(every) => now >= since + every,
        Err(_) => false,
    }
}

/// The HTTP sources whose `poll` interval has passed at `now` (the scheduler's question).
pub fn due_sources(engine: &Engine, now: DateTime<Utc>) -> Result<Vec<CatalogObject>> {
    let catalog = engine.catalog();
    let mut due = Vec::new();
    for object in catalog.objects()? {
        if !is_http(&object) {
            continue;
        }
        let Ok(spec) = HttpSourceSpec::from_options(&object.options) else {
            continue;
        };
        let Some(every) = spec.poll else {
            continue;
        };
        let last = catalog.latest_runs(object.id, 1)?;
        if last.iter().any(|r| r.status == RunStatus::Running) {
            continue;
        }
        let parse = |t: &str| DateTime::parse_from_rfc3339(t).ok().map(|t| t.to_utc());
        let last_started = last.last().and_then(|r| parse(&r.started_at));
        let created_at = parse(&object.created_at).unwrap_or(now);
        if poll_due(every, last_started, created_at, now) {
            due.push(object);
        }
    }
    Ok(due)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        map.insert("url".into(), "http://127.0.0.1:1/x".into());
        map
    }

    fn name() -> ObjectName {
        ObjectName::new("raw", "fx")
    }

    #[test]
    fn records_paths() {
        let body = json!({"data": {"rates": [{"c": "EUR"}, {"c": "GBP"}]}, "one": {"c": "X"}});
        let get = |path: &str| RecordsPath::parse(path).unwrap().records(body.clone());
        assert_eq!(get("$.data.rates[*]").unwrap().len(), 2);
        assert_eq!(get("$.data.rates").unwrap().len(), 2);
        assert_eq!(get("$.one").unwrap()[0]["c"], "X");
        assert_eq!(get("$").unwrap().len(), 1);
        assert!(get("$.one[*]").unwrap_err().contains("not an array"));
        assert!(
            get("$.data.missing")
                .unwrap_err()
                .contains("no key \"missing\"")
        );
        let top = RecordsPath::parse("$[*]").unwrap();
        assert_eq!(top.records(json!([{"a": 1}, {"a": 2}])).unwrap().len(), 2);
        assert!(
            top.records(json!([1]))
                .unwrap_err()
                .contains("record 1 is an integer")
        );
        for bad in ["rates", "$..a", "$.a[0]", "$.a[*].b", "$.", "$.*"] {
            assert!(RecordsPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn options_are_checked() {
        let spec = HttpSourceSpec::from_options(&options(&[
            ("records", "$.rates[*]"),
            ("poll", "1 hour"),
            ("timeout", "10 seconds"),
            ("retries", "3"),
        ]))
        .unwrap();
        assert_eq!(spec.poll, Some(Duration::from_secs(3600)));
        assert_eq!(spec.timeout, Duration::from_secs(10));
        assert_eq!(spec.retries, 3);
        for (key, value) in [
            ("retries", "many"),
            ("timeout", "0"),
            ("poll", "10ms"),
            ("records", "rates"),
            ("header", "x"),
        ] {
            match HttpSourceSpec::from_options(&options(&[(key, value)])).unwrap_err() {
                Error::InvalidOption { option, .. } => assert_eq!(option, key),
                other => panic!("{key}: {other}"),
            }
        }
        let mut ftp = options(&[]);
        ftp.insert("url".into(), "ftp://x/".into());
        assert!(HttpSourceSpec::from_options(&ftp).is_err());
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        let spec = HttpSourceSpec::from_options(&options(&[("retry_delay", "100ms")])).unwrap();
        assert_eq!(spec.backoff(1), Duration::from_millis(100));
        assert_eq!(spec.backoff(2), Duration::from_millis(200));
        assert_eq!(spec.backoff(3), Duration::from_millis(400));
        assert_eq!(spec.backoff(40), MAX_BACKOFF);
    }

    #[test]
    fn headers_from_json_or_lines_never_quote_the_value() {
        let h = parse_headers("s", r#"{"Authorization": "Bearer abc", "X-Key": "1"}"#).unwrap();
        assert_eq!(h.len(), 2);
        let h = parse_headers("s", "Authorization: Bearer abc\n\nX-Key: 1\n").unwrap();
        assert_eq!(h[0], ("Authorization".into(), "Bearer abc".into()));
        let e = parse_headers("s", "Bearer topsecret")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("topsecret"), "{e}");
        let e = parse_headers("s", r#"{"A": 1}"#).unwrap_err().to_string();
        assert!(e.contains("header \"A\""), "{e}");
    }

    #[test]
    fn inference_and_drift() {
        let spec = HttpSourceSpec::from_options(&options(&[])).unwrap();
        let records = |v: Value| RecordsPath::parse("$[*]").unwrap().records(v).unwrap();
        let body = r#"[
            {"code": "EUR", "rate": 1, "live": true, "meta": {"src": "ecb"}},
            {"code": "GBP", "rate": 0.8, "live": null, "zeta": null}
        ]"#;
        let path = RecordsPath::parse("$[*]").unwrap();
        let order = field_order(&path, body.as_bytes());
        assert_eq!(order, ["code", "rate", "live", "meta", "zeta"]);
        let first = records(serde_json::from_str(body).unwrap());
        let schema = infer_schema(&spec, &name(), &first, &order).unwrap();
        assert_eq!(schema.field(4).name(), "zeta");
        let schema = Schema::new(schema.fields()[..4].to_vec());
        let types: Vec<_> = schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        assert_eq!(
            types,
            [
                DataType::Utf8,
                DataType::Float64,
                DataType::Boolean,
                DataType::Utf8
            ]
        );
        let rows = conform(&spec, &name(), &schema, first).unwrap();
        assert_eq!(rows[0]["meta"], json!(r#"{"src":"ecb"}"#));
        let batch = to_batch(&spec, &name(), &schema, &rows, Utc::now()).unwrap();
        assert_eq!((batch.num_rows(), batch.num_columns()), (2, 5));
        // A field that changed type, and a column gone from every record.
        let changed = records(json!([{"code": "EUR", "rate": "1.1", "live": true, "meta": null}]));
        let e = conform(&spec, &name(), &schema, changed).unwrap_err();
        assert!(matches!(e, Error::SchemaDrift(_)));
        assert!(
            e.to_string()
                .contains("field \"rate\" of record 1 is a string"),
            "{e}"
        );
        let gone = records(json!([{"code": "EUR", "live": true, "meta": null}]));
        let e = conform(&spec, &name(), &schema, gone)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("column \"rate\" is missing from every record"),
            "{e}"
        );
        assert!(e.contains("http://127.0.0.1:1/x"), "{e}");
        let mixed = records(json!([{"a": 1}, {"a": "x"}]));
        assert!(infer_schema(&spec, &name(), &mixed, &[]).is_err());
    }

    #[test]
    fn polls_fall_due_by_their_interval() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        let created = t("2026-11-30T00:00:00Z");
        let every = Duration::from_secs(3600);
        assert!(!poll_due(every, None, created, t("2026-11-30T00:59:59Z")));
        assert!(poll_due(every, None, created, t("2026-11-30T01:00:00Z")));
        let last = Some(t("2026-11-30T01:00:00Z"));
        assert!(!poll_due(every, last, created, t("2026-11-30T01:30:00Z")));
        assert!(poll_due(every, last, created, t("2026-11-30T02:00:00Z")));
    }
}
