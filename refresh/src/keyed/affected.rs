//! Which keys a key-wise refresh recomputes: the keys of every input row that changed,
//! traced through the query below the keys, and for PostgreSQL sources without old row
//! images, the primary keys of their changed and deleted rows.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, JoinType, TableReference};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, col};
use datafusion::prelude::{DataFrame, SessionContext};
use deltalake::DeltaTable;

use super::{KEY_PREFIX, Keys, REMOTE_KEY_PREFIX, below_keys, unalias};
use crate::changes::Change;
use crate::plans::{self, Inputs, ScanAs};
use crate::runtime::Runtime;
use tributary_sql::error::{Error, Result};

/// For a source whose updated and deleted rows left no old image (PostgreSQL with a
/// `primary_key`), the primary key column each `unique_key` column passes through unchanged,
/// or why the keys are not that primary key. Only then does a changed source row touch
/// exactly the model row with its key: the old image's key is the new one's, and a deleted
/// row's key is one the model holds and the source no longer has.
pub(crate) fn primary_key_of_keys(
    plan: &LogicalPlan,
    keys: &Keys,
    input: &tributary_catalog::ObjectName,
    primary_key: &[String],
    default_schema: &str,
) -> std::result::Result<Vec<String>, String> {
    let not_it = || {
        format!(
            "input \"{input}\" updated or deleted rows, which PostgreSQL keeps no old image of, \
             and the unique_key ({}) is not its primary key ({}) passed through unchanged",
            keys.columns.join(", "),
            primary_key.join(", ")
        )
    };
    let mut columns = Vec::new();
    for expr in &keys.exprs {
        let Expr::Column(column) = expr else {
            return Err(not_it());
        };
        let index = plan
            .schema()
            .index_of_column(column)
            .map_err(|_| not_it())?;
        let (table, name) = origin(plan, index).ok_or_else(not_it)?;
        let same_table =
            table.table() == input.name && table.schema().unwrap_or(default_schema) == input.schema;
        if !same_table || !primary_key.contains(&name) || columns.contains(&name) {
            return Err(not_it());
        }
        columns.push(name);
    }
    if columns.len() != primary_key.len() {
        return Err(not_it());
    }
    Ok(columns)
}

/// The input table and column that result column `index` of `plan` is, unchanged, if it is
/// one (through projections, filters, aliases, sorts and joins).
fn origin(plan: &LogicalPlan, index: usize) -> Option<(TableReference, String)> {
    match plan {
        LogicalPlan::Projection(p) => match unalias(p.expr.get(index)?) {
            Expr::Column(c) => origin(&p.input, p.input.schema().index_of_column(c).ok()?),
            _ => None,
        },
        LogicalPlan::Filter(f) => origin(&f.input, index),
        LogicalPlan::SubqueryAlias(a) => origin(&a.input, index),
        LogicalPlan::Sort(s) => origin(&s.input, index),
        LogicalPlan::Join(join) => match join.join_type {
            JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full => {
                let left = join.left.schema().fields().len();
                if index < left {
                    origin(&join.left, index)
                } else {
                    origin(&join.right, index - left)
                }
            }
            JoinType::LeftSemi | JoinType::LeftAnti => origin(&join.left, index),
            JoinType::RightSemi | JoinType::RightAnti => origin(&join.right, index),
            _ => None,
        },
        LogicalPlan::TableScan(scan) => Some((
            scan.table_name.clone(),
            scan.projected_schema.field(index).name().clone(),
        )),
        _ => None,
    }
}

/// The plan without the UNION branches that do not read the changed input: their rows are
/// the same before and after its change, so they name no affected key (reading them would
/// make every key of an unchanged branch "affected").
fn without_other_branches(
    plan: LogicalPlan,
    reads_changed: &dyn Fn(&TableReference) -> bool,
) -> Result<LogicalPlan> {
    use datafusion::logical_expr::Union;
    let reads = |input: &LogicalPlan| {
        input
            .exists(|node| {
                Ok(matches!(node, LogicalPlan::TableScan(scan) if reads_changed(&scan.table_name)))
            })
            .unwrap_or(true)
    };
    let pruned = plan.transform_down(|node| {
        let LogicalPlan::Union(union) = node else {
            return Ok(Transformed::no(node));
        };
        if union.inputs.iter().all(|input| reads(input)) {
            return Ok(Transformed::no(LogicalPlan::Union(union)));
        }
        // Each kept branch renamed to the union's columns, so the plan above is unchanged.
        let mut kept = Vec::new();
        for input in union.inputs.iter().filter(|input| reads(input)) {
            let renamed: Vec<Expr> = input
                .schema()
                .columns()
                .into_iter()
                .zip(union.schema.iter())
                .map(|(column, (qualifier, field))| {
                    Expr::Column(column).alias_qualified(qualifier.cloned(), field.name())
                })
                .collect();
            kept.push(Arc::new(
                LogicalPlanBuilder::from(input.as_ref().clone())
                    .project(renamed)?
                    .build()?,
            ));
        }
        Ok(Transformed::yes(match kept.len() {
            0 => return Ok(Transformed::no(LogicalPlan::Union(union))),
            1 => kept.remove(0).as_ref().clone(),
            _ => LogicalPlan::Union(Union {
                inputs: kept,
                schema: Arc::clone(&union.schema),
            }),
        }))
    })?;
    Ok(pruned.data)
}

/// The distinct keys of every changed input row: for each changed input, the plan below the
/// keys with that input's changed rows (inserted, deleted and both update images) and every
/// other changed input at both its old and its new version, so rows that joined before the
/// change and rows that join after it are both traced.
///
/// A source with [`Change::CursorUpserted`] has no old images: its affected keys are the
/// primary keys of its rows after the bookmark and the keys the model holds that the source
/// no longer has (see [`upserted_keys`]). Where other changed inputs are traced, it is read
/// at its current rows, which is exact because every row of it that changed is recomputed by
/// its own key anyway.
pub(super) async fn affected_keys(
    engine: &Runtime,
    state: &SessionState,
    plan: &LogicalPlan,
    keys: &Keys,
    inputs: &Inputs,
    changes: &BTreeMap<tributary_catalog::ObjectName, Change>,
    model: &DeltaTable,
) -> Result<LogicalPlan> {
    let below = below_keys(plan, keys.at)?;
    let changed = super::changed_inputs(changes);
    let default_schema = state.config().options().catalog.default_schema.clone();
    let mut branches = Vec::new();
    for this in &changed {
        if let Some(Change::CursorUpserted {
            from,
            to,
            primary_key,
            ..
        }) = changes.get(*this)
        {
            let columns = primary_key_of_keys(plan, keys, this, primary_key, &default_schema)
                .map_err(Error::Internal)?;
            let range = (from.as_deref(), to.as_str());
            let input = inputs
                .get(*this)
                .map(|(input, _)| input)
                .ok_or_else(|| Error::Internal(format!("input {this} is not planned")))?;
            branches.push(
                upserted_keys(engine, state, input, range, &columns, keys, &below, model).await?,
            );
            continue;
        }
        let is = |name: &tributary_catalog::ObjectName, table: &TableReference| {
            table.schema().unwrap_or(&default_schema) == name.schema && table.table() == name.name
        };
        let traced =
            crate::outer::tracing_plan(below.clone(), &|table| is(this, table), &|table| {
                changed.iter().any(|name| is(name, table))
            })?;
        let traced = without_other_branches(traced, &|table| is(this, table))?;
        let branch = plans::rewrite_scans(engine, state, traced, inputs, changes, |name, _| {
            if name == *this {
                ScanAs::Changed
            } else if changed.contains(&name) {
                ScanAs::OldAndCurrent
            } else {
                ScanAs::Current
            }
        })
        .await?;
        let projected = LogicalPlanBuilder::from(branch)
            .project(
                keys.exprs
                    .iter()
                    .enumerate()
                    .map(|(k, e)| e.clone().alias(format!("{KEY_PREFIX}{k}"))),
            )?
            .build()?;
        branches.push(projected);
    }
    let mut branches = branches.into_iter();
    let first = branches
        .next()
        .ok_or_else(|| Error::Internal("key-wise refresh without a changed input".into()))?;
    let mut builder = LogicalPlanBuilder::from(first);
    for branch in branches {
        builder = builder.union(branch)?;
    }
    Ok(builder.distinct()?.build()?)
}

/// The affected keys of a source whose rows were inserted, updated or deleted without old
/// images, given the primary key column behind each model key: the keys of its rows with a
/// cursor in `(from, to]` (or NULL: those cannot be told apart over time), and the keys the
/// model holds that the source's rows up to `to` no longer have (deleted rows, and rows whose
/// primary key changed).
#[allow(clippy::too_many_arguments)]
async fn upserted_keys(
    engine: &Runtime,
    state: &SessionState,
    input: &tributary_catalog::CatalogObject,
    (from, to): (Option<&str>, &str),
    primary_key: &[String],
    keys: &Keys,
    below: &LogicalPlan,
    model: &DeltaTable,
) -> Result<LogicalPlan> {
    use datafusion::logical_expr::ExprSchemable;
    use tributary_sources::postgres::cursor_rows;
    let ctx = SessionContext::new_with_state(state.clone());
    let key_types = keys
        .exprs
        .iter()
        .map(|e| e.get_type(below.schema()))
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    let as_keys = |names: &[String], prefix: &str| -> Vec<Expr> {
        names
            .iter()
            .zip(&key_types)
            .enumerate()
            .map(|(k, (name, data_type))| {
                datafusion::logical_expr::cast(col(Column::from_name(name)), data_type.clone())
                    .alias(format!("{prefix}{k}"))
            })
            .collect()
    };
    // Scans named after the source, as in the model's own plan: federation rewrites them
    // into queries on the remote table.
    let name = TableReference::partial(input.name.schema.as_str(), input.name.name.as_str());
    let read = |provider| -> Result<DataFrame> {
        let source = datafusion::datasource::provider_as_source(provider);
        let scan = LogicalPlanBuilder::scan(name.clone(), source, None)?.build()?;
        Ok(DataFrame::new(state.clone(), scan))
    };
    let changed = read(cursor_rows(engine.catalog(), state, input, from, Some(to), true).await?)?
        .select(as_keys(primary_key, KEY_PREFIX))?;
    // Distinct names rather than aliases on the two sides: the remote side must stay plain
    // enough for the federation's SQL unparser.
    let remaining = read(cursor_rows(engine.catalog(), state, input, None, Some(to), true).await?)?
        .select(as_keys(primary_key, REMOTE_KEY_PREFIX))?;
    let held = ctx
        .read_table(tributary_storage::delta::provider(model).await?)?
        .select(as_keys(&keys.columns, KEY_PREFIX))?;
    let on: Vec<Expr> = (0..primary_key.len())
        .map(|k| {
            col(Column::from_name(format!("{KEY_PREFIX}{k}")))
                .eq(col(Column::from_name(format!("{REMOTE_KEY_PREFIX}{k}"))))
        })
        .collect();
    let deleted = held.join_on(remaining, JoinType::LeftAnti, on)?;
    Ok(changed.union(deleted)?.into_unoptimized_plan())
}
