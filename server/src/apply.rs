//! `tributary apply PATH`: applies a project to a running server over pgwire, with the same
//! idempotent rules as `serve --project`, and exits non-zero on the first error (for CI).

use async_trait::async_trait;
use tokio_postgres::NoTls;
use tributary_catalog::ObjectName;
use tributary_engine::project::{self, ApplyTarget};
use tributary_engine::{Error, Result};

use crate::cli::ApplyArgs;

struct Remote {
    client: tokio_postgres::Client,
}

fn remote_error(e: tokio_postgres::Error) -> Error {
    match e.as_db_error() {
        Some(db) => Error::bad_input(format!("{} (SQLSTATE {})", db.message(), db.code().code())),
        None => Error::bad_input(e.to_string()),
    }
}

impl Remote {
    /// The definition of the global object `name` listed in `tributary.<table>`.
    async fn named_definition(&self, table: &str, name: &str) -> Result<Option<String>> {
        let rows = self
            .client
            .query(
                &format!("SELECT definition FROM tributary.{table} WHERE name = $1"),
                &[&name],
            )
            .await
            .map_err(remote_error)?;
        Ok(rows.first().map(|r| r.get(0)))
    }
}

#[async_trait]
impl ApplyTarget for Remote {
    async fn definition(&mut self, name: &ObjectName) -> Result<Option<String>> {
        let rows = self
            .client
            .query(
                "SELECT definition FROM tributary.sources WHERE schema_name = $1 AND name = $2
                 UNION ALL SELECT definition FROM tributary.tables WHERE schema_name = $1 AND name = $2
                 UNION ALL SELECT definition FROM tributary.models WHERE schema_name = $1 AND name = $2
                 UNION ALL SELECT definition FROM tributary.views WHERE schema_name = $1 AND name = $2",
                &[&name.schema, &name.name],
            )
            .await
            .map_err(remote_error)?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    async fn job_definition(&mut self, name: &str) -> Result<Option<String>> {
        self.named_definition("jobs", name).await
    }

    async fn test_definition(&mut self, name: &str) -> Result<Option<String>> {
        self.named_definition("tests", name).await
    }

    async fn schema_exists(&mut self, name: &str) -> Result<bool> {
        let rows = self
            .client
            .query(
                "SELECT schema_name FROM information_schema.schemata WHERE schema_name = $1",
                &[&name],
            )
            .await
            .map_err(remote_error)?;
        Ok(!rows.is_empty())
    }

    async fn execute(&mut self, sql: &str) -> Result<()> {
        self.client.batch_execute(sql).await.map_err(remote_error)
    }
}

pub(crate) async fn run(args: ApplyArgs) -> Result<(), String> {
    let (client, connection) = tokio_postgres::connect(&args.url, NoTls)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", args.url))?;
    tokio::spawn(connection);
    let mut remote = Remote { client };
    let report = project::apply(&mut remote, &args.path)
        .await
        .map_err(|e| e.to_string())?;
    println!("{report}");
    for (what, names) in [
        ("created", &report.created),
        ("replaced", &report.replaced),
        ("unchanged", &report.unchanged),
        ("kept", &report.kept),
    ] {
        for name in names {
            println!("  {what:<9} {name}");
        }
    }
    Ok(())
}
