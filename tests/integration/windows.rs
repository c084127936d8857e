//! `event-window-agg` through the broker with `--until-caught-up`: exact
//! per-minute results, computed here from the sample events; and a restart
//! that completes a window left open by the first run (its records were not
//! committed, so they are read again).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use sluice_tests::kafka_tools::{SampleOptions, sample_record};
use sluice_tests::*;

const MINUTE: i64 = 60_000;
const BOUND: i64 = 5_000;

fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64),
    )
    .to_string()
}

/// Expected final results for events `0..n` given the watermark they reach.
fn expected(o: &SampleOptions, range: std::ops::Range<u64>, watermark: i64) -> Vec<Value> {
    let mut groups: BTreeMap<(i64, String), (u64, f64, BTreeSet<String>)> = BTreeMap::new();
    for n in range {
        let (_, v) = sample_record(o, n);
        let Ok(e) = serde_json::from_slice::<Value>(&v) else {
            continue;
        };
        let t = o.start_ms + n as i64 * 100;
        let g = groups
            .entry((
                t / MINUTE * MINUTE,
                e["event_type"].as_str().unwrap().to_owned(),
            ))
            .or_default();
        g.0 += 1;
        g.1 += e["amount"].as_f64().unwrap();
        g.2.insert(e["user_id"].as_str().unwrap().to_owned());
    }
    groups
        .into_iter()
        .filter(|((start, _), _)| start + MINUTE <= watermark)
        .map(|((start, kind), (count, sum, users))| {
            json!({
                "window_start": rfc3339(start), "window_end": rfc3339(start + MINUTE), "event_type": kind,
                "count": count, "sum_amount": (sum * 100.0).round() / 100.0, "unique_users": users.len(),
            })
        })
        .collect()
}

fn sorted(mut v: Vec<Value>) -> Vec<Value> {
    v.sort_by_key(|x| (x["window_start"].to_string(), x["event_type"].to_string()));
    v
}

#[test]
fn event_window_agg_through_the_broker_and_across_a_restart() {
    let (input, out, dlq) = (unique("events"), unique("agg"), unique("dlq"));
    create_topics(&[&input, &out, &dlq], 1);
    let yaml = format!(
        "name: windows\nkafka: {{ brokers: \"{}\" }}\nsource: {{ topics: [{input}], group: {} }}\n\
         batch: {{ max_records: 300 }}\ntransforms:\n  - module: {}\n    aggregate:\n      window: {{ tumbling: 1m }}\n\
         \x20     watermark: {{ max_out_of_orderness: 5s, idle_timeout: 1h }}\n      output: append\n\
         outputs: {{ default: {{ topic: {out} }} }}\ndead_letter: {{ topic: {dlq} }}\n",
        brokers(),
        unique("g"),
        guest("event-window-agg").display(),
    );
    let spec = spec(&yaml);
    let o = SampleOptions {
        malformed_every: 101,
        ..SampleOptions::default()
    };

    // Run 1: 200 s of events; the watermark reaches 194.9 s, so three minutes close.
    kafka_tools::produce_sample_range(brokers(), &input, &o, 0..2000).unwrap();
    run_until_caught_up(&spec);
    let values = |records: Vec<TopicRecord>| -> Vec<Value> {
        records
            .iter()
            .map(|r| serde_json::from_str(r.value.as_deref().unwrap()).unwrap())
            .collect()
    };
    let first = values(read(&out));
    assert_eq!(
        sorted(first.clone()),
        expected(&o, 0..2000, o.start_ms + 199_900 - BOUND)
    );

    // Run 2, after a restart: events up to 270 s close the fourth minute,
    // whose first 20 s were read by run 1 but not committed.
    kafka_tools::produce_sample_range(brokers(), &input, &o, 2000..2700).unwrap();
    run_until_caught_up(&spec);
    let all = values(read(&out));
    assert_eq!(sorted(all[first.len()..].to_vec()), {
        let through = expected(&o, 0..2700, o.start_ms + 269_900 - BOUND);
        through
            .into_iter()
            .filter(|v| !first.contains(v))
            .collect::<Vec<_>>()
    });
    // The malformed events were dead-lettered (those re-read after the
    // restart, twice: at-least-once until checkpoints exist).
    let bad: BTreeSet<String> = read(&dlq).into_iter().map(|r| r.value.unwrap()).collect();
    let expected_bad: BTreeSet<String> = (0..2700)
        .map(|n| sample_record(&o, n).1)
        .filter(|v| serde_json::from_slice::<Value>(v).is_err())
        .map(|v| String::from_utf8(v).unwrap())
        .collect();
    assert_eq!(bad, expected_bad);
    // Results carry their window in headers.
    let r = &read(&out)[0];
    assert_eq!(r.headers["sluice.window.final"], "true");
    assert_eq!(r.headers["sluice.window.start"], (o.start_ms).to_string());
}

/// Without records arriving, processing time still passes: a partition
/// that never had data stops holding the watermark after its idle timeout,
/// and the window that became due is emitted without waiting for another
/// record. (When every partition is idle the watermark stays put, so the
/// data partition must still count as active then: its last records come
/// a little after the first ones.)
#[test]
fn windows_close_by_processing_time_when_no_records_arrive() {
    let (input, out, dlq) = (unique("events"), unique("agg"), unique("dlq"));
    create_topics(&[&input, &out, &dlq], 2);
    // One key, so one partition has everything and the other nothing.
    let event = |n: i64| {
        format!(
            r#"{{"event_id":"e{n}","user_id":"u1","event_type":"click","timestamp":"{}","amount":1.0}}"#,
            rfc3339(n * 1000)
        )
    };
    let produce_events = |range: std::ops::RangeInclusive<i64>| {
        let records = range.map(|n| {
            (
                Some(b"u1".to_vec()),
                Some(event(n).into_bytes()),
                Some(n * 1000),
                vec![],
            )
        });
        kafka_tools::produce(brokers(), &input, records).unwrap();
    };
    produce_events(1..=30);
    let checkpoints = tempfile::tempdir().unwrap();
    let yaml = format!(
        "name: ticks\nkafka: {{ brokers: \"{}\" }}\nsource: {{ topics: [{input}] }}\n\
         checkpoint: {{ dir: {}, interval: 10ms }}\n\
         transforms:\n  - module: {}\n    aggregate:\n      window: {{ tumbling: 1m }}\n\
         \x20     watermark: {{ max_out_of_orderness: 0s, idle_timeout: 4s }}\n\
         outputs: {{ default: {{ topic: {out} }} }}\ndead_letter: {{ topic: {dlq} }}\n",
        brokers(),
        checkpoints.path().display(),
        guest("event-window-agg").display(),
    );
    let spec = spec(&yaml);
    // The first batch is done once a checkpoint after it (id >= 1) exists.
    let first_batch_done = || {
        std::fs::read_dir(checkpoints.path()).unwrap().any(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_prefix("checkpoint-")
                .and_then(|n| n.strip_suffix(".ckpt"))
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|id| id >= 1)
        })
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopper = stop.clone();
    let run = std::thread::spawn(move || {
        sluice::pipeline::run(&spec, sluice::pipeline::RunOptions::default(), &stopper)
    });
    // The rest a little later, well within the idle timeout: the data
    // partition is still active when the empty one goes idle, between
    // batches.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !first_batch_done() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    produce_events(31..=70);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut results = Vec::new();
    while results.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
        results = read(&out);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    run.join().unwrap().unwrap();
    let values: Vec<Value> = read(&out)
        .iter()
        .map(|r| serde_json::from_str(r.value.as_deref().unwrap()).unwrap())
        .collect();
    assert_eq!(
        values,
        vec![json!({
            "window_start": rfc3339(0), "window_end": rfc3339(MINUTE), "event_type": "click",
            "count": 59, "sum_amount": 59.0, "unique_users": 1,
        })]
    );
}
