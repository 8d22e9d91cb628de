//! PostgreSQL's names for result columns the client left unnamed (`?column?`, a function's
//! name, a cast's type name), given in the statement as the client wrote it.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, Ident, ObjectNamePart, Query, Select, SelectItem, SetExpr, Statement, VisitMut,
    VisitorMut,
};

use super::any_expr;

/// Names unnamed result columns the way PostgreSQL does (`count(*)` is `count`, a cast is
/// named after its operand or else its type, `CASE` after its `ELSE` branch or else `case`,
/// anything else `?column?`), in every SELECT of a query. DataFusion needs unique names in a
/// SELECT list where PostgreSQL allows repeats, so a repeated name gets a `_1`, `_2`, ...
/// suffix. SELECT lists with a wildcard are left alone (their other names are unknown here),
/// and so is an item whose name a GROUP BY or HAVING clause uses as an identifier (DataFusion
/// would resolve it to the item instead of the input column).
pub fn name_columns(stmt: &mut Statement) {
    if let Statement::Query(query) = stmt {
        let _ = query.visit(&mut NameColumns);
    }
}

struct NameColumns;

impl VisitorMut for NameColumns {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        name_set_expr(&mut query.body);
        ControlFlow::Continue(())
    }
}

fn name_set_expr(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => name_select(select),
        SetExpr::SetOperation { left, right, .. } => {
            name_set_expr(left);
            name_set_expr(right);
        }
        _ => {}
    }
}

pub(super) fn normalized(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

pub(super) fn is_column_ref(expr: &Expr) -> bool {
    matches!(expr, Expr::Identifier(_) | Expr::CompoundIdentifier(_))
}

fn name_select(select: &mut Select) {
    if select.projection.iter().any(|item| {
        matches!(
            item,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
        )
    }) {
        return;
    }
    let mut grouping = HashSet::new();
    let mut collect = |e: &Expr| {
        if let Expr::Identifier(ident) = e {
            grouping.insert(normalized(ident));
        }
        false
    };
    any_expr(&select.group_by, &mut collect);
    any_expr(&select.having, &mut collect);

    let mut used: HashSet<String> = select
        .projection
        .iter()
        .filter_map(|item| match item {
            SelectItem::UnnamedExpr(Expr::Identifier(ident)) => Some(normalized(ident)),
            SelectItem::UnnamedExpr(Expr::CompoundIdentifier(idents)) => {
                idents.last().map(normalized)
            }
            SelectItem::ExprWithAlias { alias, .. } => Some(normalized(alias)),
            _ => None,
        })
        .collect();
    for item in &mut select.projection {
        let SelectItem::UnnamedExpr(expr) = item else {
            continue;
        };
        if is_column_ref(expr) {
            continue;
        }
        let name = figure_name(expr).map_or_else(|| "?column?".to_string(), |(name, _)| name);
        if grouping.contains(&name) {
            continue;
        }
        let mut unique = name.clone();
        let mut n = 0;
        while used.contains(&unique) {
            n += 1;
            unique = format!("{name}_{n}");
        }
        used.insert(unique.clone());
        *item = SelectItem::ExprWithAlias {
            expr: expr.clone(),
            alias: Ident::with_quote('"', unique),
        };
    }
}

/// PostgreSQL's `FigureColname`: a name and its strength (2: from a column, function or
/// keyword; 1: from a type name or `case`).
fn figure_name(expr: &Expr) -> Option<(String, u8)> {
    let keyword = |s: &str| Some((s.to_string(), 2));
    match expr {
        Expr::Identifier(ident) => Some((normalized(ident), 2)),
        Expr::CompoundIdentifier(idents) => idents.last().map(|i| (normalized(i), 2)),
        Expr::CompoundFieldAccess { root, access_chain } => match access_chain.last() {
            Some(datafusion::sql::sqlparser::ast::AccessExpr::Dot(field)) => figure_name(field),
            _ => figure_name(root),
        },
        Expr::Function(f) => match f.name.0.last() {
            Some(ObjectNamePart::Identifier(ident)) => Some((normalized(ident), 2)),
            _ => None,
        },
        Expr::Cast {
            expr, data_type, ..
        } => match figure_name(expr) {
            Some((name, 2)) => Some((name, 2)),
            _ => Some((type_name(&data_type.to_string()), 1)),
        },
        Expr::TypedString(typed) => Some((type_name(&typed.data_type.to_string()), 1)),
        Expr::Interval(_) => Some(("interval".into(), 1)),
        Expr::Nested(inner) => figure_name(inner),
        Expr::Collate { expr, .. } => figure_name(expr),
        Expr::Case { else_result, .. } => match else_result.as_deref().and_then(figure_name) {
            Some((name, 2)) => Some((name, 2)),
            _ => Some(("case".into(), 1)),
        },
        Expr::Subquery(query) => first_column_name(query).map(|name| (name, 2)),
        Expr::Exists { .. } => keyword("exists"),
        Expr::Array(_) => keyword("array"),
        Expr::Tuple(_) => keyword("row"),
        Expr::Extract { .. } => keyword("extract"),
        Expr::Position { .. } => keyword("position"),
        Expr::Substring { .. } => keyword("substring"),
        Expr::Trim { .. } => keyword("trim"),
        Expr::Overlay { .. } => keyword("overlay"),
        Expr::Ceil { .. } => keyword("ceil"),
        Expr::Floor { .. } => keyword("floor"),
        Expr::AtTimeZone { .. } => keyword("timezone"),
        _ => None,
    }
}

/// The name of a query's first result column, as PostgreSQL would give it.
fn first_column_name(query: &Query) -> Option<String> {
    let mut body = query.body.as_ref();
    loop {
        match body {
            SetExpr::Select(select) => {
                return match select.projection.first()? {
                    SelectItem::UnnamedExpr(e) => Some(
                        figure_name(e).map_or_else(|| "?column?".to_string(), |(name, _)| name),
                    ),
                    SelectItem::ExprWithAlias { alias, .. } => Some(normalized(alias)),
                    _ => None,
                };
            }
            SetExpr::SetOperation { left, .. } => body = left,
            SetExpr::Query(q) => body = q.body.as_ref(),
            _ => return None,
        }
    }
}

/// PostgreSQL's name for a type as written in a cast (`int` is `int4`, `pg_catalog.text` is
/// `text`, array and length modifiers dropped).
fn type_name(written: &str) -> String {
    let lower = written.to_lowercase();
    let base = lower
        .split('(')
        .next()
        .unwrap_or_default()
        .trim_end_matches("[]")
        .trim();
    let base = base.rsplit('.').next().unwrap_or(base).trim_matches('"');
    match base {
        "int" | "integer" | "int4" => "int4",
        "bigint" | "int8" => "int8",
        "smallint" | "int2" => "int2",
        "real" | "float4" => "float4",
        "double precision" | "double" | "float" | "float8" => "float8",
        "boolean" | "bool" => "bool",
        "character varying" | "varchar" => "varchar",
        "character" | "char" => "bpchar",
        "decimal" | "dec" | "numeric" => "numeric",
        "timestamp with time zone" | "timestamptz" => "timestamptz",
        "timestamp" | "timestamp without time zone" => "timestamp",
        "time with time zone" | "timetz" => "timetz",
        "time" | "time without time zone" => "time",
        other => other,
    }
    .to_string()
}
