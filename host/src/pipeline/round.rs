//! A module swap in a pipeline run as tasks: one *round* for all its
//! tasks, all or nothing.
//!
//! The module is compiled once; each task then starts an instance of it at
//! its next batch boundary (after a checkpoint) and runs its first batch
//! with records on it as a trial, exactly as a whole pipeline does (see
//! `runner/swap.rs`): a trial that fails is undone in that task before
//! anything of it leaves the host. The round's verdict:
//!
//! - **rolled back** as soon as one task cannot start the module or fails
//!   its trial: every task puts its previous instance back at its next
//!   boundary (after a checkpoint, so that no recovery replays epochs of two
//!   versions). Tasks that had passed ran the new version until then; their
//!   results are as valid as any (the version ran them without a fault);
//! - **live** once every task has started the module and each has passed
//!   its trial, or, for tasks without records (an idle partition would hold
//!   the swap forever), once at least one task has passed and the others
//!   have still had no batch with records [`IDLE_TRIAL`] later. A task
//!   whose first records come after that runs them on the live version,
//!   with the usual fault isolation.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::control::{Control, SwapRequest, SwapState};
use super::{Stage, load_module, start_step};
use crate::runtime::{Module, Runtime};
use crate::spec::PipelineSpec;

/// How long a task without records may keep a round from going live once
/// another task passed its trial.
pub const IDLE_TRIAL: Duration = Duration::from_secs(2);

/// What became of a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Live,
    RolledBack(String),
}

/// One swap across every task of a run.
#[derive(Debug)]
pub struct Round {
    pub id: u64,
    pub request: SwapRequest,
    /// The new module, compiled once for all tasks.
    pub module: Module,
    /// What each task's trial did, and the verdict.
    pub trials: Trials,
    /// Whether the swap record says `trial` yet (once every task runs the
    /// new module).
    pub announced: AtomicBool,
}

impl Round {
    pub fn new(id: u64, request: SwapRequest, module: Module, tasks: usize) -> Arc<Self> {
        Arc::new(Self {
            id,
            request,
            module,
            trials: Trials::new(tasks),
            announced: AtomicBool::new(false),
        })
    }
}

/// The tasks' trials of one round, and its verdict.
#[derive(Debug)]
pub struct Trials {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// How many tasks this process runs now (they come and go with the
    /// group's assignment: a task taken on during the round joins it, one
    /// given up leaves it).
    expected: usize,
    /// Per task (stage, partition), its trial so far.
    tasks: BTreeMap<(Stage, i32), Trial>,
    verdict: Option<Verdict>,
    /// Per source partition, where the new module took over.
    boundary: Vec<(String, i32, i64)>,
    /// The longest time a task took to swap at its boundary.
    swap_ms: f64,
    /// The lowest epoch a task ran its trial in.
    first_batch: Option<u64>,
    /// When the first task passed its trial.
    first_pass: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trial {
    /// Started, waiting for its first batch with records.
    Started,
    Passed,
}

impl Trials {
    fn new(tasks: usize) -> Self {
        Self {
            state: Mutex::new(State {
                expected: tasks,
                ..State::default()
            }),
        }
    }

    /// A task was taken on during the round: it joins it (it starts the
    /// new module at its first boundary, see `Runner::start_round`).
    pub fn arrived(&self) {
        self.state().expected += 1;
    }

    /// Task `task` was given up during the round: its trial no longer
    /// counts (what it ran, it ran without a fault or the round would be
    /// rolled back already). A round left without any task is rolled back:
    /// nothing here ran the new module.
    pub fn departed(&self, task: (Stage, i32)) {
        let mut s = self.state();
        s.tasks.remove(&task);
        s.expected = s.expected.saturating_sub(1);
        if s.expected == 0 {
            s.verdict.get_or_insert(Verdict::RolledBack(
                "every task of this process moved to another in a rebalance during the swap; \
                 swap again"
                    .to_owned(),
            ));
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Task `task` runs the new module from `boundary` on (per source
    /// partition), after `swap_ms` at its boundary.
    pub fn started(&self, task: (Stage, i32), boundary: Vec<(String, i32, i64)>, swap_ms: f64) {
        let mut s = self.state();
        s.tasks.insert(task, Trial::Started);
        s.boundary.extend(boundary);
        s.boundary.sort();
        s.swap_ms = s.swap_ms.max(swap_ms);
    }

    /// Task `task` passed its trial, in epoch `epoch`.
    pub fn passed(&self, task: (Stage, i32), epoch: u64) {
        let mut s = self.state();
        s.tasks.insert(task, Trial::Passed);
        s.first_batch = Some(s.first_batch.map_or(epoch, |e| e.min(epoch)));
        s.first_pass.get_or_insert_with(Instant::now);
    }

    /// Task `task` could not start the module, or failed its trial: the
    /// round is rolled back (the first reason is kept).
    pub fn failed(&self, task: (Stage, i32), reason: String) {
        let mut s = self.state();
        s.tasks.remove(&task);
        let name = match task {
            (Stage::Source, p) => format!("task {p}"),
            (Stage::Repartition, p) => format!("task {p} after the repartition topic"),
        };
        s.verdict
            .get_or_insert(Verdict::RolledBack(format!("{name}: {reason}")));
    }

    /// Whether every task runs the new module (or has passed its trial).
    pub fn all_started(&self) -> bool {
        let s = self.state();
        s.tasks.len() == s.expected
    }

    /// The verdict, if reached.
    pub fn verdict(&self) -> Option<Verdict> {
        self.state().verdict.clone()
    }

    /// Reaches the verdict if it can now (see the module docs).
    pub fn decide(&self) -> Option<Verdict> {
        let mut s = self.state();
        if s.verdict.is_none() && s.tasks.len() == s.expected {
            let waited = s.first_pass.is_some_and(|t| t.elapsed() >= IDLE_TRIAL);
            let done = s.tasks.values().all(|&t| t == Trial::Passed || waited);
            if done {
                s.verdict = Some(Verdict::Live);
            }
        }
        s.verdict.clone()
    }

    /// What the swap record shows: the boundary, the swap's time at the
    /// boundary, and the first trial batch.
    pub fn figures(&self) -> (Vec<(String, i32, i64)>, f64, Option<u64>) {
        let s = self.state();
        (s.boundary.clone(), s.swap_ms, s.first_batch)
    }
}

/// Why a swap is refused for a pipeline run through a repartition topic
/// until caught up (its stages run one after the other).
pub const SWAPS_REFUSED: &str = "live module swaps are not supported for a pipeline run through a \
    repartition topic until caught up (its stages run one after the other): stop it and start it \
    with the new module (its checkpoints carry over)";

/// The module swaps of a run: one round at a time over all the tasks that
/// run the step (both stages' for the aggregate of a pipeline cut at a
/// repartition topic: the source stage keys with its `extract`), started
/// and decided by the threads that watch the workers.
pub struct Swaps<'a> {
    /// The user's spec (a swap names its steps).
    spec: &'a PipelineSpec,
    runtime: &'a Runtime,
    /// Tasks per stage (this process's: they come and go with the group's
    /// assignment).
    tasks: Mutex<BTreeMap<Stage, usize>>,
    /// Per user step, the module of its last swap that went live: what a
    /// task taken on later starts with.
    live: Mutex<BTreeMap<usize, Module>>,
    /// With stages: the aggregate's step, where they meet.
    cut: Option<usize>,
    allowed: bool,
    /// The round under way, until its verdict.
    current: Mutex<Option<Arc<Round>>>,
    /// Held while coordinating: each stage's watcher may.
    coordinating: Mutex<()>,
    /// Set while a round waits for tasks to take it: workers waiting for
    /// records come back to their loop at once.
    pub wake: AtomicBool,
    /// Runs (stages) whose workers do not all have their first tasks yet:
    /// no round starts before (a member's tasks come with its first
    /// assignment; a round over none would be live at once).
    unready: AtomicUsize,
}

impl<'a> Swaps<'a> {
    pub fn new(
        spec: &'a PipelineSpec,
        runtime: &'a Runtime,
        tasks: BTreeMap<Stage, usize>,
        runs: usize,
        allowed: bool,
    ) -> Self {
        Self {
            spec,
            runtime,
            tasks: Mutex::new(tasks),
            live: Mutex::default(),
            cut: spec.stages().map(|s| s.step),
            allowed,
            current: Mutex::new(None),
            coordinating: Mutex::new(()),
            wake: AtomicBool::new(false),
            unready: AtomicUsize::new(runs),
        }
    }

    /// One run's workers all have their first tasks.
    pub fn run_ready(&self) {
        let _ = self
            .unready
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    pub fn allowed(&self) -> bool {
        self.allowed
    }

    pub fn current(&self) -> Option<Arc<Round>> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set(&self, round: Option<Arc<Round>>) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = round;
    }

    /// The index in `stage`'s spec of the user's step `step`, if that
    /// stage runs it.
    pub fn local_step(&self, stage: Stage, step: usize) -> Option<usize> {
        match (self.cut, stage) {
            (None, _) => Some(step),
            (Some(cut), Stage::Source) => (step <= cut).then_some(step),
            (Some(cut), Stage::Repartition) => step.checked_sub(cut),
        }
    }

    /// The module a task of `stage` taken on now starts step `local` (an
    /// index into that stage's steps) with, if a swap of it went live.
    pub fn live_module(&self, stage: Stage, local: usize) -> Option<Module> {
        let step = match (self.cut, stage) {
            (Some(cut), Stage::Repartition) => local + cut,
            _ => local,
        };
        lock(&self.live).get(&step).cloned()
    }

    /// `partitions`' tasks of `stage` were taken on (`added`) or given up
    /// in a rebalance. A round under way follows: the tasks taken on join
    /// it, those given up leave it.
    pub fn tasks_moved(&self, stage: Stage, partitions: &[i32], added: bool) {
        let mut tasks = lock(&self.tasks);
        let n = tasks.entry(stage).or_default();
        *n = if added {
            *n + partitions.len()
        } else {
            n.saturating_sub(partitions.len())
        };
        let Some(round) = self.current() else {
            return;
        };
        if self.local_step(stage, round.request.step).is_none() {
            return;
        }
        for &partition in partitions {
            if added {
                round.trials.arrived();
            } else {
                round.trials.departed((stage, partition));
            }
        }
    }

    /// How many tasks run the user's step `step`.
    fn tasks_of(&self, counts: &BTreeMap<Stage, usize>, step: usize) -> usize {
        counts
            .iter()
            .filter(|(stage, _)| self.local_step(**stage, step).is_some())
            .map(|(_, n)| n)
            .sum()
    }

    /// Records the current round's verdict once reached; else starts the
    /// next waiting swap: its module compiled once, the tasks take it at
    /// their next boundary.
    pub fn coordinate(&self, control: &Control) {
        if !self.allowed {
            return;
        }
        let _one = self.coordinating.lock().unwrap_or_else(|e| e.into_inner());
        if self.unready.load(Ordering::Acquire) > 0 {
            return;
        }
        if let Some(round) = self.current() {
            if let Some(verdict) = round.trials.decide() {
                self.wake.store(false, Ordering::Relaxed);
                self.record(control, &round, verdict);
                self.set(None);
            } else if round.trials.all_started() && !round.announced.swap(true, Ordering::Relaxed) {
                // Every task runs it now: from here on, records are the
                // new module's (what a swap on trial means).
                self.wake.store(false, Ordering::Relaxed);
                let (boundary, swap_ms, _) = round.trials.figures();
                control.update_swap(round.id, |r| {
                    r.state = SwapState::Trial;
                    r.boundary = boundary;
                    r.swap_ms = Some(swap_ms);
                });
            }
            return;
        }
        let Some((id, request)) = control.next_swap() else {
            return;
        };
        // Compiled once; one instance started here first, so that a module
        // that cannot start (its `init` refusing the config) is refused at
        // once, before any task swaps.
        let (spec, runtime) = (self.spec, self.runtime);
        let module = load_module(spec, runtime, request.step, &request.file)
            .and_then(|m| start_step(spec, request.step, &m).map(|_| m));
        match module {
            Ok(module) => {
                tracing::info!(step = request.step, module = %request.module, version = ?request.version, "swapping in every task; on trial until their first batches");
                // Counted and set under the count's lock: a task moving
                // now is either counted or follows the round.
                let counts = lock(&self.tasks);
                let tasks = self.tasks_of(&counts, request.step);
                self.set(Some(Round::new(id, request, module, tasks)));
                drop(counts);
                self.wake.store(true, Ordering::Relaxed);
            }
            Err(e) => {
                let reason = format!("the new module cannot start: {e:#}");
                tracing::warn!(step = request.step, module = %request.module, %reason, "swap rolled back");
                control.update_swap(id, |r| {
                    r.state = SwapState::RolledBack;
                    r.reason = Some(reason);
                });
            }
        }
    }

    /// Records `round`'s verdict in its swap record.
    fn record(&self, control: &Control, round: &Round, verdict: Verdict) {
        if verdict == Verdict::Live {
            lock(&self.live).insert(round.request.step, round.module.clone());
        }
        let (boundary, swap_ms, first_batch) = round.trials.figures();
        match &verdict {
            Verdict::Live => tracing::info!(step = round.request.step, "swap live in every task"),
            Verdict::RolledBack(reason) => {
                tracing::warn!(step = round.request.step, %reason, "swap rolled back in every task");
            }
        }
        control.update_swap(round.id, |r| {
            r.boundary = boundary;
            r.swap_ms = Some(swap_ms);
            r.first_batch = first_batch;
            match verdict {
                Verdict::Live => r.state = SwapState::Live,
                Verdict::RolledBack(reason) => {
                    r.state = SwapState::RolledBack;
                    r.reason = Some(reason);
                }
            }
        });
    }

    /// At the end of a run: a round without a verdict did not happen (the
    /// pipeline document keeps the previous version, which the next run
    /// starts with); swaps still waiting neither.
    pub fn abandon(&self, control: &Control) {
        let _one = self.coordinating.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(round) = self.current() {
            match round.trials.decide() {
                Some(verdict) => self.record(control, &round, verdict),
                None => control.update_swap(round.id, |r| {
                    r.state = SwapState::RolledBack;
                    r.reason = Some(
                        "the pipeline stopped before the new module ran in every task; swap again \
                         after it starts"
                            .to_owned(),
                    );
                }),
            }
            self.set(None);
        }
        control.cancel_pending();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_once_every_task_passed_and_rolled_back_at_the_first_failure() {
        let r = Trials::new(2);
        r.started((Stage::Source, 0), vec![("in".into(), 0, 10)], 1.0);
        r.passed((Stage::Source, 0), 5);
        assert_eq!(r.decide(), None, "task 1 has not started");
        r.started((Stage::Source, 1), vec![("in".into(), 1, 20)], 3.0);
        assert_eq!(r.decide(), None, "task 1 is on trial");
        r.passed((Stage::Source, 1), 4);
        assert_eq!(r.decide(), Some(Verdict::Live));
        assert_eq!(
            r.figures(),
            (
                vec![("in".into(), 0, 10), ("in".into(), 1, 20)],
                3.0,
                Some(4)
            )
        );

        let r = Trials::new(3);
        r.started((Stage::Source, 0), vec![], 1.0);
        r.passed((Stage::Source, 0), 1);
        r.failed((Stage::Repartition, 1), "trap".into());
        r.failed((Stage::Source, 2), "later".into());
        assert_eq!(
            r.decide(),
            Some(Verdict::RolledBack(
                "task 1 after the repartition topic: trap".into()
            ))
        );
    }

    #[test]
    fn tasks_moving_in_a_rebalance_join_or_leave_the_round() {
        let r = Trials::new(2);
        r.started((Stage::Source, 0), vec![], 1.0);
        r.passed((Stage::Source, 0), 1);
        // Task 1 leaves before it started; task 2 arrives and must pass.
        r.departed((Stage::Source, 1));
        r.arrived();
        assert!(!r.all_started());
        assert_eq!(r.decide(), None, "task 2 has not started");
        r.started((Stage::Source, 2), vec![], 1.0);
        assert_eq!(r.decide(), None, "task 2 is on trial");
        r.passed((Stage::Source, 2), 3);
        assert_eq!(r.decide(), Some(Verdict::Live));

        // Every task left: nothing ran the module here.
        let r = Trials::new(1);
        r.started((Stage::Source, 0), vec![], 1.0);
        r.departed((Stage::Source, 0));
        assert_eq!(
            r.decide(),
            Some(Verdict::RolledBack(
                "every task of this process moved to another in a rebalance during the swap; \
                 swap again"
                    .into()
            ))
        );
    }

    #[test]
    fn a_task_without_records_does_not_hold_the_round_once_another_passed() {
        let r = Trials::new(2);
        r.started((Stage::Source, 0), vec![], 1.0);
        r.started((Stage::Source, 1), vec![], 1.0);
        assert_eq!(r.decide(), None);
        r.passed((Stage::Source, 0), 1);
        assert_eq!(r.decide(), None, "task 1 gets its time");
        r.state().first_pass = Some(Instant::now() - IDLE_TRIAL);
        assert_eq!(r.decide(), Some(Verdict::Live));
    }
}
