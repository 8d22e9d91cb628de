//! The scheduler against the real binary: an `'on change'` model refreshes by itself after
//! its input changed, a failing scheduled refresh is retried `retries` times, and `timeout`
//! stops a refresh. Every wait polls `tributary.runs` with a deadline.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::support::{TestServer, code};

/// Polls `sql` (one row, one bigint) until it returns at least `want`, for up to `secs`.
async fn wait_for(client: &Client, sql: &str, want: i64, secs: u64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let got: i64 = client.query_one(sql, &[]).await.unwrap().get(0);
        if got >= want || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn runs(client: &Client, model: &str) -> Vec<(String, String, String)> {
    client
        .query(
            "SELECT trigger, status, coalesce(error, reason, '') FROM tributary.runs \
             WHERE model = $1 ORDER BY run_id",
            &[&model],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn on_change_models_refresh_after_their_input_changed() {
    let (server, _dir) = TestServer::start(&[]);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE SCHEMA s;
             CREATE TABLE s.t (id BIGINT, v BIGINT);
             INSERT INTO s.t VALUES (1, 10);
             CREATE MODEL s.total WITH (schedule = 'on change') AS
                 SELECT sum(v) AS total, count(*) AS n FROM s.t;
             CREATE MODEL s.doubled WITH (schedule = 'on change') AS
                 SELECT total * 2 AS twice FROM s.total;
             CREATE MODEL s.by_hand AS SELECT count(*) AS n FROM s.t;",
        )
        .await
        .unwrap();
    client
        .batch_execute("INSERT INTO s.t VALUES (2, 5)")
        .await
        .unwrap();
    let scheduled = "SELECT count(*) FROM tributary.runs WHERE model = 's.doubled' \
                     AND trigger = 'schedule' AND status = 'succeeded'";
    let n = wait_for(&client, scheduled, 1, 20).await;
    assert_eq!(n, 1, "runs: {:?}", runs(&client, "s.doubled").await);
    let total: i64 = client
        .query_one("SELECT total FROM s.total", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 15);
    let twice: i64 = client
        .query_one("SELECT twice FROM s.doubled", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(twice, 30);
    // The manual model was left alone, and nothing runs again without a new change.
    assert_eq!(runs(&client, "s.by_hand").await.len(), 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let total_runs = runs(&client, "s.total").await;
    assert_eq!(
        total_runs
            .iter()
            .filter(|(trigger, _, _)| trigger == "schedule")
            .count(),
        1,
        "{total_runs:?}"
    );
}

#[tokio::test]
async fn failing_refreshes_are_retried_then_wait_for_a_new_change() {
    let (server, dir) = TestServer::start(&[]);
    let landing = dir.path().join("landing");
    std::fs::create_dir_all(&landing).unwrap();
    std::fs::write(landing.join("day1.csv"), "id,amount\n1,10\n2,20\n").unwrap();
    let client = server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE SCHEMA s;
             CREATE SOURCE s.feed (id BIGINT, amount BIGINT) FROM FILES '{}' FORMAT CSV;
             CREATE MODEL s.sums WITH (schedule = 'on change', retries = 2,
                 retry_delay = '1 second') AS SELECT sum(amount) AS total FROM s.feed;",
            landing.display()
        ))
        .await
        .unwrap();
    // A file that does not parse: every refresh of s.sums fails.
    std::fs::write(landing.join("day2.csv"), "id,amount\n3,lots\n").unwrap();
    let failed = "SELECT count(*) FROM tributary.runs WHERE model = 's.sums' AND status = 'failed'";
    let n = wait_for(&client, failed, 3, 30).await;
    assert_eq!(n, 3, "runs: {:?}", runs(&client, "s.sums").await);
    // No fourth attempt for the same change (retries + 1 in all).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let history = runs(&client, "s.sums").await;
    let triggers: Vec<&str> = history
        .iter()
        .filter(|(_, status, _)| status == "failed")
        .map(|(trigger, _, _)| trigger.as_str())
        .collect();
    assert_eq!(triggers, ["schedule", "retry", "retry"], "{history:?}");
    // The last good version is still served.
    let total: i64 = client
        .query_one("SELECT total FROM s.sums", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 30);

    // Fixing the file is a new change: the next scheduled refresh succeeds.
    std::fs::write(landing.join("day2.csv"), "id,amount\n3,30\n").unwrap();
    let ok = "SELECT count(*) FROM tributary.runs WHERE model = 's.sums' \
              AND trigger = 'schedule' AND status = 'succeeded'";
    assert_eq!(wait_for(&client, ok, 1, 20).await, 1);
    let total: i64 = client
        .query_one("SELECT total FROM s.sums", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 60);
}

#[tokio::test]
async fn refreshes_over_their_timeout_fail_saying_so() {
    let (server, _dir) = TestServer::start(&["--max-concurrent-refreshes", "1"]);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE t (id BIGINT);
             INSERT INTO t VALUES (1);
             CREATE MODEL slow WITH (schedule = 'on change', timeout = '1ms') AS
                 SELECT count(*) AS n FROM t;
             INSERT INTO t VALUES (2);",
        )
        .await
        .unwrap();
    let failed = "SELECT count(*) FROM tributary.runs WHERE model = 'public.slow' \
                  AND status = 'failed'";
    assert_eq!(wait_for(&client, failed, 1, 20).await, 1);
    let history = runs(&client, "public.slow").await;
    let (trigger, _, error) = history.last().unwrap();
    assert_eq!(trigger, "schedule");
    assert_eq!(error, "timed out after 1ms", "{history:?}");
    // The version from before is still served.
    let n: i64 = client
        .query_one("SELECT n FROM slow", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test]
async fn a_scheduled_run_a_crash_interrupted_is_retried_after_restart() {
    let (mut server, _dir) = TestServer::start(&[]);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE t (v BIGINT);
             INSERT INTO t VALUES (1), (2);
             CREATE MODEL hourly WITH (schedule = 'every 1 hour') AS SELECT sum(v) AS n FROM t;
             INSERT INTO t VALUES (3);",
        )
        .await
        .unwrap();
    drop(client);
    server.stop();
    // As if the server died during a scheduled refresh: a run started and never finished.
    let run_id = server.record_unfinished_run("public", "hourly", "schedule");
    server.restart();
    let client = server.connect().await;
    let retried = "SELECT count(*) FROM tributary.runs WHERE model = 'public.hourly' \
                   AND trigger = 'retry' AND status = 'succeeded'";
    assert_eq!(
        wait_for(&client, retried, 1, 20).await,
        1,
        "{:?}",
        runs(&client, "public.hourly").await
    );
    let error: String = client
        .query_one(
            "SELECT error FROM tributary.runs WHERE run_id = $1",
            &[&run_id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(error.starts_with("interrupted"), "{error}");
    let n: i64 = client
        .query_one("SELECT n FROM hourly", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 6);
}

#[tokio::test]
async fn invalid_schedule_options_are_rejected_naming_the_option() {
    let (server, _dir) = TestServer::start(&["--scheduler", "off"]);
    let client = server.connect().await;
    for (option, value) in [
        ("schedule", "'sometimes'"),
        ("schedule", "'cron 99 * * * *'"),
        ("retries", "'many'"),
        ("retry_delay", "'soon'"),
        ("timeout", "'0'"),
    ] {
        let e = client
            .batch_execute(&format!(
                "CREATE MODEL m WITH ({option} = {value}) AS SELECT 1 AS one"
            ))
            .await
            .unwrap_err();
        assert_eq!(code(&e), "22023", "{option} = {value}: {e}");
        let message = e.as_db_error().unwrap().message().to_string();
        assert!(message.contains(option), "{message}");
    }
}
