//! The status document of a pipeline: what the API shows of it, put
//! together from its document, what its thread reported and its run's
//! live progress; and the server's readiness: which pipelines that should
//! run have not started yet.

use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;

use super::{Desired, Entry, Manager, ManagerError, Origin, Status, StepModule, lock};
use crate::pipeline::{Control as RunControl, Progress, Sample, Summary, SwapRecord};

/// A pipeline as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineStatus {
    pub name: String,
    pub status: Status,
    pub desired: Desired,
    /// The spec file that defines the pipeline (`sluice serve --pipeline`);
    /// `None` for one created through the API.
    pub file: Option<String>,
    pub created_at: String,
    /// When the current (or last) run started.
    pub started_at: Option<String>,
    /// When the last run ended.
    pub stopped_at: Option<String>,
    /// Why the last run failed. An automatic restart keeps it, so that a
    /// running pipeline shows why it was restarted.
    pub error: Option<String>,
    /// Automatic restarts since the server started.
    pub restarts: u32,
    /// When a failed pipeline is restarted next (not when it should stop).
    pub next_restart_at: Option<String>,
    pub modules: Vec<StepModule>,
    /// What the last finished run did.
    pub last_run: Option<Summary>,
    /// The current (or last) run's progress after its latest batch.
    pub progress: Option<Progress>,
    /// Records read per second over the last minute, oldest first.
    pub throughput: Vec<Sample>,
    /// Module swaps of the current (or last) run, oldest first.
    pub swaps: Vec<SwapRecord>,
    pub spec: Value,
}

/// A pipeline that should run but has not started (see
/// [`Manager::not_ready`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotReady {
    pub name: String,
    /// `running` (or `paused`): still starting; `failed` or `stopped`: its
    /// run ended, and a restart may be due.
    pub status: Status,
    /// Why its last run failed, if it did.
    pub error: Option<String>,
}

impl Manager {
    /// Every pipeline, by name.
    pub fn list(&self) -> Vec<PipelineStatus> {
        self.all().into_iter().map(|(_, e)| e.status()).collect()
    }

    /// Per pipeline with a run so far: its batch-duration histogram
    /// (cumulative counts per bucket of [`crate::pipeline::DURATION_BUCKETS_MS`],
    /// then `+Inf`) and the sum of durations in milliseconds.
    pub fn batch_durations(&self) -> Vec<(String, Vec<u64>, f64)> {
        self.all()
            .into_iter()
            .filter_map(|(name, e)| {
                let run = lock(&e.run).clone()?;
                run.progress()?;
                let (counts, sum) = run.histogram();
                Some((name, counts, sum))
            })
            .collect()
    }

    pub fn get(&self, name: &str) -> Result<PipelineStatus, ManagerError> {
        Ok(self.entry(name)?.status())
    }

    /// The pipelines that should run (desired `running` or `paused`) and
    /// have not started, by name: loading their modules, recovering their
    /// checkpoints, waiting for their first tasks, failed or ended. The
    /// server is ready when there are none.
    pub fn not_ready(&self) -> Vec<NotReady> {
        self.all()
            .into_iter()
            .filter(|(_, entry)| lock(&entry.doc).desired != Desired::Stopped)
            .filter_map(|(name, entry)| {
                let run = lock(&entry.run).clone();
                let live = lock(&entry.live);
                let started = live.status == Status::Running && run.as_deref().is_some_and(started);
                (!started).then(|| NotReady {
                    name,
                    status: shown(live.status, run.as_deref()),
                    error: live.error.clone(),
                })
            })
            .collect()
    }
}

/// The status a pipeline shows: its thread's, `paused` once a running
/// pipeline's `run` acknowledged a pause.
fn shown(status: Status, run: Option<&RunControl>) -> Status {
    match status {
        Status::Running if run.is_some_and(RunControl::is_paused) => Status::Paused,
        status => status,
    }
}

/// Whether `run` has started: its source polls (a whole run), or every
/// worker has its first tasks (a run as tasks); the moment the run logs
/// `pipeline started`.
fn started(run: &RunControl) -> bool {
    run.has_started()
}

impl Entry {
    pub(super) fn status(&self) -> PipelineStatus {
        let doc = lock(&self.doc).clone();
        let live = lock(&self.live).clone();
        let run = lock(&self.run).clone();
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let status = shown(live.status, run.as_deref());
        PipelineStatus {
            name: doc.name,
            status,
            desired: doc.desired,
            file: match &self.origin {
                Origin::File { path, .. } => Some(path.display().to_string()),
                Origin::Api => None,
            },
            created_at: doc.created_at,
            started_at: live.started_at,
            stopped_at: live.stopped_at,
            error: live.error,
            restarts: live.restarts,
            next_restart_at: live
                .retry_at
                .filter(|_| live.status == Status::Failed && doc.desired != Desired::Stopped)
                .map(|r| r.1),
            modules: doc.modules,
            last_run: live.last_run,
            progress: run.as_ref().and_then(|r| r.progress()),
            throughput: run
                .as_ref()
                .map(|r| r.throughput(now_ms))
                .unwrap_or_default(),
            swaps: run.as_ref().map(|r| r.swaps()).unwrap_or_default(),
            spec: crate::spec::redacted(doc.spec),
        }
    }
}
