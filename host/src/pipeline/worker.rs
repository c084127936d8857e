//! Workers: the threads that run a pipeline's tasks (see `task.rs`) when
//! its `parallelism` is not 1.
//!
//! Task `p` (the `i`th partition number) goes to worker `i mod N`. A worker
//! has its own consumer, assigned its tasks' partitions of every source
//! topic, and polls it into one batch per task: a record is appended to
//! its task's batch as it arrives, so no thread touches records of
//! partitions it does not own. Each task's batch then runs through that
//! task's own chain, window state and epoch log, exactly as a whole
//! pipeline's batch does (`runner.rs`); its offsets are committed, or
//! checkpointed, per task after its outputs are acknowledged, so outputs
//! keep their per-partition order. A worker has its own send stage; the
//! producer is the pipeline's.
//!
//! A worker that fails stops the others, which end cleanly (their
//! batches acknowledged, committed, checkpointed); the run then fails with
//! the first error. Module swaps are rounds over every task (`round.rs`):
//! the thread that watches the workers starts and decides them, each
//! worker's tasks take part at their batch boundaries.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::checkpoint::TaskLayout;
use super::control::Control;
use super::round::{SWAPS_REFUSED, Swaps};
use super::runner::{Io, PAUSED_POLL, Runner, TICK};
use super::{Exchange, RunOptions, Stage, Summary, TaskSummary, chain_of, start_step, task};
use crate::batch::reason::Kind;
use crate::runtime::{Module, Runtime};
use crate::sink::end_offsets;
use crate::source::{KafkaSource, source_partitions};
use crate::spec::{Delivery, PipelineSpec};

/// How often the workers look at the caller's stop flag.
const STOP_POLL: Duration = Duration::from_millis(20);

/// Runs `spec` as tasks on worker threads until `stop` is set (or caught
/// up, if asked); `modules` are its steps' compiled modules.
/// `exchange`: the output that is a repartition topic (a front stage's,
/// see `stages.rs`); `swaps`: the module swaps of the whole pipeline, when
/// this is one of its stages.
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    spec: &PipelineSpec,
    runtime: &Runtime,
    modules: &[Module],
    exchange: Option<Exchange>,
    swaps: Option<&Swaps<'_>>,
    options: RunOptions,
    stop: &AtomicBool,
    control: Option<&Control>,
    started: Instant,
) -> anyhow::Result<Summary> {
    let partitions = source_partitions(spec)?;
    let layouts = task::layouts(spec, &partitions);
    let workers = spec.parallelism.workers(layouts.len());
    let mut groups: Vec<Vec<TaskLayout>> = vec![Vec::new(); workers];
    for (i, layout) in layouts.into_iter().enumerate() {
        groups[i % workers].push(layout);
    }
    let sink = Io::producer(spec)?;
    // Asked once for every task (see `Runner::know_sink_ends`).
    let sink_ends: HashMap<(String, i32), i64> = if spec.delivery == Delivery::ExactlyOnce {
        end_offsets(&spec.kafka, &spec.sink_topics())
            .context("cannot read the sink topics' end offsets")?
            .into_iter()
            .map(|p| ((p.topic, p.partition), p.offset))
            .collect()
    } else {
        HashMap::new()
    };
    if let Some(control) = control {
        control.add_workers(workers);
    }
    tracing::info!(
        topics = ?spec.source.topics,
        group = %spec.group_id(),
        tasks = groups.iter().map(Vec::len).sum::<usize>(),
        workers,
        stage = ?Stage::of(spec),
        "pipeline starting as tasks"
    );
    // Set by the caller's stop, or by a worker that failed.
    let halt = AtomicBool::new(false);
    // A stage's swaps are the pipeline's (see `stages.rs`); otherwise the
    // run's own.
    let own;
    let swaps = match swaps {
        Some(swaps) => swaps,
        None => {
            let tasks = groups.iter().map(Vec::len).sum();
            own = Swaps::new(
                spec,
                runtime,
                BTreeMap::from([(Stage::Source, tasks)]),
                true,
            );
            &own
        }
    };
    let start = Start {
        workers,
        ready: AtomicUsize::new(0),
        at: started,
    };
    // Workers log (and report batches) where the caller's thread does.
    let traced = Traced::capture();
    let results: Vec<anyhow::Result<Summary>> = std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(workers);
        for (w, tasks) in groups.into_iter().enumerate() {
            let (halt, sink) = (&halt, &sink);
            let worker = Worker {
                spec,
                runtime,
                modules,
                exchange,
                options,
                halt,
                control,
                start: &start,
                sink_ends: &sink_ends,
                swaps,
            };
            let traced = &traced;
            let spawned = std::thread::Builder::new()
                .name(format!("{}-w{w}", spec.name))
                .spawn_scoped(scope, move || {
                    // A panic stops the others too, like an error.
                    let result = traced.run("the worker", || {
                        Io::with_sink(spec, sink.clone()).and_then(|io| worker.run(tasks, io))
                    });
                    if result.is_err() {
                        halt.store(true, Ordering::Relaxed);
                    }
                    result.with_context(|| format!("worker {w}"))
                });
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    halt.store(true, Ordering::Relaxed);
                    handles.clear();
                    return vec![Err(anyhow::Error::new(e).context("cannot start a worker"))];
                }
            }
        }
        while !handles.iter().all(|h| h.is_finished()) {
            if stop.load(Ordering::Relaxed) {
                halt.store(true, Ordering::Relaxed);
            }
            if let Some(control) = control {
                swaps.coordinate(control);
            }
            std::thread::sleep(STOP_POLL);
        }
        if let Some(control) = control {
            swaps.abandon(control);
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a worker panicked")))
            })
            .collect()
    });
    let mut summary = Summary {
        outputs: spec.outputs.keys().map(|n| (n.clone(), 0)).collect(),
        ..Summary::default()
    };
    for result in results {
        summary += result?;
    }
    // What the pipeline's producer could not send, counted once for all
    // tasks.
    let too_large = sink.too_large();
    if too_large > 0 {
        summary.dead_lettered += too_large;
        *summary
            .dead_letter_reasons
            .entry(Kind::TooLarge)
            .or_default() += too_large;
    }
    summary.quarantined = sink.quarantine().count();
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        summary = ?summary,
        "pipeline stopped"
    );
    Ok(summary)
}

/// Pauses a worker until the pause is lifted (or the run stops): its
/// tasks' batches acknowledged, committed and checkpointed first; the
/// consumer is still served, without fetching, so that the group keeps it
/// and the lag stays current.
fn pause(
    control: &Control,
    runners: &mut [Runner<'_>],
    source: &mut KafkaSource,
    halt: &AtomicBool,
    swaps: bool,
) -> anyhow::Result<()> {
    for runner in runners.iter_mut() {
        runner.settle(source)?;
    }
    source.pause()?;
    control.worker_paused(true);
    tracing::info!("worker paused");
    while control.pause_requested() && !halt.load(Ordering::Relaxed) {
        control.sleep(PAUSED_POLL);
        source.poll_paused();
        if !swaps {
            control.refuse_swaps(SWAPS_REFUSED);
        }
    }
    control.worker_paused(false);
    source.resume()?;
    tracing::info!("worker resumed");
    Ok(())
}

/// The caller's tracing subscriber and span, for threads it starts: their
/// logs (and the bench's batch reports) go where the caller's do.
pub(super) struct Traced {
    dispatch: tracing::Dispatch,
    span: tracing::Span,
}

impl Traced {
    pub(super) fn capture() -> Self {
        Self {
            dispatch: tracing::dispatcher::get_default(Clone::clone),
            span: tracing::Span::current(),
        }
    }

    /// Runs `f` in the captured context; a panic becomes an error saying
    /// that `who` panicked, with its message.
    pub(super) fn run<R>(
        &self,
        who: &str,
        f: impl FnOnce() -> anyhow::Result<R>,
    ) -> anyhow::Result<R> {
        let _dispatch = tracing::dispatcher::set_default(&self.dispatch);
        let _span = self.span.enter();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(anyhow::anyhow!("{who} panicked: {message}"))
        })
    }

    /// `f` on each item, each on a thread of its own in the captured
    /// context; the results in the items' order.
    fn side_by_side<T: Send, R: Send>(
        &self,
        who: &str,
        items: Vec<T>,
        f: impl Fn(T) -> anyhow::Result<R> + Sync,
    ) -> Vec<anyhow::Result<R>> {
        std::thread::scope(|scope| {
            let handles: Vec<_> = items
                .into_iter()
                .map(|item| {
                    let f = &f;
                    scope.spawn(move || self.run(who, || f(item)))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("{who} panicked")))
                })
                .collect()
        })
    }
}

/// How far the workers are in starting.
struct Start {
    workers: usize,
    /// Workers that recovered their tasks and are polling.
    ready: AtomicUsize,
    /// When the pipeline began loading.
    at: Instant,
}

/// What every worker shares.
struct Worker<'a> {
    spec: &'a PipelineSpec,
    runtime: &'a Runtime,
    modules: &'a [Module],
    exchange: Option<Exchange>,
    options: RunOptions,
    /// Set by the caller's stop, or by a worker that failed.
    halt: &'a AtomicBool,
    control: Option<&'a Control>,
    start: &'a Start,
    /// Exactly-once: the sink partitions' end offsets at the start.
    sink_ends: &'a HashMap<(String, i32), i64>,
    swaps: &'a Swaps<'a>,
}

impl Worker<'_> {
    /// The task of `layout` with its own instances of the steps,
    /// recovered.
    fn start_task(&self, layout: TaskLayout, io: Io) -> anyhow::Result<Runner<'_>> {
        let steps = (0..self.modules.len())
            .map(|i| start_step(self.spec, i, &self.modules[i]))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let (mut chain, mut routing) = chain_of(self.spec, steps);
        routing.exchange = self.exchange;
        chain.keep_keys();
        let mut runner = Runner::new(
            self.spec,
            self.runtime.clone(),
            chain,
            routing,
            self.control,
            io,
            Some(layout),
        )?;
        runner.know_sink_ends(self.sink_ends);
        runner.start()?;
        Ok(runner)
    }

    /// Recovers `tasks`, then polls and runs them until `halt` is set or
    /// their partitions are caught up.
    fn run(&self, tasks: Vec<TaskLayout>, io: Io) -> anyhow::Result<Summary> {
        let Self {
            spec,
            options,
            halt,
            control,
            start,
            ..
        } = *self;
        let partitions: Vec<i32> = tasks.iter().map(|t| t.partition).collect();
        // Tasks recover side by side: each opens its own checkpoint
        // directory and epoch log, and may re-execute epochs.
        let traced = Traced::capture();
        let started = traced.side_by_side("the start of a task", tasks, |layout| {
            let partition = layout.partition;
            self.start_task(layout, io.clone())
                .with_context(|| format!("task {partition}"))
        });
        let mut runners = started.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
        let positions: HashMap<(u16, i32), i64> = runners
            .iter()
            .filter_map(Runner::resume_positions)
            .flat_map(|p| p.iter().map(|(&k, &v)| (k, v)))
            .collect();
        let checkpointed = spec.checkpoint.is_some();
        let mut source = KafkaSource::new(
            spec,
            options.until_caught_up,
            checkpointed.then_some(&positions),
            Some(&partitions),
        )?;
        let mut tick = runners.iter().filter_map(Runner::tick).min();
        if control.is_some() {
            // Watched: an idle worker still comes back to its loop often
            // enough to see a pause or a swap (a checkpointed task without
            // windows has no tick of its own).
            tick = Some(tick.map_or(PAUSED_POLL, |t| t.min(PAUSED_POLL)));
        }
        if let Some(tick) = tick {
            source.set_tick(tick);
        }
        for runner in &mut runners {
            runner.begin(&source);
        }
        tracing::info!(tasks = ?partitions, "worker started");
        if start.ready.fetch_add(1, Ordering::AcqRel) + 1 == start.workers {
            tracing::info!(
                workers = start.workers,
                ready_ms = start.at.elapsed().as_millis() as u64,
                "pipeline started"
            );
        }
        let never = AtomicBool::new(false);
        // The last swap round this worker's tasks took part in.
        let mut last_round = 0;
        loop {
            if let Some(control) = control {
                if self.swaps.allowed() {
                    for runner in &mut runners {
                        runner.finish_round(&source)?;
                    }
                    if let Some(round) = self.swaps.current()
                        && round.id != last_round
                    {
                        last_round = round.id;
                        if let Some(step) =
                            self.swaps.local_step(Stage::of(spec), round.request.step)
                        {
                            for runner in &mut runners {
                                runner.start_round(&round, step, &source)?;
                            }
                        }
                    }
                } else {
                    control.refuse_swaps(SWAPS_REFUSED);
                }
                if control.pause_requested() {
                    pause(
                        control,
                        &mut runners,
                        &mut source,
                        halt,
                        self.swaps.allowed(),
                    )?;
                }
            }
            let fetch_started = Instant::now();
            let wake = if self.swaps.allowed() {
                &self.swaps.wake
            } else {
                &never
            };
            let Some(batches) = source.next_batches(halt, wake)? else {
                break;
            };
            let fetched = fetch_started.elapsed();
            let due: Vec<bool> = runners
                .iter()
                .zip(&batches)
                .map(|(r, b)| {
                    !b.batch.is_empty() || (r.wants_ticks() && r.last_batch_end().elapsed() >= TICK)
                })
                .collect();
            // The round's wait, shared by the tasks it fed.
            let fetch_ms = fetched.as_micros() as f64
                / 1000.0
                / due.iter().filter(|d| **d).count().max(1) as f64;
            for ((runner, next), due) in runners.iter_mut().zip(batches).zip(due) {
                runner.finish_acknowledged(&source)?;
                if due {
                    // A swap decided while the worker waited: not one batch
                    // more on a rolled-back version.
                    runner.finish_round(&source)?;
                    runner.run_batch(next, fetch_ms, &source)?;
                }
            }
        }
        // The tasks end side by side too: each drains, checkpoints and
        // commits its own partitions.
        let ended = traced.side_by_side("the end of a task", runners, |runner| runner.end(&source));
        let mut summary = Summary::default();
        let mut first_error = None;
        for (result, &partition) in ended.into_iter().zip(&partitions) {
            match result {
                Ok(s) => {
                    let row = TaskSummary::of(Stage::of(spec), partition, &s);
                    summary += s;
                    summary.tasks.push(row);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(summary),
        }
    }
}
