//! Runs the `.slt` files in `sqllogictests/slt/` over pgwire against a real `tributary`
//! binary: one fresh server (own warehouse, port 0; `tributary-testkit`) per file, so files
//! are independent.
//!
//! ```text
//! cargo test -p tributary-sqllogictests                      # run every file
//! cargo test -p tributary-sqllogictests -- models            # files whose name contains "models"
//! cargo test -p tributary-sqllogictests -- --complete        # rewrite expected results
//! ```
//!
//! Errors are reported as `SQLSTATE: message`, so `statement error 42P01` checks the code.

// Test support: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use sqllogictest::{DBOutput, DefaultColumnType};
use tokio_postgres::{NoTls, SimpleQueryMessage};
use tributary_testkit::{TestServer, repo_root};

#[derive(Debug)]
struct DbError(String);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DbError {}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => DbError(format!("{}: {}", db.code().code(), db.message())),
            None => DbError(e.to_string()),
        }
    }
}

struct Client {
    client: tokio_postgres::Client,
}

#[async_trait]
impl sqllogictest::AsyncDB for Client {
    type Error = DbError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DbError> {
        let messages = self.client.simple_query(sql).await?;
        let mut rows = Vec::new();
        let mut columns = 0;
        let mut saw_rows = false;
        let mut affected = 0;
        for message in messages {
            match message {
                SimpleQueryMessage::RowDescription(desc) => {
                    saw_rows = true;
                    columns = desc.len();
                }
                SimpleQueryMessage::Row(row) => {
                    saw_rows = true;
                    columns = row.len();
                    rows.push(
                        (0..row.len())
                            .map(|i| match row.get(i) {
                                None => "NULL".to_string(),
                                Some("") => "(empty)".to_string(),
                                Some(v) => v.to_string(),
                            })
                            .collect(),
                    );
                }
                SimpleQueryMessage::CommandComplete(n) => affected = n,
                _ => {}
            }
        }
        if saw_rows {
            Ok(DBOutput::Rows {
                types: vec![DefaultColumnType::Any; columns],
                rows,
            })
        } else {
            Ok(DBOutput::StatementComplete(affected))
        }
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "tributary"
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }
}

async fn connect(port: u16) -> Result<Client, DbError> {
    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=tributary dbname=tributary"),
        NoTls,
    )
    .await?;
    tokio::spawn(connection);
    Ok(Client { client })
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let complete = args.iter().any(|a| a == "--complete");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let dir = repo_root().join("sqllogictests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("slt folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .filter(|p| {
            filters.is_empty()
                || filters.iter().any(|f| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .contains(f.as_str())
                })
        })
        .collect();
    files.sort();
    let mut failed = 0;
    let mut passed = 0;
    for file in &files {
        let (server, warehouse) = TestServer::start(&[]);
        let port = server.port;
        let mut runner = sqllogictest::Runner::new(move || connect(port));
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let result = if complete {
            runner
                .update_test_file(
                    file,
                    " ",
                    sqllogictest::default_validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::default_column_validator,
                )
                .await
                .map_err(|e| e.to_string())
        } else {
            runner
                .run_file_async(file)
                .await
                .map_err(|e| e.display(true).to_string())
        };
        match result {
            Ok(()) => {
                passed += 1;
                println!("ok     {name}");
            }
            Err(e) => {
                failed += 1;
                println!("FAILED {name}\n{e}");
            }
        }
        drop(server);
        drop(warehouse);
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
