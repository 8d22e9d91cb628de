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

#[tokio::test]
async fn apply_is_idempotent_and_replaces_changed_models() {
    let (server, dir) = TestServer::start(&[]);
    let project = dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    for entry in std::fs::read_dir(repo_root().join("models")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), project.join(entry.file_name())).unwrap();
    }
    let (ok, text) = apply(&server, &project);
    assert!(ok, "{text}");
    assert!(text.contains("created   marts.daily_cash_flow"), "{text}");

    assert!(
        text.contains("created   test stg_transaction_id_unique"),
        "{text}"
    );

    let (ok, text) = apply(&server, &project);
    assert!(ok, "{text}");
    assert!(text.contains("0 created, 0 replaced"), "{text}");
    assert!(text.contains("unchanged marts.daily_cash_flow"), "{text}");
    assert!(text.contains("unchanged test stg_currency_known"), "{text}");

    // A changed test is replaced.
    let tests = project.join("40_tests.sql");
    let changed = std::fs::read_to_string(&tests)
        .unwrap()
        .replace("('EUR', 'GBP', 'USD')", "('EUR', 'GBP', 'USD', 'CHF')");
    std::fs::write(&tests, changed).unwrap();
    let (ok, text) = apply(&server, &project);
    assert!(ok, "{text}");
    assert!(text.contains("replaced  test stg_currency_known"), "{text}");

    // Change one model: it is replaced (and rebuilt), the rest is left alone.
    let marts = project.join("30_marts.sql");
    let changed = std::fs::read_to_string(&marts).unwrap().replace(
        "max(t.booked_on) AS last_booked_on",
        "max(t.booked_on) AS last_booked_on, count(*) AS entries",
    );
    std::fs::write(&marts, changed).unwrap();
    let (ok, text) = apply(&server, &project);
    assert!(ok, "{text}");
    assert!(text.contains("replaced  marts.account_balances"), "{text}");
    let client = server.connect().await;
    let n: i64 = client
        .query_one("SELECT sum(entries) FROM marts.account_balances", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 240);

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
