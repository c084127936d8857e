//! The module store: content-addressed components plus a versioned index, in a
//! data directory.
//!
//! ```text
//! <data>/modules/blobs/<sha256>.wasm   the bytes, named by their hash (shared by identical uploads)
//! <data>/modules/index.json            name -> last version number, versions [{version, sha256, ...}]
//! ```
//!
//! Every write is atomic: a temp file in the same directory, fsynced, renamed
//! into place, then the directory fsynced. A new version's blob is written
//! before the index names it and a deleted version leaves the index before its
//! blob goes, so a crash leaves at most an unreferenced blob, which the next
//! [`ModuleStore::open`] removes (with any temp file). Version numbers are
//! never reused: deleting the newest version and uploading again gives the
//! next number, so `name@version` always means the same bytes.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::runtime::ModuleKind;

const INDEX_FORMAT: u32 = 1;

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
    #[error("cannot {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("the module store is damaged: {0}")]
    Corrupt(String),
    #[error("{0} is in use by another process (one `sluice serve` per data directory)")]
    Locked(PathBuf),
}

impl StoreError {
    fn io(what: impl std::fmt::Display, path: &Path) -> impl FnOnce(io::Error) -> Self {
        let what = format!("{what} {}", path.display());
        move |source| Self::Io { what, source }
    }
}

/// Checks a module name: `^[a-z0-9][a-z0-9-]{0,62}$` (so it is a safe file
/// and URL path segment: no dots, slashes or upper case).
pub fn validate_name(name: &str) -> Result<(), StoreError> {
    let bytes = name.as_bytes();
    let valid = (1..=63).contains(&bytes.len())
        && bytes[0] != b'-'
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if valid {
        Ok(())
    } else {
        Err(StoreError::InvalidName(name.to_owned()))
    }
}

/// Parses a version: a positive integer without sign or leading zeros.
pub fn parse_version(text: &str) -> Result<u32, StoreError> {
    let invalid = || StoreError::InvalidVersion(text.to_owned());
    if text.is_empty() || text.starts_with('0') || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    text.parse().map_err(|_| invalid())
}

/// `name` or `name@version`, as users write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleRef {
    pub name: String,
    /// `None`: every version (or the latest, depending on the operation).
    pub version: Option<u32>,
}

impl FromStr for ModuleRef {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self, StoreError> {
        let (name, version) = match text.split_once('@') {
            Some((name, version)) => (name, Some(parse_version(version)?)),
            None => (text, None),
        };
        validate_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            version,
        })
    }
}

impl std::fmt::Display for ModuleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.version {
            Some(version) => write!(f, "{}@{version}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Which Sluice world a stored component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Transform,
    Aggregate,
}

impl From<ModuleKind> for Kind {
    fn from(kind: ModuleKind) -> Self {
        match kind {
            ModuleKind::Transform => Kind::Transform,
            ModuleKind::Aggregate => Kind::Aggregate,
        }
    }
}

/// One stored version of a module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionMeta {
    pub version: u32,
    /// Hex SHA-256 of the component; also the blob's file name.
    pub sha256: String,
    pub size: u64,
    pub kind: Kind,
    /// The component's top-level exports (e.g. `sluice:transform/transform@0.1.0`).
    pub exports: Vec<String>,
    /// RFC 3339, UTC.
    pub uploaded_at: String,
}

/// What a new version is, as established by validating it.
#[derive(Debug, Clone)]
pub struct Checked {
    pub kind: Kind,
    pub exports: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Index {
    format: u32,
    modules: BTreeMap<String, Entry>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    /// The highest version ever given out (versions are never reused).
    last_version: u32,
    /// Oldest first. Empty once every version was deleted.
    versions: Vec<VersionMeta>,
}

/// The store. Operations block (file I/O); call them off the async runtime.
#[derive(Debug)]
pub struct ModuleStore {
    dir: PathBuf,
    index: Mutex<Index>,
    /// Holds an exclusive lock on `<data>/modules/.lock` while the store is open.
    _lock: fs::File,
}

impl ModuleStore {
    /// Opens (creating if needed) the store under `<data>/modules`, and
    /// removes temp files and blobs no version refers to.
    pub fn open(data: &Path) -> Result<Self, StoreError> {
        let dir = data.join("modules");
        let blobs = dir.join("blobs");
        private_dir(&blobs).map_err(StoreError::io("create", &blobs))?;
        let lock_path = dir.join(".lock");
        let lock = private_file(&lock_path).map_err(StoreError::io("create", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(StoreError::Locked(dir)),
            Err(fs::TryLockError::Error(e)) => return Err(StoreError::io("lock", &lock_path)(e)),
        }
        let path = dir.join("index.json");
        let index = match fs::read(&path) {
            Ok(bytes) => {
                let index: Index = serde_json::from_slice(&bytes)
                    .map_err(|e| StoreError::Corrupt(format!("{}: {e}", path.display())))?;
                if index.format != INDEX_FORMAT {
                    return Err(StoreError::Corrupt(format!(
                        "{}: unknown format {} (this Sluice reads format {INDEX_FORMAT})",
                        path.display(),
                        index.format
                    )));
                }
                index
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Index {
                format: INDEX_FORMAT,
                modules: BTreeMap::new(),
            },
            Err(e) => return Err(StoreError::io("read", &path)(e)),
        };
        let store = Self {
            dir,
            index: Mutex::new(index),
            _lock: lock,
        };
        store.collect_garbage()?;
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // The index is only replaced after its file was written, so a panic
        // elsewhere cannot leave it half-updated.
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn blob_path(&self, sha256: &str) -> PathBuf {
        self.dir.join("blobs").join(format!("{sha256}.wasm"))
    }

    /// Every module that has at least one version, by name, oldest version first.
    pub fn list(&self) -> Vec<(String, Vec<VersionMeta>)> {
        self.lock()
            .modules
            .iter()
            .filter(|(_, entry)| !entry.versions.is_empty())
            .map(|(name, entry)| (name.clone(), entry.versions.clone()))
            .collect()
    }

    /// A module's versions, oldest first.
    pub fn versions(&self, name: &str) -> Result<Vec<VersionMeta>, StoreError> {
        validate_name(name)?;
        match self.lock().modules.get(name) {
            Some(entry) if !entry.versions.is_empty() => Ok(entry.versions.clone()),
            _ => Err(StoreError::NotFound(name.to_owned())),
        }
    }

    /// One version's metadata.
    pub fn version(&self, name: &str, version: u32) -> Result<VersionMeta, StoreError> {
        self.versions(name)?
            .into_iter()
            .find(|v| v.version == version)
            .ok_or_else(|| StoreError::VersionNotFound {
                name: name.to_owned(),
                version,
            })
    }

    /// The newest version, if the module has any.
    pub fn latest(&self, name: &str) -> Option<VersionMeta> {
        let index = self.lock();
        index.modules.get(name)?.versions.last().cloned()
    }

    /// One version's bytes, checked against its hash.
    pub fn read(&self, name: &str, version: u32) -> Result<Vec<u8>, StoreError> {
        let meta = self.version(name, version)?;
        let path = self.blob_path(&meta.sha256);
        let bytes = fs::read(&path).map_err(StoreError::io("read", &path))?;
        if hex::encode(Sha256::digest(&bytes)) != meta.sha256 {
            return Err(StoreError::Corrupt(format!(
                "{} does not match its hash",
                path.display()
            )));
        }
        Ok(bytes)
    }

    /// Stores `bytes` (already validated) as the next version of `name`.
    /// Identical to the latest version: returns that version and `false`.
    pub fn add(
        &self,
        name: &str,
        bytes: &[u8],
        checked: Checked,
    ) -> Result<(VersionMeta, bool), StoreError> {
        validate_name(name)?;
        let sha256 = hex::encode(Sha256::digest(bytes));
        // The blob is written outside the lock (fsyncing megabytes would
        // hold up every reader); blobs are immutable, so racing writers of
        // one blob write the same bytes.
        let blob = self.blob_path(&sha256);
        if !blob.exists() {
            write_atomic(&blob, bytes)?;
        }
        let mut index = self.lock();
        let entry = index.modules.get(name);
        if let Some(latest) = entry.and_then(|e| e.versions.last())
            && latest.sha256 == sha256
        {
            return Ok((latest.clone(), false));
        }
        let version = entry
            .map_or(0, |e| e.last_version)
            .checked_add(1)
            .ok_or_else(|| {
                StoreError::Corrupt(format!("module `{name}` has run out of versions"))
            })?;
        if !blob.exists() {
            // Deleted meanwhile with the last version that used it.
            write_atomic(&blob, bytes)?;
        }
        let meta = VersionMeta {
            version,
            sha256,
            size: bytes.len() as u64,
            kind: checked.kind,
            exports: checked.exports,
            uploaded_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        };
        let mut updated = index
            .modules
            .get(name)
            .map_or_else(Vec::new, |e| e.versions.clone());
        updated.push(meta.clone());
        self.commit(&mut index, name, version, updated)?;
        Ok((meta, true))
    }

    /// Deletes one version (`Some`) or every version of a module, unless
    /// `users` names a pipeline that uses one of them. Returns the deleted
    /// version numbers.
    pub fn remove(
        &self,
        name: &str,
        version: Option<u32>,
        users: &dyn Fn(&str, u32) -> Vec<String>,
    ) -> Result<Vec<u32>, StoreError> {
        validate_name(name)?;
        let mut index = self.lock();
        let entry = match index.modules.get(name) {
            Some(entry) if !entry.versions.is_empty() => entry,
            _ => return Err(StoreError::NotFound(name.to_owned())),
        };
        let (doomed, kept): (Vec<VersionMeta>, Vec<VersionMeta>) = entry
            .versions
            .iter()
            .cloned()
            .partition(|v| version.is_none_or(|n| n == v.version));
        if doomed.is_empty() {
            return Err(StoreError::VersionNotFound {
                name: name.to_owned(),
                version: version.unwrap_or_default(),
            });
        }
        let mut pipelines: Vec<String> =
            doomed.iter().flat_map(|v| users(name, v.version)).collect();
        if !pipelines.is_empty() {
            pipelines.sort();
            pipelines.dedup();
            let module = ModuleRef {
                name: name.to_owned(),
                version,
            };
            return Err(StoreError::InUse {
                module: module.to_string(),
                pipelines,
            });
        }
        let last_version = entry.last_version;
        self.commit(&mut index, name, last_version, kept)?;
        for meta in &doomed {
            let shared = index
                .modules
                .values()
                .flat_map(|e| &e.versions)
                .any(|v| v.sha256 == meta.sha256);
            if !shared {
                let path = self.blob_path(&meta.sha256);
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        tracing::warn!("cannot delete {}: {e}", path.display());
                    }
                    _ => {}
                }
            }
        }
        Ok(doomed.iter().map(|v| v.version).collect())
    }

    /// Writes the index with `name`'s entry replaced, then updates memory.
    fn commit(
        &self,
        index: &mut Index,
        name: &str,
        last_version: u32,
        versions: Vec<VersionMeta>,
    ) -> Result<(), StoreError> {
        let previous = index.modules.insert(
            name.to_owned(),
            Entry {
                last_version,
                versions,
            },
        );
        let json = serde_json::to_vec_pretty(&*index).expect("the index serializes");
        let written = write_atomic(&self.dir.join("index.json"), &json);
        if written.is_err() {
            match previous {
                Some(previous) => index.modules.insert(name.to_owned(), previous),
                None => index.modules.remove(name),
            };
        }
        written
    }

    fn collect_garbage(&self) -> Result<(), StoreError> {
        let blobs = self.dir.join("blobs");
        let index = self.lock();
        let referenced: std::collections::HashSet<String> = index
            .modules
            .values()
            .flat_map(|e| &e.versions)
            .map(|v| format!("{}.wasm", v.sha256))
            .collect();
        for dir in [&self.dir, &blobs] {
            let entries = fs::read_dir(dir).map_err(StoreError::io("list", dir))?;
            for entry in entries.flatten() {
                let file = entry.file_name().to_string_lossy().into_owned();
                let stale = file.starts_with(".tmp-")
                    || (dir == &blobs && file.ends_with(".wasm") && !referenced.contains(&file));
                if stale {
                    tracing::info!("module store: removing stale {file}");
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }
}

/// Writes `bytes` to `path` atomically and durably: temp file, fsync, rename,
/// fsync of the directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().expect("store paths have a parent");
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = private_file(&tmp).map_err(StoreError::io("create", &tmp))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(StoreError::io("write", &tmp))?;
        fs::rename(&tmp, path).map_err(StoreError::io("rename into place", path))?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(StoreError::io("fsync", dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates `dir` and its missing parents, readable by this user only
/// (0700): modules and pipeline documents may carry secrets.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Creates (or truncates) `path` for writing, readable by this user only
/// (0600).
pub fn private_file(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked() -> Checked {
        Checked {
            kind: Kind::Transform,
            exports: vec!["sluice:transform/transform@0.1.0".into()],
        }
    }

    fn none(_: &str, _: u32) -> Vec<String> {
        Vec::new()
    }

    #[test]
    fn names_versions_and_references() {
        for ok in ["a", "0", "filter-heartbeats", "a-", &"x".repeat(63)] {
            validate_name(ok).unwrap();
        }
        for bad in [
            "",
            "-a",
            "A",
            "a.b",
            "..",
            "a/b",
            "a_b",
            "é",
            &"x".repeat(64),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_version("12").unwrap(), 12);
        for bad in ["0", "01", "+1", "-1", "", "1.0", "99999999999"] {
            assert!(parse_version(bad).is_err(), "{bad:?}");
        }
        let r: ModuleRef = "agg@3".parse().unwrap();
        assert_eq!((r.name.as_str(), r.version), ("agg", Some(3)));
        assert_eq!(r.to_string(), "agg@3");
        assert_eq!("agg".parse::<ModuleRef>().unwrap().version, None);
        assert!("agg@".parse::<ModuleRef>().is_err());
        assert!("Agg@1".parse::<ModuleRef>().is_err());
    }

    #[test]
    fn versions_persist_are_content_addressed_and_never_reused() {
        let data = tempfile::tempdir().unwrap();
        let store = ModuleStore::open(data.path()).unwrap();
        let (v1, created) = store.add("m", b"one", checked()).unwrap();
        assert!(created);
        assert_eq!((v1.version, v1.size), (1, 3));
        let (again, created) = store.add("m", b"one", checked()).unwrap();
        assert_eq!((again.version, created), (1, false));
        assert_eq!(store.add("m", b"two", checked()).unwrap().0.version, 2);
        // The same bytes under another name share the blob.
        assert_eq!(store.add("other", b"two", checked()).unwrap().0.version, 1);
        let blobs = data.path().join("modules/blobs");
        assert_eq!(fs::read_dir(&blobs).unwrap().count(), 2);

        assert_eq!(store.remove("m", Some(2), &none).unwrap(), [2]);
        assert_eq!(
            fs::read_dir(&blobs).unwrap().count(),
            2,
            "still used by `other`"
        );
        assert_eq!(store.add("m", b"three", checked()).unwrap().0.version, 3);

        fs::write(blobs.join(format!("{}.wasm", "0".repeat(64))), b"orphan").unwrap();
        fs::write(data.path().join("modules/.tmp-1-1"), b"half").unwrap();
        drop(store);
        let store = ModuleStore::open(data.path()).unwrap();
        let versions: Vec<u32> = store
            .versions("m")
            .unwrap()
            .iter()
            .map(|v| v.version)
            .collect();
        assert_eq!(versions, [1, 3]);
        assert_eq!(store.read("m", 3).unwrap(), b"three");
        assert_eq!(
            fs::read_dir(&blobs).unwrap().count(),
            3,
            "the orphan is gone"
        );
        assert!(!data.path().join("modules/.tmp-1-1").exists());

        assert_eq!(store.remove("m", None, &none).unwrap(), [1, 3]);
        assert!(matches!(store.versions("m"), Err(StoreError::NotFound(_))));
        assert_eq!(store.list().len(), 1);
        assert_eq!(store.add("m", b"four", checked()).unwrap().0.version, 4);
    }

    #[test]
    fn removal_is_refused_while_in_use() {
        let data = tempfile::tempdir().unwrap();
        let store = ModuleStore::open(data.path()).unwrap();
        store.add("m", b"one", checked()).unwrap();
        store.add("m", b"two", checked()).unwrap();
        let users = |_: &str, v: u32| {
            if v == 1 {
                vec!["orders".to_string(), "audit".to_string()]
            } else {
                Vec::new()
            }
        };
        let err = store.remove("m", None, &users).unwrap_err();
        assert_eq!(
            err.to_string(),
            "module `m` is used by pipeline(s) audit, orders; remove it from them first"
        );
        assert_eq!(store.remove("m", Some(2), &users).unwrap(), [2]);
        assert!(matches!(
            store.remove("m", Some(2), &users),
            Err(StoreError::VersionNotFound { version: 2, .. })
        ));
        assert!(matches!(
            store.remove("nope", None, &users),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn one_process_per_data_directory() {
        let data = tempfile::tempdir().unwrap();
        let store = ModuleStore::open(data.path()).unwrap();
        let err = ModuleStore::open(data.path()).unwrap_err().to_string();
        assert!(
            err.ends_with("is in use by another process (one `sluice serve` per data directory)"),
            "{err}"
        );
        drop(store);
        ModuleStore::open(data.path()).unwrap();
    }

    #[test]
    fn a_damaged_index_is_an_error() {
        let data = tempfile::tempdir().unwrap();
        fs::create_dir_all(data.path().join("modules")).unwrap();
        fs::write(data.path().join("modules/index.json"), b"{").unwrap();
        let err = ModuleStore::open(data.path()).unwrap_err().to_string();
        assert!(err.starts_with("the module store is damaged: "), "{err}");
    }
}
