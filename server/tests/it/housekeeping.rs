//! Housekeeping: compaction, purges, checkpoints and vacuum change no result, keep what unrefreshed
//! models still need, and make time travel past the retention fail clearly.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use datafusion::arrow::util::pretty::pretty_format_batches;
use futures::TryStreamExt;
use tributary_catalog::ObjectName;
use tributary_engine::{Engine, EngineConfig, HousekeepingPolicy, Output, Session};

use crate::support::TestServer;

async fn query(session: &mut Session, sql: &str) -> tributary_engine::Result<String> {
    let mut text = String::new();
    // Boxed: the statement futures are large, and the test's own future lives on its stack.
    for output in Box::pin(session.execute_all(sql)).await? {
        if let Output::Rows { stream, .. } = output {
            let batches: Vec<_> = stream.try_collect().await?;
            text.push_str(&pretty_format_batches(&batches).unwrap().to_string());
        }
    }
    Ok(text)
}

async fn run(session: &mut Session, sql: &str) -> String {
    query(session, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn files_with(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.to_string_lossy().ends_with(suffix))
                .collect()
        })
        .unwrap_or_default()
}

fn table_dir(engine: &Engine, warehouse: &Path, name: &str) -> PathBuf {
    let object = engine
        .catalog()
        .object(&ObjectName::new("public", name))
        .unwrap()
        .unwrap();
    warehouse.join(object.location.unwrap())
}

fn published_version(engine: &Engine, name: &str) -> i64 {
    engine
        .catalog()
        .object(&ObjectName::new("public", name))
        .unwrap()
        .unwrap()
        .published_version
        .unwrap()
}

const TOTALS: &str = "SELECT count(*) AS n, sum(v) AS total, min(id) AS lo, max(id) AS hi FROM t";
const BIG: &str = "SELECT id, v FROM t WHERE v > 100 ORDER BY id";

/// The report of `name` in a pass's outcomes.
fn report_of(
    outcomes: &mut Vec<tributary_engine::PassOutcome>,
    name: &str,
) -> tributary_engine::HousekeepingReport {
    let at = outcomes
        .iter()
        .position(|o| o.name.name == name)
        .unwrap_or_else(|| panic!("{name} was not visited"));
    outcomes
        .remove(at)
        .result
        .unwrap_or_else(|e| panic!("housekeeping of {name} failed: {e}"))
        .unwrap_or_else(|| panic!("{name} was skipped"))
}

async fn last_run_of_big(s: &mut Session) -> String {
    run(
        s,
        "SELECT strategy, rows_written FROM tributary.runs WHERE model LIKE '%big' \
         ORDER BY run_id DESC LIMIT 1",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_compacts_checkpoints_and_vacuums_without_changing_results() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(EngineConfig {
        warehouse: dir.path().to_string_lossy().into_owned(),
        memory_limit: 512 << 20,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut s = engine.session("tributary");
    let policy = HousekeepingPolicy {
        compact_min_files: 4,
        vacuum_retention: Duration::ZERO,
        checkpoint_every: 10,
        ..Default::default()
    };

    // 1. Thirty small appends, no model yet: compaction, a checkpoint, and vacuum of all
    //    thirty replaced files.
    run(&mut s, "CREATE TABLE t (id BIGINT NOT NULL, v BIGINT)").await;
    for i in 1..=30 {
        run(&mut s, &format!("INSERT INTO t VALUES ({i}, {})", i * 10)).await;
    }
    let t_dir = table_dir(&engine, dir.path(), "t");
    assert_eq!(files_with(&t_dir, ".parquet").len(), 30);
    let old_version = published_version(&engine, "t");
    let before = run(&mut s, TOTALS).await;

    let mut outcomes = Box::pin(engine.housekeeping_pass(&policy)).await;
    let report = report_of(&mut outcomes, "t");
    assert_eq!(report.live_files_before, 30, "{report}");
    assert_eq!(report.files_compacted, 30, "{report}");
    assert_eq!(report.live_files_after, 1, "{report}");
    assert_eq!(report.checkpoint, Some(report.version_after), "{report}");
    assert_eq!(report.files_vacuumed, 30, "{report}");
    assert_eq!(report.files_kept_for_models, 0, "{report}");
    // The compaction commit is published: catalog and reads follow it.
    assert_eq!(report.version_after, old_version + 1);
    assert_eq!(published_version(&engine, "t"), old_version + 1);
    let log = t_dir.join("_delta_log");
    assert!(
        !files_with(&log, ".checkpoint.parquet").is_empty(),
        "no checkpoint in {}",
        log.display()
    );
    assert_eq!(files_with(&t_dir, ".parquet").len(), 1);
    assert_eq!(run(&mut s, TOTALS).await, before);

    // Time travel: a version whose files were vacuumed fails clearly; the current one works.
    let e = query(
        &mut s,
        &format!("SELECT count(*) FROM t VERSION AS OF {old_version}"),
    )
    .await
    .expect_err("the old version was vacuumed");
    let message = e.to_string();
    assert!(
        message.contains(&format!(
            "version {old_version} of \"public.t\" is no longer available"
        )) && message.contains("vacuumed"),
        "{message}"
    );
    let latest = published_version(&engine, "t");
    assert_eq!(
        run(&mut s, &format!("{TOTALS} VERSION AS OF {latest}")).await,
        before
    );

    // 2. Models over the table, then appends they have not read yet: the next pass compacts
    //    again but keeps every file the models may still read.
    // A linear model refreshes incrementally (reads the appended files); an aggregate fully.
    run(
        &mut s,
        "CREATE MODEL big AS SELECT id, v FROM t WHERE v > 100",
    )
    .await;
    run(
        &mut s,
        "CREATE MODEL totals AS SELECT count(*) AS n, sum(v) AS total FROM t",
    )
    .await;
    for i in 31..=33 {
        run(&mut s, &format!("INSERT INTO t VALUES ({i}, {})", i * 10)).await;
    }
    let before = run(&mut s, TOTALS).await;
    let mut outcomes = Box::pin(engine.housekeeping_pass(&policy)).await;
    let report = report_of(&mut outcomes, "t");
    assert_eq!(report.files_compacted, 4, "{report}");
    assert_eq!(report.files_vacuumed, 0, "{report}");
    assert_eq!(report.files_kept_for_models, 4, "{report}");
    assert_eq!(files_with(&t_dir, ".parquet").len(), 1 + 3 + 1);
    assert_eq!(run(&mut s, TOTALS).await, before);

    // The models refresh correctly from the compacted table: the incremental one reads the
    // three kept files, and agrees with its query.
    run(&mut s, "REFRESH ALL").await;
    assert_eq!(
        run(&mut s, "SELECT * FROM big ORDER BY id").await,
        run(&mut s, BIG).await
    );
    assert_eq!(
        run(&mut s, "SELECT n, total FROM totals").await,
        run(&mut s, "SELECT count(*) AS n, sum(v) AS total FROM t").await
    );
    let last_run = last_run_of_big(&mut s).await;
    assert!(
        last_run.contains("incremental_append") && last_run.contains("| 3 "),
        "the refresh after compaction should append the 3 new rows from the kept files:\n{last_run}"
    );

    // 3. Now that the models read them, the next pass deletes the kept files too. With a
    //    lower threshold it also compacts the model's own files (one per refresh).
    let policy = HousekeepingPolicy {
        compact_min_files: 2,
        ..policy
    };
    let mut outcomes = Box::pin(engine.housekeeping_pass(&policy)).await;
    let report = report_of(&mut outcomes, "t");
    assert_eq!(report.files_vacuumed, 4, "{report}");
    assert_eq!(report.files_compacted, 0, "{report}");
    assert_eq!(report.checkpoint, None, "not due yet: {report}");
    let model_report = report_of(&mut outcomes, "big");
    assert!(model_report.files_compacted >= 2, "{model_report}");
    assert_eq!(model_report.live_files_after, 1, "{model_report}");
    assert_eq!(files_with(&t_dir, ".parquet").len(), 1);
    assert_eq!(run(&mut s, TOTALS).await, before);

    // Appends after housekeeping still work and are visible; the compacted model kept its
    // input bookmarks, so it still refreshes incrementally.
    run(&mut s, "INSERT INTO t VALUES (34, 340)").await;
    run(&mut s, "REFRESH ALL").await;
    assert_eq!(
        run(&mut s, "SELECT * FROM big ORDER BY id").await,
        run(&mut s, BIG).await
    );
    let last_run = last_run_of_big(&mut s).await;
    assert!(
        last_run.contains("incremental_append") && last_run.contains("| 1 "),
        "{last_run}"
    );
}

#[tokio::test]
async fn the_server_runs_housekeeping_from_its_flags() {
    let (server, dir) = TestServer::start(&[
        "--housekeeping-interval",
        "300ms",
        "--compact-min-files",
        "2",
        "--vacuum-retention",
        "0s",
        "--checkpoint-every",
        "5",
    ]);
    let client = server.connect().await;
    client
        .batch_execute("CREATE TABLE h (id BIGINT NOT NULL, v BIGINT)")
        .await
        .unwrap();
    for i in 1..=8 {
        client
            .batch_execute(&format!("INSERT INTO h VALUES ({i}, {i})"))
            .await
            .unwrap();
    }
    let location: String = client
        .query_one(
            "SELECT location FROM tributary.tables WHERE name = 'h'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let table = dir.path().join(location);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let data = files_with(&table, ".parquet").len();
        let checkpoints = files_with(&table.join("_delta_log"), ".checkpoint.parquet").len();
        if data == 1 && checkpoints > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "housekeeping did not run: {data} data files, {checkpoints} checkpoints"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let row = client
        .query_one("SELECT count(*), sum(v) FROM h", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 8);
    assert_eq!(row.get::<_, i64>(1), 36);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_purges_files_whose_rows_merges_marked_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(EngineConfig {
        warehouse: dir.path().to_string_lossy().into_owned(),
        memory_limit: 512 << 20,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut s = engine.session("tributary");
    // Compaction and vacuum out of the way: only the purge can rewrite files here.
    let policy = HousekeepingPolicy {
        compact_min_files: 1000,
        vacuum_retention: Duration::from_secs(3600),
        ..Default::default()
    };
    run(
        &mut s,
        "CREATE TABLE src (id BIGINT NOT NULL, v BIGINT);
         INSERT INTO src SELECT value AS id, value AS v FROM generate_series(1, 1000);
         CREATE MODEL keyed WITH (unique_key = 'id') AS SELECT id, v FROM src;
         CREATE MODEL buckets AS SELECT v % 3 AS b, count(*) AS n, sum(v) AS total
             FROM keyed GROUP BY v % 3",
    )
    .await;
    let keyed_sql = "SELECT count(*) AS n, sum(v) AS total FROM keyed";
    let query_sql = "SELECT count(*) AS n, sum(v) AS total FROM src";
    let buckets_sql = "SELECT b, n, total FROM buckets ORDER BY b";
    let buckets_query = "SELECT v % 3 AS b, count(*) AS n, sum(v) AS total FROM src \
                         GROUP BY v % 3 ORDER BY b";
    // Two merges mark 142 and then 143 of the first file's 1,000 rows deleted: 14% is kept
    // as it is, 28.5% is purged.
    for (step, residue) in [0, 1].into_iter().enumerate() {
        run(
            &mut s,
            &format!(
                "UPDATE src SET v = v + 1 WHERE id % 7 = {residue};
                 REFRESH MODEL keyed; REFRESH MODEL buckets"
            ),
        )
        .await;
        let strategy = run(
            &mut s,
            "SELECT strategy FROM tributary.runs WHERE model = 'public.keyed' \
             ORDER BY run_id DESC LIMIT 1",
        )
        .await;
        assert!(strategy.contains("incremental_merge"), "{strategy}");
        let mut outcomes = Box::pin(engine.housekeeping_pass(&policy)).await;
        let report = report_of(&mut outcomes, "keyed");
        assert_eq!(report.files_purged, step, "{report}");
        assert_eq!(run(&mut s, keyed_sql).await, run(&mut s, query_sql).await);
    }
    // The purge changed no row, so neither the model nor the one reading it has anything to
    // do; later changes still refresh incrementally and exactly.
    run(&mut s, "REFRESH MODEL keyed; REFRESH MODEL buckets").await;
    let strategies = run(
        &mut s,
        "SELECT model, strategy FROM tributary.runs ORDER BY run_id DESC LIMIT 2",
    )
    .await;
    assert_eq!(strategies.matches("unchanged").count(), 2, "{strategies}");
    run(
        &mut s,
        "UPDATE src SET v = v * 2 WHERE id % 5 = 0;
         REFRESH MODEL keyed; REFRESH MODEL buckets",
    )
    .await;
    assert_eq!(run(&mut s, keyed_sql).await, run(&mut s, query_sql).await);
    assert_eq!(
        run(&mut s, buckets_sql).await,
        run(&mut s, buckets_query).await
    );
}
