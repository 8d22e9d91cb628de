//! The environment every query is planned in: the catalog, the table store, and the
//! DataFusion base state (configuration, memory pool, the database's catalog provider,
//! `pg_catalog` and the functions clients call) that every session's state is cloned from.
//! Names resolve through [`DatabaseProvider`] to [`QueryEnv::provider_for`], so tables,
//! models, sources and views read as the catalog says they are now.

use std::sync::{Arc, Weak};

use datafusion::catalog::TableProvider;
use datafusion::datasource::view::ViewTable;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SessionState;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use tributary_catalog::{Catalog, CatalogObject, ObjectKind};
use tributary_sources::SourceKind;
use tributary_sources::files::FileSourceSpec;
use tributary_sql::{Error, Result};
use tributary_storage::TableStore;

use crate::provider::DatabaseProvider;

/// What queries read through: shared by every session (cheap to clone behind its `Arc`).
pub struct QueryEnv {
    pub catalog: Arc<Catalog>,
    pub store: Arc<TableStore>,
    /// The database name clients connect to (DataFusion's default catalog).
    pub database: String,
    base_state: SessionState,
}

impl std::fmt::Debug for QueryEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEnv")
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl QueryEnv {
    /// The environment over `catalog` and `store`, with a memory pool of `memory_limit`
    /// bytes that queries spill beyond.
    pub fn open(
        catalog: Arc<Catalog>,
        store: Arc<TableStore>,
        database: &str,
        memory_limit: usize,
    ) -> Result<Arc<Self>> {
        // The base state resolves names through the environment that holds it: built with a
        // weak reference to the environment under construction.
        let mut failure = None;
        let env = Arc::new_cyclic(|env: &Weak<QueryEnv>| {
            let base_state = base_state(env, database, memory_limit).unwrap_or_else(|e| {
                failure = Some(e);
                SessionStateBuilder::new().build()
            });
            QueryEnv {
                catalog,
                store,
                database: database.to_string(),
                base_state,
            }
        });
        match failure {
            Some(e) => Err(e),
            None => Ok(env),
        }
    }

    /// The state every session's is cloned from.
    pub fn base_state(&self) -> &SessionState {
        &self.base_state
    }

    /// A new context with a fresh copy of the base state.
    pub fn new_context(&self) -> SessionContext {
        let state = SessionStateBuilder::new_from_existing(self.base_state().clone()).build();
        SessionContext::new_with_state(state)
    }

    /// The DataFusion provider for any object, as readers see it now.
    pub async fn provider_for(&self, object: &CatalogObject) -> Result<Arc<dyn TableProvider>> {
        match object.kind {
            ObjectKind::Table | ObjectKind::Model => self.store.published_provider(object).await,
            ObjectKind::Source => match SourceKind::of(object) {
                // HTTP sources are read from their stored snapshots.
                Some(SourceKind::Http) => self.store.published_provider(object).await,
                Some(SourceKind::Postgres) => {
                    tributary_sources::postgres::provider(&self.catalog, object).await
                }
                Some(SourceKind::Files) => {
                    let spec = FileSourceSpec::from_options(&object.options)?;
                    let schema = tributary_sql::types::schema_of_columns(&object.columns)?;
                    Ok(spec.provider(schema)?)
                }
                None => Err(Error::Internal(format!(
                    "source {} has a connector this build cannot read: {:?}",
                    object.name,
                    object
                        .options
                        .get(tributary_sources::kind::CONNECTOR_OPTION)
                ))),
            },
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

fn base_state(env: &Weak<QueryEnv>, database: &str, memory_limit: usize) -> Result<SessionState> {
    let config = SessionConfig::new()
        .with_default_catalog_and_schema(database, "public")
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
        .with_optimizer_rules(tributary_sources::postgres::optimizer_rules())
        .with_query_planner(tributary_sources::postgres::query_planner())
        .with_physical_optimizer_rule(Arc::new(crate::constant_order::UnorderedOnConstants))
        .build();
    let ctx = SessionContext::new_with_state(state);
    ctx.register_catalog(database, Arc::new(DatabaseProvider::new(Weak::clone(env))));
    datafusion_pg_catalog::setup_pg_catalog(
        &ctx,
        database,
        datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider,
    )
    .map_err(|e| Error::DataFusion(*e))?;
    crate::system::pg_compat::install(&ctx, database, Weak::clone(env))?;
    Ok(ctx.state())
}
