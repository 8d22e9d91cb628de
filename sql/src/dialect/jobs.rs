//! Parsing of the job statements (Tributary's addition to SQL.md, beside schedules):
//!
//! ```sql
//! CREATE JOB [IF NOT EXISTS] name [WITH (schedule = 'cron 0 6 1 * *', retries = 2, ...)] AS statement
//! DROP JOB [IF EXISTS] name, ...
//! RUN JOB name [AS OF 'timestamp']
//! ```
//!
//! The statement after `AS` is kept as text: it may hold `{{run_time}}`-style placeholders that
//! only become SQL when a run expands them (the engine's `jobs` module).

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::ast::Ident;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;

use super::statements::{advance, text_between, with_options, word_is};

/// `CREATE JOB ...`
#[derive(Debug, Clone)]
pub struct CreateJob {
    pub name: Ident,
    pub if_not_exists: bool,
    pub options: BTreeMap<String, String>,
    /// The statement after `AS`, placeholders unexpanded.
    pub statement: String,
}

/// `DROP JOB [IF EXISTS] name, ...`
#[derive(Debug, Clone)]
pub struct DropJobs {
    pub names: Vec<Ident>,
    pub if_exists: bool,
}

/// `RUN JOB name [AS OF 'timestamp']`
#[derive(Debug, Clone)]
pub struct RunJob {
    pub name: Ident,
    /// The moment to run for instead of now (a re-run of a past report).
    pub as_of: Option<String>,
}

/// The statement after `CREATE JOB`; consumes the rest of the input.
pub(super) fn parse_create_job(p: &mut Parser, sql: &str) -> Result<CreateJob, ParserError> {
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = p.parse_identifier()?;
    if p.consume_token(&Token::Period) {
        return Err(ParserError::ParserError(format!(
            "job names are not schema-qualified: \"{name}.{}\"",
            p.peek_token()
        )));
    }
    let options = with_options(p)?;
    p.expect_keyword(Keyword::AS)?;
    let start = p.peek_token().span.start;
    while p.peek_token().token != Token::EOF {
        p.next_token();
    }
    let statement = text_between(sql, start, p.peek_token().span.start)
        .trim()
        .trim_end_matches(';')
        .trim()
        .to_string();
    if statement.is_empty() {
        return p.expected("a statement after CREATE JOB name AS", p.peek_token());
    }
    Ok(CreateJob {
        name,
        if_not_exists,
        options,
        statement,
    })
}

pub(super) fn parse_drop_jobs(p: &mut Parser) -> Result<DropJobs, ParserError> {
    let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
    let names = p.parse_comma_separated(|p| p.parse_identifier())?;
    Ok(DropJobs { names, if_exists })
}

pub(super) fn parse_run_job(p: &mut Parser) -> Result<RunJob, ParserError> {
    let name = p.parse_identifier()?;
    let as_of = if p.parse_keyword(Keyword::AS) {
        if !word_is(p, 0, "of") {
            return p.expected("OF after AS", p.peek_token());
        }
        advance(p, 1);
        Some(p.parse_literal_string()?)
    } else {
        None
    };
    Ok(RunJob { name, as_of })
}

#[cfg(test)]
mod tests {
    use super::super::{Statement, parse_statement};

    #[test]
    fn the_statement_after_as_is_kept_verbatim() {
        let sql = "CREATE JOB export WITH (schedule = 'cron 0 6 1 * *') AS \
                   COPY (SELECT * FROM r WHERE m = '{{previous_month}}') TO 'out/{{previous_month}}.csv';";
        let Statement::CreateJob(job) = parse_statement(sql).unwrap() else {
            panic!("not a job");
        };
        assert_eq!(job.name.value, "export");
        assert_eq!(job.options["schedule"], "cron 0 6 1 * *");
        assert_eq!(
            job.statement,
            "COPY (SELECT * FROM r WHERE m = '{{previous_month}}') TO 'out/{{previous_month}}.csv'"
        );
    }

    #[test]
    fn run_and_drop() {
        let Statement::RunJob(run) =
            parse_statement("RUN JOB export AS OF '2026-11-01 06:00:00+00'").unwrap()
        else {
            panic!("not a run");
        };
        assert_eq!(run.as_of.as_deref(), Some("2026-11-01 06:00:00+00"));
        let Statement::DropJobs(drop) = parse_statement("DROP JOB IF EXISTS a, b").unwrap() else {
            panic!("not a drop");
        };
        assert!(drop.if_exists);
        assert_eq!(drop.names.len(), 2);
        assert!(parse_statement("CREATE JOB s.j AS SELECT 1").is_err());
        assert!(parse_statement("CREATE JOB j AS").is_err());
    }
}
