//! Refreshing models in dependency order: the graph of models, levels of independent models
//! run concurrently, a model whose upstream failed skipped with that reason, and the start-up
//! reconciliation of runs and commits a crash interrupted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use deltalake::DeltaTable;
use tributary_catalog::{CatalogObject, ObjectKind, RunOutcome, RunStatus};

use crate::runtime::Runtime;
use tributary_sql::error::{Error, Result};
use tributary_storage::bookmarks::CommitMetadata;
use tributary_storage::delta;

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

/// Refreshes the model `id` and, when asked, every model upstream or downstream of it, in
/// dependency order (`REFRESH MODEL ... WITH UPSTREAM / WITH DOWNSTREAM`).
pub async fn refresh_around(
    runtime: &Arc<Runtime>,
    id: i64,
    upstream: bool,
    downstream: bool,
    trigger: &str,
    full: bool,
) -> Result<()> {
    let graph = Graph::load(runtime)?;
    let mut ids = BTreeSet::from([id]);
    if upstream {
        ids.extend(graph.closure(id, &graph.ups));
    }
    if downstream {
        ids.extend(graph.closure(id, &graph.downs));
    }
    run_dag(runtime, &graph, &ids, trigger, full).await
}

/// Refreshes every model in dependency order, independent ones concurrently (`REFRESH ALL`).
pub async fn refresh_all(runtime: &Arc<Runtime>, trigger: &str) -> Result<()> {
    let graph = Graph::load(runtime)?;
    let ids: BTreeSet<i64> = graph.models.keys().copied().collect();
    run_dag(runtime, &graph, &ids, trigger, false).await
}

/// What a refresh of a model would do now, without doing it (`EXPLAIN REFRESH`).
#[derive(Debug, Clone)]
pub struct Explanation {
    pub strategy: &'static str,
    pub reason: String,
    /// Each input, with its change since the model's last refresh.
    pub inputs: Vec<(tributary_catalog::ObjectName, String)>,
}

/// Plans a refresh of `object` and says what it would do.
pub async fn explain(runtime: &Runtime, object: &CatalogObject) -> Result<Explanation> {
    let planned = crate::executor::plan_refresh(runtime, object, false, false).await?;
    let choice = &planned.choice;
    let inputs = planned
        .inputs
        .keys()
        .map(|input| {
            let change = choice
                .changes
                .get(input)
                .map(|c| c.describe())
                .unwrap_or_default();
            (input.clone(), change)
        })
        .collect();
    Ok(Explanation {
        strategy: choice.strategy.as_str(),
        reason: choice.reason.clone(),
        inputs,
    })
}

/// Refreshes every model downstream of `id` (after it was replaced).
pub async fn refresh_downstream_of(runtime: &Arc<Runtime>, id: i64, trigger: &str) -> Result<()> {
    let graph = Graph::load(runtime)?;
    let ids = graph.closure(id, &graph.downs);
    run_dag(runtime, &graph, &ids, trigger, false).await
}

/// The dependency graph between catalog objects.
struct Graph {
    models: BTreeMap<i64, CatalogObject>,
    ups: HashMap<i64, Vec<i64>>,
    downs: HashMap<i64, Vec<i64>>,
}

impl Graph {
    fn load(runtime: &Arc<Runtime>) -> Result<Self> {
        let catalog = runtime.catalog();
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
    runtime: &Arc<Runtime>,
    graph: &Graph,
    ids: &BTreeSet<i64>,
    trigger: &str,
    full: bool,
) -> Result<()> {
    run_dag_with(
        runtime,
        graph,
        ids,
        &|_| trigger.to_string(),
        |object: CatalogObject| async move {
            crate::executor::refresh_one(runtime, &object, trigger, full)
                .await
                .map(|_| ())
        },
    )
    .await
}

/// Refreshes the models in `triggers` (model id -> trigger recorded on its run) the way
/// `REFRESH ALL` does (dependency order, independent ones concurrently, downstream of a
/// failure skipped with that reason), each through `run` (which calls [`refresh_one`](crate::refresh_one), for
/// example under a time limit). The scheduler's entry point.
pub async fn refresh_selected<F, Fut>(
    runtime: &Arc<Runtime>,
    triggers: &BTreeMap<i64, String>,
    run: F,
) -> Result<()>
where
    F: Fn(CatalogObject) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let graph = Graph::load(runtime)?;
    let ids: BTreeSet<i64> = triggers.keys().copied().collect();
    let trigger_of = |id: i64| triggers.get(&id).cloned().unwrap_or_default();
    run_dag_with(runtime, &graph, &ids, &trigger_of, run).await
}

/// Whether an input of `object` changed since its last refresh (new Delta versions of tables
/// and models, new, changed or removed files of file sources), as the refresh itself would
/// see it. `Some(state)` when one did, `state` naming the inputs' current versions (so a
/// caller can tell whether it already tried this very state); `None` when nothing changed.
/// A model that cannot be planned counts as changed, with the error as its state.
pub async fn input_change(
    runtime: &Arc<Runtime>,
    object: &CatalogObject,
) -> Result<Option<String>> {
    let planned = match crate::executor::plan_refresh(runtime, object, false, true).await {
        Ok(planned) => planned,
        Err(e) => return Ok(Some(format!("error: {e}"))),
    };
    let changed = object.published_version.is_none()
        || planned
            .choice
            .changes
            .values()
            .any(|c| *c != crate::changes::Change::Unchanged);
    if !changed {
        return Ok(None);
    }
    let state: BTreeMap<String, serde_json::Value> = planned
        .inputs
        .iter()
        .map(|(name, (input, _))| {
            let value = match (planned.files.get(name), planned.cursors.get(name)) {
                (Some(listing), _) => serde_json::json!(listing),
                (None, Some(cursor)) => serde_json::json!(cursor),
                (None, None) => serde_json::json!(input.published_version),
            };
            (name.to_string(), value)
        })
        .collect();
    Ok(Some(serde_json::Value::from_iter(state).to_string()))
}

async fn run_dag_with<F, Fut>(
    runtime: &Arc<Runtime>,
    graph: &Graph,
    ids: &BTreeSet<i64>,
    trigger_of: &(dyn Fn(i64) -> String + Sync),
    run: F,
) -> Result<()>
where
    F: Fn(CatalogObject) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
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
            if let Some(why) = failed_up {
                let reason = format!("upstream model {why}");
                runtime
                    .catalog()
                    .skip_run(object, &trigger_of(id), &reason)?;
                failed.insert(id, why);
                continue;
            }
            runnable.push(object.clone());
        }
        let results =
            futures::future::join_all(runnable.iter().map(|object| run(object.clone()))).await;
        for (object, result) in runnable.iter().zip(results) {
            if let Err(e) = result {
                // Skipped dependents say which model failed and why (a failing test, say).
                failed.insert(
                    object.id,
                    format!("\"{}\" failed: {}", object.name, e.root()),
                );
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
pub async fn recover(runtime: &Arc<Runtime>) -> Result<()> {
    let inner = runtime;
    let catalog = inner.catalog();
    let mut committed_runs: HashMap<i64, i64> = HashMap::new();
    for object in catalog.objects()? {
        // HTTP sources store their snapshots in Delta too.
        if !tributary_sources::stored_in_delta(&object) {
            continue;
        }
        let Some(location) = object.location.as_deref() else {
            continue;
        };
        let table = match inner.store().warehouse().load(location, None).await {
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
            let run_id = commit_run_id(&table, latest).await;
            // A refresh commit whose tests never ran is undone, not published.
            if object.kind == ObjectKind::Model
                && run_id.is_some()
                && crate::quality::publish::undo_unaudited(inner, &object, table.clone()).await?
            {
                tracing::info!(object = %object.name, latest, published, "undid a commit that landed before its tests ran");
                continue;
            }
            if let Some(run_id) = run_id {
                committed_runs.insert(run_id, latest);
            }
            tracing::info!(object = %object.name, latest, published, "publishing a commit that landed before a restart");
            inner.store().publish(&object, table)?;
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
    CommitMetadata::from_info(&infos.first()?.info).run_id
}
