//! The pipeline manager: many pipelines in one process, each running
//! [`crate::pipeline::run`] on its own thread with its own stop flag.
//!
//! ```text
//! <data>/pipelines/<name>.json   the spec as given, the resolved module versions, the desired state
//! <data>/pipelines/<name>/       the base of the spec's relative paths (checkpoints, Parquet files)
//! <data>/pipelines/<name>/.modules/<version>/<module>.wasm   hard links to the store's blobs
//! ```
//!
//! A spec's paths are confined ([`crate::spec::Confinement`]): below its
//! pipeline's directory, or inside a directory the operator allowed
//! (`sluice serve --allow-dir`); never elsewhere in `<data>`. Its
//! modules are store references, never paths on the server.
//!
//! A spec is the file `sluice run` reads, except that a transform's
//! `module` is `name` or `name@version` of the module store. A plain `name`
//! is resolved to the latest version when the pipeline is created, and that
//! version is recorded: restarts and `start` run the same bytes. A step
//! without a `name` is named after its module. Deleting a pipeline removes
//! its directory with everything in it (checkpoints, staged files, Parquet
//! output written under it), so a pipeline created later under the same
//! name starts from scratch; the Kafka consumer group's committed offsets
//! are the broker's and stay. The status document shows the spec as given,
//! with its secrets redacted ([`crate::spec::redacted`]), since reading
//! needs no token.
//!
//! Invariants:
//! - A module version named by a pipeline cannot be deleted from the store:
//!   a pipeline's versions are registered in `usage` *before* the store is
//!   asked whether they exist, and the store's delete asks `usage` while
//!   holding its own lock, so exactly one of "create sees the version" or
//!   "delete sees the pipeline" wins. Nothing here calls the store while
//!   holding `usage`.
//! - At most one run per pipeline: starting, stopping and deleting hold the
//!   pipeline's `control` lock, stopping joins the run's thread.
//! - A run that fails or panics leaves `failed` and its error; the server
//!   goes on. The desired state stays `running` (or `paused`), and the
//!   supervisor ([`Manager::supervise`]) starts the pipeline again after a
//!   back-off: 1 s, doubling per failure in a row up to 60 s; a run that
//!   lasted 10 minutes, or a start by a user, begins the count again. A
//!   restart never races a user: it is decided under the pipeline's
//!   `control` lock, against the desired state that `stop` and `delete`
//!   change under the same lock, and not at all once the server shuts down.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

mod files;
mod restart;
mod swap;

use files::{io_error, persist};

use super::store::{Kind, ModuleRef, ModuleStore, StoreError, validate_name};
use crate::pipeline::{Control as RunControl, Progress, RunOptions, Sample, Summary, SwapRecord};
use crate::spec::{Confinement, PipelineSpec, SpecError};

const FORMAT: u32 = 1;

/// Why a pipeline operation failed. The messages are shown to API users.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("{0}")]
    Spec(#[from] SpecError),
    #[error(
        "invalid pipeline name `{0}`: use 1 to 63 lower-case letters, digits and '-', starting with a letter or digit"
    )]
    InvalidName(String),
    #[error("no pipeline named `{0}`")]
    NotFound(String),
    #[error("a pipeline named `{0}` already exists; delete it first or choose another name")]
    Exists(String),
    /// A module reference the store cannot satisfy (`source` says why).
    #[error("{field}: {source}")]
    Module {
        field: String,
        #[source]
        source: StoreError,
    },
    /// `mismatch` says how the module's kind and the step disagree.
    #[error("{field}: module `{module}` {mismatch}")]
    WrongKind {
        field: String,
        module: String,
        mismatch: &'static str,
    },
    #[error("cannot {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("the pipeline store is damaged: {0}")]
    Corrupt(String),
    /// A request that cannot be carried out as asked (the message says why).
    #[error("{0}")]
    Invalid(String),
    /// The request needs a running pipeline.
    #[error("pipeline `{0}` is not running; start it first")]
    NotRunning(String),
    /// The server holds as many pipelines as it may.
    #[error(
        "this server holds at most {0} pipelines (sluice serve --max-pipelines): delete one first"
    )]
    Full(usize),
}

/// The state a pipeline should be in; persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    Running,
    Paused,
    Stopped,
}

/// The state a pipeline is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Running,
    Paused,
    Stopped,
    Failed,
}

/// The module version a step runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepModule {
    pub step: String,
    pub module: String,
    pub version: u32,
    pub sha256: String,
}

/// What `<data>/pipelines/<name>.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    format: u32,
    name: String,
    /// The spec as given (YAML is stored as its JSON equivalent).
    spec: Value,
    /// One per transform, in order.
    modules: Vec<StepModule>,
    desired: Desired,
    created_at: String,
}

/// What the pipeline's thread reports.
#[derive(Debug, Clone)]
struct Live {
    status: Status,
    started_at: Option<String>,
    stopped_at: Option<String>,
    error: Option<String>,
    last_run: Option<Summary>,
    /// When the current (or last) run started.
    run_since: Option<Instant>,
    /// Failed runs in a row: the back-off's exponent.
    failures: u32,
    /// When a failed pipeline is due to be restarted (and the same as text).
    retry_at: Option<(Instant, String)>,
    /// Automatic restarts since the server started.
    restarts: u32,
}

/// Who starts a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// A user, the creation of the pipeline or the server's start.
    Requested,
    /// The supervisor, after a failed run.
    Restart,
}

/// A pipeline as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineStatus {
    pub name: String,
    pub status: Status,
    pub desired: Desired,
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

struct Control {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    deleted: bool,
}

struct Entry {
    doc: Mutex<Stored>,
    live: Arc<Mutex<Live>>,
    control: Mutex<Control>,
    /// The current (or last) run's control: progress, pause, swaps.
    run: Mutex<Option<Arc<RunControl>>>,
}

/// The manager. Operations block (file I/O, joining threads); call them off
/// the async runtime.
pub struct Manager {
    data: PathBuf,
    /// Directories outside `data` where specs may put files (canonical).
    allowed: Vec<PathBuf>,
    store: Arc<ModuleStore>,
    entries: Mutex<BTreeMap<String, Arc<Entry>>>,
    /// Pipeline -> the module versions it holds (see the module docs).
    usage: Arc<Usage>,
    /// Pipeline -> the versions of its swaps not yet resolved (pending or
    /// on trial), held besides `usage` until the run reports them live or
    /// rolled back: a run on trial may still go on with either version.
    trials: Arc<Usage>,
    /// Set by [`Manager::shutdown`]: no run starts any more.
    closing: AtomicBool,
}

type Usage = Mutex<BTreeMap<String, Vec<(String, u32)>>>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl Manager {
    /// Opens `<data>/pipelines` (creating it) and loads every pipeline,
    /// without starting any: see [`Manager::restore`]. Specs may put files
    /// (checkpoints, Parquet) only in their pipeline's directory and in the
    /// `allowed` directories, which must exist.
    pub fn open(
        data: &Path,
        store: Arc<ModuleStore>,
        allowed: &[PathBuf],
    ) -> Result<Self, ManagerError> {
        let dir = data.join("pipelines");
        crate::api::store::private_dir(&dir).map_err(io_error("create", &dir))?;
        // Absolute: the paths of modules and checkpoints written into specs
        // must not be resolved against the spec's directory again.
        let data = fs::canonicalize(data).map_err(io_error("resolve", data))?;
        let allowed: Vec<PathBuf> = allowed
            .iter()
            .map(|dir| fs::canonicalize(dir).map_err(io_error("resolve", dir)))
            .collect::<Result<_, _>>()?;
        // Inside the data directory, pipelines could reach each other's
        // files and the module store.
        if let Some(dir) = allowed
            .iter()
            .find(|dir| dir.starts_with(&data) || data.starts_with(dir))
        {
            return Err(ManagerError::Invalid(format!(
                "allowed directory {}: must be outside the data directory {} (and not contain it)",
                dir.display(),
                data.display()
            )));
        }
        let manager = Self {
            data,
            allowed,
            store,
            entries: Mutex::new(BTreeMap::new()),
            usage: Arc::default(),
            trials: Arc::default(),
            closing: AtomicBool::new(false),
        };
        let mut entries = BTreeMap::new();
        for file in fs::read_dir(&dir).map_err(io_error("list", &dir))? {
            let path = file.map_err(io_error("list", &dir))?.path();
            let file_name = path.file_name().unwrap_or_default().to_string_lossy();
            if file_name.starts_with(".tmp-") {
                let _ = fs::remove_file(&path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let bytes = fs::read(&path).map_err(io_error("read", &path))?;
            let stored: Stored = serde_json::from_slice(&bytes)
                .map_err(|e| ManagerError::Corrupt(format!("{}: {e}", path.display())))?;
            if path.file_stem().is_none_or(|stem| *stem != *stored.name) {
                return Err(ManagerError::Corrupt(format!(
                    "{} holds pipeline `{}`",
                    path.display(),
                    stored.name
                )));
            }
            if stored.format != FORMAT {
                return Err(ManagerError::Corrupt(format!(
                    "{}: unknown format {} (this Sluice reads format {FORMAT})",
                    path.display(),
                    stored.format
                )));
            }
            manager.hold(&stored.name, &stored.modules);
            entries.insert(stored.name.clone(), Arc::new(Entry::new(stored)));
        }
        *lock(&manager.entries) = entries;
        Ok(manager)
    }

    /// Starts every pipeline whose desired state is `running` (or
    /// `paused`: it starts paused). One that cannot start is left `failed`
    /// with its error.
    pub fn restore(&self) {
        for (name, entry) in self.all() {
            if lock(&entry.doc).desired != Desired::Stopped {
                match self.start_entry(&entry, Start::Requested) {
                    Ok(()) => tracing::info!("pipeline {name}: restored"),
                    Err(e) => tracing::warn!("pipeline {name}: cannot restore: {e}"),
                }
            }
        }
    }

    /// The pipelines using `module@version`: running it, or swapping to it.
    pub fn users(&self, module: &str, version: u32) -> Vec<String> {
        let uses =
            |held: &Vec<(String, u32)>| held.iter().any(|(m, v)| m == module && *v == version);
        let mut users: Vec<String> = lock(&self.usage)
            .iter()
            .filter(|(_, held)| uses(held))
            .map(|(name, _)| name.clone())
            .collect();
        for (name, held) in lock(&self.trials).iter() {
            if uses(held) && !users.contains(name) {
                users.push(name.clone());
            }
        }
        users.sort();
        users
    }

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
        if entries.contains_key(&name) {
            return Err(ManagerError::Exists(name));
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
        let entry = Arc::new(Entry::new(stored));
        entries.insert(name.clone(), entry.clone());
        drop(entries);
        tracing::info!("pipeline {name}: created");
        // A start failure is recorded in the status.
        let _ = self.start_entry(&entry, Start::Requested);
        Ok(entry.status())
    }

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
        let mut control = lock(&entry.control);
        if control.deleted {
            return Err(ManagerError::NotFound(name.to_owned()));
        }
        self.set_desired(&entry, Desired::Stopped)?;
        entry.halt(&mut control);
        self.forget_trials(name);
        drop(control);
        tracing::info!("pipeline {name}: stopped");
        Ok(entry.status())
    }

    /// Stops a pipeline and forgets it.
    pub fn delete(&self, name: &str) -> Result<PipelineStatus, ManagerError> {
        let entry = self.entry(name)?;
        let mut control = lock(&entry.control);
        if control.deleted {
            return Err(ManagerError::NotFound(name.to_owned()));
        }
        entry.halt(&mut control);
        let path = self.file(name);
        fs::remove_file(&path).map_err(io_error("delete", &path))?;
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

    fn all(&self) -> Vec<(String, Arc<Entry>)> {
        lock(&self.entries)
            .iter()
            .map(|(n, e)| (n.clone(), e.clone()))
            .collect()
    }

    fn entry(&self, name: &str) -> Result<Arc<Entry>, ManagerError> {
        validate_name(name).map_err(|_| ManagerError::InvalidName(name.to_owned()))?;
        lock(&self.entries)
            .get(name)
            .cloned()
            .ok_or_else(|| ManagerError::NotFound(name.to_owned()))
    }

    fn start_entry(&self, entry: &Arc<Entry>, start: Start) -> Result<(), ManagerError> {
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
        let spec = match self.resolve(&name, &value, Some(&modules)) {
            Ok((spec, _)) => spec,
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
            .map_err(|source| ManagerError::Io {
                what: format!("start a thread for pipeline {name}"),
                source,
            })?;
        control.stop = stop;
        control.thread = Some(thread);
        tracing::info!("pipeline {name}: started");
        Ok(())
    }

    /// Resolves the spec's module references (`pinned`: the versions
    /// recorded at creation) and parses it. Registers the versions as used
    /// by `name`; on failure, releases them.
    fn resolve(
        &self,
        name: &str,
        value: &Value,
        pinned: Option<&[StepModule]>,
    ) -> Result<(PipelineSpec, Vec<StepModule>), ManagerError> {
        let mut value = value.clone();
        let mut refs = Vec::new();
        if let Some(Value::Array(transforms)) = value.get_mut("transforms") {
            for (i, t) in transforms.iter_mut().enumerate() {
                let field = format!("transforms[{i}].module");
                let Some(Value::String(text)) = t.get("module") else {
                    continue; // the spec parser names the problem
                };
                let mut module: ModuleRef = text.parse().map_err(|_| {
                    SpecError::new(
                        &field,
                        format!(
                            "`{text}` is not a module reference: write `name` or `name@version` of a module \
                             pushed to this server (sluice module push)"
                        ),
                    )
                })?;
                if let Some(pin) = pinned.and_then(|p| p.get(i)) {
                    module.version = Some(pin.version);
                }
                let version = match module.version {
                    Some(v) => v,
                    None => match self.store.latest(&module.name) {
                        Some(meta) => meta.version,
                        None => {
                            return Err(ManagerError::Module {
                                field,
                                source: StoreError::NotFound(module.name),
                            });
                        }
                    },
                };
                let aggregate = t.get("aggregate").is_some_and(|a| !a.is_null());
                let step = match t.get("name") {
                    Some(Value::String(step)) => step.clone(),
                    _ => module.name.clone(),
                };
                if let Some(object) = t.as_object_mut() {
                    object.insert("name".into(), Value::String(step.clone()));
                }
                refs.push((i, field, module.name, version, aggregate, step));
            }
        }
        // Hold first, then check (see the module docs).
        let held: Vec<(String, u32)> = refs.iter().map(|r| (r.2.clone(), r.3)).collect();
        lock(&self.usage).insert(name.to_owned(), held);
        let result = (|| {
            let mut modules = Vec::new();
            for (i, field, module, version, aggregate, step) in refs {
                let meta = self.store.version(&module, version).map_err(|source| {
                    ManagerError::Module {
                        field: field.clone(),
                        source,
                    }
                })?;
                if aggregate != (meta.kind == Kind::Aggregate) {
                    let mismatch = if aggregate {
                        "is a transform component, but the step has an `aggregate` section"
                    } else {
                        "is an aggregate component, but the step has no `aggregate` section"
                    };
                    return Err(ManagerError::WrongKind {
                        field,
                        module: format!("{module}@{version}"),
                        mismatch,
                    });
                }
                let file = self.module_file(name, &module, version, &meta.sha256)?;
                value["transforms"][i]["module"] = Value::String(file.display().to_string());
                modules.push(StepModule {
                    step,
                    module,
                    version,
                    sha256: meta.sha256,
                });
            }
            let text = serde_json::to_string(&value).expect("a JSON value serializes");
            let confinement =
                Confinement::new(self.data.join("pipelines").join(name), self.allowed.clone());
            let spec = crate::spec::parse_confined(&text, &confinement)?;
            Ok((spec, modules))
        })();
        if result.is_err() {
            // A pipeline that exists keeps its recorded versions held.
            match pinned {
                Some(modules) => self.hold(name, modules),
                None => {
                    self.release(name);
                    let _ = fs::remove_dir_all(self.modules_dir(name));
                }
            }
        }
        result
    }

    fn modules_dir(&self, name: &str) -> PathBuf {
        self.data.join("pipelines").join(name).join(".modules")
    }

    /// `<data>/pipelines/<name>/.modules/<version>/<module>.wasm`: a hard
    /// link to (or, failing that, a copy of) the store's blob. Named after
    /// the module, because the runtime names a step's module (in logs and
    /// dead-letter headers) after its file.
    fn module_file(
        &self,
        name: &str,
        module: &str,
        version: u32,
        sha256: &str,
    ) -> Result<PathBuf, ManagerError> {
        let dir = self.modules_dir(name).join(version.to_string());
        let file = dir.join(format!("{module}.wasm"));
        let current = fs::read(&file)
            .map(|bytes| hex::encode(Sha256::digest(bytes)) == sha256)
            .unwrap_or(false);
        if !current {
            let blob = self
                .data
                .join("modules/blobs")
                .join(format!("{sha256}.wasm"));
            crate::api::store::private_dir(&dir).map_err(io_error("create", &dir))?;
            let _ = fs::remove_file(&file);
            fs::hard_link(&blob, &file)
                .or_else(|_| fs::copy(&blob, &file).map(drop))
                .map_err(io_error("link the module into", &file))?;
        }
        Ok(file)
    }

    fn hold(&self, name: &str, modules: &[StepModule]) {
        hold(&self.usage, name, modules);
    }

    fn release(&self, name: &str) {
        lock(&self.usage).remove(name);
        lock(&self.trials).remove(name);
    }

    fn set_desired(&self, entry: &Entry, desired: Desired) -> Result<(), ManagerError> {
        let mut doc = lock(&entry.doc);
        if doc.desired != desired {
            let mut updated = doc.clone();
            updated.desired = desired;
            self.persist(&updated)?;
            *doc = updated;
        }
        Ok(())
    }

    fn file(&self, name: &str) -> PathBuf {
        self.data.join("pipelines").join(format!("{name}.json"))
    }

    fn persist(&self, stored: &Stored) -> Result<(), ManagerError> {
        persist(&self.data, stored)
    }
}

/// Records that pipeline `name` uses `modules` (and nothing else).
fn hold(usage: &Usage, name: &str, modules: &[StepModule]) {
    let held = modules
        .iter()
        .map(|m| (m.module.clone(), m.version))
        .collect();
    lock(usage).insert(name.to_owned(), held);
}

impl Entry {
    fn new(stored: Stored) -> Self {
        Self {
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

    /// The current run's control, if the pipeline's thread is running.
    fn running(&self, control: &Control) -> Option<Arc<RunControl>> {
        control
            .thread
            .as_ref()
            .filter(|t| !t.is_finished())
            .and(lock(&self.run).clone())
    }

    /// Stops the run, if any, and waits for its thread.
    fn halt(&self, control: &mut Control) {
        control.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = control.thread.take() {
            // `run` catches panics, so the thread ends normally.
            let _ = thread.join();
        }
    }

    fn status(&self) -> PipelineStatus {
        let doc = lock(&self.doc).clone();
        let live = lock(&self.live).clone();
        let run = lock(&self.run).clone();
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let status = match live.status {
            Status::Running if run.as_ref().is_some_and(|r| r.is_paused()) => Status::Paused,
            status => status,
        };
        PipelineStatus {
            name: doc.name,
            status,
            desired: doc.desired,
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
