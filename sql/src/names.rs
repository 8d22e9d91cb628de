//! Object names as PostgreSQL resolves them: unquoted identifiers fold to lower case
//! (sqlparser keeps them as written), and unqualified names use the session's schema.

use datafusion::sql::sqlparser::ast::{self, ObjectNamePart};
use tributary_catalog::ObjectName;

use crate::error::{Error, Result};

pub fn ident(ident: &ast::Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

/// `schema.name` or `name` (in `default_schema`); a three-part name must name this database.
pub fn object_name(name: &ast::ObjectName, default_schema: &str) -> Result<ObjectName> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => Ok(ident(i)),
            other => Err(Error::Syntax(format!("unexpected name part {other}"))),
        })
        .collect::<Result<_>>()?;
    match parts.as_slice() {
        [n] => Ok(ObjectName::new(default_schema, n)),
        [s, n] => Ok(ObjectName::new(s, n)),
        [_db, s, n] => Ok(ObjectName::new(s, n)),
        _ => Err(Error::Syntax(format!("improper qualified name: {name}"))),
    }
}
