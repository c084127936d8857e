//! Exactly-once edges, through the `sluice` binary and the broker: one
//! process per checkpoint directory, and pipelines of one name sharing an
//! output topic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sluice_tests::*;

/// A spec forwarding `input` to `output` (all but heartbeats), exactly once,
/// checkpointed in `dir/checkpoints`.
fn write_spec(dir: &Path, name: &str, input: &str, output: &str, dlq: &str) -> PathBuf {
    write_spec_with(dir, name, input, output, dlq, &guest("filter-heartbeats"))
}

/// The same, with `module` (the filter, or a copy of it) and a comma
/// separated list of input topics.
fn write_spec_with(
    dir: &Path,
    name: &str,
    input: &str,
    output: &str,
    dlq: &str,
    module: &Path,
) -> PathBuf {
    let yaml = format!(
        "name: {name}\nkafka: {{ brokers: \"{brokers}\" }}\nsource: {{ topics: [{input}], group: {group} }}\n\
         batch: {{ max_records: 1000, max_wait: 20ms }}\ntransforms:\n  - module: {module}\n\
         outputs: {{ default: {{ topic: {output} }} }}\ndead_letter: {{ topic: {dlq} }}\n\
         checkpoint: {{ dir: checkpoints, interval: 1h }}\ndelivery: exactly-once\n",
        brokers = brokers(),
        group = unique("eos-group"),
        module = module.display(),
    );
    let path = dir.join("pipeline.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn sluice_run(spec: &Path, failpoint: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args(["run", "--until-caught-up"])
        .arg(spec)
        .env("RUST_LOG", "warn")
        // A restart after a crash takes the crashed member's place at once.
        .env("SLUICE_INSTANCE_ID", "eos")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match failpoint {
        Some(f) => cmd.env("SLUICE_FAILPOINT", f),
        None => cmd.env_remove("SLUICE_FAILPOINT"),
    };
    cmd.output().unwrap()
}

fn run_ok(spec: &Path) {
    let out = sluice_run(spec, None);
    assert!(
        out.status.success(),
        "sluice run failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn events(prefix: &str, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            (
                format!("k{i}"),
                format!(r#"{{"event_type":"{prefix}-{i}"}}"#),
            )
        })
        .collect()
}

fn produce_events(topic: &str, events: &[(String, String)]) {
    let pairs: Vec<(&str, &str)> = events
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    produce(topic, &pairs);
}

/// A pipeline run whole (`parallelism: 1`) keeps one checkpoint for all
/// its partitions, which cannot be shared: a second process of it is
/// refused. (Run as tasks, a second process is a second member of the
/// group: see `group.rs`.)
#[test]
fn a_second_run_of_a_whole_pipelines_checkpoint_directory_fails_at_once() {
    let [input, output, dlq] = ["eos-lock-in", "eos-lock-out", "eos-lock-dlq"].map(unique);
    create_topics(&[&input, &output, &dlq], 1);
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "locked", &input, &output, &dlq);
    let yaml = std::fs::read_to_string(&spec).unwrap() + "parallelism: 1\n";
    std::fs::write(&spec, yaml).unwrap();
    // The first one runs until stopped.
    let mut first = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("run")
        .arg(&spec)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let task_dir = dir.path().join("checkpoints");
    let lineage = task_dir.join("LINEAGE");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lineage.exists() {
        assert!(
            Instant::now() < deadline,
            "the first run never opened its checkpoint directory"
        );
        assert!(first.try_wait().unwrap().is_none(), "the first run stopped");
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    let second = sluice_run(&spec, None);
    let elapsed = started.elapsed();
    first.kill().unwrap();
    first.wait().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success(),
        "the second run succeeded:\n{stderr}"
    );
    let expected = format!(
        "checkpoint directory {} is in use by another process",
        task_dir.display()
    );
    assert!(
        stderr.contains(&expected),
        "expected `{expected}` in:\n{stderr}"
    );
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    // Once the first is gone, the directory is usable again.
    run_ok(&spec);
}

#[test]
fn pipelines_of_one_name_sharing_a_topic_do_not_skip_each_others_records() {
    let [in_a, in_b, output, dlq] =
        ["eos-same-a", "eos-same-b", "eos-same-out", "eos-same-dlq"].map(unique);
    create_topics(&[&in_a, &in_b, &dlq], 1);
    create_topics(&[&output], 1);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let spec_a = write_spec(dir_a.path(), "same", &in_a, &output, &dlq);
    let spec_b = write_spec(dir_b.path(), "same", &in_b, &output, &dlq);
    // B checkpoints the (empty) output topic's end first.
    run_ok(&spec_b);
    // A writes epoch 1's records after B's checkpoint.
    let (a, b) = (events("a", 20), events("b", 20));
    produce_events(&in_a, &a);
    run_ok(&spec_a);
    // B logs its epoch 1 and dies before sending any of it.
    produce_events(&in_b, &b);
    let crashed = sluice_run(&spec_b, Some("before-outputs"));
    let stderr = String::from_utf8_lossy(&crashed.stderr);
    assert!(
        !crashed.status.success() && stderr.contains("failpoint before-outputs reached"),
        "expected a crash before the outputs: {}\n{stderr}",
        crashed.status
    );
    // B's recovery reads back A's records: none of them is B's.
    run_ok(&spec_b);
    let mut want: Vec<String> = a.iter().chain(&b).map(|(_, v)| v.clone()).collect();
    want.sort();
    assert_eq!(sorted_values(&read(&output)), want);
    assert!(read(&dlq).is_empty());
}

/// Runs `spec` so that it logs its next epoch and dies before sending it.
fn crash_before_outputs(spec: &Path) {
    let crashed = sluice_run(spec, Some("before-outputs"));
    let stderr = String::from_utf8_lossy(&crashed.stderr);
    assert!(
        !crashed.status.success() && stderr.contains("failpoint before-outputs reached"),
        "expected a crash before the outputs: {}\n{stderr}",
        crashed.status
    );
}

#[test]
fn a_replay_reads_its_topics_by_name_when_the_topic_list_changes() {
    let [first, second, output, dlq] = [
        "eos-topics-1",
        "eos-topics-2",
        "eos-topics-out",
        "eos-topics-dlq",
    ]
    .map(unique);
    create_topics(&[&first, &second, &output, &dlq], 1);
    let dir = tempfile::tempdir().unwrap();
    let module = guest("filter-heartbeats");
    let spec = write_spec_with(dir.path(), "topics", &first, &output, &dlq, &module);
    run_ok(&spec);
    let (a, b) = (events("first", 10), events("second", 5));
    produce_events(&first, &a);
    produce_events(&second, &b);
    crash_before_outputs(&spec);
    // The re-execution runs with `second` listed before `first`: index 0
    // of the logged epoch is still `first`.
    let both = format!("{second}, {first}");
    let spec = write_spec_with(dir.path(), "topics", &both, &output, &dlq, &module);
    run_ok(&spec);
    let mut want: Vec<String> = a.iter().chain(&b).map(|(_, v)| v.clone()).collect();
    want.sort();
    assert_eq!(sorted_values(&read(&output)), want);
    assert!(read(&dlq).is_empty());
}

#[test]
fn a_replay_with_another_module_is_refused_naming_the_step_and_digests() {
    let [input, output, dlq] = ["eos-module-in", "eos-module-out", "eos-module-dlq"].map(unique);
    create_topics(&[&input, &output, &dlq], 1);
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read(guest("filter-heartbeats")).unwrap();
    let module = dir.path().join("filter.wasm");
    std::fs::write(&module, &original).unwrap();
    let spec = write_spec_with(dir.path(), "modules", &input, &output, &dlq, &module);
    run_ok(&spec);
    produce_events(&input, &events("m", 10));
    crash_before_outputs(&spec);
    let changed = with_custom_section(original.clone(), "note", b"v2");
    std::fs::write(&module, &changed).unwrap();
    let out = sluice_run(&spec, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let sha = |b: &[u8]| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b))
    };
    let expected = format!(
        "epoch 1 ran step `filter` with module sha256 {}, but this run has {}",
        sha(&original),
        sha(&changed)
    );
    assert!(!out.status.success(), "the run succeeded:\n{stderr}");
    assert!(
        stderr.contains(&expected),
        "expected `{expected}` in:\n{stderr}"
    );
    assert!(read(&output).is_empty());
    // With the module it ran with, the epoch is re-executed.
    std::fs::write(&module, &original).unwrap();
    run_ok(&spec);
    assert_eq!(read(&output).len(), 10);
}

/// A Kafka admin client on the test broker, and a runtime to await it on.
fn admin() -> (
    rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext>,
    tokio::runtime::Runtime,
) {
    let admin = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (admin, rt)
}

/// Gives the empty `topic` `partitions` partitions. The test broker has no
/// CreatePartitions, so the topic is deleted and created again: for a
/// checkpoint that saw it empty, the same as partitions added.
fn grow_empty_topic(topic: &str, partitions: i32) {
    delete_topics(&[topic]);
    create_topics(&[topic], partitions);
}

#[test]
fn a_sink_partition_added_after_the_checkpoint_is_read_back() {
    let [input, output, dlq] = ["eos-grow-in", "eos-grow-out", "eos-grow-dlq"].map(unique);
    create_topics(&[&input, &output, &dlq], 1);
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "grow", &input, &output, &dlq);
    // The checkpoint knows partition 0 of the output only.
    run_ok(&spec);
    assert!(read(&output).is_empty());
    grow_empty_topic(&output, 2);
    let records = events("g", 40);
    produce_events(&input, &records);
    // Epoch 1 reaches both partitions; the run dies before its checkpoint.
    let crashed = sluice_run(&spec, Some("after-outputs"));
    let stderr = String::from_utf8_lossy(&crashed.stderr);
    assert!(
        !crashed.status.success() && stderr.contains("failpoint after-outputs reached"),
        "expected a crash before the checkpoint: {}\n{stderr}",
        crashed.status
    );
    let written = read(&output);
    assert!(
        written.iter().any(|r| r.partition == 1),
        "some records must have gone to the new partition"
    );
    // The re-execution finds all of them, in both partitions.
    run_ok(&spec);
    let mut want: Vec<String> = records.iter().map(|(_, v)| v.clone()).collect();
    want.sort();
    assert_eq!(sorted_values(&read(&output)), want);
}

/// Deletes the records of `topic`'s partition 0 before `offset`, or None
/// if the broker cannot.
fn delete_records_before(topic: &str, offset: i64) -> Option<()> {
    use rdkafka::admin::AdminOptions;
    use rdkafka::{Offset, TopicPartitionList};
    let (admin, rt) = admin();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(offset))
        .unwrap();
    let result = rt.block_on(admin.delete_records(
        &tpl,
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ));
    match result {
        Ok(tpl) if tpl.elements().iter().all(|e| e.error().is_ok()) => Some(()),
        other => {
            eprintln!("the broker cannot delete records: {other:?}");
            None
        }
    }
}

#[test]
fn records_removed_past_the_checkpoint_refuse_the_recovery() {
    let [input, output, dlq] = ["eos-gone-in", "eos-gone-out", "eos-gone-dlq"].map(unique);
    create_topics(&[&input, &output, &dlq], 1);
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "gone", &input, &output, &dlq);
    run_ok(&spec);
    produce_events(&input, &events("r", 10));
    let crashed = sluice_run(&spec, Some("after-outputs"));
    assert!(!crashed.status.success());
    assert_eq!(read(&output).len(), 10);
    delete_records_before(&output, 4).expect("the test broker deletes records");
    let started = Instant::now();
    let out = sluice_run(&spec, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the recovery succeeded:\n{stderr}");
    let expected = format!(
        "refusing to recover: sink partition {output}/0 starts at offset 4 now, but the records from offset 0 on must be read back"
    );
    assert!(
        stderr.contains(&expected),
        "expected `{expected}` in:\n{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}:\n{stderr}",
        started.elapsed()
    );
}
