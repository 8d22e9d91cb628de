//! Decoding one column of PostgreSQL's binary COPY format into an Arrow array builder:
//! integers, floats, booleans, text, dates, timestamps and `numeric` (base-10000 digits into
//! a 128-bit decimal).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder, Float64Builder,
    Int16Builder, Int32Builder, Int64Builder, StringBuilder,
};
use datafusion::arrow::datatypes::{
    DataType, Field, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use tokio_postgres::types::Type;

use super::{PG_EPOCH_DAYS, PG_EPOCH_MICROS};

/// One result column: the Arrow builder it decodes into.
pub(super) enum Column {
    Boolean(BooleanBuilder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Decimal {
        builder: Decimal128Builder,
        precision: u8,
        scale: i8,
    },
    Utf8(StringBuilder),
    Date32(Date32Builder),
    /// Microseconds since 1970 until the batch is built in the field's unit and zone.
    Timestamp {
        micros: Int64Builder,
        unit: TimeUnit,
        zone: Option<Arc<str>>,
    },
}

impl Column {
    /// The builder for a PostgreSQL type read into an Arrow field, or `None` when this module
    /// does not decode that pair.
    pub(super) fn new(pg: &Type, field: &Field) -> Option<Self> {
        let text = [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME];
        Some(match field.data_type() {
            DataType::Boolean if *pg == Type::BOOL => Column::Boolean(BooleanBuilder::new()),
            DataType::Int16 if *pg == Type::INT2 => Column::Int16(Int16Builder::new()),
            DataType::Int32 if [Type::INT2, Type::INT4].contains(pg) => {
                Column::Int32(Int32Builder::new())
            }
            DataType::Int64 if [Type::INT2, Type::INT4, Type::INT8].contains(pg) => {
                Column::Int64(Int64Builder::new())
            }
            DataType::Float32 if *pg == Type::FLOAT4 => Column::Float32(Float32Builder::new()),
            DataType::Float64 if [Type::FLOAT4, Type::FLOAT8].contains(pg) => {
                Column::Float64(Float64Builder::new())
            }
            DataType::Decimal128(precision, scale) if *pg == Type::NUMERIC => Column::Decimal {
                builder: Decimal128Builder::new(),
                precision: *precision,
                scale: *scale,
            },
            DataType::Utf8 if text.contains(pg) => Column::Utf8(StringBuilder::new()),
            DataType::Date32 if *pg == Type::DATE => Column::Date32(Date32Builder::new()),
            DataType::Timestamp(unit, zone)
                if (*pg == Type::TIMESTAMP && zone.is_none())
                    || (*pg == Type::TIMESTAMPTZ && zone.is_some()) =>
            {
                Column::Timestamp {
                    micros: Int64Builder::new(),
                    unit: *unit,
                    zone: zone.clone(),
                }
            }
            _ => return None,
        })
    }

    pub(super) fn append_null(&mut self) {
        match self {
            Column::Boolean(b) => b.append_null(),
            Column::Int16(b) => b.append_null(),
            Column::Int32(b) => b.append_null(),
            Column::Int64(b) => b.append_null(),
            Column::Float32(b) => b.append_null(),
            Column::Float64(b) => b.append_null(),
            Column::Decimal { builder, .. } => builder.append_null(),
            Column::Utf8(b) => b.append_null(),
            Column::Date32(b) => b.append_null(),
            Column::Timestamp { micros, .. } => micros.append_null(),
        }
    }

    /// Decodes one value in PostgreSQL's binary format.
    pub(super) fn append(&mut self, value: &[u8]) -> std::result::Result<(), String> {
        match self {
            Column::Boolean(b) => b.append_value(fixed::<1>(value)?[0] != 0),
            Column::Int16(b) => b.append_value(i16::from_be_bytes(fixed(value)?)),
            Column::Int32(b) => b.append_value(int(value)? as i32),
            Column::Int64(b) => b.append_value(int(value)?),
            Column::Float32(b) => b.append_value(f32::from_be_bytes(fixed(value)?)),
            Column::Float64(b) => b.append_value(match value.len() {
                4 => f32::from_be_bytes(fixed(value)?) as f64,
                _ => f64::from_be_bytes(fixed(value)?),
            }),
            Column::Decimal {
                builder,
                precision,
                scale,
            } => builder.append_value(numeric(value, *precision, *scale)?),
            Column::Utf8(b) => b.append_value(
                std::str::from_utf8(value).map_err(|_| "text is not valid UTF-8".to_string())?,
            ),
            Column::Date32(b) => {
                let days = i32::from_be_bytes(fixed(value)?);
                if days == i32::MAX || days == i32::MIN {
                    return Err("date infinity has no Arrow form".into());
                }
                b.append_value(days + PG_EPOCH_DAYS)
            }
            Column::Timestamp { micros, .. } => {
                let since_2000 = i64::from_be_bytes(fixed(value)?);
                if since_2000 == i64::MAX || since_2000 == i64::MIN {
                    return Err("timestamp infinity has no Arrow form".into());
                }
                micros.append_value(since_2000 + PG_EPOCH_MICROS)
            }
        }
        Ok(())
    }

    pub(super) fn finish(&mut self) -> std::result::Result<ArrayRef, String> {
        Ok(match self {
            Column::Boolean(b) => Arc::new(b.finish()),
            Column::Int16(b) => Arc::new(b.finish()),
            Column::Int32(b) => Arc::new(b.finish()),
            Column::Int64(b) => Arc::new(b.finish()),
            Column::Float32(b) => Arc::new(b.finish()),
            Column::Float64(b) => Arc::new(b.finish()),
            Column::Decimal {
                builder,
                precision,
                scale,
            } => Arc::new(
                builder
                    .finish()
                    .with_precision_and_scale(*precision, *scale)
                    .map_err(|e| e.to_string())?,
            ),
            Column::Utf8(b) => Arc::new(b.finish()),
            Column::Date32(b) => Arc::new(b.finish()),
            Column::Timestamp { micros, unit, zone } => {
                let micros = micros.finish();
                let zone = zone.clone();
                match unit {
                    TimeUnit::Microsecond => Arc::new(
                        micros
                            .reinterpret_cast::<TimestampMicrosecondType>()
                            .with_timezone_opt(zone),
                    ),
                    TimeUnit::Millisecond => Arc::new(
                        micros
                            .unary::<_, TimestampMillisecondType>(|v| v.div_euclid(1_000))
                            .with_timezone_opt(zone),
                    ),
                    TimeUnit::Second => Arc::new(
                        micros
                            .unary::<_, TimestampSecondType>(|v| v.div_euclid(1_000_000))
                            .with_timezone_opt(zone),
                    ),
                    TimeUnit::Nanosecond => Arc::new(
                        micros
                            .try_unary::<_, TimestampNanosecondType, _>(|v| {
                                v.checked_mul(1_000).ok_or_else(|| {
                                    datafusion::arrow::error::ArrowError::ComputeError(format!(
                                        "timestamp {v} µs is out of range for nanoseconds"
                                    ))
                                })
                            })
                            .map_err(|e| e.to_string())?
                            .with_timezone_opt(zone),
                    ),
                }
            }
        })
    }
}

fn fixed<const N: usize>(value: &[u8]) -> std::result::Result<[u8; N], String> {
    value
        .try_into()
        .map_err(|_| format!("expected {N} bytes, got {}", value.len()))
}

/// An integer of any of PostgreSQL's widths (int2, int4, int8).
fn int(value: &[u8]) -> std::result::Result<i64, String> {
    Ok(match value.len() {
        2 => i16::from_be_bytes(fixed(value)?) as i64,
        4 => i32::from_be_bytes(fixed(value)?) as i64,
        _ => i64::from_be_bytes(fixed(value)?),
    })
}

/// A `numeric` in PostgreSQL's binary form (digit count, weight, sign, display scale, then
/// base-10000 digits) as a decimal of `scale` and `precision`, rounding half away from zero
/// when it has more fractional digits, as PostgreSQL's own casts do.
pub(super) fn numeric(value: &[u8], precision: u8, scale: i8) -> std::result::Result<i128, String> {
    let word = |i: usize| -> std::result::Result<i16, String> {
        value
            .get(i * 2..i * 2 + 2)
            .map(|b| i16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated numeric".to_string())
    };
    let ndigits = word(0)? as i64;
    let weight = word(1)? as i64;
    let sign = word(2)? as u16;
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Err("numeric NaN has no decimal form".into()),
        _ => return Err("numeric infinity has no decimal form".into()),
    }
    let out_of_range = || format!("numeric value out of range for decimal({precision},{scale})");
    // digits, read as one integer, are the value times 10^exponent.
    let mut digits: i128 = 0;
    for i in 0..ndigits as usize {
        let digit = word(4 + i)? as i128;
        digits = digits
            .checked_mul(10_000)
            .and_then(|d| d.checked_add(digit))
            .ok_or_else(out_of_range)?;
    }
    let exponent = 4 * (ndigits - 1 - weight);
    let shift = scale as i64 - exponent;
    let mut scaled = if shift >= 0 {
        10i128
            .checked_pow(shift as u32)
            .and_then(|p| digits.checked_mul(p))
            .ok_or_else(out_of_range)?
    } else if -shift > 38 {
        0
    } else {
        let divisor = 10i128.pow((-shift) as u32);
        let (quotient, remainder) = (digits / divisor, digits % divisor);
        quotient + i128::from(remainder >= divisor - remainder)
    };
    if sign == 0x4000 {
        scaled = -scaled;
    }
    if scaled.unsigned_abs() >= 10u128.pow(precision as u32) {
        return Err(out_of_range());
    }
    Ok(scaled)
}
