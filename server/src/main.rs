//! `tributary`: one binary that serves SQL over the PostgreSQL wire protocol, stores tables
//! and models as Delta tables, and refreshes models in dependency order.

mod apply;
mod cli;
mod config;
mod docs;
mod example;
mod http;
mod metrics;
mod pg;
mod scheduler;

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tokio::net::TcpListener;
use tributary_engine::{Engine, EngineConfig};

use cli::{Cli, Command};
use config::Settings;

/// jemalloc instead of glibc's malloc: glibc hands large freed buffers (Arrow arrays,
/// Parquet pages) back to the kernel at once and faults in zeroed pages for the next ones,
/// a fifth of a 10M-row model's build (`clear_page_erms` in `perf`); jemalloc keeps freed
/// pages for reuse for seconds before it returns them. (mimalloc returns them after 10 ms and
/// made the same build slower.)
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Tributary's own progress at info; the storage libraries only when something is wrong.
const DEFAULT_LOG_FILTER: &str = "info,buoyant_kernel=warn,deltalake=warn,deltalake_core=warn,deltalake_core::operations::merge=error,deltalake_core::kernel::schema::cast=error,datafusion=warn,tokio_postgres=warn";

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRIBUTARY_LOG")
                .unwrap_or_else(|_| DEFAULT_LOG_FILTER.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // Planning and optimizing recurse as deep as a query's expressions nest (a long IN list
    // becomes an OR chain in Delta's scans), so workers get more than tokio's 2 MiB of stack;
    // it is address space, touched only as deep as a thread goes.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(16 * 1024 * 1024)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => {
                let settings = Settings::resolve(cli.config.as_ref(), *args)?;
                serve(settings, None).await
            }
            Command::Apply(args) => apply::run(args).await,
            Command::Demo(args) => example::run(cli.config.as_ref(), *args).await,
            Command::Generate(args) => example::generate::run(&args).map(|g| {
                println!(
                    "generated {} files in {}: {} history rows, {} bank rows, {} card payments",
                    g.files,
                    args.out.display(),
                    g.history_rows,
                    g.bank_rows,
                    g.card_rows
                )
            }),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn bind(addr: &str, what: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for {what} on {addr}: {e}"))
}

/// Runs the server; `project` (a project and the files to apply from it) overrides the
/// settings' project.
async fn serve(
    settings: Settings,
    project: Option<(std::path::PathBuf, Vec<std::path::PathBuf>)>,
) -> Result<(), String> {
    let pg_listener = bind(&settings.listen, "pgwire").await?;
    let pg_addr: SocketAddr = pg_listener.local_addr().map_err(|e| e.to_string())?;
    let trust = settings.password.is_none();
    if trust && !pg::is_loopback(&pg_addr) {
        return Err(format!(
            "refusing to listen on {pg_addr} without a password: trust authentication is only \
             allowed on loopback (set --password or TRIBUTARY_PASSWORD)"
        ));
    }
    let http_listener = bind(&settings.http, "http").await?;
    let http_addr = http_listener.local_addr().map_err(|e| e.to_string())?;

    tributary_engine::metrics::install(metrics::get());
    let engine = Engine::open(EngineConfig {
        warehouse: settings.warehouse.clone(),
        catalog: settings.catalog.clone(),
        database: settings.database.clone(),
        memory_limit: settings.memory_mb << 20,
    })
    .await
    .map_err(|e| format!("cannot open the warehouse \"{}\": {e}", settings.warehouse))?;

    if let Some(policy) = settings.housekeeping.clone() {
        engine.start_housekeeping(policy);
    }

    let project = match project {
        Some(given) => Some(given),
        None => match &settings.project {
            Some(path) => Some((
                path.clone(),
                tributary_engine::project::project_files(path)
                    .map_err(|e| format!("applying project {}: {e}", path.display()))?,
            )),
            None => None,
        },
    };
    if let Some((project, files)) = &project {
        let mut session = engine.session(&settings.superuser);
        let report = tributary_engine::project::apply_files(&mut session, files)
            .await
            .map_err(|e| format!("applying project {}: {e}", project.display()))?;
        tracing::info!(project = %project.display(), %report, "project applied");
    }

    if let Some(config) = settings.scheduler.clone() {
        scheduler::start(engine.clone(), config);
    }

    let auth = Arc::new(pg::AuthConfig::new(
        trust,
        &settings.database,
        &settings.superuser,
        settings.password.as_deref(),
    ));
    let http_engine = engine.clone();
    tokio::spawn(async move {
        if let Err(e) = http::serve(http_listener, http_engine).await {
            tracing::error!(error = %e, "http listener failed");
        }
    });
    // One machine-readable line so scripts and tests learn the ports (also with port 0).
    println!("tributary ready pgwire={pg_addr} http={http_addr}");
    let _ = std::io::stdout().flush();
    tracing::info!(
        "connect with: psql -h {} -p {} -U {} {}",
        pg_addr.ip(),
        pg_addr.port(),
        settings.superuser,
        settings.database
    );
    pg::serve(pg_listener, engine, auth, settings.max_connections)
        .await
        .map_err(|e| format!("pgwire listener failed: {e}"))
}
