//! From `CREATE TEST` to what the catalog stores: each expectation becomes one query that
//! returns the failing rows, written in SQL so `tributary.tests.query` shows exactly what runs
//! and a user can run it by hand.

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::ast::{Expr, Ident};
use tributary_catalog::{ObjectName, Severity};

use tributary_sql::dialect::{CreateTest, Expectation};
use tributary_sql::error::{Error, Result};
use tributary_sql::names;

/// Failing rows kept per execution unless a test says otherwise.
pub const DEFAULT_FAILURES_LIMIT: i64 = 100;

/// A test's query and settings, before planning checks the names it uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    pub kind: &'static str,
    /// The columns of UNIQUE and NOT NULL, folded.
    pub columns: Vec<String>,
    pub query: String,
    pub severity: Severity,
    pub store_failures: bool,
    pub failures_limit: i64,
}

pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn quote_object(name: &ObjectName) -> String {
    format!("{}.{}", quote(&name.schema), quote(&name.name))
}

fn columns(idents: &[Ident]) -> Vec<String> {
    idents.iter().map(names::ident).collect()
}

/// Compiles `test`, whose `ON` object (if any) is `on` and whose `REFERENCES` target (if any)
/// resolves to `target`.
pub fn compile(
    test: &CreateTest,
    on: Option<&ObjectName>,
    target: Option<&ObjectName>,
) -> Result<Compiled> {
    let (severity, store_failures, failures_limit) = options(&test.options)?;
    let table = || {
        on.map(quote_object)
            .ok_or_else(|| Error::Internal("expectation without an object".into()))
    };
    let (kind, cols, query) = match &test.expectation {
        Expectation::Unique(idents) => {
            let cols = columns(idents);
            let list = cols.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
            let not_null = cols
                .iter()
                .map(|c| format!("{} IS NOT NULL", quote(c)))
                .collect::<Vec<_>>()
                .join(" AND ");
            let query = format!(
                "SELECT {list}, count(*) AS occurrences FROM {} WHERE {not_null} \
                 GROUP BY {list} HAVING count(*) > 1",
                table()?
            );
            ("unique", cols, query)
        }
        Expectation::NotNull(idents) => {
            let cols = columns(idents);
            let any_null = cols
                .iter()
                .map(|c| format!("{} IS NULL", quote(c)))
                .collect::<Vec<_>>()
                .join(" OR ");
            let query = format!("SELECT * FROM {} WHERE {any_null}", table()?);
            ("not_null", cols, query)
        }
        Expectation::Check(expr) => {
            let kind = if matches!(**expr, Expr::InList { .. }) {
                "accepted_values"
            } else {
                "check"
            };
            // Like a CHECK constraint, a condition that is NULL passes.
            let query = format!(
                "SELECT * FROM {} WHERE NOT coalesce(({expr}), true)",
                table()?
            );
            (kind, Vec::new(), query)
        }
        Expectation::References {
            column,
            target_column,
            ..
        } => {
            let target =
                target.ok_or_else(|| Error::Internal("references without a target".into()))?;
            let (c, t) = (
                quote(&names::ident(column)),
                quote(&names::ident(target_column)),
            );
            let query = format!(
                "SELECT * FROM {} AS child WHERE child.{c} IS NOT NULL AND NOT EXISTS \
                 (SELECT 1 FROM {} AS parent WHERE parent.{t} = child.{c})",
                table()?,
                quote_object(target)
            );
            ("references", vec![names::ident(column)], query)
        }
        Expectation::RowCount { min, max } => {
            if min > max {
                return Err(Error::InvalidOption {
                    option: "row count".into(),
                    message: format!("the lower bound {min} is above the upper bound {max}"),
                });
            }
            let query = format!(
                "SELECT row_count, {min} AS min_rows, {max} AS max_rows FROM \
                 (SELECT count(*) AS row_count FROM {}) AS counted \
                 WHERE row_count NOT BETWEEN {min} AND {max}",
                table()?
            );
            ("row_count", Vec::new(), query)
        }
        Expectation::Freshness { column, within } => {
            let c = quote(&names::ident(column));
            let within = within.replace('\'', "''");
            let oldest = format!("CAST(now() AS TIMESTAMP) - INTERVAL '{within}'");
            let query = format!(
                "SELECT latest, {oldest} AS oldest_allowed FROM \
                 (SELECT max(CAST({c} AS TIMESTAMP)) AS latest FROM {}) AS newest \
                 WHERE latest IS NULL OR latest < {oldest}",
                table()?
            );
            ("freshness", vec![names::ident(column)], query)
        }
        Expectation::Query { text, .. } => ("singular", Vec::new(), text.clone()),
    };
    Ok(Compiled {
        kind,
        columns: cols,
        query,
        severity,
        store_failures,
        failures_limit,
    })
}

fn options(options: &BTreeMap<String, String>) -> Result<(Severity, bool, i64)> {
    let mut severity = Severity::Error;
    let mut store_failures = true;
    let mut limit = DEFAULT_FAILURES_LIMIT;
    for (key, value) in options {
        let invalid = |message: &str| Error::InvalidOption {
            option: key.clone(),
            message: message.into(),
        };
        match key.as_str() {
            "severity" => {
                severity =
                    Severity::parse(value).ok_or_else(|| invalid("expected 'error' or 'warn'"))?;
            }
            "store_failures" => {
                store_failures = match value.to_ascii_lowercase().as_str() {
                    "true" | "on" | "yes" | "1" => true,
                    "false" | "off" | "no" | "0" => false,
                    _ => return Err(invalid("expected true or false")),
                };
            }
            "failures_limit" => {
                limit = value
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| invalid("expected a number of rows, 0 or more"))?;
            }
            "description" => {}
            _ => {
                return Err(invalid(
                    "unknown test option (severity, store_failures, failures_limit, description)",
                ));
            }
        }
    }
    Ok((severity, store_failures, limit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_sql::dialect::{Statement, parse_statement};

    fn compiled(sql: &str) -> Result<Compiled> {
        let Statement::CreateTest(t) = parse_statement(sql).unwrap() else {
            panic!("not a test")
        };
        let on = ObjectName::new("marts", "f");
        let target = ObjectName::new("marts", "dim");
        compile(&t, Some(&on), Some(&target))
    }

    #[test]
    fn unique_ignores_nulls_like_a_unique_constraint() {
        let c = compiled("create test u on f expect unique (a, \"B\")").unwrap();
        assert_eq!(c.kind, "unique");
        assert_eq!(c.columns, vec!["a", "B"]);
        assert_eq!(
            c.query,
            "SELECT \"a\", \"B\", count(*) AS occurrences FROM \"marts\".\"f\" \
             WHERE \"a\" IS NOT NULL AND \"B\" IS NOT NULL GROUP BY \"a\", \"B\" HAVING count(*) > 1"
        );
        assert_eq!(c.severity, Severity::Error);
        assert!(c.store_failures);
    }

    #[test]
    fn options_are_checked() {
        let c = compiled(
            "create test k on f expect kind in ('a') with (severity = 'warn', failures_limit = 5)",
        )
        .unwrap();
        assert_eq!(c.kind, "accepted_values");
        assert_eq!((c.severity, c.failures_limit), (Severity::Warn, 5));
        assert!(compiled("create test k on f expect x > 0 with (severity = 'fatal')").is_err());
        assert!(compiled("create test k on f expect x > 0 with (colour = 'red')").is_err());
        assert!(compiled("create test c on f expect row count between 5 and 1").is_err());
    }
}
