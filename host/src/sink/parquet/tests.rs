use std::fs::File;
use std::path::Path;
use std::time::Duration;

use ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, TimestampMillisecondType};
use serde_json::{Value, json};

use super::file::ROWS_PER_BATCH;
use super::*;
use crate::sink::TableRecord;
use crate::spec::parquet::{ColumnType, ParquetSpec, PartitionBy};

/// 2024-05-01T13:20:00Z
const T0: i64 = 1_714_569_600_000;

fn spec(dir: &Path, yaml: &str) -> ParquetSpec {
    let yaml = format!("path: {}\n{yaml}", dir.display());
    serde_yaml_ng::from_str(&yaml).unwrap()
}

const SCHEMA: &str = r#"
schema:
  - { name: user, type: string }
  - { name: amount, type: float64, nullable: true }
  - { name: count, type: int64 }
  - { name: ok, type: bool, nullable: true }
  - { name: ts, type: timestamp_ms, nullable: true }
"#;

fn rec(index: u32, value: &str) -> TableRecord<'_> {
    TableRecord {
        index,
        value: Some(value.as_bytes()),
        timestamp: None,
        window_start: None,
    }
}

fn recs(values: &[String]) -> Vec<TableRecord<'_>> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| rec(i as u32, v))
        .collect()
}

/// Every file below `dir`, relative, sorted (dot-files included).
fn files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The rows of a Parquet file as JSON objects (timestamps as ms).
fn rows(path: &Path) -> Vec<Value> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        for i in 0..batch.num_rows() {
            let mut row = serde_json::Map::new();
            for (field, col) in batch.schema().fields().iter().zip(batch.columns()) {
                let v = if col.is_null(i) {
                    Value::Null
                } else {
                    match field.data_type() {
                        DataType::Utf8 => json!(col.as_string::<i32>().value(i)),
                        DataType::Int64 => json!(col.as_primitive::<Int64Type>().value(i)),
                        DataType::Float64 => json!(col.as_primitive::<Float64Type>().value(i)),
                        DataType::Boolean => json!(col.as_boolean().value(i)),
                        DataType::Timestamp(TimeUnit::Millisecond, _) => {
                            json!(col.as_primitive::<TimestampMillisecondType>().value(i))
                        }
                        other => panic!("unexpected column type {other}"),
                    }
                };
                row.insert(field.name().clone(), v);
            }
            out.push(Value::Object(row));
        }
    }
    out
}

/// `(name, type, nullable)` of each column of a Parquet file, as Arrow reads it.
fn columns(path: &Path) -> Vec<(String, DataType, bool)> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
    builder
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable()))
        .collect()
}

/// Writes, prepares and commits, as a checkpoint would.
fn checkpoint(sink: &mut ParquetSink) -> ParquetCommit {
    let c = sink.prepare_commit().unwrap();
    sink.commit(&c).unwrap();
    c
}

#[test]
fn explicit_schema_writes_typed_columns() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = ParquetSink::open("out", &spec(dir.path(), SCHEMA), None).unwrap();
    let values = [
        r#"{"user":"ann","amount":1.5,"count":3,"ok":true,"ts":1714569600000,"extra":[1]}"#,
        r#"{"count":-7,"user":"bob","amount":2,"ts":"2024-05-01T15:20:00.250+02:00"}"#,
        r#"{"user":"cy","amount":null,"count":0,"ok":false}"#,
    ]
    .map(String::from);
    assert_eq!(sink.write(1, &recs(&values)).unwrap(), vec![]);
    checkpoint(&mut sink);

    assert_eq!(files(dir.path()), ["part-000000000001-0000.parquet"]);
    let path = dir.path().join("part-000000000001-0000.parquet");
    assert_eq!(
        columns(&path),
        [
            ("user".to_owned(), DataType::Utf8, false),
            ("amount".to_owned(), DataType::Float64, true),
            ("count".to_owned(), DataType::Int64, false),
            ("ok".to_owned(), DataType::Boolean, true),
            (
                "ts".to_owned(),
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true
            ),
        ]
    );
    assert_eq!(
        rows(&path),
        [
            json!({"user": "ann", "amount": 1.5, "count": 3, "ok": true, "ts": T0}),
            json!({"user": "bob", "amount": 2.0, "count": -7, "ok": null, "ts": T0 + 250}),
            json!({"user": "cy", "amount": null, "count": 0, "ok": false, "ts": null}),
        ]
    );
}

#[test]
fn records_that_do_not_fit_are_refused_with_a_reason_and_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = ParquetSink::open("out", &spec(dir.path(), SCHEMA), None).unwrap();
    let values = [
        r#"{"user":"ok","count":1}"#,
        "not json",
        "[1,2]",
        r#"{"count":1}"#,
        r#"{"user":"a","count":1,"amount":"12.5"}"#,
        r#"{"user":"a","count":1.5}"#,
        r#"{"user":"a","count":18446744073709551615}"#,
        r#"{"user":"a","count":1,"ts":"yesterday"}"#,
        r#"{"user":null,"count":1}"#,
        r#"{"user":"a","count":1,"ok":"true"}"#,
        r#"{"user":"ok2","count":2,"ts":"2024-05-01T13:20:00Z"}"#,
    ]
    .map(String::from);
    let mut records = recs(&values);
    records.push(TableRecord {
        index: 11,
        value: None,
        timestamp: None,
        window_start: None,
    });
    let rejected = sink.write(1, &records).unwrap();
    let not_json = serde_json::from_str::<Value>("not json").unwrap_err();
    assert_eq!(
        rejected,
        [
            (1, format!("parquet: not JSON: {not_json}")),
            (2, "parquet: expected a JSON object, got array".to_owned()),
            (3, "parquet: field \"user\": missing (the column is not nullable)".to_owned()),
            (4, "parquet: field \"amount\": expected float64, got string".to_owned()),
            (5, "parquet: field \"count\": expected int64, got float".to_owned()),
            (6, "parquet: field \"count\": expected int64, got an integer out of its range".to_owned()),
            (
                7,
                "parquet: field \"ts\": expected timestamp_ms (integer milliseconds or an RFC 3339 string), \
                 got a string that is not RFC 3339"
                    .to_owned()
            ),
            (8, "parquet: field \"user\": expected string, got null".to_owned()),
            (9, "parquet: field \"ok\": expected bool, got string".to_owned()),
            (11, "parquet: the record has no value".to_owned()),
        ]
    );
    checkpoint(&mut sink);
    assert_eq!(
        rows(&dir.path().join("part-000000000001-0000.parquet")),
        [
            json!({"user": "ok", "amount": null, "count": 1, "ok": null, "ts": null}),
            json!({"user": "ok2", "amount": null, "count": 2, "ok": null, "ts": T0}),
        ]
    );
}

#[test]
fn a_batch_of_only_refused_records_makes_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = ParquetSink::open("out", &spec(dir.path(), SCHEMA), None).unwrap();
    let values = ["{}".to_owned()];
    assert_eq!(sink.write(1, &recs(&values)).unwrap().len(), 1);
    assert_eq!(checkpoint(&mut sink), ParquetCommit::default());
    assert_eq!(files(dir.path()), Vec::<String>::new());
}

#[test]
fn schema_is_inferred_from_the_first_object_then_fixed_and_checkpointed() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path(), "");
    let mut sink = ParquetSink::open("out", &spec, None).unwrap();
    assert_eq!(sink.schema(), None);
    let values = [
        "[1]",
        r#"{"n":null}"#,
        r#"{"b":"x","a":1,"c":1.5,"d":true,"n":null,"o":{"k":1},"l":[1]}"#,
        r#"{"a":"2"}"#,
        r#"{"c":2,"z":"ignored"}"#,
    ]
    .map(String::from);
    let rejected = sink.write(1, &recs(&values)).unwrap();
    assert_eq!(
        rejected,
        [
            (0, "parquet: expected a JSON object, got array".to_owned()),
            (
                1,
                "parquet: cannot infer the schema: the record has no string, number or bool field"
                    .to_owned()
            ),
            (
                3,
                "parquet: field \"a\": expected int64, got string".to_owned()
            ),
        ]
    );
    let inferred = vec![
        ColumnSpec {
            name: "b".into(),
            ty: ColumnType::String,
            nullable: true,
        },
        ColumnSpec {
            name: "a".into(),
            ty: ColumnType::Int64,
            nullable: true,
        },
        ColumnSpec {
            name: "c".into(),
            ty: ColumnType::Float64,
            nullable: true,
        },
        ColumnSpec {
            name: "d".into(),
            ty: ColumnType::Bool,
            nullable: true,
        },
    ];
    assert_eq!(sink.schema(), Some(inferred.as_slice()));
    let commit = checkpoint(&mut sink);
    assert_eq!(commit.schema.as_ref(), Some(&inferred));
    assert_eq!(
        rows(&dir.path().join("part-000000000001-0000.parquet")),
        [
            json!({"b": "x", "a": 1, "c": 1.5, "d": true}),
            json!({"b": null, "a": null, "c": 2.0, "d": null}),
        ]
    );

    // A restart keeps the schema, whatever the next first record is.
    let mut sink = ParquetSink::open("out", &spec, Some(&commit)).unwrap();
    assert_eq!(sink.schema(), Some(inferred.as_slice()));
    let values = [r#"{"a":"now a string"}"#.to_owned()];
    assert_eq!(
        sink.write(2, &recs(&values)).unwrap(),
        [(
            0,
            "parquet: field \"a\": expected int64, got string".to_owned()
        )]
    );
}

#[test]
fn partition_by_field_makes_hive_directories() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "schema: [{ name: event_type, type: string, nullable: true }, { name: n, type: int64 }]\n\
                partition_by: { field: event_type }\n";
    let mut sink = ParquetSink::open("out", &spec(dir.path(), yaml), None).unwrap();
    let values = [
        r#"{"event_type":"click","n":1}"#,
        r#"{"event_type":"a/b c=%","n":2}"#,
        r#"{"n":3}"#,
        r#"{"event_type":"","n":4}"#,
        r#"{"event_type":"click","n":5}"#,
        r#"{"event_type":"é","n":6}"#,
    ]
    .map(String::from);
    assert_eq!(sink.write(7, &recs(&values)).unwrap(), vec![]);
    checkpoint(&mut sink);
    assert_eq!(
        files(dir.path()),
        [
            "event_type=__HIVE_DEFAULT_PARTITION__/part-000000000007-0000.parquet",
            "event_type=a%2Fb%20c%3D%25/part-000000000007-0000.parquet",
            "event_type=click/part-000000000007-0000.parquet",
            "event_type=é/part-000000000007-0000.parquet",
        ]
    );
    let click = rows(
        &dir.path()
            .join("event_type=click/part-000000000007-0000.parquet"),
    );
    assert_eq!(
        click,
        [
            json!({"event_type": "click", "n": 1}),
            json!({"event_type": "click", "n": 5})
        ]
    );
    let default = rows(
        &dir.path()
            .join("event_type=__HIVE_DEFAULT_PARTITION__/part-000000000007-0000.parquet"),
    );
    assert_eq!(
        default,
        [
            json!({"event_type": null, "n": 3}),
            json!({"event_type": "", "n": 4})
        ]
    );
}

#[test]
fn partition_by_time_uses_the_window_start_or_else_the_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "schema: [{ name: k, type: string }]\n\
                partition_by: { field: k, time: \"date=%Y-%m-%d/hour=%H\" }\n";
    let mut sink = ParquetSink::open("out", &spec(dir.path(), yaml), None).unwrap();
    let v = r#"{"k":"a"}"#;
    let at = |index, window_start, timestamp| TableRecord {
        index,
        value: Some(v.as_bytes()),
        timestamp,
        window_start,
    };
    let records = [
        // Window start wins over the timestamp.
        at(0, Some(T0), Some(T0 + 86_400_000)),
        at(1, None, Some(1_714_607_999_999)), // 2024-05-01T23:59:59.999Z
        at(2, None, Some(1_714_608_000_000)), // 2024-05-02T00:00:00Z
        at(3, None, None),
    ];
    assert_eq!(
        sink.write(1, &records).unwrap(),
        [(
            3,
            "parquet: the record has no window start or timestamp to partition by time".to_owned()
        )]
    );
    checkpoint(&mut sink);
    assert_eq!(
        files(dir.path()),
        [
            "k=a/date=2024-05-01/hour=13/part-000000000001-0000.parquet",
            "k=a/date=2024-05-01/hour=23/part-000000000001-0000.parquet",
            "k=a/date=2024-05-02/hour=00/part-000000000001-0000.parquet",
        ]
    );
}

#[test]
fn files_roll_by_size_with_deterministic_names() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "schema: [{ name: n, type: int64 }]\nmax_file_size: 1B\n";
    let mut sink = ParquetSink::open("out", &spec(dir.path(), yaml), None).unwrap();
    // More rows than one record batch: the size is checked after each.
    let many: Vec<String> = (0..ROWS_PER_BATCH as i64 + 1)
        .map(|n| format!(r#"{{"n":{n}}}"#))
        .collect();
    sink.write(1, &recs(&many)).unwrap();
    let two = [r#"{"n":-1}"#, r#"{"n":-2}"#].map(String::from);
    sink.write(2, &recs(&two)).unwrap();
    // Rolled files are closed but stay invisible until the commit.
    assert_eq!(
        files(dir.path()),
        [
            ".part-000000000001-0000.parquet.inprogress",
            ".part-000000000001-0001.parquet.inprogress",
            ".part-000000000002-0000.parquet.inprogress",
        ]
    );
    checkpoint(&mut sink);
    let first = rows(&dir.path().join("part-000000000001-0000.parquet"));
    assert_eq!(first.len(), ROWS_PER_BATCH);
    assert_eq!(
        (first[0].clone(), first[ROWS_PER_BATCH - 1].clone()),
        (json!({"n": 0}), json!({"n": 8191}))
    );
    assert_eq!(
        rows(&dir.path().join("part-000000000001-0001.parquet")),
        [json!({"n": 8192})]
    );
    assert_eq!(
        rows(&dir.path().join("part-000000000002-0000.parquet")),
        [json!({"n": -1}), json!({"n": -2})]
    );
}

#[test]
fn a_file_spans_epochs_until_it_is_big_enough_or_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "schema: [{ name: n, type: int64 }]\n";
    let mut sink = ParquetSink::open("out", &spec(dir.path(), yaml), None).unwrap();
    for epoch in 1..=3 {
        let v = [format!(r#"{{"n":{epoch}}}"#)];
        sink.write(epoch, &recs(&v)).unwrap();
    }
    checkpoint(&mut sink);
    let v = [r#"{"n":4}"#.to_owned()];
    sink.write(4, &recs(&v)).unwrap();
    checkpoint(&mut sink);
    assert_eq!(
        files(dir.path()),
        [
            "part-000000000001-0000.parquet",
            "part-000000000004-0000.parquet"
        ]
    );
    assert_eq!(
        rows(&dir.path().join("part-000000000001-0000.parquet")),
        [json!({"n": 1}), json!({"n": 2}), json!({"n": 3})]
    );
}

#[test]
fn files_are_invisible_until_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = ParquetSink::open("out", &spec(dir.path(), SCHEMA), None).unwrap();
    let v = [r#"{"user":"a","count":1}"#.to_owned()];
    sink.write(1, &recs(&v)).unwrap();
    assert_eq!(
        files(dir.path()),
        [".part-000000000001-0000.parquet.inprogress"]
    );
    let commit = sink.prepare_commit().unwrap();
    assert_eq!(
        commit,
        ParquetCommit {
            files: vec![FileRename {
                from: ".part-000000000001-0000.parquet.inprogress".into(),
                to: "part-000000000001-0000.parquet".into(),
            }],
            schema: None,
        }
    );
    // Closed and complete, still under its temp name.
    assert_eq!(
        files(dir.path()),
        [".part-000000000001-0000.parquet.inprogress"]
    );
    assert_eq!(rows(&dir.path().join(&commit.files[0].from)).len(), 1);
    sink.commit(&commit).unwrap();
    assert_eq!(files(dir.path()), ["part-000000000001-0000.parquet"]);
}

#[test]
fn commit_is_idempotent_and_a_vanished_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = ParquetSink::open("out", &spec(dir.path(), SCHEMA), None).unwrap();
    let v = [r#"{"user":"a","count":1}"#.to_owned()];
    sink.write(1, &recs(&v)).unwrap();
    let commit = sink.prepare_commit().unwrap();
    sink.commit(&commit).unwrap();
    sink.commit(&commit).unwrap();
    assert_eq!(files(dir.path()), ["part-000000000001-0000.parquet"]);
    // Nothing left to publish.
    assert_eq!(sink.prepare_commit().unwrap(), ParquetCommit::default());

    std::fs::remove_file(dir.path().join("part-000000000001-0000.parquet")).unwrap();
    let err = sink.commit(&commit).unwrap_err();
    assert!(matches!(err, ParquetError::Missing { .. }), "{err}");
}

#[test]
fn a_commit_not_confirmed_is_repeated_by_the_next_prepare() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "schema: [{ name: n, type: int64 }]\n";
    let mut sink = ParquetSink::open("out", &spec(dir.path(), yaml), None).unwrap();
    sink.write(1, &recs(&[r#"{"n":1}"#.to_owned()])).unwrap();
    let first = sink.prepare_commit().unwrap();
    sink.write(2, &recs(&[r#"{"n":2}"#.to_owned()])).unwrap();
    let second = sink.prepare_commit().unwrap();
    assert_eq!(
        second.files,
        [first.files[0].clone(), FileRename::new("", 2, 0)]
    );
    sink.commit(&second).unwrap();
    assert_eq!(
        files(dir.path()),
        [
            "part-000000000001-0000.parquet",
            "part-000000000002-0000.parquet"
        ]
    );
}

#[test]
fn open_finishes_the_recovered_renames_and_deletes_other_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "schema: [{ name: k, type: string }]\npartition_by: { field: k }\n";
    let spec = spec(dir.path(), yaml);
    let mut sink = ParquetSink::open("out", &spec, None).unwrap();
    let values = [r#"{"k":"a"}"#, r#"{"k":"b"}"#].map(String::from);
    sink.write(1, &recs(&values)).unwrap();
    // The checkpoint holding this commit is durable; the process dies after
    // publishing one of its two files, and after writing epoch 2.
    let commit = sink.prepare_commit().unwrap();
    sink.commit(&ParquetCommit {
        files: commit.files[..1].to_vec(),
        schema: None,
    })
    .unwrap();
    let values = [r#"{"k":"b"}"#, r#"{"k":"c"}"#].map(String::from);
    sink.write(2, &recs(&values)).unwrap();
    sink.prepare_commit().unwrap();
    drop(sink);
    assert_eq!(
        files(dir.path()),
        [
            "k=a/part-000000000001-0000.parquet",
            "k=b/.part-000000000001-0000.parquet.inprogress",
            "k=b/.part-000000000002-0000.parquet.inprogress",
            "k=c/.part-000000000002-0000.parquet.inprogress",
        ]
    );
    // Not ours: left alone.
    std::fs::write(dir.path().join(".keep"), b"").unwrap();

    let mut sink = ParquetSink::open("out", &spec, Some(&commit)).unwrap();
    assert_eq!(
        files(dir.path()),
        [
            ".keep",
            "k=a/part-000000000001-0000.parquet",
            "k=b/part-000000000001-0000.parquet",
        ]
    );
    assert!(
        !dir.path().join("k=c").exists(),
        "an emptied partition directory is removed"
    );
    assert_eq!(
        rows(&dir.path().join("k=b/part-000000000001-0000.parquet")),
        [json!({"k": "b"})]
    );

    // The replay of epoch 2 writes the same names again.
    sink.write(2, &recs(&values)).unwrap();
    checkpoint(&mut sink);
    assert_eq!(
        files(dir.path()),
        [
            ".keep",
            "k=a/part-000000000001-0000.parquet",
            "k=b/part-000000000001-0000.parquet",
            "k=b/part-000000000002-0000.parquet",
            "k=c/part-000000000002-0000.parquet",
        ]
    );

    // Opening again with the same (already published) commit is harmless.
    drop(sink);
    ParquetSink::open("out", &spec, Some(&commit)).unwrap();
    assert_eq!(files(dir.path()).len(), 5);
}

#[test]
fn a_replay_of_the_same_epochs_overwrites_instead_of_duplicating() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "schema: [{ name: k, type: string }, { name: n, type: int64 }]\n\
                partition_by: { field: k }\nmax_file_size: 1B\n";
    let spec = spec(dir.path(), yaml);
    let epochs: Vec<Vec<String>> = (1..=3)
        .map(|e| {
            (0..3)
                .map(|i| format!(r#"{{"k":"{}","n":{}}}"#, ["x", "y"][i % 2], e * 10 + i))
                .collect()
        })
        .collect();
    let run = |recovered: Option<&ParquetCommit>| {
        let mut sink = ParquetSink::open("out", &spec, recovered).unwrap();
        for (e, values) in epochs.iter().enumerate() {
            sink.write(e as u64 + 1, &recs(values)).unwrap();
            if e == 1 {
                checkpoint(&mut sink);
            }
        }
        checkpoint(&mut sink);
    };
    let contents = |dir: &Path| -> Vec<(String, Vec<Value>)> {
        files(dir)
            .into_iter()
            .map(|f| (f.clone(), rows(&dir.join(&f))))
            .collect()
    };
    run(None);
    let first = contents(dir.path());
    assert_eq!(first.len(), 6, "{first:?}");
    // Falling back to a checkpoint from before epoch 1 replays everything.
    run(Some(&ParquetCommit::default()));
    assert_eq!(contents(dir.path()), first);
}

#[test]
fn epochs_must_not_go_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = ParquetSink::open("out", &spec(dir.path(), SCHEMA), None).unwrap();
    sink.write(5, &[]).unwrap();
    let err = sink.write(4, &[]).unwrap_err();
    assert_eq!(err.to_string(), "epoch 4 was written after epoch 5");
}

#[test]
fn a_commit_survives_the_checkpoint_encoding() {
    let commit = ParquetCommit {
        files: vec![FileRename::new("k=a/date=2024-05-01", 3, 1)],
        schema: Some(vec![ColumnSpec {
            name: "ts".into(),
            ty: ColumnType::TimestampMs,
            nullable: false,
        }]),
    };
    assert_eq!(
        commit.files[0],
        FileRename {
            from: "k=a/date=2024-05-01/.part-000000000003-0001.parquet.inprogress".into(),
            to: "k=a/date=2024-05-01/part-000000000003-0001.parquet".into(),
        }
    );
    let bytes = postcard::to_allocvec(&commit).unwrap();
    assert_eq!(
        postcard::from_bytes::<ParquetCommit>(&bytes).unwrap(),
        commit
    );
}

#[test]
fn a_commit_naming_a_path_outside_the_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let commit = ParquetCommit {
        files: vec![FileRename {
            from: "../x".into(),
            to: "part-x.parquet".into(),
        }],
        schema: None,
    };
    let err = ParquetSink::open("out", &spec(dir.path(), SCHEMA), Some(&commit)).unwrap_err();
    assert!(matches!(err, ParquetError::Spec(_)), "{err}");
}

#[test]
fn spec_defaults_and_yaml_shape() {
    let s = spec(
        Path::new("/tmp/x"),
        "partition_by: { time: \"date=%Y-%m-%d\" }\n",
    );
    assert_eq!(s.max_file_size, bytesize::ByteSize::mib(128));
    assert_eq!(s.max_file_age, Duration::from_secs(300));
    assert_eq!(
        s.partition_by,
        Some(PartitionBy {
            field: None,
            time: Some("date=%Y-%m-%d".into())
        })
    );
    assert_eq!(s.validate(), Ok(()));
    let unknown = "path: x\nschema: [{ name: a, type: string, size: 3 }]\n";
    assert!(serde_yaml_ng::from_str::<ParquetSpec>(unknown).is_err());
    let bad_type = "path: x\nschema: [{ name: a, type: decimal }]\n";
    assert!(serde_yaml_ng::from_str::<ParquetSpec>(bad_type).is_err());
}

#[test]
fn validate_names_the_field() {
    let dir = Path::new("/tmp/x");
    let check = |yaml: &str| spec(dir, yaml).validate().unwrap_err();
    assert_eq!(
        check("schema: []"),
        "schema: must list at least one column (or be left out to infer it)"
    );
    assert_eq!(
        check("schema: [{name: a, type: string}, {name: b, type: bool}, {name: a, type: int64}]"),
        "schema[2].name: duplicate column \"a\""
    );
    assert_eq!(
        check("schema: [{name: a, type: string}]\npartition_by: { field: b }"),
        "partition_by.field: \"b\" is not a column of the schema"
    );
    assert_eq!(
        check("partition_by: { field: _a }"),
        "partition_by.field: \"_a\" cannot name a directory (no leading `.` or `_`, no `/`, `\\` or `=`)"
    );
    assert_eq!(
        check("partition_by: { time: \"date=%Q\" }"),
        "partition_by.time: \"date=%Q\" is not a valid strftime pattern"
    );
    assert_eq!(
        check("partition_by: { time: \"%Y//%m\" }"),
        "partition_by.time: \"%Y//%m\" makes the directory \"1970//01\": each `/`-separated part \
         must be non-empty and not start with `.` or `_`"
    );
    assert_eq!(
        check("partition_by: {}"),
        "partition_by: needs `field`, `time`, or both"
    );
    assert_eq!(
        check("max_file_size: 0B"),
        "max_file_size: must be more than 0"
    );
    assert_eq!(
        check("max_file_age: 0s"),
        "max_file_age: must be more than 0"
    );
}
