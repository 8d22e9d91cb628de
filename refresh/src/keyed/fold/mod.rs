//! Folding input changes into an aggregate model's groups instead of recomputing them.
//!
//! Recomputing a changed group reads every input row of it: a group of a year's rows gets a
//! year of rows read for one new row. For COUNT, SUM over exact numbers (integers, decimals),
//! MIN, MAX and decimal AVG, a group's new value follows from its old one and its changed
//! rows alone. The aggregate runs over the inputs' added rows and over their removed rows
//! (one partial row per changed group each), the changed groups' old values are read from
//! the model, and each group's values are combined:
//!
//! - COUNT and SUM: old + added - removed; a SUM is NULL when the COUNT of its argument's
//!   non-null values comes to zero, and a group whose COUNT(*) comes to zero is gone;
//! - MIN and MAX: the least or greatest of the old and added values, unless a removed value
//!   reached the old one (then the extreme may have left and the group is recomputed);
//! - AVG: the new SUM over the new COUNT of the same argument, as AVG itself divides.
//!
//! Columns computed over the aggregates (a margin dividing two sums) are computed again from
//! the combined values. Groups that cannot be combined are recomputed over the whole input:
//! groups whose MIN or MAX may have left, groups where a SUM without a COUNT of its argument
//! comes to zero after losing values (it is NULL if none is left; a nonzero sum has values
//! left, so it is exact), and, when the query has no COUNT(*) telling whether a group still
//! has rows, groups that lost more rows than they gained (the changed rows are counted, and
//! a group the model held has at least one row).
//!
//! Exactness: the model equals the query over the old inputs, so a group's old values
//! aggregate its old input rows. Its new rows are the old ones, minus its removed rows, plus
//! its added rows (rows added and later removed within the range are in both feeds). COUNT
//! and exact SUM of such a multiset are the old values plus the added ones minus the removed
//! ones; MIN of it is the least of the old minimum and the added minimum when every removed
//! value is above the old minimum (the rows holding the old minimum are still there); MAX
//! likewise. Floating-point sums are not folded (their rounding depends on the order), and
//! neither are floating-point minimums and maximums (NaN orders differently in comparisons
//! than in MIN and MAX).

mod average;
mod combine;

use combine::{ModelGroups, averages, combine, extreme_left, gone, over_aggregate, recompute};
mod shape;

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::MemTable;
use datafusion::common::{Column, JoinType};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan, cast, col, lit, when};
use datafusion::prelude::{DataFrame, SessionContext};
use deltalake::DeltaTable;

use super::on_read::{self, Located};
use super::{
    KEY_PREFIX, KEYS_ALIAS, Keys, MAX_GROUPS_PERCENT, changed_inputs, groups_of, key_prefilter,
    nullable, same, uniform, uniform_to,
};
use crate::changes::Change;
use crate::plans::{self, Inputs, ScanAs};
use crate::runtime::Runtime;
use shape::{Foldable, Role};
use tributary_sources::counting::{RowCounter, count_scans};
use tributary_sql::error::{Error, Result};

/// The new rows of the groups a fold replaces.
pub(super) struct Folded {
    /// The replaced groups' keys (columns `KEY_PREFIX` + k): folded and recomputed ones.
    pub keys: Vec<RecordBatch>,
    /// Their new rows, with the model's columns (a group that no longer has input rows has
    /// none).
    pub rows: Vec<RecordBatch>,
    pub folded: usize,
    pub recomputed: usize,
    /// The model's rows of the replaced groups, found when their old values were read.
    pub old: Option<Located>,
}

/// How a fold ended.
pub(super) enum Fold {
    Folded(Folded),
    /// So many groups need recomputing that it costs about a full refresh.
    Full(String),
}

/// Aliases of the relations the fold joins, and its own columns.
const ADDED: &str = "__tributary_added";
const REMOVED: &str = "__tributary_removed";
const OLD: &str = "__tributary_old";
const MODEL: &str = "__tributary_model";
const COMBINED: &str = "__tributary_combined";
const PRESENT: &str = "__tributary_present";
const RECOMPUTE: &str = "__tributary_recompute";
const GONE: &str = "__tributary_gone";

/// The name of the aggregate's output column `i` in the fold's relations.
fn slot(i: usize) -> String {
    format!("__tributary_value_{i}")
}

/// Folds the inputs' changes into the model's groups, or `None` when the query or the
/// changes do not allow it.
#[allow(clippy::too_many_arguments)]
pub(super) async fn fold(
    engine: &Runtime,
    state: &SessionState,
    plan: &LogicalPlan,
    keys: &Keys,
    inputs: &Inputs,
    changes: &BTreeMap<tributary_catalog::ObjectName, Change>,
    table: &DeltaTable,
    counter: &RowCounter,
) -> Result<Option<Fold>> {
    let foldable = match shape::foldable(plan) {
        Ok(foldable) => foldable,
        Err(why) => {
            tracing::debug!(why, "aggregate not folded");
            return Ok(None);
        }
    };
    let changed = changed_inputs(changes);
    if changed.is_empty() || !changed.iter().all(|name| changes[*name].has_row_feed()) {
        return Ok(None);
    }
    let ctx = SessionContext::new_with_state(state.clone());
    let reading = Reading {
        engine,
        state,
        inputs,
        changes,
        changed: &changed,
        counter,
    };
    let started = std::time::Instant::now();
    let (removed_schema, removed) = reading.partial(&foldable, ScanAs::Removed).await?;
    let removed_ms = started.elapsed().as_millis() as u64;
    let mut model_groups = ModelGroups {
        ctx: &ctx,
        table,
        count: None,
    };
    if let Some(reason) = lost_most(
        &ctx,
        &foldable,
        &keys.columns,
        &removed_schema,
        &removed,
        &mut model_groups,
    )
    .await?
    {
        return Ok(Some(Fold::Full(reason)));
    }
    let (added_schema, added) = reading.partial(&foldable, ScanAs::Added).await?;
    let added_ms = started.elapsed().as_millis() as u64;
    let added = relation(&ctx, added_schema, added, ADDED)?;
    let removed = relation(&ctx, removed_schema, removed, REMOVED)?;

    // Every changed group's key, once.
    let key_count = keys.columns.len();
    let key_slots = |alias: &str| -> Vec<Expr> {
        (0..key_count)
            .map(|k| at(alias, &slot(k)).alias(slot(k)))
            .collect()
    };
    let groups = added
        .clone()
        .select(key_slots(ADDED))?
        .union(removed.clone().select(key_slots(REMOVED))?)?
        .distinct()?;
    let group_schema = nullable(groups.schema().as_arrow());
    let group_keys = uniform_to(&group_schema, groups.collect().await?)?;
    let changed_groups: usize = group_keys.iter().map(|b| b.num_rows()).sum();
    if group_keys.iter().all(|b| b.num_rows() == 0) {
        return Ok(Some(Fold::Folded(Folded {
            keys: Vec::new(),
            rows: Vec::new(),
            folded: 0,
            recomputed: 0,
            old: None,
        })));
    }

    let (old, located) = old_values(&ctx, table, &foldable, &keys.columns, &group_keys).await?;
    let mut joined = relation(&ctx, group_schema, group_keys, KEYS_ALIAS)?;
    for (other, alias) in [(added, ADDED), (removed, REMOVED), (old, OLD)] {
        let on: Vec<Expr> = (0..key_count)
            .map(|k| same(at(KEYS_ALIAS, &slot(k)), at(alias, &slot(k))))
            .collect();
        joined = joined.join_on(other, JoinType::Left, on)?;
    }
    let mut settled = combine(&foldable)?;
    // NULL would mean unknown: recompute then.
    settled.push(recompute(&foldable)?.is_not_false().alias(RECOMPUTE));
    settled.push(gone(&foldable)?.is_true().alias(GONE));
    let settled = joined.select(settled)?.cache().await?;

    let to_recompute = settled.clone().filter(col(RECOMPUTE))?.select(
        (0..key_count)
            .map(|k| col(slot(k)).alias(format!("{KEY_PREFIX}{k}")))
            .collect::<Vec<_>>(),
    )?;
    let recompute_schema = nullable(to_recompute.schema().as_arrow());
    let recompute_keys = uniform_to(&recompute_schema, to_recompute.collect().await?)?;
    let recomputed: usize = recompute_keys.iter().map(|b| b.num_rows()).sum();
    let settled_ms = started.elapsed().as_millis() as u64;
    if let Some(reason) = model_groups.too_many(recomputed).await? {
        return Ok(Some(Fold::Full(reason)));
    }
    // Recomputing a group reads its input rows wherever they are: when they are spread over
    // every file, that is the whole input, as a full refresh reads it (the fold cannot tell
    // before reading). When most groups changed too, the merge also writes about what a full
    // refresh writes, so the fold would cost more than the full refresh.
    if recomputed > 0
        && let Some(total) = model_groups.most_of(changed_groups).await?
    {
        return Ok(Some(Fold::Full(format!(
            "{changed_groups} groups changed, more than {MAX_GROUPS_PERCENT}% of the model's {total} groups, and {recomputed} of them must be recomputed over the input: a full refresh costs about as much"
        ))));
    }
    let all_keys = settled
        .clone()
        .select(
            (0..key_count)
                .map(|k| col(slot(k)).alias(format!("{KEY_PREFIX}{k}")))
                .collect::<Vec<_>>(),
        )?
        .collect()
        .await?;
    let all_keys = uniform(all_keys.into_iter().filter(|b| b.num_rows() > 0).collect())?;
    let groups: usize = all_keys.iter().map(|b| b.num_rows()).sum();

    // The combined groups' rows: the aggregate's values, then the query's columns over them.
    let combined = settled
        .filter(col(RECOMPUTE).is_false().and(col(GONE).is_false()))?
        .select(
            (0..foldable.roles.len())
                .map(|i| col(slot(i)))
                .collect::<Vec<_>>(),
        )?;
    let combined_schema = nullable(combined.schema().as_arrow());
    let combined = uniform_to(&combined_schema, combined.collect().await?)?;
    let combined = averages(&foldable, combined)?;
    let mut rows = DataFrame::new(
        state.clone(),
        over_aggregate(plan, &foldable, combined_schema, combined)?,
    )
    .collect()
    .await?;

    let combined_ms = started.elapsed().as_millis() as u64;
    // The groups that cannot be combined, recomputed over the whole input.
    if recomputed > 0 {
        let keys_df = relation(&ctx, recompute_schema, recompute_keys.clone(), KEYS_ALIAS)?;
        let prefilter = key_prefilter(&keys.exprs, &recompute_keys)?;
        let groups = groups_of(plan.clone(), prefilter, &keys_df)?;
        rows.extend(DataFrame::new(state.clone(), groups).collect().await?);
    }
    tracing::info!(
        removed_ms,
        added_ms,
        settled_ms,
        combined_ms,
        recomputed_ms = started.elapsed().as_millis() as u64,
        "fold computed the changed groups (milliseconds since the fold started)"
    );
    let rows = rows.into_iter().filter(|b| b.num_rows() > 0).collect();
    if all_keys
        .first()
        .is_some_and(|b| b.num_columns() != key_count)
    {
        return Err(Error::Internal("folded keys lost a column".into()));
    }
    Ok(Some(Fold::Folded(Folded {
        keys: all_keys,
        rows,
        folded: groups - recomputed,
        recomputed,
        old: Some(located),
    })))
}

/// The old values of the groups in `group_keys` (key columns first), from the model
/// columns holding them, as relation [`OLD`] with [`PRESENT`].
async fn old_values(
    ctx: &SessionContext,
    table: &DeltaTable,
    foldable: &Foldable,
    key_columns: &[String],
    group_keys: &[RecordBatch],
) -> Result<(DataFrame, Located)> {
    // The groups' rows are found by their keys in the model's files (only the key columns
    // of most rows are decoded), as the merge needs them anyway.
    let located = on_read::locate(table, key_columns, group_keys, true).await?;
    let schema = table.snapshot()?.snapshot().arrow_schema();
    let rows = located
        .rows()
        .iter()
        .map(|b| tributary_storage::delta::conform(b, &schema))
        .collect::<Result<Vec<_>>>()?;
    let mut values: Vec<Expr> = foldable
        .holders
        .iter()
        .enumerate()
        .filter_map(|(i, holder)| Some(col(Column::from_name(holder.as_ref()?)).alias(slot(i))))
        .collect();
    values.push(lit(true).alias(PRESENT));
    let old = relation(ctx, schema, rows, MODEL)?
        .select(values)?
        .alias(OLD)?;
    Ok((old, located))
}

/// Why the full refresh runs instead of the fold, decided from the removed rows alone
/// (before the added rows are read): most groups of a large model lost rows, and some of
/// them must be recomputed over the input whatever was added, because a removed value
/// reached the old MIN or MAX. Recomputing even one group may read every input file, and
/// the merge writes about what a full refresh writes.
async fn lost_most(
    ctx: &SessionContext,
    foldable: &Foldable,
    key_columns: &[String],
    removed_schema: &SchemaRef,
    removed: &[RecordBatch],
    model_groups: &mut ModelGroups<'_>,
) -> Result<Option<String>> {
    let extremes = foldable
        .roles
        .iter()
        .any(|r| matches!(r, Role::Min | Role::Max));
    let lost: usize = removed.iter().map(|b| b.num_rows()).sum();
    if !extremes || lost == 0 {
        return Ok(None);
    }
    let Some(total) = model_groups.most_of(lost).await? else {
        return Ok(None);
    };
    let (old, _) = old_values(ctx, model_groups.table, foldable, key_columns, removed).await?;
    let on: Vec<Expr> = (0..foldable.aggregate.group_expr.len())
        .map(|k| same(at(REMOVED, &slot(k)), at(OLD, &slot(k))))
        .collect();
    let sure = relation(ctx, Arc::clone(removed_schema), removed.to_vec(), REMOVED)?
        .join_on(old, JoinType::Left, on)?
        .filter(extreme_left(foldable).is_not_false())?
        .count()
        .await?;
    if sure == 0 {
        return Ok(None);
    }
    if let Some(reason) = model_groups.too_many(sure).await? {
        return Ok(Some(reason));
    }
    Ok(Some(format!(
        "{lost} groups lost rows, more than {MAX_GROUPS_PERCENT}% of the model's {total} groups, and {sure} of them must be recomputed over the input: a full refresh costs about as much"
    )))
}

/// What the fold needs to read the inputs' changes.
struct Reading<'a> {
    engine: &'a Runtime,
    state: &'a SessionState,
    inputs: &'a Inputs,
    changes: &'a BTreeMap<tributary_catalog::ObjectName, Change>,
    changed: &'a [&'a tributary_catalog::ObjectName],
    counter: &'a RowCounter,
}

impl Reading<'_> {
    /// The aggregate over the changed inputs' added or removed rows: one partial row per
    /// group, columns named by [`slot`], plus [`PRESENT`]. Below the aggregate the query is
    /// linear, so each scan is its own branch and an unchanged input adds and removes nothing.
    async fn partial(
        &self,
        foldable: &Foldable,
        kind: ScanAs,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let aggregate = LogicalPlan::Aggregate(foldable.partial.clone());
        let schema = Arc::clone(aggregate.schema());
        let plan = plans::rewrite_scans(
            self.engine,
            self.state,
            aggregate,
            self.inputs,
            self.changes,
            |name, _| {
                if self.changed.contains(&name) {
                    kind
                } else {
                    ScanAs::Empty
                }
            },
        )
        .await?;
        let mut values: Vec<Expr> = (0..schema.fields().len())
            .map(|i| Expr::Column(Column::from(schema.qualified_field(i))).alias(slot(i)))
            .collect();
        values.push(lit(true).alias(PRESENT));
        let df =
            DataFrame::new(self.state.clone(), count_scans(plan, self.counter)?).select(values)?;
        let schema = nullable(df.schema().as_arrow());
        let batches = uniform_to(&schema, df.collect().await?)?;
        Ok((schema, batches))
    }
}

/// Batches as a relation named `alias`.
fn relation(
    ctx: &SessionContext,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    alias: &str,
) -> Result<DataFrame> {
    let table = MemTable::try_new(schema, vec![batches])?;
    Ok(ctx.read_table(Arc::new(table))?.alias(alias)?)
}

fn at(relation: &str, column: &str) -> Expr {
    col(Column::new(Some(relation), column))
}

/// The value of output column `i` from `relation`, zero where the relation has no row of the
/// group.
fn or_zero(foldable: &Foldable, relation: &str, i: usize) -> Result<Expr> {
    let data_type = foldable.partial.schema.field(i).data_type().clone();
    let zero = cast(lit(0i64), data_type);
    Ok(when(at(relation, &slot(i)).is_null(), zero).otherwise(at(relation, &slot(i)))?)
}
