//! Parsing of the statements that define where data comes from (SQL.md, "Sources" and
//! "Connections and secrets"): `CREATE SOURCE ... FROM FILES | FROM HTTP`, `CREATE SOURCE ...
//! FROM POSTGRES CONNECTION`, `CREATE CONNECTION ... TO POSTGRES (...)` and `CREATE SECRET`.

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::ast;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;

use super::statements::{
    CreateConnection, CreatePostgresSource, CreateSecret, CreateSource, SourceFormat, SourceFrom,
    with_options, word_is,
};

pub(super) fn parse_create_source(p: &mut Parser) -> Result<CreateSource, ParserError> {
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = p.parse_object_name(false)?;
    let columns = if p.peek_token().token == Token::LParen {
        let (columns, constraints) = p.parse_columns()?;
        if !constraints.is_empty() {
            return Err(ParserError::ParserError(
                "constraints are not supported on sources".into(),
            ));
        }
        columns
    } else {
        Vec::new()
    };
    p.expect_keyword(Keyword::FROM)?;
    let from = if word_is(p, 0, "files") {
        SourceFrom::Files
    } else if word_is(p, 0, "http") {
        SourceFrom::Http
    } else {
        return p.expected("FILES or HTTP after FROM", p.peek_token());
    };
    p.next_token();
    let path = p.parse_literal_string()?;
    p.expect_keyword(Keyword::FORMAT)?;
    let format_token = p.next_token();
    let format = match &format_token.token {
        Token::Word(w) => SourceFormat::parse(&w.value),
        _ => None,
    };
    let Some(format) = format else {
        return p.expected("CSV, JSON, NDJSON or PARQUET", format_token);
    };
    if from == SourceFrom::Http && format != SourceFormat::Json {
        return p.expected("JSON (HTTP sources read FORMAT JSON)", format_token);
    }
    let options = with_options(p)?;
    Ok(CreateSource {
        name,
        if_not_exists,
        columns,
        from,
        path,
        format,
        options,
    })
}

/// Whether a `CREATE SOURCE` reads `FROM POSTGRES` (the name comes before FROM; PostgreSQL
/// sources take no column list).
pub(super) fn from_postgres_ahead(p: &Parser) -> bool {
    for n in 2..16 {
        match &p.peek_nth_token(n).token {
            Token::EOF | Token::LParen => return false,
            _ if word_is(p, n, "from") => return word_is(p, n + 1, "postgres"),
            _ => {}
        }
    }
    false
}

pub(super) fn parse_create_postgres_source(
    p: &mut Parser,
) -> Result<CreatePostgresSource, ParserError> {
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = p.parse_object_name(false)?;
    p.expect_keyword(Keyword::FROM)?;
    p.next_token();
    if !word_is(p, 0, "connection") {
        return p.expected("CONNECTION name after FROM POSTGRES", p.peek_token());
    }
    p.next_token();
    let connection = crate::names::ident(&p.parse_identifier()?);
    p.expect_keyword(Keyword::TABLE)?;
    let table = p.parse_literal_string()?;
    let options = with_options(p)?;
    Ok(CreatePostgresSource {
        name,
        if_not_exists,
        connection,
        table,
        options,
    })
}

pub(super) fn parse_create_secret(
    p: &mut Parser,
    or_replace: bool,
) -> Result<CreateSecret, ParserError> {
    use tributary_catalog::{SecretSource, SecretValue};
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = crate::names::ident(&p.parse_identifier()?);
    p.expect_keyword(Keyword::AS)?;
    let source = if word_is(p, 0, "env") {
        p.next_token();
        SecretSource::Env(p.parse_literal_string()?)
    } else {
        // Not `parse_literal_string`: its error would quote the token, i.e. the value.
        match p.next_token().token {
            Token::SingleQuotedString(v)
            | Token::EscapedStringLiteral(v)
            | Token::DollarQuotedString(ast::DollarQuotedString { value: v, .. }) => {
                SecretSource::Literal(SecretValue::new(v))
            }
            _ => {
                return Err(ParserError::ParserError(
                    "expected ENV 'variable' or a string literal after AS in CREATE SECRET".into(),
                ));
            }
        }
    };
    Ok(CreateSecret {
        name,
        or_replace,
        if_not_exists,
        source,
    })
}

pub(super) fn parse_create_connection(
    p: &mut Parser,
    or_replace: bool,
) -> Result<CreateConnection, ParserError> {
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = crate::names::ident(&p.parse_identifier()?);
    p.expect_keyword(Keyword::TO)?;
    if !word_is(p, 0, "postgres") && !word_is(p, 0, "postgresql") {
        return p.expected("POSTGRES after TO", p.peek_token());
    }
    p.next_token();
    let mut options = BTreeMap::new();
    let mut password_secret = None;
    p.expect_token(&Token::LParen)?;
    loop {
        let key = p.parse_identifier()?.value.to_lowercase();
        if key == "password" {
            if !word_is(p, 0, "secret") {
                return p.expected(
                    "SECRET name after PASSWORD (passwords are kept in secrets)",
                    p.peek_token(),
                );
            }
            p.next_token();
            password_secret = Some(crate::names::ident(&p.parse_identifier()?));
        } else {
            let value = match p.next_token().token {
                Token::SingleQuotedString(v) => v,
                Token::Number(n, _) => n,
                Token::Word(w) => w.value,
                other => {
                    return Err(ParserError::ParserError(format!(
                        "expected a value for {key}, found {other}"
                    )));
                }
            };
            if options.insert(key.clone(), value).is_some() {
                return Err(ParserError::ParserError(format!(
                    "option {key} given twice"
                )));
            }
        }
        if !p.consume_token(&Token::Comma) {
            break;
        }
    }
    p.expect_token(&Token::RParen)?;
    Ok(CreateConnection {
        name,
        or_replace,
        if_not_exists,
        kind: "postgres".into(),
        options,
        password_secret,
    })
}
