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
mod tests;
