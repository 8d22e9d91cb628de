//! Definitions: schemas, tables, sources, models and views, and dropping them.
//! Every definition is planned (names, types, cycles checked) before anything is stored, and
//! is durable in the catalog before the statement returns.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::sql::sqlparser::ast;
use tributary_catalog::{CatalogObject, NewObject, ObjectKind, ObjectName};

use crate::context::StatementContext;
use crate::dialect::{CreateModel, CreateSource, DropObjects, ObjectKindSyntax};
use crate::error::{Error, Result};
use crate::names;
use crate::planning::{self, is_system_schema};
use crate::session::Output;
use crate::sources::files::FileSourceSpec;
use crate::system::RowsBuilder;
use crate::types::{self, columns_of_schema};

pub fn create_schema(
    cx: &StatementContext<'_>,
    name: &ast::SchemaName,
    if_not_exists: bool,
) -> Result<Output> {
    let ast::SchemaName::Simple(name) = name else {
        return Err(Error::NotSupported(
            "CREATE SCHEMA ... AUTHORIZATION".into(),
        ));
    };
    let schema = names::object_name(name, "")?.name;
    check_user_schema(&schema)?;
    cx.engine.catalog().create_schema(&schema, if_not_exists)?;
    Ok(Output::Command("CREATE SCHEMA".into()))
}

fn check_user_schema(schema: &str) -> Result<()> {
    if is_system_schema(schema) || schema.starts_with("pg_") {
        return Err(Error::InsufficientPrivilege(format!(
            "schema \"{schema}\" is reserved for the system"
        )));
    }
    Ok(())
}

/// Resolves a name for a new object and checks its schema exists and it is free.
fn new_object_name(cx: &StatementContext<'_>, name: &ast::ObjectName) -> Result<ObjectName> {
    let name = names::object_name(name, &cx.current_schema())?;
    check_user_schema(&name.schema)?;
    if !cx.catalog().schema_exists(&name.schema)? {
        return Err(Error::UndefinedObject {
            kind: "schema",
            name: name.schema.clone(),
        });
    }
    Ok(name)
}

fn duplicate(existing: &CatalogObject) -> Error {
    Error::DuplicateObject {
        kind: "relation",
        name: existing.name.to_string(),
    }
}

fn location_for(name: &ObjectName) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{}/{}-{}", name.schema, name.name, &id[..12])
}

pub async fn create_table(
    cx: &StatementContext<'_>,
    create: ast::CreateTable,
    text: &str,
) -> Result<Output> {
    let name = new_object_name(cx, &create.name)?;
    if let Some(existing) = cx.catalog().object(&name)? {
        if create.if_not_exists {
            return Ok(Output::Command("CREATE TABLE".into()));
        }
        return Err(duplicate(&existing));
    }
    let (schema, query_plan) = if let Some(query) = &create.query {
        let plan =
            planning::plan_statement(&cx.state(), ast::Statement::Query(query.clone())).await?;
        let schema = planning::result_schema(&cx.state(), &plan)?;
        (schema.as_ref().clone(), Some(plan))
    } else {
        let mut fields = Vec::new();
        let mut seen = BTreeSet::new();
        for column in &create.columns {
            let col_name = names::ident(&column.name);
            if !seen.insert(col_name.clone()) {
                return Err(Error::DuplicateObject {
                    kind: "column",
                    name: col_name,
                });
            }
            let not_null = column.options.iter().any(|o| {
                matches!(
                    o.option,
                    ast::ColumnOption::NotNull | ast::ColumnOption::PrimaryKey(_)
                )
            });
            fields.push(Field::new(
                col_name,
                types::arrow_type(&column.data_type)?,
                !not_null,
            ));
        }
        if fields.is_empty() {
            return Err(Error::bad_input(format!(
                "table \"{name}\" needs at least one column"
            )));
        }
        (Schema::new(fields), None)
    };
    let location = location_for(&name);
    let engine = &cx.engine.inner;
    let table = engine
        .store
        .warehouse()
        .create(&location, &name.name, &schema)
        .await?;
    let object = engine.catalog.create_object(
        &NewObject {
            name: name.clone(),
            kind: ObjectKind::Table,
            sql: text.to_string(),
            query: None,
            default_schema: None,
            options: BTreeMap::new(),
            columns: columns_of_schema(&schema),
            location: Some(location.clone()),
            comment: None,
        },
        &[],
    );
    let object = match object {
        Ok(o) => o,
        Err(e) => {
            let _ = engine.store.warehouse().remove(&location);
            return Err(e.into());
        }
    };
    engine.store.publish(&object, table)?;
    if let Some(plan) = query_plan {
        let rows = crate::dml::append_plan(cx, &object, plan).await?;
        return Ok(Output::Command(format!("SELECT {rows}")));
    }
    Ok(Output::Command("CREATE TABLE".into()))
}

pub async fn create_view(
    cx: &StatementContext<'_>,
    view: ast::CreateView,
    text: &str,
) -> Result<Output> {
    if view.materialized {
        // sqlparser's form of CREATE MATERIALIZED VIEW reaches here only with unusual syntax.
        return Err(Error::NotSupported(
            "this form of CREATE MATERIALIZED VIEW".into(),
        ));
    }
    let name = new_object_name(cx, &view.name)?;
    let query_text = view.query.to_string();
    let plan =
        planning::plan_statement(&cx.state(), ast::Statement::Query(view.query.clone())).await?;
    let views =
        crate::lineage::Views::of(&cx.engine.inner.query, &plan, &cx.current_schema()).await?;
    let upstream = upstream_ids(cx, &plan, &views)?;
    let columns = columns_of_schema(
        &planning::result_schema(&cx.state(), &plan)?
            .as_ref()
            .clone(),
    );
    let new = NewObject {
        name: name.clone(),
        kind: ObjectKind::View,
        sql: text.to_string(),
        query: Some(query_text),
        default_schema: Some(cx.current_schema()),
        options: BTreeMap::new(),
        columns,
        location: None,
        comment: view.comment.clone(),
    };
    let catalog = cx.catalog();
    let stored = match catalog.object(&name)? {
        Some(existing) if view.or_replace && existing.kind == ObjectKind::View => {
            check_no_cycle(cx, existing.id, &upstream)?;
            catalog.replace_object(existing.id, &new, &upstream)?;
            Some((existing.id, true))
        }
        Some(_) if view.if_not_exists => None,
        Some(existing) => return Err(duplicate(&existing)),
        None => Some((catalog.create_object(&new, &upstream)?.id, false)),
    };
    if let Some((id, replaced)) = stored {
        views.record(&cx.engine.inner.query, id, &plan)?;
        if replaced {
            crate::lineage::recompute_dependents(&cx.engine.inner.query, id).await?;
        }
    }
    Ok(Output::Command("CREATE VIEW".into()))
}

pub async fn create_source(
    cx: &StatementContext<'_>,
    source: CreateSource,
    text: &str,
) -> Result<Output> {
    let name = new_object_name(cx, &source.name)?;
    if let Some(existing) = cx.catalog().object(&name)? {
        if source.if_not_exists {
            return Ok(Output::Command("CREATE SOURCE".into()));
        }
        return Err(duplicate(&existing));
    }
    if source.from == crate::dialect::SourceFrom::Http {
        let engine = &cx.engine.inner;
        crate::sources::http::create(&engine.catalog, &engine.store, name, source, text).await?;
        return Ok(Output::Command("CREATE SOURCE".into()));
    }
    let mut options = source.options.clone();
    options.insert("path".into(), source.path.clone());
    options.insert("format".into(), source.format.as_str().into());
    let spec = FileSourceSpec::from_options(&options)?;
    crate::options::max_staleness(&options)?;
    let schema = if source.columns.is_empty() {
        spec.infer_schema(&cx.state()).await?
    } else {
        let fields = source
            .columns
            .iter()
            .map(|c| {
                let not_null = c
                    .options
                    .iter()
                    .any(|o| matches!(o.option, ast::ColumnOption::NotNull));
                Ok(Field::new(
                    names::ident(&c.name),
                    types::arrow_type(&c.data_type)?,
                    !not_null,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Arc::new(Schema::new(fields))
    };
    let description = options.get("description").cloned();
    cx.catalog().create_object(
        &NewObject {
            name,
            kind: ObjectKind::Source,
            sql: text.to_string(),
            query: None,
            default_schema: None,
            options,
            columns: columns_of_schema(&schema),
            location: None,
            comment: description,
        },
        &[],
    )?;
    Ok(Output::Command("CREATE SOURCE".into()))
}

/// The catalog ids of the user objects a plan reads: what it scans (through views, which the
/// planner inlines) and the views themselves. Planning already rejected unknown tables, so a
/// scanned name the catalog does not know is a table function (`generate_series(...)`), not
/// an input.
fn upstream_ids(
    cx: &StatementContext<'_>,
    plan: &datafusion::logical_expr::LogicalPlan,
    views: &crate::lineage::Views,
) -> Result<Vec<i64>> {
    let catalog = cx.catalog();
    let mut ids = views.ids();
    for name in planning::plan_inputs(plan, &cx.current_schema()) {
        if let Some(object) = catalog.object(&name)? {
            ids.push(object.id);
        }
    }
    Ok(ids)
}

/// Fails with 42P17 when `id` would (transitively) read itself through `upstream`.
fn check_no_cycle(cx: &StatementContext<'_>, id: i64, upstream: &[i64]) -> Result<()> {
    let edges = cx.catalog().dependencies()?;
    let mut ups: HashMap<i64, Vec<i64>> = HashMap::new();
    for (down, up) in edges {
        ups.entry(down).or_default().push(up);
    }
    let mut stack: Vec<i64> = upstream.to_vec();
    let mut seen = BTreeSet::new();
    while let Some(next) = stack.pop() {
        if next == id {
            let name = cx
                .engine
                .catalog()
                .object_by_id(id)?
                .map(|o| o.name.to_string())
                .unwrap_or_default();
            return Err(Error::Cycle(format!("\"{name}\" would depend on itself")));
        }
        if seen.insert(next) {
            stack.extend(ups.get(&next).into_iter().flatten().copied());
        }
    }
    Ok(())
}

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
    let engine = cx.engine.inner.clone();
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
        .store
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
        let _ = engine.store.warehouse().remove(&location);
    })?;
    engine.store.forget(id);
    drop(table);
    let object = catalog
        .object_by_id(id)?
        .ok_or_else(|| Error::Internal("model vanished".into()))?;
    if !model.with_data {
        if let Some(old_location) = existing.as_ref().and_then(|o| o.location.as_ref()) {
            let _ = engine.store.warehouse().remove(old_location);
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
            engine.store.forget(id);
            let _ = engine.store.warehouse().remove(&location);
            return Err(e);
        }
    };
    // Edges are stored once the statement has succeeded, so a failed replacement keeps the
    // previous definition's.
    views.record(&cx.engine.inner.query, id, &plan)?;
    if let Some(old) = &existing {
        if let Some(old_location) = &old.location {
            let _ = engine.store.warehouse().remove(old_location);
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
            return Err(Error::DependentObjects {
                kind: "or change the type of column",
                name: format!("{}.{column}", existing.name),
                dependents: vec![dependent.name.to_string()],
            });
        }
    }
    Ok(())
}

/// The definition of a stored object, to put it back as it was.
fn definition_of(object: &CatalogObject) -> NewObject {
    NewObject {
        name: object.name.clone(),
        kind: object.kind,
        sql: object.sql.clone(),
        query: object.query.clone(),
        default_schema: object.default_schema.clone(),
        options: object.options.clone(),
        columns: object.columns.clone(),
        location: object.location.clone(),
        comment: object.comment.clone(),
    }
}

fn kind_of(syntax: ObjectKindSyntax) -> ObjectKind {
    match syntax {
        ObjectKindSyntax::Source => ObjectKind::Source,
        ObjectKindSyntax::Table => ObjectKind::Table,
        ObjectKindSyntax::Model => ObjectKind::Model,
        ObjectKindSyntax::View => ObjectKind::View,
    }
}

/// Everything that (transitively) reads from `ids`, dependents first.
fn with_dependents(cx: &StatementContext<'_>, ids: &[i64]) -> Result<Vec<i64>> {
    let edges = cx.catalog().dependencies()?;
    let mut downs: HashMap<i64, Vec<i64>> = HashMap::new();
    for (down, up) in edges {
        downs.entry(up).or_default().push(down);
    }
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    fn visit(
        id: i64,
        downs: &HashMap<i64, Vec<i64>>,
        seen: &mut BTreeSet<i64>,
        order: &mut Vec<i64>,
    ) {
        if !seen.insert(id) {
            return;
        }
        for d in downs.get(&id).into_iter().flatten() {
            visit(*d, downs, seen, order);
        }
        order.push(id);
    }
    for id in ids {
        visit(*id, &downs, &mut seen, &mut order);
    }
    Ok(order)
}

pub async fn drop_objects(cx: &StatementContext<'_>, drop: DropObjects) -> Result<Output> {
    let kind = kind_of(drop.kind);
    let catalog = cx.catalog();
    let mut targets = Vec::new();
    for name in &drop.names {
        let name = names::object_name(name, &cx.current_schema())?;
        match catalog.object(&name)? {
            Some(o) if o.kind == kind => targets.push(o),
            Some(o) => {
                return Err(Error::WrongObjectType(format!(
                    "\"{}\" is a {}, not a {}",
                    o.name, o.kind, kind
                )));
            }
            None if drop.if_exists => {}
            None => {
                return Err(Error::UndefinedObject {
                    kind: kind.as_str(),
                    name: name.to_string(),
                });
            }
        }
    }
    let ids: Vec<i64> = targets.iter().map(|o| o.id).collect();
    let all = if drop.cascade {
        with_dependents(cx, &ids)?
    } else {
        ids
    };
    drop_ids(cx, &all)?;
    Ok(Output::Command(format!("DROP {}", drop_tag(kind))))
}

fn drop_tag(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Source => "SOURCE",
        ObjectKind::Table => "TABLE",
        ObjectKind::Model => "MODEL",
        ObjectKind::View => "VIEW",
    }
}

/// `CREATE SOURCE ... FROM POSTGRES` (see `sources::postgres`).
pub async fn create_postgres_source(
    cx: &StatementContext<'_>,
    source: crate::dialect::CreatePostgresSource,
    text: &str,
) -> Result<Output> {
    let name = new_object_name(cx, &source.name)?;
    if let Some(existing) = cx.catalog().object(&name)? {
        if source.if_not_exists {
            return Ok(Output::Command("CREATE SOURCE".into()));
        }
        return Err(duplicate(&existing));
    }
    crate::sources::postgres::create(cx.catalog(), name, source, text).await?;
    Ok(Output::Command("CREATE SOURCE".into()))
}

/// Drops `ids` and everything that reads them (what `DROP CONNECTION ... CASCADE` removes).
pub(crate) fn drop_with_dependents(cx: &StatementContext<'_>, ids: &[i64]) -> Result<()> {
    let all = with_dependents(cx, ids)?;
    drop_ids(cx, &all)
}

fn drop_ids(cx: &StatementContext<'_>, ids: &[i64]) -> Result<()> {
    let catalog = cx.catalog();
    let objects: Vec<CatalogObject> = ids
        .iter()
        .filter_map(|id| catalog.object_by_id(*id).transpose())
        .collect::<Result<_, _>>()?;
    catalog.drop_objects(ids)?;
    for o in objects {
        cx.engine.inner.store.forget(o.id);
        if let Some(location) = &o.location
            && let Err(e) = cx.engine.inner.store.warehouse().remove(location)
        {
            tracing::warn!(object = %o.name, error = %e, "could not remove dropped table files");
        }
    }
    Ok(())
}

pub async fn drop_schemas(
    cx: &StatementContext<'_>,
    schemas: &[ast::ObjectName],
    if_exists: bool,
    cascade: bool,
) -> Result<Output> {
    let catalog = cx.catalog();
    for schema in schemas {
        let name = names::object_name(schema, "")?.name;
        if !catalog.schema_exists(&name)? {
            if if_exists {
                continue;
            }
            return Err(Error::UndefinedObject {
                kind: "schema",
                name,
            });
        }
        if cascade {
            let ids: Vec<i64> = catalog
                .objects()?
                .into_iter()
                .filter(|o| o.name.schema == name)
                .map(|o| o.id)
                .collect();
            let all = with_dependents(cx, &ids)?;
            drop_ids(cx, &all)?;
        }
        catalog.drop_schema(&name)?;
    }
    Ok(Output::Command("DROP SCHEMA".into()))
}

pub async fn show_objects(cx: &StatementContext<'_>, kind: ObjectKindSyntax) -> Result<Output> {
    let kind = kind_of(kind);
    let mut b = RowsBuilder::new(&[
        ("schema_name", crate::system::Col::Text),
        ("name", crate::system::Col::Text),
        ("version", crate::system::Col::Int),
        ("description", crate::system::Col::Text),
    ]);
    for o in cx.catalog().objects()? {
        if o.kind == kind {
            b.text(Some(&o.name.schema))
                .text(Some(&o.name.name))
                .int(o.published_version)
                .text(o.comment.as_deref());
        }
    }
    rows_output(b.finish()?)
}

pub fn comment_on(
    cx: &StatementContext<'_>,
    object_type: ast::CommentObject,
    name: &ast::ObjectName,
    comment: Option<&str>,
) -> Result<Output> {
    let catalog = cx.catalog();
    match object_type {
        ast::CommentObject::Column => {
            let mut parts = name.0.clone();
            let column = parts
                .pop()
                .and_then(|p| p.as_ident().map(names::ident))
                .ok_or_else(|| Error::Syntax("expected table.column".into()))?;
            let object_name = names::object_name(&ast::ObjectName(parts), &cx.current_schema())?;
            let object = catalog
                .object(&object_name)?
                .ok_or_else(|| Error::UndefinedObject {
                    kind: "relation",
                    name: object_name.to_string(),
                })?;
            let mut columns = object.columns.clone();
            let col = columns
                .iter_mut()
                .find(|c| c.name == column)
                .ok_or_else(|| {
                    Error::UndefinedColumn(format!(
                        "column \"{column}\" of relation \"{object_name}\" does not exist"
                    ))
                })?;
            col.comment = comment.map(str::to_string);
            catalog.set_columns(object.id, &columns)?;
        }
        _ => {
            let object_name = names::object_name(name, &cx.current_schema())?;
            let object = catalog
                .object(&object_name)?
                .ok_or_else(|| Error::UndefinedObject {
                    kind: "relation",
                    name: object_name.to_string(),
                })?;
            catalog.set_comment(object.id, comment)?;
        }
    }
    Ok(Output::Command("COMMENT".into()))
}

/// A one-row, one-column text result (SHOW).
pub fn single_text_row(column: &str, value: &str) -> Result<Output> {
    let mut b = RowsBuilder::new(&[(column, crate::system::Col::Text)]);
    b.text(Some(value));
    rows_output(b.finish()?)
}

pub fn rows_output(batch: RecordBatch) -> Result<Output> {
    let schema = batch.schema();
    let stream = datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
        schema.clone(),
        futures::stream::iter(vec![Ok(batch)]),
    );
    Ok(Output::Rows {
        schema,
        stream: Box::pin(stream),
        tag: "SELECT".into(),
    })
}
