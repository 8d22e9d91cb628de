//! The services every refresh, data test and statement shares: the catalog, the table store,
//! the query environment and the change sensor's memory. The engine builds one at start-up
//! (its composition root) and hands it down; nothing below builds its own.

use std::sync::Arc;

use datafusion::execution::context::SessionState;
use tributary_catalog::Catalog;
use tributary_query::QueryEnv;
use tributary_storage::TableStore;

use crate::sensor::SensorMemory;

pub struct Runtime {
    pub catalog: Arc<Catalog>,
    /// The warehouse's Delta tables: published versions, providers, write locks.
    pub store: Arc<TableStore>,
    /// The database name clients connect to.
    pub database: String,
    /// What queries are planned in (the base session state and name resolution).
    pub query: Arc<QueryEnv>,
    /// The change sensor's last answers from PostgreSQL sources (see [`crate::sensor`]).
    pub(crate) sensor: SensorMemory,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    pub fn new(
        catalog: Arc<Catalog>,
        store: Arc<TableStore>,
        database: String,
        query: Arc<QueryEnv>,
    ) -> Self {
        Self {
            catalog,
            store,
            database,
            query,
            sensor: SensorMemory::default(),
        }
    }

    /// The base state queries are planned in.
    pub fn base_state(&self) -> &SessionState {
        self.query.base_state()
    }
}
