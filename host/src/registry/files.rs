//! Files only this user may read, written so that a crash leaves the old
//! or the new content, never a mix. The module store and the pipeline
//! manager's documents are written this way.

use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// An I/O operation that failed: what was done (naming the path) and why.
#[derive(Debug, thiserror::Error)]
#[error("cannot {what}: {source}")]
pub struct IoError {
    /// What was being done, usually ending with the path (`write /data/x`).
    pub what: String,
    #[source]
    pub source: io::Error,
}

impl IoError {
    /// Maps an `io::Error` of doing `what` to `path`.
    pub fn of(what: &str, path: &Path) -> impl FnOnce(io::Error) -> Self {
        let what = format!("{what} {}", path.display());
        move |source| Self { what, source }
    }
}

/// Writes `bytes` to `path` atomically and durably: a private temp file
/// (`.tmp-<pid>-<n>`) in the same directory, fsync, rename, fsync of the
/// directory. On failure the temp file is removed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = private_file(&tmp).map_err(IoError::of("create", &tmp))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(IoError::of("write", &tmp))?;
        fs::rename(&tmp, path).map_err(IoError::of("rename into place", path))?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(IoError::of("fsync", dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates `dir` and its missing parents, readable by this user only
/// (0700): modules and pipeline documents may carry secrets.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Creates (or truncates) `path` for writing, readable by this user only
/// (0600).
pub fn private_file(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}
