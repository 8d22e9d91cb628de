//! The one place engine errors become PostgreSQL errors: SQLSTATE, message, detail, hint.

use datafusion::error::DataFusionError;
use pgwire::error::ErrorInfo;
use tributary_engine::Error;

/// The SQLSTATE for an engine error.
pub fn sqlstate(e: &Error) -> &'static str {
    match e {
        Error::Syntax(_) => "42601",
        Error::UndefinedObject { kind, .. } => match *kind {
            "schema" => "3F000",
            "configuration parameter" => "42704",
            "relation" | "model" | "source" | "table" | "view" => "42P01",
            _ => "42704",
        },
        Error::UndefinedColumn(_) => "42703",
        Error::DuplicateObject { kind, .. } => match *kind {
            "schema" => "42P06",
            "column" => "42701",
            _ => "42P07",
        },
        Error::DependentObjects { .. } => "2BP01",
        Error::WrongObjectType(_) => "42809",
        Error::Cycle(_) => "42P17",
        Error::BadInput { .. } => "22P02",
        Error::InvalidOption { .. } => "22023",
        Error::NotSupported(_) => "0A000",
        // As postgres_fdw reports a remote server it cannot reach.
        Error::SourceUnavailable(_) => "08001",
        Error::SchemaDrift(_) => "42804",
        Error::InsufficientPrivilege(_) => "42501",
        Error::Cancelled | Error::StatementTimeout => "57014",
        Error::RefreshFailed { source, .. } | Error::JobFailed { source, .. } => sqlstate(source),
        Error::TestFailed { kind, .. } => match kind.as_str() {
            "unique" => "23505",
            "not_null" => "23502",
            "references" => "23503",
            "error" => "23000",
            _ => "23514",
        },
        Error::Catalog(c) => match c {
            tributary_catalog::Error::Duplicate { .. } => "42P07",
            tributary_catalog::Error::NotFound { .. } => "42704",
            tributary_catalog::Error::HasDependents { .. } => "2BP01",
            tributary_catalog::Error::Storage(_) => "58030",
            tributary_catalog::Error::Corrupt(_) => "XX001",
        },
        Error::DataFusion(df) => datafusion_sqlstate(df),
        Error::Delta(_) => "58030",
        Error::Io(_) => "58030",
        Error::Internal(_) => "XX000",
    }
}

fn datafusion_sqlstate(e: &DataFusionError) -> &'static str {
    let root = e.find_root();
    match root {
        DataFusionError::SchemaError(inner, _) => {
            use datafusion::common::SchemaError as S;
            match inner.as_ref() {
                S::FieldNotFound { .. } => "42703",
                S::AmbiguousReference { .. } => "42702",
                S::DuplicateQualifiedField { .. } | S::DuplicateUnqualifiedField { .. } => "42701",
            }
        }
        DataFusionError::SQL(..) => "42601",
        DataFusionError::NotImplemented(_) => "0A000",
        DataFusionError::ResourcesExhausted(_) => "53200",
        DataFusionError::ArrowError(a, _) => {
            use datafusion::arrow::error::ArrowError as A;
            match a.as_ref() {
                A::DivideByZero => "22012",
                A::CastError(_) | A::ParseError(_) | A::CsvError(_) | A::JsonError(_) => "22P02",
                A::ComputeError(_) | A::ArithmeticOverflow(_) => "22003",
                _ => "XX000",
            }
        }
        DataFusionError::Plan(m) => {
            if m.contains("not found") && (m.contains("table") || m.contains("Table")) {
                "42P01"
            } else if m.contains("Invalid function") || m.contains("No function matches") {
                "42883"
            } else if m.contains("coerce") || m.contains("type") {
                "42804"
            } else {
                "42000"
            }
        }
        DataFusionError::External(inner) => match inner.downcast_ref::<Error>() {
            Some(e) => sqlstate(e),
            None => match inner.downcast_ref::<DataFusionError>() {
                Some(df) => datafusion_sqlstate(df),
                None => "XX000",
            },
        },
        DataFusionError::Execution(m) if m.contains("Divide by zero") => "22012",
        DataFusionError::Execution(_) => "22000",
        _ => "XX000",
    }
}

/// A user-facing message: PostgreSQL's wording where DataFusion's differs.
fn message(e: &Error) -> String {
    let text = e.to_string();
    if sqlstate(e) == "42P01"
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

/// The error response for an engine error.
pub fn error_info(e: &Error) -> ErrorInfo {
    let mut info = ErrorInfo::new("ERROR".into(), sqlstate(e).into(), message(e));
    match e.root() {
        Error::DependentObjects { dependents, .. } => {
            info.detail = Some(
                dependents
                    .iter()
                    .map(|d| format!("{d} depends on it"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            );
            info.hint = Some("Use DROP ... CASCADE to drop the dependent objects too.".into());
        }
        Error::BadInput {
            detail: Some(d), ..
        } => info.detail = Some(d.clone()),
        _ => {}
    }
    info
}
