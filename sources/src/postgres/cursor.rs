//! Change tracking of PostgreSQL sources by a cursor column: how a table changed since the
//! bookmark a model recorded, the rows in a cursor range, and the time of the newest data.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use datafusion::catalog::TableProvider;
use tributary_catalog::{Catalog, CatalogObject};
use tributary_sql::error::{Error, Result};
use tributary_storage::bookmarks::{Bookmark, CursorState};

use super::{PostgresSourceSpec, pool, provider, remote_error};

/// `"schema"."table"` for SQL Tributary writes itself.
fn quoted_table(spec: &PostgresSourceSpec) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    match spec.table.split_once('.') {
        Some((schema, table)) => format!("{}.{}", quote(schema), quote(table)),
        None => quote(&spec.table),
    }
}

/// How a PostgreSQL source changed since the bookmark a model's last commit recorded, and the
/// cursor state this refresh reads up to (`None` without a cursor).
///
/// The invariant is that an incremental refresh equals a full one, so appends are claimed only
/// when they are provably all that happened: with the bookmark `(c, n)` and now `n'` rows of
/// which `k` have a cursor after `c`, the rows after `c` are exactly the new rows only if
/// `n' = n + k` (an update moves a row's cursor past `c` without adding a row; a delete, a row
/// inserted with an old or NULL cursor, or a transaction that commits late with an older
/// cursor all break the equation). Anything else is, without a `primary_key`, a full refresh
/// with its reason. With one, it is [`Change::CursorUpserted`]: the rows after the cursor are
/// inserted or updated, and deleted rows are the keys a model holds that PostgreSQL no longer
/// has. That assumes what every cursor-based extract assumes: a row's cursor is set when it is
/// written and transactions commit in cursor order (a row committed late with an older cursor
/// is not seen until a full refresh).
pub async fn change_since(
    catalog: &Catalog,
    input: &CatalogObject,
    bookmark: Option<&Bookmark>,
) -> Result<(crate::change::Change, Option<CursorState>)> {
    use crate::change::Change;
    let spec = PostgresSourceSpec::from_options(&input.options)?;
    let Some(cursor) = &spec.cursor else {
        return Ok((
            Change::Unknown(format!(
                "source \"{}\" is a PostgreSQL table without a cursor (read in full)",
                input.name
            )),
            None,
        ));
    };
    let before: Option<CursorState> = bookmark.and_then(Bookmark::cursor);
    let column = input
        .columns
        .iter()
        .find(|c| &c.name == cursor)
        .ok_or_else(|| {
            Error::UndefinedColumn(format!(
                "cursor column \"{cursor}\" of source \"{}\" does not exist",
                input.name
            ))
        })?;
    let c = format!("\"{}\"", cursor.replace('"', "\"\""));
    let after = before.as_ref().and_then(|b| b.cursor.clone());
    let newer = match &after {
        Some(_) => format!(
            "count(*) FILTER (WHERE {c} > CAST($1::text AS {}))",
            column.data_type
        ),
        None => format!("count({c}) + 0 * length($1::text)"),
    };
    let sql = format!(
        "SELECT count(*)::bigint, to_json(max({c})) #>> '{{}}', ({newer})::bigint FROM {}",
        quoted_table(&spec)
    );
    let pool = pool(catalog, &spec.connection).await?;
    let conn = pool
        .connect_direct()
        .await
        .map_err(|e| remote_error(&input.name, &spec, e))?;
    let row = conn
        .conn
        .query_one(&sql, &[&after.clone().unwrap_or_default()])
        .await
        .map_err(|e| remote_error(&input.name, &spec, e))?;
    let now = CursorState {
        rows: row.get(0),
        cursor: row.get(1),
    };
    let newer: i64 = row.get(2);
    let Some(before) = before else {
        let why = format!(
            "no cursor bookmark for source \"{}\" (first refresh)",
            input.name
        );
        return Ok((Change::Unknown(why), Some(now)));
    };
    let change = if now == before {
        Change::Unchanged
    } else if now.rows == before.rows + newer && newer > 0 {
        Change::CursorAppended {
            cursor: cursor.clone(),
            from: before.cursor.clone(),
            to: now.cursor.clone().unwrap_or_default(),
        }
    } else if !spec.primary_key.is_empty() {
        Change::CursorUpserted {
            cursor: cursor.clone(),
            from: before.cursor.clone(),
            to: now.cursor.clone().unwrap_or_default(),
            primary_key: spec.primary_key.clone(),
        }
    } else {
        Change::Unknown(format!(
            "rows of source \"{}\" were updated or deleted since the last refresh ({} rows then, \
             {} now, {newer} with {cursor} after the bookmark), and it has no primary_key to \
             follow them by",
            input.name, before.rows, now.rows
        ))
    };
    Ok((change, Some(now)))
}

/// The rows of `provider` whose cursor is after `after` and at most `up_to`, plus those with a
/// NULL cursor when `nulls` is set. `after = None` has no lower bound; `up_to = None` means
/// no non-NULL cursor existed when the bookmark was taken, so no non-NULL row qualifies.
pub fn filtered(
    state: &datafusion::execution::context::SessionState,
    provider: Arc<dyn TableProvider>,
    cursor: &str,
    after: Option<&str>,
    up_to: Option<&str>,
    nulls: bool,
) -> Result<Arc<dyn TableProvider>> {
    use datafusion::common::{Column, ScalarValue};
    use datafusion::logical_expr::{Expr, lit};
    let field = provider.schema().field_with_name(cursor)?.clone();
    let c = Expr::Column(Column::from_name(cursor));
    let value = |text: &str| -> Result<Expr> {
        Ok(lit(ScalarValue::try_from_string(
            text.to_string(),
            field.data_type(),
        )?))
    };
    let range = match (after, up_to) {
        (_, None) => None,
        (Some(a), Some(u)) => Some(c.clone().gt(value(a)?).and(c.clone().lt_eq(value(u)?))),
        (None, Some(u)) => Some(c.clone().lt_eq(value(u)?)),
    };
    let predicate = match (range, nulls) {
        (Some(r), true) => r.or(c.is_null()),
        (Some(r), false) => r,
        (None, true) => c.is_null(),
        (None, false) => lit(false),
    };
    let ctx = datafusion::prelude::SessionContext::new_with_state(state.clone());
    let plan = ctx
        .read_table(provider)?
        .filter(predicate)?
        .into_unoptimized_plan();
    Ok(Arc::new(datafusion::datasource::view::ViewTable::new(
        plan, None,
    )))
}

/// A cursor-tracked source's rows in a cursor range, read through the federated provider (the
/// filter is pushed down to PostgreSQL with the rest of the subplan).
pub async fn cursor_rows(
    catalog: &Catalog,
    state: &datafusion::execution::context::SessionState,
    input: &CatalogObject,
    after: Option<&str>,
    up_to: Option<&str>,
    nulls: bool,
) -> Result<Arc<dyn TableProvider>> {
    let spec = PostgresSourceSpec::from_options(&input.options)?;
    let cursor = spec
        .cursor
        .ok_or_else(|| Error::Internal(format!("source {} has no cursor", input.name)))?;
    let base = provider(catalog, input).await?;
    filtered(state, base, &cursor, after, up_to, nulls)
}

/// The time of a cursor-tracked source's newest data: the largest value of its cursor column,
/// when that column is a time (`timestamp`, `timestamptz` or `date`). `None` without a cursor,
/// with a cursor of another type, or an empty table.
pub async fn newest_cursor_time(
    catalog: &Catalog,
    input: &CatalogObject,
) -> Result<Option<DateTime<Utc>>> {
    let spec = PostgresSourceSpec::from_options(&input.options)?;
    let Some(cursor) = &spec.cursor else {
        return Ok(None);
    };
    let is_time = input.columns.iter().any(|c| {
        &c.name == cursor && (c.data_type.starts_with("timestamp") || c.data_type == "date")
    });
    if !is_time {
        return Ok(None);
    }
    // Only the maximum (an index lookup when the cursor is indexed): freshness is read on
    // every scrape of /metrics, where change tracking's count(*) would scan the table.
    let sql = format!(
        "SELECT to_json(max(\"{}\")) #>> '{{}}' FROM {}",
        cursor.replace('"', "\"\""),
        quoted_table(&spec)
    );
    let pool = pool(catalog, &spec.connection).await?;
    let conn = pool
        .connect_direct()
        .await
        .map_err(|e| remote_error(&input.name, &spec, e))?;
    let row = conn
        .conn
        .query_one(&sql, &[])
        .await
        .map_err(|e| remote_error(&input.name, &spec, e))?;
    let newest: Option<String> = row.get(0);
    Ok(newest.as_deref().and_then(parse_time))
}

/// A time as PostgreSQL's `to_json` writes it: `2026-01-02T10:00:00+00:00` (timestamptz),
/// `2026-01-02T10:00:00` (timestamp, taken as UTC) or `2026-01-02` (date).
fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%:z")
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|t| t.and_utc())
        })
        .or_else(|| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc())
        })
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn cursor_times_parse_as_postgresql_writes_them() {
        let expected = "2026-01-02T10:00:00Z";
        for text in [
            "2026-01-02T10:00:00+00:00",
            "2026-01-02T12:00:00+02:00",
            "2026-01-02T10:00:00",
        ] {
            assert_eq!(
                parse_time(text).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                Some(expected.to_string()),
                "{text}"
            );
        }
        assert_eq!(
            parse_time("2026-01-02T10:00:00.25").map(|t| t.timestamp_millis() % 1000),
            Some(250)
        );
        assert!(parse_time("2026-01-02").is_some());
        assert!(parse_time("42").is_none());
    }
}
