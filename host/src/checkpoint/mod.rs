//! Checkpoints and the epoch log: what the host needs to survive a crash.
//!
//! - [`CheckpointStore`] ([`LocalDirStore`] for a local directory) keeps
//!   the last few checkpoints. A save is atomic: after a crash at any instant
//!   a checkpoint is either there whole or absent, and a file damaged any
//!   other way is detected by its header and checksum and skipped.
//! - [`EpochLog`] is a write-ahead log of batch descriptors: the host appends
//!   epoch `n` before producing the batch's outputs, so that after a crash it
//!   can re-execute, deterministically, every epoch after the last
//!   checkpoint. A crash mid-append leaves at most one torn entry at the
//!   tail, which the next open cuts off. [`Epoch`] is what an entry
//!   describes; [`LogWriter`] appends on a thread of its own, so that an
//!   fsync overlaps the next batch's work, and [`Durable`] says how far.
//! - [`Fence`]: the generation of a task's owner, raised by each process
//!   that takes the task on, so that one that lost it writes no more.
//! - In S3-compatible object storage (`s3://bucket/prefix`), all three live
//!   in [`ObjectTask`]'s layout (see `object.rs`): checkpoints and the log
//!   under the owner's generation, so that an old owner's late writes are
//!   never read.

mod dir;
mod epoch;
mod fence;
mod log;
mod object;
mod store;
mod writer;

pub use epoch::{Epoch, EpochError, StepDigest, digests_by_step};
pub use fence::{Fence, Fenced};
pub use log::{EpochLog, LoggedEpoch, Wal};
pub use object::{ObjectCheckpoints, ObjectDir, ObjectLog, ObjectTask, Taken};
pub use store::{CheckpointError, CheckpointStore, LocalDirStore};
pub use writer::{Durable, LogWriter};
