//! Data tests as refresh runs them: each expectation compiled to a query of failing rows
//! ([`definition`]), executed over a model's candidate version ([`check`]), and
//! write-audit-publish ([`publish`]), which runs a model's tests on every new version before
//! readers see it. The statements (`CREATE TEST`, `RUN TESTS`) are the engine's.

pub mod check;
pub mod definition;
pub mod publish;

use tributary_catalog::{Catalog, DataTest};
pub(crate) use tributary_query::system::definitions::latest_results;
use tributary_query::system::definitions::object_names;
use tributary_sql::error::Result;

/// The latest outcome of every test, for metrics: (test, object, severity, failing?, rows).
pub fn latest_outcomes(
    catalog: &Catalog,
) -> Result<Vec<(DataTest, Option<String>, tributary_catalog::TestResult)>> {
    let names = object_names(catalog)?;
    let latest = latest_results(catalog)?;
    Ok(catalog
        .tests()?
        .into_iter()
        .filter_map(|t| {
            let result = latest.get(&t.id)?.clone();
            let object = t.object_id.and_then(|id| names.get(&id).cloned());
            Some((t, object, result))
        })
        .collect())
}
