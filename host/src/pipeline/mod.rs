//! A running pipeline: `source -> chain of transforms -> sinks`, with
//! at-least-once or exactly-once delivery.
//!
//! Invariants:
//! - A batch's source offsets are committed (to the consumer group, or in a
//!   checkpoint) only after every output and dead-letter record of that
//!   batch was acknowledged by the broker, and batches are committed in
//!   order (together, at most every `source.commit_interval`). A crash
//!   therefore re-delivers at most the uncommitted batches; it never skips
//!   one.
//! - Exactly-once: each batch (epoch) is described in the epoch log before
//!   any of its outputs is produced; after a crash the epochs since the last
//!   checkpoint run again identically and records already in Kafka are not
//!   produced again (see `runner/recovery.rs` and `sink/written.rs`).
//! - Every source record is accounted for: emitted, dead-lettered with a
//!   reason, or counted as dropped by a guest's decision.
//! - Up to 16 produced batches await their acknowledgements while the
//!   next ones run; the Kafka client fetches ahead in its own threads.
//! - With `parallelism` other than 1, all of the above holds per task (one
//!   per source partition number, see `task.rs`), and the tasks run on
//!   worker threads (`worker.rs`); otherwise the pipeline runs whole, as
//!   one run loop (`runner.rs`). An aggregate with `repartition` splits a
//!   pipeline run as tasks in two stages joined by a topic (`stages.rs`).

mod aggregate;
mod chain;
mod checkpoint;
mod control;
mod deliver;
mod join;
mod round;
mod runner;
mod stages;
mod task;
mod worker;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use serde::Serialize;

pub use aggregate::{AggregateOutput, AggregateStep, StepError, WindowDeadLetter};
pub use chain::{Chain, ChainOutput, DeadLetter, NO_ORIGIN, Rekey, ResultWindow, Routed, Step};
pub use checkpoint::{Checkpoint, SourcePosition, TaskLayout};
pub use control::{
    Control, DURATION_BUCKETS_MS, JoinInfo, JoinSideInfo, Progress, Sample, SwapListener,
    SwapRecord, SwapRequest, SwapState, TaskProgress,
};
pub use deliver::{Exchange, Rejected, Routing, StepInfo};
pub use join::JoinStep;
pub use task::Stage;

use runner::Runner;

use crate::batch::reason::Kind;
use crate::runtime::{Aggregator, Joiner, Labels, Module, Runtime, Transform};
use crate::source::NextOffset;
use crate::spec::{DEFAULT_OUTPUT, PipelineSpec};

/// This process's name for static group membership (`--instance-id`).
static INSTANCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Names this process for static membership in its pipelines' consumer
/// groups: each worker of a pipeline run as tasks joins as
/// `<instance>-<pipeline>[-repartition]-w<n>`. Once per process.
pub fn set_instance(id: String) -> anyhow::Result<()> {
    anyhow::ensure!(
        !id.is_empty()
            && id.len() <= 200
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
        "--instance-id must be 1-200 characters of letters, digits, `-`, `_` and `.`"
    );
    INSTANCE
        .set(id)
        .map_err(|_| anyhow::anyhow!("the instance id is set already"))
}

/// This process's name for static group membership, if it has one.
fn instance() -> Option<&'static str> {
    INSTANCE.get().map(String::as_str)
}

/// How `run` ends.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Drain to the end offsets seen at start, then return.
    pub until_caught_up: bool,
}

/// What a run did; printed as JSON by `sluice run` when it ends.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub batches: u64,
    pub records_in: u64,
    /// Records written per configured output.
    pub outputs: BTreeMap<String, u64>,
    pub dead_lettered: u64,
    /// Dead letters by kind of reason (serialized as the kinds' labels:
    /// `rejected` for a guest's own dead letters, `trap`, `late`, ...).
    pub dead_letter_reasons: BTreeMap<Kind, u64>,
    pub dropped: u64,
    /// Records that could be neither delivered nor dead-lettered (too
    /// large even as a dead letter): logged, and written to the
    /// quarantine file if the pipeline has a checkpoint directory.
    pub quarantined: u64,
    /// Where the run's time went.
    pub time: TimeSpent,
    /// Event-time progress of the aggregate step, if the pipeline has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub windows: Option<crate::window::Progress>,
    /// A pipeline cut at a repartition topic: the records written to it
    /// (and read back by the aggregating tasks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repartitioned: Option<u64>,
    /// A pipeline run as tasks: what each task did, by stage and partition.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskSummary>,
    /// Per output with a PostgreSQL table: rows written, transactions and
    /// their times.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub postgres: BTreeMap<String, crate::sink::PostgresStats>,
    /// Per output with a Delta table: rows written, commits and their
    /// times, the table's version.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub delta: BTreeMap<String, crate::sink::DeltaStats>,
}

/// One task's part of a run (a pipeline run as tasks).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct TaskSummary {
    /// The topics it reads: `source`, or `repartition`.
    pub stage: Stage,
    /// The partition number the task owns.
    pub partition: i32,
    pub batches: u64,
    pub records_in: u64,
    pub outputs: u64,
    pub dead_lettered: u64,
    pub dropped: u64,
    /// Its watermark at the end (with an aggregate), Unix ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watermark: Option<i64>,
    /// Its open (window, key) pairs at the end (with an aggregate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_rows: Option<usize>,
}

impl TaskSummary {
    /// The row of the task of `partition` in `stage`, from its summary.
    pub fn of(stage: Stage, partition: i32, s: &Summary) -> Self {
        Self {
            stage,
            partition,
            batches: s.batches,
            records_in: s.records_in,
            outputs: s.outputs.values().sum(),
            dead_lettered: s.dead_lettered,
            dropped: s.dropped,
            watermark: s.windows.as_ref().and_then(|w| w.watermark),
            state_rows: s.windows.as_ref().map(|w| w.state_rows),
        }
    }
}

/// Milliseconds a run spent in each stage of its batches (see
/// `control::Durations`), summed over the run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TimeSpent {
    /// Waiting for and reading records.
    pub fetch_ms: u64,
    /// The transform chain (Wasm and windows).
    pub transform_ms: u64,
    /// Handing results to the sinks.
    pub sink_ms: u64,
    /// Waiting for acknowledgements, and checkpoints.
    pub checkpoint_ms: u64,
}

impl From<control::Durations> for TimeSpent {
    /// Whole milliseconds of each stage.
    fn from(d: control::Durations) -> Self {
        Self {
            fetch_ms: d.fetch as u64,
            transform_ms: d.transform as u64,
            sink_ms: d.sink as u64,
            checkpoint_ms: d.checkpoint as u64,
        }
    }
}

/// Processing time: milliseconds since the Unix epoch, now (a batch runs
/// at the time it started, which its epoch records).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Loads every step's module and starts an instance of it, running `init`
/// with the step's config. This is also what `sluice validate` checks.
pub fn load_steps(spec: &PipelineSpec, runtime: &Runtime) -> anyhow::Result<Vec<Step>> {
    (0..spec.transforms.len())
        .map(|i| load_step(spec, runtime, i, &spec.transforms[i].module))
        .collect()
}

/// Loads step `i` of `spec` from the component at `file` (the spec's own
/// module, or the one a swap brings) and starts an instance of it.
pub fn load_step(
    spec: &PipelineSpec,
    runtime: &Runtime,
    i: usize,
    file: &std::path::Path,
) -> anyhow::Result<Step> {
    let module = load_module(spec, runtime, i, file)?;
    start_step(spec, i, &module)
}

/// Loads and compiles step `i`'s component from `file`.
fn load_module(
    spec: &PipelineSpec,
    runtime: &Runtime,
    i: usize,
    file: &std::path::Path,
) -> anyhow::Result<Module> {
    let field = step_field(spec, i);
    let bytes =
        std::fs::read(file).with_context(|| format!("{field}: cannot read {}", file.display()))?;
    let module_name = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    runtime
        .load(&module_name, &bytes)
        .with_context(|| format!("{field}: {}", file.display()))
}

/// `transforms[i] (name)`, for errors.
fn step_field(spec: &PipelineSpec, i: usize) -> String {
    format!("transforms[{i}] ({})", spec.transforms[i].step_name())
}

/// Starts an instance of `module` as step `i` of `spec` (its `init` runs
/// with the step's config).
fn start_step(spec: &PipelineSpec, i: usize, module: &Module) -> anyhow::Result<Step> {
    let t = &spec.transforms[i];
    let field = step_field(spec, i);
    let labels = Labels {
        pipeline: spec.name.as_str().into(),
        step: t.step_name().as_str().into(),
        module: module.name().into(),
    };
    if t.rekey {
        let aggregator = Aggregator::new(module, labels, t.limits, t.config_pairs())
            .with_context(|| field.clone())?;
        let max_ahead = t.aggregate.as_ref().map_or(i64::MAX, |w| w.max_ahead_ms());
        return Ok(Step::Rekey(Box::new(Rekey {
            aggregator,
            max_ahead,
        })));
    }
    if let Some(join) = &t.join {
        let joiner = Joiner::new(module, labels, t.limits, t.config_pairs())
            .with_context(|| field.clone())?;
        return Ok(Step::Join(Box::new(JoinStep::new(joiner, join))));
    }
    Ok(match &t.aggregate {
        None => Step::Transform(
            Transform::new(module, labels, t.limits, t.config_pairs())
                .with_context(|| field.clone())?,
        ),
        Some(window) => {
            let aggregator = Aggregator::new(module, labels, t.limits, t.config_pairs())
                .with_context(|| field.clone())?;
            let step =
                AggregateStep::new(aggregator, window.clone()).with_context(|| field.clone())?;
            Step::Aggregate(Box::new(step))
        }
    })
}

/// Runs a pipeline until `stop` is set, or until caught up if asked.
pub fn run(spec: &PipelineSpec, options: RunOptions, stop: &AtomicBool) -> anyhow::Result<Summary> {
    run_with(spec, options, stop, None)
}

/// Like [`run`], watched and steered through `control` (progress, pause,
/// module swaps).
#[tracing::instrument(skip_all, fields(pipeline = %spec.name))]
pub fn run_with(
    spec: &PipelineSpec,
    options: RunOptions,
    stop: &AtomicBool,
    control: Option<&Control>,
) -> anyhow::Result<Summary> {
    let started = std::time::Instant::now();
    let runtime = Runtime::new().context("cannot start the Wasm runtime")?;
    let tasks = spec.parallelism.tasks();
    task::check_mode(spec, tasks)?;
    if let Some(control) = control {
        // What logs `pipeline started`: the run, or each of its two stages.
        let cut = tasks && spec.stages().is_some();
        control.expect_starts(if cut { 2 } else { 1 });
    }
    if tasks {
        let modules = (0..spec.transforms.len())
            .map(|i| load_module(spec, &runtime, i, &spec.transforms[i].module))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if let Some(control) = control {
            control.reset_workers();
        }
        if let Some(stages) = spec.stages() {
            return stages::run(
                spec, stages, &runtime, &modules, options, stop, control, started,
            );
        }
        return worker::run(
            spec, &runtime, &modules, None, None, options, stop, control, started,
        );
    }
    let transforms = load_steps(spec, &runtime)?;
    let (chain, routing) = chain_of(spec, transforms);
    let io = runner::Io::new(spec)?;
    Runner::new(spec, runtime, chain, routing, control, io, None)?.run(options, stop, started)
}

/// The chain of `steps` and how its results are routed.
fn chain_of(spec: &PipelineSpec, steps: Vec<Step>) -> (Chain, Routing) {
    let routing = Routing {
        pipeline: spec.name.clone(),
        outputs: spec
            .outputs
            .iter()
            .map(|(name, o)| (name.clone(), o.topic.clone()))
            .collect(),
        dead_letter_topic: spec.dead_letter.topic.clone(),
        source_topics: spec.source.topics.clone(),
        lineage: String::new(),
        exchange: None,
        fence: None,
        steps: spec
            .transforms
            .iter()
            .zip(&steps)
            .map(|(t, x)| {
                let module = step_module(x);
                StepInfo {
                    name: t.step_name(),
                    module: module.name().to_owned(),
                    sha256: module.sha256().to_owned(),
                }
            })
            .collect(),
    };
    let output_names: Vec<String> = spec.outputs.keys().cloned().collect();
    (Chain::new(steps, &output_names, DEFAULT_OUTPUT), routing)
}

/// The module behind a step.
pub fn step_module(step: &Step) -> &Module {
    match step {
        Step::Transform(t) => t.module(),
        Step::Aggregate(a) => a.aggregator().module(),
        Step::Rekey(r) => r.aggregator.module(),
        Step::Join(j) => j.joiner().module(),
    }
}

/// Offsets to commit after a batch: never past a record that open windows
/// still need (until checkpoints hold window state, a restart rebuilds open
/// windows by re-reading their records).
pub(super) fn hold_back(mut offsets: Vec<NextOffset>, chain: &Chain) -> Vec<NextOffset> {
    if let Some(Step::Join(join)) = chain.steps().first() {
        let held = join.held_offsets();
        for o in &mut offsets {
            if let Some(&h) = held.get(&(o.source, o.partition)) {
                o.offset = o.offset.min(h);
            }
        }
    }
    if let Some(aggregate) = chain.aggregate() {
        let held = aggregate.engine().held_offsets();
        for o in &mut offsets {
            if let Some(&h) = held.get(&(o.source, o.partition)) {
                o.offset = o.offset.min(h);
            }
        }
    }
    offsets
}

impl std::ops::AddAssign for Summary {
    /// The summary of two parts of a run (two tasks): counts add up, event
    /// time is that of the slower part (the lower watermark).
    fn add_assign(&mut self, other: Self) {
        self.batches += other.batches;
        self.records_in += other.records_in;
        for (name, n) in other.outputs {
            *self.outputs.entry(name).or_default() += n;
        }
        self.dead_lettered += other.dead_lettered;
        for (kind, n) in other.dead_letter_reasons {
            *self.dead_letter_reasons.entry(kind).or_default() += n;
        }
        self.dropped += other.dropped;
        self.quarantined += other.quarantined;
        self.time += other.time;
        self.windows = match (self.windows.take(), other.windows) {
            (Some(mut a), Some(b)) => {
                a.watermark = match (a.watermark, b.watermark) {
                    (Some(x), Some(y)) => Some(x.min(y)),
                    _ => None,
                };
                a.partitions.extend(b.partitions);
                a.partitions.sort_by_key(|p| (p.partition, p.source));
                a.state_rows += b.state_rows;
                a.state_bytes += b.state_bytes;
                a.open_windows += b.open_windows;
                a.late_records += b.late_records;
                Some(a)
            }
            (a, b) => a.or(b),
        };
        self.repartitioned = match (self.repartitioned, other.repartitioned) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.tasks.extend(other.tasks);
        self.tasks.sort_by_key(|t| (t.stage, t.partition));
        for (name, stats) in other.postgres {
            *self.postgres.entry(name).or_default() += stats;
        }
        for (name, stats) in other.delta {
            *self.delta.entry(name).or_default() += stats;
        }
    }
}

impl Summary {
    /// The summary of a pipeline cut at its repartition topic, from its
    /// stages': the records in are the source's (the front's); the
    /// front's `default` output is the topic (`repartitioned`), the
    /// pipeline's outputs are the back's plus the front's named ones; the
    /// rest adds up.
    pub fn of_stages(mut front: Summary, back: Summary) -> Summary {
        let repartitioned = front.outputs.remove(DEFAULT_OUTPUT).unwrap_or(0);
        let records_in = front.records_in;
        front += back;
        front.records_in = records_in;
        front.repartitioned = Some(repartitioned);
        front
    }
}

impl std::ops::AddAssign for TimeSpent {
    fn add_assign(&mut self, other: Self) {
        self.fetch_ms += other.fetch_ms;
        self.transform_ms += other.transform_ms;
        self.sink_ms += other.sink_ms;
        self.checkpoint_ms += other.checkpoint_ms;
    }
}

impl Summary {
    fn record(&mut self, batch: &crate::batch::Batch, out: &ChainOutput, names: &[String]) {
        self.batches += 1;
        self.records_in += batch.len() as u64 - out.marks;
        for (routed, name) in out.outputs.iter().zip(names) {
            *self.outputs.entry(name.clone()).or_default() += routed.records.len() as u64;
        }
        self.dead_lettered += out.dead_letters.len() as u64;
        for d in &out.dead_letters {
            *self.dead_letter_reasons.entry(d.reason.kind).or_default() += 1;
        }
        self.dropped += out.dropped;
        self.dead_lettered += out.window_dead_letters.len() as u64;
        for (_, w) in &out.window_dead_letters {
            *self.dead_letter_reasons.entry(w.reason.kind).or_default() += 1;
        }
        self.dead_lettered += out.held_reasons.len() as u64;
        for (_, r) in &out.held_reasons {
            *self.dead_letter_reasons.entry(r.kind).or_default() += 1;
        }
    }
}
