//! The pipeline manager: many pipelines in one process (`sluice serve`),
//! each running [`crate::pipeline::run`] on its own thread with its own
//! stop flag. It owns the pipeline documents, the desired state of each
//! pipeline, its restarts, pauses and module swaps, and which module
//! versions each pipeline holds; it takes modules from the
//! [`crate::registry`] and knows nothing of HTTP (the `api` module renders
//! what it returns).
//!
//! Its parts: `lifecycle.rs` (create, start, stop, delete, the run's
//! thread), `modules.rs` (module references resolved, blobs linked, versions
//! held), `status.rs` (the status document and readiness), `swap.rs`
//! (pause, resume, hot swap), `restart.rs` (back-off and the supervisor),
//! `files.rs` (the documents on disk), `spec_file.rs` (pipelines defined by
//! the operator's spec files, `sluice serve --pipeline`).
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
//! A pipeline defined by a spec file ([`SpecFile`]) is the exception: the
//! operator's file, trusted like `sluice run`'s, read at the server's start
//! and never stored (see `spec_file.rs`).
//!
//! # Promises
//!
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
//! - A pipeline document is written atomically and privately (temp file,
//!   fsync, rename; 0600): a crash leaves the old or the new one.
//!
//! # Failures
//!
//! Every operation returns a [`ManagerError`] whose message is shown to API
//! users as it is and names what is wrong: a spec field (through
//! [`SpecError`]), a pipeline name, an unknown pipeline or module version,
//! a module of the wrong kind for its step, a full server, a request that
//! needs a running pipeline, a change that belongs in a spec file, or a
//! file that could not be written. A damaged pipeline document stops
//! [`Manager::open`] with its path.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

mod files;
mod lifecycle;
mod modules;
mod restart;
mod spec_file;
mod status;
mod swap;
#[cfg(test)]
mod tests;

pub use spec_file::SpecFile;
pub use status::{NotReady, PipelineStatus};

use files::persist;
use modules::hold;

use crate::pipeline::{Control as RunControl, Summary};
use crate::registry::{IoError, ModuleStore, StoreError, validate_name};
use crate::spec::{PipelineSpec, SpecError};

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
    /// A change to a pipeline that a spec file defines: the file says what
    /// it runs. `instead` says what to do.
    #[error("pipeline `{name}` is defined by {file} (sluice serve --pipeline): {instead}")]
    DefinedByFile {
        name: String,
        file: String,
        instead: &'static str,
    },
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
        mismatch: String,
    },
    #[error(transparent)]
    Io(#[from] IoError),
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

struct Control {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    deleted: bool,
}

/// Where a pipeline's definition comes from.
enum Origin {
    /// The API: its document is stored in the data directory.
    Api,
    /// A spec file given to the server (`sluice serve --pipeline`): the
    /// spec as loaded at the server's start, never stored.
    File {
        path: PathBuf,
        spec: Box<PipelineSpec>,
    },
}

struct Entry {
    origin: Origin,
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
        crate::registry::private_dir(&dir).map_err(IoError::of("create", &dir))?;
        // Absolute: the paths of modules and checkpoints written into specs
        // must not be resolved against the spec's directory again.
        let data = fs::canonicalize(data).map_err(IoError::of("resolve", data))?;
        // An `s3://bucket/prefix` is allowed as written (for checkpoints).
        let allowed: Vec<PathBuf> = allowed
            .iter()
            .map(|dir| match dir.to_str() {
                Some(url) if url.starts_with(crate::spec::S3_SCHEME) => Ok(dir.clone()),
                _ => fs::canonicalize(dir).map_err(IoError::of("resolve", dir)),
            })
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
        for file in fs::read_dir(&dir).map_err(IoError::of("list", &dir))? {
            let path = file.map_err(IoError::of("list", &dir))?.path();
            let file_name = path.file_name().unwrap_or_default().to_string_lossy();
            if file_name.starts_with(".tmp-") {
                let _ = fs::remove_file(&path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let bytes = fs::read(&path).map_err(IoError::of("read", &path))?;
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
            entries.insert(
                stored.name.clone(),
                Arc::new(Entry::new(stored, Origin::Api)),
            );
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

    /// Records the desired state: in the stored document, or for a
    /// pipeline of a spec file only until the server stops.
    fn set_desired(&self, entry: &Entry, desired: Desired) -> Result<(), ManagerError> {
        let mut doc = lock(&entry.doc);
        if doc.desired != desired {
            let mut updated = doc.clone();
            updated.desired = desired;
            if let Origin::Api = entry.origin {
                self.persist(&updated)?;
            }
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

/// The kind of module a step of a spec document needs: an `aggregate`
/// section asks for an aggregate, a `join` section for a join.
fn step_kind(step: &serde_json::Value) -> crate::registry::Kind {
    let has = |section: &str| step.get(section).is_some_and(|a| !a.is_null());
    if has("aggregate") {
        crate::registry::Kind::Aggregate
    } else if has("join") {
        crate::registry::Kind::Join
    } else {
        crate::registry::Kind::Transform
    }
}

/// How a module of kind `module` does not fit a step needing `step`.
fn kind_mismatch(step: crate::registry::Kind, module: crate::registry::Kind) -> Option<String> {
    use crate::registry::Kind;
    let named = |k: Kind| match k {
        Kind::Transform => "a transform",
        Kind::Aggregate => "an aggregate",
        Kind::Join => "a join",
    };
    (step != module).then(|| {
        format!(
            "is {} component, but the step is {}",
            named(module),
            named(step)
        )
    })
}
