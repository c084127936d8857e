//! The example guests through the broker, with exact expected outputs
//! computed here from the inputs, independently of the host.

use serde_json::Value;
use sluice::batch::reason::Kind;
use sluice_tests::kafka_tools::{SampleOptions, sample_record};
use sluice_tests::*;

struct Topics {
    input: String,
    clean: String,
    alerts: String,
    dlq: String,
}

fn topics(partitions: i32) -> Topics {
    let t = Topics {
        input: unique("in"),
        clean: unique("clean"),
        alerts: unique("alerts"),
        dlq: unique("dlq"),
    };
    create_topics(&[&t.input, &t.clean, &t.alerts, &t.dlq], partitions);
    t
}

fn pipeline_yaml(t: &Topics, steps: &str, batch: &str) -> String {
    format!(
        "name: {name}\nkafka: {{ brokers: \"{brokers}\" }}\nsource: {{ topics: [{input}] }}\nbatch: {batch}\n\
         transforms:\n{steps}\noutputs:\n  default: {{ topic: {clean} }}\n  alerts: {{ topic: {alerts} }}\n\
         dead_letter: {{ topic: {dlq} }}\n",
        name = unique("p"),
        brokers = brokers(),
        input = t.input,
        clean = t.clean,
        alerts = t.alerts,
        dlq = t.dlq,
    )
}

fn step(guest_name: &str) -> String {
    format!("  - module: {}\n", guest(guest_name).display())
}

/// The sample stream, and each event's `event_type` (None for malformed).
fn sample(count: u64, malformed_every: u64) -> Vec<(String, String, Option<String>)> {
    let o = SampleOptions {
        count,
        malformed_every,
        ..SampleOptions::default()
    };
    (0..count)
        .map(|n| {
            let (k, v) = sample_record(&o, n);
            let v = String::from_utf8(v).unwrap();
            let kind = serde_json::from_str::<Value>(&v)
                .ok()
                .map(|j| j["event_type"].as_str().unwrap().to_owned());
            (k, v, kind)
        })
        .collect()
}

fn produce_sample(topic: &str, events: &[(String, String, Option<String>)]) {
    let pairs: Vec<(&str, &str)> = events
        .iter()
        .map(|(k, v, _)| (k.as_str(), v.as_str()))
        .collect();
    produce(topic, &pairs);
}

fn values_where(
    events: &[(String, String, Option<String>)],
    keep: impl Fn(Option<&str>) -> bool,
) -> Vec<String> {
    let mut v: Vec<String> = events
        .iter()
        .filter(|e| keep(e.2.as_deref()))
        .map(|e| e.1.clone())
        .collect();
    v.sort();
    v
}

#[test]
fn filter_heartbeats_drops_exactly_the_heartbeats() {
    let t = topics(3);
    let events = sample(500, 0);
    produce_sample(&t.input, &events);
    let spec = spec(&pipeline_yaml(
        &t,
        &step("filter-heartbeats"),
        "{ max_records: 64 }",
    ));
    let summary = run_until_caught_up(&spec);

    let expected = values_where(&events, |k| k != Some("heartbeat"));
    let heartbeats = events.len() - expected.len();
    assert!(heartbeats > 50, "the sample must contain heartbeats");
    assert_eq!(sorted_values(&read(&t.clean)), expected);
    assert_eq!(summary.records_in, 500);
    assert_eq!(summary.dropped, heartbeats as u64);
    assert!(read(&t.dlq).is_empty());
    // Keys travel with their records.
    for r in read(&t.clean) {
        let v: Value = serde_json::from_str(r.value.as_deref().unwrap()).unwrap();
        assert_eq!(r.key.as_deref(), v["user_id"].as_str());
    }
}

#[test]
fn strategy_map_rescales_values_and_keeps_key_headers_and_timestamp() {
    let t = topics(1);
    let ts = "\"2024-01-01T00:00:00.000Z\"";
    let inputs = [
        ("a", 10.0),
        ("b", 29.5),
        ("c", 30.0),
        ("d", 45.0),
        ("e", 60.0),
        ("f", 61.0),
        ("g", 100.0),
    ];
    let records = inputs.iter().enumerate().map(|(i, (k, v))| {
        let value = format!(r#"{{"strategy":"{k}","value":{v},"ts":{ts}}}"#);
        (
            Some(k.as_bytes().to_vec()),
            Some(value.into_bytes()),
            Some(5000 + i as i64),
            vec![("trace".to_owned(), b"t1".to_vec())],
        )
    });
    kafka_tools::produce(brokers(), &t.input, records).unwrap();
    run_until_caught_up(&spec(&pipeline_yaml(
        &t,
        &step("strategy-map"),
        "{ max_records: 3 }",
    )));

    let expected = [
        ("a", "20.0"),
        ("b", "59.0"),
        ("c", "55.0"),
        ("d", "77.5"),
        ("e", "100.0"),
        ("f", "37.21"),
        ("g", "100.0"),
    ];
    let out = read(&t.clean);
    assert_eq!(out.len(), expected.len());
    for (i, (r, (k, v))) in out.iter().zip(expected).enumerate() {
        assert_eq!(r.key.as_deref(), Some(k));
        assert_eq!(
            r.value.as_deref().unwrap(),
            format!(r#"{{"strategy":"{k}","value":{v},"ts":{ts}}}"#)
        );
        assert_eq!(r.timestamp, Some(5000 + i as i64));
        assert_eq!(r.headers.get("trace").map(String::as_str), Some("t1"));
    }
}

#[test]
fn alert_router_routes_errors_and_dead_letters_bad_json() {
    let t = topics(2);
    let events = sample(400, 37);
    produce_sample(&t.input, &events);
    let summary = run_until_caught_up(&spec(&pipeline_yaml(
        &t,
        &step("alert-router"),
        "{ max_records: 100 }",
    )));

    assert_eq!(
        sorted_values(&read(&t.alerts)),
        values_where(&events, |k| k == Some("error"))
    );
    assert_eq!(
        sorted_values(&read(&t.clean)),
        values_where(&events, |k| k.is_some_and(|k| k != "error"))
    );
    let dlq = read(&t.dlq);
    assert_eq!(sorted_values(&dlq), values_where(&events, |k| k.is_none()));
    assert_eq!(summary.dead_lettered, 10);
    assert_eq!(summary.dead_letter_reasons.get(&Kind::Rejected), Some(&10));
    for r in &dlq {
        let h = &r.headers;
        assert!(
            h["sluice.error"].starts_with("invalid JSON in record value: "),
            "{h:?}"
        );
        assert_eq!(h["sluice.step"], "alert-router");
        assert_eq!(h["sluice.module"], "alert_router");
        assert_eq!(h["sluice.module.sha256"].len(), 64);
        assert_eq!(h["sluice.source.topic"], t.input);
        // The source coordinates point at the very record.
        let (p, o): (i32, i64) = (
            h["sluice.source.partition"].parse().unwrap(),
            h["sluice.source.offset"].parse().unwrap(),
        );
        let original = read(&t.input)
            .into_iter()
            .find(|x| x.partition == p && x.offset == o)
            .unwrap();
        assert_eq!(
            (original.key.as_ref(), original.value.as_ref()),
            (r.key.as_ref(), r.value.as_ref())
        );
    }
}

#[test]
fn the_demo_chain_accounts_for_every_record() {
    let t = topics(4);
    let events = sample(1000, 97);
    produce_sample(&t.input, &events);
    let steps = format!("{}{}", step("filter-heartbeats"), step("alert-router"));
    let summary = run_until_caught_up(&spec(&pipeline_yaml(
        &t,
        &steps,
        "{ max_records: 128, max_wait: 20ms }",
    )));

    let clean = values_where(&events, |k| {
        k.is_some_and(|k| k != "error" && k != "heartbeat")
    });
    let alerts = values_where(&events, |k| k == Some("error"));
    let bad = values_where(&events, |k| k.is_none());
    assert_eq!(sorted_values(&read(&t.clean)), clean);
    assert_eq!(sorted_values(&read(&t.alerts)), alerts);
    assert_eq!(sorted_values(&read(&t.dlq)), bad);
    let heartbeats = events
        .iter()
        .filter(|e| e.2.as_deref() == Some("heartbeat"))
        .count() as u64;
    assert_eq!(summary.dropped, heartbeats);
    assert_eq!(
        summary.outputs["default"]
            + summary.outputs["alerts"]
            + summary.dead_lettered
            + summary.dropped,
        1000
    );
    // Dead letters name the step that rejected them: the first one parses JSON.
    assert!(
        read(&t.dlq)
            .iter()
            .all(|r| r.headers["sluice.step"] == "filter-heartbeats")
    );
}

#[test]
fn a_restarted_sluice_run_resumes_from_committed_offsets() {
    let t = topics(2);
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("pipeline.yaml");
    std::fs::write(
        &spec_path,
        pipeline_yaml(&t, &step("filter-heartbeats"), "{ max_records: 50 }"),
    )
    .unwrap();
    let run = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["run", "--until-caught-up"])
            .arg(&spec_path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let all = sample(600, 0);
    produce_sample(&t.input, &all[..400]);
    assert_eq!(run()["records_in"], 400);
    produce_sample(&t.input, &all[400..]);
    assert_eq!(
        run()["records_in"],
        200,
        "the second run must start where the first committed"
    );
    assert_eq!(run()["records_in"], 0);
    assert_eq!(
        sorted_values(&read(&t.clean)),
        values_where(&all, |k| k != Some("heartbeat"))
    );
}

/// The group's committed offsets of `topic`'s partitions 0..partitions,
/// summed (a partition without a commit counts 0).
fn committed_total(group: &str, topic: &str, partitions: i32) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, std::time::Duration::from_secs(10))
        .unwrap();
    committed
        .elements()
        .iter()
        .filter_map(|e| e.offset().to_raw().filter(|&o| o >= 0))
        .sum()
}

#[test]
fn a_running_pipeline_commits_acknowledged_offsets_while_idle() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    let t = topics(2);
    let group = unique("group");
    let yaml = pipeline_yaml(&t, &step("filter-heartbeats"), "{ max_records: 40 }").replace(
        &format!("source: {{ topics: [{}] }}", t.input),
        &format!(
            "source: {{ topics: [{}], group: {group}, commit_interval: 200ms }}",
            t.input
        ),
    );
    let spec = spec(&yaml);
    assert_eq!(spec.source.commit_interval, Duration::from_millis(200));
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = stop.clone();
    let run = std::thread::spawn(move || {
        sluice::pipeline::run(&spec, sluice::pipeline::RunOptions::default(), &stopper)
    });
    let all = sample(300, 0);
    produce_sample(&t.input, &all);

    // No record arrives after the last batch: the commit of what is left
    // comes from the idle pipeline, not from a later batch or the stop.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut committed = 0;
    while committed < 300 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        committed = committed_total(&group, &t.input, 2);
    }
    assert!(!run.is_finished(), "the pipeline stopped on its own");
    assert_eq!(
        committed, 300,
        "every acknowledged offset committed while running"
    );
    stop.store(true, Ordering::Relaxed);
    run.join().unwrap().unwrap();
    assert_eq!(
        sorted_values(&read(&t.clean)),
        values_where(&all, |k| k != Some("heartbeat"))
    );
}
