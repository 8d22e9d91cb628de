//! `tributary apply`: idempotent project application to a running server.

use std::process::Command;

use crate::support::{TestServer, repo_root};

fn apply(server: &TestServer, path: &std::path::Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .arg("apply")
        .arg(path)
        .arg("--url")
        .arg(format!(
            "postgresql://tributary@127.0.0.1:{}/tributary",
            server.port
        ))
        .current_dir(repo_root())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A small project in the shape of the example: schemas, a source, a table with rows, models
/// and tests, over the sqllogictests' data files.
const PROJECT: &[(&str, &str)] = &[
    (
        "00_schemas.sql",
        "CREATE SCHEMA IF NOT EXISTS raw;\nCREATE SCHEMA IF NOT EXISTS marts;\n",
    ),
    (
        "10_sources.sql",
        "CREATE SOURCE raw.orders FROM FILES 'sqllogictests/data/orders.csv' FORMAT CSV;\n\
         CREATE TABLE raw.refunds (order_id BIGINT NOT NULL, amount DOUBLE PRECISION);\n\
         INSERT INTO raw.refunds VALUES (1, 0.5), (2, 0.25);\n",
    ),
    (
        "20_marts.sql",
        "CREATE MODEL marts.revenue AS\n\
         SELECT o.customer, sum(o.amount) AS amount FROM raw.orders o GROUP BY o.customer;\n\
         CREATE MODEL marts.refunded AS\n\
         SELECT o.customer, sum(r.amount) AS refunded\n\
         FROM raw.orders o JOIN raw.refunds r ON r.order_id = o.id GROUP BY o.customer;\n",
    ),
    (
        "30_tests.sql",
        "CREATE TEST revenue_one_row_per_customer ON marts.revenue EXPECT UNIQUE (customer);\n\
         CREATE TEST known_customers ON marts.revenue EXPECT customer IN ('acme', 'globex', 'initech');\n",
    ),
];

#[tokio::test]
async fn apply_is_idempotent_and_replaces_changed_models() {
    let (server, dir) = TestServer::start(&[]);
    let project = dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    for (name, text) in PROJECT {
        std::fs::write(project.join(name), text).unwrap();
    }
    let (ok, text) = apply(&server, &project);
    assert!(ok, "{text}");
    assert!(text.contains("created   marts.revenue"), "{text}");
    assert!(
        text.contains("created   test revenue_one_row_per_customer"),
        "{text}"
    );

    let (ok, text) = apply(&server, &project);
    assert!(ok, "{text}");
    assert!(text.contains("0 created, 0 replaced"), "{text}");
    assert!(text.contains("unchanged marts.revenue"), "{text}");
    assert!(text.contains("unchanged test known_customers"), "{text}");
    // The table's rows were written once, by the apply that created it.
    let client = server.connect().await;
    let refunds: i64 = client
        .query_one("SELECT count(*) FROM raw.refunds", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(refunds, 2);

    // A changed test is replaced.
    let tests = project.join("30_tests.sql");
    let changed = std::fs::read_to_string(&tests)
        .unwrap()
        .replace("'initech')", "'initech', 'hooli')");
    std::fs::write(&tests, changed).unwrap();
    let (ok, text) = apply(&server, &project);
    assert!(ok, "{text}");
    assert!(text.contains("replaced  test known_customers"), "{text}");

    // Change one model: it is replaced (and rebuilt), the rest is left alone.
    let marts = project.join("20_marts.sql");
    let changed = std::fs::read_to_string(&marts).unwrap().replace(
        "sum(o.amount) AS amount FROM",
        "sum(o.amount) AS amount, count(*) AS orders FROM",
    );
    std::fs::write(&marts, changed).unwrap();
    let (ok, text) = apply(&server, &project);
    assert!(ok, "{text}");
    assert!(text.contains("replaced  marts.revenue"), "{text}");
    assert!(text.contains("unchanged marts.refunded"), "{text}");
    let n: i64 = client
        .query_one("SELECT sum(orders) FROM marts.revenue", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);

    // A broken statement fails the command and names the file.
    std::fs::write(
        project.join("40_broken.sql"),
        "CREATE MODEL marts.broken AS SELECT * FROM raw.nothing;",
    )
    .unwrap();
    let (ok, text) = apply(&server, &project);
    assert!(!ok, "{text}");
    assert!(text.contains("40_broken.sql"), "{text}");
    assert!(text.contains("42P01"), "{text}");
}
