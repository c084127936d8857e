//! Pipelines run as tasks on several workers (`parallelism`): the same
//! records, the same windows, exactly once, as a pipeline run whole; and
//! the checkpoint directories of the two modes kept apart.

use std::path::Path;

use std::sync::atomic::AtomicBool;

use sluice::pipeline::RunOptions;
use sluice_tests::kafka_tools::{SampleOptions, produce_sample};
use sluice_tests::*;

/// A filter pipeline (all but heartbeats) over `input`, at `parallelism`.
fn filter_spec(name: &str, input: &str, output: &str, dlq: &str, parallelism: &str) -> String {
    format!(
        "name: {name}\nkafka: {{ brokers: \"{brokers}\" }}\n\
         source: {{ topics: [{input}], group: {group} }}\n\
         batch: {{ max_records: 100, max_wait: 20ms }}\n\
         transforms:\n  - module: {module}\n\
         outputs: {{ default: {{ topic: {output} }} }}\ndead_letter: {{ topic: {dlq} }}\n\
         parallelism: {parallelism}\n",
        brokers = brokers(),
        group = unique("tasks-group"),
        module = guest("filter-heartbeats").display(),
    )
}

/// Per user and minute (the Kafka key is the user): count and sum, exactly
/// once, with checkpoints in `dir`.
fn windows_spec(
    dir: &Path,
    name: &str,
    input: &str,
    output: &str,
    dlq: &str,
    parallelism: &str,
) -> String {
    format!(
        r#"name: {name}
kafka: {{ brokers: "{brokers}" }}
source: {{ topics: [{input}], group: {group} }}
batch: {{ max_records: 200, max_wait: 20ms }}
transforms:
  - module: {module}
    aggregate:
      window: {{ tumbling: 1m }}
      watermark: {{ max_out_of_orderness: 5s, idle_timeout: 1h }}
      output: append
outputs: {{ default: {{ topic: {output} }} }}
dead_letter: {{ topic: {dlq} }}
checkpoint: {{ dir: {checkpoints}, interval: 200ms }}
delivery: exactly-once
parallelism: {parallelism}
"#,
        brokers = brokers(),
        group = unique("tasks-group"),
        module = guest("count-sum").display(),
        checkpoints = dir.join("checkpoints").display(),
    )
}

fn expected_filtered(o: &SampleOptions) -> Vec<String> {
    let mut v: Vec<String> = (0..o.count)
        .map(|n| String::from_utf8(kafka_tools::sample_record(o, n).1).unwrap())
        .filter(|v| !v.contains(r#""event_type":"heartbeat""#))
        .collect();
    v.sort();
    v
}

#[test]
fn four_workers_over_eight_partitions_deliver_every_record_once() {
    let (input, output, dlq) = (unique("tasks-in"), unique("tasks-out"), unique("tasks-dlq"));
    create_topics(&[&input], 8);
    create_topics(&[&output, &dlq], 2);
    let o = SampleOptions {
        count: 5000,
        users: 200,
        ..SampleOptions::default()
    };
    produce_sample(brokers(), &input, &o).unwrap();
    let spec = spec(&filter_spec("tasks-filter", &input, &output, &dlq, "4"));
    let summary = run_until_caught_up(&spec);
    let want = expected_filtered(&o);
    assert_eq!(summary.records_in, o.count);
    assert_eq!(summary.outputs["default"], want.len() as u64);
    assert_eq!(summary.dropped, o.count - want.len() as u64);
    // `sluice run` prints a row per task: each read its own partition.
    let partitions: Vec<i32> = summary.tasks.iter().map(|t| t.partition).collect();
    assert_eq!(partitions, (0..8).collect::<Vec<_>>());
    let records: Vec<u64> = summary.tasks.iter().map(|t| t.records_in).collect();
    let mut per_partition = vec![0u64; 8];
    for r in read(&input) {
        per_partition[r.partition as usize] += 1;
    }
    assert_eq!(records, per_partition);
    assert_eq!(
        summary.tasks.iter().map(|t| t.outputs).sum::<u64>(),
        want.len() as u64
    );
    assert_eq!(sorted_values(&read(&output)), want);
    assert!(read(&dlq).is_empty());
}

/// The sample events, then the flush records (see `produce_flush`).
fn produce_with_flush(input: &str, o: &SampleOptions) {
    produce_sample(brokers(), input, o).unwrap();
    produce_flush(brokers(), input, o);
}

fn run(spec: &sluice::spec::PipelineSpec) -> anyhow::Result<sluice::pipeline::Summary> {
    sluice::pipeline::run(
        spec,
        RunOptions {
            until_caught_up: true,
        },
        &AtomicBool::new(false),
    )
}

#[test]
fn windows_at_four_workers_are_the_windows_at_one() {
    let input = unique("tasks-win-in");
    let (one, four, dlq) = (
        unique("tasks-one"),
        unique("tasks-four"),
        unique("tasks-dlq"),
    );
    create_topics(&[&input], 4);
    create_topics(&[&one, &four, &dlq], 2);
    let o = SampleOptions {
        count: 6000,
        users: 100,
        ..SampleOptions::default()
    };
    produce_with_flush(&input, &o);
    let (dir_one, dir_four) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let whole = run_until_caught_up(&spec(&windows_spec(
        dir_one.path(),
        "tasks-one",
        &input,
        &one,
        &dlq,
        "1",
    )));
    let tasks = run_until_caught_up(&spec(&windows_spec(
        dir_four.path(),
        "tasks-four",
        &input,
        &four,
        &dlq,
        "4",
    )));
    let (got, want) = (sorted_values(&read(&four)), sorted_values(&read(&one)));
    // One result per (user, minute) of the sample; the flush windows stay open.
    let windows: std::collections::BTreeSet<(String, i64)> = (0..o.count)
        .map(|n| {
            let (user, _) = kafka_tools::sample_record(&o, n);
            (user, (o.start_ms + n as i64 * 100) / 60_000)
        })
        .collect();
    assert_eq!(want.len(), windows.len());
    assert_eq!(got, want);
    assert_eq!(tasks.records_in, whole.records_in);
    assert_eq!(tasks.outputs, whole.outputs);
    assert!(read(&dlq).is_empty());
    let mut task_dirs: Vec<String> = std::fs::read_dir(dir_four.path().join("checkpoints/tasks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    task_dirs.sort();
    assert_eq!(task_dirs, ["00000", "00001", "00002", "00003"]);

    // Each mode refuses the other's checkpoint directory, saying why.
    let error = run(&spec(&windows_spec(
        dir_one.path(),
        "tasks-one",
        &input,
        &one,
        &dlq,
        "4",
    )))
    .unwrap_err();
    assert_eq!(
        format!("{error:#}"),
        format!(
            "the checkpoint directory {} holds checkpoints of the whole pipeline (written with \
             parallelism 1); a pipeline with parallelism other than 1 keeps one per task, and the \
             whole pipeline's state cannot be split between tasks: set `parallelism: 1` to \
             continue from it, or remove the directory to start over",
            dir_one.path().join("checkpoints").display()
        )
    );
    let error = run(&spec(&windows_spec(
        dir_four.path(),
        "tasks-four",
        &input,
        &four,
        &dlq,
        "1",
    )))
    .unwrap_err();
    assert_eq!(
        format!("{error:#}"),
        format!(
            "the checkpoint directory {root} holds per-task checkpoints (written with parallelism \
             other than 1) under {root}/tasks; they cannot be joined into one for parallelism 1: set \
             `parallelism` as before to continue from them, or remove the directory to start over",
            root = dir_four.path().join("checkpoints").display()
        )
    );
    // Another number of workers takes the same tasks: nothing new to do.
    let again = run(&spec(&windows_spec(
        dir_four.path(),
        "tasks-four",
        &input,
        &four,
        &dlq,
        "2",
    )))
    .unwrap();
    assert_eq!(again.records_in, 0);
    assert_eq!(sorted_values(&read(&four)), want);
}

#[test]
fn an_aggregate_keyed_other_than_by_kafka_key_is_refused_when_run_as_tasks() {
    let (input, output, dlq) = (
        unique("tasks-key-in"),
        unique("tasks-key-out"),
        unique("tasks-dlq"),
    );
    // One partition: one task, whose first record is sample 0.
    create_topics(&[&input, &output, &dlq], 1);
    let o = SampleOptions {
        count: 10,
        users: 5,
        ..SampleOptions::default()
    };
    produce_sample(brokers(), &input, &o).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // event-window-agg groups by event type; the records are keyed by user.
    let yaml = windows_spec(dir.path(), "tasks-key", &input, &output, &dlq, "2").replace(
        &guest("count-sum").display().to_string(),
        &guest("event-window-agg").display().to_string(),
    );
    let error = format!("{:#}", run(&spec(&yaml)).unwrap_err());
    let (user, value) = kafka_tools::sample_record(&o, 0);
    let event: serde_json::Value = serde_json::from_slice(&value).unwrap();
    assert_eq!(
        error,
        format!(
            "worker 0: a step failed; the batch is not committed: with parallelism other than 1, \
             each task aggregates the records of its own \
             partitions, so the aggregate key must be the record's Kafka key; the record at \
             partition 0 offset 0 has Kafka key `{user}` and aggregate key `{}`. Add \
             `repartition: true` to the aggregate step (the records are re-keyed through a \
             repartition topic), or run this pipeline with `parallelism: 1`",
            event["event_type"].as_str().unwrap()
        )
    );
    assert!(read(&output).is_empty());
}

/// Two source topics read together: task `p` owns partition `p` of both.
#[test]
fn a_task_reads_its_partition_of_every_source_topic() {
    let (a, b) = (unique("tasks-a"), unique("tasks-b"));
    let (output, dlq) = (unique("tasks-ab-out"), unique("tasks-dlq"));
    create_topics(&[&a, &b], 2);
    create_topics(&[&output, &dlq], 2);
    let o = SampleOptions {
        count: 1000,
        users: 40,
        ..SampleOptions::default()
    };
    let other = SampleOptions { seed: 11, ..o };
    produce_sample(brokers(), &a, &o).unwrap();
    produce_sample(brokers(), &b, &other).unwrap();
    let yaml = filter_spec("tasks-ab", &format!("{a}, {b}"), &output, &dlq, "2");
    let summary = run_until_caught_up(&spec(&yaml));
    let mut want = expected_filtered(&o);
    want.extend(expected_filtered(&other));
    want.sort();
    assert_eq!(summary.records_in, 2000);
    assert_eq!(sorted_values(&read(&output)), want);
}

/// A task's state is cut from a partition layout: when a source topic's
/// partition count changed, its checkpoints are refused, naming both.
#[test]
fn task_checkpoints_are_refused_when_the_partition_count_changed() {
    let (input, output, dlq) = (
        unique("tasks-grow"),
        unique("tasks-grow-out"),
        unique("tasks-dlq"),
    );
    create_topics(&[&input], 2);
    create_topics(&[&output, &dlq], 1);
    let o = SampleOptions {
        count: 100,
        users: 10,
        ..SampleOptions::default()
    };
    produce_sample(brokers(), &input, &o).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let yaml = windows_spec(dir.path(), "tasks-grow", &input, &output, &dlq, "2");
    run_until_caught_up(&spec(&yaml));
    // The test broker has no CreatePartitions: the topic is made again.
    delete_topics(&[&input]);
    create_topics(&[&input], 4);
    let error = format!("{:#}", run(&spec(&yaml)).unwrap_err());
    // Whichever task the group gave a worker first is refused first.
    let task: u32 = error
        .split_once(": task ")
        .and_then(|(_, rest)| rest.split_once(':'))
        .and_then(|(t, _)| t.parse().ok())
        .unwrap_or_else(|| panic!("{error}"));
    let task_dir = dir.path().join(format!("checkpoints/tasks/{task:05}"));
    assert!(
        error.starts_with(&format!("worker 0: task {task}: checkpoint "))
            || error.starts_with(&format!("worker 1: task {task}: checkpoint ")),
        "{error}"
    );
    assert!(
        error.ends_with(&format!(
            " in {} was taken when the source topics had {input}: 2 partitions; they now have \
             {input}: 4: a task's state is only valid for the partition layout it was cut from \
             (keys move between partitions when the count changes). Restore the partition \
             counts, or remove the checkpoint directory to start over",
            task_dir.display()
        )),
        "{error}"
    );
}

/// Without checkpoints (at-least-once), each task holds its commits back
/// behind its own open windows: the same windows as one whole run.
#[test]
fn windows_without_checkpoints_at_two_workers_are_the_windows_at_one() {
    let input = unique("tasks-nocp-in");
    let (one, two, dlq) = (
        unique("tasks-nocp-one"),
        unique("tasks-nocp-two"),
        unique("tasks-dlq"),
    );
    create_topics(&[&input], 4);
    create_topics(&[&one, &two, &dlq], 2);
    let o = SampleOptions {
        count: 3000,
        users: 60,
        ..SampleOptions::default()
    };
    produce_with_flush(&input, &o);
    let dir = tempfile::tempdir().unwrap();
    let without_checkpoints = |name: &str, output: &str, parallelism: &str| {
        let yaml = windows_spec(dir.path(), name, &input, output, &dlq, parallelism);
        let yaml: String = yaml
            .lines()
            .filter(|l| !l.starts_with("checkpoint:") && !l.starts_with("delivery:"))
            .map(|l| format!("{l}\n"))
            .collect();
        spec(&yaml)
    };
    let whole = run_until_caught_up(&without_checkpoints("tasks-nocp-one", &one, "1"));
    let tasks = run_until_caught_up(&without_checkpoints("tasks-nocp-two", &two, "2"));
    assert_eq!(tasks.records_in, o.count + 50);
    assert_eq!(tasks.outputs, whole.outputs);
    let want = sorted_values(&read(&one));
    assert!(!want.is_empty());
    assert_eq!(sorted_values(&read(&two)), want);
    assert!(!dir.path().join("checkpoints").exists());
}

/// A task that has run nothing since its last checkpoint (its partition
/// idle) is asked to checkpoint again when the pipeline pauses: its last
/// checkpoint stands, and the pipeline pauses, resumes and stops cleanly.
#[test]
fn an_idle_task_pauses_and_resumes_with_its_checkpoint_standing() {
    use std::sync::Arc;
    use std::time::Duration;
    let (input, output, dlq) = (
        unique("tasks-idle-in"),
        unique("tasks-idle-out"),
        unique("tasks-dlq"),
    );
    create_topics(&[&input], 2);
    create_topics(&[&output, &dlq], 1);
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{}checkpoint: {{ dir: {}, interval: 1h }}\ndelivery: exactly-once\n",
        filter_spec("tasks-idle", &input, &output, &dlq, "2"),
        dir.path().join("checkpoints").display()
    );
    let spec = spec(&yaml);
    let control = Arc::new(sluice::pipeline::Control::new());
    let stop = Arc::new(AtomicBool::new(false));
    let run = {
        let (control, stop) = (control.clone(), stop.clone());
        std::thread::spawn(move || {
            sluice::pipeline::run_with(&spec, RunOptions::default(), &stop, Some(&control))
        })
    };
    // One key: one partition has records, the other none.
    let pairs: Vec<(&str, String)> = (0..20)
        .map(|n| ("one-key", format!(r#"{{"event_type":"click","n":{n}}}"#)))
        .collect();
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    produce(&input, &pairs);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while read(&output).len() < 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "records did not come out"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..2 {
        control.set_paused(true);
        assert!(
            control.wait_paused(true, Duration::from_secs(30)),
            "did not pause"
        );
        control.set_paused(false);
        assert!(
            control.wait_paused(false, Duration::from_secs(30)),
            "did not resume"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let summary = run.join().unwrap().unwrap();
    assert_eq!(summary.records_in, 20);
    assert_eq!(read(&output).len(), 20);
}
