//! Running one refresh: plan the model, read its inputs' changes, choose the strategy, write
//! one Delta commit with the run id and input bookmarks, publish it, and record the run.

use std::collections::BTreeMap;
use std::sync::Arc;

use deltalake::DeltaTable;
use deltalake::protocol::SaveMode;
use tributary_catalog::{CatalogObject, ObjectKind, RunOutcome, RunStatus};

use super::{changes, columns, keyed, lateness, plans, strategy};
use crate::runtime::Runtime;
use tributary_query::planning;
use tributary_sources::counting;
use tributary_sql::error::{Error, Result};
use tributary_sql::options::RefreshMode;
use tributary_storage::bookmarks::{self, Bookmark, Bookmarks, CommitMetadata};
use tributary_storage::delta;

/// The model's current Delta table (published, or the empty version 0 before a first refresh).
async fn current_table(engine: &Runtime, object: &CatalogObject) -> Result<DeltaTable> {
    if object.published_version.is_some() {
        delta::latest(engine.store().published_table(object).await?).await
    } else {
        let location = object
            .location
            .as_deref()
            .ok_or_else(|| Error::Internal(format!("{} has no location", object.name)))?;
        engine.store().warehouse().load(location, None).await
    }
}

/// Refreshes one model (full recomputation) and records the run.
pub async fn refresh_one(
    runtime: &Arc<Runtime>,
    object: &CatalogObject,
    trigger: &str,
    full: bool,
) -> Result<RunOutcome> {
    let inner = runtime;
    let (_guard, object) = inner.store().lock_for_write(object).await?;
    let run_id = inner.catalog().start_run(&object, trigger)?;
    let started = std::time::Instant::now();
    let guard = RunGuard {
        engine: Arc::clone(inner),
        run_id,
        model: object.name.clone(),
        started,
        finished: false,
    };
    tracing::info!(model = %object.name, run_id, trigger, "refresh started");
    let result = run(inner, &object, run_id, full).await;
    let outcome = match &result {
        Ok(done) => RunOutcome {
            status: Some(RunStatus::Succeeded),
            strategy: Some(done.strategy.as_str().into()),
            reason: Some(done.reason.clone()),
            rows_read: Some(done.rows_read),
            rows_written: Some(done.rows),
            late_rows: done.late_rows,
            delta_version: Some(done.version),
            input_versions: Some(done.inputs.to_string()),
            error: None,
        },
        Err(e) => RunOutcome {
            status: Some(RunStatus::Failed),
            error: Some(e.to_string()),
            ..Default::default()
        },
    };
    inner.catalog().finish_run(run_id, &outcome)?;
    crate::metrics::refresh_finished(&object.name, &outcome, started.elapsed());
    guard.finish();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(_) => {
            tracing::info!(model = %object.name, run_id, elapsed_ms, rows = outcome.rows_written, "refresh succeeded");
            Ok(outcome)
        }
        Err(e) => {
            tracing::warn!(model = %object.name, run_id, elapsed_ms, error = %e, "refresh failed");
            Err(Error::RefreshFailed {
                model: object.name.to_string(),
                source: Box::new(e),
            })
        }
    }
}

/// Marks a run failed if its refresh is dropped before finishing (the statement was
/// cancelled or its connection closed), so no run stays `running` while the server lives.
struct RunGuard {
    engine: Arc<Runtime>,
    run_id: i64,
    model: tributary_catalog::ObjectName,
    started: std::time::Instant,
    finished: bool,
}

impl RunGuard {
    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if !self.finished {
            let outcome = RunOutcome {
                status: Some(RunStatus::Failed),
                error: Some("canceled: the refresh was interrupted before it finished".into()),
                ..Default::default()
            };
            if let Err(e) = self.engine.catalog().finish_run(self.run_id, &outcome) {
                tracing::error!(run_id = self.run_id, error = %e, "cannot record a canceled run");
            }
            crate::metrics::refresh_finished(&self.model, &outcome, self.started.elapsed());
        }
    }
}

/// What a successful refresh did.
struct Done {
    strategy: strategy::Strategy,
    reason: String,
    version: i64,
    rows: i64,
    rows_read: i64,
    late_rows: Option<i64>,
    inputs: serde_json::Value,
}

/// Plans the model, reads its inputs' changes, and runs the chosen strategy.
async fn run(
    engine: &Runtime,
    object: &CatalogObject,
    run_id: i64,
    full_requested: bool,
) -> Result<Done> {
    let planned = plan_refresh(engine, object, full_requested, false).await?;
    let Planned {
        state,
        plan,
        choice,
        table,
        bookmarks,
        inputs,
        files,
        cursors,
    } = planned;
    let read: Bookmarks = inputs
        .iter()
        .map(|(name, (input, _))| {
            let change = choice.changes.get(name).map(|c| c.describe());
            let bookmark = match (files.get(name), cursors.get(name)) {
                (Some(listing), _) => Bookmark::Files {
                    files: listing.clone(),
                    change,
                },
                (None, Some(now)) => Bookmark::Cursor {
                    cursor: now.cursor.clone(),
                    rows: now.rows,
                    change,
                },
                (None, None) => Bookmark::Version {
                    version: input.published_version,
                    change,
                },
            };
            (name.to_string(), bookmark)
        })
        .collect();
    let inputs_json = bookmarks::inputs_json(&read);
    if choice.strategy == strategy::Strategy::Unchanged {
        return Ok(Done {
            strategy: choice.strategy,
            reason: choice.reason,
            version: delta::version(&table),
            rows: 0,
            rows_read: 0,
            late_rows: None,
            inputs: inputs_json,
        });
    }
    let before = crate::quality::publish::Before {
        version: delta::version(&table),
        bookmarks,
    };
    let counter = counting::RowCounter::default();
    let mut state = state;
    state
        .config_mut()
        .set_extension(Arc::new(counting::FederatedRows(Arc::clone(&counter))));
    let lateness = match choice.strategy {
        strategy::Strategy::Full => None,
        _ => lateness::Lateness::of(&state, object, &table).await?,
    };
    let mut late_rows = None;
    let metadata = |strategy: &strategy::Strategy| {
        CommitMetadata {
            run_id: Some(run_id),
            inputs: Some(read.clone()),
            strategy: Some(strategy.as_str().to_string()),
        }
        .into_map()
    };
    let commit = |strategy: &strategy::Strategy| delta::commit_properties(metadata(strategy));
    let mut strategy = choice.strategy.clone();
    let mut reason = choice.reason.clone();
    let (plan, mode, table) = match choice.strategy {
        strategy::Strategy::Append | strategy::Strategy::JoinDelta => {
            let mut plan = if choice.strategy == strategy::Strategy::Append {
                plans::incremental_plan(engine, &state, plan, &inputs, &choice).await?
            } else {
                plans::join_delta_plan(engine, &state, plan, &inputs, &choice).await?
            };
            if let Some(lateness) = &lateness {
                let (on_time, late) = lateness.withhold(&state, plan).await?;
                plan = on_time;
                late_rows = Some(late);
            }
            (plan, SaveMode::Append, table)
        }
        strategy::Strategy::Groups | strategy::Strategy::Merge => {
            let keys = choice
                .keys
                .as_ref()
                .ok_or_else(|| Error::Internal("key-wise refresh without keys".into()))?;
            let keywise = keyed::KeyWiseRefresh {
                engine,
                state: &state,
                keys,
                inputs: &inputs,
                changes: &choice.changes,
                counter: &counter,
                lateness: lateness.as_ref(),
                layout: Some(tributary_storage::cluster::layout_of(object)),
            }
            .run(plan.clone(), table, commit(&choice.strategy))
            .await?;
            match keywise {
                keyed::KeyWise::Merged(merged) => {
                    let summary = merged.summary();
                    let version = crate::quality::publish::publish_audited(
                        engine,
                        object,
                        merged.table,
                        &before,
                        false,
                        run_id,
                    )
                    .await?;
                    return Ok(Done {
                        strategy: choice.strategy,
                        reason: format!("{} ({summary})", choice.reason),
                        version,
                        rows: merged.rows_written,
                        rows_read: counter.load(std::sync::atomic::Ordering::Relaxed) as i64,
                        late_rows: merged.late_rows,
                        inputs: inputs_json,
                    });
                }
                keyed::KeyWise::Full { table, reason: why } => {
                    strategy = strategy::Strategy::Full;
                    reason = why;
                    (plan, SaveMode::Overwrite, table)
                }
            }
        }
        _ => (plan, SaveMode::Overwrite, table),
    };
    let plan = counting::count_scans(plan, &counter)?;
    let keys = tributary_storage::cluster::cluster_keys(object);
    let (plan, state) = match &keys {
        Some(keys) => (
            tributary_storage::cluster::clustered(plan, keys),
            tributary_storage::cluster::writing_state(state),
        ),
        None => (plan, state),
    };
    let layout = Some(tributary_storage::cluster::layout_of(object));
    let mut written =
        match tributary_storage::write::write_plan(&table, &state, &plan, layout).await {
            Ok(written) => written,
            Err(e) => return Err(explain_read_error(engine, &state, &plan, e).await),
        };
    if let Some(keys) = &keys {
        tributary_storage::cluster::tag_sorted(&mut written.adds, keys);
    }
    let rows = written.rows as i64;
    let table = tributary_storage::write::commit(table, written, mode, metadata(&strategy)).await?;
    let appended = mode == SaveMode::Append;
    let version =
        crate::quality::publish::publish_audited(engine, object, table, &before, appended, run_id)
            .await?;
    Ok(Done {
        strategy,
        reason,
        version,
        rows,
        rows_read: counter.load(std::sync::atomic::Ordering::Relaxed) as i64,
        late_rows,
        inputs: inputs_json,
    })
}

/// Everything a refresh decides before it writes.
pub(super) struct Planned {
    pub(super) state: datafusion::execution::context::SessionState,
    pub(super) plan: datafusion::logical_expr::LogicalPlan,
    pub(super) choice: strategy::Choice,
    pub(super) table: DeltaTable,
    /// The input bookmarks recorded with `table`'s version (empty before a first refresh).
    pub(super) bookmarks: Bookmarks,
    /// Stored inputs by name, with the bookmark the last commit recorded for each.
    pub(super) inputs: BTreeMap<tributary_catalog::ObjectName, (CatalogObject, Option<i64>)>,
    /// The files each file source input has now, read by this refresh.
    pub(super) files: BTreeMap<tributary_catalog::ObjectName, tributary_sources::files::Listing>,
    /// The cursor state of each PostgreSQL source input with a cursor, read by this refresh.
    pub(super) cursors:
        BTreeMap<tributary_catalog::ObjectName, tributary_sources::postgres::CursorState>,
}

/// The plan with every `SELECT DISTINCT` written as the GROUP BY of all its columns it means
/// (DataFusion's own rewrite, which its optimizer would apply anyway), so the strategy sees
/// the aggregate it is: changed rows then recompute only their own groups instead of the
/// whole model.
fn distinct_as_grouping(
    plan: datafusion::logical_expr::LogicalPlan,
) -> Result<datafusion::logical_expr::LogicalPlan> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::logical_expr::{Distinct, LogicalPlan};
    use datafusion::optimizer::{OptimizerContext, OptimizerRule};
    let rule =
        datafusion::optimizer::replace_distinct_aggregate::ReplaceDistinctWithAggregate::new();
    let context = OptimizerContext::new();
    let rewritten = plan.transform_up(|node| match node {
        LogicalPlan::Distinct(Distinct::All(_)) => rule.rewrite(node, &context),
        other => Ok(Transformed::no(other)),
    })?;
    Ok(rewritten.data)
}

/// Plans a refresh of `object`. The scheduler's change sensor plans with `sensor` set, which
/// lets PostgreSQL sources with a `poll` interval answer from the sensor's memory.
pub(super) async fn plan_refresh(
    engine: &Runtime,
    object: &CatalogObject,
    full_requested: bool,
    sensor: bool,
) -> Result<Planned> {
    let query = object
        .query
        .as_deref()
        .ok_or_else(|| Error::Internal(format!("model {} has no query", object.name)))?;
    let default_schema = object.default_schema.as_deref().unwrap_or("public");
    let started = std::time::Instant::now();
    let state = planning::state_in_schema(engine.base_state(), Some(default_schema));
    let plan = distinct_as_grouping(planning::plan_query_text(&state, query).await?)?;
    let planned_ms = started.elapsed().as_secs_f64() * 1e3;
    let table = current_table(engine, object).await?;
    let bookmarks = if object.published_version.is_some() {
        changes::bookmarks(&table).await
    } else {
        BTreeMap::new()
    };
    let table_ms = started.elapsed().as_secs_f64() * 1e3 - planned_ms;
    let mut inputs = BTreeMap::new();
    let mut input_changes = BTreeMap::new();
    let mut files = BTreeMap::new();
    let mut cursors = BTreeMap::new();
    for name in planning::plan_inputs(&plan, default_schema) {
        let Some(input) = engine.catalog().object(&name)? else {
            continue;
        };
        let recorded = bookmarks.get(&name.to_string());
        let bookmark = recorded.and_then(Bookmark::version);
        let kind = tributary_sources::SourceKind::of(&input);
        let change = if kind == Some(tributary_sources::SourceKind::Postgres) {
            let (change, now) = if sensor {
                super::sensor::sensed_change(engine, &input, recorded).await?
            } else {
                tributary_sources::postgres::change_since(engine.catalog(), &input, recorded)
                    .await?
            };
            if let Some(now) = now {
                cursors.insert(name.clone(), now);
            }
            change
        } else if kind == Some(tributary_sources::SourceKind::Files) {
            let spec = tributary_sources::files::FileSourceSpec::from_options(&input.options)?;
            let listing = spec.list_files(&state).await?;
            let change = changes::files_change(&input, recorded, &listing);
            files.insert(name.clone(), listing);
            change
        } else if object.published_version.is_none() {
            changes::Change::Unknown("first refresh".into())
        } else {
            changes::change_of(engine, &input, bookmark).await?
        };
        let change = if object.published_version.is_none() {
            changes::Change::Unknown("first refresh".into())
        } else {
            change
        };
        input_changes.insert(name.clone(), change);
        inputs.insert(name, (input, bookmark));
    }
    let changes_ms = started.elapsed().as_secs_f64() * 1e3 - planned_ms - table_ms;
    // What the model reads names the input in schema errors: the views its query names (the
    // planner inlines views, so they are not among the scans), then its stored inputs. Only
    // looked up when a column no longer fits.
    let upstream = || -> Result<Vec<CatalogObject>> {
        let named = tributary_sql::dialect::identifiers(query);
        let mut upstream: Vec<CatalogObject> = engine
            .catalog()
            .objects()?
            .into_iter()
            .filter(|o| o.kind == ObjectKind::View && named.contains(&o.name.name))
            .collect();
        upstream.extend(inputs.values().map(|(input, _)| input.clone()));
        Ok(upstream)
    };
    let plan = columns::conform(&state, plan, object, upstream)?;
    let plan = pin_file_sources(plan, &inputs, &files)?;
    let plan = plans::pin_cursors(&state, plan, &inputs, &cursors).await?;
    if RefreshMode::of(&object.options)? == RefreshMode::Append && !full_requested {
        check_append_contract(engine, &state, object, &inputs, &input_changes).await?;
    }
    let choice = strategy::choose(object, &plan, input_changes, full_requested)?;
    // Where a refresh's fixed cost goes (a small incremental refresh is mostly this).
    tracing::debug!(
        model = %object.name,
        planned_ms,
        table_ms,
        changes_ms,
        total_ms = started.elapsed().as_secs_f64() * 1e3,
        "refresh planned"
    );
    Ok(Planned {
        state,
        plan,
        choice,
        table,
        bookmarks,
        inputs,
        files,
        cursors,
    })
}

/// Makes every file source scan read exactly the files listed for this refresh (the ones its
/// bookmark will record), never a file that lands while the refresh runs.
fn pin_file_sources(
    plan: datafusion::logical_expr::LogicalPlan,
    inputs: &plans::Inputs,
    files: &BTreeMap<tributary_catalog::ObjectName, tributary_sources::files::Listing>,
) -> Result<datafusion::logical_expr::LogicalPlan> {
    if files.is_empty() {
        return Ok(plan);
    }
    plans::replace_input_scans(plan, inputs, |name, input, like| {
        let Some(listing) = files.get(name) else {
            return Ok(None);
        };
        let spec = tributary_sources::files::FileSourceSpec::from_options(&input.options)?;
        Ok(Some(spec.files_provider(like.schema(), listing.keys())?))
    })
}

/// `refresh = 'append'` promises that inputs only gain rows: an input that updated or deleted
/// rows breaks it, and the error names the input and the first row that changed.
async fn check_append_contract(
    engine: &Runtime,
    state: &datafusion::execution::context::SessionState,
    object: &CatalogObject,
    inputs: &plans::Inputs,
    input_changes: &BTreeMap<tributary_catalog::ObjectName, changes::Change>,
) -> Result<()> {
    for (name, change) in input_changes {
        let row = match (change, inputs.get(name)) {
            (changes::Change::Rewritten { from, to }, Some((input, _))) => {
                changes::first_changed_row(engine, state, input, (*from, *to))
                    .await
                    .unwrap_or_default()
            }
            (changes::Change::Rewritten { .. } | changes::Change::CursorUpserted { .. }, _) => None,
            _ => continue,
        };
        return Err(Error::bad_input(format!(
            "refresh = 'append' contract of model \"{}\" broken by input \"{name}\": {}{}",
            object.name,
            change.describe(),
            row.map(|r| format!("; first changed row: {r}"))
                .unwrap_or_default()
        )));
    }
    Ok(())
}

/// A value that does not parse while reading file sources: name the file (and keep the line).
async fn explain_read_error(
    engine: &Runtime,
    state: &datafusion::execution::context::SessionState,
    plan: &datafusion::logical_expr::LogicalPlan,
    error: Error,
) -> Error {
    let is_bad_input = matches!(error, Error::BadInput { .. })
        || matches!(&error, Error::DataFusion(e) if matches!(e.find_root(), datafusion::error::DataFusionError::ArrowError(..)));
    if !is_bad_input {
        return error;
    }
    let default_schema = state.config().options().catalog.default_schema.clone();
    for name in planning::plan_inputs(plan, &default_schema) {
        let Ok(Some(object)) = engine.catalog().object(&name) else {
            continue;
        };
        if object.kind != ObjectKind::Source {
            continue;
        }
        let (Ok(spec), Ok(schema)) = (
            tributary_sources::files::FileSourceSpec::from_options(&object.options),
            tributary_sql::types::schema_of_columns(&object.columns),
        ) else {
            continue;
        };
        if let Some(located) = spec.locate_bad_file(state, schema).await {
            return Error::BadInput {
                message: format!("source \"{}\", {located}", object.name),
                detail: None,
            };
        }
    }
    error
}
