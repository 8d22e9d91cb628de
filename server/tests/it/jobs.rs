//! Jobs against the real binary: a re-run for a past moment reproduces the report filed then
//! (time travel), and the scheduler runs jobs by itself.

use std::time::{Duration, Instant};

use crate::support::TestServer;

#[tokio::test(flavor = "multi_thread")]
async fn a_rerun_for_a_past_moment_reproduces_the_filed_report() {
    let (server, dir) = TestServer::start(&[]);
    let client = server.connect().await;
    let out = dir.path().join("filed");
    client
        .batch_execute(&format!(
            "CREATE TABLE ledger (id BIGINT, day DATE, amount BIGINT);
             INSERT INTO ledger VALUES (1, DATE '2026-10-05', 10), (2, DATE '2026-10-20', 20);
             CREATE MODEL monthly AS
                 SELECT CAST(date_trunc('month', day) AS DATE) AS month, sum(amount) AS total
                 FROM ledger GROUP BY CAST(date_trunc('month', day) AS DATE);
             CREATE JOB file_monthly AS
                 COPY (SELECT month, total FROM monthly TIMESTAMP AS OF '{{{{run_time}}}}' ORDER BY month)
                 TO '{}/monthly_{{{{run_date}}}}_{{{{run_time}}}}.csv' WITH (FORMAT csv, HEADER true);",
            out.display()
        ))
        .await
        .unwrap();
    let filed_at: String = client
        .query_one("SELECT CAST(now() AS TEXT)", &[])
        .await
        .unwrap()
        .get(0);
    let run = |at: String| {
        let client = &client;
        async move {
            let row = client
                .query_one(&format!("RUN JOB file_monthly AS OF '{at}'"), &[])
                .await
                .unwrap();
            let statement: String = row.get("statement");
            let file = statement
                .split(" TO '")
                .nth(1)
                .and_then(|s| s.split('\'').next())
                .unwrap()
                .to_string();
            std::fs::read_to_string(file).unwrap()
        }
    };
    let first = run(filed_at.clone()).await;
    assert!(first.contains("2026-10-01,30"), "{first}");

    // Late data for October arrives and the model refreshes.
    client
        .batch_execute("INSERT INTO ledger VALUES (3, DATE '2026-10-30', 5); REFRESH MODEL monthly")
        .await
        .unwrap();
    // A re-run for the moment of the first filing files exactly what was filed then...
    assert_eq!(run(filed_at).await, first);
    // ...and a run for now files the corrected report.
    let now: String = client
        .query_one("SELECT CAST(now() AS TEXT)", &[])
        .await
        .unwrap()
        .get(0);
    assert!(run(now).await.contains("2026-10-01,35"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scheduler_runs_due_jobs_and_retries_failures() {
    let (server, dir) = TestServer::start(&[]);
    let client = server.connect().await;
    let file = dir.path().join("heartbeat.csv");
    client
        .batch_execute(&format!(
            "CREATE JOB heartbeat WITH (schedule = 'every 1 second') AS
                 COPY (SELECT 1 AS alive) TO '{}' WITH (FORMAT csv);
             CREATE JOB failing WITH (schedule = 'every 1 hour', retries = 1, retry_delay = '1 second') AS
                 SELECT * FROM nowhere_to_be_found;",
            file.display()
        ))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = client
            .query(
                "SELECT job, trigger, status FROM tributary.job_runs ORDER BY run_id",
                &[],
            )
            .await
            .unwrap();
        let runs: Vec<(String, String, String)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let heartbeats = runs
            .iter()
            .filter(|r| r.0 == "heartbeat" && r.1 == "schedule" && r.2 == "succeeded")
            .count();
        let failing: Vec<&str> = runs
            .iter()
            .filter(|r| r.0 == "failing")
            .map(|r| r.1.as_str())
            .collect();
        if heartbeats >= 2 && failing == ["schedule", "retry"] {
            break;
        }
        assert!(Instant::now() < deadline, "{runs:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), "1");
    let last_error: String = client
        .query_one(
            "SELECT last_error FROM tributary.jobs WHERE name = 'failing'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(last_error.contains("nowhere_to_be_found"), "{last_error}");
}
