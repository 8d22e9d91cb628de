//! What refreshes and data tests report to whoever keeps metrics: finished refreshes and data tests, and
//! (through [`StorageMetrics`], which storage reports to) Delta and catalog commits. The
//! refresh layer knows nothing of Prometheus or HTTP; the server installs an [`RefreshMetrics`] sink
//! once at start-up and exports what it receives. Without a sink (tests,
//! `tributary apply`) reporting costs nothing.

use std::sync::OnceLock;
use std::time::Duration;

use tributary_catalog::RunOutcome;
pub use tributary_storage::metrics::StorageMetrics;

/// Receives the engine's measurements. Calls are made inline on the engine's tasks, so an
/// implementation must be cheap and never block.
pub trait RefreshMetrics: StorageMetrics {
    /// A refresh of `model` (`schema.name`) finished and was recorded in the catalog with
    /// `outcome` (its status, strategy and row counts), `elapsed` after it started.
    fn refresh_finished(&self, model: &str, outcome: &RunOutcome, elapsed: Duration);

    /// Data test `test` on `object` ran with `status` (`pass`, `fail`, `warn`, `error`).
    fn test_finished(&self, test: &str, object: &str, status: &str);
}

static SINK: OnceLock<&'static dyn RefreshMetrics> = OnceLock::new();

/// Installs the process's metrics sink (for storage's reports too); returns false if one was
/// installed already.
pub fn install(sink: &'static dyn RefreshMetrics) -> bool {
    SINK.set(sink).is_ok() && tributary_storage::metrics::install(sink)
}

fn sink() -> Option<&'static dyn RefreshMetrics> {
    SINK.get().copied()
}

pub fn refresh_finished(model: &impl std::fmt::Display, outcome: &RunOutcome, elapsed: Duration) {
    if let Some(sink) = sink() {
        sink.refresh_finished(&model.to_string(), outcome, elapsed);
    }
}

pub fn test_finished(test: &str, object: &impl std::fmt::Display, status: &str) {
    if let Some(sink) = sink() {
        sink.test_finished(test, &object.to_string(), status);
    }
}
