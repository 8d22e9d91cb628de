//! Model schedules: when the scheduler refreshes a model by itself, and how it retries.
//!
//! This module is pure: it parses the `schedule`, `retries`, `retry_delay` and `timeout`
//! options (`CREATE MODEL` rejects invalid values with 22023 naming the option, through
//! [`ModelSchedule::from_options`]) and decides from a model's run history, whether its inputs
//! changed and a [`Clock`] which models are due ([`due`]). Keeping the decision free of I/O
//! and of the real clock lets it be tested exhaustively with a [`FakeClock`], no sleeping;
//! the loop that asks it every second and runs the refreshes lives in the server
//! (`server/src/scheduler.rs`), and the "did an input change" probe in
//! [`crate::input_change`].
//!
//! Cron expressions are parsed by the `croner` crate (standard five fields, optional seconds,
//! `@daily` and friends), evaluated in UTC; durations by `humantime` (`'30 seconds'`,
//! `'10 minutes'`, `'1h 30m'`).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tributary_catalog::{Run, RunStatus};

use tributary_sql::error::{Error, Result};
use tributary_sql::options::parse_duration;

/// The trigger recorded on runs the scheduler starts because they are due.
pub const TRIGGER_SCHEDULE: &str = "schedule";
/// The trigger recorded on runs that retry a failed attempt.
pub const TRIGGER_RETRY: &str = "retry";
/// How `recover` words the error of a run a crash interrupted (such runs are retried).
const INTERRUPTED: &str = "interrupted";

/// When a model refreshes by itself.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// Only `REFRESH` (the default).
    Manual,
    /// When an input changed since the model's last refresh: a new Delta version of a table
    /// or model, new or changed files of a file source.
    OnChange,
    /// A fixed time after the last run started.
    Every(Duration),
    /// At the times a cron expression names (UTC).
    Cron(Box<croner::Cron>),
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let lower = text.to_ascii_lowercase();
        if lower == "manual" {
            return Ok(Schedule::Manual);
        }
        if lower == "on change" {
            return Ok(Schedule::OnChange);
        }
        if let Some(rest) = lower.strip_prefix("every ") {
            let rest = rest.trim();
            // 'every minute', 'every hour', 'every day'
            let rest = if rest.starts_with(|c: char| c.is_ascii_digit()) {
                rest.to_string()
            } else {
                format!("1 {rest}")
            };
            let every = parse_duration("schedule", &rest)?;
            if every < Duration::from_secs(1) {
                return Err(invalid(
                    "schedule",
                    "the interval must be at least 1 second",
                ));
            }
            return Ok(Schedule::Every(every));
        }
        if let Some(rest) = text
            .strip_prefix("cron ")
            .or_else(|| text.strip_prefix("CRON "))
        {
            let cron: croner::Cron = rest.trim().parse().map_err(|e| {
                invalid("schedule", &format!("bad cron expression \"{rest}\": {e}"))
            })?;
            return Ok(Schedule::Cron(Box::new(cron)));
        }
        Err(invalid(
            "schedule",
            &format!(
                "\"{text}\" is not a schedule (write 'on change', 'every 5 minutes', \
                 'cron 0 6 * * *' or 'manual')"
            ),
        ))
    }
}

/// A model's schedule with its retry policy and time limit.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSchedule {
    pub schedule: Schedule,
    /// Attempts after a failed one (so at most `retries + 1` runs per due time).
    pub retries: u32,
    pub retry_delay: Duration,
    /// A refresh running longer is stopped and recorded failed.
    pub timeout: Option<Duration>,
}

/// `retry_delay` when none is given.
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(30);

impl ModelSchedule {
    /// Reads (and checks) the options of a model; absent options take their defaults.
    pub fn from_options(options: &BTreeMap<String, String>) -> Result<Self> {
        let schedule = match options.get("schedule") {
            Some(text) => Schedule::parse(text)?,
            None => Schedule::Manual,
        };
        let retries = match options.get("retries") {
            Some(text) => text
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n <= 100)
                .ok_or_else(|| {
                    invalid(
                        "retries",
                        &format!("\"{text}\" is not a whole number from 0 to 100"),
                    )
                })?,
            None => 0,
        };
        let retry_delay = match options.get("retry_delay") {
            Some(text) => parse_duration("retry_delay", text)?,
            None => DEFAULT_RETRY_DELAY,
        };
        let timeout = match options.get("timeout") {
            Some(text) => {
                let timeout = parse_duration("timeout", text)?;
                if timeout.is_zero() {
                    return Err(invalid("timeout", "must be longer than zero"));
                }
                Some(timeout)
            }
            None => None,
        };
        Ok(Self {
            schedule,
            retries,
            retry_delay,
            timeout,
        })
    }
}

fn invalid(option: &str, message: &str) -> Error {
    Error::InvalidOption {
        option: option.into(),
        message: message.into(),
    }
}

/// The time, from the system or from a test.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct FakeClock(Mutex<DateTime<Utc>>);

impl FakeClock {
    pub fn new(now: DateTime<Utc>) -> Self {
        Self(Mutex::new(now))
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *now += chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
    }

    pub fn set(&self, to: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = to;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the due computation needs to know about one model.
#[derive(Debug, Clone)]
pub struct ModelState<'a> {
    pub schedule: &'a ModelSchedule,
    /// When the model was created (the start of a cron schedule without runs).
    pub created_at: DateTime<Utc>,
    /// The model's runs, oldest first (the last few are enough: see [`RUNS_NEEDED`]).
    pub runs: &'a [Run],
    /// For `'on change'`: an input changed since the last refresh, and the scheduler has not
    /// already attempted that same change.
    pub input_changed: bool,
}

/// How many of a model's latest runs [`due`] looks at: a retry chain is at most 101 long.
pub const RUNS_NEEDED: usize = 102;

/// Why a model is due now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// `schedule` or `retry`, recorded on the run.
    pub trigger: &'static str,
    pub reason: String,
}

/// Whether a model is due at `now`: a failed scheduled attempt with retries left is retried
/// once `retry_delay` passed since it ended (a run a crash interrupted is always retried, and
/// does not count as an attempt); otherwise the schedule decides. While a run is in progress
/// nothing is due.
pub fn due(model: &ModelState<'_>, now: DateTime<Utc>) -> Option<Due> {
    let schedule = model.schedule;
    if schedule.schedule == Schedule::Manual {
        return None;
    }
    let last = model
        .runs
        .iter()
        .rev()
        .find(|r| r.status != RunStatus::Skipped);
    if last.is_some_and(|r| r.status == RunStatus::Running) {
        return None;
    }
    if let Some(retry) = retry_due(model, now) {
        return retry;
    }
    let last_started = model
        .runs
        .iter()
        .rev()
        .find(|r| r.status != RunStatus::Skipped)
        .and_then(|r| timestamp(&r.started_at));
    match &schedule.schedule {
        Schedule::Manual => None,
        Schedule::OnChange => model.input_changed.then(|| Due {
            trigger: TRIGGER_SCHEDULE,
            reason: "an input changed".into(),
        }),
        Schedule::Every(every) => {
            let next = match last_started {
                Some(at) => at + chrono::Duration::from_std(*every).ok()?,
                None => model.created_at,
            };
            (now >= next).then(|| Due {
                trigger: TRIGGER_SCHEDULE,
                reason: format!("every {}", humantime::format_duration(*every)),
            })
        }
        Schedule::Cron(cron) => {
            let since = last_started.unwrap_or(model.created_at);
            let next = cron.find_next_occurrence(&since, false).ok()?;
            (now >= next).then(|| Due {
                trigger: TRIGGER_SCHEDULE,
                reason: format!("cron {}", cron.pattern),
            })
        }
    }
}

/// `Some(decision)` when the last attempt failed and the retry policy decides; `None` when
/// the schedule decides.
fn retry_due(model: &ModelState<'_>, now: DateTime<Utc>) -> Option<Option<Due>> {
    let schedule = model.schedule;
    let attempts: Vec<&Run> = model
        .runs
        .iter()
        .rev()
        .filter(|r| r.status != RunStatus::Skipped)
        .take_while(|r| r.status == RunStatus::Failed)
        .collect();
    let last = attempts.first()?;
    // The failures of this chain: the retries back to (and including) the run that started it.
    let chain_len = attempts
        .iter()
        .position(|r| r.trigger != TRIGGER_RETRY)
        .map_or(attempts.len(), |i| i + 1);
    let chain = &attempts[..chain_len];
    let interrupted = |r: &Run| {
        r.error
            .as_deref()
            .is_some_and(|e| e.starts_with(INTERRUPTED))
    };
    let scheduled = chain
        .last()
        .is_some_and(|r| r.trigger == TRIGGER_SCHEDULE || r.trigger == TRIGGER_RETRY);
    if !scheduled && !interrupted(last) {
        return None;
    }
    let counted = chain.iter().filter(|r| !interrupted(r)).count();
    // A refresh that takes the server down each time it runs is not retried forever.
    if counted > schedule.retries as usize || chain.len() > schedule.retries as usize + 3 {
        return None;
    }
    let ended = last
        .finished_at
        .as_deref()
        .and_then(timestamp)
        .or_else(|| timestamp(&last.started_at))?;
    let delay = if interrupted(last) {
        Duration::ZERO
    } else {
        schedule.retry_delay
    };
    let at = ended + chrono::Duration::from_std(delay).ok()?;
    Some((now >= at).then(|| Due {
        trigger: TRIGGER_RETRY,
        reason: if interrupted(last) {
            "retrying a run the server's stop interrupted".into()
        } else {
            format!("retry {} of {}", counted, schedule.retries)
        },
    }))
}

pub fn timestamp(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn at(text: &str) -> DateTime<Utc> {
        timestamp(text).unwrap()
    }

    fn run(trigger: &str, status: RunStatus, started: &str, finished: &str) -> Run {
        Run {
            id: 0,
            object_id: 1,
            object_name: "m.m".into(),
            trigger: trigger.into(),
            strategy: None,
            reason: None,
            status,
            started_at: started.into(),
            finished_at: Some(finished.into()),
            rows_read: None,
            rows_written: None,
            delta_version: None,
            input_versions: None,
            error: (status == RunStatus::Failed).then(|| "boom".to_string()),
            late_rows: None,
        }
    }

    fn state<'a>(schedule: &'a ModelSchedule, runs: &'a [Run]) -> ModelState<'a> {
        ModelState {
            schedule,
            created_at: at("2026-11-30T00:00:00Z"),
            runs,
            input_changed: false,
        }
    }

    #[test]
    fn schedules_parse() {
        assert_eq!(Schedule::parse("manual").unwrap(), Schedule::Manual);
        assert_eq!(Schedule::parse(" On Change ").unwrap(), Schedule::OnChange);
        assert_eq!(
            Schedule::parse("every 5 minutes").unwrap(),
            Schedule::Every(Duration::from_secs(300))
        );
        assert_eq!(
            Schedule::parse("every hour").unwrap(),
            Schedule::Every(Duration::from_secs(3600))
        );
        assert!(matches!(
            Schedule::parse("cron 0 6 * * *").unwrap(),
            Schedule::Cron(_)
        ));
        let defaults = ModelSchedule::from_options(&BTreeMap::new()).unwrap();
        assert_eq!(defaults.schedule, Schedule::Manual);
        assert_eq!(defaults.retries, 0);
        assert_eq!(defaults.timeout, None);
        let full = ModelSchedule::from_options(&options(&[
            ("schedule", "on change"),
            ("retries", "2"),
            ("retry_delay", "30 seconds"),
            ("timeout", "10 minutes"),
        ]))
        .unwrap();
        assert_eq!(full.retries, 2);
        assert_eq!(full.retry_delay, Duration::from_secs(30));
        assert_eq!(full.timeout, Some(Duration::from_secs(600)));
    }

    #[test]
    fn invalid_values_name_their_option() {
        for (option, value) in [
            ("schedule", "sometimes"),
            ("schedule", "every fortnight-ish"),
            ("schedule", "every 0s"),
            ("schedule", "cron 61 * * * *"),
            ("schedule", "cron 0 6 * *"),
            ("retries", "-1"),
            ("retries", "two"),
            ("retry_delay", "soon"),
            ("timeout", "0"),
            ("timeout", "10 parsecs"),
        ] {
            let e = ModelSchedule::from_options(&options(&[(option, value)])).unwrap_err();
            match e {
                Error::InvalidOption { option: named, .. } => {
                    assert_eq!(named, option, "{value}")
                }
                other => panic!("{option} = {value}: {other}"),
            }
        }
    }

    #[test]
    fn manual_is_never_due() {
        let s = ModelSchedule::from_options(&BTreeMap::new()).unwrap();
        let runs = [run(
            "schedule",
            RunStatus::Failed,
            "2026-11-30T00:00:00Z",
            "2026-11-30T00:00:01Z",
        )];
        let mut m = state(&s, &runs);
        m.input_changed = true;
        assert_eq!(due(&m, at("2027-01-01T00:00:00Z")), None);
    }

    #[test]
    fn every_counts_from_the_last_run() {
        let clock = FakeClock::new(at("2026-11-30T00:00:00Z"));
        let s = ModelSchedule::from_options(&options(&[("schedule", "every 5 minutes")])).unwrap();
        let runs = [run(
            "create",
            RunStatus::Succeeded,
            "2026-11-30T00:00:00Z",
            "2026-11-30T00:00:02Z",
        )];
        let m = state(&s, &runs);
        assert_eq!(due(&m, clock.now()), None);
        clock.advance(Duration::from_secs(299));
        assert_eq!(due(&m, clock.now()), None);
        clock.advance(Duration::from_secs(1));
        let d = due(&m, clock.now()).unwrap();
        assert_eq!(d.trigger, "schedule");
        // Without any run, it is due at once.
        assert!(due(&state(&s, &[]), clock.now()).is_some());
        // A running refresh is never doubled.
        let running = [Run {
            status: RunStatus::Running,
            finished_at: None,
            ..runs[0].clone()
        }];
        assert_eq!(due(&state(&s, &running), at("2027-01-01T00:00:00Z")), None);
    }

    #[test]
    fn cron_waits_for_its_next_time() {
        let clock = FakeClock::new(at("2026-11-30T05:00:00Z"));
        let s = ModelSchedule::from_options(&options(&[("schedule", "cron 0 6 * * *")])).unwrap();
        let runs = [run(
            "create",
            RunStatus::Succeeded,
            "2026-11-30T04:00:00Z",
            "2026-11-30T04:00:01Z",
        )];
        let m = state(&s, &runs);
        assert_eq!(due(&m, clock.now()), None);
        clock.set(at("2026-11-30T05:59:59Z"));
        assert_eq!(due(&m, clock.now()), None);
        clock.set(at("2026-11-30T06:00:00Z"));
        assert_eq!(due(&m, clock.now()).unwrap().trigger, "schedule");
        // Once it ran at 06:00, the next is tomorrow.
        let ran = [run(
            "schedule",
            RunStatus::Succeeded,
            "2026-11-30T06:00:00Z",
            "2026-11-30T06:00:03Z",
        )];
        let m = state(&s, &ran);
        clock.set(at("2026-12-01T05:59:00Z"));
        assert_eq!(due(&m, clock.now()), None);
        clock.set(at("2026-12-01T06:00:00Z"));
        assert!(due(&m, clock.now()).is_some());
    }

    #[test]
    fn on_change_follows_the_inputs() {
        let s = ModelSchedule::from_options(&options(&[("schedule", "on change")])).unwrap();
        let runs = [run(
            "create",
            RunStatus::Succeeded,
            "2026-11-30T00:00:00Z",
            "2026-11-30T00:00:01Z",
        )];
        let mut m = state(&s, &runs);
        let now = at("2026-11-30T01:00:00Z");
        assert_eq!(due(&m, now), None);
        m.input_changed = true;
        assert_eq!(due(&m, now).unwrap().reason, "an input changed");
    }

    #[test]
    fn failures_are_retried_after_the_delay_until_retries_run_out() {
        let clock = FakeClock::new(at("2026-11-30T00:00:10Z"));
        let s = ModelSchedule::from_options(&options(&[
            ("schedule", "every 1 hour"),
            ("retries", "2"),
            ("retry_delay", "30s"),
        ]))
        .unwrap();
        let mut runs = vec![
            run(
                "create",
                RunStatus::Succeeded,
                "2026-11-30T00:00:00Z",
                "2026-11-30T00:00:01Z",
            ),
            run(
                "schedule",
                RunStatus::Failed,
                "2026-11-30T01:00:00Z",
                "2026-11-30T01:00:05Z",
            ),
        ];
        clock.set(at("2026-11-30T01:00:34Z"));
        assert_eq!(
            due(&state(&s, &runs), clock.now()),
            None,
            "within retry_delay"
        );
        clock.advance(Duration::from_secs(1));
        let d = due(&state(&s, &runs), clock.now()).unwrap();
        assert_eq!((d.trigger, d.reason.as_str()), ("retry", "retry 1 of 2"));
        runs.push(run(
            "retry",
            RunStatus::Failed,
            "2026-11-30T01:00:35Z",
            "2026-11-30T01:00:36Z",
        ));
        clock.set(at("2026-11-30T01:01:06Z"));
        assert_eq!(
            due(&state(&s, &runs), clock.now()).unwrap().reason,
            "retry 2 of 2"
        );
        runs.push(run(
            "retry",
            RunStatus::Failed,
            "2026-11-30T01:01:06Z",
            "2026-11-30T01:01:07Z",
        ));
        // Retries exhausted: the schedule decides again (an hour after the last attempt).
        clock.set(at("2026-11-30T01:30:00Z"));
        assert_eq!(due(&state(&s, &runs), clock.now()), None);
        clock.set(at("2026-11-30T02:01:06Z"));
        let d = due(&state(&s, &runs), clock.now()).unwrap();
        assert_eq!(d.trigger, "schedule");
        // A new chain gets its own retries.
        runs.push(run(
            "schedule",
            RunStatus::Failed,
            "2026-11-30T02:01:06Z",
            "2026-11-30T02:01:07Z",
        ));
        clock.set(at("2026-11-30T02:02:00Z"));
        assert_eq!(
            due(&state(&s, &runs), clock.now()).unwrap().trigger,
            "retry"
        );
    }

    #[test]
    fn manual_failures_are_not_retried_but_interrupted_runs_are() {
        let s = ModelSchedule::from_options(&options(&[
            ("schedule", "every 1 hour"),
            ("retries", "1"),
        ]))
        .unwrap();
        let manual = [run(
            "manual",
            RunStatus::Failed,
            "2026-11-30T00:00:00Z",
            "2026-11-30T00:00:01Z",
        )];
        assert_eq!(due(&state(&s, &manual), at("2026-11-30T00:10:00Z")), None);
        let mut interrupted = run(
            "manual",
            RunStatus::Failed,
            "2026-11-30T00:00:00Z",
            "2026-11-30T00:00:01Z",
        );
        interrupted.error = Some("interrupted: the server stopped during the refresh".into());
        let runs = [interrupted];
        let d = due(&state(&s, &runs), at("2026-11-30T00:00:01Z")).unwrap();
        assert_eq!(d.trigger, "retry");
        // With no retries left an interrupted run is still retried: it was not an attempt.
        let none = ModelSchedule::from_options(&options(&[("schedule", "on change")])).unwrap();
        assert!(due(&state(&none, &runs), at("2026-11-30T00:00:01Z")).is_some());
        // Skipped runs (an upstream failed) do not hide the failure before them.
        let skipped_after = [
            run(
                "schedule",
                RunStatus::Failed,
                "2026-11-30T00:00:00Z",
                "2026-11-30T00:00:01Z",
            ),
            run(
                "schedule",
                RunStatus::Skipped,
                "2026-11-30T00:00:02Z",
                "2026-11-30T00:00:02Z",
            ),
        ];
        assert_eq!(
            due(&state(&s, &skipped_after), at("2026-11-30T00:01:00Z"))
                .unwrap()
                .trigger,
            "retry"
        );
    }
}
