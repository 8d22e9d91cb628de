//! The scalar functions clients call on catalog rows: [`CompatFunction`] answers from
//! Tributary's catalog (`pg_get_viewdef`, `col_description`, `obj_description`,
//! `pg_size_pretty`, ...), and [`TextArrayFunction`] applies array functions to catalog columns
//! that hold PostgreSQL's array text, which is parsed and written here.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, StringArray, new_null_array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Expr as DfExpr, ExprSchemable, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, TypeSignature, Volatility,
};
use tributary_catalog::ObjectKind;

use super::{ANY_EQ, ARRAY_TO_STRING, PgCompat, description, int64s, strings};

type FunctionBody = fn(&PgCompat, &[ArrayRef], usize) -> DfResult<ArrayRef>;

/// A function clients call on catalog rows. Arguments are taken as any type and converted in
/// the body (OIDs arrive as `int4`, `int8` or text).
struct CompatFunction {
    name: &'static str,
    signature: Signature,
    return_type: DataType,
    compat: Arc<PgCompat>,
    body: FunctionBody,
}

impl std::fmt::Debug for CompatFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompatFunction")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PartialEq for CompatFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for CompatFunction {}

impl Hash for CompatFunction {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for CompatFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(self.return_type.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<DfResult<Vec<_>>>()?;
        Ok(ColumnarValue::Array((self.body)(
            &self.compat,
            &arrays,
            rows,
        )?))
    }
}

pub(super) fn functions(compat: &Arc<PgCompat>) -> Vec<ScalarUDF> {
    let function = |name: &'static str, arities: &[usize], return_type: DataType, body| {
        let signature = Signature::one_of(
            arities.iter().map(|n| TypeSignature::Any(*n)).collect(),
            Volatility::Stable,
        );
        ScalarUDF::new_from_impl(CompatFunction {
            name,
            signature,
            return_type,
            compat: Arc::clone(compat),
            body,
        })
    };
    vec![
        // Tributary has no indexes, rules or triggers.
        function("pg_get_indexdef", &[1, 3], DataType::Utf8, null_text),
        function("pg_get_ruledef", &[1, 2], DataType::Utf8, null_text),
        function("pg_get_triggerdef", &[1, 2], DataType::Utf8, null_text),
        function("pg_get_viewdef", &[1, 2], DataType::Utf8, view_definition),
        function("col_description", &[2], DataType::Utf8, column_comment),
        function("obj_description", &[1, 2], DataType::Utf8, object_comment),
        function("shobj_description", &[2], DataType::Utf8, null_text),
        function("pg_table_size", &[1], DataType::Int64, null_int),
        function("pg_indexes_size", &[1], DataType::Int64, null_int),
        function("pg_size_pretty", &[1], DataType::Utf8, size_pretty),
        // The library's takes only `int4`; psql passes the OID as a string literal.
        function(
            "pg_relation_is_publishable",
            &[1],
            DataType::Boolean,
            publishable,
        ),
        function("pg_has_role", &[2, 3], DataType::Boolean, always_true),
        function(
            "pg_function_is_visible",
            &[1],
            DataType::Boolean,
            always_true,
        ),
        function("pg_type_is_visible", &[1], DataType::Boolean, always_true),
        function("pg_get_function_result", &[1], DataType::Utf8, null_text),
        function("pg_get_function_arguments", &[1], DataType::Utf8, null_text),
        function("pg_database_size", &[1], DataType::Int64, null_int),
        ScalarUDF::new_from_impl(TextArrayFunction::new(TextArrayOp::AnyEq)),
        ScalarUDF::new_from_impl(TextArrayFunction::new(TextArrayOp::ToString)),
    ]
}

fn null_text(_: &PgCompat, _: &[ArrayRef], rows: usize) -> DfResult<ArrayRef> {
    Ok(new_null_array(&DataType::Utf8, rows))
}

/// Tributary has one role that sees everything.
fn always_true(_: &PgCompat, _: &[ArrayRef], rows: usize) -> DfResult<ArrayRef> {
    Ok(Arc::new(BooleanArray::from(vec![true; rows])))
}

fn null_int(_: &PgCompat, _: &[ArrayRef], rows: usize) -> DfResult<ArrayRef> {
    Ok(new_null_array(&DataType::Int64, rows))
}

/// `pg_get_viewdef(oid [, pretty])`: the query of a view or model.
fn view_definition(compat: &PgCompat, args: &[ArrayRef], _: usize) -> DfResult<ArrayRef> {
    let objects = compat.objects_by_name()?;
    let oids = int64s(&args[0])?;
    let out: StringArray = oids
        .iter()
        .map(|oid| {
            let object = compat.object(oid?, &objects)?;
            matches!(object.kind, ObjectKind::View | ObjectKind::Model)
                .then_some(object.query)
                .flatten()
        })
        .collect();
    Ok(Arc::new(out))
}

/// `col_description(table oid, column number)`: the column's comment.
fn column_comment(compat: &PgCompat, args: &[ArrayRef], _: usize) -> DfResult<ArrayRef> {
    let objects = compat.objects_by_name()?;
    let oids = int64s(&args[0])?;
    let numbers = int64s(&args[1])?;
    let out: StringArray = oids
        .iter()
        .zip(numbers.iter())
        .map(|(oid, number)| {
            let object = compat.object(oid?, &objects)?;
            let index = usize::try_from(number?.checked_sub(1)?).ok()?;
            object.columns.get(index)?.comment.clone()
        })
        .collect();
    Ok(Arc::new(out))
}

/// `obj_description(oid [, catalog])`: the comment of a relation (other catalogs have none).
fn object_comment(compat: &PgCompat, args: &[ArrayRef], rows: usize) -> DfResult<ArrayRef> {
    let objects = compat.objects_by_name()?;
    let oids = int64s(&args[0])?;
    let catalogs = match args.get(1) {
        Some(a) => strings(a)?,
        None => StringArray::from(vec![Some("pg_class"); rows]),
    };
    let out: StringArray = oids
        .iter()
        .zip(catalogs.iter())
        .map(|(oid, catalog)| {
            if catalog?.trim_start_matches("pg_catalog.") != "pg_class" {
                return None;
            }
            description(&compat.object(oid?, &objects)?)
        })
        .collect();
    Ok(Arc::new(out))
}

/// `pg_relation_is_publishable(regclass)`: tables are, other relations are not.
fn publishable(compat: &PgCompat, args: &[ArrayRef], _: usize) -> DfResult<ArrayRef> {
    let objects = compat.objects_by_name()?;
    let oids = int64s(&args[0])?;
    let out: BooleanArray = oids
        .iter()
        .map(|oid| Some(compat.object(oid?, &objects)?.kind == ObjectKind::Table))
        .collect();
    Ok(Arc::new(out))
}

/// `pg_size_pretty(bigint)`, with PostgreSQL's units and rounding.
fn size_pretty(_: &PgCompat, args: &[ArrayRef], _: usize) -> DfResult<ArrayRef> {
    let sizes = int64s(&args[0])?;
    let out: StringArray = sizes.iter().map(|s| s.map(pretty_size)).collect();
    Ok(Arc::new(out))
}

fn pretty_size(bytes: i64) -> String {
    const LIMIT: i64 = 10 * 1024;
    if bytes.abs() < LIMIT {
        return format!("{bytes} bytes");
    }
    let half_rounded = |x: i64| (x + if x < 0 { -1 } else { 1 }) / 2;
    // Keep one extra bit for rounding, as PostgreSQL does.
    let mut size = bytes >> 9;
    for unit in ["kB", "MB", "GB", "TB"] {
        if size.abs() < LIMIT * 2 - 1 || unit == "TB" {
            return format!("{} {unit}", half_rounded(size));
        }
        size >>= 10;
    }
    unreachable!()
}

/// Array functions applied to catalog columns, which may be Arrow lists or, as in the bundled
/// PostgreSQL catalog tables, PostgreSQL's text form of an array (`{a,b}`) or vector (`1 2`).
/// When the argument turns out to be a list, DataFusion's own function takes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TextArrayOp {
    /// `tributary_any_eq(array, x)`: `x = ANY(array)`.
    AnyEq,
    /// `tributary_array_to_string(array, delimiter [, null_string])`.
    ToString,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct TextArrayFunction {
    op: TextArrayOp,
    signature: Signature,
}

impl TextArrayFunction {
    fn new(op: TextArrayOp) -> Self {
        let arities: &[usize] = match op {
            TextArrayOp::AnyEq => &[2],
            TextArrayOp::ToString => &[2, 3],
        };
        Self {
            op,
            signature: Signature::one_of(
                arities.iter().map(|n| TypeSignature::Any(*n)).collect(),
                Volatility::Immutable,
            ),
        }
    }
}

impl ScalarUDFImpl for TextArrayFunction {
    fn name(&self) -> &str {
        match self.op {
            TextArrayOp::AnyEq => ANY_EQ,
            TextArrayOp::ToString => ARRAY_TO_STRING,
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(match self.op {
            TextArrayOp::AnyEq => DataType::Boolean,
            TextArrayOp::ToString => DataType::Utf8,
        })
    }

    fn simplify(&self, args: Vec<DfExpr>, info: &SimplifyContext) -> DfResult<ExprSimplifyResult> {
        let (DataType::List(element)
        | DataType::LargeList(element)
        | DataType::FixedSizeList(element, _)) = info.get_data_type(&args[0])?
        else {
            return Ok(ExprSimplifyResult::Original(args));
        };
        Ok(ExprSimplifyResult::Simplified(match self.op {
            TextArrayOp::AnyEq => {
                let [haystack, needle] = <[DfExpr; 2]>::try_from(args)
                    .map_err(|_| DataFusionError::Internal("two arguments".into()))?;
                let needle = needle.cast_to(element.data_type(), info.schema())?;
                datafusion::functions_nested::expr_fn::array_has(haystack, needle)
            }
            TextArrayOp::ToString => {
                datafusion::functions_nested::string::array_to_string_udf().call(args)
            }
        }))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<DfResult<Vec<_>>>()?;
        let elements = array_elements(&arrays[0], rows)?;
        let second = strings(&arrays[1])?;
        let out: ArrayRef = match self.op {
            TextArrayOp::AnyEq => Arc::new(
                elements
                    .iter()
                    .zip(second.iter())
                    .map(|(elements, needle)| {
                        let (elements, needle) = (elements.as_ref()?, needle?);
                        if elements.iter().any(|e| e.as_deref() == Some(needle)) {
                            Some(true)
                        } else if elements.iter().any(Option::is_none) {
                            None
                        } else {
                            Some(false)
                        }
                    })
                    .collect::<BooleanArray>(),
            ),
            TextArrayOp::ToString => {
                let null_strings = arrays.get(2).map(strings).transpose()?;
                Arc::new(
                    elements
                        .iter()
                        .zip(second.iter())
                        .enumerate()
                        .map(|(row, (elements, delimiter))| {
                            let (elements, delimiter) = (elements.as_ref()?, delimiter?);
                            let null_string = match &null_strings {
                                Some(n) => Some(n.is_valid(row).then(|| n.value(row))?),
                                None => None,
                            };
                            let parts: Vec<&str> = elements
                                .iter()
                                .filter_map(|e| e.as_deref().or(null_string))
                                .collect();
                            Some(parts.join(delimiter))
                        })
                        .collect::<StringArray>(),
                )
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// The elements of each row of an array argument: a list, or PostgreSQL array text.
fn array_elements(array: &ArrayRef, rows: usize) -> DfResult<Vec<Option<Vec<Option<String>>>>> {
    Ok(match array.data_type() {
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _) => {
            let as_list = cast(
                array,
                &DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            )?;
            let list = as_list.as_list::<i32>();
            (0..rows)
                .map(|i| {
                    list.is_valid(i).then(|| {
                        list.value(i)
                            .as_string::<i32>()
                            .iter()
                            .map(|v| v.map(String::from))
                            .collect()
                    })
                })
                .collect()
        }
        _ => strings(array)?
            .iter()
            .map(|text| text.map(parse_array_text))
            .collect(),
    })
}

/// The elements of PostgreSQL's text form of an array (`{a,"b c",NULL}`, nested braces
/// flattened) or of an `int2vector`/`oidvector` (`1 2 3`).
fn parse_array_text(text: &str) -> Vec<Option<String>> {
    let text = text.trim();
    if !text.starts_with('{') {
        return text
            .split_whitespace()
            .map(|s| Some(s.to_string()))
            .collect();
    }
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut current = String::new();
    let mut quoted = false;
    let mut in_quotes = false;
    let mut any = false;
    let mut finish = |current: &mut String, quoted: &mut bool, any: &mut bool| {
        if *any {
            let value = std::mem::take(current);
            if !*quoted && value.eq_ignore_ascii_case("null") {
                out.push(None);
            } else {
                out.push(Some(value));
            }
        }
        *quoted = false;
        *any = false;
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    current.push(next);
                    any = true;
                }
            }
            '"' => {
                in_quotes = !in_quotes;
                quoted = true;
                any = true;
            }
            _ if in_quotes => current.push(c),
            '{' => {}
            '}' | ',' => finish(&mut current, &mut quoted, &mut any),
            c if c.is_whitespace() => {}
            c => {
                current.push(c);
                any = true;
            }
        }
    }
    out
}

/// PostgreSQL's text form of a one-dimensional text array.
pub(super) fn array_text(elements: impl Iterator<Item = String>) -> String {
    let quoted: Vec<String> = elements
        .map(|e| {
            let plain = !e.is_empty()
                && !e.eq_ignore_ascii_case("null")
                && !e
                    .chars()
                    .any(|c| matches!(c, '{' | '}' | ',' | '"' | '\\') || c.is_whitespace());
            if plain {
                e
            } else {
                format!("\"{}\"", e.replace('\\', "\\\\").replace('"', "\\\""))
            }
        })
        .collect();
    format!("{{{}}}", quoted.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_text_round_trip() {
        assert_eq!(
            parse_array_text(r#"{a,"b,c",NULL,"NULL"}"#),
            vec![
                Some("a".to_string()),
                Some("b,c".to_string()),
                None,
                Some("NULL".to_string())
            ]
        );
        assert_eq!(
            parse_array_text("1 2"),
            vec![Some("1".into()), Some("2".into())]
        );
        assert_eq!(parse_array_text("{}"), Vec::<Option<String>>::new());
        let text =
            array_text(["a=b".to_string(), "x y".to_string(), "q\"".to_string()].into_iter());
        assert_eq!(text, r#"{a=b,"x y","q\""}"#);
        assert_eq!(
            parse_array_text(&text),
            vec![Some("a=b".into()), Some("x y".into()), Some("q\"".into())]
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(pretty_size(8192), "8192 bytes");
        assert_eq!(pretty_size(16384), "16 kB");
        assert_eq!(pretty_size(10 * 1024 * 1024), "10 MB");
    }
}
