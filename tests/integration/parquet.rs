//! A Parquet output end to end: records that fit the schema land in files
//! that pyarrow reads back, partitioned by a field; records that do not fit
//! go to the dead-letter topic with the reason and the output's name, never
//! into a file.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sluice_tests::*;

#[test]
fn records_that_do_not_fit_the_schema_are_dead_lettered_not_written() {
    let (input, dlq) = (unique("pq-in"), unique("pq-dlq"));
    create_topics(&[&input, &dlq], 1);
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"name: parquet-out
kafka: {{ brokers: "{brokers}" }}
source: {{ topics: [{input}] }}
outputs:
  default:
    parquet:
      path: {out}
      schema:
        - {{ name: id, type: int64 }}
        - {{ name: kind, type: string }}
        - {{ name: amount, type: float64, nullable: true }}
      partition_by: {{ field: kind }}
dead_letter: {{ topic: {dlq} }}
checkpoint: {{ dir: {ckpt} }}
"#,
        brokers = brokers(),
        out = dir.path().join("out").display(),
        ckpt = dir.path().join("ckpt").display(),
    );
    let records = [
        r#"{"id": 1, "kind": "click", "amount": 2.5}"#,
        r#"{"id": 2, "kind": "view", "extra": [1, 2]}"#,
        r#"{"id": "3", "kind": "view", "amount": 1}"#,
        r#"{"id": 4, "kind": "click", "amount": "lots"}"#,
        r#"not json"#,
        r#"{"id": 6, "kind": "view", "amount": 7}"#,
        r#"{"kind": "click"}"#,
    ];
    let pairs: Vec<(&str, &str)> = records.iter().map(|r| ("k", *r)).collect();
    produce(&input, &pairs);
    let summary = run_until_caught_up(&spec(&yaml));
    assert_eq!(summary.records_in, 7);
    assert_eq!(summary.dead_lettered, 4);

    let rows: Vec<(String, Value)> = read_parquet(&dir.path().join("out"));
    let files: BTreeMap<String, Vec<Value>> = rows.iter().fold(BTreeMap::new(), |mut m, (f, r)| {
        let dir = f.rsplit_once('/').unwrap().0.to_owned();
        m.entry(dir).or_default().push(r.clone());
        m
    });
    assert_eq!(
        files,
        BTreeMap::from([
            (
                "kind=click".to_owned(),
                vec![json!({"id": 1, "kind": "click", "amount": 2.5})]
            ),
            (
                "kind=view".to_owned(),
                vec![
                    json!({"id": 2, "kind": "view", "amount": null}),
                    json!({"id": 6, "kind": "view", "amount": 7.0}),
                ]
            ),
        ])
    );

    let dead: Vec<(String, String, String)> = read(&dlq)
        .into_iter()
        .map(|r| {
            (
                r.value.unwrap(),
                r.headers["sluice.error"].clone(),
                r.headers["sluice.output"].clone(),
            )
        })
        .collect();
    let reason = |r: &str| (r.to_owned(), "default".to_owned());
    let not_json = serde_json::from_str::<Value>(records[4]).unwrap_err();
    let expected: Vec<(String, String, String)> = [
        (
            records[2],
            reason(r#"parquet: field "id": expected int64, got string"#),
        ),
        (
            records[3],
            reason(r#"parquet: field "amount": expected float64, got string"#),
        ),
        (
            records[4],
            reason(&format!("parquet: not JSON: {not_json}")),
        ),
        (
            records[6],
            reason(r#"parquet: field "id": missing (the column is not nullable)"#),
        ),
    ]
    .into_iter()
    .map(|(v, (e, o))| (v.to_owned(), e, o))
    .collect();
    assert_eq!(dead, expected);
}
