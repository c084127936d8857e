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
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::checkpoint::TaskLayout;
use super::control::Control;
use super::round::{SWAPS_REFUSED, Swaps};
use super::runner::{Io, PAUSED_POLL, Runner, TICK};
use super::{Exchange, RunOptions, Stage, Summary, TaskSummary, chain_of, start_step, task};
use crate::batch::reason::Kind;
use crate::checkpoint::Fenced;
use crate::runtime::{Module, Runtime};
use crate::sink::end_offsets;
use crate::source::{GroupOffsets, KafkaSource, Rebalance, source_partitions};
use crate::spec::{Delivery, PipelineSpec};

/// How often the workers look at the caller's stop flag.
const STOP_POLL: Duration = Duration::from_millis(20);
/// Until caught up as members: how often the group's committed offsets
/// are asked for.
const DRAIN_POLL: Duration = Duration::from_millis(250);

/// The sink partitions' end offsets now: where an exactly-once task's
/// records can start, at the earliest (see `Runner::know_sink_ends`).
fn sink_ends_now(spec: &PipelineSpec) -> anyhow::Result<HashMap<(String, i32), i64>> {
    Ok(end_offsets(&spec.kafka, &spec.sink_topics())
        .context("cannot read the sink topics' end offsets")?
        .into_iter()
        .map(|p| ((p.topic, p.partition), p.offset))
        .collect())
}

/// A stage in names of group members and owners.
fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Source => "source",
        Stage::Repartition => "repartition",
    }
}

/// Whether `e` says the task was fenced off (see `checkpoint::Fence`):
/// anywhere in its chain, or as the message a batch's acknowledgement
/// carried back from the send stage.
fn is_fenced(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause.downcast_ref::<Fenced>().is_some()
            || cause.to_string().starts_with("fenced off:")
            || matches!(
                cause.downcast_ref::<rdkafka::error::KafkaError>(),
                Some(rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::Fenced
                ))
            )
    })
}

/// What the workers of a pipeline whose tasks the group assigns share.
struct Group {
    /// Every task the pipeline has, by partition number.
    layouts: HashMap<i32, TaskLayout>,
    /// This process's name for static membership, if it has one.
    instance: Option<String>,
}

/// `--until-caught-up` of a pipeline whose tasks the group assigns: done
/// once every partition reached the end offset it had at the start, read
/// here or committed by any member of the group (another process's).
struct Drain {
    group: GroupOffsets,
    /// The partitions to drain, and their end offsets at the start.
    targets: HashMap<(u16, i32), i64>,
    /// How far this process's tasks have read (or resumed from).
    read: Mutex<HashMap<(u16, i32), i64>>,
    /// Set once the group got there: the workers are done for good.
    finished: AtomicBool,
}

impl Drain {
    fn new(spec: &PipelineSpec) -> anyhow::Result<Self> {
        let group = GroupOffsets::new(spec)?;
        let targets = group.targets(spec.source.start)?;
        tracing::info!(
            partitions = targets.len(),
            "draining until the group is caught up with the end offsets seen at start"
        );
        Ok(Self {
            group,
            targets,
            read: Mutex::default(),
            finished: AtomicBool::new(false),
        })
    }

    fn finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// This process's tasks have read up to `offsets` (the next offsets).
    fn read(&self, offsets: impl IntoIterator<Item = ((u16, i32), i64)>) {
        let mut read = self.read.lock().unwrap_or_else(|e| e.into_inner());
        for (partition, offset) in offsets {
            let known = read.entry(partition).or_insert(offset);
            *known = (*known).max(offset);
        }
    }

    fn done(&self) -> bool {
        let committed = match self.group.committed() {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the group's committed offsets");
                HashMap::new()
            }
        };
        let read = self.read.lock().unwrap_or_else(|e| e.into_inner());
        self.targets.iter().all(|(partition, &end)| {
            let at = committed
                .get(partition)
                .into_iter()
                .chain(read.get(partition))
                .max();
            at.is_some_and(|&at| at >= end)
        })
    }
}

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
    let stage = Stage::of(spec);
    // Members of the group take tasks as the group assigns them; otherwise
    // task `i` is worker `i mod N`'s.
    let group = task::grouped(spec).then(|| Group {
        layouts: layouts.iter().map(|l| (l.partition, l.clone())).collect(),
        // The process's name, else one the spec gives (each worker joins
        // under its own, derived from it).
        instance: super::instance().map(str::to_owned).or_else(|| {
            spec.kafka
                .consumer
                .get("group.instance.id")
                .map(ToString::to_string)
        }),
    });
    let mut groups: Vec<Option<Vec<TaskLayout>>> = vec![None; workers];
    if group.is_none() {
        groups = vec![Some(Vec::new()); workers];
        for (i, layout) in layouts.into_iter().enumerate() {
            groups[i % workers].as_mut().expect("static").push(layout);
        }
    }
    let drain = match (&group, options.until_caught_up) {
        (Some(_), true) => Some(Drain::new(spec)?),
        _ => None,
    };
    let sink = Io::producer(spec)?;
    // Asked once for every task (see `Runner::know_sink_ends`); a member
    // asks at each assignment instead.
    let sink_ends: HashMap<(String, i32), i64> =
        if spec.delivery == Delivery::ExactlyOnce && group.is_none() {
            sink_ends_now(spec)?
        } else {
            HashMap::new()
        };
    if let Some(control) = control {
        control.add_workers(workers);
    }
    let tasks = groups.iter().flatten().map(Vec::len).sum::<usize>();
    tracing::info!(
        topics = ?spec.source.topics,
        group = %spec.group_id(),
        tasks,
        workers,
        members = group.is_some(),
        ?stage,
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
            own = Swaps::new(
                spec,
                runtime,
                BTreeMap::from([(Stage::Source, tasks)]),
                1,
                true,
            );
            &own
        }
    };
    let start = Start {
        control,
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
                group: group.as_ref(),
                drain: drain.as_ref(),
                owner: group.as_ref().map(|g| {
                    let process = g
                        .instance
                        .clone()
                        .unwrap_or_else(|| format!("pid{}", std::process::id()));
                    format!("{process}-{}-w{w}", stage_name(stage))
                }),
            };
            let traced = &traced;
            let spawned = std::thread::Builder::new()
                .name(format!("{}-w{w}", spec.name))
                .spawn_scoped(scope, move || {
                    // A panic stops the others too, like an error.
                    let result = traced.run("the worker", || {
                        Io::with_sink(spec, sink.clone()).and_then(|io| worker.run(w, tasks, io))
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
        let mut drained_asked = Instant::now();
        while !handles.iter().all(|h| h.is_finished()) {
            if stop.load(Ordering::Relaxed) {
                halt.store(true, Ordering::Relaxed);
            }
            // Not before every worker had its first assignment and recovered
            // its tasks: a task's logged epochs are re-executed (and its
            // checkpoint checked) even when there is nothing new to read.
            if let Some(drain) = &drain
                && drained_asked.elapsed() >= DRAIN_POLL
                && start.ready.load(Ordering::Acquire) == start.workers
            {
                drained_asked = Instant::now();
                if drain.done() {
                    tracing::info!("caught up: the group reached the end offsets seen at start");
                    drain.finished.store(true, Ordering::Release);
                    halt.store(true, Ordering::Relaxed);
                }
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
struct Start<'a> {
    /// Told when every worker has started.
    control: Option<&'a Control>,
    workers: usize,
    /// Workers that recovered their tasks and are polling.
    ready: AtomicUsize,
    /// When the pipeline began loading.
    at: Instant,
}

impl Start<'_> {
    /// A worker has its first tasks and is polling.
    fn worker_ready(&self, tasks: &[i32], swaps: &Swaps<'_>) {
        tracing::info!(?tasks, "worker started");
        if self.ready.fetch_add(1, Ordering::AcqRel) + 1 == self.workers {
            swaps.run_ready();
            tracing::info!(
                workers = self.workers,
                ready_ms = self.at.elapsed().as_millis() as u64,
                "pipeline started"
            );
            if let Some(control) = self.control {
                control.part_started();
            }
        }
    }
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
    start: &'a Start<'a>,
    /// Exactly-once: the sink partitions' end offsets at the start.
    sink_ends: &'a HashMap<(String, i32), i64>,
    swaps: &'a Swaps<'a>,
    /// Set when the group assigns the tasks.
    group: Option<&'a Group>,
    /// The name this worker takes its tasks' checkpoint directories over
    /// with, when the group assigns them (see `checkpoint::Fence`).
    owner: Option<String>,
    drain: Option<&'a Drain>,
}

impl Worker<'_> {
    /// The task of `layout` with its own instances of the steps,
    /// recovered.
    fn start_task(
        &self,
        layout: TaskLayout,
        io: Io,
        sink_ends: &HashMap<(String, i32), i64>,
    ) -> anyhow::Result<Runner<'_>> {
        let stage = Stage::of(self.spec);
        let steps = (0..self.modules.len())
            .map(|i| match self.swaps.live_module(stage, i) {
                Some(live) => start_step(self.spec, i, &live),
                None => start_step(self.spec, i, &self.modules[i]),
            })
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
        runner.know_sink_ends(sink_ends);
        if let Some(owner) = &self.owner {
            runner.fence_as(owner.clone());
        }
        runner.start()?;
        Ok(runner)
    }

    /// Starts the tasks of `layouts` side by side (each opens its own
    /// checkpoint directory and epoch log, and may re-execute epochs).
    fn start_tasks(
        &self,
        layouts: Vec<TaskLayout>,
        io: &Io,
        sink_ends: &HashMap<(String, i32), i64>,
    ) -> anyhow::Result<Vec<Runner<'_>>> {
        let started = Traced::capture().side_by_side("the start of a task", layouts, |layout| {
            let partition = layout.partition;
            self.start_task(layout, io.clone(), sink_ends)
                .with_context(|| format!("task {partition}"))
        });
        started.into_iter().collect()
    }

    /// Carries out a rebalance of this worker's group membership. Revoked
    /// tasks hand off: their batches acknowledged, checkpointed and
    /// committed before their partitions are released, so that the next
    /// owner resumes exactly there (a lost one is only dropped). Assigned
    /// ones are recovered (checkpoint, epoch log, read-back), then fetched
    /// from where they resume.
    fn rebalance<'w>(
        &'w self,
        event: Rebalance,
        runners: &mut Vec<Runner<'w>>,
        source: &mut KafkaSource,
        io: &Io,
        ended: &mut Summary,
    ) -> anyhow::Result<()> {
        let (spec, stage) = (self.spec, Stage::of(self.spec));
        match event {
            Rebalance::Revoked { partitions, lost } => {
                let numbers: Vec<i32> = partitions.iter().map(|&(_, p)| p).collect();
                let (going, staying): (Vec<_>, Vec<_>) = std::mem::take(runners)
                    .into_iter()
                    .partition(|r| r.partition().is_some_and(|p| numbers.contains(&p)));
                *runners = staying;
                let moved: Vec<i32> = going.iter().filter_map(Runner::partition).collect();
                for runner in going {
                    let partition = runner.partition().unwrap_or_default();
                    let summary = if lost {
                        runner.drop_lost()
                    } else {
                        runner
                            .release(source)
                            .with_context(|| format!("task {partition}: cannot hand it off"))?
                    };
                    ended
                        .tasks
                        .push(TaskSummary::of(stage, partition, &summary));
                    *ended += summary;
                }
                source.remove_tasks(&partitions)?;
                self.swaps.tasks_moved(stage, &moved, false);
                tracing::info!(tasks = ?moved, lost, "tasks given up");
            }
            Rebalance::Assigned(partitions) => {
                let group = self.group.expect("a member has a group");
                let mut layouts = Vec::new();
                for &(_, p) in &partitions {
                    let layout = group.layouts.get(&p).with_context(|| {
                        format!(
                            "the group assigned partition {p}, which the source topics did not                              have at the start (partitions added while running: restart the                              pipeline)"
                        )
                    })?;
                    if !layouts.contains(layout) && !source.tasks().contains(&p) {
                        layouts.push(layout.clone());
                    }
                }
                let sink_ends = if spec.delivery == Delivery::ExactlyOnce && !layouts.is_empty() {
                    sink_ends_now(spec)?
                } else {
                    HashMap::new()
                };
                let numbers: Vec<i32> = layouts.iter().map(|l| l.partition).collect();
                let mut started = self.start_tasks(layouts, io, &sink_ends)?;
                let positions: HashMap<(u16, i32), i64> = started
                    .iter()
                    .filter_map(Runner::resume_positions)
                    .flat_map(|p| p.iter().map(|(&k, &v)| (k, v)))
                    .collect();
                if let Some(drain) = self.drain {
                    drain.read(positions.iter().map(|(&k, &v)| (k, v)));
                }
                source.add_tasks(&partitions, &positions)?;
                // The rebalance is over for this member: what it sent for the
                // tasks it kept may have been refused meanwhile.
                source.commit_kept();
                // They follow a swap under way (see `Swaps::tasks_moved`).
                self.swaps.tasks_moved(stage, &numbers, true);
                let round = self
                    .swaps
                    .current()
                    .filter(|r| r.trials.verdict().is_none());
                for runner in &mut started {
                    runner.begin(source);
                    if let Some(round) = &round
                        && let Some(step) = self.swaps.local_step(stage, round.request.step)
                    {
                        runner.start_round(round, step, source)?;
                    }
                }
                runners.append(&mut started);
                // In the source's order of batches.
                let order = source.tasks().to_vec();
                runners.sort_by_key(|r| {
                    r.partition()
                        .and_then(|p| order.iter().position(|&o| o == p))
                });
                tracing::info!(tasks = ?numbers, "tasks taken on");
            }
        }
        Ok(())
    }

    /// Recovers `tasks` (or, as a member of the group, the tasks it
    /// assigns, as it assigns them), then polls and runs them until `halt`
    /// is set or their partitions are caught up.
    fn run(&self, w: usize, tasks: Option<Vec<TaskLayout>>, io: Io) -> anyhow::Result<Summary> {
        let Self {
            spec,
            options,
            halt,
            control,
            start,
            ..
        } = *self;
        let checkpointed = spec.checkpoint.is_some();
        let (mut runners, mut source) = match tasks {
            Some(tasks) => {
                let partitions: Vec<i32> = tasks.iter().map(|t| t.partition).collect();
                let runners = self.start_tasks(tasks, &io, self.sink_ends)?;
                let positions: HashMap<(u16, i32), i64> = runners
                    .iter()
                    .filter_map(Runner::resume_positions)
                    .flat_map(|p| p.iter().map(|(&k, &v)| (k, v)))
                    .collect();
                let source = KafkaSource::new(
                    spec,
                    options.until_caught_up,
                    checkpointed.then_some(&positions),
                    Some(&partitions),
                )?;
                (runners, source)
            }
            None => {
                let group = self.group.expect("a member has a group");
                let instance = group
                    .instance
                    .as_ref()
                    .map(|i| format!("{i}-{}-{}-w{w}", spec.name, stage_name(Stage::of(spec))));
                (Vec::new(), KafkaSource::member(spec, instance.as_deref())?)
            }
        };
        // What tasks given up in rebalances did.
        let mut ended = Summary::default();
        let mut tick = runners.iter().filter_map(Runner::tick).min();
        if self.group.is_some() {
            // A member's tasks come later: the shortest tick any can want.
            tick = Some(super::runner::TICK);
        }
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
        let partitions: Vec<i32> = source.tasks().to_vec();
        // A member is started once the group gave it its first assignment
        // (possibly none): from then on, what is produced to the source
        // is read by someone.
        let mut started = self.group.is_none();
        if started {
            start.worker_ready(&partitions, self.swaps);
        }
        let never = AtomicBool::new(false);
        // The last swap round this worker's tasks took part in.
        let mut last_round = 0;
        loop {
            while let Some(event) = source.take_rebalance() {
                let assigned = matches!(event, Rebalance::Assigned(_));
                self.rebalance(event, &mut runners, &mut source, &io, &mut ended)?;
                if assigned && !started {
                    started = true;
                    start.worker_ready(source.tasks(), self.swaps);
                }
            }
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
            if let Some(drain) = self.drain {
                drain.read(
                    batches
                        .iter()
                        .flat_map(|b| b.commit.iter().map(|o| ((o.source, o.partition), o.offset))),
                );
            }
            let mut fenced = Vec::new();
            for (i, ((runner, next), due)) in runners.iter_mut().zip(batches).zip(due).enumerate() {
                let step = || -> anyhow::Result<()> {
                    if due {
                        runner.finish_acknowledged(&source)?;
                        // A swap decided while the worker waited: not one
                        // batch more on a rolled-back version.
                        runner.finish_round(&source)?;
                        runner.run_batch(next, fetch_ms, &source)?;
                    } else {
                        runner.idle(&source, self.drain.is_some())?;
                    }
                    Ok(())
                };
                match step() {
                    Ok(()) => {}
                    Err(e) if self.group.is_some() && is_fenced(&e) => {
                        tracing::warn!(task = ?runner.partition(), error = %format!("{e:#}"), "task fenced off: dropped");
                        fenced.push(i);
                    }
                    Err(e) => return Err(e),
                }
            }
            for i in fenced.into_iter().rev() {
                let runner = runners.remove(i);
                let partition = runner.partition().unwrap_or_default();
                let summary = runner.drop_lost();
                ended
                    .tasks
                    .push(TaskSummary::of(Stage::of(spec), partition, &summary));
                ended += summary;
                source.drop_tasks(&[(0, partition)])?;
                if let Some(control) = control {
                    control.task_departed((Stage::of(spec), partition));
                }
                self.swaps.tasks_moved(Stage::of(spec), &[partition], false);
            }
        }
        // The tasks end side by side too: each drains, checkpoints and
        // commits its own partitions.
        let partitions: Vec<i32> = runners.iter().filter_map(Runner::partition).collect();
        let results = Traced::capture()
            .side_by_side("the end of a task", runners, |runner| runner.end(&source));
        let mut summary = ended;
        let mut first_error = None;
        for (result, &partition) in results.into_iter().zip(&partitions) {
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
            None => {
                // Done for good: a static member leaves the group as its
                // consumer closes, so that the members still draining get
                // its partitions now, not after its session timeout.
                if self.drain.is_some_and(Drain::finished) {
                    source.leave_when_closed(spec);
                }
                Ok(summary)
            }
        }
    }
}
