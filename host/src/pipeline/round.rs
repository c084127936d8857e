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

use super::control::SwapRequest;
use crate::runtime::Module;

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
    pub announced: std::sync::atomic::AtomicBool,
}

impl Round {
    pub fn new(id: u64, request: SwapRequest, module: Module, tasks: usize) -> Arc<Self> {
        Arc::new(Self {
            id,
            request,
            module,
            trials: Trials::new(tasks),
            announced: std::sync::atomic::AtomicBool::new(false),
        })
    }
}

/// The tasks' trials of one round, and its verdict.
#[derive(Debug)]
pub struct Trials {
    /// How many tasks the run has.
    tasks: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Per task (partition), its trial so far.
    tasks: BTreeMap<i32, Trial>,
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
            tasks,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Task `task` runs the new module from `boundary` on (per source
    /// partition), after `swap_ms` at its boundary.
    pub fn started(&self, task: i32, boundary: Vec<(String, i32, i64)>, swap_ms: f64) {
        let mut s = self.state();
        s.tasks.insert(task, Trial::Started);
        s.boundary.extend(boundary);
        s.boundary.sort();
        s.swap_ms = s.swap_ms.max(swap_ms);
    }

    /// Task `task` passed its trial, in epoch `epoch`.
    pub fn passed(&self, task: i32, epoch: u64) {
        let mut s = self.state();
        s.tasks.insert(task, Trial::Passed);
        s.first_batch = Some(s.first_batch.map_or(epoch, |e| e.min(epoch)));
        s.first_pass.get_or_insert_with(Instant::now);
    }

    /// Task `task` could not start the module, or failed its trial: the
    /// round is rolled back (the first reason is kept).
    pub fn failed(&self, task: i32, reason: String) {
        let mut s = self.state();
        s.tasks.remove(&task);
        s.verdict
            .get_or_insert(Verdict::RolledBack(format!("task {task}: {reason}")));
    }

    /// Whether every task runs the new module (or has passed its trial).
    pub fn all_started(&self) -> bool {
        self.state().tasks.len() == self.tasks
    }

    /// The verdict, if reached.
    pub fn verdict(&self) -> Option<Verdict> {
        self.state().verdict.clone()
    }

    /// Reaches the verdict if it can now (see the module docs).
    pub fn decide(&self) -> Option<Verdict> {
        let mut s = self.state();
        if s.verdict.is_none() && s.tasks.len() == self.tasks {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_once_every_task_passed_and_rolled_back_at_the_first_failure() {
        let r = Trials::new(2);
        r.started(0, vec![("in".into(), 0, 10)], 1.0);
        r.passed(0, 5);
        assert_eq!(r.decide(), None, "task 1 has not started");
        r.started(1, vec![("in".into(), 1, 20)], 3.0);
        assert_eq!(r.decide(), None, "task 1 is on trial");
        r.passed(1, 4);
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
        r.started(0, vec![], 1.0);
        r.passed(0, 1);
        r.failed(1, "trap".into());
        r.failed(2, "later".into());
        assert_eq!(r.decide(), Some(Verdict::RolledBack("task 1: trap".into())));
    }

    #[test]
    fn a_task_without_records_does_not_hold_the_round_once_another_passed() {
        let r = Trials::new(2);
        r.started(0, vec![], 1.0);
        r.started(1, vec![], 1.0);
        assert_eq!(r.decide(), None);
        r.passed(0, 1);
        assert_eq!(r.decide(), None, "task 1 gets its time");
        r.state().first_pass = Some(Instant::now() - IDLE_TRIAL);
        assert_eq!(r.decide(), Some(Verdict::Live));
    }
}
