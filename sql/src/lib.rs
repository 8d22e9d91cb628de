//! Tributary's SQL vocabulary, shared by every layer above the catalog.
//!
//! Place in the data flow: a statement's text enters here first. [`dialect`] turns it into a
//! [`dialect::Statement`] (standard SQL for DataFusion, or one of Tributary's own statements);
//! [`names`] and [`types`] say how identifiers and PostgreSQL type names map onto the catalog
//! and Arrow; [`options`] types the values of `WITH (...)` options; [`error`] is the one error enum every layer returns, and [`SqlState`] is the
//! PostgreSQL condition each error is reported as.
//!
//! Depends on: the catalog (its errors convert into ours) and on DataFusion's parser and
//! Arrow types. Must not depend on storage, sources, query planning, refresh or the engine:
//! everything else builds on this crate, so nothing here may know how statements are run.

pub mod dialect;
pub mod error;
pub mod names;
pub mod options;
mod sqlstate;
pub mod types;

pub use error::{Error, Result};
pub use sqlstate::SqlState;
