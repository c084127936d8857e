//! Pausing a served pipeline through the broker: records that arrive while
//! it is paused wait in the topic (nothing is read, the lag shows them), the
//! pause survives a server restart, and resuming processes them, each
//! exactly once.

use std::time::Duration;

use sluice_tests::*;

use crate::serve::{Served, TOKEN, call, produce_pairs, sample, serve_filter_at, wait_for_status};
use crate::server::Server;

/// The sorted values of `topic` once it holds `n` records.
fn wait_for(topic: &str, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let values = sorted_values(&read(topic));
        if values.len() >= n || std::time::Instant::now() > deadline {
            return values;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_paused_pipeline_reads_nothing_until_resumed_even_across_a_restart() {
    paused_reads_nothing_until_resumed(1);
}

/// The same for a pipeline run as two tasks on two workers: each worker
/// pauses, and the pipeline is paused once both are; the progress has a
/// row per task.
#[test]
fn a_paused_pipeline_of_two_workers_reads_nothing_until_resumed() {
    paused_reads_nothing_until_resumed(2);
}

fn paused_reads_nothing_until_resumed(parallelism: usize) {
    let dir = tempfile::tempdir().unwrap();
    let Served {
        server,
        client,
        name,
        input,
        clean,
        dlq,
        module: _,
    } = serve_filter_at(dir.path(), "pause", 2, Some(TOKEN), parallelism);
    let (first, mut expected) = sample(0, 200);
    let (second, expected_second) = sample(200, 150);
    produce_pairs(&input, &first);
    assert_eq!(wait_for(&clean, expected.len()), expected);

    let (status, doc) = call(
        &client,
        "POST",
        &format!("/v1/pipelines/{name}/pause"),
        None,
    );
    assert_eq!(status, 200, "{doc}");
    assert_eq!(
        (&doc["status"], &doc["desired"]),
        (&"paused".into(), &"paused".into())
    );
    assert_eq!(doc["progress"]["totals"]["records_in"], 200, "{doc}");
    if parallelism > 1 {
        let tasks = doc["progress"]["tasks"].as_array().unwrap();
        let partitions: Vec<&serde_json::Value> = tasks.iter().map(|t| &t["partition"]).collect();
        assert_eq!(partitions, [0, 1], "{doc}");
        let records: u64 = tasks
            .iter()
            .map(|t| t["records_in"].as_u64().unwrap())
            .sum();
        assert_eq!(records, 200, "{doc}");
        assert!(tasks.iter().all(|t| t["stage"] == "source"), "{doc}");
    } else {
        assert!(doc["progress"]["tasks"].is_null(), "{doc}");
    }

    // Records arriving now wait, across a restart of the server. The
    // client is still polled while paused, so the lag shows them.
    produce_pairs(&input, &second);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, doc) = call(&client, "GET", &format!("/v1/pipelines/{name}"), None);
        assert_eq!(doc["status"], "paused", "{doc}");
        if doc["progress"]["lag"] == 150 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lag of a paused pipeline is not current: {doc}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    server.stop();
    let server = Server::start(dir.path(), &["--token", TOKEN]);
    let client = server.client(Some(TOKEN));
    wait_for_status(&server, &name, "paused");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        sorted_values(&read(&clean)),
        expected,
        "nothing read while paused"
    );

    let (status, doc) = call(
        &client,
        "POST",
        &format!("/v1/pipelines/{name}/resume"),
        None,
    );
    assert_eq!(status, 200, "{doc}");
    assert_eq!(
        (&doc["status"], &doc["desired"]),
        (&"running".into(), &"running".into())
    );
    expected.extend(expected_second);
    expected.sort();
    assert_eq!(wait_for(&clean, expected.len()), expected);
    assert_eq!(read(&dlq), vec![]);
    // The run since the restart read exactly the second round; the lag
    // comes from the client's statistics, reported once a second.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, doc) = call(&client, "GET", &format!("/v1/pipelines/{name}"), None);
        assert_eq!(doc["progress"]["totals"]["records_in"], 150, "{doc}");
        if doc["progress"]["lag"] == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "lag never 0: {doc}");
        std::thread::sleep(Duration::from_millis(200));
    }
    server.stop();
}
