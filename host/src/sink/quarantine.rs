//! The quarantine: records that can be neither delivered nor dead-lettered
//! (their dead letter is larger than the producer may send). Each is
//! skipped loudly (an error log line and the `quarantined` count) and, where
//! the pipeline has a checkpoint directory, written as one JSON line to
//! `<checkpoint dir>/quarantine/quarantine.jsonl`: where it came from, why,
//! its size against the limit, and the start of its key and value in
//! base64. The file is bounded ([`FILE_CAP`]); once full, records are only
//! logged and counted. Nothing here is retried: the batch's offsets commit.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;

/// The quarantine file stops growing at this size (64 MiB).
pub const FILE_CAP: u64 = 64 << 20;
/// At most this many bytes of a key and of a value are kept (4 KiB each):
/// enough to recognise a record, not to hold it.
pub const FIELD_CAP: usize = 4096;
/// The directory under the checkpoint directory, and the file in it.
pub const DIR: &str = "quarantine";
pub const FILE: &str = "quarantine.jsonl";

/// One record that could not be carried.
#[derive(Debug, Clone, Copy)]
pub struct Quarantined<'a> {
    pub pipeline: &'a str,
    /// Where the record came from: the source topic, partition and offset
    /// of a source record; the output topic (no partition or offset) of a
    /// window's result or accumulator.
    pub topic: &'a str,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    /// Why it was not delivered (the dead letter's reason).
    pub reason: &'a str,
    /// Size of the dead letter that did not fit, against the limit.
    pub bytes: usize,
    pub limit: usize,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// One line of the file.
#[derive(Serialize)]
struct Line<'a> {
    pipeline: &'a str,
    topic: &'a str,
    partition: Option<i32>,
    offset: Option<i64>,
    reason: &'a str,
    bytes: usize,
    limit: usize,
    key_len: Option<usize>,
    value_len: Option<usize>,
    /// The first [`FIELD_CAP`] bytes, base64.
    key: Option<String>,
    value: Option<String>,
}

#[derive(Debug)]
struct Open {
    file: File,
    written: u64,
}

/// The file, opened with the first record quarantined (most pipelines
/// never need it).
#[derive(Debug, Default)]
enum FileState {
    /// No file: no checkpoint directory, or it is full or failed.
    #[default]
    None,
    NotYet,
    Open(Open),
}

/// Where a pipeline's quarantined records go; counts them.
#[derive(Debug, Default)]
pub struct Quarantine {
    file: Mutex<FileState>,
    path: Option<PathBuf>,
    count: AtomicU64,
}

impl Quarantine {
    /// Records are logged and counted only.
    pub fn log_only() -> Self {
        Self::default()
    }

    /// Appends to `<dir>/quarantine/quarantine.jsonl`, created with the
    /// first record quarantined.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            file: Mutex::new(FileState::NotYet),
            path: Some(dir.join(DIR).join(FILE)),
            count: AtomicU64::new(0),
        }
    }

    fn open(path: &Path) -> std::io::Result<Open> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let written = file.metadata()?.len();
        Ok(Open { file, written })
    }

    /// Records quarantined so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Skips `q` loudly: an error log line, the count, a line in the file
    /// while it has room.
    pub fn record(&self, q: &Quarantined<'_>) {
        self.count.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            pipeline = q.pipeline, topic = q.topic, partition = ?q.partition, offset = ?q.offset,
            reason = q.reason, bytes = q.bytes, limit = q.limit,
            "record quarantined: it can be neither delivered nor dead-lettered; skipped"
        );
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.path.as_deref().unwrap_or(Path::new(""));
        if matches!(*file, FileState::NotYet) {
            *file = match Self::open(path) {
                Ok(open) => FileState::Open(open),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "cannot open the quarantine file; records are only logged");
                    FileState::None
                }
            };
        }
        let FileState::Open(open) = &mut *file else {
            return;
        };
        let mut line = serde_json::to_vec(&line(q)).expect("plain struct");
        line.push(b'\n');
        if open.written + line.len() as u64 > FILE_CAP {
            tracing::error!(path = %path.display(), cap = FILE_CAP, "the quarantine file is full; further records are only logged");
            *file = FileState::None;
            return;
        }
        match open.file.write_all(&line) {
            Ok(()) => open.written += line.len() as u64,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot write the quarantine file; further records are only logged");
                *file = FileState::None;
            }
        }
    }
}

fn line<'a>(q: &Quarantined<'a>) -> Line<'a> {
    let capped = |b: &[u8]| STANDARD.encode(&b[..b.len().min(FIELD_CAP)]);
    Line {
        pipeline: q.pipeline,
        topic: q.topic,
        partition: q.partition,
        offset: q.offset,
        reason: q.reason,
        bytes: q.bytes,
        limit: q.limit,
        key_len: q.key.map(<[u8]>::len),
        value_len: q.value.map(<[u8]>::len),
        key: q.key.map(capped),
        value: q.value.map(capped),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(value: &'a [u8]) -> Quarantined<'a> {
        Quarantined {
            pipeline: "p",
            topic: "in",
            partition: Some(0),
            offset: Some(7),
            reason: "too large",
            bytes: 1_000_200,
            limit: 1_000_000,
            key: Some(b"k"),
            value: Some(value),
        }
    }

    #[test]
    fn lines_are_json_with_capped_fields_and_the_file_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quarantine::in_dir(dir.path());
        assert!(
            !dir.path().join("quarantine").exists(),
            "opened when needed"
        );
        let value = vec![b'x'; FIELD_CAP + 10];
        q.record(&sample(&value));
        let text = std::fs::read_to_string(dir.path().join("quarantine/quarantine.jsonl")).unwrap();
        let expected = format!(
            "{{\"pipeline\":\"p\",\"topic\":\"in\",\"partition\":0,\"offset\":7,\"reason\":\"too large\",\
             \"bytes\":1000200,\"limit\":1000000,\"key_len\":1,\"value_len\":{},\"key\":\"aw==\",\"value\":\"{}\"}}\n",
            FIELD_CAP + 10,
            STANDARD.encode(&value[..FIELD_CAP])
        );
        assert_eq!(text, expected);

        // Full: counted and logged, the file no longer grows.
        let line = expected.len() as u64;
        match &mut *q.file.lock().unwrap() {
            FileState::Open(open) => open.written = FILE_CAP - line + 1,
            other => panic!("{other:?}"),
        }
        q.record(&sample(&value));
        q.record(&sample(&value));
        assert_eq!(q.count(), 3);
        let after =
            std::fs::read_to_string(dir.path().join("quarantine/quarantine.jsonl")).unwrap();
        assert_eq!(after, expected);
    }
}
