//! Fencing: which process owns a task's checkpoint directory now.
//!
//! The consumer group decides who owns a task, but a process that was
//! paused past its session timeout (a long stall, SIGSTOP, a network
//! partition) does not know at once that the group gave its tasks away,
//! and may go on writing. Each time a process takes a task on, it raises
//! the task's *generation* in the directory's `OWNER` file (replaced
//! atomically), before it waits for the directory's lock. The holder of an
//! older generation checks the file before each checkpoint and before
//! producing a batch's records, and drops the task when it sees a newer
//! one: nothing it would write after that reaches the outputs or the store.
//!
//! The check before producing reads the file at most every [`LEASE`]: a
//! process can only have lost a task after missing the group's heartbeats
//! for a whole session timeout (seconds), and the monotonic clock runs on
//! while a process is stopped, so the first check after a pause that long
//! always reads the file again.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::store::{io_err, sync_dir, write_synced};
use super::{CheckpointError, ObjectTask};

const OWNER_NAME: &str = "OWNER";

/// How long a check of the generation stands before producing.
pub const LEASE: Duration = Duration::from_millis(1000);

/// Where the generation is kept.
#[derive(Debug)]
enum Place {
    /// The `OWNER` file of a local (or shared) directory.
    File,
    /// `owner/<generation>` objects (see `object.rs`).
    Object(Arc<ObjectTask>),
}

/// This process's ownership of one task's checkpoint directory.
#[derive(Debug)]
pub struct Fence {
    place: Place,
    /// The `OWNER` file, or the URL of the `owner/` objects.
    path: PathBuf,
    generation: u64,
    owner: String,
    /// When the fence was taken: [`Self::verified`] counts from it.
    base: Instant,
    /// When the file last said the generation is still ours, in
    /// nanoseconds after `base` (cheap to read for every record).
    verified: AtomicU64,
}

/// A newer owner took the task over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "fenced off: {path} says generation {now} (owner {by}) took the task over from this \
     process's generation {held}; it was out of the group for longer than the session timeout \
     (paused or cut off), and drops the task without writing more"
)]
pub struct Fenced {
    pub path: PathBuf,
    pub held: u64,
    pub now: u64,
    pub by: String,
}

impl Fence {
    /// Takes `dir` (created if missing) over for `owner`: the generation
    /// one above the last, durably.
    pub fn take(dir: &Path, owner: &str) -> Result<Self, CheckpointError> {
        fs::create_dir_all(dir).map_err(io_err("create checkpoint directory", dir))?;
        let path = dir.join(OWNER_NAME);
        let last = read(&path)?.map_or(0, |(generation, _)| generation);
        let generation = last + 1;
        // A name of its own: two processes taking the task at once (the
        // group gives it to one) never write the same temporary file.
        let tmp = dir.join(format!(".OWNER.{generation}.{}.tmp", std::process::id()));
        write_synced(&tmp, &[format!("{generation} {owner}\n").as_bytes()])?;
        fs::rename(&tmp, &path).map_err(io_err("rename into place", &path))?;
        sync_dir(dir)?;
        tracing::debug!(dir = %dir.display(), generation, "task taken over");
        Ok(Self {
            place: Place::File,
            path,
            generation,
            owner: owner.to_owned(),
            base: Instant::now(),
            verified: AtomicU64::new(0),
        })
    }

    /// The generation `task` took in object storage.
    pub fn object(task: Arc<ObjectTask>) -> Self {
        Self {
            path: PathBuf::from(task.owners_url()),
            generation: task.generation(),
            owner: task.owner().to_owned(),
            place: Place::Object(task),
            base: Instant::now(),
            verified: AtomicU64::new(0),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The directory and generation, as `<dir>@<generation>` (for logs).
    pub fn describe(&self) -> String {
        match &self.place {
            Place::File => {
                let dir = self.path.parent().unwrap_or(&self.path);
                format!("{}@{}", dir.display(), self.generation)
            }
            Place::Object(task) => task.describe(),
        }
    }

    /// Reads the file (or looks for the next generation's object): an
    /// error if a newer generation took over (or it cannot be read, which
    /// is not ours to write past either).
    pub fn check(&self) -> Result<(), Fenced> {
        let current = match &self.place {
            Place::File => match read(&self.path) {
                Ok(Some(current)) => current,
                Ok(None) => (0, "nobody (the file is gone)".to_owned()),
                Err(e) => (u64::MAX, format!("unknown ({e})")),
            },
            Place::Object(task) => match task.newer() {
                Ok(None) => (self.generation, self.owner.clone()),
                Ok(Some(newer)) => newer,
                Err(e) => (u64::MAX, format!("unknown ({e})")),
            },
        };
        if current.0 == self.generation && current.1 == self.owner {
            self.verified.store(self.now(), Ordering::Relaxed);
            return Ok(());
        }
        Err(Fenced {
            path: self.path.clone(),
            held: self.generation,
            now: current.0,
            by: current.1,
        })
    }

    /// [`Self::check`], unless the last one was less than [`LEASE`] ago:
    /// a read of the clock, cheap enough for every record.
    pub fn check_lease(&self) -> Result<(), Fenced> {
        let verified = self.verified.load(Ordering::Relaxed);
        if self.now().saturating_sub(verified) < LEASE.as_nanos() as u64 {
            return Ok(());
        }
        self.check()
    }

    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
}

/// The generation and owner in `path`, if it exists.
fn read(path: &Path) -> Result<Option<(u64, String)>, CheckpointError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", path)(e)),
    };
    let parsed = text
        .trim_end()
        .split_once(' ')
        .and_then(|(g, owner)| Some((g.parse::<u64>().ok()?, owner.to_owned())));
    match parsed {
        Some(p) => Ok(Some(p)),
        None => Err(io_err("parse", path)(io::Error::other(
            "not `<generation> <owner>`",
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_take_over_raises_the_generation_and_fences_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let first = Fence::take(dir.path(), "a-w0").unwrap();
        assert_eq!(first.generation(), 1);
        first.check().unwrap();
        let second = Fence::take(dir.path(), "b-w1").unwrap();
        assert_eq!(second.generation(), 2);
        second.check().unwrap();
        let fenced = first.check().unwrap_err();
        assert_eq!(
            fenced,
            Fenced {
                path: dir.path().join("OWNER"),
                held: 1,
                now: 2,
                by: "b-w1".to_owned(),
            }
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("OWNER")).unwrap(),
            "2 b-w1\n"
        );
        // No temporary file is left behind.
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["OWNER"]);
    }

    #[test]
    fn a_lease_spares_the_read_until_it_runs_out() {
        let dir = tempfile::tempdir().unwrap();
        let first = Fence::take(dir.path(), "a").unwrap();
        Fence::take(dir.path(), "b").unwrap();
        // Checked just now (at the take): the lease stands.
        first.check_lease().unwrap();
        std::thread::sleep(LEASE);
        assert_eq!(first.check_lease().unwrap_err().now, 2);
    }

    #[test]
    fn the_same_generation_of_another_owner_is_not_ours() {
        let dir = tempfile::tempdir().unwrap();
        let mine = Fence::take(dir.path(), "a").unwrap();
        fs::write(dir.path().join("OWNER"), "1 b\n").unwrap();
        assert_eq!(mine.check().unwrap_err().by, "b");
        fs::write(dir.path().join("OWNER"), "garbage").unwrap();
        assert_eq!(mine.check().unwrap_err().now, u64::MAX);
    }
}
