//! How a fold combines a group's old aggregate values with its changed rows: each output
//! column from its role (a key, a sum or count netted, an extreme kept or recomputed, an
//! average from its parts), and the model's query over the combined values.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::MemTable;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, cast, lit, when};
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;

use super::super::{KEYS_ALIAS, MAX_GROUPS_PERCENT, MIN_GROUPS_FOR_FULL_LIMIT};
use super::average;
use super::shape::{Foldable, Role};
use super::{ADDED, COMBINED, OLD, PRESENT, REMOVED, at, or_zero, slot};
use tributary_sql::error::Result;

/// Old + added - removed.
pub(super) fn net(foldable: &Foldable, i: usize) -> Result<Expr> {
    Ok(or_zero(foldable, OLD, i)? + or_zero(foldable, ADDED, i)? - or_zero(foldable, REMOVED, i)?)
}

/// Each output column's combined value (AVG left NULL for [`averages`]), named by [`slot`].
pub(super) fn combine(foldable: &Foldable) -> Result<Vec<Expr>> {
    let schema = &foldable.aggregate.schema;
    let mut values = Vec::with_capacity(foldable.roles.len());
    for (i, role) in foldable.roles.iter().enumerate() {
        let data_type = schema.field(i).data_type().clone();
        let null = || -> Result<Expr> { Ok(lit(ScalarValue::try_from(&data_type)?)) };
        let (old, added) = (at(OLD, &slot(i)), at(ADDED, &slot(i)));
        let value = match role {
            Role::Key => at(KEYS_ALIAS, &slot(i)),
            Role::Count => net(foldable, i)?,
            Role::Sum { count: Some(c) } => {
                when(net(foldable, *c)?.eq(lit(0i64)), null()?).otherwise(net(foldable, i)?)?
            }
            // With no removed value, NULL only when no value was or came; else the net is not
            // NULL, except that a zero net may be NULL with no value left (`recompute`).
            Role::Sum { count: None } => when(
                at(REMOVED, &slot(i)).is_null(),
                either(old, added, |o, n| Ok(o + n))?,
            )
            .otherwise(net(foldable, i)?)?,
            Role::Min => either(old, added, |o, n| {
                when(o.clone().lt_eq(n.clone()), o).otherwise(n)
            })?,
            Role::Max => either(old, added, |o, n| {
                when(o.clone().gt_eq(n.clone()), o).otherwise(n)
            })?,
            Role::Avg { .. } => null()?,
        };
        values.push(cast(value, data_type).alias(slot(i)));
    }
    Ok(values)
}

/// `both(old, new)` where a group has both values, else whichever it has (a new group has
/// no old row; an aggregate over only NULLs is NULL).
pub(super) fn either(
    old: Expr,
    new: Expr,
    both: impl Fn(Expr, Expr) -> datafusion::error::Result<Expr>,
) -> Result<Expr> {
    Ok(when(old.clone().is_null(), new.clone())
        .when(new.clone().is_null(), old.clone())
        .otherwise(both(old, new)?)?)
}

/// Whether a group must be recomputed over the whole input: it lost rows and the model had
/// no row of it (it cannot have lost rows then, unless the model is not what its query
/// gives), or a removed value reached its old MIN or MAX, or a SUM without a COUNT of its
/// argument came to zero (NULL if no value is left), or, without a COUNT(*), it lost more
/// rows than it gained (it may have none left).
pub(super) fn recompute(foldable: &Foldable) -> Result<Expr> {
    let lost_rows = at(REMOVED, PRESENT).is_not_null();
    let mut unsure = extreme_left(foldable);
    if foldable.rows.is_none() {
        let rows = foldable.partial_rows();
        let kept = or_zero(foldable, ADDED, rows)?.gt_eq(at(REMOVED, &slot(rows)));
        unsure = unsure.or(!kept);
    }
    for (i, role) in foldable.roles.iter().enumerate() {
        if let Role::Sum { count: None } = role {
            let removed = at(REMOVED, &slot(i));
            unsure = unsure.or(removed.is_not_null().and(net(foldable, i)?.eq(lit(0i64))));
        }
    }
    Ok(lost_rows.and(unsure))
}

/// For a group that lost rows, whether it must be recomputed whatever was added: the model
/// had no row of it, or a removed value reached its old MIN or MAX.
pub(super) fn extreme_left(foldable: &Foldable) -> Expr {
    let mut unsure = at(OLD, PRESENT).is_null();
    for (i, role) in foldable.roles.iter().enumerate() {
        let (removed, old) = (at(REMOVED, &slot(i)), at(OLD, &slot(i)));
        let reached = match role {
            Role::Min => old.clone().is_null().or(removed.clone().lt_eq(old)),
            Role::Max => old.clone().is_null().or(removed.clone().gt_eq(old)),
            _ => continue,
        };
        unsure = unsure.or(removed.is_not_null().and(reached));
    }
    unsure
}

/// Whether a group has no rows left.
pub(super) fn gone(foldable: &Foldable) -> Result<Expr> {
    match foldable.rows {
        Some(rows) => Ok(net(foldable, rows)?.eq(lit(0i64))),
        // Without a COUNT(*), a group that may be gone is recomputed (`recompute`).
        None => Ok(lit(false)),
    }
}

/// The AVG columns of combined rows, from their SUM and COUNT columns.
pub(super) fn averages(foldable: &Foldable, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    let schema = &foldable.aggregate.schema;
    batches
        .into_iter()
        .map(|batch| {
            let mut columns = batch.columns().to_vec();
            for (i, role) in foldable.roles.iter().enumerate() {
                if let Role::Avg { sum, count } = role {
                    columns[i] = average::decimal_avg(
                        &columns[*sum],
                        &columns[*count],
                        schema.field(i).data_type(),
                    )?;
                }
            }
            Ok(RecordBatch::try_new(batch.schema(), columns)?)
        })
        .collect()
}

/// The query over the combined aggregate values: its plan with the aggregate replaced by
/// them, under the aggregate's own column names.
pub(super) fn over_aggregate(
    plan: &LogicalPlan,
    foldable: &Foldable,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<LogicalPlan> {
    let table = MemTable::try_new(schema, vec![batches])?;
    let aggregate = &foldable.aggregate.schema;
    let values = LogicalPlanBuilder::scan(COMBINED, provider_as_source(Arc::new(table)), None)?
        .project((0..aggregate.fields().len()).map(|i| {
            let (qualifier, field) = aggregate.qualified_field(i);
            at(COMBINED, &slot(i)).alias_qualified(qualifier.cloned(), field.name())
        }))?
        .build()?;
    let mut values = Some(values);
    let replaced = plan
        .clone()
        .transform_down(|node| match node {
            LogicalPlan::Aggregate(_) => match values.take() {
                Some(values) => Ok(Transformed::new(values, true, TreeNodeRecursion::Jump)),
                None => Ok(Transformed::no(node)),
            },
            other => Ok(Transformed::no(other)),
        })?
        .data;
    // The values may differ from the aggregate in nullability only.
    Ok(replaced
        .transform_up(|node| Ok(Transformed::yes(node.recompute_schema()?)))?
        .data)
}

/// The model's group count, read once per fold and only when a limit check needs it.
pub(super) struct ModelGroups<'a> {
    pub(super) ctx: &'a SessionContext,
    pub(super) table: &'a DeltaTable,
    pub(super) count: Option<usize>,
}

impl ModelGroups<'_> {
    /// The model's group count when `groups` is more than [`MAX_GROUPS_PERCENT`] of a large
    /// model's groups.
    pub(super) async fn most_of(&mut self, groups: usize) -> Result<Option<usize>> {
        if groups * 100 <= MIN_GROUPS_FOR_FULL_LIMIT * MAX_GROUPS_PERCENT {
            return Ok(None);
        }
        let model_groups = match self.count {
            Some(count) => count,
            None => {
                let provider = tributary_storage::delta::provider(self.table).await?;
                let count = self.ctx.read_table(provider)?.count().await?;
                *self.count.insert(count)
            }
        };
        Ok((model_groups >= MIN_GROUPS_FOR_FULL_LIMIT
            && groups * 100 > model_groups * MAX_GROUPS_PERCENT)
            .then_some(model_groups))
    }

    /// Why recomputing `groups` groups would cost about a full refresh, if it would.
    pub(super) async fn too_many(&mut self, groups: usize) -> Result<Option<String>> {
        Ok(self.most_of(groups).await?.map(|model_groups| {
            format!(
                "{groups} groups must be recomputed, more than {MAX_GROUPS_PERCENT}% of the model's {model_groups} groups: recomputing them would cost about as much"
            )
        }))
    }
}
