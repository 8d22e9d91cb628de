//! The statements that run refreshes: `REFRESH MODEL`, `REFRESH ALL` and `EXPLAIN REFRESH`.
//! The refreshes themselves are [`tributary_refresh`]'s.

use datafusion::sql::sqlparser::ast;
use tributary_catalog::ObjectClass;
use tributary_catalog::{CatalogObject, ObjectKind};

use crate::context::StatementContext;
use crate::dialect::Refresh;
use crate::error::{Error, Result};
use crate::session::Output;
use crate::system::{Col, RowsBuilder};

/// `REFRESH MODEL name [FULL] [WITH UPSTREAM] [WITH DOWNSTREAM]`
pub(crate) async fn refresh_statement(
    cx: &StatementContext<'_>,
    refresh: Refresh,
) -> Result<Output> {
    let object = model_named(cx, &refresh.name)?;
    tributary_refresh::refresh_around(
        cx.runtime(),
        object.id,
        refresh.upstream,
        refresh.downstream,
        "manual",
        refresh.full,
    )
    .await?;
    Ok(Output::Command("REFRESH MODEL".into()))
}

/// `REFRESH ALL`: every model in dependency order, independent ones concurrently.
pub(crate) async fn refresh_all(cx: &StatementContext<'_>) -> Result<Output> {
    tributary_refresh::refresh_all(cx.runtime(), "manual").await?;
    Ok(Output::Command("REFRESH ALL".into()))
}

/// `EXPLAIN REFRESH MODEL name`: what a refresh would do now, without doing it: the strategy,
/// why, and each input's change since the model's last refresh.
pub(crate) async fn explain(cx: &StatementContext<'_>, name: &ast::ObjectName) -> Result<Output> {
    let object = model_named(cx, name)?;
    let explanation = tributary_refresh::explain(cx.runtime(), &object).await?;
    let mut rows = RowsBuilder::new(&[("item", Col::Text), ("value", Col::Text)]);
    rows.text(Some("strategy")).text(Some(explanation.strategy));
    rows.text(Some("reason")).text(Some(&explanation.reason));
    for (input, change) in &explanation.inputs {
        rows.text(Some(&format!("input {input}")))
            .text(Some(change));
    }
    crate::ddl::rows_output(rows.finish()?)
}

/// The model a statement names (42P01 when missing, 42809 when it is another kind).
fn model_named(cx: &StatementContext<'_>, name: &ast::ObjectName) -> Result<CatalogObject> {
    let object = cx.resolve(name, ObjectClass::Model)?;
    if object.kind != ObjectKind::Model {
        return Err(Error::WrongObjectType(format!(
            "\"{}\" is a {}, not a model",
            object.name, object.kind
        )));
    }
    Ok(object)
}
