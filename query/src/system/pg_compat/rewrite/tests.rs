use super::*;

fn rewritten(sql: &str) -> String {
    let mut stmt = Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .unwrap()
        .pop()
        .unwrap();
    name_columns(&mut stmt);
    fix_for_planning(&mut stmt);
    stmt.to_string()
}

#[test]
fn names_like_postgres() {
    assert_eq!(
        rewritten(
            "SELECT a.x, count(*), y::regclass, '1'::int, CASE WHEN true THEN 1 ELSE b END, NULL, NULL FROM a"
        ),
        r#"SELECT a.x, count(*) AS "count", y::REGCLASS AS "y", '1'::INT AS "int4", CASE WHEN true THEN 1 ELSE b END AS "b", NULL AS "?column?", NULL AS "?column?_1" FROM a"#
    );
    // GROUP BY names and wildcards keep DataFusion's names.
    assert_eq!(
        rewritten("SELECT lower(k), count(*) FROM t GROUP BY lower"),
        r#"SELECT lower(k), count(*) AS "count" FROM t GROUP BY lower"#
    );
    assert_eq!(rewritten("SELECT *, 1 FROM t"), "SELECT *, 1 FROM t");
}

#[test]
fn array_subqueries() {
    assert_eq!(
        rewritten("SELECT array(SELECT name FROM t WHERE x > 1 ORDER BY 1)"),
        r#"SELECT coalesce((SELECT array_agg(name ORDER BY name) FROM t WHERE x > 1), make_array()) AS "array""#
    );
    assert_eq!(
        rewritten("SELECT array(SELECT name FROM t WHERE t.id = o.id) FROM o"),
        r#"SELECT coalesce((SELECT array_agg(name) FROM t WHERE t.id = o.id), make_array()) AS "array" FROM o"#
    );
    assert_eq!(
        rewritten("SELECT array(SELECT 'x' || v FROM unnest(o.arr) v) FROM o"),
        r#"SELECT CAST(NULL AS TEXT[]) AS "array" FROM o"#
    );
    assert_eq!(
        rewritten("SELECT array(SELECT DISTINCT name FROM t ORDER BY 1)"),
        r#"SELECT coalesce((SELECT array_agg("__array"."v") FROM (SELECT DISTINCT name FROM t ORDER BY 1) AS "__array" ("v")), make_array()) AS "array""#
    );
}

#[test]
fn any_over_columns() {
    assert_eq!(
        rewritten("SELECT 'd' = any(stxkind) AS d FROM s WHERE x = ANY($1)"),
        "SELECT tributary_any_eq(stxkind, 'd') AS d FROM s WHERE x = ANY($1)"
    );
    assert_eq!(
        rewritten("SELECT pg_catalog.array_to_string(n.nspacl, E'\\n') FROM n"),
        r#"SELECT tributary_array_to_string(n.nspacl, E'\n') AS "array_to_string" FROM n"#
    );
}

#[test]
fn client_parser_fixes_rather_than_substitutes() {
    // psql's row-policy query, which the compatibility parser would replace by a stand-in
    // with other column names.
    let sql = "SELECT pol.polname, pol.polpermissive,
  CASE WHEN pol.polroles = '{0}' THEN NULL ELSE pg_catalog.array_to_string(array(select rolname from pg_catalog.pg_roles where oid = any (pol.polroles) order by 1),',') END,
  pg_catalog.pg_get_expr(pol.polqual, pol.polrelid),
  pg_catalog.pg_get_expr(pol.polwithcheck, pol.polrelid),
  CASE pol.polcmd
WHEN 'r' THEN 'SELECT'
WHEN 'a' THEN 'INSERT'
WHEN 'w' THEN 'UPDATE'
WHEN 'd' THEN 'DELETE'
END AS cmd
FROM pg_catalog.pg_policy pol
WHERE pol.polrelid = '16384' ORDER BY 1;";
    let parsed = crate::planning::parse_for_clients(sql).unwrap().to_string();
    assert!(parsed.contains(r#"AS "array_to_string""#), "{parsed}");
    assert!(parsed.contains(r#"AS "pg_get_expr_1""#), "{parsed}");
    // Queries with nothing to fix still get the parser's substitutions and rules.
    let parsed = crate::planning::parse_for_clients(
        "SELECT c.relname FROM pg_class c WHERE c.relname OPERATOR(pg_catalog.~) '^t$'",
    )
    .unwrap()
    .to_string();
    assert!(parsed.contains("pg_catalog.pg_class"), "{parsed}");
}
