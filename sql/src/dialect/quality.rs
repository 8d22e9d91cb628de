//! Parsing of the data-test statements (SQL.md, "Tests"):
//!
//! ```sql
//! CREATE TEST [IF NOT EXISTS] name ON object [WITH (...)] EXPECT expectation [WITH (...)]
//! CREATE TEST [IF NOT EXISTS] name [WITH (...)] AS query
//! DROP TEST [IF EXISTS] name, ...
//! RUN TESTS [ON object]
//! SHOW TESTS
//! ```
//!
//! Expectations: `UNIQUE (cols)`, `NOT NULL (cols)`, `col REFERENCES object (col)`,
//! `ROW COUNT BETWEEN n AND m`, `FRESHNESS (col) WITHIN 'interval'`, or any boolean
//! expression every row must satisfy (`kind IN ('debit', 'credit')`, `amount >= 0`), which
//! like a CHECK constraint passes when it is NULL.

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::ast::{Expr, Ident, ObjectName, Query};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;

use super::statements::{advance, text_between, with_options, word_is};

/// `CREATE TEST ...`
#[derive(Debug, Clone)]
pub struct CreateTest {
    pub name: Ident,
    pub if_not_exists: bool,
    /// The object the expectation is about (`None` for a singular test).
    pub on: Option<ObjectName>,
    pub expectation: Expectation,
    pub options: BTreeMap<String, String>,
}

/// What a test expects of its object's rows.
#[derive(Debug, Clone)]
pub enum Expectation {
    Unique(Vec<Ident>),
    NotNull(Vec<Ident>),
    /// A condition every row satisfies (NULL counts as satisfied).
    Check(Box<Expr>),
    References {
        column: Ident,
        target: ObjectName,
        target_column: Ident,
    },
    RowCount {
        min: i64,
        max: i64,
    },
    Freshness {
        column: Ident,
        within: String,
    },
    /// A singular test: the query returns the failing rows.
    Query {
        query: Box<Query>,
        text: String,
    },
}

/// `DROP TEST [IF EXISTS] name, ...`
#[derive(Debug, Clone)]
pub struct DropTests {
    pub names: Vec<Ident>,
    pub if_exists: bool,
}

/// Parses the statement after `CREATE TEST`.
pub(super) fn parse_create_test(p: &mut Parser, sql: &str) -> Result<CreateTest, ParserError> {
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = p.parse_identifier()?;
    if p.consume_token(&Token::Period) {
        return Err(ParserError::ParserError(format!(
            "test names are not schema-qualified: \"{name}.{}\"",
            p.peek_token()
        )));
    }
    let on = if p.parse_keyword(Keyword::ON) {
        Some(p.parse_object_name(false)?)
    } else {
        None
    };
    let mut options = with_options(p)?;
    let expectation = if on.is_some() {
        if !word_is(p, 0, "expect") {
            return p.expected("EXPECT after CREATE TEST name ON object", p.peek_token());
        }
        p.next_token();
        let expectation = parse_expectation(p)?;
        options.extend(with_options(p)?);
        expectation
    } else {
        p.expect_keyword(Keyword::AS)?;
        let start = p.peek_token().span.start;
        let query = p.parse_query()?;
        let end = p.peek_token().span.start;
        Expectation::Query {
            query,
            text: text_between(sql, start, end).trim().to_string(),
        }
    };
    Ok(CreateTest {
        name,
        if_not_exists,
        on,
        expectation,
        options,
    })
}

fn parse_columns(p: &mut Parser) -> Result<Vec<Ident>, ParserError> {
    p.expect_token(&Token::LParen)?;
    let columns = p.parse_comma_separated(|p| p.parse_identifier())?;
    p.expect_token(&Token::RParen)?;
    Ok(columns)
}

fn parse_count(p: &mut Parser) -> Result<i64, ParserError> {
    let negative = p.consume_token(&Token::Minus);
    let token = p.next_token();
    match &token.token {
        Token::Number(n, _) => n
            .parse::<i64>()
            .map(|n| if negative { -n } else { n })
            .map_err(|_| ParserError::ParserError(format!("row count must be an integer: {n}"))),
        _ => p.expected("an integer row count", token),
    }
}

fn parse_expectation(p: &mut Parser) -> Result<Expectation, ParserError> {
    if p.parse_keyword(Keyword::UNIQUE) {
        return Ok(Expectation::Unique(parse_columns(p)?));
    }
    if p.parse_keywords(&[Keyword::NOT, Keyword::NULL]) {
        return Ok(Expectation::NotNull(parse_columns(p)?));
    }
    if word_is(p, 0, "row") && word_is(p, 1, "count") {
        advance(p, 2);
        p.expect_keyword(Keyword::BETWEEN)?;
        let min = parse_count(p)?;
        p.expect_keyword(Keyword::AND)?;
        let max = parse_count(p)?;
        return Ok(Expectation::RowCount { min, max });
    }
    if word_is(p, 0, "freshness") && p.peek_nth_token(1).token == Token::LParen {
        p.next_token();
        p.expect_token(&Token::LParen)?;
        let column = p.parse_identifier()?;
        p.expect_token(&Token::RParen)?;
        if !word_is(p, 0, "within") {
            return p.expected("WITHIN 'interval'", p.peek_token());
        }
        p.next_token();
        let within = p.parse_literal_string()?;
        return Ok(Expectation::Freshness { column, within });
    }
    if matches!(p.peek_token().token, Token::Word(_)) && word_is(p, 1, "references") {
        let column = p.parse_identifier()?;
        p.next_token();
        let target = p.parse_object_name(false)?;
        p.expect_token(&Token::LParen)?;
        let target_column = p.parse_identifier()?;
        p.expect_token(&Token::RParen)?;
        return Ok(Expectation::References {
            column,
            target,
            target_column,
        });
    }
    Ok(Expectation::Check(Box::new(p.parse_expr()?)))
}

/// Parses the statement after `DROP TEST`.
pub(super) fn parse_drop_tests(p: &mut Parser) -> Result<DropTests, ParserError> {
    let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
    let names = p.parse_comma_separated(|p| p.parse_identifier())?;
    Ok(DropTests { names, if_exists })
}

#[cfg(test)]
mod tests {
    use super::super::{Statement, parse_statement};
    use super::*;

    fn create(sql: &str) -> CreateTest {
        match parse_statement(sql).unwrap() {
            Statement::CreateTest(t) => t,
            other => panic!("not a test: {other:?}"),
        }
    }

    #[test]
    fn every_expectation_parses() {
        let t = create("CREATE TEST u ON marts.f EXPECT UNIQUE (a, b) WITH (severity = 'warn')");
        assert!(matches!(&t.expectation, Expectation::Unique(c) if c.len() == 2));
        assert_eq!(t.on.unwrap().to_string(), "marts.f");
        assert_eq!(t.options["severity"], "warn");
        let t = create("create test if not exists n on f expect not null (a)");
        assert!(t.if_not_exists);
        assert!(matches!(t.expectation, Expectation::NotNull(_)));
        let t = create("create test k on f expect kind in ('debit', 'credit')");
        assert!(matches!(t.expectation, Expectation::Check(_)));
        let t = create("create test r on f expect account_id references marts.dim (id)");
        assert!(
            matches!(t.expectation, Expectation::References { ref target, .. } if target.to_string() == "marts.dim")
        );
        let t = create("create test c on f expect row count between 1 and 100000");
        assert!(matches!(
            t.expectation,
            Expectation::RowCount {
                min: 1,
                max: 100000
            }
        ));
        let t = create("create test fr on f expect freshness (day) within '2 days'");
        assert!(
            matches!(t.expectation, Expectation::Freshness { ref within, .. } if within == "2 days")
        );
        let t =
            create("create test s with (store_failures = false) as select * from b where x < 0");
        assert!(t.on.is_none());
        assert!(
            matches!(t.expectation, Expectation::Query { ref text, .. } if text == "select * from b where x < 0")
        );
        assert_eq!(t.options["store_failures"], "false");
    }

    #[test]
    fn other_statements_parse() {
        assert!(matches!(
            parse_statement("drop test if exists a, b").unwrap(),
            Statement::DropTests(DropTests { if_exists: true, ref names }) if names.len() == 2
        ));
        assert!(matches!(
            parse_statement("run tests on marts.f").unwrap(),
            Statement::RunTests(Some(_))
        ));
        assert!(matches!(
            parse_statement("RUN TESTS").unwrap(),
            Statement::RunTests(None)
        ));
        assert!(matches!(
            parse_statement("show tests").unwrap(),
            Statement::ShowTests
        ));
        assert!(parse_statement("create test a on f").is_err());
    }
}
