//! How DataFusion sees Tributary's catalog: one DataFusion catalog (the database) whose
//! schemas are the catalog's schemas plus the system schemas (`tributary`, `pg_catalog`).
//! Tables and models resolve to their *published* Delta version, sources to readers of their
//! files, views to their planned query. Lookups go to the catalog every time, so every
//! session sees DDL from every other session at once. Code can make names resolve to other
//! providers for what it runs in a scope ([`with_overrides`]): a refresh's tests read the
//! version under audit by the model's own name.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, MemTable, SchemaProvider, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use tributary_catalog::{ObjectKind, ObjectName};

use crate::env::QueryEnv;
use crate::system;

tokio::task_local! {
    static OVERRIDES: HashMap<ObjectName, Arc<dyn TableProvider>>;
}

/// Runs `work` with each name in `overrides` resolving to its provider instead of the
/// catalog's (for planning done inside `work`, on this task).
pub async fn with_overrides<F: std::future::Future>(
    overrides: HashMap<ObjectName, Arc<dyn TableProvider>>,
    work: F,
) -> F::Output {
    OVERRIDES.scope(overrides, work).await
}

/// The DataFusion catalog for the server's one database.
#[derive(Debug)]
pub struct DatabaseProvider {
    engine: Weak<QueryEnv>,
    /// Schemas registered by DataFusion extensions (`pg_catalog`).
    extra: RwLock<HashMap<String, Arc<dyn SchemaProvider>>>,
}

impl DatabaseProvider {
    pub(crate) fn new(engine: Weak<QueryEnv>) -> Self {
        Self {
            engine,
            extra: RwLock::new(HashMap::new()),
        }
    }
}

fn df_err(e: impl Into<tributary_sql::Error>) -> DataFusionError {
    let e: tributary_sql::Error = e.into();
    match e {
        tributary_sql::Error::DataFusion(e) => e,
        other => DataFusionError::External(Box::new(other)),
    }
}

impl CatalogProvider for DatabaseProvider {
    fn schema_names(&self) -> Vec<String> {
        let mut names = self
            .engine
            .upgrade()
            .and_then(|e| e.catalog.schemas().ok())
            .unwrap_or_default();
        names.push(system::tributary::SCHEMA.to_string());
        names.extend(
            self.extra
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .keys()
                .cloned(),
        );
        names.sort();
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if let Some(extra) = self
            .extra
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return Some(Arc::clone(extra));
        }
        let engine = self.engine.upgrade()?;
        if name == system::tributary::SCHEMA {
            return Some(Arc::new(SystemSchema {
                engine: Weak::clone(&self.engine),
            }));
        }
        if engine.catalog.schema_exists(name).ok()? {
            Some(Arc::new(UserSchema {
                engine: Weak::clone(&self.engine),
                schema: name.to_string(),
            }))
        } else {
            None
        }
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> DfResult<Option<Arc<dyn SchemaProvider>>> {
        Ok(self
            .extra
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), schema))
    }
}

/// A user schema: its tables, models, sources and views from the catalog.
#[derive(Debug)]
struct UserSchema {
    engine: Weak<QueryEnv>,
    schema: String,
}

impl UserSchema {
    fn engine(&self) -> DfResult<Arc<QueryEnv>> {
        self.engine
            .upgrade()
            .ok_or_else(|| DataFusionError::Internal("engine shut down".into()))
    }
}

#[async_trait]
impl SchemaProvider for UserSchema {
    fn table_names(&self) -> Vec<String> {
        let Some(engine) = self.engine.upgrade() else {
            return Vec::new();
        };
        engine
            .catalog
            .objects()
            .unwrap_or_default()
            .into_iter()
            .filter(|o| o.name.schema == self.schema)
            .map(|o| o.name.name)
            .collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let object_name = ObjectName::new(&self.schema, name);
        if let Ok(Some(provider)) = OVERRIDES.try_with(|o| o.get(&object_name).cloned()) {
            return Ok(Some(provider));
        }
        let engine = self.engine()?;
        let Some(object) = engine.catalog.object(&object_name).map_err(df_err)? else {
            return Ok(None);
        };
        engine.provider_for(&object).await.map(Some).map_err(df_err)
    }

    async fn table_type(&self, name: &str) -> DfResult<Option<TableType>> {
        let engine = self.engine()?;
        let object = engine
            .catalog
            .object(&ObjectName::new(&self.schema, name))
            .map_err(df_err)?;
        Ok(object.map(|o| match o.kind {
            ObjectKind::View => TableType::View,
            _ => TableType::Base,
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.engine.upgrade().is_some_and(|e| {
            e.catalog
                .object(&ObjectName::new(&self.schema, name))
                .ok()
                .flatten()
                .is_some()
        })
    }
}

/// The read-only `tributary` schema.
#[derive(Debug)]
struct SystemSchema {
    engine: Weak<QueryEnv>,
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        system::tributary::TABLES
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let Some(engine) = self.engine.upgrade() else {
            return Ok(None);
        };
        let batch = if name == system::freshness::TABLE {
            system::freshness::build(&engine, chrono::Utc::now())
                .await
                .map_err(df_err)?
        } else {
            let Some(batch) = system::tributary::build(&engine.catalog, name).map_err(df_err)?
            else {
                return Ok(None);
            };
            batch
        };
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        Ok(Some(Arc::new(table)))
    }

    fn table_exist(&self, name: &str) -> bool {
        system::tributary::TABLES.contains(&name)
    }
}

impl DatabaseProvider {
    /// The engine behind this provider (for code that only has a DataFusion state).
    pub(crate) fn engine(&self) -> Option<Arc<QueryEnv>> {
        self.engine.upgrade()
    }
}
