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
use tributary_catalog::CatalogObject;
use tributary_sources::postgres;
use tributary_sql::error::Result;
use tributary_storage::bookmarks::{Bookmark, CursorState};

/// A source's answer: how it changed since a bookmark, and its cursor state then.
pub(crate) type Answer = (Change, Option<CursorState>);

/// The source's id and the bookmark the answer is relative to.
type Key = (i64, Option<Bookmark>);

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
        bookmark: Option<&Bookmark>,
        poll: Duration,
    ) -> Option<Answer> {
        let answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        let (at, answer) = answers.get(&(source, bookmark.cloned()))?;
        (at.elapsed() < poll).then(|| answer.clone())
    }

    pub(crate) fn remember(&self, source: i64, bookmark: Option<&Bookmark>, answer: Answer) {
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        answers.retain(|_, (at, _)| at.elapsed() < KEEP);
        answers.insert((source, bookmark.cloned()), (Instant::now(), answer));
    }
}

/// [`postgres::change_since`] for the scheduler's change sensor: with the source's `poll` interval set,
/// the answer of the last question younger than the interval, if there is one.
pub(crate) async fn sensed_change(
    engine: &crate::runtime::Runtime,
    input: &CatalogObject,
    bookmark: Option<&Bookmark>,
) -> Result<(Change, Option<CursorState>)> {
    let poll = input
        .options
        .get("poll")
        .map(|p| tributary_sql::options::parse_duration("poll", p))
        .transpose()?
        .filter(|p| !p.is_zero());
    let Some(poll) = poll else {
        return postgres::change_since(engine.catalog(), input, bookmark).await;
    };
    if let Some(answer) = engine.sensor.recall(input.id, bookmark, poll) {
        return Ok(answer);
    }
    let answer = postgres::change_since(engine.catalog(), input, bookmark).await?;
    engine.sensor.remember(input.id, bookmark, answer.clone());
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_kept_for_the_interval_and_per_bookmark() {
        let memory = SensorMemory::default();
        let bookmark = Bookmark::Cursor {
            cursor: Some("5".into()),
            rows: 5,
            change: None,
        };
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
