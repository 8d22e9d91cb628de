//! The scheduler loop: every tick it polls the HTTP sources whose `poll` interval passed
//! ([`tributary_engine::Engine::due_http_sources`]) and asks the engine which models are due
//! ([`tributary_engine::schedule::due`]: `'every'` and `'cron'` by time since the last run,
//! `'on change'` when an input changed, failed attempts by their retry policy) and refreshes
//! them through the same path as `REFRESH` (dependency order, downstream of a failure skipped
//! with that reason), at most `max_concurrent` at once (polls and jobs included), each under
//! its model's `timeout`.
//!
//! Everything the decision needs lives in the catalog (run history, options), so schedules
//! and retries carry over a restart: runs a crash interrupted are recorded failed at start-up
//! and retried on the first tick. The one thing kept in memory is, per `'on change'` model,
//! the input state its last scheduled attempt saw, so a failing model is not re-run every
//! second for the same change once its retries are spent (after a restart it gets one more
//! attempt).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tributary_catalog::{CatalogObject, ObjectKind, RunOutcome, RunStatus};
use tributary_engine::schedule::{self, Clock, ModelSchedule, ModelState, Schedule};
use tributary_engine::{Engine, Error};

/// How often the scheduler looks for due models.
pub(crate) const TICK: Duration = Duration::from_secs(1);

/// The scheduler's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SchedulerConfig {
    /// Most refreshes the scheduler runs at once.
    pub max_concurrent: usize,
}

/// Starts the loop on the runtime; it runs until the server stops.
pub(crate) fn start(engine: Engine, config: SchedulerConfig) -> tokio::task::JoinHandle<()> {
    let scheduler = Scheduler {
        engine,
        clock: Arc::new(schedule::SystemClock),
        permits: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent.max(1))),
        in_flight: Default::default(),
        attempted: Default::default(),
        jobs_in_flight: Default::default(),
    };
    tracing::info!(max_concurrent = config.max_concurrent, "scheduler started");
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            interval.tick().await;
            if let Err(e) = scheduler.tick().await {
                tracing::warn!(error = %e, "scheduler tick failed");
            }
        }
    })
}

struct Scheduler {
    engine: Engine,
    clock: Arc<dyn Clock>,
    permits: Arc<tokio::sync::Semaphore>,
    /// Models a pass started and has not finished (never started twice at once).
    in_flight: Arc<Mutex<HashSet<i64>>>,
    /// Per `'on change'` model: the input state its last scheduled attempt saw.
    attempted: Arc<Mutex<HashMap<i64, String>>>,
    /// Jobs started and not finished.
    jobs_in_flight: Arc<Mutex<HashSet<i64>>>,
}

impl Scheduler {
    /// Starts the jobs due now, each in the background under a refresh permit.
    fn start_jobs(&self, now: chrono::DateTime<chrono::Utc>) -> Result<(), Error> {
        for (job, decision, run_time) in tributary_engine::jobs::due_jobs(&self.engine, now)? {
            if !lock(&self.jobs_in_flight).insert(job.id) {
                continue;
            }
            tracing::info!(job = %job.name, trigger = decision.trigger, reason = %decision.reason, %run_time, "job due");
            let engine = self.engine.clone();
            let permits = Arc::clone(&self.permits);
            let in_flight = Arc::clone(&self.jobs_in_flight);
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await;
                if let Err(e) =
                    tributary_engine::jobs::run_job(&engine, &job, decision.trigger, run_time).await
                {
                    tracing::warn!(job = %job.name, error = %e, "cannot record the job's run");
                }
                lock(&in_flight).remove(&job.id);
            });
        }
        Ok(())
    }

    /// Finds the due models and starts one pass refreshing them (in the background, so a
    /// long refresh does not hold back models due later).
    async fn tick(&self) -> Result<(), Error> {
        let now = self.clock.now();
        if let Err(e) = self.poll_sources(now) {
            tracing::warn!(error = %e, "cannot poll http sources");
        }
        if let Err(e) = self.start_jobs(now) {
            tracing::warn!(error = %e, "cannot start due jobs");
        }
        let catalog = self.engine.catalog();
        let in_flight = lock(&self.in_flight).clone();
        let mut due: BTreeMap<i64, String> = BTreeMap::new();
        for object in catalog.objects()? {
            if object.kind != ObjectKind::Model || in_flight.contains(&object.id) {
                continue;
            }
            // Options were checked at CREATE MODEL; one that no longer parses is left alone.
            let Ok(policy) = ModelSchedule::from_options(&object.options) else {
                continue;
            };
            if policy.schedule == Schedule::Manual {
                continue;
            }
            let runs = catalog.latest_runs(object.id, schedule::RUNS_NEEDED)?;
            let mut changed_state = None;
            if policy.schedule == Schedule::OnChange {
                match tributary_engine::refresh::input_change(self.engine.runtime(), &object).await
                {
                    Ok(Some(state)) => {
                        if lock(&self.attempted).get(&object.id) != Some(&state) {
                            changed_state = Some(state);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(model = %object.name, error = %e, "cannot check inputs")
                    }
                }
            }
            let state = ModelState {
                schedule: &policy,
                created_at: chrono::DateTime::parse_from_rfc3339(&object.created_at)
                    .map(|t| t.to_utc())
                    .unwrap_or(now),
                runs: &runs,
                input_changed: changed_state.is_some(),
            };
            let Some(decision) = schedule::due(&state, now) else {
                continue;
            };
            tracing::info!(model = %object.name, trigger = decision.trigger, reason = %decision.reason, "model due");
            if let Some(state) = changed_state {
                lock(&self.attempted).insert(object.id, state);
            }
            due.insert(object.id, decision.trigger.to_string());
        }
        if due.is_empty() {
            return Ok(());
        }
        lock(&self.in_flight).extend(due.keys().copied());
        let engine = self.engine.clone();
        let permits = Arc::clone(&self.permits);
        let in_flight = Arc::clone(&self.in_flight);
        let queue = Queue::new(due.len());
        tokio::spawn(async move {
            let run = |object: CatalogObject| {
                let trigger = due.get(&object.id).cloned().unwrap_or_default();
                run_one(&engine, &permits, object, trigger, &queue)
            };
            // Failures are recorded on their runs (and logged); nobody waits for this pass.
            let _ = tributary_engine::refresh::refresh_selected(engine.runtime(), &due, run).await;
            let mut in_flight = lock(&in_flight);
            for id in due.keys() {
                in_flight.remove(id);
            }
        });
        Ok(())
    }
}

impl Scheduler {
    /// Starts a poll of every HTTP source whose `poll` interval passed, each in the
    /// background (a slow API holds back nothing else) and never two at once for one source.
    /// A poll writes a snapshot like a refresh, so it takes one of the refresh permits.
    /// A poll that brings a new snapshot is a new Delta version of the source, which the
    /// `'on change'` models over it see on a later tick.
    fn poll_sources(&self, now: chrono::DateTime<chrono::Utc>) -> Result<(), Error> {
        for source in self.engine.due_http_sources(now)? {
            if !lock(&self.in_flight).insert(source.id) {
                continue;
            }
            let engine = self.engine.clone();
            let in_flight = Arc::clone(&self.in_flight);
            let permits = Arc::clone(&self.permits);
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await;
                // The outcome (and any error) is recorded as a run of the source.
                let _ = engine
                    .poll_source(&source, schedule::TRIGGER_SCHEDULE)
                    .await;
                lock(&in_flight).remove(&source.id);
            });
        }
        Ok(())
    }
}

/// The refreshes of one pass that have not started yet, mirrored in the
/// `tributary_scheduler_queue_depth` gauge; models the pass skips (an upstream failed) leave
/// the queue when the pass ends.
struct Queue(std::sync::atomic::AtomicI64);

impl Queue {
    fn new(due: usize) -> Self {
        crate::metrics::get().scheduler_queued(due as i64);
        Self(std::sync::atomic::AtomicI64::new(due as i64))
    }

    fn started(&self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        crate::metrics::get().scheduler_queued(-1);
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        let left = self.0.load(std::sync::atomic::Ordering::Relaxed);
        crate::metrics::get().scheduler_queued(-left);
    }
}

/// One refresh under the concurrency bound and the model's `timeout`.
async fn run_one(
    engine: &Engine,
    permits: &tokio::sync::Semaphore,
    object: CatalogObject,
    trigger: String,
    queue: &Queue,
) -> Result<(), Error> {
    let _permit = permits
        .acquire()
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    queue.started();
    let timeout = ModelSchedule::from_options(&object.options)
        .ok()
        .and_then(|s| s.timeout);
    let refresh =
        tributary_engine::refresh::refresh_one(engine.runtime(), &object, &trigger, false);
    let Some(limit) = timeout else {
        return refresh.await.map(|_| ());
    };
    let last_before = last_run_id(engine, object.id)?;
    match tokio::time::timeout(limit, refresh).await {
        Ok(result) => result.map(|_| ()),
        Err(_) => {
            // Dropping the refresh recorded its run as canceled; say why instead.
            let message = format!("timed out after {}", humantime::format_duration(limit));
            let catalog = engine.catalog();
            for run in catalog.latest_runs(object.id, 1)? {
                if run.id > last_before && run.status != RunStatus::Succeeded {
                    catalog.finish_run(
                        run.id,
                        &RunOutcome {
                            status: Some(RunStatus::Failed),
                            error: Some(message.clone()),
                            ..Default::default()
                        },
                    )?;
                }
            }
            tracing::warn!(model = %object.name, %message, "refresh timed out");
            Err(Error::RefreshFailed {
                model: object.name.to_string(),
                source: Box::new(Error::Internal(message)),
            })
        }
    }
}

fn last_run_id(engine: &Engine, object_id: i64) -> Result<i64, Error> {
    Ok(engine
        .catalog()
        .latest_runs(object_id, 1)?
        .last()
        .map_or(0, |r| r.id))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
