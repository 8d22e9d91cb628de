//! `tributary demo`: the example financial project, running, with its live inputs.
//!
//! The project in `models/` reads four kinds of input, and this command provides the live ones
//! before it serves: the transactional bank database (PostgreSQL, loaded from
//! `seeds/bank/` when a server is reachable; otherwise the project reads the same files
//! through `seeds/bank/offline.sql`), an FX rates API (a tiny local HTTP server standing in
//! for a public one) and a card-payment stream (files landing in `landing/card_payments/`).
//! While the server runs, new card payments land and bank transactions are booked, so
//! `on change` schedules fire and freshness moves.

pub(crate) mod bank;
pub(crate) mod fx_feed;
pub(crate) mod generate;
pub(crate) mod stream;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::config::{ServeArgs, Settings};

#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// The transactional bank's PostgreSQL server (a maintenance database on it); the demo
    /// creates the `bank` database there. Unreachable: the bank is read from seeds/bank/.
    #[arg(
        long,
        env = "TRIBUTARY_DEMO_BANK",
        default_value = "postgresql://postgres@127.0.0.1:5432/postgres"
    )]
    pub bank_postgres: String,
    /// Address of the local FX rates API the project's HTTP source polls.
    #[arg(long, default_value = "127.0.0.1:6546")]
    pub fx_listen: String,
    /// Time between two batches of live activity (card payments, bank bookings), e.g. '5s'.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub tick: Duration,
}

/// The project file the bank comes from when PostgreSQL is reachable, and its stand-in.
const BANK_FILE: &str = "15_bank.sql";
const BANK_OFFLINE: &str = "seeds/bank/offline.sql";
pub(crate) const LANDING: &str = "landing/card_payments";

pub(crate) async fn run(config: Option<&PathBuf>, mut args: DemoArgs) -> Result<(), String> {
    let project = args
        .serve
        .project
        .take()
        .unwrap_or_else(|| PathBuf::from("models"));
    let settings = Settings::resolve(config, std::mem::take(&mut args.serve))?;

    fx_feed::start(&args.fx_listen).await?;
    println!("demo: FX rates API on http://{}/v1/rates", args.fx_listen);

    let bank = match bank::load(&args.bank_postgres).await {
        Ok(bank) => {
            println!("demo: bank database loaded ({})", bank.summary());
            Some(bank)
        }
        Err(e) => {
            println!(
                "demo: note: PostgreSQL is not reachable ({e}); the bank is read from \
                 seeds/bank/ instead of a federated source"
            );
            None
        }
    };
    stream::prepare_landing(Path::new(LANDING))?;
    let files = project_files(&project, bank.is_some())?;
    stream::start(Path::new(LANDING).to_path_buf(), bank, args.tick);
    println!(
        "demo: card payments land in {LANDING}/ every {}",
        humantime::format_duration(args.tick)
    );
    let (host, port) = settings
        .listen
        .rsplit_once(':')
        .unwrap_or((settings.listen.as_str(), "6543"));
    println!(
        "demo: once the project is applied: psql -h {host} -p {port} -U {} {}; documentation \
         http://{}/, metrics http://{}/metrics; Grafana dashboards in grafana/ \
         (docker compose up runs them)",
        settings.superuser, settings.database, settings.http, settings.http
    );
    crate::serve(settings, Some((project, files))).await
}

/// The project's files, with the federated bank swapped for its file-backed stand-in when
/// PostgreSQL is not there.
fn project_files(project: &Path, with_postgres: bool) -> Result<Vec<PathBuf>, String> {
    let mut files = tributary_engine::project::project_files(project).map_err(|e| e.to_string())?;
    if !with_postgres {
        for file in &mut files {
            if file.file_name().is_some_and(|n| n == BANK_FILE) {
                *file = PathBuf::from(BANK_OFFLINE);
            }
        }
    }
    Ok(files)
}
