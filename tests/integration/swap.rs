//! Module swaps of a served pipeline under load, through the broker: five
//! swaps (four of the transform, one of the aggregate) and one that fails
//! its trial batch and is rolled back, while records flow. Every record is
//! processed exactly once, by the version that was live at its batch, and
//! the windows' counts carry over the aggregate's swap.

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_tests::kafka_tools::{self, SampleOptions, sample_record};
use sluice_tests::*;

use crate::serve::{TOKEN, call, wait_for_doc, wait_for_status};
use crate::server::Server;

const MINUTE: i64 = 60_000;

/// The tagger component with its variant byte set to `variant`.
fn tagger(variant: u8) -> Vec<u8> {
    let mut wasm = fs::read(guest("tagger")).unwrap();
    let marker = b"SLUICE-VARIANT-1";
    let at: Vec<usize> = wasm
        .windows(marker.len())
        .enumerate()
        .filter(|(_, w)| w == marker)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "the marker is in the component exactly once");
    wasm[at[0] + marker.len() - 1] = variant;
    wasm
}

/// New topics `<prefix>-<suffix>`, `partitions` each.
fn topics<const N: usize>(prefix: &str, suffixes: [&str; N], partitions: i32) -> [String; N] {
    let names = suffixes.map(|s| unique(&format!("{prefix}-{s}")));
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    create_topics(&refs, partitions);
    names
}

/// A `sluice serve` with the tagger pushed once per variant, in order
/// (variant `variants[i]` is version `i + 1`).
fn serve_taggers(dir: &std::path::Path, variants: &[u8]) -> (Server, sluice::cli::client::Client) {
    let server = Server::start(dir, &["--token", TOKEN]);
    let client = server.client(Some(TOKEN));
    for &variant in variants {
        let (status, body) = call(
            &client,
            "POST",
            "/v1/modules/tagger",
            Some(&tagger(variant)),
        );
        assert_eq!(status, 201, "{body}");
    }
    (server, client)
}

/// Per (user, window start): count and sum of the sample events `range`.
fn expected_counts(o: &SampleOptions, n: u64) -> BTreeMap<(String, i64), (u64, f64)> {
    let mut groups: BTreeMap<(String, i64), (u64, f64)> = BTreeMap::new();
    for i in 0..n {
        let (user, v) = sample_record(o, i);
        let e: Value = serde_json::from_slice(&v).unwrap();
        let t = o.start_ms + i as i64 * 100;
        let g = groups.entry((user, t / MINUTE * MINUTE)).or_default();
        g.0 += 1;
        g.1 += e["amount"].as_f64().unwrap();
    }
    groups
}

#[test]
fn five_swaps_and_a_rollback_under_load_lose_and_duplicate_nothing() {
    five_swaps_and_a_rollback_under_load(1);
}

/// The same with the pipeline run as three tasks on two workers: each swap
/// is one round for every task (all or nothing), and the rolled-back
/// version runs no record in any task.
#[test]
fn five_swaps_and_a_rollback_of_a_pipeline_run_as_tasks_lose_and_duplicate_nothing() {
    five_swaps_and_a_rollback_under_load(2);
}

fn five_swaps_and_a_rollback_under_load(parallelism: usize) {
    let dir = tempfile::tempdir().unwrap();
    let [input, tagged, counts, dlq] = topics("swap", ["in", "tagged", "counts", "dlq"], 3);
    let (server, client) = serve_taggers(dir.path(), b"1234X5");
    let count_sum = fs::read(guest("count-sum")).unwrap();
    let count_sum_2 = with_custom_section(count_sum.clone(), "sluice-test", b"2");
    for wasm in [&count_sum, &count_sum_2] {
        let (status, body) = call(&client, "POST", "/v1/modules/count-sum", Some(wasm));
        assert_eq!(status, 201, "{body}");
    }

    let name = unique("swaps");
    let spec = format!(
        "name: {name}\nkafka: {{ brokers: \"{brokers}\" }}\nsource: {{ topics: [{input}] }}\n\
         batch: {{ max_records: 40, max_wait: 20ms }}\n\
         transforms:\n  - name: tag\n    module: tagger@1\n\
         \x20 - name: count\n    module: count-sum@1\n    aggregate:\n      window: {{ tumbling: 1m }}\n\
         \x20     watermark: {{ max_out_of_orderness: 1h, idle_timeout: 1h }}\n      output: update\n\
         outputs:\n  default: {{ topic: {counts} }}\n  tagged: {{ topic: {tagged} }}\n\
         dead_letter: {{ topic: {dlq} }}\nparallelism: {parallelism}\n",
        brokers = brokers(),
    );
    let (status, body) = call(&client, "POST", "/v1/pipelines", Some(spec.as_bytes()));
    assert_eq!(status, 201, "{body}");
    wait_for_status(&server, &name, "running");

    // 3000 events, 100 ms of event time apart (five one-minute windows),
    // produced in 30 rounds over about 7.5 s.
    let o = SampleOptions {
        count: 3000,
        ..SampleOptions::default()
    };
    let producer = {
        let (brokers, input) = (brokers().to_owned(), input.clone());
        std::thread::spawn(move || {
            for round in 0..30 {
                let range = round * 100..(round + 1) * 100;
                kafka_tools::produce_sample_range(&brokers, &input, &o, range).unwrap();
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    // Variant 1 runs records before the first swap asks for another.
    wait_for_doc(&server, &name, "its first records", |doc| {
        doc["progress"]["totals"]["records_in"]
            .as_u64()
            .is_some_and(|n| n > 0)
    });
    let swaps = [
        ("tag", "tagger@2"),
        ("tag", "tagger@3"),
        ("count", "count-sum@2"),
        ("tag", "tagger@4"),
        ("tag", "tagger@5"), // variant X: fails its trial and is rolled back
        ("tag", "tagger@6"),
    ];
    let path = format!("/v1/pipelines/{name}/swap");
    for (step, module) in swaps {
        std::thread::sleep(Duration::from_millis(900));
        let body = serde_json::json!({ "step": step, "module": module }).to_string();
        let (status, reply) = call(&client, "POST", &path, Some(body.as_bytes()));
        assert!(
            status == 200 || (module == "tagger@5" && status == 422),
            "swap to {module}: {status} {reply}\n{}",
            server.log()
        );
    }
    producer.join().unwrap();

    // Every record tagged exactly once.
    let deadline = Instant::now() + Duration::from_secs(60);
    let tagged_records = loop {
        let records = read(&tagged);
        if records.len() >= 3000 || Instant::now() > deadline {
            break records;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (_, doc) = call(&client, "GET", &format!("/v1/pipelines/{name}"), None);
    let log: Vec<Value> = doc["swaps"].as_array().unwrap().clone();
    let states: Vec<(String, String, String)> = log
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_owned(),
                format!("{}@{}", s["module"].as_str().unwrap(), s["to_version"]),
                s["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected_states: Vec<(String, String, String)> = [
        ("tag", "tagger@2", "live"),
        ("tag", "tagger@3", "live"),
        ("count", "count-sum@2", "live"),
        ("tag", "tagger@4", "live"),
        ("tag", "tagger@5", "rolled-back"),
        ("tag", "tagger@6", "live"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(states, expected_states, "{doc:#}");
    let reason = log[4]["reason"].as_str().unwrap();
    // Run as tasks, the reason names the task whose trial failed first.
    let reason = match reason.split_once(": the new module") {
        Some((task, rest)) if parallelism > 1 && task.starts_with("task ") => {
            format!("the new module{rest}")
        }
        _ => reason.to_owned(),
    };
    assert!(
        reason.starts_with("the new module failed on its first batch: trap: "),
        "{reason}"
    );
    // Versions in the store, and the variant each one stamps.
    let variant_of = |version: u64| match version {
        5 => "X",
        6 => "5",
        v => ["", "1", "2", "3", "4"][v as usize],
    };

    // The version live at each input record's batch, from the swaps' boundaries.
    let boundaries: Vec<(u64, BTreeMap<i32, i64>)> = log
        .iter()
        .filter(|s| s["step"] == "tag" && s["state"] == "live")
        .map(|s| {
            let at = s["boundary"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| (b[1].as_i64().unwrap() as i32, b[2].as_i64().unwrap()))
                .collect();
            (s["to_version"].as_u64().unwrap(), at)
        })
        .collect();
    let mut expected: Vec<String> = read(&input)
        .iter()
        .map(|r| {
            let version = boundaries
                .iter()
                .rev()
                .find(|(_, at)| r.offset >= at.get(&r.partition).copied().unwrap_or(0))
                .map_or(1, |(v, _)| *v);
            format!("{}|v{}", r.value.as_deref().unwrap(), variant_of(version))
        })
        .collect();
    expected.sort();
    let got = sorted_values(&tagged_records);
    if got != expected {
        let missing: Vec<&String> = expected.iter().filter(|v| !got.contains(v)).collect();
        let unexpected: Vec<&String> = got.iter().filter(|v| !expected.contains(v)).collect();
        panic!(
            "{} tagged records, {} expected; {} missing, e.g. {:?}; {} unexpected, e.g. {:?}\nswaps: {:#}",
            got.len(),
            expected.len(),
            missing.len(),
            &missing[..missing.len().min(3)],
            unexpected.len(),
            &unexpected[..unexpected.len().min(3)],
            doc["swaps"]
        );
    }
    for variant in ["1", "2", "3", "4", "5"] {
        assert!(
            expected
                .iter()
                .any(|v| v.ends_with(&format!("|v{variant}"))),
            "no record was run by variant {variant}: the swaps did not happen under load"
        );
    }
    assert_eq!(read(&dlq), vec![], "a failed trial dead-letters nothing");

    // The windows' final counts: exact, across the aggregate's swap.
    let want = expected_counts(&o, 3000);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut got: BTreeMap<(String, i64), (u64, f64)> = BTreeMap::new();
        for r in read(&counts) {
            let v: Value = serde_json::from_str(r.value.as_deref().unwrap()).unwrap();
            let key = (
                v["user_id"].as_str().unwrap().to_owned(),
                v["window_start"].as_i64().unwrap(),
            );
            let count = v["count"].as_u64().unwrap();
            let entry = got.entry(key).or_default();
            if count >= entry.0 {
                *entry = (count, v["sum"].as_f64().unwrap());
            }
        }
        let rounded = |m: &BTreeMap<(String, i64), (u64, f64)>| -> Vec<_> {
            m.iter()
                .map(|(k, (c, s))| (k.clone(), *c, (s * 100.0).round() as i64))
                .collect()
        };
        if rounded(&got) == rounded(&want) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "window counts differ:\n got {:?}\nwant {:?}",
            rounded(&got).iter().take(5).collect::<Vec<_>>(),
            rounded(&want).iter().take(5).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The pipeline document records what is live now.
    let modules: Vec<String> = doc["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}={}@{}",
                m["step"].as_str().unwrap(),
                m["module"].as_str().unwrap(),
                m["version"]
            )
        })
        .collect();
    assert_eq!(modules, ["tag=tagger@6", "count=count-sum@2"]);
    let figures: Vec<(f64, f64)> = log
        .iter()
        .filter_map(|s| Some((s["swap_ms"].as_f64()?, s["pause_ms"].as_f64()?)))
        .collect();
    eprintln!("swaps (swap_ms, pause_ms): {figures:?}");
    server.stop();
}

#[test]
fn a_swap_requested_during_a_trial_follows_it_at_the_next_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let [input, tagged, out, dlq] = topics("swap2", ["in", "tagged", "out", "dlq"], 1);
    let (server, client) = serve_taggers(dir.path(), b"123");
    let name = unique("swap2");
    let spec = format!(
        "name: {name}\nkafka: {{ brokers: \"{brokers}\" }}\nsource: {{ topics: [{input}] }}\n\
         batch: {{ max_records: 10, max_wait: 20ms }}\ntransforms:\n  - module: tagger@1\n\
         outputs:\n  default: {{ topic: {out} }}\n  tagged: {{ topic: {tagged} }}\n\
         dead_letter: {{ topic: {dlq} }}\n",
        brokers = brokers(),
    );
    let (status, body) = call(&client, "POST", "/v1/pipelines", Some(spec.as_bytes()));
    assert_eq!(status, 201, "{body}");
    wait_for_status(&server, &name, "running");

    // Idle: the first swap stays on trial; the second waits behind it.
    let path = format!("/v1/pipelines/{name}/swap");
    let (status, reply) = call(&client, "POST", &path, Some(br#"{"module": "tagger@2"}"#));
    assert_eq!(
        (status, &reply["swap"]["state"]),
        (200, &"trial".into()),
        "{reply}"
    );
    let second = {
        let (url, path) = (server.url.clone(), path.clone());
        std::thread::spawn(move || {
            let client = sluice::cli::client::Client::new(&url, Some(TOKEN.to_owned()));
            let started = Instant::now();
            let reply = call(&client, "POST", &path, Some(br#"{"module": "tagger@3"}"#));
            (reply, started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    produce(&input, &[("k", "a")]);
    let ((status, reply), waited) = second.join().unwrap();
    assert_eq!(status, 200, "{reply}");
    assert!(
        waited < Duration::from_secs(20),
        "the second swap waited {waited:?}"
    );
    produce(&input, &[("k", "b")]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while read(&tagged).len() < 2 {
        assert!(Instant::now() < deadline, "{}", server.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(sorted_values(&read(&tagged)), ["a|v2", "b|v3"]);
    server.stop();
}

#[test]
fn versions_on_trial_or_waiting_stay_held_until_their_swaps_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let [input, tagged, out, dlq] = topics("swap3", ["in", "tagged", "out", "dlq"], 1);
    let (server, client) = serve_taggers(dir.path(), b"1234");
    let name = unique("swap3");
    let spec = format!(
        "name: {name}\nkafka: {{ brokers: \"{brokers}\" }}\nsource: {{ topics: [{input}] }}\n\
         batch: {{ max_records: 10, max_wait: 20ms }}\ntransforms:\n  - module: tagger@1\n\
         outputs:\n  default: {{ topic: {out} }}\n  tagged: {{ topic: {tagged} }}\n\
         dead_letter: {{ topic: {dlq} }}\n",
        brokers = brokers(),
    );
    let (status, body) = call(&client, "POST", "/v1/pipelines", Some(spec.as_bytes()));
    assert_eq!(status, 201, "{body}");
    wait_for_status(&server, &name, "running");

    // Idle: version 2 stays on trial, and the swap to 3 waits behind it.
    let path = format!("/v1/pipelines/{name}/swap");
    let (status, reply) = call(&client, "POST", &path, Some(br#"{"module": "tagger@2"}"#));
    assert_eq!(
        (status, &reply["swap"]["state"]),
        (200, &"trial".into()),
        "{reply}"
    );
    let second = {
        let (url, path) = (server.url.clone(), path.clone());
        std::thread::spawn(move || {
            let client = sluice::cli::client::Client::new(&url, Some(TOKEN.to_owned()));
            call(&client, "POST", &path, Some(br#"{"module": "tagger@3"}"#))
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    // 1: what a failed trial falls back to; 2: on trial; 3: waiting. Only 4
    // is free.
    for version in 1..=3 {
        let (status, body) = call(
            &client,
            "DELETE",
            &format!("/v1/modules/tagger/{version}"),
            None,
        );
        assert_eq!(status, 409, "tagger@{version}: {body}");
        assert_eq!(
            body["error"],
            format!(
                "module `tagger@{version}` is used by pipeline(s) {name}; remove it from them first"
            ),
        );
    }
    let (status, body) = call(&client, "DELETE", "/v1/modules/tagger/4", None);
    assert_eq!(status, 200, "{body}");

    // One record: 2 goes live, 3 goes on trial; the next makes 3 live.
    produce(&input, &[("k", "a")]);
    let (status, reply) = second.join().unwrap();
    assert_eq!(status, 200, "{reply}");
    produce(&input, &[("k", "b")]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while read(&tagged).len() < 2 {
        assert!(Instant::now() < deadline, "{}", server.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(sorted_values(&read(&tagged)), ["a|v2", "b|v3"]);
    // Resolved: 1 and 2 are free, 3 runs; a restart finds it.
    for version in [1, 2] {
        let (status, body) = call(
            &client,
            "DELETE",
            &format!("/v1/modules/tagger/{version}"),
            None,
        );
        assert_eq!(status, 200, "tagger@{version}: {body}");
    }
    let (status, body) = call(&client, "DELETE", "/v1/modules/tagger/3", None);
    assert_eq!(status, 409, "{body}");
    let (status, doc) = call(&client, "POST", &format!("/v1/pipelines/{name}/stop"), None);
    assert_eq!((status, &doc["status"]), (200, &"stopped".into()), "{doc}");
    let (status, doc) = call(
        &client,
        "POST",
        &format!("/v1/pipelines/{name}/start"),
        None,
    );
    assert_eq!((status, &doc["status"]), (200, &"running".into()), "{doc}");
    assert_eq!(doc["modules"][0]["version"], 3, "{doc}");
    server.stop();
}
