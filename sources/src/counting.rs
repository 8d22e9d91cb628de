//! Counting the rows a refresh reads: every input scan of the plans a refresh runs is
//! wrapped so the rows it yields add to one counter, recorded as `tributary.runs.rows_read`.
//! Counting after the scan (after file and row-group pruning) is what the refresh really read.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Statistics;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::{TableType, source_as_provider};
use datafusion::error::Result as DfResult;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, LogicalPlan, TableProviderFilterPushDown};
use datafusion::physical_plan::statistics::{ChildStats, StatisticsArgs};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;

/// Rows read by one refresh, shared by every wrapped scan.
pub type RowCounter = Arc<AtomicU64>;

/// The plan with every table scan counting the rows it yields into `counter`.
pub fn count_scans(
    plan: LogicalPlan,
    counter: &RowCounter,
) -> tributary_sql::error::Result<LogicalPlan> {
    let counted = plan.transform_up(|node| match node {
        LogicalPlan::TableScan(scan) => {
            let inner = source_as_provider(&scan.source)?;
            let any: &dyn Any = inner.as_ref();
            // A federated scan stays as it is, so the federation rule can still push the
            // subplan over it down to PostgreSQL (its rows are counted by `count_federated`).
            if any.is::<CountingTable>()
                || any.is::<datafusion_federation::FederatedTableProviderAdaptor>()
            {
                return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
            }
            let provider = Arc::new(CountingTable {
                inner,
                counter: Arc::clone(counter),
            });
            Ok(Transformed::yes(scan_of(&scan, provider)?))
        }
        other => Ok(Transformed::no(other)),
    })?;
    Ok(counted.data)
}

/// The same scan (projection, filters, limit) reading another provider.
pub fn scan_of(
    scan: &datafusion::logical_expr::TableScan,
    provider: Arc<dyn datafusion::catalog::TableProvider>,
) -> datafusion::error::Result<datafusion::logical_expr::LogicalPlan> {
    let source = datafusion::datasource::provider_as_source(provider);
    let new = datafusion::logical_expr::TableScanBuilder::new(scan.table_name.clone(), source)
        .with_projection(scan.projection.clone())
        .with_filters(scan.filters.clone())
        .with_fetch(scan.fetch)
        .build()?;
    Ok(datafusion::logical_expr::LogicalPlan::TableScan(new))
}

/// A refresh's counter, carried in its session's config: federated subplans stay logical scans
/// until physical planning (so the federation rule can push them down), and the physical
/// planner counts what they return with it (see [`count_federated`]).
#[derive(Debug)]
pub struct FederatedRows(pub RowCounter);

/// `plan` with the rows of every federated subplan counted, when the session is a refresh's:
/// those are the rows PostgreSQL sent, after every filter and aggregate it ran.
pub fn count_federated(
    plan: Arc<dyn ExecutionPlan>,
    config: &datafusion::execution::config::SessionConfig,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let Some(rows) = config.get_extension::<FederatedRows>() else {
        return Ok(plan);
    };
    let counted = plan.transform_up(|node| {
        if node.is::<datafusion_federation::sql::VirtualExecutionPlan>() {
            let counting: Arc<dyn ExecutionPlan> = Arc::new(CountingExec {
                input: node,
                counter: Arc::clone(&rows.0),
            });
            Ok(Transformed::yes(counting))
        } else {
            Ok(Transformed::no(node))
        }
    })?;
    Ok(counted.data)
}

/// A table that reads through another and counts the rows.
#[derive(Debug)]
struct CountingTable {
    inner: Arc<dyn TableProvider>,
    counter: RowCounter,
}

#[async_trait]
impl TableProvider for CountingTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = self.inner.scan(state, projection, filters, limit).await?;
        Ok(Arc::new(CountingExec {
            input,
            counter: Arc::clone(&self.counter),
        }))
    }
}

/// Passes batches through, adding their row counts to the counter.
#[derive(Debug)]
struct CountingExec {
    input: Arc<dyn ExecutionPlan>,
    counter: RowCounter,
}

impl DisplayAs for CountingExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "CountingExec")
    }
}

impl ExecutionPlan for CountingExec {
    fn name(&self) -> &'static str {
        "CountingExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    /// The input's statistics: join selection needs them to build on the smaller side.
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
        Ok(Arc::new(CountingExec {
            input: children.swap_remove(0),
            counter: Arc::clone(&self.counter),
        }))
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(
            &Arc<dyn datafusion::physical_plan::PhysicalExpr>,
        ) -> DfResult<datafusion::common::tree_node::TreeNodeRecursion>,
    ) -> DfResult<datafusion::common::tree_node::TreeNodeRecursion> {
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let stream = self.input.execute(partition, context)?;
        let schema = stream.schema();
        let counter = Arc::clone(&self.counter);
        let counted = stream.map(move |batch| {
            if let Ok(batch) = &batch {
                counter.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            }
            batch
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, counted)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::catalog::MemTable;
    use datafusion::common::stats::Precision;
    use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
    use datafusion::physical_plan::statistics::StatisticsContext;
    use datafusion::prelude::{SessionConfig, SessionContext};

    fn ids(rows: i64) -> Arc<MemTable> {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int64Array::from_iter_values(0..rows))],
        )
        .unwrap();
        Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap())
    }

    fn hash_join(plan: &Arc<dyn ExecutionPlan>) -> Option<&HashJoinExec> {
        plan.downcast_ref::<HashJoinExec>()
            .or_else(|| plan.children().into_iter().find_map(hash_join))
    }

    /// A counted scan used to hide its input's statistics, so every join in a refresh was
    /// hash-partitioned with its build side taken from the query's order: a 50M-row model
    /// joined with a 14-row file built its hash table on the 50M rows.
    #[tokio::test]
    async fn counted_scans_keep_their_statistics_and_joins_build_on_the_small_side() {
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(4));
        ctx.register_table("big", ids(200_000)).unwrap();
        ctx.register_table("small", ids(10)).unwrap();
        let plan = ctx
            .sql("SELECT * FROM big JOIN small ON big.id = small.id")
            .await
            .unwrap()
            .into_unoptimized_plan();
        let counter = RowCounter::default();
        let counted = count_scans(plan, &counter).unwrap();
        let physical = ctx.state().create_physical_plan(&counted).await.unwrap();
        let join = hash_join(&physical).expect("a hash join");
        assert_eq!(*join.partition_mode(), PartitionMode::CollectLeft);
        let build = StatisticsContext::new()
            .compute(join.left().as_ref(), &StatisticsArgs::new())
            .unwrap();
        assert_eq!(build.num_rows, Precision::Exact(10));
        let text = datafusion::physical_plan::displayable(physical.as_ref())
            .indent(false)
            .to_string();
        assert!(text.contains("CountingExec"), "{text}");
    }
}
