//! Property test: after any sequence of input changes and refreshes, every model equals its
//! query (what a full refresh would produce), whatever strategy each refresh chose.
//!
//! Inputs and models come from a seeded generator; CI runs a few cases. A longer campaign:
//! `TRIBUTARY_PROPTEST_CASES=200 cargo test -p tributary-server --test it incremental`.

use crate::support::TestServer;

/// A small deterministic generator (no external crate needed for this).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Model shapes: filters, projections, UNION ALL, chains of models, inner joins, aggregates
/// (every aggregate function, NULL keys, HAVING, keys computed by expressions, over joins
/// and over other models), `unique_key` merges, LEFT and RIGHT joins (appends, merges and
/// groups keyed on the preserved side, an anti-join filter, a chain of left joins), DISTINCT
/// and UNION (grouped by every column, over a model, a union and a left join), models over
/// models that merge (with deletion vectors), aggregates folded from their inputs' changes
/// (subtracted removed rows, a decimal AVG, a column computed over aggregates), and shapes
/// that fall back to full refreshes (aggregates without GROUP BY).
const MODELS: &[(&str, &str, &str)] = &[
    ("m_filter", "", "SELECT id, k, v FROM a WHERE v > 40"),
    (
        "m_project",
        "",
        "SELECT id, k, v * 2 + 1 AS w, CASE WHEN v > 50 THEN 'hi' ELSE 'lo' END AS band FROM a",
    ),
    (
        "m_union",
        "",
        "SELECT id, k FROM a WHERE k <> 'x' UNION ALL SELECT id, k FROM b",
    ),
    (
        "m_chain",
        "",
        "SELECT id, w FROM m_project WHERE band = 'hi'",
    ),
    (
        "m_agg",
        "",
        "SELECT k, count(*) AS n, count(v) AS nv, sum(v) AS total, min(v) AS lo, max(v) AS hi, \
         avg(v) AS mean, count(DISTINCT v) AS distinct_v FROM a GROUP BY k",
    ),
    (
        "m_agg_having",
        "",
        "SELECT v % 7 AS bucket, k, sum(v) AS total FROM b WHERE v IS NOT NULL \
         GROUP BY v % 7, k HAVING count(*) > 1",
    ),
    (
        "m_agg_join",
        "",
        "SELECT d.label, count(*) AS n, sum(a.v) AS total FROM a JOIN d ON a.k = d.k GROUP BY d.label",
    ),
    (
        "m_agg_chain",
        "",
        "SELECT band, count(*) AS n, max(w) AS top FROM m_project GROUP BY band",
    ),
    (
        "m_grand",
        "",
        "SELECT count(*) AS n, sum(v) AS total FROM b",
    ),
    (
        "m_join",
        "",
        "SELECT a.id, a.v, b.v AS bv FROM a JOIN b ON a.k = b.k",
    ),
    (
        "m_uk_linear",
        "unique_key = 'id'",
        "SELECT id, k, v * 3 AS w FROM a WHERE v IS NULL OR v < 90",
    ),
    (
        "m_uk_join",
        "unique_key = 'id'",
        "SELECT a.id, a.v, d.label FROM a JOIN d ON a.k = d.k",
    ),
    (
        "m_left",
        "",
        "SELECT a.id, b.id AS bid FROM a LEFT JOIN b ON a.id = b.id",
    ),
    (
        "m_left_uk",
        "unique_key = 'id'",
        "SELECT a.id, a.v, d.label FROM a LEFT JOIN d ON a.k = d.k",
    ),
    (
        "m_left_agg",
        "",
        "SELECT a.k, count(d.label) AS labelled, sum(a.v) AS total \
         FROM a LEFT JOIN d ON a.k = d.k GROUP BY a.k",
    ),
    (
        "m_left_anti",
        "unique_key = 'id'",
        "SELECT a.id, a.k FROM a LEFT JOIN b ON a.id = b.id WHERE b.id IS NULL",
    ),
    (
        "m_left_chain",
        "unique_key = 'id'",
        "SELECT a.id, b.v AS bv, d.label FROM a LEFT JOIN b ON a.id = b.id \
         LEFT JOIN d ON b.k = d.k",
    ),
    (
        "m_right_uk",
        "unique_key = 'id'",
        "SELECT a.id, d.label FROM d RIGHT JOIN a ON a.k = d.k",
    ),
    // Models over models that merge with deletion vectors: they read change feeds whose
    // deletes come from deletion vectors.
    (
        "m_agg_over_uk",
        "",
        "SELECT k, count(*) AS n, sum(w) AS total FROM m_uk_linear GROUP BY k",
    ),
    (
        "m_uk_over_uk",
        "unique_key = 'id'",
        "SELECT id, w + 1 AS w1, label FROM m_left_uk JOIN m_uk_linear USING (id) \
         WHERE w IS NULL OR w > 30",
    ),
    // Aggregates that fold: counted rows and values, exact sums, a decimal average and a
    // column computed over the aggregates, over a model that merges.
    (
        "m_decimal",
        "unique_key = 'id'",
        "SELECT id, k, CAST(v AS NUMERIC(12,2)) / 8 AS amount FROM a WHERE v IS NULL OR v % 5 <> 0",
    ),
    (
        "m_agg_fold",
        "",
        "SELECT k, count(*) AS n, count(amount) AS counted, count(*) - count(amount) AS missing, \
         sum(amount) AS total, avg(amount) AS mean, max(amount) AS hi FROM m_decimal GROUP BY k",
    ),
    // Without a COUNT(*): groups that gained at least as many rows as they lost fold.
    (
        "m_fold_uncounted",
        "",
        "SELECT k, sum(amount) AS total, count(amount) AS counted, min(amount) AS lo \
         FROM m_decimal GROUP BY k",
    ),
    (
        "m_over_agg",
        "",
        "SELECT k, n, total FROM m_agg WHERE n > 1",
    ),
    ("m_distinct", "", "SELECT DISTINCT k FROM m_union"),
    (
        "m_union_distinct",
        "",
        "SELECT k, v FROM a WHERE v > 20 UNION SELECT k, v FROM b",
    ),
    (
        "m_distinct_left",
        "",
        "SELECT DISTINCT a.k, d.label, a.v IS NULL AS no_v FROM a LEFT JOIN d ON a.k = d.k",
    ),
];

/// Compares each model with its query as multisets: rows with their multiplicities
/// (DataFusion's EXCEPT ALL drops every copy of a matching row, so it cannot see duplicates).
async fn assert_models_equal_queries(client: &tokio_postgres::Client, schema: &str, context: &str) {
    for (name, _, query) in MODELS {
        let columns: Vec<String> = client
            .query(
                "SELECT column_name FROM tributary.columns \
                 WHERE schema_name = $1 AND object_name = $2 ORDER BY ordinal_position",
                &[&schema, name],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| format!("\"{}\"", r.get::<_, String>(0)))
            .collect();
        assert!(!columns.is_empty(), "no columns for {name}");
        let cols = columns.join(", ");
        let counted = |from: &str| {
            format!("SELECT {cols}, count(*) AS copies FROM ({from}) AS t GROUP BY {cols}")
        };
        let model = counted(&format!("SELECT * FROM {name}"));
        let expected = counted(query);
        let sql = format!(
            "SELECT count(*) FROM ((({model}) EXCEPT ({expected})) UNION ALL (({expected}) EXCEPT ({model})))"
        );
        let differences: i64 = client.query_one(&sql, &[]).await.unwrap().get(0);
        assert_eq!(
            differences, 0,
            "{name} differs from its query after {context}"
        );
    }
}

#[tokio::test]
async fn incremental_refresh_always_equals_a_full_recompute() {
    let cases: u64 = std::env::var("TRIBUTARY_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let (server, _dir) = TestServer::start(&[]);
    let client = server.connect().await;
    let mut strategies = std::collections::BTreeSet::new();
    for case in 0..cases {
        let mut rng = Rng(0x5eed ^ case.wrapping_mul(0x9e3779b97f4a7c15));
        let schema = format!("p{case}");
        client
            .batch_execute(&format!(
                "CREATE SCHEMA {schema}; SET search_path TO {schema};
                 CREATE TABLE a (id BIGINT NOT NULL, k TEXT, v BIGINT);
                 CREATE TABLE b (id BIGINT NOT NULL, k TEXT, v BIGINT);
                 CREATE TABLE d (k TEXT, label TEXT);
                 INSERT INTO a VALUES (1, 'x', 10), (2, 'y', 60);
                 INSERT INTO b VALUES (1, 'y', 5);
                 INSERT INTO d VALUES ('x', 'ex'), ('y', 'why'), ('z', 'zed');"
            ))
            .await
            .unwrap();
        for (name, options, query) in MODELS {
            let with = if options.is_empty() {
                String::new()
            } else {
                format!("WITH ({options})")
            };
            client
                .batch_execute(&format!("CREATE MODEL {name} {with} AS {query}"))
                .await
                .unwrap();
        }
        let mut next_id = 100;
        for step in 0..8 {
            let mut log = Vec::new();
            // Half the steps only append, to both tables, so incremental paths (and the
            // join delta rule's new-rows-on-both-sides case) are exercised.
            let appends_only = rng.below(2) == 0;
            for n in 0..(1 + rng.below(3)) {
                let table = if appends_only {
                    ["a", "b"][n as usize % 2]
                } else {
                    *rng.pick(&["a", "b"])
                };
                let op = if appends_only { 0 } else { rng.below(12) };
                let sql = if op >= 10 {
                    // The dimension: relabel a key (moves groups, rewrites joined rows).
                    format!(
                        "UPDATE d SET label = '{}' WHERE k = '{}'",
                        rng.pick(&["ex", "why", "zed", "other"]),
                        rng.pick(&["x", "y", "z"])
                    )
                } else if op < 6 {
                    let rows: Vec<String> = (0..(1 + rng.below(4)))
                        .map(|_| {
                            next_id += 1;
                            let k = rng.pick(&["x", "y", "z"]);
                            let v = if rng.below(8) == 0 {
                                "NULL".to_string()
                            } else {
                                rng.below(100).to_string()
                            };
                            format!("({next_id}, '{k}', {v})")
                        })
                        .collect();
                    format!("INSERT INTO {table} VALUES {}", rows.join(", "))
                } else if op < 8 {
                    // Updates change values and, half the time, group and join keys.
                    let set_k = if rng.below(2) == 0 {
                        format!(", k = '{}'", rng.pick(&["x", "y", "z"]))
                    } else {
                        String::new()
                    };
                    format!(
                        "UPDATE {table} SET v = v + {}{set_k} WHERE id % 3 = {}",
                        rng.below(20),
                        rng.below(3)
                    )
                } else {
                    format!("DELETE FROM {table} WHERE id % 5 = {}", rng.below(5))
                };
                client.batch_execute(&sql).await.unwrap();
                log.push(sql);
            }
            if rng.below(4) == 0 {
                let (name, _, _) = rng.pick(MODELS);
                client
                    .batch_execute(&format!("REFRESH MODEL {name} WITH UPSTREAM"))
                    .await
                    .unwrap();
            }
            client.batch_execute("REFRESH ALL").await.unwrap();
            for row in client
                .query(
                    "SELECT DISTINCT strategy FROM tributary.runs WHERE status = 'succeeded'",
                    &[],
                )
                .await
                .unwrap()
            {
                strategies.insert(row.get::<_, String>(0));
            }
            assert_models_equal_queries(
                &client,
                &schema,
                &format!("case {case} step {step}: {}", log.join("; ")),
            )
            .await;
        }
    }
    // The campaign exercised the incremental path, not only full refreshes.
    assert!(strategies.contains("incremental_append"), "{strategies:?}");
    assert!(strategies.contains("incremental_join"), "{strategies:?}");
    assert!(strategies.contains("incremental_groups"), "{strategies:?}");
    assert!(strategies.contains("incremental_merge"), "{strategies:?}");
    assert!(strategies.contains("full"), "{strategies:?}");
    // ...including merges whose new rows came straight from the input's change feed.
    let from_feed: i64 = client
        .query_one(
            "SELECT count(*) FROM tributary.runs WHERE reason LIKE '%new rows from the change feed%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        from_feed > 0,
        "no merge took its new rows from the change feed"
    );
    // ...and aggregates folded from their changed rows, with an average and a computed column,
    // and without a COUNT(*).
    for model in ["m_agg_fold", "m_fold_uncounted"] {
        let folded: i64 = client
            .query_one(
                &format!(
                    "SELECT count(*) FROM tributary.runs WHERE model LIKE '%.{model}' \
                     AND reason LIKE '%folded from their changed rows%' \
                     AND reason NOT LIKE '%, 0 folded%'"
                ),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(folded > 0, "no refresh of {model} folded a group");
    }
}
