//! A `unique_key` model's files are sorted by the key, so a point lookup reads one Parquet page
//! per column instead of every page: checked through the page-index pruning that
//! `EXPLAIN ANALYZE` reports, against an unkeyed model over the same scrambled rows. And a
//! key-wise merge reads only the files whose key range holds a changed key, and marks the
//! replaced rows deleted instead of rewriting their files; lookups keep their pruning after.

use crate::support::TestServer;

/// Parquet pages, and their rows, that survive page-index pruning in an `EXPLAIN ANALYZE` of
/// `sql` (`page_index_pages_pruned=N total → M matched`, `page_index_rows_pruned=...`).
async fn after_page_pruning(client: &tokio_postgres::Client, sql: &str) -> (u64, u64) {
    let plan: String = client
        .query(&format!("EXPLAIN ANALYZE {sql}"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(1))
        .collect::<Vec<_>>()
        .join("\n");
    // "1.01 M total → 2.05 K matched": the count after the arrow, with DataFusion's units.
    let matched = |metric: &str| -> Option<u64> {
        let counts = plan.split(metric).nth(1)?.split(" matched").next()?;
        let mut words = counts.rsplit('→').next()?.split_whitespace();
        let number: f64 = words.next()?.parse().ok()?;
        let scale = match words.next() {
            None => 1.0,
            Some("K") => 1e3,
            Some("M") => 1e6,
            Some(_) => return None,
        };
        Some((number * scale).round() as u64)
    };
    matched("page_index_pages_pruned=")
        .zip(matched("page_index_rows_pruned="))
        .unwrap_or_else(|| panic!("no page index metrics in:\n{plan}"))
}

/// Strategy, reason and rows written of the keyed model's latest run.
async fn last_run(client: &tokio_postgres::Client) -> (String, String, i64) {
    let row = client
        .query_one(
            "SELECT strategy, reason, rows_written FROM tributary.runs \
             WHERE model = 'public.keyed' ORDER BY run_id DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_models_are_sorted_by_their_key() {
    let (server, _dir) = TestServer::start(&[]);
    let client = server.connect().await;
    // 100,000 ids in a scrambled order (7919 is prime, so i * 7919 mod 100000 is a permutation).
    client
        .batch_execute(
            "CREATE TABLE events (id BIGINT, payload TEXT);
             INSERT INTO events SELECT (value * 7919) % 100000, 'row ' || value
                 FROM generate_series(0, 99999);
             CREATE MODEL keyed WITH (unique_key = 'id') AS SELECT id, payload FROM events;
             CREATE MODEL unkeyed AS SELECT id, payload FROM events;
             CREATE MODEL buckets AS SELECT id % 10 AS bucket, count(*) AS n, max(payload) AS top
                 FROM keyed GROUP BY id % 10;",
        )
        .await
        .unwrap();

    let lookup = |model: &str, id: i64| format!("SELECT * FROM {model} WHERE id = {id}");
    for id in [0_i64, 4242, 99_999] {
        let rows = client.query(&lookup("keyed", id), &[]).await.unwrap();
        assert_eq!(rows.len(), 1, "id {id}");
        assert_eq!(rows[0].get::<_, i64>(0), id);
    }
    // Sorted, a lookup keeps one page (of about 2,048 rows, in a keyed model); scrambled,
    // every page (20,000 rows by default) spans the lookup's key.
    let (keyed_pages, keyed_rows) = after_page_pruning(&client, &lookup("keyed", 4242)).await;
    let (unkeyed_pages, unkeyed_rows) = after_page_pruning(&client, &lookup("unkeyed", 4242)).await;
    assert_eq!(keyed_pages, 1, "keyed model");
    assert!(
        keyed_rows <= 2100,
        "keyed model kept a page of {keyed_rows} rows"
    );
    assert!(
        unkeyed_pages >= 5 && unkeyed_rows >= 100_000,
        "unkeyed model kept only {unkeyed_pages} pages, {unkeyed_rows} rows"
    );

    // Appended rows land in a file of their own, sorted too.
    client
        .batch_execute(
            "INSERT INTO events SELECT 100000 + (value * 7919) % 100000, 'late ' || value
                 FROM generate_series(0, 99999);
             REFRESH MODEL keyed;",
        )
        .await
        .unwrap();
    let (strategy, _, _) = last_run(&client).await;
    assert_eq!(strategy, "incremental_append");
    let rows = client.query(&lookup("keyed", 154_321), &[]).await.unwrap();
    assert_eq!(rows.len(), 1);
    let (pages, _) = after_page_pruning(&client, &lookup("keyed", 154_321)).await;
    assert_eq!(pages, 1, "keyed model after an append");

    // A merge of a few keys of the second file reads that file alone and marks their old
    // rows deleted (a deletion vector) instead of rewriting it.
    client
        .batch_execute(
            "UPDATE events SET payload = 'changed' WHERE id IN (150000, 160000);
             DELETE FROM events WHERE id = 170000;
             REFRESH MODEL keyed;",
        )
        .await
        .unwrap();
    let (strategy, reason, rows) = last_run(&client).await;
    assert_eq!((strategy.as_str(), rows), ("incremental_merge", 3));
    assert!(
        reason.ends_with("(3 keys, 1 of 2 files read, 3 rows marked deleted in 1 file)"),
        "{reason}"
    );
    let changed: i64 = client
        .query_one(
            "SELECT count(*) FROM keyed WHERE payload = 'changed' OR id = 170000",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(changed, 2);
    assert_eq!(rows_in_keyed(&client).await, 199_999);
    let payloads = |id: i64| {
        let client = &client;
        async move {
            client
                .query(&lookup("keyed", id), &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(1))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(payloads(150_000).await, ["changed"]);
    assert!(payloads(170_000).await.is_empty());
    // A model over the keyed one reads the merge's changes (from a file of two row groups).
    assert_buckets_match(&client).await;

    // A second merge over the same file keeps the rows the first one marked deleted (the new
    // vector is the union) and replaces a row of the first merge's file.
    client
        .batch_execute(
            "UPDATE events SET payload = 'again' WHERE id IN (150000, 160001);
             REFRESH MODEL keyed;",
        )
        .await
        .unwrap();
    let (strategy, reason, rows) = last_run(&client).await;
    assert_eq!((strategy.as_str(), rows), ("incremental_merge", 2));
    assert!(
        reason.ends_with("2 rows marked deleted in 2 files)"),
        "{reason}"
    );
    assert_eq!(payloads(150_000).await, ["again"]);
    assert_eq!(payloads(160_001).await, ["again"]);
    assert_eq!(payloads(160_000).await, ["changed"]);
    assert!(payloads(170_000).await.is_empty());
    assert_buckets_match(&client).await;
    assert_eq!(rows_in_keyed(&client).await, 199_999);

    // Both first files now have deletion vectors, and a lookup still reads one page of each
    // file whose key range holds the id (the big second file and the two merges' files; the
    // scan of delta-rs 1.1 turned pruning off for tables with deletion vectors), and does not
    // return a deleted row.
    let (pages, rows) = after_page_pruning(&client, &lookup("keyed", 160_000)).await;
    assert!(
        pages <= 3 && rows <= 2100 + 4,
        "lookup over files with deletion vectors kept {pages} pages, {rows} rows"
    );
    assert_eq!(payloads(160_000).await, ["changed"]);
}

/// Refreshes `buckets` (over `keyed`) and checks it against its query.
async fn assert_buckets_match(client: &tokio_postgres::Client) {
    client.batch_execute("REFRESH MODEL buckets").await.unwrap();
    let differences: i64 = client
        .query_one(
            "SELECT count(*) FROM ((SELECT * FROM buckets EXCEPT SELECT id % 10, count(*), \
             max(payload) FROM keyed GROUP BY id % 10) UNION ALL (SELECT id % 10, count(*), \
             max(payload) FROM keyed GROUP BY id % 10 EXCEPT SELECT * FROM buckets))",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(differences, 0, "buckets differs from its query");
}

/// Rows of the keyed model.
async fn rows_in_keyed(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM keyed", &[])
        .await
        .unwrap()
        .get(0)
}
