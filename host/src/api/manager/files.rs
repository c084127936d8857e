//! The pipeline store's files: each pipeline's document, written so that a
//! crash leaves the old or the new one, never a mix, and only this user
//! may read (0600: a spec may carry secrets).

use std::fs;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{ManagerError, Stored};

/// Writes `<data>/pipelines/<name>.json`.
pub(super) fn persist(data: &Path, stored: &Stored) -> Result<(), ManagerError> {
    let json = serde_json::to_vec_pretty(stored).expect("a pipeline document serializes");
    let file = data.join("pipelines").join(format!("{}.json", stored.name));
    write_atomic(&file, &json)
}

pub(super) fn io_error(what: &str, path: &Path) -> impl FnOnce(io::Error) -> ManagerError {
    let what = format!("{what} {}", path.display());
    move |source| ManagerError::Io { what, source }
}

/// Temp file, fsync, rename, fsync of the directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ManagerError> {
    use std::io::Write;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().expect("pipeline files have a parent");
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = crate::api::store::private_file(&tmp).map_err(io_error("create", &tmp))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(io_error("write", &tmp))?;
        fs::rename(&tmp, path).map_err(io_error("rename into place", path))?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error("fsync", dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
