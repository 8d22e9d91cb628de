//! Keeping Parquet page indexes in the metadata cache, so a point lookup does not decode them
//! again on every query.
//!
//! DataFusion's Parquet opener reads a file's footer without its page index (column and offset
//! indexes) and, when a predicate can use the index, loads it afterwards through the file
//! reader. The cached reader ([`CachedParquetFileReaderFactory`]) only caches what the footer
//! read asked for, so the page index was fetched and decoded for every filtered scan: 12% of
//! the server's time in a run of dashboard point lookups over a 50M-row keyed model.
//! [`PageIndexCachingFactory`] asks for the page index with the footer, so the cache keeps
//! both and the opener finds the index already loaded.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::{
    CachedParquetFileReaderFactory, ParquetFileReaderFactory,
};
use datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions;
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::errors::Result as ParquetResult;
use datafusion::parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::FutureExt;
use futures::future::BoxFuture;

/// A [`CachedParquetFileReaderFactory`] whose readers load (and so cache) the page index
/// together with the footer.
pub struct PageIndexCachingFactory(pub CachedParquetFileReaderFactory);

impl fmt::Debug for PageIndexCachingFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PageIndexCachingFactory")
            .field(&self.0)
            .finish()
    }
}

impl ParquetFileReaderFactory for PageIndexCachingFactory {
    fn create_reader(
        &self,
        partition_index: usize,
        partitioned_file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> datafusion::common::Result<Box<dyn AsyncFileReader + Send>> {
        let inner = self.0.create_reader(
            partition_index,
            partitioned_file,
            metadata_size_hint,
            metrics,
        )?;
        Ok(Box::new(PageIndexCachingReader(inner)))
    }
}

struct PageIndexCachingReader(Box<dyn AsyncFileReader + Send>);

impl AsyncFileReader for PageIndexCachingReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, ParquetResult<Bytes>> {
        self.0.get_bytes(range)
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, ParquetResult<Vec<Bytes>>> {
        self.0.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, ParquetResult<Arc<ParquetMetaData>>> {
        // Optional, not Required: files written without a page index still open.
        let options = options
            .cloned()
            .unwrap_or_default()
            .with_page_index_policy(PageIndexPolicy::Optional);
        async move { self.0.get_metadata(Some(&options)).await }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{ArrayRef, Int64Array};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::parquet::arrow::ArrowWriter;
    use object_store::memory::InMemory;
    use object_store::path::Path;
    use object_store::{ObjectStore, ObjectStoreExt};

    use super::*;

    /// Opens `path` the way DataFusion's opener does (footer only) through `factory`, and
    /// says whether the metadata it got and the metadata cache then hold have a page index.
    async fn footer_read_has_page_index(
        factory: &dyn ParquetFileReaderFactory,
        path: &Path,
        size: u64,
    ) -> bool {
        let mut reader = factory
            .create_reader(
                0,
                PartitionedFile::new(path.to_string(), size),
                None,
                &ExecutionPlanMetricsSet::new(),
            )
            .unwrap();
        let footer_only = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Skip);
        let metadata = reader.get_metadata(Some(&footer_only)).await.unwrap();
        metadata.column_index().is_some() && metadata.offset_index().is_some()
    }

    #[tokio::test]
    async fn a_footer_read_brings_the_page_index_into_the_cache() {
        let column: ArrayRef = Arc::new(Int64Array::from_iter_values(0..10_000));
        let batch = RecordBatch::try_from_iter([("id", column)]).unwrap();
        let mut bytes = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let size = bytes.len() as u64;
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let (plain_path, cached_path) = (Path::from("plain.parquet"), Path::from("cached.parquet"));
        for path in [&plain_path, &cached_path] {
            store.put(path, bytes.clone().into()).await.unwrap();
        }
        let runtime = RuntimeEnvBuilder::new().build_arc().unwrap();
        let cache = runtime.cache_manager.get_file_metadata_cache();
        let plain = CachedParquetFileReaderFactory::new(Arc::clone(&store), Arc::clone(&cache));
        let caching = PageIndexCachingFactory(CachedParquetFileReaderFactory::new(
            store,
            Arc::clone(&cache),
        ));

        // DataFusion's own cached reader: the footer read leaves the page index out, so every
        // filtered scan loads and decodes it again.
        assert!(!footer_read_has_page_index(&plain, &plain_path, size).await);
        assert!(!footer_read_has_page_index(&plain, &plain_path, size).await);

        assert!(footer_read_has_page_index(&caching, &cached_path, size).await);
        // The cache now holds the index: even the plain reader gets it from there.
        assert!(footer_read_has_page_index(&plain, &cached_path, size).await);
        let entry = cache.get(&cached_path).expect("the footer is cached");
        assert_eq!(
            entry
                .file_metadata
                .extra_info()
                .get("page_index")
                .map(String::as_str),
            Some("true")
        );
    }
}
