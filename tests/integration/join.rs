//! Stream-stream joins over a real broker: a pipeline whose first step is a
//! join reads both sides' topics, buffers them in the host and writes what
//! the `json-join` guest makes of each pair and outer row. Expected results
//! are worked out by hand from the interval rule and the watermarks.

use serde_json::{Value, json};
use sluice_tests::*;

/// A pipeline joining `left` and `right` on `id` (times in field `t`,
/// epoch milliseconds) within one minute each way.
fn join_spec(name: &str, left: &str, right: &str, out: &str, dlq: &str, extra: &str) -> String {
    format!(
        r#"name: {name}
kafka: {{ brokers: "{brokers}" }}
source: {{ group: {group} }}
batch: {{ max_records: 2, max_wait: 20ms }}
transforms:
  - module: {module}
    config: {{ left_key: id, right_key: id, left_time: t, right_time: t }}
    join:
      left: {{ topics: [{left}], watermark: {{ max_out_of_orderness: 0s }} }}
      right: {{ topics: [{right}], watermark: {{ max_out_of_orderness: 0s }} }}
      within: {{ before: 1m, after: 1m }}
      type: full-outer
outputs: {{ default: {{ topic: {out} }} }}
dead_letter: {{ topic: {dlq} }}
{extra}"#,
        brokers = brokers(),
        group = unique("join-group"),
        module = guest("json-join").display(),
    )
}

fn event(id: &str, t: i64) -> String {
    json!({ "id": id, "t": t }).to_string()
}

/// The joined records of `topic` as (key, value) pairs, sorted by key, then
/// value text (where `null` sorts before an object).
fn joined(topic: &str) -> Vec<(Option<String>, Value)> {
    let mut v: Vec<(Option<String>, Value)> = read(topic)
        .into_iter()
        .map(|r| {
            let value = serde_json::from_str(r.value.as_deref().unwrap_or("null")).unwrap();
            (r.key, value)
        })
        .collect();
    v.sort_by_key(|(k, v)| (k.clone(), v.to_string()));
    v
}

#[test]
fn a_full_outer_join_pairs_within_the_interval_and_emits_the_unmatched_once_evicted() {
    let (left, right, out, dlq) = (
        unique("join-left"),
        unique("join-right"),
        unique("join-out"),
        unique("join-dlq"),
    );
    create_topics(&[&left, &right, &out, &dlq], 1);
    let minute = 60_000;
    // a: 30 s apart (a pair); b: 5 minutes apart (two outer rows); c: equal
    // times (a pair); x: 20 minutes on, moves the right watermark past
    // every left record; y: behind the right watermark by then (late).
    produce(
        &left,
        &[
            ("a", &event("a", 0)),
            ("b", &event("b", 0)),
            ("c", &event("c", 10 * minute)),
        ],
    );
    produce(
        &right,
        &[
            ("a", &event("a", 30_000)),
            ("b", &event("b", 5 * minute)),
            ("c", &event("c", 10 * minute)),
            ("x", &event("x", 20 * minute)),
            ("y", &event("y", 1_000)),
        ],
    );
    let summary = run_until_caught_up(&spec(&join_spec(
        "join-outer",
        &left,
        &right,
        &out,
        &dlq,
        "",
    )));
    assert_eq!(summary.records_in, 8);
    assert_eq!(summary.dead_lettered, 1);
    let side = |id: &str, t: i64| json!({ "id": id, "t": t });
    assert_eq!(
        joined(&out),
        [
            (
                Some("a".to_owned()),
                json!({ "left": side("a", 0), "right": side("a", 30_000) })
            ),
            // Right b was evicted once the left watermark (10m) passed 5m + 1m.
            (
                Some("b".to_owned()),
                json!({ "left": null, "right": side("b", 5 * minute) })
            ),
            // Left b once the right watermark passed 0 + 1m (on its arrival,
            // if the right side was read first).
            (
                Some("b".to_owned()),
                json!({ "left": side("b", 0), "right": null })
            ),
            (
                Some("c".to_owned()),
                json!({ "left": side("c", 10 * minute), "right": side("c", 10 * minute) })
            ),
        ]
    );
    // Right x is still buffered (the left watermark never passed 21m): no
    // outer row for it yet. y came after the right watermark reached 20m.
    let dead = read(&dlq);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].value.as_deref(), Some(event("y", 1_000).as_str()));
    assert_eq!(
        dead[0].headers["sluice.error"],
        format!(
            "late: event time 1000 is behind the Right side's watermark {} (the records it could \
             match may be gone)",
            20 * minute
        )
    );
    assert_eq!(dead[0].headers["sluice.source.topic"], right);
}

#[test]
fn a_join_run_as_tasks_dead_letters_a_record_whose_join_key_is_not_its_kafka_key() {
    let (left, right, out, dlq) = (
        unique("join-tl"),
        unique("join-tr"),
        unique("join-tout"),
        unique("join-tdlq"),
    );
    create_topics(&[&left, &right], 2);
    create_topics(&[&out, &dlq], 1);
    produce(&left, &[("k1", &event("k1", 0)), ("k2", &event("k2", 0))]);
    // The second record's Kafka key is not its join key.
    produce(
        &right,
        &[("k1", &event("k1", 1_000)), ("zz", &event("k2", 1_000))],
    );
    let text = join_spec("join-tasks", &left, &right, &out, &dlq, "parallelism: 2\n")
        .replace("type: full-outer", "type: inner");
    let summary = run_until_caught_up(&spec(&text));
    assert_eq!(summary.records_in, 4);
    assert_eq!(summary.tasks.len(), 2);
    let side = |id: &str, t: i64| json!({ "id": id, "t": t });
    assert_eq!(
        joined(&out),
        [(
            Some("k1".to_owned()),
            json!({ "left": side("k1", 0), "right": side("k1", 1_000) })
        )]
    );
    let dead = read(&dlq);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].key.as_deref(), Some("zz"));
    assert_eq!(
        dead[0].headers["sluice.error"],
        "join key is not the Kafka key: join key `k2`, Kafka key `zz`; run as tasks, a join needs \
         its topics keyed by the join key (or `parallelism: 1`)"
    );
}

#[test]
fn join_specs_that_cannot_work_are_refused_with_the_reason() {
    let text = join_spec(
        "join-bad",
        "l",
        "r",
        "o",
        "d",
        "checkpoint: { dir: /tmp/x }\n",
    );
    let e = sluice::spec::parse(&text, std::path::Path::new("/")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "checkpoint: join state is not checkpointed yet: run a join pipeline without a \
         `checkpoint` section (at-least-once: a restart reads the records the join held again)"
    );
    let text = join_spec("join-bad", "l", "r", "o", "d", "")
        .replace("source: {", "source: { topics: [l],");
    let e = sluice::spec::parse(&text, std::path::Path::new("/")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "source.topics: leave it out when the first step is a join: the join's `left.topics` and \
         `right.topics` are the topics read"
    );
}
