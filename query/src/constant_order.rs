//! Aggregates run unordered when their input is "sorted" only on constant columns.
//!
//! A literal in a UNION ALL branch (`'history' AS source`) is constant in each partition the
//! union yields, and DataFusion counts a constant column as sorted. An aggregate grouping by
//! such a column then runs in its ordered mode (`PartiallySorted`), which buys nothing: it may
//! emit a group only when the sort key changes, which a constant never does. It costs a lot:
//! the ordered partial aggregate keeps every group until the end, re-emits its state batch by
//! batch, and never takes the skip of partial aggregation DataFusion makes when groups barely
//! reduce the rows. The example's `SELECT DISTINCT *` over 10M transactions spent 13 s of CPU
//! in its partial aggregate that way (103 s with more memory), of a 29 s refresh.
//!
//! [`UnorderedOnConstants`] puts a [`ForgetOrder`] below such an aggregate: the same rows and
//! partitions without the equivalence properties, so the aggregate plans itself unordered.

use std::fmt;
use std::sync::Arc;

use datafusion::common::Statistics;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::Result as DfResult;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::statistics::{ChildStats, StatisticsArgs};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, InputOrderMode,
    PlanProperties,
};

/// The physical optimizer rule: see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct UnorderedOnConstants;

impl PhysicalOptimizerRule for UnorderedOnConstants {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(aggregate) = node.downcast_ref::<AggregateExec>() else {
                return Ok(Transformed::no(node));
            };
            if !ordered_only_by_constants(aggregate) {
                return Ok(Transformed::no(node));
            }
            let input: Arc<dyn ExecutionPlan> =
                Arc::new(ForgetOrder::new(Arc::clone(aggregate.input())));
            let options = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);
            Ok(Transformed::yes(
                Arc::clone(&node).replace_children(vec![input], options)?,
            ))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "unordered_on_constants"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether the aggregate runs ordered only because group columns are constant in its input
/// (and no aggregate function asks for an order of its own, which the input may provide).
fn ordered_only_by_constants(aggregate: &AggregateExec) -> bool {
    if aggregate
        .aggr_expr()
        .iter()
        .any(|f| !f.order_bys().is_empty())
    {
        return false;
    }
    let groups = aggregate.group_expr().expr();
    let sorted: Vec<usize> = match aggregate.input_order_mode() {
        InputOrderMode::Linear => return false,
        InputOrderMode::Sorted => (0..groups.len()).collect(),
        InputOrderMode::PartiallySorted(indices) => indices.clone(),
    };
    let properties = aggregate.input().equivalence_properties();
    !sorted.is_empty()
        && sorted.iter().all(|&i| {
            groups
                .get(i)
                .is_some_and(|(expr, _)| properties.is_expr_constant(expr).is_some())
        })
}

/// Passes its input through with the same partitions and no known order or constants.
#[derive(Debug)]
pub(crate) struct ForgetOrder {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl ForgetOrder {
    pub(crate) fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(input.schema()),
            input.output_partitioning().clone(),
            input.pipeline_behavior(),
            input.boundedness(),
        );
        Self {
            input,
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for ForgetOrder {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ForgetOrder")
    }
}

impl ExecutionPlan for ForgetOrder {
    fn name(&self) -> &'static str {
        "ForgetOrder"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    /// The input's statistics: what it forgets is the order, not the size.
    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::At(partition)]
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> DfResult<Arc<Statistics>> {
        Ok(Arc::clone(&input_stats[0]))
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(ForgetOrder::new(children.swap_remove(0))))
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::catalog::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::SessionContext;

    /// Two partitions of ids with repeats, as table `t`.
    fn context(with_rule: bool) -> SessionContext {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let part = |ids: Vec<i64>| {
            vec![
                RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(Int64Array::from(ids))])
                    .unwrap(),
            ]
        };
        let table = MemTable::try_new(
            Arc::clone(&schema),
            vec![part(vec![1, 2, 2, 3]), part(vec![3, 4, 4])],
        )
        .unwrap();
        let mut builder = SessionStateBuilder::new().with_default_features();
        if with_rule {
            builder = builder.with_physical_optimizer_rule(Arc::new(UnorderedOnConstants));
        }
        let ctx = SessionContext::new_with_state(builder.build());
        ctx.register_table("t", Arc::new(table)).unwrap();
        ctx
    }

    const DISTINCT_OVER_BRANCHES: &str = "SELECT DISTINCT * FROM (
        SELECT id, 'left' AS side FROM t UNION ALL SELECT id, 'right' AS side FROM t) AS u
        ORDER BY id, side";

    async fn plan_and_rows(with_rule: bool) -> (String, String) {
        let df = context(with_rule)
            .sql(DISTINCT_OVER_BRANCHES)
            .await
            .unwrap();
        let plan = df.clone().create_physical_plan().await.unwrap();
        let text = displayable(plan.as_ref()).indent(true).to_string();
        let rows = pretty_format_batches(&df.collect().await.unwrap())
            .unwrap()
            .to_string();
        (text, rows)
    }

    #[tokio::test]
    async fn an_aggregate_ordered_only_by_a_branch_literal_runs_unordered() {
        let (before, expected) = plan_and_rows(false).await;
        assert!(
            before.contains("ordering_mode=PartiallySorted"),
            "DataFusion no longer orders this aggregate by the literal; the rule may be moot:\n{before}"
        );
        let (after, rows) = plan_and_rows(true).await;
        assert!(!after.contains("ordering_mode="), "{after}");
        assert!(after.contains("ForgetOrder"), "{after}");
        assert_eq!(rows, expected);
        assert_eq!(rows.lines().count(), 4 + 8, "eight distinct rows:\n{rows}");
    }
}
