//! Storage: every table and model is a Delta table under the warehouse root.
//!
//! Place in the data flow: below every reader and writer. [`store::TableStore`] owns the
//! warehouse and the published version of each stored object; [`delta`] opens, commits and
//! provides tables; [`scan`] reads them (with [`deletion`] vectors and the [`page_index`]
//! cache); [`write`] and [`cluster`] (with [`key_sort`]) write a plan's rows as Delta files;
//! [`durable`] makes a local commit survive power loss; [`housekeeping`] compacts, purges,
//! checkpoints and vacuums one table; [`bookmarks`] is the typed form of what a commit records
//! beside its data (what a model read of each input).
//!
//! Depends on: the catalog (published versions) and `tributary-sql` (errors, Arrow types).
//! Must not depend on sources, queries, refresh or the engine: it knows tables and files,
//! not what a model or a source is.

pub mod bookmarks;
pub mod cluster;
pub mod deletion;
pub mod delta;
pub mod durable;
pub mod housekeeping;
pub mod key_sort;
pub mod metrics;
pub mod page_index;
pub mod scan;
pub mod store;
pub mod write;

pub use store::TableStore;
