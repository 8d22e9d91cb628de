//! Data tests and their results, as the catalog stores them. The engine compiles each test
//! into a query that returns the failing rows; the catalog keeps that query, the outcome of
//! every execution, and a capped sample of the failing rows as JSON.

use serde::{Deserialize, Serialize};

/// How bad a failing test is: `error` keeps a refresh from publishing, `warn` only records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warn,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warn => "warn",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "error" => Some(Severity::Error),
            "warn" | "warning" => Some(Severity::Warn),
            _ => None,
        }
    }
}

/// What the engine hands the catalog to create a test.
#[derive(Debug, Clone)]
pub struct NewTest {
    pub name: String,
    /// The object named in `ON`, or `None` for a singular test (`CREATE TEST name AS SELECT`).
    pub object_id: Option<i64>,
    /// `unique`, `not_null`, `accepted_values`, `check`, `references`, `row_count`,
    /// `freshness` or `singular`.
    pub kind: String,
    /// Columns the expectation names on its object (UNIQUE, NOT NULL), for tests that can
    /// check only new rows.
    pub columns: Vec<String>,
    /// The statement as the user sent it.
    pub sql: String,
    /// The query returning the failing rows.
    pub query: String,
    pub default_schema: String,
    pub severity: Severity,
    pub store_failures: bool,
    /// The most failing rows kept per execution.
    pub failures_limit: i64,
    /// Every object the query reads (the test runs after a refresh of any model among them).
    pub reads: Vec<i64>,
}

/// A stored test.
#[derive(Debug, Clone, PartialEq)]
pub struct DataTest {
    pub id: i64,
    pub name: String,
    pub object_id: Option<i64>,
    pub kind: String,
    pub columns: Vec<String>,
    pub sql: String,
    pub query: String,
    pub default_schema: String,
    pub severity: Severity,
    pub store_failures: bool,
    pub failures_limit: i64,
    pub reads: Vec<i64>,
    pub created_at: String,
}

/// How one execution of a test ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestStatus {
    /// No failing rows.
    Pass,
    /// Failing rows, severity `error`.
    Fail,
    /// Failing rows, severity `warn`.
    Warn,
    /// The test's query could not run (a column it names is gone, say).
    Error,
}

impl TestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TestStatus::Pass => "pass",
            TestStatus::Fail => "fail",
            TestStatus::Warn => "warn",
            TestStatus::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pass" => TestStatus::Pass,
            "fail" => TestStatus::Fail,
            "warn" => TestStatus::Warn,
            "error" => TestStatus::Error,
            _ => return None,
        })
    }
}

/// One execution of a test, to record.
#[derive(Debug, Clone)]
pub struct NewTestResult {
    pub test_id: i64,
    /// The refresh run it audited, or `None` for `RUN TESTS`.
    pub run_id: Option<i64>,
    /// The Delta version of the tested object it ran against.
    pub delta_version: Option<i64>,
    pub status: TestStatus,
    pub failing_rows: i64,
    /// `all rows` or `new rows` (what the execution had to check).
    pub scope: String,
    pub started_at: String,
    pub duration_ms: i64,
    pub error: Option<String>,
    /// Up to the test's `failures_limit` failing rows, each a JSON object.
    pub failures: Vec<String>,
}

/// A recorded test execution.
#[derive(Debug, Clone, PartialEq)]
pub struct TestResult {
    pub id: i64,
    pub test_id: i64,
    pub test_name: String,
    /// `schema.name` of the tested object (empty for a singular test).
    pub object_name: String,
    pub run_id: Option<i64>,
    pub delta_version: Option<i64>,
    pub status: TestStatus,
    pub severity: Severity,
    pub failing_rows: i64,
    pub scope: String,
    pub started_at: String,
    pub duration_ms: i64,
    pub error: Option<String>,
}

/// One stored failing row.
#[derive(Debug, Clone, PartialEq)]
pub struct TestFailure {
    pub result_id: i64,
    pub test_name: String,
    pub row_number: i64,
    pub row_json: String,
}
