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

/// Window results are partitioned by their window's start (not by their
/// timestamp, the window's last millisecond): the window travels with the
/// result from the aggregate step to the sink.
#[test]
fn window_results_are_partitioned_by_their_window_start() {
    let (input, dlq) = (unique("pq-win-in"), unique("pq-win-dlq"));
    create_topics(&[&input, &dlq], 1);
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"name: parquet-windows
kafka: {{ brokers: "{brokers}" }}
source: {{ topics: [{input}] }}
transforms:
  - module: {module}
    aggregate:
      window: {{ tumbling: 1h }}
      watermark: {{ max_out_of_orderness: 0s, idle_timeout: 1h }}
outputs:
  default:
    parquet:
      path: {out}
      schema:
        - {{ name: user_id, type: string }}
        - {{ name: window_start, type: int64 }}
        - {{ name: window_end, type: int64 }}
        - {{ name: count, type: int64 }}
        - {{ name: sum, type: float64 }}
      partition_by: {{ time: "start=%H:%M" }}
dead_letter: {{ topic: {dlq} }}
checkpoint: {{ dir: {ckpt} }}
"#,
        brokers = brokers(),
        module = guest("count-sum").display(),
        out = dir.path().join("out").display(),
        ckpt = dir.path().join("ckpt").display(),
    );
    let event = |amount: u32| format!(r#"{{"user_id":"u1","amount":{amount}}}"#);
    // Two events in the first hour; one at 1:01:40 closes it.
    produce_raw(
        &input,
        &[
            RawRecord::new(&event(1), 1_000, &[]),
            RawRecord::new(&event(2), 2_000, &[]),
            RawRecord::new(&event(4), 3_700_000, &[]),
        ],
    );
    let summary = run_until_caught_up(&spec(&yaml));
    assert_eq!((summary.records_in, summary.dead_lettered), (3, 0));
    let rows = read_parquet(&dir.path().join("out"));
    let rows: Vec<(String, Value)> = rows
        .into_iter()
        .map(|(f, r)| (f.rsplit_once('/').unwrap().0.to_owned(), r))
        .collect();
    assert_eq!(
        rows,
        [(
            "start=00:00".to_owned(),
            json!({"user_id": "u1", "window_start": 0, "window_end": 3_600_000, "count": 2, "sum": 3.0})
        )]
    );
}
