//! Choosing how to refresh a model. The rule never bends: the result must equal a full
//! recomputation. Incremental work is chosen only where that is guaranteed; everything else
//! is a full refresh with the reason recorded.

use std::collections::BTreeMap;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan};
use tributary_catalog::{CatalogObject, ObjectName};

use super::changes::Change;

/// How one refresh runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    /// Recompute everything and replace the model's rows.
    Full,
    /// Inputs only gained rows and the query is linear: compute on the new rows and append.
    Append,
    /// Inputs only gained rows and the query selects, projects and inner-joins them: append
    /// the delta rule's rows, one branch per changed input (new rows of that input joined with
    /// the new versions of the inputs before it and the old versions of those after it).
    JoinDelta,
    /// No input changed: nothing to write.
    Unchanged,
}

impl Strategy {
    pub fn as_str(&self) -> &'static str {
        match self {
            Strategy::Full => "full",
            Strategy::Append => "incremental_append",
            Strategy::JoinDelta => "incremental_join",
            Strategy::Unchanged => "unchanged",
        }
    }
}

/// The decision with its reason and the input changes it was based on.
#[derive(Debug, Clone)]
pub struct Choice {
    pub strategy: Strategy,
    pub reason: String,
    pub changes: BTreeMap<ObjectName, Change>,
}

/// Which incremental shape a plan has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Filters, projections and UNION ALL over scans.
    Linear,
    /// Filters, projections and inner joins over scans (no UNION).
    SelectProjectJoin,
}

/// Why a plan is not linear (filters, projections and UNION ALL over scans), if it is not.
pub fn nonlinear_reason(plan: &LogicalPlan) -> Option<String> {
    shape_violation(plan, Shape::Linear)
}

/// Why a plan does not have `shape`, if it does not.
pub fn shape_violation(plan: &LogicalPlan, shape: Shape) -> Option<String> {
    let mut reason = None;
    let _ = plan.apply(|node| {
        let why = match node {
            LogicalPlan::Projection(_)
            | LogicalPlan::Filter(_)
            | LogicalPlan::TableScan(_)
            | LogicalPlan::SubqueryAlias(_) => None,
            LogicalPlan::Union(_) if shape == Shape::Linear => None,
            LogicalPlan::Union(_) => Some("the query mixes UNION with joins".to_string()),
            LogicalPlan::Join(join)
                if shape == Shape::SelectProjectJoin
                    && join.join_type == datafusion::logical_expr::JoinType::Inner =>
            {
                None
            }
            LogicalPlan::Join(join)
                if join.join_type != datafusion::logical_expr::JoinType::Inner =>
            {
                Some(format!("the query has a {} join", join.join_type))
            }
            LogicalPlan::Aggregate(_) => Some("the query aggregates".to_string()),
            LogicalPlan::Join(_) => Some("the query joins inputs".to_string()),
            LogicalPlan::Window(_) => Some("the query uses window functions".to_string()),
            LogicalPlan::Limit(_) => Some("the query has a LIMIT".to_string()),
            LogicalPlan::Distinct(_) => {
                Some("the query removes duplicates (DISTINCT or UNION)".to_string())
            }
            LogicalPlan::Sort(_) => Some("the query sorts".to_string()),
            LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_) => {
                Some("the query has constant rows".to_string())
            }
            other => Some(format!("the query uses {}", other.display())),
        };
        let why = why.or_else(|| {
            node.expressions().iter().find_map(|e| {
                if changes_between_runs(e) {
                    Some(format!(
                        "the query calls a non-deterministic function ({e})"
                    ))
                } else if contains_subquery(e) {
                    Some("the query has a subquery".to_string())
                } else {
                    None
                }
            })
        });
        match why {
            Some(w) => {
                reason = Some(w);
                Ok(TreeNodeRecursion::Stop)
            }
            None => Ok(TreeNodeRecursion::Continue),
        }
    });
    reason
}

/// Why a plan's result can change with no input changing (a non-deterministic function).
fn volatile_reason(plan: &LogicalPlan) -> Option<String> {
    let mut reason = None;
    let _ = plan.apply_with_subqueries(|node| {
        if let Some(e) = node.expressions().iter().find(|e| changes_between_runs(e)) {
            reason = Some(format!(
                "the query calls a non-deterministic function ({e})"
            ));
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    reason
}

/// Whether an expression can give another value in a later refresh with the same inputs:
/// volatile functions (`random()`) and stable ones (`now()`, `current_date`) alike.
fn changes_between_runs(e: &Expr) -> bool {
    e.exists(|e| {
        Ok(match e {
            Expr::ScalarFunction(f) => {
                f.func.signature().volatility != datafusion::logical_expr::Volatility::Immutable
            }
            _ => false,
        })
    })
    .unwrap_or(true)
}

fn contains_subquery(e: &Expr) -> bool {
    e.exists(|e| {
        Ok(matches!(
            e,
            Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
        ))
    })
    .unwrap_or(true)
}

/// Decides the strategy from the model's settings, its plan and its inputs' changes. An
/// explicit `refresh = 'append'` contract that the changes break is an error, never a silent
/// full refresh.
pub fn choose(
    model: &CatalogObject,
    plan: &LogicalPlan,
    changes: BTreeMap<ObjectName, Change>,
    full_requested: bool,
) -> crate::Result<Choice> {
    if model.options.get("refresh").map(String::as_str) == Some("append") {
        if let Some(why) = nonlinear_reason(plan) {
            return Err(crate::Error::bad_input(format!(
                "refresh = 'append' cannot hold for model \"{}\": {why}",
                model.name
            )));
        }
        if let Some((name, change)) = changes
            .iter()
            .find(|(_, c)| matches!(c, Change::Rewritten { .. }))
        {
            return Err(crate::Error::bad_input(format!(
                "refresh = 'append' contract of model \"{}\" broken by input \"{name}\": {}",
                model.name,
                change.describe()
            )));
        }
    }
    Ok(decide(model, plan, changes, full_requested))
}

fn decide(
    model: &CatalogObject,
    plan: &LogicalPlan,
    changes: BTreeMap<ObjectName, Change>,
    full_requested: bool,
) -> Choice {
    let full = |reason: String, changes| Choice {
        strategy: Strategy::Full,
        reason,
        changes,
    };
    if full_requested {
        return full("FULL was requested".into(), changes);
    }
    match model.options.get("refresh").map(String::as_str) {
        None | Some("auto") | Some("append") => {}
        Some(other) => {
            return full(format!("refresh = '{other}'"), changes);
        }
    }
    if model.published_version.is_none() {
        return full("first refresh".into(), changes);
    }
    if let Some(why) = volatile_reason(plan) {
        return full(why, changes);
    }
    if let Some((name, change)) = changes
        .iter()
        .find(|(_, c)| matches!(c, Change::Unknown(_) | Change::Rewritten { .. }))
    {
        let reason = match change {
            Change::Unknown(why) => why.clone(),
            other => format!("input \"{name}\": {}", other.describe()),
        };
        return full(reason, changes);
    }
    if changes.values().all(|c| *c == Change::Unchanged) {
        return Choice {
            strategy: Strategy::Unchanged,
            reason: "no input changed".into(),
            changes,
        };
    }
    if nonlinear_reason(plan).is_none() {
        return Choice {
            strategy: Strategy::Append,
            reason: "inputs only gained rows and the query is linear".into(),
            changes,
        };
    }
    match shape_violation(plan, Shape::SelectProjectJoin) {
        None => match scanned_twice(plan) {
            Some(table) => full(
                format!("the query reads \"{table}\" more than once"),
                changes,
            ),
            None => Choice {
                strategy: Strategy::JoinDelta,
                reason:
                    "inputs only gained rows and the query selects, projects and inner-joins them"
                        .into(),
                changes,
            },
        },
        Some(why) => full(
            format!("{why}; incremental refresh of this shape is not implemented yet"),
            changes,
        ),
    }
}

/// A table the plan scans more than once (a self-join), if any.
fn scanned_twice(plan: &LogicalPlan) -> Option<String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut twice = None;
    let _ = plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && !seen.insert(scan.table_name.to_string())
        {
            twice = Some(scan.table_name.to_string());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    twice
}
