//! How an input changed since the bookmark a model recorded: what each source kind's change
//! detection answers, and what refresh strategies decide on.

/// How one input changed since the bookmark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Unchanged,
    /// Only new rows, in Delta versions `from + 1 ..= to`.
    Appended {
        from: i64,
        to: i64,
    },
    /// Updates, deletes, overwrites or schema changes.
    Rewritten {
        from: i64,
        to: i64,
    },
    /// A file source gained files (and no file changed or went away).
    NewFiles {
        added: Vec<String>,
        before: Vec<String>,
    },
    /// A PostgreSQL source with a cursor gained rows (and lost or changed none): those whose
    /// cursor is after `from` and at most `to` (see `sources::postgres`).
    CursorAppended {
        cursor: String,
        from: Option<String>,
        to: String,
    },
    /// A PostgreSQL source with a cursor and a `primary_key` had rows inserted or updated
    /// (those whose cursor is after `from` and at most `to`) and maybe deleted. PostgreSQL
    /// keeps no old image of an updated or deleted row, so only a model whose `unique_key` is
    /// the source's primary key can follow it (see `keyed`).
    CursorUpserted {
        cursor: String,
        from: Option<String>,
        to: String,
        primary_key: Vec<String>,
    },
    /// No bookmark (first refresh) or an input kind without change tracking yet.
    Unknown(String),
}

impl Change {
    pub fn describe(&self) -> String {
        match self {
            Change::Unchanged => "unchanged".into(),
            Change::Appended { from, to } => {
                format!("rows appended since version {from} (now {to})")
            }
            Change::Rewritten { from, to } => {
                format!("rows updated, deleted or replaced since version {from} (now {to})")
            }
            Change::NewFiles { added, .. } => {
                format!("{} new file(s): {}", added.len(), file_names(added))
            }
            Change::CursorAppended { cursor, from, to } => match from {
                Some(from) => format!("rows with {cursor} after {from} (up to {to})"),
                None => format!("rows with {cursor} up to {to}"),
            },
            Change::CursorUpserted {
                cursor,
                from,
                primary_key,
                ..
            } => format!(
                "rows inserted or updated (with {cursor} after {}) or deleted, by primary key ({})",
                from.as_deref().unwrap_or("the start"),
                primary_key.join(", ")
            ),
            Change::Unknown(why) => why.clone(),
        }
    }

    /// Whether rows were updated or deleted, so only a key-wise refresh can follow.
    pub fn rewrites(&self) -> bool {
        matches!(
            self,
            Change::Rewritten { .. } | Change::CursorUpserted { .. }
        )
    }

    /// Whether the change reads as added and removed rows (`ScanAs::Added`, `ScanAs::Removed`).
    pub fn has_row_feed(&self) -> bool {
        matches!(
            self,
            Change::Appended { .. }
                | Change::Rewritten { .. }
                | Change::NewFiles { .. }
                | Change::CursorAppended { .. }
        )
    }

    /// Whether the input only gained rows.
    pub fn only_appends(&self) -> bool {
        matches!(
            self,
            Change::Appended { .. } | Change::NewFiles { .. } | Change::CursorAppended { .. }
        )
    }
}

/// The last parts of up to five file URLs, for messages.
pub fn file_names(urls: &[String]) -> String {
    let mut names: Vec<&str> = urls
        .iter()
        .take(5)
        .map(|u| u.rsplit('/').next().unwrap_or(u))
        .collect();
    if urls.len() > 5 {
        names.push("...");
    }
    names.join(", ")
}
