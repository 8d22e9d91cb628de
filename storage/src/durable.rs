//! Durable local storage. object_store 0.13's `LocalFileSystem` never calls fsync, so an
//! acknowledged Delta commit could vanish on power loss. This wrapper syncs every file it
//! writes, and the directory that names it, before the write returns; Delta's commit (the
//! `_delta_log` entry) is therefore on disk before a statement is acknowledged. It is
//! installed for `file://` URLs in deltalake's store registry by [`install`].

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Once};

use async_trait::async_trait;
use bytes::Bytes;
use deltalake::logstore::{
    ObjectStoreFactory, ObjectStoreRef, StorageConfig, object_store_factories,
};
use deltalake::{DeltaResult, DeltaTableError};
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result, UploadPart,
};
use url::Url;

/// A `LocalFileSystem` rooted at `/` whose writes are on disk when they return.
#[derive(Debug)]
pub struct SyncedLocalFileSystem {
    inner: Arc<LocalFileSystem>,
}

impl SyncedLocalFileSystem {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(LocalFileSystem::new()),
        }
    }

    async fn sync(&self, location: &Path) -> Result<()> {
        let file = self.inner.path_to_filesystem(location)?;
        tokio::task::spawn_blocking(move || sync_file_and_parent(&file))
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "SyncedLocalFileSystem",
                source: Box::new(e),
            })?
            .map_err(|e| object_store::Error::Generic {
                store: "SyncedLocalFileSystem",
                source: Box::new(e),
            })
    }
}

impl Default for SyncedLocalFileSystem {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether a written file is a Delta commit: `_delta_log/<20-digit version>.json`, the one
/// write that makes a Delta version exist (checkpoints and temporary files are not).
fn is_delta_commit(location: &Path) -> bool {
    let mut parts = location.parts().collect::<Vec<_>>().into_iter().rev();
    let (Some(file), Some(dir)) = (parts.next(), parts.next()) else {
        return false;
    };
    dir.as_ref() == "_delta_log"
        && file
            .as_ref()
            .strip_suffix(".json")
            .is_some_and(|v| v.len() == 20 && v.bytes().all(|b| b.is_ascii_digit()))
}

fn sync_file_and_parent(file: &PathBuf) -> std::io::Result<()> {
    std::fs::File::open(file)?.sync_all()?;
    if let Some(parent) = file.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

impl fmt::Display for SyncedLocalFileSystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Synced({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for SyncedLocalFileSystem {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let started = std::time::Instant::now();
        let result = self.inner.put_opts(location, payload, opts).await?;
        self.sync(location).await?;
        if is_delta_commit(location) {
            crate::metrics::delta_commit(started.elapsed());
        }
        Ok(result)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let upload = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(SyncedUpload {
            upload,
            store: Arc::clone(&self.inner),
            location: location.clone(),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await?;
        self.sync(to).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await?;
        self.sync(to).await
    }
}

/// A multipart upload whose completed file is synced before `complete` returns.
#[derive(Debug)]
struct SyncedUpload {
    upload: Box<dyn MultipartUpload>,
    store: Arc<LocalFileSystem>,
    location: Path,
}

#[async_trait]
impl MultipartUpload for SyncedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.upload.put_part(data)
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let result = self.upload.complete().await?;
        let synced = SyncedLocalFileSystem {
            inner: Arc::clone(&self.store),
        };
        synced.sync(&self.location).await?;
        Ok(result)
    }

    async fn abort(&mut self) -> Result<()> {
        self.upload.abort().await
    }
}

struct SyncedFactory;

impl ObjectStoreFactory for SyncedFactory {
    fn parse_url_opts(
        &self,
        url: &Url,
        _config: &StorageConfig,
    ) -> DeltaResult<(ObjectStoreRef, Path)> {
        let path = Path::from_url_path(url.path())
            .map_err(|e| DeltaTableError::InvalidTableLocation(format!("{url}: {e}")))?;
        Ok((Arc::new(SyncedLocalFileSystem::new()), path))
    }
}

/// Makes every `file://` Delta table in this process use [`SyncedLocalFileSystem`].
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        #[allow(clippy::expect_used, reason = "a constant that parses")]
        let url = Url::parse("file://").expect("static url");
        object_store_factories().insert(url, Arc::new(SyncedFactory));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    #[test]
    fn recognizes_delta_commits() {
        let commit = Path::parse("w/t/_delta_log/00000000000000000003.json").unwrap();
        assert!(is_delta_commit(&commit));
        for other in [
            "w/t/_delta_log/00000000000000000003.checkpoint.parquet",
            "w/t/_delta_log/_last_checkpoint",
            "w/t/_delta_log/_commit_1234.json.tmp",
            "w/t/part-00000.json",
        ] {
            assert!(!is_delta_commit(&Path::parse(other).unwrap()), "{other}");
        }
    }

    #[tokio::test]
    async fn writes_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = SyncedLocalFileSystem::new();
        let file = dir.path().join("a/b.txt");
        let location = Path::parse(file.to_str().unwrap().trim_start_matches('/')).unwrap();
        store
            .put(&location, PutPayload::from_static(b"hello"))
            .await
            .unwrap();
        let bytes = store.get(&location).await.unwrap().bytes().await.unwrap();
        assert_eq!(&bytes[..], b"hello");
        let mut upload = store.put_multipart(&location).await.unwrap();
        upload
            .put_part(PutPayload::from_static(b"big "))
            .await
            .unwrap();
        upload
            .put_part(PutPayload::from_static(b"file"))
            .await
            .unwrap();
        upload.complete().await.unwrap();
        let bytes = store.get(&location).await.unwrap().bytes().await.unwrap();
        assert_eq!(&bytes[..], b"big file");
    }
}
