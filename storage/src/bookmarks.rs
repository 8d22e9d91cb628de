//! The bookmarks incremental refresh and crash safety depend on, as types.
//!
//! A model's commit records, beside its data, what it read of each input (its bookmark): the
//! Delta version of a stored input, the file listing of a file source, or the cursor state of
//! a PostgreSQL source. Data and bookmarks land in one atomic Delta commit, so after a crash
//! the next refresh starts exactly where the last commit ended. The commit also names the run
//! that wrote it (start-up recovery matches runs to commits) and the strategy it used.
//!
//! The persisted form is JSON in the commit's `commitInfo` (keys [`RUN_ID_KEY`],
//! [`INPUTS_KEY`], [`STRATEGY_KEY`]); warehouses written by earlier binaries must keep
//! refreshing incrementally, so this module is the only place it is written or read, and the
//! tests below pin it byte for byte.

use std::collections::{BTreeMap, HashMap};

use deltalake::DeltaTable;
use deltalake::kernel::Action;
use deltalake::logstore::get_actions;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tributary_sql::Result;

/// Commit metadata key: the id of the run that wrote the commit.
pub const RUN_ID_KEY: &str = "tributary.run_id";
/// Commit metadata key: the input bookmarks, by input name (`schema.name`).
pub const INPUTS_KEY: &str = "tributary.inputs";
/// Commit metadata key: the refresh strategy that wrote the commit.
pub const STRATEGY_KEY: &str = "tributary.strategy";

/// A file as change tracking sees it: changed when its size or modification time changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileStamp {
    pub size: u64,
    pub modified_ms: i64,
}

/// The files of a source by URL.
pub type Listing = BTreeMap<String, FileStamp>;

/// What a refresh saw of a cursor-tracked source: the largest cursor value (as PostgreSQL's
/// JSON renders it, so it parses back into the column's Arrow type) and the row count.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CursorState {
    pub cursor: Option<String>,
    pub rows: i64,
}

/// What a model read of one input. `change` describes how the input had changed since the
/// bookmark before (shown in run history; never read back to decide anything).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Bookmark {
    /// A file source: every file read, with its stamp.
    Files {
        files: Listing,
        change: Option<String>,
    },
    /// A PostgreSQL source with a cursor column.
    Cursor {
        cursor: Option<String>,
        rows: i64,
        change: Option<String>,
    },
    /// A stored input (table, model, HTTP source snapshot) at a Delta version; `None` when
    /// it had no published version.
    Version {
        version: Option<i64>,
        change: Option<String>,
    },
}

impl Bookmark {
    /// The Delta version of a stored input.
    pub fn version(&self) -> Option<i64> {
        match self {
            Bookmark::Version { version, .. } => *version,
            _ => None,
        }
    }

    /// The listing of a file source.
    pub fn files(&self) -> Option<&Listing> {
        match self {
            Bookmark::Files { files, .. } => Some(files),
            _ => None,
        }
    }

    /// The cursor state of a PostgreSQL source.
    pub fn cursor(&self) -> Option<CursorState> {
        match self {
            Bookmark::Cursor { cursor, rows, .. } => Some(CursorState {
                cursor: cursor.clone(),
                rows: *rows,
            }),
            _ => None,
        }
    }
}

/// A model's bookmarks by input name (`schema.name`).
pub type Bookmarks = BTreeMap<String, Bookmark>;

/// What Tributary records in a commit beside its data.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommitMetadata {
    pub run_id: Option<i64>,
    pub inputs: Option<Bookmarks>,
    pub strategy: Option<String>,
}

impl CommitMetadata {
    /// The commit's `commitInfo` entries.
    pub fn into_map(self) -> serde_json::Map<String, Value> {
        let mut map = serde_json::Map::new();
        if let Some(run_id) = self.run_id {
            map.insert(RUN_ID_KEY.into(), Value::from(run_id));
        }
        if let Some(inputs) = &self.inputs {
            map.insert(INPUTS_KEY.into(), inputs_json(inputs));
        }
        if let Some(strategy) = self.strategy {
            map.insert(STRATEGY_KEY.into(), Value::String(strategy));
        }
        map
    }

    /// Reads Tributary's entries of a `commitInfo`. An input whose bookmark has an unknown
    /// shape is left out: the next refresh reads it as a first read (in full).
    pub fn from_info(info: &HashMap<String, Value>) -> Self {
        Self {
            run_id: info.get(RUN_ID_KEY).and_then(Value::as_i64),
            inputs: info
                .get(INPUTS_KEY)
                .and_then(Value::as_object)
                .map(|inputs| {
                    inputs
                        .iter()
                        .filter_map(|(name, bookmark)| {
                            Bookmark::deserialize(bookmark)
                                .ok()
                                .map(|b| (name.clone(), b))
                        })
                        .collect()
                }),
            strategy: info
                .get(STRATEGY_KEY)
                .and_then(Value::as_str)
                .map(str::to_string),
        }
    }
}

/// Bookmarks as the JSON object a commit (and a run's `input_versions`) records.
pub fn inputs_json(inputs: &Bookmarks) -> Value {
    Value::Object(
        inputs
            .iter()
            .map(|(name, bookmark)| {
                let value = serde_json::to_value(bookmark).unwrap_or(Value::Null);
                (name.clone(), value)
            })
            .collect(),
    )
}

/// The metadata recorded with commit `version` of `table` (read from that commit's log
/// entry, whatever version `table` has loaded; delta-rs' `history` lists the whole log
/// folder first).
pub async fn metadata_at(table: &DeltaTable, version: i64) -> Result<CommitMetadata> {
    let Some(bytes) = table.log_store().read_commit_entry(version as u64).await? else {
        return Ok(CommitMetadata::default());
    };
    for action in get_actions(version as u64, &bytes)? {
        if let Action::CommitInfo(info) = action {
            return Ok(CommitMetadata::from_info(&info.info));
        }
    }
    Ok(CommitMetadata::default())
}

/// The input bookmarks recorded with commit `version` of `table`.
pub async fn bookmarks_at(table: &DeltaTable, version: i64) -> Result<Bookmarks> {
    Ok(metadata_at(table, version)
        .await?
        .inputs
        .unwrap_or_default())
}

/// The input bookmarks recorded with the table's latest commit (none before the first).
pub async fn bookmarks(table: &DeltaTable) -> Bookmarks {
    let version = crate::delta::version(table);
    if version < 0 {
        return Bookmarks::new();
    }
    bookmarks_at(table, version).await.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Bookmarks {
        let mut files = Listing::new();
        files.insert(
            "file:///landing/day1.csv".into(),
            FileStamp {
                size: 120,
                modified_ms: 1_767_225_600_000,
            },
        );
        Bookmarks::from([
            (
                "raw.orders".to_string(),
                Bookmark::Files {
                    files,
                    change: Some("1 new file(s): day1.csv".into()),
                },
            ),
            (
                "bank.tx".to_string(),
                Bookmark::Cursor {
                    cursor: Some("2026-01-02 10:00:00".into()),
                    rows: 42,
                    change: None,
                },
            ),
            (
                "shop.orders".to_string(),
                Bookmark::Version {
                    version: Some(3),
                    change: Some("unchanged".into()),
                },
            ),
            (
                "shop.never".to_string(),
                Bookmark::Version {
                    version: None,
                    change: None,
                },
            ),
        ])
    }

    /// The persisted form, byte for byte: changing it breaks every warehouse already written.
    #[test]
    fn the_commit_metadata_is_written_as_it_always_was() {
        let metadata = CommitMetadata {
            run_id: Some(7),
            inputs: Some(sample()),
            strategy: Some("incremental_groups".into()),
        };
        let json = Value::Object(metadata.into_map()).to_string();
        assert_eq!(
            json,
            concat!(
                r#"{"tributary.inputs":{"bank.tx":{"change":null,"cursor":"2026-01-02 10:00:00","rows":42},"#,
                r#""raw.orders":{"change":"1 new file(s): day1.csv","files":{"file:///landing/day1.csv":{"modified_ms":1767225600000,"size":120}}},"#,
                r#""shop.never":{"change":null,"version":null},"#,
                r#""shop.orders":{"change":"unchanged","version":3}},"#,
                r#""tributary.run_id":7,"tributary.strategy":"incremental_groups"}"#
            )
        );
    }

    #[test]
    fn commit_metadata_reads_back_what_it_wrote() {
        let metadata = CommitMetadata {
            run_id: Some(7),
            inputs: Some(sample()),
            strategy: Some("full".into()),
        };
        let info: HashMap<String, Value> = metadata.clone().into_map().into_iter().collect();
        assert_eq!(CommitMetadata::from_info(&info), metadata);
    }

    #[test]
    fn a_bookmark_of_unknown_shape_is_left_out_and_the_others_kept() {
        let info: HashMap<String, Value> = HashMap::from([(
            INPUTS_KEY.to_string(),
            serde_json::json!({"a.b": 5, "c.d": {"version": 2, "change": null}}),
        )]);
        let inputs = CommitMetadata::from_info(&info).inputs.unwrap();
        assert_eq!(inputs.len(), 1);
        assert_eq!(inputs["c.d"].version(), Some(2));
    }

    /// A commit of the 07f5163 fixture warehouse (server/tests/fixtures): a keyed model's
    /// incremental commit over a table and a file source's listing, as that binary wrote it.
    #[test]
    fn commits_written_by_07f5163_read_as_typed_bookmarks() {
        let log = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../server/tests/fixtures/warehouse-07f5163/shop");
        let mut seen_versions = 0;
        let mut seen_files = 0;
        for table in std::fs::read_dir(&log).unwrap() {
            let folder = table.unwrap().path().join("_delta_log");
            for entry in std::fs::read_dir(folder).unwrap() {
                let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
                for line in text.lines() {
                    let action: Value = serde_json::from_str(line).unwrap();
                    let Some(info) = action.get("commitInfo") else {
                        continue;
                    };
                    let info: HashMap<String, Value> =
                        serde_json::from_value(info.clone()).unwrap();
                    let Some(raw) = info.get(INPUTS_KEY).and_then(Value::as_object) else {
                        continue;
                    };
                    let typed = CommitMetadata::from_info(&info).inputs.unwrap();
                    assert_eq!(typed.len(), raw.len(), "every bookmark reads: {raw:?}");
                    for (name, bookmark) in &typed {
                        // Reading and writing again gives the bytes the old binary wrote.
                        assert_eq!(&serde_json::to_value(bookmark).unwrap(), &raw[name]);
                        match bookmark {
                            Bookmark::Version {
                                version: Some(_), ..
                            } => seen_versions += 1,
                            Bookmark::Files { .. } => seen_files += 1,
                            _ => {}
                        }
                    }
                }
            }
        }
        assert!(
            seen_versions > 0 && seen_files > 0,
            "{seen_versions} {seen_files}"
        );
    }
}
