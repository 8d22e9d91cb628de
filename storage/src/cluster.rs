//! Clustering a model's files by its `unique_key`.
//!
//! A dashboard's point lookup (`WHERE transaction_id = 42`) can only skip data when the key's
//! values are grouped: Parquet keeps a min and max per row group and per page, and a file
//! written in the query's arbitrary order has every page spanning nearly every key. Writes
//! that produce a whole file set (full refreshes, appends) therefore sort a keyed model's rows
//! by its key, so each page covers a narrow key range and a lookup reads one page per column.
//!
//! Keyed models are also written in smaller units ([`lookup_layout`]): a lookup decompresses
//! the pages it keeps and each column's dictionary page, which with Parquet's defaults (one
//! row group of a million rows, 20,000-row pages, dictionaries up to 1 MiB) was megabytes per
//! lookup, nearly all of it snappy decompression.
//!
//! The sort has to survive physical planning. A plain `Sort` under the writer is dropped by
//! DataFusion's `EnforceSorting` (nothing above it asks for the order). [`ClusterBy`] is the
//! logical node that keeps it: its physical form, [`ClusteredExec`], produces one partition
//! in key order, sorting its input itself ([`super::key_sort`]) unless the input arrives
//! sorted already.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DFSchemaRef;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::context::SessionState;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{
    Expr, Extension, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::execution_plan::EmissionType;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PhysicalExpr, PlanProperties,
};
use futures::StreamExt;

/// The Delta file tag saying a data file's rows are sorted by these columns (comma-separated,
/// ascending, nulls last). A scan of files that all carry it, with key ranges that do not
/// overlap, reads the model in key order ([`super::scan`]), so a model built from it is
/// written without sorting again. Files written any other way (merges, compaction) have no
/// tag and are read unordered.
pub const SORTED_BY_TAG: &str = "tributary.sortedBy";

/// Tags data files written from a [`clustered`] plan as sorted by `keys`.
pub fn tag_sorted(adds: &mut [deltalake::kernel::Add], keys: &[String]) {
    for add in adds {
        add.tags
            .get_or_insert_with(Default::default)
            .insert(SORTED_BY_TAG.to_string(), Some(keys.join(",")));
    }
}

/// A plan whose rows are to be written sorted by `keys` (ascending, nulls last).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Hash)]
pub struct ClusterBy {
    input: LogicalPlan,
    keys: Vec<String>,
}

/// `plan` with its rows to be written in `keys` order.
pub fn clustered(plan: LogicalPlan, keys: &[String]) -> LogicalPlan {
    LogicalPlan::Extension(Extension {
        node: Arc::new(ClusterBy {
            input: plan,
            keys: keys.to_vec(),
        }),
    })
}

/// The `unique_key` columns a model's files are sorted by, if it has any.
pub fn cluster_keys(object: &tributary_catalog::CatalogObject) -> Option<Vec<String>> {
    let keys: Vec<String> = object
        .options
        .get("unique_key")?
        .split(',')
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .collect();
    (!keys.is_empty()).then_some(keys)
}

/// The layout a model's files are written in: [`lookup_layout`] for a keyed model, else
/// [`bulk_layout`].
pub fn layout_of(object: &tributary_catalog::CatalogObject) -> WriterProperties {
    match cluster_keys(object) {
        Some(_) => lookup_layout(),
        None => bulk_layout(),
    }
}

/// The Parquet layout of a model read whole (by the models below it, by scans): row groups
/// of 1 Mi rows, compressed with snappy (as delta-rs and Spark write), not DataFusion's
/// zstd: zstd made encoding the slowest part of a large model's write after its query,
/// and every read of a small column chunk built a zstd compression and decompression
/// context (5% of a 30-day range query on a 4,000-row model).
pub fn bulk_layout() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(1024 * 1024))
        .build()
}

/// The Parquet layout of a keyed model's files: row groups of 64 Ki rows (statistics skip
/// the others), pages of about 2,048 rows (the page index keeps one per column), and
/// dictionaries of at most 64 KiB, past which a column is written plainly (a lookup reads
/// each kept row group's dictionary page whole).
pub fn lookup_layout() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(64 * 1024))
        .set_data_page_row_count_limit(2048)
        .set_dictionary_page_size_limit(64 * 1024)
        .build()
}

/// `state` for writing a [`clustered`] plan: no round-robin repartitioning above the sorted
/// stream (the writer would interleave the partitions' batches into one file).
pub fn writing_state(mut state: SessionState) -> SessionState {
    state
        .config_mut()
        .options_mut()
        .optimizer
        .enable_round_robin_repartition = false;
    state
}

impl UserDefinedLogicalNodeCore for ClusterBy {
    fn name(&self) -> &str {
        "ClusterBy"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        self.input.schema()
    }

    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ClusterBy: {}", self.keys.join(", "))
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> DfResult<Self> {
        Ok(Self {
            input: inputs.swap_remove(0),
            keys: self.keys.clone(),
        })
    }
}

/// Plans [`ClusterBy`] as [`ClusteredExec`].
#[derive(Debug)]
pub struct ClusterPlanner;

#[async_trait]
impl datafusion::physical_planner::ExtensionPlanner for ClusterPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn datafusion::physical_planner::PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn datafusion::catalog::Session,
        _planning_ctx: &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext,
    ) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
        let Some(cluster) = node.as_any().downcast_ref::<ClusterBy>() else {
            return Ok(None);
        };
        let input = without_empty_partitionings(Arc::clone(&physical_inputs[0]))?;
        let schema = input.schema();
        let sort = cluster
            .keys
            .iter()
            .map(|key| {
                let column = datafusion::physical_expr::expressions::col(key, &schema)?;
                Ok(PhysicalSortExpr::new(
                    column,
                    datafusion::arrow::compute::SortOptions {
                        descending: false,
                        nulls_first: false,
                    },
                ))
            })
            .collect::<DfResult<Vec<_>>>()?;
        let ordering = LexOrdering::new(sort).ok_or_else(|| {
            DataFusionError::Plan("cannot cluster a model by no columns".to_string())
        })?;
        Ok(Some(Arc::new(ClusteredExec::new(input, ordering))))
    }
}

/// `plan` with every subplan of no partitions (an empty Delta change range scans no files)
/// replaced by an [`EmptyExec`]: the same no rows, in the one partition a sort needs (a
/// sort or merge over no partitions fails, and the fallback of [`super::key_sort`] is one).
fn without_empty_partitionings(plan: Arc<dyn ExecutionPlan>) -> DfResult<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        if node.properties().partitioning.partition_count() == 0 {
            Ok(Transformed::yes(
                Arc::new(EmptyExec::new(node.schema())) as _
            ))
        } else {
            Ok(Transformed::no(node))
        }
    })
    .map(|t| t.data)
}

/// Its input's rows in one partition sorted by `ordering`: passed through when the input is
/// one partition in that order already, merged when each partition is, else sorted.
#[derive(Debug)]
pub struct ClusteredExec {
    input: Arc<dyn ExecutionPlan>,
    ordering: LexOrdering,
    properties: Arc<PlanProperties>,
}

impl ClusteredExec {
    fn new(input: Arc<dyn ExecutionPlan>, ordering: LexOrdering) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new_with_orderings(input.schema(), [ordering.clone()]),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            input.properties().boundedness,
        );
        Self {
            input,
            ordering,
            properties: Arc::new(properties),
        }
    }

    /// Whether each partition of the input is in `ordering` already.
    fn input_sorted(&self) -> DfResult<bool> {
        self.input
            .equivalence_properties()
            .ordering_satisfy(self.ordering.clone())
    }
}

impl DisplayAs for ClusteredExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ClusteredExec: {}", self.ordering)
    }
}

impl ExecutionPlan for ClusteredExec {
    fn name(&self) -> &'static str {
        "ClusteredExec"
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

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(ClusteredExec::new(
            children.swap_remove(0),
            self.ordering.clone(),
        )))
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        for sort in self.ordering.iter() {
            if f(&sort.expr)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "ClusteredExec has one partition, not {partition}"
            )));
        }
        let partitions = self.input.properties().partitioning.partition_count();
        let stream = match (self.input_sorted()?, partitions) {
            (true, 1) => self.input.execute(0, context)?,
            (true, _) => Arc::new(SortPreservingMergeExec::new(
                self.ordering.clone(),
                Arc::clone(&self.input),
            ))
            .execute(0, context)?,
            (false, _) => {
                super::key_sort::sorted(Arc::clone(&self.input), self.ordering.clone(), context)
            }
        };
        // Batches carry the declared schema: the writer compares them field by field,
        // metadata included, and a sort passes on its input's batches, whose fields can
        // lack the metadata a federated scan declares.
        let schema = self.schema();
        let stamped = stream.map(move |batch| {
            let batch = batch?;
            let own = batch.schema();
            if Arc::ptr_eq(&own, &schema) || own == schema {
                return Ok(batch);
            }
            Ok(RecordBatch::try_new(
                Arc::clone(&schema),
                batch.columns().to_vec(),
            )?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            stamped,
        )))
    }
}
