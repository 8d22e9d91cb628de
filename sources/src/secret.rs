//! Secret resolution for connectors: a secret's value at the moment a source uses it (a
//! PostgreSQL password, an HTTP source's headers). The statements that define secrets live in
//! the engine; values travel as [`SecretValue`], which never prints itself.

use tributary_catalog::ObjectClass;
use tributary_catalog::{Catalog, SecretSource, SecretValue};

use tributary_sql::error::{Error, Result};

/// The value of the secret `name` now: a literal from the catalog, or the current value of the
/// environment variable an `ENV` secret names (read at each use, so rotating it needs no DDL).
/// Errors name the secret and the variable, never a value: `UndefinedObject` (42704) for an
/// unknown secret, `BadInput` for an unset variable.
pub fn resolve_secret(catalog: &Catalog, name: &str) -> Result<SecretValue> {
    let secret = catalog
        .secret(name)?
        .ok_or_else(|| Error::UndefinedObject {
            kind: ObjectClass::Secret,
            name: name.to_string(),
        })?;
    match secret.source {
        SecretSource::Literal(value) => Ok(value),
        SecretSource::Env(var) => match std::env::var(&var) {
            Ok(value) => Ok(SecretValue::new(value)),
            Err(_) => Err(Error::BadInput {
                message: format!(
                    "secret \"{name}\" reads environment variable \"{var}\", which is not set \
                     in the server's environment"
                ),
                detail: None,
            }),
        },
    }
}

/// The secret an option names. An unquoted name in `WITH (...)` keeps its case while secret
/// names fold to lower case, so an unknown mixed-case name is looked up folded too.
pub fn resolve_named_in_option(catalog: &Catalog, name: &str) -> Result<SecretValue> {
    match resolve_secret(catalog, name) {
        Err(Error::UndefinedObject { .. }) if name.to_lowercase() != name => {
            resolve_secret(catalog, &name.to_lowercase())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_literal_and_env_secrets() {
        let catalog = Catalog::open_in_memory().unwrap();
        catalog
            .create_secret(
                "lit",
                &SecretSource::Literal(SecretValue::new("v1")),
                false,
                false,
            )
            .unwrap();
        catalog
            .create_secret(
                "env",
                &SecretSource::Env("TRIBUTARY_TEST_UNSET_VAR_X".into()),
                false,
                false,
            )
            .unwrap();
        assert_eq!(resolve_secret(&catalog, "lit").unwrap().expose(), "v1");
        let e = resolve_secret(&catalog, "env").unwrap_err().to_string();
        assert!(e.contains("TRIBUTARY_TEST_UNSET_VAR_X"), "{e}");
        assert!(matches!(
            resolve_secret(&catalog, "missing"),
            Err(Error::UndefinedObject {
                kind: ObjectClass::Secret,
                ..
            })
        ));
    }

    #[test]
    fn a_mixed_case_option_value_finds_the_folded_secret() {
        let catalog = Catalog::open_in_memory().unwrap();
        catalog
            .create_secret(
                "headers",
                &SecretSource::Literal(SecretValue::new("X-Key: 1")),
                false,
                false,
            )
            .unwrap();
        let value = resolve_named_in_option(&catalog, "Headers").unwrap();
        assert_eq!(value.expose(), "X-Key: 1");
        assert!(resolve_named_in_option(&catalog, "Other").is_err());
    }
}
