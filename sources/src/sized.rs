//! File sources' scans, with the files' size as their statistics.
//!
//! DataFusion's CSV and JSON readers report no statistics, so the optimizer cannot tell a
//! 14-row dimension file from a model of ten million rows: it hash-partitioned both sides of
//! every join with such a file and built the hash table on the large side (a 10M-row model
//! joining two small CSV files spent most of its 14 s repartitioning and building). With the
//! files' byte size as the scan's (inexact) size, join selection puts the small side on the
//! build side and broadcasts it when it is under the single-partition threshold.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{ScanArgs, ScanResult, Session};
use datafusion::common::stats::Precision;
use datafusion::common::{Constraints, Statistics};
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::physical_plan::{FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

/// A listing table whose scans carry the files' total size when the format reports none.
#[derive(Debug)]
pub struct SizedListing {
    inner: Arc<ListingTable>,
}

impl SizedListing {
    pub fn new(inner: Arc<ListingTable>) -> Self {
        Self { inner }
    }
}

#[async_trait]
impl TableProvider for SizedListing {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn constraints(&self) -> Option<&Constraints> {
        self.inner.constraints()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = self.inner.scan(state, projection, filters, limit).await?;
        Ok(with_file_sizes(plan))
    }

    async fn scan_with_args<'a>(
        &self,
        state: &dyn Session,
        args: ScanArgs<'a>,
    ) -> Result<ScanResult> {
        let scanned = self.inner.scan_with_args(state, args).await?;
        Ok(ScanResult::new(with_file_sizes(scanned.into_inner())))
    }
}

/// `plan` with the total size of its files as its byte size, when it is a file scan that
/// knows neither its size nor its row count.
fn with_file_sizes(plan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    let Some(config) = plan
        .downcast_ref::<DataSourceExec>()
        .and_then(|exec| exec.data_source().downcast_ref::<FileScanConfig>())
    else {
        return plan;
    };
    let statistics = config.statistics();
    if statistics.total_byte_size.get_value().is_some() || statistics.num_rows.get_value().is_some()
    {
        return plan;
    }
    let bytes: u64 = config
        .file_groups
        .iter()
        .flat_map(|group| group.iter())
        .map(|file| file.object_meta.size)
        .sum();
    let statistics: Statistics =
        statistics.with_total_byte_size(Precision::Inexact(bytes as usize));
    DataSourceExec::from_data_source(
        FileScanConfigBuilder::from(config.clone())
            .with_statistics(statistics)
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::datasource::file_format::csv::CsvFormat;
    use datafusion::datasource::listing::{ListingOptions, ListingTableConfig, ListingTableUrl};
    use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
    use datafusion::prelude::{SessionConfig, SessionContext};

    #[tokio::test]
    async fn a_csv_scan_reports_its_files_size_and_a_small_file_is_the_build_side() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small.csv");
        std::fs::write(&small, "id,name\n1,a\n2,b\n").unwrap();
        // Several partitions, so that a join is not collected into one for want of them.
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(4));
        let url = ListingTableUrl::parse(small.to_str().unwrap()).unwrap();
        let options = ListingOptions::new(Arc::new(CsvFormat::default().with_has_header(true)))
            .with_file_extension(".csv");
        let schema = options.infer_schema(&ctx.state(), &url).await.unwrap();
        let listing = ListingTable::try_new(
            ListingTableConfig::new(url)
                .with_listing_options(options)
                .with_schema(schema),
        )
        .unwrap();
        let sized = SizedListing::new(Arc::new(listing));
        let plan = sized.scan(&ctx.state(), None, &[], None).await.unwrap();
        // The scan's own statistics, as join selection reads them.
        let statistics = StatisticsContext::new()
            .compute(plan.as_ref(), &StatisticsArgs::new())
            .unwrap();
        let size = std::fs::metadata(&small).unwrap().len() as usize;
        assert_eq!(statistics.total_byte_size, Precision::Inexact(size));

        // Joined with a large table, the file is collected as the build side.
        ctx.register_table("small", Arc::new(sized)).unwrap();
        ctx.sql("CREATE TABLE big AS SELECT CAST(value % 3 AS BIGINT) AS id FROM generate_series(1, 200000)")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let explained = ctx
            .sql("EXPLAIN SELECT * FROM big JOIN small ON big.id = small.id")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&explained)
            .unwrap()
            .to_string();
        assert!(text.contains("mode=CollectLeft"), "{text}");
    }
}
