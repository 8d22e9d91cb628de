//! Durability: definitions and data survive a restart and a kill -9, and a refresh
//! interrupted by a crash is recorded as failed with the last good version still served.

use crate::support::TestServer;

async fn revenue(client: &tokio_postgres::Client) -> Vec<(String, String)> {
    client
        .query(
            "SELECT customer, CAST(paid AS TEXT) FROM marts.revenue ORDER BY customer",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

const SETUP: &str = "
    CREATE SCHEMA raw; CREATE SCHEMA marts;
    CREATE SOURCE raw.orders FROM FILES 'sqllogictests/data/orders.csv' FORMAT CSV;
    CREATE TABLE raw.payments (id BIGINT NOT NULL, order_id BIGINT, amount NUMERIC(18,2));
    INSERT INTO raw.payments VALUES (1, 1, 10.50), (2, 2, 20.25);
    CREATE MODEL marts.revenue AS
        SELECT o.customer, sum(p.amount) AS paid
        FROM raw.orders o JOIN raw.payments p ON p.order_id = o.id GROUP BY o.customer;
";

#[tokio::test]
async fn definitions_and_data_survive_restart_and_kill9() {
    let (mut server, _dir) = TestServer::start(&[]);
    let client = server.connect().await;
    client.batch_execute(SETUP).await.unwrap();
    let before = revenue(&client).await;
    assert_eq!(
        before,
        [
            ("acme".into(), "10.50".into()),
            ("globex".into(), "20.25".into())
        ]
    );
    drop(client);

    server.restart();
    let client = server.connect().await;
    assert_eq!(revenue(&client).await, before);
    client
        .batch_execute("INSERT INTO raw.payments VALUES (3, 3, 5)")
        .await
        .unwrap();
    drop(client);

    // kill -9 right after an acknowledged INSERT: it must still be there.
    let pid = server.pid();
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    server.restart();
    let client = server.connect().await;
    let n: i64 = client
        .query_one("SELECT count(*) FROM raw.payments", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
    client.batch_execute("REFRESH ALL").await.unwrap();
    assert_eq!(
        revenue(&client).await,
        [
            ("acme".into(), "15.50".into()),
            ("globex".into(), "20.25".into())
        ]
    );
}

/// A server with source `o` over a CSV file in its own folder and model `m` summing it; the
/// file's path is returned so tests can break it.
async fn source_and_model_over_a_csv_file() -> (TestServer, tempfile::TempDir, std::path::PathBuf) {
    let (server, dir) = TestServer::start(&[]);
    let data = dir.path().join("orders.csv");
    std::fs::write(&data, "id,customer\n1,acme\n2,globex\n").unwrap();
    server
        .connect()
        .await
        .batch_execute(&format!(
            "CREATE SOURCE o (id BIGINT, customer TEXT) FROM FILES '{}' FORMAT CSV;
             CREATE MODEL m AS SELECT customer, sum(id) AS total FROM o GROUP BY customer",
            data.display()
        ))
        .await
        .unwrap();
    (server, dir, data)
}

#[tokio::test]
async fn failed_refresh_keeps_previous_version_and_records_error() {
    let (server, _dir, data) = source_and_model_over_a_csv_file().await;
    let client = server.connect().await;
    // A malformed row: the refresh fails with 22P02 and the old version stays served.
    std::fs::write(&data, "id,customer\n1,acme\nnot-a-number,globex\n").unwrap();
    let e = client.batch_execute("REFRESH MODEL m").await.unwrap_err();
    assert_eq!(crate::support::code(&e), "22P02", "{e}");
    let n: i64 = client
        .query_one("SELECT count(*) FROM m", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    let row = client
        .query_one(
            "SELECT status, error FROM tributary.runs ORDER BY run_id DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "failed");
    let error = row.get::<_, &str>(1);
    assert!(error.contains("line 2"), "{error}");
    assert!(error.contains("orders.csv"), "{error}");
    // The statement's own error names the file too.
    let message = e.as_db_error().expect("db error").message();
    assert!(message.contains("orders.csv"), "{message}");
}

#[tokio::test]
async fn interrupted_refresh_is_marked_failed_after_restart() {
    let (mut server, _dir) = TestServer::start(&[]);
    let client = server.connect().await;
    client.batch_execute(SETUP).await.unwrap();
    // Simulate a crash mid-refresh: the catalog has a run that started and never finished.
    drop(client);
    server.stop();
    let run_id = server.record_unfinished_run("marts", "revenue", "manual");
    server.restart();
    let client = server.connect().await;
    let row = client
        .query_one(
            "SELECT status, error FROM tributary.runs WHERE run_id = $1",
            &[&run_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "failed");
    assert!(row.get::<_, &str>(1).starts_with("interrupted"));
    assert_eq!(revenue(&client).await.len(), 2);
}

#[tokio::test]
async fn kill9_during_a_refresh_keeps_the_last_good_version() {
    let (mut server, _dir) = TestServer::start(&[]);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE t (v BIGINT);
             INSERT INTO t VALUES (1);
             CREATE MODEL pairs AS SELECT sum(a.v * b.v) AS n FROM t a CROSS JOIN t b;
             INSERT INTO t SELECT value FROM generate_series(1, 200000)",
        )
        .await
        .unwrap();
    // 4e10 pairs: this refresh is still running when the server is killed.
    let refresh = tokio::spawn(async move { client.batch_execute("REFRESH MODEL pairs").await });
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let pid = server.pid();
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(refresh.await.unwrap().is_err());
    server.restart();
    let client = server.connect().await;
    let n: i64 = client
        .query_one("SELECT n FROM pairs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "the last good version is served");
    let row = client
        .query_one(
            "SELECT status, error FROM tributary.runs ORDER BY run_id DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "failed");
    assert!(
        row.get::<_, &str>(1).starts_with("interrupted"),
        "{}",
        row.get::<_, &str>(1)
    );
    // The model refreshes again after the restart (nothing is stuck).
    client
        .batch_execute("DELETE FROM t WHERE v > 1; REFRESH MODEL pairs")
        .await
        .unwrap();
    let n: i64 = client
        .query_one("SELECT n FROM pairs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 4, "two rows with v = 1 remain");
}

#[tokio::test]
async fn create_model_is_atomic_and_a_failed_replace_keeps_the_old_model() {
    let (server, _dir, data) = source_and_model_over_a_csv_file().await;
    let client = server.connect().await;
    std::fs::write(&data, "id,customer\n1,acme\nnot-a-number,globex\n").unwrap();
    // A replacement whose first refresh fails leaves the previous model as it was.
    let e = client
        .batch_execute("CREATE OR REPLACE MODEL m AS SELECT customer, max(id) AS total FROM o GROUP BY customer")
        .await
        .unwrap_err();
    assert_eq!(crate::support::code(&e), "22P02");
    let rows = client
        .query("SELECT customer, total FROM m ORDER BY customer", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].get::<_, i64>(1), 2);
    let query: String = client
        .query_one("SELECT query FROM tributary.models WHERE name = 'm'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(query.contains("sum(id)"), "{query}");
    // A new model whose first refresh fails is not created.
    let e = client
        .batch_execute("CREATE MODEL m2 AS SELECT sum(id) AS total FROM o")
        .await
        .unwrap_err();
    assert_eq!(crate::support::code(&e), "22P02");
    let e = client.batch_execute("SELECT * FROM m2").await.unwrap_err();
    assert_eq!(crate::support::code(&e), "42P01");
}
