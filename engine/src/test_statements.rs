//! The statements of data tests (SQL.md, "Tests"): `CREATE TEST`, `DROP TEST`, `RUN TESTS`,
//! `SHOW TESTS`. Compiling expectations, running checks and write-audit-publish are
//! [`crate::quality`]'s (the refresh layer).

use datafusion::sql::sqlparser::ast;
use tributary_catalog::NewTest;
use tributary_catalog::ObjectClass;

use crate::context::StatementContext;
use crate::dialect::{CreateTest, DropTests, Expectation};
use crate::error::{Error, Result};
use crate::quality::{check, definition};
use crate::session::Output;
use crate::system::{Col, RowsBuilder};
use crate::{names, planning};

/// `CREATE TEST`: compiles the expectation, plans the query (so unknown objects and columns
/// are refused now, not at the next refresh), and records the test. It first runs with the
/// next refresh of a model it reads, or with `RUN TESTS`.
pub(crate) async fn create_test(
    cx: &StatementContext<'_>,
    test: CreateTest,
    text: &str,
) -> Result<Output> {
    let catalog = cx.catalog();
    let name = names::ident(&test.name);
    if catalog.test(&name)?.is_some() {
        if test.if_not_exists {
            return Ok(Output::Command("CREATE TEST".into()));
        }
        return Err(Error::DuplicateObject {
            kind: ObjectClass::Test,
            name,
        });
    }
    let on = match &test.on {
        Some(on) => Some(cx.resolve(on, ObjectClass::Relation)?),
        None => None,
    };
    let target = match &test.expectation {
        Expectation::References { target, .. } => Some(cx.resolve(target, ObjectClass::Relation)?),
        _ => None,
    };
    let compiled = definition::compile(
        &test,
        on.as_ref().map(|o| &o.name),
        target.as_ref().map(|t| &t.name),
    )?;
    let default_schema = cx.current_schema();
    let state = planning::state_in_schema(cx.engine.inner.base_state(), Some(&default_schema));
    let plan = planning::plan_query_text(&state, &compiled.query).await?;
    let mut reads = Vec::new();
    for input in planning::plan_inputs(&plan, &default_schema) {
        if let Some(object) = catalog.object(&input)? {
            reads.push(object.id);
        }
    }
    if let Some(on) = &on
        && !reads.contains(&on.id)
    {
        reads.push(on.id);
    }
    catalog.create_test(&NewTest {
        name,
        object_id: on.as_ref().map(|o| o.id),
        kind: compiled.kind.into(),
        columns: compiled.columns,
        sql: text.to_string(),
        query: compiled.query,
        default_schema,
        severity: compiled.severity,
        store_failures: compiled.store_failures,
        failures_limit: compiled.failures_limit,
        reads,
    })?;
    Ok(Output::Command("CREATE TEST".into()))
}

/// `DROP TEST [IF EXISTS] name, ...`
pub(crate) fn drop_tests(cx: &StatementContext<'_>, drop: DropTests) -> Result<Output> {
    let catalog = cx.catalog();
    for name in &drop.names {
        let name = names::ident(name);
        match catalog.drop_test(&name) {
            Ok(()) => {}
            Err(tributary_catalog::Error::NotFound { .. }) if drop.if_exists => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Output::Command("DROP TEST".into()))
}

/// `RUN TESTS [ON name]`: runs the tests (all, or those on or reading `name`) against what is
/// published now, records each result, and returns one row per test. Failing tests are rows
/// with status `fail`, not an error: the statement reports, refreshes gate.
pub(crate) async fn run_tests(
    cx: &StatementContext<'_>,
    on: Option<ast::ObjectName>,
) -> Result<Output> {
    let engine = &cx.engine.inner;
    let catalog = engine.catalog();
    let tests = match &on {
        Some(name) => {
            let object = cx.resolve(name, ObjectClass::Relation)?;
            catalog.tests_reading(object.id)?
        }
        None => catalog.tests()?,
    };
    let mut b = RowsBuilder::new(&[
        ("test", Col::Text),
        ("object", Col::Text),
        ("kind", Col::Text),
        ("severity", Col::Text),
        ("status", Col::Text),
        ("failing_rows", Col::Int),
        ("scope", Col::Text),
        ("duration_ms", Col::Int),
        ("error", Col::Text),
    ]);
    for test in &tests {
        let object = match test.object_id {
            Some(id) => catalog.object_by_id(id)?,
            None => None,
        };
        let version = object.as_ref().and_then(|o| o.published_version);
        let result = check::execute_on_published(engine, test, version).await;
        catalog.record_test_result(test, &result)?;
        let object_name = object.as_ref().map(|o| o.name.to_string());
        crate::metrics::test_finished(
            &test.name,
            &object_name.clone().unwrap_or_default(),
            result.status.as_str(),
        );
        b.text(Some(&test.name))
            .text(object_name.as_deref())
            .text(Some(&test.kind))
            .text(Some(test.severity.as_str()))
            .text(Some(result.status.as_str()))
            .int(Some(result.failing_rows))
            .text(Some(&result.scope))
            .int(Some(result.duration_ms))
            .text(result.error.as_deref());
    }
    crate::ddl::rows_output(b.finish()?)
}

/// `SHOW TESTS`: every test with its last outcome.
use crate::system::definitions::tests_table;

pub(crate) fn show_tests(cx: &StatementContext<'_>) -> Result<Output> {
    crate::ddl::rows_output(tests_table(cx.catalog())?)
}
