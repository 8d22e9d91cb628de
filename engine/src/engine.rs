//! The engine shared by every session, and the composition root: it opens the catalog, the
//! table store and the query environment, wires them together, and reconciles the catalog
//! with the Delta logs at start-up.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::prelude::SessionContext;
use tributary_catalog::{Catalog, CatalogObject};
use tributary_query::QueryEnv;

use crate::error::{Error, Result};
use crate::refresh::Runtime;
use crate::session::Session;
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
#[derive(Debug, Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Runtime>,
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
        let store = Arc::new(TableStore::new(Arc::clone(&catalog), warehouse));
        let query = QueryEnv::open(
            Arc::clone(&catalog),
            Arc::clone(&store),
            &config.database,
            config.memory_limit,
        )?;
        let inner = Arc::new(Runtime::new(query));
        let engine = Engine { inner };
        crate::refresh::recover(&engine.inner).await?;
        // A job run a crash interrupted is retried like a refresh (see `schedule::due`).
        engine
            .catalog()
            .fail_unfinished_job_runs("interrupted: the server stopped during the run")?;
        crate::lineage::backfill(&engine.inner.query).await;
        Ok(engine)
    }

    /// The services refreshes and statements share (what the scheduler refreshes with).
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.inner
    }

    pub fn catalog(&self) -> &Catalog {
        self.inner.catalog()
    }

    pub fn database(&self) -> &str {
        self.inner.database()
    }

    /// The HTTP sources whose `poll` interval has passed at `now` (the scheduler's question).
    pub fn due_http_sources(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<CatalogObject>> {
        crate::sources::http::due_sources(self.inner.catalog(), now)
    }

    /// Polls an HTTP source once; the outcome is recorded as a run of the source.
    pub async fn poll_source(
        &self,
        object: &CatalogObject,
        trigger: &str,
    ) -> Result<crate::sources::http::Polled> {
        let inner = &self.inner;
        crate::sources::http::poll(inner.catalog(), inner.store(), object, trigger).await
    }

    /// A new session for a connected user.
    pub fn session(&self, user: &str) -> Session {
        Session::new(self.clone(), user)
    }

    pub(crate) fn new_context(&self) -> SessionContext {
        self.inner.query.new_context()
    }

    /// Every source, table and model's freshness as of now (what `tributary.freshness` shows).
    pub async fn freshness(&self) -> Result<Vec<crate::system::freshness::Freshness>> {
        crate::system::freshness::freshness(&self.inner.query, chrono::Utc::now()).await
    }
}
