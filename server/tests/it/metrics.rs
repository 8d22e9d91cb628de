//! `GET /metrics`: Prometheus text with refresh, query, connection and commit metrics whose
//! values match what the server did; and a real Prometheus scraping it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{TestServer, repo_root};

/// One HTTP/1.0 GET (the server closes the connection after the response): status line and
/// body.
fn http_get(port: u16, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect http");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).expect("read http response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP body in {response:?}"));
    (head.to_string(), body.to_string())
}

/// The samples of a scrape, keyed by series (`name{labels}` exactly as exposed).
struct Scrape {
    text: String,
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    fn of(server: &TestServer) -> Self {
        let (head, text) = http_get(server.http_port, "/metrics");
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').expect("sample line");
                (
                    series.to_string(),
                    value.parse::<f64>().expect("sample value"),
                )
            })
            .collect();
        Self { text, samples }
    }

    fn value(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no series {series} in\n{}", self.text))
    }

    fn value_or_zero(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }
}

#[tokio::test]
async fn metrics_count_queries_refreshes_connections_and_commits() {
    let (server, _dir) = TestServer::start(&[]);
    let client = server.connect().await;

    // Statements: counted once each, with their status; the histogram counts the same.
    let before = Scrape::of(&server);
    for _ in 0..3 {
        client.query("SELECT 1", &[]).await.unwrap();
    }
    client.batch_execute("SELECT 2; SELECT 3").await.unwrap();
    client
        .query("SELECT * FROM no_such_table", &[])
        .await
        .expect_err("undefined table");
    client
        .batch_execute("SELECT 1/0")
        .await
        .expect_err("division by zero");
    let after = Scrape::of(&server);
    let delta = |series: &str| after.value(series) - before.value_or_zero(series);
    assert_eq!(delta("tributary_queries_total{status=\"ok\"}"), 5.0);
    // Bytes sent: four one-row results; then a 10,000-byte value and a COPY of 1,000 rows.
    let sent = delta("tributary_pgwire_sent_bytes_total");
    assert!((4.0 * 15.0..200.0).contains(&sent), "{sent}");
    client
        .query("SELECT repeat('x', 10000)", &[])
        .await
        .unwrap();
    let copied = {
        let out = client
            .copy_out("COPY (SELECT * FROM generate_series(1, 1000)) TO STDOUT")
            .await
            .unwrap();
        futures::pin_mut!(out);
        let mut bytes = 0;
        while let Some(chunk) = futures::StreamExt::next(&mut out).await {
            bytes += chunk.unwrap().len();
        }
        bytes
    };
    let grown = Scrape::of(&server).value("tributary_pgwire_sent_bytes_total")
        - after.value("tributary_pgwire_sent_bytes_total");
    // Each CopyData message adds 5 header bytes to its row.
    let expected = (10000 + 11 + copied + 1000 * 5) as f64;
    assert!(
        (expected..expected + 100.0).contains(&grown),
        "{grown} vs {expected}"
    );
    assert_eq!(delta("tributary_queries_total{status=\"error\"}"), 2.0);
    for status in ["ok", "error"] {
        assert_eq!(
            after.value(&format!("tributary_queries_total{{status=\"{status}\"}}")),
            after.value(&format!(
                "tributary_query_duration_seconds_count{{status=\"{status}\"}}"
            )),
        );
    }

    // Refreshes: a full first refresh, an incremental one, and a failing model.
    client
        .batch_execute(
            "CREATE TABLE t (id BIGINT NOT NULL, v BIGINT);
             INSERT INTO t VALUES (1, 10), (2, 20), (0, 0);
             CREATE MODEL m WITH (max_staleness = '1 hour') AS SELECT id, v FROM t;
             CREATE MODEL bad AS SELECT 100 / id AS q FROM t WITH NO DATA;
             INSERT INTO t VALUES (3, 30);
             REFRESH MODEL m;",
        )
        .await
        .unwrap();
    client
        .batch_execute("REFRESH MODEL bad")
        .await
        .expect_err("divide by zero");
    let scrape = Scrape::of(&server);
    assert_eq!(
        scrape.value(
            "tributary_refresh_runs_total{model=\"public.m\",status=\"succeeded\",strategy=\"full\"}"
        ),
        1.0
    );
    assert_eq!(
        scrape.value(
            "tributary_refresh_runs_total{model=\"public.bad\",status=\"failed\",strategy=\"none\"}"
        ),
        1.0
    );
    // Every run in tributary.runs is counted under its model, status and strategy, with its
    // rows; the duration histogram has one observation per run.
    let runs = client
        .query(
            "SELECT model, status, coalesce(strategy, 'none'), coalesce(rows_read, 0), \
             coalesce(rows_written, 0) FROM tributary.runs",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(runs.len(), 3, "two runs of m, one of bad");
    let mut expected_runs: BTreeMap<String, f64> = BTreeMap::new();
    let mut expected_rows: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for row in &runs {
        let (model, status, strategy): (String, String, String) =
            (row.get(0), row.get(1), row.get(2));
        let labels = format!("model=\"{model}\",status=\"{status}\",strategy=\"{strategy}\"");
        *expected_runs.entry(labels).or_default() += 1.0;
        let rows = expected_rows.entry(model).or_default();
        rows.0 += row.get::<_, i64>(3) as f64;
        rows.1 += row.get::<_, i64>(4) as f64;
    }
    assert!(
        expected_runs
            .keys()
            .any(|l| l.contains("strategy=\"incremental_append\"")),
        "{expected_runs:?}"
    );
    for (labels, count) in &expected_runs {
        assert_eq!(
            scrape.value(&format!("tributary_refresh_runs_total{{{labels}}}")),
            *count
        );
        assert_eq!(
            scrape.value(&format!(
                "tributary_refresh_duration_seconds_count{{{labels}}}"
            )),
            *count
        );
        assert!(
            scrape.value(&format!(
                "tributary_refresh_duration_seconds_sum{{{labels}}}"
            )) > 0.0
        );
    }
    assert_eq!(expected_rows["public.m"], (4.0, 4.0));
    for (model, (read, written)) in &expected_rows {
        assert_eq!(
            scrape.value(&format!(
                "tributary_refresh_rows_read_total{{model=\"{model}\"}}"
            )),
            *read
        );
        assert_eq!(
            scrape.value(&format!(
                "tributary_refresh_rows_written_total{{model=\"{model}\"}}"
            )),
            *written
        );
    }

    // Staleness: m refreshed a moment ago; bad never succeeded, so it has no series.
    let stale = scrape.value("tributary_model_staleness_seconds{model=\"public.m\"}");
    assert!((0.0..120.0).contains(&stale), "{stale}");
    assert!(
        !scrape
            .text
            .contains("tributary_model_staleness_seconds{model=\"public.bad\"}")
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later = Scrape::of(&server).value("tributary_model_staleness_seconds{model=\"public.m\"}");
    assert!(later >= stale + 1.0, "{stale} then {later}");
    assert_eq!(
        scrape.value("tributary_model_staleness_objective_seconds{model=\"public.m\"}"),
        3600.0
    );
    // A file source: staleness since its newest file changed, and its objective.
    client
        .batch_execute(
            "CREATE SOURCE landing FROM FILES 'sqllogictests/data/orders.csv' FORMAT CSV \
             WITH (max_staleness = '1 day')",
        )
        .await
        .unwrap();
    let with_source = Scrape::of(&server);
    let modified =
        std::fs::metadata(crate::support::repo_root().join("sqllogictests/data/orders.csv"))
            .unwrap()
            .modified()
            .unwrap();
    let age = modified.elapsed().unwrap_or_default().as_secs_f64();
    let source_stale =
        with_source.value("tributary_source_staleness_seconds{source=\"public.landing\"}");
    assert!(
        (age - 5.0..age + 5.0).contains(&source_stale),
        "{source_stale} vs {age}"
    );
    assert_eq!(
        with_source
            .value("tributary_source_staleness_objective_seconds{source=\"public.landing\"}"),
        86400.0
    );
    // No scheduler pass is waiting.
    assert_eq!(with_source.value("tributary_scheduler_queue_depth"), 0.0);

    // Commits: table creation, inserts and refreshes each wrote Delta log entries and
    // published them in the catalog.
    assert!(scrape.value("tributary_delta_commit_seconds_count") >= 5.0);
    assert!(scrape.value("tributary_catalog_commit_seconds_count") >= 4.0);

    // Connections: open ones are counted, closed ones leave.
    assert_eq!(scrape.value("tributary_connections_active"), 1.0);
    let other = server.connect().await;
    other.query("SELECT 1", &[]).await.unwrap();
    assert_eq!(
        Scrape::of(&server).value("tributary_connections_active"),
        2.0
    );
    drop(other);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Scrape::of(&server).value("tributary_connections_active") != 1.0 {
        assert!(Instant::now() < deadline, "closed connection still counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Types, names and labels as documented; no SQL text in any label.
    for (name, kind) in [
        ("tributary_refresh_duration_seconds", "histogram"),
        ("tributary_refresh_runs_total", "counter"),
        ("tributary_refresh_rows_read_total", "counter"),
        ("tributary_refresh_rows_written_total", "counter"),
        ("tributary_model_staleness_seconds", "gauge"),
        ("tributary_queries_total", "counter"),
        ("tributary_query_duration_seconds", "histogram"),
        ("tributary_connections_active", "gauge"),
        ("tributary_delta_commit_seconds", "histogram"),
        ("tributary_catalog_commit_seconds", "histogram"),
        ("tributary_pgwire_sent_bytes_total", "counter"),
        ("tributary_scheduler_queue_depth", "gauge"),
        ("tributary_model_staleness_objective_seconds", "gauge"),
    ] {
        assert!(
            scrape.text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} {kind} missing in\n{}",
            scrape.text
        );
    }
    for series in scrape.samples.keys() {
        assert!(series.starts_with("tributary_"), "{series}");
        assert!(!series.contains("SELECT"), "{series}");
        if let Some((_, labels)) = series.split_once('{') {
            for pair in labels.trim_end_matches('}').split(',') {
                let name = pair.split('=').next().unwrap();
                assert!(
                    ["model", "source", "status", "strategy", "le"].contains(&name),
                    "label {name} in {series}"
                );
            }
        }
    }
}

/// A Prometheus process, killed on drop.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real Prometheus (Debian package `prometheus`, installed by `.ci/run`) loads the checked-in
/// `prometheus/prometheus.yml` and `alerts.yml`, scrapes a test server, and answers a query
/// for a refresh counter.
#[tokio::test]
async fn prometheus_scrapes_the_server() {
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(!in_ci, "prometheus is not installed (.ci/run installs it)");
        eprintln!("skipped: no prometheus binary (apt-get install prometheus)");
        return;
    }
    let (server, dir) = TestServer::start(&[]);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE t (id BIGINT NOT NULL); INSERT INTO t VALUES (1), (2);
             CREATE MODEL m AS SELECT id FROM t;",
        )
        .await
        .unwrap();

    // The checked-in config, aimed at this server and scraping every second.
    let config_dir = repo_root().join("prometheus");
    let config = std::fs::read_to_string(config_dir.join("prometheus.yml"))
        .unwrap()
        .replace("127.0.0.1:6544", &format!("127.0.0.1:{}", server.http_port))
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace(
            "- alerts.yml",
            &format!("- {}", config_dir.join("alerts.yml").display()),
        );
    let config_file = dir.path().join("prometheus.yml");
    std::fs::write(&config_file, config).unwrap();
    let port = free_port();
    let _prometheus = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("prometheus-data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start prometheus"),
    );

    let query = "/api/v1/query?query=tributary_refresh_runs_total";
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        let answer = std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| http_get(port, query));
        if let Some((head, body)) = answer
            && head.contains(" 200")
            && body.contains("public.m")
        {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus never scraped tributary_refresh_runs_total"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let answer: serde_json::Value = serde_json::from_str(&body).expect("json");
    let results = answer["data"]["result"].as_array().expect("vector result");
    let m = results
        .iter()
        .find(|r| r["metric"]["model"] == "public.m")
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(m["metric"]["status"], "succeeded", "{body}");
    assert_eq!(m["metric"]["strategy"], "full", "{body}");
    assert_eq!(m["metric"]["job"], "tributary", "{body}");
    assert_eq!(m["value"][1], "1", "{body}");

    // The target is up and the alert rules were loaded.
    let (_, up) = http_get(port, "/api/v1/query?query=up");
    let up: serde_json::Value = serde_json::from_str(&up).expect("json");
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
    let (_, rules) = http_get(port, "/api/v1/rules");
    for alert in [
        "TributaryDown",
        "TributaryRefreshFailed",
        "TributaryModelStale",
    ] {
        assert!(rules.contains(alert), "{alert} not loaded: {rules}");
    }
}
