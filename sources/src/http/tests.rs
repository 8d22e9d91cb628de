//! Unit tests of records paths, options, backoff, headers and inference.

use super::fetch::*;
use super::records::*;
use super::*;
use serde_json::json;

fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    map.insert("url".into(), "http://127.0.0.1:1/x".into());
    map
}

fn name() -> ObjectName {
    ObjectName::new("raw", "fx")
}

#[test]
fn records_paths() {
    let body = json!({"data": {"rates": [{"c": "EUR"}, {"c": "GBP"}]}, "one": {"c": "X"}});
    let get = |path: &str| RecordsPath::parse(path).unwrap().records(body.clone());
    assert_eq!(get("$.data.rates[*]").unwrap().len(), 2);
    assert_eq!(get("$.data.rates").unwrap().len(), 2);
    assert_eq!(get("$.one").unwrap()[0]["c"], "X");
    assert_eq!(get("$").unwrap().len(), 1);
    assert!(get("$.one[*]").unwrap_err().contains("not an array"));
    assert!(
        get("$.data.missing")
            .unwrap_err()
            .contains("no key \"missing\"")
    );
    let top = RecordsPath::parse("$[*]").unwrap();
    assert_eq!(top.records(json!([{"a": 1}, {"a": 2}])).unwrap().len(), 2);
    assert!(
        top.records(json!([1]))
            .unwrap_err()
            .contains("record 1 is an integer")
    );
    for bad in ["rates", "$..a", "$.a[0]", "$.a[*].b", "$.", "$.*"] {
        assert!(RecordsPath::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn options_are_checked() {
    let spec = HttpSourceSpec::from_options(&options(&[
        ("records", "$.rates[*]"),
        ("poll", "1 hour"),
        ("timeout", "10 seconds"),
        ("retries", "3"),
    ]))
    .unwrap();
    assert_eq!(spec.poll, Some(Duration::from_secs(3600)));
    assert_eq!(spec.timeout, Duration::from_secs(10));
    assert_eq!(spec.retries, 3);
    for (key, value) in [
        ("retries", "many"),
        ("timeout", "0"),
        ("poll", "10ms"),
        ("records", "rates"),
        ("header", "x"),
    ] {
        match HttpSourceSpec::from_options(&options(&[(key, value)])).unwrap_err() {
            Error::InvalidOption { option, .. } => assert_eq!(option, key),
            other => panic!("{key}: {other}"),
        }
    }
    let mut ftp = options(&[]);
    ftp.insert("url".into(), "ftp://x/".into());
    assert!(HttpSourceSpec::from_options(&ftp).is_err());
}

#[test]
fn backoff_doubles_up_to_a_cap() {
    let spec = HttpSourceSpec::from_options(&options(&[("retry_delay", "100ms")])).unwrap();
    assert_eq!(spec.backoff(1), Duration::from_millis(100));
    assert_eq!(spec.backoff(2), Duration::from_millis(200));
    assert_eq!(spec.backoff(3), Duration::from_millis(400));
    assert_eq!(spec.backoff(40), MAX_BACKOFF);
}

#[test]
fn headers_from_json_or_lines_never_quote_the_value() {
    let h = parse_headers("s", r#"{"Authorization": "Bearer abc", "X-Key": "1"}"#).unwrap();
    assert_eq!(h.len(), 2);
    let h = parse_headers("s", "Authorization: Bearer abc\n\nX-Key: 1\n").unwrap();
    assert_eq!(h[0], ("Authorization".into(), "Bearer abc".into()));
    let e = parse_headers("s", "Bearer topsecret")
        .unwrap_err()
        .to_string();
    assert!(!e.contains("topsecret"), "{e}");
    let e = parse_headers("s", r#"{"A": 1}"#).unwrap_err().to_string();
    assert!(e.contains("header \"A\""), "{e}");
}

#[test]
fn inference_and_drift() {
    let spec = HttpSourceSpec::from_options(&options(&[])).unwrap();
    let records = |v: Value| RecordsPath::parse("$[*]").unwrap().records(v).unwrap();
    let body = r#"[
        {"code": "EUR", "rate": 1, "live": true, "meta": {"src": "ecb"}},
        {"code": "GBP", "rate": 0.8, "live": null, "zeta": null}
    ]"#;
    let path = RecordsPath::parse("$[*]").unwrap();
    let order = field_order(&path, body.as_bytes());
    assert_eq!(order, ["code", "rate", "live", "meta", "zeta"]);
    let first = records(serde_json::from_str(body).unwrap());
    let schema = infer_schema(&spec, &name(), &first, &order).unwrap();
    assert_eq!(schema.field(4).name(), "zeta");
    let schema = Schema::new(schema.fields()[..4].to_vec());
    let types: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    assert_eq!(
        types,
        [
            DataType::Utf8,
            DataType::Float64,
            DataType::Boolean,
            DataType::Utf8
        ]
    );
    let rows = conform(&spec, &name(), &schema, first).unwrap();
    assert_eq!(rows[0]["meta"], json!(r#"{"src":"ecb"}"#));
    let batch = to_batch(&spec, &name(), &schema, &rows, Utc::now()).unwrap();
    assert_eq!((batch.num_rows(), batch.num_columns()), (2, 5));
    // A field that changed type, and a column gone from every record.
    let changed = records(json!([{"code": "EUR", "rate": "1.1", "live": true, "meta": null}]));
    let e = conform(&spec, &name(), &schema, changed).unwrap_err();
    assert!(matches!(e, Error::SchemaDrift(_)));
    assert!(
        e.to_string()
            .contains("field \"rate\" of record 1 is a string"),
        "{e}"
    );
    let gone = records(json!([{"code": "EUR", "live": true, "meta": null}]));
    let e = conform(&spec, &name(), &schema, gone)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("column \"rate\" is missing from every record"),
        "{e}"
    );
    assert!(e.contains("http://127.0.0.1:1/x"), "{e}");
    let mixed = records(json!([{"a": 1}, {"a": "x"}]));
    assert!(infer_schema(&spec, &name(), &mixed, &[]).is_err());
}

#[test]
fn polls_fall_due_by_their_interval() {
    let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
    let created = t("2026-11-30T00:00:00Z");
    let every = Duration::from_secs(3600);
    assert!(!poll_due(every, None, created, t("2026-11-30T00:59:59Z")));
    assert!(poll_due(every, None, created, t("2026-11-30T01:00:00Z")));
    let last = Some(t("2026-11-30T01:00:00Z"));
    assert!(!poll_due(every, last, created, t("2026-11-30T01:30:00Z")));
    assert!(poll_due(every, last, created, t("2026-11-30T02:00:00Z")));
}
