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
use super::lateness::Lateness;
use super::plans::Inputs;
use super::strategy::{self, Shape};
use crate::runtime::Runtime;
use tributary_sources::counting::{RowCounter, count_scans};
use tributary_sql::error::{Error, Result};

mod affected;
mod fold;
mod from_feed;
mod on_read;

pub use affected::primary_key_of_keys;

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
pub fn group_keys(
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
pub fn unique_keys(
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
pub enum KeyWise {
    Merged(Merged),
    /// Too many keys changed for a merge to pay off; the table is unchanged.
    Full {
        table: DeltaTable,
        reason: String,
    },
}

/// What a key-wise refresh wrote.
pub struct Merged {
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
    pub fn summary(&self) -> String {
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
pub enum NewRows {
    /// The query over the affected keys' input rows.
    Recomputed,
    /// The query over the single changed input's added rows (`from_feed`).
    FromFeed,
    /// Groups combined from their old values and changed rows, the others recomputed
    /// (`fold`).
    Folded { folded: usize, recomputed: usize },
}

/// Recomputes the affected keys of a model and merges them into its table in one commit.
#[allow(clippy::too_many_arguments)]
pub(super) async fn refresh_keys(
    engine: &Runtime,
    state: &SessionState,
    plan: LogicalPlan,
    keys: &Keys,
    inputs: &Inputs,
    changes: &BTreeMap<tributary_catalog::ObjectName, Change>,
    table: DeltaTable,
    commit: CommitProperties,
    counter: &RowCounter,
    lateness: Option<&Lateness>,
    layout: Option<deltalake::parquet::file::properties::WriterProperties>,
) -> Result<KeyWise> {
    let ctx = SessionContext::new_with_state(state.clone());
    let started = std::time::Instant::now();
    let plan = count_scans(plan, counter)?;
    let on_read = tributary_storage::deletion::enabled(&table);
    if keys.at == KeysAt::Aggregate
        && on_read
        && lateness.is_none()
        && let Some(fold) =
            fold::fold(engine, state, &plan, keys, inputs, changes, &table, counter).await?
    {
        let folded = match fold {
            fold::Fold::Full(reason) => return Ok(KeyWise::Full { table, reason }),
            fold::Fold::Folded(folded) => folded,
        };
        if folded.keys.is_empty() {
            return commit_nothing(state, plan, table, commit).await;
        }
        let source = NewRows::Folded {
            folded: folded.folded,
            recomputed: folded.recomputed,
        };
        let old = match folded.old {
            Some(located) => on_read::OldRows::Located(located),
            None => on_read::OldRows::Search,
        };
        let outcome = on_read::merge(
            table,
            &keys.columns,
            &folded.keys,
            folded.rows,
            (commit, layout),
            old,
        )
        .await?;
        let marked = committed(outcome)?;
        tracing::info!(
            folded = folded.folded,
            recomputed = folded.recomputed,
            ms = started.elapsed().as_millis() as u64,
            "aggregate refresh folded the added rows"
        );
        return Ok(merged_on_read(
            marked,
            folded.folded + folded.recomputed,
            None,
            source,
        ));
    }
    let affected =
        affected::affected_keys(engine, state, &plan, keys, inputs, changes, &table).await?;
    let affected = count_scans(affected, counter)?;
    let mut key_batches = uniform(DataFrame::new(state.clone(), affected).collect().await?)?;
    let mut late_rows = None;
    if let Some(lateness) = lateness
        && let Some(k) = keys.columns.iter().position(|c| *c == lateness.column)
        && let Some(schema) = key_batches.first().map(|b| b.schema())
    {
        // Keys later than the lateness are withheld: neither recomputed nor deleted.
        let before: usize = key_batches.iter().map(|b| b.num_rows()).sum();
        let all = Arc::new(MemTable::try_new(schema, vec![key_batches])?);
        key_batches = ctx
            .read_table(all)?
            .filter(lateness.on_time(&format!("{KEY_PREFIX}{k}")))?
            .collect()
            .await?;
        let after: usize = key_batches.iter().map(|b| b.num_rows()).sum();
        late_rows = Some((before - after) as i64);
    }
    let key_count: usize = key_batches.iter().map(|b| b.num_rows()).sum();
    let keys_ms = started.elapsed().as_millis() as u64;
    let Some(key_schema) = key_batches
        .first()
        .map(|b| b.schema())
        .filter(|_| key_count > 0)
    else {
        let nothing = commit_nothing(state, plan, table, commit).await?;
        return Ok(match nothing {
            KeyWise::Merged(merged) => KeyWise::Merged(Merged {
                late_rows,
                ..merged
            }),
            full => full,
        });
    };
    let max_percent = if on_read {
        MAX_MERGE_ON_READ_KEY_PERCENT
    } else {
        MAX_MERGE_KEY_PERCENT
    };
    let (min_rows, max_percent) = match keys.at {
        KeysAt::Result => (MIN_ROWS_FOR_MERGE_LIMIT, max_percent),
        KeysAt::Aggregate => (MIN_GROUPS_FOR_FULL_LIMIT, MAX_GROUPS_PERCENT),
    };
    // Below this many keys no model of at least `min_rows` rows passes the limit: no count.
    let model_rows = if key_count * 100 > min_rows * max_percent {
        ctx.read_table(tributary_storage::delta::provider(&table).await?)?
            .count()
            .await?
    } else {
        0
    };
    if model_rows >= min_rows && key_count * 100 > model_rows * max_percent {
        let reason = match keys.at {
            KeysAt::Result => format!(
                "{key_count} keys changed, more than {max_percent}% of the model's {model_rows} rows: a merge would cost about as much"
            ),
            KeysAt::Aggregate => format!(
                "{key_count} groups changed, more than {max_percent}% of the model's {model_rows} groups: recomputing them would cost about as much"
            ),
        };
        return Ok(KeyWise::Full { table, reason });
    }
    // Straight from the change feed when it can be, checked against the model (`from_feed`).
    let (table, commit) = if on_read
        && keys.at == KeysAt::Result
        && late_rows.is_none()
        && let Some(feed) =
            from_feed::rows_from_feed(engine, state, &plan, inputs, changes, counter).await?
    {
        let recompute_started = std::time::Instant::now();
        let rows = by_key(state, unique_rows(state, feed.added, keys).await?, keys)?;
        let recompute_ms = recompute_started.elapsed().as_millis() as u64;
        let expected: usize = feed.removed.iter().map(|b| b.num_rows()).sum();
        let outcome = on_read::merge(
            table,
            &keys.columns,
            &key_batches,
            rows.collect().await?,
            (commit, layout.clone()),
            on_read::OldRows::Expected(feed.removed),
        )
        .await?;
        match outcome {
            on_read::Outcome::Committed(marked) => {
                tracing::info!(
                    keys = key_count,
                    keys_ms,
                    recompute_ms,
                    "key-wise refresh merged on read, new rows from the change feed"
                );
                return Ok(merged_on_read(
                    marked,
                    key_count,
                    late_rows,
                    NewRows::FromFeed,
                ));
            }
            on_read::Outcome::Unexpected {
                table,
                commit,
                found,
            } => {
                tracing::info!(
                    expected,
                    found,
                    "the model holds rows of affected keys that unchanged input rows give: recomputing the keys"
                );
                (table, commit)
            }
        }
    } else {
        (table, commit)
    };
    let prefilter = key_prefilter(&keys.exprs, &key_batches)?;
    // The same bounds on the model's own key columns, for the MERGE: Delta then leaves the
    // files whose key range holds no affected key untouched instead of rewriting them (its
    // own pruning reads only `=` join terms, and the keys are joined NULL-safely).
    let target = |c: &str| col(Column::new(Some("target"), c));
    let model_key_filter = key_prefilter(
        &keys.columns.iter().map(|c| target(c)).collect::<Vec<_>>(),
        &key_batches,
    )?;
    let affected_keys = on_read.then(|| key_batches.clone());
    let key_table = Arc::new(MemTable::try_new(key_schema, vec![key_batches])?);
    let keys_df = ctx.read_table(key_table)?.alias(KEYS_ALIAS)?;
    let key_col = |k: usize| col(Column::new(Some(KEYS_ALIAS), format!("{KEY_PREFIX}{k}")));

    // The new rows of the affected keys.
    let recompute = match keys.at {
        KeysAt::Aggregate => groups_of(plan, prefilter, &keys_df)?,
        KeysAt::Result => LogicalPlanBuilder::from(plan)
            .filter(prefilter)?
            .join_on(
                keys_df.logical_plan().clone(),
                JoinType::LeftSemi,
                key_matches(&keys.exprs, &key_col),
            )?
            .build()?,
    };
    // The new rows are computed once, here, with the optimizer's full parallel plan; the
    // MERGE then only joins them (few rows) with the model.
    let recompute_started = std::time::Instant::now();
    let recompute = match keys.at {
        KeysAt::Aggregate => materialize(state, recompute).await?,
        KeysAt::Result => unique_rows(state, recompute, keys).await?,
    };
    let recompute_ms = recompute_started.elapsed().as_millis() as u64;
    if let Some(affected_keys) = affected_keys {
        let rows = match keys.at {
            KeysAt::Result => by_key(state, recompute, keys)?,
            KeysAt::Aggregate => DataFrame::new(state.clone(), recompute),
        };
        let outcome = on_read::merge(
            table,
            &keys.columns,
            &affected_keys,
            rows.collect().await?,
            (commit, layout),
            on_read::OldRows::Search,
        )
        .await?;
        let marked = committed(outcome)?;
        tracing::info!(
            keys = key_count,
            keys_ms,
            recompute_ms,
            "key-wise refresh merged on read"
        );
        return Ok(merged_on_read(
            marked,
            key_count,
            late_rows,
            NewRows::Recomputed,
        ));
    }
    let model_columns: Vec<String> = recompute
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut renamed: Vec<Expr> = recompute
        .schema()
        .iter()
        .map(|(q, f)| col(Column::new(q.cloned(), f.name())).alias(f.name()))
        .collect();
    renamed.push(lit(true).alias(PRESENT));
    let new_df = DataFrame::new(state.clone(), recompute)
        .select(renamed)?
        .alias(NEW_ALIAS)?;
    let new_col = |name: &str| col(Column::new(Some(NEW_ALIAS), name));
    let on: Vec<Expr> = keys
        .columns
        .iter()
        .enumerate()
        .map(|(k, c)| same(key_col(k), new_col(c)))
        .collect();
    let mut source_columns: Vec<Expr> = model_columns
        .iter()
        .map(|c| new_col(c).alias(c.as_str()))
        .collect();
    source_columns
        .extend((0..keys.columns.len()).map(|k| key_col(k).alias(format!("{KEY_PREFIX}{k}"))));
    source_columns.push(new_col(PRESENT).alias(PRESENT));
    let source = keys_df
        .join_on(new_df, JoinType::Left, on)?
        .select(source_columns)?;

    let source_col = |c: &str| col(Column::new(Some("source"), c));
    let predicate = keys
        .columns
        .iter()
        .enumerate()
        .map(|(k, c)| same(target(c), source_col(&format!("{KEY_PREFIX}{k}"))))
        .reduce(Expr::and)
        .ok_or_else(|| Error::Internal("merge without keys".into()))?
        .and(model_key_filter);
    let mut merge = table.merge(source, predicate);
    if let Some(layout) = layout {
        merge = merge.with_writer_properties(layout);
    }
    let (table, metrics) = merge
        .with_source_alias("source")
        .with_target_alias("target")
        .with_session_state(Arc::new(state.clone()))
        .with_commit_properties(commit)
        .when_matched_delete(|delete| delete.predicate(source_col(PRESENT).is_null()))?
        .when_matched_update(|mut update| {
            for c in &model_columns {
                update = update.update(Column::new_unqualified(c), source_col(c));
            }
            update
        })?
        .when_not_matched_insert(|mut insert| {
            insert = insert.predicate(source_col(PRESENT).is_not_null());
            for c in &model_columns {
                insert = insert.set(Column::new_unqualified(c), source_col(c));
            }
            insert
        })?
        .await
        .map_err(|e| merge_error(e, keys))?;
    tracing::info!(
        keys = key_count,
        keys_ms,
        recompute_ms,
        merge_ms = metrics.execution_time_ms,
        merge_scan_ms = metrics.scan_time_ms,
        merge_rewrite_ms = metrics.rewrite_time_ms,
        files_rewritten = metrics.num_target_files_removed,
        files_untouched = metrics.num_target_files_skipped_during_scan,
        total_ms = started.elapsed().as_millis() as u64,
        "key-wise refresh merged"
    );
    let rows_written = (metrics.num_target_rows_inserted
        + metrics.num_target_rows_updated
        + metrics.num_target_rows_deleted) as i64;
    Ok(KeyWise::Merged(Merged {
        table,
        rows_written,
        keys: key_count,
        late_rows,
        files_read: metrics.num_target_files_scanned,
        files_total: metrics.num_target_files_scanned
            + metrics.num_target_files_skipped_during_scan,
        files_rewritten: metrics.num_target_files_removed,
        rows_marked_deleted: None,
        source: NewRows::Recomputed,
    }))
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
                schema.clone(),
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
