//! What PostgreSQL clients (psql first) need beyond the `pg_catalog` that
//! `datafusion-pg-catalog` provides:
//!
//! - `pg_catalog` describing Tributary's objects as PostgreSQL would: `pg_class.relkind` is `r`
//!   for tables, `m` for models (materialized views), `f` for sources (foreign tables) and `v`
//!   for views; `pg_tables`, `pg_matviews` and `pg_views` list them accordingly, sources
//!   appear in `pg_foreign_table` (on a `files` server) and comments in `pg_description`
//!   ([`install`] wraps the schema the library registers; `catalog.rs`);
//! - functions clients call on catalog rows (`pg_get_indexdef`, `pg_get_viewdef`,
//!   `col_description`, `obj_description`, `pg_size_pretty`, ...; `functions.rs`);
//! - SQL rewrites, applied before the library's own rules: PostgreSQL's names for unnamed result
//!   columns ([`name_columns`]) and constructs DataFusion cannot plan as written
//!   ([`fix_for_planning`]): `ARRAY(subquery)`, `x = ANY(column)` over catalog columns that hold
//!   PostgreSQL array text, and subqueries that call set-returning functions on outer columns
//!   (`rewrite.rs`).
//!
//! This file holds what those parts share: [`install`], the state the catalog tables and
//! functions share ([`PgCompat`]), and the names and conversions more than one of them uses.

mod catalog;
mod functions;
mod rewrite;

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};

use datafusion::arrow::array::{ArrayRef, AsArray, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::prelude::SessionContext;
use tributary_catalog::{CatalogObject, ObjectName};

use crate::env::QueryEnv;
use tributary_sql::error::{Error, Result};

use catalog::PgCatalogSchema;
use functions::functions;
pub use rewrite::{fix_for_planning, name_columns};

const PG_CATALOG: &str = "pg_catalog";
/// The function `x = ANY(column)` is rewritten to.
const ANY_EQ: &str = "tributary_any_eq";
/// The function `array_to_string(column, ...)` is rewritten to.
const ARRAY_TO_STRING: &str = "tributary_array_to_string";

/// State shared by the wrapped `pg_catalog` tables and the functions that take relation OIDs.
#[derive(Debug)]
pub(crate) struct PgCompat {
    engine: Weak<QueryEnv>,
    /// Tributary's relations by the OID `pg_class` last listed them with. OIDs are handed out
    /// by the library when it lists relations and stay stable while the server runs.
    relations: RwLock<HashMap<i64, ObjectName>>,
}

impl PgCompat {
    fn engine(&self) -> DfResult<Arc<QueryEnv>> {
        self.engine
            .upgrade()
            .ok_or_else(|| DataFusionError::Internal("engine shut down".into()))
    }

    fn objects(&self) -> DfResult<Vec<CatalogObject>> {
        self.engine()?
            .catalog
            .objects()
            .map_err(|e| DataFusionError::External(Box::new(Error::from(e))))
    }

    /// The catalog object a relation OID stands for, if it is one of Tributary's.
    fn object(
        &self,
        oid: i64,
        objects: &HashMap<ObjectName, CatalogObject>,
    ) -> Option<CatalogObject> {
        let name = self
            .relations
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&oid)
            .cloned()?;
        objects.get(&name).cloned()
    }

    fn objects_by_name(&self) -> DfResult<HashMap<ObjectName, CatalogObject>> {
        Ok(self
            .objects()?
            .into_iter()
            .map(|o| (o.name.clone(), o))
            .collect())
    }
}

/// Wraps the `pg_catalog` schema registered by `datafusion_pg_catalog::setup_pg_catalog` in
/// `catalog` and registers the extra functions.
pub(crate) fn install(ctx: &SessionContext, catalog: &str, engine: Weak<QueryEnv>) -> Result<()> {
    let database = ctx
        .catalog(catalog)
        .ok_or_else(|| Error::Internal(format!("catalog {catalog} missing")))?;
    let inner = database
        .schema(PG_CATALOG)
        .ok_or_else(|| Error::Internal("pg_catalog schema missing".into()))?;
    let compat = Arc::new(PgCompat {
        engine,
        relations: RwLock::new(HashMap::new()),
    });
    database.register_schema(
        PG_CATALOG,
        Arc::new(PgCatalogSchema {
            inner,
            compat: Arc::clone(&compat),
        }),
    )?;
    for udf in functions(&compat) {
        ctx.register_udf(udf);
    }
    Ok(())
}

fn int64s(array: &ArrayRef) -> DfResult<Int64Array> {
    Ok(cast(array, &DataType::Int64)?
        .as_primitive::<Int64Type>()
        .clone())
}

fn strings(array: &ArrayRef) -> DfResult<StringArray> {
    Ok(cast(array, &DataType::Utf8)?.as_string::<i32>().clone())
}

/// An object's comment (`COMMENT ON`, or the `description` option it was declared with).
fn description(object: &CatalogObject) -> Option<String> {
    object
        .comment
        .clone()
        .or_else(|| object.options.get("description").cloned())
}
