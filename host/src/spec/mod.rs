//! The pipeline spec: one typed, validated description of a pipeline.
//!
//! Parsing is strict (`deny_unknown_fields`); every default lives in this
//! file; every error names the field it is about, e.g.
//! `transforms[1].limits.deadline: ...`. The spec is passed down explicitly to
//! the stages that need a part of it; there is no global configuration.
//!
//! Specs an operator runs are trusted with paths; specs sent to
//! `sluice serve` are parsed with a [`Confinement`] (see `confine.rs`).
//! librdkafka properties pass an allow-list in every mode (see
//! `kafka_props.rs`).

mod confine;
pub mod delta;
pub mod join;
mod kafka_props;
mod load;
pub mod parquet;
pub mod postgres;
mod secret;
mod stages;
pub mod window;

use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use indexmap::IndexMap;
use serde::Deserialize;

pub use confine::Confinement;
pub use load::{SpecError, load, load_unbuilt, parse, parse_confined};
pub use secret::{SECRET_KEYS, is_secret_config, marked_secret, redacted};
pub use stages::{Repartition, Stages, UPSTREAM_HEADER, WATERMARK_HEADER};

/// The name of the output that a transform chain's last step emits to when a
/// guest does not name one.
pub const DEFAULT_OUTPUT: &str = "default";

/// A whole pipeline: `source -> batch -> transforms -> outputs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Lower-case letters, digits and `-`; used in logs, metrics and the
    /// default consumer group.
    pub name: String,
    pub kafka: KafkaSpec,
    pub source: SourceSpec,
    #[serde(default)]
    pub batch: BatchSpec,
    /// The ordered chain of transforms. Each step's default output feeds the
    /// next step; named outputs and dead letters leave the chain at once.
    #[serde(default)]
    pub transforms: Vec<TransformSpec>,
    /// Named outputs; `default` (required) receives the last step's default
    /// output.
    pub outputs: IndexMap<String, OutputSpec>,
    pub dead_letter: DeadLetterSpec,
    /// Periodic, atomic snapshots of offsets, window state and sink state;
    /// a restart resumes from the newest valid one. Absent: no checkpoints
    /// (offsets are committed to the consumer group once their batches are
    /// acknowledged, every `source.commit_interval`, held back behind open
    /// windows).
    #[serde(default)]
    pub checkpoint: Option<CheckpointSpec>,
    /// `at-least-once` (default) or `exactly-once` (needs `checkpoint`).
    #[serde(default)]
    pub delivery: Delivery,
    /// How many worker threads run the pipeline's tasks (one task per
    /// source partition number; see `pipeline::worker`); `1`: one run loop
    /// over every partition, as a whole. Default: `auto`, except for a
    /// pipeline that must run whole to keep its meaning or its state (see
    /// [`Parallelism::default_for`]).
    #[serde(default = "Parallelism::unset")]
    pub parallelism: Parallelism,
}

/// `parallelism`: a number of worker threads, or `auto` (the cores this
/// process may use), in either case at most one per task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parallelism {
    Workers(std::num::NonZeroUsize),
    Auto,
    /// Not written in the spec: resolved by [`Parallelism::default_for`]
    /// as the spec is loaded, never seen after.
    Unset,
}

impl Default for Parallelism {
    fn default() -> Self {
        Self::Workers(std::num::NonZeroUsize::MIN)
    }
}

impl Parallelism {
    fn unset() -> Self {
        Self::Unset
    }

    /// The parallelism of a spec that does not set one: `auto`, except
    ///
    /// - `1` for a pipeline with an aggregate step without `repartition`:
    ///   whether its key is the records' Kafka key (what a task needs) only
    ///   the guest knows, and a whole run is right for any key; likewise
    ///   for a pipeline that starts with a join (a task joins only the
    ///   records of its partitions);
    /// - `1` for a pipeline whose checkpoint directory holds a whole
    ///   pipeline's checkpoints (written before tasks existed, or with
    ///   `parallelism: 1`): it carries on from them rather than refusing.
    pub fn default_for(spec: &PipelineSpec) -> Self {
        let any_key = spec
            .transforms
            .iter()
            .any(|t| (t.aggregate.is_some() && t.repartition.is_none()) || t.join.is_some());
        let whole_state = spec
            .checkpoint
            .as_ref()
            .is_some_and(CheckpointSpec::holds_whole_pipeline);
        if any_key || whole_state {
            Self::default()
        } else {
            Self::Auto
        }
    }

    /// Workers for `tasks` tasks: never more than the tasks, at least one.
    pub fn workers(self, tasks: usize) -> usize {
        let wanted = match self {
            Self::Workers(n) => n.get(),
            Self::Auto => std::thread::available_parallelism().map_or(1, |n| n.get()),
            Self::Unset => 1,
        };
        wanted.min(tasks).max(1)
    }

    /// Whether the pipeline runs as tasks (per-partition state and
    /// checkpoints) rather than as one whole.
    pub fn tasks(self) -> bool {
        !matches!(self, Self::Unset) && self != Self::default()
    }
}

impl<'de> Deserialize<'de> for Parallelism {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(i64),
            Fraction(f64),
            Word(String),
        }
        let wrong = |shown: String| {
            serde::de::Error::custom(format!(
                "parallelism must be `auto` or a number from 1 to {MAX_PARALLELISM}, not {shown}"
            ))
        };
        match Raw::deserialize(d)? {
            Raw::Word(w) if w == "auto" => Ok(Self::Auto),
            Raw::Number(n) => usize::try_from(n)
                .ok()
                .and_then(std::num::NonZeroUsize::new)
                .filter(|n| n.get() <= MAX_PARALLELISM)
                .map(Self::Workers)
                .ok_or_else(|| wrong(n.to_string())),
            Raw::Fraction(x) => Err(wrong(x.to_string())),
            Raw::Word(w) => Err(wrong(format!("\"{w}\""))),
        }
    }
}

/// The most worker threads a spec may ask for.
pub const MAX_PARALLELISM: usize = 256;

/// Where and how often checkpoints are taken.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    /// Directory of this pipeline's checkpoints and epoch log, relative to
    /// the spec file's directory, or `s3://bucket/prefix` in S3-compatible
    /// object storage (shared by the processes of a pipeline on several
    /// machines). One directory per pipeline.
    pub dir: PathBuf,
    /// Where the S3 of an `s3://` directory is, beyond the standard `AWS_*`
    /// environment variables (which hold the credentials).
    #[serde(default)]
    pub s3: S3Spec,
    /// Time between checkpoints (one is also taken on clean shutdown).
    #[serde(default = "CheckpointSpec::default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// How many checkpoints to keep (older ones are the fallback when the
    /// newest is damaged).
    #[serde(default = "CheckpointSpec::default_keep")]
    pub keep: usize,
    /// fsync the epoch log before a batch's outputs are produced, so that
    /// exactly-once survives a machine crash, not only a process crash.
    #[serde(default = "CheckpointSpec::default_sync")]
    pub sync: bool,
}

/// An S3-compatible store's endpoint and region. Unset fields come from
/// `AWS_ENDPOINT_URL`, `AWS_REGION` and `AWS_ALLOW_HTTP`; the credentials
/// always from the environment (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), never from a spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Spec {
    /// e.g. `http://127.0.0.1:9000` for a local server.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Whether a plain `http://` endpoint is allowed.
    pub allow_http: Option<bool>,
    /// Credentials given by a program embedding Sluice (never read from a
    /// spec: `(access key id, secret access key)`).
    #[serde(skip)]
    pub credentials: Option<(String, String)>,
}

impl S3Spec {
    /// A client builder for `bucket` with these settings over the
    /// environment's.
    pub fn builder(&self, bucket: &str) -> object_store::aws::AmazonS3Builder {
        let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(endpoint) = &self.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(region) = &self.region {
            builder = builder.with_region(region);
        }
        if let Some(allow) = self.allow_http {
            builder = builder.with_allow_http(allow);
        }
        if let Some((id, secret)) = &self.credentials {
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret);
        }
        builder
    }
}

/// The scheme of a checkpoint directory in S3-compatible object storage.
pub const S3_SCHEME: &str = "s3://";

impl CheckpointSpec {
    /// Whether the directory holds a whole pipeline's checkpoints (written
    /// with parallelism 1): its lineage file (see `checkpoint::dir`) is at
    /// its root, where a pipeline run as tasks has one per task below.
    /// (Not known here for a directory in S3: the run checks it there.)
    pub fn holds_whole_pipeline(&self) -> bool {
        self.s3_url().is_none() && self.dir.join("LINEAGE").is_file()
    }

    /// `s3://bucket/prefix` when the directory is in S3.
    pub fn s3_url(&self) -> Option<&str> {
        self.dir.to_str().filter(|d| d.starts_with(S3_SCHEME))
    }

    fn default_interval() -> Duration {
        Duration::from_secs(5)
    }
    fn default_keep() -> usize {
        3
    }
    fn default_sync() -> bool {
        true
    }
}

/// The delivery guarantee of a pipeline's outputs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// After a crash, the outputs of batches since the last commit are
    /// produced again.
    #[default]
    AtLeastOnce,
    /// After a crash, each output record is in its topic exactly once:
    /// batches since the last checkpoint are re-executed exactly as they ran
    /// (from the epoch log) and records the broker already has are skipped.
    ExactlyOnce,
}

/// Connection to the Kafka cluster that the source reads and the sinks write.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSpec {
    /// Bootstrap servers, comma-separated (`host:port,host:port`).
    pub brokers: String,
    /// Extra librdkafka consumer properties; they override Sluice's
    /// defaults. Only those on the allow-list (see `kafka_props.rs`).
    #[serde(default)]
    pub consumer: IndexMap<String, Scalar>,
    /// Extra librdkafka producer properties; they override Sluice's
    /// defaults. Only those on the allow-list (see `kafka_props.rs`).
    #[serde(default)]
    pub producer: IndexMap<String, Scalar>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// The topics read. Left out when the first step is a join: its sides'
    /// topics are the source's (left ones first).
    #[serde(default)]
    pub topics: Vec<String>,
    /// Consumer group; default `sluice-<name>`.
    #[serde(default)]
    pub group: Option<String>,
    /// Where to start when the group has no committed offset.
    #[serde(default)]
    pub start: StartFrom,
    /// How often the offsets of acknowledged batches are committed to the
    /// group (asynchronously; and on a clean stop). After a crash, the
    /// records of up to this long, plus the batches awaiting
    /// acknowledgement, are processed again. Unused with checkpoints (the
    /// checkpoint holds the offsets).
    #[serde(
        default = "SourceSpec::default_commit_interval",
        with = "humantime_serde"
    )]
    pub commit_interval: Duration,
    /// Set for the stage that reads a repartition topic, never written: the
    /// source partitions of the stage that writes it (the upstream tasks,
    /// whose event time each record's `sluice.upstream` header tells apart).
    #[serde(skip)]
    pub upstream_tasks: Option<Vec<i32>>,
}

impl SourceSpec {
    fn default_commit_interval() -> Duration {
        Duration::from_secs(1)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    #[default]
    Earliest,
    Latest,
}

/// When a micro-batch closes: whichever limit is reached first.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSpec {
    pub max_records: usize,
    pub max_bytes: ByteSize,
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
}

impl Default for BatchSpec {
    fn default() -> Self {
        Self {
            max_records: 1000,
            max_bytes: ByteSize::mib(1),
            max_wait: Duration::from_millis(100),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformSpec {
    /// Path of the `.wasm` component, relative to the spec file's directory.
    pub module: PathBuf,
    /// Step name in logs and dead-letter headers; default: the module's file
    /// stem.
    #[serde(default)]
    pub name: Option<String>,
    /// Passed to the guest's `init`, in this order. Non-string values arrive
    /// as JSON text. A value written `{ secret: "..." }` is a secret: the
    /// guest gets the inner string, and every read of the spec (the API,
    /// logs) shows it redacted; see [`is_secret_config`].
    #[serde(default)]
    pub config: IndexMap<String, serde_json::Value>,
    #[serde(default)]
    pub limits: Limits,
    /// Present for an aggregate step: windows, watermark, lateness and output
    /// mode. The module must then implement the aggregate world, and the step
    /// must be the last of the chain.
    #[serde(default)]
    pub aggregate: Option<window::WindowSpec>,
    /// Present for a join step: its two inputs, interval and type. The
    /// module must then implement the join world, and the step must be
    /// the first of the chain (see [`join`]).
    #[serde(default)]
    pub join: Option<join::JoinSpec>,
    /// An aggregate step whose key is not the records' Kafka key, in a
    /// pipeline run as tasks: `true` (topic `<pipeline>-repartition-<step>`)
    /// or `{ topic: name }`. The records are re-keyed by the aggregate key
    /// and written to that topic, which the aggregating tasks read (see
    /// `stages.rs`). Ignored with `parallelism: 1`.
    #[serde(default)]
    pub repartition: Option<Repartition>,
    /// Set by [`PipelineSpec::stages`], never written: the step only keys
    /// the records for the repartition topic (its guest's `extract`).
    #[serde(skip)]
    pub rekey: bool,
}

impl TransformSpec {
    /// The step's name: explicit, or the module's file stem.
    pub fn step_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            self.module
                .file_stem()
                .map(|s| s.to_string_lossy().replace('_', "-"))
                .unwrap_or_else(|| "transform".to_owned())
        })
    }

    /// The config as the key/value strings the guest receives.
    pub fn config_pairs(&self) -> Vec<(String, String)> {
        self.config
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => match marked_secret(other) {
                        Some(secret) => secret.to_owned(),
                        None => other.to_string(),
                    },
                };
                (k.clone(), v)
            })
            .collect()
    }
}

/// Sandbox limits of one transform instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Upper bound on the guest's linear memory.
    pub memory: ByteSize,
    /// Wall-clock budget of one `process` call (one micro-batch).
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory: ByteSize::mib(128),
            deadline: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// The Kafka topic the output's records are written to.
    #[serde(default)]
    pub topic: Option<String>,
    /// Parquet files the output's records (JSON objects) are written to.
    #[serde(default)]
    pub parquet: Option<parquet::ParquetSpec>,
    /// The PostgreSQL table the output's records (JSON objects) are
    /// written to.
    #[serde(default)]
    pub postgres: Option<postgres::PostgresSpec>,
    /// The Delta Lake table the output's records (JSON objects) are
    /// written to.
    #[serde(default)]
    pub delta: Option<delta::DeltaSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterSpec {
    pub topic: String,
}

/// A property value: YAML lets users write `linger.ms: 5`; librdkafka wants
/// strings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    String(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::String(s) => f.write_str(s),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Bool(b) => write!(f, "{b}"),
        }
    }
}

impl PipelineSpec {
    pub fn group_id(&self) -> String {
        self.source
            .group
            .clone()
            .unwrap_or_else(|| format!("sluice-{}", self.name))
    }

    /// The join step, if the chain starts with one: its section, and how
    /// many of the source topics (the first ones) are its left side's.
    pub fn join(&self) -> Option<(&join::JoinSpec, usize)> {
        let j = self.transforms.first()?.join.as_ref()?;
        Some((j, j.left.topics.len()))
    }

    /// Where source topic `source` (an index into `source.topics`) starts
    /// when the group has no committed offset: its join side's `start`,
    /// else `source.start`.
    pub fn start_of(&self, source: u16) -> StartFrom {
        let side = self.join().and_then(|(j, left)| {
            if usize::from(source) < left {
                j.left.start
            } else {
                j.right.start
            }
        });
        side.unwrap_or(self.source.start)
    }

    /// Whether a join side starts otherwise than the source's `start` says
    /// (the consumer then positions each partition itself).
    pub fn sides_start_apart(&self) -> bool {
        self.join().is_some_and(|(j, _)| {
            [j.left.start, j.right.start]
                .iter()
                .any(|s| s.is_some_and(|s| s != self.source.start))
        })
    }

    /// Every topic the pipeline writes to, deduplicated.
    pub fn sink_topics(&self) -> Vec<&str> {
        let mut topics: Vec<&str> = self
            .outputs
            .values()
            .filter_map(|o| o.topic.as_deref())
            .collect();
        topics.push(&self.dead_letter.topic);
        topics.sort_unstable();
        topics.dedup();
        topics
    }
}
