//! Refreshes: from a model's definition and its inputs' changes to a published Delta version.
//!
//! Place in the data flow: below the engine's statement handlers and the server's scheduler,
//! above queries, sources and storage. A refresh plans the model ([`plans`]), reads what
//! changed in its inputs since the bookmarks of its last commit ([`changes`], [`sensor`]),
//! picks a strategy ([`strategy`]: full, append, keyed merge, fold), writes one Delta commit
//! carrying the run id and the new bookmarks ([`executor`], [`keyed`]), runs the model's data
//! tests on that version before publishing it ([`quality`]), and records the run. [`dag`]
//! orders refreshes by dependency and reconciles a crash's leftovers at start-up;
//! [`schedule`] decides when a model or job is due. [`Runtime`] is the set of shared
//! services all of it works with.
//!
//! Depends on: query (planning, providers, lineage), sources (changes of files and PostgreSQL
//! cursors), storage (Delta tables, bookmarks), `tributary-sql` and the catalog. Must not
//! depend on the engine: statements (`REFRESH`, `CREATE TEST`) call in here, never the
//! reverse, and results go to the catalog, not to a client.

pub mod changes;
mod columns;
pub mod dag;
pub mod executor;
mod keyed;
mod lateness;
pub mod metrics;
mod outer;
mod plans;
pub mod quality;
mod runtime;
pub mod schedule;
pub(crate) mod sensor;
pub mod strategy;

pub use dag::{
    Explanation, MODEL_OPTIONS, explain, input_change, recover, refresh_all, refresh_around,
    refresh_downstream_of, refresh_selected,
};
pub use executor::refresh_one;
pub use runtime::Runtime;
pub use tributary_sql::error::{Error, Result};
