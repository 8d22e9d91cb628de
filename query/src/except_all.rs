//! `EXCEPT ALL` with PostgreSQL's multiset semantics. DataFusion 55 plans `A EXCEPT ALL B` as
//! an anti join, which removes every copy of a row that appears in B at all (PostgreSQL keeps
//! `count_A - count_B` copies). Each `EXCEPT ALL` is rewritten to number the copies of each
//! row on both sides (`row_number() OVER (PARTITION BY every column)`) and take a plain
//! `EXCEPT` of the numbered rows, which is exactly the multiset difference.

use std::ops::ControlFlow;

use datafusion::execution::context::SessionState;
use datafusion::sql::sqlparser::ast::{self, SetExpr, SetOperator, SetQuantifier};

use tributary_sql::dialect::{self, Statement};
use tributary_sql::error::Result;

/// Rewrites every `EXCEPT ALL` in the statement (at most a few dozen per statement).
pub(crate) async fn rewrite(state: &SessionState, stmt: &mut ast::Statement) -> Result<()> {
    for _ in 0..32 {
        let Some((left, right)) = first_except_all(stmt) else {
            return Ok(());
        };
        let Some(names) = column_names(state, &left).await else {
            return Ok(());
        };
        let replacement = numbered_difference(&left, &right, &names)?;
        replace_first_except_all(stmt, replacement);
    }
    Ok(())
}

fn first_except_all(stmt: &ast::Statement) -> Option<(String, String)> {
    fn in_set(set: &SetExpr) -> Option<(String, String)> {
        match set {
            SetExpr::SetOperation {
                left,
                op,
                set_quantifier,
                right,
            } => {
                if *op == SetOperator::Except && *set_quantifier == SetQuantifier::All {
                    return Some((left.to_string(), right.to_string()));
                }
                in_set(left).or_else(|| in_set(right))
            }
            SetExpr::Query(q) => in_set(&q.body),
            _ => None,
        }
    }
    struct Find(Option<(String, String)>);
    impl ast::Visitor for Find {
        type Break = ();
        fn pre_visit_query(&mut self, query: &ast::Query) -> ControlFlow<()> {
            match in_set(&query.body) {
                Some(found) => {
                    self.0 = Some(found);
                    ControlFlow::Break(())
                }
                None => ControlFlow::Continue(()),
            }
        }
    }
    let mut find = Find(None);
    let _ = ast::Visit::visit(stmt, &mut find);
    find.0
}

fn replace_first_except_all(stmt: &mut ast::Statement, replacement: SetExpr) {
    fn in_set(set: &mut SetExpr, replacement: &mut Option<SetExpr>) {
        if replacement.is_none() {
            return;
        }
        if let SetExpr::SetOperation {
            op: SetOperator::Except,
            set_quantifier: SetQuantifier::All,
            ..
        } = set
        {
            if let Some(replacement) = replacement.take() {
                *set = replacement;
            }
            return;
        }
        match set {
            SetExpr::SetOperation { left, right, .. } => {
                in_set(left, replacement);
                in_set(right, replacement);
            }
            SetExpr::Query(q) => in_set(&mut q.body, replacement),
            _ => {}
        }
    }
    struct Replace(Option<SetExpr>);
    impl ast::VisitorMut for Replace {
        type Break = ();
        fn pre_visit_query(&mut self, query: &mut ast::Query) -> ControlFlow<()> {
            in_set(&mut query.body, &mut self.0);
            if self.0.is_none() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    }
    let _ = ast::VisitMut::visit(stmt, &mut Replace(Some(replacement)));
}

/// The output column names of a set operand, if it can be planned on its own.
async fn column_names(state: &SessionState, operand: &str) -> Option<Vec<String>> {
    let sql = format!("SELECT * FROM ({operand}) AS operand");
    let Ok(Statement::Sql(stmt)) = dialect::parse_statement(&sql) else {
        return None;
    };
    let plan = state
        .statement_to_plan(datafusion::sql::parser::Statement::Statement(stmt))
        .await
        .ok()?;
    Some(
        plan.schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect(),
    )
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn numbered_difference(left: &str, right: &str, names: &[String]) -> Result<SetExpr> {
    let positional: Vec<String> = (1..=names.len()).map(|i| format!("c{i}")).collect();
    let list = positional.join(", ");
    let renamed: Vec<String> = positional
        .iter()
        .zip(names)
        .map(|(p, n)| format!("{p} AS {}", quote(n)))
        .collect();
    let sql = format!(
        "SELECT {renamed} FROM ( \
           SELECT {list}, row_number() OVER (PARTITION BY {list}) AS copy_number \
             FROM ({left}) AS l({list}) \
           EXCEPT \
           SELECT {list}, row_number() OVER (PARTITION BY {list}) AS copy_number \
             FROM ({right}) AS r({list}) \
         ) AS difference",
        renamed = renamed.join(", "),
    );
    match dialect::parse_statement(&sql)? {
        Statement::Sql(stmt) => match *stmt {
            ast::Statement::Query(q) => Ok(SetExpr::Query(q)),
            _ => Err(tributary_sql::Error::Internal(
                "EXCEPT ALL rewrite is not a query".into(),
            )),
        },
        _ => Err(tributary_sql::Error::Internal(
            "EXCEPT ALL rewrite is not SQL".into(),
        )),
    }
}
