//! Storage of data tests, their executions and failing rows. A test goes away with any object
//! it reads (as PostgreSQL drops a table's constraints with it); its past results stay.

use crate::ObjectClass;
use rusqlite::{OptionalExtension, Row, params};

use super::{Catalog, now};
use crate::{
    DataTest, Error, NewTest, NewTestResult, Result, Severity, TestFailure, TestResult, TestStatus,
};

const TEST_COLUMNS: &str = "id, name, object_id, kind, columns, sql, query, default_schema, \
     severity, store_failures, failures_limit, created_at";

const RESULT_COLUMNS: &str = "id, test_id, test_name, object_name, run_id, delta_version, \
     status, severity, failing_rows, scope, started_at, duration_ms, error";

fn test_from_row(row: &Row<'_>) -> rusqlite::Result<DataTest> {
    let columns: String = row.get(4)?;
    let severity: String = row.get(8)?;
    Ok(DataTest {
        id: row.get(0)?,
        name: row.get(1)?,
        object_id: row.get(2)?,
        kind: row.get(3)?,
        columns: serde_json::from_str(&columns).unwrap_or_default(),
        sql: row.get(5)?,
        query: row.get(6)?,
        default_schema: row.get(7)?,
        severity: Severity::parse(&severity).unwrap_or(Severity::Error),
        store_failures: row.get(9)?,
        failures_limit: row.get(10)?,
        reads: Vec::new(),
        created_at: row.get(11)?,
    })
}

fn result_from_row(row: &Row<'_>) -> rusqlite::Result<TestResult> {
    let status: String = row.get(6)?;
    let severity: String = row.get(7)?;
    Ok(TestResult {
        id: row.get(0)?,
        test_id: row.get(1)?,
        test_name: row.get(2)?,
        object_name: row.get(3)?,
        run_id: row.get(4)?,
        delta_version: row.get(5)?,
        status: TestStatus::parse(&status).unwrap_or(TestStatus::Error),
        severity: Severity::parse(&severity).unwrap_or(Severity::Error),
        failing_rows: row.get(8)?,
        scope: row.get(9)?,
        started_at: row.get(10)?,
        duration_ms: row.get(11)?,
        error: row.get(12)?,
    })
}

impl Catalog {
    /// Records a new test. Fails with [`Error::Duplicate`] when the name is taken.
    pub fn create_test(&self, new: &NewTest) -> Result<DataTest> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let exists: Option<i64> = tx
            .query_row("SELECT id FROM tests WHERE name = ?1", [&new.name], |r| {
                r.get(0)
            })
            .optional()?;
        if exists.is_some() {
            return Err(Error::Duplicate {
                kind: ObjectClass::Test,
                name: new.name.clone(),
            });
        }
        tx.execute(
            "INSERT INTO tests (name, object_id, kind, columns, sql, query, default_schema, \
             severity, store_failures, failures_limit, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                new.name,
                new.object_id,
                new.kind,
                serde_json::to_string(&new.columns)?,
                new.sql,
                new.query,
                new.default_schema,
                new.severity.as_str(),
                new.store_failures,
                new.failures_limit,
                now()
            ],
        )?;
        let id = tx.last_insert_rowid();
        for object in &new.reads {
            tx.execute(
                "INSERT OR IGNORE INTO test_reads (test_id, object_id) VALUES (?1, ?2)",
                params![id, object],
            )?;
        }
        tx.commit()?;
        drop(conn);
        self.test(&new.name)?.ok_or_else(|| Error::NotFound {
            kind: ObjectClass::Test,
            name: new.name.clone(),
        })
    }

    /// Every test, by name, with the objects each reads.
    pub fn tests(&self) -> Result<Vec<DataTest>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {TEST_COLUMNS} FROM tests ORDER BY name"))?;
        let mut tests: Vec<DataTest> = stmt
            .query_map([], test_from_row)?
            .collect::<Result<_, _>>()?;
        let mut reads = conn.prepare("SELECT test_id, object_id FROM test_reads ORDER BY 1, 2")?;
        for pair in reads.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))? {
            let (test, object) = pair?;
            if let Some(t) = tests.iter_mut().find(|t| t.id == test) {
                t.reads.push(object);
            }
        }
        Ok(tests)
    }

    pub fn test(&self, name: &str) -> Result<Option<DataTest>> {
        Ok(self.tests()?.into_iter().find(|t| t.name == name))
    }

    /// The tests that run after a refresh of `object_id`: those on it and those reading it.
    pub fn tests_reading(&self, object_id: i64) -> Result<Vec<DataTest>> {
        Ok(self
            .tests()?
            .into_iter()
            .filter(|t| t.object_id == Some(object_id) || t.reads.contains(&object_id))
            .collect())
    }

    /// Drops a test (its results stay, its stored failing rows go).
    pub fn drop_test(&self, name: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let id: Option<i64> = tx
            .query_row("SELECT id FROM tests WHERE name = ?1", [name], |r| r.get(0))
            .optional()?;
        let Some(id) = id else {
            return Err(Error::NotFound {
                kind: ObjectClass::Test,
                name: name.into(),
            });
        };
        delete_test(&tx, id)?;
        tx.commit()?;
        Ok(())
    }

    /// Records one execution and, when there are any, replaces the test's stored failing
    /// rows with this execution's. Returns the result's id.
    pub fn record_test_result(&self, test: &DataTest, result: &NewTestResult) -> Result<i64> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let object_name: String = match test.object_id {
            Some(id) => tx
                .query_row(
                    "SELECT schema_name || '.' || name FROM objects WHERE id = ?1",
                    [id],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or_default(),
            None => String::new(),
        };
        tx.execute(
            &format!(
                "INSERT INTO test_results ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                RESULT_COLUMNS.trim_start_matches("id, ")
            ),
            params![
                test.id,
                test.name,
                object_name,
                result.run_id,
                result.delta_version,
                result.status.as_str(),
                test.severity.as_str(),
                result.failing_rows,
                result.scope,
                result.started_at,
                result.duration_ms,
                result.error
            ],
        )?;
        let result_id = tx.last_insert_rowid();
        if result.status != TestStatus::Error {
            tx.execute("DELETE FROM test_failures WHERE test_id = ?1", [test.id])?;
        }
        for (i, row) in result.failures.iter().enumerate() {
            tx.execute(
                "INSERT INTO test_failures (result_id, test_id, test_name, row_number, row_json) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![result_id, test.id, test.name, i as i64 + 1, row],
            )?;
        }
        tx.commit()?;
        Ok(result_id)
    }

    /// Every recorded test execution, oldest first.
    pub fn test_results(&self) -> Result<Vec<TestResult>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {RESULT_COLUMNS} FROM test_results ORDER BY id"
        ))?;
        let rows = stmt.query_map([], result_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The latest execution of each test that still exists, by test id.
    pub fn latest_test_results(&self) -> Result<Vec<TestResult>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {RESULT_COLUMNS} FROM test_results WHERE id IN \
             (SELECT max(r.id) FROM test_results r JOIN tests t ON t.id = r.test_id GROUP BY r.test_id) \
             ORDER BY test_name"
        ))?;
        let rows = stmt.query_map([], result_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The stored failing rows of every test's latest failing execution.
    pub fn test_failures(&self) -> Result<Vec<TestFailure>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT result_id, test_name, row_number, row_json FROM test_failures \
             ORDER BY test_name, result_id, row_number",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(TestFailure {
                result_id: r.get(0)?,
                test_name: r.get(1)?,
                row_number: r.get(2)?,
                row_json: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn delete_test(tx: &rusqlite::Transaction<'_>, id: i64) -> Result<()> {
    tx.execute("DELETE FROM test_reads WHERE test_id = ?1", [id])?;
    tx.execute("DELETE FROM test_failures WHERE test_id = ?1", [id])?;
    tx.execute("DELETE FROM tests WHERE id = ?1", [id])?;
    Ok(())
}

/// Drops the tests on or reading an object that is being dropped.
pub(super) fn forget_object(tx: &rusqlite::Transaction<'_>, object_id: i64) -> Result<()> {
    let ids: Vec<i64> = tx
        .prepare(
            "SELECT id FROM tests WHERE object_id = ?1 \
             UNION SELECT test_id FROM test_reads WHERE object_id = ?1",
        )?
        .query_map([object_id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for id in ids {
        delete_test(tx, id)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NewObject, ObjectKind, ObjectName};

    fn model(catalog: &Catalog, name: &str) -> i64 {
        catalog
            .create_object(
                &NewObject {
                    name: ObjectName::new("public", name),
                    kind: ObjectKind::Model,
                    sql: String::new(),
                    query: Some("select 1".into()),
                    default_schema: None,
                    options: Default::default(),
                    columns: vec![],
                    location: None,
                    comment: None,
                },
                &[],
            )
            .unwrap()
            .id
    }

    fn new_test(name: &str, on: i64, reads: Vec<i64>) -> NewTest {
        NewTest {
            name: name.into(),
            object_id: Some(on),
            kind: "not_null".into(),
            columns: vec!["a".into()],
            sql: String::new(),
            query: "select * from m where a is null".into(),
            default_schema: "public".into(),
            severity: Severity::Error,
            store_failures: true,
            failures_limit: 2,
            reads,
        }
    }

    #[test]
    fn tests_go_with_the_objects_they_read_and_results_stay() {
        let catalog = Catalog::open_in_memory().unwrap();
        let m = model(&catalog, "m");
        let d = model(&catalog, "d");
        let t = catalog.create_test(&new_test("t", m, vec![m, d])).unwrap();
        assert!(matches!(
            catalog.create_test(&new_test("t", m, vec![m])),
            Err(Error::Duplicate { .. })
        ));
        assert_eq!(catalog.tests_reading(d).unwrap().len(), 1);
        catalog
            .record_test_result(
                &t,
                &NewTestResult {
                    test_id: t.id,
                    run_id: None,
                    delta_version: Some(1),
                    status: TestStatus::Fail,
                    failing_rows: 5,
                    scope: "all rows".into(),
                    started_at: now(),
                    duration_ms: 3,
                    error: None,
                    failures: vec!["{\"a\":null}".into(), "{\"a\":null}".into()],
                },
            )
            .unwrap();
        assert_eq!(catalog.test_failures().unwrap().len(), 2);
        assert_eq!(catalog.latest_test_results().unwrap()[0].failing_rows, 5);
        catalog.drop_objects(&[d]).unwrap();
        assert!(catalog.tests().unwrap().is_empty());
        assert!(catalog.latest_test_results().unwrap().is_empty());
        assert_eq!(catalog.test_results().unwrap().len(), 1);
        assert!(catalog.test_failures().unwrap().is_empty());
    }
}
