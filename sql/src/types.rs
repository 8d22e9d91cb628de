//! Mapping between PostgreSQL's type names (what users declare and what clients are told) and
//! the Arrow types DataFusion and Delta store. Delta has no unsigned or view types, so stored
//! data is normalised through [`storage_type`].

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::sql::sqlparser::ast::{self, ExactNumberInfo, TimezoneInfo};

use crate::error::{Error, Result};

/// Precision and scale used for `NUMERIC` without a declared precision.
pub const DEFAULT_NUMERIC: (u8, i8) = (38, 10);

/// The Arrow type for a declared SQL type.
pub fn arrow_type(sql: &ast::DataType) -> Result<DataType> {
    use ast::DataType as S;
    Ok(match sql {
        S::SmallInt(_) | S::Int2(_) => DataType::Int16,
        S::Int(_) | S::Integer(_) | S::Int4(_) => DataType::Int32,
        S::BigInt(_) | S::Int8(_) => DataType::Int64,
        S::Real | S::Float4 => DataType::Float32,
        S::Double(_) | S::DoublePrecision | S::Float8 => DataType::Float64,
        S::Float(info) => match info {
            ast::ExactNumberInfo::Precision(p) if *p <= 24 => DataType::Float32,
            _ => DataType::Float64,
        },
        S::Numeric(info) | S::Decimal(info) | S::Dec(info) => match info {
            ExactNumberInfo::None => DataType::Decimal128(DEFAULT_NUMERIC.0, DEFAULT_NUMERIC.1),
            ExactNumberInfo::Precision(p) => DataType::Decimal128(precision(*p)?, 0),
            ExactNumberInfo::PrecisionAndScale(p, s) => {
                DataType::Decimal128(precision(*p)?, *s as i8)
            }
        },
        S::Boolean | S::Bool => DataType::Boolean,
        S::Text
        | S::String(_)
        | S::Varchar(_)
        | S::CharacterVarying(_)
        | S::Char(_)
        | S::Character(_)
        | S::Uuid => DataType::Utf8,
        S::Bytea => DataType::Binary,
        S::Date => DataType::Date32,
        S::Timestamp(_, tz) => match tz {
            TimezoneInfo::Tz | TimezoneInfo::WithTimeZone => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            }
            _ => DataType::Timestamp(TimeUnit::Microsecond, None),
        },
        S::Custom(name, args) if args.is_empty() => {
            match name.to_string().to_lowercase().as_str() {
                "timestamptz" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                "int8" => DataType::Int64,
                "int4" => DataType::Int32,
                "int2" => DataType::Int16,
                "float8" => DataType::Float64,
                "float4" => DataType::Float32,
                other => return Err(Error::NotSupported(format!("type \"{other}\""))),
            }
        }
        other => return Err(Error::NotSupported(format!("type \"{other}\""))),
    })
}

fn precision(p: u64) -> Result<u8> {
    if (1..=38).contains(&p) {
        Ok(p as u8)
    } else {
        Err(Error::bad_input(format!(
            "numeric precision {p} must be between 1 and 38"
        )))
    }
}

/// The PostgreSQL name of an Arrow type, as `format_type` would print it.
pub fn pg_type_name(dt: &DataType) -> String {
    match dt {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "integer".into(),
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "bigint".into(),
        DataType::Float16 | DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => format!("numeric({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Timestamp(_, None) => "timestamp without time zone".into(),
        DataType::Timestamp(_, Some(_)) => "timestamp with time zone".into(),
        DataType::Time32(_) | DataType::Time64(_) => "time without time zone".into(),
        DataType::Interval(_) | DataType::Duration(_) => "interval".into(),
        DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) => {
            format!("{}[]", pg_type_name(f.data_type()))
        }
        DataType::Struct(_) | DataType::Map(_, _) => "json".into(),
        DataType::Null => "text".into(),
        other => other.to_string().to_lowercase(),
    }
}

/// The type a column is stored with in Delta: Delta has no view, unsigned or 16-bit float
/// types, and stores timestamps in microseconds (with UTC for `timestamptz`).
pub fn storage_type(dt: &DataType) -> DataType {
    match dt {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        DataType::UInt8 => DataType::Int16,
        DataType::UInt16 => DataType::Int32,
        DataType::UInt32 | DataType::UInt64 => DataType::Int64,
        DataType::Float16 => DataType::Float32,
        DataType::Date64 => DataType::Date32,
        DataType::Null => DataType::Utf8,
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) => DataType::Decimal128(*p, *s),
        DataType::Timestamp(_, tz) => {
            DataType::Timestamp(TimeUnit::Microsecond, tz.as_ref().map(|_| Arc::from("UTC")))
        }
        DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) => {
            DataType::List(Arc::new(storage_field(f)))
        }
        DataType::Struct(fields) => {
            DataType::Struct(fields.iter().map(|f| Arc::new(storage_field(f))).collect())
        }
        other => other.clone(),
    }
}

fn storage_field(f: &Field) -> Field {
    Field::new(f.name(), storage_type(f.data_type()), f.is_nullable())
}

/// The schema a query result is stored with (see [`storage_type`]).
pub fn storage_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| storage_field(f))
            .collect::<Vec<_>>(),
    ))
}

/// Parses a PostgreSQL type name as stored in the catalog (`numeric(18,2)`, `text`, ...).
pub fn parse_type_name(name: &str) -> Result<DataType> {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    let dialect = PostgreSqlDialect {};
    let mut parser = Parser::new(&dialect).try_with_sql(name)?;
    let sql_type = parser.parse_data_type()?;
    arrow_type(&sql_type)
}

/// The Arrow schema of catalog columns.
pub fn schema_of_columns(columns: &[tributary_catalog::ColumnDef]) -> Result<SchemaRef> {
    let fields = columns
        .iter()
        .map(|c| {
            Ok(Field::new(
                &c.name,
                parse_type_name(&c.data_type)?,
                c.nullable,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// Catalog columns describing an Arrow schema.
pub fn columns_of_schema(schema: &Schema) -> Vec<tributary_catalog::ColumnDef> {
    schema
        .fields()
        .iter()
        .map(|f| tributary_catalog::ColumnDef {
            name: f.name().clone(),
            data_type: pg_type_name(f.data_type()),
            nullable: f.is_nullable(),
            comment: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn parse(s: &str) -> DataType {
        let dialect = PostgreSqlDialect {};
        let mut p = Parser::new(&dialect).try_with_sql(s).unwrap();
        arrow_type(&p.parse_data_type().unwrap()).unwrap()
    }

    #[test]
    fn postgres_names_round_trip() {
        for (sql, pg) in [
            ("BIGINT", "bigint"),
            ("NUMERIC(18,2)", "numeric(18,2)"),
            ("TIMESTAMPTZ", "timestamp with time zone"),
            ("TIMESTAMP", "timestamp without time zone"),
            ("DOUBLE PRECISION", "double precision"),
            ("VARCHAR(20)", "text"),
            ("DATE", "date"),
            ("BOOLEAN", "boolean"),
        ] {
            assert_eq!(pg_type_name(&parse(sql)), pg, "{sql}");
            assert_eq!(parse(pg), parse(sql), "{pg}");
        }
    }
}
