//! System tables: the `tributary` schema (catalog contents as SQL) and the PostgreSQL catalogs
//! clients expect.

mod rows;
pub mod tributary;

pub use rows::{Col, RowsBuilder};
