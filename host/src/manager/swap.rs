//! Pausing, resuming and swapping the module of a step of a pipeline.
//!
//! A swap of a running pipeline is handed to its run, which applies it at
//! the next batch boundary and tries the new module on one batch (see
//! `pipeline/runner/swap.rs`). The pipeline document records the new
//! version only once it went live, so a restart runs what last worked. A
//! swap of a stopped pipeline is recorded at once and takes effect when it
//! starts. The previous version stays in the store, ready to swap back to.

use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::Value;

use super::{
    Desired, Entry, Manager, ManagerError, PipelineStatus, StepModule, Stored, Usage, hold, lock,
    now, persist,
};
use crate::pipeline::{SwapListener, SwapRecord, SwapRequest, SwapState};
use crate::registry::{ModuleRef, StoreError};
use crate::spec::SpecError;

/// How long a request waits for the run: a pause waits for the current
/// batch and a checkpoint; a swap for the next batch boundary.
const WAIT: Duration = Duration::from_secs(30);

impl Manager {
    /// Pauses a running pipeline after its current batch: its outputs are
    /// acknowledged and its offsets committed (and checkpointed) first. It
    /// stays paused across server restarts until resumed.
    pub fn pause(&self, name: &str) -> Result<PipelineStatus, ManagerError> {
        self.set_paused(name, true)
    }

    /// Resumes a paused pipeline.
    pub fn resume(&self, name: &str) -> Result<PipelineStatus, ManagerError> {
        self.set_paused(name, false)
    }

    fn set_paused(&self, name: &str, paused: bool) -> Result<PipelineStatus, ManagerError> {
        let entry = self.entry(name)?;
        let control = entry.control(name)?;
        let Some(run) = entry.running(&control) else {
            return Err(ManagerError::NotRunning(name.to_owned()));
        };
        let desired = if paused {
            Desired::Paused
        } else {
            Desired::Running
        };
        self.set_desired(&entry, desired)?;
        run.set_paused(paused);
        drop(control);
        if !run.wait_paused(paused, WAIT) {
            tracing::warn!("pipeline {name}: still finishing its batch after {WAIT:?}");
        }
        tracing::info!(
            "pipeline {name}: {}",
            if paused { "paused" } else { "resumed" }
        );
        Ok(entry.status())
    }

    /// Points step `step` (optional when there is one) of pipeline `name`
    /// at `module` (`name` for its latest version, or `name@version`).
    /// Returns the status and, for a running pipeline, the swap's record
    /// once it left `pending` (or after 30 s).
    pub fn swap(
        &self,
        name: &str,
        step: Option<&str>,
        module: &str,
    ) -> Result<(PipelineStatus, Option<SwapRecord>), ManagerError> {
        let entry = self.entry(name)?;
        if let Some(e) =
            entry.defined_by_file("change the module in the file and restart the server")
        {
            return Err(e);
        }
        let control = entry.control(name)?;
        let doc = lock(&entry.doc).clone();
        let steps = || {
            doc.modules
                .iter()
                .map(|m| format!("`{}`", m.step))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let index = match step {
            Some(step) => doc
                .modules
                .iter()
                .position(|m| m.step == step)
                .ok_or_else(|| {
                    ManagerError::Invalid(format!(
                        "step: pipeline `{name}` has no step `{step}`; its steps are {}",
                        steps()
                    ))
                })?,
            None if doc.modules.len() == 1 => 0,
            None => {
                return Err(ManagerError::Invalid(format!(
                    "step: pipeline `{name}` has {} steps; say which to swap: {}",
                    doc.modules.len(),
                    steps()
                )));
            }
        };
        let reference: ModuleRef = module.parse().map_err(|_| {
            SpecError::new(
                "module",
                format!("`{module}` is not a module reference: write `name` or `name@version`"),
            )
        })?;
        let field = "module".to_owned();
        let version = match reference.version {
            Some(v) => v,
            None => {
                self.store
                    .latest(&reference.name)
                    .ok_or_else(|| ManagerError::Module {
                        field: field.clone(),
                        source: StoreError::NotFound(reference.name.clone()),
                    })?
                    .version
            }
        };
        // Hold first, then check (see the module docs of the manager). The
        // version stays held as a trial until the swap resolves; the
        // document's versions stay held by `usage` meanwhile.
        let trial = (reference.name.clone(), version);
        lock(&self.trials)
            .entry(name.to_owned())
            .or_default()
            .push(trial.clone());
        let target = (|| {
            let meta = self
                .store
                .version(&reference.name, version)
                .map_err(|source| ManagerError::Module {
                    field: field.clone(),
                    source,
                })?;
            let step = super::step_kind(&doc.spec["transforms"][index]);
            if let Some(mismatch) = super::kind_mismatch(step, meta.kind) {
                return Err(ManagerError::WrongKind {
                    field: field.clone(),
                    module: format!("{}@{version}", reference.name),
                    mismatch,
                });
            }
            let file = self.module_file(name, &reference.name, version, &meta.sha256)?;
            Ok((meta.sha256, file))
        })();
        let (sha256, file) = match target {
            Ok(target) => target,
            Err(e) => {
                untrial(&self.trials, name, &trial);
                return Err(e);
            }
        };
        let target = StepModule {
            step: doc.modules[index].step.clone(),
            module: reference.name.clone(),
            version,
            sha256,
        };
        let Some(run) = entry.running(&control) else {
            // Takes effect at the next start.
            let updated = swapped(&doc, index, &target);
            let persisted = persist(&self.data, &updated);
            if persisted.is_ok() {
                hold(&self.usage, name, &updated.modules);
                *lock(&entry.doc) = updated;
            }
            untrial(&self.trials, name, &trial);
            persisted?;
            drop(control);
            tracing::info!(
                "pipeline {name}: step {} now runs {}@{version} (from its next start)",
                target.step,
                target.module
            );
            return Ok((entry.status(), None));
        };
        let record = SwapRecord {
            id: 0,
            step: target.step.clone(),
            module: target.module.clone(),
            from_version: Some(doc.modules[index].version),
            to_version: Some(version),
            state: SwapState::Pending,
            reason: None,
            requested_at: now(),
            first_batch: None,
            boundary: Vec::new(),
            pause_ms: None,
            swap_ms: None,
        };
        let request = SwapRequest {
            step: index,
            module: target.module.clone(),
            version: Some(version),
            file,
        };
        let id = run.request_swap(request, record);
        drop(control);
        let record = run.wait_swap(id, WAIT);
        Ok((entry.status(), record))
    }

    /// Hears the run's swap outcomes: a live swap is recorded in the
    /// pipeline document; either way the versions held are the document's,
    /// plus those of swaps still pending or on trial.
    pub(super) fn swap_listener(&self, entry: &Arc<Entry>) -> SwapListener {
        let entry: Weak<Entry> = Arc::downgrade(entry);
        let data = self.data.clone();
        let store = self.store.clone();
        let usage = self.usage.clone();
        let trials = self.trials.clone();
        Box::new(move |record: &SwapRecord| {
            let Some(entry) = entry.upgrade() else {
                return;
            };
            let mut doc = lock(&entry.doc);
            if record.state == SwapState::Live
                && let Some(version) = record.to_version
                && let Some(index) = doc.modules.iter().position(|m| m.step == record.step)
            {
                let sha256 = store
                    .version(&record.module, version)
                    .map(|m| m.sha256)
                    .unwrap_or_default();
                let target = StepModule {
                    step: record.step.clone(),
                    module: record.module.clone(),
                    version,
                    sha256,
                };
                let updated = swapped(&doc, index, &target);
                match persist(&data, &updated) {
                    Ok(()) => *doc = updated,
                    Err(e) => tracing::error!(
                        "pipeline {}: the swap to {}@{version} is live but cannot be recorded \
                         (a restart would run the previous version): {e}",
                        doc.name,
                        record.module
                    ),
                }
            }
            hold(&usage, &doc.name, &doc.modules);
            if matches!(record.state, SwapState::Live | SwapState::RolledBack)
                && let Some(version) = record.to_version
            {
                untrial(&trials, &doc.name, &(record.module.clone(), version));
            }
        })
    }

    /// Forgets the trials of pipeline `name` when no run goes on with them
    /// (a run ended: its pending swaps ended with it).
    pub(super) fn forget_trials(&self, name: &str) {
        lock(&self.trials).remove(name);
    }
}

/// Removes one hold of `trial` by pipeline `name`.
fn untrial(trials: &Usage, name: &str, trial: &(String, u32)) {
    let mut trials = lock(trials);
    if let Some(held) = trials.get_mut(name) {
        if let Some(at) = held.iter().position(|t| t == trial) {
            held.remove(at);
        }
        if held.is_empty() {
            trials.remove(name);
        }
    }
}

/// `doc` with step `index` running `target`. The spec names the module
/// with its version, and keeps the step's name.
fn swapped(doc: &Stored, index: usize, target: &StepModule) -> Stored {
    let mut updated = doc.clone();
    updated.modules[index] = target.clone();
    if let Some(Value::Object(step)) = updated.spec.pointer_mut(&format!("/transforms/{index}")) {
        step.insert(
            "module".into(),
            Value::String(format!("{}@{}", target.module, target.version)),
        );
        step.insert("name".into(), Value::String(target.step.clone()));
    }
    updated
}
