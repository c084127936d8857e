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
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_tests::kafka_tools::{SampleOptions, sample_record};
use sluice_tests::*;

/// A pipeline of the shape above, with its own topics and directories.
struct Fixture {
    input: String,
    alerts: String,
    results: String,
    dlq: String,
    dir: tempfile::TempDir,
    spec: PathBuf,
}

impl Fixture {
    fn new(name: &str, interval: &str) -> Self {
        let input = unique("crash-in");
        let (alerts, results, dlq) = (unique("alerts"), unique("results"), unique("crash-dlq"));
        create_topics(&[&input], 4);
        create_topics(&[&alerts, &results, &dlq], 2);
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            r#"name: {name}
kafka: {{ brokers: "{brokers}" }}
source: {{ topics: [{input}], group: {group} }}
batch: {{ max_records: 1000, max_wait: 20ms }}
transforms:
  - module: {router}
  - module: {agg}
    aggregate:
      window: {{ tumbling: 1m }}
      watermark: {{ max_out_of_orderness: 5s, idle_timeout: 1h }}
      output: append
outputs:
  default:
    topic: {results}
    parquet:
      path: parquet
      schema:
        - {{ name: window_start, type: string }}
        - {{ name: window_end, type: string }}
        - {{ name: event_type, type: string }}
        - {{ name: count, type: int64 }}
        - {{ name: sum_amount, type: float64 }}
        - {{ name: unique_users, type: int64 }}
      partition_by: {{ field: event_type }}
  alerts: {{ topic: {alerts} }}
dead_letter: {{ topic: {dlq} }}
checkpoint: {{ dir: checkpoints, interval: {interval}, keep: 3 }}
delivery: exactly-once
"#,
            brokers = brokers(),
            group = unique("crash-group"),
            router = guest("alert-router").display(),
            agg = guest("event-window-agg").display(),
        );
        let spec = dir.path().join("pipeline.yaml");
        std::fs::write(&spec, yaml).unwrap();
        Self {
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
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.args(["run", "--until-caught-up"])
            .arg(&self.spec)
            .env("RUST_LOG", "warn")
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

    fn run_to_completion(&self) -> String {
        let (status, stderr) = self.run(None);
        assert!(status.success(), "sluice run failed: {status}\n{stderr}");
        stderr
    }

    /// Kafka results, Kafka alerts and Parquet rows, each as a sorted multiset.
    fn outputs(&self) -> Outputs {
        let dead = read(&self.dlq);
        assert!(
            dead.is_empty(),
            "{} dead letters, e.g. {:?}",
            dead.len(),
            dead.first()
        );
        Outputs {
            results: sorted_values(&read(&self.results)),
            alerts: sorted_values(&read(&self.alerts)),
            parquet: parquet_rows(&self.dir.path().join("parquet")),
        }
    }
}

#[derive(Debug, PartialEq)]
struct Outputs {
    results: Vec<String>,
    alerts: Vec<String>,
    parquet: Vec<String>,
}

/// Every row of every visible Parquet file under `dir`, read by pyarrow, as
/// sorted JSON lines (keys sorted), with the partition directory checked
/// against the row.
fn parquet_rows(dir: &Path) -> Vec<String> {
    let rows = read_parquet(dir);
    let mut lines: Vec<String> = rows
        .into_iter()
        .map(|(file, row)| {
            let kind = row["event_type"].as_str().unwrap().to_owned();
            assert!(
                file.starts_with(&format!("event_type={kind}/")),
                "{file} holds a row of {kind}"
            );
            serde_json::to_string(&row).unwrap()
        })
        .collect();
    lines.sort();
    lines
}

/// The Kafka results as the same sorted JSON lines as `parquet_rows`.
fn as_rows(values: &[String]) -> Vec<String> {
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

fn produce_events(topic: &str, o: &SampleOptions, range: std::ops::Range<u64>) {
    let records = range.map(|n| {
        let (k, v) = sample_record(o, n);
        (
            Some(k.into_bytes()),
            Some(v),
            Some(o.start_ms + n as i64 * 100),
            vec![],
        )
    });
    kafka_tools::produce(brokers(), topic, records).unwrap();
}

/// The alerts every run must produce exactly once: the error events.
fn expected_alerts(o: &SampleOptions, n: u64) -> Vec<String> {
    let mut v: Vec<String> = (0..n)
        .map(|i| String::from_utf8(sample_record(o, i).1).unwrap())
        .filter(|v| v.contains(r#""event_type":"error""#))
        .collect();
    v.sort();
    v
}

/// Asserts two sorted multisets are equal, reporting what is missing and
/// what is extra (duplicates) rather than two walls of text.
fn assert_same(got: &[String], want: &[String], what: &str) {
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
struct Rng(u64);

impl Rng {
    fn new() -> Self {
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

    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// The reference: the same input through the same pipeline, never killed.
fn reference(o: &SampleOptions) -> Outputs {
    let f = Fixture::new("reference", "1s");
    produce_events(&f.input, o, 0..o.count);
    f.run_to_completion();
    f.outputs()
}

#[test]
fn kill_9_at_random_moments_loses_and_duplicates_nothing() {
    const CHUNKS: u64 = 20;
    const KILLS: usize = 20;
    let o = SampleOptions {
        count: 200_000,
        users: 500,
        ..SampleOptions::default()
    };
    let mut rng = Rng::new();
    let f = Fixture::new("crash", "100ms");
    let chunk = o.count / CHUNKS;
    let (mut kills, mut runs) = (0, 0);
    let started = Instant::now();
    while kills < KILLS {
        // Records keep arriving, so that most kills land mid-stream.
        if runs < CHUNKS {
            produce_events(&f.input, &o, runs * chunk..(runs + 1) * chunk);
        }
        runs += 1;
        assert!(runs < 200, "could not kill the host {KILLS} times");
        let mut child = f.spawn(None);
        std::thread::sleep(Duration::from_millis(50 + rng.below(600)));
        match child.try_wait().unwrap() {
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
            }
            Some(status) => {
                let mut stderr = String::new();
                std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr)
                    .unwrap();
                assert!(status.success(), "sluice run failed: {status}\n{stderr}");
            }
        }
    }
    for n in runs..CHUNKS {
        produce_events(&f.input, &o, n * chunk..(n + 1) * chunk);
    }
    f.run_to_completion();
    eprintln!(
        "{kills} kills over {runs} runs in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let got = f.outputs();
    assert_same(&got.alerts, &expected_alerts(&o, o.count), "alerts");
    let want = reference(&o);
    assert!(!want.results.is_empty());
    assert_same(&got.results, &want.results, "window results (Kafka)");
    assert_same(&got.parquet, &want.parquet, "window results (Parquet)");
    assert_same(
        &as_rows(&got.results),
        &got.parquet,
        "Kafka and Parquet agree",
    );
}

/// Crashes exactly at a failpoint, restarts, and checks the outputs.
fn crash_at(failpoint: &str, corrupt_newest: bool) {
    let o = SampleOptions {
        count: 20_000,
        users: 100,
        ..SampleOptions::default()
    };
    let f = Fixture::new("failpoint", "10ms");
    produce_events(&f.input, &o, 0..o.count);
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
    crash_at("after-outputs:4", false);
}

#[test]
fn a_crash_between_checkpoint_and_offset_commit_is_exactly_once() {
    crash_at("after-checkpoint:4", false);
}

#[test]
fn a_truncated_newest_checkpoint_falls_back_to_the_previous_one() {
    crash_at("after-outputs:6", true);
}
