//! Column lineage across restarts: a catalog written before lineage existed (no edges, never
//! computed) gets every model's and view's edges at start-up, the same edges CREATE records.

use tokio_postgres::Client;

use crate::support::TestServer;

async fn column_edges(client: &Client) -> Vec<String> {
    client
        .query(
            "SELECT upstream || '.' || upstream_column || ' -> ' || downstream || '.' || \
             coalesce(downstream_column, '*') || ' ' || edge FROM tributary.lineage \
             WHERE edge <> 'table' AND downstream LIKE 'up.%' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn lineage_is_filled_at_start_for_a_catalog_from_before_it() {
    let (mut server, _dir) = TestServer::start(&[]);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE SCHEMA up;
             CREATE SOURCE up.orders FROM FILES 'sqllogictests/data/orders.csv' FORMAT CSV;
             CREATE VIEW up.v AS SELECT id, customer FROM up.orders WHERE amount > 1;
             CREATE MODEL up.m AS SELECT customer, count(id) AS n FROM up.v GROUP BY customer;",
        )
        .await
        .unwrap();
    let recorded = column_edges(&client).await;
    assert_eq!(
        recorded,
        [
            "up.orders.amount -> up.v.* filter",
            "up.orders.customer -> up.v.customer direct",
            "up.orders.id -> up.v.id direct",
            "up.v.customer -> up.m.* group",
            "up.v.customer -> up.m.customer direct",
            "up.v.id -> up.m.n direct",
        ]
    );
    drop(client);
    server.stop();

    // What migrating a catalog from before lineage leaves: no edges, none computed.
    let db = rusqlite::Connection::open(server.warehouse.join("catalog.db")).unwrap();
    db.execute_batch("DELETE FROM column_lineage; UPDATE objects SET lineage_at = NULL")
        .unwrap();
    drop(db);

    server.restart();
    let client = server.connect().await;
    assert_eq!(column_edges(&client).await, recorded);
}
