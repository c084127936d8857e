//! The Parquet sink: an output's records (JSON objects) as Parquet files in
//! a directory, published exactly once with the pipeline's checkpoints.
//!
//! # Files
//!
//! `<path>/[<partition dirs>/]part-{first_epoch:012}-{n:04}.parquet`, where
//! `first_epoch` is the epoch (batch number) the file was started in and `n`
//! counts the files started in that epoch in that directory. While written,
//! and until the checkpoint that lists it is durable, a file is named
//! `.part-...parquet.inprogress` in the same directory: readers (pyarrow,
//! Spark, DuckDB, Hive) skip dot-files, so it is invisible.
//!
//! A file is closed (footer written, fsynced) when it reaches
//! `max_file_size` (checked each time buffered rows are encoded: every
//! 8192 rows of a directory and at the end of each [`ParquetSink::write`]),
//! when it reaches `max_file_age` (checked at the start of each write), and
//! always at each checkpoint. Each open file holds its row group in memory
//! until it is encoded: up to about `min(max_file_size, 64 MiB)` per
//! partition directory written since the last checkpoint.
//!
//! # Commit protocol
//!
//! 1. [`ParquetSink::write`] appends epoch `e`'s records to temp files.
//! 2. At a checkpoint, [`ParquetSink::prepare_commit`] closes every open
//!    file, fsyncs the files and their directories, and returns a
//!    [`ParquetCommit`]: the renames (temp -> final) of every file closed
//!    since the last commit.
//! 3. The caller stores that commit inside the checkpoint and makes the
//!    checkpoint durable.
//! 4. Only then, [`ParquetSink::commit`] renames the files and fsyncs their
//!    directories: they become visible.
//! 5. After a crash, [`ParquetSink::open`] gets the commit of the newest
//!    valid checkpoint, finishes its renames (idempotently: a file already
//!    renamed is fine), and deletes every other temp file: they belong to
//!    epochs after that checkpoint, which are about to be processed again.
//!
//! # Why that is exactly once
//!
//! A row is visible if and only if its file is listed by a durable
//! checkpoint (step 4 after step 3, and step 5 completes any step 4 that a
//! crash interrupted). Recovery resumes from that checkpoint, whose state
//! (source offsets, windows) covers exactly the epochs whose files it
//! lists: those rows are never written again, and the rows of later epochs
//! (in temp files, deleted by step 5) are written once more by the replay.
//!
//! File names depend only on the epochs and the records, not on the clock
//! or the process, so a replay writes its files under the same names,
//! starting at the same records. That matters when a restart falls back
//! past a published checkpoint (the newest one is damaged): the replay
//! overwrites the files that checkpoint published, each with the same rows
//! (the last one of a directory maybe with rows of later epochs too, as the
//! replay does not close files where that checkpoint did) instead of
//! duplicating them. Rolls by age depend on the clock and break this, and so
//! does falling back past more than one published checkpoint.
//!
//! # Records and schema
//!
//! Each value must be a JSON object; its top-level fields are the columns.
//! Extra fields are ignored. A record that does not fit (not JSON, not an
//! object, a non-nullable column missing or null, a value of the wrong
//! type) is refused with a reason, e.g.
//! `parquet: field "amount": expected float64, got string`, and not
//! written; the caller dead-letters it. Without a `schema`, the first record
//! that is an object with at least one string, number or bool field fixes
//! it: its string, integer, other number and bool fields become nullable
//! columns, in the record's order (null, array and object fields are left
//! out, and logged). The inferred schema is kept in each
//! [`ParquetCommit`] so that a restart keeps using it.

mod file;
mod row;
mod sink;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::spec::parquet::{self as config, ColumnSpec};
pub use file::FileRename;
pub use sink::ParquetSink;

/// What a checkpoint must hold for a Parquet sink: the files closed since
/// the previous commit, waiting to become visible, and the inferred schema
/// once fixed (`None` with an explicit schema).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParquetCommit {
    pub files: Vec<FileRename>,
    pub schema: Option<Vec<ColumnSpec>>,
}

/// Why the sink failed. Records that do not fit the schema are not errors
/// (see [`ParquetSink::write`]); these are. Only [`ParquetError::Io`] may
/// go away on a retry (a full disk, a permission fixed).
#[derive(Debug, thiserror::Error)]
pub enum ParquetError {
    /// The spec, or the state recovered from a checkpoint, is unusable.
    #[error("{0}")]
    Spec(String),
    /// A file-system operation failed. (The causes are part of the
    /// messages rather than `source`s, so that a chain prints them once.)
    #[error("cannot {op} {}: {error}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    /// The Parquet encoder failed.
    #[error("cannot {op} {}: {error}", path.display())]
    Encode {
        op: &'static str,
        path: PathBuf,
        error: ::parquet::errors::ParquetError,
    },
    /// A file to publish is under neither its temp nor its final name.
    #[error("cannot publish {}: neither it nor its temp file {} exists", to.display(), from.display())]
    Missing { from: PathBuf, to: PathBuf },
    /// Epochs must not go backwards: a file name could be used twice.
    #[error("epoch {epoch} was written after epoch {last}")]
    EpochOrder { epoch: u64, last: u64 },
}

impl ParquetError {
    fn io(op: &'static str, path: &Path, error: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.to_owned(),
            error,
        }
    }

    fn encode(op: &'static str, path: &Path, error: ::parquet::errors::ParquetError) -> Self {
        Self::Encode {
            op,
            path: path.to_owned(),
            error,
        }
    }

    /// Whether retrying the operation may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Io { .. })
    }
}
