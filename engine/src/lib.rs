//! Tributary's engine: everything between a SQL statement and its result.
//!
//! A [`Session`] parses statements in Tributary's dialect ([`dialect`]), sends definitions to
//! the catalog after planning them with DataFusion ([`ddl`]), writes tables as Delta commits
//! ([`dml`], [`copy`]), refreshes models in dependency order ([`refresh`]) and runs queries
//! on DataFusion with every table, model, source and view resolved through the catalog
//! ([`provider`]). System tables live in [`system`].

pub mod copy;
pub mod ddl;
pub mod dml;
mod engine;
mod housekeeping;
pub mod jobs;
pub mod metrics;
pub mod project;
pub mod quality;
pub mod refresh;
pub mod schedule;
pub mod secrets;
pub mod session;

pub use tributary_query::{lineage, planning, provider, system, time_travel};
pub use tributary_sources as sources;
pub use tributary_sql::{SqlState, dialect, error, names, options, types};
pub use tributary_storage as storage;

pub use engine::{Engine, EngineConfig};
pub use error::{Error, Result};
pub use housekeeping::PassOutcome;
pub use session::{Described, Output, Prepared, Session};
pub use storage::housekeeping::{HousekeepingPolicy, HousekeepingReport};

/// The PostgreSQL version Tributary reports to clients (what its SQL surface resembles).
pub const SERVER_VERSION: &str = "15.0 (Tributary 0.1.0)";
