//! Refreshing models in dependency order, one Delta commit per refresh carrying the run id
//! and the input versions it read (its bookmarks), published only once committed. Each
//! refresh picks its strategy ([`strategy`]) from what changed in its inputs ([`changes`]).
//! A failed refresh leaves the previous version served and its error in `tributary.runs`.

pub mod changes;
mod columns;
mod counting;
mod executor;
mod keyed;
mod lateness;
mod plans;
pub mod strategy;

pub use executor::refresh_one;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use deltalake::DeltaTable;
use tributary_catalog::{CatalogObject, ObjectKind, RunOutcome, RunStatus};

use crate::dialect::Refresh;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::session::{Output, Session};
use crate::storage::delta::{self, RUN_ID_KEY};

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
    let object = session.resolve(name, "model")?;
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
    let planned = executor::plan_refresh(&session.engine.inner, &object, false).await?;
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
