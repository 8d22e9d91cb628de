//! psql 15's meta-commands (`\d`, `\dt`, `\dv`, `\dn`, `\l`, `\d NAME`, `\d+ NAME`): every query
//! psql sends (the shared client corpus) runs and answers with PostgreSQL 15's column names,
//! and `pg_class` describes models as materialized views and sources as foreign tables.

use std::collections::HashMap;

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::support::{TestServer, repo_root};

/// The column names PostgreSQL 15 answers each psql query with (captured from a real server).
const EXPECTED: &[(&str, &[&str])] = &[
    (r"psql \d (query 1)", &["Schema", "Name", "Type", "Owner"]),
    (r"psql \dt (query 1)", &["Schema", "Name", "Type", "Owner"]),
    (r"psql \dv (query 1)", &["Schema", "Name", "Type", "Owner"]),
    (r"psql \dn (query 1)", &["Name", "Owner"]),
    (
        r"psql \l (query 1)",
        &[
            "Name",
            "Owner",
            "Encoding",
            "Collate",
            "Ctype",
            "ICU Locale",
            "Locale Provider",
            "Access privileges",
        ],
    ),
    (
        r"psql 17 \l",
        &[
            "Name",
            "Owner",
            "Encoding",
            "Locale Provider",
            "Collate",
            "Ctype",
            "Locale",
            "ICU Rules",
            "Access privileges",
        ],
    ),
    (r"t (query 1)", &["oid", "nspname", "relname"]),
    (
        r"psql \d t (query 2)",
        &[
            "relchecks",
            "relkind",
            "relhasindex",
            "relhasrules",
            "relhastriggers",
            "relrowsecurity",
            "relforcerowsecurity",
            "relhasoids",
            "relispartition",
            "?column?",
            "reltablespace",
            "reloftype",
            "relpersistence",
            "relreplident",
            "amname",
        ],
    ),
    (
        r"psql \d+ t (query 2)",
        &[
            "relchecks",
            "relkind",
            "relhasindex",
            "relhasrules",
            "relhastriggers",
            "relrowsecurity",
            "relforcerowsecurity",
            "relhasoids",
            "relispartition",
            "array_to_string",
            "reltablespace",
            "reloftype",
            "relpersistence",
            "relreplident",
            "amname",
        ],
    ),
    (
        r"psql \d t (query 3)",
        &[
            "attname",
            "format_type",
            "pg_get_expr",
            "attnotnull",
            "attcollation",
            "attidentity",
            "attgenerated",
        ],
    ),
    (
        r"psql \d+ t (query 3)",
        &[
            "attname",
            "format_type",
            "pg_get_expr",
            "attnotnull",
            "attcollation",
            "attidentity",
            "attgenerated",
            "attstorage",
            "attcompression",
            "attstattarget",
            "col_description",
        ],
    ),
    (
        r"t (query 4)",
        &[
            "relname",
            "indisprimary",
            "indisunique",
            "indisclustered",
            "indisvalid",
            "pg_get_indexdef",
            "pg_get_constraintdef",
            "contype",
            "condeferrable",
            "condeferred",
            "indisreplident",
            "reltablespace",
        ],
    ),
    (
        r"t (query 5)",
        &[
            "polname",
            "polpermissive",
            "array_to_string",
            "pg_get_expr",
            "pg_get_expr",
            "cmd",
        ],
    ),
    (
        r"t (query 6)",
        &[
            "oid",
            "stxrelid",
            "nsp",
            "stxname",
            "columns",
            "ndist_enabled",
            "deps_enabled",
            "mcv_enabled",
            "stxstattarget",
        ],
    ),
    (r"t (query 7)", &["pubname", "?column?", "?column?"]),
    (r"t (query 8)", &["oid"]),
    (
        r"t (query 9)",
        &["oid", "relkind", "inhdetachpending", "pg_get_expr"],
    ),
];

fn expected(label: &str) -> Vec<String> {
    // Keys are whole labels, a label's start (`psql 17 \l`), or `t (query N)` for both
    // `\d t` and `\d+ t`.
    let (_, names) = EXPECTED
        .iter()
        .find(|(key, _)| {
            label == *key
                || (key.starts_with("psql 17") && label.starts_with(key))
                || label == format!(r"psql \d {key}")
                || label == format!(r"psql \d+ {key}")
        })
        .unwrap_or_else(|| panic!("no expected column names for {label:?}"));
    // DataFusion needs unique names in a SELECT list; a name PostgreSQL repeats gets a `_1`,
    // `_2`, ... suffix from its second occurrence on.
    let mut seen: HashMap<&str, usize> = HashMap::new();
    names
        .iter()
        .map(|name| {
            let n = seen.entry(name).or_default();
            let out = match *n {
                0 => name.to_string(),
                k => format!("{name}_{k}"),
            };
            *n += 1;
            out
        })
        .collect()
}

/// Whether a label is query `n` of psql's `\d t` or `\d+ t`.
fn describes_t(label: &str, n: usize) -> bool {
    label == format!(r"psql \d t (query {n})") || label == format!(r"psql \d+ t (query {n})")
}

/// Runs one query with the simple protocol: its column names and rows (as text).
async fn run(client: &Client, sql: &str) -> (Vec<String>, Vec<Vec<Option<String>>>) {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}\nfailed: {e:?}"));
    let mut columns = Vec::new();
    let mut rows = Vec::new();
    for message in messages {
        match message {
            SimpleQueryMessage::RowDescription(cols) => {
                columns = cols.iter().map(|c| c.name().to_string()).collect();
            }
            SimpleQueryMessage::Row(row) => {
                rows.push(
                    (0..row.len())
                        .map(|i| row.get(i).map(String::from))
                        .collect(),
                );
            }
            _ => {}
        }
    }
    (columns, rows)
}

const SETUP: &str = "
    CREATE TABLE t (a INT NOT NULL, b TEXT);
    COMMENT ON COLUMN t.a IS 'the a column';
    CREATE SOURCE s FROM FILES 'sqllogictests/data/orders.csv' FORMAT CSV;
    CREATE MODEL m AS SELECT a, b FROM t;
    CREATE VIEW v AS SELECT a FROM t;
";

#[tokio::test]
async fn psql_meta_command_queries_answer_like_postgres() {
    let (server, _dir) = TestServer::start(&[]);
    let client = server.connect().await;
    client.batch_execute(SETUP).await.unwrap();

    let (_, rows) = run(
        &client,
        "SELECT c.relname, c.relkind, c.oid FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' ORDER BY 1",
    )
    .await;
    let kinds: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r[0].as_deref().unwrap(), r[1].as_deref().unwrap()))
        .collect();
    assert_eq!(kinds, [("m", "m"), ("s", "f"), ("t", "r"), ("v", "v")]);
    let t_oid = rows[2][2].clone().unwrap();

    let corpus = std::fs::read_to_string(repo_root().join("server/tests/fixtures/clients.json"))
        .expect("client corpus");
    let corpus: Vec<serde_json::Value> = serde_json::from_str(&corpus).unwrap();
    let mut ran = 0;
    for query in corpus.iter().filter(|q| q["client"] == "psql") {
        let label = query["label"].as_str().unwrap();
        // Each query names the table t by the OID it had when it was captured.
        let sql = query["sql"]
            .as_str()
            .unwrap()
            .replace("'16384'", &format!("'{t_oid}'"));
        let (columns, rows) = run(&client, &sql).await;
        assert_eq!(columns, expected(label), "column names of {label}");
        // The same through the extended protocol (Parse/Describe/Bind/Execute).
        let statement = client
            .prepare(&sql)
            .await
            .unwrap_or_else(|e| panic!("{label}: {e:?}"));
        let described: Vec<String> = statement
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        assert_eq!(described, expected(label), "described columns of {label}");
        let extended = client
            .query(&statement, &[])
            .await
            .unwrap_or_else(|e| panic!("{label}: {e:?}"));
        assert_eq!(extended.len(), rows.len(), "{label}");
        if describes_t(label, 1) {
            assert_eq!(
                rows,
                [[Some(t_oid.clone()), Some("public".into()), Some("t".into())]]
            );
        }
        if describes_t(label, 2) {
            assert_eq!(rows.len(), 1, "{label}");
            assert_eq!(rows[0][1].as_deref(), Some("r"), "{label}");
        }
        if describes_t(label, 3) {
            let described: Vec<_> = rows.iter().map(|r| (r[0].clone(), r[1].clone())).collect();
            assert_eq!(
                described,
                [
                    (Some("a".into()), Some("integer".into())),
                    (Some("b".into()), Some("text".into()))
                ],
                "{label}"
            );
            if label.starts_with(r"psql \d+") {
                assert_eq!(rows[0][10].as_deref(), Some("the a column"));
            }
        }
        ran += 1;
    }
    assert_eq!(ran, 24, "psql queries in the corpus");
}

#[tokio::test]
async fn models_are_materialized_views_and_sources_foreign_tables() {
    let (server, _dir) = TestServer::start(&[]);
    let client = server.connect().await;
    client.batch_execute(SETUP).await.unwrap();

    // psql's \dm and \dE.
    for (relkind, name, kind) in [("m", "m", "materialized view"), ("f", "s", "foreign table")] {
        let sql = format!(
            "SELECT n.nspname as \"Schema\", c.relname as \"Name\",
               CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view'
                 WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table' END as \"Type\"
             FROM pg_catalog.pg_class c
                  LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('{relkind}','')
                   AND n.nspname <> 'pg_catalog' AND n.nspname !~ '^pg_toast'
                   AND n.nspname <> 'information_schema'
               AND pg_catalog.pg_table_is_visible(c.oid)
             ORDER BY 1,2"
        );
        let (_, rows) = run(&client, &sql).await;
        assert_eq!(
            rows,
            [[
                Some("public".to_string()),
                Some(name.to_string()),
                Some(kind.to_string())
            ]]
        );
    }

    let (_, rows) = run(
        &client,
        "SELECT matviewname, ispopulated, definition FROM pg_catalog.pg_matviews",
    )
    .await;
    assert_eq!(
        rows,
        [[
            Some("m".into()),
            Some("t".into()),
            Some("SELECT a, b FROM t".into())
        ]]
    );
    let (_, rows) = run(&client, "SELECT viewname FROM pg_catalog.pg_views").await;
    assert_eq!(rows, [[Some("v".to_string())]]);
    let (_, rows) = run(
        &client,
        "SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = 'public'",
    )
    .await;
    assert_eq!(rows, [[Some("t".to_string())]]);

    // What psql's \d+ on a model and on a source go on to ask.
    let (_, rows) = run(
        &client,
        "SELECT pg_catalog.pg_get_viewdef(c.oid, true), pg_catalog.obj_description(c.oid, 'pg_class')
         FROM pg_catalog.pg_class c WHERE c.relname = 'm'",
    )
    .await;
    assert_eq!(rows, [[Some("SELECT a, b FROM t".to_string()), None]]);
    let (_, rows) = run(
        &client,
        "SELECT s.srvname FROM pg_catalog.pg_foreign_table f, pg_catalog.pg_foreign_server s,
                pg_catalog.pg_class c
         WHERE c.relname = 's' AND f.ftrelid = c.oid AND s.oid = f.ftserver",
    )
    .await;
    assert_eq!(rows, [[Some("files".to_string())]]);
}
