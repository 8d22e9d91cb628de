//! A warehouse written by an earlier binary (`tests/fixtures/warehouse-07f5163`, see the README
//! there) opens with today's code: its definitions, rows, tests and jobs are there, and the
//! models' bookmarks are understood, so the next refresh is incremental, not a rebuild.

use std::path::Path;

use crate::support::{TestServer, repo_root};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

async fn rows(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    client
        .simple_query(sql)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

fn row(values: &[&str]) -> Vec<Option<String>> {
    values.iter().map(|v| Some(v.to_string())).collect()
}

#[tokio::test]
async fn a_warehouse_written_by_07f5163_serves_the_same_rows_and_refreshes_incrementally() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(
        &repo_root().join("server/tests/fixtures/warehouse-07f5163"),
        dir.path(),
    );
    let server = TestServer::start_in(dir.path().to_path_buf(), &[]);
    let client = server.connect().await;

    assert_eq!(
        rows(
            &client,
            "SELECT customer, revenue, orders FROM shop.revenue_by_customer ORDER BY customer"
        )
        .await,
        [
            row(&["ann", "16.50", "2"]),
            row(&["bob", "21.25", "2"]),
            row(&["cid", "7.25", "1"])
        ]
    );
    assert_eq!(
        rows(
            &client,
            "SELECT region, revenue FROM shop.revenue_by_region ORDER BY region"
        )
        .await,
        [row(&["north", "23.75"]), row(&["south", "21.25"])]
    );
    assert_eq!(
        rows(&client, "SELECT count(*) FROM shop.order_lines").await,
        [row(&["5"])]
    );
    assert_eq!(
        rows(
            &client,
            "SELECT customer, n FROM shop.orders_per_customer ORDER BY customer"
        )
        .await,
        [row(&["acme", "2"]), row(&["globex", "1"])]
    );
    assert_eq!(
        rows(&client, "SELECT name FROM tributary.tests ORDER BY name").await,
        [row(&["order_lines_id_unique"]), row(&["revenue_not_null"])]
    );
    assert_eq!(
        rows(
            &client,
            "SELECT name, schedule, last_status FROM tributary.jobs"
        )
        .await,
        [row(&["nightly", "cron 0 3 * * *", "succeeded"])]
    );
    assert_eq!(
        rows(&client, "SELECT count(*) FROM shop.orders VERSION AS OF 1").await,
        [row(&["3"])]
    );

    client
        .batch_execute(
            "INSERT INTO shop.orders VALUES (6, 'cid', 2.75, '2026-01-05');
             REFRESH ALL;",
        )
        .await
        .unwrap();
    assert_eq!(
        rows(
            &client,
            "SELECT customer, revenue, orders FROM shop.revenue_by_customer ORDER BY customer"
        )
        .await,
        [
            row(&["ann", "16.50", "2"]),
            row(&["bob", "21.25", "2"]),
            row(&["cid", "10.00", "2"])
        ]
    );
    assert_eq!(
        rows(
            &client,
            "SELECT customer, n FROM shop.orders_per_customer ORDER BY customer"
        )
        .await,
        [row(&["acme", "2"]), row(&["globex", "1"])]
    );
    // The runs of this server only: every model that read the new row did so incrementally,
    // from the bookmarks the earlier binary wrote. (`orders_per_customer` reads a file whose
    // bookmark names the absolute path and modification time it had where the fixture was
    // written; in another checkout that is a different file, and a full refresh is right.)
    let strategies = rows(
        &client,
        "SELECT model, strategy FROM tributary.runs \
         WHERE model IN ('shop.order_lines', 'shop.revenue_by_customer', 'shop.revenue_by_region') \
         ORDER BY run_id DESC LIMIT 3",
    )
    .await;
    assert_eq!(strategies.len(), 3, "{strategies:?}");
    for r in &strategies {
        let strategy = r[1].as_deref().unwrap_or_default();
        assert!(
            strategy.starts_with("incremental"),
            "a refresh after opening the fixture was not incremental: {strategies:?}"
        );
    }
    let tests = rows(
        &client,
        "SELECT status FROM tributary.test_results WHERE test = 'order_lines_id_unique' ORDER BY result_id DESC LIMIT 1",
    )
    .await;
    assert_eq!(tests, [row(&["pass"])]);
}
