//! Tributary's catalog: the durable record of every schema, source, table, model and view,
//! the dependency edges between them, and the history of refresh runs.
//!
//! The catalog is the single source of truth for *definitions*; data lives in Delta tables
//! whose location the catalog records. Every change is committed (SQLite in WAL mode with
//! `synchronous=FULL`) before the call returns, so an acknowledged DDL statement survives a
//! crash. The engine calls this API; the catalog never executes queries or opens sockets.

mod error;
mod jobs;
mod objects;
mod quality;
mod runs;
mod secrets;
mod store;

pub use error::{Error, ObjectClass, Result};
pub use jobs::{Job, JobRun, NewJob};
pub use objects::{CatalogObject, ColumnDef, NewObject, ObjectKind, ObjectName};
pub use quality::{
    DataTest, NewTest, NewTestResult, Severity, TestFailure, TestResult, TestStatus,
};
pub use runs::{Run, RunOutcome, RunStatus};
pub use secrets::{Connection, Secret, SecretSource, SecretValue};
pub use store::{Catalog, ColumnEdge};
