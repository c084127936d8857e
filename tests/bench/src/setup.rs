//! What the bench runs on: the guest modules, fresh topics, the input data
//! and the pipeline specs (built in code, validated like a spec file).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use sluice::cli::kafka_tools::{self, SampleOptions, sample_record};
use sluice::spec::PipelineSpec;

/// The example guests the bench runs, as `.wasm` file stems.
const GUESTS: [&str; 3] = ["filter_heartbeats", "strategy_map", "event_window_agg"];

/// Paths of the guest components.
#[derive(Debug, Clone)]
pub struct Modules {
    pub filter_heartbeats: PathBuf,
    pub strategy_map: PathBuf,
    pub event_window_agg: PathBuf,
}

impl Modules {
    /// Finds the components in `dir`, or says how to build them.
    pub fn find(dir: &Path) -> anyhow::Result<Self> {
        let missing: Vec<String> = GUESTS
            .iter()
            .map(|g| dir.join(format!("{g}.wasm")))
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        if !missing.is_empty() {
            bail!(
                "guest modules not found: {}\nbuild them (from the workspace root) with\n  \
                 cargo build --profile guest --target wasm32-wasip2 \
                 -p filter-heartbeats -p strategy-map -p event-window-agg\n\
                 or point --modules at the directory that holds them",
                missing.join(", ")
            );
        }
        let dir = dir
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", dir.display()))?;
        let path = |g: &str| dir.join(format!("{g}.wasm"));
        Ok(Self {
            filter_heartbeats: path(GUESTS[0]),
            strategy_map: path(GUESTS[1]),
            event_window_agg: path(GUESTS[2]),
        })
    }
}

/// The per-user aggregate of the scaling table (`count-sum`, a test
/// guest): its key is the records' Kafka key, so it runs as tasks.
pub fn count_sum(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("count_sum.wasm");
    if !path.is_file() {
        bail!(
            "{} not found: build it with\n  cargo build --profile guest --target wasm32-wasip2 -p count-sum",
            path.display()
        );
    }
    path.canonicalize()
        .with_context(|| format!("cannot resolve {}", path.display()))
}

/// A run id for topic, group and pipeline names: lower-case hex of the
/// start time in ms, and of a count of the runs in this process (two runs
/// may start in the same millisecond), so reruns never collide.
pub fn run_id() -> String {
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{:x}{n:x}", kafka_tools::now_ms())
}

/// A produced input topic.
#[derive(Debug, Clone, Serialize)]
pub struct Input {
    /// `events` (the sample stream) or `readings` (the same stream reshaped
    /// for strategy-map).
    pub kind: &'static str,
    pub topic: String,
    pub records: u64,
    /// Key + value bytes of all records.
    pub bytes: u64,
    pub produce_s: f64,
}

/// Produces the sample event stream (`kafka_tools::sample_record`, record
/// timestamps = event times) and waits until every record is acknowledged.
pub fn produce_events(
    brokers: &str,
    topic: &str,
    options: &SampleOptions,
) -> anyhow::Result<Input> {
    produce_input(brokers, topic, options, "events", sample_record)
}

/// Produces record `n` of `make` for every `n` of the sample stream, with
/// the sample's record timestamps, and waits until all are acknowledged.
fn produce_input(
    brokers: &str,
    topic: &str,
    options: &SampleOptions,
    kind: &'static str,
    make: fn(&SampleOptions, u64) -> (String, Vec<u8>),
) -> anyhow::Result<Input> {
    let started = Instant::now();
    let mut bytes = 0u64;
    let records = (0..options.count).map(|n| {
        let (key, value) = make(options, n);
        bytes += (key.len() + value.len()) as u64;
        (
            Some(key.into_bytes()),
            Some(value),
            Some(options.start_ms + n as i64 * 100),
            vec![],
        )
    });
    let records = kafka_tools::produce(brokers, topic, records)?;
    Ok(Input {
        kind,
        topic: topic.to_owned(),
        records,
        bytes,
        produce_s: started.elapsed().as_secs_f64(),
    })
}

/// The fields of a sample event that a reading is made of.
#[derive(Deserialize)]
struct EventFields<'a> {
    event_type: &'a str,
    timestamp: &'a str,
    amount: f64,
}

/// The reading strategy-map expects, `{strategy, value, ts}`, made from the
/// `n`-th sample event: its event type, amount and timestamp (same key).
pub fn sample_reading(options: &SampleOptions, n: u64) -> (String, Vec<u8>) {
    let (key, event) = sample_record(options, n);
    let e: EventFields<'_> = serde_json::from_slice(&event).expect("sample events are JSON");
    let reading = json!({"strategy": e.event_type, "value": e.amount, "ts": e.timestamp});
    (key, serde_json::to_vec(&reading).expect("plain JSON"))
}

/// Produces the readings made from the sample stream, record for record.
pub fn produce_readings(
    brokers: &str,
    topic: &str,
    options: &SampleOptions,
) -> anyhow::Result<Input> {
    produce_input(brokers, topic, options, "readings", sample_reading)
}

/// Deletes topics; a broker that refuses is reported, not fatal.
pub fn delete_topics(brokers: &str, topics: &[String]) {
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    if let Err(e) = kafka_tools::delete_topics(brokers, &names) {
        eprintln!("[bench] warning: {e:#}; the topics stay on the broker");
    }
}

/// One pipeline of the bench.
#[derive(Debug, Clone)]
pub struct PipelineParams<'a> {
    pub name: String,
    pub brokers: &'a str,
    /// Extra consumer and producer properties (`kafka.consumer`,
    /// `kafka.producer`).
    pub consumer: &'a [(String, String)],
    pub producer: &'a [(String, String)],
    pub input: &'a str,
    pub output: String,
    pub dead_letter: String,
    pub transform: Value,
    pub batch: Value,
    /// Checkpoint directory: with it the pipeline is exactly-once.
    pub exactly_once: Option<&'a Path>,
    /// `parallelism` (1: the pipeline runs whole).
    pub parallelism: usize,
}

/// Builds and validates a spec, exactly as `sluice run` would from a file;
/// also returns its text.
pub fn spec(p: &PipelineParams<'_>) -> anyhow::Result<(PipelineSpec, String)> {
    let mut spec = json!({
        "name": p.name,
        "kafka": {
            "brokers": p.brokers,
            "consumer": properties(p.consumer),
            "producer": properties(p.producer),
        },
        "source": { "topics": [p.input], "start": "earliest" },
        "batch": p.batch,
        "transforms": [p.transform],
        "outputs": { "default": { "topic": p.output } },
        "dead_letter": { "topic": p.dead_letter },
    });
    if let Some(dir) = p.exactly_once {
        spec["checkpoint"] = json!({ "dir": dir, "interval": "1s" });
        spec["delivery"] = json!("exactly-once");
    }
    // Always written: the default depends on the pipeline (see
    // `Parallelism::default_for`), a row must not.
    spec["parallelism"] = json!(p.parallelism);
    let text = serde_json::to_string_pretty(&spec)?;
    let spec = sluice::spec::parse(&text, Path::new("/"))
        .with_context(|| format!("the bench built an invalid spec:\n{text}"))?;
    Ok((spec, text))
}

fn properties(pairs: &[(String, String)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// Parses a `KEY=VALUE` librdkafka property.
pub fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

/// A plain transform step.
pub fn transform(module: &Path) -> Value {
    json!({ "module": module })
}

/// The windowed aggregate step: tumbling 1 minute, 5 s out-of-orderness,
/// 1 h idle timeout, append.
pub fn window_aggregate(module: &Path) -> Value {
    json!({
        "module": module,
        "aggregate": {
            "window": { "tumbling": "1m" },
            "watermark": { "max_out_of_orderness": "5s", "idle_timeout": "1h" },
            "allowed_lateness": "0s",
            "output": "append",
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_carry_the_events_fields_and_build_valid_specs() {
        let o = SampleOptions {
            count: 10,
            users: 7,
            ..Default::default()
        };
        let (key, event) = sample_record(&o, 3);
        let (rkey, reading) = sample_reading(&o, 3);
        assert_eq!(rkey, key);
        let e: Value = serde_json::from_slice(&event).unwrap();
        let r: Value = serde_json::from_slice(&reading).unwrap();
        assert_eq!(
            r,
            json!({"strategy": e["event_type"], "value": e["amount"], "ts": e["timestamp"]})
        );

        // Spec validation checks that the module file exists.
        let modules = tempfile::tempdir().unwrap();
        let module = modules.path().join("event_window_agg.wasm");
        std::fs::write(&module, b"").unwrap();
        let dir = Path::new("/tmp/bench-cp");
        let (spec, text) = spec(&PipelineParams {
            name: "bench-1a-agg".into(),
            brokers: "127.0.0.1:9092",
            consumer: &[("fetch.queue.backoff.ms".into(), "10".into())],
            producer: &[],
            input: "in",
            output: "out".into(),
            dead_letter: "dlq".into(),
            transform: window_aggregate(&module),
            batch: json!({ "max_wait": "10ms" }),
            exactly_once: Some(dir),
            parallelism: 4,
        })
        .unwrap();
        assert_eq!(
            sluice::spec::parse(&text, Path::new("/")).unwrap().name,
            spec.name
        );
        assert_eq!(spec.batch.max_wait, std::time::Duration::from_millis(10));
        assert_eq!(spec.delivery, sluice::spec::Delivery::ExactlyOnce);
        assert_eq!(spec.parallelism.workers(16), 4);
        assert_eq!(spec.checkpoint.as_ref().unwrap().dir, dir);
        assert!(spec.transforms[0].aggregate.is_some());
        assert_eq!(spec.group_id(), "sluice-bench-1a-agg");
        assert_eq!(
            spec.kafka.consumer["fetch.queue.backoff.ms"].to_string(),
            "10"
        );
        assert!(spec.kafka.producer.is_empty());
        assert_eq!(
            parse_property("linger.ms = 1"),
            Ok(("linger.ms".into(), "1".into()))
        );
        assert!(parse_property("linger.ms").is_err());
    }
}
