//! The epoch log: a write-ahead log of batch descriptors.
//!
//! Before the host produces the outputs of epoch `n` it appends the epoch's
//! descriptor (serialized by the caller) here; after a crash it loads the
//! latest checkpoint `c` and re-executes, in order, every logged epoch after
//! `c`. Once checkpoint `c` is saved, [`EpochLog::truncate_through`] drops the
//! entries it covers.
//!
//! # Format
//!
//! `epochs.log` is a sequence of entries: the payload length (u32 LE), the
//! epoch (u64 LE), the payload, and the crc32 of epoch and payload (u32 LE).
//! Epochs strictly increase.
//!
//! # What a crash leaves behind
//!
//! - **Mid-append.** Each append is one `write_all` of whole entries (one,
//!   or a group committed together) to the end of the file, so a crash
//!   leaves at most one torn entry, at the tail.
//!   [`EpochLog::open`] keeps every complete, valid entry before the first
//!   bad one and cuts the rest off (with a warning; never an error). With
//!   `sync`, an append is durable once it returns; without, the OS decides,
//!   and the newest appends may be lost, but only from the tail.
//! - **Mid-truncation.** The remaining entries are written to
//!   `.epochs.log.tmp`, fsynced, and renamed over the log, then the
//!   directory is fsynced. A crash leaves either the old log (plus a temp
//!   file that the next open removes) or the new one, each whole. The old
//!   one still holds epochs at or before the saved checkpoint: on recovery
//!   the caller skips the entries its checkpoint covers.
//! - **Damage.** A corrupt entry in the middle (bit rot) cannot be told from
//!   a torn one: it and everything after it are dropped, loudly.
//!
//! If a write or an fsync fails, the log cuts a partial entry off again
//! or, when it cannot know what is on disk, refuses further use
//! ([`CheckpointError::LogPoisoned`]) until it is reopened.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::CheckpointError;
use super::store::{io_err, sync_dir, write_synced};

const FILE_NAME: &str = "epochs.log";
const TMP_NAME: &str = ".epochs.log.tmp";
/// Length and epoch before the payload.
const ENTRY_HEADER: usize = 12;
/// Everything but the payload: header and crc.
const ENTRY_OVERHEAD: usize = ENTRY_HEADER + 4;

/// One entry of the log: an epoch and its descriptor bytes.
pub type LoggedEpoch = (u64, Vec<u8>);

/// Where the epoch log is kept: [`EpochLog`] in a local directory, or
/// `ObjectLog` in object storage (see `object.rs`).
pub trait Wal: Send + std::fmt::Debug {
    /// Appends entries in order (epochs strictly increase), durably.
    fn append_all(&mut self, entries: &[(u64, &[u8])]) -> Result<(), CheckpointError>;
    /// Drops every entry with epoch <= `through`.
    fn truncate_through(&mut self, through: u64) -> Result<(), CheckpointError>;
}

impl Wal for EpochLog {
    fn append_all(&mut self, entries: &[(u64, &[u8])]) -> Result<(), CheckpointError> {
        EpochLog::append_all(self, entries)
    }

    fn truncate_through(&mut self, through: u64) -> Result<(), CheckpointError> {
        EpochLog::truncate_through(self, through)
    }
}

/// Appends the entry (epoch, payload) to `data` in the log's format.
/// `payload` must be under 4 GiB (the caller checks).
fn encode_into(data: &mut Vec<u8>, epoch: u64, payload: &[u8]) {
    let start = data.len();
    data.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    data.extend_from_slice(&epoch.to_le_bytes());
    data.extend_from_slice(payload);
    let crc = crc32fast::hash(&data[start + 4..]);
    data.extend_from_slice(&crc.to_le_bytes());
}

/// `entries` in the log's format, one after the other (each payload under
/// 4 GiB: the epoch descriptors are far smaller).
pub(super) fn encode_entries(entries: &[(u64, &[u8])]) -> Vec<u8> {
    let mut data = Vec::new();
    for &(epoch, payload) in entries {
        encode_into(&mut data, epoch, payload);
    }
    data
}

/// Every valid entry of `data` in order, and what is wrong with the rest,
/// if anything. `last`: the epoch of the entry before `data`.
pub(super) fn decode_all(data: &[u8], mut last: Option<u64>) -> (Vec<LoggedEpoch>, Option<String>) {
    let (mut entries, mut at) = (Vec::new(), 0);
    while at < data.len() {
        match decode(&data[at..], last) {
            Ok((epoch, payload)) => {
                entries.push((epoch, payload.to_vec()));
                last = Some(epoch);
                at += ENTRY_OVERHEAD + payload.len();
            }
            Err(problem) => return (entries, Some(problem)),
        }
    }
    (entries, None)
}

/// An append-only log of (epoch, descriptor) entries in `dir/epochs.log`.
#[derive(Debug)]
pub struct EpochLog {
    dir: PathBuf,
    path: PathBuf,
    /// Opened for reading and appending.
    file: File,
    sync: bool,
    /// The file's length: the end of the last valid entry.
    len: u64,
    /// Each entry's epoch and byte offset, in order.
    index: Vec<(u64, u64)>,
    /// The newest epoch appended or read, even if truncated away since.
    last: Option<u64>,
    /// Set when the file's state is unknown; see [`CheckpointError::LogPoisoned`].
    poisoned: bool,
}

impl EpochLog {
    /// Opens (creating) `dir/epochs.log`. Reads every complete, valid entry;
    /// a torn or corrupt tail (from a crash mid-append) is truncated away
    /// with a warning; returns the log and the entries read, in order.
    /// With `sync`, every append is fdatasync'ed before it returns.
    pub fn open(dir: &Path, sync: bool) -> Result<(Self, Vec<LoggedEpoch>), CheckpointError> {
        fs::create_dir_all(dir).map_err(io_err("create epoch log directory", dir))?;
        let tmp = dir.join(TMP_NAME);
        match fs::remove_file(&tmp) {
            Ok(()) => {
                let path = tmp.display();
                tracing::info!(%path, "removed the temp file of an interrupted log truncation");
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove leftover temp file", &tmp)(e)),
        }
        let path = dir.join(FILE_NAME);
        let mut file = open_for_append(&path, true)?;
        // The file's directory entry must be durable before its appends count.
        sync_dir(dir)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)
            .map_err(io_err("read epoch log", &path))?;

        let (mut entries, mut index, mut end) = (Vec::new(), Vec::new(), 0);
        while end < data.len() {
            match decode(&data[end..], index.last().map(|&(epoch, _)| epoch)) {
                Ok((epoch, payload)) => {
                    index.push((epoch, end as u64));
                    entries.push((epoch, payload.to_vec()));
                    end += ENTRY_OVERHEAD + payload.len();
                }
                Err(problem) => {
                    tracing::warn!(
                        path = %path.display(),
                        offset = end,
                        dropped_bytes = data.len() - end,
                        %problem,
                        "cutting off the torn or corrupt tail of the epoch log"
                    );
                    file.set_len(end as u64)
                        .map_err(io_err("truncate torn tail of", &path))?;
                    file.sync_all().map_err(io_err("fsync", &path))?;
                    break;
                }
            }
        }
        let log = Self {
            dir: dir.to_path_buf(),
            path,
            file,
            sync,
            len: end as u64,
            last: index.last().map(|&(epoch, _)| epoch),
            index,
            poisoned: false,
        };
        Ok((log, entries))
    }

    /// Appends entry (epoch, bytes); epochs strictly increase (else an
    /// error). With `sync`, the data is fdatasync'ed before returning.
    pub fn append(&mut self, epoch: u64, bytes: &[u8]) -> Result<(), CheckpointError> {
        self.append_all(&[(epoch, bytes)])
    }

    /// Appends entries in order, with one write and (with `sync`) one
    /// fdatasync for all of them: a group commit. Epochs strictly increase
    /// (else an error, and nothing is appended). A crash mid-write tears
    /// at most the tail, as with one entry.
    pub fn append_all(&mut self, entries: &[(u64, &[u8])]) -> Result<(), CheckpointError> {
        self.check_usable()?;
        let mut last = self.last;
        let mut data = Vec::with_capacity(
            entries
                .iter()
                .map(|(_, bytes)| ENTRY_OVERHEAD + bytes.len())
                .sum(),
        );
        let mut offsets = Vec::with_capacity(entries.len());
        for &(epoch, bytes) in entries {
            if let Some(last) = last
                && epoch <= last
            {
                return Err(CheckpointError::EpochNotIncreasing {
                    epoch,
                    last,
                    path: self.path.clone(),
                });
            }
            if u32::try_from(bytes.len()).is_err() {
                return Err(CheckpointError::EntryTooLarge {
                    epoch,
                    len: bytes.len(),
                    path: self.path.clone(),
                });
            }
            offsets.push((epoch, self.len + data.len() as u64));
            encode_into(&mut data, epoch, bytes);
            last = Some(epoch);
        }
        if data.is_empty() {
            return Ok(());
        }

        if let Err(e) = self.file.write_all(&data) {
            // A partial entry would hide every later one: cut it off again.
            self.poisoned = self.file.set_len(self.len).is_err();
            return Err(io_err("append to", &self.path)(e));
        }
        if self.sync
            && let Err(e) = self.file.sync_data()
        {
            // After a failed fsync, what reached the disk is unknown.
            self.poisoned = true;
            return Err(io_err("fsync", &self.path)(e));
        }
        self.index.extend(offsets);
        self.len += data.len() as u64;
        self.last = last;
        Ok(())
    }

    /// Drops every entry with epoch <= `through` (called after checkpoint
    /// `through` is saved), by atomically rewriting the file with the
    /// remaining entries (temp + fsync + rename + dir fsync), then keeps
    /// appending to the new file.
    pub fn truncate_through(&mut self, through: u64) -> Result<(), CheckpointError> {
        self.check_usable()?;
        let dropped = self.index.partition_point(|&(epoch, _)| epoch <= through);
        if dropped == 0 {
            return Ok(());
        }
        let start = self
            .index
            .get(dropped)
            .map_or(self.len, |&(_, offset)| offset);
        let mut rest = vec![0; (self.len - start) as usize];
        (&self.file)
            .seek(SeekFrom::Start(start))
            .and_then(|_| (&self.file).read_exact(&mut rest))
            .map_err(io_err("read epoch log", &self.path))?;
        let tmp = self.dir.join(TMP_NAME);
        let written = write_synced(&tmp, &[&rest]).and_then(|()| {
            fs::rename(&tmp, &self.path).map_err(io_err("rename into place", &self.path))
        });
        if let Err(error) = written {
            let _ = fs::remove_file(&tmp);
            return Err(error);
        }
        // The old file is gone from the directory: until the new one is open
        // and its rename durable, appends would go nowhere safe.
        self.poisoned = true;
        self.file = open_for_append(&self.path, false)?;
        sync_dir(&self.dir)?;
        self.poisoned = false;
        self.index.drain(..dropped);
        for (_, offset) in &mut self.index {
            *offset -= start;
        }
        self.len -= start;
        Ok(())
    }

    fn check_usable(&self) -> Result<(), CheckpointError> {
        if self.poisoned {
            return Err(CheckpointError::LogPoisoned {
                path: self.path.clone(),
            });
        }
        Ok(())
    }
}

fn open_for_append(path: &Path, create: bool) -> Result<File, CheckpointError> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(create)
        .open(path)
        .map_err(io_err("open epoch log", path))
}

/// The entry at the start of `data` (epoch, payload), or why there is no
/// valid one. `last` is the epoch of the entry before.
fn decode(data: &[u8], last: Option<u64>) -> Result<(u64, &[u8]), String> {
    if data.len() < ENTRY_HEADER {
        return Err(format!(
            "torn entry: {} bytes, shorter than its {ENTRY_HEADER}-byte header",
            data.len()
        ));
    }
    let len = u32::from_le_bytes(data[..4].try_into().expect("4 bytes")) as usize;
    let epoch = u64::from_le_bytes(data[4..ENTRY_HEADER].try_into().expect("8 bytes"));
    let Some(crc_at) = ENTRY_HEADER
        .checked_add(len)
        .filter(|&at| at <= data.len() - 4)
    else {
        let avail = data.len() - ENTRY_HEADER;
        return Err(format!(
            "torn entry: epoch {epoch} claims {len} payload bytes and a crc, {avail} bytes follow"
        ));
    };
    let stored = u32::from_le_bytes(data[crc_at..crc_at + 4].try_into().expect("4 bytes"));
    if crc32fast::hash(&data[4..crc_at]) != stored {
        return Err(format!("checksum mismatch in the entry for epoch {epoch}"));
    }
    if let Some(last) = last
        && epoch <= last
    {
        return Err(format!(
            "epoch {epoch} follows epoch {last}: not increasing"
        ));
    }
    Ok((epoch, &data[ENTRY_HEADER..crc_at]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(epochs: &[u64]) -> Vec<LoggedEpoch> {
        epochs
            .iter()
            .map(|&e| (e, format!("batch {e}").into_bytes()))
            .collect()
    }

    fn append_all(log: &mut EpochLog, epochs: &[u64]) {
        for (epoch, bytes) in entries(epochs) {
            log.append(epoch, &bytes).unwrap();
        }
    }

    fn file_len(dir: &Path) -> u64 {
        fs::metadata(dir.join(FILE_NAME)).unwrap().len()
    }

    /// The size of the entries of `entries(epochs)`.
    fn size_of(epochs: &[u64]) -> u64 {
        entries(epochs)
            .iter()
            .map(|(_, b)| (ENTRY_OVERHEAD + b.len()) as u64)
            .sum()
    }

    #[test]
    fn roundtrips_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, read) = EpochLog::open(dir.path(), true).unwrap();
        assert!(read.is_empty());
        append_all(&mut log, &[1, 2, 5]);
        log.append(6, b"").unwrap();
        drop(log);
        let (mut log, read) = EpochLog::open(dir.path(), true).unwrap();
        let mut expected = entries(&[1, 2, 5]);
        expected.push((6, Vec::new()));
        assert_eq!(read, expected);
        assert_eq!(
            file_len(dir.path()),
            size_of(&[1, 2, 5]) + ENTRY_OVERHEAD as u64
        );
        assert!(matches!(
            log.append(6, b"x"),
            Err(CheckpointError::EpochNotIncreasing {
                epoch: 6,
                last: 6,
                ..
            })
        ));
        log.append(7, b"x").unwrap();
    }

    #[test]
    fn a_group_append_writes_every_entry_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = EpochLog::open(dir.path(), true).unwrap();
        append_all(&mut log, &[1]);
        let group = entries(&[2, 3, 4]);
        let refs: Vec<(u64, &[u8])> = group.iter().map(|(e, b)| (*e, b.as_slice())).collect();
        log.append_all(&refs).unwrap();
        // Not increasing within the group: nothing of it is written.
        assert!(matches!(
            log.append_all(&[(5, b"x"), (5, b"y")]),
            Err(CheckpointError::EpochNotIncreasing {
                epoch: 5,
                last: 5,
                ..
            })
        ));
        assert_eq!(file_len(dir.path()), size_of(&[1, 2, 3, 4]));
        log.append_all(&[]).unwrap();
        append_all(&mut log, &[5]);
        // Truncation finds the group's entries one by one.
        log.truncate_through(3).unwrap();
        drop(log);
        let (_, read) = EpochLog::open(dir.path(), true).unwrap();
        assert_eq!(read, entries(&[4, 5]));
    }

    #[test]
    fn cuts_off_a_torn_tail_and_appends_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = EpochLog::open(dir.path(), false).unwrap();
        append_all(&mut log, &[1, 2, 3]);
        drop(log);
        let file = OpenOptions::new()
            .write(true)
            .open(dir.path().join(FILE_NAME))
            .unwrap();
        file.set_len(file_len(dir.path()) - 3).unwrap();

        let (mut log, read) = EpochLog::open(dir.path(), false).unwrap();
        assert_eq!(read, entries(&[1, 2]));
        assert_eq!(file_len(dir.path()), size_of(&[1, 2]));
        log.append(3, b"redo 3").unwrap();
        drop(log);
        let (_, read) = EpochLog::open(dir.path(), false).unwrap();
        let mut expected = entries(&[1, 2]);
        expected.push((3, b"redo 3".to_vec()));
        assert_eq!(read, expected);
    }

    #[test]
    fn keeps_the_entries_before_a_corrupt_one() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = EpochLog::open(dir.path(), false).unwrap();
        append_all(&mut log, &[1, 2, 3, 4]);
        drop(log);
        let path = dir.path().join(FILE_NAME);
        let mut data = fs::read(&path).unwrap();
        data[size_of(&[1]) as usize + ENTRY_HEADER + 2] ^= 0x01; // in epoch 2's payload
        fs::write(&path, data).unwrap();

        let (_, read) = EpochLog::open(dir.path(), false).unwrap();
        assert_eq!(read, entries(&[1]));
        assert_eq!(file_len(dir.path()), size_of(&[1]));
    }

    #[test]
    fn truncates_through_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = EpochLog::open(dir.path(), true).unwrap();
        append_all(&mut log, &[1, 2, 3, 4, 5]);
        log.truncate_through(0).unwrap();
        assert_eq!(file_len(dir.path()), size_of(&[1, 2, 3, 4, 5]));
        log.truncate_through(3).unwrap();
        assert_eq!(file_len(dir.path()), size_of(&[4, 5]));
        append_all(&mut log, &[6]);
        log.truncate_through(4).unwrap();
        append_all(&mut log, &[7]);
        drop(log);
        let (mut log, read) = EpochLog::open(dir.path(), true).unwrap();
        assert_eq!(read, entries(&[5, 6, 7]));
        assert!(!dir.path().join(TMP_NAME).exists());

        log.truncate_through(100).unwrap();
        assert_eq!(file_len(dir.path()), 0);
        assert!(matches!(
            log.append(7, b"x"),
            Err(CheckpointError::EpochNotIncreasing { .. })
        ));
        append_all(&mut log, &[101]);
        drop(log);
        assert_eq!(EpochLog::open(dir.path(), true).unwrap().1, entries(&[101]));
    }

    #[test]
    fn rejects_non_increasing_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = EpochLog::open(dir.path(), false).unwrap();
        log.append(5, b"five").unwrap();
        for epoch in [5, 4, 0] {
            let err = log.append(epoch, b"no").unwrap_err();
            assert!(
                matches!(err, CheckpointError::EpochNotIncreasing { last: 5, .. }),
                "{err}"
            );
            assert!(!err.is_retryable());
        }
        log.append(6, b"six").unwrap();
        drop(log);
        let (_, read) = EpochLog::open(dir.path(), false).unwrap();
        assert_eq!(read, vec![(5, b"five".to_vec()), (6, b"six".to_vec())]);
    }

    #[test]
    fn removes_a_leftover_temp_file_at_open() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(TMP_NAME), b"half a rewrite").unwrap();
        let (_, read) = EpochLog::open(dir.path(), false).unwrap();
        assert!(read.is_empty());
        assert!(!dir.path().join(TMP_NAME).exists());
    }
}
