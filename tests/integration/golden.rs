//! Golden windowing tests: `tests/golden/<case>/input.jsonl` through the real
//! aggregate guests and the host's window engine, batch by batch with the
//! processing times the file gives, must produce exactly
//! `expected.jsonl` (results, with their final flag) and
//! `expected-dlq.jsonl` (late records with their reason). The expected files
//! come from `tests/golden/compute_expected.py`, an independent model. Each
//! case runs again as four tasks through a repartition topic's routing and
//! watermark markers, with the same results.

use std::path::Path;

use serde_json::{Value, json};
use sluice::batch::Batch;
use sluice::pipeline::{AggregateOutput, AggregateStep, Chain, Rekey, Step};
use sluice::runtime::{Aggregator, Labels, Module, Runtime};
use sluice::sink::partition_for_key;
use sluice::spec::window::WindowSpec;
use sluice::spec::{Limits, UPSTREAM_HEADER, WATERMARK_HEADER};
use sluice_tests::guest;

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A case's window spec and module.
struct Case {
    dir: std::path::PathBuf,
    window: WindowSpec,
    module: Module,
}

impl Case {
    fn new(name: &str, guest_name: &str, runtime: &Runtime) -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("golden")
            .join(name);
        let mut window: WindowSpec =
            serde_yaml_ng::from_str(&std::fs::read_to_string(dir.join("aggregate.yaml")).unwrap())
                .unwrap();
        // The files' processing times count from 0, their event times from
        // 2026: no horizon (it is tested through the broker in `windows`).
        window.watermark.max_ahead = std::time::Duration::MAX;
        let module = runtime
            .load(guest_name, &std::fs::read(guest(guest_name)).unwrap())
            .unwrap();
        Self {
            dir,
            window,
            module,
        }
    }

    fn aggregator(&self) -> Aggregator {
        let labels = Labels {
            pipeline: "golden".into(),
            step: "golden".into(),
            module: self.module.name().into(),
        };
        Aggregator::new(&self.module, labels, Limits::default(), vec![]).unwrap()
    }

    fn step(&self) -> AggregateStep {
        AggregateStep::new(self.aggregator(), self.window.clone()).unwrap()
    }

    /// The input's batches: (processing time, records, their event ids).
    fn batches(&self) -> Vec<(i64, Batch, Vec<Value>)> {
        let input = lines(&self.dir.join("input.jsonl"));
        let mut batches = Vec::new();
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
            batches.push((now_ms, batch, ids));
        }
        batches
    }
}

/// Adds a step's results and dead letters (`ids`: the event id of each of
/// its batch's records).
fn collect(out: AggregateOutput, ids: &[Value], results: &mut Vec<Value>, dead: &mut Vec<Value>) {
    for (j, record) in out.records.iter().enumerate() {
        let value: Value = serde_json::from_slice(record.value.unwrap()).unwrap();
        results
            .push(json!({ "final": out.windows[out.inputs[j] as usize].is_final, "value": value }));
    }
    for (index, reason) in out.dead_letters {
        dead.push(json!({ "event_id": ids[index as usize], "reason": reason.text }));
    }
}

fn run_case(name: &str, guest_name: &str) {
    let runtime = Runtime::new().unwrap();
    let case = Case::new(name, guest_name, &runtime);
    let mut step = case.step();
    let (mut results, mut dead) = (Vec::new(), Vec::new());
    for (now_ms, mut batch, ids) in case.batches() {
        let out = step.process(&mut batch, now_ms).unwrap();
        collect(out, &ids, &mut results, &mut dead);
    }
    assert_eq!(
        results,
        lines(&case.dir.join("expected.jsonl")),
        "{name}: results"
    );
    assert_eq!(
        dead,
        lines(&case.dir.join("expected-dlq.jsonl")),
        "{name}: dead letters"
    );
    run_case_as_tasks(&case, name, 4);
}

/// The same case as a pipeline run as `tasks` tasks through a repartition
/// topic, batch by batch: the source-stage chain (the production rekey
/// step) keys each batch; its records go to the partition of their key
/// with their upstream header, followed by each upstream's watermark
/// marker in every partition, as delivery writes them; each partition's
/// aggregating step (marks and upstream clocks on) runs what it got at the
/// same processing time. The results and dead letters are the whole run's,
/// as multisets (tasks emit side by side).
fn run_case_as_tasks(case: &Case, name: &str, tasks: i32) {
    let rekey = Step::Rekey(Box::new(Rekey {
        aggregator: case.aggregator(),
        max_ahead: i64::MAX,
    }));
    let mut front = Chain::new(vec![rekey], &["default".to_owned()], "default");
    let mut back: Vec<AggregateStep> = (0..tasks)
        .map(|_| {
            let mut step = case.step();
            step.read_upstreams();
            step
        })
        .collect();
    let (mut results, mut dead) = (Vec::new(), Vec::new());
    for (now_ms, mut batch, ids) in case.batches() {
        let keyed = front.run(&mut batch, now_ms).unwrap();
        for d in &keyed.dead_letters {
            dead.push(json!({ "event_id": ids[d.origin as usize], "reason": d.reason.text }));
        }
        let routed = &keyed.outputs[0];
        let mut parts: Vec<(Batch, Vec<Value>)> = (0..tasks)
            .map(|_| (Batch::with_capacity(16, 1024), Vec::new()))
            .collect();
        for (record, &origin) in routed.records.iter().zip(&routed.origins) {
            let q = partition_for_key(record.key.unwrap(), tasks);
            let upstream = batch.partitions[origin as usize].to_string();
            let (part, part_ids) = &mut parts[q as usize];
            part.records.push(
                record.key,
                record.value,
                record.timestamp,
                [(UPSTREAM_HEADER.as_bytes(), Some(upstream.as_bytes()))],
            );
            part.partitions.push(q);
            part.offsets.push(part.offsets.len() as i64);
            part.sources.push(0);
            part_ids.push(ids[origin as usize].clone());
        }
        for (q, (part, part_ids)) in parts.iter_mut().enumerate() {
            for &(upstream, time) in &keyed.exchange_times {
                let (upstream, time) = (upstream.to_string(), time.to_string());
                part.records.push(
                    None,
                    None,
                    None,
                    [
                        (UPSTREAM_HEADER.as_bytes(), Some(upstream.as_bytes())),
                        (WATERMARK_HEADER.as_bytes(), Some(time.as_bytes())),
                    ],
                );
                part.partitions.push(q as i32);
                part.offsets.push(part.offsets.len() as i64);
                part.sources.push(0);
                part_ids.push(Value::Null);
            }
        }
        for ((part, part_ids), step) in parts.iter_mut().zip(&mut back) {
            let out = if part.is_empty() {
                step.tick(now_ms).unwrap()
            } else {
                step.process(part, now_ms).unwrap()
            };
            collect(out, part_ids, &mut results, &mut dead);
        }
    }
    let sorted = |mut v: Vec<Value>| {
        v.sort_by_key(|x| x.to_string());
        v
    };
    assert_eq!(
        sorted(results),
        sorted(lines(&case.dir.join("expected.jsonl"))),
        "{name} at {tasks} tasks: results"
    );
    assert_eq!(
        sorted(dead),
        sorted(lines(&case.dir.join("expected-dlq.jsonl"))),
        "{name} at {tasks} tasks: dead letters"
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
