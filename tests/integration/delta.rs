//! Delta Lake outputs end to end, each table read back with delta-rs's
//! Python package (`deltalake`): rows committed at checkpoints and refused
//! records dead-lettered with the reason; a table made from the first
//! record, then evolved by a nullable column of the spec; merges keeping
//! the last record of each key; compaction; `sluice validate`; the demo's
//! merged windows. The kill -9 test with a Delta and a PostgreSQL output at
//! once is in `postgres.rs`.

use std::path::Path;

use serde_json::{Value, json};
use sluice_tests::kafka_tools::SampleOptions;
use sluice_tests::*;
use sluice_tests::{S3, s3};

/// A pipeline without transforms from `input` to a Delta table at `path`
/// (`delta` is the rest of the YAML flow mapping of the section).
fn to_delta(name: &str, input: &str, dlq: &str, ckpt: &Path, path: &Path, delta: &str) -> String {
    format!(
        r#"name: {name}
kafka: {{ brokers: "{brokers}" }}
source: {{ topics: [{input}] }}
outputs:
  default:
    delta: {{ path: "{path}"{delta} }}
dead_letter: {{ topic: {dlq} }}
checkpoint: {{ dir: "{ckpt}", interval: 100ms }}
"#,
        brokers = brokers(),
        path = path.display(),
        ckpt = ckpt.display(),
    )
}

/// `(value, reason)` of every dead letter.
fn dead_letters(dlq: &str) -> Vec<(String, String)> {
    read(dlq)
        .into_iter()
        .map(|r| (r.value.unwrap(), r.headers["sluice.error"].clone()))
        .collect()
}

/// Rows sorted by their JSON text.
fn sorted(mut rows: Vec<Value>) -> Vec<Value> {
    rows.sort_by_key(|r| r.to_string());
    rows
}

#[test]
fn rows_are_committed_at_checkpoints_and_refused_records_dead_lettered() {
    let (input, dlq) = (unique("dl-in"), unique("dl-dlq"));
    create_topics(&[&input, &dlq], 1);
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("lake/events");
    let yaml = to_delta(
        "delta-out",
        &input,
        &dlq,
        &dir.path().join("ckpt"),
        &table,
        ", partition_by: [kind], schema: [{ name: id, type: int64 }, { name: kind, type: string }, \
         { name: amount, type: float64, nullable: true }, { name: at, type: timestamp_ms, nullable: true }]",
    );
    let records = [
        r#"{"id": 1, "kind": "click", "amount": 2.5, "at": "2024-05-01T12:00:00.250Z"}"#,
        r#"{"id": 2, "kind": "view", "extra": [1, 2]}"#,
        r#"{"id": "3", "kind": "view", "amount": 1}"#,
        r#"{"id": 4, "kind": "click", "amount": "lots"}"#,
        r#"not json"#,
        r#"{"id": 6, "kind": "view", "amount": 7, "at": 1714564800000}"#,
        r#"{"kind": "click"}"#,
    ];
    let pairs: Vec<(&str, &str)> = records.iter().map(|r| ("k", *r)).collect();
    produce(&input, &pairs);
    let summary = run_until_caught_up(&spec(&yaml));
    assert_eq!(summary.records_in, 7);
    assert_eq!(summary.dead_lettered, 4);
    let stats = &summary.delta["default"];
    assert_eq!((stats.rows_written, stats.rows_refused), (3, 4));
    assert_eq!(stats.table_version, stats.commits, "version 0 created it");

    let got = read_delta(&table);
    assert_eq!(
        sorted(got.rows),
        sorted(vec![
            json!({"id": 1, "kind": "click", "amount": 2.5, "at": "2024-05-01 12:00:00.250000+00:00"}),
            json!({"id": 2, "kind": "view", "amount": null, "at": null}),
            json!({"id": 6, "kind": "view", "amount": 7.0, "at": "2024-05-01 12:00:00+00:00"}),
        ])
    );
    let not_json = serde_json::from_str::<Value>(records[4]).unwrap_err();
    assert_eq!(
        dead_letters(&dlq),
        vec![
            (
                records[2].to_owned(),
                r#"delta: field "id": expected int64, got string"#.to_owned()
            ),
            (
                records[3].to_owned(),
                r#"delta: field "amount": expected float64, got string"#.to_owned()
            ),
            (
                records[4].to_owned(),
                format!("delta: not JSON: {not_json}")
            ),
            (
                records[6].to_owned(),
                r#"delta: field "id": missing (the column is not nullable)"#.to_owned()
            ),
        ]
    );
    // Partitioned as asked: a directory per kind.
    let mut parts: Vec<String> = std::fs::read_dir(&table)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('_'))
        .collect();
    parts.sort();
    assert_eq!(parts, ["kind=click", "kind=view"]);
}

#[test]
fn a_table_made_from_the_first_record_is_evolved_by_a_nullable_column_of_the_spec() {
    let (input, dlq) = (unique("dl-ev-in"), unique("dl-ev-dlq"));
    create_topics(&[&input, &dlq], 1);
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, table) = (dir.path().join("ckpt"), dir.path().join("t"));
    produce(
        &input,
        &[
            ("k", r#"[1, 2]"#),
            ("k", r#"{"id": 1, "name": "a", "tags": [1]}"#),
            ("k", r#"{"id": 2, "name": "b"}"#),
        ],
    );
    let first = to_delta("delta-ev", &input, &dlq, &ckpt, &table, "");
    run_until_caught_up(&spec(&first));
    assert_eq!(
        dead_letters(&dlq),
        vec![(
            "[1, 2]".to_owned(),
            "delta: expected a JSON object, got array".to_owned()
        )]
    );

    // A new nullable column in the spec is added to the table.
    let schema = ", schema: [{ name: id, type: int64 }, { name: name, type: string, nullable: true }, \
                  { name: score, type: float64, nullable: true }]";
    produce(&input, &[("k", r#"{"id": 3, "score": 0.5}"#)]);
    let second = to_delta("delta-ev", &input, &dlq, &ckpt, &table, schema);
    run_until_caught_up(&spec(&second));
    assert_eq!(
        sorted(read_delta(&table).rows),
        sorted(vec![
            json!({"id": 1, "name": "a", "score": null}),
            json!({"id": 2, "name": "b", "score": null}),
            json!({"id": 3, "name": null, "score": 0.5}),
        ])
    );

    // One that cannot be added, or that contradicts the table: refused
    // with the column named, before anything is read.
    let refused = [
        (
            ", schema: [{ name: id, type: int64 }, { name: level, type: int64 }]",
            "schema: column \"level\" is not in the table; a column added to an existing table \
             must be nullable",
        ),
        (
            ", schema: [{ name: id, type: string }]",
            "schema: column \"id\" is string in the spec but long in the table",
        ),
    ];
    for (schema, want) in refused {
        let yaml = to_delta("delta-ev", &input, &dlq, &ckpt, &table, schema);
        let err = sluice::pipeline::run(
            &spec(&yaml),
            sluice::pipeline::RunOptions {
                until_caught_up: true,
            },
            &std::sync::atomic::AtomicBool::new(false),
        )
        .unwrap_err();
        // One partition: one task, on one worker.
        assert_eq!(
            format!("{err:#}"),
            format!("worker 0: task 0: outputs.default.delta: {want}")
        );
    }
}

#[test]
fn merges_keep_the_last_record_of_each_key() {
    let (input, dlq) = (unique("dl-mg-in"), unique("dl-mg-dlq"));
    create_topics(&[&input, &dlq], 1);
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, table) = (dir.path().join("ckpt"), dir.path().join("t"));
    let yaml = to_delta(
        "delta-merge",
        &input,
        &dlq,
        &ckpt,
        &table,
        ", mode: merge, key: [user, day], schema: [{ name: user, type: string }, \
         { name: day, type: int64 }, { name: total, type: int64 }]",
    );
    produce(
        &input,
        &[
            ("k", r#"{"user": "a", "day": 1, "total": 1}"#),
            ("k", r#"{"user": "b", "day": 1, "total": 5}"#),
            ("k", r#"{"user": "a", "day": 1, "total": 2}"#),
            ("k", r#"{"user": "a", "day": 2, "total": 7}"#),
        ],
    );
    run_until_caught_up(&spec(&yaml));
    produce(
        &input,
        &[
            ("k", r#"{"user": "b", "day": 1, "total": 6}"#),
            ("k", r#"{"user": "c", "day": 1, "total": 1}"#),
            ("k", r#"{"user": "a", "day": 1, "total": 3}"#),
        ],
    );
    let second = run_until_caught_up(&spec(&yaml));
    assert_eq!(second.delta["default"].rows_written, 3);
    let got = read_delta(&table);
    assert_eq!(
        sorted(got.rows),
        sorted(vec![
            json!({"user": "a", "day": 1, "total": 3}),
            json!({"user": "a", "day": 2, "total": 7}),
            json!({"user": "b", "day": 1, "total": 6}),
            json!({"user": "c", "day": 1, "total": 1}),
        ])
    );
}

#[test]
fn small_files_are_compacted_every_n_commits_and_keep_their_rows() {
    let (input, dlq) = (unique("dl-opt-in"), unique("dl-opt-dlq"));
    create_topics(&[&input, &dlq], 1);
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, table) = (dir.path().join("ckpt"), dir.path().join("t"));
    let yaml = to_delta(
        "delta-opt",
        &input,
        &dlq,
        &ckpt,
        &table,
        ", optimize_every: 1",
    );
    let mut want = Vec::new();
    for i in 0..3 {
        // A run, a commit of one new file, then the compaction.
        let value = format!(r#"{{"n": {i}}}"#);
        produce(&input, &[("k", &value)]);
        want.push(json!({ "n": i }));
        let summary = run_until_caught_up(&spec(&yaml));
        let stats = &summary.delta["default"];
        assert_eq!((stats.commits, stats.compactions), (1, 1));
    }
    let got = read_delta(&table);
    assert_eq!(sorted(got.rows), want);
    assert_eq!(got.files, 1, "three appends compacted into one file");
}

#[test]
fn validate_reports_the_table_it_writes_or_creates() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("lake/t");
    let yaml = |delta: &str| {
        format!(
            "name: v\nkafka: {{ brokers: \"127.0.0.1:1\" }}\nsource: {{ topics: [i] }}\n\
             outputs:\n  default:\n    delta: {{ path: {}{delta} }}\ndead_letter: {{ topic: d }}\n\
             checkpoint: {{ dir: {} }}\n",
            table.display(),
            dir.path().join("ckpt").display()
        )
    };
    let validate = |yaml: &str| {
        let file = dir.path().join("p.yaml");
        std::fs::write(&file, yaml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("validate")
            .arg(&file)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let schema = ", schema: [{ name: id, type: int64 }]";
    let (ok, out) = validate(&yaml(schema));
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "  output default: creates the table {} (id int64) in {}\n",
            table.display(),
            dir.path().display()
        )),
        "{out}"
    );
    assert!(!table.exists(), "validate creates nothing");

    let (input, dlq) = (unique("dl-v-in"), unique("dl-v-dlq"));
    create_topics(&[&input, &dlq], 1);
    produce(&input, &[("k", r#"{"id": 1}"#)]);
    run_until_caught_up(&spec(&to_delta(
        "delta-v",
        &input,
        &dlq,
        &dir.path().join("ckpt"),
        &table,
        schema,
    )));
    let (ok, out) = validate(&yaml(
        ", schema: [{ name: id, type: int64 }, { name: note, type: string, nullable: true }]",
    ));
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "  output default: writes the table {} at version 1 (id int64), adding note string\n",
            table.display()
        )),
        "{out}"
    );
    let (ok, out) = validate(&yaml(", schema: [{ name: id, type: bool }]"));
    assert!(!ok);
    assert!(
        out.contains(
            "outputs.default.delta: schema: column \"id\" is bool in the spec but long in the table"
        ),
        "{out}"
    );
}

/// The demo's `windows-delta.yaml` (update-mode window results merged on
/// window and event type, four tasks committing to one table) leaves in
/// its table exactly the final results of the append-mode `windows.yaml`
/// over the same events (for the windows append mode closed).
#[test]
fn the_demos_merged_windows_equal_the_final_append_results() {
    let (input, results, dlq) = (
        unique("dl-demo-in"),
        unique("dl-demo-out"),
        unique("dl-demo-dlq"),
    );
    create_topics(&[&input, &results, &dlq], 4);
    let o = SampleOptions {
        count: 5_000,
        users: 50,
        ..SampleOptions::default()
    };
    kafka_tools::produce_sample(brokers(), &input, &o).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let place = DemoPlace {
        input: &input,
        results: &results,
        dlq: &dlq,
        dir: dir.path(),
    };
    let adapt = |file: &str, name: &str| demo_spec(file, name, &place, &[]);
    run_until_caught_up(&adapt("windows-delta.yaml", "merged"));
    run_until_caught_up(&adapt("windows.yaml", "appended"));
    let row = |start: &str, v: &Value| {
        format!(
            "{start}|{}|{}|{}",
            v["event_type"].as_str().unwrap(),
            v["count"],
            v["unique_users"]
        )
    };
    let mut want: Vec<String> = read(&results)
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_str(r.value.as_deref().unwrap()).unwrap();
            let start = humantime::parse_rfc3339(v["window_start"].as_str().unwrap()).unwrap();
            row(&humantime::format_rfc3339(start).to_string(), &v)
        })
        .collect();
    want.sort();
    let table = read_delta(&dir.path().join("merged/lake/events_per_minute"));
    let mut got: Vec<String> = table
        .rows
        .iter()
        .map(|v| {
            // "2024-05-01 12:00:00+00:00" -> RFC 3339.
            let start = v["window_start"].as_str().unwrap().replace(' ', "T");
            let start = humantime::parse_rfc3339_weak(start.trim_end_matches("+00:00")).unwrap();
            row(&humantime::format_rfc3339(start).to_string(), v)
        })
        .collect();
    got.sort();
    assert!(want.len() > 30, "{} window results", want.len());
    // Update mode also merged the windows still open at the end, which
    // append mode has not emitted yet.
    let last_closed = want
        .iter()
        .map(|w| w.split('|').next().unwrap().to_owned())
        .max()
        .unwrap();
    got.retain(|g| g.split('|').next().unwrap() <= last_closed.as_str());
    assert_eq!(got, want);
}

/// A table in S3-compatible object storage (a real s3s-fs server), next to
/// the pipeline's checkpoints there and reached with the same settings:
/// exactly-once runs commit to it, and the independent reader finds the
/// rows in the bucket's files.
#[test]
fn a_table_in_object_storage_is_written_with_the_checkpoints_settings() {
    let (input, dlq) = (unique("dl-s3-in"), unique("dl-s3-dlq"));
    create_topics(&[&input, &dlq], 2);
    let prefix = unique("dl-s3");
    let url = |p: &str| format!("s3://{}/{prefix}/{p}", S3::BUCKET);
    let yaml = format!(
        r#"name: delta-s3
kafka: {{ brokers: "{brokers}" }}
source: {{ topics: [{input}] }}
outputs:
  default:
    delta: {{ path: "{table}", schema: [{{ name: id, type: int64 }}] }}
dead_letter: {{ topic: {dlq} }}
checkpoint:
  dir: "{ckpt}"
  interval: 100ms
  s3: {{ endpoint: "{endpoint}", region: us-east-1, allow_http: true }}
delivery: exactly-once
"#,
        brokers = brokers(),
        table = url("lake/t"),
        ckpt = url("ckpt"),
        endpoint = s3().endpoint,
    );
    let mut spec = spec(&yaml);
    spec.checkpoint.as_mut().unwrap().s3.credentials =
        Some((S3::ACCESS_KEY.into(), S3::SECRET_KEY.into()));
    produce(
        &input,
        &[
            ("a", r#"{"id": 1}"#),
            ("b", r#"{"id": "2"}"#),
            ("c", r#"{"id": 3}"#),
        ],
    );
    let first = run_until_caught_up(&spec);
    assert_eq!(first.delta["default"].rows_written, 2);
    produce(&input, &[("d", r#"{"id": 4}"#)]);
    let second = run_until_caught_up(&spec);
    assert_eq!(second.delta["default"].rows_written, 1);
    let table = read_delta(&s3().bucket_dir().join(&prefix).join("lake/t"));
    assert_eq!(
        sorted(table.rows),
        vec![json!({"id": 1}), json!({"id": 3}), json!({"id": 4})]
    );
    assert_eq!(
        dead_letters(&dlq),
        vec![(
            r#"{"id": "2"}"#.to_owned(),
            r#"delta: field "id": expected int64, got string"#.to_owned()
        )]
    );
}
