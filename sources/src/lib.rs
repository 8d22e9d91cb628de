//! Sources: data that lives outside Tributary and is read in place on every use.
//!
//! Place in the data flow: between the outside world and queries. Each kind of source has a
//! module that knows its options, gives DataFusion a provider for it and says how it changed
//! since the bookmark a model recorded: [`files`] (CSV, JSON, Parquet folders), [`postgres`]
//! (federated tables, with a cursor for change tracking) and [`http`] (JSON APIs polled into
//! Delta snapshots). [`change`] is the answer they give refresh, [`counting`] counts what a
//! refresh reads, [`secret`] resolves the secrets connectors use.
//!
//! [`SourceKind`] says which connector a source has.
//!
//! Depends on: storage (HTTP snapshots are Delta tables; bookmarks), `tributary-sql` and the
//! catalog. Must not depend on queries, refresh or the engine: a connector is handed the
//! catalog and the table store, never a session.

pub mod change;
pub mod counting;
pub mod files;
pub mod http;
pub mod kind;
pub mod postgres;
mod postgres_copy;
pub mod secret;
mod sized;

pub use kind::{SourceKind, stored_in_delta};
