//! The command line: `tributary serve | apply | demo | generate`. Each subcommand's flags live
//! with what runs it (`config::ServeArgs`, `example::DemoArgs`, ...); this module only names
//! them, so configuration and the example never import each other through it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::ServeArgs;

#[derive(Parser, Debug)]
#[command(
    name = "tributary",
    version,
    about = "SQL data platform over the PostgreSQL wire protocol"
)]
pub(crate) struct Cli {
    /// Configuration file (TOML); `./tributary.toml` is read when it exists.
    #[arg(long, global = true, env = "TRIBUTARY_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Apply a project (a folder of .sql files) to a running server, idempotently.
    Apply(ApplyArgs),
    /// Run the example financial project with its live inputs (bank database, FX rates API,
    /// card-payment stream); takes every `serve` option.
    Demo(Box<crate::example::DemoArgs>),
    /// Generate the example project's data at any scale, deterministic by seed.
    Generate(crate::example::generate::GenerateArgs),
}

#[derive(Args, Debug)]
pub(crate) struct ApplyArgs {
    /// The project: a folder of .sql files (applied in path order) or one file.
    pub path: PathBuf,
    /// The server to apply to.
    #[arg(
        long,
        env = "TRIBUTARY_URL",
        default_value = "postgresql://tributary@127.0.0.1:6543/tributary"
    )]
    pub url: String,
}
