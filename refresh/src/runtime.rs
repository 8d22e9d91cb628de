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
    /// What queries are planned in (the base session state and name resolution), and the
    /// catalog, table store and database name it was opened over.
    pub query: Arc<QueryEnv>,
    /// The change sensor's last answers from PostgreSQL sources (see [`crate::sensor`]).
    pub(crate) sensor: SensorMemory,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("database", &self.query.database)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    pub fn new(query: Arc<QueryEnv>) -> Self {
        Self {
            query,
            sensor: SensorMemory::default(),
        }
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.query.catalog
    }

    /// The warehouse's Delta tables: published versions, providers, write locks.
    pub fn store(&self) -> &Arc<TableStore> {
        &self.query.store
    }

    /// The database name clients connect to.
    pub fn database(&self) -> &str {
        &self.query.database
    }

    /// The base state queries are planned in.
    pub fn base_state(&self) -> &SessionState {
        self.query.base_state()
    }
}
