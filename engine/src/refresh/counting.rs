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
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::{TableType, source_as_provider};
use datafusion::error::Result as DfResult;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, LogicalPlan, TableProviderFilterPushDown};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;

/// Rows read by one refresh, shared by every wrapped scan.
pub type RowCounter = Arc<AtomicU64>;

/// The plan with every table scan counting the rows it yields into `counter`.
pub fn count_scans(plan: LogicalPlan, counter: &RowCounter) -> crate::Result<LogicalPlan> {
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
                counter: counter.clone(),
            });
            Ok(Transformed::yes(super::plans::scan_of(&scan, provider)?))
        }
        other => Ok(Transformed::no(other)),
    })?;
    Ok(counted.data)
}

/// A refresh's counter, carried in its session's config: federated subplans stay logical scans
/// until physical planning (so the federation rule can push them down), and the physical
/// planner counts what they return with it (see [`count_federated`]).
#[derive(Debug)]
pub struct FederatedRows(pub RowCounter);

/// `plan` with the rows of every federated subplan counted, when the session is a refresh's:
/// those are the rows PostgreSQL sent, after every filter and aggregate it ran.
pub(crate) fn count_federated(
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
                counter: rows.0.clone(),
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
            counter: self.counter.clone(),
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

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(CountingExec {
            input: children.swap_remove(0),
            counter: self.counter.clone(),
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
        let counter = self.counter.clone();
        let counted = stream.map(move |batch| {
            if let Ok(batch) = &batch {
                counter.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            }
            batch
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, counted)))
    }
}
