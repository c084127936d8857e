//! Guests that trap, loop or eat memory: only the offending record is
//! dead-lettered, with the reason; everything else is delivered and the
//! pipeline keeps going.

use sluice::batch::reason::Kind;
use sluice::pipeline::Summary;
use sluice_tests::*;

struct Case {
    clean: Vec<TopicRecord>,
    dlq: Vec<TopicRecord>,
    summary: sluice::pipeline::Summary,
}

/// 40 records `e0`..`e39` through faulty-guest with `config`, in batches of 8.
fn run_faulty(config: &str, limits: &str) -> Case {
    let (input, clean, dlq) = (unique("in"), unique("clean"), unique("dlq"));
    create_topics(&[&input, &clean, &dlq], 1);
    let values: Vec<String> = (0..40).map(|i| format!("e{i}")).collect();
    let pairs: Vec<(&str, &str)> = values.iter().map(|v| ("k", v.as_str())).collect();
    produce(&input, &pairs);
    let yaml = format!(
        "name: faults\nkafka: {{ brokers: \"{}\" }}\nsource: {{ topics: [{input}], group: {} }}\n\
         batch: {{ max_records: 8 }}\ntransforms:\n  - module: {}\n    config: {config}\n    limits: {limits}\n\
         outputs: {{ default: {{ topic: {clean} }} }}\ndead_letter: {{ topic: {dlq} }}\n",
        brokers(),
        unique("g"),
        guest("faulty-guest").display(),
    );
    let summary = run_until_caught_up(&spec(&yaml));
    Case {
        clean: read(&clean),
        dlq: read(&dlq),
        summary,
    }
}

fn all_but(poisoned: &str) -> Vec<String> {
    (0..40)
        .map(|i| format!("e{i}"))
        .filter(|v| v != poisoned)
        .collect()
}

fn values(records: &[TopicRecord]) -> Vec<String> {
    records.iter().map(|r| r.value.clone().unwrap()).collect()
}

#[test]
fn a_trap_dead_letters_only_the_poisoned_record() {
    let case = run_faulty("{ mode: trap, trigger: e13 }", "{}");
    assert_eq!(
        values(&case.clean),
        all_but("e13"),
        "order and content of everything else are kept"
    );
    assert_eq!(values(&case.dlq), vec!["e13"]);
    let reason = &case.dlq[0].headers["sluice.error"];
    assert!(
        reason.starts_with("trap: wasm `unreachable` instruction executed (guest panicked at "),
        "{reason}"
    );
    assert!(reason.ends_with(": poisoned record e13)"), "{reason}");
    assert_eq!(case.dlq[0].headers["sluice.source.offset"], "13");
    assert_eq!(case.summary.dead_letter_reasons.get(&Kind::Trap), Some(&1));
}

#[test]
fn an_infinite_loop_hits_the_deadline_and_the_pipeline_continues() {
    let case = run_faulty("{ mode: loop, trigger: e7 }", "{ deadline: 100ms }");
    assert_eq!(values(&case.clean), all_but("e7"));
    assert_eq!(values(&case.dlq), vec!["e7"]);
    assert_eq!(case.dlq[0].headers["sluice.error"], "deadline exceeded");
}

#[test]
fn unbounded_allocation_hits_the_memory_limit() {
    let case = run_faulty("{ mode: alloc, trigger: e21 }", "{ memory: 24 MiB }");
    assert_eq!(values(&case.clean), all_but("e21"));
    assert_eq!(values(&case.dlq), vec!["e21"]);
    assert_eq!(case.dlq[0].headers["sluice.error"], "memory limit");
}

#[test]
fn records_sent_to_an_unknown_output_are_dead_lettered() {
    let case = run_faulty("{ mode: bad-output }", "{}");
    assert!(case.clean.is_empty());
    assert_eq!(values(&case.dlq), all_but(""));
    assert!(
        case.dlq
            .iter()
            .all(|r| r.headers["sluice.error"] == "unknown output `nowhere`")
    );
}

/// Runs count-sum with `config` over `window` (a `window:` value) on
/// `values` (value, record timestamp), until caught up. Returns the summary
/// and the output and dead-letter topics.
fn run_count_sum(
    config: &str,
    window: &str,
    values: &[(String, i64)],
) -> (Summary, String, String) {
    let (input, out, dlq) = (unique("in"), unique("agg"), unique("dlq"));
    create_topics(&[&input, &out, &dlq], 1);
    let records = values.iter().map(|(v, t)| {
        (
            Some(b"k".to_vec()),
            Some(v.clone().into_bytes()),
            Some(*t),
            vec![],
        )
    });
    kafka_tools::produce(brokers(), &input, records).unwrap();
    let yaml = format!(
        "name: {}\nkafka: {{ brokers: \"{}\" }}\nsource: {{ topics: [{input}] }}\n\
         batch: {{ max_records: 100 }}\ntransforms:\n  - module: {}\n    config: {{ {config} }}\n\
         \x20   aggregate:\n      window: {window}\n      watermark: {{ max_out_of_orderness: 0s, idle_timeout: 1h }}\n\
         outputs: {{ default: {{ topic: {out} }} }}\ndead_letter: {{ topic: {dlq} }}\n",
        unique("agg-faults"),
        brokers(),
        guest("count-sum").display(),
    );
    (run_until_caught_up(&spec(&yaml)), out, dlq)
}

/// An aggregate whose `fold` panics on some records: those are
/// dead-lettered with the trap and its panic message; every window is
/// computed from the remaining records, and the pipeline keeps going.
#[test]
fn a_trap_in_an_aggregate_fold_dead_letters_only_the_poisoned_records() {
    fold_trap_dead_letters_only_the_poisoned_records("panic_on_amount: 13.13");
    // With the amount kept from `extract` (the SDK's `Parsed`): every retry
    // on a fresh instance extracts the batch again before folding.
    fold_trap_dead_letters_only_the_poisoned_records("panic_on_amount: 13.13, parse_once: true");
}

fn fold_trap_dead_letters_only_the_poisoned_records(config: &str) {
    // 30 events of 3 users in the first minute; every 7th has the unlucky
    // amount; then one event two minutes later closes the first window.
    let event = |i: u32, t: i64, amount: f64| {
        format!(r#"{{"user_id":"u{}","amount":{amount},"t":{t}}}"#, i % 3)
    };
    let mut values: Vec<(String, i64)> = (0..30u32)
        .map(|i| {
            let amount = if i % 7 == 3 { 13.13 } else { f64::from(i) };
            (event(i, 1_000 + i64::from(i), amount), 1_000 + i64::from(i))
        })
        .collect();
    values.push((event(0, 200_000, 1.0), 200_000));
    let (summary, out, dlq) = run_count_sum(config, "{ tumbling: 1m }", &values);

    let poisoned: Vec<u32> = (0..30).filter(|i| i % 7 == 3).collect();
    let dead = read(&dlq);
    assert_eq!(
        values_of(&dead),
        poisoned
            .iter()
            .map(|&i| event(i, 1_000 + i64::from(i), 13.13))
            .collect::<Vec<_>>()
    );
    for d in &dead {
        let reason = &d.headers["sluice.error"];
        assert!(
            reason.starts_with("trap: ") && reason.contains("unlucky amount 13.13"),
            "{reason}"
        );
    }
    assert_eq!(summary.dead_lettered, poisoned.len() as u64);
    // Per user: count and sum of the healthy records of the first minute.
    let mut expected: Vec<String> = (0..3u32)
        .map(|u| {
            let healthy: Vec<u32> = (0..30).filter(|i| i % 3 == u && i % 7 != 3).collect();
            let sum: u32 = healthy.iter().sum();
            format!(
                r#"{{"user_id":"u{u}","window_start":0,"window_end":60000,"count":{},"sum":{}.0}}"#,
                healthy.len(),
                sum
            )
        })
        .collect();
    expected.sort();
    assert_eq!(sorted_values(&read(&out)), expected);
}

fn values_of(records: &[TopicRecord]) -> Vec<String> {
    records.iter().map(|r| r.value.clone().unwrap()).collect()
}

/// An aggregate whose `finish` traps on one key's windows: that window's
/// accumulator goes to the dead-letter topic with the reason and its
/// window, the other windows' results are emitted, and the pipeline goes on.
#[test]
fn a_trap_in_an_aggregate_finish_dead_letters_the_window() {
    // 30 events of 3 users in the first minute, then one two minutes later
    // that closes it (its own window stays open).
    let event = |i: u32, t: i64| format!(r#"{{"user_id":"u{}","amount":{i},"t":{t}}}"#, i % 3);
    let mut values: Vec<(String, i64)> = (0..30u32)
        .map(|i| (event(i, 1_000 + i64::from(i)), 1_000 + i64::from(i)))
        .collect();
    values.push((event(0, 200_000), 200_000));
    let (summary, out, dlq) = run_count_sum("panic_in_finish_for: u1", "{ tumbling: 1m }", &values);

    let result = |u: u32| {
        let users: Vec<u32> = (0..30).filter(|i| i % 3 == u).collect();
        format!(
            r#"{{"user_id":"u{u}","window_start":0,"window_end":60000,"count":{},"sum":{}.0}}"#,
            users.len(),
            users.iter().sum::<u32>()
        )
    };
    assert_eq!(sorted_values(&read(&out)), [result(0), result(2)]);
    let dead = read(&dlq);
    assert_eq!(dead.len(), 1, "{dead:?}");
    let d = &dead[0];
    assert_eq!(d.key.as_deref(), Some("u1"));
    assert_eq!(d.timestamp, Some(59_999));
    let reason = &d.headers["sluice.error"];
    assert!(
        reason.starts_with("trap: ") && reason.contains("cannot finish the windows of u1"),
        "{reason}"
    );
    assert_eq!(
        (
            d.headers["sluice.window.start"].as_str(),
            d.headers["sluice.window.end"].as_str(),
            d.headers["sluice.step"].as_str(),
        ),
        ("0", "60000", "count-sum")
    );
    // The value is the window's accumulator, as the guest encoded it.
    let raw = rdkafka_value(&dlq);
    let acc: count_sum::CountSum = postcard::from_bytes(&raw).unwrap();
    assert_eq!(format!("{acc:?}"), "CountSum { count: 10, sum: 145.0 }");
    assert_eq!(summary.dead_lettered, 1);
    assert_eq!(summary.dead_letter_reasons[&Kind::Trap], 1, "{summary:?}");
}

/// The raw value bytes of the only record of `topic`.
fn rdkafka_value(topic: &str) -> Vec<u8> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("raw"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        // `poll` also returns early after handling other events (a rebalance).
        if let Some(message) = consumer.poll(std::time::Duration::from_millis(500)) {
            return message.unwrap().payload().unwrap_or_default().to_vec();
        }
    }
    panic!("no record in {topic} within 30 s");
}

/// Hopping windows of 2 minutes every minute merge two one-minute panes per
/// window. A `merge` that traps on one user's panes sends that window's
/// pane accumulators to the dead-letter topic; every other window's result
/// is emitted, including that user's other windows.
#[test]
fn a_trap_in_an_aggregate_merge_dead_letters_the_window_s_panes() {
    let event = |user: &str, amount: u32| format!(r#"{{"user_id":"{user}","amount":{amount}}}"#);
    let values = vec![
        (event("u0", 1), 1_000),
        (event("u1", 5), 2_000),
        (event("u0", 2), 61_000),
        (event("u1", 777), 62_000),
        (event("u2", 3), 400_000), // closes every window before
    ];
    let (summary, out, dlq) = run_count_sum(
        "panic_in_merge_on_sum: 777",
        "{ hopping: { size: 2m, slide: 1m } }",
        &values,
    );

    let result = |user: &str, start: i64, count: u32, sum: u32| {
        format!(
            r#"{{"user_id":"{user}","window_start":{start},"window_end":{},"count":{count},"sum":{sum}.0}}"#,
            start + 120_000
        )
    };
    let mut expected = vec![
        result("u0", -60_000, 1, 1),
        result("u0", 0, 2, 3),
        result("u0", 60_000, 1, 2),
        result("u1", -60_000, 1, 5),
        result("u1", 60_000, 1, 777),
    ];
    expected.sort();
    assert_eq!(sorted_values(&read(&out)), expected);
    let dead = read(&dlq);
    assert_eq!(dead.len(), 1, "{dead:?}");
    let d = &dead[0];
    assert_eq!(d.key.as_deref(), Some("u1"));
    let reason = &d.headers["sluice.error"];
    assert!(
        reason.starts_with("trap: ") && reason.contains("cannot merge a pane of sum 777"),
        "{reason}"
    );
    assert_eq!(
        (
            d.headers["sluice.window.start"].as_str(),
            d.headers["sluice.window.end"].as_str(),
        ),
        ("0", "120000")
    );
    // The value holds both panes' accumulators; the header says where each starts.
    let raw = rdkafka_value(&dlq);
    let offsets: Vec<usize> = d.headers["sluice.accumulator.offsets"]
        .split(',')
        .map(|o| o.parse().unwrap())
        .collect();
    assert_eq!(offsets.len(), 2);
    let panes: Vec<String> = [&raw[offsets[0]..offsets[1]], &raw[offsets[1]..]]
        .iter()
        .map(|bytes| {
            format!(
                "{:?}",
                postcard::from_bytes::<count_sum::CountSum>(bytes).unwrap()
            )
        })
        .collect();
    assert_eq!(
        panes,
        [
            "CountSum { count: 1, sum: 5.0 }",
            "CountSum { count: 1, sum: 777.0 }"
        ]
    );
    assert_eq!(summary.dead_lettered, 1);
}
