//! The store itself: the index of versions and the blobs it names.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::files::{IoError, private_dir, private_file, write_atomic};
use super::{ModuleRef, StoreError, validate_name};
use crate::runtime::{Inspection, ModuleKind};

const INDEX_FORMAT: u32 = 1;

/// Which Sluice world a stored component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Transform,
    Aggregate,
    Join,
}

impl From<ModuleKind> for Kind {
    fn from(kind: ModuleKind) -> Self {
        match kind {
            ModuleKind::Transform => Kind::Transform,
            ModuleKind::Aggregate => Kind::Aggregate,
            ModuleKind::Join => Kind::Join,
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

impl From<Inspection> for Checked {
    fn from(inspection: Inspection) -> Self {
        Self {
            kind: inspection.kind.into(),
            exports: inspection.exports,
        }
    }
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
        private_dir(&blobs).map_err(IoError::of("create", &blobs))?;
        let lock_path = dir.join(".lock");
        let lock = private_file(&lock_path).map_err(IoError::of("create", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(StoreError::Locked(dir)),
            Err(fs::TryLockError::Error(e)) => {
                return Err(IoError::of("lock", &lock_path)(e).into());
            }
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
            Err(e) => return Err(IoError::of("read", &path)(e).into()),
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

    /// Where the blob of the bytes with hash `sha256` is (or would be).
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
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
        let bytes = fs::read(&path).map_err(IoError::of("read", &path))?;
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
        let written = write_atomic(&self.dir.join("index.json"), &json).map_err(StoreError::from);
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
            let entries = fs::read_dir(dir).map_err(IoError::of("list", dir))?;
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
