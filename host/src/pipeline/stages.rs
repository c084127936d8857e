//! A pipeline run as tasks whose aggregate is keyed by something other
//! than the Kafka key runs as two stages joined by a repartition topic
//! (see `spec::Stages`): the front stage's tasks key the records and write
//! them to the topic, the back stage's tasks aggregate them. Both run here,
//! each on workers of its own (`worker.rs`), with its own checkpoints and
//! exactly-once lineage, so the topic holds every record exactly once and
//! is read like any source.
//!
//! Running until caught up, the stages run one after the other: the back
//! stage's end is the topic's end once the front stage has written
//! everything up to the source's ends.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::control::Control;
use super::round::Swaps;
use super::worker::{self, Traced};
use super::{Exchange, RunOptions, Stage, Summary};
use crate::runtime::{Module, Runtime};
use crate::sink::ensure_topic;
use crate::source::source_partitions;
use crate::spec::{DEFAULT_OUTPUT, PipelineSpec, Stages};

/// How often the stages look at the caller's stop flag.
const STOP_POLL: Duration = Duration::from_millis(20);

/// Runs both stages until `stop` is set (or caught up, if asked);
/// `modules` are the user's spec's steps' compiled modules.
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    user: &PipelineSpec,
    mut stages: Stages,
    runtime: &Runtime,
    modules: &[Module],
    options: RunOptions,
    stop: &AtomicBool,
    control: Option<&Control>,
    started: Instant,
) -> anyhow::Result<Summary> {
    let source = source_partitions(&stages.front)?;
    let mut upstreams: Vec<i32> = source.iter().map(|&(_, p)| p).collect();
    upstreams.sort_unstable();
    upstreams.dedup();
    let wanted = upstreams.len() as i32;
    let partitions = ensure_topic(&stages.front.kafka, &stages.topic, wanted)
        .with_context(|| format!("repartition topic `{}`", stages.topic))?;
    stages.back.source.upstream_tasks = Some(upstreams);
    let exchange = Exchange {
        output: stages
            .front
            .outputs
            .get_index_of(DEFAULT_OUTPUT)
            .expect("a validated spec has a default output"),
        partitions,
    };
    tracing::info!(
        topic = %stages.topic,
        partitions,
        "pipeline runs in two stages through its repartition topic"
    );
    let (front_modules, back_modules) = (&modules[..=stages.step], &modules[stages.step..]);
    // One swap is one round over both stages' tasks (the aggregate's module
    // keys in the front stage and aggregates in the back one); not when the
    // stages run one after the other. A stage whose tasks the group
    // assigns counts them as they come.
    let grouped = |spec: &PipelineSpec, n: usize| if super::task::grouped(spec) { 0 } else { n };
    let tasks = BTreeMap::from([
        (
            Stage::Source,
            grouped(
                &stages.front,
                stages
                    .back
                    .source
                    .upstream_tasks
                    .as_ref()
                    .map_or(0, Vec::len),
            ),
        ),
        (
            Stage::Repartition,
            grouped(&stages.back, partitions as usize),
        ),
    ]);
    let swaps = Swaps::new(user, runtime, tasks, 2, !options.until_caught_up);
    let swaps = &swaps;
    let Stages { front, back, .. } = &stages;
    let front_run = |stop: &AtomicBool| {
        worker::run(
            front,
            runtime,
            front_modules,
            Some(exchange),
            Some(swaps),
            options,
            stop,
            control,
            started,
        )
        .context("the stage before the repartition topic")
    };
    let back_run = |stop: &AtomicBool| {
        worker::run(
            back,
            runtime,
            back_modules,
            None,
            Some(swaps),
            options,
            stop,
            control,
            started,
        )
        .context("the stage after the repartition topic")
    };
    if options.until_caught_up {
        let front = front_run(stop)?;
        let back = back_run(stop)?;
        return Ok(Summary::of_stages(front, back));
    }
    // Side by side; one that fails stops the other.
    let halt = AtomicBool::new(false);
    let traced = Traced::capture();
    let run = |f: &(dyn Fn(&AtomicBool) -> anyhow::Result<Summary> + Sync)| {
        let result = traced.run("a stage", || f(&halt));
        if result.is_err() {
            halt.store(true, Ordering::Relaxed);
        }
        result
    };
    let (front, back) = std::thread::scope(|scope| {
        let run = &run;
        let front = scope.spawn(move || run(&front_run));
        let back = scope.spawn(move || run(&back_run));
        while !(front.is_finished() && back.is_finished()) {
            if stop.load(Ordering::Relaxed) {
                halt.store(true, Ordering::Relaxed);
            }
            std::thread::sleep(STOP_POLL);
        }
        let join = |h: std::thread::ScopedJoinHandle<'_, anyhow::Result<Summary>>| {
            h.join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a stage panicked")))
        };
        (join(front), join(back))
    });
    Ok(Summary::of_stages(front?, back?))
}
