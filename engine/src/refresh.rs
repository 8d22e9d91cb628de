//! Refreshing models: full recomputation in dependency order, one Delta commit per refresh
//! carrying the run id and the input versions it read, published only once committed.
//! A failed refresh leaves the previous version served and its error in `tributary.runs`.

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
use crate::storage::delta::{self, INPUTS_KEY, RUN_ID_KEY};

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
    _full: bool,
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
    let result = run_full(inner, &object, run_id).await;
    let outcome = match &result {
        Ok((version, rows, inputs)) => RunOutcome {
            status: Some(RunStatus::Succeeded),
            strategy: Some("full".into()),
            reason: Some("full recomputation".into()),
            rows_read: None,
            rows_written: Some(*rows),
            delta_version: Some(*version),
            input_versions: Some(inputs.to_string()),
            error: None,
        },
        Err(e) => RunOutcome {
            status: Some(RunStatus::Failed),
            strategy: Some("full".into()),
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

async fn run_full(
    engine: &EngineInner,
    object: &CatalogObject,
    run_id: i64,
) -> Result<(i64, i64, serde_json::Value)> {
    let query = object
        .query
        .as_deref()
        .ok_or_else(|| Error::Internal(format!("model {} has no query", object.name)))?;
    let default_schema = object.default_schema.as_deref().unwrap_or("public");
    let state = planning::state_in_schema(engine.base_state(), Some(default_schema));
    let plan = planning::plan_query_text(&state, query).await?;
    let mut inputs = serde_json::Map::new();
    for name in planning::plan_inputs(&plan, default_schema) {
        if let Some(input) = engine.catalog.object(&name)?
            && input.kind.is_stored()
        {
            inputs.insert(
                name.to_string(),
                json!({ "version": input.published_version }),
            );
        }
    }
    let inputs = serde_json::Value::Object(inputs);
    let table = current_table(engine, object).await?;
    let mut metadata = serde_json::Map::new();
    metadata.insert(RUN_ID_KEY.into(), json!(run_id));
    metadata.insert(INPUTS_KEY.into(), inputs.clone());
    let written = table
        .write(Vec::new())
        .with_input_plan(plan.clone())
        .with_session_state(Arc::new(state.clone()))
        .with_save_mode(SaveMode::Overwrite)
        .with_commit_properties(delta::commit_properties(metadata))
        .await;
    let table = match written {
        Ok(table) => table,
        Err(e) => return Err(explain_read_error(engine, &state, &plan, e.into()).await),
    };
    let rows = delta::last_commit_rows(&table).await.unwrap_or(0);
    let version = engine.publish(object, table)?;
    Ok((version, rows, inputs))
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
    let name = names::object_name(&refresh.name, &session.current_schema())?;
    let catalog = session.engine.catalog();
    let object = catalog
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
    let graph = Graph::load(&session.engine)?;
    let mut ids = BTreeSet::from([object.id]);
    if refresh.upstream {
        ids.extend(graph.closure(object.id, &graph.ups));
    }
    if refresh.downstream {
        ids.extend(graph.closure(object.id, &graph.downs));
    }
    run_dag(&session.engine, &graph, &ids, "manual").await?;
    Ok(Output::Command("REFRESH MODEL".into()))
}

/// `REFRESH ALL`: every model in dependency order, independent ones concurrently.
pub async fn refresh_all(session: &mut Session) -> Result<Output> {
    let graph = Graph::load(&session.engine)?;
    let ids: BTreeSet<i64> = graph.models.keys().copied().collect();
    run_dag(&session.engine, &graph, &ids, "manual").await?;
    Ok(Output::Command("REFRESH ALL".into()))
}

/// Refreshes every model downstream of `id` (after it was replaced).
pub async fn refresh_downstream_of(engine: &Engine, id: i64, trigger: &str) -> Result<()> {
    let graph = Graph::load(engine)?;
    let ids = graph.closure(id, &graph.downs);
    run_dag(engine, &graph, &ids, trigger).await
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
async fn run_dag(engine: &Engine, graph: &Graph, ids: &BTreeSet<i64>, trigger: &str) -> Result<()> {
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
                .map(|object| refresh_one(engine, object, trigger, true)),
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
