//! Many processes, one pipeline: `sluice run` processes of one spec are
//! members of its consumer group (cooperative-sticky), which deals the
//! tasks out among them. Tasks move with their state: a revoked task is
//! acknowledged, checkpointed and committed before it is released; an
//! assigned one is recovered from its checkpoint in the shared directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use sluice_tests::kafka_tools::{self, SampleOptions};
use sluice_tests::*;

use super::crash::{Fixture, Rng, Shape, as_rows, assert_same, expected_alerts, reference_of};

/// One `sluice run` process of the group, its log in a file.
struct Member {
    id: String,
    child: Child,
    log: PathBuf,
}

impl Member {
    /// Starts a process of `spec` named `id` (static membership: a restart
    /// under the same name takes the old one's place at once), its `n`th.
    fn spawn(spec: &Path, logs: &Path, id: &str, n: usize, until: bool) -> Self {
        std::fs::create_dir_all(logs).unwrap();
        let log = logs.join(format!("{id}-{n}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.arg("run");
        if until {
            cmd.arg("--until-caught-up");
        }
        // The credentials of the S3 test server, for specs whose
        // checkpoints are there.
        let child = cmd
            .envs(s3().env())
            .arg(spec)
            .env("SLUICE_INSTANCE_ID", id)
            .env(
                "RUST_LOG",
                "warn,sluice::pipeline::worker=info,sluice::source::kafka=info",
            )
            .stdout(std::fs::File::create(log.with_extension("json")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self {
            id: id.to_owned(),
            child,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The run summary it printed when it exited.
    fn summary(&self) -> serde_json::Value {
        let out = std::fs::read_to_string(self.log.with_extension("json")).unwrap();
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{}", self.log()))
    }

    /// Waits until its log says `what`.
    fn wait_for(&mut self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.log().contains(what) {
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "{} stopped:\n{}",
                self.id,
                self.log()
            );
            assert!(
                Instant::now() < deadline,
                "{} never logged `{what}`:\n{}",
                self.id,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM: it ends its tasks (acknowledged, checkpointed, committed)
    /// and exits.
    fn stop(mut self) -> (ExitStatus, String) {
        signal("-TERM", &self.child);
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "{} ignored SIGTERM", self.id);
            std::thread::sleep(Duration::from_millis(20));
        };
        (status, self.log())
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

fn signal(signal: &str, child: &Child) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn expected_filtered(o: &SampleOptions) -> Vec<String> {
    let mut v: Vec<String> = (0..o.count)
        .map(|n| String::from_utf8(kafka_tools::sample_record(o, n).1).unwrap())
        .filter(|v| !v.contains(r#""event_type":"heartbeat""#))
        .collect();
    v.sort();
    v
}

/// Waits until `topic` holds `n` records (at most a minute).
fn wait_for_records(topic: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = read(topic).len();
        if got >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{got} of {n} records in {topic}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// At-least-once, no crash: a fourth process joins a group of three while
/// records arrive. The incremental rebalance moves some tasks; each is
/// handed off (acknowledged and committed first), so not one record is
/// processed twice.
#[test]
fn adding_a_process_to_a_running_group_of_three_duplicates_nothing() {
    let (input, output, dlq) = (unique("group-in"), unique("group-out"), unique("group-dlq"));
    create_topics(&[&input, &output], 8);
    create_topics(&[&dlq], 1);
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("pipeline.yaml");
    std::fs::write(
        &spec,
        format!(
            "name: group-alo\nkafka: {{ brokers: \"{brokers}\" }}\n\
             source: {{ topics: [{input}], group: {group} }}\n\
             batch: {{ max_records: 100, max_wait: 20ms }}\n\
             transforms:\n  - module: {module}\n\
             outputs: {{ default: {{ topic: {output} }} }}\ndead_letter: {{ topic: {dlq} }}\n\
             parallelism: 2\n",
            brokers = brokers(),
            group = unique("group-alo"),
            module = guest("filter-heartbeats").display(),
        ),
    )
    .unwrap();
    let o = SampleOptions {
        count: 40_000,
        users: 200,
        ..SampleOptions::default()
    };
    let logs = dir.path().join("logs");
    let mut members: Vec<Member> = (0..3)
        .map(|i| Member::spawn(&spec, &logs, &format!("m{i}"), 0, false))
        .collect();
    for m in &mut members {
        m.wait_for("pipeline started");
    }
    const CHUNKS: u64 = 20;
    let chunk = o.count / CHUNKS;
    for n in 0..CHUNKS {
        kafka_tools::produce_sample_range(brokers(), &input, &o, n * chunk..(n + 1) * chunk)
            .unwrap();
        if n == CHUNKS / 2 {
            let mut fourth = Member::spawn(&spec, &logs, "m3", 0, false);
            fourth.wait_for("tasks taken on");
            members.push(fourth);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let want = expected_filtered(&o);
    wait_for_records(&output, want.len());
    // Anything processed twice would be in by now.
    std::thread::sleep(Duration::from_secs(1));
    let mut handed_off = 0;
    for m in members {
        let (status, log) = m.stop();
        assert!(status.success(), "{status}:\n{log}");
        handed_off += log.matches("tasks given up").count();
    }
    assert!(
        handed_off > 0,
        "no task moved when the fourth process joined"
    );
    assert_eq!(sorted_values(&read(&output)), want);
}

/// Exactly-once windows with Parquet over eight partitions, three
/// processes to start with: processes are killed with SIGKILL and started
/// again under the same name, added and stopped at random while records
/// arrive. At the end the Kafka results and the Parquet rows are exactly
/// those of one process never disturbed.
#[test]
fn processes_killed_restarted_added_and_removed_at_random_lose_and_duplicate_nothing() {
    const EVENTS: u64 = 20;
    let o = SampleOptions {
        count: 120_000,
        users: 400,
        ..SampleOptions::default()
    };
    let shape = Shape::PerUser { parallelism: 2 };
    let f = Fixture::shaped_over(brokers(), "group", "100ms", shape, 8);
    // The checkpoints in S3, shared by every process.
    let prefix = unique("chaos");
    let yaml = std::fs::read_to_string(&f.spec).unwrap().replace(
        "checkpoint: { dir: checkpoints,",
        &format!(
            "checkpoint: {{ dir: \"s3://{bucket}/{prefix}\", s3: {{ endpoint: \"{endpoint}\", \
             region: us-east-1, allow_http: true }},",
            bucket = S3::BUCKET,
            endpoint = s3().endpoint,
        ),
    );
    assert!(yaml.contains("s3://"), "{yaml}");
    std::fs::write(&f.spec, yaml).unwrap();
    let logs = f.dir.path().join("logs");
    let mut rng = Rng::new();
    let mut started = 0;
    let mut spawn = |id: &str| {
        started += 1;
        Member::spawn(&f.spec, &logs, id, started, false)
    };
    let names = ["p0", "p1", "p2", "p3", "p4"];
    let mut running: Vec<Member> = names[..3].iter().map(|id| spawn(id)).collect();
    let chunk = o.count / EVENTS;
    let mut done = Vec::new();
    for n in 0..EVENTS {
        f.produce(&o, n * chunk..(n + 1) * chunk);
        std::thread::sleep(Duration::from_millis(100 + rng.below(900)));
        let idle: Vec<&str> = names
            .iter()
            .copied()
            .filter(|id| running.iter().all(|m| m.id != *id))
            .collect();
        match rng.below(3) {
            // SIGKILL one, and start it again under its name.
            0 if !running.is_empty() => {
                let m = running.swap_remove(rng.below(running.len() as u64) as usize);
                let id = m.id.clone();
                m.kill();
                done.push(format!("kill -9 {id}, restart"));
                running.push(spawn(&id));
            }
            // Stop one: it hands its tasks off, and leaves.
            1 if running.len() > 1 => {
                let m = running.swap_remove(rng.below(running.len() as u64) as usize);
                let id = m.id.clone();
                let (status, log) = m.stop();
                assert!(status.success(), "{id}: {status}\n{log}");
                done.push(format!("stop {id}"));
            }
            // Add one.
            _ if !idle.is_empty() => {
                let id = idle[rng.below(idle.len() as u64) as usize];
                done.push(format!("add {id}"));
                running.push(spawn(id));
            }
            _ => {
                let m = running.swap_remove(rng.below(running.len() as u64) as usize);
                let id = m.id.clone();
                m.kill();
                done.push(format!("kill -9 {id}, restart"));
                running.push(spawn(&id));
            }
        }
    }
    eprintln!("{} events: {}", done.len(), done.join(", "));
    f.produce_end(&o);
    // The group finishes the input: each process drains to the end offsets
    // of now, and exits once the group (whichever process) got there.
    for m in running {
        let (status, log) = m.stop();
        assert!(status.success(), "{status}:\n{log}");
    }
    let finishers: Vec<Member> = names[..3]
        .iter()
        .map(|id| Member::spawn(&f.spec, &logs, id, 99, true))
        .collect();
    for m in finishers {
        let mut child = m.child;
        let status = child.wait().unwrap();
        let log = std::fs::read_to_string(&m.log).unwrap_or_default();
        assert!(status.success(), "{}: {status}\n{log}", m.id);
    }
    // Each task's generations are in the bucket, none in a local directory.
    assert!(!f.dir.path().join("checkpoints").exists());
    let tasks = s3().bucket_dir().join(&prefix).join("tasks");
    let owned: Vec<usize> = (0..8)
        .map(|t| std::fs::read_dir(tasks.join(format!("{t:05}/owner"))).map_or(0, |d| d.count()))
        .collect();
    assert!(owned.iter().all(|&n| n >= 1), "{owned:?}");
    let got = f.outputs();
    assert_same(&got.alerts, &expected_alerts(&o, o.count), "alerts");
    let want = reference_of(&o, shape);
    assert!(!want.results.is_empty());
    assert_same(&got.results, &want.results, "window results (Kafka)");
    assert_same(&got.parquet, &want.parquet, "window results (Parquet)");
    assert_same(
        &as_rows(&got.results),
        &got.parquet,
        "Kafka and Parquet agree",
    );
}

/// Fencing: a process stopped (SIGSTOP) past the session timeout loses its
/// tasks to the other one, which raises their generation; continued
/// (SIGCONT), it finds itself fenced off and writes nothing more under the
/// generations it had: every batch it queued for them was queued before
/// the stop. The outputs hold every record exactly once.
#[test]
fn a_process_paused_past_the_session_timeout_writes_nothing_after_it_lost_its_tasks() {
    let (input, output, dlq) = (unique("fence-in"), unique("fence-out"), unique("fence-dlq"));
    create_topics(&[&input, &output], 4);
    create_topics(&[&dlq], 1);
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("pipeline.yaml");
    std::fs::write(
        &spec,
        format!(
            "name: fence\nkafka:\n  brokers: \"{brokers}\"\n  consumer: {{ session.timeout.ms: 6000, heartbeat.interval.ms: 500 }}\n\
             source: {{ topics: [{input}], group: {group} }}\n\
             batch: {{ max_records: 100, max_wait: 20ms }}\n\
             transforms:\n  - module: {module}\n\
             outputs: {{ default: {{ topic: {output} }} }}\ndead_letter: {{ topic: {dlq} }}\n\
             checkpoint: {{ dir: checkpoints, interval: 200ms }}\ndelivery: exactly-once\n\
             parallelism: 2\n",
            brokers = brokers(),
            group = unique("fence"),
            module = guest("filter-heartbeats").display(),
        ),
    )
    .unwrap();
    let o = SampleOptions {
        count: 30_000,
        users: 200,
        ..SampleOptions::default()
    };
    const CHUNKS: u64 = 30;
    let chunk = o.count / CHUNKS;
    let produce = |n: u64| {
        kafka_tools::produce_sample_range(brokers(), &input, &o, n * chunk..(n + 1) * chunk)
            .unwrap();
    };
    let logs = dir.path().join("logs");
    let spawn = |id: &str| {
        std::fs::create_dir_all(&logs).unwrap();
        let log = logs.join(format!("{id}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["run"])
            .arg(&spec)
            .env("SLUICE_INSTANCE_ID", id)
            .env(
                "RUST_LOG",
                "warn,sluice::pipeline::worker=info,sluice::source::kafka=info,\
                 sluice::pipeline::runner::send=debug",
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Member {
            id: id.to_owned(),
            child,
            log,
        }
    };
    let (mut a, mut b) = (spawn("a"), spawn("b"));
    a.wait_for("pipeline started");
    b.wait_for("pipeline started");
    for n in 0..10 {
        produce(n);
        std::thread::sleep(Duration::from_millis(100));
    }
    signal("-STOP", &a.child);
    // Records keep coming; once the session timed out, `b` is given `a`'s
    // tasks: it raises their generations, then waits for the directories
    // `a` still holds.
    let mut n = 10;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !b.log().contains("still holds its checkpoint directory") {
        assert!(
            Instant::now() < deadline,
            "b never took a's tasks:\n{}",
            b.log()
        );
        if n < 20 {
            produce(n);
            n += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let continued_ms = sluice::pipeline::now_ms();
    signal("-CONT", &a.child);
    a.wait_for("dropped");
    for n in n..CHUNKS {
        produce(n);
        std::thread::sleep(Duration::from_millis(50));
    }
    let want = expected_filtered(&o);
    let deadline = Instant::now() + Duration::from_secs(60);
    while read(&output).len() < want.len() {
        assert!(
            Instant::now() < deadline,
            "{} of {} records in {output}\na:\n{}\nb:\n{}",
            read(&output).len(),
            want.len(),
            a.log(),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    let (status, a_log) = a.stop();
    assert!(status.success(), "a: {status}\n{a_log}");
    let (status, b_log) = b.stop();
    assert!(status.success(), "b: {status}\n{b_log}");
    assert_eq!(sorted_values(&read(&output)), want);

    // What `a` queued: (fence, queued at) per batch.
    let queued: Vec<(String, i64)> = a_log
        .lines()
        .filter(|l| l.contains("batch queued"))
        .filter_map(|l| {
            Some((
                field(l, "fence=")?,
                field(l, "queued_at_ms=")?.parse().ok()?,
            ))
        })
        .collect();
    let before: std::collections::BTreeSet<&str> = queued
        .iter()
        .filter(|(_, at)| *at < continued_ms)
        .map(|(fence, _)| fence.as_str())
        .collect();
    assert!(
        !before.is_empty(),
        "a queued nothing before the stop:\n{a_log}"
    );
    let after: Vec<&(String, i64)> = queued
        .iter()
        .filter(|(fence, at)| *at >= continued_ms && before.contains(fence.as_str()))
        .collect();
    assert!(
        after.is_empty(),
        "a queued batches under generations it had lost: {after:?}"
    );
    assert!(
        a_log.contains("fenced off") || a_log.contains("task lost"),
        "{a_log}"
    );
}

/// The value of `name` (e.g. `fence=`) in a log line, unquoted.
fn field(line: &str, name: &str) -> Option<String> {
    let rest = &line[line.find(name)? + name.len()..];
    let rest = rest.strip_prefix("Some(").unwrap_or(rest);
    let value: String = rest
        .trim_start_matches('"')
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != ')')
        .collect();
    Some(value)
}

/// The fence itself, without a rebalance: once a task's `OWNER` file names
/// a newer generation (what a new owner writes when the group gives it the
/// task), the process that had the task produces none of its records and
/// drops it.
#[test]
fn a_task_whose_generation_was_raised_elsewhere_writes_nothing_more() {
    let (input, output, dlq) = (unique("gen-in"), unique("gen-out"), unique("gen-dlq"));
    create_topics(&[&input, &output, &dlq], 1);
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("pipeline.yaml");
    std::fs::write(
        &spec,
        format!(
            "name: gen\nkafka: {{ brokers: \"{brokers}\" }}\n\
             source: {{ topics: [{input}], group: {group} }}\n\
             batch: {{ max_records: 100, max_wait: 20ms }}\n\
             transforms:\n  - module: {module}\n\
             outputs: {{ default: {{ topic: {output} }} }}\ndead_letter: {{ topic: {dlq} }}\n\
             checkpoint: {{ dir: checkpoints, interval: 200ms }}\ndelivery: exactly-once\n\
             parallelism: 2\n",
            brokers = brokers(),
            group = unique("gen"),
            module = guest("filter-heartbeats").display(),
        ),
    )
    .unwrap();
    let o = SampleOptions {
        count: 400,
        users: 20,
        ..SampleOptions::default()
    };
    let mut m = Member::spawn(&spec, &dir.path().join("logs"), "only", 0, false);
    m.wait_for("tasks taken on");
    kafka_tools::produce_sample_range(brokers(), &input, &o, 0..200).unwrap();
    let first = SampleOptions { count: 200, ..o };
    wait_for_records(&output, expected_filtered(&first).len());
    let owner = dir.path().join("checkpoints/tasks/00000/OWNER");
    assert!(
        std::fs::read_to_string(&owner)
            .unwrap()
            .ends_with(" only-source-w0\n")
    );
    std::fs::write(&owner, "99 elsewhere\n").unwrap();
    // Past the lease of the last look at the file.
    std::thread::sleep(Duration::from_millis(1500));
    kafka_tools::produce_sample_range(brokers(), &input, &o, 200..400).unwrap();
    m.wait_for("fenced off");
    std::thread::sleep(Duration::from_secs(1));
    let (status, log) = m.stop();
    assert!(status.success(), "{status}\n{log}");
    assert_eq!(sorted_values(&read(&output)), expected_filtered(&first));
    assert!(
        log.contains("says generation 99 (owner elsewhere) took the task over"),
        "{log}"
    );
}

/// `--until-caught-up` with two processes of a stateless pipeline: each
/// exits once the group (either of them) reached the end offsets seen at
/// its start, and every record was processed once.
#[test]
fn two_processes_until_caught_up_exit_once_the_group_is_through() {
    for delivery in ["at-least-once", "exactly-once"] {
        let (input, output, dlq) = (unique("drain-in"), unique("drain-out"), unique("drain-dlq"));
        create_topics(&[&input, &output], 8);
        create_topics(&[&dlq], 1);
        let o = SampleOptions {
            count: 100_000,
            users: 100,
            ..SampleOptions::default()
        };
        kafka_tools::produce_sample(brokers(), &input, &o).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("pipeline.yaml");
        let group = unique("drain");
        std::fs::write(
            &spec,
            format!(
                "name: drain\nkafka: {{ brokers: \"{brokers}\" }}\n\
                 source: {{ topics: [{input}], group: {group} }}\n\
                 batch: {{ max_records: 100, max_wait: 20ms }}\n\
                 transforms:\n  - module: {module}\n\
                 outputs: {{ default: {{ topic: {output} }} }}\ndead_letter: {{ topic: {dlq} }}\n\
                 checkpoint: {{ dir: checkpoints, interval: 1h }}\ndelivery: {delivery}\n\
                 parallelism: 2\n",
                brokers = brokers(),
                module = guest("filter-heartbeats").display(),
            ),
        )
        .unwrap();
        let logs = dir.path().join("logs");
        let members: Vec<Member> = ["d0", "d1"]
            .iter()
            .map(|id| Member::spawn(&spec, &logs, id, 0, true))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut records_in = 0;
        for mut m in members {
            let status = loop {
                if let Some(status) = m.child.try_wait().unwrap() {
                    break status;
                }
                assert!(
                    Instant::now() < deadline,
                    "{delivery}: {} did not exit:\n{}",
                    m.id,
                    m.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            };
            let log = m.log();
            assert!(status.success(), "{delivery}: {status}\n{log}");
            records_in += m.summary()["records_in"].as_u64().unwrap();
        }
        // Each record was read by one of them only: tasks that moved between
        // them were handed off at their committed positions.
        assert_eq!(records_in, o.count, "{delivery}");
        assert_eq!(
            sorted_values(&read(&output)),
            expected_filtered(&o),
            "{delivery}"
        );
        // Static members done for good left the group: it holds none of
        // them for a session timeout, so a member still draining would
        // not have waited for them.
        assert_eq!(group_members(&group), Vec::<String>::new(), "{delivery}");
    }
}

/// The members the group's coordinator lists for `group` (their instance
/// ids, else member ids).
fn group_members(group: &str) -> Vec<String> {
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let list = client
        .fetch_group_list(Some(group), Duration::from_secs(10))
        .unwrap();
    list.groups()
        .iter()
        .flat_map(|g| g.members().iter().map(|m| m.id().to_owned()))
        .collect()
}
