//! A model's columns are fixed when it is created (or replaced). Its query is planned again
//! at every refresh, against inputs that may have changed shape since: a new input column
//! (through `SELECT *`) is left out until the model is replaced; a column the model stores
//! that its query no longer produces, or produces with another type, fails the refresh with
//! a message naming the model, the column and the input it comes from.

use datafusion::common::Column;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};
use tributary_catalog::CatalogObject;

use tributary_query::planning;
use tributary_sql::error::{Error, Result};
use tributary_sql::types;

/// The plan, projected to exactly the model's stored columns, in their order.
pub(super) fn conform(
    state: &SessionState,
    plan: LogicalPlan,
    model: &CatalogObject,
    inputs: impl Fn() -> Result<Vec<CatalogObject>>,
) -> Result<LogicalPlan> {
    if model.columns.is_empty() {
        return Ok(plan);
    }
    let result = planning::result_schema(state, &plan)?;
    let produced = types::columns_of_schema(&types::storage_schema(&result));
    let mut exprs = Vec::with_capacity(model.columns.len());
    for stored in &model.columns {
        let Some(position) = produced.iter().position(|c| c.name == stored.name) else {
            return Err(Error::bad_input(format!(
                "column \"{}\" of model \"{}\" is no longer produced by its query{}",
                stored.name,
                model.name,
                match inputs()?
                    .iter()
                    .find(|i| !i.columns.iter().any(|c| c.name == stored.name))
                {
                    Some(input) => format!(
                        " (input \"{}\" has no column \"{}\" now)",
                        input.name, stored.name
                    ),
                    None => where_it_went(&stored.name, None, &inputs()?),
                }
            )));
        };
        let now = &produced[position];
        if now.data_type != stored.data_type {
            return Err(Error::bad_input(format!(
                "column \"{}\" of model \"{}\" is {} but its query now produces {}{}; replace the model to change its columns",
                stored.name,
                model.name,
                stored.data_type,
                now.data_type,
                where_it_went(&stored.name, Some(&now.data_type), &inputs()?)
            )));
        }
        let (qualifier, field) = plan.schema().qualified_field(position);
        exprs.push(Expr::Column(Column::new(qualifier.cloned(), field.name())));
    }
    let unchanged = exprs.len() == produced.len()
        && model
            .columns
            .iter()
            .zip(&produced)
            .all(|(a, b)| a.name == b.name);
    if unchanged {
        return Ok(plan);
    }
    Ok(LogicalPlanBuilder::from(plan).project(exprs)?.build()?)
}

/// Which input has a column of that name (preferring one of the new type), for the message.
fn where_it_went(column: &str, new_type: Option<&str>, inputs: &[CatalogObject]) -> String {
    let candidates = || {
        inputs
            .iter()
            .filter_map(|i| i.columns.iter().find(|c| c.name == column).map(|c| (i, c)))
    };
    let found = candidates()
        .find(|(_, c)| Some(c.data_type.as_str()) == new_type)
        .or_else(|| candidates().next());
    match found {
        Some((input, c)) => format!(
            " (input \"{}\" has column \"{column}\" as {})",
            input.name, c.data_type
        ),
        None => {
            let names: Vec<String> = inputs.iter().map(|i| format!("\"{}\"", i.name)).collect();
            format!(
                " (none of its inputs {} has a column \"{column}\" now)",
                names.join(", ")
            )
        }
    }
}
