//! The pipeline store's files: each pipeline's document, written so that a
//! crash leaves the old or the new one, never a mix, and only this user
//! may read (0600: a spec may carry secrets).

use std::path::Path;

use super::{ManagerError, Stored};
use crate::registry::write_atomic;

/// Writes `<data>/pipelines/<name>.json`.
pub(super) fn persist(data: &Path, stored: &Stored) -> Result<(), ManagerError> {
    let json = serde_json::to_vec_pretty(stored).expect("a pipeline document serializes");
    let file = data.join("pipelines").join(format!("{}.json", stored.name));
    Ok(write_atomic(&file, &json)?)
}
