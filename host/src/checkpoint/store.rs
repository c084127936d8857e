//! Durable, checksummed checkpoints, one file each in a local directory.
//!
//! # Format
//!
//! `checkpoint-{id:020}.ckpt` (zero-padded, so name order is id order):
//! the magic `SLUICECK`, the format version (u32 LE, 1), the id (u64 LE,
//! equal to the one in the name), the body length (u64 LE, equal to the
//! file size minus this 32-byte header), the crc32 of the body (u32 LE),
//! then the body. A file that fails any of these checks is invalid.
//!
//! # What a crash leaves behind
//!
//! [`LocalDirStore::save`] writes `.checkpoint-{id:020}.ckpt.tmp`, fsyncs
//! it, renames it to its final name, fsyncs the directory, then prunes. A
//! crash
//! - before the rename leaves at most the temp file, which the next
//!   [`LocalDirStore::open`] removes: the checkpoint is absent, the previous
//!   one is still the latest;
//! - between the rename and the directory fsync leaves either no checkpoint
//!   `id` or the whole of it (its bytes were durable before the rename);
//! - while pruning leaves old checkpoints behind, pruned by the next save.
//!
//! So a crash never leaves a partial file under a final name, and a
//! checkpoint is durable once `save` returns. A file damaged any other way
//! (bit rot, a bad copy, truncation by hand) fails validation and
//! [`CheckpointStore::load_latest`] skips it with a warning, falling back to
//! an older one: the host must then make sure it can replay from there.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::dir::{DirLock, lineage};

const MAGIC: &[u8; 8] = b"SLUICECK";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 32;
const PREFIX: &str = "checkpoint-";
const SUFFIX: &str = ".ckpt";
const TMP_PREFIX: &str = ".checkpoint-";
const TMP_SUFFIX: &str = ".tmp";

/// What went wrong with a checkpoint or the epoch log. Only [`Io`] may go
/// away on a retry (see [`CheckpointError::is_retryable`]).
///
/// [`Io`]: CheckpointError::Io
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The I/O error is part of the message rather than a `source`, so
    /// that an error chain does not print it twice.
    #[error("cannot {action} {path}: {error}")]
    Io {
        action: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    /// A request to object storage failed (after the client's retries).
    #[error("cannot {action} {path}: {error}")]
    Object {
        action: &'static str,
        path: String,
        error: String,
    },
    #[error("checkpoint store {dir}: keep must be at least 1")]
    ZeroKeep { dir: PathBuf },
    /// Checkpoints exist but none can be trusted: the host refuses to start
    /// rather than silently reprocess from the beginning or skip data.
    #[error("no valid checkpoint in {dir}, refusing to start: {}", .problems.join("; "))]
    NoValidCheckpoint { dir: PathBuf, problems: Vec<String> },
    #[error(
        "cannot save checkpoint {id}: {path} is valid checkpoint {existing}, ids must increase"
    )]
    IdNotIncreasing {
        id: u64,
        existing: u64,
        path: PathBuf,
    },
    #[error("cannot append epoch {epoch} to {path} after epoch {last}: epochs must increase")]
    EpochNotIncreasing {
        epoch: u64,
        last: u64,
        path: PathBuf,
    },
    #[error("cannot append epoch {epoch} to {path}: {len} bytes is over the 4 GiB entry limit")]
    EntryTooLarge {
        epoch: u64,
        len: usize,
        path: PathBuf,
    },
    /// A write or fsync failed in a way that leaves the file's state unknown;
    /// reopening reads back what is really there.
    #[error("epoch log {path} is unusable after a failed write or fsync; reopen it")]
    LogPoisoned { path: PathBuf },
    /// Another process holds the directory's lock.
    #[error("checkpoint directory {dir} is in use by another process")]
    InUse { dir: PathBuf },
    #[error(
        "{path} does not hold a lineage id (16 hex digits); restore it, or remove the directory to start over"
    )]
    BadLineage { path: PathBuf },
}

impl CheckpointError {
    /// Whether the same call may succeed later (a full disk, a transient I/O
    /// error); the other errors are bugs or damaged data.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Io { .. } | Self::Object { .. })
    }
}

/// Maps an I/O error to [`CheckpointError::Io`] naming `path`.
pub(super) fn io_err(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(io::Error) -> CheckpointError {
    let path = path.to_path_buf();
    move |error| CheckpointError::Io {
        action,
        path,
        error,
    }
}

/// Makes renames and creations in `dir` durable. (Windows cannot open a
/// directory as a file, so there this does nothing.)
pub(super) fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    if cfg!(windows) {
        return Ok(());
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Where checkpoints live: [`LocalDirStore`], or `ObjectCheckpoints` in
/// object storage (see `object.rs`).
pub trait CheckpointStore: Send + std::fmt::Debug {
    /// Persists checkpoint `id` (ids strictly increase) atomically: after a
    /// crash at any instant, either the whole checkpoint is there and valid,
    /// or it is absent/invalid and detected as such.
    fn save(&mut self, id: u64, body: &[u8]) -> Result<(), CheckpointError>;

    /// The newest valid checkpoint (id, body). Corrupt or truncated newer
    /// ones are skipped with a `warn` naming the file and what is wrong.
    /// `Ok(None)` if there are no checkpoints at all; if checkpoint files
    /// exist but none is valid, [`CheckpointError::NoValidCheckpoint`].
    fn load_latest(&self) -> Result<Option<(u64, Vec<u8>)>, CheckpointError>;
}

/// Checkpoints as files in a local directory, the newest `keep` kept. A
/// file that cannot be read at all is an error, not skipped: an I/O error
/// may pass, and falling back past it would lose a good checkpoint.
#[derive(Debug)]
pub struct LocalDirStore {
    dir: PathBuf,
    keep: usize,
    /// Held while the store is open: one process per directory.
    _lock: DirLock,
    lineage: String,
}

impl LocalDirStore {
    /// Creates the directory if needed; removes leftover temp files of
    /// interrupted saves. `keep` (at least 1) is how many checkpoints to keep.
    pub fn open(dir: impl Into<PathBuf>, keep: usize) -> Result<Self, CheckpointError> {
        let dir = dir.into();
        if keep == 0 {
            return Err(CheckpointError::ZeroKeep { dir });
        }
        fs::create_dir_all(&dir).map_err(io_err("create checkpoint directory", &dir))?;
        // Before anything is touched: the temp files may be another
        // process's saves in progress.
        let lock = DirLock::acquire(&dir)?;
        let lineage = lineage(&dir)?;
        for name in file_names(&dir)? {
            if name.starts_with(TMP_PREFIX) && name.ends_with(TMP_SUFFIX) {
                let path = dir.join(&name);
                fs::remove_file(&path).map_err(io_err("remove leftover temp file", &path))?;
                let path = path.display();
                tracing::info!(%path, "removed the temp file of an interrupted checkpoint save");
            }
        }
        Ok(Self {
            dir,
            keep,
            _lock: lock,
            lineage,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory's lineage id (made once per directory, kept in its `LINEAGE` file).
    pub fn lineage(&self) -> &str {
        &self.lineage
    }

    fn path_of(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{PREFIX}{id:020}{SUFFIX}"))
    }

    /// The checkpoint files by their names' ids, oldest first.
    fn list(&self) -> Result<Vec<(u64, PathBuf)>, CheckpointError> {
        let mut files: Vec<_> = file_names(&self.dir)?
            .into_iter()
            .filter_map(|name| parse_name(&name).map(|id| (id, self.dir.join(name))))
            .collect();
        files.sort_unstable();
        Ok(files)
    }

    /// Removes, after checkpoint `id` is saved, the files newer than it (all
    /// invalid: `save` checked) and all but the newest `keep` up to it. The
    /// checkpoint is saved whatever happens here, so failures only warn.
    fn prune(&self, id: u64, before: &[(u64, PathBuf)]) {
        let older = before.iter().filter(|(other, _)| *other < id);
        let stale = older.clone().count().saturating_sub(self.keep - 1);
        let newer = before.iter().filter(|(other, _)| *other > id);
        for (other, path) in older.take(stale).chain(newer) {
            if *other > id {
                let path = path.display();
                tracing::warn!(%path, id, "removing invalid checkpoint newer than the one saved");
            }
            if let Err(error) = fs::remove_file(path) {
                tracing::warn!(path = %path.display(), %error, "cannot remove old checkpoint");
            }
        }
    }
}

impl CheckpointStore for LocalDirStore {
    fn save(&mut self, id: u64, body: &[u8]) -> Result<(), CheckpointError> {
        let before = self.list()?;
        for (other, path) in before.iter().filter(|(other, _)| *other >= id) {
            if read_checkpoint(path, *other)?.is_ok() {
                return Err(CheckpointError::IdNotIncreasing {
                    id,
                    existing: *other,
                    path: path.clone(),
                });
            }
        }
        let path = self.path_of(id);
        let tmp = self
            .dir
            .join(format!("{TMP_PREFIX}{id:020}{SUFFIX}{TMP_SUFFIX}"));
        let written = write_synced(&tmp, &[&header(id, body), body])
            .and_then(|()| fs::rename(&tmp, &path).map_err(io_err("rename into place", &path)));
        if let Err(error) = written {
            let _ = fs::remove_file(&tmp);
            return Err(error);
        }
        sync_dir(&self.dir)?;
        self.prune(id, &before);
        Ok(())
    }

    fn load_latest(&self) -> Result<Option<(u64, Vec<u8>)>, CheckpointError> {
        let files = self.list()?;
        if files.is_empty() {
            return Ok(None);
        }
        let mut problems = Vec::new();
        for (id, path) in files.into_iter().rev() {
            match read_checkpoint(&path, id)? {
                Ok(body) => return Ok(Some((id, body))),
                Err(problem) => {
                    tracing::warn!(path = %path.display(), %problem, "skipping invalid checkpoint");
                    problems.push(format!("{}: {problem}", path.display()));
                }
            }
        }
        Err(CheckpointError::NoValidCheckpoint {
            dir: self.dir.clone(),
            problems,
        })
    }
}

/// Writes `parts` to a new file at `path` and fsyncs it.
pub(super) fn write_synced(path: &Path, parts: &[&[u8]]) -> Result<(), CheckpointError> {
    let mut file = File::create(path).map_err(io_err("create", path))?;
    for part in parts {
        file.write_all(part).map_err(io_err("write", path))?;
    }
    file.sync_all().map_err(io_err("fsync", path))
}

fn file_names(dir: &Path) -> Result<Vec<String>, CheckpointError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list directory", dir))? {
        let entry = entry.map_err(io_err("list directory", dir))?;
        // Names that are not UTF-8 are none of ours.
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

/// The id in a checkpoint file name.
fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(super) fn header(id: u64, body: &[u8]) -> [u8; HEADER_LEN] {
    let mut header = [0; HEADER_LEN];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[12..20].copy_from_slice(&id.to_le_bytes());
    header[20..28].copy_from_slice(&(body.len() as u64).to_le_bytes());
    header[28..].copy_from_slice(&crc32fast::hash(body).to_le_bytes());
    header
}

/// Reads checkpoint `id` at `path`: its body, or what is wrong with it.
fn read_checkpoint(path: &Path, id: u64) -> Result<Result<Vec<u8>, String>, CheckpointError> {
    let data = fs::read(path).map_err(io_err("read checkpoint", path))?;
    Ok(validate(data, id))
}

pub(super) fn validate(mut data: Vec<u8>, id: u64) -> Result<Vec<u8>, String> {
    if data.len() < HEADER_LEN {
        return Err(format!(
            "truncated: {} bytes, shorter than the {HEADER_LEN}-byte header",
            data.len()
        ));
    }
    let u32_at = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"));
    let (version, header_id, len, crc) = (u32_at(8), u64_at(12), u64_at(20), u32_at(28));
    let body = &data[HEADER_LEN..];
    if &data[..8] != MAGIC {
        return Err("bad magic: not a Sluice checkpoint".into());
    }
    if version != VERSION {
        return Err(format!(
            "format version {version}, this build reads version {VERSION}"
        ));
    }
    if header_id != id {
        return Err(format!(
            "header says checkpoint {header_id}, the file name says {id}"
        ));
    }
    if len != body.len() as u64 {
        return Err(format!(
            "header says a {len}-byte body, the file holds {} bytes after the header (truncated or padded)",
            body.len()
        ));
    }
    let actual = crc32fast::hash(body);
    if actual != crc {
        return Err(format!(
            "checksum mismatch: header {crc:#010x}, body {actual:#010x} (corrupt body)"
        ));
    }
    data.drain(..HEADER_LEN);
    Ok(data)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn store(keep: usize) -> (tempfile::TempDir, LocalDirStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDirStore::open(dir.path().join("ckpt"), keep).unwrap();
        (dir, store)
    }

    fn name(id: u64) -> String {
        format!("checkpoint-{id:020}.ckpt")
    }

    /// The directory's files, less its lock and lineage.
    fn names(store: &LocalDirStore) -> Vec<String> {
        let mut names = file_names(store.dir()).unwrap();
        names.retain(|n| n != "LOCK" && n != "LINEAGE");
        names.sort();
        names
    }

    /// Closes `store` (releasing its lock) and opens its directory again.
    fn reopen(store: LocalDirStore, keep: usize) -> LocalDirStore {
        let dir = store.dir().to_path_buf();
        drop(store);
        LocalDirStore::open(dir, keep).unwrap()
    }

    fn damage(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
        let mut data = fs::read(path).unwrap();
        f(&mut data);
        fs::write(path, data).unwrap();
    }

    /// Runs `f` and returns what it logged.
    fn logs<T>(f: impl FnOnce() -> T) -> (T, String) {
        let file = Arc::new(tempfile::NamedTempFile::new().unwrap());
        let subscriber = tracing_subscriber::fmt()
            .with_writer(file.clone())
            .with_ansi(false)
            .finish();
        let out = tracing::subscriber::with_default(subscriber, f);
        (out, fs::read_to_string(file.path()).unwrap())
    }

    #[test]
    fn saves_and_loads_across_reopen() {
        let (_tmp, mut store) = store(3);
        assert_eq!(store.load_latest().unwrap(), None);
        store.save(1, b"first").unwrap();
        store.save(7, b"").unwrap();
        store.save(9, b"ninth").unwrap();
        assert_eq!(store.load_latest().unwrap(), Some((9, b"ninth".to_vec())));
        let store = reopen(store, 3);
        assert_eq!(store.load_latest().unwrap(), Some((9, b"ninth".to_vec())));
        assert_eq!(names(&store), [name(1), name(7), name(9)]);
        assert_eq!(name(9), "checkpoint-00000000000000000009.ckpt");
        assert_eq!(fs::metadata(store.path_of(9)).unwrap().len(), 32 + 5);
    }

    #[test]
    fn keeps_only_the_newest_k() {
        let (_tmp, mut store) = store(2);
        for id in 1..=5 {
            store.save(id, &id.to_le_bytes()).unwrap();
        }
        assert_eq!(names(&store), [name(4), name(5)]);
    }

    #[test]
    fn falls_back_past_a_damaged_newest_with_a_warning() {
        type Damage = fn(&mut Vec<u8>);
        let damages: [(Damage, &str); 5] = [
            (
                |d| d.truncate(d.len() - 1),
                "header says a 3-byte body, the file holds 2",
            ),
            (
                |d| d.push(0),
                "the file holds 4 bytes after the header (truncated or padded)",
            ),
            (|d| d[HEADER_LEN + 1] ^= 0x40, "checksum mismatch"),
            (
                |d| d[12] = 1,
                "header says checkpoint 1, the file name says 2",
            ),
            (|d| d[8] = 2, "format version 2, this build reads version 1"),
        ];
        for (damaged, problem) in damages {
            let (_tmp, mut store) = store(3);
            store.save(1, b"one").unwrap();
            store.save(2, b"two").unwrap();
            damage(&store.path_of(2), damaged);
            let (latest, logged) = logs(|| store.load_latest());
            assert_eq!(latest.unwrap(), Some((1, b"one".to_vec())), "{problem}");
            assert!(logged.contains("WARN"), "{logged}");
            assert!(
                logged.contains(&name(2)) && logged.contains(problem),
                "{logged}"
            );
        }
    }

    #[test]
    fn refuses_when_every_checkpoint_is_corrupt() {
        let (_tmp, mut store) = store(3);
        store.save(1, b"one").unwrap();
        store.save(2, b"two").unwrap();
        damage(&store.path_of(1), |data| data[0] = b'X');
        damage(&store.path_of(2), |data| data.truncate(10));
        let err = store.load_latest().unwrap_err();
        let CheckpointError::NoValidCheckpoint { dir, problems } = &err else {
            panic!("expected NoValidCheckpoint, got {err}");
        };
        assert_eq!(dir, store.dir());
        let [newest, oldest] = &problems[..] else {
            panic!("{problems:?}")
        };
        let truncated = "truncated: 10 bytes, shorter than the 32-byte header";
        assert!(
            newest.ends_with(&format!("{}: {truncated}", name(2))),
            "{newest}"
        );
        let bad_magic = "bad magic: not a Sluice checkpoint";
        assert!(
            oldest.ends_with(&format!("{}: {bad_magic}", name(1))),
            "{oldest}"
        );
        assert!(err.to_string().contains("refusing to start"), "{err}");
    }

    #[test]
    fn removes_leftover_temp_files_at_open() {
        let (_tmp, store) = store(1);
        let leftover = format!(".{}.tmp", name(3));
        fs::write(store.dir().join(leftover), b"half").unwrap();
        fs::write(store.dir().join("notes.txt"), b"not ours").unwrap();
        let store = reopen(store, 1);
        assert_eq!(names(&store), ["notes.txt"]);
        assert_eq!(store.load_latest().unwrap(), None);
    }

    #[test]
    fn ids_must_increase_but_invalid_newer_files_give_way() {
        let (_tmp, mut store) = store(3);
        for id in 1..=3 {
            store.save(id, b"x").unwrap();
        }
        let err = store.save(3, b"again").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot save checkpoint 3: {} is valid checkpoint 3, ids must increase",
                store.path_of(3).display()
            )
        );
        // Restored from 1 past a corrupt 2 and 3: saving 2 replaces 2 and drops 3.
        damage(&store.path_of(2), |data| data.truncate(20));
        damage(&store.path_of(3), |data| data[HEADER_LEN] ^= 1);
        assert_eq!(store.load_latest().unwrap(), Some((1, b"x".to_vec())));
        store.save(2, b"redo").unwrap();
        assert_eq!(store.load_latest().unwrap(), Some((2, b"redo".to_vec())));
        assert_eq!(names(&store), [name(1), name(2)]);
    }

    #[test]
    fn keep_zero_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = LocalDirStore::open(dir.path(), 0).unwrap_err();
        assert!(matches!(err, CheckpointError::ZeroKeep { .. }) && !err.is_retryable());
    }
}
