//! Golden windowing tests: `tests/golden/<case>/input.jsonl` through the real
//! aggregate guests and the host's window engine, batch by batch with the
//! processing times the file gives, must produce exactly
//! `expected.jsonl` (results, with their final flag) and
//! `expected-dlq.jsonl` (late records with their reason). The expected files
//! come from `tests/golden/compute_expected.py`, an independent model.

use std::path::Path;

use serde_json::{Value, json};
use sluice::batch::Batch;
use sluice::pipeline::AggregateStep;
use sluice::runtime::{Aggregator, Labels, Runtime};
use sluice::spec::Limits;
use sluice_tests::guest;

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn run_case(name: &str, guest_name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden")
        .join(name);
    let mut window: sluice::spec::window::WindowSpec =
        serde_yaml_ng::from_str(&std::fs::read_to_string(dir.join("aggregate.yaml")).unwrap())
            .unwrap();
    // The files' processing times count from 0, their event times from
    // 2026: no horizon (it is tested through the broker in `windows`).
    window.watermark.max_ahead = std::time::Duration::MAX;
    let runtime = Runtime::new().unwrap();
    let module = runtime
        .load(guest_name, &std::fs::read(guest(guest_name)).unwrap())
        .unwrap();
    let labels = Labels {
        pipeline: "golden".into(),
        step: name.into(),
        module: guest_name.into(),
    };
    let aggregator = Aggregator::new(&module, labels, Limits::default(), vec![]).unwrap();
    let mut step = AggregateStep::new(aggregator, window).unwrap();

    let input = lines(&dir.join("input.jsonl"));
    let mut results = Vec::new();
    let mut dead = Vec::new();
    let mut next_offset = [0i64; 8];
    let mut i = 0;
    while i < input.len() {
        let batch_no = &input[i]["batch"];
        let now_ms = input[i]["now_ms"].as_i64().unwrap();
        let mut batch = Batch::with_capacity(16, 1024);
        let mut ids = Vec::new();
        while i < input.len() && &input[i]["batch"] == batch_no {
            let partition = input[i]["partition"].as_i64().unwrap() as i32;
            let value = serde_json::to_vec(&input[i]["event"]).unwrap();
            batch.records.push(None, Some(&value), Some(0), []);
            batch.partitions.push(partition);
            batch.offsets.push(next_offset[partition as usize]);
            batch.sources.push(0);
            next_offset[partition as usize] += 1;
            ids.push(input[i]["event"]["event_id"].clone());
            i += 1;
        }
        let out = step.process(&mut batch, now_ms).unwrap();
        for (j, record) in out.records.iter().enumerate() {
            let value: Value = serde_json::from_slice(record.value.unwrap()).unwrap();
            results.push(
                json!({ "final": out.windows[out.inputs[j] as usize].is_final, "value": value }),
            );
        }
        for (index, reason) in out.dead_letters {
            dead.push(json!({ "event_id": ids[index as usize], "reason": reason.text }));
        }
    }
    assert_eq!(
        results,
        lines(&dir.join("expected.jsonl")),
        "{name}: results"
    );
    assert_eq!(
        dead,
        lines(&dir.join("expected-dlq.jsonl")),
        "{name}: dead letters"
    );
}

#[test]
fn tumbling_in_order_with_several_keys_and_partitions() {
    run_case("tumbling-in-order", "event-window-agg");
}

#[test]
fn out_of_order_within_the_bound() {
    run_case("out-of-order", "event-window-agg");
}

#[test]
fn late_records_beyond_lateness_are_dead_lettered() {
    run_case("late", "event-window-agg");
}

#[test]
fn allowed_lateness_in_update_mode() {
    run_case("allowed-lateness-update", "event-window-agg");
}

#[test]
fn an_idle_partition_stops_holding_the_watermark() {
    run_case("idle-partition", "event-window-agg");
}

#[test]
fn hopping_windows() {
    run_case("hopping", "event-window-agg");
}

#[test]
fn session_windows_merge_when_a_record_bridges_them() {
    run_case("session", "user-sessions");
}
