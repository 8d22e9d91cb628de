//! Key-wise refresh: recompute only the keys whose rows changed and replace exactly those.
//!
//! Two plans have keys that fence off their rows: an aggregate (its GROUP BY keys; a group's
//! row depends only on the input rows of that group) and a model with a `unique_key` whose
//! query is linear or joins (each output row comes from input rows that carry its key).
//! The affected keys are the keys of every input row that changed (inserted, deleted, or
//! either image of an update), evaluated through the query below the keys. Recomputing the
//! query for those keys only and MERGEing the result into the model (update, insert, or
//! delete the keys that no longer produce a row) gives exactly the full recomputation: a row
//! of the old or new result that differs between them has an affected key, so rows of other
//! keys are the same in both.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::catalog::MemTable;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, JoinType};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{
    Aggregate, Expr, LogicalPlan, LogicalPlanBuilder, Operator, col, lit,
};
use datafusion::prelude::{DataFrame, SessionContext};
use deltalake::DeltaTable;
use deltalake::kernel::transaction::CommitProperties;

use super::changes::Change;
use super::strategy::{self, Shape};
use tributary_sql::error::{Error, Result};

mod affected;
mod fold;
mod from_feed;
mod merge;
mod on_read;

pub(crate) use merge::KeyWiseRefresh;

pub(crate) use affected::primary_key_of_keys;

/// Where the keys are evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeysAt {
    /// The GROUP BY keys, on the rows the aggregate reads.
    Aggregate,
    /// The `unique_key` columns, on the query's result.
    Result,
}

/// The keys that partition a model's rows.
#[derive(Debug, Clone)]
pub struct Keys {
    pub at: KeysAt,
    /// The key expressions, over the schema of the plan below the keys.
    exprs: Vec<Expr>,
    /// The model column holding each key.
    pub columns: Vec<String>,
}

const KEY_PREFIX: &str = "__tributary_key_";
const REMOTE_KEY_PREFIX: &str = "__tributary_remote_key_";
const PRESENT: &str = "__tributary_present";
const KEYS_ALIAS: &str = "__tributary_keys";
const NEW_ALIAS: &str = "__tributary_new";

/// The GROUP BY keys of an aggregate query whose key groups can be recomputed one by one, or
/// why the query is not one.
pub(crate) fn group_keys(
    plan: &LogicalPlan,
    changed: super::outer::Changed,
) -> std::result::Result<Keys, String> {
    let mut chain = Vec::new();
    let mut node = plan;
    let aggregate = loop {
        match node {
            LogicalPlan::Projection(p) => node = &p.input,
            LogicalPlan::Filter(f) => node = &f.input,
            LogicalPlan::SubqueryAlias(a) => node = &a.input,
            LogicalPlan::Sort(s) if s.fetch.is_none() => node = &s.input,
            LogicalPlan::Aggregate(a) => break a,
            other => {
                return Err(strategy::shape_violation(other, Shape::Linear)
                    .unwrap_or_else(|| "the query does not end in GROUP BY".into()));
            }
        }
        chain.push(node);
    };
    if aggregate.group_expr.is_empty() {
        return Err("the query aggregates without GROUP BY".into());
    }
    if aggregate
        .group_expr
        .iter()
        .any(|e| matches!(e, Expr::GroupingSet(_)))
    {
        return Err("the query uses GROUPING SETS, ROLLUP or CUBE".into());
    }
    check_below_keys(&aggregate.input)?;
    for node in std::iter::once(plan).chain(chain.iter().copied()) {
        if node.expressions().iter().any(strategy::contains_subquery) {
            return Err("the query has a subquery".into());
        }
    }
    // Follow each key from the aggregate's output up to the model's columns.
    let mut positions: Vec<usize> = (0..aggregate.group_expr.len()).collect();
    let mut above: Vec<&LogicalPlan> = vec![plan];
    above.extend(chain.iter().copied());
    above.pop(); // the aggregate itself
    for node in above.iter().rev() {
        if let LogicalPlan::Projection(p) = node {
            for (k, position) in positions.iter_mut().enumerate() {
                let found = p.expr.iter().position(|e| match unalias(e) {
                    Expr::Column(c) => p.input.schema().index_of_column(c).ok() == Some(*position),
                    _ => false,
                });
                match found {
                    Some(j) => *position = j,
                    None => {
                        return Err(format!(
                            "GROUP BY key {} is not a column of the result",
                            aggregate.group_expr[k]
                        ));
                    }
                }
            }
        }
    }
    super::outer::check_keys(&aggregate.input, &aggregate.group_expr, changed)?;
    Ok(Keys {
        at: KeysAt::Aggregate,
        exprs: aggregate.group_expr.clone(),
        columns: positions
            .iter()
            .map(|p| plan.schema().field(*p).name().clone())
            .collect(),
    })
}

/// The `unique_key` columns of a linear or joining query, or why they cannot drive a merge.
pub(crate) fn unique_keys(
    plan: &LogicalPlan,
    unique_key: &str,
    changed: super::outer::Changed,
) -> std::result::Result<Keys, String> {
    check_below_keys(plan)?;
    let mut exprs = Vec::new();
    let mut columns = Vec::new();
    for name in unique_key
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        let field = plan
            .schema()
            .iter()
            .find(|(_, f)| f.name() == name)
            .ok_or_else(|| format!("unique_key column \"{name}\" is not a column of the result"))?;
        exprs.push(Expr::Column(Column::from(field)));
        columns.push(name.to_string());
    }
    if columns.is_empty() {
        return Err("unique_key names no column".into());
    }
    super::outer::check_keys(plan, &exprs, changed)?;
    Ok(Keys {
        at: KeysAt::Result,
        exprs,
        columns,
    })
}

/// The part of the plan below the keys must let changed input rows be traced to their keys:
/// filters, projections, UNION ALL and joins (outer ones as `outer` allows), each input read
/// once.
fn check_below_keys(plan: &LogicalPlan) -> std::result::Result<(), String> {
    let linear = strategy::shape_violation(plan, Shape::Linear);
    if linear.is_some()
        && let Some(why) = strategy::shape_violation(plan, Shape::SelectProjectJoin)
    {
        return Err(why);
    }
    if let Some(table) = strategy::scanned_twice(plan) {
        return Err(format!("the query reads \"{table}\" more than once"));
    }
    Ok(())
}

/// The inputs whose rows changed.
fn changed_inputs(
    changes: &BTreeMap<tributary_catalog::ObjectName, Change>,
) -> Vec<&tributary_catalog::ObjectName> {
    changes
        .iter()
        .filter(|(_, c)| c.only_appends() || c.rewrites())
        .map(|(name, _)| name)
        .collect()
}

fn unalias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => unalias(&a.expr),
        other => other,
    }
}

/// The plan below the keys: the aggregate's input, or the whole query.
fn below_keys(plan: &LogicalPlan, at: KeysAt) -> Result<LogicalPlan> {
    match at {
        KeysAt::Result => Ok(plan.clone()),
        KeysAt::Aggregate => {
            let mut found = None;
            plan.apply(|node| {
                if let LogicalPlan::Aggregate(a) = node {
                    found = Some(a.input.as_ref().clone());
                    return Ok(datafusion::common::tree_node::TreeNodeRecursion::Stop);
                }
                Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
            })?;
            found.ok_or_else(|| Error::Internal("aggregate expected".into()))
        }
    }
}

/// A `unique_key` model with more rows than this is refreshed fully when more than
/// [`MAX_MERGE_KEY_PERCENT`] of its rows changed keys.
const MIN_ROWS_FOR_MERGE_LIMIT: usize = 10_000;
/// Copy-on-write Delta rewrites every file holding a merged key: past this share of a large
/// model's rows, the changed keys reach nearly every file and a full refresh (which writes
/// the same files without the join) is cheaper.
const MAX_MERGE_KEY_PERCENT: usize = 1;
/// With deletion vectors a merge reads the model's key columns and writes the new rows
/// only; it stops paying off when recomputing the keys costs nearly a full refresh.
const MAX_MERGE_ON_READ_KEY_PERCENT: usize = 20;

/// An aggregate model with more groups than this is refreshed fully when more than
/// [`MAX_GROUPS_PERCENT`] of its groups changed: recomputing a group reads every input row
/// of it, so recomputing most groups reads about what a full refresh reads, and merges too.
const MIN_GROUPS_FOR_FULL_LIMIT: usize = 1_000;
const MAX_GROUPS_PERCENT: usize = 50;

/// How a key-wise refresh ended.
pub(crate) enum KeyWise {
    Merged(Merged),
    /// Too many keys changed for a merge to pay off; the table is unchanged.
    Full {
        table: DeltaTable,
        reason: String,
    },
}

/// What a key-wise refresh wrote.
pub(crate) struct Merged {
    pub table: DeltaTable,
    pub rows_written: i64,
    pub keys: usize,
    /// Affected keys withheld as later than the model's lateness.
    pub late_rows: Option<i64>,
    /// The model's files the merge read, of all it had, and the files it replaced.
    pub files_read: usize,
    pub files_total: usize,
    pub files_rewritten: usize,
    /// Rows marked deleted by deletion vectors, and in how many files (merges on read).
    pub rows_marked_deleted: Option<(u64, usize)>,
    /// Where the new rows came from.
    pub source: NewRows,
}

impl Merged {
    /// What the merge did, for the run's reason: `3 keys, 1 of 4 files read, 1 rewritten` or
    /// `3 keys, 1 of 4 files read, 3 rows marked deleted in 1 file`.
    pub(crate) fn summary(&self) -> String {
        if self.keys == 0 {
            return "0 keys".into();
        }
        let written = match self.rows_marked_deleted {
            Some((rows, files)) => format!(
                "{rows} {} marked deleted in {files} {}",
                if rows == 1 { "row" } else { "rows" },
                if files == 1 { "file" } else { "files" }
            ),
            None => format!("{} rewritten", self.files_rewritten),
        };
        let source = match self.source {
            NewRows::Recomputed => String::new(),
            NewRows::FromFeed => ", new rows from the change feed".into(),
            NewRows::Folded { folded, recomputed } => {
                format!(", {folded} folded from their changed rows, {recomputed} recomputed")
            }
        };
        format!(
            "{} keys{source}, {} of {} files read, {written}",
            self.keys, self.files_read, self.files_total
        )
    }
}

/// Where a key-wise refresh's new rows came from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum NewRows {
    /// The query over the affected keys' input rows.
    Recomputed,
    /// The query over the single changed input's added rows (`from_feed`).
    FromFeed,
    /// Groups combined from their old values and changed rows, the others recomputed
    /// (`fold`).
    Folded { folded: usize, recomputed: usize },
}

/// Most distinct values of a key column that the prefilter lists one by one; past that it
/// filters by the values' range. Kept small: Delta's scan lowers an IN list to a chain of
/// ORs, as deep as the list is long, and Parquet statistics prune nothing with long lists.
const MAX_PREFILTER_VALUES: usize = 64;

/// A filter implied by the affected keys that the optimizer can push down to the scans, so
/// Delta and Parquet statistics skip files and row groups without affected keys (the
/// semi-join alone would read every row): per key column, `key IN (values)` for a few
/// values, `key BETWEEN min AND max` for more.
fn key_prefilter(
    exprs: &[Expr],
    batches: &[datafusion::arrow::record_batch::RecordBatch],
) -> Result<Expr> {
    use datafusion::common::ScalarValue;
    let mut filter = lit(true);
    for (k, expr) in exprs.iter().enumerate() {
        let mut values = std::collections::HashSet::new();
        let mut range: Option<(ScalarValue, ScalarValue)> = None;
        let mut ordered = true;
        let mut nulls = false;
        for batch in batches {
            let column = batch.column(k);
            for row in 0..batch.num_rows() {
                let value = ScalarValue::try_from_array(column, row)?;
                if value.is_null() {
                    nulls = true;
                    continue;
                }
                range = match range {
                    None => Some((value.clone(), value.clone())),
                    Some((low, high)) => {
                        match (value.partial_cmp(&low), value.partial_cmp(&high)) {
                            (Some(to_low), Some(to_high)) => Some((
                                if to_low.is_lt() { value.clone() } else { low },
                                if to_high.is_gt() { value.clone() } else { high },
                            )),
                            _ => {
                                ordered = false;
                                Some((low, high))
                            }
                        }
                    }
                };
                if values.len() <= MAX_PREFILTER_VALUES {
                    values.insert(value);
                }
            }
        }
        let mut this = if values.len() <= MAX_PREFILTER_VALUES {
            expr.clone()
                .in_list(values.into_iter().map(lit).collect(), false)
        } else {
            match range {
                Some((low, high)) if ordered => expr.clone().between(lit(low), lit(high)),
                _ => continue,
            }
        };
        if nulls {
            this = this.or(expr.clone().is_null());
        }
        filter = filter.and(this);
    }
    Ok(filter)
}

/// Batches under one schema (the first's, every column nullable, other batches' columns cast
/// to its types), so a memory table takes them: the branches of a UNION yield batches whose
/// fields differ in nullability (a literal is never null, a column may be).
fn uniform(
    batches: Vec<datafusion::arrow::record_batch::RecordBatch>,
) -> Result<Vec<datafusion::arrow::record_batch::RecordBatch>> {
    match batches.first() {
        Some(first) => {
            let schema = nullable(&first.schema());
            uniform_to(&schema, batches)
        }
        None => Ok(batches),
    }
}

/// `schema` with every field nullable.
fn nullable(
    schema: &datafusion::arrow::datatypes::Schema,
) -> datafusion::arrow::datatypes::SchemaRef {
    use datafusion::arrow::datatypes::{Field, Schema};
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| Field::new(f.name(), f.data_type().clone(), true))
        .collect();
    Arc::new(Schema::new(fields))
}

/// The batches with `schema`, their columns cast to its types.
fn uniform_to(
    schema: &datafusion::arrow::datatypes::SchemaRef,
    batches: Vec<datafusion::arrow::record_batch::RecordBatch>,
) -> Result<Vec<datafusion::arrow::record_batch::RecordBatch>> {
    batches
        .into_iter()
        .map(|batch| {
            let columns = batch
                .columns()
                .iter()
                .zip(schema.fields())
                .map(|(column, field)| datafusion::arrow::compute::cast(column, field.data_type()))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(datafusion::arrow::record_batch::RecordBatch::try_new(
                Arc::clone(schema),
                columns,
            )?)
        })
        .collect()
}

/// The rows of `plan`, computed now and held in memory.
async fn materialize(state: &SessionState, plan: LogicalPlan) -> Result<LogicalPlan> {
    let schema = nullable(plan.schema().as_arrow());
    let batches = uniform_to(
        &schema,
        DataFrame::new(state.clone(), plan).collect().await?,
    )?;
    let rows = Arc::new(MemTable::try_new(schema, vec![batches])?);
    let ctx = SessionContext::new_with_state(state.clone());
    Ok(ctx.read_table(rows)?.into_unoptimized_plan())
}

/// Nothing to replace: commits anyway so the new bookmarks are recorded.
async fn commit_nothing(
    state: &SessionState,
    plan: LogicalPlan,
    table: DeltaTable,
    commit: CommitProperties,
) -> Result<KeyWise> {
    let empty = LogicalPlanBuilder::from(plan).limit(0, Some(0))?.build()?;
    let table = table
        .write(Vec::new())
        .with_input_plan(empty)
        .with_session_state(Arc::new(state.clone()))
        .with_save_mode(deltalake::protocol::SaveMode::Append)
        .with_commit_properties(commit)
        .await?;
    Ok(KeyWise::Merged(Merged {
        table,
        rows_written: 0,
        keys: 0,
        late_rows: None,
        files_read: 0,
        files_total: 0,
        files_rewritten: 0,
        rows_marked_deleted: None,
        source: NewRows::Recomputed,
    }))
}

/// The aggregate query over only the input rows of the groups in `keys_df` (its columns
/// named `KEY_PREFIX` + k, aliased `KEYS_ALIAS`), with `prefilter` (bounds of those keys) to
/// let scans prune first.
fn groups_of(plan: LogicalPlan, prefilter: Expr, keys_df: &DataFrame) -> Result<LogicalPlan> {
    let key_col = |k: usize| col(Column::new(Some(KEYS_ALIAS), format!("{KEY_PREFIX}{k}")));
    Ok(plan
        .transform_up(|node| match node {
            LogicalPlan::Aggregate(a) => {
                let input = LogicalPlanBuilder::from(a.input.as_ref().clone())
                    .filter(prefilter.clone())?
                    .join_on(
                        keys_df.logical_plan().clone(),
                        JoinType::LeftSemi,
                        key_matches(&a.group_expr, &key_col),
                    )?
                    .build()?;
                Ok(Transformed::yes(LogicalPlan::Aggregate(
                    Aggregate::try_new(Arc::new(input), a.group_expr, a.aggr_expr)?,
                )))
            }
            other => Ok(Transformed::no(other)),
        })?
        .data)
}

fn by_key(state: &SessionState, rows: LogicalPlan, keys: &Keys) -> Result<DataFrame> {
    Ok(DataFrame::new(state.clone(), rows).sort(
        keys.columns
            .iter()
            .map(|c| col(Column::from_name(c)).sort(true, false))
            .collect(),
    )?)
}

/// The commit of a merge on read that was given no expected row count (so it always commits).
fn committed(outcome: on_read::Outcome) -> Result<on_read::Marked> {
    match outcome {
        on_read::Outcome::Committed(marked) => Ok(marked),
        on_read::Outcome::Unexpected { .. } => Err(Error::Internal(
            "a merge on read expected no row count".into(),
        )),
    }
}

fn merged_on_read(
    marked: on_read::Marked,
    keys: usize,
    late_rows: Option<i64>,
    source: NewRows,
) -> KeyWise {
    KeyWise::Merged(Merged {
        table: marked.table,
        rows_written: marked.rows_written,
        keys,
        late_rows,
        files_read: marked.files_read,
        files_total: marked.files_total,
        files_rewritten: 0,
        rows_marked_deleted: Some((marked.rows_deleted, marked.files_marked)),
        source,
    })
}

async fn unique_rows(state: &SessionState, plan: LogicalPlan, keys: &Keys) -> Result<LogicalPlan> {
    use datafusion::functions_aggregate::expr_fn::count;
    let rows = materialize(state, plan).await?;
    let key_exprs: Vec<Expr> = keys
        .columns
        .iter()
        .map(|c| col(Column::from_name(c)))
        .collect();
    let duplicates = DataFrame::new(state.clone(), rows.clone())
        .aggregate(key_exprs, vec![count(lit(1)).alias("copies")])?
        .filter(col("copies").gt(lit(1)))?
        .limit(0, Some(1))?
        .collect()
        .await?;
    if let Some(batch) = duplicates.iter().find(|b| b.num_rows() > 0) {
        let shown: Vec<String> = super::changes::first_row(batch)?
            .into_iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        return Err(Error::bad_input(format!(
            "unique_key ({}) is not unique in the new rows: {}",
            keys.columns.join(", "),
            shown.join(", ")
        )));
    }
    Ok(rows)
}

/// `expr IS NOT DISTINCT FROM key` for each key: GROUP BY puts NULLs in one group.
fn key_matches(exprs: &[Expr], key_col: &impl Fn(usize) -> Expr) -> Vec<Expr> {
    exprs
        .iter()
        .enumerate()
        .map(|(k, e)| same(e.clone(), key_col(k)))
        .collect()
}

/// `left IS NOT DISTINCT FROM right`.
fn same(left: Expr, right: Expr) -> Expr {
    datafusion::logical_expr::binary_expr(left, Operator::IsNotDistinctFrom, right)
}

/// A merge that matched one model row with several new rows means the key is not unique.
fn merge_error(error: deltalake::DeltaTableError, keys: &Keys) -> Error {
    let text = error.to_string();
    if text.contains("multiple") || text.contains("duplicate") {
        return Error::bad_input(format!(
            "unique_key ({}) is not unique in the new rows: {text}",
            keys.columns.join(", ")
        ));
    }
    error.into()
}
