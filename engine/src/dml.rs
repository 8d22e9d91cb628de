//! Writes to tables: INSERT, UPDATE and DELETE, each one Delta commit. Models are written only
//! by refreshes, sources never.

use std::sync::Arc;
use tributary_catalog::ObjectClass;

use datafusion::common::ParamValues;
use datafusion::logical_expr::{LogicalPlan, WriteOp};
use datafusion::sql::sqlparser::ast;
use deltalake::protocol::SaveMode;
use tributary_catalog::{CatalogObject, ObjectKind};

use crate::context::StatementContext;
use crate::error::{Error, Result};
use crate::names;
use crate::planning;
use crate::session::Output;
use crate::storage::delta;

/// Resolves the target of a write and checks it is a table.
pub(crate) fn target_table(
    cx: &StatementContext<'_>,
    name: &ast::ObjectName,
    verb: &str,
) -> Result<CatalogObject> {
    let object = cx.resolve(name, ObjectClass::Relation)?;
    if object.kind != ObjectKind::Table {
        return Err(Error::WrongObjectType(format!(
            "cannot {verb} {} \"{}\": only tables are written directly{}",
            object.kind,
            object.name,
            if object.kind == ObjectKind::Model {
                " (models change through REFRESH)"
            } else {
                ""
            }
        )));
    }
    Ok(object)
}

pub async fn insert(
    cx: &StatementContext<'_>,
    insert: ast::Insert,
    params: Option<ParamValues>,
) -> Result<Output> {
    let ast::TableObject::TableName(name) = &insert.table else {
        return Err(Error::NotSupported("INSERT INTO a table function".into()));
    };
    if insert.returning.is_some() {
        return Err(Error::NotSupported("INSERT ... RETURNING".into()));
    }
    let object = target_table(cx, name, "insert into")?;
    let plan = planning::plan_statement(&cx.state(), ast::Statement::Insert(insert)).await?;
    let LogicalPlan::Dml(dml) = plan else {
        return Err(Error::Internal(
            "INSERT did not plan to a DML statement".into(),
        ));
    };
    if !matches!(dml.op, WriteOp::Insert(_)) {
        return Err(Error::Internal("INSERT planned to another write".into()));
    }
    let mut input = dml.input.as_ref().clone();
    if let Some(params) = params {
        input = input.replace_params_with_values(&params)?;
    }
    let rows = append_plan(cx, &object, input).await?;
    Ok(Output::Command(format!("INSERT 0 {rows}")))
}

/// Appends the rows of a plan to a table in one commit; returns the rows written.
pub(crate) async fn append_plan(
    cx: &StatementContext<'_>,
    object: &CatalogObject,
    plan: LogicalPlan,
) -> Result<u64> {
    let engine = &cx.engine.inner;
    let lock = engine.store().write_lock(object.id);
    let _guard = lock.lock().await;
    let object =
        engine
            .catalog()
            .object_by_id(object.id)?
            .ok_or_else(|| Error::UndefinedObject {
                kind: ObjectClass::Relation,
                name: object.name.to_string(),
            })?;
    let table = delta::latest(engine.store().published_table(&object).await?).await?;
    let state = cx.state();
    let table = table
        .write(Vec::new())
        .with_input_plan(plan)
        .with_session_state(Arc::new(state))
        .with_save_mode(SaveMode::Append)
        .with_commit_properties(delta::commit_properties(Default::default()))
        .await?;
    let rows = delta::last_commit_rows(&table).await.unwrap_or(0);
    engine.store().publish(&object, table)?;
    Ok(rows.max(0) as u64)
}

pub async fn update(cx: &StatementContext<'_>, update: ast::Update) -> Result<Output> {
    let ast::TableFactor::Table { name, .. } = &update.table.relation else {
        return Err(Error::NotSupported(
            "UPDATE of this kind of relation".into(),
        ));
    };
    if !update.table.joins.is_empty() || update.from.is_some() || update.returning.is_some() {
        return Err(Error::NotSupported(
            "UPDATE with FROM, joins or RETURNING".into(),
        ));
    }
    let object = target_table(cx, name, "update")?;
    let engine = &cx.engine.inner;
    let lock = engine.store().write_lock(object.id);
    let _guard = lock.lock().await;
    let object = engine.catalog().object_by_id(object.id)?.unwrap_or(object);
    let table = delta::latest(engine.store().published_table(&object).await?).await?;
    let mut builder = table
        .update()
        .with_commit_properties(delta::commit_properties(Default::default()));
    for assignment in &update.assignments {
        let ast::AssignmentTarget::ColumnName(column) = &assignment.target else {
            return Err(Error::NotSupported("UPDATE of a tuple of columns".into()));
        };
        let column = names::ident(
            column
                .0
                .last()
                .and_then(|p| p.as_ident())
                .ok_or_else(|| Error::Syntax("expected a column name".into()))?,
        );
        if !object.columns.iter().any(|c| c.name == column) {
            return Err(Error::UndefinedColumn(format!(
                "column \"{column}\" of relation \"{}\" does not exist",
                object.name
            )));
        }
        builder = builder.with_update(column, assignment.value.to_string());
    }
    if let Some(selection) = &update.selection {
        builder = builder.with_predicate(selection.to_string());
    }
    let (table, metrics) = builder.await?;
    let rows = metrics.num_updated_rows;
    if delta::version(&table) != object.published_version.unwrap_or(-1) {
        engine.store().publish(&object, table)?;
    }
    Ok(Output::Command(format!("UPDATE {rows}")))
}

pub async fn delete(cx: &StatementContext<'_>, delete: ast::Delete) -> Result<Output> {
    let tables = match &delete.from {
        ast::FromTable::WithFromKeyword(t) | ast::FromTable::WithoutKeyword(t) => t,
    };
    let [table] = tables.as_slice() else {
        return Err(Error::NotSupported("DELETE from several tables".into()));
    };
    let ast::TableFactor::Table { name, .. } = &table.relation else {
        return Err(Error::NotSupported(
            "DELETE from this kind of relation".into(),
        ));
    };
    if delete.using.is_some() || delete.returning.is_some() || !table.joins.is_empty() {
        return Err(Error::NotSupported(
            "DELETE with USING, joins or RETURNING".into(),
        ));
    }
    let object = target_table(cx, name, "delete from")?;
    let engine = &cx.engine.inner;
    let lock = engine.store().write_lock(object.id);
    let _guard = lock.lock().await;
    let object = engine.catalog().object_by_id(object.id)?.unwrap_or(object);
    let table = delta::latest(engine.store().published_table(&object).await?).await?;
    let mut builder = table
        .delete()
        .with_commit_properties(delta::commit_properties(Default::default()));
    if let Some(selection) = &delete.selection {
        builder = builder.with_predicate(selection.to_string());
    }
    let (table, metrics) = builder.await?;
    let rows = metrics.num_deleted_rows.unwrap_or(0);
    if delta::version(&table) != object.published_version.unwrap_or(-1) {
        engine.store().publish(&object, table)?;
    }
    Ok(Output::Command(format!("DELETE {rows}")))
}
