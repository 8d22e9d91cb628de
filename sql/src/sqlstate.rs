//! The PostgreSQL conditions Tributary reports, as a type. Every [`Error`](crate::Error) names
//! one ([`Error::sqlstate`](crate::Error::sqlstate)); the server writes its five-character
//! code to the wire, and nothing else in Tributary spells a SQLSTATE as text.

use crate::error::ObjectClass;
use datafusion::error::DataFusionError;

/// A SQLSTATE from PostgreSQL's Appendix A, by its condition name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SqlState {
    /// 08001: a federated source could not be reached (as postgres_fdw reports it).
    SqlclientUnableToEstablishSqlconnection,
    /// 08P01
    ProtocolViolation,
    /// 0A000
    FeatureNotSupported,
    /// 22000
    DataException,
    /// 22003
    NumericValueOutOfRange,
    /// 22012
    DivisionByZero,
    /// 22023
    InvalidParameterValue,
    /// 22P02
    InvalidTextRepresentation,
    /// 23000
    IntegrityConstraintViolation,
    /// 23502
    NotNullViolation,
    /// 23503
    ForeignKeyViolation,
    /// 23505
    UniqueViolation,
    /// 23514
    CheckViolation,
    /// 28000
    InvalidAuthorizationSpecification,
    /// 2BP01
    DependentObjectsStillExist,
    /// 3D000
    InvalidCatalogName,
    /// 3F000
    InvalidSchemaName,
    /// 42000
    SyntaxErrorOrAccessRuleViolation,
    /// 42501
    InsufficientPrivilege,
    /// 42601
    SyntaxError,
    /// 42701
    DuplicateColumn,
    /// 42702
    AmbiguousColumn,
    /// 42703
    UndefinedColumn,
    /// 42704
    UndefinedObject,
    /// 42804
    DatatypeMismatch,
    /// 42809
    WrongObjectType,
    /// 42883
    UndefinedFunction,
    /// 42P01
    UndefinedTable,
    /// 42P06
    DuplicateSchema,
    /// 42P07
    DuplicateTable,
    /// 42P17
    InvalidObjectDefinition,
    /// 53200
    OutOfMemory,
    /// 53300
    TooManyConnections,
    /// 54000
    ProgramLimitExceeded,
    /// 57014
    QueryCanceled,
    /// 58030
    IoError,
    /// XX000
    InternalError,
    /// XX001
    DataCorrupted,
}

impl SqlState {
    /// The five-character code clients receive.
    pub fn code(self) -> &'static str {
        use SqlState as S;
        match self {
            S::SqlclientUnableToEstablishSqlconnection => "08001",
            S::ProtocolViolation => "08P01",
            S::FeatureNotSupported => "0A000",
            S::DataException => "22000",
            S::NumericValueOutOfRange => "22003",
            S::DivisionByZero => "22012",
            S::InvalidParameterValue => "22023",
            S::InvalidTextRepresentation => "22P02",
            S::IntegrityConstraintViolation => "23000",
            S::NotNullViolation => "23502",
            S::ForeignKeyViolation => "23503",
            S::UniqueViolation => "23505",
            S::CheckViolation => "23514",
            S::InvalidAuthorizationSpecification => "28000",
            S::DependentObjectsStillExist => "2BP01",
            S::InvalidCatalogName => "3D000",
            S::InvalidSchemaName => "3F000",
            S::SyntaxErrorOrAccessRuleViolation => "42000",
            S::InsufficientPrivilege => "42501",
            S::SyntaxError => "42601",
            S::DuplicateColumn => "42701",
            S::AmbiguousColumn => "42702",
            S::UndefinedColumn => "42703",
            S::UndefinedObject => "42704",
            S::DatatypeMismatch => "42804",
            S::WrongObjectType => "42809",
            S::UndefinedFunction => "42883",
            S::UndefinedTable => "42P01",
            S::DuplicateSchema => "42P06",
            S::DuplicateTable => "42P07",
            S::InvalidObjectDefinition => "42P17",
            S::OutOfMemory => "53200",
            S::TooManyConnections => "53300",
            S::ProgramLimitExceeded => "54000",
            S::QueryCanceled => "57014",
            S::IoError => "58030",
            S::InternalError => "XX000",
            S::DataCorrupted => "XX001",
        }
    }
}

impl std::fmt::Display for SqlState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

impl crate::Error {
    /// The condition this error is reported as. A wrapper (a failed refresh or job) reports
    /// its cause's condition.
    pub fn sqlstate(&self) -> SqlState {
        use crate::Error as E;
        use SqlState as S;
        match self {
            E::Syntax(_) => S::SyntaxError,
            E::UndefinedObject { kind, .. } => match kind {
                ObjectClass::Schema => S::InvalidSchemaName,
                kind if kind.is_relation() => S::UndefinedTable,
                _ => S::UndefinedObject,
            },
            E::UndefinedColumn(_) => S::UndefinedColumn,
            E::DuplicateObject { kind, .. } => match kind {
                ObjectClass::Schema => S::DuplicateSchema,
                ObjectClass::Column => S::DuplicateColumn,
                _ => S::DuplicateTable,
            },
            E::DependentObjects { .. } | E::ColumnInUse { .. } => S::DependentObjectsStillExist,
            E::WrongObjectType(_) => S::WrongObjectType,
            E::Cycle(_) => S::InvalidObjectDefinition,
            E::BadInput { .. } => S::InvalidTextRepresentation,
            E::InvalidOption { .. } => S::InvalidParameterValue,
            E::NotSupported(_) => S::FeatureNotSupported,
            E::SourceUnavailable(_) => S::SqlclientUnableToEstablishSqlconnection,
            E::SchemaDrift(_) => S::DatatypeMismatch,
            E::InsufficientPrivilege(_) => S::InsufficientPrivilege,
            E::Cancelled | E::StatementTimeout => S::QueryCanceled,
            E::RefreshFailed { source, .. } | E::JobFailed { source, .. } => source.sqlstate(),
            E::TestFailed { kind, .. } => match kind.as_str() {
                "unique" => S::UniqueViolation,
                "not_null" => S::NotNullViolation,
                "references" => S::ForeignKeyViolation,
                "error" => S::IntegrityConstraintViolation,
                _ => S::CheckViolation,
            },
            E::Catalog(c) => catalog_sqlstate(c),
            E::DataFusion(df) => datafusion_sqlstate(df),
            E::Delta(_) | E::Io(_) => S::IoError,
            E::Internal(_) => S::InternalError,
        }
    }
}

fn catalog_sqlstate(e: &tributary_catalog::Error) -> SqlState {
    use tributary_catalog::Error as C;
    match e {
        C::Duplicate { .. } => SqlState::DuplicateTable,
        C::NotFound { .. } => SqlState::UndefinedObject,
        C::HasDependents { .. } => SqlState::DependentObjectsStillExist,
        C::Storage(_) => SqlState::IoError,
        C::Corrupt(_) => SqlState::DataCorrupted,
    }
}

/// DataFusion's errors carry no SQLSTATE. Its typed variants map directly; its planning
/// errors are only text, so those few are told apart by their wording.
fn datafusion_sqlstate(e: &DataFusionError) -> SqlState {
    use SqlState as S;
    match e.find_root() {
        DataFusionError::SchemaError(inner, _) => {
            use datafusion::common::SchemaError as Schema;
            match inner.as_ref() {
                Schema::FieldNotFound { .. } => S::UndefinedColumn,
                Schema::AmbiguousReference { .. } => S::AmbiguousColumn,
                Schema::DuplicateQualifiedField { .. }
                | Schema::DuplicateUnqualifiedField { .. } => S::DuplicateColumn,
            }
        }
        DataFusionError::SQL(..) => S::SyntaxError,
        DataFusionError::NotImplemented(_) => S::FeatureNotSupported,
        DataFusionError::ResourcesExhausted(_) => S::OutOfMemory,
        DataFusionError::ArrowError(a, _) => {
            use datafusion::arrow::error::ArrowError as A;
            match a.as_ref() {
                A::DivideByZero => S::DivisionByZero,
                A::CastError(_) | A::ParseError(_) | A::CsvError(_) | A::JsonError(_) => {
                    S::InvalidTextRepresentation
                }
                A::ComputeError(_) | A::ArithmeticOverflow(_) => S::NumericValueOutOfRange,
                _ => S::InternalError,
            }
        }
        DataFusionError::Plan(m) => {
            if m.contains("not found") && (m.contains("table") || m.contains("Table")) {
                S::UndefinedTable
            } else if m.contains("Invalid function") || m.contains("No function matches") {
                S::UndefinedFunction
            } else if m.contains("coerce") || m.contains("type") {
                S::DatatypeMismatch
            } else {
                S::SyntaxErrorOrAccessRuleViolation
            }
        }
        DataFusionError::External(inner) => match inner.downcast_ref::<crate::Error>() {
            Some(e) => e.sqlstate(),
            None => match inner.downcast_ref::<DataFusionError>() {
                Some(df) => datafusion_sqlstate(df),
                None => S::InternalError,
            },
        },
        DataFusionError::Execution(m) if m.contains("Divide by zero") => S::DivisionByZero,
        DataFusionError::Execution(_) => S::DataException,
        _ => S::InternalError,
    }
}

#[cfg(test)]
mod tests {
    use super::SqlState;

    #[test]
    fn codes_are_five_characters_of_digits_and_capitals() {
        for state in [
            SqlState::SyntaxError,
            SqlState::UndefinedTable,
            SqlState::DependentObjectsStillExist,
            SqlState::DataCorrupted,
        ] {
            let code = state.code();
            assert_eq!(code.len(), 5, "{state:?}");
            assert!(
                code.chars()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
            );
        }
        assert_eq!(SqlState::InvalidParameterValue.to_string(), "22023");
    }
}
