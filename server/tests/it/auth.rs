//! SCRAM-SHA-256 password authentication with the bootstrap superuser.

use crate::support::{TestServer, code};

#[tokio::test]
async fn scram_password_authentication() {
    let (server, _dir) = TestServer::start(&["--password", "s3cret"]);
    let base = format!("host=127.0.0.1 port={} dbname=tributary", server.port);
    let client = server
        .connect_with(&format!("{base} user=tributary password=s3cret"))
        .await
        .expect("right password");
    let n: i64 = client
        .query_one("SELECT CAST(1 AS BIGINT)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let e = server
        .connect_with(&format!("{base} user=tributary password=wrong"))
        .await
        .expect_err("wrong password refused");
    assert_eq!(code(&e), "28P01");
    let e = server
        .connect_with(&format!("{base} user=mallory password=s3cret"))
        .await
        .expect_err("unknown user refused");
    assert_eq!(code(&e), "28P01");
}

/// A client that skips authentication and pipelines a query gets nothing executed.
#[tokio::test]
async fn queries_before_authentication_are_never_executed() {
    use std::io::{Read, Write};
    let (server, _dir) = TestServer::start(&["--password", "s3cret"]);
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    raw.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut startup = Vec::new();
    startup.extend_from_slice(&196608i32.to_be_bytes());
    for (k, v) in [("user", "tributary"), ("database", "tributary")] {
        startup.extend_from_slice(k.as_bytes());
        startup.push(0);
        startup.extend_from_slice(v.as_bytes());
        startup.push(0);
    }
    startup.push(0);
    let mut packet = ((startup.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&startup);
    // A wrong SASL answer followed by a query, all in one write.
    let sasl_initial = b"SCRAM-SHA-256\0\xff\xff\xff\xffgarbage";
    let mut password = vec![b'p'];
    password.extend_from_slice(&((sasl_initial.len() + 4) as i32).to_be_bytes());
    password.extend_from_slice(sasl_initial);
    let query = b"CREATE SCHEMA pwned\0";
    let mut q = vec![b'Q'];
    q.extend_from_slice(&((query.len() + 4) as i32).to_be_bytes());
    q.extend_from_slice(query);
    raw.write_all(&packet).unwrap();
    raw.write_all(&password).unwrap();
    raw.write_all(&q).unwrap();
    let mut sink = Vec::new();
    let _ = raw.read_to_end(&mut sink);
    drop(raw);
    let client = server
        .connect_with(&format!(
            "host=127.0.0.1 port={} dbname=tributary user=tributary password=s3cret",
            server.port
        ))
        .await
        .unwrap();
    let rows = client
        .query(
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name = 'pwned'",
            &[],
        )
        .await
        .unwrap();
    assert!(rows.is_empty(), "a query ran without authentication");
}
