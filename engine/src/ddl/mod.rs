//! Definitions: schemas, tables, sources, models and views, and dropping them.
//! Every definition is planned (names, types, cycles checked) before anything is stored, and
//! is durable in the catalog before the statement returns. Models ([`model`]) and dropping
//! ([`drop`]) have modules of their own.

mod drop;
mod model;

pub(crate) use drop::drop_with_dependents;
pub use drop::{drop_objects, drop_schemas};
pub use model::create_model;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use tributary_catalog::ObjectClass;

use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::sql::sqlparser::ast;
use tributary_catalog::{CatalogObject, NewObject, ObjectKind, ObjectName};

use crate::context::StatementContext;
use crate::dialect::{CreateSource, ObjectKindSyntax};
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
            kind: ObjectClass::Schema,
            name: name.schema.clone(),
        });
    }
    Ok(name)
}

/// The name for a new object; `None` when an object has it and the statement said
/// `IF NOT EXISTS` (a notice-free no-op, as PostgreSQL does), an error when it did not.
fn free_name(
    cx: &StatementContext<'_>,
    name: &ast::ObjectName,
    if_not_exists: bool,
) -> Result<Option<ObjectName>> {
    let name = new_object_name(cx, name)?;
    match cx.catalog().object(&name)? {
        Some(_) if if_not_exists => Ok(None),
        Some(existing) => Err(duplicate(&existing)),
        None => Ok(Some(name)),
    }
}

fn duplicate(existing: &CatalogObject) -> Error {
    Error::DuplicateObject {
        kind: ObjectClass::Relation,
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
    let Some(name) = free_name(cx, &create.name, create.if_not_exists)? else {
        return Ok(Output::Command("CREATE TABLE".into()));
    };
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
                    kind: ObjectClass::Column,
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
        .store()
        .warehouse()
        .create(&location, &name.name, &schema)
        .await?;
    let object = engine.catalog().create_object(
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
            let _ = engine.store().warehouse().remove(&location);
            return Err(e.into());
        }
    };
    engine.store().publish(&object, table)?;
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
    let Some(name) = free_name(cx, &source.name, source.if_not_exists)? else {
        return Ok(Output::Command("CREATE SOURCE".into()));
    };
    if source.from == crate::dialect::SourceFrom::Http {
        let engine = &cx.engine.inner;
        crate::sources::http::create(engine.catalog(), engine.store(), name, source, text).await?;
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

/// `CREATE SOURCE ... FROM POSTGRES` (see `sources::postgres`).
pub async fn create_postgres_source(
    cx: &StatementContext<'_>,
    source: crate::dialect::CreatePostgresSource,
    text: &str,
) -> Result<Output> {
    let Some(name) = free_name(cx, &source.name, source.if_not_exists)? else {
        return Ok(Output::Command("CREATE SOURCE".into()));
    };
    crate::sources::postgres::create(cx.catalog(), name, source, text).await?;
    Ok(Output::Command("CREATE SOURCE".into()))
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
                    kind: ObjectClass::Relation,
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
                    kind: ObjectClass::Relation,
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
        Arc::clone(&schema),
        futures::stream::iter(vec![Ok(batch)]),
    );
    Ok(Output::Rows {
        schema,
        stream: Box::pin(stream),
        tag: "SELECT".into(),
    })
}
