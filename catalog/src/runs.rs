//! Refresh run history: one row per refresh of a model, updated as the run progresses.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Skipped,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            "skipped" => RunStatus::Skipped,
            _ => return None,
        })
    }
}

/// A refresh run as recorded in the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub id: i64,
    pub object_id: i64,
    /// `schema.name` at the time of the run (kept when the model is dropped later).
    pub object_name: String,
    pub trigger: String,
    pub strategy: Option<String>,
    pub reason: Option<String>,
    pub status: RunStatus,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub rows_read: Option<i64>,
    pub rows_written: Option<i64>,
    pub delta_version: Option<i64>,
    /// JSON object: input name -> bookmark (Delta version, file list, cursor value).
    pub input_versions: Option<String>,
    pub error: Option<String>,
    /// Rows an incremental refresh withheld as later than the model's `lateness`.
    pub late_rows: Option<i64>,
}

/// How a run ended.
#[derive(Debug, Clone, Default)]
pub struct RunOutcome {
    pub status: Option<RunStatus>,
    pub strategy: Option<String>,
    pub reason: Option<String>,
    pub rows_read: Option<i64>,
    pub rows_written: Option<i64>,
    pub delta_version: Option<i64>,
    pub input_versions: Option<String>,
    pub error: Option<String>,
    pub late_rows: Option<i64>,
}
