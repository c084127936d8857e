//! The pipeline store's files: each pipeline's document, written so that a
//! crash leaves the old or the new one, never a mix, and only this user
//! may read (0600: a spec may carry secrets).

use std::io;
use std::path::Path;

use super::{ManagerError, Stored};
use crate::registry::{FileError, write_atomic};

/// Writes `<data>/pipelines/<name>.json`.
pub(super) fn persist(data: &Path, stored: &Stored) -> Result<(), ManagerError> {
    let json = serde_json::to_vec_pretty(stored).expect("a pipeline document serializes");
    let file = data.join("pipelines").join(format!("{}.json", stored.name));
    Ok(write_atomic(&file, &json)?)
}

pub(super) fn io_error(what: &str, path: &Path) -> impl FnOnce(io::Error) -> ManagerError {
    let error = FileError::of(what, path);
    move |source| error(source).into()
}

impl From<FileError> for ManagerError {
    fn from(e: FileError) -> Self {
        Self::Io {
            what: e.what,
            source: e.source,
        }
    }
}
