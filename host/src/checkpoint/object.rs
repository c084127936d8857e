//! Checkpoints, the epoch log and the owner's generation in S3-compatible
//! object storage (`checkpoint.dir: s3://bucket/prefix`), so that the
//! processes of one pipeline on several machines share them.
//!
//! # Layout, under a task's prefix
//!
//! ```text
//! LINEAGE                               the lineage id (written once)
//! owner/<generation:020>                "<generation> <owner>", written once
//! g<generation:020>/checkpoint-<id:020>.ckpt   as in a local directory
//! g<generation:020>/epochs-<first:020>-<last:020>.log   entries as in epochs.log
//! g<generation:020>/TAKEN               the generation's starting state is whole
//! ```
//!
//! # Ownership by generation
//!
//! Object storage has no lock and no rename. A process taking a task on
//! creates `owner/<n+1>` (a conditional put that fails when the object
//! exists: two takers never get the same generation), reads the newest
//! generation whose `TAKEN` marker exists (its checkpoints and epoch log),
//! writes them again under its own `g<n+1>/`, and only then marks it
//! `TAKEN` and starts. Everything it writes later goes under its own
//! generation too. A previous owner that has not noticed it lost the task
//! sees `owner/<n+1>` before each checkpoint and (by lease) before producing,
//! and stops; whatever it still writes lands under its old generation, which
//! no later owner reads once a newer one is `TAKEN`. A taker that dies before
//! its `TAKEN` leaves nothing that counts: the next one reads the same state
//! it did.
//!
//! Each object is written whole by one put (S3 writes are atomic), and the
//! checkpoint and log formats carry their own checksums.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use futures::TryStreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::log::{LoggedEpoch, Wal, decode_all, encode_entries};
use super::store::{CheckpointError, header, validate};
use crate::spec::{S3_SCHEME, S3Spec as S3Options};

/// The runtime of the object store's requests: the pipeline's threads are
/// plain threads and wait for each request (see [`wait`]).
fn io() -> &'static tokio::runtime::Runtime {
    static IO: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    IO.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sluice-object-store")
            .enable_all()
            .build()
            .expect("cannot start the object store's runtime")
    })
}

/// Runs `future` on the object store's runtime and waits for it, from any
/// thread (one inside another runtime included).
fn wait<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    io().spawn(async move {
        let _ = tx.send(future.await);
    });
    rx.recv().expect("the object store's runtime runs")
}

/// One client per bucket and options, shared by every task.
fn client(bucket: &str, options: &S3Options) -> Result<Arc<dyn ObjectStore>, CheckpointError> {
    type Clients = Mutex<HashMap<(String, S3Options), Arc<dyn ObjectStore>>>;
    static CLIENTS: OnceLock<Clients> = OnceLock::new();
    let mut clients = CLIENTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let key = (bucket.to_owned(), options.clone());
    if let Some(client) = clients.get(&key) {
        return Ok(client.clone());
    }
    let builder = options.builder(bucket);
    let client: Arc<dyn ObjectStore> =
        Arc::new(builder.build().map_err(|error| CheckpointError::Object {
            action: "connect to",
            path: format!("{S3_SCHEME}{bucket}"),
            error: error.to_string(),
        })?);
    clients.insert(key, client.clone());
    Ok(client)
}

/// A place in a bucket: a pipeline's or a task's checkpoint directory.
#[derive(Debug, Clone)]
pub struct ObjectDir {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    root: Key,
}

impl ObjectDir {
    /// The place `url` (`s3://bucket/prefix`) names.
    pub fn open(url: &str, options: &S3Options) -> Result<Self, CheckpointError> {
        let bad = |why: &str| CheckpointError::Object {
            action: "use",
            path: url.to_owned(),
            error: why.to_owned(),
        };
        let rest = url
            .strip_prefix(S3_SCHEME)
            .ok_or_else(|| bad("not an s3:// URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("the URL names no bucket"));
        }
        let root = Key::parse(prefix.trim_end_matches('/')).map_err(|e| bad(&e.to_string()))?;
        Ok(Self {
            store: client(bucket, options)?,
            bucket: bucket.to_owned(),
            root,
        })
    }

    /// `s3://bucket/key`, for messages.
    fn url(&self, key: &Key) -> String {
        format!("{S3_SCHEME}{}/{key}", self.bucket)
    }

    fn key(&self, name: &str) -> Key {
        self.root.clone().join(name)
    }

    fn err(
        &self,
        action: &'static str,
        key: &Key,
    ) -> impl FnOnce(object_store::Error) -> CheckpointError {
        let path = self.url(key);
        move |error| CheckpointError::Object {
            action,
            path,
            error: error.to_string(),
        }
    }

    /// The object at `key`, if it exists.
    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>, CheckpointError> {
        let (store, at) = (self.store.clone(), key.clone());
        match wait(async move {
            match store.get(&at).await {
                Ok(got) => got.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        }) {
            Ok(bytes) => Ok(bytes.map(|b| b.to_vec())),
            Err(e) => Err(self.err("read", key)(e)),
        }
    }

    fn exists(&self, key: &Key) -> Result<bool, CheckpointError> {
        let (store, at) = (self.store.clone(), key.clone());
        match wait(async move { store.head(&at).await }) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err("look for", key)(e)),
        }
    }

    /// Writes `key` whole; with `create`, only if it does not exist yet
    /// (`Ok(false)` when it did).
    fn put(&self, key: &Key, bytes: Vec<u8>, create: bool) -> Result<bool, CheckpointError> {
        let (store, at) = (self.store.clone(), key.clone());
        let mode = if create {
            PutMode::Create
        } else {
            PutMode::Overwrite
        };
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        match wait(async move { store.put_opts(&at, PutPayload::from(bytes), options).await }) {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) if create => Ok(false),
            Err(e) => Err(self.err("write", key)(e)),
        }
    }

    fn delete(&self, key: &Key) -> Result<(), CheckpointError> {
        let (store, at) = (self.store.clone(), key.clone());
        match wait(async move { store.delete(&at).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("delete", key)(e)),
        }
    }

    /// The names of the objects right below `key` (not deeper).
    fn names(&self, key: &Key) -> Result<Vec<String>, CheckpointError> {
        let (store, at) = (self.store.clone(), key.clone());
        let listed = wait(async move {
            let objects: Vec<_> = store.list(Some(&at)).try_collect().await?;
            Ok::<_, object_store::Error>(objects)
        })
        .map_err(self.err("list", key))?;
        let depth = key.parts().count() + 1;
        Ok(listed
            .into_iter()
            .filter(|o| o.location.parts().count() == depth)
            .filter_map(|o| o.location.filename().map(str::to_owned))
            .collect())
    }

    /// The names of the "directories" right below `key`.
    fn dirs(&self, key: &Key) -> Result<Vec<String>, CheckpointError> {
        let (store, at) = (self.store.clone(), key.clone());
        let listed = wait(async move { store.list_with_delimiter(Some(&at)).await })
            .map_err(self.err("list", key))?;
        Ok(listed
            .common_prefixes
            .into_iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .collect())
    }

    /// A place below this one.
    pub fn child(&self, name: &str) -> Self {
        Self {
            root: self.key(name),
            ..self.clone()
        }
    }

    /// Whether the place holds a lineage (it was a checkpoint directory).
    pub fn has_lineage(&self) -> Result<bool, CheckpointError> {
        self.exists(&self.key(LINEAGE))
    }

    /// Whether anything lies below `name`.
    pub fn has_below(&self, name: &str) -> Result<bool, CheckpointError> {
        Ok(!self.dirs(&self.key(name))?.is_empty())
    }
}

const LINEAGE: &str = "LINEAGE";
const OWNER: &str = "owner";
const TAKEN: &str = "TAKEN";
/// How many generations a taker tries past the newest it listed (others
/// taking the task at the same moment).
const TAKE_TRIES: u64 = 16;

/// What the previous owner left: the checkpoints (newest first) and the
/// epoch log.
#[derive(Debug, Default)]
pub struct Taken {
    pub checkpoints: Vec<(u64, Vec<u8>)>,
    /// Checkpoints that exist but cannot be used, with what is wrong.
    pub problems: Vec<String>,
    pub epochs: Vec<LoggedEpoch>,
}

/// This process's generation of a task kept in object storage: where its
/// checkpoints and epoch log go, and the fence check.
#[derive(Debug)]
pub struct ObjectTask {
    dir: ObjectDir,
    generation: u64,
    owner: String,
    lineage: String,
    keep: usize,
    /// Checkpoint ids written under this generation, oldest first.
    kept: Mutex<Vec<u64>>,
    /// Epoch log objects of this generation: (first, last) epoch.
    logs: Mutex<Vec<(u64, u64)>>,
    last_epoch: Mutex<Option<u64>>,
}

fn gen_name(generation: u64) -> String {
    format!("g{generation:020}")
}

fn parse_digits(s: &str) -> Option<u64> {
    (s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

fn checkpoint_name(id: u64) -> String {
    format!("checkpoint-{id:020}.ckpt")
}

fn log_name(first: u64, last: u64) -> String {
    format!("epochs-{first:020}-{last:020}.log")
}

fn parse_log_name(name: &str) -> Option<(u64, u64)> {
    let (first, last) = name
        .strip_prefix("epochs-")?
        .strip_suffix(".log")?
        .split_once('-')?;
    Some((parse_digits(first)?, parse_digits(last)?))
}

impl ObjectTask {
    /// Takes the task at `dir` on for `owner`: a new generation, and the
    /// state of the newest complete one before it, written again under the
    /// new one (see the module docs).
    pub fn take(
        dir: ObjectDir,
        owner: &str,
        keep: usize,
    ) -> Result<(Arc<Self>, Taken), CheckpointError> {
        if keep == 0 {
            return Err(CheckpointError::ZeroKeep {
                dir: PathBuf::from(dir.url(&dir.root)),
            });
        }
        let lineage = lineage(&dir)?;
        let owners = dir.key(OWNER);
        let newest = dir
            .names(&owners)?
            .iter()
            .filter_map(|n| parse_digits(n))
            .max()
            .unwrap_or(0);
        let mut generation = newest + 1;
        loop {
            let key = owners.clone().join(format!("{generation:020}").as_str());
            if dir.put(&key, format!("{generation} {owner}\n").into_bytes(), true)? {
                break;
            }
            generation += 1;
            if generation > newest + TAKE_TRIES {
                return Err(CheckpointError::Object {
                    action: "take over",
                    path: dir.url(&dir.root),
                    error: format!("{TAKE_TRIES} other processes took it at the same time"),
                });
            }
        }
        let mut older: Vec<u64> = dir
            .dirs(&dir.root)?
            .iter()
            .filter_map(|n| parse_digits(n.strip_prefix('g')?))
            .filter(|&g| g < generation)
            .collect();
        older.sort_unstable_by(|a, b| b.cmp(a));
        let mut source = None;
        for &g in &older {
            if dir.exists(&dir.key(&gen_name(g)).join(TAKEN))? {
                source = Some(g);
                break;
            }
        }
        let taken = match source {
            Some(g) => read_generation(&dir, g, keep)?,
            None => Taken::default(),
        };
        let task = Self {
            dir,
            generation,
            owner: owner.to_owned(),
            lineage,
            keep,
            kept: Mutex::default(),
            logs: Mutex::default(),
            last_epoch: Mutex::new(taken.epochs.last().map(|e| e.0)),
        };
        // Written again under this generation, oldest first, then marked
        // whole: from here on this generation is the one to read.
        for (id, body) in taken.checkpoints.iter().rev() {
            task.write_checkpoint(*id, body)?;
        }
        if let (Some(first), Some(last)) = (taken.epochs.first(), taken.epochs.last()) {
            let entries: Vec<(u64, &[u8])> = taken
                .epochs
                .iter()
                .map(|(n, b)| (*n, b.as_slice()))
                .collect();
            let key = task.in_generation(&log_name(first.0, last.0));
            task.dir.put(&key, encode_entries(&entries), false)?;
            lock(&task.logs).push((first.0, last.0));
        }
        task.dir
            .put(&task.in_generation(TAKEN), Vec::new(), false)?;
        tracing::debug!(dir = %task.describe(), from = ?source, "task taken over");
        // What no owner reads any more.
        for g in older.into_iter().filter(|&g| Some(g) != source) {
            task.remove_generation(g);
        }
        Ok((Arc::new(task), taken))
    }

    fn in_generation(&self, name: &str) -> Key {
        self.dir.key(&gen_name(self.generation)).join(name)
    }

    /// Removes what an old generation left (best effort: a failure leaves
    /// garbage, which the next taker tries again).
    fn remove_generation(&self, generation: u64) {
        let at = self.dir.key(&gen_name(generation));
        match self.dir.names(&at) {
            Ok(names) => {
                for name in names {
                    let _ = self.dir.delete(&at.clone().join(name.as_str()));
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot list an old generation to remove it"),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn lineage(&self) -> &str {
        &self.lineage
    }

    /// `s3://bucket/prefix@generation`, for logs.
    pub fn describe(&self) -> String {
        format!("{}@{}", self.dir.url(&self.dir.root), self.generation)
    }

    /// The URL of the generation objects, as fencing errors name it.
    pub fn owners_url(&self) -> String {
        self.dir.url(&self.dir.key(OWNER))
    }

    /// The newer generation that took the task over, if any: `owner/<n+1>`
    /// exists (each taker creates the one after the newest it sees).
    pub fn newer(&self) -> Result<Option<(u64, String)>, CheckpointError> {
        let next = self.generation + 1;
        let key = self.dir.key(OWNER).join(format!("{next:020}").as_str());
        Ok(self.dir.get(&key)?.map(|bytes| {
            let text = String::from_utf8_lossy(&bytes);
            let by = text
                .trim_end()
                .split_once(' ')
                .map_or_else(|| text.trim_end().to_owned(), |(_, o)| o.to_owned());
            (next, by)
        }))
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    fn write_checkpoint(&self, id: u64, body: &[u8]) -> Result<(), CheckpointError> {
        let mut kept = lock(&self.kept);
        if let Some(&existing) = kept.last()
            && id <= existing
        {
            return Err(CheckpointError::IdNotIncreasing {
                id,
                existing,
                path: PathBuf::from(
                    self.dir
                        .url(&self.in_generation(&checkpoint_name(existing))),
                ),
            });
        }
        let mut bytes = header(id, body).to_vec();
        bytes.extend_from_slice(body);
        self.dir
            .put(&self.in_generation(&checkpoint_name(id)), bytes, false)?;
        kept.push(id);
        while kept.len() > self.keep {
            let old = kept.remove(0);
            if let Err(e) = self.dir.delete(&self.in_generation(&checkpoint_name(old))) {
                tracing::warn!(error = %e, "cannot remove an old checkpoint (the next save tries again)");
                kept.insert(0, old);
                break;
            }
        }
        Ok(())
    }
}

/// The checkpoints of a task in object storage.
#[derive(Debug)]
pub struct ObjectCheckpoints(pub Arc<ObjectTask>);

impl super::CheckpointStore for ObjectCheckpoints {
    fn save(&mut self, id: u64, body: &[u8]) -> Result<(), CheckpointError> {
        self.0.write_checkpoint(id, body)
    }

    /// Read at the take-over (see [`Taken`]); a generation is written by
    /// its owner only, so there is nothing newer to read.
    fn load_latest(&self) -> Result<Option<(u64, Vec<u8>)>, CheckpointError> {
        let Some(&id) = lock(&self.0.kept).last() else {
            return Ok(None);
        };
        let key = self.0.in_generation(&checkpoint_name(id));
        let data = self.0.dir.get(&key)?.unwrap_or_default();
        validate(data, id)
            .map(|body| Some((id, body)))
            .map_err(|problem| CheckpointError::NoValidCheckpoint {
                dir: PathBuf::from(self.0.dir.url(&key)),
                problems: vec![problem],
            })
    }
}

/// The epoch log of a task in object storage: one object per group of
/// entries appended together.
#[derive(Debug)]
pub struct ObjectLog(pub Arc<ObjectTask>);

impl Wal for ObjectLog {
    fn append_all(&mut self, entries: &[(u64, &[u8])]) -> Result<(), CheckpointError> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(());
        };
        let task = &self.0;
        let mut newest = lock(&task.last_epoch);
        let mut before = *newest;
        for &(epoch, _) in entries {
            if let Some(last) = before
                && epoch <= last
            {
                return Err(CheckpointError::EpochNotIncreasing {
                    epoch,
                    last,
                    path: PathBuf::from(task.dir.url(&task.in_generation("epochs-"))),
                });
            }
            before = Some(epoch);
        }
        let key = task.in_generation(&log_name(first.0, last.0));
        task.dir.put(&key, encode_entries(entries), false)?;
        lock(&task.logs).push((first.0, last.0));
        *newest = Some(last.0);
        Ok(())
    }

    fn truncate_through(&mut self, through: u64) -> Result<(), CheckpointError> {
        let task = &self.0;
        let mut logs = lock(&task.logs);
        while let Some(&(first, last)) = logs.first()
            && last <= through
        {
            task.dir
                .delete(&task.in_generation(&log_name(first, last)))?;
            logs.remove(0);
        }
        Ok(())
    }
}

/// The lineage id of `dir`, made (randomly) if it has none yet; two
/// processes making it at once agree on the first one written.
fn lineage(dir: &ObjectDir) -> Result<String, CheckpointError> {
    let key = dir.key(LINEAGE);
    let read = |bytes: Vec<u8>| {
        let id = String::from_utf8_lossy(&bytes).trim().to_owned();
        if id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(id)
        } else {
            Err(CheckpointError::BadLineage {
                path: PathBuf::from(dir.url(&key)),
            })
        }
    };
    if let Some(bytes) = dir.get(&key)? {
        return read(bytes);
    }
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| CheckpointError::Object {
        action: "make a random lineage id for",
        path: dir.url(&dir.root),
        error: e.to_string(),
    })?;
    let id = hex::encode(bytes);
    if dir.put(&key, format!("{id}\n").into_bytes(), true)? {
        return Ok(id);
    }
    read(dir.get(&key)?.unwrap_or_default())
}

/// The checkpoints (valid ones, newest first, at most `keep`) and the
/// epoch log of generation `g`.
fn read_generation(dir: &ObjectDir, g: u64, keep: usize) -> Result<Taken, CheckpointError> {
    let at = dir.key(&gen_name(g));
    let mut ids = Vec::new();
    let mut logs = BTreeMap::new();
    for name in dir.names(&at)? {
        if let Some(id) = name
            .strip_prefix("checkpoint-")
            .and_then(|n| n.strip_suffix(".ckpt"))
            .and_then(parse_digits)
        {
            ids.push(id);
        } else if let Some((first, last)) = parse_log_name(&name) {
            logs.insert(first, (last, name));
        }
    }
    ids.sort_unstable_by(|a, b| b.cmp(a));
    let mut taken = Taken::default();
    for id in ids {
        if taken.checkpoints.len() == keep {
            break;
        }
        let key = at.clone().join(checkpoint_name(id).as_str());
        let data = dir.get(&key)?.unwrap_or_default();
        match validate(data, id) {
            Ok(body) => taken.checkpoints.push((id, body)),
            Err(problem) => {
                tracing::warn!(path = %dir.url(&key), %problem, "skipping invalid checkpoint");
                taken.problems.push(format!("{}: {problem}", dir.url(&key)));
            }
        }
    }
    for (_, name) in logs.values() {
        let key = at.clone().join(name.as_str());
        let data = dir.get(&key)?.unwrap_or_default();
        let (entries, problem) = decode_all(&data, taken.epochs.last().map(|e| e.0));
        taken.epochs.extend(entries);
        if let Some(problem) = problem {
            // Objects are written whole: this one was damaged after.
            tracing::warn!(path = %dir.url(&key), %problem, "the epoch log is damaged here; the epochs after it are dropped");
            break;
        }
    }
    Ok(taken)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
