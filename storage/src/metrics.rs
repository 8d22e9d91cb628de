//! What storage reports to whoever keeps metrics: Delta commits and the catalog commits that
//! publish them. Storage knows nothing of Prometheus; the engine installs a sink once at
//! start-up (its own sink extends [`StorageMetrics`]). Without one, reporting costs nothing.

use std::sync::OnceLock;
use std::time::Duration;

/// Receives storage's measurements. Calls are made inline on the writer's task, so an
/// implementation must be cheap and never block.
pub trait StorageMetrics: Send + Sync {
    /// A Delta commit (the `_delta_log` entry, written and synced) took `elapsed`.
    fn delta_commit(&self, elapsed: Duration);

    /// A catalog commit that publishes a new Delta version took `elapsed`.
    fn catalog_commit(&self, elapsed: Duration);
}

static SINK: OnceLock<&'static dyn StorageMetrics> = OnceLock::new();

/// Installs the process's metrics sink; returns false if one was installed already.
pub fn install(sink: &'static dyn StorageMetrics) -> bool {
    SINK.set(sink).is_ok()
}

/// Reports a Delta commit that took `elapsed`.
pub fn delta_commit(elapsed: Duration) {
    if let Some(sink) = SINK.get() {
        sink.delta_commit(elapsed);
    }
}

/// Reports a catalog commit that took `elapsed`.
pub fn catalog_commit(elapsed: Duration) {
    if let Some(sink) = SINK.get() {
        sink.catalog_commit(elapsed);
    }
}
