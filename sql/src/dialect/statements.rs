//! Parsing of the statements Tributary adds to SQL. Anything else is handed to sqlparser.

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::ast::{
    self, ColumnDef, Expr, Ident, ObjectName, Query, SqlOption, Value, ValueWithSpan,
};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;

use super::TributaryDialect;
use super::sources::{
    from_postgres_ahead, parse_create_connection, parse_create_postgres_source,
    parse_create_secret, parse_create_source,
};

/// Which way `SHOW LINEAGE` walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineageDirection {
    Upstream,
    Downstream,
    Both,
}

/// A parsed statement: one of Tributary's own, or standard SQL for the engine to dispatch.
#[derive(Debug, Clone)]
pub enum Statement {
    Sql(Box<ast::Statement>),
    CreateSource(CreateSource),
    CreateModel(CreateModel),
    Refresh(Refresh),
    RefreshAll,
    /// `REFRESH SOURCE name`: poll an HTTP source now (one snapshot).
    RefreshSource(ObjectName),
    Drop(DropObjects),
    Show(ObjectKindSyntax),
    /// `SHOW LINEAGE FOR name [UPSTREAM | DOWNSTREAM]` (both directions when neither is given).
    ShowLineage {
        name: ObjectName,
        direction: LineageDirection,
    },
    /// `EXPLAIN REFRESH MODEL name`: the strategy a refresh would use now, and why.
    ExplainRefresh(ObjectName),
    CreateSecret(CreateSecret),
    CreateConnection(CreateConnection),
    CreatePostgresSource(CreatePostgresSource),
    /// `DROP SECRET | CONNECTION [IF EXISTS] name, ... [CASCADE | RESTRICT]`
    DropGlobal(DropGlobal),
    /// `COMMENT ON MODEL | SOURCE name IS 'text' | NULL` (tables, views and columns use
    /// sqlparser's own COMMENT).
    CommentOn {
        name: ObjectName,
        comment: Option<String>,
    },
    CreateTest(super::quality::CreateTest),
    DropTests(super::quality::DropTests),
    /// `RUN TESTS [ON name]`
    RunTests(Option<ObjectName>),
    ShowTests,
    CreateJob(super::jobs::CreateJob),
    DropJobs(super::jobs::DropJobs),
    RunJob(super::jobs::RunJob),
}

/// The object kinds as they are spelled in statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKindSyntax {
    Source,
    Table,
    Model,
    View,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    Csv,
    Json,
    NdJson,
    Parquet,
}

impl SourceFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceFormat::Csv => "csv",
            SourceFormat::Json => "json",
            SourceFormat::NdJson => "ndjson",
            SourceFormat::Parquet => "parquet",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "csv" => SourceFormat::Csv,
            "json" => SourceFormat::Json,
            "ndjson" => SourceFormat::NdJson,
            "parquet" => SourceFormat::Parquet,
            _ => return None,
        })
    }
}

/// Where a source's rows come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFrom {
    /// `FROM FILES 'path'`
    Files,
    /// `FROM HTTP 'url'`: polled into snapshots (see `sources::http`).
    Http,
}

/// `CREATE SOURCE [IF NOT EXISTS] name [(columns)] FROM FILES 'path' | HTTP 'url' FORMAT f [WITH (...)]`
#[derive(Debug, Clone)]
pub struct CreateSource {
    pub name: ObjectName,
    pub if_not_exists: bool,
    pub columns: Vec<ColumnDef>,
    pub from: SourceFrom,
    /// The file path, glob or URL (`FILES`), or the URL to poll (`HTTP`).
    pub path: String,
    pub format: SourceFormat,
    pub options: BTreeMap<String, String>,
}

/// `CREATE [OR REPLACE] MODEL | MATERIALIZED VIEW [IF NOT EXISTS] name [WITH (...)] AS query`
#[derive(Debug, Clone)]
pub struct CreateModel {
    pub name: ObjectName,
    pub or_replace: bool,
    pub if_not_exists: bool,
    pub options: BTreeMap<String, String>,
    pub query: Box<Query>,
    /// The defining query's text exactly as written.
    pub query_text: String,
    /// `WITH NO DATA`: record the model without running its first refresh.
    pub with_data: bool,
}

/// `REFRESH MODEL | MATERIALIZED VIEW name [FULL] [WITH UPSTREAM] [WITH DOWNSTREAM]`
#[derive(Debug, Clone)]
pub struct Refresh {
    pub name: ObjectName,
    pub full: bool,
    pub upstream: bool,
    pub downstream: bool,
}

/// `DROP kind [IF EXISTS] name, ... [CASCADE | RESTRICT]`
#[derive(Debug, Clone)]
pub struct DropObjects {
    pub kind: ObjectKindSyntax,
    pub names: Vec<ObjectName>,
    pub if_exists: bool,
    pub cascade: bool,
}

/// `CREATE [OR REPLACE] SECRET [IF NOT EXISTS] name AS ENV 'VAR' | AS 'value'`. The value
/// is a [`SecretValue`](tributary_catalog::SecretValue), so `Debug` of a statement shows `***`.
#[derive(Debug, Clone)]
pub struct CreateSecret {
    pub name: String,
    pub or_replace: bool,
    pub if_not_exists: bool,
    pub source: tributary_catalog::SecretSource,
}

/// `CREATE [OR REPLACE] CONNECTION [IF NOT EXISTS] name TO POSTGRES (HOST 'h', PORT 5432,
/// DATABASE 'd', USER 'u', PASSWORD SECRET s, SSLMODE 'prefer')`
#[derive(Debug, Clone)]
pub struct CreateConnection {
    pub name: String,
    pub or_replace: bool,
    pub if_not_exists: bool,
    /// `postgres`
    pub kind: String,
    /// Lower-cased keys (`host`, `port`, ...) and their values, without the password.
    pub options: BTreeMap<String, String>,
    pub password_secret: Option<String>,
}

/// `CREATE SOURCE [IF NOT EXISTS] name FROM POSTGRES CONNECTION c TABLE 'schema.table'
/// [WITH (cursor = 'col', primary_key = 'col', poll = '1 minute')]`
#[derive(Debug, Clone)]
pub struct CreatePostgresSource {
    pub name: ObjectName,
    pub if_not_exists: bool,
    pub connection: String,
    pub table: String,
    pub options: BTreeMap<String, String>,
}

/// Secrets and connections: database-wide objects outside any schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalKind {
    Secret,
    Connection,
}

impl GlobalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GlobalKind::Secret => "secret",
            GlobalKind::Connection => "connection",
        }
    }
}

#[derive(Debug, Clone)]
pub struct DropGlobal {
    pub kind: GlobalKind,
    pub names: Vec<String>,
    pub if_exists: bool,
    pub cascade: bool,
}

/// Parses one statement (no trailing semicolon needed).
pub fn parse_statement(sql: &str) -> Result<Statement, ParserError> {
    let dialect = TributaryDialect::default();
    let mut p = Parser::new(&dialect).try_with_sql(sql)?;
    let stmt = if let Some(stmt) = parse_tributary(&mut p, sql)? {
        stmt
    } else {
        let stmt = p.parse_statement()?;
        Statement::Sql(Box::new(stmt))
    };
    while p.consume_token(&Token::SemiColon) {}
    if p.peek_token().token != Token::EOF {
        return p.expected("end of statement", p.peek_token());
    }
    Ok(stmt)
}

pub(super) fn word_is(p: &Parser, n: usize, word: &str) -> bool {
    match &p.peek_nth_token(n).token {
        Token::Word(w) => w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word),
        _ => false,
    }
}

fn parse_tributary(p: &mut Parser, sql: &str) -> Result<Option<Statement>, ParserError> {
    if let Some(stmt) = parse_test_statement(p, sql)? {
        return Ok(Some(stmt));
    }
    if let Some(stmt) = parse_job_statement(p, sql)? {
        return Ok(Some(stmt));
    }
    if word_is(p, 0, "create") {
        let or_replace = word_is(p, 1, "or") && word_is(p, 2, "replace");
        let at = if or_replace { 3 } else { 1 };
        if word_is(p, at, "model") {
            advance(p, at + 1);
            return parse_create_model(p, sql, or_replace).map(|m| Some(Statement::CreateModel(m)));
        }
        if word_is(p, at, "materialized") && word_is(p, at + 1, "view") {
            advance(p, at + 2);
            return parse_create_model(p, sql, or_replace).map(|m| Some(Statement::CreateModel(m)));
        }
        if word_is(p, at, "secret") {
            advance(p, at + 1);
            return parse_create_secret(p, or_replace).map(|s| Some(Statement::CreateSecret(s)));
        }
        if word_is(p, at, "connection") {
            advance(p, at + 1);
            return parse_create_connection(p, or_replace)
                .map(|c| Some(Statement::CreateConnection(c)));
        }
        if !or_replace && word_is(p, 1, "source") && from_postgres_ahead(p) {
            advance(p, 2);
            return parse_create_postgres_source(p)
                .map(|s| Some(Statement::CreatePostgresSource(s)));
        }
        if !or_replace && word_is(p, 1, "source") {
            advance(p, 2);
            return parse_create_source(p).map(|s| Some(Statement::CreateSource(s)));
        }
    }
    if word_is(p, 0, "explain")
        && word_is(p, 1, "refresh")
        && (word_is(p, 2, "model") || (word_is(p, 2, "materialized") && word_is(p, 3, "view")))
    {
        advance(p, if word_is(p, 2, "model") { 3 } else { 4 });
        let name = p.parse_object_name(false)?;
        return Ok(Some(Statement::ExplainRefresh(name)));
    }
    if word_is(p, 0, "refresh") {
        p.next_token();
        if p.parse_keyword(Keyword::ALL) {
            return Ok(Some(Statement::RefreshAll));
        }
        if word_is(p, 0, "source") {
            p.next_token();
            return Ok(Some(Statement::RefreshSource(p.parse_object_name(false)?)));
        }
        if word_is(p, 0, "model") {
            p.next_token();
        } else if word_is(p, 0, "materialized") && word_is(p, 1, "view") {
            advance(p, 2);
        } else {
            return p.expected(
                "MODEL, MATERIALIZED VIEW, SOURCE or ALL after REFRESH",
                p.peek_token(),
            );
        }
        let name = p.parse_object_name(false)?;
        let full = p.parse_keyword(Keyword::FULL);
        let mut refresh = Refresh {
            name,
            full,
            upstream: false,
            downstream: false,
        };
        while p.parse_keyword(Keyword::WITH) {
            if word_is(p, 0, "upstream") {
                refresh.upstream = true;
            } else if word_is(p, 0, "downstream") {
                refresh.downstream = true;
            } else {
                return p.expected("UPSTREAM or DOWNSTREAM", p.peek_token());
            }
            p.next_token();
        }
        return Ok(Some(Statement::Refresh(refresh)));
    }
    if word_is(p, 0, "drop") && (word_is(p, 1, "secret") || word_is(p, 1, "connection")) {
        let kind = if word_is(p, 1, "secret") {
            GlobalKind::Secret
        } else {
            GlobalKind::Connection
        };
        advance(p, 2);
        let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let names = p.parse_comma_separated(|p| Ok(crate::names::ident(&p.parse_identifier()?)))?;
        let cascade = matches!(
            p.parse_one_of_keywords(&[Keyword::CASCADE, Keyword::RESTRICT]),
            Some(Keyword::CASCADE)
        );
        return Ok(Some(Statement::DropGlobal(DropGlobal {
            kind,
            names,
            if_exists,
            cascade,
        })));
    }
    if word_is(p, 0, "drop") {
        let kind = if word_is(p, 1, "source") {
            Some((ObjectKindSyntax::Source, 2))
        } else if word_is(p, 1, "model") {
            Some((ObjectKindSyntax::Model, 2))
        } else if word_is(p, 1, "materialized") && word_is(p, 2, "view") {
            Some((ObjectKindSyntax::Model, 3))
        } else if word_is(p, 1, "table") {
            Some((ObjectKindSyntax::Table, 2))
        } else if word_is(p, 1, "view") {
            Some((ObjectKindSyntax::View, 2))
        } else {
            None
        };
        if let Some((kind, n)) = kind {
            advance(p, n);
            let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
            let names = p.parse_comma_separated(|p| p.parse_object_name(false))?;
            let cascade = matches!(
                p.parse_one_of_keywords(&[Keyword::CASCADE, Keyword::RESTRICT]),
                Some(Keyword::CASCADE)
            );
            return Ok(Some(Statement::Drop(DropObjects {
                kind,
                names,
                if_exists,
                cascade,
            })));
        }
    }
    if word_is(p, 0, "comment")
        && word_is(p, 1, "on")
        && (word_is(p, 2, "model") || word_is(p, 2, "source"))
    {
        advance(p, 3);
        let name = p.parse_object_name(false)?;
        p.expect_keyword(Keyword::IS)?;
        let comment = if p.parse_keyword(Keyword::NULL) {
            None
        } else {
            Some(p.parse_literal_string()?)
        };
        return Ok(Some(Statement::CommentOn { name, comment }));
    }
    if word_is(p, 0, "show") && word_is(p, 1, "lineage") && word_is(p, 2, "for") {
        advance(p, 3);
        let name = p.parse_object_name(false)?;
        let direction = if word_is(p, 0, "upstream") {
            LineageDirection::Upstream
        } else if word_is(p, 0, "downstream") {
            LineageDirection::Downstream
        } else {
            LineageDirection::Both
        };
        if direction != LineageDirection::Both {
            p.next_token();
        }
        return Ok(Some(Statement::ShowLineage { name, direction }));
    }
    if word_is(p, 0, "show") {
        let kind = if word_is(p, 1, "sources") {
            Some(ObjectKindSyntax::Source)
        } else if word_is(p, 1, "tables") {
            Some(ObjectKindSyntax::Table)
        } else if word_is(p, 1, "models") {
            Some(ObjectKindSyntax::Model)
        } else if word_is(p, 1, "views") {
            Some(ObjectKindSyntax::View)
        } else {
            None
        };
        if let Some(kind) = kind
            && (p.peek_nth_token(2).token == Token::EOF
                || p.peek_nth_token(2).token == Token::SemiColon)
        {
            advance(p, 2);
            return Ok(Some(Statement::Show(kind)));
        }
    }
    Ok(None)
}

/// `CREATE JOB`, `DROP JOB`, `RUN JOB` (see `jobs`).
fn parse_job_statement(p: &mut Parser, sql: &str) -> Result<Option<Statement>, ParserError> {
    use super::jobs;
    if word_is(p, 0, "create") && word_is(p, 1, "job") {
        advance(p, 2);
        return jobs::parse_create_job(p, sql).map(|j| Some(Statement::CreateJob(j)));
    }
    if word_is(p, 0, "drop") && word_is(p, 1, "job") {
        advance(p, 2);
        return jobs::parse_drop_jobs(p).map(|d| Some(Statement::DropJobs(d)));
    }
    if word_is(p, 0, "run") && word_is(p, 1, "job") {
        advance(p, 2);
        return jobs::parse_run_job(p).map(|r| Some(Statement::RunJob(r)));
    }
    Ok(None)
}

/// `CREATE TEST`, `DROP TEST`, `RUN TESTS`, `SHOW TESTS` (see `quality`).
fn parse_test_statement(p: &mut Parser, sql: &str) -> Result<Option<Statement>, ParserError> {
    use super::quality;
    if word_is(p, 0, "create") && word_is(p, 1, "test") {
        advance(p, 2);
        return quality::parse_create_test(p, sql).map(|t| Some(Statement::CreateTest(t)));
    }
    if word_is(p, 0, "drop") && word_is(p, 1, "test") {
        advance(p, 2);
        return quality::parse_drop_tests(p).map(|d| Some(Statement::DropTests(d)));
    }
    if word_is(p, 0, "run") && word_is(p, 1, "tests") {
        advance(p, 2);
        let on = if p.parse_keyword(Keyword::ON) {
            Some(p.parse_object_name(false)?)
        } else {
            None
        };
        return Ok(Some(Statement::RunTests(on)));
    }
    if word_is(p, 0, "show")
        && word_is(p, 1, "tests")
        && matches!(p.peek_nth_token(2).token, Token::EOF | Token::SemiColon)
    {
        advance(p, 2);
        return Ok(Some(Statement::ShowTests));
    }
    Ok(None)
}

pub(super) fn advance(p: &mut Parser, n: usize) {
    for _ in 0..n {
        p.next_token();
    }
}

fn parse_create_model(
    p: &mut Parser,
    sql: &str,
    or_replace: bool,
) -> Result<CreateModel, ParserError> {
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = p.parse_object_name(false)?;
    let options = with_options(p)?;
    p.expect_keyword(Keyword::AS)?;
    let start = p.peek_token().span.start;
    let query = p.parse_query()?;
    let end = p.peek_token().span.start;
    let query_text = text_between(sql, start, end).trim().to_string();
    let mut with_data = true;
    if p.parse_keyword(Keyword::WITH) {
        with_data = !p.parse_keyword(Keyword::NO);
        if !(word_is(p, 0, "data")) {
            return p.expected("DATA", p.peek_token());
        }
        p.next_token();
    }
    Ok(CreateModel {
        name,
        or_replace,
        if_not_exists,
        options,
        query,
        query_text,
        with_data,
    })
}

/// `WITH (key = value, ...)` as lower-cased keys and plain string values.
/// `WITH (key = value, ...)` if it comes next, else no options.
pub(super) fn with_options(p: &mut Parser) -> Result<BTreeMap<String, String>, ParserError> {
    if p.peek_keyword(Keyword::WITH) {
        options_map(p.parse_options(Keyword::WITH)?)
    } else {
        Ok(BTreeMap::new())
    }
}

pub(super) fn options_map(
    options: Vec<SqlOption>,
) -> Result<BTreeMap<String, String>, ParserError> {
    let mut out = BTreeMap::new();
    for option in options {
        let SqlOption::KeyValue { key, value } = option else {
            return Err(ParserError::ParserError(format!(
                "expected key = value option, found {option}"
            )));
        };
        out.insert(key.value.to_lowercase(), option_value(&value)?);
    }
    Ok(out)
}

fn option_value(value: &Expr) -> Result<String, ParserError> {
    Ok(match value {
        Expr::Value(ValueWithSpan { value, .. }) => match value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            Value::Number(n, _) => n.to_string(),
            Value::Boolean(b) => b.to_string(),
            other => other.to_string(),
        },
        Expr::Identifier(Ident { value, .. }) => value.clone(),
        other => {
            return Err(ParserError::ParserError(format!(
                "option values must be literals or names, found {other}"
            )));
        }
    })
}

pub(super) fn text_between(
    sql: &str,
    start: datafusion::sql::sqlparser::tokenizer::Location,
    end: datafusion::sql::sqlparser::tokenizer::Location,
) -> &str {
    let to_offset = |loc: datafusion::sql::sqlparser::tokenizer::Location| -> usize {
        if loc.line == 0 {
            return sql.len();
        }
        let line_start = sql
            .split_inclusive('\n')
            .take(loc.line as usize - 1)
            .map(str::len)
            .sum::<usize>();
        sql[line_start..]
            .char_indices()
            .nth(loc.column as usize - 1)
            .map_or(sql.len(), |(i, _)| line_start + i)
    };
    let (a, b) = (to_offset(start), to_offset(end));
    &sql[a.min(b)..b]
}

#[cfg(test)]
mod tests;
