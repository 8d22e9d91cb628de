//! Catalog schema migrations, applied in order and tracked with SQLite's `user_version`.
//! Append new steps; never edit a step that has shipped.

use rusqlite::Connection;

use crate::Result;

const STEPS: &[&str] = &[
    // 1: schemas, objects, dependency edges, runs.
    "CREATE TABLE schemas (
        name TEXT PRIMARY KEY,
        created_at TEXT NOT NULL
     );
     INSERT INTO schemas (name, created_at) VALUES ('public', strftime('%Y-%m-%dT%H:%M:%fZ'));
     CREATE TABLE objects (
        id INTEGER PRIMARY KEY,
        schema_name TEXT NOT NULL REFERENCES schemas(name),
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        sql TEXT NOT NULL,
        query TEXT,
        options TEXT NOT NULL,
        columns TEXT NOT NULL,
        location TEXT,
        comment TEXT,
        published_version INTEGER,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (schema_name, name)
     );
     CREATE TABLE dependencies (
        object_id INTEGER NOT NULL REFERENCES objects(id),
        upstream_id INTEGER NOT NULL REFERENCES objects(id),
        PRIMARY KEY (object_id, upstream_id)
     );
     CREATE INDEX dependencies_upstream ON dependencies (upstream_id);
     CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        object_id INTEGER NOT NULL,
        object_name TEXT NOT NULL,
        trigger TEXT NOT NULL,
        strategy TEXT,
        reason TEXT,
        status TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        rows_read INTEGER,
        rows_written INTEGER,
        delta_version INTEGER,
        input_versions TEXT,
        error TEXT
     );
     CREATE INDEX runs_object ON runs (object_id, id);",
    // 2: the schema unqualified names in a model's or view's query resolve to.
    "ALTER TABLE objects ADD COLUMN default_schema TEXT;",
    // 3: rows an incremental refresh withheld as later than the model's lateness.
    "ALTER TABLE runs ADD COLUMN late_rows INTEGER;",
    // 4: secrets (an environment variable's name or a literal value) and connections to
    // external systems; sources name their connection in their options.
    "CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        created_at TEXT NOT NULL
     );
     CREATE TABLE connections (
        name TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        options TEXT NOT NULL,
        password_secret TEXT REFERENCES secrets(name),
        created_at TEXT NOT NULL
     );",
    // 5: column lineage edges (see store/lineage.rs) and when each object's were computed,
    // so catalogs from before lineage get theirs filled at start-up.
    "CREATE TABLE column_lineage (
        object_id INTEGER NOT NULL REFERENCES objects(id),
        upstream_id INTEGER NOT NULL REFERENCES objects(id),
        upstream_column TEXT NOT NULL,
        downstream_column TEXT,
        kind TEXT NOT NULL
     );
     CREATE INDEX column_lineage_object ON column_lineage (object_id);
     CREATE INDEX column_lineage_upstream ON column_lineage (upstream_id);
     ALTER TABLE objects ADD COLUMN lineage_at TEXT;",
    // 6: data tests (see quality.rs), the objects each reads, every execution's outcome, and
    // the failing rows of each test's latest execution.
    "CREATE TABLE tests (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        object_id INTEGER REFERENCES objects(id),
        kind TEXT NOT NULL,
        columns TEXT NOT NULL,
        sql TEXT NOT NULL,
        query TEXT NOT NULL,
        default_schema TEXT NOT NULL,
        severity TEXT NOT NULL,
        store_failures INTEGER NOT NULL,
        failures_limit INTEGER NOT NULL,
        created_at TEXT NOT NULL
     );
     CREATE TABLE test_reads (
        test_id INTEGER NOT NULL REFERENCES tests(id),
        object_id INTEGER NOT NULL REFERENCES objects(id),
        PRIMARY KEY (test_id, object_id)
     );
     CREATE INDEX test_reads_object ON test_reads (object_id);
     CREATE TABLE test_results (
        id INTEGER PRIMARY KEY,
        test_id INTEGER NOT NULL,
        test_name TEXT NOT NULL,
        object_name TEXT NOT NULL,
        run_id INTEGER,
        delta_version INTEGER,
        status TEXT NOT NULL,
        severity TEXT NOT NULL,
        failing_rows INTEGER NOT NULL,
        scope TEXT NOT NULL,
        started_at TEXT NOT NULL,
        duration_ms INTEGER NOT NULL,
        error TEXT
     );
     CREATE INDEX test_results_test ON test_results (test_id, id);
     CREATE TABLE test_failures (
        result_id INTEGER NOT NULL,
        test_id INTEGER NOT NULL,
        test_name TEXT NOT NULL,
        row_number INTEGER NOT NULL,
        row_json TEXT NOT NULL
     );
     CREATE INDEX test_failures_test ON test_failures (test_id);",
    // 7: jobs (see jobs.rs) and their runs, each with the moment it ran for.
    "CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        sql TEXT NOT NULL,
        statement TEXT NOT NULL,
        default_schema TEXT NOT NULL,
        options TEXT NOT NULL,
        owner TEXT NOT NULL,
        created_at TEXT NOT NULL
     );
     CREATE TABLE job_runs (
        id INTEGER PRIMARY KEY,
        job_id INTEGER NOT NULL,
        job_name TEXT NOT NULL,
        trigger TEXT NOT NULL,
        run_time TEXT NOT NULL,
        status TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        rows INTEGER,
        statement TEXT,
        error TEXT
     );
     CREATE INDEX job_runs_job ON job_runs (job_id, id);",
];

pub(super) fn apply(conn: &mut Connection) -> Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (index, step) in STEPS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", (index + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
