//! The test kit every Tributary test that needs a server uses: [`TestServer`] starts the real
//! `tributary` binary on port 0 with its own warehouse (killed on drop), for the integration
//! tests (`server/tests/it`) and the sqllogictest runner alike.
//!
//! The binary is `TRIBUTARY_BIN` when set, else the `tributary` of the target directory the
//! test binary runs from (cargo builds a package's binaries before its integration tests).

// Test support: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tokio_postgres::{Client, NoTls};

#[derive(Debug)]
pub struct TestServer {
    child: Option<Child>,
    pub port: u16,
    pub http_port: u16,
    pub warehouse: PathBuf,
    extra: Vec<String>,
    /// The subcommand (`serve` unless started with [`TestServer::start_command`]).
    command: String,
    cwd: PathBuf,
    /// What the binary printed before its ready line.
    pub banner: Vec<String>,
}

/// The `tributary` binary the tests run.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TRIBUTARY_BIN") {
        return PathBuf::from(path);
    }
    // Test binaries live in target/<profile>/deps; the server binary one level up.
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary runs from a target directory");
    dir.join("tributary")
}

/// The checkout the test runs in: `cargo test` sets CARGO_MANIFEST_DIR when it runs a test,
/// which names this checkout even when the test binary is shared with another checkout's
/// build (one target directory, an unchanged source); the compile-time value is the fallback.
pub fn repo_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .unwrap()
        .to_path_buf()
}

impl TestServer {
    /// Starts a server on a new temporary warehouse.
    pub fn start(extra: &[&str]) -> (Self, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = Self::start_in(dir.path().to_path_buf(), extra);
        (server, dir)
    }

    pub fn start_in(warehouse: PathBuf, extra: &[&str]) -> Self {
        Self::start_command("serve", repo_root(), warehouse, extra)
    }

    /// Starts `tributary <command>` (a command that serves, such as `demo`) in `cwd`.
    pub fn start_command(command: &str, cwd: PathBuf, warehouse: PathBuf, extra: &[&str]) -> Self {
        let mut server = Self {
            child: None,
            port: 0,
            http_port: 0,
            warehouse,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            command: command.to_string(),
            cwd,
            banner: Vec::new(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut child = Command::new(binary())
            .args([
                self.command.as_str(),
                "--listen",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
                "--warehouse",
            ])
            .arg(&self.warehouse)
            .args(&self.extra)
            .current_dir(&self.cwd)
            .env(
                "TRIBUTARY_LOG",
                "warn,deltalake_core::operations::merge=error",
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} (build it with cargo build -p tributary-server)",
                    binary().display()
                )
            });
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        loop {
            line.clear();
            let read = stdout.read_line(&mut line).expect("ready line");
            assert!(
                read > 0,
                "tributary exited before it was ready: {:?}",
                self.banner
            );
            if line.starts_with("tributary ready") {
                break;
            }
            self.banner.push(line.trim_end().to_string());
        }
        let port_of = |key: &str| -> u16 {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        };
        self.port = port_of("pgwire=");
        self.http_port = port_of("http=");
        self.child = Some(child);
    }

    /// Stops the server gracefully enough (SIGKILL is the harshest case; see `kill9`).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Records a run of `schema.name` that started and never finished, as a crash during a
    /// refresh leaves it. The server must be stopped.
    pub fn record_unfinished_run(&self, schema: &str, name: &str, trigger: &str) -> i64 {
        let catalog = tributary_catalog::Catalog::open(&self.warehouse.join("catalog.db")).unwrap();
        let model = catalog
            .object(&tributary_catalog::ObjectName::new(schema, name))
            .unwrap()
            .unwrap();
        catalog.start_run(&model, trigger).unwrap()
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn conn_str(&self, user: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} dbname=tributary",
            self.port
        )
    }

    pub async fn connect(&self) -> Client {
        self.connect_with(&self.conn_str("tributary"))
            .await
            .expect("connect")
    }

    pub async fn connect_with(&self, conn_str: &str) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(conn_str, NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The SQLSTATE of a failed statement.
pub fn code(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_string())
        .unwrap_or_else(|| format!("no db error: {e}"))
}
