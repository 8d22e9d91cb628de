//! The example financial project: the generator reproduces the committed seeds, and
//! `tributary demo` builds every layer, passes every test and keeps the live inputs flowing,
//! with the bank federated from PostgreSQL and, when none is reachable, read from files.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::support::{TestServer, repo_root};

/// Files under `dir`, relative to it, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn generate_reproduces_the_committed_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["generate", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let generated = files_under(dir.path());
    assert!(generated.len() > 30, "{generated:?}");
    let seeds = repo_root().join("seeds");
    for file in &generated {
        let fresh = std::fs::read(dir.path().join(file)).unwrap();
        let committed = std::fs::read(seeds.join(file))
            .unwrap_or_else(|e| panic!("seeds/{file} is generated but not committed: {e}"));
        assert!(
            fresh == committed,
            "seeds/{file} differs from what `tributary generate` writes: regenerate the seeds"
        );
    }
    // Nothing stale: every committed data file is one the generator writes.
    for file in files_under(&seeds) {
        if !file.ends_with(".sql") {
            assert!(generated.contains(&file), "seeds/{file} is not generated");
        }
    }
}

/// The demo's FX rates API has a fixed port (the project's source names it): one demo at a time.
static ONE_DEMO: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs the demo in a fresh folder holding the project and its seeds (the demo lands card
/// payments in its working directory).
///
/// The folder comes first so it is dropped last: the server must stop before its warehouse is
/// deleted (a refresh running at the end of a test otherwise reads files that are gone).
fn start_demo(bank_postgres: &str) -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    for name in ["models", "seeds"] {
        std::os::unix::fs::symlink(repo_root().join(name), dir.path().join(name)).unwrap();
    }
    let server = TestServer::start_command(
        "demo",
        dir.path().to_path_buf(),
        dir.path().join("warehouse"),
        &["--bank-postgres", bank_postgres, "--tick", "1s"],
    );
    (dir, server)
}

async fn count(client: &Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// Waits until `sql` (a count) exceeds `above`.
async fn wait_for_more(client: &Client, sql: &str, above: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let n = count(client, sql).await;
        if n > above {
            return n;
        }
        assert!(Instant::now() < deadline, "{sql} stayed at {n}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every layer built, every error test passing, and the stream reaching the marts.
async fn check_pipeline(server: &TestServer) {
    let client = server.connect().await;
    for model in [
        "staging.bank_transactions",
        "staging.transactions",
        "intermediate.transactions_usd",
        "intermediate.account_daily_movements",
        "intermediate.account_daily_balances",
        "marts.dim_date",
        "marts.dim_account",
        "marts.fct_transactions",
        "marts.kpi_daily",
        "marts.kpi_monthly",
        "marts.daily_spend",
        "marts.spend_deviations",
        "reports.large_transactions",
        "reports.monthly_balances",
    ] {
        let n = count(&client, &format!("SELECT count(*) FROM {model}")).await;
        assert!(n > 0, "{model} is empty");
    }
    // Four business units, 90 days each.
    assert_eq!(
        count(&client, "SELECT count(*) FROM marts.cash_flow_forecast").await,
        360
    );
    let units = count(
        &client,
        "SELECT count(DISTINCT business_unit) FROM marts.kpi_daily",
    )
    .await;
    assert_eq!(units, 4);
    // The injected spikes are found.
    assert!(count(&client, "SELECT count(*) FROM marts.spend_alerts").await > 0);
    // Messiness handled: duplicates collapsed, unreadable rows left out and reported.
    assert_eq!(
        count(
            &client,
            "SELECT count(*) - count(DISTINCT transaction_id) FROM staging.transactions"
        )
        .await,
        0
    );
    client.simple_query("RUN TESTS").await.unwrap();
    let failing: Vec<String> = client
        .query(
            "SELECT name || ': ' || coalesce(last_status, 'never ran') FROM tributary.tests \
             WHERE severity = 'error' AND (last_status IS NULL OR last_status <> 'pass')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(failing.is_empty(), "failing tests: {failing:?}");

    // The stream flows: new card payments reach the fact table through `on change`.
    let card = "SELECT count(*) FROM marts.fct_transactions WHERE source = 'card'";
    let before = count(&client, card).await;
    wait_for_more(&client, card, before).await;
}

/// The dashboard time range the panel queries are expanded for (it covers the seeds).
const FROM: &str = "2026-06-01T00:00:00Z";
const TO: &str = "2026-12-31T00:00:00Z";

/// The arguments of the macro call starting at `text` (just after its opening parenthesis),
/// split at top-level commas, and the length up to and including the closing parenthesis.
fn macro_args(text: &str) -> (Vec<String>, usize) {
    let (mut depth, mut args, mut current) = (0, Vec::new(), String::new());
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => {
                args.push(current.trim().to_string());
                return (args, i + 1);
            }
            ')' => depth -= 1,
            ',' if depth == 0 => {
                args.push(std::mem::take(&mut current).trim().to_string());
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    panic!("unclosed macro call in {text:?}")
}

fn interval_seconds(text: &str) -> u64 {
    let text = text.trim_matches('\'');
    let (n, unit) = text.split_at(text.len() - 1);
    let n: u64 = n.parse().unwrap();
    n * match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        other => panic!("interval unit {other}"),
    }
}

/// A panel query as Grafana's PostgreSQL datasource sends it: macros expanded as
/// pkg/tsdb/grafana-postgresql-datasource/macros.go does (see ../shared/compat/clients/
/// grafana.sql) and multi-value variables as quoted lists.
fn expand_grafana(sql: &str, variables: &[(&str, &str)]) -> String {
    let mut out = String::new();
    let mut rest = sql;
    while let Some(at) = rest.find("$__") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 3..];
        let name_len = after
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(after.len());
        let name = &after[..name_len];
        let (args, used) = macro_args(&after[name_len + 1..]);
        out.push_str(&match name {
            "timeFilter" => format!("{} BETWEEN '{FROM}' AND '{TO}'", args[0]),
            "time" => format!("{} AS \"time\"", args[0]),
            "timeGroupAlias" => {
                let s = interval_seconds(&args[1]);
                format!("floor(extract(epoch from {})/{s})*{s} AS \"time\"", args[0])
            }
            "timeFrom" => format!("'{FROM}'"),
            "timeTo" => format!("'{TO}'"),
            other => panic!("macro $__{other} is not expanded by this test"),
        });
        rest = &after[name_len + 1 + used..];
    }
    out.push_str(rest);
    for (name, value) in variables {
        out = out.replace(&format!("${{{name}}}"), value);
        out = out.replace(&format!("${name}"), value);
    }
    out
}

/// A variable's values as Grafana substitutes a multi-value variable: a quoted list.
async fn quoted_values(client: &Client, sql: &str) -> String {
    let rows = client.query(sql, &[]).await.unwrap();
    rows.iter()
        .map(|r| format!("'{}'", r.get::<_, String>(0)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Every Tributary panel and variable query of the shipped dashboards, as Grafana sends it
/// (extended protocol, like Grafana's pgx driver), runs and returns its columns.
async fn check_dashboards(client: &Client) {
    let mut checked = 0;
    for entry in std::fs::read_dir(repo_root().join("grafana/dashboards")).unwrap() {
        let path = entry.unwrap().path();
        let board: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut variables: Vec<(String, String)> = Vec::new();
        for variable in board["templating"]["list"].as_array().unwrap() {
            let sql = variable["query"].as_str().unwrap();
            let values = quoted_values(client, sql).await;
            assert!(
                !values.is_empty(),
                "variable {} has no values",
                variable["name"]
            );
            variables.push((variable["name"].as_str().unwrap().to_string(), values));
        }
        let vars: Vec<(&str, &str)> = variables
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        for panel in board["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let Some(raw) = target["rawSql"].as_str() else {
                    continue; // Prometheus
                };
                let sql = expand_grafana(raw, &vars);
                let statement = client.prepare(&sql).await.unwrap_or_else(|e| {
                    panic!("{}: panel {}: {e}\n{sql}", path.display(), panel["title"])
                });
                assert!(!statement.columns().is_empty(), "{sql}");
                client.query(&statement, &[]).await.unwrap_or_else(|e| {
                    panic!("{}: panel {}: {e}\n{sql}", path.display(), panel["title"])
                });
                checked += 1;
            }
        }
    }
    assert!(checked >= 12, "only {checked} panel queries");
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_runs_offline_with_the_bank_read_from_files() {
    let _one = ONE_DEMO.lock().await;
    // Nothing listens on port 1: the demo notes it and reads the bank from seeds/bank/.
    let (_dir, server) = start_demo("postgresql://postgres@127.0.0.1:1/postgres");
    assert!(
        server
            .banner
            .iter()
            .any(|l| l.contains("PostgreSQL is not reachable")),
        "{:?}",
        server.banner
    );
    check_pipeline(&server).await;
    let client = server.connect().await;
    check_dashboards(&client).await;
    let kind: String = client
        .query_one(
            "SELECT kind FROM tributary.sources WHERE name = 'bank_transactions'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kind, "files");
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_federates_the_bank_from_postgres() {
    let _one = ONE_DEMO.lock().await;
    let (_dir, server) = start_demo("postgresql://postgres@127.0.0.1:5432/postgres");
    assert!(
        server
            .banner
            .iter()
            .any(|l| l.contains("bank database loaded")),
        "{:?}",
        server.banner
    );
    check_pipeline(&server).await;
    // Bank bookings made in PostgreSQL reach the marts through the cursor.
    let client = server.connect().await;
    let live =
        "SELECT count(*) FROM marts.fct_transactions WHERE source = 'bank' AND status = 'booked'";
    let before = count(&client, live).await;
    wait_for_more(&client, live, before).await;
}
