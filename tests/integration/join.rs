//! Stream-stream joins over a real broker: a pipeline whose first step is a
//! join reads both sides' topics, buffers them in the host and writes what
//! the `json-join` guest makes of each pair and outer row. Expected results
//! are worked out by hand from the interval rule and the watermarks.

use serde_json::{Value, json};
use sluice_tests::kafka_tools;
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
    let text = join_spec("join-bad", "l", "r", "o", "d", "").replace(
        "outputs:",
        &format!(
            "  - module: {}\n    aggregate: {{ window: {{ tumbling: 1m }}, \
             watermark: {{ max_out_of_orderness: 1s }} }}\noutputs:",
            guest("count-sum").display()
        ),
    );
    let e = sluice::spec::parse(&text, std::path::Path::new("/")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "transforms[1].aggregate: an aggregate after a join is not supported yet: write the joined \
         records to a topic and aggregate them in a second pipeline"
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

/// One side's `n`-th event: keys over 150 ids, half a second apart, with a
/// few seconds of disorder (and now and then a record far behind, late).
fn side_event(side: u64, n: u64) -> (String, String) {
    let id = (n * if side == 0 { 1 } else { 7 }) % 150;
    let jitter = ((n * 37 + side * 11) % 9) as i64 - 4;
    let behind = if n % 97 == 50 { 60_000 } else { 0 };
    let t = n as i64 * 500 + jitter * 1_000 - behind;
    (format!("k{id}"), event(&format!("k{id}"), t))
}

fn produce_sides(left: &str, right: &str, range: std::ops::Range<u64>) {
    for (side, topic) in [(0, left), (1, right)] {
        let records: Vec<(String, String)> = range.clone().map(|n| side_event(side, n)).collect();
        let refs: Vec<(&str, &str)> = records
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        produce(topic, &refs);
    }
}

/// Exactly once through kill -9: a full-outer join with checkpoints, killed
/// at random moments (at least 20 times) while both sides are being
/// produced, then run to the end, writes exactly what one uninterrupted
/// run of the same input writes: every pair and outer row once, every late
/// record dead-lettered once.
#[test]
fn a_full_outer_join_killed_at_random_writes_exactly_what_one_uninterrupted_run_writes() {
    use std::process::{Command, Stdio};
    use std::time::Duration;

    use super::crash::{Rng, assert_same};

    const CHUNKS: u64 = 20;
    const KILLS: usize = 20;
    const PER_CHUNK: u64 = 300;
    let (left, right) = (unique("jk-left"), unique("jk-right"));
    let (out, dlq, ref_out, ref_dlq) = (
        unique("jk-out"),
        unique("jk-dlq"),
        unique("jk-ref-out"),
        unique("jk-ref-dlq"),
    );
    // One partition a side: a side's watermark (over all its partitions,
    // the pipeline running whole) then sees its records in one order, and
    // which are late is the same in every run.
    create_topics(&[&left, &right], 1);
    create_topics(&[&out, &dlq, &ref_out, &ref_dlq], 2);
    let dir = tempfile::tempdir().unwrap();
    let exactly_once = |checkpoints: &str| {
        format!(
            "checkpoint: {{ dir: {}, interval: 100ms }}\ndelivery: exactly-once\n",
            dir.path().join(checkpoints).display()
        )
    };
    let text = join_spec(
        "join-kill",
        &left,
        &right,
        &out,
        &dlq,
        &exactly_once("killed"),
    )
    .replace("max_out_of_orderness: 0s", "max_out_of_orderness: 3s")
    .replace(
        "within: { before: 1m, after: 1m }",
        "within: { before: 2s, after: 3s }",
    )
    .replace("max_records: 2,", "max_records: 50,");
    let spec_file = dir.path().join("join.yaml");
    std::fs::write(&spec_file, &text).unwrap();
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["run", "--until-caught-up"])
            .arg(&spec_file)
            .env("SLUICE_INSTANCE_ID", "join-kill")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut rng = Rng::new();
    let (mut kills, mut runs) = (0, 0);
    while kills < KILLS {
        if runs < CHUNKS {
            produce_sides(&left, &right, runs * PER_CHUNK..(runs + 1) * PER_CHUNK);
        }
        runs += 1;
        assert!(runs < 200, "could not kill the host {KILLS} times");
        let mut child = spawn();
        std::thread::sleep(Duration::from_millis(50 + rng.below(600)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            kills += 1;
        } else {
            let output = child.wait_with_output().unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    for n in runs..CHUNKS {
        produce_sides(&left, &right, n * PER_CHUNK..(n + 1) * PER_CHUNK);
    }
    let last = spawn().wait_with_output().unwrap();
    assert!(
        last.status.success(),
        "{}",
        String::from_utf8_lossy(&last.stderr)
    );

    // The reference: the same input, read once, never killed.
    let reference = join_spec(
        "join-ref",
        &left,
        &right,
        &ref_out,
        &ref_dlq,
        &exactly_once("ref"),
    )
    .replace("max_out_of_orderness: 0s", "max_out_of_orderness: 3s")
    .replace(
        "within: { before: 1m, after: 1m }",
        "within: { before: 2s, after: 3s }",
    )
    .replace("max_records: 2,", "max_records: 50,");
    run_until_caught_up(&spec(&reference));
    let want = sorted_values(&read(&ref_out));
    let outer = want.iter().filter(|v| v.contains("null")).count();
    assert!(
        want.len() > 1000 && outer > 100,
        "a join with pairs and outer rows: {} records, {outer} outer",
        want.len()
    );
    assert_same(&sorted_values(&read(&out)), &want, "joined records");
    let late = sorted_values(&read(&ref_dlq));
    // Late: behind the side's largest time so far by more than 3 s.
    let mut expected_late = 0;
    for side in 0..2 {
        let mut max: Option<i64> = None;
        for n in 0..CHUNKS * PER_CHUNK {
            let v: Value = serde_json::from_str(&side_event(side, n).1).unwrap();
            let t = v["t"].as_i64().unwrap();
            match max {
                Some(m) if t < m - 3_000 => expected_late += 1,
                _ => max = Some(max.map_or(t, |m| m.max(t))),
            }
        }
    }
    assert_eq!(late.len(), expected_late, "late records");
    assert_same(&sorted_values(&read(&dlq)), &late, "dead letters");
    eprintln!(
        "{kills} kills over {runs} runs; {} joined records, {outer} outer",
        want.len()
    );
}

/// The tutorial's last step as the demo runs it (`deploy/demo`): readings
/// of strategy C through strategy-map, then C's output joined with D's
/// input per sensor within 5 minutes (`strategy-join.yaml`, exactly once),
/// gives every (C, D) pair of a sensor within 5 minutes of each other,
/// once.
#[test]
fn the_demo_joins_c_output_with_d_input_within_five_minutes_per_sensor() {
    let (c_in, d_in, c_out, ready, dlq) = (
        unique("demo-c-in"),
        unique("demo-d-in"),
        unique("demo-c-out"),
        unique("demo-ready"),
        unique("demo-dlq"),
    );
    create_topics(&[&c_in, &d_in, &c_out, &ready, &dlq], 4);
    let (count, sensors) = (120, 6);
    kafka_tools::produce_readings(brokers(), &c_in, "C", count, sensors, 0, 10_000).unwrap();
    kafka_tools::produce_readings(brokers(), &d_in, "D", count, sensors, 120, 10_000).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let demo = |file: &str| {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../deploy/demo")
                .join(file),
        )
        .unwrap()
        .replace("127.0.0.1:9092", brokers())
        .replace(
            "../../target/wasm32-wasip2/guest/strategy_map.wasm",
            &guest("strategy-map").display().to_string(),
        )
        .replace(
            "../../target/wasm32-wasip2/guest/strategy_join.wasm",
            &guest("strategy-join").display().to_string(),
        )
        .replace("../../.sluice/demo", &dir.path().display().to_string())
        .replace("[c-input]", &format!("[{c_in}]"))
        .replace("[d-input]", &format!("[{d_in}]"))
        .replace("c-output", &c_out)
        .replace("d-input-ready", &ready)
        .replace("strategies-dlq", &dlq)
        .replace(
            "start: earliest",
            &format!("start: earliest\n  group: {}", unique("demo")),
        )
    };
    run_until_caught_up(&spec(&demo("strategy-c.yaml")));
    let summary = run_until_caught_up(&spec(&demo("strategy-join.yaml")));
    assert_eq!(summary.records_in, 2 * count);
    // Every (C, D) pair of a sensor within 5 minutes: readings n of each
    // strategy are at n * 10 s (D's 120 s later), sensor n mod 6.
    let rescale = |v: f64| match v {
        v if v < 30.0 => v * 2.0,
        v if v <= 60.0 => v * 1.5 + 10.0,
        v => v * v / 100.0,
    };
    let value = |strategy: &str, n: u64| ((n * 37 + strategy.len() as u64 * 11) % 100) as f64;
    let mut want = Vec::new();
    for d in 0..count {
        for c in (0..count).filter(|c| c % sensors == d % sensors) {
            let (tc, td) = (c as i64 * 10, d as i64 * 10 + 120);
            if tc - 300 <= td && td <= tc + 300 {
                want.push((d % sensors, c, d, rescale(value("C", c)), value("D", d)));
            }
        }
    }
    assert!(want.len() > 200, "{}", want.len());
    let mut got: Vec<(u64, u64, u64, f64, f64)> = read(&ready)
        .into_iter()
        .map(|r| {
            let v: Value = serde_json::from_str(r.value.as_deref().unwrap()).unwrap();
            let sensor: u64 = v["sensor"].as_str().unwrap()["sensor-".len()..]
                .parse()
                .unwrap();
            assert_eq!(r.key.as_deref(), v["sensor"].as_str());
            // Within the first hour of 2026-01-01: `2026-01-01T00:MM:SS.000Z`.
            let secs = |field: &str| {
                let t = v[field].as_str().unwrap();
                assert!(
                    t.starts_with("2026-01-01T00:") && t.ends_with(".000Z"),
                    "{t}"
                );
                t[14..16].parse::<i64>().unwrap() * 60 + t[17..19].parse::<i64>().unwrap()
            };
            let (c, d) = (secs("c_ts") / 10, (secs("ts") - 120) / 10);
            (
                sensor,
                c as u64,
                d as u64,
                v["c_value"].as_f64().unwrap(),
                v["value"].as_f64().unwrap(),
            )
        })
        .collect();
    got.sort_by(|a, b| a.partial_cmp(b).unwrap());
    want.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(got, want);
    assert!(read(&dlq).is_empty());
}

/// A join side may start elsewhere than the source's `start`: the right
/// side at `latest` skips what its topic held before the run, the left side
/// reads from the beginning.
#[test]
fn a_join_side_that_starts_at_latest_skips_what_its_topic_held_before() {
    for right_start in ["", ", start: latest"] {
        let (left, right, out, dlq) = (
            unique("join-sl"),
            unique("join-sr"),
            unique("join-sout"),
            unique("join-sdlq"),
        );
        create_topics(&[&left, &right, &out, &dlq], 1);
        produce(&left, &[("a", &event("a", 0))]);
        produce(&right, &[("a", &event("a", 1_000))]);
        let side =
            format!("right: {{ topics: [{right}], watermark: {{ max_out_of_orderness: 0s }}");
        let text = join_spec("join-start", &left, &right, &out, &dlq, "")
            .replace(&side, &format!("{side}{right_start}"));
        let summary = run_until_caught_up(&spec(&text));
        let pairs = read(&out).len();
        if right_start.is_empty() {
            assert_eq!(
                (summary.records_in, pairs),
                (2, 1),
                "both sides from the beginning"
            );
        } else {
            assert_eq!(
                (summary.records_in, pairs),
                (1, 0),
                "the right side at its end"
            );
        }
        assert!(read(&dlq).is_empty());
    }
}

/// A checkpoint's join state is only read back with the same join topics:
/// its records' sides come from them.
#[test]
fn join_state_checkpointed_with_other_topics_is_refused_with_the_reason() {
    let (left, right, other, out, dlq) = (
        unique("join-cl"),
        unique("join-cr"),
        unique("join-co"),
        unique("join-cout"),
        unique("join-cdlq"),
    );
    create_topics(&[&left, &right, &other, &out, &dlq], 1);
    produce(&left, &[("a", &event("a", 0))]);
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = format!(
        "checkpoint: {{ dir: {}, interval: 100ms }}\n",
        dir.path().join("checkpoints").display()
    );
    let first = join_spec("join-ckpt", &left, &right, &out, &dlq, &checkpoint);
    assert_eq!(run_until_caught_up(&spec(&first)).records_in, 1);
    let moved = first.replace(&format!("topics: [{right}]"), &format!("topics: [{other}]"));
    let e = sluice::pipeline::run(
        &spec(&moved),
        sluice::pipeline::RunOptions {
            until_caught_up: true,
        },
        &std::sync::atomic::AtomicBool::new(false),
    )
    .unwrap_err();
    assert!(
        format!("{e:#}").contains(&format!(
            "the checkpoint's join state was taken reading topics [\"{left}\", \"{right}\"], and \
             the join now reads [\"{left}\", \"{other}\"]: its records would not be on the same \
             sides; restore the spec's join topics, or start from a new checkpoint directory"
        )),
        "{e:#}"
    );
}
