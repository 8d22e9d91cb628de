//! Prometheus metrics, served as text at `GET /metrics` (see [`crate::http`]).
//!
//! Names follow `tributary_<subsystem>_<noun>_<unit>`; the only labels are `model`, `source`,
//! `status` and `strategy`, whose values are bounded (object names, run statuses, strategy
//! names, and `ok`/`error` for queries), never SQL text. The engine reports refreshes and
//! commits through [`tributary_engine::metrics::RefreshMetrics`]; the pgwire front end reports
//! statements, connections and bytes sent; the scheduler its queue; staleness and its
//! objectives (`max_staleness`) are read at each scrape from what `tributary.freshness` shows.

#![allow(
    clippy::expect_used,
    reason = "metric names, labels and buckets are constants; the metrics tests register and scrape every one"
)]

use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use futures::Stream;

use prometheus::core::Collector;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};
use tributary_catalog::{ObjectKind, RunOutcome};
use tributary_engine::Engine;

/// Refreshes take from milliseconds (unchanged inputs) to hours (a large full rebuild).
const REFRESH_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    3600.0,
];
/// Statements: point lookups to long scans.
const QUERY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Commits: one synced write each, sub-millisecond on a local SSD, more on object stores.
const COMMIT_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Every metric the server exports (one per process).
pub(crate) struct Metrics {
    registry: Registry,
    refresh_duration: HistogramVec,
    refresh_runs: IntCounterVec,
    refresh_rows_read: IntCounterVec,
    refresh_rows_written: IntCounterVec,
    delta_commit: Histogram,
    catalog_commit: Histogram,
    queries: IntCounterVec,
    query_duration: HistogramVec,
    connections: IntGauge,
    bytes_sent: IntCounter,
    scheduler_queue: IntGauge,
    test_runs: IntCounterVec,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub(crate) fn get() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        fn register<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
            registry
                .register(Box::new(c.clone()))
                .expect("metric names are unique");
            c
        }
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            HistogramOpts::new(name, help).buckets(buckets.to_vec())
        };
        Self {
            refresh_duration: register(
                &registry,
                HistogramVec::new(
                    histogram(
                        "tributary_refresh_duration_seconds",
                        "Time a model refresh took, from its start to its recorded end.",
                        REFRESH_BUCKETS,
                    ),
                    &["model", "status", "strategy"],
                )
                .expect("valid metric"),
            ),
            refresh_runs: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "tributary_refresh_runs_total",
                        "Model refreshes finished, by model, status and strategy.",
                    ),
                    &["model", "status", "strategy"],
                )
                .expect("valid metric"),
            ),
            refresh_rows_read: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "tributary_refresh_rows_read_total",
                        "Input rows scanned by successful refreshes.",
                    ),
                    &["model"],
                )
                .expect("valid metric"),
            ),
            refresh_rows_written: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "tributary_refresh_rows_written_total",
                        "Rows written by successful refreshes.",
                    ),
                    &["model"],
                )
                .expect("valid metric"),
            ),
            delta_commit: register(
                &registry,
                Histogram::with_opts(histogram(
                    "tributary_delta_commit_seconds",
                    "Time to write and sync one Delta log entry (local warehouse).",
                    COMMIT_BUCKETS,
                ))
                .expect("valid metric"),
            ),
            catalog_commit: register(
                &registry,
                Histogram::with_opts(histogram(
                    "tributary_catalog_commit_seconds",
                    "Time of the catalog commit that publishes a new Delta version.",
                    COMMIT_BUCKETS,
                ))
                .expect("valid metric"),
            ),
            queries: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "tributary_queries_total",
                        "Statements run over pgwire, by status (ok or error).",
                    ),
                    &["status"],
                )
                .expect("valid metric"),
            ),
            query_duration: register(
                &registry,
                HistogramVec::new(
                    histogram(
                        "tributary_query_duration_seconds",
                        "Time a statement took until its last row was produced.",
                        QUERY_BUCKETS,
                    ),
                    &["status"],
                )
                .expect("valid metric"),
            ),
            connections: register(
                &registry,
                IntGauge::new("tributary_connections_active", "Open pgwire connections.")
                    .expect("valid metric"),
            ),
            bytes_sent: register(
                &registry,
                IntCounter::new(
                    "tributary_pgwire_sent_bytes_total",
                    "Bytes of result rows and COPY data sent to pgwire clients (DataRow and CopyData messages, headers included).",
                )
                .expect("valid metric"),
            ),
            scheduler_queue: register(
                &registry,
                IntGauge::new(
                    "tributary_scheduler_queue_depth",
                    "Scheduled refreshes that are due and not started yet (waiting for a concurrency slot or for their upstream models).",
                )
                .expect("valid metric"),
            ),
            test_runs: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "tributary_test_runs_total",
                        "Data test executions (after refreshes and by RUN TESTS), by outcome: pass, fail, warn, error.",
                    ),
                    &["test", "model", "status"],
                )
                .expect("valid metric"),
            ),
            registry,
        }
    }

    /// Counts a pgwire connection as open until the returned guard drops.
    pub(crate) fn connection_opened(&'static self) -> ConnectionGuard {
        self.connections.inc();
        ConnectionGuard(self)
    }

    /// Counts a pgwire message of `payload` bytes sent (plus its type byte and length).
    pub(crate) fn message_sent(&self, payload: usize) {
        self.bytes_sent.inc_by(payload as u64 + 5);
    }

    /// `n` scheduled refreshes became due (`n` < 0: that many left the queue).
    pub(crate) fn scheduler_queued(&self, n: i64) {
        self.scheduler_queue.add(n);
    }

    fn query_finished(&self, ok: bool, elapsed: Duration) {
        let status = if ok { "ok" } else { "error" };
        self.queries.with_label_values(&[status]).inc();
        self.query_duration
            .with_label_values(&[status])
            .observe(elapsed.as_secs_f64());
    }

    /// The text exposition of every metric, with staleness as of now.
    pub(crate) async fn render(&self, engine: &Engine) -> String {
        let mut families = self.registry.gather();
        // The encoder refuses a family without series (no model refreshed yet).
        families.extend(
            staleness(engine)
                .await
                .into_iter()
                .flat_map(|g| g.collect())
                .filter(|f| !f.get_metric().is_empty()),
        );
        families.extend(
            test_outcomes(engine)
                .into_iter()
                .flat_map(|g| g.collect())
                .filter(|f| !f.get_metric().is_empty()),
        );
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Staleness of models and sources and their `max_staleness` objectives, as
/// `tributary.freshness` has them now: `tributary_{model,source}_staleness_seconds` (objects
/// with no data time yet have no series) and `tributary_{model,source}_staleness_objective_seconds`.
async fn staleness(engine: &Engine) -> Vec<GaugeVec> {
    let gauge = |name: &str, help: &str, label: &str| {
        GaugeVec::new(Opts::new(name, help), &[label]).expect("valid metric")
    };
    let model = gauge(
        "tributary_model_staleness_seconds",
        "Seconds since the model's last successful refresh finished.",
        "model",
    );
    let model_objective = gauge(
        "tributary_model_staleness_objective_seconds",
        "The model's max_staleness objective in seconds.",
        "model",
    );
    let source = gauge(
        "tributary_source_staleness_seconds",
        "Seconds since the source's data was last known current (newest file, last successful poll).",
        "source",
    );
    let source_objective = gauge(
        "tributary_source_staleness_objective_seconds",
        "The source's max_staleness objective in seconds.",
        "source",
    );
    let rows = match engine.freshness().await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read freshness for metrics");
            return Vec::new();
        }
    };
    for row in rows {
        let (staleness, objective) = match row.kind {
            ObjectKind::Model => (&model, &model_objective),
            ObjectKind::Source => (&source, &source_objective),
            _ => continue,
        };
        let name = row.name.to_string();
        if let Some(seconds) = row.staleness_seconds {
            staleness
                .with_label_values(&[name.as_str()])
                .set(seconds as f64);
        }
        if let Some(seconds) = row.objective_seconds {
            objective
                .with_label_values(&[name.as_str()])
                .set(seconds as f64);
        }
    }
    vec![model, model_objective, source, source_objective]
}

/// Each test's latest outcome: `tributary_test_failing` (1 when its latest execution failed,
/// warned or could not run) and `tributary_test_failing_rows`, labelled with the test, its
/// model and its severity (alerts page on `error` tests only).
fn test_outcomes(engine: &Engine) -> Vec<GaugeVec> {
    let labels = ["test", "model", "severity"];
    let failing = GaugeVec::new(
        Opts::new(
            "tributary_test_failing",
            "1 when the test's latest execution found failing rows or could not run, else 0.",
        ),
        &labels,
    )
    .expect("valid metric");
    let rows = GaugeVec::new(
        Opts::new(
            "tributary_test_failing_rows",
            "Failing rows the test's latest execution found.",
        ),
        &labels,
    )
    .expect("valid metric");
    let outcomes = match tributary_engine::quality::latest_outcomes(engine.catalog()) {
        Ok(outcomes) => outcomes,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read test results for metrics");
            return Vec::new();
        }
    };
    for (test, model, result) in outcomes {
        let values = [
            test.name.as_str(),
            model.as_deref().unwrap_or(""),
            test.severity.as_str(),
        ];
        let bad = result.status != tributary_catalog::TestStatus::Pass;
        failing
            .with_label_values(&values)
            .set(if bad { 1.0 } else { 0.0 });
        rows.with_label_values(&values)
            .set(result.failing_rows as f64);
    }
    vec![failing, rows]
}

impl tributary_engine::metrics::RefreshMetrics for Metrics {
    fn test_finished(&self, test: &str, model: &str, status: &str) {
        self.test_runs
            .with_label_values(&[test, model, status])
            .inc();
    }

    fn refresh_finished(&self, model: &str, outcome: &RunOutcome, elapsed: Duration) {
        let status = outcome.status.map(|s| s.as_str()).unwrap_or("succeeded");
        let strategy = outcome.strategy.as_deref().unwrap_or("none");
        let labels = [model, status, strategy];
        self.refresh_runs.with_label_values(&labels).inc();
        self.refresh_duration
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
        // Touch the row counters for every refreshed model, so a model that read nothing
        // still shows 0 rather than no series.
        let read = self.refresh_rows_read.with_label_values(&[model]);
        let written = self.refresh_rows_written.with_label_values(&[model]);
        read.inc_by(outcome.rows_read.unwrap_or(0).max(0) as u64);
        written.inc_by(outcome.rows_written.unwrap_or(0).max(0) as u64);
    }
}

impl tributary_engine::metrics::StorageMetrics for Metrics {
    fn delta_commit(&self, elapsed: Duration) {
        self.delta_commit.observe(elapsed.as_secs_f64());
    }

    fn catalog_commit(&self, elapsed: Duration) {
        self.catalog_commit.observe(elapsed.as_secs_f64());
    }
}

/// Decrements the active connections when its connection ends.
pub(crate) struct ConnectionGuard(&'static Metrics);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.dec();
    }
}

/// Times one statement; when dropped it counts the statement with the status it was given
/// ([`QueryTimer::succeed`]), or as an error if it never completed (a failure, a cancel, or a
/// client that went away mid-result).
pub(crate) struct QueryTimer {
    started: Instant,
    ok: bool,
    counted: bool,
}

impl QueryTimer {
    pub(crate) fn start() -> Self {
        Self {
            started: Instant::now(),
            ok: false,
            counted: true,
        }
    }

    /// Not a statement of its own after all (a Parse that succeeded: its Execute counts).
    pub(crate) fn discard(mut self) {
        self.counted = false;
    }

    /// The statement completed successfully.
    pub(crate) fn succeed(mut self) {
        self.ok = true;
    }

    /// The statement failed.
    pub(crate) fn fail(self) {}
}

impl Drop for QueryTimer {
    fn drop(&mut self) {
        if self.counted {
            get().query_finished(self.ok, self.started.elapsed());
        }
    }
}

/// A result stream that completes `timer` when its last batch was produced (or fails it on an
/// error), so a query's duration covers its execution, not just its planning.
pub(crate) fn timed_stream(
    stream: SendableRecordBatchStream,
    timer: QueryTimer,
) -> SendableRecordBatchStream {
    Box::pin(TimedStream {
        inner: stream,
        timer: Some(timer),
    })
}

struct TimedStream {
    inner: SendableRecordBatchStream,
    timer: Option<QueryTimer>,
}

impl Stream for TimedStream {
    type Item = datafusion::error::Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = ready!(self.inner.as_mut().poll_next(cx));
        match &next {
            None => {
                if let Some(timer) = self.timer.take() {
                    timer.succeed();
                }
            }
            Some(Err(_)) => {
                if let Some(timer) = self.timer.take() {
                    timer.fail();
                }
            }
            Some(Ok(_)) => {}
        }
        Poll::Ready(next)
    }
}

impl RecordBatchStream for TimedStream {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
}
