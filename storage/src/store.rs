//! The table store: the one owner of the warehouse's Delta tables as readers and writers see
//! them. It knows which version of each stored object is published (the catalog says, the
//! store caches the table state and the reader's provider for it), serialises writers per
//! object, and publishes a new version by recording it in the catalog.
//!
//! Statement handlers and refreshes never open a table by path themselves: they ask the store
//! for the published table, lock the object for writing, and hand the committed table back to
//! [`TableStore::publish`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::catalog::TableProvider;
use deltalake::DeltaTable;
use tributary_catalog::{Catalog, CatalogObject};
use tributary_sql::{Error, Result};

use crate::delta::{self, Warehouse};
use crate::housekeeping;

/// A cached provider and the (published version, location) it reads.
type ProviderEntry = ((Option<i64>, Option<String>), Arc<dyn TableProvider>);

/// Published Delta tables, their providers, and the per-object write locks.
pub struct TableStore {
    catalog: Arc<Catalog>,
    warehouse: Warehouse,
    /// Published Delta table states by object id, so reads need no log I/O.
    published: Mutex<HashMap<i64, DeltaTable>>,
    /// Readers' providers of published versions by object id, with the (version, location)
    /// they read: building delta-rs' provider per query was a tenth of a point lookup.
    providers: Mutex<HashMap<i64, ProviderEntry>>,
    /// Serialises writers (DML, refreshes, housekeeping) per stored object.
    write_locks: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
    /// What background housekeeping did that readers must know (time travel's guard).
    housekeeping: housekeeping::Shared,
}

impl std::fmt::Debug for TableStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableStore")
            .field("warehouse", &self.warehouse)
            .finish_non_exhaustive()
    }
}

impl TableStore {
    pub fn new(catalog: Arc<Catalog>, warehouse: Warehouse) -> Self {
        Self {
            catalog,
            warehouse,
            published: Mutex::default(),
            providers: Mutex::default(),
            write_locks: Mutex::default(),
            housekeeping: housekeeping::Shared::default(),
        }
    }

    pub fn warehouse(&self) -> &Warehouse {
        &self.warehouse
    }

    /// What housekeeping passes recorded for readers (the shortest vacuum retention).
    pub fn housekeeping(&self) -> &housekeeping::Shared {
        &self.housekeeping
    }

    /// Takes `object`'s write lock and rereads it from the catalog under the lock (a writer
    /// before us may have changed it), for refreshes and polls.
    pub async fn lock_for_write(
        &self,
        object: &CatalogObject,
    ) -> Result<(tokio::sync::OwnedMutexGuard<()>, CatalogObject)> {
        let guard = self.write_lock(object.id).lock_owned().await;
        let current =
            self.catalog
                .object_by_id(object.id)?
                .ok_or_else(|| Error::UndefinedObject {
                    kind: object.kind.into(),
                    name: object.name.to_string(),
                })?;
        Ok((guard, current))
    }

    /// The lock every writer of the stored object `id` holds while it writes.
    pub fn write_lock(&self, id: i64) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(
            self.write_locks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(id)
                .or_default(),
        )
    }

    /// Records a newly committed Delta state as the version readers see.
    pub fn publish(&self, object: &CatalogObject, table: DeltaTable) -> Result<i64> {
        let version = delta::version(&table);
        let started = std::time::Instant::now();
        self.catalog.set_published_version(object.id, version)?;
        crate::metrics::catalog_commit(started.elapsed());
        self.published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(object.id, table);
        Ok(version)
    }

    /// Drops what is cached of the stored object `id` (dropped or replaced).
    pub fn forget(&self, id: i64) {
        self.published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        self.providers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// The provider of a stored object's published version, built once per version.
    pub async fn published_provider(
        &self,
        object: &CatalogObject,
    ) -> Result<Arc<dyn TableProvider>> {
        let read = (object.published_version, object.location.clone());
        let cached = self
            .providers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&object.id)
            .filter(|(at, _)| *at == read)
            .map(|(_, provider)| Arc::clone(provider));
        if let Some(provider) = cached {
            return Ok(provider);
        }
        let table = self.published_table(object).await?;
        let provider = delta::provider(&table).await?;
        self.providers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(object.id, (read, Arc::clone(&provider)));
        Ok(provider)
    }

    /// The Delta table of a stored object at its published version.
    pub async fn published_table(&self, object: &CatalogObject) -> Result<DeltaTable> {
        let location = object
            .location
            .as_deref()
            .ok_or_else(|| Error::Internal(format!("{} has no location", object.name)))?;
        let Some(version) = object.published_version else {
            return Err(Error::BadInput {
                message: format!("model \"{}\" has not been refreshed yet", object.name),
                detail: None,
            });
        };
        let cached = self
            .published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&object.id)
            .filter(|t| delta::version(t) == version)
            .cloned();
        if let Some(table) = cached {
            return Ok(table);
        }
        let table = self.warehouse.load(location, Some(version)).await?;
        self.published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(object.id, table.clone());
        Ok(table)
    }
}
