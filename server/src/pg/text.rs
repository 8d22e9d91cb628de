//! PostgreSQL's text output for the types where arrow-pg's differs: timestamps print only the
//! fractional seconds they have (`10:00:00+00`, not `10:00:00.000000+00`) and floats print
//! PostgreSQL's shortest form (`5`, `1e+21`, `NaN`, `Infinity`). Applied to text-format
//! columns only; binary results are untouched.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::datatypes::{
    DataType, Field, Float32Type, Float64Type, Schema, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use datafusion::arrow::record_batch::RecordBatch;
use pgwire::api::portal::Format;

/// Whether a column of this type is re-rendered for text output.
fn rendered(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Timestamp(_, _) | DataType::Float32 | DataType::Float64
    )
}

/// The batch with text-format timestamp and float columns rendered as PostgreSQL text.
pub(super) fn render(batch: RecordBatch, format: &Format) -> RecordBatch {
    let schema = batch.schema();
    if !schema
        .fields()
        .iter()
        .enumerate()
        .any(|(i, f)| rendered(f.data_type()) && format.is_text(i))
    {
        return batch;
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (i, (field, column)) in schema.fields().iter().zip(batch.columns()).enumerate() {
        match (format.is_text(i), render_column(column)) {
            (true, Some(text)) => {
                fields.push(Arc::new(Field::new(field.name(), DataType::Utf8, true)));
                columns.push(text);
            }
            _ => {
                fields.push(Arc::clone(field));
                columns.push(Arc::clone(column));
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap_or(batch)
}

fn render_column(column: &ArrayRef) -> Option<ArrayRef> {
    let mut out = StringBuilder::with_capacity(column.len(), column.len() * 16);
    match column.data_type() {
        DataType::Float64 => {
            for v in column.as_primitive::<Float64Type>().iter() {
                out.append_option(v.map(float8));
            }
        }
        DataType::Float32 => {
            for v in column.as_primitive::<Float32Type>().iter() {
                out.append_option(v.map(|v| float8(f64::from(v))));
            }
        }
        DataType::Timestamp(unit, tz) => {
            let micros: Vec<Option<i64>> = match unit {
                TimeUnit::Second => column
                    .as_primitive::<TimestampSecondType>()
                    .iter()
                    .map(|v| v.map(|v| v * 1_000_000))
                    .collect(),
                TimeUnit::Millisecond => column
                    .as_primitive::<TimestampMillisecondType>()
                    .iter()
                    .map(|v| v.map(|v| v * 1_000))
                    .collect(),
                TimeUnit::Microsecond => column
                    .as_primitive::<TimestampMicrosecondType>()
                    .iter()
                    .collect(),
                TimeUnit::Nanosecond => column
                    .as_primitive::<TimestampNanosecondType>()
                    .iter()
                    .map(|v| v.map(|v| v.div_euclid(1_000)))
                    .collect(),
            };
            for v in micros {
                out.append_option(v.and_then(|v| timestamp(v, tz.is_some())));
            }
        }
        _ => return None,
    }
    Some(Arc::new(out.finish()))
}

/// `float8` output as PostgreSQL 12+ prints it (shortest exact form).
pub(super) fn float8(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let abs = v.abs();
    if abs != 0.0 && !(1e-4..1e15).contains(&abs) {
        let text = format!("{v:e}");
        let Some((mantissa, exponent)) = text.split_once('e') else {
            return text;
        };
        let (sign, digits) = match exponent.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exponent),
        };
        return format!("{mantissa}e{sign}{digits:0>2}");
    }
    format!("{v}")
}

/// A timestamp in microseconds as PostgreSQL prints it in ISO style (UTC for timestamptz).
pub(super) fn timestamp(micros: i64, with_zone: bool) -> Option<String> {
    use chrono::{Datelike, Timelike};
    use std::fmt::Write;
    let t = chrono::DateTime::from_timestamp_micros(micros)?.naive_utc();
    // Written field by field: `format` parses its pattern again for every value.
    let mut text = String::with_capacity(32);
    if (1..=9999).contains(&t.year()) {
        let _ = write!(
            text,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
    } else {
        text = t.format("%Y-%m-%d %H:%M:%S").to_string();
    }
    let fraction = micros.rem_euclid(1_000_000);
    if fraction != 0 {
        let digits = format!("{fraction:06}");
        text.push('.');
        text.push_str(digits.trim_end_matches('0'));
    }
    if with_zone {
        text.push_str("+00");
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_postgres() {
        assert_eq!(float8(5.0), "5");
        assert_eq!(float8(10.5), "10.5");
        assert_eq!(float8(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(float8(1e21), "1e+21");
        assert_eq!(float8(1.5e-7), "1.5e-07");
        assert_eq!(float8(-0.0001), "-0.0001");
        assert_eq!(float8(f64::NAN), "NaN");
        assert_eq!(float8(f64::NEG_INFINITY), "-Infinity");
    }

    #[test]
    fn timestamps_print_like_postgres() {
        assert_eq!(timestamp(0, true).unwrap(), "1970-01-01 00:00:00+00");
        assert_eq!(
            timestamp(1_500_000, false).unwrap(),
            "1970-01-01 00:00:01.5"
        );
        assert_eq!(
            timestamp(-1, true).unwrap(),
            "1969-12-31 23:59:59.999999+00"
        );
    }
}
