//! Queries: how DataFusion sees Tributary, and what it reads.
//!
//! Place in the data flow: every SELECT, every model's query and every data test is planned
//! here. [`env::QueryEnv`] holds the DataFusion base state; [`provider`] resolves names through
//! the catalog to the published version of a table or model, a source's connector or a view's
//! plan; [`planning`] turns statement text into plans (with [`time_travel`] for `VERSION AS
//! OF`); [`system`] answers the `tributary` schema and the PostgreSQL catalogs clients query;
//! [`lineage`] extracts table and column edges from plans.
//!
//! Depends on: sources (providers of sources), storage (published tables), `tributary-sql` and
//! the catalog. Must not depend on refresh or the engine: it reads what they publish, and the
//! system tables of definitions read the catalog, not the handlers that write it.

mod constant_order;
pub mod env;
mod except_all;
pub mod lineage;
pub mod planning;
pub mod provider;
pub mod system;
pub mod time_travel;

pub use env::QueryEnv;
