//! LEFT and RIGHT joins in incremental refreshes.
//!
//! An outer join is not monotone in its nullable side: a row gained there can take away a
//! null-extended row (`a, NULL` becomes `a, b`). So:
//! - the delta rule (append-only refresh) holds only while every table on a nullable side is
//!   unchanged: then the join is linear in its preserved side;
//! - a key-wise refresh (GROUP BY keys, `unique_key`) works when every key comes from the
//!   preserved side of each outer join whose nullable side changed. A preserved row's output
//!   rows all carry its key, and they change only if the row itself changed or a row it
//!   matches on the nullable side changed. The keys affected by a change of a nullable-side
//!   table are therefore found by turning the outer joins over that table into inner joins
//!   (only matching preserved rows are traced).
//!
//! An outer join whose nullable side did not change is a linear function of its preserved
//! side, like an inner join, and needs none of this.
//!
//! Filters above an outer join can test the null-extended columns (`WHERE b.id IS NULL`), so
//! the plans that trace keys drop them: that can only add keys, never lose one. An inner join
//! above an outer join could do the same through its join condition and is not supported.

use std::collections::BTreeSet;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{JoinType, TableReference};
use datafusion::logical_expr::{Expr, LogicalPlan};

type Why = std::result::Result<(), String>;

fn scanned_tables(plan: &LogicalPlan) -> Vec<TableReference> {
    let mut tables = Vec::new();
    let _ = plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            tables.push(scan.table_name.clone());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    tables
}

/// The tables read on the nullable side of some LEFT or RIGHT join of `plan`.
pub(super) fn nullable_tables(plan: &LogicalPlan) -> Vec<TableReference> {
    let mut tables = Vec::new();
    let _ = plan.apply(|node| {
        if let LogicalPlan::Join(join) = node {
            match join.join_type {
                JoinType::Left => tables.extend(scanned_tables(&join.right)),
                JoinType::Right => tables.extend(scanned_tables(&join.left)),
                _ => {}
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    tables
}

/// The input tables a refresh sees as changed.
pub(super) type Changed<'a> = &'a dyn Fn(&TableReference) -> bool;

/// Whether a join is an outer join whose nullable side reads a changed input.
fn changing_outer_join(join: &datafusion::logical_expr::Join, changed: Changed) -> bool {
    let nullable = match join.join_type {
        JoinType::Left => &join.right,
        JoinType::Right => &join.left,
        _ => return false,
    };
    scanned_tables(nullable).iter().any(changed)
}

fn has_changing_outer_join(plan: &LogicalPlan, changed: Changed) -> bool {
    plan.exists(|node| Ok(matches!(node, LogicalPlan::Join(j) if changing_outer_join(j, changed))))
        .unwrap_or(true)
}

/// Why the keys `exprs` (over `plan`'s schema) cannot drive a key-wise refresh through the
/// plan's outer joins, given which inputs changed, if they cannot.
pub(super) fn check_keys(plan: &LogicalPlan, exprs: &[Expr], changed: Changed) -> Why {
    if !has_changing_outer_join(plan, changed) {
        return Ok(());
    }
    let mut why = Ok(());
    let _ = plan.apply(|node| {
        if let LogicalPlan::Join(join) = node {
            if matches!(join.join_type, JoinType::Full) {
                why = Err("the query has a full outer join".to_string());
            } else if !matches!(join.join_type, JoinType::Left | JoinType::Right)
                && (has_changing_outer_join(&join.left, changed)
                    || has_changing_outer_join(&join.right, changed))
            {
                why = Err("the query inner-joins the result of an outer join".to_string());
            }
        }
        Ok(if why.is_err() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    why?;
    let mut positions = BTreeSet::new();
    for expr in exprs {
        for column in expr.column_refs() {
            let position = plan
                .schema()
                .index_of_column(column)
                .map_err(|_| format!("key column {column} is not in the query's result"))?;
            positions.insert(position);
        }
    }
    preserved_only(plan, &positions, exprs, changed)
}

/// Follows the output columns at `positions` down to the scans, failing where one comes
/// from the nullable side of an outer join.
fn preserved_only(
    plan: &LogicalPlan,
    positions: &BTreeSet<usize>,
    keys: &[Expr],
    changed: Changed,
) -> Why {
    if positions.is_empty() {
        return Ok(());
    }
    match plan {
        LogicalPlan::Projection(p) => {
            let mut below = BTreeSet::new();
            for &i in positions {
                let expr = p.expr.get(i).ok_or("projection out of range")?;
                for column in expr.column_refs() {
                    if let Ok(j) = p.input.schema().index_of_column(column) {
                        below.insert(j);
                    }
                }
            }
            preserved_only(&p.input, &below, keys, changed)
        }
        LogicalPlan::Join(join) => {
            let left_len = join.left.schema().fields().len();
            let (left, right): (BTreeSet<usize>, BTreeSet<usize>) =
                positions.iter().partition(|&&i| i < left_len);
            let right: BTreeSet<usize> = right.iter().map(|i| i - left_len).collect();
            let nullable = match join.join_type {
                JoinType::Left => !right.is_empty(),
                JoinType::Right => !left.is_empty(),
                _ => false,
            };
            if nullable && changing_outer_join(join, changed) {
                let keys: Vec<String> = keys.iter().map(ToString::to_string).collect();
                return Err(format!(
                    "the key ({}) comes from the nullable side of a {} join",
                    keys.join(", "),
                    join.join_type.to_string().to_lowercase()
                ));
            }
            preserved_only(&join.left, &left, keys, changed)?;
            preserved_only(&join.right, &right, keys, changed)
        }
        LogicalPlan::TableScan(_) => Ok(()),
        other => other
            .inputs()
            .into_iter()
            .try_for_each(|input| preserved_only(input, positions, keys, changed)),
    }
}

/// The plan that traces the keys affected by a change of the input `this` recognizes, when
/// the inputs `changed` recognizes changed: filters above outer joins over changed nullable
/// sides dropped, and every outer join with `this` on its nullable side made an inner join.
pub(super) fn tracing_plan(
    plan: LogicalPlan,
    this: Changed,
    changed: Changed,
) -> datafusion::error::Result<LogicalPlan> {
    if !has_changing_outer_join(&plan, changed) {
        return Ok(plan);
    }
    // Filters first, judged on the plan as written; then the joins, bottom-up so each node's
    // schema is rebuilt over its rewritten inputs (an inner join's columns are not nullable
    // where the outer join's were).
    let unfiltered = plan.transform_down(|mut node| {
        let mut dropped = false;
        while let LogicalPlan::Filter(filter) = &node
            && has_changing_outer_join(&filter.input, changed)
        {
            node = filter.input.as_ref().clone();
            dropped = true;
        }
        Ok(if dropped {
            Transformed::yes(node)
        } else {
            Transformed::no(node)
        })
    })?;
    let traced = unfiltered.data.transform_up(|node| match node {
        LogicalPlan::Join(mut join) => {
            if changing_outer_join(&join, this) {
                join.join_type = JoinType::Inner;
            }
            Ok(Transformed::yes(
                LogicalPlan::Join(join).recompute_schema()?,
            ))
        }
        other => Ok(Transformed::yes(other.recompute_schema()?)),
    })?;
    Ok(traced.data)
}
