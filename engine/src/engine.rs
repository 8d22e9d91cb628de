//! The engine shared by every session: catalog, warehouse, the DataFusion base state that
//! sessions are cloned from, and the cache of published Delta table versions.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use datafusion::catalog::TableProvider;
use datafusion::datasource::view::ViewTable;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SessionState;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use tributary_catalog::{Catalog, CatalogObject, ObjectKind};

use crate::error::{Error, Result};
use crate::provider::DatabaseProvider;
use crate::session::Session;
use crate::sources::files::FileSourceSpec;
use crate::storage::TableStore;
use crate::storage::delta::Warehouse;

/// How to open an engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The warehouse: a local folder or a URL.
    pub warehouse: String,
    /// The SQLite catalog file; defaults to `catalog.db` inside a local warehouse.
    pub catalog: Option<PathBuf>,
    /// The database name clients connect to.
    pub database: String,
    /// Memory DataFusion may use for query execution before spilling (bytes).
    pub memory_limit: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            warehouse: "./warehouse".into(),
            catalog: None,
            database: "tributary".into(),
            memory_limit: 4 << 30,
        }
    }
}

/// The shared engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<EngineInner>,
}

pub(crate) struct EngineInner {
    pub catalog: Arc<Catalog>,
    /// The warehouse's Delta tables: published versions, providers, write locks.
    pub store: TableStore,
    pub database: String,
    base_state: OnceLock<SessionState>,
    /// The change sensor's last answers from PostgreSQL sources (see `refresh::sensor`).
    pub(crate) sensor: crate::refresh::sensor::SensorMemory,
}

impl std::fmt::Debug for EngineInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineInner")
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Opens the catalog and warehouse, then reconciles the catalog with the Delta logs
    /// (runs interrupted by a crash are marked failed; commits that landed are published).
    pub async fn open(config: EngineConfig) -> Result<Self> {
        let warehouse = Warehouse::open(&config.warehouse)?;
        let catalog_path = match (&config.catalog, warehouse.local_root()) {
            (Some(path), _) => path.clone(),
            (None, Some(root)) => root.join("catalog.db"),
            (None, None) => {
                return Err(Error::bad_input(
                    "a remote warehouse needs an explicit catalog location (--catalog)",
                ));
            }
        };
        let catalog = Arc::new(Catalog::open(&catalog_path)?);
        let inner = Arc::new(EngineInner {
            store: TableStore::new(catalog.clone(), warehouse),
            catalog,
            database: config.database.clone(),
            base_state: OnceLock::new(),
            sensor: Default::default(),
        });
        let state = base_state(&inner, config.memory_limit)?;
        let _ = inner.base_state.set(state);
        let engine = Engine { inner };
        crate::refresh::recover(&engine).await?;
        // A job run a crash interrupted is retried like a refresh (see `schedule::due`).
        engine
            .catalog()
            .fail_unfinished_job_runs("interrupted: the server stopped during the run")?;
        crate::lineage::backfill(&engine).await;
        Ok(engine)
    }

    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    pub fn database(&self) -> &str {
        &self.inner.database
    }

    /// A new session for a connected user.
    pub fn session(&self, user: &str) -> Session {
        Session::new(self.clone(), user)
    }

    pub(crate) fn new_context(&self) -> SessionContext {
        let state = SessionStateBuilder::new_from_existing(self.inner.base_state().clone()).build();
        SessionContext::new_with_state(state)
    }
}

fn base_state(inner: &Arc<EngineInner>, memory_limit: usize) -> Result<SessionState> {
    let config = SessionConfig::new()
        .with_default_catalog_and_schema(&inner.database, "public")
        .with_create_default_catalog_and_schema(false)
        .with_information_schema(true)
        .set_bool("datafusion.sql_parser.enable_ident_normalization", true)
        .set_bool(
            "datafusion.execution.parquet.schema_force_view_types",
            false,
        )
        .set_bool("datafusion.sql_parser.map_string_types_to_utf8view", false)
        // Sorts (a keyed model is written sorted by its key) merge runs of this size instead of
        // DataFusion's 1 MiB, which left a 10M-row sort about 1,200 runs per partition to merge
        // (its SortExec went from 9.8 s to 7.0 s of CPU).
        .set_usize(
            "datafusion.execution.sort_in_place_threshold_bytes",
            64 << 20,
        )
        // Sessions run in UTC, as PostgreSQL's TimeZone parameter reports.
        .set_str("datafusion.execution.time_zone", "UTC");
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(memory_limit)))
        // File sources must see files as they are now: DataFusion's listing cache would keep
        // a folder's first listing forever (new files in a landing folder never seen).
        .with_object_list_cache_limit(0)
        .build_arc()?;
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        // Delta writes plan metric nodes that only Delta's planner can execute; federated
        // PostgreSQL subplans need the federation rule and planner (see `sources::postgres`).
        .with_optimizer_rules(crate::sources::postgres::optimizer_rules())
        .with_query_planner(crate::sources::postgres::query_planner())
        .with_physical_optimizer_rule(Arc::new(crate::constant_order::UnorderedOnConstants))
        .build();
    let ctx = SessionContext::new_with_state(state);
    ctx.register_catalog(
        &inner.database,
        Arc::new(DatabaseProvider::new(Arc::downgrade(inner))),
    );
    datafusion_pg_catalog::setup_pg_catalog(
        &ctx,
        &inner.database,
        datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider,
    )
    .map_err(|e| Error::DataFusion(*e))?;
    crate::system::pg_compat::install(&ctx, &inner.database, Arc::downgrade(inner))?;
    Ok(ctx.state())
}

impl EngineInner {
    pub fn base_state(&self) -> &SessionState {
        self.base_state
            .get()
            .expect("engine base state is set at open")
    }

    /// The DataFusion provider for any object, as readers see it now.
    pub async fn provider_for(&self, object: &CatalogObject) -> Result<Arc<dyn TableProvider>> {
        match object.kind {
            ObjectKind::Table | ObjectKind::Model => self.store.published_provider(object).await,
            // HTTP sources are read from their stored snapshots.
            ObjectKind::Source if crate::sources::http::is_http(object) => {
                self.store.published_provider(object).await
            }
            ObjectKind::Source if crate::sources::postgres::is_postgres(object) => {
                crate::sources::postgres::provider(&self.catalog, object).await
            }
            ObjectKind::Source => {
                let spec = FileSourceSpec::from_options(&object.options)?;
                let schema = crate::types::schema_of_columns(&object.columns)?;
                Ok(spec.provider(schema)?)
            }
            ObjectKind::View => {
                let query = object
                    .query
                    .as_deref()
                    .ok_or_else(|| Error::Internal(format!("view {} has no query", object.name)))?;
                let state = crate::planning::state_in_schema(
                    self.base_state(),
                    object.default_schema.as_deref(),
                );
                let plan = crate::planning::plan_query_text(&state, query).await?;
                Ok(Arc::new(ViewTable::new(plan, Some(query.to_string()))))
            }
        }
    }
}
