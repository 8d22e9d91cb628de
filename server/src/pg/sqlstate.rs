//! The one place engine errors become PostgreSQL errors: SQLSTATE (the error's own
//! [`tributary_engine::SqlState`]), message, detail, hint.

use pgwire::error::ErrorInfo;
use tributary_engine::{Error, SqlState};

/// A user-facing message: PostgreSQL's wording where DataFusion's differs.
fn message(e: &Error) -> String {
    let text = e.to_string();
    if e.sqlstate() == SqlState::UndefinedTable
        && let Some(name) = text
            .strip_prefix("table '")
            .and_then(|rest| rest.split('\'').next())
    {
        let short = name
            .split_once('.')
            .map(|x| x.1)
            .filter(|_| name.matches('.').count() == 2)
            .unwrap_or(name);
        return format!("relation \"{short}\" does not exist");
    }
    text
}

/// PostgreSQL's detail for objects that block a change: one "x depends on it" line each.
fn depends_on_it(dependents: &[String]) -> String {
    dependents
        .iter()
        .map(|d| format!("{d} depends on it"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The error response for an engine error.
pub(crate) fn error_info(e: &Error) -> ErrorInfo {
    let mut info = ErrorInfo::new("ERROR".into(), e.sqlstate().code().into(), message(e));
    match e.root() {
        Error::DependentObjects { dependents, .. } => {
            info.detail = Some(depends_on_it(dependents));
            info.hint = Some("Use DROP ... CASCADE to drop the dependent objects too.".into());
        }
        Error::ColumnInUse { dependents, .. } => {
            info.detail = Some(depends_on_it(dependents));
        }
        Error::BadInput {
            detail: Some(d), ..
        } => info.detail = Some(d.clone()),
        _ => {}
    }
    info
}
