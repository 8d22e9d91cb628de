use super::*;

#[test]
fn create_model_keeps_query_text_and_options() {
    let sql = "CREATE OR REPLACE MODEL marts.x WITH (refresh = 'full', retries = 2) AS\n  SELECT a, b FROM t WHERE a > 1";
    let Statement::CreateModel(m) = parse_statement(sql).unwrap() else {
        panic!("not a model")
    };
    assert!(m.or_replace);
    assert_eq!(m.name.to_string(), "marts.x");
    assert_eq!(m.query_text, "SELECT a, b FROM t WHERE a > 1");
    assert_eq!(m.options["refresh"], "full");
    assert_eq!(m.options["retries"], "2");
    assert!(m.with_data);
}

#[test]
fn materialized_view_with_no_data() {
    let Statement::CreateModel(m) =
        parse_statement("create materialized view v as select 1 with no data").unwrap()
    else {
        panic!("not a model")
    };
    assert!(!m.with_data);
    assert_eq!(m.query_text, "select 1");
}

#[test]
fn create_source_files() {
    let sql = "CREATE SOURCE raw.p (day DATE NOT NULL, close DOUBLE PRECISION) FROM FILES 'seeds/*.csv' FORMAT CSV WITH (header = true)";
    let Statement::CreateSource(s) = parse_statement(sql).unwrap() else {
        panic!("not a source")
    };
    assert_eq!(s.columns.len(), 2);
    assert_eq!(s.path, "seeds/*.csv");
    assert_eq!(s.format, SourceFormat::Csv);
    assert_eq!(s.options["header"], "true");
}

#[test]
fn create_source_http_and_refresh_source() {
    let sql = "CREATE SOURCE raw.fx FROM HTTP 'http://127.0.0.1:1/fx?base=USD' FORMAT JSON WITH (records = '$.rates[*]', headers_secret = api_token, retries = 3)";
    let Statement::CreateSource(s) = parse_statement(sql).unwrap() else {
        panic!("not a source")
    };
    assert_eq!(s.from, SourceFrom::Http);
    assert_eq!(s.path, "http://127.0.0.1:1/fx?base=USD");
    assert_eq!(s.options["records"], "$.rates[*]");
    assert_eq!(s.options["headers_secret"], "api_token");
    assert!(parse_statement("CREATE SOURCE x FROM HTTP 'http://h/' FORMAT CSV").is_err());
    let Statement::RefreshSource(name) = parse_statement("refresh source raw.fx").unwrap() else {
        panic!("not refresh source")
    };
    assert_eq!(name.to_string(), "raw.fx");
}

#[test]
fn refresh_variants() {
    let Statement::Refresh(r) =
        parse_statement("REFRESH MODEL m FULL WITH UPSTREAM WITH DOWNSTREAM").unwrap()
    else {
        panic!()
    };
    assert!(r.full && r.upstream && r.downstream);
    assert!(matches!(
        parse_statement("refresh all;").unwrap(),
        Statement::RefreshAll
    ));
}

#[test]
fn time_travel_parses() {
    let Statement::Sql(s) = parse_statement("select * from t version as of 3").unwrap() else {
        panic!()
    };
    assert!(s.to_string().contains("VERSION AS OF 3"));
}

#[test]
fn secrets_and_connections() {
    let Statement::CreateSecret(s) = parse_statement("CREATE SECRET Pw AS 'hunter2'").unwrap()
    else {
        panic!("not a secret")
    };
    assert_eq!(s.name, "pw");
    assert!(!format!("{s:?}").contains("hunter2"));
    let Statement::CreateSecret(s) =
        parse_statement("create or replace secret pw as env 'PGPASS'").unwrap()
    else {
        panic!("not a secret")
    };
    assert!(s.or_replace);
    assert_eq!(
        s.source,
        tributary_catalog::SecretSource::Env("PGPASS".into())
    );
    let e = parse_statement("CREATE SECRET pw AS hunter2").unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let sql = "CREATE CONNECTION bank TO POSTGRES (HOST '127.0.0.1', PORT 5432, \
               DATABASE 'bank', USER 'reader', PASSWORD SECRET pw, SSLMODE 'prefer')";
    let Statement::CreateConnection(c) = parse_statement(sql).unwrap() else {
        panic!("not a connection")
    };
    assert_eq!(c.options["port"], "5432");
    assert_eq!(c.options["user"], "reader");
    assert_eq!(c.password_secret.as_deref(), Some("pw"));
    let Statement::CreatePostgresSource(s) = parse_statement(
        "CREATE SOURCE raw.tx FROM POSTGRES CONNECTION Bank TABLE 'public.tx' \
         WITH (cursor = 'updated_at', primary_key = 'id')",
    )
    .unwrap() else {
        panic!("not a postgres source")
    };
    assert_eq!(s.name.to_string(), "raw.tx");
    assert_eq!(s.connection, "bank");
    assert_eq!(s.table, "public.tx");
    assert_eq!(s.options["cursor"], "updated_at");
    assert!(matches!(
        parse_statement("CREATE SOURCE x FROM FILES 'a.csv' FORMAT CSV").unwrap(),
        Statement::CreateSource(_)
    ));
    let Statement::DropGlobal(d) =
        parse_statement("drop connection if exists bank, other cascade").unwrap()
    else {
        panic!("not a drop")
    };
    assert_eq!(d.kind, GlobalKind::Connection);
    assert!(d.if_exists && d.cascade);
    assert_eq!(d.names, vec!["bank", "other"]);
}

#[test]
fn show_lineage_directions() {
    use super::LineageDirection as Direction;
    for (sql, expected) in [
        ("show lineage for marts.kpi", Direction::Both),
        ("SHOW LINEAGE FOR kpi UPSTREAM", Direction::Upstream),
        ("show lineage for kpi downstream;", Direction::Downstream),
    ] {
        let Statement::ShowLineage { direction, .. } = parse_statement(sql).unwrap() else {
            panic!("not show lineage: {sql}")
        };
        assert_eq!(direction, expected, "{sql}");
    }
    assert!(parse_statement("show lineage for kpi sideways").is_err());
}

#[test]
fn trailing_garbage_is_an_error() {
    assert!(parse_statement("refresh all now").is_err());
}
