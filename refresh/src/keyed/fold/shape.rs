//! Which aggregate queries fold, and how each value of the aggregate follows from a group's
//! old value and the aggregate of its added and removed rows.
//!
//! The fold works on the aggregate's own output (keys, then one column per aggregate
//! function), not on the model's columns: columns computed over aggregates (a margin that
//! divides two sums) are computed again over the folded values. So every aggregate needs a
//! model column that holds it unchanged, where its old value is read, except AVG, which is
//! derived from a SUM and a COUNT of the same argument.

use datafusion::arrow::datatypes::DataType;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{Aggregate, Expr, ExprSchemable, LogicalPlan, lit};
use std::sync::Arc;

use super::super::unalias;
use crate::strategy::{self, Shape as PlanShape};

/// How a value of the aggregate follows from a group's old value and its changed rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Key,
    /// COUNT: old + added - removed.
    Count,
    /// SUM over integers or decimals: old + added - removed, NULL when `count` (the COUNT of
    /// the same argument's non-null values, if the query has one) is zero; without it, a
    /// zero that lost values is recomputed.
    Sum {
        count: Option<usize>,
    },
    /// MIN or MAX (not over floating point): the least or greatest of the old and added
    /// values, as long as no removed value reached the old one.
    Min,
    Max,
    /// AVG over decimals: the SUM over the COUNT of the same argument, as DataFusion divides.
    Avg {
        sum: usize,
        count: usize,
    },
}

/// A foldable aggregate query.
pub(super) struct Foldable {
    /// The query's aggregate node.
    pub aggregate: Aggregate,
    /// The aggregate the fold runs over the changed rows: the query's, plus a count of the
    /// rows of each group (its last output column, [`Foldable::partial_rows`]), which tells
    /// whether a group gained at least as many rows as it lost.
    pub partial: Aggregate,
    /// The role of each of the aggregate's output columns.
    pub roles: Vec<Role>,
    /// The model column holding each output column unchanged (none for AVG).
    pub holders: Vec<Option<String>>,
    /// The output column counting a group's rows (COUNT(*)), if any.
    pub rows: Option<usize>,
}

impl Foldable {
    /// The output column of [`Foldable::partial`] counting each group's changed rows.
    pub(super) fn partial_rows(&self) -> usize {
        self.aggregate.schema.fields().len()
    }
}

/// The query's foldable shape, or why it does not fold.
pub(super) fn foldable(plan: &LogicalPlan) -> Result<Foldable, String> {
    // Each model column's position in the node's output down to the aggregate, while it is
    // passed through unchanged.
    let mut positions: Vec<Option<usize>> = (0..plan.schema().fields().len()).map(Some).collect();
    let mut node = plan;
    let aggregate = loop {
        match node {
            LogicalPlan::Projection(p) => {
                if p.expr.iter().any(Expr::is_volatile) {
                    return Err("the query computes volatile values over the groups".into());
                }
                for position in positions.iter_mut() {
                    *position = match position.map(|i| unalias(&p.expr[i])) {
                        Some(Expr::Column(c)) => Some(
                            p.input
                                .schema()
                                .index_of_column(c)
                                .map_err(|e| e.to_string())?,
                        ),
                        _ => None,
                    };
                }
                node = &p.input;
            }
            LogicalPlan::SubqueryAlias(a) => node = &a.input,
            LogicalPlan::Sort(s) if s.fetch.is_none() => node = &s.input,
            LogicalPlan::Aggregate(a) => break a,
            _ => return Err("the query filters or reshapes the groups".into()),
        }
    };
    if let Some(why) = strategy::shape_violation(&aggregate.input, PlanShape::Linear) {
        return Err(why);
    }
    let width = aggregate.schema.fields().len();
    let mut holders: Vec<Option<String>> = vec![None; width];
    for (column, position) in positions.iter().enumerate() {
        if let Some(i) = position {
            holders[*i].get_or_insert_with(|| plan.schema().field(column).name().clone());
        }
    }
    let keys = aggregate.group_expr.len();
    let calls = aggregate
        .aggr_expr
        .iter()
        .map(|e| match unalias(e) {
            Expr::AggregateFunction(f) => {
                let name = f.func.name().to_lowercase();
                if f.params.distinct || f.params.filter.is_some() || !f.params.order_by.is_empty() {
                    return Err(format!("{name} has DISTINCT, FILTER or ORDER BY"));
                }
                Ok((name, f))
            }
            _ => Err("an aggregate is not a plain aggregate function".into()),
        })
        .collect::<Result<Vec<_>, String>>()?;
    let input = aggregate.input.schema();
    let non_null = |args: &[Expr]| {
        args.iter().all(|a| match a {
            Expr::Literal(v, _) => !v.is_null(),
            other => other.nullable(input.as_ref()).is_ok_and(|n| !n),
        })
    };
    let rows = calls
        .iter()
        .position(|(name, f)| name == "count" && non_null(&f.params.args))
        .map(|j| keys + j);
    let same_args = |name: &str, f: &AggregateFunction| {
        calls
            .iter()
            .position(|(n, g)| n == name && g.params.args == f.params.args)
            .map(|j| keys + j)
    };
    // The COUNT of an argument's non-null values: COUNT(x), or COUNT(*) when x has no NULLs.
    let count_of = |f: &AggregateFunction| {
        same_args("count", f).or_else(|| rows.filter(|_| non_null(&f.params.args)))
    };
    let mut roles = vec![Role::Key; keys];
    for (j, (name, f)) in calls.iter().enumerate() {
        let output = aggregate.schema.field(keys + j).data_type();
        let role = match name.as_str() {
            "count" => Role::Count,
            "sum" if exact(output) => Role::Sum { count: count_of(f) },
            "min" if !floating(output) => Role::Min,
            "max" if !floating(output) => Role::Max,
            "avg" => match (output, same_args("sum", f), count_of(f)) {
                (DataType::Decimal128(_, _), Some(sum), Some(count))
                    if matches!(
                        aggregate.schema.field(sum).data_type(),
                        DataType::Decimal128(_, _)
                    ) =>
                {
                    Role::Avg { sum, count }
                }
                _ => {
                    return Err(format!(
                        "avg over {output} does not fold without a SUM and a COUNT of the same argument (over decimals)"
                    ));
                }
            },
            _ => return Err(format!("{name} over {output} does not fold")),
        };
        roles.push(role);
    }
    for (i, role) in roles.iter().enumerate() {
        if holders[i].is_none() && !matches!(role, Role::Avg { .. }) {
            return Err(format!(
                "{} is not a column of the result",
                aggregate.schema.field(i).name()
            ));
        }
    }
    let mut counted = aggregate.aggr_expr.clone();
    counted.push(count(lit(1i64)).alias("__tributary_rows"));
    let partial = Aggregate::try_new(
        Arc::clone(&aggregate.input),
        aggregate.group_expr.clone(),
        counted,
    )
    .map_err(|e| format!("the aggregate does not take a row count: {e}"))?;
    Ok(Foldable {
        aggregate: aggregate.clone(),
        partial,
        roles,
        holders,
        rows,
    })
}

/// Sums of these types are exact, so they add and subtract in any order.
fn exact(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Decimal128(_, _)
            | DataType::Decimal256(_, _)
    )
}

/// Floating-point minimums and maximums do not fold: NaN orders differently in comparisons
/// than in MIN and MAX.
fn floating(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Float16 | DataType::Float32 | DataType::Float64
    )
}
