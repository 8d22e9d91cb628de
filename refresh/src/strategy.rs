//! Choosing how to refresh a model. The rule never bends: the result must equal a full
//! recomputation. Incremental work is chosen only where that is guaranteed; everything else
//! is a full refresh with the reason recorded.

use std::collections::BTreeMap;

use datafusion::common::TableReference;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan};
use tributary_catalog::{CatalogObject, ObjectName};

use tributary_sql::options::RefreshMode;

use super::changes::Change;
use super::keyed::{self, Keys};

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
    /// Recompute the GROUP BY groups whose input rows changed and merge them into the model.
    Groups,
    /// Recompute the `unique_key` keys whose input rows changed and merge them into the model.
    Merge,
    /// No input changed: nothing to write.
    Unchanged,
}

impl Strategy {
    pub fn as_str(&self) -> &'static str {
        match self {
            Strategy::Full => "full",
            Strategy::Append => "incremental_append",
            Strategy::JoinDelta => "incremental_join",
            Strategy::Groups => "incremental_groups",
            Strategy::Merge => "incremental_merge",
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
    /// The keys a key-wise strategy recomputes by.
    pub keys: Option<Keys>,
}

/// Which incremental shape a plan has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Filters, projections and UNION ALL over scans.
    Linear,
    /// Filters, projections and inner, left and right joins over scans (no UNION).
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
            // Outer joins are checked further by the strategies (see `outer`).
            LogicalPlan::Join(join)
                if shape == Shape::SelectProjectJoin
                    && matches!(
                        join.join_type,
                        datafusion::logical_expr::JoinType::Inner
                            | datafusion::logical_expr::JoinType::Left
                            | datafusion::logical_expr::JoinType::Right
                    ) =>
            {
                None
            }
            LogicalPlan::Join(join)
                if join.join_type != datafusion::logical_expr::JoinType::Inner =>
            {
                Some(format!(
                    "the query has a {} join",
                    join.join_type.to_string().to_lowercase()
                ))
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

pub(super) fn contains_subquery(e: &Expr) -> bool {
    e.exists(|e| {
        Ok(matches!(
            e,
            Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
        ))
    })
    .unwrap_or(true)
}

/// Decides the strategy from the model's settings, its plan and its inputs' changes. An
/// explicit `refresh = 'append'` or `'merge'` contract that the query or the changes break is
/// an error, never a silent full refresh.
pub fn choose(
    model: &CatalogObject,
    plan: &LogicalPlan,
    changes: BTreeMap<ObjectName, Change>,
    full_requested: bool,
) -> crate::Result<Choice> {
    let mode = RefreshMode::of(&model.options)?;
    let broken = |why: String| {
        crate::Error::bad_input(format!(
            "refresh = '{mode}' cannot hold for model \"{}\": {why}",
            model.name
        ))
    };
    match mode {
        RefreshMode::Append => {
            if let Some(why) = nonlinear_reason(plan) {
                return Err(broken(why));
            }
        }
        RefreshMode::Merge => {
            let Some(unique_key) = model.options.get("unique_key") else {
                return Err(broken("it needs a unique_key".into()));
            };
            let changed = |table: &TableReference| changed_input(&changes, table, model);
            keyed::unique_keys(plan, unique_key, &changed).map_err(broken)?;
        }
        RefreshMode::Auto | RefreshMode::Full => {}
    }
    Ok(decide(model, mode, plan, changes, full_requested))
}

fn decide(
    model: &CatalogObject,
    mode: RefreshMode,
    plan: &LogicalPlan,
    changes: BTreeMap<ObjectName, Change>,
    full_requested: bool,
) -> Choice {
    let choice = |strategy, reason: &str, keys, changes| Choice {
        strategy,
        reason: reason.to_string(),
        changes,
        keys,
    };
    let full = |reason: String, changes| choice(Strategy::Full, &reason, None, changes);
    if full_requested {
        return full("FULL was requested".into(), changes);
    }
    if mode == RefreshMode::Full {
        return full("refresh = 'full'".into(), changes);
    }
    if model.published_version.is_none() {
        return full("first refresh".into(), changes);
    }
    if let Some(why) = volatile_reason(plan) {
        return full(why, changes);
    }
    if let Some(Change::Unknown(why)) = changes.values().find(|c| matches!(c, Change::Unknown(_))) {
        return full(why.clone(), changes);
    }
    if changes.values().all(|c| *c == Change::Unchanged) {
        return choice(Strategy::Unchanged, "no input changed", None, changes);
    }
    let rewritten = changes
        .iter()
        .find(|(_, c)| c.rewrites())
        .map(|(name, change)| format!("input \"{name}\": {}", change.describe()));
    // An explicit merge contract always merges, so its key is checked on every refresh.
    let merge_contract = mode == RefreshMode::Merge;
    if rewritten.is_none() && !merge_contract {
        if nonlinear_reason(plan).is_none() {
            let why = "inputs only gained rows and the query is linear";
            return choice(Strategy::Append, why, None, changes);
        }
        if shape_violation(plan, Shape::SelectProjectJoin).is_none() {
            if let Some(table) = scanned_twice(plan) {
                let why = format!("the query reads \"{table}\" more than once");
                return full(why, changes);
            }
            // An outer join is linear in its preserved side only while its nullable side
            // stays as it was; otherwise the key-wise strategies below may apply.
            if !super::outer::nullable_tables(plan)
                .iter()
                .any(|table| changed_input(&changes, table, model))
            {
                let why = "inputs only gained rows and the query selects, projects and joins them";
                return choice(Strategy::JoinDelta, why, None, changes);
            }
        }
    }
    let changed = |table: &TableReference| changed_input(&changes, table, model);
    // Inputs whose updated and deleted rows left no old image: only their primary key says
    // which model rows they touched.
    let upserted: Vec<(&ObjectName, &[String])> = changes
        .iter()
        .filter_map(|(name, change)| match change {
            Change::CursorUpserted { primary_key, .. } => Some((name, primary_key.as_slice())),
            _ => None,
        })
        .collect();
    let default_schema = model.default_schema.as_deref().unwrap_or("public");
    let why_not_groups = match keyed::group_keys(plan, &changed) {
        Ok(_) if !upserted.is_empty() => format!(
            "input \"{}\" updated or deleted rows, and PostgreSQL keeps no old image of them to \
             find their groups by (a unique_key model on its primary key can follow them)",
            upserted[0].0
        ),
        Ok(keys) => {
            let why = format!(
                "recomputes the groups of ({}) whose input rows changed",
                keys.columns.join(", ")
            );
            return choice(Strategy::Groups, &why, Some(keys), changes);
        }
        Err(why) => why,
    };
    let why_not = match model.options.get("unique_key") {
        Some(unique_key) => match keyed::unique_keys(plan, unique_key, &changed).and_then(|keys| {
            for (input, primary_key) in &upserted {
                keyed::primary_key_of_keys(plan, &keys, input, primary_key, default_schema)?;
            }
            Ok(keys)
        }) {
            Ok(keys) => {
                let why = format!(
                    "merges the rows of the unique_key ({}) values whose input rows changed",
                    keys.columns.join(", ")
                );
                return choice(Strategy::Merge, &why, Some(keys), changes);
            }
            Err(why) => why,
        },
        None if aggregates(plan) => why_not_groups,
        None => match rewritten {
            Some(ref change) => {
                format!("{change}, and the query has no GROUP BY or unique_key to merge by")
            }
            None => match super::outer::nullable_tables(plan)
                .iter()
                .find(|table| changed_input(&changes, table, model))
            {
                Some(table) if shape_violation(plan, Shape::SelectProjectJoin).is_none() => {
                    format!(
                        "\"{table}\" changed on the nullable side of an outer join, and the query has no GROUP BY or unique_key to merge by"
                    )
                }
                _ => nonlinear_reason(plan).unwrap_or(why_not_groups),
            },
        },
    };
    full(
        format!("{why_not}; incremental refresh of this shape is not implemented yet"),
        changes,
    )
}

/// Whether the input a scan reads changed (unqualified names are in the model's schema).
fn changed_input(
    changes: &BTreeMap<ObjectName, Change>,
    table: &TableReference,
    model: &CatalogObject,
) -> bool {
    let schema = table
        .schema()
        .or(model.default_schema.as_deref())
        .unwrap_or("public");
    changes
        .get(&ObjectName::new(schema, table.table()))
        .is_none_or(|c| *c != Change::Unchanged)
}

/// Whether the plan aggregates anywhere.
fn aggregates(plan: &LogicalPlan) -> bool {
    plan.exists(|node| Ok(matches!(node, LogicalPlan::Aggregate(_))))
        .unwrap_or(false)
}

/// A table the plan scans more than once (a self-join), if any.
pub(super) fn scanned_twice(plan: &LogicalPlan) -> Option<String> {
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
