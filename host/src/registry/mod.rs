//! The module registry: the components `sluice serve` was given, as
//! numbered versions of named modules, content-addressed on disk.
//!
//! ```text
//! <data>/modules/blobs/<sha256>.wasm   the bytes, named by their hash (shared by identical uploads)
//! <data>/modules/index.json            name -> last version number, versions [{version, sha256, ...}]
//! <data>/modules/.lock                 held (flock) while a process has the store open
//! ```
//!
//! It owns the names users write (`name`, `name@version`, see
//! [`ModuleRef`]), the index of versions and the blobs; it does not look
//! inside a component: what a version is (its [`Kind`], its exports) is
//! established by the runtime before [`ModuleStore::add`] is called
//! ([`crate::runtime::inspect()`]). It knows nothing of pipelines: which
//! pipelines use a version is asked of the caller when a version is deleted.
//!
//! # Promises
//!
//! - **Versions mean bytes.** Version numbers are never reused: deleting
//!   the newest version and uploading again gives the next number, so
//!   `name@version` always means the same bytes. Uploading the latest
//!   version's bytes again adds nothing.
//! - **Atomic writes.** Every write is a temp file in the same directory,
//!   fsynced, renamed into place, then the directory fsynced. A new
//!   version's blob is written before the index names it and a deleted
//!   version leaves the index before its blob goes, so a crash leaves at
//!   most an unreferenced blob, which the next [`ModuleStore::open`] removes
//!   (with any temp file).
//! - **Private files.** Everything written is readable by this user only
//!   (0600 files, 0700 directories, see [`private_file`], [`private_dir`]),
//!   which the pipeline manager's documents use too.
//! - **In use stays.** A version that a pipeline uses (the `users` function
//!   given to [`ModuleStore::remove`], asked under the store's lock) is not
//!   deleted.
//!
//! # Failures
//!
//! Every operation returns a [`StoreError`] whose message is shown to API
//! users as it is: a bad name or version, an unknown module or version, a
//! version in use (naming the pipelines), an I/O error naming the file, a
//! damaged index, or a data directory another process holds.

mod files;
mod names;
mod store;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use files::{IoError, private_dir, private_file, write_atomic};
pub use names::{ModuleRef, parse_version, validate_name};
pub use store::{Checked, Kind, ModuleStore, VersionMeta};

/// Why a store operation failed. The messages are shown to API users.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "invalid module name `{0}`: use 1 to 63 lower-case letters, digits and '-', starting with a letter or digit"
    )]
    InvalidName(String),
    #[error("invalid version `{0}`: versions are positive integers (1, 2, 3, ...)")]
    InvalidVersion(String),
    #[error("no module named `{0}`")]
    NotFound(String),
    #[error("module `{name}` has no version {version}")]
    VersionNotFound { name: String, version: u32 },
    #[error(
        "module `{module}` is used by pipeline(s) {}; remove it from them first",
        .pipelines.join(", ")
    )]
    InUse {
        module: String,
        pipelines: Vec<String>,
    },
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("the module store is damaged: {0}")]
    Corrupt(String),
    #[error("{0} is in use by another process (one `sluice serve` per data directory)")]
    Locked(PathBuf),
}
