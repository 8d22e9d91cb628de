//! Refreshing models in dependency order, one Delta commit per refresh carrying the run id
//! and the input versions it read (its bookmarks), published only once committed. Each
//! refresh picks its strategy ([`strategy`]) from what changed in its inputs ([`changes`]).
//! A failed refresh leaves the previous version served and its error in `tributary.runs`.

pub mod changes;
pub mod strategy;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use deltalake::DeltaTable;
use deltalake::protocol::SaveMode;
use serde_json::json;
use tributary_catalog::{CatalogObject, ObjectKind, RunOutcome, RunStatus};

use crate::dialect::Refresh;
use crate::engine::{Engine, EngineInner};
use crate::error::{Error, Result};
use crate::names;
use crate::planning;
use crate::session::{Output, Session};
use crate::storage::delta::{self, INPUTS_KEY, RUN_ID_KEY, STRATEGY_KEY};

/// Options `CREATE MODEL ... WITH (...)` accepts.
pub const MODEL_OPTIONS: &[&str] = &[
    "refresh",
    "unique_key",
    "event_time",
    "lateness",
    "partition_by",
    "schedule",
    "retries",
    "retry_delay",
    "timeout",
    "max_staleness",
    "description",
];

/// The model's current Delta table (published, or the empty version 0 before a first refresh).
async fn current_table(engine: &EngineInner, object: &CatalogObject) -> Result<DeltaTable> {
    if object.published_version.is_some() {
        delta::latest(engine.published_table(object).await?).await
    } else {
        let location = object
            .location
            .as_deref()
            .ok_or_else(|| Error::Internal(format!("{} has no location", object.name)))?;
        engine.warehouse.load(location, None).await
    }
}

/// Refreshes one model (full recomputation) and records the run.
pub async fn refresh_one(
    engine: &Engine,
    object: &CatalogObject,
    trigger: &str,
    full: bool,
) -> Result<RunOutcome> {
    let inner = &engine.inner;
    let lock = inner.write_lock(object.id);
    let _guard = lock.lock().await;
    let object = inner
        .catalog
        .object_by_id(object.id)?
        .ok_or_else(|| Error::UndefinedObject {
            kind: "model",
            name: object.name.to_string(),
        })?;
    let run_id = inner.catalog.start_run(&object, trigger)?;
    let guard = RunGuard {
        engine: inner.clone(),
        run_id,
        finished: false,
    };
    tracing::info!(model = %object.name, run_id, trigger, "refresh started");
    let started = std::time::Instant::now();
    let result = run(inner, &object, run_id, full).await;
    let outcome = match &result {
        Ok(done) => RunOutcome {
            status: Some(RunStatus::Succeeded),
            strategy: Some(done.strategy.as_str().into()),
            reason: Some(done.reason.clone()),
            rows_read: None,
            rows_written: Some(done.rows),
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
    inner.catalog.finish_run(run_id, &outcome)?;
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
    engine: Arc<EngineInner>,
    run_id: i64,
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
            if let Err(e) = self.engine.catalog.finish_run(self.run_id, &outcome) {
                tracing::error!(run_id = self.run_id, error = %e, "cannot record a canceled run");
            }
        }
    }
}

/// What a successful refresh did.
struct Done {
    strategy: strategy::Strategy,
    reason: String,
    version: i64,
    rows: i64,
    inputs: serde_json::Value,
}

/// Plans the model, reads its inputs' changes, and runs the chosen strategy.
async fn run(
    engine: &EngineInner,
    object: &CatalogObject,
    run_id: i64,
    full_requested: bool,
) -> Result<Done> {
    let planned = plan_refresh(engine, object, full_requested).await?;
    let Planned {
        state,
        plan,
        choice,
        table,
        inputs,
    } = planned;
    let inputs_json = serde_json::Value::Object(
        inputs
            .iter()
            .map(|(name, (input, _))| {
                let change = choice.changes.get(name).map(|c| c.describe());
                (
                    name.to_string(),
                    json!({ "version": input.published_version, "change": change }),
                )
            })
            .collect(),
    );
    if choice.strategy == strategy::Strategy::Unchanged {
        return Ok(Done {
            strategy: choice.strategy,
            reason: choice.reason,
            version: delta::version(&table),
            rows: 0,
            inputs: inputs_json,
        });
    }
    let (plan, mode) = match choice.strategy {
        strategy::Strategy::Append => {
            let plan = incremental_plan(engine, &state, plan, &inputs, &choice).await?;
            (plan, SaveMode::Append)
        }
        strategy::Strategy::JoinDelta => {
            let plan = join_delta_plan(engine, &state, plan, &inputs, &choice).await?;
            (plan, SaveMode::Append)
        }
        _ => (plan, SaveMode::Overwrite),
    };
    let mut metadata = serde_json::Map::new();
    metadata.insert(RUN_ID_KEY.into(), json!(run_id));
    metadata.insert(INPUTS_KEY.into(), inputs_json.clone());
    metadata.insert(STRATEGY_KEY.into(), json!(choice.strategy.as_str()));
    let written = table
        .write(Vec::new())
        .with_input_plan(plan.clone())
        .with_session_state(Arc::new(state.clone()))
        .with_save_mode(mode)
        .with_commit_properties(delta::commit_properties(metadata))
        .await;
    let table = match written {
        Ok(table) => table,
        Err(e) => return Err(explain_read_error(engine, &state, &plan, e.into()).await),
    };
    let rows = delta::last_commit_rows(&table).await.unwrap_or(0);
    let version = engine.publish(object, table)?;
    Ok(Done {
        strategy: choice.strategy,
        reason: choice.reason,
        version,
        rows,
        inputs: inputs_json,
    })
}

/// Everything a refresh decides before it writes.
struct Planned {
    state: datafusion::execution::context::SessionState,
    plan: datafusion::logical_expr::LogicalPlan,
    choice: strategy::Choice,
    table: DeltaTable,
    /// Stored inputs by name, with the bookmark the last commit recorded for each.
    inputs: BTreeMap<tributary_catalog::ObjectName, (CatalogObject, Option<i64>)>,
}

async fn plan_refresh(
    engine: &EngineInner,
    object: &CatalogObject,
    full_requested: bool,
) -> Result<Planned> {
    let query = object
        .query
        .as_deref()
        .ok_or_else(|| Error::Internal(format!("model {} has no query", object.name)))?;
    let default_schema = object.default_schema.as_deref().unwrap_or("public");
    let state = planning::state_in_schema(engine.base_state(), Some(default_schema));
    let plan = planning::plan_query_text(&state, query).await?;
    let table = current_table(engine, object).await?;
    let bookmarks = if object.published_version.is_some() {
        changes::bookmarks(&table).await
    } else {
        BTreeMap::new()
    };
    let mut inputs = BTreeMap::new();
    let mut input_changes = BTreeMap::new();
    for name in planning::plan_inputs(&plan, default_schema) {
        let Some(input) = engine.catalog.object(&name)? else {
            continue;
        };
        let bookmark = bookmarks.get(&name.to_string()).copied();
        let change = if object.published_version.is_none() {
            changes::Change::Unknown("first refresh".into())
        } else {
            changes::change_of(engine, &input, bookmark).await?
        };
        input_changes.insert(name.clone(), change);
        inputs.insert(name, (input, bookmark));
    }
    let choice = strategy::choose(object, &plan, input_changes, full_requested)?;
    Ok(Planned {
        state,
        plan,
        choice,
        table,
        inputs,
    })
}

type Inputs = BTreeMap<tributary_catalog::ObjectName, (CatalogObject, Option<i64>)>;

/// What one input's scans read in a rewritten plan.
enum ScanAs {
    /// The published version the plan was made with.
    Current,
    /// Only the rows appended since the bookmark.
    Appended,
    /// The version the bookmark recorded.
    Old,
    /// No rows.
    Empty,
}

/// The model's plan with every input scan replaced by that input's new rows (or by no rows,
/// for inputs that did not change): for a linear query, exactly the rows to append.
async fn incremental_plan(
    engine: &EngineInner,
    state: &datafusion::execution::context::SessionState,
    plan: datafusion::logical_expr::LogicalPlan,
    inputs: &Inputs,
    choice: &strategy::Choice,
) -> Result<datafusion::logical_expr::LogicalPlan> {
    rewrite_scans(
        engine,
        state,
        plan,
        inputs,
        choice,
        |_, change| match change {
            Some(changes::Change::Appended { .. }) => ScanAs::Appended,
            _ => ScanAs::Empty,
        },
    )
    .await
}

/// The delta rule for select-project-join plans over inputs that only gained rows: the union,
/// over changed inputs i, of the plan with input i's new rows, the inputs before i at their
/// new versions and the inputs after i at their old versions.
async fn join_delta_plan(
    engine: &EngineInner,
    state: &datafusion::execution::context::SessionState,
    plan: datafusion::logical_expr::LogicalPlan,
    inputs: &Inputs,
    choice: &strategy::Choice,
) -> Result<datafusion::logical_expr::LogicalPlan> {
    let changed: Vec<&tributary_catalog::ObjectName> = choice
        .changes
        .iter()
        .filter(|(_, c)| matches!(c, changes::Change::Appended { .. }))
        .map(|(name, _)| name)
        .collect();
    let mut branches = Vec::new();
    for i in 0..changed.len() {
        let branch =
            rewrite_scans(
                engine,
                state,
                plan.clone(),
                inputs,
                choice,
                |name, _| match changed.iter().position(|c| *c == name) {
                    Some(j) if j == i => ScanAs::Appended,
                    Some(j) if j > i => ScanAs::Old,
                    _ => ScanAs::Current,
                },
            )
            .await?;
        branches.push(branch);
    }
    let mut branches = branches.into_iter();
    let first = branches
        .next()
        .ok_or_else(|| Error::Internal("join delta without a changed input".into()))?;
    let mut builder = datafusion::logical_expr::LogicalPlanBuilder::from(first);
    for branch in branches {
        builder = builder.union(branch)?;
    }
    Ok(builder.build()?)
}

/// Replaces each input scan of `plan` according to `how` (given the input's name and change).
async fn rewrite_scans(
    engine: &EngineInner,
    state: &datafusion::execution::context::SessionState,
    plan: datafusion::logical_expr::LogicalPlan,
    inputs: &Inputs,
    choice: &strategy::Choice,
    how: impl Fn(&tributary_catalog::ObjectName, Option<&changes::Change>) -> ScanAs,
) -> Result<datafusion::logical_expr::LogicalPlan> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::datasource::empty::EmptyTable;
    use datafusion::logical_expr::{LogicalPlan, TableScanBuilder};

    let default_schema = state.config().options().catalog.default_schema.clone();
    let mut replacements = HashMap::new();
    let mut scans = Vec::new();
    plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            scans.push(scan.clone());
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    })?;
    for scan in scans {
        let name = tributary_catalog::ObjectName::new(
            scan.table_name.schema().unwrap_or(&default_schema),
            scan.table_name.table(),
        );
        let like = datafusion::datasource::source_as_provider(&scan.source)?;
        let change = choice.changes.get(&name);
        let provider: Arc<dyn datafusion::catalog::TableProvider> =
            match (how(&name, change), change, inputs.get(&name)) {
                (ScanAs::Current, _, _) => continue,
                (
                    ScanAs::Appended,
                    Some(changes::Change::Appended { from, to }),
                    Some((input, _)),
                ) => changes::appended_rows(engine, state, input, *from, *to, &like).await?,
                (ScanAs::Old, Some(changes::Change::Appended { from, .. }), Some((input, _))) => {
                    let location = input.location.as_deref().unwrap_or_default();
                    let old = engine.warehouse.load(location, Some(*from)).await?;
                    delta::provider(&old).await?
                }
                (ScanAs::Empty, _, _) => Arc::new(EmptyTable::new(like.schema())),
                _ => {
                    return Err(Error::Internal(format!(
                        "no change to read for input \"{name}\""
                    )));
                }
            };
        replacements.insert(scan.table_name.to_string(), provider);
    }
    let rewritten = plan.transform_up(|node| match node {
        LogicalPlan::TableScan(scan) => match replacements.get(&scan.table_name.to_string()) {
            Some(provider) => {
                let source = datafusion::datasource::provider_as_source(provider.clone());
                let new = TableScanBuilder::new(scan.table_name.clone(), source)
                    .with_projection(scan.projection.clone())
                    .with_filters(scan.filters.clone())
                    .with_fetch(scan.fetch)
                    .build()?;
                Ok(Transformed::yes(LogicalPlan::TableScan(new)))
            }
            None => Ok(Transformed::no(LogicalPlan::TableScan(scan))),
        },
        other => Ok(Transformed::no(other)),
    })?;
    Ok(rewritten.data)
}

/// A value that does not parse while reading file sources: name the file (and keep the line).
async fn explain_read_error(
    engine: &EngineInner,
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
        let Ok(Some(object)) = engine.catalog.object(&name) else {
            continue;
        };
        if object.kind != ObjectKind::Source {
            continue;
        }
        let (Ok(spec), Ok(schema)) = (
            crate::sources::files::FileSourceSpec::from_options(&object.options),
            crate::types::schema_of_columns(&object.columns),
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

/// `REFRESH MODEL name [FULL] [WITH UPSTREAM] [WITH DOWNSTREAM]`
pub async fn refresh_statement(session: &mut Session, refresh: Refresh) -> Result<Output> {
    let object = model_named(session, &refresh.name)?;
    let graph = Graph::load(&session.engine)?;
    let mut ids = BTreeSet::from([object.id]);
    if refresh.upstream {
        ids.extend(graph.closure(object.id, &graph.ups));
    }
    if refresh.downstream {
        ids.extend(graph.closure(object.id, &graph.downs));
    }
    run_dag(&session.engine, &graph, &ids, "manual", refresh.full).await?;
    Ok(Output::Command("REFRESH MODEL".into()))
}

/// The model a statement names (42P01 when missing, 42809 when it is another kind).
fn model_named(
    session: &Session,
    name: &datafusion::sql::sqlparser::ast::ObjectName,
) -> Result<CatalogObject> {
    let name = names::object_name(name, &session.current_schema())?;
    let object = session
        .engine
        .catalog()
        .object(&name)?
        .ok_or_else(|| Error::UndefinedObject {
            kind: "model",
            name: name.to_string(),
        })?;
    if object.kind != ObjectKind::Model {
        return Err(Error::WrongObjectType(format!(
            "\"{}\" is a {}, not a model",
            object.name, object.kind
        )));
    }
    Ok(object)
}

/// `EXPLAIN REFRESH MODEL name`: what a refresh would do now, without doing it: the strategy,
/// why, and each input's change since the model's last refresh.
pub async fn explain(
    session: &mut Session,
    name: &datafusion::sql::sqlparser::ast::ObjectName,
) -> Result<Output> {
    let object = model_named(session, name)?;
    let planned = plan_refresh(&session.engine.inner, &object, false).await?;
    let mut rows = crate::system::RowsBuilder::new(&[
        ("item", crate::system::Col::Text),
        ("value", crate::system::Col::Text),
    ]);
    rows.text(Some("strategy"))
        .text(Some(planned.choice.strategy.as_str()));
    rows.text(Some("reason")).text(Some(&planned.choice.reason));
    for input in planned.inputs.keys() {
        let change = planned
            .choice
            .changes
            .get(input)
            .map(|c| c.describe())
            .unwrap_or_default();
        rows.text(Some(&format!("input {input}")))
            .text(Some(&change));
    }
    crate::ddl::rows_output(rows.finish()?)
}

/// `REFRESH ALL`: every model in dependency order, independent ones concurrently.
pub async fn refresh_all(session: &mut Session) -> Result<Output> {
    let graph = Graph::load(&session.engine)?;
    let ids: BTreeSet<i64> = graph.models.keys().copied().collect();
    run_dag(&session.engine, &graph, &ids, "manual", false).await?;
    Ok(Output::Command("REFRESH ALL".into()))
}

/// Refreshes every model downstream of `id` (after it was replaced).
pub async fn refresh_downstream_of(engine: &Engine, id: i64, trigger: &str) -> Result<()> {
    let graph = Graph::load(engine)?;
    let ids = graph.closure(id, &graph.downs);
    run_dag(engine, &graph, &ids, trigger, false).await
}

/// The dependency graph between catalog objects.
struct Graph {
    models: BTreeMap<i64, CatalogObject>,
    ups: HashMap<i64, Vec<i64>>,
    downs: HashMap<i64, Vec<i64>>,
}

impl Graph {
    fn load(engine: &Engine) -> Result<Self> {
        let catalog = engine.catalog();
        let models = catalog
            .objects()?
            .into_iter()
            .filter(|o| o.kind == ObjectKind::Model)
            .map(|o| (o.id, o))
            .collect();
        let mut ups: HashMap<i64, Vec<i64>> = HashMap::new();
        let mut downs: HashMap<i64, Vec<i64>> = HashMap::new();
        for (down, up) in catalog.dependencies()? {
            ups.entry(down).or_default().push(up);
            downs.entry(up).or_default().push(down);
        }
        Ok(Self { models, ups, downs })
    }

    /// Models reachable from `id` along `edges` (not including `id`), through views too.
    fn closure(&self, id: i64, edges: &HashMap<i64, Vec<i64>>) -> BTreeSet<i64> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![id];
        while let Some(next) = stack.pop() {
            for n in edges.get(&next).into_iter().flatten() {
                if seen.insert(*n) {
                    stack.push(*n);
                }
            }
        }
        seen.retain(|n| self.models.contains_key(n));
        seen
    }

    /// Selected models whose selected upstream models (through any path) are not all in `done`.
    fn upstream_models(&self, id: i64) -> BTreeSet<i64> {
        self.closure(id, &self.ups)
    }
}

/// Runs the selected models level by level: a model starts once every selected model it
/// reads from has finished. A model whose upstream failed is skipped with that reason.
async fn run_dag(
    engine: &Engine,
    graph: &Graph,
    ids: &BTreeSet<i64>,
    trigger: &str,
    full: bool,
) -> Result<()> {
    let mut pending: BTreeSet<i64> = ids
        .iter()
        .copied()
        .filter(|i| graph.models.contains_key(i))
        .collect();
    let mut failed: BTreeMap<i64, String> = BTreeMap::new();
    let mut first_error: Option<Error> = None;
    while !pending.is_empty() {
        let ready: Vec<i64> = pending
            .iter()
            .copied()
            .filter(|id| {
                graph
                    .upstream_models(*id)
                    .iter()
                    .all(|up| !pending.contains(up))
            })
            .collect();
        if ready.is_empty() {
            return Err(Error::Cycle("models depend on each other".into()));
        }
        let mut runnable = Vec::new();
        for id in ready {
            pending.remove(&id);
            let object = &graph.models[&id];
            let failed_up = graph
                .upstream_models(id)
                .into_iter()
                .find_map(|up| failed.get(&up).cloned());
            if let Some(up_name) = failed_up {
                let reason = format!("upstream model \"{up_name}\" failed");
                engine.catalog().skip_run(object, trigger, &reason)?;
                failed.insert(id, up_name);
                continue;
            }
            runnable.push(object.clone());
        }
        let results = futures::future::join_all(
            runnable
                .iter()
                .map(|object| refresh_one(engine, object, trigger, full)),
        )
        .await;
        for (object, result) in runnable.iter().zip(results) {
            if let Err(e) = result {
                failed.insert(object.id, object.name.to_string());
                if first_error.is_none() {
                    first_error = Some(e);
                }
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Start-up reconciliation after a crash: a Delta commit that landed is published (it holds a
/// complete result), and runs left `running` are marked failed or, if their commit landed,
/// succeeded.
pub(crate) async fn recover(engine: &Engine) -> Result<()> {
    let inner = &engine.inner;
    let catalog = &inner.catalog;
    let mut committed_runs: HashMap<i64, i64> = HashMap::new();
    for object in catalog.objects()? {
        if !object.kind.is_stored() {
            continue;
        }
        let Some(location) = object.location.as_deref() else {
            continue;
        };
        let table = match inner.warehouse.load(location, None).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(object = %object.name, error = %e, "cannot open delta table");
                continue;
            }
        };
        let latest = delta::version(&table);
        let published = object
            .published_version
            .unwrap_or(if object.kind == ObjectKind::Model {
                0
            } else {
                -1
            });
        if latest > published {
            if let Some(run_id) = commit_run_id(&table, latest).await {
                committed_runs.insert(run_id, latest);
            }
            tracing::info!(object = %object.name, latest, published, "publishing a commit that landed before a restart");
            inner.publish(&object, table)?;
        }
    }
    for run in catalog.running_runs()? {
        let outcome = match committed_runs.get(&run.id) {
            Some(version) => RunOutcome {
                status: Some(RunStatus::Succeeded),
                strategy: Some("full".into()),
                delta_version: Some(*version),
                reason: Some("committed before the server stopped".into()),
                ..Default::default()
            },
            None => RunOutcome {
                status: Some(RunStatus::Failed),
                error: Some("interrupted: the server stopped during the refresh".into()),
                ..Default::default()
            },
        };
        catalog.finish_run(run.id, &outcome)?;
    }
    Ok(())
}

async fn commit_run_id(table: &DeltaTable, _version: i64) -> Option<i64> {
    use futures::TryStreamExt;
    let infos: Vec<_> = table.history(Some(1)).try_collect().await.ok()?;
    infos.first()?.info.get(RUN_ID_KEY)?.as_i64()
}
