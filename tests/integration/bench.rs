//! `sluice-bench`, the end-to-end benchmark, on a small input through the
//! real broker: its command line, every row and the latency phase, the
//! host-alone memory through the `sluice` binary, and its JSON report.

use clap::Parser;
use serde_json::Value;
use sluice_tests::kafka_tools::{SampleOptions, sample_record};
use sluice_tests::{brokers, guest};

/// Records of the small input both tests run on.
const RECORDS: u64 = 2000;

/// `sluice-bench` on `RECORDS` records of 50 users through the test broker,
/// with the test guests and the `sluice` binary, writing `json`, plus `args`.
fn run_bench(json: &std::path::Path, args: &[&str]) {
    let modules = guest("filter-heartbeats");
    let records = RECORDS.to_string();
    let mut argv = vec![
        "sluice-bench",
        "--brokers",
        brokers(),
        "--records",
        &records,
        "--users",
        "50",
        "--modules",
        modules.parent().unwrap().to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--sluice",
        env!("CARGO_BIN_EXE_sluice"),
    ];
    argv.extend_from_slice(args);
    let cli = sluice_bench::Cli::try_parse_from(argv).unwrap();
    sluice_bench::run(&cli.args).unwrap();
}

#[test]
fn the_bench_runs_every_row_on_a_small_input() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("e2e.json");
    run_bench(
        &json,
        &[
            "--partitions",
            "2",
            "--latency-rate",
            "500",
            "--latency-seconds",
            "1",
        ],
    );

    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "raw passthrough",
            "filter-heartbeats",
            "event-window-agg",
            "raw passthrough",
            "strategy-map",
            "strategy-map exactly-once",
        ]
    );
    for row in rows {
        assert_eq!(row["records"], RECORDS, "{}", row["name"]);
        assert_eq!(row["dead_lettered"], 0, "{}", row["name"]);
    }
    let options = SampleOptions {
        count: RECORDS,
        users: 50,
        ..Default::default()
    };
    let heartbeats = (0..RECORDS)
        .filter(|&n| {
            let event: Value = serde_json::from_slice(&sample_record(&options, n).1).unwrap();
            event["event_type"] == "heartbeat"
        })
        .count() as u64;
    let outputs: Vec<u64> = rows
        .iter()
        .map(|r| r["outputs"].as_u64().unwrap())
        .collect();
    assert_eq!(outputs[0], RECORDS);
    assert_eq!(outputs[1], RECORDS - heartbeats);
    assert_eq!(outputs[3..], [RECORDS, RECORDS, RECORDS]);
    // The host alone (a `sluice run` process) is measured for the
    // at-least-once pipelines.
    let alone: Vec<bool> = rows.iter().map(|r| r["host_rss_mib"].is_f64()).collect();
    assert_eq!(alone, [false, true, true, false, true, false]);
    assert!(
        report["latency"]["end_to_end"]["measured"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[test]
fn the_scaling_table_runs_each_pipeline_at_each_worker_count() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("scaling.json");
    run_bench(&json, &["--partitions", "4", "--scaling", "1,2"]);
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let points: Vec<(&str, u64, u64)> = report["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["pipeline"].as_str().unwrap(),
                p["workers"].as_u64().unwrap(),
                p["records"].as_u64().unwrap(),
            )
        })
        .collect();
    let pipelines = [
        "filter-heartbeats",
        "window 1m per user (count-sum)",
        "strategy-map",
        "strategy-map exactly-once",
    ];
    let expected: Vec<(&str, u64, u64)> = pipelines
        .iter()
        .flat_map(|&p| [(p, 1, RECORDS), (p, 2, RECORDS)])
        .collect();
    assert_eq!(points, expected);
    // Each point's speedup is its rate over its pipeline's one-worker rate.
    for pair in report["points"].as_array().unwrap().chunks(2) {
        let rate = |p: &Value| p["records_per_s"].as_f64().unwrap();
        assert!(rate(&pair[0]) > 0.0 && rate(&pair[1]) > 0.0, "{pair:?}");
        assert_eq!(pair[0]["speedup"].as_f64(), Some(1.0));
        // A float read back from JSON may differ in its last bit.
        let speedup = pair[1]["speedup"].as_f64().unwrap();
        let want = rate(&pair[1]) / rate(&pair[0]);
        assert!(
            (speedup - want).abs() <= want * 1e-12,
            "{speedup} != {want}"
        );
    }
}

/// `--postgres URL`: the sample events through filter-heartbeats into a
/// table, at-least-once and exactly-once; each table holds every event that
/// is not a heartbeat, once.
#[test]
fn the_postgres_rows_write_every_event_but_heartbeats_once() {
    let pg = sluice_tests::postgres::postgres();
    let dir = tempfile::tempdir().unwrap();
    let (rows, ids) = table_rows(
        &dir.path().join("postgres.json"),
        &["--postgres", &pg.url()],
    );
    let events = ids.len();
    for r in rows {
        let table = r["table"].as_str().unwrap();
        let counts = pg
            .psql(&format!(
                "SELECT count(*), count(DISTINCT event_id) FROM {table}"
            ))
            .unwrap();
        assert_eq!(counts, format!("{events}|{events}\n"));
    }
}

/// `--delta DIR`: the sample events through filter-heartbeats into a Delta
/// table, at-least-once and exactly-once; each table, read with the Python
/// `deltalake` package, holds every event that is not a heartbeat, once.
#[test]
fn the_delta_rows_write_every_event_but_heartbeats_once() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake").display().to_string();
    let (rows, want) = table_rows(&dir.path().join("delta.json"), &["--delta", &lake]);
    for r in rows {
        let table = sluice_tests::read_delta(std::path::Path::new(r["table"].as_str().unwrap()));
        let mut ids: Vec<String> = table
            .rows
            .iter()
            .map(|row| row["event_id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        assert_eq!(ids, want);
    }
}

/// Runs the bench's table rows (`args`, over two partitions) into `json`
/// and checks that each row, at-least-once then exactly-once, wrote every
/// sample event but the heartbeats. Returns the rows and those events'
/// ids, sorted.
fn table_rows(json: &std::path::Path, args: &[&str]) -> (Vec<Value>, Vec<String>) {
    let mut all = vec!["--partitions", "2"];
    all.extend_from_slice(args);
    run_bench(json, &all);
    let report: Value = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    let o = SampleOptions {
        count: RECORDS,
        users: 50,
        ..SampleOptions::default()
    };
    let mut want: Vec<String> = (0..RECORDS)
        .filter_map(|i| {
            let v: Value = serde_json::from_slice(&sample_record(&o, i).1).unwrap();
            (v["event_type"] != "heartbeat").then(|| v["event_id"].as_str().unwrap().to_owned())
        })
        .collect();
    want.sort();
    let rows = report["rows"].as_array().unwrap().clone();
    let got: Vec<(&str, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["delivery"].as_str().unwrap(),
                r["rows_written"].as_u64().unwrap(),
            )
        })
        .collect();
    let n = want.len() as u64;
    assert_eq!(got, [("at-least-once", n), ("exactly-once", n)]);
    (rows, want)
}
