//! Jobs: a statement the scheduler runs by itself (`CREATE JOB name WITH (schedule = ...) AS
//! statement`), typically a report export: `COPY (SELECT ...) TO 'reports/x_{{previous_month}}.csv'`.
//!
//! A run is *for* a moment, its run time: the cron occurrence it was due at (not when the
//! scheduler got to it), now for `RUN JOB name`, or any past moment for `RUN JOB name AS OF
//! '...'`. Placeholders in the statement expand from it, so a job that reads its inputs with
//! `TIMESTAMP AS OF '{{run_time}}'` reproduces a past report exactly (as far back as the Delta
//! history reaches, see housekeeping's retention):
//!
//! | placeholder | expands to (run time 2026-12-01 06:00 UTC) |
//! |---|---|
//! | `{{run_time}}` | `2026-12-01 06:00:00+00` |
//! | `{{run_date}}` | `2026-12-01` |
//! | `{{run_month}}` | `2026-12` |
//! | `{{previous_month}}` | `2026-11` |
//! | `{{previous_month_start}}` | `2026-11-01` |
//! | `{{previous_month_end}}` | `2026-11-30` |
//!
//! Runs, with their expanded statement, rows and error, are `tributary.job_runs`; schedules,
//! retries and timeouts follow the model rules (`crate::schedule`), except `'on change'`,
//! which means nothing for a job.

use chrono::{DateTime, Datelike, Duration, NaiveDate, SubsecRound, Utc};
use futures::StreamExt;
use futures::future::BoxFuture;
use tributary_catalog::ObjectClass;
use tributary_catalog::{Job, JobRun, NewJob, Run, RunStatus};

use crate::context::StatementContext;
use crate::dialect::{CreateJob, DropJobs, RunJob};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::names;
use crate::schedule::{self, Due, ModelSchedule, ModelState, Schedule};
use crate::session::Output;
use crate::system::{Col, RowsBuilder};

/// The options `CREATE JOB` understands.
const OPTION_KEYS: &[&str] = &[
    "schedule",
    "retries",
    "retry_delay",
    "timeout",
    "description",
];

/// The trigger of runs started by `RUN JOB`.
pub const TRIGGER_MANUAL: &str = "manual";

/// `statement` with its placeholders expanded for `run_time`. Unknown `{{...}}` names are an
/// error, so a typo never reaches a file name.
pub fn expand(statement: &str, run_time: DateTime<Utc>) -> Result<String> {
    let date = run_time.date_naive();
    let month_start = NaiveDate::from_ymd_opt(date.year(), date.month(), 1).unwrap_or(date);
    let previous_end = month_start - Duration::days(1);
    let previous_start =
        NaiveDate::from_ymd_opt(previous_end.year(), previous_end.month(), 1).unwrap_or(date);
    let value = |name: &str| -> Option<String> {
        Some(match name {
            "run_time" => run_time.format("%Y-%m-%d %H:%M:%S%.f+00").to_string(),
            "run_date" => date.to_string(),
            "run_month" => date.format("%Y-%m").to_string(),
            "previous_month" => previous_start.format("%Y-%m").to_string(),
            "previous_month_start" => previous_start.to_string(),
            "previous_month_end" => previous_end.to_string(),
            _ => return None,
        })
    };
    let mut out = String::with_capacity(statement.len());
    let mut rest = statement;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Err(Error::bad_input("unclosed \"{{\" in the job's statement"));
        };
        let name = after[..close].trim();
        let v = value(name).ok_or_else(|| {
            Error::bad_input(format!(
                "unknown placeholder \"{{{{{name}}}}}\" in the job's statement (known: \
                 run_time, run_date, run_month, previous_month, previous_month_start, \
                 previous_month_end)"
            ))
        })?;
        out.push_str(&v);
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `CREATE JOB`: checks the options and that the statement parses once expanded, and records
/// the job. It first runs when its schedule says so, or with `RUN JOB`.
pub async fn create_job(cx: &StatementContext<'_>, job: CreateJob, text: &str) -> Result<Output> {
    let catalog = cx.catalog();
    let name = names::ident(&job.name);
    if catalog.job(&name)?.is_some() {
        if job.if_not_exists {
            return Ok(Output::Command("CREATE JOB".into()));
        }
        return Err(Error::DuplicateObject {
            kind: ObjectClass::Job,
            name,
        });
    }
    if let Some(key) = job
        .options
        .keys()
        .find(|k| !OPTION_KEYS.contains(&k.as_str()))
    {
        return Err(Error::InvalidOption {
            option: key.clone(),
            message: format!(
                "not a job option (expected one of {})",
                OPTION_KEYS.join(", ")
            ),
        });
    }
    let policy = ModelSchedule::from_options(&job.options)?;
    if policy.schedule == Schedule::OnChange {
        return Err(Error::InvalidOption {
            option: "schedule".into(),
            message: "a job has no inputs to change: use 'every ...', 'cron ...' or 'manual'"
                .into(),
        });
    }
    let expanded = expand(&job.statement, Utc::now())?;
    let parsed = crate::dialect::parse_statement(&expanded)?;
    if matches!(
        parsed,
        crate::dialect::Statement::CreateJob(_) | crate::dialect::Statement::RunJob(_)
    ) {
        return Err(Error::NotSupported(
            "a job whose statement is a job statement".into(),
        ));
    }
    catalog.create_job(&NewJob {
        name,
        sql: text.trim().to_string(),
        statement: job.statement,
        default_schema: cx.current_schema(),
        options: job.options,
        owner: cx.user().to_string(),
    })?;
    Ok(Output::Command("CREATE JOB".into()))
}

/// `DROP JOB [IF EXISTS] name, ...`
pub fn drop_jobs(cx: &StatementContext<'_>, drop: DropJobs) -> Result<Output> {
    let catalog = cx.catalog();
    for ident in &drop.names {
        let name = names::ident(ident);
        if catalog.job(&name)?.is_none() {
            if drop.if_exists {
                continue;
            }
            return Err(Error::UndefinedObject {
                kind: ObjectClass::Job,
                name,
            });
        }
        catalog.drop_job(&name)?;
    }
    Ok(Output::Command("DROP JOB".into()))
}

/// `RUN JOB name [AS OF 'timestamp']`: runs it now, for now or for the moment given, and
/// returns the run as one row. A failed run is an error (after it is recorded).
pub async fn run_job_statement(cx: &StatementContext<'_>, run: RunJob) -> Result<Output> {
    let catalog = cx.catalog();
    let name = names::ident(&run.name);
    let job = catalog.job(&name)?.ok_or(Error::UndefinedObject {
        kind: ObjectClass::Job,
        name,
    })?;
    let run_time = match &run.as_of {
        Some(text) => parse_moment(text)?,
        None => Utc::now(),
    };
    let (finished, error) = run_job(cx.engine, &job, TRIGGER_MANUAL, run_time).await?;
    if let Some(source) = error {
        return Err(Error::JobFailed {
            job: job.name,
            source: Box::new(source),
        });
    }
    let mut b = run_result();
    b.text(Some(&job.name))
        .timestamp(Some(&finished.run_time))
        .text(Some(finished.status.as_str()))
        .int(finished.rows)
        .text(finished.statement.as_deref());
    crate::ddl::rows_output(b.finish()?)
}

/// The row `RUN JOB` returns.
fn run_result() -> RowsBuilder {
    RowsBuilder::new(&[
        ("job", Col::Text),
        ("run_time", Col::Timestamp),
        ("status", Col::Text),
        ("rows", Col::Int),
        ("statement", Col::Text),
    ])
}

/// The columns `RUN JOB` returns, for Describe (extended protocol).
pub fn run_result_schema() -> datafusion::arrow::datatypes::SchemaRef {
    run_result().schema()
}

fn parse_moment(text: &str) -> Result<DateTime<Utc>> {
    let trimmed = text.trim();
    DateTime::parse_from_rfc3339(trimmed)
        .or_else(|_| DateTime::parse_from_str(trimmed, "%Y-%m-%d %H:%M:%S%.f%#z"))
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(trimmed, "%Y-%m-%d %H:%M:%S%.f")
                .map(|t| t.and_utc())
        })
        .or_else(|_| {
            NaiveDate::parse_from_str(trimmed, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
        })
        .map_err(|_| {
            Error::bad_input(format!(
                "invalid moment \"{text}\": expected a timestamp such as '2026-11-01 06:00:00+00'"
            ))
        })
}

/// Runs `job` for `run_time` as its owner: records the run, expands and executes the
/// statement (under the job's `timeout`), and records how it ended. The statement's error
/// comes back beside the recorded run; `Err` is for the catalog failing.
pub fn run_job<'a>(
    engine: &'a Engine,
    job: &'a Job,
    trigger: &'a str,
    run_time: DateTime<Utc>,
) -> BoxFuture<'a, Result<(JobRun, Option<Error>)>> {
    // A boxed trait object: the statement runs through `Session::execute`, which itself runs
    // `RUN JOB`, so an `async fn` here would be a future type that contains itself.
    Box::pin(run_job_inner(engine, job, trigger, run_time))
}

async fn run_job_inner(
    engine: &Engine,
    job: &Job,
    trigger: &str,
    run_time: DateTime<Utc>,
) -> Result<(JobRun, Option<Error>)> {
    // Timestamps are microseconds in SQL and in Delta.
    let run_time = run_time.trunc_subsecs(6);
    let catalog = engine.catalog();
    let run_time_text = run_time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    let run_id = catalog.start_job_run(job, trigger, &run_time_text)?;
    let policy = ModelSchedule::from_options(&job.options)?;
    let started = std::time::Instant::now();
    let outcome = match expand(&job.statement, run_time) {
        Ok(statement) => {
            let execution = execute(engine, job, &statement);
            let result = match policy.timeout {
                Some(limit) => tokio::time::timeout(limit, execution)
                    .await
                    .unwrap_or(Err(Error::StatementTimeout)),
                None => execution.await,
            };
            (Some(statement), result)
        }
        Err(e) => (None, Err(e)),
    };
    let (statement, result) = outcome;
    let (status, rows, error) = match result {
        Ok(rows) => (RunStatus::Succeeded, rows, None),
        Err(e) => (RunStatus::Failed, None, Some(e)),
    };
    let message = error.as_ref().map(|e| e.to_string());
    catalog.finish_job_run(
        run_id,
        status,
        rows,
        statement.as_deref(),
        message.as_deref(),
    )?;
    tracing::info!(
        job = %job.name, run_time = %run_time_text, status = status.as_str(),
        elapsed_ms = started.elapsed().as_millis() as u64, "job run finished"
    );
    let run = catalog
        .latest_job_runs(job.id, 1)?
        .pop()
        .filter(|r| r.id == run_id)
        .ok_or_else(|| Error::Internal(format!("job run {run_id} vanished")))?;
    Ok((run, error))
}

/// Executes a job's expanded statement in a session of its owner, with its default schema;
/// the rows it reports (a COPY's count, or the rows of a query, which are drained).
async fn execute(engine: &Engine, job: &Job, statement: &str) -> Result<Option<i64>> {
    let mut session = engine.session(&job.owner);
    session
        .execute_all(&format!(
            "SET search_path TO {}",
            crate::quality::definition::quote(&job.default_schema)
        ))
        .await?;
    let mut rows = None;
    for output in session.execute_all(statement).await? {
        rows = match output {
            Output::Command(tag) => tag.rsplit(' ').next().and_then(|n| n.parse().ok()),
            Output::Rows { mut stream, .. } | Output::CopyOut { mut stream, .. } => {
                let mut n = 0i64;
                while let Some(batch) = stream.next().await {
                    n += batch?.num_rows() as i64;
                }
                Some(n)
            }
            Output::CopyIn(_) => {
                return Err(Error::NotSupported("COPY FROM STDIN in a job".into()));
            }
        };
    }
    Ok(rows)
}

/// The jobs due at `now`, each with why and the moment its run is for.
pub fn due_jobs(engine: &Engine, now: DateTime<Utc>) -> Result<Vec<(Job, Due, DateTime<Utc>)>> {
    let catalog = engine.catalog();
    let mut due = Vec::new();
    for job in catalog.jobs()? {
        let Ok(policy) = ModelSchedule::from_options(&job.options) else {
            continue;
        };
        let history = catalog.latest_job_runs(job.id, schedule::RUNS_NEEDED)?;
        let runs: Vec<Run> = history.iter().map(as_run).collect();
        let created_at = schedule::timestamp(&job.created_at).unwrap_or(now);
        let state = ModelState {
            schedule: &policy,
            created_at,
            runs: &runs,
            input_changed: false,
        };
        let Some(why) = schedule::due(&state, now) else {
            continue;
        };
        let run_time = if why.trigger == schedule::TRIGGER_RETRY {
            // A retry is for the moment the failed run was for.
            history
                .iter()
                .rev()
                .find(|r| r.status == RunStatus::Failed)
                .and_then(|r| schedule::timestamp(&r.run_time))
                .unwrap_or(now)
        } else {
            match &policy.schedule {
                // The occurrence that made it due, even when the scheduler is late.
                Schedule::Cron(cron) => {
                    let since = runs
                        .iter()
                        .rev()
                        .find(|r| r.status != RunStatus::Skipped)
                        .and_then(|r| schedule::timestamp(&r.started_at))
                        .unwrap_or(created_at);
                    cron.find_next_occurrence(&since, false).unwrap_or(now)
                }
                _ => now,
            }
        };
        due.push((job, why, run_time));
    }
    Ok(due)
}

/// A job run in the shape the schedule decision reads.
fn as_run(r: &JobRun) -> Run {
    Run {
        id: r.id,
        object_id: r.job_id,
        object_name: r.job_name.clone(),
        trigger: r.trigger.clone(),
        strategy: None,
        reason: None,
        status: r.status,
        started_at: r.started_at.clone(),
        finished_at: r.finished_at.clone(),
        rows_read: None,
        rows_written: r.rows,
        delta_version: None,
        input_versions: None,
        error: r.error.clone(),
        late_rows: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn placeholders_expand_from_the_run_time() {
        let t = at("2026-01-01T06:00:00Z");
        assert_eq!(
            expand("'{{previous_month}}' {{ previous_month_start }}..{{previous_month_end}} {{run_time}} {{run_month}}", t).unwrap(),
            "'2025-12' 2025-12-01..2025-12-31 2026-01-01 06:00:00+00 2026-01"
        );
        assert_eq!(
            expand("{{previous_month_end}}", at("2024-03-01T00:00:00Z")).unwrap(),
            "2024-02-29"
        );
        assert!(expand("{{nope}}", t).is_err());
        assert!(expand("{{run_time", t).is_err());
        assert_eq!(expand("no placeholders", t).unwrap(), "no placeholders");
    }

    #[test]
    fn moments_parse_in_the_usual_spellings() {
        let want = at("2026-11-01T06:00:00Z");
        assert_eq!(
            parse_moment("2026-11-01 06:00:00.25+00").unwrap(),
            at("2026-11-01T06:00:00.25Z")
        );
        for text in [
            "2026-11-01T06:00:00Z",
            "2026-11-01 06:00:00+00",
            "2026-11-01 06:00:00",
        ] {
            assert_eq!(parse_moment(text).unwrap(), want, "{text}");
        }
        assert_eq!(
            parse_moment("2026-11-01").unwrap(),
            at("2026-11-01T00:00:00Z")
        );
        assert!(parse_moment("yesterday").is_err());
    }
}
