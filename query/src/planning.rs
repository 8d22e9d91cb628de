//! From SQL text or AST to a DataFusion logical plan: PostgreSQL client compatibility
//! rewrites, Delta time travel (`VERSION AS OF`, `TIMESTAMP AS OF`), and the inputs a plan
//! reads (for dependency tracking).

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::MemorySchemaProvider;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    self, Expr, Ident, ObjectNamePart, TableFactor, TableVersion, Value, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use tributary_catalog::ObjectName;

use crate::system::pg_compat;
use tributary_sql::dialect::{Statement, parse_statement};
use tributary_sql::error::{Error, Result};

/// Schema where time-travel snapshots are registered while a statement is planned.
pub const TIME_TRAVEL_SCHEMA: &str = "__time_travel";

static COMPAT: LazyLock<PostgresCompatibilityParser> =
    LazyLock::new(PostgresCompatibilityParser::new);

/// Applies the rewrites real clients need: PostgreSQL's result column names and the
/// constructs DataFusion cannot plan as written ([`pg_compat`]), then the compatibility
/// parser's rules (psql's `OPERATOR(pg_catalog.~)`, `::regclass`, ...).
pub fn rewrite_for_clients(mut stmt: ast::Statement) -> ast::Statement {
    pg_compat::name_columns(&mut stmt);
    pg_compat::fix_for_planning(&mut stmt);
    COMPAT.rewrite(stmt)
}

/// Parses one statement the way PostgreSQL clients' catalog queries need. `None` when the
/// compatibility parser does not understand the text (Tributary syntax such as time travel),
/// or it holds several statements.
///
/// The compatibility parser substitutes a few whole client queries DataFusion could not plan
/// (with stand-ins that lose PostgreSQL's column names); its substitution is used only when
/// [`rewrite_for_clients`] has nothing to fix in the query as the client wrote it.
pub fn parse_for_clients(sql: &str) -> Option<ast::Statement> {
    let compat = single(COMPAT.parse(sql).ok()?)?;
    let Some(raw) = Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .ok()
        .and_then(single)
    else {
        return Some(compat);
    };
    let mut fixed = raw.clone();
    pg_compat::name_columns(&mut fixed);
    if !pg_compat::fix_for_planning(&mut fixed) && COMPAT.rewrite(raw) != compat {
        return Some(compat);
    }
    Some(COMPAT.rewrite(fixed))
}

fn single(mut statements: Vec<ast::Statement>) -> Option<ast::Statement> {
    if statements.len() == 1 {
        statements.pop()
    } else {
        None
    }
}

/// A copy of `state` whose unqualified names resolve to `schema` (a stored definition's
/// search path), or `state` itself when there is none.
pub fn state_in_schema(state: &SessionState, schema: Option<&str>) -> SessionState {
    let mut state = state.clone();
    if let Some(schema) = schema {
        state.config_mut().options_mut().catalog.default_schema = schema.to_string();
    }
    state
}

/// Parses a SELECT text (a model or view definition) and plans it.
pub async fn plan_query_text(state: &SessionState, sql: &str) -> Result<LogicalPlan> {
    match parse_statement(sql)? {
        Statement::Sql(stmt) if matches!(*stmt, ast::Statement::Query(_)) => {
            plan_statement(state, *stmt).await
        }
        _ => Err(Error::Syntax(format!("expected a query, found \"{sql}\""))),
    }
}

/// The columns a query really produces: the schema after type coercion, which widens CASE,
/// UNION and COALESCE branches to their common type (the planner's first guess can be the
/// first branch's narrower type, which would round values when stored).
pub fn result_schema(state: &SessionState, plan: &LogicalPlan) -> Result<SchemaRef> {
    let analyzed =
        state
            .analyzer()
            .execute_and_check(plan.clone(), state.config_options(), |_, _| {})?;
    Ok(Arc::clone(analyzed.schema().inner()))
}

/// Plans a standard SQL statement, resolving time travel first.
pub async fn plan_statement(state: &SessionState, mut stmt: ast::Statement) -> Result<LogicalPlan> {
    crate::except_all::rewrite(state, &mut stmt).await?;
    let mut collect = CollectVersions::default();
    let _ = stmt.visit(&mut collect);
    let mut registered = Vec::new();
    if !collect.found.is_empty() {
        let engine_schema = time_travel_schema(state)?;
        for (i, (name, version)) in collect.found.iter().enumerate() {
            let provider = crate::time_travel::snapshot_provider(state, name, version).await?;
            let key = format!("t{}_{}", i, uuid::Uuid::new_v4().simple());
            engine_schema.register_table(key.clone(), provider)?;
            registered.push(key);
        }
        let mut replace = ReplaceVersions {
            names: registered.clone(),
            next: 0,
        };
        let _ = stmt.visit(&mut replace);
        let plan = state
            .statement_to_plan(DfStatement::Statement(Box::new(stmt)))
            .await;
        for key in &registered {
            let _ = engine_schema.deregister_table(key);
        }
        return Ok(plan?);
    }
    Ok(state
        .statement_to_plan(DfStatement::Statement(Box::new(stmt)))
        .await?)
}

fn time_travel_schema(
    state: &SessionState,
) -> Result<Arc<dyn datafusion::catalog::SchemaProvider>> {
    let catalog_name = &state.config().options().catalog.default_catalog;
    let catalog = state
        .catalog_list()
        .catalog(catalog_name)
        .ok_or_else(|| Error::Internal("default catalog missing".into()))?;
    if let Some(schema) = catalog.schema(TIME_TRAVEL_SCHEMA) {
        return Ok(schema);
    }
    let schema: Arc<dyn datafusion::catalog::SchemaProvider> =
        Arc::new(MemorySchemaProvider::new());
    catalog.register_schema(TIME_TRAVEL_SCHEMA, Arc::clone(&schema))?;
    Ok(schema)
}

/// The version a time-travel reference asks for.
#[derive(Debug, Clone)]
pub enum AsOf {
    Version(i64),
    Timestamp(String),
}

#[derive(Default)]
struct CollectVersions {
    found: Vec<(ast::ObjectName, AsOf)>,
}

fn as_of(version: &TableVersion) -> Result<AsOf> {
    match version {
        TableVersion::VersionAsOf(Expr::Value(v)) => match &v.value {
            Value::Number(n, _) => n
                .parse()
                .map(AsOf::Version)
                .map_err(|_| Error::bad_input(format!("invalid version \"{n}\""))),
            other => Err(Error::bad_input(format!("invalid version {other}"))),
        },
        TableVersion::TimestampAsOf(Expr::Value(v)) => match &v.value {
            Value::SingleQuotedString(s) => Ok(AsOf::Timestamp(s.clone())),
            other => Err(Error::bad_input(format!(
                "TIMESTAMP AS OF needs a timestamp literal, found {other}"
            ))),
        },
        other => Err(Error::NotSupported(format!("time travel with {other}"))),
    }
}

impl VisitorMut for CollectVersions {
    type Break = ();
    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table {
            name,
            version: Some(version),
            ..
        } = factor
        {
            match as_of(version) {
                Ok(v) => self.found.push((name.clone(), v)),
                Err(_) => self
                    .found
                    .push((name.clone(), AsOf::Timestamp(version.to_string()))),
            }
        }
        ControlFlow::Continue(())
    }
}

struct ReplaceVersions {
    names: Vec<String>,
    next: usize,
}

impl VisitorMut for ReplaceVersions {
    type Break = ();
    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table {
            name,
            version,
            alias,
            ..
        } = factor
            && version.is_some()
        {
            let original = name.0.last().cloned();
            *name = ast::ObjectName(vec![
                ObjectNamePart::Identifier(Ident::new(TIME_TRAVEL_SCHEMA)),
                ObjectNamePart::Identifier(Ident::new(&self.names[self.next])),
            ]);
            // Keep column references like `t.col` working.
            if alias.is_none()
                && let Some(ObjectNamePart::Identifier(ident)) = original
            {
                *alias = Some(ast::TableAlias {
                    explicit: true,
                    at: None,
                    name: ident,
                    columns: vec![],
                });
            }
            *version = None;
            self.next += 1;
        }
        ControlFlow::Continue(())
    }
}

/// The objects a plan reads, by schema-qualified name (system schemas left out).
pub fn plan_inputs(plan: &LogicalPlan, default_schema: &str) -> BTreeSet<ObjectName> {
    let mut inputs = BTreeSet::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let schema = scan
                .table_name
                .schema()
                .unwrap_or(default_schema)
                .to_string();
            if !is_system_schema(&schema) {
                inputs.insert(ObjectName::new(schema, scan.table_name.table()));
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    inputs
}

pub fn is_system_schema(schema: &str) -> bool {
    matches!(
        schema,
        "tributary" | "pg_catalog" | "information_schema" | TIME_TRAVEL_SCHEMA
    )
}
