use super::*;
use datafusion::arrow::array::{Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};

const SMALL: FileSize = FileSize {
    rows: 1000,
    bytes: usize::MAX,
};

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("label", DataType::Utf8, true),
    ]))
}

/// `partitions` partitions of `rows` rows each, ids ascending within each, in batches of
/// 300 rows (so files end inside batches).
fn rows(partitions: usize, rows: usize) -> Vec<Vec<RecordBatch>> {
    (0..partitions)
        .map(|p| {
            let ids: Vec<i64> = (0..rows).map(|i| (p * rows + i) as i64).collect();
            ids.chunks(300)
                .map(|ids| {
                    let labels: Vec<String> = ids.iter().map(|i| format!("row {i}")).collect();
                    RecordBatch::try_new(
                        schema(),
                        vec![
                            Arc::new(Int64Array::from(ids.to_vec())),
                            Arc::new(StringArray::from(labels)),
                        ],
                    )
                    .unwrap()
                })
                .collect()
        })
        .collect()
}

async fn write(
    table: &DeltaTable,
    partitions: Vec<Vec<RecordBatch>>,
    mode: SaveMode,
) -> DeltaTable {
    let count = partitions.len();
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
    let source = MemTable::try_new(schema(), partitions).unwrap();
    let plan = ctx
        .read_table(Arc::new(source))
        .unwrap()
        .into_unoptimized_plan();
    let state = ctx.state();
    let physical = state.create_physical_plan(&plan).await.unwrap();
    assert_eq!(physical.properties().partitioning.partition_count(), count);
    let written = write_plan_in_files(table, &state, &plan, None, SMALL)
        .await
        .unwrap();
    commit(table.clone(), written, mode, serde_json::Map::new())
        .await
        .unwrap()
}

#[test]
fn slices_of_one_large_batch_count_only_their_own_bytes() {
    let whole = rows(1, 200_000).concat();
    let whole = datafusion::arrow::compute::concat_batches(&schema(), &whole).unwrap();
    assert!(whole.get_array_memory_size() > 4 << 20);
    let mut chunk = Chunk::new(FileSize {
        rows: usize::MAX,
        bytes: 1 << 20,
    });
    let files: Vec<_> = (0..10)
        .flat_map(|i| chunk.take(whole.slice(i * 8192, 8192)))
        .collect();
    // About 21 bytes a row: a file of 1 MiB fills after six or seven slices.
    assert_eq!(files.len(), 1);
    assert!((6..=7).contains(&files[0].len()), "{}", files[0].len());
}

/// Each live file's (min id, max id, rows), by min id.
fn files(table: &DeltaTable) -> Vec<(i64, i64, i64)> {
    #[allow(deprecated)]
    let adds: Vec<Add> = table
        .snapshot()
        .unwrap()
        .log_data()
        .iter()
        .map(|f| f.add_action())
        .collect();
    let mut files: Vec<_> = adds
        .iter()
        .map(|add| {
            let stats: serde_json::Value =
                serde_json::from_str(add.stats.as_deref().unwrap()).unwrap();
            (
                stats["minValues"]["id"].as_i64().unwrap(),
                stats["maxValues"]["id"].as_i64().unwrap(),
                stats["numRecords"].as_i64().unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

async fn ids(table: &DeltaTable) -> Vec<i64> {
    let ctx = SessionContext::new();
    let provider = super::super::delta::provider(table).await.unwrap();
    let batches = ctx
        .read_table(provider)
        .unwrap()
        .sort(vec![datafusion::prelude::col("id").sort(true, false)])
        .unwrap()
        .collect()
        .await
        .unwrap();
    batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect()
}

async fn table(dir: &tempfile::TempDir) -> DeltaTable {
    let warehouse = super::super::delta::Warehouse::open(dir.path().to_str().unwrap()).unwrap();
    warehouse.create("t", "t", &schema()).await.unwrap()
}

#[tokio::test]
async fn one_sorted_partition_becomes_consecutive_files_of_disjoint_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let table = write(&table(&dir).await, rows(1, 3500), SaveMode::Overwrite).await;
    assert_eq!(
        files(&table),
        vec![
            (0, 999, 1000),
            (1000, 1999, 1000),
            (2000, 2999, 1000),
            (3000, 3499, 500)
        ]
    );
    assert_eq!(ids(&table).await, (0..3500).collect::<Vec<_>>());
    assert_eq!(
        super::super::delta::last_commit_rows(&table).await,
        Some(3500)
    );
}

/// The physical plan of `ORDER BY id` over the table, as text.
async fn ordered_plan(table: &DeltaTable) -> String {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
    ctx.register_table("t", super::super::delta::provider(table).await.unwrap())
        .unwrap();
    let explained = ctx
        .sql("EXPLAIN SELECT id, label FROM t ORDER BY id")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    datafusion::arrow::util::pretty::pretty_format_batches(&explained)
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn files_tagged_sorted_with_disjoint_ranges_are_read_in_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let table = table(&dir).await;
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
    let plan = ctx
        .read_table(Arc::new(
            MemTable::try_new(schema(), rows(1, 3500)).unwrap(),
        ))
        .unwrap()
        .into_unoptimized_plan();
    let written = write_plan_in_files(&table, &ctx.state(), &plan, None, SMALL)
        .await
        .unwrap();
    let untagged = commit(table, written, SaveMode::Overwrite, serde_json::Map::new())
        .await
        .unwrap();
    let ordered = ordered_plan(&untagged).await;
    assert!(ordered.contains("SortExec"), "{ordered}");

    let mut written = write_plan_in_files(&untagged, &ctx.state(), &plan, None, SMALL)
        .await
        .unwrap();
    super::super::cluster::tag_sorted(&mut written.adds, &["id".to_string()]);
    let tagged = commit(
        untagged,
        written,
        SaveMode::Overwrite,
        serde_json::Map::new(),
    )
    .await
    .unwrap();
    let plan = ordered_plan(&tagged).await;
    assert!(!plan.contains("SortExec"), "{plan}");
    assert!(plan.contains("SortPreservingMergeExec"), "{plan}");
    assert_eq!(ids(&tagged).await, (0..3500).collect::<Vec<_>>());

    // A sorted file overlapping the others' ranges is read in a group of its own.
    let plan = ctx
        .read_table(Arc::new(MemTable::try_new(schema(), rows(1, 10)).unwrap()))
        .unwrap()
        .into_unoptimized_plan();
    let mut written = write_plan_in_files(&tagged, &ctx.state(), &plan, None, SMALL)
        .await
        .unwrap();
    super::super::cluster::tag_sorted(&mut written.adds, &["id".to_string()]);
    let overlapping = commit(tagged, written, SaveMode::Append, serde_json::Map::new())
        .await
        .unwrap();
    let plan = ordered_plan(&overlapping).await;
    assert!(!plan.contains("SortExec"), "{plan}");
    let mut expected: Vec<i64> = (0..3500).chain(0..10).collect();
    expected.sort();
    assert_eq!(ids(&overlapping).await, expected);

    // A file without the tag (a merge's new rows) leaves the scan unordered.
    let mixed = write(&overlapping, rows(1, 10), SaveMode::Append).await;
    let plan = ordered_plan(&mixed).await;
    assert!(plan.contains("SortExec"), "{plan}");
}

#[tokio::test]
async fn partitions_write_their_own_files_and_share_their_remainders() {
    let dir = tempfile::tempdir().unwrap();
    let table = write(&table(&dir).await, rows(3, 1500), SaveMode::Overwrite).await;
    let mut sizes: Vec<i64> = files(&table).iter().map(|(_, _, n)| *n).collect();
    sizes.sort();
    // One full file per partition, then their three remainders of 500 rows: one full
    // file and one of 500.
    assert_eq!(sizes, vec![500, 1000, 1000, 1000, 1000]);
    assert_eq!(ids(&table).await, (0..4500).collect::<Vec<_>>());
}

#[tokio::test]
async fn overwrite_replaces_every_file_and_append_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let table = write(&table(&dir).await, rows(1, 2500), SaveMode::Overwrite).await;
    let table = write(&table, rows(1, 1200), SaveMode::Overwrite).await;
    assert_eq!(files(&table), vec![(0, 999, 1000), (1000, 1199, 200)]);
    assert_eq!(ids(&table).await, (0..1200).collect::<Vec<_>>());
    let table = write(&table, rows(1, 10), SaveMode::Append).await;
    assert_eq!(files(&table).len(), 3);
    assert_eq!(ids(&table).await.len(), 1210);
    let table = write(&table, vec![vec![]], SaveMode::Overwrite).await;
    assert!(files(&table).is_empty());
    assert_eq!(super::super::delta::last_commit_rows(&table).await, Some(0));
    assert_eq!(table.version(), Some(4));
}
