//! One key-wise refresh, phase by phase: fold an aggregate's changed rows when it can
//! ([`fold`](super::fold)); otherwise find the affected keys (withholding late ones), give up
//! for a full refresh when too many changed, take the new rows from the change feed when that
//! is exact ([`from_feed`](super::from_feed)), or recompute the affected keys; then replace
//! those keys in the model, by deletion vectors ([`on_read`](super::on_read)) or a Delta
//! MERGE, in one commit.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::MemTable;
use datafusion::common::{Column, JoinType};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, col, lit};
use datafusion::prelude::{DataFrame, SessionContext};
use deltalake::DeltaTable;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::parquet::file::properties::WriterProperties;
use tributary_sources::counting::{RowCounter, count_scans};
use tributary_sql::error::{Error, Result};

use super::{
    KEY_PREFIX, KEYS_ALIAS, KeyWise, Keys, KeysAt, MAX_GROUPS_PERCENT, MAX_MERGE_KEY_PERCENT,
    MAX_MERGE_ON_READ_KEY_PERCENT, MIN_GROUPS_FOR_FULL_LIMIT, MIN_ROWS_FOR_MERGE_LIMIT, Merged,
    NEW_ALIAS, NewRows, PRESENT, affected, by_key, commit_nothing, committed, fold, from_feed,
    groups_of, key_matches, key_prefilter, materialize, merge_error, merged_on_read, on_read, same,
    uniform, unique_rows,
};
use crate::changes::Change;
use crate::lateness::Lateness;
use crate::plans::Inputs;
use crate::runtime::Runtime;

/// What a key-wise refresh of one model works with.
pub(crate) struct KeyWiseRefresh<'a> {
    pub engine: &'a Runtime,
    pub state: &'a SessionState,
    pub keys: &'a Keys,
    pub inputs: &'a Inputs,
    pub changes: &'a BTreeMap<tributary_catalog::ObjectName, Change>,
    pub counter: &'a RowCounter,
    pub lateness: Option<&'a Lateness>,
    /// The model's Parquet layout, for the files a merge writes.
    pub layout: Option<WriterProperties>,
}

/// The affected keys, as batches of `key_0, key_1, ...` columns.
struct AffectedKeys {
    batches: Vec<RecordBatch>,
    count: usize,
    /// Keys withheld as later than the model's lateness (`None` without one).
    late_rows: Option<i64>,
    /// How long finding them took.
    ms: u64,
    /// When the refresh started.
    started: std::time::Instant,
}

impl KeyWiseRefresh<'_> {
    /// Recomputes the affected keys of the model `plan` computes and merges them into its
    /// `table` in one commit.
    pub(crate) async fn run(
        &self,
        plan: LogicalPlan,
        table: DeltaTable,
        commit: CommitProperties,
    ) -> Result<KeyWise> {
        let started = std::time::Instant::now();
        let plan = count_scans(plan, self.counter)?;
        let on_read = tributary_storage::deletion::enabled(&table);
        if self.keys.at == KeysAt::Aggregate && on_read && self.lateness.is_none() {
            let fold = fold::fold(
                self.engine,
                self.state,
                &plan,
                self.keys,
                self.inputs,
                self.changes,
                &table,
                self.counter,
            )
            .await?;
            if let Some(fold) = fold {
                return self.merge_folded(fold, plan, table, commit, started).await;
            }
        }
        let affected = self.affected_keys(&plan, &table, started).await?;
        if affected.count == 0 {
            let nothing = commit_nothing(self.state, plan, table, commit).await?;
            return Ok(match nothing {
                KeyWise::Merged(merged) => KeyWise::Merged(Merged {
                    late_rows: affected.late_rows,
                    ..merged
                }),
                full => full,
            });
        }
        if let Some(reason) = self.too_many_keys(affected.count, &table, on_read).await? {
            return Ok(KeyWise::Full { table, reason });
        }
        let (table, commit) =
            if on_read && self.keys.at == KeysAt::Result && affected.late_rows.is_none() {
                match self
                    .merge_from_feed(&plan, table, commit, &affected)
                    .await?
                {
                    Ok(done) => return Ok(done),
                    Err(unmerged) => unmerged,
                }
            } else {
                (table, commit)
            };
        self.recompute_and_merge(plan, table, commit, affected, on_read)
            .await
    }

    /// Merges the groups a fold combined (and those it recomputed) by deletion vectors.
    async fn merge_folded(
        &self,
        fold: fold::Fold,
        plan: LogicalPlan,
        table: DeltaTable,
        commit: CommitProperties,
        started: std::time::Instant,
    ) -> Result<KeyWise> {
        let folded = match fold {
            fold::Fold::Full(reason) => return Ok(KeyWise::Full { table, reason }),
            fold::Fold::Folded(folded) => folded,
        };
        if folded.keys.is_empty() {
            return commit_nothing(self.state, plan, table, commit).await;
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
            &self.keys.columns,
            &folded.keys,
            folded.rows,
            (commit, self.layout.clone()),
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
        Ok(merged_on_read(
            marked,
            folded.folded + folded.recomputed,
            None,
            source,
        ))
    }

    /// The keys of every changed input row, less those later than the model's lateness.
    async fn affected_keys(
        &self,
        plan: &LogicalPlan,
        table: &DeltaTable,
        started: std::time::Instant,
    ) -> Result<AffectedKeys> {
        let state = self.state;
        let affected = affected::affected_keys(
            self.engine,
            state,
            plan,
            self.keys,
            self.inputs,
            self.changes,
            table,
        )
        .await?;
        let affected = count_scans(affected, self.counter)?;
        let mut batches = uniform(DataFrame::new(state.clone(), affected).collect().await?)?;
        let mut late_rows = None;
        if let Some(lateness) = self.lateness
            && let Some(k) = self.keys.columns.iter().position(|c| *c == lateness.column)
            && let Some(schema) = batches.first().map(|b| b.schema())
        {
            // Keys later than the lateness are withheld: neither recomputed nor deleted.
            let before: usize = batches.iter().map(|b| b.num_rows()).sum();
            let all = Arc::new(MemTable::try_new(schema, vec![batches])?);
            batches = SessionContext::new_with_state(state.clone())
                .read_table(all)?
                .filter(lateness.on_time(&format!("{KEY_PREFIX}{k}")))?
                .collect()
                .await?;
            let after: usize = batches.iter().map(|b| b.num_rows()).sum();
            late_rows = Some((before - after) as i64);
        }
        let count = batches.iter().map(|b| b.num_rows()).sum();
        Ok(AffectedKeys {
            batches,
            count,
            late_rows,
            ms: started.elapsed().as_millis() as u64,
            started,
        })
    }

    /// Why a full refresh is cheaper, when so many keys changed that a merge would cost
    /// about as much (`None` when the merge pays off).
    async fn too_many_keys(
        &self,
        key_count: usize,
        table: &DeltaTable,
        on_read: bool,
    ) -> Result<Option<String>> {
        let max_percent = if on_read {
            MAX_MERGE_ON_READ_KEY_PERCENT
        } else {
            MAX_MERGE_KEY_PERCENT
        };
        let (min_rows, max_percent) = match self.keys.at {
            KeysAt::Result => (MIN_ROWS_FOR_MERGE_LIMIT, max_percent),
            KeysAt::Aggregate => (MIN_GROUPS_FOR_FULL_LIMIT, MAX_GROUPS_PERCENT),
        };
        // Below this many keys no model of at least `min_rows` rows passes the limit: no count.
        if key_count * 100 <= min_rows * max_percent {
            return Ok(None);
        }
        let model_rows = SessionContext::new_with_state(self.state.clone())
            .read_table(tributary_storage::delta::provider(table).await?)?
            .count()
            .await?;
        if model_rows < min_rows || key_count * 100 <= model_rows * max_percent {
            return Ok(None);
        }
        Ok(Some(match self.keys.at {
            KeysAt::Result => format!(
                "{key_count} keys changed, more than {max_percent}% of the model's {model_rows} rows: a merge would cost about as much"
            ),
            KeysAt::Aggregate => format!(
                "{key_count} groups changed, more than {max_percent}% of the model's {model_rows} groups: recomputing them would cost about as much"
            ),
        }))
    }

    /// Merges the new rows straight from the change feed when it can be, checked against the
    /// model (`from_feed`). `Err` gives the table and commit back when it cannot: no feed,
    /// or the model holds rows of affected keys that unchanged input rows give.
    #[allow(clippy::type_complexity)]
    async fn merge_from_feed(
        &self,
        plan: &LogicalPlan,
        table: DeltaTable,
        commit: CommitProperties,
        affected: &AffectedKeys,
    ) -> Result<std::result::Result<KeyWise, (DeltaTable, CommitProperties)>> {
        let state = self.state;
        let Some(feed) = from_feed::rows_from_feed(
            self.engine,
            state,
            plan,
            self.inputs,
            self.changes,
            self.counter,
        )
        .await?
        else {
            return Ok(Err((table, commit)));
        };
        let recompute_started = std::time::Instant::now();
        let rows = by_key(
            state,
            unique_rows(state, feed.added, self.keys).await?,
            self.keys,
        )?;
        let recompute_ms = recompute_started.elapsed().as_millis() as u64;
        let expected: usize = feed.removed.iter().map(|b| b.num_rows()).sum();
        let outcome = on_read::merge(
            table,
            &self.keys.columns,
            &affected.batches,
            rows.collect().await?,
            (commit, self.layout.clone()),
            on_read::OldRows::Expected(feed.removed),
        )
        .await?;
        match outcome {
            on_read::Outcome::Committed(marked) => {
                tracing::info!(
                    keys = affected.count,
                    keys_ms = affected.ms,
                    recompute_ms,
                    "key-wise refresh merged on read, new rows from the change feed"
                );
                Ok(Ok(merged_on_read(
                    marked,
                    affected.count,
                    affected.late_rows,
                    NewRows::FromFeed,
                )))
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
                Ok(Err((table, commit)))
            }
        }
    }

    /// Recomputes the query for the affected keys only and replaces them in the model.
    async fn recompute_and_merge(
        &self,
        plan: LogicalPlan,
        table: DeltaTable,
        commit: CommitProperties,
        affected: AffectedKeys,
        on_read: bool,
    ) -> Result<KeyWise> {
        let (state, keys) = (self.state, self.keys);
        let key_schema = affected
            .batches
            .first()
            .map(|b| b.schema())
            .ok_or_else(|| Error::Internal("affected keys without batches".into()))?;
        let prefilter = key_prefilter(&keys.exprs, &affected.batches)?;
        let affected_keys = on_read.then(|| affected.batches.clone());
        let key_table = Arc::new(MemTable::try_new(
            key_schema,
            vec![affected.batches.clone()],
        )?);
        let keys_df = SessionContext::new_with_state(state.clone())
            .read_table(key_table)?
            .alias(KEYS_ALIAS)?;
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
        // merge then only joins them (few rows) with the model.
        let recompute_started = std::time::Instant::now();
        let recompute = match keys.at {
            KeysAt::Aggregate => materialize(state, recompute).await?,
            KeysAt::Result => unique_rows(state, recompute, keys).await?,
        };
        let recompute_ms = recompute_started.elapsed().as_millis() as u64;
        let Some(affected_keys) = affected_keys else {
            return self
                .delta_merge(table, commit, recompute, keys_df, &affected, recompute_ms)
                .await;
        };
        let rows = match keys.at {
            KeysAt::Result => by_key(state, recompute, keys)?,
            KeysAt::Aggregate => DataFrame::new(state.clone(), recompute),
        };
        let outcome = on_read::merge(
            table,
            &keys.columns,
            &affected_keys,
            rows.collect().await?,
            (commit, self.layout.clone()),
            on_read::OldRows::Search,
        )
        .await?;
        let marked = committed(outcome)?;
        tracing::info!(
            keys = affected.count,
            keys_ms = affected.ms,
            recompute_ms,
            "key-wise refresh merged on read"
        );
        Ok(merged_on_read(
            marked,
            affected.count,
            affected.late_rows,
            NewRows::Recomputed,
        ))
    }

    /// Replaces the affected keys with a Delta MERGE (tables without deletion vectors):
    /// update the keys that still produce a row, insert the new ones, delete the others.
    async fn delta_merge(
        &self,
        table: DeltaTable,
        commit: CommitProperties,
        recompute: LogicalPlan,
        keys_df: DataFrame,
        affected: &AffectedKeys,
        recompute_ms: u64,
    ) -> Result<KeyWise> {
        let (state, keys) = (self.state, self.keys);
        // The same bounds on the model's own key columns, for the MERGE: Delta then leaves the
        // files whose key range holds no affected key untouched instead of rewriting them (its
        // own pruning reads only `=` join terms, and the keys are joined NULL-safely).
        let target = |c: &str| col(Column::new(Some("target"), c));
        let model_key_filter = key_prefilter(
            &keys.columns.iter().map(|c| target(c)).collect::<Vec<_>>(),
            &affected.batches,
        )?;
        let model_columns: Vec<String> = recompute
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let source = merge_source(state, recompute, keys_df, keys, &model_columns)?;
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
        if let Some(layout) = self.layout.clone() {
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
            keys = affected.count,
            keys_ms = affected.ms,
            recompute_ms,
            merge_ms = metrics.execution_time_ms,
            merge_scan_ms = metrics.scan_time_ms,
            merge_rewrite_ms = metrics.rewrite_time_ms,
            files_rewritten = metrics.num_target_files_removed,
            files_untouched = metrics.num_target_files_skipped_during_scan,
            total_ms = affected.started.elapsed().as_millis() as u64,
            "key-wise refresh merged"
        );
        let rows_written = (metrics.num_target_rows_inserted
            + metrics.num_target_rows_updated
            + metrics.num_target_rows_deleted) as i64;
        Ok(KeyWise::Merged(Merged {
            table,
            rows_written,
            keys: affected.count,
            late_rows: affected.late_rows,
            files_read: metrics.num_target_files_scanned,
            files_total: metrics.num_target_files_scanned
                + metrics.num_target_files_skipped_during_scan,
            files_rewritten: metrics.num_target_files_removed,
            rows_marked_deleted: None,
            source: NewRows::Recomputed,
        }))
    }
}

/// An affected key's column in the key table.
fn key_col(k: usize) -> Expr {
    col(Column::new(Some(KEYS_ALIAS), format!("{KEY_PREFIX}{k}")))
}

/// The MERGE's source: every affected key, with its new row when it still has one
/// (`PRESENT` marks those; a key without one is deleted).
fn merge_source(
    state: &SessionState,
    recompute: LogicalPlan,
    keys_df: DataFrame,
    keys: &Keys,
    model_columns: &[String],
) -> Result<DataFrame> {
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
    Ok(keys_df
        .join_on(new_df, JoinType::Left, on)?
        .select(source_columns)?)
}
