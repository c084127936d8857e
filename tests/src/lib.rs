//! Support for Sluice's integration tests and benchmarks: the guests built by
//! `build.rs`, a real Kafka-protocol broker (nisshi) started once per test
//! binary, unique topic names, and pipeline runs.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
pub use sluice::cli::kafka_tools::{self, TopicRecord};
use sluice::pipeline::{RunOptions, Summary};
use sluice::spec::PipelineSpec;

pub mod bench;
pub mod postgres;

/// Path of a guest component built by `build.rs`, e.g. `guest("strategy-map")`.
pub fn guest(name: &str) -> PathBuf {
    Path::new(env!("SLUICE_GUEST_DIR")).join(format!("{}.wasm", name.replace('-', "_")))
}

/// The nisshi binary: `$SLUICE_NISSHI`, or where `deploy/local/setup.sh` caches it.
pub fn nisshi_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SLUICE_NISSHI") {
        return path.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/sluice/nisshi-0.8.1/bin/nisshi")
}

/// A nisshi broker process on a free loopback port, with its own working
/// directory. It is stopped when dropped, and also when the test process
/// dies (a watchdog shell kills it once its parent is gone).
pub struct Broker {
    pub brokers: String,
    storage: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// Starts a broker with the given storage engine URL (`memory://nisshi/`
    /// or a relative `sqlite://file.db`).
    pub fn start(storage: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        Self::start_in(dir, storage)
    }

    /// Like `start`, in a given directory (so that sqlite data survives a
    /// restart of the broker).
    pub fn start_in(dir: tempfile::TempDir, storage: &str) -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        Self::start_on(dir, storage, port)
    }

    /// Stops the broker and starts it again on the same port, directory and
    /// storage (with `sqlite://`, its data survives).
    pub fn restart(self) -> anyhow::Result<Self> {
        let port: u16 = self
            .brokers
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .parse()?;
        let storage = self.storage.clone();
        let dir = self.stop();
        Self::start_on(dir, &storage, port)
    }

    fn start_on(dir: tempfile::TempDir, storage: &str, port: u16) -> anyhow::Result<Self> {
        let binary = nisshi_binary();
        if !binary.is_file() {
            bail!(
                "the test broker is not installed at {}: run `deploy/local/setup.sh` (or set SLUICE_NISSHI)",
                binary.display()
            );
        }
        let url = format!("tcp://127.0.0.1:{port}");
        // A new group's first rebalance waits 1 s for the members that
        // start together (the workers of a process; Kafka's default is
        // 3 s): with none, the first member takes every partition and the
        // others take theirs in a cascade of rebalances, where the test
        // broker refuses some hand-off commits (IllegalGeneration).
        let script = r#"
            "$1" broker --listener-url "$2" --advertised-listener-url "$2" --storage-engine "$3" \
                --group-initial-rebalance-delay 1s >>broker.log 2>&1 &
            broker=$!
            trap 'kill $broker 2>/dev/null; wait $broker; exit 0' TERM INT
            while kill -0 "$4" 2>/dev/null && kill -0 $broker 2>/dev/null; do sleep 0.2; done
            kill $broker 2>/dev/null; wait $broker
        "#;
        let child = Command::new("sh")
            .current_dir(dir.path())
            .args(["-c", script, "watchdog"])
            .arg(&binary)
            .args([&url, storage, &std::process::id().to_string()])
            .stdin(Stdio::null())
            .spawn()
            .context("cannot start the broker")?;
        let broker = Self {
            brokers: format!("127.0.0.1:{port}"),
            storage: storage.to_owned(),
            child,
            _dir: dir,
        };
        broker.wait_ready()?;
        Ok(broker)
    }

    fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&self.brokers).is_err() {
            if Instant::now() > deadline {
                bail!("the broker did not start listening on {}", self.brokers);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Stops the broker and hands back its directory, for a restart.
    pub fn stop(mut self) -> tempfile::TempDir {
        self.terminate();
        let dir = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self._dir, dir)
    }

    fn terminate(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// The S3-compatible test server s3s-fs: `$SLUICE_S3S_FS`, or where
/// `deploy/local/setup.sh` caches it.
pub fn s3s_fs_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SLUICE_S3S_FS") {
        return path.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/sluice/s3s-fs-0.17.0/bin/s3s-fs")
}

/// An s3s-fs server on a free loopback port, its objects in a directory of
/// its own, with the bucket [`S3::BUCKET`]. Stopped with the test process
/// (a watchdog shell, as for the broker).
pub struct S3 {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl S3 {
    pub const BUCKET: &str = "sluice";
    pub const ACCESS_KEY: &str = "sluice";
    pub const SECRET_KEY: &str = "sluice-secret";

    pub fn start() -> anyhow::Result<Self> {
        let binary = s3s_fs_binary();
        if !binary.is_file() {
            bail!(
                "the S3 test server is not installed at {}: run `deploy/local/setup.sh` (or set SLUICE_S3S_FS)",
                binary.display()
            );
        }
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("data").join(Self::BUCKET))?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let script = r#"
            "$1" --host 127.0.0.1 --port "$2" --access-key "$3" --secret-key "$4" data >>s3.log 2>&1 &
            server=$!
            trap 'kill $server 2>/dev/null; wait $server; exit 0' TERM INT
            while kill -0 "$5" 2>/dev/null && kill -0 $server 2>/dev/null; do sleep 0.2; done
            kill $server 2>/dev/null; wait $server
        "#;
        let child = Command::new("sh")
            .current_dir(dir.path())
            .args(["-c", script, "watchdog"])
            .arg(&binary)
            .args([
                &port.to_string(),
                Self::ACCESS_KEY,
                Self::SECRET_KEY,
                &std::process::id().to_string(),
            ])
            .stdin(Stdio::null())
            .spawn()
            .context("cannot start the S3 test server")?;
        let address = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&address).is_err() {
            if Instant::now() > deadline {
                bail!("the S3 test server did not start listening on {address}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            endpoint: format!("http://{address}"),
            child,
            _dir: dir,
        })
    }

    /// The objects of the bucket, as files (s3s-fs keeps each as one).
    pub fn bucket_dir(&self) -> PathBuf {
        self._dir.path().join("data").join(Self::BUCKET)
    }

    /// The environment a `sluice` process needs to reach it.
    pub fn env(&self) -> [(&'static str, String); 5] {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", Self::ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", Self::SECRET_KEY.to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
        ]
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let _ = self.child.wait();
        }
    }
}

/// The S3 test server shared by a test binary, started on first use.
pub fn s3() -> &'static S3 {
    static S3_SERVER: OnceLock<S3> = OnceLock::new();
    S3_SERVER.get_or_init(|| S3::start().expect("cannot start the S3 test server"))
}

/// The broker shared by a test binary: `$SLUICE_TEST_BROKERS` if set,
/// otherwise a memory-engine nisshi started on first use.
pub fn brokers() -> &'static str {
    static SHARED: OnceLock<String> = OnceLock::new();
    static BROKER: OnceLock<Broker> = OnceLock::new();
    SHARED.get_or_init(|| {
        if let Ok(external) = std::env::var("SLUICE_TEST_BROKERS") {
            return external;
        }
        let broker = Broker::start("memory://nisshi/").expect("cannot start the test broker");
        BROKER.get_or_init(|| broker).brokers.clone()
    })
}

/// `wasm` (a component) with a custom section appended: other bytes, the
/// same behaviour; e.g. a second version of a module.
pub fn with_custom_section(mut wasm: Vec<u8>, name: &str, payload: &[u8]) -> Vec<u8> {
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name.as_bytes());
    section.extend_from_slice(payload);
    assert!(section.len() < 128, "one-byte LEB128 sizes only");
    wasm.push(0);
    wasm.push(section.len() as u8);
    wasm.extend_from_slice(&section);
    wasm
}

/// A topic name no other test uses.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates topics on the shared broker.
pub fn create_topics(topics: &[&str], partitions: i32) {
    kafka_tools::create_topics(brokers(), topics, partitions).expect("create topics");
}

/// Deletes topics on the shared broker.
pub fn delete_topics(topics: &[&str]) {
    kafka_tools::delete_topics(brokers(), topics).expect("delete topics");
}

/// After the sample stream `o` in `topic` (on `brokers`): one record per
/// key `flush-0..50` (its `user_id` too) two minutes and a half after the
/// last sample event, so that every partition's watermark passes every
/// sample window. A task's watermark is its partition's and a whole
/// pipeline's the slowest partition's, so windows still open at the end
/// would otherwise depend on how the pipeline runs.
pub fn produce_flush(brokers: &str, topic: &str, o: &kafka_tools::SampleOptions) {
    let end = o.start_ms + o.count as i64 * 100;
    let at = (end / 60_000 + 2) * 60_000 + 30_000;
    let records = (0..50).map(|j| {
        let user = format!("flush-{j}");
        let value = format!(
            r#"{{"event_id":"f{j}","user_id":"{user}","event_type":"flush","timestamp":"-","amount":0.0}}"#
        );
        (
            Some(user.into_bytes()),
            Some(value.into_bytes()),
            Some(at),
            vec![],
        )
    });
    kafka_tools::produce(brokers, topic, records).expect("produce");
}

/// Like [`produce_flush`], for an aggregate per event type: a record of
/// each of `types` for each key `flush-0..60` (so every partition of
/// `topic` has each type), stamped two minutes and a half after the last
/// sample event in its `timestamp` field and as its Kafka timestamp. Once
/// a pipeline has read them, every watermark, of every source partition
/// and of every (upstream task, partition) of a repartition topic, has
/// passed every sample window.
pub fn produce_type_flush(
    brokers: &str,
    topic: &str,
    o: &kafka_tools::SampleOptions,
    types: &[&str],
) {
    let end = o.start_ms + o.count as i64 * 100;
    let at = (end / 60_000 + 2) * 60_000 + 30_000;
    let stamp = humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(at as u64),
    )
    .to_string();
    let stamp = &stamp;
    let records = types.iter().flat_map(|kind| {
        (0..60).map(move |j| {
            let user = format!("flush-{j}");
            let value = format!(
                r#"{{"event_id":"f{kind}{j}","user_id":"{user}","event_type":"{kind}","timestamp":"{stamp}","amount":0.0}}"#
            );
            (
                Some(user.into_bytes()),
                Some(value.into_bytes()),
                Some(at),
                vec![],
            )
        })
    });
    kafka_tools::produce(brokers, topic, records).expect("produce");
}

/// Parses a spec written in a test (module paths are absolute).
pub fn spec(yaml: &str) -> PipelineSpec {
    sluice::spec::parse(yaml, Path::new("/"))
        .unwrap_or_else(|e| panic!("bad test spec: {e}\n{yaml}"))
}

/// Runs a pipeline in-process until it is caught up.
pub fn run_until_caught_up(spec: &PipelineSpec) -> Summary {
    sluice::pipeline::run(
        spec,
        RunOptions {
            until_caught_up: true,
        },
        &AtomicBool::new(false),
    )
    .unwrap_or_else(|e| panic!("pipeline failed: {e:#}"))
}

/// Every record in `topic`, in partition and offset order.
pub fn read(topic: &str) -> Vec<TopicRecord> {
    kafka_tools::read_topic(brokers(), topic).expect("read topic")
}

/// The values of `records`, sorted (for multiset comparisons across partitions).
pub fn sorted_values(records: &[TopicRecord]) -> Vec<String> {
    let mut v: Vec<String> = records
        .iter()
        .map(|r| r.value.clone().unwrap_or_default())
        .collect();
    v.sort();
    v
}

/// Produces `(key, value)` records, with timestamps 1000, 1001, ...
pub fn produce(topic: &str, records: &[(&str, &str)]) {
    let items = records.iter().enumerate().map(|(i, (k, v))| {
        (
            Some(k.as_bytes().to_vec()),
            Some(v.as_bytes().to_vec()),
            Some(1000 + i as i64),
            vec![],
        )
    });
    kafka_tools::produce(brokers(), topic, items).expect("produce");
}

/// The Python with pyarrow that `deploy/local/setup.sh` installs:
/// `$SLUICE_PYTHON`, or its cached virtualenv.
/// Runs the offline validator `deploy/<dir>/validate.sh` (with the test
/// Python), asserts that it succeeded, and returns the last line it printed.
pub fn run_validator(dir: &str) -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new("bash")
        .arg(repo.join("deploy").join(dir).join("validate.sh"))
        .env("SLUICE_PYTHON", python())
        .output()
        .unwrap_or_else(|e| panic!("run deploy/{dir}/validate.sh: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "validate.sh failed:\n{stdout}{stderr}"
    );
    stdout.lines().last().unwrap_or_default().to_owned()
}

pub fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("SLUICE_PYTHON") {
        return path.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/sluice/pyarrow-venv/bin/python")
}

/// Every row of every visible Parquet file under `dir` (dot-files are
/// invisible to readers), read with pyarrow, a standard reader: `(path of
/// the file relative to dir, row as a JSON object)`, files in path order.
pub fn read_parquet(dir: &Path) -> Vec<(String, serde_json::Value)> {
    const SCRIPT: &str = r#"
import json, os, sys
import pyarrow.parquet as pq
root = sys.argv[1]
for base, dirs, files in sorted(os.walk(root)):
    dirs[:] = sorted(d for d in dirs if not d.startswith(('.', '_')))
    for name in sorted(files):
        if name.startswith(('.', '_')):
            continue
        path = os.path.join(base, name)
        for row in pq.ParquetFile(path).read().to_pylist():
            print(json.dumps([os.path.relpath(path, root), row], default=str))
"#;
    if !dir.exists() {
        return Vec::new();
    }
    run_reader("pyarrow", SCRIPT, dir)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Runs a Python reader `script` (named `reader` in failures) on `dir`;
/// returns what it printed.
fn run_reader(reader: &str, script: &str, dir: &Path) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (run deploy/local/setup.sh): {e}",
                python().display()
            )
        });
    assert!(
        out.status.success(),
        "{reader} could not read {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Where a demo pipeline of `deploy/demo` runs in a test: its topics (the
/// demo's `events`, `events-per-minute` and `events-dlq`), and a directory
/// for its checkpoints and files.
pub struct DemoPlace<'a> {
    pub input: &'a str,
    pub results: &'a str,
    pub dlq: &'a str,
    pub dir: &'a Path,
}

/// The demo spec `file` (a window pipeline of `deploy/demo`) made to run
/// in `place` as `name` (its own group and directory), with `extra`
/// replacements applied to its text.
pub fn demo_spec(
    file: &str,
    name: &str,
    place: &DemoPlace<'_>,
    extra: &[(&str, &str)],
) -> PipelineSpec {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/demo");
    let mut yaml = std::fs::read_to_string(demo.join(file))
        .unwrap()
        .replace("127.0.0.1:9092", brokers())
        .replace(
            "topics: [events]",
            &format!("topics: [{}]\n  group: {}", place.input, unique(name)),
        )
        .replace(
            "topic: events-per-minute",
            &format!("topic: {}", place.results),
        )
        .replace("topic: events-dlq", &format!("topic: {}", place.dlq))
        .replace(
            "../../target/wasm32-wasip2/guest/event_window_agg.wasm",
            &guest("event-window-agg").display().to_string(),
        )
        .replace(
            "../../.sluice/demo/",
            &format!("{}/{name}/", place.dir.display()),
        )
        .replace(
            "name: events-per-minute",
            &format!("name: {}", unique(name)),
        );
    for (from, to) in extra {
        yaml = yaml.replace(from, to);
    }
    spec(&yaml)
}

/// A Delta table as read by delta-rs's Python package (`deltalake`), an
/// independent reader: its version, its data files and its rows.
#[derive(Debug)]
pub struct DeltaRead {
    pub version: u64,
    pub files: usize,
    pub rows: Vec<serde_json::Value>,
}

/// Reads the Delta table at `dir` with the Python `deltalake` package;
/// timestamps come back as `YYYY-MM-DD HH:MM:SS+00:00` strings.
pub fn read_delta(dir: &Path) -> DeltaRead {
    const SCRIPT: &str = r#"
import json, os, sys
from deltalake import DeltaTable
t = DeltaTable(sys.argv[1])
print(json.dumps({"version": t.version(), "files": len(t.file_uris())}))
for row in t.to_pyarrow_table().to_pylist():
    print(json.dumps(row, default=str))
sys.stdout.flush()
# deltalake's native thread pool can abort the interpreter's shutdown
# ("terminate called without an active exception"); the work is done.
os._exit(0)
"#;
    let text = run_reader("deltalake", SCRIPT, dir);
    let mut lines = text.lines();
    let head: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    DeltaRead {
        version: head["version"].as_u64().unwrap(),
        files: head["files"].as_u64().unwrap() as usize,
        rows: lines.map(|l| serde_json::from_str(l).unwrap()).collect(),
    }
}

/// A record as bytes, headers included (names need not be UTF-8), for
/// records that [`kafka_tools::produce`] and [`read`] cannot express.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub timestamp: Option<i64>,
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl RawRecord {
    /// A record with key `k`, value `value`, a timestamp and these headers.
    pub fn new(value: &str, timestamp: i64, headers: &[(&[u8], &[u8])]) -> Self {
        Self {
            key: Some(b"k".to_vec()),
            value: Some(value.as_bytes().to_vec()),
            timestamp: Some(timestamp),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_vec(), Some(v.to_vec())))
                .collect(),
        }
    }

    /// The value, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(self.value.as_deref().unwrap_or_default()).into_owned()
    }

    /// The value of the first header called `name`, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n == name.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v.as_deref().unwrap_or_default()).into_owned())
    }
}

/// Produces `records` in order to partition 0 of `topic`, header names as
/// raw bytes, and waits until all are acknowledged.
pub fn produce_raw(topic: &str, records: &[RawRecord]) {
    use rdkafka::ClientConfig;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("enable.idempotence", "true")
        .set("message.max.bytes", "2000000")
        .create()
        .expect("producer");
    for r in records {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).partition(0);
        if let Some(k) = &r.key {
            record = record.key(k.as_slice());
        }
        if let Some(v) = &r.value {
            record = record.payload(v.as_slice());
        }
        if let Some(ts) = r.timestamp {
            record = record.timestamp(ts);
        }
        let headers = r.headers.iter().map(|(n, v)| (n.as_slice(), v.as_deref()));
        record = record.headers(sluice::kafka_headers::build(headers, r.headers.len()));
        producer
            .send(record)
            .map_err(|(e, _)| e)
            .expect("queue a record");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// Every record in `topic`, in partition and offset order, as bytes.
pub fn read_raw(topic: &str) -> Vec<RawRecord> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
    const TIMEOUT: Duration = Duration::from_secs(10);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", "sluice-tests-raw")
        .set("enable.auto.commit", "false")
        .set("fetch.message.max.bytes", "2000000")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    let mut ends = std::collections::HashMap::new();
    for p in metadata.topics()[0].partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), TIMEOUT)
            .expect("watermarks");
        if high > low {
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(low))
                .unwrap();
            ends.insert(p.id(), high);
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return out;
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while !ends.is_empty() {
        assert!(Instant::now() < deadline, "timed out reading `{topic}`");
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.expect("consume");
        if ends
            .get(&m.partition())
            .is_some_and(|&end| m.offset() + 1 >= end)
        {
            ends.remove(&m.partition());
        }
        seen.push((m.partition(), m.offset()));
        out.push(RawRecord {
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            timestamp: m.timestamp().to_millis(),
            headers: sluice::kafka_headers::message_headers(&m)
                .map(|(n, v)| (n.to_vec(), v.map(<[u8]>::to_vec)))
                .collect(),
        });
    }
    let mut both: Vec<_> = seen.into_iter().zip(out).collect();
    both.sort_by_key(|(at, _)| *at);
    both.into_iter().map(|(_, r)| r).collect()
}
