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
