//! Tributary's engine: everything between a SQL statement and its result.
//!
//! Place in the data flow: the server hands each client statement to a [`Session`], which
//! parses it in Tributary's dialect ([`dialect`]) and dispatches it to a handler with a
//! [`StatementContext`] (the engine's services, the role, the session's name resolution),
//! never the session itself. Handlers define objects in the catalog after planning them
//! ([`ddl`], [`secrets`], [`jobs`]), write tables as Delta commits ([`dml`], [`copy`]) and
//! call into [`refresh`] (its own crate) for refreshes and data tests. [`Engine`] is the
//! composition root: it opens the catalog, the table store and the query environment, wires
//! them into one [`Runtime`], and reconciles them after a crash.
//!
//! Depends on every layer below (refresh, query, sources, storage, `tributary-sql`, the
//! catalog), which are re-exported under their names here. Nothing below may depend on it.

mod context;
pub mod copy;
pub mod ddl;
pub mod dml;
mod engine;
mod housekeeping;
pub mod jobs;
pub mod project;
mod refresh_statements;
pub mod secrets;
pub mod session;
mod test_statements;

pub use tributary_query::{lineage, planning, provider, system, time_travel};
pub use tributary_refresh as refresh;
pub use tributary_refresh::{Runtime, metrics, quality, schedule};
pub use tributary_sources as sources;
pub use tributary_sql::{SqlState, dialect, error, names, options, types};
pub use tributary_storage as storage;

pub use context::StatementContext;
pub use engine::{Engine, EngineConfig};
pub use error::{Error, Result};
pub use housekeeping::PassOutcome;
pub use session::{Described, Output, Prepared, Session};
pub use storage::housekeeping::{HousekeepingPolicy, HousekeepingReport};

/// The PostgreSQL version Tributary reports to clients (what its SQL surface resembles).
pub const SERVER_VERSION: &str = "15.0 (Tributary 0.1.0)";
