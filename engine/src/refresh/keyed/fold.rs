//! Folding input changes into an aggregate model's groups instead of recomputing them.
//!
//! Recomputing a changed group reads every input row of it: a group of a year's rows gets a
//! year of rows read for one new row. When the aggregates are COUNT, SUM over exact numbers
//! (integers, decimals), MIN and MAX, a group that only gained rows has a new value that
//! follows from its old one and the new rows alone: counts and sums add, minimums and
//! maximums take the smaller or greater. So the query runs over the inputs' added rows only
//! (one partial row per group), and each group's old row is read from the model and combined
//! with it. A group that lost rows (a deleted row or the old image of an updated one) cannot
//! be folded that way (a sum could subtract, but a minimum that left cannot be known), so
//! those groups are recomputed over the whole input as before.
//!
//! Exactness: the model equals the query over the old inputs, so a group's old row is the
//! aggregate of its old input rows. With no removed row of that group, its new input rows
//! are the old ones plus its added rows, and COUNT, exact SUM, MIN and MAX of a union are the
//! sum, sum, least and greatest of the parts' values. Added rows over several commits are
//! safe too: a row added and later removed is among the removed rows, so its group is
//! recomputed. Floating-point sums are not folded (their rounding depends on the order), and
//! neither are floating-point minimums and maximums (NaN orders differently in comparisons
//! than in MIN and MAX).

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::MemTable;
use datafusion::common::{Column, JoinType};
use datafusion::execution::context::SessionState;
use datafusion::functions::core::expr_fn::coalesce;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, cast, col, lit, when};
use datafusion::prelude::{DataFrame, SessionContext};
use deltalake::DeltaTable;

use super::{
    KEY_PREFIX, KEYS_ALIAS, Keys, MAX_GROUPS_PERCENT, MIN_GROUPS_FOR_FULL_LIMIT, below_keys,
    groups_of, key_prefilter, same, unalias, uniform,
};
use crate::engine::EngineInner;
use crate::error::{Error, Result};
use crate::refresh::changes::Change;
use crate::refresh::counting::{RowCounter, count_scans};
use crate::refresh::plans::{self, Inputs, ScanAs};
use crate::refresh::strategy::{self, Shape};

/// The new rows of the groups a fold replaces.
pub(super) struct Folded {
    /// The replaced groups' keys (columns `KEY_PREFIX` + k): folded and recomputed ones.
    pub keys: Vec<RecordBatch>,
    /// Their new rows, with the model's columns (a recomputed group that no longer has input
    /// rows has none).
    pub rows: Vec<RecordBatch>,
    pub folded: usize,
    pub recomputed: usize,
}

/// How a fold ended.
pub(super) enum Fold {
    Folded(Folded),
    /// So many groups lost rows that recomputing them costs about a full refresh.
    Full(String),
}

/// How a model column follows from a group's old and added values.
#[derive(Debug, Clone, Copy)]
enum Role {
    Key,
    Count,
    Sum,
    Min,
    Max,
}

/// Each model column's role, or why the query cannot be folded.
fn roles(plan: &LogicalPlan) -> std::result::Result<Vec<Role>, String> {
    // For each model column, its position in the node's output, down to the aggregate.
    let mut positions: Vec<usize> = (0..plan.schema().fields().len()).collect();
    let mut node = plan;
    let aggregate = loop {
        match node {
            LogicalPlan::Projection(p) => {
                for position in positions.iter_mut() {
                    let Expr::Column(c) = unalias(&p.expr[*position]) else {
                        return Err("the query computes over aggregates".into());
                    };
                    *position = p
                        .input
                        .schema()
                        .index_of_column(c)
                        .map_err(|e| e.to_string())?;
                }
                node = &p.input;
            }
            LogicalPlan::SubqueryAlias(a) => node = &a.input,
            LogicalPlan::Sort(s) if s.fetch.is_none() => node = &s.input,
            LogicalPlan::Aggregate(a) => break a,
            _ => return Err("the query filters or reshapes the groups".into()),
        }
    };
    if let Some(why) = strategy::shape_violation(&aggregate.input, Shape::Linear) {
        return Err(why);
    }
    let keys = aggregate.group_expr.len();
    positions
        .into_iter()
        .map(|position| {
            if position < keys {
                return Ok(Role::Key);
            }
            let Expr::AggregateFunction(f) = unalias(&aggregate.aggr_expr[position - keys]) else {
                return Err("an aggregate is not a plain aggregate function".into());
            };
            let name = f.func.name().to_lowercase();
            if f.params.distinct || f.params.filter.is_some() || !f.params.order_by.is_empty() {
                return Err(format!("{name} has DISTINCT, FILTER or ORDER BY"));
            }
            let output = aggregate.schema.field(position).data_type();
            let exact = matches!(
                output,
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
            );
            let floating = matches!(
                output,
                DataType::Float16 | DataType::Float32 | DataType::Float64
            );
            match name.as_str() {
                "count" => Ok(Role::Count),
                "sum" if exact => Ok(Role::Sum),
                "min" if !floating => Ok(Role::Min),
                "max" if !floating => Ok(Role::Max),
                _ => Err(format!("{name} over {output} does not fold")),
            }
        })
        .collect()
}

/// Folds the inputs' changes into the model's groups, or `None` when the query or the
/// changes do not allow it.
#[allow(clippy::too_many_arguments)]
pub(super) async fn fold(
    engine: &EngineInner,
    state: &SessionState,
    plan: &LogicalPlan,
    keys: &Keys,
    inputs: &Inputs,
    changes: &BTreeMap<tributary_catalog::ObjectName, Change>,
    table: &DeltaTable,
    counter: &RowCounter,
) -> Result<Option<Fold>> {
    let roles = match roles(plan) {
        Ok(roles) => roles,
        Err(why) => {
            tracing::debug!(why, "aggregate not folded");
            return Ok(None);
        }
    };
    let changed: Vec<&tributary_catalog::ObjectName> = changes
        .iter()
        .filter(|(_, c)| c.only_appends() || c.rewrites())
        .map(|(name, _)| name)
        .collect();
    let has_feed = |c: &Change| {
        matches!(
            c,
            Change::Appended { .. }
                | Change::Rewritten { .. }
                | Change::NewFiles { .. }
                | Change::CursorAppended { .. }
        )
    };
    if changed.is_empty() || !changed.iter().all(|name| has_feed(&changes[*name])) {
        return Ok(None);
    }
    let choice = strategy::Choice {
        strategy: strategy::Strategy::Full,
        reason: String::new(),
        changes: changes.clone(),
        keys: None,
    };
    // Linear below the groups: each scan is its own branch, so an unchanged input adds and
    // removes nothing.
    let changed = &changed;
    let reading = |kind: ScanAs| {
        move |name: &tributary_catalog::ObjectName, _: Option<&Change>| {
            if changed.contains(&name) {
                kind
            } else {
                ScanAs::Empty
            }
        }
    };
    let ctx = SessionContext::new_with_state(state.clone());
    let removed = plans::rewrite_scans(
        engine,
        state,
        below_keys(plan, super::KeysAt::Aggregate)?,
        inputs,
        &choice,
        reading(ScanAs::Removed),
    )
    .await?;
    let removed_keys = LogicalPlanBuilder::from(count_scans(removed, counter)?)
        .project(
            keys.exprs
                .iter()
                .enumerate()
                .map(|(k, e)| e.clone().alias(format!("{KEY_PREFIX}{k}"))),
        )?
        .distinct()?
        .build()?;
    let removed_keys = uniform(
        DataFrame::new(state.clone(), removed_keys)
            .collect()
            .await?,
    )?;
    let recomputed: usize = removed_keys.iter().map(|b| b.num_rows()).sum();
    if recomputed * 100 > MIN_GROUPS_FOR_FULL_LIMIT * MAX_GROUPS_PERCENT {
        let groups = ctx
            .read_table(crate::storage::delta::provider(table).await?)?
            .count()
            .await?;
        if groups >= MIN_GROUPS_FOR_FULL_LIMIT && recomputed * 100 > groups * MAX_GROUPS_PERCENT {
            return Ok(Some(Fold::Full(format!(
                "{recomputed} groups lost rows, more than {MAX_GROUPS_PERCENT}% of the model's {groups} groups: recomputing them would cost about as much"
            ))));
        }
    }
    let added = plans::rewrite_scans(
        engine,
        state,
        plan.clone(),
        inputs,
        &choice,
        reading(ScanAs::Added),
    )
    .await?;
    let added = DataFrame::new(state.clone(), count_scans(added, counter)?)
        .collect()
        .await?;
    let added = uniform(added)?;

    let keys_df = |batches: &[RecordBatch]| -> Result<Option<DataFrame>> {
        let Some(schema) = batches.first().map(|b| b.schema()) else {
            return Ok(None);
        };
        let table = MemTable::try_new(schema, vec![batches.to_vec()])?;
        Ok(Some(ctx.read_table(Arc::new(table))?.alias(KEYS_ALIAS)?))
    };
    let key_col = |k: usize| col(Column::new(Some(KEYS_ALIAS), format!("{KEY_PREFIX}{k}")));
    const NEW: &str = "__tributary_added";
    const OLD: &str = "__tributary_old";
    let new_col = |c: &str| col(Column::new(Some(NEW), c));
    let old_col = |c: &str| col(Column::new(Some(OLD), c));
    let model_columns: Vec<String> = plan
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();

    // The added groups that lost no rows, and their old rows.
    let mut folded_rows = Vec::new();
    let mut folded_keys = Vec::new();
    if let Some(schema) = added.first().map(|b| b.schema()) {
        let mut new_df = ctx
            .read_table(Arc::new(MemTable::try_new(schema, vec![added])?))?
            .alias(NEW)?;
        if let Some(removed_df) = keys_df(&removed_keys)? {
            let on: Vec<Expr> = keys
                .columns
                .iter()
                .enumerate()
                .map(|(k, c)| same(new_col(c), key_col(k)))
                .collect();
            new_df = new_df.join_on(removed_df, JoinType::LeftAnti, on)?;
        }
        let new_rows: Vec<RecordBatch> = new_df
            .alias(NEW)?
            .collect()
            .await?
            .into_iter()
            .filter(|b| b.num_rows() > 0)
            .collect();
        if let Some(new_schema) = new_rows.first().map(|b| b.schema()) {
            folded_keys = uniform(
                ctx.read_batches(new_rows.clone())?
                    .select(
                        keys.columns
                            .iter()
                            .enumerate()
                            .map(|(k, c)| {
                                col(Column::from_name(c)).alias(format!("{KEY_PREFIX}{k}"))
                            })
                            .collect::<Vec<Expr>>(),
                    )?
                    .collect()
                    .await?,
            )?;
            let new_df = ctx.read_batches(new_rows)?.alias(NEW)?;
            let model_keys: Vec<Expr> = keys
                .columns
                .iter()
                .map(|c| col(Column::from_name(c)))
                .collect();
            let old_df = ctx
                .read_table(crate::storage::delta::provider(table).await?)?
                .filter(key_prefilter(&model_keys, &folded_keys)?)?
                .alias(OLD)?;
            let on: Vec<Expr> = keys
                .columns
                .iter()
                .map(|c| same(new_col(c), old_col(c)))
                .collect();
            let joined = new_df.join_on(old_df, JoinType::Left, on)?;
            let mut combined = Vec::with_capacity(roles.len());
            for ((name, role), field) in model_columns.iter().zip(&roles).zip(new_schema.fields()) {
                let (new, old) = (new_col(name), old_col(name));
                let value = match role {
                    Role::Key => new,
                    Role::Count => coalesce(vec![old, lit(0i64)]) + new,
                    Role::Sum => combine(old, new, |o, n| Ok(o + n))?,
                    Role::Min => combine(old, new, |o, n| {
                        when(o.clone().lt_eq(n.clone()), o).otherwise(n)
                    })?,
                    Role::Max => combine(old, new, |o, n| {
                        when(o.clone().gt_eq(n.clone()), o).otherwise(n)
                    })?,
                };
                combined.push(cast(value, field.data_type().clone()).alias(name));
            }
            folded_rows = joined.select(combined as Vec<Expr>)?.collect().await?;
        }
    }
    let folded: usize = folded_keys.iter().map(|b| b.num_rows()).sum();

    // The groups that lost rows, recomputed over the whole input.
    let mut recomputed_rows = Vec::new();
    if let Some(removed_df) = keys_df(&removed_keys)? {
        let prefilter = key_prefilter(&keys.exprs, &removed_keys)?;
        let groups = groups_of(plan.clone(), prefilter, &removed_df)?;
        recomputed_rows = DataFrame::new(state.clone(), groups).collect().await?;
    }
    let mut all_keys = folded_keys;
    all_keys.extend(removed_keys);
    let mut rows = folded_rows;
    rows.extend(recomputed_rows);
    let rows = rows.into_iter().filter(|b| b.num_rows() > 0).collect();
    let all_keys = all_keys
        .into_iter()
        .filter(|b| b.num_rows() > 0)
        .collect::<Vec<_>>();
    if all_keys
        .first()
        .is_some_and(|b| b.num_columns() != keys.columns.len())
    {
        return Err(Error::Internal("folded keys lost a column".into()));
    }
    Ok(Some(Fold::Folded(Folded {
        keys: uniform(all_keys)?,
        rows,
        folded,
        recomputed,
    })))
}

/// `both(old, new)` where a group has both values, else whichever it has (a new group has
/// no old row; an aggregate over only NULLs is NULL).
fn combine(
    old: Expr,
    new: Expr,
    both: impl Fn(Expr, Expr) -> datafusion::error::Result<Expr>,
) -> Result<Expr> {
    Ok(when(old.clone().is_null(), new.clone())
        .when(new.clone().is_null(), old.clone())
        .otherwise(both(old, new)?)?)
}
