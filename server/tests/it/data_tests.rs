//! Write-audit-publish against the real binary: readers never see a version whose tests
//! failed, not while the refresh runs nor after it, and a commit that landed before its tests
//! ran (the server stopped in between) is undone at start-up rather than published.

use crate::support::{TestServer, code};

const ROWS: i64 = 400_000;

async fn count(client: &tokio_postgres::Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_reader_during_a_failing_refresh_keeps_seeing_the_previous_version() {
    let (server, _dir) = TestServer::start(&[]);
    let writer = server.connect().await;
    writer
        .batch_execute(&format!(
            "CREATE TABLE t (id BIGINT);
             INSERT INTO t SELECT value FROM generate_series(1, {ROWS});
             CREATE MODEL m AS SELECT id, id * 2 AS twice FROM t;
             CREATE TEST m_id_unique ON m EXPECT UNIQUE (id);
             INSERT INTO t SELECT value FROM generate_series(1, 1000);"
        ))
        .await
        .unwrap();
    let reader = server.connect().await;
    assert_eq!(count(&reader, "m").await, ROWS);

    let refresh = tokio::spawn(async move {
        let result = writer.batch_execute("REFRESH MODEL m FULL").await;
        (writer, result)
    });
    let mut reads_during = 0;
    while !refresh.is_finished() {
        assert_eq!(
            count(&reader, "m").await,
            ROWS,
            "a reader saw the rejected version"
        );
        reads_during += 1;
    }
    let (writer, result) = refresh.await.unwrap();
    let error = result.expect_err("the refresh must fail its test");
    assert_eq!(code(&error), "23505");
    let message = error.as_db_error().unwrap().message().to_string();
    assert!(
        message.contains("test \"m_id_unique\" on model \"public.m\" found 1000 failing rows"),
        "{message}"
    );
    assert!(reads_during > 0, "no read happened while the refresh ran");
    assert_eq!(count(&reader, "m").await, ROWS);
    assert_eq!(count(&server.connect().await, "m").await, ROWS);

    // The test's failing rows are kept, capped at the default 100.
    assert_eq!(
        count(
            &writer,
            "tributary.test_failures WHERE test = 'm_id_unique'"
        )
        .await,
        100
    );
}

#[tokio::test]
async fn a_commit_that_landed_before_its_tests_ran_is_undone_at_start() {
    let (mut server, _dir) = TestServer::start(&[]);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE t (id BIGINT);
             INSERT INTO t VALUES (1), (2);
             CREATE MODEL m AS SELECT id FROM t;
             INSERT INTO t VALUES (1);
             REFRESH MODEL m;
             CREATE TEST m_id_unique ON m EXPECT UNIQUE (id);",
        )
        .await
        .unwrap();
    assert_eq!(count(&client, "m").await, 3);
    drop(client);
    server.stop();

    // What a stop between the Delta commit and its audit leaves: the commit is in the log,
    // the catalog still publishes the version before it, the run never finished.
    let catalog = tributary_catalog::Catalog::open(&server.warehouse.join("catalog.db")).unwrap();
    let model = catalog
        .object(&tributary_catalog::ObjectName::new("public", "m"))
        .unwrap()
        .unwrap();
    catalog
        .set_published_version(model.id, model.published_version.unwrap() - 1)
        .unwrap();
    drop(catalog);
    let run_id = server.record_unfinished_run("public", "m", "manual");

    server.restart();
    let client = server.connect().await;
    assert_eq!(
        count(&client, "m").await,
        2,
        "the unaudited commit was published"
    );
    let status: String = client
        .query_one(
            "SELECT status FROM tributary.runs WHERE run_id = $1",
            &[&run_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "failed");
    // The input still has the duplicate: the next refresh is audited and refused.
    let error = client.batch_execute("REFRESH MODEL m").await.unwrap_err();
    assert_eq!(code(&error), "23505");
    assert_eq!(count(&client, "m").await, 2);
}
