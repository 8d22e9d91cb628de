//! `CREATE MODEL` and `CREATE OR REPLACE MODEL`: plan the query, check the options against the
//! result's columns, store the definition, and run the first refresh before returning. A
//! replacement keeps the model's data until its new definition has refreshed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::sql::sqlparser::ast;
use tributary_catalog::{CatalogObject, NewObject, ObjectKind};

use super::{
    check_no_cycle, definition_of, duplicate, location_for, new_object_name, upstream_ids,
};
use crate::context::StatementContext;
use crate::dialect::CreateModel;
use crate::error::{Error, Result};
use crate::planning;
use crate::session::Output;
use crate::types::{self, columns_of_schema};

pub async fn create_model(
    cx: &StatementContext<'_>,
    model: CreateModel,
    text: &str,
) -> Result<Output> {
    let name = new_object_name(cx, &model.name)?;
    let catalog = cx.catalog();
    let existing = catalog.object(&name)?;
    if let Some(existing) = &existing {
        if model.if_not_exists {
            return Ok(Output::Command("CREATE MODEL".into()));
        }
        if !model.or_replace || existing.kind != ObjectKind::Model {
            return Err(duplicate(existing));
        }
    }
    for key in model.options.keys() {
        if !crate::refresh::MODEL_OPTIONS.contains(&key.as_str()) {
            return Err(Error::InvalidOption {
                option: key.clone(),
                message: format!(
                    "unknown model option (expected one of: {})",
                    crate::refresh::MODEL_OPTIONS.join(", ")
                ),
            });
        }
    }
    crate::options::RefreshMode::of(&model.options)?;
    crate::schedule::ModelSchedule::from_options(&model.options)?;
    crate::options::max_staleness(&model.options)?;
    let plan =
        planning::plan_statement(&cx.state(), ast::Statement::Query(model.query.clone())).await?;
    let views =
        crate::lineage::Views::of(&cx.engine.inner.query, &plan, &cx.current_schema()).await?;
    let upstream = upstream_ids(cx, &plan, &views)?;
    let schema = planning::result_schema(&cx.state(), &plan)?;
    check_key_options(&model.options, &schema)?;
    if let Some(existing) = &existing {
        check_no_cycle(cx, existing.id, &upstream)?;
        check_changed_columns_unused(cx, existing, &schema)?;
    }
    let location = location_for(&name);
    let engine = Arc::clone(&cx.engine.inner);
    // A model's Delta columns are all nullable: NOT NULL is a property of its query's result
    // (kept in the catalog), and Delta's write-time NOT NULL checks reject the placeholder
    // rows a MERGE that deletes keys produces internally.
    let nullable = Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    );
    let table = engine
        .store()
        .warehouse()
        .create(&location, &name.name, &nullable)
        .await?;
    let new = NewObject {
        name: name.clone(),
        kind: ObjectKind::Model,
        sql: text.to_string(),
        query: Some(model.query_text.clone()),
        default_schema: Some(cx.current_schema()),
        options: model.options.clone(),
        columns: columns_of_schema(&types::storage_schema(&schema)),
        location: Some(location.clone()),
        comment: model.options.get("description").cloned(),
    };
    let old_upstream: Vec<i64> = match &existing {
        Some(old) => catalog
            .dependencies()?
            .into_iter()
            .filter(|(down, _)| *down == old.id)
            .map(|(_, up)| up)
            .collect(),
        None => Vec::new(),
    };
    let stored = match &existing {
        Some(old) => catalog
            .replace_object(old.id, &new, &upstream)
            .map(|_| old.id),
        None => catalog.create_object(&new, &upstream).map(|o| o.id),
    };
    let id = stored.inspect_err(|_| {
        let _ = engine.store().warehouse().remove(&location);
    })?;
    engine.store().forget(id);
    drop(table);
    let object = catalog
        .object_by_id(id)?
        .ok_or_else(|| Error::Internal("model vanished".into()))?;
    if !model.with_data {
        if let Some(old_location) = existing.as_ref().and_then(|o| o.location.as_ref()) {
            let _ = engine.store().warehouse().remove(old_location);
        }
        views.record(&cx.engine.inner.query, id, &plan)?;
        if existing.is_some() {
            crate::lineage::recompute_dependents(&cx.engine.inner.query, id).await?;
        }
        return Ok(Output::Command("CREATE MODEL".into()));
    }
    // The statement is atomic, as CREATE MATERIALIZED VIEW is in PostgreSQL: if the first
    // refresh fails, a new model is not created and a replaced one gets its previous
    // definition and data back.
    let outcome = match crate::refresh::refresh_one(cx.runtime(), &object, "create", false).await {
        Ok(outcome) => outcome,
        Err(e) => {
            match &existing {
                Some(old) => {
                    catalog.replace_object(old.id, &definition_of(old), &old_upstream)?;
                    if let Some(version) = old.published_version {
                        catalog.set_published_version(old.id, version)?;
                    }
                }
                None => catalog.drop_objects(&[id])?,
            }
            engine.store().forget(id);
            let _ = engine.store().warehouse().remove(&location);
            return Err(e);
        }
    };
    // Edges are stored once the statement has succeeded, so a failed replacement keeps the
    // previous definition's.
    views.record(&cx.engine.inner.query, id, &plan)?;
    if let Some(old) = &existing {
        if let Some(old_location) = &old.location {
            let _ = engine.store().warehouse().remove(old_location);
        }
        crate::lineage::recompute_dependents(&cx.engine.inner.query, id).await?;
        crate::refresh::refresh_downstream_of(cx.runtime(), object.id, "replace").await?;
    }
    Ok(Output::Command(format!(
        "SELECT {}",
        outcome.rows_written.unwrap_or(0)
    )))
}

/// `unique_key` and `event_time` name columns of the model's result; `event_time` needs a
/// `lateness` (and the reverse).
fn check_key_options(options: &BTreeMap<String, String>, schema: &Schema) -> Result<()> {
    let column = |option: &str, name: &str| -> Result<()> {
        if schema.field_with_name(name).is_err() {
            return Err(Error::InvalidOption {
                option: option.into(),
                message: format!("\"{name}\" is not a column of the model's result"),
            });
        }
        Ok(())
    };
    if let Some(keys) = options.get("unique_key") {
        for key in keys.split(',').map(str::trim) {
            column("unique_key", key)?;
        }
    }
    match (options.get("event_time"), options.get("lateness")) {
        (Some(event_time), Some(_)) => column("event_time", event_time)?,
        (Some(_), None) | (None, Some(_)) => {
            return Err(Error::InvalidOption {
                option: "lateness".into(),
                message: "event_time and lateness go together".into(),
            });
        }
        (None, None) => {}
    }
    Ok(())
}

/// CREATE OR REPLACE must not drop or retype a column that a dependent reads (RESTRICT). A
/// dependent reads a column when its query names it or it stores a column of that name
/// (which covers `SELECT *`).
fn check_changed_columns_unused(
    cx: &StatementContext<'_>,
    existing: &CatalogObject,
    new_schema: &Schema,
) -> Result<()> {
    let new_columns = types::columns_of_schema(&types::storage_schema(new_schema));
    let changed: Vec<&str> = existing
        .columns
        .iter()
        .filter(|old| {
            new_columns
                .iter()
                .find(|c| c.name == old.name)
                .is_none_or(|c| c.data_type != old.data_type)
        })
        .map(|c| c.name.as_str())
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    let catalog = cx.catalog();
    let dependents: Vec<i64> = catalog
        .dependencies()?
        .into_iter()
        .filter(|(_, up)| *up == existing.id)
        .map(|(down, _)| down)
        .collect();
    for id in dependents {
        let Some(dependent) = catalog.object_by_id(id)? else {
            continue;
        };
        let Some(query) = &dependent.query else {
            continue;
        };
        let mut used: BTreeSet<String> = crate::dialect::identifiers(query);
        used.extend(dependent.columns.iter().map(|c| c.name.clone()));
        if let Some(column) = changed.iter().find(|c| used.contains(**c)) {
            return Err(Error::ColumnInUse {
                column: format!("{}.{column}", existing.name),
                dependents: vec![dependent.name.to_string()],
            });
        }
    }
    Ok(())
}
