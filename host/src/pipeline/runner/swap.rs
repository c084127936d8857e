//! Module swaps and pauses, at batch boundaries.
//!
//! A swap loads the new module and starts an instance of it (its `init`
//! runs with the step's config) between two batches; if that fails, the
//! old instance never stopped. The first batch with records then runs on
//! the new module as a trial: if the chain fails or the new module faults
//! on any record (trap, deadline, memory limit, invalid output), the
//! previous instance is put back, the window state is restored to what it
//! was before the batch, and the batch runs again on the previous module.
//! Nothing of the trial run has left the host by then, so no record is
//! lost or produced twice. With checkpoints, one is taken at the boundary,
//! so that a recovery never replays epochs of two module versions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{Runner, ms};
use crate::batch::Batch;
use crate::pipeline::Stage;
use crate::pipeline::control::{Control, SwapRequest, SwapState};
use crate::pipeline::join::JoinCheckpoint;
use crate::pipeline::round::{Round, Verdict};
use crate::pipeline::{ChainOutput, Step, StepInfo, load_step, start_step, step_module};
use crate::runtime::{Aggregator, Joiner, Transform};
use crate::source::KafkaSource;
use crate::window::{EngineSnapshot, WindowEngine};

/// How long a paused run sleeps between looks at its requests.
pub(in crate::pipeline) const PAUSED_POLL: Duration = Duration::from_millis(200);

/// The instance a swap replaced.
#[derive(Debug)]
enum Previous {
    Transform(Transform),
    Aggregator(Aggregator),
    Joiner(Joiner),
}

/// The state of the chain before a trial batch, to roll back to.
struct Before {
    engine: Option<EngineSnapshot>,
    join: Option<JoinCheckpoint>,
}

impl Before {
    /// Nothing to put back (the trial never ran a batch).
    fn none() -> Self {
        Self {
            engine: None,
            join: None,
        }
    }
}

/// A swapped-in module waiting for its first batch with records.
#[derive(Debug)]
pub(in crate::pipeline) struct Trial {
    id: u64,
    step: usize,
    previous: Previous,
    previous_info: StepInfo,
    /// When the previous module's last batch ended.
    last_old_batch: Instant,
    /// A task's part of a swap of all the tasks (see `round.rs`): the
    /// previous instance is kept until the round's verdict.
    round: Option<Arc<Round>>,
    /// Whether the trial batch ran (and passed), in a round.
    tried: bool,
}

impl Runner<'_> {
    /// Looks at the control's requests: pauses until resumed (or stopped),
    /// then starts the next swap, if any.
    pub(super) fn attend(
        &mut self,
        control: &Control,
        source: &mut KafkaSource,
        stop: &AtomicBool,
    ) -> anyhow::Result<()> {
        if control.hold(self.trial.is_some()) {
            self.settle(source)?;
            // The client is still polled, without fetching: the group keeps
            // the consumer however long the pause, and the lag stays current.
            source.pause()?;
            tracing::info!(epoch = self.epoch, "pipeline paused");
            while control.hold(self.trial.is_some()) && !stop.load(Ordering::Relaxed) {
                control.sleep(PAUSED_POLL);
                source.poll_paused();
            }
            source.resume()?;
            tracing::info!("pipeline resumed");
        }
        if self.trial.is_none()
            && !stop.load(Ordering::Relaxed)
            && let Some((id, request)) = control.next_swap()
        {
            self.start_swap(control, source, id, &request)?;
        }
        Ok(())
    }

    fn start_swap(
        &mut self,
        control: &Control,
        source: &KafkaSource,
        id: u64,
        request: &SwapRequest,
    ) -> anyhow::Result<()> {
        let last_old_batch = self.last_batch_end;
        let started = Instant::now();
        if self.checkpoints.is_some() {
            self.checkpoint(Some(source))?;
        }
        let step = request.step;
        let loaded = load_step(self.spec, &self.runtime, step, &request.file);
        let next = match loaded {
            Ok(next) => next,
            Err(e) => {
                let reason = format!("the new module cannot start: {e:#}");
                tracing::warn!(step, module = %request.module, %reason, "swap rolled back");
                control.update_swap(id, |r| {
                    r.state = SwapState::RolledBack;
                    r.reason = Some(reason);
                });
                return Ok(());
            }
        };
        let (previous, previous_info) = self.put_in(step, next)?;
        let boundary = self.boundary();
        tracing::info!(step, module = %request.module, version = ?request.version, "swapped in; on trial until its first batch");
        let swap_ms = ms(started.elapsed());
        control.update_swap(id, |r| {
            r.state = SwapState::Trial;
            r.boundary = boundary;
            r.swap_ms = Some(swap_ms);
        });
        self.trial = Some(Trial {
            id,
            step,
            previous,
            previous_info,
            last_old_batch,
            round: None,
            tried: false,
        });
        Ok(())
    }

    /// This task's part of `round`: at this boundary (after a checkpoint),
    /// an instance of the round's module goes in, on trial until this
    /// task's first batch with records.
    pub(in crate::pipeline) fn start_round(
        &mut self,
        round: &Arc<Round>,
        step: usize,
        source: &KafkaSource,
    ) -> anyhow::Result<()> {
        if self
            .trial
            .as_ref()
            .is_some_and(|t| t.round.as_ref().is_some_and(|r| r.id == round.id))
        {
            return Ok(());
        }
        let task = self.task_key();
        let last_old_batch = self.last_batch_end;
        let started = Instant::now();
        if self.checkpoints.is_some() {
            self.checkpoint(Some(source))?;
        }
        let next = match start_step(self.spec, step, &round.module) {
            Ok(next) => next,
            Err(e) => {
                round
                    .trials
                    .failed(task, format!("the new module cannot start: {e:#}"));
                return Ok(());
            }
        };
        let (previous, previous_info) = self.put_in(step, next)?;
        round
            .trials
            .started(task, self.boundary(), ms(started.elapsed()));
        tracing::debug!(
            ?task,
            step,
            "swapped in; on trial until the task's first batch"
        );
        self.trial = Some(Trial {
            id: round.id,
            step,
            previous,
            previous_info,
            last_old_batch,
            round: Some(round.clone()),
            tried: false,
        });
        Ok(())
    }

    /// Once its round has a verdict: live, the previous instance goes;
    /// rolled back, it comes back, after a checkpoint (epochs of the new
    /// module may have run).
    pub(in crate::pipeline) fn finish_round(&mut self, source: &KafkaSource) -> anyhow::Result<()> {
        let Some(verdict) = self
            .trial
            .as_ref()
            .and_then(|t| t.round.as_ref())
            .and_then(|r| r.trials.verdict())
        else {
            return Ok(());
        };
        match verdict {
            Verdict::Live => self.trial = None,
            Verdict::RolledBack(_) => {
                if self.checkpoints.is_some() {
                    self.checkpoint(Some(source))?;
                }
                let trial = self.trial.take().expect("checked above");
                self.roll_back(trial, Before::none())?;
            }
        }
        Ok(())
    }

    /// The task's stage and partition (partition 0 for a whole pipeline).
    fn task_key(&self) -> (Stage, i32) {
        (
            Stage::of(self.spec),
            self.task.as_ref().map_or(0, |t| t.partition),
        )
    }

    /// Puts `next` in as step `step`; returns the instance it replaced and
    /// that one's description.
    fn put_in(&mut self, step: usize, next: Step) -> anyhow::Result<(Previous, StepInfo)> {
        let info = StepInfo {
            name: self.spec.transforms[step].step_name(),
            module: step_module(&next).name().to_owned(),
            sha256: step_module(&next).sha256().to_owned(),
        };
        let previous = match (next, &mut self.chain.steps_mut()[step]) {
            (Step::Transform(new), Step::Transform(old)) => {
                Previous::Transform(std::mem::replace(old, new))
            }
            (Step::Aggregate(new), Step::Aggregate(old)) => {
                Previous::Aggregator(old.swap_aggregator(new.into_aggregator()))
            }
            (Step::Rekey(new), Step::Rekey(old)) => {
                Previous::Aggregator(std::mem::replace(&mut old.aggregator, new.aggregator))
            }
            (Step::Join(new), Step::Join(old)) => {
                Previous::Joiner(old.swap_joiner(new.into_joiner()))
            }
            // `start_step` instantiates the kind the spec's step asks for.
            _ => anyhow::bail!("a swap changed the kind of step {step}"),
        };
        let previous_info =
            std::mem::replace(&mut Arc::make_mut(&mut self.routing).steps[step], info);
        Ok((previous, previous_info))
    }

    /// Per source partition, the position the next batch starts at.
    fn boundary(&self) -> Vec<(String, i32, i64)> {
        let mut boundary: Vec<(String, i32, i64)> = self
            .read
            .iter()
            .map(|(&(s, p), &o)| (self.spec.source.topics[s as usize].clone(), p, o))
            .collect();
        boundary.sort();
        boundary
    }

    /// Runs the chain; the first batch with records after a swap is the
    /// new module's trial (see the module docs).
    pub(super) fn run_chain(
        &mut self,
        batch: &mut Batch,
        now_ms: i64,
    ) -> anyhow::Result<ChainOutput> {
        let Some(trial) = self.trial.as_ref().filter(|t| !t.tried) else {
            return self.chain_once(batch, now_ms);
        };
        if batch.is_empty() {
            return self.chain_once(batch, now_ms);
        }
        let (id, step, round) = (trial.id, trial.step, trial.round.clone());
        let pause_ms = ms(trial.last_old_batch.elapsed());
        let epoch = self.epoch;
        let control = match (&round, self.control) {
            (None, Some(control)) => {
                control.update_swap(id, |r| {
                    r.first_batch = Some(epoch);
                    r.pause_ms = Some(pause_ms);
                });
                Some(control)
            }
            _ => None,
        };
        let snapshot = Before {
            engine: self.chain.aggregate().map(|a| a.engine().snapshot()),
            join: match self.chain.steps().first() {
                Some(Step::Join(j)) => Some(j.checkpoint(&self.spec.source.topics)),
                _ => None,
            },
        };
        let verdict = match self.chain.run(batch, now_ms) {
            Ok(out) => match out
                .dead_letters
                .iter()
                .find(|d| d.step == step && d.reason.kind.is_fault())
            {
                Some(d) => Err(format!(
                    "the new module failed on its first batch: {} (record {} of batch {epoch})",
                    d.reason, d.origin
                )),
                None => match out
                    .held_reasons
                    .iter()
                    .find(|(s, r)| *s == step && r.kind.is_fault())
                {
                    Some((_, reason)) => Err(format!(
                        "the new module failed on its first batch: {reason} (a joined record of \
                         batch {epoch})"
                    )),
                    None => Ok(out),
                },
            },
            Err(e) => Err(format!("the new module failed on its first batch: {e:#}")),
        };
        if let Some(round) = round {
            let task = self.task_key();
            return match verdict {
                Ok(out) => {
                    round.trials.passed(task, epoch);
                    if let Some(trial) = &mut self.trial {
                        trial.tried = true;
                    }
                    Ok(out)
                }
                Err(reason) => {
                    tracing::warn!(?task, step, epoch, %reason, "the new module failed its trial in this task");
                    let trial = self.trial.take().expect("checked above");
                    self.roll_back(trial, snapshot)?;
                    round.trials.failed(task, reason);
                    self.chain_once(batch, now_ms)
                }
            };
        }
        let control = control.expect("a whole pipeline's swap comes through its control");
        let trial = self.trial.take().expect("checked above");
        control.rearm();
        match verdict {
            Ok(out) => {
                tracing::info!(step, epoch, pause_ms, "swap live");
                control.update_swap(id, |r| r.state = SwapState::Live);
                Ok(out)
            }
            Err(reason) => {
                tracing::warn!(step, epoch, %reason, "swap rolled back");
                self.roll_back(trial, snapshot)?;
                control.update_swap(id, |r| {
                    r.state = SwapState::RolledBack;
                    r.reason = Some(reason);
                });
                self.chain_once(batch, now_ms)
            }
        }
    }

    fn chain_once(&mut self, batch: &mut Batch, now_ms: i64) -> anyhow::Result<ChainOutput> {
        self.chain
            .run(batch, now_ms)
            .context("a step failed; the batch is not committed")
    }

    /// Puts the previous instance back and the window state as it was.
    fn roll_back(&mut self, trial: Trial, before: Before) -> anyhow::Result<()> {
        match (trial.previous, &mut self.chain.steps_mut()[trial.step]) {
            (Previous::Joiner(old), Step::Join(current)) => {
                current.swap_joiner(old);
            }
            (Previous::Transform(old), Step::Transform(current)) => *current = old,
            (Previous::Aggregator(old), Step::Aggregate(current)) => {
                current.swap_aggregator(old);
            }
            (Previous::Aggregator(old), Step::Rekey(current)) => current.aggregator = old,
            _ => anyhow::bail!("a swap changed the kind of step {}", trial.step),
        }
        Arc::make_mut(&mut self.routing).steps[trial.step] = trial.previous_info;
        if let (Some(join), Some(Step::Join(step))) =
            (before.join, self.chain.steps_mut().first_mut())
        {
            step.restore_checkpoint(join, &self.spec.source.topics)?;
        }
        if let Some(snapshot) = before.engine {
            let window = self
                .spec
                .transforms
                .last()
                .and_then(|t| t.aggregate.clone())
                .context("the aggregate step has no window spec")?;
            let engine = WindowEngine::restore(window, snapshot)
                .context("cannot restore the window state from before the trial batch")?;
            if let Some(step) = self.chain.aggregate_mut() {
                step.set_engine(engine);
            }
        }
        Ok(())
    }
}

impl Runner<'_> {
    /// At the end of the task's run: a module still on trial never ran a
    /// batch, so the swap is not confirmed; the pipeline document keeps the
    /// previous version, which the next run starts with. When the whole run
    /// ends (`run_ends`; not when a rebalance takes the task away) swaps
    /// still waiting are not done either.
    pub(super) fn abandon_trial(&mut self, run_ends: bool) {
        let Some(control) = self.control else {
            return;
        };
        if run_ends {
            control.cancel_pending();
        }
        if let Some(trial) = self.trial.take_if(|t| t.round.is_none()) {
            control.update_swap(trial.id, |r| {
                r.state = SwapState::RolledBack;
                r.reason = Some(
                    "the pipeline stopped before the new module ran a batch; swap again after it starts"
                        .to_owned(),
                );
            });
        }
    }
}
