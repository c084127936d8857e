//! What belongs to a checkpoint directory as a whole: the lock that keeps a
//! second process out of it, and its lineage id.
//!
//! - `LOCK` is held with an exclusive advisory lock for as long as the
//!   store is open (the OS drops it when the process dies, even by
//!   `kill -9`). Two processes writing one directory would each truncate
//!   the other's epoch log and prune the other's checkpoints.
//! - `LINEAGE` holds a random id made when the directory is first
//!   initialised. Exactly-once ids start with it, so that two pipelines of
//!   the same name (on two servers, or deleted and created again) writing
//!   one topic never take each other's records for their own.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

use super::CheckpointError;
use super::store::{io_err, sync_dir, write_synced};

const LOCK_NAME: &str = "LOCK";
const LINEAGE_NAME: &str = "LINEAGE";
const LINEAGE_TMP: &str = ".LINEAGE.tmp";
/// Random bytes in a lineage id (written as hex).
const LINEAGE_BYTES: usize = 8;

/// The exclusive lock on a checkpoint directory, released on drop.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock on `dir` (which must exist), or fails at once if
    /// another process holds it.
    pub fn acquire(dir: &Path) -> Result<Self, CheckpointError> {
        let path = dir.join(LOCK_NAME);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("open lock file", &path))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(TryLockError::WouldBlock) => Err(CheckpointError::InUse {
                dir: dir.to_path_buf(),
            }),
            Err(TryLockError::Error(e)) => Err(io_err("lock", &path)(e)),
        }
    }
}

/// The lineage id of `dir`, made (randomly, durably) if it has none yet.
/// Only the lock holder calls this, so there is no race to create it.
pub fn lineage(dir: &Path) -> Result<String, CheckpointError> {
    let path = dir.join(LINEAGE_NAME);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            if id.len() == 2 * LINEAGE_BYTES && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(id.to_owned())
            } else {
                Err(CheckpointError::BadLineage { path })
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut bytes = [0u8; LINEAGE_BYTES];
            getrandom::fill(&mut bytes).map_err(|e| {
                io_err("make a random lineage id for", dir)(io::Error::other(e.to_string()))
            })?;
            let id = hex::encode(bytes);
            let tmp: PathBuf = dir.join(LINEAGE_TMP);
            write_synced(&tmp, &[id.as_bytes(), b"\n"])?;
            fs::rename(&tmp, &path).map_err(io_err("rename into place", &path))?;
            sync_dir(dir)?;
            Ok(id)
        }
        Err(e) => Err(io_err("read", &path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_directory_fails_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        let error = DirLock::acquire(dir.path()).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "checkpoint directory {} is in use by another process",
                dir.path().display()
            )
        );
        drop(first);
        DirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_lineage_is_made_once_and_differs_between_directories() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = lineage(a.path()).unwrap();
        assert_eq!(first.len(), 16);
        assert_eq!(lineage(a.path()).unwrap(), first);
        assert_ne!(lineage(b.path()).unwrap(), first);
        fs::write(a.path().join(LINEAGE_NAME), "not hex").unwrap();
        assert_eq!(
            lineage(a.path()).unwrap_err().to_string(),
            format!(
                "{} does not hold a lineage id (16 hex digits); restore it, or remove the directory to start over",
                a.path().join(LINEAGE_NAME).display()
            )
        );
    }
}
