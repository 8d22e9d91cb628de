//! The new rows of a `unique_key` model's affected keys straight from its input's change
//! feed, instead of recomputing the query for those keys over the whole input.
//!
//! When one input changed, by one commit (or by appends only), each model row comes from at
//! most one input row combination, and the rows the input added are exactly its inserted
//! rows and the new images of its updated ones. Running the query on those added rows gives
//! every new row of an affected key, provided no unchanged input row produces an affected
//! key. That proviso is checked against the model itself: the model equals the query over
//! the old inputs, so it holds exactly as many rows of the affected keys as the query over
//! the removed rows (deleted rows and old images) produces, plus one per unchanged input row
//! with an affected key. The merge compares the two counts before it writes anything
//! ([`super::on_read::merge`]); if they differ, the keys are recomputed the long way.
//!
//! When the counts agree, the model's rows of the affected keys are exactly the query's rows
//! over the removed input rows (those are among the model's rows of affected keys, and there
//! are as many): the merge takes them as the commit's deleted rows for its change data
//! instead of reading them back from the model's files, which with keys spread over every
//! file would decode the whole model.

use std::collections::BTreeMap;

use datafusion::arrow::array::RecordBatch;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::DataFrame;

use crate::changes::Change;
use crate::plans::{self, Inputs, ScanAs};
use crate::runtime::Runtime;
use tributary_sources::counting::{RowCounter, count_scans};
use tributary_sql::error::Result;

/// The query over the changed input's added rows, and its rows over the removed ones.
pub(super) struct FromFeed {
    pub added: LogicalPlan,
    pub removed: Vec<RecordBatch>,
}

/// The added-rows plan of a model whose single changed input is a Delta table changed by one
/// commit or by appends, or `None` when the model's changes are not of that kind.
pub(super) async fn rows_from_feed(
    engine: &Runtime,
    state: &SessionState,
    plan: &LogicalPlan,
    inputs: &Inputs,
    changes: &BTreeMap<tributary_catalog::ObjectName, Change>,
    counter: &RowCounter,
) -> Result<Option<FromFeed>> {
    let mut changed = changes
        .iter()
        .filter(|(_, c)| c.only_appends() || c.rewrites());
    let (Some((input, change)), None) = (changed.next(), changed.next()) else {
        return Ok(None);
    };
    match change {
        Change::Appended { .. } => {}
        // Over several commits a row added by one may be removed by a later one, and the
        // feed does not say which rows those are.
        Change::Rewritten { from, to } if *to == from + 1 => {}
        _ => return Ok(None),
    }
    let reading = |kind: ScanAs| {
        move |name: &tributary_catalog::ObjectName, _: Option<&Change>| {
            if name == input { kind } else { ScanAs::Current }
        }
    };
    let added = plans::rewrite_scans(
        engine,
        state,
        plan.clone(),
        inputs,
        changes,
        reading(ScanAs::Added),
    )
    .await?;
    let removed = plans::rewrite_scans(
        engine,
        state,
        plan.clone(),
        inputs,
        changes,
        reading(ScanAs::Removed),
    )
    .await?;
    let removed = DataFrame::new(state.clone(), count_scans(removed, counter)?)
        .collect()
        .await?;
    Ok(Some(FromFeed {
        added: count_scans(added, counter)?,
        removed,
    }))
}
