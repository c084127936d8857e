//! Exactly-once, proven the way Kafka Streams' EOS tests and Flink's HA tests
//! do: kill the host with SIGKILL at random moments, restart it, and compare
//! what reached Kafka and the Parquet files with the expected multiset.
//!
//! The pipeline: `alert-router` (a map: error events to the `alerts` output,
//! the rest on) then `event-window-agg` (per-minute counts per event type),
//! whose results go to a Kafka topic and to Parquet files. Checkpoints every
//! 100 ms, so kills land before, during and after checkpoints, during
//! recovery and during re-execution.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_tests::kafka_tools::{SampleOptions, sample_record};
use sluice_tests::*;

/// Which aggregate the pipeline ends with, and how it runs.
#[derive(Debug, Clone, Copy)]
pub(super) enum Shape {
    /// `event-window-agg` (per event type), the pipeline run whole.
    EventTypes,
    /// `count-sum` (per user, the records' Kafka key) at this parallelism:
    /// as tasks, on that many workers, unless 1.
    PerUser { parallelism: usize },
    /// `event-window-agg` with `repartition: true` at this parallelism: as
    /// tasks through the repartition topic, unless 1 (run whole).
    Repartitioned { parallelism: usize },
}

/// The event types that reach the aggregate (errors go to `alerts`).
const TYPES: [&str; 4] = ["click", "view", "heartbeat", "purchase"];

impl Shape {
    /// The aggregate step's module, and the Parquet output's schema and
    /// partitioning, as spec lines.
    fn aggregate(self) -> (PathBuf, &'static str) {
        match self {
            Shape::EventTypes | Shape::Repartitioned { .. } => (
                guest("event-window-agg"),
                r#"      schema:
        - { name: window_start, type: string }
        - { name: window_end, type: string }
        - { name: event_type, type: string }
        - { name: count, type: int64 }
        - { name: sum_amount, type: float64 }
        - { name: unique_users, type: int64 }
      partition_by: { field: event_type }"#,
            ),
            Shape::PerUser { .. } => (
                guest("count-sum"),
                r#"      schema:
        - { name: user_id, type: string }
        - { name: window_start, type: int64 }
        - { name: window_end, type: int64 }
        - { name: count, type: int64 }
        - { name: sum, type: float64 }"#,
            ),
        }
    }

    fn parallelism(self) -> usize {
        match self {
            Shape::EventTypes => 1,
            Shape::PerUser { parallelism } | Shape::Repartitioned { parallelism } => parallelism,
        }
    }

    /// Whether the results are per event type (and the Parquet files
    /// partitioned by it).
    fn by_event_type(self) -> bool {
        matches!(self, Shape::EventTypes | Shape::Repartitioned { .. })
    }
}

/// A pipeline of the shape above, with its own topics and directories.
pub(super) struct Fixture {
    shape: Shape,
    brokers: String,
    pub(super) input: String,
    alerts: String,
    pub(super) results: String,
    dlq: String,
    pub(super) dir: tempfile::TempDir,
    pub(super) spec: PathBuf,
}

impl Fixture {
    fn new(name: &str, interval: &str) -> Self {
        Self::on(brokers(), name, interval)
    }

    fn on(brokers: &str, name: &str, interval: &str) -> Self {
        Self::shaped(brokers, name, interval, Shape::EventTypes)
    }

    pub(super) fn shaped(brokers: &str, name: &str, interval: &str, shape: Shape) -> Self {
        Self::shaped_over(brokers, name, interval, shape, 4)
    }

    /// [`Self::shaped`], its input topic of `partitions` partitions.
    pub(super) fn shaped_over(
        brokers: &str,
        name: &str,
        interval: &str,
        shape: Shape,
        partitions: i32,
    ) -> Self {
        let input = unique("crash-in");
        let (alerts, results, dlq) = (unique("alerts"), unique("results"), unique("crash-dlq"));
        kafka_tools::create_topics(brokers, &[&input], partitions).unwrap();
        kafka_tools::create_topics(brokers, &[&alerts, &results, &dlq], 2).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (agg, parquet) = shape.aggregate();
        let yaml = format!(
            r#"name: {name}
kafka: {{ brokers: "{brokers}" }}
source: {{ topics: [{input}], group: {group} }}
batch: {{ max_records: 1000, max_wait: 20ms }}
transforms:
  - module: {router}
  - module: {agg}{repartition}
    aggregate:
      window: {{ tumbling: 1m }}
      watermark: {{ max_out_of_orderness: 5s, idle_timeout: 1h }}
      output: append
outputs:
  default:
    topic: {results}
    parquet:
      path: parquet
{parquet}
  alerts: {{ topic: {alerts} }}
dead_letter: {{ topic: {dlq} }}
checkpoint: {{ dir: checkpoints, interval: {interval}, keep: 3 }}
delivery: exactly-once
parallelism: {parallelism}
"#,
            group = unique("crash-group"),
            router = guest("alert-router").display(),
            agg = agg.display(),
            repartition = if matches!(shape, Shape::Repartitioned { .. }) {
                "\n    repartition: true"
            } else {
                ""
            },
            parallelism = shape.parallelism(),
        );
        let spec = dir.path().join("pipeline.yaml");
        std::fs::write(&spec, yaml).unwrap();
        Self {
            shape,
            brokers: brokers.to_owned(),
            input,
            alerts,
            results,
            dlq,
            dir,
            spec,
        }
    }

    fn checkpoints(&self) -> PathBuf {
        self.dir.path().join("checkpoints")
    }

    fn spawn(&self, failpoint: Option<&str>) -> Child {
        self.spawn_run(failpoint, true)
    }

    /// `sluice run` of the spec, until caught up or (`until` false) until
    /// killed.
    pub(super) fn spawn_run(&self, failpoint: Option<&str>, until: bool) -> Child {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.arg("run");
        if until {
            cmd.arg("--until-caught-up");
        }
        cmd.arg(&self.spec)
            // Each run takes the killed one's place in the group at once
            // (static membership), as a restarted pod does.
            .env("SLUICE_INSTANCE_ID", "crash")
            .env(
                "RUST_LOG",
                std::env::var("CRASH_LOG").unwrap_or(
                    "warn,sluice::pipeline::runner=info,sluice::pipeline::worker=info".into(),
                ),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        match failpoint {
            Some(f) => cmd.env("SLUICE_FAILPOINT", f),
            None => cmd.env_remove("SLUICE_FAILPOINT"),
        };
        cmd.spawn().unwrap()
    }

    /// Runs until caught up; returns the exit status and stderr.
    fn run(&self, failpoint: Option<&str>) -> (ExitStatus, String) {
        let out = self.spawn(failpoint).wait_with_output().unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub(super) fn run_to_completion(&self) -> String {
        let (status, stderr) = self.run(None);
        assert!(status.success(), "sluice run failed: {status}\n{stderr}");
        stderr
    }

    /// Kafka results, Kafka alerts and Parquet rows, each as a sorted multiset.
    fn read(&self, topic: &str) -> Vec<TopicRecord> {
        kafka_tools::read_topic(&self.brokers, topic).unwrap()
    }

    pub(super) fn produce(&self, o: &SampleOptions, range: std::ops::Range<u64>) {
        kafka_tools::produce_sample_range(&self.brokers, &self.input, o, range).unwrap();
    }

    /// After the sample, for a pipeline run as tasks or its reference: the
    /// flush records (see `produce_flush`), so that the windows closed at
    /// the end do not depend on the parallelism.
    pub(super) fn produce_end(&self, o: &SampleOptions) {
        match self.shape {
            Shape::EventTypes => {}
            Shape::PerUser { .. } => produce_flush(&self.brokers, &self.input, o),
            Shape::Repartitioned { .. } => {
                produce_type_flush(&self.brokers, &self.input, o, &TYPES);
            }
        }
    }

    /// Adds a PostgreSQL table to the `default` output (created from the
    /// Parquet schema's columns).
    pub(super) fn with_postgres(&self, url: &str, table: &str) {
        self.add_table(&format!(
            "postgres:\n      url: \"{url}\"\n      table: {table}"
        ));
    }

    /// Adds a Delta table at `path` to the `default` output (created from
    /// the Parquet schema's columns).
    pub(super) fn with_delta(&self, path: &std::path::Path) {
        self.add_table(&format!("delta:\n      path: \"{}\"", path.display()));
    }

    /// Adds a table section (`section`'s first line its name, then its
    /// settings but the schema) to the `default` output, with the Parquet
    /// schema's columns.
    fn add_table(&self, section: &str) {
        let yaml = std::fs::read_to_string(&self.spec).unwrap();
        let schema: String = self
            .shape
            .aggregate()
            .1
            .lines()
            .skip(1)
            .filter(|l| !l.contains("partition_by"))
            .map(|l| format!("  {l}\n"))
            .collect();
        let table = format!("\n    {section}\n      schema:\n{schema}");
        let yaml = yaml.replacen(
            "\n  alerts: {",
            &format!("{}\n  alerts: {{", table.trim_end()),
            1,
        );
        std::fs::write(&self.spec, yaml).unwrap();
    }

    pub(super) fn outputs(&self) -> Outputs {
        let dead = self.read(&self.dlq);
        assert!(
            dead.is_empty(),
            "{} dead letters, e.g. {:?}",
            dead.len(),
            dead.first()
        );
        Outputs {
            results: sorted_values(&self.read(&self.results)),
            alerts: sorted_values(&self.read(&self.alerts)),
            parquet: parquet_rows(&self.dir.path().join("parquet"), self.shape.by_event_type()),
        }
    }
}

#[derive(Debug, PartialEq)]
pub(super) struct Outputs {
    pub(super) results: Vec<String>,
    pub(super) alerts: Vec<String>,
    pub(super) parquet: Vec<String>,
}

/// Every row of every visible Parquet file under `dir`, read by pyarrow, as
/// sorted JSON lines (keys sorted), with the partition directory checked
/// against the row.
fn parquet_rows(dir: &Path, by_event_type: bool) -> Vec<String> {
    let rows = read_parquet(dir);
    let mut lines: Vec<String> = rows
        .into_iter()
        .map(|(file, row)| {
            if by_event_type {
                let kind = row["event_type"].as_str().unwrap().to_owned();
                assert!(
                    file.starts_with(&format!("event_type={kind}/")),
                    "{file} holds a row of {kind}"
                );
            }
            serde_json::to_string(&row).unwrap()
        })
        .collect();
    lines.sort();
    lines
}

/// The Kafka results as the same sorted JSON lines as `parquet_rows`.
pub(super) fn as_rows(values: &[String]) -> Vec<String> {
    let mut lines: Vec<String> = values
        .iter()
        .map(|v| {
            let v: BTreeMap<String, Value> = serde_json::from_str(v).unwrap();
            serde_json::to_string(&v).unwrap()
        })
        .collect();
    lines.sort();
    lines
}

/// The alerts every run must produce exactly once: the error events.
pub(super) fn expected_alerts(o: &SampleOptions, n: u64) -> Vec<String> {
    let mut v: Vec<String> = (0..n)
        .map(|i| String::from_utf8(sample_record(o, i).1).unwrap())
        .filter(|v| v.contains(r#""event_type":"error""#))
        .collect();
    v.sort();
    v
}

/// The `ready_ms` of the "pipeline started" log line, if the run got there.
fn ready_ms(stderr: &str) -> Option<u64> {
    let line = stderr.lines().find(|l| l.contains("pipeline started"))?;
    let rest = &line[line.find("ready_ms=")? + "ready_ms=".len()..];
    let digits: String = rest
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Asserts two sorted multisets are equal, reporting what is missing and
/// what is extra (duplicates) rather than two walls of text.
pub(super) fn assert_same(got: &[String], want: &[String], what: &str) {
    if got == want {
        return;
    }
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for g in got {
        *counts.entry(g).or_default() += 1;
    }
    for w in want {
        *counts.entry(w).or_default() -= 1;
    }
    let extra: Vec<_> = counts.iter().filter(|e| *e.1 > 0).take(3).collect();
    let missing: Vec<_> = counts.iter().filter(|e| *e.1 < 0).take(3).collect();
    panic!(
        "{what}: got {} records, expected {}; extra (first 3, with surplus count): {extra:?}; \
         missing: {missing:?}",
        got.len(),
        want.len()
    );
}

/// A small deterministic generator (seeded from the clock unless
/// `SLUICE_CRASH_SEED` is set; the seed is printed to reproduce a failure).
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new() -> Self {
        let seed = std::env::var("SLUICE_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("crash test seed: {seed} (SLUICE_CRASH_SEED={seed} to repeat)");
        Self(seed)
    }

    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// The reference: the same input through the same pipeline, never killed
/// (and, for a pipeline per user, run whole: one worker).
fn reference(o: &SampleOptions) -> Outputs {
    reference_of(o, Shape::EventTypes)
}

pub(super) fn reference_of(o: &SampleOptions, shape: Shape) -> Outputs {
    let shape = match shape {
        Shape::EventTypes => shape,
        Shape::PerUser { .. } => Shape::PerUser { parallelism: 1 },
        Shape::Repartitioned { .. } => Shape::Repartitioned { parallelism: 1 },
    };
    let f = Fixture::shaped(brokers(), "reference", "1s", shape);
    f.produce(o, 0..o.count);
    f.produce_end(o);
    f.run_to_completion();
    f.outputs()
}

#[test]
fn kill_9_at_random_moments_loses_and_duplicates_nothing() {
    kill_9_at_random_moments(Shape::EventTypes);
}

/// The same with the pipeline run as four tasks on four workers: the
/// outputs are exactly those of one whole run, never killed.
#[test]
fn kill_9_at_random_moments_with_four_workers_loses_and_duplicates_nothing() {
    kill_9_at_random_moments(Shape::PerUser { parallelism: 4 });
}

/// The same with an aggregate per event type run as four tasks: through
/// the repartition topic, written and read exactly once whatever the kills.
#[test]
fn kill_9_at_random_moments_through_a_repartition_topic_loses_and_duplicates_nothing() {
    kill_9_at_random_moments(Shape::Repartitioned { parallelism: 4 });
}

fn kill_9_at_random_moments(shape: Shape) {
    const CHUNKS: u64 = 20;
    const KILLS: usize = 20;
    let o = SampleOptions {
        count: 200_000,
        users: 500,
        ..SampleOptions::default()
    };
    let mut rng = Rng::new();
    let f = Fixture::shaped(brokers(), "crash", "100ms", shape);
    let chunk = o.count / CHUNKS;
    let (mut kills, mut runs) = (0, 0);
    // Time from process start to processing again, for runs after a kill.
    let mut recoveries: Vec<u64> = Vec::new();
    let started = Instant::now();
    while kills < KILLS {
        // Records keep arriving, so that most kills land mid-stream.
        if runs < CHUNKS {
            f.produce(&o, runs * chunk..(runs + 1) * chunk);
        }
        runs += 1;
        assert!(runs < 200, "could not kill the host {KILLS} times");
        // Through a repartition topic, every other run goes on until killed:
        // its stages then run side by side, not one after the other.
        let until = !matches!(shape, Shape::Repartitioned { .. }) || runs % 2 == 1;
        let mut child = f.spawn_run(None, until);
        std::thread::sleep(Duration::from_millis(50 + rng.below(600)));
        match child.try_wait().unwrap() {
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                let mut stderr = String::new();
                std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr)
                    .unwrap();
                if kills > 0 {
                    recoveries.extend(ready_ms(&stderr));
                }
                kills += 1;
            }
            Some(status) => {
                let mut stderr = String::new();
                std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr)
                    .unwrap();
                assert!(status.success(), "sluice run failed: {status}\n{stderr}");
                if kills > 0 {
                    recoveries.extend(ready_ms(&stderr));
                }
            }
        }
    }
    for n in runs..CHUNKS {
        f.produce(&o, n * chunk..(n + 1) * chunk);
    }
    f.produce_end(&o);
    recoveries.extend(ready_ms(&f.run_to_completion()));
    recoveries.sort_unstable();
    let pct = |p: usize| recoveries[(recoveries.len() - 1) * p / 100];
    eprintln!(
        "{kills} kills over {runs} runs in {:.1}s; recovery (process start to processing) over {} restarts: p50 {} ms, p99 {} ms, max {} ms",
        started.elapsed().as_secs_f64(),
        recoveries.len(),
        pct(50),
        pct(99),
        recoveries.last().unwrap()
    );

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

fn small() -> SampleOptions {
    SampleOptions {
        count: 20_000,
        users: 100,
        ..SampleOptions::default()
    }
}

/// Crashes exactly at a failpoint, restarts, and checks the outputs. A
/// point is reached once per checkpoint, and how many checkpoints a run of
/// 20 batches takes at a 10 ms interval depends on how fast its batches go
/// (five, once the first fetch is done, on an idle 2-core machine): crash
/// points stay at the third.
fn crash_at(failpoint: &str, corrupt_newest: bool) {
    let o = small();
    let f = Fixture::new("failpoint", "10ms");
    f.produce(&o, 0..o.count);
    let (status, stderr) = f.run(Some(failpoint));
    let point = failpoint.split(':').next().unwrap();
    assert!(
        !status.success() && stderr.contains(&format!("failpoint {point} reached")),
        "expected a crash at {failpoint}: {status}\n{stderr}"
    );
    if corrupt_newest {
        let newest = std::fs::read_dir(f.checkpoints())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "ckpt"))
            .max()
            .expect("a checkpoint was written");
        let len = std::fs::metadata(&newest).unwrap().len();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&newest)
            .unwrap();
        file.set_len(len / 2).unwrap();
        let stderr = f.run_to_completion();
        assert!(
            stderr.contains(&newest.file_name().unwrap().to_string_lossy().into_owned()),
            "the fallback should name the damaged checkpoint:\n{stderr}"
        );
    } else {
        f.run_to_completion();
    }
    let got = f.outputs();
    assert_same(&got.alerts, &expected_alerts(&o, o.count), "alerts");
    let want = reference(&o);
    assert_same(&got.results, &want.results, "window results (Kafka)");
    assert_same(&got.parquet, &want.parquet, "window results (Parquet)");
}

#[test]
fn a_crash_between_outputs_and_checkpoint_is_exactly_once() {
    crash_at("after-outputs:3", false);
}

#[test]
fn a_crash_between_checkpoint_and_offset_commit_is_exactly_once() {
    crash_at("after-checkpoint:3", false);
}

#[test]
fn a_truncated_newest_checkpoint_falls_back_to_the_previous_one() {
    crash_at("after-outputs:3", true);
}

/// Every value that appears in `topics` from now on, read continuously by
/// a consumer that rides out broker restarts. (nisshi 0.8.1 on `sqlite://`
/// keeps offsets across a restart but serves no record written before it,
/// so outputs must be watched as they arrive rather than read back.)
struct Tap {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<BTreeMap<String, Vec<String>>>,
}

impl Tap {
    fn start(brokers: &str, topics: &[&str]) -> Self {
        use rdkafka::Message;
        use rdkafka::config::ClientConfig;
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", unique("tap"))
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "20")
            .create()
            .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for t in topics {
            for p in 0..2 {
                tpl.add_partition_offset(t, p, rdkafka::Offset::Beginning)
                    .unwrap();
            }
        }
        consumer.assign(&tpl).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
            while !stopped.load(Ordering::Relaxed) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                    let value = String::from_utf8_lossy(m.payload().unwrap_or_default());
                    seen.entry(m.topic().to_owned())
                        .or_default()
                        .push(value.into_owned());
                }
            }
            seen
        });
        Self { stop, thread }
    }

    fn finish(self) -> BTreeMap<String, Vec<String>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut seen = self.thread.join().unwrap();
        for v in seen.values_mut() {
            v.sort();
        }
        seen
    }
}

#[test]
fn a_broker_restart_mid_run_loses_and_duplicates_nothing() {
    let o = SampleOptions {
        count: 40_000,
        ..small()
    };
    let half = o.count / 2;
    let broker = Broker::start("sqlite://nisshi.db").unwrap();
    let f = Fixture::on(&broker.brokers, "restart", "200ms");
    let tap = Tap::start(&broker.brokers, &[&f.alerts, &f.results]);
    f.produce(&o, 0..half);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    let mut host = cmd
        .arg("run")
        .arg(&f.spec)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Restart the broker once the first half is through the pipeline, then
    // send the second half: records before and after the outage.
    let first_alerts = expected_alerts(&o, half).len();
    let wait_for = |topic: &str, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while f.read(topic).len() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(&f.alerts, first_alerts);
    let broker = broker.restart().unwrap();
    f.produce(&o, half..o.count);
    // After the restart the broker serves only what was written since, so
    // wait on the count of post-restart alerts.
    let second_alerts = expected_alerts(&o, o.count).len() - first_alerts;
    wait_for(&f.alerts, second_alerts);
    std::thread::sleep(Duration::from_secs(1));
    // Graceful shutdown: finish the batch, checkpoint, exit 0.
    Command::new("kill")
        .args(["-TERM", &host.id().to_string()])
        .status()
        .unwrap();
    let status = host.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut host.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "sluice run: {status}\n{stderr}");
    let seen = tap.finish();
    let got = |t: &str| seen.get(t).cloned().unwrap_or_default();
    assert_same(&got(&f.alerts), &expected_alerts(&o, o.count), "alerts");
    let want = reference(&o);
    // Windows still open at shutdown are in the checkpoint, not the output:
    // the reference drained the same input, so its final watermark is the same.
    assert_same(&got(&f.results), &want.results, "window results (Kafka)");
    assert_same(
        &parquet_rows(&f.dir.path().join("parquet"), true),
        &want.parquet,
        "window results (Parquet)",
    );
    drop(broker);
}
