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
//!   tail, which the next open cuts off.

mod dir;
mod log;
mod store;

pub use log::{EpochLog, LoggedEpoch};
pub use store::{CheckpointError, CheckpointStore, LocalDirStore};
