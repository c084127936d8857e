//! Creating, starting, stopping and deleting pipelines, and the body of a
//! pipeline's thread (see the invariants in the parent module).

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde_json::Value;

use super::{
    Control, Desired, Entry, FORMAT, Live, Manager, ManagerError, Origin, PipelineStatus, Start,
    Status, Stored, lock, now,
};
use crate::pipeline::{Control as RunControl, RunOptions};
use crate::registry::{IoError, validate_name};
use crate::spec::{Confinement, PipelineSpec, SpecError};

impl Manager {
    /// Creates a pipeline from a spec (YAML or JSON) and starts it.
    pub fn create(&self, text: &str) -> Result<PipelineStatus, ManagerError> {
        self.create_within(text, usize::MAX)
    }

    /// Like [`Manager::create`], unless the server already holds `max`
    /// pipelines (checked under the same lock as the name, so concurrent
    /// creations never pass it).
    pub fn create_within(&self, text: &str, max: usize) -> Result<PipelineStatus, ManagerError> {
        let value: Value = serde_yaml_ng::from_str(text)
            .map_err(|e| SpecError::new("spec", format!("not a YAML or JSON document: {e}")))?;
        let name = match value.get("name") {
            Some(Value::String(name)) => name.clone(),
            // Let the spec parser describe what is wrong (confined: it
            // must not look at the paths the spec names).
            _ => {
                let confinement =
                    Confinement::new(self.data.join("pipelines"), self.allowed.clone());
                return Err(crate::spec::parse_confined(text, &confinement)
                    .err()
                    .map_or_else(
                        || SpecError::new("name", "must be a string").into(),
                        ManagerError::from,
                    ));
            }
        };
        if validate_name(&name).is_err() {
            return Err(SpecError::new("name", ManagerError::InvalidName(name).to_string()).into());
        }
        let mut entries = lock(&self.entries);
        if let Some(entry) = entries.get(&name) {
            return Err(entry
                .defined_by_file("choose another name")
                .unwrap_or(ManagerError::Exists(name)));
        }
        if entries.len() >= max {
            return Err(ManagerError::Full(max));
        }
        let (_, modules) = self.resolve(&name, &value, None)?;
        let stored = Stored {
            format: FORMAT,
            name: name.clone(),
            spec: value,
            modules,
            desired: Desired::Running,
            created_at: now(),
        };
        if let Err(e) = self.persist(&stored) {
            self.release(&name);
            let _ = fs::remove_dir_all(self.modules_dir(&name));
            return Err(e);
        }
        let entry = Arc::new(Entry::new(stored, Origin::Api));
        entries.insert(name.clone(), entry.clone());
        drop(entries);
        tracing::info!("pipeline {name}: created");
        // A start failure is recorded in the status.
        let _ = self.start_entry(&entry, Start::Requested);
        Ok(entry.status())
    }

    /// Starts a stopped or failed pipeline (a running one is left running,
    /// a paused one resumes). A start by a user begins the restart back-off
    /// again.
    pub fn start(&self, name: &str) -> Result<PipelineStatus, ManagerError> {
        let entry = self.entry(name)?;
        let running = entry.running(&lock(&entry.control)).is_some();
        if running && lock(&entry.doc).desired == Desired::Paused {
            return self.resume(name);
        }
        self.set_desired(&entry, Desired::Running)?;
        self.start_entry(&entry, Start::Requested)?;
        Ok(entry.status())
    }

    /// Stops a pipeline after its current batch and waits for it.
    pub fn stop(&self, name: &str) -> Result<PipelineStatus, ManagerError> {
        let entry = self.entry(name)?;
        let mut control = entry.control(name)?;
        self.set_desired(&entry, Desired::Stopped)?;
        entry.halt(&mut control);
        self.forget_trials(name);
        drop(control);
        tracing::info!("pipeline {name}: stopped");
        Ok(entry.status())
    }

    /// Stops a pipeline and forgets it. A pipeline of a spec file is not
    /// deleted: it would be back at the next start.
    pub fn delete(&self, name: &str) -> Result<PipelineStatus, ManagerError> {
        let entry = self.entry(name)?;
        if let Some(e) = entry.defined_by_file(
            "remove the file from the server's command line and restart the server",
        ) {
            return Err(e);
        }
        let mut control = entry.control(name)?;
        entry.halt(&mut control);
        let path = self.file(name);
        fs::remove_file(&path).map_err(IoError::of("delete", &path))?;
        // Its checkpoints and outputs go with it: a pipeline created later
        // under the same name must not resume from them.
        let dir = self.data.join("pipelines").join(name);
        if let Err(e) = fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("pipeline {name}: cannot remove {}: {e}", dir.display());
        }
        control.deleted = true;
        drop(control);
        lock(&self.entries).remove(name);
        self.release(name);
        tracing::info!("pipeline {name}: deleted");
        Ok(entry.status())
    }

    /// Stops every run (their desired state is kept, so the next server
    /// brings them back).
    pub fn shutdown(&self) {
        self.closing.store(true, Ordering::Relaxed);
        let entries = self.all();
        for (_, entry) in &entries {
            lock(&entry.control).stop.store(true, Ordering::Relaxed);
        }
        for (_, entry) in &entries {
            entry.halt(&mut lock(&entry.control));
        }
    }

    pub(super) fn start_entry(&self, entry: &Arc<Entry>, start: Start) -> Result<(), ManagerError> {
        let mut control = lock(&entry.control);
        if control.deleted && start == Start::Requested {
            return Err(ManagerError::NotFound(lock(&entry.doc).name.clone()));
        }
        if control.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            return Ok(());
        }
        if start == Start::Restart {
            // Decided under `control`, which `stop`, `delete` and `shutdown`
            // take too: a restart cannot undo any of them.
            let wanted = lock(&entry.doc).desired != Desired::Stopped;
            let failed = lock(&entry.live).status == Status::Failed;
            if !wanted || !failed || control.deleted || self.closing.load(Ordering::Relaxed) {
                return Ok(());
            }
        }
        entry.halt(&mut control);
        let (name, value, modules) = {
            let doc = lock(&entry.doc);
            (doc.name.clone(), doc.spec.clone(), doc.modules.clone())
        };
        // The run that had swaps pending, if any, is over.
        self.forget_trials(&name);
        let resolved = match &entry.origin {
            Origin::File { spec, .. } => Ok(PipelineSpec::clone(spec)),
            Origin::Api => self
                .resolve(&name, &value, Some(&modules))
                .map(|(spec, _)| spec),
        };
        let spec = match resolved {
            Ok(spec) => spec,
            Err(e) => {
                let mut live = lock(&entry.live);
                if start == Start::Requested {
                    live.failures = 0;
                }
                live.run_since = None;
                live.fail(e.to_string());
                return Err(e);
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let run_control = Arc::new(RunControl::with_listener(self.swap_listener(entry)));
        if lock(&entry.doc).desired == Desired::Paused {
            run_control.set_paused(true);
        }
        *lock(&entry.run) = Some(run_control.clone());
        {
            let mut live = lock(&entry.live);
            live.status = Status::Running;
            live.started_at = Some(now());
            live.stopped_at = None;
            live.run_since = Some(Instant::now());
            live.retry_at = None;
            match start {
                Start::Requested => {
                    live.error = None;
                    live.failures = 0;
                }
                Start::Restart => {
                    live.restarts += 1;
                    tracing::info!(
                        "pipeline {name}: restarting after {} failed run(s) in a row",
                        live.failures
                    );
                }
            }
        }
        let live = entry.live.clone();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("pipeline-{name}"))
            .spawn(move || run(&spec, &flag, &run_control, &live))
            .map_err(|source| IoError {
                what: format!("start a thread for pipeline {name}"),
                source,
            })?;
        control.stop = stop;
        control.thread = Some(thread);
        tracing::info!("pipeline {name}: started");
        Ok(())
    }
}

impl Entry {
    pub(super) fn new(stored: Stored, origin: Origin) -> Self {
        Self {
            origin,
            doc: Mutex::new(stored),
            live: Arc::new(Mutex::new(Live {
                status: Status::Stopped,
                started_at: None,
                stopped_at: None,
                error: None,
                last_run: None,
                run_since: None,
                failures: 0,
                retry_at: None,
                restarts: 0,
            })),
            control: Mutex::new(Control {
                stop: Arc::new(AtomicBool::new(false)),
                thread: None,
                deleted: false,
            }),
            run: Mutex::new(None),
        }
    }

    /// For a pipeline of a spec file: the refusal of a change that belongs
    /// in the file, saying what to do `instead`.
    pub(super) fn defined_by_file(&self, instead: &'static str) -> Option<ManagerError> {
        match &self.origin {
            Origin::File { path, .. } => Some(ManagerError::DefinedByFile {
                name: lock(&self.doc).name.clone(),
                file: path.display().to_string(),
                instead,
            }),
            Origin::Api => None,
        }
    }

    /// Locks the pipeline's `control`, unless the pipeline (`name`) was
    /// deleted meanwhile.
    pub(super) fn control(&self, name: &str) -> Result<MutexGuard<'_, Control>, ManagerError> {
        let control = lock(&self.control);
        if control.deleted {
            return Err(ManagerError::NotFound(name.to_owned()));
        }
        Ok(control)
    }

    /// The current run's control, if the pipeline's thread is running.
    pub(super) fn running(&self, control: &Control) -> Option<Arc<RunControl>> {
        control
            .thread
            .as_ref()
            .filter(|t| !t.is_finished())
            .and(lock(&self.run).clone())
    }

    /// Stops the run, if any, and waits for its thread.
    pub(super) fn halt(&self, control: &mut Control) {
        control.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = control.thread.take() {
            // `run` catches panics, so the thread ends normally.
            let _ = thread.join();
        }
    }
}

/// The body of a pipeline's thread.
fn run(spec: &PipelineSpec, stop: &AtomicBool, control: &RunControl, live: &Mutex<Live>) {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        crate::pipeline::run_with(spec, RunOptions::default(), stop, Some(control))
    }));
    let mut live = lock(live);
    live.stopped_at = Some(now());
    match result {
        Ok(Ok(summary)) => {
            live.status = Status::Stopped;
            live.last_run = Some(summary);
        }
        Ok(Err(e)) => {
            live.fail(format!("{e:#}"));
            tracing::error!(
                "pipeline {}: failed: {e:#} (restart at {})",
                spec.name,
                live.retry_at.as_ref().map_or("-", |r| r.1.as_str())
            );
        }
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            live.fail(format!("the pipeline panicked: {message}"));
            tracing::error!(
                "pipeline {}: panicked: {message} (restart at {})",
                spec.name,
                live.retry_at.as_ref().map_or("-", |r| r.1.as_str())
            );
        }
    }
}
