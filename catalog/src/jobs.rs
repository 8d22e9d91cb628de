//! Jobs: statements the scheduler runs by themselves, such as a monthly `COPY ... TO` report
//! export. The catalog keeps each job's statement and options, and every run with the moment
//! it ran for (its `run_time`: the cron occurrence, or a past moment for a re-run).

use std::collections::BTreeMap;

use crate::RunStatus;

/// What the engine hands the catalog to create a job.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub name: String,
    /// `CREATE JOB ...` as the user sent it.
    pub sql: String,
    /// The statement after `AS`, with its `{{...}}` placeholders unexpanded.
    pub statement: String,
    pub default_schema: String,
    /// `schedule`, `retries`, `retry_delay`, `timeout`, `description`.
    pub options: BTreeMap<String, String>,
    /// The role whose privileges the job runs with.
    pub owner: String,
}

/// A stored job.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: i64,
    pub name: String,
    pub sql: String,
    pub statement: String,
    pub default_schema: String,
    pub options: BTreeMap<String, String>,
    pub owner: String,
    pub created_at: String,
}

/// One run of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRun {
    pub id: i64,
    pub job_id: i64,
    pub job_name: String,
    /// `manual`, `schedule` or `retry`.
    pub trigger: String,
    /// The moment the run is for (RFC 3339, UTC): placeholders expand from it.
    pub run_time: String,
    pub status: RunStatus,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// What the statement reported (rows copied, for COPY).
    pub rows: Option<i64>,
    /// The statement as run, placeholders expanded.
    pub statement: Option<String>,
    pub error: Option<String>,
}
