//! The change sensor's memory of PostgreSQL sources, for their `poll` interval.
//!
//! `schedule = 'on change'` asks every tick whether a model's inputs changed. For a PostgreSQL
//! source with a cursor that is a query scanning the remote table (its row count and the
//! cursor's maximum), so a source with `poll` set is asked at most once per interval: between
//! two questions the sensor reuses the last answer. Refreshes and EXPLAIN always ask afresh.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::changes::Change;
use crate::sources::postgres::CursorState;

/// A source's answer: how it changed since a bookmark, and its cursor state then.
pub(crate) type Answer = (Change, Option<CursorState>);

/// The source's id and the bookmark (as JSON text) the answer is relative to.
type Key = (i64, Option<String>);

/// How long an answer is kept at most, whatever the interval (so the map stays small).
const KEEP: Duration = Duration::from_secs(24 * 3600);

#[derive(Default)]
pub(crate) struct SensorMemory {
    answers: Mutex<HashMap<Key, (Instant, Answer)>>,
}

impl SensorMemory {
    /// The answer for `source` and `bookmark` if it is younger than `poll`.
    pub(crate) fn recall(
        &self,
        source: i64,
        bookmark: Option<&serde_json::Value>,
        poll: Duration,
    ) -> Option<Answer> {
        let answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        let (at, answer) = answers.get(&(source, bookmark.map(|b| b.to_string())))?;
        (at.elapsed() < poll).then(|| answer.clone())
    }

    pub(crate) fn remember(
        &self,
        source: i64,
        bookmark: Option<&serde_json::Value>,
        answer: Answer,
    ) {
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        answers.retain(|_, (at, _)| at.elapsed() < KEEP);
        answers.insert(
            (source, bookmark.map(|b| b.to_string())),
            (Instant::now(), answer),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_kept_for_the_interval_and_per_bookmark() {
        let memory = SensorMemory::default();
        let bookmark = serde_json::json!({"cursor": "5", "rows": 5});
        memory.remember(1, Some(&bookmark), (Change::Unchanged, None));
        let hour = Duration::from_secs(3600);
        assert_eq!(
            memory.recall(1, Some(&bookmark), hour).map(|a| a.0),
            Some(Change::Unchanged)
        );
        assert!(memory.recall(1, Some(&bookmark), Duration::ZERO).is_none());
        assert!(memory.recall(1, None, hour).is_none(), "another bookmark");
        assert!(
            memory.recall(2, Some(&bookmark), hour).is_none(),
            "another source"
        );
    }
}
