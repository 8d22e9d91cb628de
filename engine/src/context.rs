//! What a statement handler works with: the engine's services, the role the statement runs
//! as, and the session's name resolution and planning state. Handlers get this, never the
//! [`Session`](crate::Session): they cannot change session settings or re-enter statement
//! dispatch, and everything a statement may touch passes through one place (where privilege
//! checks belong).

use datafusion::common::ParamValues;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast;
use std::sync::Arc;
use tributary_catalog::{Catalog, CatalogObject, ObjectClass};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::planning;
use crate::session::Output;

/// One statement's view of its session.
pub struct StatementContext<'a> {
    pub(crate) engine: &'a Engine,
    ctx: &'a SessionContext,
    user: &'a str,
}

impl std::fmt::Debug for StatementContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatementContext")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl<'a> StatementContext<'a> {
    pub(crate) fn new(engine: &'a Engine, ctx: &'a SessionContext, user: &'a str) -> Self {
        Self { engine, ctx, user }
    }

    /// The services refreshes and statements share.
    pub fn runtime(&self) -> &'a std::sync::Arc<crate::refresh::Runtime> {
        self.engine.runtime()
    }

    pub fn catalog(&self) -> &'a Catalog {
        self.engine.catalog()
    }

    /// The role the statement runs as.
    pub fn user(&self) -> &'a str {
        self.user
    }

    /// The schema unqualified names resolve to (first of the session's `search_path`).
    pub fn current_schema(&self) -> String {
        self.ctx
            .state()
            .config()
            .options()
            .catalog
            .default_schema
            .clone()
    }

    /// The session's planning state (its search path and functions), a snapshot.
    pub fn state(&self) -> SessionState {
        self.ctx.state()
    }

    /// The catalog object a statement names, resolved with the session's search path
    /// (`UndefinedObject` naming it as `kind` when there is none).
    pub fn resolve(&self, name: &ast::ObjectName, kind: ObjectClass) -> Result<CatalogObject> {
        let name = crate::names::object_name(name, &self.current_schema())?;
        self.catalog()
            .object(&name)?
            .ok_or_else(|| Error::UndefinedObject {
                kind,
                name: name.to_string(),
            })
    }

    /// Plans and starts a query.
    pub async fn query(&self, stmt: ast::Statement, params: Option<ParamValues>) -> Result<Output> {
        let started = std::time::Instant::now();
        let plan = planning::plan_statement(&self.ctx.state(), stmt).await?;
        self.run_query(plan, params, started).await
    }

    /// Binds the parameters of a query's plan, optimizes it and starts it.
    pub(crate) async fn run_query(
        &self,
        mut plan: LogicalPlan,
        params: Option<ParamValues>,
        started: std::time::Instant,
    ) -> Result<Output> {
        let state = self.ctx.state();
        if let Some(params) = params {
            plan = plan.replace_params_with_values(&params)?;
        }
        let planned = started.elapsed();
        let tag = match &plan {
            LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) => "EXPLAIN",
            _ => "SELECT",
        }
        .to_string();
        let schema = Arc::clone(plan.schema().inner());
        let optimized_plan = state.optimize(&plan)?;
        let optimized = started.elapsed();
        let physical = state
            .query_planner()
            .create_physical_plan(&optimized_plan, &state)
            .await?;
        let physical_planned = started.elapsed();
        let stream = datafusion::physical_plan::execute_stream(physical, state.task_ctx())?;
        tracing::debug!(
            plan_us = planned.as_micros() as u64,
            optimize_us = (optimized - planned).as_micros() as u64,
            physical_us = (physical_planned - optimized).as_micros() as u64,
            start_us = (started.elapsed() - physical_planned).as_micros() as u64,
            "query started"
        );
        Ok(Output::Rows {
            schema,
            stream,
            tag,
        })
    }
}
