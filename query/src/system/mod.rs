//! System tables: the `tributary` schema (catalog contents as SQL) and the PostgreSQL catalogs
//! clients expect.

pub mod definitions;
pub mod freshness;
pub mod pg_compat;
mod rows;
pub mod tributary;

pub use rows::{Col, RowsBuilder};
