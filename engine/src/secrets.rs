//! Secrets and connections: `CREATE SECRET`, `CREATE CONNECTION ... TO POSTGRES`, their `DROP`s,
//! and the two things the rest of the engine needs from them: [`resolve_secret`] (a secret's
//! value, at the moment it is used) and [`redact_statement`] (statement text with a secret's
//! literal value replaced, for anything that records SQL text).
//!
//! A secret's value must never appear in a result, log line, error, metric, EXPLAIN or the
//! query log. The rules that make that hold:
//! - values travel as [`SecretValue`], whose `Debug`/`Display` print `***`; the only way to the
//!   text is [`SecretValue::expose`], called where the value is handed to PostgreSQL or HTTP;
//! - `CREATE SECRET`'s statement text is never stored (secrets have no `sql` column) and every
//!   place that keeps or logs statement text passes it through [`redact_statement`];
//! - errors name secrets and environment variables, never values; errors from systems that
//!   saw a value (a failed PostgreSQL login) are rewritten by the code that made the call;
//! - `tributary.secrets` and `tributary.connections` list names, kinds and the environment
//!   variable a secret reads, never a literal value or a resolved one.

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use tributary_catalog::Connection;
pub use tributary_catalog::SecretValue;

use crate::context::StatementContext;
use crate::dialect::{CreateConnection, CreateSecret, DropGlobal, GlobalKind, TributaryDialect};
use crate::error::{Error, Result};
use crate::session::Output;

pub use crate::sources::secret::resolve_secret;
pub use crate::system::definitions::{connections_table, secrets_table};

/// `sql` with the value of every `CREATE [OR REPLACE] SECRET ... AS 'value'` replaced by
/// `'***'` (the variable name of `AS ENV 'VAR'` is kept). Text that is not a CREATE SECRET is
/// returned as it is; text that does not tokenize is redacted whole if it mentions a secret.
pub fn redact_statement(sql: &str) -> std::borrow::Cow<'_, str> {
    let lower = sql.to_ascii_lowercase();
    if !lower.contains("secret") {
        return sql.into();
    }
    let dialect = TributaryDialect::default();
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize() else {
        return "CREATE SECRET ... (redacted)".into();
    };
    let mut out = String::with_capacity(sql.len());
    // Words of the current statement so far (lower-cased), to know we are in a CREATE SECRET.
    let mut words: Vec<String> = Vec::new();
    let mut redacted = false;
    for token in &tokens {
        match token {
            Token::SemiColon => {
                words.clear();
                out.push_str(&token.to_string());
            }
            Token::Whitespace(_) => out.push_str(&token.to_string()),
            Token::Word(w) => {
                words.push(w.value.to_ascii_lowercase());
                out.push_str(&token.to_string());
            }
            t if is_string_literal(t) && in_create_secret(&words) => {
                let after_env = words.last().is_some_and(|w| w == "env");
                if after_env {
                    out.push_str(&token.to_string());
                } else {
                    out.push_str("'***'");
                    redacted = true;
                }
                words.push(String::from("'"));
            }
            other => {
                words.push(other.to_string());
                out.push_str(&other.to_string());
            }
        }
    }
    if redacted { out.into() } else { sql.into() }
}

fn is_string_literal(t: &Token) -> bool {
    matches!(
        t,
        Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::DollarQuotedString(_)
            | Token::HexStringLiteral(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
    )
}

fn in_create_secret(words: &[String]) -> bool {
    let w: Vec<&str> = words.iter().take(4).map(String::as_str).collect();
    matches!(
        w.as_slice(),
        ["create", "secret", ..] | ["create", "or", "replace", "secret"]
    )
}

pub(crate) fn create_secret(cx: &StatementContext<'_>, create: CreateSecret) -> Result<Output> {
    cx.catalog().create_secret(
        &create.name,
        &create.source,
        create.or_replace,
        create.if_not_exists,
    )?;
    Ok(Output::Command("CREATE SECRET".into()))
}

/// The keys `CREATE CONNECTION ... TO POSTGRES (...)` accepts besides `PASSWORD SECRET`.
pub const POSTGRES_CONNECTION_KEYS: &[&str] = &[
    "host",
    "port",
    "database",
    "user",
    "sslmode",
    "application_name",
    "connect_timeout",
];

pub(crate) fn create_connection(
    cx: &StatementContext<'_>,
    create: CreateConnection,
) -> Result<Output> {
    if create.kind != "postgres" {
        return Err(Error::NotSupported(format!(
            "connections to {}",
            create.kind.to_uppercase()
        )));
    }
    let mut options = BTreeMap::new();
    for (key, value) in &create.options {
        if !POSTGRES_CONNECTION_KEYS.contains(&key.as_str()) {
            return Err(Error::InvalidOption {
                option: key.clone(),
                message: format!(
                    "unknown connection option (expected one of: {}, PASSWORD SECRET)",
                    POSTGRES_CONNECTION_KEYS.join(", ")
                ),
            });
        }
        options.insert(key.clone(), value.clone());
    }
    if let Some(port) = options.get("port")
        && port.parse::<u16>().is_err()
    {
        return Err(Error::InvalidOption {
            option: "port".into(),
            message: format!("expected a port number, found \"{port}\""),
        });
    }
    if let Some(mode) = options.get("sslmode")
        && !["disable", "prefer", "require", "verify-ca", "verify-full"].contains(&mode.as_str())
    {
        return Err(Error::InvalidOption {
            option: "sslmode".into(),
            message: format!(
                "expected disable, prefer, require, verify-ca or verify-full, found \"{mode}\""
            ),
        });
    }
    for required in ["host", "database"] {
        if !options.contains_key(required) {
            return Err(Error::InvalidOption {
                option: required.into(),
                message: "a PostgreSQL connection needs HOST and DATABASE".into(),
            });
        }
    }
    cx.catalog().create_connection(
        &Connection {
            name: create.name,
            kind: create.kind,
            options,
            password_secret: create.password_secret,
            created_at: String::new(),
        },
        create.or_replace,
        create.if_not_exists,
    )?;
    Ok(Output::Command("CREATE CONNECTION".into()))
}

/// `DROP SECRET | CONNECTION [IF EXISTS] name, ... [CASCADE]`. With CASCADE, a secret's
/// connections go too, and a connection's sources with everything that reads them.
pub(crate) async fn drop_global(cx: &StatementContext<'_>, drop: DropGlobal) -> Result<Output> {
    let catalog = cx.catalog();
    let tag = match drop.kind {
        GlobalKind::Secret => "DROP SECRET",
        GlobalKind::Connection => "DROP CONNECTION",
    };
    for name in &drop.names {
        let exists = match drop.kind {
            GlobalKind::Secret => catalog.secret(name)?.is_some(),
            GlobalKind::Connection => catalog.connection(name)?.is_some(),
        };
        if !exists {
            if drop.if_exists {
                continue;
            }
            return Err(Error::UndefinedObject {
                kind: match drop.kind {
                    GlobalKind::Secret => tributary_catalog::ObjectClass::Secret,
                    GlobalKind::Connection => tributary_catalog::ObjectClass::Connection,
                },
                name: name.clone(),
            });
        }
        match drop.kind {
            GlobalKind::Secret => {
                if drop.cascade {
                    let users: Vec<Connection> = catalog
                        .connections()?
                        .into_iter()
                        .filter(|c| c.password_secret.as_deref() == Some(name.as_str()))
                        .collect();
                    for c in users {
                        drop_connection_cascade(cx, &c.name)?;
                    }
                    let objects: Vec<i64> = catalog
                        .objects()?
                        .into_iter()
                        .filter(|o| {
                            o.options
                                .iter()
                                .any(|(k, v)| k.ends_with("secret") && v == name)
                        })
                        .map(|o| o.id)
                        .collect();
                    crate::ddl::drop_with_dependents(cx, &objects)?;
                }
                catalog.drop_secret(name)?;
            }
            GlobalKind::Connection => {
                if drop.cascade {
                    drop_connection_cascade(cx, name)?;
                } else {
                    catalog.drop_connection(name)?;
                }
            }
        }
    }
    Ok(Output::Command(tag.into()))
}

fn drop_connection_cascade(cx: &StatementContext<'_>, name: &str) -> Result<()> {
    let catalog = cx.catalog();
    let ids = catalog.connection_dependents(name)?;
    crate::ddl::drop_with_dependents(cx, &ids)?;
    catalog.drop_connection(name)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_literal_values_only() {
        assert_eq!(
            redact_statement("CREATE SECRET s AS 'hunter2'"),
            "CREATE SECRET s AS '***'"
        );
        assert_eq!(
            redact_statement("create or replace secret s as E'hu\\'nter2'; select 'x'"),
            "create or replace secret s as '***'; select 'x'"
        );
        assert_eq!(
            redact_statement("CREATE SECRET s AS ENV 'PGPASS'"),
            "CREATE SECRET s AS ENV 'PGPASS'"
        );
        assert_eq!(
            redact_statement("select 'secret' as a"),
            "select 'secret' as a"
        );
        assert_eq!(
            redact_statement("create secret if not exists s as $$hunter2$$"),
            "create secret if not exists s as '***'"
        );
    }

    #[test]
    fn secret_value_never_formats() {
        let v = SecretValue::new("hunter2");
        assert_eq!(format!("{v} {v:?}"), "*** ***");
        assert_eq!(v.expose(), "hunter2");
    }
}
