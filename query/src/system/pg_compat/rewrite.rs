//! The SQL rewrites applied to client statements before the compatibility parser's rules
//! (`crate::planning`): PostgreSQL's names for unnamed result columns ([`name_columns`]) and
//! constructs DataFusion cannot plan as written ([`fix_for_planning`]). They edit the statement
//! as the client wrote it, so its result columns keep PostgreSQL's names.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    ArrayElemTypeDef, BinaryOperator, CastKind, DataType as SqlDataType, Expr, Function,
    FunctionArg, FunctionArgExpr, FunctionArgumentClause, FunctionArgumentList, FunctionArguments,
    GroupByExpr, Ident, ObjectName as SqlName, ObjectNamePart, OrderByExpr, OrderByKind, Query,
    SelectItem, SetExpr, Statement, TableFactor, Value, Visit, VisitMut, Visitor, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::{ANY_EQ, ARRAY_TO_STRING};

mod naming;

pub use naming::name_columns;
use naming::{is_column_ref, normalized};

// ---------------------------------------------------------------------------------------------
// SQL: constructs DataFusion cannot plan as written

/// Rewrites what DataFusion cannot plan as PostgreSQL clients write it. Returns whether
/// anything changed.
///
/// - `ARRAY(SELECT e FROM ... ORDER BY ...)` becomes
///   `coalesce((SELECT array_agg(e ORDER BY ...) FROM ...), make_array())` (an empty array
///   when there are no rows, as in PostgreSQL). A subquery correlated through anything but
///   `inner = outer` conditions cannot be decorrelated by DataFusion and becomes NULL.
/// - `x = ANY(column)` becomes `tributary_any_eq(column, x)` and `array_to_string(column,
///   ...)` `tributary_array_to_string(column, ...)`, which also accept the PostgreSQL array
///   text of the bundled catalog tables.
/// - A scalar subquery that calls a set-returning function on outer columns
///   (`FROM unnest(outer.col)`, a LATERAL call DataFusion cannot plan) becomes NULL.
pub fn fix_for_planning(stmt: &mut Statement) -> bool {
    let mut fixes = Fixes { changed: false };
    let _ = stmt.visit(&mut fixes);
    fixes.changed
}

struct Fixes {
    changed: bool,
}

impl VisitorMut for Fixes {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let replacement = match expr {
            Expr::Function(f) => match (&f.args, f.name.0.as_slice()) {
                (FunctionArguments::Subquery(query), [ObjectNamePart::Identifier(name)])
                    if name.value.eq_ignore_ascii_case("array") =>
                {
                    Some(array_from_subquery(query))
                }
                (FunctionArguments::List(list), [.., ObjectNamePart::Identifier(name)])
                    if name.value.eq_ignore_ascii_case("array_to_string")
                        && matches!(list.args.first(),
                            Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(e))) if is_column_like(e)) =>
                {
                    let mut f = f.clone();
                    f.name = SqlName(vec![ObjectNamePart::Identifier(Ident::new(
                        ARRAY_TO_STRING,
                    ))]);
                    Some(Expr::Function(f))
                }
                _ => None,
            },
            Expr::AnyOp {
                left,
                compare_op: BinaryOperator::Eq,
                right,
                ..
            } if is_column_like(right) => Some(call(ANY_EQ, vec![*right.clone(), *left.clone()])),
            Expr::Subquery(query) if calls_lateral_function(query) => Some(null()),
            _ => None,
        };
        if let Some(replacement) = replacement {
            *expr = replacement;
            self.changed = true;
        }
        ControlFlow::Continue(())
    }
}

fn is_column_like(expr: &Expr) -> bool {
    match expr {
        Expr::Nested(e) | Expr::Cast { expr: e, .. } => is_column_like(e),
        e => is_column_ref(e),
    }
}

fn null() -> Expr {
    Expr::Value(Value::Null.with_empty_span())
}

/// A NULL array (of text: the element type is unknown here, and text is what catalog queries
/// collect).
fn null_array() -> Expr {
    Expr::Cast {
        kind: CastKind::Cast,
        expr: Box::new(null()),
        data_type: SqlDataType::Array(ArrayElemTypeDef::SquareBracket(
            Box::new(SqlDataType::Text),
            None,
        )),
        array: false,
        format: None,
    }
}

fn call(name: &str, args: Vec<Expr>) -> Expr {
    call_with(name, args, vec![])
}

fn call_with(name: &str, args: Vec<Expr>, clauses: Vec<FunctionArgumentClause>) -> Expr {
    Expr::Function(Function {
        name: SqlName(vec![ObjectNamePart::Identifier(Ident::new(name))]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|a| FunctionArg::Unnamed(FunctionArgExpr::Expr(a)))
                .collect(),
            clauses,
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

fn array_from_subquery(query: &Query) -> Expr {
    let aggregated = match correlation(query) {
        Correlation::None => aggregate_select(query).unwrap_or_else(|| aggregate_derived(query)),
        Correlation::Equality => match aggregate_select(query) {
            Some(q) => q,
            None => return null_array(),
        },
        Correlation::Other => return null_array(),
    };
    call(
        "coalesce",
        vec![
            Expr::Subquery(Box::new(aggregated)),
            call("make_array", vec![]),
        ],
    )
}

const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
    "json_agg",
    "jsonb_agg",
];

/// `SELECT array_agg(e ORDER BY ...) FROM ... WHERE ...` for a plain one-column SELECT.
fn aggregate_select(query: &Query) -> Option<Query> {
    if query.with.is_some() || query.limit_clause.is_some() || query.fetch.is_some() {
        return None;
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let plain_group =
        matches!(&select.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty());
    if select.distinct.is_some() || !plain_group || select.having.is_some() {
        return None;
    }
    let (expr, alias) = match select.projection.as_slice() {
        [SelectItem::UnnamedExpr(e)] => (e, None),
        [SelectItem::ExprWithAlias { expr, alias }] => (expr, Some(normalized(alias))),
        _ => return None,
    };
    if any_expr(expr, &mut |e| {
        matches!(e, Expr::Function(f) if f.over.is_none() && matches!(f.name.0.last(),
            Some(ObjectNamePart::Identifier(i)) if AGGREGATES.contains(&i.value.to_lowercase().as_str())))
    }) {
        return None;
    }
    let mut order = Vec::new();
    if let Some(order_by) = &query.order_by {
        let OrderByKind::Expressions(exprs) = &order_by.kind else {
            return None;
        };
        for o in exprs {
            let resolved = match &o.expr {
                Expr::Value(v) if matches!(&v.value, Value::Number(n, _) if n == "1") => {
                    expr.clone()
                }
                Expr::Value(_) => return None,
                Expr::Identifier(i) if alias.as_deref() == Some(normalized(i).as_str()) => {
                    expr.clone()
                }
                other => other.clone(),
            };
            order.push(OrderByExpr {
                expr: resolved,
                ..o.clone()
            });
        }
    }
    let clauses = if order.is_empty() {
        vec![]
    } else {
        vec![FunctionArgumentClause::OrderBy(order)]
    };
    let mut select = select.clone();
    select.projection = vec![SelectItem::UnnamedExpr(call_with(
        "array_agg",
        vec![expr.clone()],
        clauses,
    ))];
    let mut out = query.clone();
    out.body = Box::new(SetExpr::Select(select));
    out.order_by = None;
    Some(out)
}

/// `SELECT array_agg(v) FROM (query) AS __array(v)` for any other one-column query.
fn aggregate_derived(query: &Query) -> Query {
    let template = r#"SELECT array_agg("__array"."v") FROM (SELECT 1) AS "__array"("v")"#;
    let mut out = match parse_query(template) {
        Some(q) => q,
        None => return query.clone(),
    };
    if let SetExpr::Select(select) = out.body.as_mut()
        && let Some(from) = select.from.first_mut()
        && let TableFactor::Derived { subquery, .. } = &mut from.relation
    {
        **subquery = query.clone();
    }
    out
}

fn parse_query(sql: &str) -> Option<Query> {
    match Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?.pop()? {
        Statement::Query(q) => Some(*q),
        _ => None,
    }
}

enum Correlation {
    None,
    /// Only through `inner = outer` conditions of the top-level WHERE.
    Equality,
    Other,
}

/// How a subquery refers to the query around it. Qualified column references whose qualifier
/// is not a relation of the subquery are outer references (unqualified ones are assumed to
/// be the subquery's own).
fn correlation(query: &Query) -> Correlation {
    if calls_lateral_function(query) {
        return Correlation::Other;
    }
    let defined = relation_names(query);
    let is_outer = |e: &Expr| match e {
        Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
            !defined.contains(&normalized(&parts[parts.len() - 2]))
        }
        _ => false,
    };
    let mut total = 0;
    any_expr(query, &mut |e| {
        if is_outer(e) {
            total += 1;
        }
        false
    });
    if total == 0 {
        return Correlation::None;
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Correlation::Other;
    };
    let mut conjuncts = Vec::new();
    if let Some(selection) = &select.selection {
        split_and(selection, &mut conjuncts);
    }
    let count_outer = |e: &Expr| {
        let mut n = 0;
        any_expr(e, &mut |e| {
            if is_outer(e) {
                n += 1;
            }
            false
        });
        n
    };
    let equalities = conjuncts
        .iter()
        .filter(|c| match c {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } => {
                (is_outer(left) && count_outer(right) == 0)
                    || (is_outer(right) && count_outer(left) == 0)
            }
            _ => false,
        })
        .count();
    if equalities == total {
        Correlation::Equality
    } else {
        Correlation::Other
    }
}

fn split_and<'a>(expr: &'a Expr, out: &mut Vec<&'a Expr>) {
    match expr {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            split_and(left, out);
            split_and(right, out);
        }
        Expr::Nested(inner) => split_and(inner, out),
        other => out.push(other),
    }
}

/// Names the relations of a query (and of the queries nested in it) can be referred to by.
fn relation_names(query: &Query) -> HashSet<String> {
    struct Names(HashSet<String>);
    impl Visitor for Names {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
            let alias = match factor {
                TableFactor::Table { name, alias, .. } => {
                    if alias.is_none()
                        && let Some(ObjectNamePart::Identifier(ident)) = name.0.last()
                    {
                        self.0.insert(normalized(ident));
                    }
                    alias
                }
                TableFactor::Derived { alias, .. }
                | TableFactor::Function { alias, .. }
                | TableFactor::UNNEST { alias, .. }
                | TableFactor::TableFunction { alias, .. }
                | TableFactor::NestedJoin { alias, .. } => alias,
                _ => &None,
            };
            if let Some(alias) = alias {
                self.0.insert(normalized(&alias.name));
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
            if let Some(with) = &query.with {
                for cte in &with.cte_tables {
                    self.0.insert(normalized(&cte.alias.name));
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut names = Names(HashSet::new());
    let _ = query.visit(&mut names);
    names.0
}

/// Whether a query calls a function in FROM with column arguments (a LATERAL reference to an
/// outer row: `FROM unnest(t.arr)`), which DataFusion cannot plan in a subquery.
fn calls_lateral_function(query: &Query) -> bool {
    struct Lateral(bool);
    impl Visitor for Lateral {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
            let mut column = |e: &Expr| is_column_ref(e);
            let lateral = match factor {
                TableFactor::Table {
                    args: Some(args), ..
                } => any_expr(args, &mut column),
                TableFactor::Function { args, .. } => any_expr(args, &mut column),
                TableFactor::UNNEST { array_exprs, .. } => any_expr(array_exprs, &mut column),
                TableFactor::TableFunction { expr, .. } => any_expr(expr, &mut column),
                _ => false,
            };
            if lateral {
                self.0 = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut lateral = Lateral(false);
    let _ = query.visit(&mut lateral);
    lateral.0
}

/// Whether `pred` holds for any expression in `node` (every expression is visited until it
/// does).
pub(super) fn any_expr<T: Visit + ?Sized>(node: &T, pred: &mut dyn FnMut(&Expr) -> bool) -> bool {
    struct Find<'a>(&'a mut dyn FnMut(&Expr) -> bool);
    impl Visitor for Find<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            if (self.0)(expr) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    }
    node.visit(&mut Find(pred)).is_break()
}

#[cfg(test)]
mod tests;
