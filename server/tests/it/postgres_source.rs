//! Federated PostgreSQL sources against the real PostgreSQL at 127.0.0.1:5432 (database
//! `test`, trust authentication). Each test creates its own schema and drops it afterwards.
//!
//! Results are compared with the same query run on PostgreSQL directly, as text (both servers
//! format values the PostgreSQL way). Pushdown is proven by what PostgreSQL received, not by
//! EXPLAIN: every test's connection sets a unique `APPLICATION_NAME`, and after each query the
//! test reads `pg_stat_activity.query` of that application's backends, which holds the last
//! statement each one ran (the pool keeps them open and idle). The most recent one is the SQL
//! the federated query sent. `pg_stat_statements` would need `shared_preload_libraries` and a
//! server restart, and `log_statement` output is not readable from a test; `pg_stat_activity`
//! needs neither and is always on (`track_activities`).

use std::collections::BTreeSet;

use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::support::{TestServer, code};

/// A schema of its own in the `test` database, dropped on drop (also when a test fails).
struct Remote {
    client: Client,
    schema: String,
}

impl Remote {
    async fn new(tag: &str) -> Self {
        let (client, connection) =
            tokio_postgres::connect("host=127.0.0.1 port=5432 user=postgres dbname=test", NoTls)
                .await
                .expect("PostgreSQL at 127.0.0.1:5432 (database test)");
        tokio::spawn(connection);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let schema = format!("trib_{tag}_{}_{nanos}", std::process::id());
        client
            .batch_execute(&format!("SET TIME ZONE 'UTC'; CREATE SCHEMA {schema}"))
            .await
            .unwrap();
        Self { client, schema }
    }

    async fn exec(&self, sql: &str) {
        self.client
            .batch_execute(&sql.replace("$S", &self.schema))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The last statement PostgreSQL received from the backends of `app`.
    async fn last_query(&self, app: &str) -> String {
        self.client
            .query_one(
                "SELECT query FROM pg_stat_activity WHERE application_name = $1 \
                 ORDER BY query_start DESC NULLS LAST LIMIT 1",
                &[&app],
            )
            .await
            .expect("a backend of the test's connection")
            .get(0)
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-q",
                "-d",
                "test",
                "-c",
            ])
            .arg(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .output();
    }
}

/// The one bigint value `sql` returns.
async fn scalar(client: &Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// Rows as text, the way a client sees them.
async fn rows(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

async fn error(client: &Client, sql: &str) -> (String, String) {
    let e = client
        .simple_query(sql)
        .await
        .err()
        .unwrap_or_else(|| panic!("{sql} should fail"));
    let message = e.as_db_error().map(|d| d.message().to_string());
    (code(&e), message.unwrap_or_else(|| e.to_string()))
}

const TABLES: &str = "
    CREATE TABLE $S.accounts (id integer PRIMARY KEY, name text NOT NULL, opened date);
    CREATE TABLE $S.tx (
        id bigint PRIMARY KEY, account_id integer, amount numeric(18,2), note text,
        day date, at timestamptz, ok boolean, score double precision);
    INSERT INTO $S.accounts VALUES (1, 'alice', '2026-01-01'), (2, 'bob', NULL), (3, 'carol', '2026-02-01');
    INSERT INTO $S.tx
    SELECT g, 1 + g % 3, g * 1.25 - 40,
           CASE WHEN g % 4 = 0 THEN NULL ELSE 'note ' || g END,
           date '2026-01-01' + g % 20,
           timestamptz '2026-01-01 00:00:00+00' + g * interval '90 minutes',
           CASE WHEN g % 5 = 0 THEN NULL ELSE g % 2 = 0 END,
           CASE WHEN g % 7 = 0 THEN NULL ELSE g / 8.0 END
    FROM generate_series(1, 200) g;";

async fn setup(tag: &str) -> (TestServer, tempfile::TempDir, Client, Remote, String) {
    let remote = Remote::new(tag).await;
    remote.exec(TABLES).await;
    let (server, dir) = TestServer::start(&["--scheduler", "off"]);
    let client = server.connect().await;
    let app = remote.schema.clone();
    client
        .batch_execute(&format!(
            "CREATE SECRET pg_pw AS 'pw-{app}';
             CREATE CONNECTION bank TO POSTGRES (HOST '127.0.0.1', PORT 5432, DATABASE 'test',
                 USER 'postgres', PASSWORD SECRET pg_pw, SSLMODE 'disable', APPLICATION_NAME '{app}');
             CREATE SCHEMA src;
             CREATE SOURCE src.tx FROM POSTGRES CONNECTION bank TABLE '{app}.tx';
             CREATE SOURCE src.accounts FROM POSTGRES CONNECTION bank TABLE '{app}.accounts';"
        ))
        .await
        .unwrap();
    (server, dir, client, remote, app)
}

#[tokio::test]
async fn federated_queries_equal_postgres_and_are_pushed_down() {
    let (_server, _dir, client, remote, app) = setup("fed").await;
    let columns = rows(
        &client,
        "SELECT column_name, data_type FROM tributary.columns WHERE object_name = 'tx' \
         ORDER BY ordinal_position",
    )
    .await;
    let columns: Vec<String> = columns
        .into_iter()
        .map(|r| format!("{} {}", r[0].as_deref().unwrap(), r[1].as_deref().unwrap()))
        .collect();
    assert_eq!(
        columns,
        [
            "id bigint",
            "account_id integer",
            "amount numeric(18,2)",
            "note text",
            "day date",
            "at timestamp with time zone",
            "ok boolean",
            "score double precision"
        ]
    );

    // (query on Tributary, what PostgreSQL must have received: fragments, and columns it must
    // not have been asked for)
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("SELECT * FROM src.tx ORDER BY id", &["FROM"], &[]),
        (
            "SELECT id, amount FROM src.tx WHERE account_id = 2 AND amount > 10 ORDER BY id",
            &["WHERE", "account_id", "10"],
            &["note", "score"],
        ),
        (
            "SELECT account_id, sum(amount) AS total, count(*) AS n, count(note) AS notes, \
             min(day) AS first_day, max(at) AS last_at FROM src.tx GROUP BY account_id \
             ORDER BY account_id",
            &["GROUP BY", "sum("],
            &[],
        ),
        (
            "SELECT a.name, sum(t.amount) AS total, count(*) AS n FROM src.tx t \
             JOIN src.accounts a ON a.id = t.account_id WHERE t.ok GROUP BY a.name ORDER BY a.name",
            &["JOIN", "GROUP BY"],
            &[],
        ),
        (
            "SELECT id, note, ok, score FROM src.tx ORDER BY id DESC LIMIT 7",
            &["LIMIT 7"],
            &["amount"],
        ),
        (
            "SELECT day, count(*) AS n FROM src.tx WHERE note IS NULL AND score IS NOT NULL \
             GROUP BY day HAVING count(*) > 1 ORDER BY day",
            &["IS NULL", "HAVING"],
            &[],
        ),
        (
            "SELECT a.name, a.opened, t.id, t.at FROM src.accounts a LEFT JOIN src.tx t \
             ON t.account_id = a.id AND t.id < 4 ORDER BY a.name, t.id",
            &["LEFT", "JOIN"],
            &[],
        ),
    ];
    for (query, sent, not_sent) in cases {
        let ours = rows(&client, query).await;
        let direct = rows(
            &remote.client,
            &query.replace("src.", &format!("{}.", remote.schema)),
        )
        .await;
        assert!(!direct.is_empty(), "{query}");
        assert_eq!(ours, direct, "{query}");
        let received = remote.last_query(&app).await;
        assert!(
            received.starts_with("COPY (") && received.ends_with("TO STDOUT (FORMAT binary)"),
            "{query}: results of these types come by binary COPY, PostgreSQL received {received}"
        );
        for fragment in *sent {
            assert!(
                received.contains(fragment),
                "{query}\nPostgreSQL received: {received}\nexpected it to contain {fragment}"
            );
        }
        for column in *not_sent {
            assert!(
                !received.contains(column),
                "{query}\nPostgreSQL received: {received}\ncolumn {column} was not needed"
            );
        }
    }

    // A uuid has no binary decoder here: such results come row by row, equal all the same.
    remote
        .exec(
            "CREATE TABLE $S.tags (id integer, tag uuid, label varchar(10));
             INSERT INTO $S.tags SELECT g, md5(g::text)::uuid, CASE WHEN g > 1 THEN 'l' || g END
             FROM generate_series(1, 30) g;",
        )
        .await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE src.tags FROM POSTGRES CONNECTION bank TABLE '{app}.tags'"
        ))
        .await
        .unwrap();
    for (query, by_copy) in [
        ("SELECT * FROM src.tags ORDER BY id", false),
        ("SELECT id, label FROM src.tags ORDER BY id", true),
    ] {
        let direct = query.replace("src.", &format!("{}.", remote.schema));
        assert_eq!(
            rows(&client, query).await,
            rows(&remote.client, &direct).await
        );
        let received = remote.last_query(&app).await;
        assert_eq!(
            received.starts_with("COPY ("),
            by_copy,
            "{query}: {received}"
        );
    }

    // A model reads through the same federation.
    client
        .batch_execute(
            "CREATE MODEL totals AS SELECT account_id, sum(amount) AS total FROM src.tx \
             GROUP BY account_id",
        )
        .await
        .unwrap();
    let received = remote.last_query(&app).await;
    assert!(received.contains("GROUP BY"), "{received}");
    // What the refresh read is what PostgreSQL sent: one row per account.
    assert_eq!(
        rows(
            &client,
            "SELECT rows_read FROM tributary.runs WHERE model = 'public.totals'"
        )
        .await,
        [[Some("3".to_string())]]
    );
    assert_eq!(
        rows(&client, "SELECT * FROM totals ORDER BY account_id").await,
        rows(
            &remote.client,
            &format!(
                "SELECT account_id, sum(amount) FROM {}.tx GROUP BY 1 ORDER BY 1",
                remote.schema
            )
        )
        .await
    );
}

#[tokio::test]
async fn shape_changes_connection_failures_and_drops_are_clean_errors() {
    let (_server, _dir, client, remote, app) = setup("shape").await;
    let password = format!("pw-{app}");

    let (c, m) = error(
        &client,
        &format!("CREATE SOURCE src.nope FROM POSTGRES CONNECTION bank TABLE '{app}.nope'"),
    )
    .await;
    assert_eq!(c, "42P01", "{m}");
    let (c, m) = error(
        &client,
        &format!(
            "CREATE SOURCE src.c FROM POSTGRES CONNECTION bank TABLE '{app}.tx' \
             WITH (cursor = 'nothing')"
        ),
    )
    .await;
    assert_eq!(c, "22023", "{m}");

    // Nothing listens on port 1.
    client
        .batch_execute(
            "CREATE CONNECTION down TO POSTGRES (HOST '127.0.0.1', PORT 1, DATABASE 'test', \
             USER 'postgres', PASSWORD SECRET pg_pw)",
        )
        .await
        .unwrap();
    let (c, m) = error(
        &client,
        &format!("CREATE SOURCE src.d FROM POSTGRES CONNECTION down TABLE '{app}.tx'"),
    )
    .await;
    assert_eq!(c, "08001", "{m}");
    assert!(m.contains("\"down\""), "{m}");
    assert!(!m.contains(&password), "{m}");

    // The secret never shows: not in listings, EXPLAIN, or errors.
    for sql in [
        "SELECT * FROM tributary.secrets",
        "SELECT * FROM tributary.connections",
        "SELECT * FROM tributary.sources",
        "EXPLAIN SELECT * FROM src.tx WHERE id = 1",
        "EXPLAIN ANALYZE SELECT count(*) FROM src.tx",
    ] {
        let text = format!("{:?}", rows(&client, sql).await);
        assert!(!text.contains(&password), "{sql}: {text}");
    }

    let (c, m) = error(&client, "DROP CONNECTION bank").await;
    assert_eq!(c, "2BP01", "{m}");
    let (c, m) = error(&client, "DROP SECRET pg_pw").await;
    assert_eq!(c, "2BP01", "{m}");

    client
        .batch_execute("CREATE MODEL m AS SELECT id, note FROM src.tx")
        .await
        .unwrap();
    remote.exec("ALTER TABLE $S.tx DROP COLUMN note").await;
    let (c, m) = error(&client, "SELECT id FROM src.tx").await;
    assert_eq!(c, "42703", "{m}");
    assert!(m.contains("\"note\"") && m.contains("src.tx"), "{m}");
    let (c, m) = error(&client, "REFRESH MODEL m").await;
    assert_eq!(c, "42703", "{m}");
    remote
        .exec("ALTER TABLE $S.tx ADD COLUMN note text; ALTER TABLE $S.tx ALTER COLUMN score TYPE text")
        .await;
    let (c, m) = error(&client, "SELECT score FROM src.tx").await;
    assert_eq!(c, "42804", "{m}");
    assert!(m.contains("\"score\"") && m.contains("src.tx"), "{m}");

    client
        .batch_execute("DROP CONNECTION bank CASCADE")
        .await
        .unwrap();
    let left: BTreeSet<String> = rows(
        &client,
        "SELECT name FROM tributary.sources UNION ALL SELECT name FROM tributary.models",
    )
    .await
    .into_iter()
    .filter_map(|r| r[0].clone())
    .collect();
    assert!(left.is_empty(), "{left:?}");
    client
        .batch_execute("DROP SECRET pg_pw CASCADE")
        .await
        .unwrap();
}

/// The strategy and reason of each model's latest run.
async fn last_runs(client: &Client) -> Vec<(String, String, String)> {
    rows(
        client,
        "SELECT r.model, r.strategy, coalesce(r.reason, '') FROM tributary.runs r \
         JOIN (SELECT model, max(run_id) AS run_id FROM tributary.runs GROUP BY model) l \
         ON l.run_id = r.run_id ORDER BY r.model",
    )
    .await
    .into_iter()
    .map(|r| {
        (
            r[0].clone().unwrap(),
            r[1].clone().unwrap_or_default(),
            r[2].clone().unwrap_or_default(),
        )
    })
    .collect()
}

/// The strategy and reason of `model`'s latest run (named without its schema) among `runs`.
fn latest_run<'a>(runs: &'a [(String, String, String)], model: &str) -> (&'a str, &'a str) {
    runs.iter()
        .find(|(m, _, _)| m.rsplit('.').next() == Some(model))
        .map(|(_, strategy, reason)| (strategy.as_str(), reason.as_str()))
        .unwrap_or_else(|| panic!("no run of {model}"))
}

/// Each model's latest strategy must start with the one `expected` gives for its name.
async fn assert_strategies(client: &Client, step: &str, expected: &dyn Fn(&str) -> &'static str) {
    for (model, strategy, reason) in last_runs(client).await {
        let name = model.rsplit('.').next().unwrap_or(&model);
        assert!(
            strategy.starts_with(expected(name)),
            "{step}: {model} ran {strategy}, expected {} ({reason})",
            expected(name)
        );
    }
}

#[tokio::test]
async fn cursor_tracked_models_equal_a_full_recompute() {
    let remote = Remote::new("cursor").await;
    let app = remote.schema.clone();
    remote
        .exec(
            "CREATE TABLE $S.events (id bigint PRIMARY KEY, account integer, amount numeric(12,2),
                 updated_at timestamptz);
             INSERT INTO $S.events SELECT g, g % 4, g * 0.75 - 10,
                 timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute'
             FROM generate_series(1, 60) g;
             CREATE TABLE $S.names (account integer, name text);
             INSERT INTO $S.names VALUES (0, 'zero'), (1, 'one'), (2, 'two'), (3, 'three');",
        )
        .await;
    let (_server, _dir) = TestServer::start(&["--scheduler", "off"]);
    let client = _server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE CONNECTION bank TO POSTGRES (HOST '127.0.0.1', PORT 5432, DATABASE 'test',
                 USER 'postgres', SSLMODE 'disable', APPLICATION_NAME '{app}');
             CREATE SCHEMA src;
             CREATE SOURCE src.events FROM POSTGRES CONNECTION bank TABLE '{app}.events'
                 WITH (cursor = 'updated_at', primary_key = 'id');
             CREATE TABLE names (account integer, name text);
             INSERT INTO names VALUES (0, 'zero'), (1, 'one'), (2, 'two'), (3, 'three');
             CREATE MODEL positive AS SELECT id, account, amount FROM src.events WHERE amount > 0;
             CREATE MODEL totals AS SELECT account, sum(amount) AS total, count(*) AS n
                 FROM src.events GROUP BY account;
             CREATE MODEL current_events WITH (unique_key = 'id') AS
                 SELECT id, account, amount FROM src.events WHERE amount > 0;
             CREATE MODEL current_totals AS SELECT account, sum(amount) AS total, count(*) AS n
                 FROM current_events GROUP BY account;
             CREATE MODEL named_events WITH (unique_key = 'id') AS
                 SELECT e.id, n.name, e.amount FROM src.events e JOIN names n ON e.account = n.account;
             CREATE MODEL renumbered WITH (unique_key = 'rid') AS
                 SELECT id + 1000 AS rid, amount FROM src.events;"
        ))
        .await
        .unwrap();
    let models: &[(&str, &str)] = &[
        (
            "SELECT * FROM positive ORDER BY id",
            "SELECT id, account, amount FROM $S.events WHERE amount > 0 ORDER BY id",
        ),
        (
            "SELECT * FROM totals ORDER BY account",
            "SELECT account, sum(amount), count(*) FROM $S.events GROUP BY account ORDER BY account",
        ),
        (
            "SELECT * FROM current_events ORDER BY id",
            "SELECT id, account, amount FROM $S.events WHERE amount > 0 ORDER BY id",
        ),
        (
            "SELECT * FROM current_totals ORDER BY account",
            "SELECT account, sum(amount), count(*) FROM $S.events WHERE amount > 0
             GROUP BY account ORDER BY account",
        ),
        (
            "SELECT * FROM named_events ORDER BY id",
            "SELECT e.id, n.name, e.amount FROM $S.events e JOIN $S.names n
             ON e.account = n.account ORDER BY e.id",
        ),
        (
            "SELECT * FROM renumbered ORDER BY rid",
            "SELECT id + 1000, amount FROM $S.events ORDER BY id",
        ),
    ];
    let check = |step: &'static str| {
        let client = &client;
        let remote = &remote;
        async move {
            for (ours, theirs) in models {
                let direct = rows(&remote.client, &theirs.replace("$S", &remote.schema)).await;
                assert_eq!(rows(client, ours).await, direct, "{step}: {ours}");
            }
        }
    };
    check("created").await;

    // Inserts with advancing cursors: incremental, and equal to PostgreSQL's answer.
    remote
        .exec(
            "INSERT INTO $S.events SELECT g, g % 4, g * 0.5, timestamptz '2026-02-01 00:00:00+00' + g * interval '1 second'
             FROM generate_series(61, 75) g",
        )
        .await;
    client.batch_execute("REFRESH ALL").await.unwrap();
    assert_strategies(&client, "inserted", &|_| "incremental").await;
    check("inserted").await;

    client.batch_execute("REFRESH ALL").await.unwrap();
    assert_strategies(&client, "again", &|_| "unchanged").await;

    // Updates move cursors without adding rows. The models keyed by the primary key merge
    // them (one leaves the filter, one enters it); the model downstream of one follows its
    // Delta changes by group; the others have no way to find the old rows and refresh fully.
    let by_key = |name: &str| match name {
        "current_events" | "named_events" => "incremental_merge",
        "current_totals" => "incremental_groups",
        _ => "full",
    };
    remote
        .exec(
            "UPDATE $S.events SET amount = 99, updated_at = timestamptz '2026-03-01 00:00:00+00' WHERE id = 5;
             UPDATE $S.events SET amount = -1, updated_at = timestamptz '2026-03-01 00:00:01+00' WHERE id = 50",
        )
        .await;
    client.batch_execute("REFRESH ALL").await.unwrap();
    assert_strategies(&client, "updated", &by_key).await;
    let runs = last_runs(&client).await;
    let (_, reason) = latest_run(&runs, "renumbered");
    assert!(reason.contains("is not its primary key (id)"), "{reason}");
    let (_, reason) = latest_run(&runs, "totals");
    assert!(reason.contains("no old image"), "{reason}");
    check("updated").await;

    // Deletes are the keys a model holds that PostgreSQL no longer has.
    remote
        .exec(
            "DELETE FROM $S.events WHERE id IN (7, 30);
             INSERT INTO $S.events VALUES (100, 1, 5, timestamptz '2026-03-02 00:00:00+00')",
        )
        .await;
    client.batch_execute("REFRESH ALL").await.unwrap();
    assert_strategies(&client, "deleted", &by_key).await;
    check("deleted").await;

    // A row with a NULL cursor is not an append the cursor can see; by its key it is.
    remote
        .exec("INSERT INTO $S.events VALUES (101, 2, 7, NULL)")
        .await;
    client.batch_execute("REFRESH ALL").await.unwrap();
    assert_strategies(&client, "null cursor", &by_key).await;
    check("null cursor").await;

    // A primary key that changes is a delete and an insert.
    remote
        .exec("UPDATE $S.events SET id = 110, updated_at = timestamptz '2026-03-03 00:00:00+00' WHERE id = 10")
        .await;
    client.batch_execute("REFRESH ALL").await.unwrap();
    assert_strategies(&client, "key changed", &by_key).await;
    check("key changed").await;

    // A change on the Delta side of the join is traced against the source's current rows.
    remote
        .exec("UPDATE $S.names SET name = 'uno' WHERE account = 1")
        .await;
    client
        .batch_execute("UPDATE names SET name = 'uno' WHERE account = 1; REFRESH ALL")
        .await
        .unwrap();
    let runs = last_runs(&client).await;
    let (strategy, reason) = latest_run(&runs, "named_events");
    assert_eq!(strategy, "incremental_merge", "{reason}");
    check("dimension changed").await;

    remote
        .exec("INSERT INTO $S.events VALUES (102, 3, 8, timestamptz '2026-04-01 00:00:00+00')")
        .await;
    client.batch_execute("REFRESH ALL").await.unwrap();
    assert_strategies(&client, "inserted again", &|_| "incremental").await;
    check("inserted again").await;
}

/// `schedule = 'on change'` sees a PostgreSQL cursor that advanced (and nothing else).
#[tokio::test]
async fn on_change_models_follow_an_advancing_cursor() {
    let remote = Remote::new("sensor").await;
    let app = remote.schema.clone();
    remote
        .exec(
            "CREATE TABLE $S.events (id bigint, amount bigint, updated_at timestamptz);
             INSERT INTO $S.events VALUES (1, 10, '2026-01-01 00:00:00+00')",
        )
        .await;
    let (server, _dir) = TestServer::start(&[]);
    let client = server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE CONNECTION bank TO POSTGRES (HOST '127.0.0.1', PORT 5432, DATABASE 'test',
                 USER 'postgres', SSLMODE 'disable', APPLICATION_NAME '{app}');
             CREATE SOURCE events FROM POSTGRES CONNECTION bank TABLE '{app}.events'
                 WITH (cursor = 'updated_at', max_staleness = '1 day');
             CREATE MODEL total WITH (schedule = 'on change') AS
                 SELECT sum(amount) AS total FROM events;
             CREATE SOURCE hourly FROM POSTGRES CONNECTION bank TABLE '{app}.events'
                 WITH (cursor = 'updated_at', poll = '1 hour');
             CREATE MODEL total_hourly WITH (schedule = 'on change') AS
                 SELECT sum(amount) AS total FROM hourly;"
        ))
        .await
        .unwrap();
    let scheduled = "SELECT count(*) FROM tributary.runs WHERE model = 'public.total' \
                     AND trigger = 'schedule' AND status = 'succeeded'";
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let before = scalar(&client, scheduled).await;
    assert_eq!(before, 0, "nothing changed, nothing ran");
    remote
        .exec("INSERT INTO $S.events VALUES (2, 5, '2026-01-02 00:00:00+00')")
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let n = scalar(&client, scheduled).await;
        if n >= 1 || std::time::Instant::now() > deadline {
            assert_eq!(n, 1);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(scalar(&client, "SELECT total FROM total").await, 15);
    // The same table behind `poll = '1 hour'`: the sensor asked PostgreSQL once, before the
    // insert, and keeps that answer for the hour.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let hourly = scalar(
        &client,
        &scheduled.replace("public.total'", "public.total_hourly'"),
    )
    .await;
    assert_eq!(
        hourly, 0,
        "a source polled hourly was asked again within seconds"
    );
    client
        .batch_execute("REFRESH MODEL total_hourly")
        .await
        .unwrap();
    assert_eq!(
        scalar(&client, "SELECT total FROM total_hourly").await,
        15,
        "a refresh reads PostgreSQL afresh"
    );
    // Its freshness is the newest cursor time, long past the objective.
    assert_eq!(
        rows(
            &client,
            "SELECT last_data_at, status FROM tributary.freshness \
             WHERE name = 'public.events'"
        )
        .await,
        [vec![
            Some("2026-01-02 00:00:00+00".to_string()),
            Some("stale".to_string())
        ]]
    );
}
