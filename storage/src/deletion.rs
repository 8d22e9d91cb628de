//! Deletion vectors: how a key-wise merge removes rows from a Delta data file without
//! rewriting it. A copy-on-write merge rewrites every file that holds one changed key, so
//! changing 0.1% of a model's keys spread over all its files costs as much as a full
//! refresh; marking the rows deleted costs a read of the key column and a small bitmap per
//! file instead. Readers (delta-rs' scan, its change feed, compaction) apply the vectors.
//!
//! The vectors are stored as the Delta protocol describes: one file per commit
//! (`deletion_vector_<uuid>.bin` at the table root) holding a portable 64-bit roaring bitmap
//! per data file, each framed by its size, a magic number and a CRC-32. delta-rs 1.1 reads
//! them but has no writer, so Tributary frames them with delta-kernel's writer and builds
//! the descriptors itself.

use std::sync::Arc;

use bytes::Bytes;
use delta_kernel::actions::deletion_vector_writer::{
    DeletionVector, StreamingDeletionVectorWriter,
};
use deltalake::DeltaTable;
use deltalake::kernel::{DeletionVectorDescriptor, StorageType};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use roaring::RoaringTreemap;

use tributary_sql::{Error, Result};

/// The magic number that opens a serialized vector (a 64-bit roaring bitmap, portable format).
const PORTABLE_MAGIC: u32 = 1681511377;
const TABLE_PROPERTY: &str = "delta.enableDeletionVectors";

/// Whether the table's protocol and properties let writers mark rows deleted.
pub fn enabled(table: &DeltaTable) -> bool {
    let Ok(snapshot) = table.snapshot() else {
        return false;
    };
    let supported = snapshot
        .protocol()
        .writer_features()
        .is_some_and(|features| features.iter().any(|f| f.to_string() == "deletionVectors"));
    let on = snapshot
        .metadata()
        .configuration()
        .get(TABLE_PROPERTY)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    supported && on
}

/// The table property that turns deletion vectors on at creation.
pub fn table_property() -> (&'static str, Option<&'static str>) {
    (TABLE_PROPERTY, Some("true"))
}

/// The rows a descriptor marks deleted.
pub async fn read(table: &DeltaTable, dv: &DeletionVectorDescriptor) -> Result<RoaringTreemap> {
    let corrupt = |what: &str| {
        Error::Internal(format!(
            "deletion vector {} of table {} is corrupt: {what}",
            dv.path_or_inline_dv,
            table.table_url()
        ))
    };
    if matches!(dv.storage_type, StorageType::Inline) {
        let bytes = z85::decode(&dv.path_or_inline_dv).map_err(|_| corrupt("not base85"))?;
        if bytes.len() < 4
            || u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) != PORTABLE_MAGIC
        {
            return Err(corrupt("unknown format"));
        }
        return RoaringTreemap::deserialize_from(&bytes[4..]).map_err(|e| corrupt(&e.to_string()));
    }
    let path = store_path(table, dv)?.ok_or_else(|| corrupt("no path"))?;
    let size = usize::try_from(dv.size_in_bytes).map_err(|_| corrupt("negative size"))?;
    let start = usize::try_from(dv.offset.unwrap_or(1)).map_err(|_| corrupt("negative offset"))?;
    // size (4) | magic (4) + bitmap (size - 4) | crc (4)
    let framed = table
        .log_store()
        .object_store(None)
        .get_range(&path, (start as u64)..((start + 4 + size + 4) as u64))
        .await
        .map_err(deltalake::DeltaTableError::from)?;
    if framed.len() != 4 + size + 4 || size < 4 {
        return Err(corrupt("truncated"));
    }
    let word = |at: usize| [framed[at], framed[at + 1], framed[at + 2], framed[at + 3]];
    if u32::from_be_bytes(word(0)) as usize != size {
        return Err(corrupt("size differs from the log's"));
    }
    if u32::from_le_bytes(word(4)) != PORTABLE_MAGIC {
        return Err(corrupt("unknown format"));
    }
    let checksum = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&framed[4..4 + size]);
    if u32::from_be_bytes(word(4 + size)) != checksum {
        return Err(corrupt("checksum mismatch"));
    }
    RoaringTreemap::deserialize_from(&framed[8..4 + size]).map_err(|e| corrupt(&e.to_string()))
}

/// Where a stored vector lives, relative to the table (for reads and for vacuum, which must
/// keep the vectors of files a reader may still open).
pub fn store_path(table: &DeltaTable, dv: &DeletionVectorDescriptor) -> Result<Option<Path>> {
    let kernel: delta_kernel::actions::deletion_vector::DeletionVectorDescriptor =
        dv.clone().try_into().map_err(|e: delta_kernel::Error| {
            Error::Internal(format!("deletion vector {}: {e}", dv.path_or_inline_dv))
        })?;
    let root = table.table_url();
    let Some(url) = kernel
        .absolute_path(root)
        .map_err(|e| Error::Internal(format!("deletion vector {}: {e}", dv.path_or_inline_dv)))?
    else {
        return Ok(None);
    };
    let relative = url.as_str().strip_prefix(root.as_str()).ok_or_else(|| {
        Error::Internal(format!(
            "deletion vector {url} lies outside its table {root}"
        ))
    })?;
    Ok(Some(Path::from_url_path(relative).map_err(|e| {
        Error::Internal(format!("deletion vector path {relative}: {e}"))
    })?))
}

/// A bitmap of deleted row positions, as delta-kernel's writer takes it.
struct Positions(RoaringTreemap);

impl DeletionVector for Positions {
    type IndexIterator = roaring::treemap::IntoIter;

    fn into_iter(self) -> Self::IndexIterator {
        self.0.into_iter()
    }

    fn cardinality(&self) -> u64 {
        self.0.len()
    }
}

/// Writes the vectors into one new file of the table and returns their descriptors, in the
/// order given.
pub async fn write(
    table: &DeltaTable,
    vectors: Vec<RoaringTreemap>,
) -> Result<Vec<DeletionVectorDescriptor>> {
    if vectors.is_empty() {
        return Ok(Vec::new());
    }
    let uuid = uuid::Uuid::new_v4();
    let mut buffer = Vec::new();
    let mut results = Vec::with_capacity(vectors.len());
    {
        let mut writer = StreamingDeletionVectorWriter::new(&mut buffer);
        for vector in vectors {
            results.push(
                writer
                    .write_deletion_vector(Positions(vector))
                    .map_err(|e| Error::Internal(format!("writing a deletion vector: {e}")))?,
            );
        }
        writer
            .finalize()
            .map_err(|e| Error::Internal(format!("writing a deletion vector: {e}")))?;
    }
    let path = Path::from(format!("deletion_vector_{uuid}.bin"));
    let store: Arc<dyn ObjectStore> = table.log_store().object_store(None);
    store
        .put(&path, Bytes::from(buffer).into())
        .await
        .map_err(deltalake::DeltaTableError::from)?;
    let encoded = z85::encode(uuid.as_bytes());
    Ok(results
        .into_iter()
        .map(|r| DeletionVectorDescriptor {
            storage_type: StorageType::UuidRelativePath,
            path_or_inline_dv: encoded.clone(),
            offset: Some(r.offset),
            size_in_bytes: r.size_in_bytes,
            cardinality: r.cardinality,
        })
        .collect())
}

/// Housekeeping rewrites a file once its deletion vector marks this share of its rows (in
/// percent): readers still decode the marked rows, so a file that merges keep hitting would
/// otherwise grow ever more wasteful to scan.
const PURGE_PERCENT: u64 = 20;

/// Rewrites the live rows of every file whose deletion vector marks at least
/// [`PURGE_PERCENT`] of its rows, one new file per old one (so a keyed model's files stay
/// sorted), in one commit of `dataChange = false` actions: readers and change feeds see the
/// same rows. Returns the table at its newest version and how many files were rewritten.
pub async fn purge(
    table: DeltaTable,
    metadata: serde_json::Map<String, serde_json::Value>,
    layout: Option<deltalake::parquet::file::properties::WriterProperties>,
) -> Result<(DeltaTable, usize)> {
    use deltalake::kernel::Action;
    use deltalake::writer::{DeltaWriter, RecordBatchWriter};
    use futures::TryStreamExt;

    #[allow(deprecated)] // delta-rs' replacement (raw Arrow arrays) has no Add builder yet
    let wasteful: Vec<deltalake::kernel::Add> = table
        .snapshot()?
        .log_data()
        .iter()
        .filter(|file| {
            let marked = file
                .deletion_vector_descriptor()
                .map_or(0, |dv| dv.cardinality.max(0) as u64);
            let rows = file.num_records().unwrap_or(0) as u64;
            marked > 0 && marked * 100 >= rows * PURGE_PERCENT
        })
        .map(|file| file.add_action())
        .collect();
    if wasteful.is_empty() {
        return Ok((table, 0));
    }
    // One partition: the file's rows come out in their stored (sorted) order.
    let ctx = datafusion::prelude::SessionContext::new_with_config(
        datafusion::prelude::SessionConfig::new().with_target_partitions(1),
    );
    let mut actions = Vec::new();
    for add in &wasteful {
        let provider = super::delta::provider_of_files(&table, vec![add.clone()]).await?;
        let mut rows = ctx.read_table(provider)?.execute_stream().await?;
        let mut writer = RecordBatchWriter::for_table(&table)?;
        if let Some(layout) = &layout {
            writer = writer.with_writer_properties(layout.clone());
        }
        let schema = writer.arrow_schema();
        while let Some(batch) = rows.try_next().await? {
            writer
                .write(super::delta::conform(&batch, &schema)?)
                .await?;
        }
        for mut written in writer.flush().await? {
            written.data_change = false;
            actions.push(Action::Add(written));
        }
        actions.push(Action::Remove(super::delta::removal(add, false)));
    }
    let operation = deltalake::protocol::DeltaOperation::Optimize {
        predicate: Some(format!(
            "files with {PURGE_PERCENT}% or more of their rows marked deleted"
        )),
        target_size: 0,
    };
    let properties = super::delta::commit_properties(metadata);
    let table = super::delta::commit(table, properties, actions, operation).await?;
    Ok((table, wasteful.len()))
}
