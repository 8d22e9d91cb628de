//! Incremental plans: the model's plan with its input scans replaced by new rows, old
//! versions or nothing, so that running it yields exactly the rows to append.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tributary_catalog::{CatalogObject, ObjectName};

use super::{changes, strategy};
use crate::runtime::Runtime;
use tributary_sources::counting::scan_of;
use tributary_sources::postgres;
use tributary_sql::error::{Error, Result};
use tributary_storage::bookmarks::CursorState;
use tributary_storage::delta;

pub(crate) type Inputs = BTreeMap<tributary_catalog::ObjectName, (CatalogObject, Option<i64>)>;

/// What one input's scans read in a rewritten plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ScanAs {
    /// The published version the plan was made with.
    Current,
    /// Only the rows appended since the bookmark.
    Appended,
    /// Every row changed since the bookmark: inserted, deleted, and both images of updates.
    Changed,
    /// The rows added since the bookmark (inserted, and new images of updates); not for
    /// PostgreSQL sources that update rows (no old images).
    Added,
    /// The rows removed since the bookmark (deleted, and old images of updates): none for
    /// inputs that only gained rows; not for PostgreSQL sources that update rows.
    Removed,
    /// The version the bookmark recorded.
    Old,
    /// The version the bookmark recorded and the current one, one after the other.
    OldAndCurrent,
    /// No rows.
    Empty,
}

/// The model's plan with every input scan replaced by that input's new rows (or by no rows,
/// for inputs that did not change): for a linear query, exactly the rows to append.
pub(super) async fn incremental_plan(
    engine: &Runtime,
    state: &datafusion::execution::context::SessionState,
    plan: datafusion::logical_expr::LogicalPlan,
    inputs: &Inputs,
    choice: &strategy::Choice,
) -> Result<datafusion::logical_expr::LogicalPlan> {
    rewrite_scans(
        engine,
        state,
        plan,
        inputs,
        &choice.changes,
        |_, change| match change {
            Some(c) if c.only_appends() => ScanAs::Appended,
            _ => ScanAs::Empty,
        },
    )
    .await
}

/// The delta rule for select-project-join plans over inputs that only gained rows: the union,
/// over changed inputs i, of the plan with input i's new rows, the inputs before i at their
/// new versions and the inputs after i at their old versions.
pub(super) async fn join_delta_plan(
    engine: &Runtime,
    state: &datafusion::execution::context::SessionState,
    plan: datafusion::logical_expr::LogicalPlan,
    inputs: &Inputs,
    choice: &strategy::Choice,
) -> Result<datafusion::logical_expr::LogicalPlan> {
    let changed: Vec<&tributary_catalog::ObjectName> = choice
        .changes
        .iter()
        .filter(|(_, c)| c.only_appends())
        .map(|(name, _)| name)
        .collect();
    let mut branches = Vec::new();
    for i in 0..changed.len() {
        let branch = rewrite_scans(
            engine,
            state,
            plan.clone(),
            inputs,
            &choice.changes,
            |name, _| match changed.iter().position(|c| *c == name) {
                Some(j) if j == i => ScanAs::Appended,
                Some(j) if j > i => ScanAs::Old,
                _ => ScanAs::Current,
            },
        )
        .await?;
        branches.push(branch);
    }
    let mut branches = branches.into_iter();
    let first = branches
        .next()
        .ok_or_else(|| Error::Internal("join delta without a changed input".into()))?;
    let mut builder = datafusion::logical_expr::LogicalPlanBuilder::from(first);
    for branch in branches {
        builder = builder.union(branch)?;
    }
    Ok(builder.build()?)
}

/// Replaces each input scan of `plan` according to `how` (given the input's name and change).
pub(super) async fn rewrite_scans(
    engine: &Runtime,
    state: &datafusion::execution::context::SessionState,
    plan: datafusion::logical_expr::LogicalPlan,
    inputs: &Inputs,
    changes: &BTreeMap<tributary_catalog::ObjectName, changes::Change>,
    how: impl Fn(&tributary_catalog::ObjectName, Option<&changes::Change>) -> ScanAs,
) -> Result<datafusion::logical_expr::LogicalPlan> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::datasource::empty::EmptyTable;
    use datafusion::logical_expr::LogicalPlan;

    let default_schema = state.config().options().catalog.default_schema.clone();
    let mut replacements = HashMap::new();
    let mut scans = Vec::new();
    plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            scans.push(scan.clone());
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    })?;
    for scan in scans {
        let name = tributary_catalog::ObjectName::new(
            scan.table_name.schema().unwrap_or(&default_schema),
            scan.table_name.table(),
        );
        let like = datafusion::datasource::source_as_provider(&scan.source)?;
        let change = changes.get(&name);
        if let (Some(changes::Change::CursorAppended { from, to, .. }), Some((input, _))) =
            (change, inputs.get(&name))
        {
            use tributary_sources::postgres::cursor_rows;
            let (from, to) = (from.as_deref(), Some(to.as_str()));
            let provider = match how(&name, change) {
                // The scan was pinned to the cursor this refresh records (`pin_cursors`).
                ScanAs::Current => continue,
                ScanAs::Empty => Arc::new(EmptyTable::new(like.schema())),
                // Only rows after the cursor came: they are all the added rows.
                ScanAs::Appended | ScanAs::Changed | ScanAs::Added => {
                    cursor_rows(engine.catalog(), state, input, from, to, false).await?
                }
                ScanAs::Removed => Arc::new(EmptyTable::new(like.schema())),
                ScanAs::Old => {
                    cursor_rows(engine.catalog(), state, input, None, from, true).await?
                }
                ScanAs::OldAndCurrent => {
                    let old = cursor_rows(engine.catalog(), state, input, None, from, true).await?;
                    let ctx = datafusion::prelude::SessionContext::new_with_state(state.clone());
                    let both = ctx
                        .read_table(old)?
                        .union(ctx.read_table(Arc::clone(&like))?)?;
                    Arc::new(datafusion::datasource::view::ViewTable::new(
                        both.into_unoptimized_plan(),
                        None,
                    ))
                }
            };
            replacements.insert(scan.table_name.to_string(), provider);
            continue;
        }
        if let (Some(changes::Change::CursorUpserted { from, to, .. }), Some((input, _))) =
            (change, inputs.get(&name))
        {
            use tributary_sources::postgres::cursor_rows;
            let provider = match how(&name, change) {
                // PostgreSQL keeps no old version: the current rows stand in for it, which
                // the key-wise refreshes (the only ones such a change allows) make exact.
                ScanAs::Current | ScanAs::Old | ScanAs::OldAndCurrent => continue,
                ScanAs::Empty => Arc::new(EmptyTable::new(like.schema())),
                ScanAs::Appended | ScanAs::Changed => {
                    cursor_rows(
                        engine.catalog(),
                        state,
                        input,
                        from.as_deref(),
                        Some(to),
                        true,
                    )
                    .await?
                }
                ScanAs::Added | ScanAs::Removed => {
                    return Err(Error::Internal(format!(
                        "input \"{name}\" has no change feed of added or removed rows"
                    )));
                }
            };
            replacements.insert(scan.table_name.to_string(), provider);
            continue;
        }
        if let (Some(changes::Change::NewFiles { added, before }), Some((input, _))) =
            (change, inputs.get(&name))
        {
            let spec = tributary_sources::files::FileSourceSpec::from_options(&input.options)?;
            let provider = match how(&name, change) {
                ScanAs::Current | ScanAs::OldAndCurrent => continue,
                ScanAs::Empty => Arc::new(EmptyTable::new(like.schema())),
                // No file changed or went away: the new files' rows are all the added rows.
                ScanAs::Appended | ScanAs::Changed | ScanAs::Added => {
                    spec.files_provider(like.schema(), added)?
                }
                ScanAs::Removed => Arc::new(EmptyTable::new(like.schema())),
                ScanAs::Old => spec.files_provider(like.schema(), before)?,
            };
            replacements.insert(scan.table_name.to_string(), provider);
            continue;
        }
        let range = match change {
            Some(
                changes::Change::Appended { from, to } | changes::Change::Rewritten { from, to },
            ) => Some((*from, *to)),
            _ => None,
        };
        let provider: Arc<dyn datafusion::catalog::TableProvider> =
            match (how(&name, change), range, inputs.get(&name)) {
                (ScanAs::Current, _, _) => continue,
                (ScanAs::Empty, _, _) => Arc::new(EmptyTable::new(like.schema())),
                (ScanAs::OldAndCurrent, None, _) => continue,
                (
                    kind @ (ScanAs::Appended | ScanAs::Changed | ScanAs::Added | ScanAs::Removed),
                    Some(range),
                    Some((input, _)),
                ) => {
                    let rows = match kind {
                        ScanAs::Appended => changes::FeedRows::Inserted,
                        ScanAs::Changed => changes::FeedRows::All,
                        ScanAs::Added => changes::FeedRows::Added,
                        _ => changes::FeedRows::Removed,
                    };
                    changes::changed_rows(engine, state, input, range, rows, &like).await?
                }
                (ScanAs::Old, Some((from, _)), Some((input, _))) => {
                    old_version(engine, input, from).await?
                }
                (ScanAs::OldAndCurrent, Some((from, _)), Some((input, _))) => {
                    let old = old_version(engine, input, from).await?;
                    let ctx = datafusion::prelude::SessionContext::new_with_state(state.clone());
                    let both = ctx
                        .read_table(old)?
                        .union(ctx.read_table(Arc::clone(&like))?)?;
                    Arc::new(datafusion::datasource::view::ViewTable::new(
                        both.into_unoptimized_plan(),
                        None,
                    ))
                }
                _ => {
                    return Err(Error::Internal(format!(
                        "no change to read for input \"{name}\""
                    )));
                }
            };
        replacements.insert(scan.table_name.to_string(), provider);
    }
    let rewritten = plan.transform_up(|node| match node {
        LogicalPlan::TableScan(scan) => match replacements.get(&scan.table_name.to_string()) {
            Some(provider) => Ok(Transformed::yes(scan_of(&scan, Arc::clone(provider))?)),
            None => Ok(Transformed::no(LogicalPlan::TableScan(scan))),
        },
        other => Ok(Transformed::no(other)),
    })?;
    Ok(rewritten.data)
}

/// Replaces the provider of each scan of an input with the one `with` gives (given the
/// input's name, its catalog object and the scan's current provider); `None` leaves the scan
/// as it is. Projections, filters and limits are kept.
pub(crate) fn replace_input_scans(
    plan: datafusion::logical_expr::LogicalPlan,
    inputs: &Inputs,
    with: impl Fn(
        &tributary_catalog::ObjectName,
        &CatalogObject,
        Arc<dyn datafusion::catalog::TableProvider>,
    ) -> Result<Option<Arc<dyn datafusion::catalog::TableProvider>>>,
) -> Result<datafusion::logical_expr::LogicalPlan> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::logical_expr::LogicalPlan;
    let replaced = plan.transform_up(|node| {
        let LogicalPlan::TableScan(scan) = node else {
            return Ok(Transformed::no(node));
        };
        let found = inputs.iter().find(|(name, _)| {
            scan.table_name.table() == name.name
                && scan.table_name.schema().is_none_or(|s| s == name.schema)
        });
        let Some((name, (input, _))) = found else {
            return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
        };
        let current = datafusion::datasource::source_as_provider(&scan.source)?;
        match with(name, input, current)
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?
        {
            Some(provider) => Ok(Transformed::yes(scan_of(&scan, provider)?)),
            None => Ok(Transformed::no(LogicalPlan::TableScan(scan))),
        }
    })?;
    Ok(replaced.data)
}

/// The provider of `input` at the version a bookmark recorded.
async fn old_version(
    engine: &Runtime,
    input: &CatalogObject,
    version: i64,
) -> Result<Arc<dyn datafusion::catalog::TableProvider>> {
    let location = input.location.as_deref().unwrap_or_default();
    let old = engine
        .store()
        .warehouse()
        .load(location, Some(version))
        .await?;
    delta::provider(&old).await
}

/// Makes every scan of a cursor-tracked source read only rows up to the cursor this refresh
/// records (and rows with a NULL cursor): a row that lands while the refresh runs is read by
/// the next one, never by both.
pub(crate) async fn pin_cursors(
    state: &datafusion::execution::context::SessionState,
    plan: datafusion::logical_expr::LogicalPlan,
    inputs: &BTreeMap<ObjectName, (CatalogObject, Option<i64>)>,
    cursors: &BTreeMap<ObjectName, CursorState>,
) -> Result<datafusion::logical_expr::LogicalPlan> {
    if cursors.is_empty() {
        return Ok(plan);
    }
    replace_input_scans(plan, inputs, |name, input, base| {
        let (Some(now), Ok(spec)) = (
            cursors.get(name),
            postgres::PostgresSourceSpec::from_options(&input.options),
        ) else {
            return Ok(None);
        };
        let Some(cursor) = spec.cursor else {
            return Ok(None);
        };
        Ok(Some(postgres::filtered(
            state,
            base,
            &cursor,
            None,
            now.cursor.as_deref(),
            true,
        )?))
    })
}
