//! An aggregate keyed by something other than the records' Kafka key, run
//! as tasks: through its repartition topic (see `spec::Stages`), the
//! results are exactly those computed here from the sample events, and
//! those of the same pipeline run whole.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice::pipeline::{Control, RunOptions, SwapRecord, SwapRequest, SwapState};
use sluice_tests::kafka_tools::{SampleOptions, sample_record};
use sluice_tests::*;

const MINUTE: i64 = 60_000;
/// The event types that reach the aggregate (errors go to `alerts`).
const TYPES: [&str; 4] = ["click", "view", "heartbeat", "purchase"];

fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64),
    )
    .to_string()
}

/// Every sample window per event type (the flush records close them all),
/// computed from the events; errors are routed away before the aggregate,
/// malformed events dead-lettered.
fn expected(o: &SampleOptions) -> Vec<Value> {
    let mut groups: BTreeMap<(i64, String), (u64, f64, BTreeSet<String>)> = BTreeMap::new();
    for n in 0..o.count {
        let Ok(e) = serde_json::from_slice::<Value>(&sample_record(o, n).1) else {
            continue;
        };
        let kind = e["event_type"].as_str().unwrap().to_owned();
        if kind == "error" {
            continue;
        }
        let t = o.start_ms + n as i64 * 100;
        let g = groups.entry((t / MINUTE * MINUTE, kind)).or_default();
        g.0 += 1;
        g.1 += e["amount"].as_f64().unwrap();
        g.2.insert(e["user_id"].as_str().unwrap().to_owned());
    }
    let mut v: Vec<Value> = groups
        .into_iter()
        .map(|((start, kind), (count, sum, users))| {
            json!({
                "window_start": rfc3339(start), "window_end": rfc3339(start + MINUTE), "event_type": kind,
                "count": count, "sum_amount": (sum * 100.0).round() / 100.0, "unique_users": users.len(),
            })
        })
        .collect();
    v.sort_by_key(|x| x.to_string());
    v
}

fn values(topic: &str) -> Vec<Value> {
    let mut v: Vec<Value> = read(topic)
        .iter()
        .map(|r| serde_json::from_str(r.value.as_deref().unwrap()).unwrap())
        .collect();
    v.sort_by_key(|x| x.to_string());
    v
}

fn per_type_spec(dir: &Path, name: &str, input: &str, out: &str, parallelism: usize) -> String {
    format!(
        r#"name: {name}
kafka: {{ brokers: "{brokers}" }}
source: {{ topics: [{input}], group: {group} }}
batch: {{ max_records: 300, max_wait: 20ms }}
transforms:
  - module: {router}
  - module: {agg}
    repartition: true
    aggregate:
      window: {{ tumbling: 1m }}
      watermark: {{ max_out_of_orderness: 5s, idle_timeout: 1h }}
      output: append
outputs:
  default: {{ topic: {out} }}
  alerts: {{ topic: {out}-alerts }}
dead_letter: {{ topic: {out}-dlq }}
checkpoint: {{ dir: {checkpoints}, interval: 200ms }}
delivery: exactly-once
parallelism: {parallelism}
"#,
        brokers = brokers(),
        group = unique("repartition-group"),
        router = guest("alert-router").display(),
        agg = guest("event-window-agg").display(),
        checkpoints = dir.join("checkpoints").display(),
    )
}

#[test]
fn an_aggregate_per_event_type_at_four_workers_goes_through_its_repartition_topic() {
    let input = unique("repartition-in");
    let (one, four) = (unique("repartition-one"), unique("repartition-four"));
    create_topics(&[&input], 4);
    for out in [&one, &four] {
        create_topics(&[out, &format!("{out}-alerts"), &format!("{out}-dlq")], 2);
    }
    let o = SampleOptions {
        count: 6000,
        users: 100,
        malformed_every: 97,
        ..SampleOptions::default()
    };
    kafka_tools::produce_sample(brokers(), &input, &o).unwrap();
    produce_type_flush(brokers(), &input, &o, &TYPES);
    let flush = TYPES.len() as u64 * 60;
    let want = expected(&o);
    let malformed = o.count / o.malformed_every;
    let errors = (0..o.count)
        .filter(|&n| {
            String::from_utf8(sample_record(&o, n).1)
                .unwrap()
                .contains(r#""event_type":"error""#)
        })
        .count() as u64;

    let (dir_one, dir_four) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (name_one, name_four) = (unique("rp-one"), unique("rp-four"));
    let whole = run_until_caught_up(&spec(&per_type_spec(
        dir_one.path(),
        &name_one,
        &input,
        &one,
        1,
    )));
    assert_eq!(values(&one), want, "run whole");
    assert_eq!(
        whole.repartitioned, None,
        "parallelism 1 does not repartition"
    );

    let tasks = run_until_caught_up(&spec(&per_type_spec(
        dir_four.path(),
        &name_four,
        &input,
        &four,
        4,
    )));
    assert_eq!(
        values(&four),
        want,
        "four tasks through the repartition topic"
    );
    assert_eq!(tasks.records_in, o.count + flush);
    assert_eq!(tasks.outputs["default"], want.len() as u64);
    assert_eq!(tasks.outputs["alerts"], errors);
    assert_eq!(tasks.dead_lettered, malformed);
    assert_eq!(
        tasks.repartitioned,
        Some(o.count + flush - malformed - errors)
    );
    assert_eq!(
        sorted_values(&read(&format!("{four}-dlq"))),
        sorted_values(&read(&format!("{one}-dlq")))
    );
    assert_eq!(read(&format!("{four}-dlq")).len() as u64, malformed);
    let rows: Vec<(String, i32)> = tasks
        .tasks
        .iter()
        .map(|t| {
            (
                serde_json::to_value(t.stage)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned(),
                t.partition,
            )
        })
        .collect();
    let want_rows: Vec<(String, i32)> = ["source", "repartition"]
        .iter()
        .flat_map(|s| (0..4).map(move |p| (s.to_string(), p)))
        .collect();
    assert_eq!(rows, want_rows, "a row per task of each stage");
    let read_back: u64 = tasks.tasks[4..].iter().map(|t| t.records_in).sum();
    assert_eq!(
        Some(read_back),
        tasks.repartitioned,
        "the aggregating tasks read every record once (markers are not records)"
    );

    // The repartition topic: created with the source's partition count,
    // each event type in one partition (Kafka's murmur2 of the key), each
    // record saying which source partition it came from; and after each
    // source batch, a watermark marker from its partition in every
    // partition, no later than the records before it.
    let topic = format!("{name_four}-repartition-1");
    let (markers, exchanged): (Vec<TopicRecord>, Vec<TopicRecord>) = read(&topic)
        .into_iter()
        .partition(|r| r.headers.contains_key("sluice.watermark"));
    assert_eq!(exchanged.len() as u64, o.count + flush - malformed - errors);
    let mut marked: BTreeMap<(i32, String), i64> = BTreeMap::new();
    for m in &markers {
        assert_eq!((&m.key, &m.value), (&None, &None));
        let time: i64 = m.headers["sluice.watermark"].parse().unwrap();
        let max = marked
            .entry((m.partition, m.headers["sluice.upstream"].clone()))
            .or_insert(i64::MIN);
        *max = (*max).max(time);
    }
    // The flush records' time (see `produce_type_flush`): the latest event
    // time of every source partition.
    let flushed = ((o.start_ms + o.count as i64 * 100) / MINUTE + 2) * MINUTE + 30_000;
    assert_eq!(
        marked,
        (0..4)
            .flat_map(|q| (0..4).map(move |u| ((q, u.to_string()), flushed)))
            .collect(),
        "every source partition marked every partition of the topic up to its latest event"
    );
    let mut partitions: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    let mut upstreams = BTreeSet::new();
    for r in &exchanged {
        let key = r.key.clone().unwrap();
        let value: Value = serde_json::from_str(r.value.as_deref().unwrap()).unwrap();
        assert_eq!(value["event_type"].as_str(), Some(key.as_str()));
        partitions.entry(key).or_default().insert(r.partition);
        upstreams.insert(r.headers["sluice.upstream"].clone());
    }
    assert_eq!(partitions.keys().cloned().collect::<Vec<_>>(), {
        let mut t = TYPES.map(str::to_owned).to_vec();
        t.sort();
        t
    });
    for (key, p) in &partitions {
        assert_eq!(
            p.iter().copied().collect::<Vec<_>>(),
            [sluice::sink::partition_for_key(key.as_bytes(), 4)],
            "{key}"
        );
    }
    assert_eq!(upstreams, ["0", "1", "2", "3"].map(str::to_owned).into());

    // Each stage keeps its tasks' checkpoints.
    let dirs = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let root = dir_four.path().join("checkpoints");
    assert_eq!(
        dirs(&root.join("tasks")),
        ["00000", "00001", "00002", "00003"]
    );
    assert_eq!(
        dirs(&root.join("repartition-1/tasks")),
        ["00000", "00001", "00002", "00003"]
    );

    // Run again: nothing new, nothing written twice.
    let again = run_until_caught_up(&spec(&per_type_spec(
        dir_four.path(),
        &name_four,
        &input,
        &four,
        2,
    )));
    assert_eq!((again.records_in, again.repartitioned), (0, Some(0)));
    assert_eq!(values(&four), want);
    assert_eq!(read(&topic).len(), exchanged.len() + markers.len());
}

/// Asks `control` to run `file` in step `step`; returns the swap's record
/// once it left `pending` (`trial` or later).
fn swap(control: &Control, step: usize, file: &Path) -> SwapRecord {
    let request = SwapRequest {
        step,
        module: "event-window-agg".into(),
        version: None,
        file: file.to_owned(),
    };
    let record = SwapRecord {
        id: 0,
        step: "event-window-agg".into(),
        module: "event-window-agg".into(),
        from_version: None,
        to_version: None,
        state: SwapState::Pending,
        reason: None,
        requested_at: String::new(),
        first_batch: None,
        boundary: Vec::new(),
        pause_ms: None,
        swap_ms: None,
    };
    let id = control.request_swap(request, record);
    control
        .wait_swap(id, Duration::from_secs(30))
        .expect("the swap left pending")
}

/// Waits until swap `id` is live or rolled back.
fn decided(control: &Control, id: u64) -> SwapRecord {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let record = control.swaps().into_iter().find(|r| r.id == id).unwrap();
        if matches!(record.state, SwapState::Live | SwapState::RolledBack) {
            return record;
        }
        assert!(Instant::now() < deadline, "swap {id} undecided: {record:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A live swap of the aggregate of a pipeline run through its repartition
/// topic: one round over both stages' tasks (the module keys in one and
/// aggregates in the other). A module that cannot start is refused before
/// any task swaps; a new version goes live in all of them, and the windows
/// carry on: the results are those computed from the events.
#[test]
fn the_aggregate_of_a_repartitioned_pipeline_swaps_live_in_both_stages() {
    let input = unique("repartition-swap-in");
    let out = unique("repartition-swap-out");
    create_topics(&[&input], 2);
    create_topics(&[&out, &format!("{out}-alerts"), &format!("{out}-dlq")], 2);
    let o = SampleOptions {
        count: 4000,
        users: 100,
        ..SampleOptions::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let name = unique("rp-swap");
    let yaml = per_type_spec(dir.path(), &name, &input, &out, 2).replace(
        "batch: { max_records: 300, max_wait: 20ms }",
        "batch: { max_records: 100, max_wait: 20ms }",
    );
    let spec = spec(&yaml);
    let control = Arc::new(Control::new());
    let stop = Arc::new(AtomicBool::new(false));
    let run = {
        let (control, stop) = (control.clone(), stop.clone());
        std::thread::spawn(move || {
            sluice::pipeline::run_with(&spec, RunOptions::default(), &stop, Some(&control))
        })
    };
    kafka_tools::produce_sample_range(brokers(), &input, &o, 0..2000).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while control
        .progress()
        .is_none_or(|p| p.totals.run.records_in < 2000)
    {
        assert!(Instant::now() < deadline, "the first records were not read");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The workers are consumer group members: both stages' tasks are
    // dealt out before the swap (one taken on during it joins the round).
    while control.progress().is_none_or(|p| {
        p.tasks.iter().filter(|t| t.owned).count() < 4 || p.totals.run.records_in < 2000
    }) {
        assert!(Instant::now() < deadline, "the tasks did not settle");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Not an aggregate: refused at once, nothing swapped.
    let refused = swap(&control, 1, &guest("alert-router"));
    let refused_at_once = refused.state == SwapState::RolledBack
        && refused
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("the new module cannot start: "));
    if !refused_at_once {
        stop.store(true, Ordering::Relaxed);
        panic!("{refused:?}; the run: {:?}", run.join().unwrap());
    }

    // Another version of the aggregate: on trial once every task of both
    // stages runs it, live once they have run records.
    let v2 = dir.path().join("event_window_agg_v2.wasm");
    std::fs::write(
        &v2,
        with_custom_section(
            std::fs::read(guest("event-window-agg")).unwrap(),
            "sluice-test",
            b"2",
        ),
    )
    .unwrap();
    let trial = swap(&control, 1, &v2);
    if trial.state != SwapState::Trial {
        stop.store(true, Ordering::Relaxed);
        panic!("{trial:?}; the run: {:?}", run.join().unwrap());
    }
    kafka_tools::produce_sample_range(brokers(), &input, &o, 2000..4000).unwrap();
    produce_type_flush(brokers(), &input, &o, &TYPES);
    let live = decided(&control, trial.id);
    assert_eq!(live.state, SwapState::Live, "{live:?}");
    // Where it took over: in both stages' partitions.
    let topics: BTreeSet<&str> = live.boundary.iter().map(|b| b.0.as_str()).collect();
    let repartition = format!("{name}-repartition-1");
    assert_eq!(
        topics,
        BTreeSet::from([input.as_str(), repartition.as_str()]),
        "{live:?}"
    );
    let want = expected(&o);
    let deadline = Instant::now() + Duration::from_secs(60);
    while values(&out).len() < want.len() {
        assert!(
            Instant::now() < deadline,
            "{} of {} results",
            values(&out).len(),
            want.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    run.join().unwrap().unwrap();
    assert_eq!(values(&out), want);
    assert!(read(&format!("{out}-dlq")).is_empty());
}
