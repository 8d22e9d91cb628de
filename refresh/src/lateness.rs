//! `event_time` + `lateness`: an incremental refresh applies rows whose event time is within
//! the lateness of the newest event time the model holds, and withholds later ones, counted
//! in `tributary.runs.late_rows` (never silently dropped) and applied by the next full
//! refresh. Without these options every change is applied, so the model equals a full
//! recomputation at every refresh.

use datafusion::arrow::datatypes::{DataType, IntervalUnit};
use datafusion::common::{Column, ScalarValue};
use datafusion::execution::context::SessionState;
use datafusion::functions_aggregate::expr_fn::max;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, cast, col, lit};
use datafusion::prelude::{DataFrame, SessionContext};
use deltalake::DeltaTable;
use tributary_catalog::CatalogObject;

use tributary_sql::error::{Error, Result};
use tributary_storage::delta;

/// The model's event-time column and the oldest event time an incremental refresh applies.
#[derive(Debug, Clone)]
pub(crate) struct Lateness {
    pub column: String,
    watermark: ScalarValue,
}

impl Lateness {
    /// `event_time` and `lateness` of the model, with the watermark computed from the rows
    /// it holds now; `None` without the options or while the model is empty.
    pub(crate) async fn of(
        state: &SessionState,
        model: &CatalogObject,
        table: &DeltaTable,
    ) -> Result<Option<Lateness>> {
        let (Some(column), Some(lateness)) = (
            model.options.get("event_time"),
            model.options.get("lateness"),
        ) else {
            return Ok(None);
        };
        if !model.columns.iter().any(|c| &c.name == column) {
            return Err(Error::InvalidOption {
                option: "event_time".into(),
                message: format!("\"{column}\" is not a column of model \"{}\"", model.name),
            });
        }
        let ctx = SessionContext::new_with_state(state.clone());
        let interval = cast(
            lit(lateness.as_str()),
            DataType::Interval(IntervalUnit::MonthDayNano),
        );
        let batches = ctx
            .read_table(delta::provider(table).await?)?
            .aggregate(
                vec![],
                vec![max(col(Column::from_name(column))).alias("newest")],
            )?
            .select(vec![(col("newest") - interval).alias("watermark")])?
            .collect()
            .await
            .map_err(|e| Error::InvalidOption {
                option: "lateness".into(),
                message: format!("\"{lateness}\" does not apply to \"{column}\": {e}"),
            })?;
        let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
            return Ok(None);
        };
        let watermark = ScalarValue::try_from_array(batch.column(0), 0)?;
        if watermark.is_null() {
            return Ok(None);
        }
        Ok(Some(Lateness {
            column: column.clone(),
            watermark,
        }))
    }

    /// Rows on time (or without an event time), over a plan with a column `name`.
    pub(crate) fn on_time(&self, name: &str) -> Expr {
        let c = col(Column::from_name(name));
        c.clone().gt_eq(lit(self.watermark.clone())).or(c.is_null())
    }

    /// Splits the rows `plan` would append into those on time and the count of late ones.
    pub(crate) async fn withhold(
        &self,
        state: &SessionState,
        plan: LogicalPlan,
    ) -> Result<(LogicalPlan, i64)> {
        let late = col(Column::from_name(&self.column)).lt(lit(self.watermark.clone()));
        let late_rows = DataFrame::new(state.clone(), plan.clone())
            .filter(late)?
            .count()
            .await? as i64;
        let on_time = LogicalPlanBuilder::from(plan)
            .filter(self.on_time(&self.column))?
            .build()?;
        Ok((on_time, late_rows))
    }
}
