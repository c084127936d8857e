//! Records the host cannot carry as they are: a header name that is not
//! UTF-8, an output larger than the producer may send, an event time far
//! ahead of the clock. Each is dead-lettered (or quarantined) with its
//! reason, and the pipeline goes on.

use sluice::batch::reason::Kind;
use sluice::sink::{EosId, SinkPosition, written_since};
use sluice_tests::*;

/// A header name that is not UTF-8 (Latin-1 "café" and a stray byte).
const BAD_NAME: &[u8] = b"caf\xe9\xff";

/// `e0`..`e9`, `e4` with a header name that is not UTF-8.
fn with_bad_header() -> Vec<RawRecord> {
    (0..10)
        .map(|i| {
            let headers: &[(&[u8], &[u8])] = if i == 4 {
                &[(b"trace", b"t4"), (BAD_NAME, b"\x00v\xff")]
            } else {
                &[(b"trace", b"ok")]
            };
            RawRecord::new(&format!("e{i}"), 1000 + i, headers)
        })
        .collect()
}

fn passthrough_spec(input: &str, clean: &str, dlq: &str, extra: &str) -> String {
    format!(
        "name: {}\nkafka: {{ brokers: \"{}\" }}\nsource: {{ topics: [{input}], group: {} }}\n\
         batch: {{ max_records: 4 }}\ntransforms:\n  - module: {}\n    config: {{ mode: passthrough }}\n\
         outputs: {{ default: {{ topic: {clean} }} }}\ndead_letter: {{ topic: {dlq} }}\n{extra}",
        unique("records"),
        brokers(),
        unique("g"),
        guest("faulty-guest").display(),
    )
}

#[test]
fn a_header_name_that_is_not_utf8_is_dead_lettered_with_its_bytes() {
    let (input, clean, dlq) = (unique("in"), unique("clean"), unique("dlq"));
    create_topics(&[&input, &clean, &dlq], 1);
    produce_raw(&input, &with_bad_header());
    let summary = run_until_caught_up(&spec(&passthrough_spec(&input, &clean, &dlq, "")));

    let clean = read_raw(&clean);
    let values: Vec<String> = clean.iter().map(RawRecord::text).collect();
    assert_eq!(
        values,
        ["e0", "e1", "e2", "e3", "e5", "e6", "e7", "e8", "e9"]
    );
    assert!(
        clean
            .iter()
            .all(|r| r.headers == [(b"trace".to_vec(), Some(b"ok".to_vec()))])
    );

    let dlq = read_raw(&dlq);
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    let dead = &dlq[0];
    assert_eq!(dead.text(), "e4");
    assert_eq!(dead.timestamp, Some(1004));
    assert_eq!(
        dead.headers[..2],
        [
            (b"trace".to_vec(), Some(b"t4".to_vec())),
            (BAD_NAME.to_vec(), Some(b"\x00v\xff".to_vec())),
        ],
        "the original headers come first, byte for byte"
    );
    assert_eq!(
        dead.header("sluice.error").as_deref(),
        Some("header key is not UTF-8")
    );
    assert_eq!(dead.header("sluice.source.offset").as_deref(), Some("4"));
    assert_eq!(summary.records_in, 10);
    assert_eq!(summary.dead_lettered, 1);
    assert_eq!(
        summary.dead_letter_reasons.get(&Kind::HeaderNotUtf8),
        Some(&1)
    );
}

#[test]
fn without_transforms_a_header_name_that_is_not_utf8_is_copied_as_it_is() {
    let (input, clean, dlq) = (unique("in"), unique("clean"), unique("dlq"));
    create_topics(&[&input, &clean, &dlq], 1);
    produce_raw(&input, &with_bad_header());
    let yaml = format!(
        "name: {}\nkafka: {{ brokers: \"{}\" }}\nsource: {{ topics: [{input}], group: {} }}\n\
         outputs: {{ default: {{ topic: {clean} }} }}\ndead_letter: {{ topic: {dlq} }}\n",
        unique("copy"),
        brokers(),
        unique("g"),
    );
    run_until_caught_up(&spec(&yaml));
    let copied = read_raw(&clean);
    let original = with_bad_header();
    assert_eq!(copied.len(), 10);
    for (c, o) in copied.iter().zip(&original) {
        assert_eq!((&c.value, &c.headers), (&o.value, &o.headers));
    }
    assert!(read_raw(&dlq).is_empty());
}

#[test]
fn the_exactly_once_read_back_reads_past_a_header_name_that_is_not_utf8() {
    let sink = unique("sink");
    create_topics(&[&sink], 1);
    let lineage = "00c0ffee00c0ffee";
    let id = |input: u32| format!("{lineage}/3/{input}.0");
    let (id0, id1) = (id(0), id(1));
    produce_raw(
        &sink,
        &[
            RawRecord::new("a", 1, &[(BAD_NAME, b"x"), (b"sluice.eos", id0.as_bytes())]),
            RawRecord::new("b", 2, &[(b"sluice.eos", id1.as_bytes())]),
        ],
    );
    let yaml = passthrough_spec("unused", &sink, "unused-dlq", "");
    let ids = written_since(
        &spec(&yaml).kafka,
        lineage,
        &[sink.as_str()],
        &[SinkPosition {
            topic: sink.clone(),
            partition: 0,
            offset: 0,
        }],
    )
    .unwrap();
    let expected = [0, 1].map(|input| EosId {
        epoch: 3,
        input,
        index: 0,
    });
    assert_eq!(ids, expected.into_iter().collect());
}

/// One record stamped ten days ahead among records of one minute of 2026,
/// through event-window-agg with the default horizon (1h). (The Kafka
/// timestamps stay in the past: brokers may refuse future ones.)
#[test]
fn an_event_time_far_ahead_is_dead_lettered_and_the_watermark_ignores_it() {
    const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    let (input, out, dlq) = (unique("in"), unique("agg"), unique("dlq"));
    create_topics(&[&input, &out, &dlq], 1);
    let far = kafka_tools::now_ms() + 10 * 86_400_000;
    let event = |n: u32, t: i64| {
        format!(
            r#"{{"event_id":"e{n}","user_id":"u0","event_type":"click","timestamp":"{}","amount":{n}}}"#,
            rfc3339(t)
        )
    };
    let events = [
        event(1, T0 + 1_000),
        event(2, T0 + 2_000),
        event(100, far),
        event(3, T0 + 3_000),
        // Closes the first minute: only because the far record did not
        // move the watermark.
        event(4, T0 + 200_000),
    ];
    let produced = events.iter().enumerate().map(|(i, v)| {
        (
            Some(b"k".to_vec()),
            Some(v.clone().into_bytes()),
            Some(1_000 + i as i64),
            vec![],
        )
    });
    kafka_tools::produce(brokers(), &input, produced).unwrap();
    let yaml = format!(
        "name: {}\nkafka: {{ brokers: \"{}\" }}\nsource: {{ topics: [{input}] }}\n\
         batch: {{ max_records: 2 }}\ntransforms:\n  - module: {}\n\
         \x20   aggregate:\n      window: {{ tumbling: 1m }}\n      watermark: {{ max_out_of_orderness: 0s, idle_timeout: 1h }}\n\
         outputs: {{ default: {{ topic: {out} }} }}\ndead_letter: {{ topic: {dlq} }}\n",
        unique("ahead"),
        brokers(),
        guest("event-window-agg").display(),
    );
    let summary = run_until_caught_up(&spec(&yaml));

    let dead = read(&dlq);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].value.as_deref(), Some(events[2].as_str()));
    assert_eq!(
        dead[0].headers["sluice.error"],
        format!(
            "event time too far ahead: {} is more than 1h past the processing time",
            rfc3339(far)
        )
    );
    assert_eq!(dead[0].headers["sluice.source.offset"], "2");
    let results: Vec<serde_json::Value> = read(&out)
        .iter()
        .map(|r| serde_json::from_str(r.value.as_deref().unwrap()).unwrap())
        .collect();
    assert_eq!(
        results,
        [serde_json::json!({
            "window_start": "2026-01-01T00:00:00.000Z", "window_end": "2026-01-01T00:01:00.000Z",
            "event_type": "click", "count": 3, "sum_amount": 6.0, "unique_users": 1,
        })]
    );
    assert_eq!(summary.windows.unwrap().watermark, Some(T0 + 200_000));
    assert_eq!(
        summary.dead_letter_reasons.get(&Kind::TooFarAhead),
        Some(&1)
    );
}

fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64),
    )
    .to_string()
}

/// `faulty-guest` in `double` mode on values containing `BIG`: those
/// records' outputs are twice their size.
fn doubling_spec(input: &str, clean: &str, dlq: &str, name: &str, extra: &str) -> String {
    format!(
        "name: {name}\nkafka: {{ brokers: \"{}\" }}\nsource: {{ topics: [{input}], group: {name} }}\n\
         batch: {{ max_records: 2 }}\ntransforms:\n  - module: {}\n    config: {{ mode: double, trigger: BIG }}\n\
         outputs: {{ default: {{ topic: {clean} }} }}\ndead_letter: {{ topic: {dlq} }}\n{extra}",
        brokers(),
        guest("faulty-guest").display(),
    )
}

fn big(len: usize) -> String {
    format!("BIG{}", "x".repeat(len - 3))
}

#[test]
fn an_output_too_large_for_the_producer_dead_letters_its_source_record() {
    let (input, clean, dlq) = (unique("in"), unique("clean"), unique("dlq"));
    create_topics(&[&input, &clean, &dlq], 1);
    let values = [
        "e0".to_owned(),
        "e1".to_owned(),
        big(600_000),
        "e3".to_owned(),
    ];
    let records: Vec<RawRecord> = values
        .iter()
        .map(|v| RawRecord::new(v, 1_000, &[]))
        .collect();
    produce_raw(&input, &records);
    let summary = run_until_caught_up(&spec(&doubling_spec(
        &input,
        &clean,
        &dlq,
        &unique("big"),
        "",
    )));

    let out: Vec<String> = read_raw(&clean).iter().map(RawRecord::text).collect();
    assert_eq!(out, ["e0", "e1", "e3"]);
    let dead = read_raw(&dlq);
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].text(),
        values[2],
        "the source record, not the output"
    );
    // Framing (36) + key (1) + the doubled value, against librdkafka's default.
    assert_eq!(
        dead[0].header("sluice.error").as_deref(),
        Some("output record too large: 1200037 bytes, the producer's limit is 1000000")
    );
    assert_eq!(dead[0].header("sluice.output").as_deref(), Some("default"));
    assert_eq!(dead[0].header("sluice.source.offset").as_deref(), Some("2"));
    assert_eq!(summary.dead_lettered, 1);
    assert_eq!(summary.dead_letter_reasons.get(&Kind::TooLarge), Some(&1));
    assert_eq!(summary.quarantined, 0);
}

#[test]
fn a_record_whose_dead_letter_cannot_fit_is_quarantined_once() {
    let (input, clean, dlq) = (unique("in"), unique("clean"), unique("dlq"));
    create_topics(&[&input, &clean, &dlq], 1);
    let dir = tempfile::tempdir().unwrap();
    let name = unique("quarantine");
    let huge = big(999_900);
    let records: Vec<RawRecord> = ["e0", &huge, "e2"]
        .iter()
        .map(|v| RawRecord::new(v, 1_000, &[]))
        .collect();
    produce_raw(&input, &records);
    let checkpoint = format!(
        "checkpoint: {{ dir: {} }}\n",
        dir.path().join("cp").display()
    );
    let yaml = doubling_spec(&input, &clean, &dlq, &name, &checkpoint);
    let summary = run_until_caught_up(&spec(&yaml));

    let out: Vec<String> = read_raw(&clean).iter().map(RawRecord::text).collect();
    assert_eq!(out, ["e0", "e2"], "the pipeline goes on past it");
    let dead: Vec<_> = read_raw(&dlq)
        .iter()
        .map(|r| (r.text().len(), r.header("sluice.error")))
        .collect();
    assert!(dead.is_empty(), "{dead:?}");
    assert_eq!(summary.quarantined, 1);

    let reason = "output record too large: 1999837 bytes, the producer's limit is 1000000";
    let dead_letter_headers = [
        ("sluice.error", reason),
        ("sluice.pipeline", &name),
        ("sluice.output", "default"),
        ("sluice.source.topic", &input),
        ("sluice.source.partition", "0"),
        ("sluice.source.offset", "1"),
    ];
    let bytes = sluice::sink::wire_size(
        1,
        huge.len(),
        dead_letter_headers.iter().map(|(n, v)| (n.len(), v.len())),
    );
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let expected = serde_json::json!({
        "pipeline": name, "topic": input, "partition": 0, "offset": 1, "reason": reason,
        "bytes": bytes, "limit": 1_000_000, "key_len": 1, "value_len": huge.len(),
        "key": b64(b"k"), "value": b64(&huge.as_bytes()[..4096]),
    });
    let file = dir.path().join("cp/quarantine/quarantine.jsonl");
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, [expected]);

    // A restart resumes after it: nothing is read, nothing quarantined again.
    let again = run_until_caught_up(&spec(&yaml));
    assert_eq!((again.records_in, again.quarantined), (0, 0));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
}
