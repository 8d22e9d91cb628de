//! Storage of jobs and their runs.

use crate::ObjectClass;
use rusqlite::{OptionalExtension, Row, params};

use super::{Catalog, now};
use crate::{Error, Job, JobRun, NewJob, Result, RunStatus};

const JOB_COLUMNS: &str = "id, name, sql, statement, default_schema, options, owner, created_at";
const RUN_COLUMNS: &str = "id, job_id, job_name, trigger, run_time, status, started_at, \
     finished_at, rows, statement, error";

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<Job> {
    let options: String = row.get(5)?;
    Ok(Job {
        id: row.get(0)?,
        name: row.get(1)?,
        sql: row.get(2)?,
        statement: row.get(3)?,
        default_schema: row.get(4)?,
        options: serde_json::from_str(&options).unwrap_or_default(),
        owner: row.get(6)?,
        created_at: row.get(7)?,
    })
}

fn run_from_row(row: &Row<'_>) -> rusqlite::Result<JobRun> {
    let status: String = row.get(5)?;
    Ok(JobRun {
        id: row.get(0)?,
        job_id: row.get(1)?,
        job_name: row.get(2)?,
        trigger: row.get(3)?,
        run_time: row.get(4)?,
        status: RunStatus::parse(&status).unwrap_or(RunStatus::Failed),
        started_at: row.get(6)?,
        finished_at: row.get(7)?,
        rows: row.get(8)?,
        statement: row.get(9)?,
        error: row.get(10)?,
    })
}

impl Catalog {
    /// Records a new job. Fails with [`Error::Duplicate`] when the name is taken.
    pub fn create_job(&self, new: &NewJob) -> Result<Job> {
        let conn = self.conn();
        let taken = conn
            .query_row(
                "SELECT 1 FROM jobs WHERE name = ?1",
                [&new.name],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if taken {
            return Err(Error::Duplicate {
                kind: ObjectClass::Job,
                name: new.name.clone(),
            });
        }
        conn.execute(
            "INSERT INTO jobs (name, sql, statement, default_schema, options, owner, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                new.name,
                new.sql,
                new.statement,
                new.default_schema,
                serde_json::to_string(&new.options).unwrap_or_default(),
                new.owner,
                now()
            ],
        )?;
        let id = conn.last_insert_rowid();
        Ok(conn.query_row(
            &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
            [id],
            job_from_row,
        )?)
    }

    pub fn jobs(&self) -> Result<Vec<Job>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {JOB_COLUMNS} FROM jobs ORDER BY name"))?;
        let rows = stmt.query_map([], job_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn job(&self, name: &str) -> Result<Option<Job>> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE name = ?1"),
                [name],
                job_from_row,
            )
            .optional()?)
    }

    /// Drops a job; its runs stay in the history.
    pub fn drop_job(&self, name: &str) -> Result<()> {
        let conn = self.conn();
        let n = conn.execute("DELETE FROM jobs WHERE name = ?1", [name])?;
        if n == 0 {
            return Err(Error::NotFound {
                kind: ObjectClass::Job,
                name: name.to_string(),
            });
        }
        Ok(())
    }

    /// Records the start of a run of `job` for `run_time`.
    pub fn start_job_run(&self, job: &Job, trigger: &str, run_time: &str) -> Result<i64> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO job_runs (job_id, job_name, trigger, run_time, status, started_at) \
             VALUES (?1, ?2, ?3, ?4, 'running', ?5)",
            params![job.id, job.name, trigger, run_time, now()],
        )?;
        Ok(conn.last_insert_rowid())
    }

    pub fn finish_job_run(
        &self,
        run_id: i64,
        status: RunStatus,
        rows: Option<i64>,
        statement: Option<&str>,
        error: Option<&str>,
    ) -> Result<()> {
        let conn = self.conn();
        conn.execute(
            "UPDATE job_runs SET status = ?2, rows = ?3, statement = ?4, error = ?5, \
             finished_at = ?6 WHERE id = ?1",
            params![run_id, status.as_str(), rows, statement, error, now()],
        )?;
        Ok(())
    }

    /// Every job run, oldest first.
    pub fn job_runs(&self) -> Result<Vec<JobRun>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {RUN_COLUMNS} FROM job_runs ORDER BY id"))?;
        let rows = stmt.query_map([], run_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The latest `limit` runs of one job, oldest first.
    pub fn latest_job_runs(&self, job_id: i64, limit: usize) -> Result<Vec<JobRun>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {RUN_COLUMNS} FROM job_runs WHERE job_id = ?1 ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![job_id, limit as i64], run_from_row)?;
        let mut runs: Vec<JobRun> = rows.collect::<Result<_, _>>()?;
        runs.reverse();
        Ok(runs)
    }

    /// Marks runs a crash left `running` as failed (interrupted), so they are retried.
    pub fn fail_unfinished_job_runs(&self, error: &str) -> Result<usize> {
        let conn = self.conn();
        Ok(conn.execute(
            "UPDATE job_runs SET status = 'failed', error = ?1, finished_at = ?2 \
             WHERE status = 'running'",
            params![error, now()],
        )?)
    }
}
