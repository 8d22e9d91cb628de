//! What changed in a model's inputs since its last refresh. A model commit records the Delta
//! version of every stored input it read (its bookmarks, in the commit's metadata); comparing
//! them with the inputs' published versions and reading the Delta log in between says whether
//! an input is unchanged, only gained rows, or changed in other ways.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::datasource::view::ViewTable;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{cast, col, lit};
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use deltalake::delta_datafusion::DeltaCdfTableProvider;
use deltalake::kernel::Action;
use deltalake::logstore::get_actions;
use tributary_catalog::{CatalogObject, ObjectKind};

use crate::runtime::Runtime;
use tributary_sources::files::Listing;
use tributary_sql::error::{Error, Result};
use tributary_storage::bookmarks::Bookmark;

pub use tributary_sources::change::{Change, file_names};

/// How a file source changed since the listing a model's last commit recorded: new files
/// are appends (each read exactly once); a changed or removed file means rows changed in
/// ways only a full refresh can reflect.
pub(crate) fn files_change(
    input: &CatalogObject,
    bookmark: Option<&Bookmark>,
    now: &Listing,
) -> Change {
    let before: Option<Listing> = bookmark.and_then(Bookmark::files).cloned();
    let Some(before) = before else {
        return Change::Unknown(format!(
            "no file bookmark for source \"{}\" (first refresh)",
            input.name
        ));
    };
    let gone: Vec<String> = before
        .iter()
        .filter(|(url, stamp)| now.get(*url) != Some(stamp))
        .map(|(url, _)| url.clone())
        .collect();
    if !gone.is_empty() {
        let append_mode = input.options.get("mode").map(String::as_str) == Some("append");
        return Change::Unknown(format!(
            "source \"{}\"{}: file(s) changed or removed since the last refresh: {}",
            input.name,
            if append_mode {
                " (mode = 'append')"
            } else {
                ""
            },
            file_names(&gone)
        ));
    }
    let added: Vec<String> = now
        .keys()
        .filter(|url| !before.contains_key(*url))
        .cloned()
        .collect();
    if added.is_empty() {
        Change::Unchanged
    } else {
        Change::NewFiles {
            added,
            before: before.into_keys().collect(),
        }
    }
}

pub use tributary_storage::bookmarks::{bookmarks, bookmarks_at};

/// How `input` changed since `bookmark`.
pub(crate) async fn change_of(
    engine: &Runtime,
    input: &CatalogObject,
    bookmark: Option<i64>,
) -> Result<Change> {
    match input.kind {
        // HTTP sources store their snapshots as Delta versions, tracked like tables.
        ObjectKind::Source if tributary_sources::stored_in_delta(input) => {}
        ObjectKind::Source => {
            return Err(Error::Internal(format!(
                "source \"{}\" is tracked by its files",
                input.name
            )));
        }
        ObjectKind::View => {
            return Ok(Change::Unknown(format!("reads view \"{}\"", input.name)));
        }
        ObjectKind::Table | ObjectKind::Model => {}
    }
    let Some(from) = bookmark else {
        return Ok(Change::Unknown(format!(
            "no bookmark for \"{}\" (first refresh)",
            input.name
        )));
    };
    let to = input.published_version.unwrap_or(-1);
    if to == from {
        return Ok(Change::Unchanged);
    }
    if to < from {
        return Ok(Change::Unknown(format!(
            "\"{}\" went back from version {from} to {to}",
            input.name
        )));
    }
    let table = engine.store().published_table(input).await?;
    let log = table.log_store();
    let mut rewritten = false;
    let mut appended = false;
    for version in (from + 1)..=to {
        let Some(bytes) = log.read_commit_entry(version as u64).await? else {
            return Ok(Change::Unknown(format!(
                "version {version} of \"{}\" is no longer in its log",
                input.name
            )));
        };
        for action in get_actions(version as u64, &bytes)? {
            match action {
                // Compaction and other housekeeping rewrite files without changing rows.
                Action::Add(add) if !add.data_change => {}
                Action::Remove(remove) if !remove.data_change => {}
                Action::Add(_) => appended = true,
                Action::Remove(_) | Action::Cdc(_) => rewritten = true,
                Action::CommitInfo(info) if overwrites(&info) => {
                    return Ok(Change::Unknown(format!(
                        "\"{}\" was replaced entirely in version {version}",
                        input.name
                    )));
                }
                Action::CommitInfo(_) | Action::Txn(_) => {}
                Action::Metadata(_) | Action::Protocol(_) => {
                    return Ok(Change::Unknown(format!(
                        "the schema or properties of \"{}\" changed in version {version}",
                        input.name
                    )));
                }
                other => {
                    return Ok(Change::Unknown(format!(
                        "version {version} of \"{}\" has an action Tributary does not track ({other:?})",
                        input.name
                    )));
                }
            }
        }
    }
    Ok(match (appended, rewritten) {
        (_, true) => Change::Rewritten { from, to },
        (true, false) => Change::Appended { from, to },
        (false, false) => Change::Unchanged,
    })
}

/// Whether a commit replaced the whole table (a full refresh or an overwrite): recomputing
/// from its change feed would read every row twice, so a full refresh is cheaper.
fn overwrites(info: &deltalake::kernel::CommitInfo) -> bool {
    info.operation.as_deref() == Some("WRITE")
        && info
            .operation_parameters
            .as_ref()
            .and_then(|p| p.get("mode"))
            .and_then(|m| m.as_str())
            == Some("Overwrite")
}

/// Which rows of a change feed to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FeedRows {
    /// Rows inserted (appends).
    Inserted,
    /// Every changed row: inserted, deleted, and both images of updated rows.
    All,
    /// The rows the versions added: inserted rows and the new images of updated ones.
    Added,
    /// The rows the versions removed: deleted rows and the old images of updated ones.
    Removed,
}

/// A provider with the rows of `input`'s change feed in versions `from + 1 ..= to` that
/// `rows` selects, with the same columns and types as `like` (the provider the model's plan
/// scans).
pub(crate) async fn changed_rows(
    engine: &Runtime,
    state: &SessionState,
    input: &CatalogObject,
    (from, to): (i64, i64),
    rows: FeedRows,
    like: &Arc<dyn TableProvider>,
) -> Result<Arc<dyn TableProvider>> {
    let table = engine.store().published_table(input).await?;
    feed_rows(state, &table, (from, to), rows, like)
        .await
        .map_err(|e| match e {
            Error::Internal(m) => Error::Internal(format!("\"{}\": {m}", input.name)),
            other => other,
        })
}

/// The rows of `table`'s change feed in versions `from + 1 ..= to` that `rows` selects, with
/// the columns and types of `like`.
pub(crate) async fn feed_rows(
    state: &SessionState,
    table: &DeltaTable,
    (from, to): (i64, i64),
    rows: FeedRows,
    like: &Arc<dyn TableProvider>,
) -> Result<Arc<dyn TableProvider>> {
    let provider = cdf_provider(table, (from, to))?;
    let ctx = SessionContext::new_with_state(state.clone());
    let columns = like
        .schema()
        .fields()
        .iter()
        .map(|f| cast(col(format!("\"{}\"", f.name())), f.data_type().clone()).alias(f.name()))
        .collect::<Vec<_>>();
    let mut feed = ctx.read_table(provider)?;
    let kinds: &[&str] = match rows {
        FeedRows::All => &[],
        FeedRows::Inserted => &["insert"],
        FeedRows::Added => &["insert", "update_postimage"],
        FeedRows::Removed => &["delete", "update_preimage"],
    };
    if !kinds.is_empty() {
        let kinds = kinds.iter().map(|k| lit(*k)).collect();
        feed = feed.filter(col("_change_type").in_list(kinds, false))?;
    }
    let plan = feed.select(columns)?.into_unoptimized_plan();
    if plan.schema().fields().len() != like.schema().fields().len() {
        return Err(Error::Internal(
            "its change feed has other columns than the table".into(),
        ));
    }
    Ok(Arc::new(ViewTable::new(plan, None)))
}

/// The change data feed of `input` in versions `from + 1 ..= to`.
async fn change_feed(
    engine: &Runtime,
    input: &CatalogObject,
    (from, to): (i64, i64),
) -> Result<Arc<DeltaCdfTableProvider>> {
    let table = engine.store().published_table(input).await?;
    cdf_provider(&table, (from, to))
}

fn cdf_provider(table: &DeltaTable, (from, to): (i64, i64)) -> Result<Arc<DeltaCdfTableProvider>> {
    let cdf = table
        .clone()
        .scan_cdf()
        .with_starting_version((from + 1) as u64)
        .with_ending_version(to as u64);
    Ok(Arc::new(DeltaCdfTableProvider::try_new(cdf)?))
}

/// The first row of `input`'s change feed in `from + 1 ..= to` that is not an insert, shown
/// as `update_preimage (id=6, kind=credit)`, for errors that must name the row.
pub(crate) async fn first_changed_row(
    engine: &Runtime,
    state: &SessionState,
    input: &CatalogObject,
    (from, to): (i64, i64),
) -> Result<Option<String>> {
    let provider = change_feed(engine, input, (from, to)).await?;
    let ctx = SessionContext::new_with_state(state.clone());
    let batches = ctx
        .read_table(provider)?
        .filter(col("_change_type").not_eq(lit("insert")))?
        .limit(0, Some(1))?
        .collect()
        .await?;
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(None);
    };
    let mut kind = String::new();
    let mut values = Vec::new();
    for (name, value) in first_row(batch)? {
        match name.as_str() {
            "_change_type" => kind = value,
            "_commit_version" | "_commit_timestamp" => {}
            _ => values.push(format!("{name}={value}")),
        }
    }
    Ok(Some(format!("{kind} ({})", values.join(", "))))
}

/// The first row of a batch as (column, value as text) pairs, for error messages.
pub(super) fn first_row(
    batch: &datafusion::arrow::record_batch::RecordBatch,
) -> Result<Vec<(String, String)>> {
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let options = FormatOptions::default().with_null("NULL");
    let mut row = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let formatter = ArrayFormatter::try_new(column.as_ref(), &options)?;
        row.push((field.name().clone(), formatter.value(0).to_string()));
    }
    Ok(row)
}
