//! Wire protocol behaviour: extended protocol with parameters, binary results, COPY both ways,
//! multi-statement queries, and a connection that sends garbage.

use std::io::{Read, Write};

use futures::{SinkExt, TryStreamExt};
use tokio_postgres::types::Type;

use crate::support::{TestServer, code};

#[tokio::test]
async fn extended_protocol_with_parameters_and_binary_results() {
    let (server, _dir) = TestServer::start(&[]);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE t (id BIGINT NOT NULL, name TEXT, amount NUMERIC(18,2), at TIMESTAMPTZ, ok BOOLEAN);
             INSERT INTO t VALUES (1, 'a', 1.50, '2026-01-01T00:00:00Z', true), (2, 'b', 2.25, '2026-01-02T00:00:00Z', false)",
        )
        .await
        .unwrap();
    // tokio-postgres prepares (Parse/Describe), binds parameters and asks for binary results.
    let rows = client
        .query("SELECT id, name, ok FROM t WHERE id = $1", &[&2i64])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i64>(0), 2);
    assert_eq!(rows[0].get::<_, &str>(1), "b");
    assert!(!rows[0].get::<_, bool>(2));

    // A statement prepared with a declared parameter type.
    let stmt = client
        .prepare_typed("SELECT count(*) FROM t WHERE name = $1", &[Type::TEXT])
        .await
        .unwrap();
    assert_eq!(stmt.params(), &[Type::TEXT]);
    assert_eq!(stmt.columns()[0].type_(), &Type::INT8);
    let n: i64 = client.query_one(&stmt, &[&"a"]).await.unwrap().get(0);
    assert_eq!(n, 1);
    // The same statement again, with another value.
    let n: i64 = client.query_one(&stmt, &[&"zzz"]).await.unwrap().get(0);
    assert_eq!(n, 0);

    // Parameters in an INSERT.
    client
        .execute("INSERT INTO t (id, name) VALUES ($1, $2)", &[&3i64, &"c"])
        .await
        .unwrap();
    let names: Vec<String> = client
        .query("SELECT name FROM t ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
}

/// A prepared statement keeps the plan Describe made, but never past a write it would miss:
/// an INSERT on this or another connection, a refresh, or a new search path.
#[tokio::test]
async fn prepared_statements_see_what_changed_since_they_were_prepared() {
    let (server, _dir) = TestServer::start(&[]);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE kept (id BIGINT NOT NULL);
             INSERT INTO kept VALUES (1);
             CREATE MODEL kept_ids AS SELECT id FROM kept",
        )
        .await
        .unwrap();
    let count = client
        .prepare("SELECT count(*) FROM kept WHERE id > $1")
        .await
        .unwrap();
    let in_model = client
        .prepare("SELECT count(*) FROM kept_ids")
        .await
        .unwrap();
    let n = |row: tokio_postgres::Row| row.get::<_, i64>(0);
    assert_eq!(n(client.query_one(&count, &[&0i64]).await.unwrap()), 1);
    assert_eq!(n(client.query_one(&count, &[&0i64]).await.unwrap()), 1);
    client
        .batch_execute("INSERT INTO kept VALUES (2)")
        .await
        .unwrap();
    assert_eq!(n(client.query_one(&count, &[&0i64]).await.unwrap()), 2);
    let other = server.connect().await;
    other
        .batch_execute("INSERT INTO kept VALUES (3)")
        .await
        .unwrap();
    assert_eq!(n(client.query_one(&count, &[&0i64]).await.unwrap()), 3);
    assert_eq!(n(client.query_one(&count, &[&2i64]).await.unwrap()), 1);
    assert_eq!(n(client.query_one(&in_model, &[]).await.unwrap()), 1);
    other.batch_execute("REFRESH MODEL kept_ids").await.unwrap();
    assert_eq!(n(client.query_one(&in_model, &[]).await.unwrap()), 3);
    client
        .batch_execute(
            "CREATE SCHEMA elsewhere;
             CREATE TABLE elsewhere.kept (id BIGINT NOT NULL);
             SET search_path = elsewhere",
        )
        .await
        .unwrap();
    assert_eq!(n(client.query_one(&count, &[&0i64]).await.unwrap()), 0);
}

#[tokio::test]
async fn errors_carry_sqlstate_and_leave_the_session_usable() {
    let (server, _dir) = TestServer::start(&[]);
    let client = server.connect().await;
    let e = client
        .simple_query("SELECT * FROM missing")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42P01");
    let e = client
        .query("SELECT nope FROM tributary.runs", &[])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42703");
    let e = client
        .simple_query("CREATE SCHEMA public")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42P06");
    // Multi-statement: the statements before the error ran, the ones after did not.
    let e = client
        .batch_execute("CREATE SCHEMA s1; SELECT * FROM missing; CREATE SCHEMA s2")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42P01");
    let schemas: Vec<String> = client
        .query("SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 's%' ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(schemas, ["s1"]);
    let one: i64 = client
        .query_one("SELECT CAST(1 AS BIGINT)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(one, 1);
}

#[tokio::test]
async fn copy_in_and_out() {
    let (server, _dir) = TestServer::start(&[]);
    let client = server.connect().await;
    client
        .batch_execute("CREATE TABLE p (id BIGINT NOT NULL, amount NUMERIC(18,2), note TEXT)")
        .await
        .unwrap();
    let sink = client
        .copy_in("COPY p FROM STDIN WITH (FORMAT csv, HEADER true)")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    let mut data = String::from("id,amount,note\n");
    for i in 0..1000 {
        data.push_str(&format!("{i},{}.25,\"note, {i}\"\n", i % 7));
    }
    sink.send(bytes::Bytes::from(data)).await.unwrap();
    let rows = sink.finish().await.unwrap();
    assert_eq!(rows, 1000);
    let total: String = client
        .query_one("SELECT CAST(sum(amount) AS TEXT) FROM p", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, "3247.00");

    // Text format with a column list; a missing nullable column becomes NULL.
    let sink = client
        .copy_in("COPY p (id, note) FROM STDIN")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"5000\thello\n5001\t\\N\n"))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    let nulls: i64 = client
        .query_one(
            "SELECT count(*) FROM p WHERE id >= 5000 AND amount IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(nulls, 2);

    // Bad data: the error names the table, nothing is written, the session goes on.
    let sink = client
        .copy_in("COPY p FROM STDIN WITH (FORMAT csv)")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"1,not-a-number,x\n"))
        .await
        .unwrap();
    let e = sink.finish().await.unwrap_err();
    assert_eq!(code(&e), "22P02", "{e}");
    let count: i64 = client
        .query_one("SELECT count(*) FROM p", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1002);

    let stream = client
        .copy_out("COPY (SELECT id, note FROM p WHERE id < 3 ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER true)")
        .await
        .unwrap();
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
    let text: String = chunks
        .iter()
        .map(|c| String::from_utf8_lossy(c).to_string())
        .collect();
    assert_eq!(
        text,
        "id,note\n0,\"note, 0\"\n1,\"note, 1\"\n2,\"note, 2\"\n"
    );
}

#[tokio::test]
async fn garbage_on_one_connection_does_not_hurt_others() {
    let (server, _dir) = TestServer::start(&[]);
    let client = server.connect().await;
    // A raw socket that sends a start-up packet with an absurd length, then junk.
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    raw.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    raw.write_all(&[0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0, 1, 2, 3])
        .unwrap();
    let mut buf = [0u8; 64];
    // The server closes that connection (read returns 0 or an error), never hangs.
    let _ = raw.read(&mut buf);
    // A second bad client: a valid start-up, then an unknown message type.
    let n: i64 = client
        .query_one("SELECT CAST(41 + 1 AS BIGINT)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 42);
    let other = server.connect().await;
    let n: i64 = other
        .query_one("SELECT CAST(7 AS BIGINT)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 7);
}

#[tokio::test]
async fn unknown_database_is_refused() {
    let (server, _dir) = TestServer::start(&[]);
    let e = server
        .connect_with(&format!(
            "host=127.0.0.1 port={} user=tributary dbname=other",
            server.port
        ))
        .await
        .expect_err("refused");
    assert_eq!(code(&e), "3D000");
}

#[tokio::test]
async fn health_endpoint_answers() {
    let (server, _dir) = TestServer::start(&[]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", server.http_port)).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.ends_with("ok\n"), "{body}");
}

#[tokio::test]
async fn cancel_request_stops_a_long_refresh() {
    let (server, _dir) = TestServer::start(&[]);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE MODEL slow AS SELECT sum(value) AS total FROM generate_series(1, 5000000000) WITH NO DATA",
        )
        .await
        .unwrap();
    let token = client.cancel_token();
    let refresh = tokio::spawn(async move {
        let result = client.batch_execute("REFRESH MODEL slow").await;
        (client, result)
    });
    // Cancel until the refresh ends: a cancel that arrives before the statement started is a
    // no-op in PostgreSQL too, so keep asking (bounded) rather than rely on timing.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !refresh.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "the refresh was never canceled"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    }
    let (client, result) = refresh.await.unwrap();
    assert_eq!(code(&result.unwrap_err()), "57014");
    let row = client
        .query_one(
            "SELECT status, error FROM tributary.runs ORDER BY run_id DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "failed");
    assert!(row.get::<_, &str>(1).starts_with("canceled"));
}

#[tokio::test]
async fn statement_timeout_cancels_long_statements() {
    let (server, _dir) = TestServer::start(&[]);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE MODEL slow AS SELECT sum(value) AS total FROM generate_series(1, 5000000000) WITH NO DATA;
             SET statement_timeout = '300ms'",
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let e = client
        .batch_execute("REFRESH MODEL slow")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "57014");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    client
        .batch_execute("SET statement_timeout = 0")
        .await
        .unwrap();
    let n: i64 = client
        .query_one("SELECT CAST(1 AS BIGINT)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused() {
    let (server, _dir) = TestServer::start(&["--max-connections", "2"]);
    let a = server.connect().await;
    let _b = server.connect().await;
    let Err(e) = server.connect_with(&server.conn_str("tributary")).await else {
        panic!("third connection refused");
    };
    assert_eq!(code(&e), "53300");
    drop(a);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let c = server.connect().await;
    let n: i64 = c
        .query_one("SELECT CAST(3 AS BIGINT)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
}

/// `COPY ... TO STDOUT` in text format sends, byte for byte, what PostgreSQL sends for the
/// same rows: escapes, NULLs, numerics at their scale, dates, floats and timestamps, with the
/// default and with a chosen delimiter and NULL string.
#[tokio::test]
async fn copy_to_stdout_text_is_what_postgresql_sends() {
    let (server, _dir) = TestServer::start(&[]);
    let client = server.connect().await;
    let (postgres, connection) = tokio_postgres::connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=test",
        tokio_postgres::NoTls,
    )
    .await
    .expect("PostgreSQL at 127.0.0.1:5432 (database test)");
    tokio::spawn(connection);
    let rows = "SELECT * FROM (
        SELECT 1 AS id, CAST(-42 AS BIGINT) AS big, CAST(7 AS SMALLINT) AS small, 'plain' AS t,
               TRUE AS b, CAST(12.5 AS NUMERIC(12,4)) AS n, DATE '2024-02-29' AS d,
               CAST(0.1 AS DOUBLE PRECISION) AS f, TIMESTAMP '2024-01-01 10:00:00.25' AS ts
        UNION ALL
        SELECT 2, NULL, NULL,
               'tab' || chr(9) || 'nl' || chr(10) || 'cr' || chr(13) || 'bs' || chr(92) || '|pipe',
               FALSE, CAST(-0.0001 AS NUMERIC(12,4)), DATE '0001-01-01',
               CAST(1e21 AS DOUBLE PRECISION), NULL
        UNION ALL
        SELECT 3, 9223372036854775807, 0, '', NULL, NULL, NULL, NULL,
               TIMESTAMP '1999-12-31 23:59:59') AS v
      ORDER BY id";
    for options in ["", " WITH (FORMAT text, DELIMITER '|', NULL 'nil')"] {
        let sql = format!("COPY ({rows}) TO STDOUT{options}");
        let mut sent = Vec::new();
        for client in [&client, &postgres] {
            let chunks: Vec<bytes::Bytes> = client
                .copy_out(sql.as_str())
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .try_collect()
                .await
                .unwrap();
            sent.push(chunks.concat());
        }
        assert_eq!(
            String::from_utf8_lossy(&sent[0]),
            String::from_utf8_lossy(&sent[1]),
            "{sql}"
        );
    }
}
