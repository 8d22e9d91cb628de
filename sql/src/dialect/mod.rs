//! Tributary's SQL dialect: PostgreSQL as sqlparser understands it, plus Delta time travel
//! (`VERSION AS OF`, `TIMESTAMP AS OF`) and the statements Tributary adds (SQL.md): sources,
//! models, refreshes, `SHOW SOURCES | TABLES | MODELS`. Tributary statements are parsed with
//! sqlparser's own primitives so names, options and queries follow exactly the same rules as
//! the rest of the SQL.

mod jobs;
mod quality;
mod sources;
mod statements;

use std::any::TypeId;

use datafusion::sql::sqlparser::dialect::{Dialect, PostgreSqlDialect, Precedence};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

pub use jobs::{CreateJob, DropJobs, RunJob};
pub use quality::{CreateTest, DropTests, Expectation};
pub use statements::{
    CreateConnection, CreateModel, CreatePostgresSource, CreateSecret, CreateSource, DropGlobal,
    DropObjects, GlobalKind, LineageDirection, ObjectKindSyntax, Refresh, SourceFormat, SourceFrom,
    Statement, parse_statement,
};

/// PostgreSQL's dialect with table versioning switched on for time travel. It reports itself
/// as [`PostgreSqlDialect`] so every PostgreSQL-specific rule in sqlparser still applies.
#[derive(Debug, Default)]
pub struct TributaryDialect {
    pg: PostgreSqlDialect,
}

macro_rules! delegate {
    ($($name:ident(&self $(, $arg:ident : $ty:ty)*) -> $ret:ty;)*) => {
        $(fn $name(&self $(, $arg: $ty)*) -> $ret { self.pg.$name($($arg),*) })*
    };
}

impl Dialect for TributaryDialect {
    fn dialect(&self) -> TypeId {
        TypeId::of::<PostgreSqlDialect>()
    }

    fn supports_table_versioning(&self) -> bool {
        true
    }

    fn get_next_precedence(&self, parser: &Parser) -> Option<Result<u8, ParserError>> {
        self.pg.get_next_precedence(parser)
    }

    delegate! {
        identifier_quote_style(&self, identifier: &str) -> Option<char>;
        is_delimited_identifier_start(&self, ch: char) -> bool;
        is_identifier_start(&self, ch: char) -> bool;
        is_identifier_part(&self, ch: char) -> bool;
        supports_unicode_string_literal(&self) -> bool;
        is_reserved_for_identifier(&self, kw: Keyword) -> bool;
        is_custom_operator_part(&self, ch: char) -> bool;
        supports_filter_during_aggregation(&self) -> bool;
        supports_group_by_expr(&self) -> bool;
        prec_value(&self, prec: Precedence) -> u8;
        allow_extract_custom(&self) -> bool;
        allow_extract_single_quotes(&self) -> bool;
        supports_create_index_with_clause(&self) -> bool;
        supports_explain_with_utility_options(&self) -> bool;
        supports_listen_notify(&self) -> bool;
        supports_factorial_operator(&self) -> bool;
        supports_bitwise_shift_operators(&self) -> bool;
        supports_comment_on(&self) -> bool;
        supports_load_extension(&self) -> bool;
        supports_named_fn_args_with_colon_operator(&self) -> bool;
        supports_named_fn_args_with_expr_name(&self) -> bool;
        supports_empty_projections(&self) -> bool;
        supports_nested_comments(&self) -> bool;
        supports_string_escape_constant(&self) -> bool;
        supports_numeric_literal_underscores(&self) -> bool;
        supports_array_typedef_with_brackets(&self) -> bool;
        supports_geometric_types(&self) -> bool;
        supports_set_names(&self) -> bool;
        supports_alter_column_type_using(&self) -> bool;
        supports_notnull_operator(&self) -> bool;
        supports_interval_options(&self) -> bool;
        supports_insert_table_alias(&self) -> bool;
        supports_create_table_like_parenthesized(&self) -> bool;
        supports_select_wildcard_with_alias(&self) -> bool;
        supports_comma_separated_trim(&self) -> bool;
        supports_xml_expressions(&self) -> bool;
        supports_comment_optimizer_hint(&self) -> bool;
    }
}

/// Splits a multi-statement query string at top-level semicolons, keeping each statement's
/// original text (needed to store definitions as written). Empty statements are dropped.
pub fn split_statements(sql: &str) -> Result<Vec<String>, ParserError> {
    let dialect = TributaryDialect::default();
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| ParserError::TokenizerError(e.to_string()))?;
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let offset = |line: u64, column: u64| -> usize {
        let start = line_starts
            .get((line as usize).saturating_sub(1))
            .copied()
            .unwrap_or(sql.len());
        sql[start..]
            .char_indices()
            .nth((column as usize).saturating_sub(1))
            .map_or(sql.len(), |(i, _)| start + i)
    };
    let mut out = Vec::new();
    let mut begin = 0;
    for token in &tokens {
        if token.token == Token::SemiColon {
            let end = offset(token.span.start.line, token.span.start.column);
            push_statement(&mut out, &sql[begin..end]);
            begin = end + 1;
        }
    }
    push_statement(&mut out, &sql[begin.min(sql.len())..]);
    Ok(out)
}

/// Every identifier in a SQL text, folded as PostgreSQL folds unquoted names.
pub fn identifiers(sql: &str) -> std::collections::BTreeSet<String> {
    let dialect = TributaryDialect::default();
    Tokenizer::new(&dialect, sql)
        .tokenize()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|t| match t {
            Token::Word(w) if w.quote_style.is_some() => Some(w.value),
            Token::Word(w) => Some(w.value.to_lowercase()),
            _ => None,
        })
        .collect()
}

fn push_statement(out: &mut Vec<String>, text: &str) {
    let dialect = TributaryDialect::default();
    let meaningful = Tokenizer::new(&dialect, text)
        .tokenize()
        .map(|tokens| {
            tokens
                .iter()
                .any(|t| !matches!(t, Token::Whitespace(_) | Token::EOF))
        })
        .unwrap_or(true);
    if meaningful {
        out.push(text.trim().to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_top_level_semicolons_only() {
        let parts =
            split_statements("select ';' as a; -- c;\n select 2;;\n/* x; */ select 'é;';").unwrap();
        assert_eq!(
            parts,
            vec![
                "select ';' as a",
                "-- c;\n select 2",
                "/* x; */ select 'é;'"
            ]
        );
    }

    #[test]
    fn comment_only_input_is_empty() {
        assert!(split_statements("  -- nothing\n").unwrap().is_empty());
    }
}
