//! Time travel: a table or model as it was at a Delta version or a point in time.

use std::any::Any;
use std::sync::Arc;
use tributary_catalog::ObjectClass;

use datafusion::catalog::TableProvider;
use datafusion::execution::context::SessionState;
use datafusion::sql::sqlparser::ast;

use crate::planning::AsOf;
use crate::provider::DatabaseProvider;
use tributary_sql::error::{Error, Result};
use tributary_storage::delta;

/// Resolves `name` as the session would and loads the requested snapshot.
pub async fn snapshot_provider(
    state: &SessionState,
    name: &ast::ObjectName,
    as_of: &AsOf,
) -> Result<Arc<dyn TableProvider>> {
    let options = state.config().options();
    let catalog_name = options.catalog.default_catalog.clone();
    let default_schema = options.catalog.default_schema.clone();
    let catalog = state
        .catalog_list()
        .catalog(&catalog_name)
        .ok_or_else(|| Error::Internal("default catalog missing".into()))?;
    let any: &dyn Any = catalog.as_ref();
    let engine = any
        .downcast_ref::<DatabaseProvider>()
        .and_then(DatabaseProvider::engine)
        .ok_or_else(|| Error::Internal("engine unavailable".into()))?;
    let object_name = tributary_sql::names::object_name(name, &default_schema)?;
    let object = engine
        .catalog
        .object(&object_name)?
        .ok_or_else(|| Error::UndefinedObject {
            kind: ObjectClass::Relation,
            name: object_name.to_string(),
        })?;
    if !tributary_sources::stored_in_delta(&object) {
        return Err(Error::bad_input(format!(
            "time travel needs a table, a model or an http source, and \"{}\" is a {}",
            object.name, object.kind
        )));
    }
    let location = object.location.as_deref().unwrap_or_default();
    let table = match as_of {
        AsOf::Version(v) => {
            if object.published_version.is_some_and(|p| *v > p) || *v < 0 {
                return Err(Error::bad_input(format!(
                    "version {v} of \"{}\" does not exist (latest is {})",
                    object.name,
                    object.published_version.unwrap_or(-1)
                )));
            }
            engine.store.warehouse().load(location, Some(*v)).await?
        }
        AsOf::Timestamp(text) => {
            let at = parse_timestamp(text)?;
            engine.store.warehouse().load_at(location, at).await?
        }
    };
    tributary_storage::housekeeping::ensure_readable(engine.store.housekeeping(), &object, &table)
        .await?;
    delta::provider(&table).await
}

fn parse_timestamp(text: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
    let t = text.trim();
    if let Ok(ts) = DateTime::parse_from_rfc3339(t) {
        return Ok(ts.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%#z"] {
        if let Ok(ts) = DateTime::parse_from_str(t, fmt) {
            return Ok(ts.with_timezone(&Utc));
        }
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(ts) = NaiveDateTime::parse_from_str(t, fmt) {
            return Ok(ts.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    Err(Error::BadInput {
        message: format!("invalid input syntax for type timestamp with time zone: \"{text}\""),
        detail: None,
    })
}
