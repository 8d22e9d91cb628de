//! HTTP JSON sources against a local API (axum on 127.0.0.1:0) whose answer each test sets:
//! snapshots with `_loaded_at`, unchanged bodies appending nothing, and the failures a real API
//! has (slow, 500, garbage, a field that changed type) recorded on the source while the last
//! good snapshot stays served; incremental models over a source; the scheduler's polls.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use tokio_postgres::Client;

use crate::support::{TestServer, code};

/// What the API answers next, and what it saw.
#[derive(Default)]
struct Api {
    status: u16,
    body: String,
    delay: Duration,
    /// When each request arrived, and its Authorization header.
    hits: Vec<(Instant, Option<String>)>,
}

type Shared = Arc<Mutex<Api>>;

async fn answer(State(api): State<Shared>, headers: HeaderMap) -> (StatusCode, String) {
    let (status, body, delay) = {
        let mut api = api.lock().unwrap();
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        api.hits.push((Instant::now(), auth));
        (api.status, api.body.clone(), api.delay)
    };
    tokio::time::sleep(delay).await;
    (StatusCode::from_u16(status).unwrap(), body)
}

/// Starts the API; returns its state and the URL of its one endpoint.
async fn start_api(body: &str) -> (Shared, String) {
    let api: Shared = Arc::new(Mutex::new(Api {
        status: 200,
        body: body.to_string(),
        ..Default::default()
    }));
    let app = axum::Router::new()
        .route("/fx", axum::routing::get(answer))
        .with_state(Arc::clone(&api));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/fx?base=USD", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (api, url)
}

fn set(api: &Shared, status: u16, body: &str, delay: Duration) {
    let mut api = api.lock().unwrap();
    api.status = status;
    api.body = body.to_string();
    api.delay = delay;
}

fn hits(api: &Shared) -> usize {
    api.lock().unwrap().hits.len()
}

/// A body with the rates nested two levels down, as many APIs wrap them.
fn rates(pairs: &[(&str, f64)]) -> String {
    let items: Vec<String> = pairs
        .iter()
        .map(|(c, r)| format!(r#"{{"code": "{c}", "rate": {r}, "meta": {{"src": "ecb"}}}}"#))
        .collect();
    format!(
        r#"{{"base": "USD", "data": {{"rates": [{}]}}}}"#,
        items.join(", ")
    )
}

async fn count(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// `(version, last_poll_status, last_error)` of a source in `tributary.sources`.
async fn source_state(client: &Client, name: &str) -> (Option<i64>, String, Option<String>) {
    let row = client
        .query_one(
            "SELECT version, last_poll_status, last_error FROM tributary.sources \
             WHERE schema_name || '.' || name = $1",
            &[&name],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

/// The rows of the source, ordered, as text.
async fn rows(client: &Client, sql: &str) -> Vec<String> {
    client
        .simple_query(sql)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            ),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn snapshots_failures_and_the_last_good_data() {
    let (api, url) = start_api(&rates(&[("EUR", 0.9), ("GBP", 0.8)])).await;
    let (server, _dir) = TestServer::start(&[]);
    let client = server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE SCHEMA raw;
             CREATE SOURCE raw.fx FROM HTTP '{url}' FORMAT JSON
                 WITH (records = '$.data.rates[*]', timeout = '1 second', retries = 2,
                       retry_delay = '200ms');"
        ))
        .await
        .unwrap();
    // Columns inferred from the first poll (nested values as JSON text), then _loaded_at.
    let columns = rows(
        &client,
        "SELECT column_name, data_type FROM tributary.columns \
         WHERE object_name = 'fx' ORDER BY ordinal_position",
    )
    .await;
    assert_eq!(
        columns,
        [
            "code|text",
            "rate|double precision",
            "meta|text",
            "_loaded_at|timestamp with time zone"
        ]
    );
    assert_eq!(
        rows(&client, "SELECT code, rate, meta FROM raw.fx ORDER BY code").await,
        [r#"EUR|0.9|{"src":"ecb"}"#, r#"GBP|0.8|{"src":"ecb"}"#]
    );
    let (version, status, error) = source_state(&client, "raw.fx").await;
    assert_eq!(
        (version, status.as_str(), error),
        (Some(1), "succeeded", None)
    );

    // The same body again appends nothing (and makes no Delta version).
    client.batch_execute("REFRESH SOURCE raw.fx").await.unwrap();
    assert_eq!(count(&client, "SELECT count(*) FROM raw.fx").await, 2);
    assert_eq!(source_state(&client, "raw.fx").await.0, Some(1));

    // A new body is a new snapshot with its own _loaded_at.
    set(
        &api,
        200,
        &rates(&[("EUR", 0.91), ("GBP", 0.8), ("JPY", 150.0)]),
        Duration::ZERO,
    );
    client.batch_execute("REFRESH SOURCE raw.fx").await.unwrap();
    assert_eq!(count(&client, "SELECT count(*) FROM raw.fx").await, 5);
    assert_eq!(
        count(&client, "SELECT count(DISTINCT _loaded_at) FROM raw.fx").await,
        2
    );
    assert_eq!(source_state(&client, "raw.fx").await.0, Some(2));
    let good = rows(
        &client,
        "SELECT code, rate, _loaded_at FROM raw.fx ORDER BY 3, 1",
    )
    .await;

    // Each failure: the statement fails with its SQLSTATE and a message naming the source and
    // URL, the error is recorded on the source, and the last good data is still served.
    let cases: Vec<(&str, u16, String, Duration, &str, &str)> = vec![
        (
            "slow",
            200,
            rates(&[("EUR", 1.0)]),
            Duration::from_secs(3),
            "08001",
            "timed out after 1s",
        ),
        (
            "500",
            500,
            "oops".into(),
            Duration::ZERO,
            "08001",
            "500 Internal Server Error",
        ),
        (
            "garbage",
            200,
            "<html>not json</html>".into(),
            Duration::ZERO,
            "22P02",
            "the response is not json",
        ),
        (
            "type drift",
            200,
            r#"{"data": {"rates": [{"code": "EUR", "rate": "high", "meta": null}]}}"#.into(),
            Duration::ZERO,
            "42804",
            "schema drift: field \"rate\" of record 1 is a string, but the column is double precision",
        ),
        (
            "missing column",
            200,
            r#"{"data": {"rates": [{"code": "EUR", "meta": null}]}}"#.into(),
            Duration::ZERO,
            "42804",
            "schema drift: column \"rate\" is missing from every record",
        ),
        (
            "records path",
            200,
            r#"{"data": {"items": []}}"#.into(),
            Duration::ZERO,
            "22P02",
            "records path $.data.rates[*]: $.data has no key \"rates\"",
        ),
    ];
    for (case, status, body, delay, sqlstate, expected) in cases {
        set(&api, status, &body, delay);
        let before = hits(&api);
        let started = Instant::now();
        let e = client
            .batch_execute("REFRESH SOURCE raw.fx")
            .await
            .expect_err(case);
        let elapsed = started.elapsed();
        let message = e.as_db_error().unwrap().message().to_string();
        assert_eq!(code(&e), sqlstate, "{case}: {message}");
        assert!(message.contains(expected), "{case}: {message}");
        assert!(
            message.starts_with(&format!("http source \"raw.fx\" ({url})")),
            "{case}: {message}"
        );
        assert_eq!(
            rows(
                &client,
                "SELECT code, rate, _loaded_at FROM raw.fx ORDER BY 3, 1"
            )
            .await,
            good,
            "{case}: the last good data stays served"
        );
        let (version, poll_status, error) = source_state(&client, "raw.fx").await;
        assert_eq!(
            (version, poll_status.as_str()),
            (Some(2), "failed"),
            "{case}"
        );
        assert_eq!(error.as_deref(), Some(message.as_str()), "{case}");
        let attempts = hits(&api) - before;
        match case {
            // Retryable failures: 1 + retries attempts, waiting 200 ms then 400 ms.
            "slow" | "500" => {
                assert_eq!(attempts, 3, "{case}");
                assert!(message.contains("(after 3 attempts)"), "{message}");
                let api = api.lock().unwrap();
                let times: Vec<Instant> = api.hits[before..].iter().map(|h| h.0).collect();
                let first_gap = times[1] - times[0];
                let second_gap = times[2] - times[1];
                if case == "500" {
                    assert!(first_gap >= Duration::from_millis(190), "{first_gap:?}");
                    assert!(second_gap >= Duration::from_millis(390), "{second_gap:?}");
                    assert!(second_gap > first_gap, "{first_gap:?} then {second_gap:?}");
                } else {
                    // Each attempt waits out the 1 s timeout, then backs off. The gaps are
                    // seen by the server, so one request's travel time can shorten them a
                    // little: allow 50 ms.
                    assert!(first_gap >= Duration::from_millis(1150), "{first_gap:?}");
                    assert!(second_gap >= Duration::from_millis(1350), "{second_gap:?}");
                    assert!(second_gap > first_gap, "{first_gap:?} then {second_gap:?}");
                    assert!(elapsed >= Duration::from_secs(3), "{elapsed:?}");
                }
            }
            // A body that arrived is not fetched again.
            _ => assert_eq!(attempts, 1, "{case}"),
        }
    }
    // The failures are runs of the source, with their errors.
    let failed = count(
        &client,
        "SELECT count(*) FROM tributary.runs WHERE model = 'raw.fx' AND status = 'failed' \
         AND error LIKE 'http source \"raw.fx\"%'",
    )
    .await;
    assert_eq!(failed, 6);

    // Once the API recovers, polling resumes where it was.
    set(&api, 200, &rates(&[("EUR", 0.92)]), Duration::ZERO);
    client.batch_execute("REFRESH SOURCE raw.fx").await.unwrap();
    assert_eq!(count(&client, "SELECT count(*) FROM raw.fx").await, 6);
    let (version, status, error) = source_state(&client, "raw.fx").await;
    assert_eq!(
        (version, status.as_str(), error),
        (Some(3), "succeeded", None)
    );
}

#[tokio::test]
async fn declared_columns_and_create_errors() {
    let (api, url) =
        start_api(r#"[{"id": 1, "day": "2026-11-30", "amount": 10.5, "extra": true}]"#).await;
    let (server, _dir) = TestServer::start(&[]);
    let client = server.connect().await;
    client.batch_execute("CREATE SCHEMA raw").await.unwrap();
    // Declared columns: types come from the declaration; fields the API adds are ignored.
    client
        .batch_execute(&format!(
            "CREATE SOURCE raw.tx (id BIGINT NOT NULL, day DATE, amount NUMERIC(10,2))
                 FROM HTTP '{url}' FORMAT JSON WITH (records = '$[*]')"
        ))
        .await
        .unwrap();
    assert_eq!(
        rows(&client, "SELECT id, day, amount FROM raw.tx").await,
        ["1|2026-11-30|10.50"]
    );
    // A null in a NOT NULL column is refused.
    set(
        &api,
        200,
        r#"[{"id": null, "day": "2026-12-01", "amount": 1}]"#,
        Duration::ZERO,
    );
    let e = client
        .batch_execute("REFRESH SOURCE raw.tx")
        .await
        .unwrap_err();
    assert!(
        e.as_db_error()
            .unwrap()
            .message()
            .contains("column \"id\", which is NOT NULL"),
        "{e:?}"
    );
    assert_eq!(count(&client, "SELECT count(*) FROM raw.tx").await, 1);

    // The first poll is part of CREATE: when it fails, nothing is created.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = client
        .batch_execute(&format!(
            "CREATE SOURCE raw.down FROM HTTP 'http://127.0.0.1:{closed}/x' FORMAT JSON \
             WITH (retries = 0)"
        ))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "08001", "{e:?}");
    let message = e.as_db_error().unwrap().message();
    assert!(
        message.starts_with(&format!(
            "http source \"raw.down\" (http://127.0.0.1:{closed}/x): request failed"
        )),
        "{message}"
    );
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM tributary.sources WHERE name = 'down'"
        )
        .await,
        0
    );
    // Bad options are refused before any request.
    let before = hits(&api);
    for (options, option) in [
        ("records = 'rates'", "records"),
        ("retries = 'many'", "retries"),
        ("poll = 'soon'", "poll"),
        ("colour = 'red'", "colour"),
    ] {
        let e = client
            .batch_execute(&format!(
                "CREATE SOURCE raw.bad FROM HTTP '{url}' FORMAT JSON WITH ({options})"
            ))
            .await
            .unwrap_err();
        assert_eq!(code(&e), "22023", "{options}: {e:?}");
        assert!(
            e.as_db_error()
                .unwrap()
                .message()
                .contains(&format!("\"{option}\"")),
            "{e:?}"
        );
    }
    assert_eq!(hits(&api), before);
    // Only HTTP sources are polled.
    client
        .batch_execute("CREATE TABLE raw.t (a INT)")
        .await
        .unwrap();
    let e = client
        .batch_execute("REFRESH SOURCE raw.t")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42809", "{e:?}");
    // Dropping the source removes it and its snapshots.
    client.batch_execute("DROP SOURCE raw.tx").await.unwrap();
    let e = client
        .batch_execute("SELECT * FROM raw.tx")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42P01", "{e:?}");
}

#[tokio::test]
async fn incremental_models_append_only_the_new_snapshot() {
    let (api, url) = start_api(&rates(&[("EUR", 0.9), ("GBP", 0.8)])).await;
    let (server, _dir) = TestServer::start(&[]);
    let client = server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE SCHEMA raw;
             CREATE SOURCE raw.fx FROM HTTP '{url}' FORMAT JSON WITH (records = '$.data.rates');
             CREATE MODEL raw.fx_hist AS
                 SELECT code, rate * 100 AS pct, _loaded_at FROM raw.fx WHERE rate < 100;"
        ))
        .await
        .unwrap();
    for (i, body) in [
        rates(&[("EUR", 0.91), ("GBP", 0.81), ("JPY", 150.0)]),
        rates(&[("EUR", 0.92)]),
    ]
    .iter()
    .enumerate()
    {
        set(&api, 200, body, Duration::ZERO);
        client.batch_execute("REFRESH SOURCE raw.fx").await.unwrap();
        client
            .batch_execute("REFRESH MODEL raw.fx_hist")
            .await
            .unwrap();
        let row = client
            .query_one(
                "SELECT strategy, rows_written FROM tributary.runs \
                 WHERE model = 'raw.fx_hist' ORDER BY run_id DESC LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        let (strategy, written): (String, i64) = (row.get(0), row.get(1));
        assert_eq!(strategy, "incremental_append", "poll {i}");
        // Only the new snapshot's rows that pass the filter (JPY does not).
        assert_eq!(written, [2, 1][i], "poll {i}");
    }
    // An unchanged body: no new version, so the model has nothing to do.
    client.batch_execute("REFRESH SOURCE raw.fx").await.unwrap();
    client
        .batch_execute("REFRESH MODEL raw.fx_hist")
        .await
        .unwrap();
    let strategy: String = client
        .query_one(
            "SELECT strategy FROM tributary.runs WHERE model = 'raw.fx_hist' \
             ORDER BY run_id DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(strategy, "unchanged");
    // The incremental result equals a full recompute.
    let query = "SELECT code, pct, _loaded_at FROM raw.fx_hist ORDER BY 3, 1";
    let incremental = rows(&client, query).await;
    assert_eq!(incremental.len(), 5);
    client
        .batch_execute("REFRESH MODEL raw.fx_hist FULL")
        .await
        .unwrap();
    assert_eq!(rows(&client, query).await, incremental);
}

#[tokio::test]
async fn the_scheduler_polls_and_on_change_models_follow() {
    let (api, url) = start_api(&rates(&[("EUR", 0.9)])).await;
    let (server, _dir) = TestServer::start(&[]);
    let client = server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE SCHEMA raw;
             CREATE SOURCE raw.fx FROM HTTP '{url}' FORMAT JSON
                 WITH (records = '$.data.rates[*]', poll = '1 second');
             CREATE MODEL raw.latest WITH (schedule = 'on change') AS
                 SELECT count(*) AS snapshots FROM (SELECT DISTINCT _loaded_at FROM raw.fx) s;"
        ))
        .await
        .unwrap();
    // Polls keep coming, but the same body appends nothing and triggers no refresh.
    let deadline = Instant::now() + Duration::from_secs(20);
    while hits(&api) < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(hits(&api) >= 3, "the scheduler polls every second");
    assert_eq!(count(&client, "SELECT snapshots FROM raw.latest").await, 1);
    let scheduled_polls = count(
        &client,
        "SELECT count(*) FROM tributary.runs WHERE model = 'raw.fx' AND trigger = 'schedule' \
         AND strategy = 'unchanged'",
    )
    .await;
    assert!(scheduled_polls >= 1, "{scheduled_polls}");
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM tributary.runs WHERE model = 'raw.latest'"
        )
        .await,
        1
    );
    // New content: the next poll appends it and the 'on change' model refreshes by itself.
    set(&api, 200, &rates(&[("EUR", 0.95)]), Duration::ZERO);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = count(&client, "SELECT snapshots FROM raw.latest").await;
        if n == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the model did not follow the new snapshot"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A poll that fails is recorded on the source; the model keeps its data and is not rerun.
    set(&api, 404, "gone", Duration::ZERO);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, status, error) = source_state(&client, "raw.fx").await;
        if status == "failed" {
            assert!(error.unwrap().contains("the server answered 404 Not Found"));
            break;
        }
        assert!(Instant::now() < deadline, "no failed poll recorded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(count(&client, "SELECT count(*) FROM raw.fx").await, 2);
    assert_eq!(count(&client, "SELECT snapshots FROM raw.latest").await, 2);
}

/// Scheduled polls take refresh permits: with one permit, two slow APIs are never polled at
/// the same time.
#[tokio::test]
async fn scheduled_polls_count_against_the_refresh_bound() {
    let (first, first_url) = start_api(&rates(&[("EUR", 0.9)])).await;
    let (second, second_url) = start_api(&rates(&[("GBP", 0.8)])).await;
    set(
        &first,
        200,
        &rates(&[("EUR", 0.9)]),
        Duration::from_millis(700),
    );
    set(
        &second,
        200,
        &rates(&[("GBP", 0.8)]),
        Duration::from_millis(700),
    );
    let (server, _dir) = TestServer::start(&["--max-concurrent-refreshes", "1"]);
    let client = server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE SCHEMA raw;
             CREATE SOURCE raw.first FROM HTTP '{first_url}' FORMAT JSON
                 WITH (records = '$.data.rates[*]', poll = '1 second');
             CREATE SOURCE raw.second FROM HTTP '{second_url}' FORMAT JSON
                 WITH (records = '$.data.rates[*]', poll = '1 second');"
        ))
        .await
        .unwrap();
    let finished = "SELECT count(*) FROM tributary.runs WHERE model IN ('raw.first', 'raw.second') \
                    AND trigger = 'schedule' AND finished_at IS NOT NULL";
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&client, finished).await < 6 {
        assert!(Instant::now() < deadline, "the scheduler did not poll");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let runs = client
        .query(
            "SELECT model, CAST(date_part('epoch', started_at) AS DOUBLE PRECISION), \
                    CAST(date_part('epoch', finished_at) AS DOUBLE PRECISION) FROM tributary.runs \
             WHERE trigger = 'schedule' AND finished_at IS NOT NULL ORDER BY started_at",
            &[],
        )
        .await
        .unwrap();
    let spans: Vec<(String, f64, f64)> = runs
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    for pair in spans.windows(2) {
        assert!(
            pair[0].2 <= pair[1].1,
            "two polls ran at once under one permit: {pair:?}"
        );
    }
    assert!(hits(&first) >= 2 && hits(&second) >= 2);
}

#[tokio::test]
async fn headers_come_from_a_secret_that_never_shows() {
    let token = "Bearer s3cret-t0ken-9f2";
    let (api, url) = start_api(&rates(&[("EUR", 0.9)])).await;
    let (server, _dir) = TestServer::start(&[]);
    let client = server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE SCHEMA raw;
             CREATE SECRET api_json AS '{{\"Authorization\": \"{token}\"}}';
             CREATE SECRET api_lines AS 'Authorization: {token}
X-Other: 1';
             CREATE SOURCE raw.fx FROM HTTP '{url}' FORMAT JSON
                 WITH (records = '$.data.rates[*]', headers_secret = api_json, retries = 0);
             CREATE SOURCE raw.fx2 FROM HTTP '{url}' FORMAT JSON
                 WITH (records = '$.data.rates[*]', headers_secret = 'api_lines', retries = 0);
             CREATE SOURCE raw.anonymous FROM HTTP '{url}' FORMAT JSON
                 WITH (records = '$.data.rates[*]');"
        ))
        .await
        .unwrap();
    let seen: Vec<Option<String>> = api
        .lock()
        .unwrap()
        .hits
        .iter()
        .map(|h| h.1.clone())
        .collect();
    assert_eq!(
        seen,
        [Some(token.to_string()), Some(token.to_string()), None]
    );
    // A failing poll with the header: nothing anywhere shows the value.
    set(&api, 401, "unauthorized", Duration::ZERO);
    let e = client
        .batch_execute("REFRESH SOURCE raw.fx")
        .await
        .unwrap_err();
    let message = e.as_db_error().unwrap().message().to_string();
    assert!(
        message.contains("the server answered 401 Unauthorized"),
        "{message}"
    );
    assert_eq!(api.lock().unwrap().hits.len(), 4, "a 401 is not retried");
    for sql in [
        "SELECT * FROM tributary.sources",
        "SELECT * FROM tributary.runs",
        "SELECT * FROM tributary.secrets",
        "SELECT * FROM tributary.columns",
    ] {
        let text = rows(&client, sql).await.join("\n");
        assert!(!text.contains("s3cret"), "{sql} shows the secret: {text}");
    }
    assert!(!message.contains("s3cret"));
    // An unknown secret is an error naming it, before any request.
    let before = api.lock().unwrap().hits.len();
    let e = client
        .batch_execute(&format!(
            "CREATE SOURCE raw.fx3 FROM HTTP '{url}' FORMAT JSON WITH (headers_secret = nope)"
        ))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42704", "{e:?}");
    assert!(
        e.as_db_error()
            .unwrap()
            .message()
            .contains("secret \"nope\""),
        "{e:?}"
    );
    assert_eq!(api.lock().unwrap().hits.len(), before);
    // The secret cannot be dropped while a source uses it.
    let e = client
        .batch_execute("DROP SECRET api_json")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "2BP01", "{e:?}");
}

async fn row_count(session: &mut tributary_engine::Session, sql: &str) -> usize {
    use futures::TryStreamExt;
    let mut n = 0;
    for output in Box::pin(session.execute_all(sql)).await.unwrap() {
        if let tributary_engine::Output::Rows { stream, .. } = output {
            let batches: Vec<_> = stream.try_collect().await.unwrap();
            n += batches.iter().map(|b| b.num_rows()).sum::<usize>();
        }
    }
    n
}

/// Housekeeping compacts a source's one-file-per-poll snapshots without changing its rows,
/// and an unchanged body after a compaction still appends nothing; snapshots are reachable
/// by time travel.
#[tokio::test]
async fn housekeeping_and_time_travel_over_snapshots() {
    use tributary_engine::{Engine, EngineConfig, HousekeepingPolicy};
    let (api, url) = start_api(&rates(&[("EUR", 0.9)])).await;
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(EngineConfig {
        warehouse: dir.path().to_string_lossy().into_owned(),
        memory_limit: 512 << 20,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut session = engine.session("tributary");
    Box::pin(session.execute_all(&format!(
        "CREATE SOURCE public.fx FROM HTTP '{url}' FORMAT JSON WITH (records = '$.data.rates')"
    )))
    .await
    .unwrap();
    for rate in [0.91, 0.92, 0.93] {
        set(&api, 200, &rates(&[("EUR", rate)]), Duration::ZERO);
        Box::pin(session.execute_all("REFRESH SOURCE public.fx"))
            .await
            .unwrap();
    }
    assert_eq!(row_count(&mut session, "SELECT * FROM public.fx").await, 4);
    let policy = HousekeepingPolicy {
        compact_min_files: 2,
        ..Default::default()
    };
    let outcomes = Box::pin(engine.housekeeping_pass(&policy)).await;
    let report = outcomes
        .into_iter()
        .find(|o| o.name.name == "fx")
        .expect("the source is maintained")
        .result
        .unwrap()
        .expect("a report");
    assert_eq!(report.files_compacted, 4, "{report}");
    assert_eq!(row_count(&mut session, "SELECT * FROM public.fx").await, 4);
    // The body of the last snapshot again: still nothing new.
    Box::pin(session.execute_all("REFRESH SOURCE public.fx"))
        .await
        .unwrap();
    assert_eq!(row_count(&mut session, "SELECT * FROM public.fx").await, 4);
    assert_eq!(
        row_count(&mut session, "SELECT * FROM public.fx VERSION AS OF 2").await,
        2
    );
}

/// The snapshots, and the body hash that tells an unchanged poll, live in the Delta log: a
/// restart changes nothing.
#[tokio::test]
async fn snapshots_survive_a_restart() {
    let (api, url) = start_api(&rates(&[("EUR", 0.9), ("GBP", 0.8)])).await;
    let (mut server, _dir) = TestServer::start(&[]);
    server
        .connect()
        .await
        .batch_execute(&format!(
            "CREATE SCHEMA raw;
             CREATE SOURCE raw.fx FROM HTTP '{url}' FORMAT JSON
                 WITH (records = '$.data.rates', max_staleness = '1 hour');"
        ))
        .await
        .unwrap();
    server.restart();
    // Fresh: the last successful poll (at CREATE) is within the objective.
    let status: String = server
        .connect()
        .await
        .query_one(
            "SELECT status FROM tributary.freshness WHERE name = 'raw.fx' \
             AND last_data_at IS NOT NULL AND staleness_seconds < 3600",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "fresh");
    let client = server.connect().await;
    assert_eq!(count(&client, "SELECT count(*) FROM raw.fx").await, 2);
    client.batch_execute("REFRESH SOURCE raw.fx").await.unwrap();
    assert_eq!(count(&client, "SELECT count(*) FROM raw.fx").await, 2);
    assert_eq!(source_state(&client, "raw.fx").await.0, Some(1));
    set(&api, 200, &rates(&[("EUR", 0.95)]), Duration::ZERO);
    client.batch_execute("REFRESH SOURCE raw.fx").await.unwrap();
    assert_eq!(count(&client, "SELECT count(*) FROM raw.fx").await, 3);
    assert_eq!(source_state(&client, "raw.fx").await.0, Some(2));
}

/// A snapshot that was committed but not yet published when the server stopped (the catalog
/// still names the previous version) is published at start-up, not lost or written twice.
#[tokio::test]
async fn a_snapshot_committed_before_a_crash_is_published_at_start_up() {
    let (_api, url) = start_api(&rates(&[("EUR", 0.9), ("GBP", 0.8)])).await;
    let (mut server, _dir) = TestServer::start(&[]);
    server
        .connect()
        .await
        .batch_execute(&format!(
            "CREATE SCHEMA raw;
             CREATE SOURCE raw.fx FROM HTTP '{url}' FORMAT JSON WITH (records = '$.data.rates');"
        ))
        .await
        .unwrap();
    server.stop();
    {
        // As if the server stopped between the snapshot's Delta commit and its publication.
        let catalog =
            tributary_catalog::Catalog::open(&server.warehouse.join("catalog.db")).unwrap();
        let source = catalog
            .object(&tributary_catalog::ObjectName::new("raw", "fx"))
            .unwrap()
            .unwrap();
        catalog.set_published_version(source.id, 0).unwrap();
    }
    server.restart();
    let client = server.connect().await;
    assert_eq!(source_state(&client, "raw.fx").await.0, Some(1));
    assert_eq!(count(&client, "SELECT count(*) FROM raw.fx").await, 2);
    // The same body again: the landed snapshot is recognised, nothing is written twice.
    client.batch_execute("REFRESH SOURCE raw.fx").await.unwrap();
    assert_eq!(count(&client, "SELECT count(*) FROM raw.fx").await, 2);
}
