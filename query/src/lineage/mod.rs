//! Column-level lineage: for every column of a model or view, the columns of its direct
//! inputs (sources, tables, models, views) it is computed from, taken from the DataFusion
//! logical plan of its query ([`extract`]), never from re-parsing SQL.
//!
//! Edges have a kind. `direct`: the downstream column's value is computed from the upstream
//! column (projections, renames, expressions, CASE conditions and branches, aggregate and
//! window arguments including PARTITION BY / ORDER BY, UNION branches, scalar and IN
//! subqueries). The other kinds have no downstream column because they decide which rows the
//! object has rather than one column's value: `filter` (WHERE, HAVING), `join` (join
//! conditions, correlated subqueries' outer columns) and `group` (GROUP BY keys, DISTINCT ON).
//! ORDER BY and LIMIT are not edges.
//!
//! Edges stop at the first catalog object: a model over a view has edges from the view's
//! columns, and the view has edges of its own, so `SHOW LINEAGE` walks through it ([`show`]).
//! DataFusion's planner inlines views, so the views a plan reads are found first ([`Views`])
//! and count as inputs in the dependency graph too.
//!
//! Edges are stored in the catalog when a model or view is created or replaced (the
//! dependents of a replaced object are recomputed, since a view's or `SELECT *`'s columns may
//! have changed), removed with the object, and filled at start-up for catalogs created before
//! lineage existed.

mod extract;
pub mod show;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::{LogicalPlan, SubqueryAlias};
use tributary_catalog::{CatalogObject, ColumnEdge, ObjectKind, ObjectName};

use crate::env::QueryEnv;
use crate::planning;
use tributary_sql::error::{Error, Result};

pub use extract::column_edges;

/// How an upstream column reaches its downstream object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EdgeKind {
    Direct,
    Filter,
    Join,
    Group,
}

impl EdgeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeKind::Direct => "direct",
            EdgeKind::Filter => "filter",
            EdgeKind::Join => "join",
            EdgeKind::Group => "group",
        }
    }
}

/// One edge into the object whose plan was analysed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Edge {
    pub upstream: ObjectName,
    pub upstream_column: String,
    /// `None` for edges that shape rows (every kind but `direct`).
    pub downstream_column: Option<String>,
    pub kind: EdgeKind,
}

/// The views a plan reads. The planner replaces a view by `SubqueryAlias(view name, view's
/// plan)`; a CTE, a subquery in FROM or a table alias can have the same (unqualified) name, so
/// an unqualified alias counts as the view only when what it wraps is the view's plan.
#[derive(Debug)]
pub struct Views {
    /// The search path the plan was planned with.
    default_schema: String,
    plans: HashMap<ObjectName, (i64, LogicalPlan)>,
}

impl Views {
    /// Finds the views inlined in `plan` (planned with `default_schema`), not counting views
    /// inlined inside them.
    pub async fn of(engine: &QueryEnv, plan: &LogicalPlan, default_schema: &str) -> Result<Self> {
        let mut aliases = Vec::new();
        plan.apply_with_subqueries(|node| {
            if let LogicalPlan::SubqueryAlias(alias) = node {
                aliases.push(alias.clone());
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        let mut candidates = Views {
            default_schema: default_schema.to_string(),
            plans: HashMap::new(),
        };
        for alias in &aliases {
            let name = alias_name(alias, default_schema);
            if candidates.plans.contains_key(&name) {
                continue;
            }
            let Some(view) = engine.catalog.object(&name)? else {
                continue;
            };
            let Some(query) = view
                .query
                .as_deref()
                .filter(|_| view.kind == ObjectKind::View)
            else {
                continue;
            };
            let state =
                planning::state_in_schema(engine.base_state(), view.default_schema.as_deref());
            // A view that does not plan cannot be what the planner inlined.
            if let Ok(view_plan) = planning::plan_query_text(&state, query).await {
                candidates.plans.insert(name, (view.id, view_plan));
            }
        }
        // Only the outermost: a view read through another view is that view's input.
        let mut outermost = BTreeSet::new();
        plan.apply_with_subqueries(|node| {
            if let LogicalPlan::SubqueryAlias(alias) = node
                && let Some(name) = candidates.inlined(alias)
            {
                outermost.insert(name);
                return Ok(TreeNodeRecursion::Jump);
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        candidates.plans.retain(|name, _| outermost.contains(name));
        Ok(candidates)
    }

    /// The catalog ids of the views found.
    pub fn ids(&self) -> Vec<i64> {
        self.plans.values().map(|(id, _)| *id).collect()
    }

    fn default_schema(&self) -> &str {
        &self.default_schema
    }

    /// The view `alias` is the inlined form of, if it is one.
    fn inlined(&self, alias: &SubqueryAlias) -> Option<ObjectName> {
        let name = alias_name(alias, &self.default_schema);
        let (_, view_plan) = self.plans.get(&name)?;
        let qualified = alias.alias.schema().is_some();
        (qualified || alias.input.as_ref() == view_plan).then_some(name)
    }

    /// Extracts and stores the edges of object `id` from `plan`, the plan these views were
    /// found in.
    pub fn record(&self, engine: &QueryEnv, id: i64, plan: &LogicalPlan) -> Result<()> {
        record(engine, id, &column_edges(plan, self)?)
    }
}

fn alias_name(alias: &SubqueryAlias, default_schema: &str) -> ObjectName {
    ObjectName::new(
        alias.alias.schema().unwrap_or(default_schema),
        alias.alias.table(),
    )
}

fn record(engine: &QueryEnv, id: i64, edges: &[Edge]) -> Result<()> {
    let catalog = &engine.catalog;
    let mut ids: HashMap<ObjectName, Option<i64>> = HashMap::new();
    let mut stored = Vec::new();
    for edge in edges {
        let upstream_id = match ids.get(&edge.upstream) {
            Some(id) => *id,
            None => {
                let found = catalog.object(&edge.upstream)?.map(|o| o.id);
                ids.insert(edge.upstream.clone(), found);
                found
            }
        };
        // A scanned name the catalog does not know is a table function, not an input.
        let Some(upstream_id) = upstream_id else {
            continue;
        };
        stored.push(ColumnEdge {
            object_id: id,
            upstream_id,
            upstream_column: edge.upstream_column.clone(),
            downstream_column: edge.downstream_column.clone(),
            kind: edge.kind.as_str().to_string(),
        });
    }
    catalog.set_column_lineage(id, &stored)?;
    Ok(())
}

/// Plans a stored model's or view's query again and records its edges.
pub async fn recompute(engine: &QueryEnv, object: &CatalogObject) -> Result<()> {
    let query = object.query.as_deref().ok_or_else(|| {
        Error::Internal(format!("{} \"{}\" has no query", object.kind, object.name))
    })?;
    let schema = object.default_schema.as_deref().unwrap_or("public");
    let state = planning::state_in_schema(engine.base_state(), Some(schema));
    let plan = planning::plan_query_text(&state, query).await?;
    Views::of(engine, &plan, schema)
        .await?
        .record(engine, object.id, &plan)
}

/// Recomputes the edges of every model and view that (transitively) reads `id` (each from its
/// own plan, so the order does not matter). A dependent that no longer plans keeps its
/// previous edges (its next refresh fails and says why).
pub async fn recompute_dependents(engine: &QueryEnv, id: i64) -> Result<()> {
    let catalog = &engine.catalog;
    let mut downs: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (down, up) in catalog.dependencies()? {
        downs.entry(up).or_default().push(down);
    }
    let mut order = Vec::new();
    let mut seen = BTreeSet::from([id]);
    let mut next = vec![id];
    while !next.is_empty() {
        let mut level = Vec::new();
        for n in next {
            for d in downs.get(&n).into_iter().flatten() {
                if seen.insert(*d) {
                    level.push(*d);
                    order.push(*d);
                }
            }
        }
        next = level;
    }
    for dependent in order {
        let Some(object) = catalog.object_by_id(dependent)? else {
            continue;
        };
        if let Err(e) = recompute(engine, &object).await {
            tracing::warn!(object = %object.name, error = %e, "could not recompute column lineage");
        }
    }
    Ok(())
}

/// Fills the edges of models and views that have none recorded (a catalog from before
/// lineage). One that does not plan is logged and tried again at the next start.
pub async fn backfill(engine: &QueryEnv) {
    let missing = match engine.catalog.objects_without_lineage() {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list objects without column lineage");
            return;
        }
    };
    for id in missing {
        let Ok(Some(object)) = engine.catalog.object_by_id(id) else {
            continue;
        };
        if !matches!(object.kind, ObjectKind::Model | ObjectKind::View) {
            continue;
        }
        match recompute(engine, &object).await {
            Ok(()) => tracing::info!(object = %object.name, "column lineage computed"),
            Err(e) => {
                tracing::warn!(object = %object.name, error = %e, "could not compute column lineage")
            }
        }
    }
}
