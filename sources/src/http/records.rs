//! Records of an HTTP source's JSON body.
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

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{ArrayRef, RecordBatch, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde_json::Value;
use tributary_catalog::ObjectName;

use super::{HttpSourceSpec, stored_schema};
use tributary_sql::error::{Error, Result};

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

pub(super) fn kind_of(value: &Value) -> &'static str {
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

/// A fetched body, parsed into records.
pub(super) struct Snapshot {
    pub(super) hash: String,
    pub(super) records: Vec<serde_json::Map<String, Value>>,
}

pub(super) fn body_hash(body: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(super) fn parse_body(
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
pub(super) fn body_preview(body: &[u8]) -> String {
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
pub(super) fn infer_schema(
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
                        tributary_sql::types::pg_type_name(&a),
                        tributary_sql::types::pg_type_name(&b)
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
pub(super) enum Ordered {
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
pub(super) fn field_order(records: &RecordsPath, body: &[u8]) -> Vec<String> {
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
pub(super) fn conform(
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
                    tributary_sql::types::pg_type_name(field.data_type())
                )));
            }
            row.insert(field.name().clone(), value);
        }
        rows.push(row);
    }
    Ok(rows)
}

/// The snapshot's rows as one batch of the stored schema (`columns` and `_loaded_at`).
pub(super) fn to_batch(
    spec: &HttpSourceSpec,
    name: &ObjectName,
    columns: &Schema,
    rows: &[serde_json::Map<String, Value>],
    loaded_at: DateTime<Utc>,
) -> Result<RecordBatch> {
    let data_schema: SchemaRef = Arc::new(columns.clone());
    let mut decoder = datafusion::arrow::json::ReaderBuilder::new(Arc::clone(&data_schema))
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
        .unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(&data_schema)));
    let loaded: ArrayRef = Arc::new(
        TimestampMicrosecondArray::from_value(loaded_at.timestamp_micros(), batch.num_rows())
            .with_timezone("UTC"),
    );
    let mut arrays = batch.columns().to_vec();
    arrays.push(loaded);
    Ok(RecordBatch::try_new(stored_schema(columns), arrays)?)
}
