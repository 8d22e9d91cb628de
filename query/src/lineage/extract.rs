//! Column lineage of one logical plan, computed bottom-up: every plan node gets, for each of
//! its output columns, the set of catalog columns whose values flow into it ([`Flow::columns`])
//! and, for the node as a whole, the catalog columns that only decide which rows there are
//! ([`Flow::shaping`]: filters, join conditions, GROUP BY keys).
//!
//! The plan is the planner's output before analysis, so no projection pushdown or constant
//! folding has blurred which expression reads which column. CTEs and subqueries in FROM are
//! plain subtrees there and `SELECT *` is already expanded. The planner inlines a view as a
//! `SubqueryAlias` named after it over the view's plan; such a node counts as a column source
//! of its own (lineage names the view, and the view has edges of its own), see [`Views`].

use std::collections::BTreeSet;

use datafusion::common::Column;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::utils::grouping_set_to_exprlist;
use datafusion::logical_expr::{Distinct, Expr, LogicalPlan, Subquery};
use tributary_catalog::ObjectName;

use super::{Edge, EdgeKind, Views};
use crate::planning::is_system_schema;
use tributary_sql::error::Result;

/// A column of a catalog object.
pub(super) type ColumnRef = (ObjectName, String);
type Sources = BTreeSet<ColumnRef>;

/// What flows out of one plan node.
#[derive(Debug, Default, Clone)]
struct Flow {
    /// Per output column (in schema order): the columns its value is computed from.
    columns: Vec<Sources>,
    /// Columns that only decide which rows the node produces, with how.
    shaping: BTreeSet<(EdgeKind, ColumnRef)>,
}

/// The column edges of a plan whose output is the object's columns, given the views found in
/// it (and the search path it was planned with).
pub fn column_edges(plan: &LogicalPlan, views: &Views) -> Result<Vec<Edge>> {
    let ctx = Ctx {
        default_schema: views.default_schema(),
        views,
    };
    let flow = flow(plan, &ctx)?;
    let mut edges = BTreeSet::new();
    for (field, sources) in plan.schema().fields().iter().zip(&flow.columns) {
        for (object, column) in sources {
            edges.insert(Edge {
                upstream: object.clone(),
                upstream_column: column.clone(),
                downstream_column: Some(field.name().clone()),
                kind: EdgeKind::Direct,
            });
        }
    }
    for (kind, (object, column)) in flow.shaping {
        edges.insert(Edge {
            upstream: object,
            upstream_column: column,
            downstream_column: None,
            kind,
        });
    }
    Ok(edges.into_iter().collect())
}

/// What every node's computation needs.
struct Ctx<'a> {
    default_schema: &'a str,
    views: &'a Views,
}

/// Every column of `object` as the source of the same-position output column.
fn scan_of(object: &ObjectName, plan: &LogicalPlan) -> Vec<Sources> {
    plan.schema()
        .fields()
        .iter()
        .map(|f| Sources::from([(object.clone(), f.name().clone())]))
        .collect()
}

fn flow(plan: &LogicalPlan, ctx: &Ctx<'_>) -> Result<Flow> {
    if let LogicalPlan::SubqueryAlias(alias) = plan
        && let Some(view) = ctx.views.inlined(alias)
    {
        return Ok(Flow {
            columns: scan_of(&view, plan),
            shaping: BTreeSet::new(),
        });
    }
    let inputs = plan
        .inputs()
        .into_iter()
        .map(|input| Ok((input, flow(input, ctx)?)))
        .collect::<Result<Vec<_>>>()?;
    let scope = Scope {
        inputs: &inputs,
        ctx,
    };
    let mut shaping: BTreeSet<(EdgeKind, ColumnRef)> = inputs
        .iter()
        .flat_map(|(_, f)| f.shaping.iter().cloned())
        .collect();
    let columns = match plan {
        LogicalPlan::TableScan(scan) => {
            let schema = scan.table_name.schema().unwrap_or(ctx.default_schema);
            if is_system_schema(schema) {
                vec![Sources::new(); scan.projected_schema.fields().len()]
            } else {
                scan_of(&ObjectName::new(schema, scan.table_name.table()), plan)
            }
        }
        LogicalPlan::Projection(p) => scope.values(&p.expr, &mut shaping)?,
        LogicalPlan::Filter(f) => {
            scope.shape(&f.predicate, EdgeKind::Filter, &mut shaping)?;
            scope.passthrough()
        }
        LogicalPlan::Join(join) => {
            for (left, right) in &join.on {
                scope.shape(left, EdgeKind::Join, &mut shaping)?;
                scope.shape(right, EdgeKind::Join, &mut shaping)?;
            }
            if let Some(filter) = &join.filter {
                scope.shape(filter, EdgeKind::Join, &mut shaping)?;
            }
            scope.by_name(plan)
        }
        LogicalPlan::Aggregate(agg) => {
            let groups = grouping_set_to_exprlist(&agg.group_expr)?;
            for group in &groups {
                scope.shape(group, EdgeKind::Group, &mut shaping)?;
            }
            let mut columns = Vec::new();
            for group in groups {
                columns.push(scope.value(group, &mut shaping)?);
            }
            if matches!(agg.group_expr.as_slice(), [Expr::GroupingSet(_)]) {
                columns.push(Sources::new()); // the internal grouping id
            }
            columns.extend(scope.values(&agg.aggr_expr, &mut shaping)?);
            columns
        }
        LogicalPlan::Window(window) => {
            let mut columns = scope.passthrough();
            columns.extend(scope.values(&window.window_expr, &mut shaping)?);
            columns
        }
        LogicalPlan::Distinct(Distinct::On(on)) => {
            for expr in &on.on_expr {
                scope.shape(expr, EdgeKind::Group, &mut shaping)?;
            }
            scope.values(&on.select_expr, &mut shaping)?
        }
        LogicalPlan::Union(_) | LogicalPlan::RecursiveQuery(_) => {
            let width = plan.schema().fields().len();
            let mut columns = vec![Sources::new(); width];
            for (_, input) in &inputs {
                for (column, sources) in columns.iter_mut().zip(&input.columns) {
                    column.extend(sources.iter().cloned());
                }
            }
            columns
        }
        LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::Distinct(Distinct::All(_))
        | LogicalPlan::Repartition(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Subquery(_) => scope.passthrough(),
        // Values, empty relations, unnest, extensions: columns found by name in an input
        // keep their lineage; any other column could come from any input column.
        _ => scope.by_name(plan),
    };
    Ok(Flow { columns, shaping })
}

/// The inputs of the node being computed, to resolve the columns its expressions name.
struct Scope<'a> {
    inputs: &'a [(&'a LogicalPlan, Flow)],
    ctx: &'a Ctx<'a>,
}

impl Scope<'_> {
    fn resolve(&self, column: &Column) -> Option<&Sources> {
        self.inputs.iter().find_map(|(plan, flow)| {
            plan.schema()
                .maybe_index_of_column(column)
                .and_then(|i| flow.columns.get(i))
        })
    }

    /// The single input's columns unchanged.
    fn passthrough(&self) -> Vec<Sources> {
        self.inputs
            .first()
            .map(|(_, flow)| flow.columns.clone())
            .unwrap_or_default()
    }

    /// Each output column of `plan` as the input column of the same qualified name, or
    /// everything the inputs carry when no input has it.
    fn by_name(&self, plan: &LogicalPlan) -> Vec<Sources> {
        let everything: Sources = self
            .inputs
            .iter()
            .flat_map(|(_, f)| f.columns.iter().flatten().cloned())
            .collect();
        plan.schema()
            .iter()
            .map(|(qualifier, field)| {
                let column = Column::new(qualifier.cloned(), field.name());
                self.resolve(&column)
                    .cloned()
                    .unwrap_or_else(|| everything.clone())
            })
            .collect()
    }

    fn values(
        &self,
        exprs: &[Expr],
        shaping: &mut BTreeSet<(EdgeKind, ColumnRef)>,
    ) -> Result<Vec<Sources>> {
        exprs.iter().map(|e| self.value(e, shaping)).collect()
    }

    /// The columns an expression's value is computed from: every column it names (CASE
    /// conditions, function arguments, window PARTITION BY and ORDER BY included) and the
    /// values of scalar subqueries. Subqueries' own row-shaping columns go to `shaping`.
    fn value(&self, expr: &Expr, shaping: &mut BTreeSet<(EdgeKind, ColumnRef)>) -> Result<Sources> {
        let mut sources: Sources = expr
            .column_refs()
            .into_iter()
            .filter_map(|c| self.resolve(c))
            .flatten()
            .cloned()
            .collect();
        for (subquery, uses_values) in subqueries(expr)? {
            let inner = self.subquery(subquery, shaping)?;
            if uses_values {
                sources.extend(inner.into_iter().flatten());
            }
        }
        Ok(sources)
    }

    /// Records every column `expr` reads (and what its subqueries read) as shaping the rows.
    fn shape(
        &self,
        expr: &Expr,
        kind: EdgeKind,
        shaping: &mut BTreeSet<(EdgeKind, ColumnRef)>,
    ) -> Result<()> {
        let sources = self.value(expr, shaping)?;
        shaping.extend(sources.into_iter().map(|s| (kind, s)));
        Ok(())
    }

    /// A subquery's output columns; its shaping columns, and the outer columns it is
    /// correlated on (as `join`), are added to `shaping`.
    fn subquery(
        &self,
        subquery: &Subquery,
        shaping: &mut BTreeSet<(EdgeKind, ColumnRef)>,
    ) -> Result<Vec<Sources>> {
        let inner = flow(&subquery.subquery, self.ctx)?;
        shaping.extend(inner.shaping);
        for outer in &subquery.outer_ref_columns {
            let mut columns = Vec::new();
            outer.apply(|e| {
                if let Expr::OuterReferenceColumn(_, c) = e {
                    columns.push(c.clone());
                }
                Ok(TreeNodeRecursion::Continue)
            })?;
            for column in columns {
                if let Some(sources) = self.resolve(&column) {
                    shaping.extend(sources.iter().cloned().map(|s| (EdgeKind::Join, s)));
                }
            }
        }
        Ok(inner.columns)
    }
}

/// The subqueries directly inside an expression, each with whether its values become part of
/// the expression's value (`EXISTS` only tests for rows).
fn subqueries(expr: &Expr) -> Result<Vec<(&Subquery, bool)>> {
    let mut found = Vec::new();
    expr.apply(|e| {
        match e {
            Expr::ScalarSubquery(s) => found.push((s, true)),
            Expr::InSubquery(i) => found.push((&i.subquery, true)),
            Expr::SetComparison(s) => found.push((&s.subquery, true)),
            Expr::Exists(x) => found.push((&x.subquery, false)),
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(found)
}
