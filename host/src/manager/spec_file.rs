//! Pipelines defined by the operator's spec files (`sluice serve --pipeline
//! FILE`), the way a Kubernetes ConfigMap declares what a pod runs.
//!
//! A file is trusted as `sluice run` trusts its spec: it is loaded the same
//! way ([`crate::spec::parse`] from the file's directory: modules are
//! component files, checkpoints and Parquet output go where the spec says)
//! and checked as `sluice validate` checks it (every module compiled and
//! started with its config), once, when the server starts.
//!
//! # Promises
//!
//! - The file wins. Its pipeline is never stored in the data directory: each
//!   start of the server runs the file's spec as it is then, desired
//!   `running`, whatever the API did to the pipeline before (a pause or a
//!   stop lasts until the server stops). The run resumes from the spec's
//!   checkpoints, or from the consumer group's committed offsets.
//! - A pipeline of the same name stored in the data directory (created
//!   through the API) is set aside while a file defines the name: not run,
//!   not listed, its document, files and module versions kept (still held,
//!   so that it can run again); it is back when the server starts without
//!   that file.
//! - Through the API a file's pipeline is read, paused, resumed, stopped and
//!   started like any other; what would change its definition (swapping a
//!   module, deleting it, creating another under its name) is refused with
//!   [`ManagerError::DefinedByFile`], which says to change the file.
//!
//! # Failures
//!
//! [`SpecFile::load`] names the field that is wrong, or the module that
//! does not compile or start; the server adds the file's path and does not
//! start. Two files defining one name are refused by [`Manager::define`].

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::{Desired, Entry, FORMAT, Manager, ManagerError, Origin, Stored, lock, now};
use crate::registry::validate_name;
use crate::runtime::Runtime;
use crate::spec::{PipelineSpec, SpecError};

/// A pipeline spec file, loaded and checked.
#[derive(Debug)]
pub struct SpecFile {
    path: PathBuf,
    spec: PipelineSpec,
    /// The file's document (YAML as its JSON equivalent), which the status
    /// document shows.
    document: Value,
}

impl SpecFile {
    /// Reads the spec at `path` as `sluice run` does, and checks it as
    /// `sluice validate` does: every field, and every module compiled and
    /// started (its `init` run with its config) on `runtime`.
    pub fn load(path: &Path, runtime: &Runtime) -> Result<Self, ManagerError> {
        let file = Self::read(path)?;
        crate::pipeline::load_steps(&file.spec, runtime)
            .map_err(|e| ManagerError::Invalid(format!("{e:#}")))?;
        Ok(file)
    }

    /// Like [`SpecFile::load`], without trying the modules (only their
    /// files must exist).
    pub(crate) fn read(path: &Path) -> Result<Self, ManagerError> {
        let text = fs::read_to_string(path)
            .map_err(|e| SpecError::new("spec", format!("cannot read {}: {e}", path.display())))?;
        // `spec::load`'s base: the file's directory.
        let spec = crate::spec::parse(&text, path.parent().unwrap_or(Path::new(".")))?;
        if validate_name(&spec.name).is_err() {
            let message = ManagerError::InvalidName(spec.name.clone()).to_string();
            return Err(SpecError::new("name", message).into());
        }
        let document = serde_yaml_ng::from_str(&text)
            .map_err(|e| SpecError::new("spec", format!("not a YAML or JSON document: {e}")))?;
        Ok(Self {
            path: path.to_path_buf(),
            spec,
            document,
        })
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }
}

impl Manager {
    /// Adds the pipeline of a spec file, desired `running`, for
    /// [`Manager::restore`] to start: call this first. A pipeline of that
    /// name stored in the data directory is set aside (see the module
    /// docs); one another file defined is an error.
    pub fn define(&self, file: SpecFile) -> Result<(), ManagerError> {
        let SpecFile {
            path,
            spec,
            document,
        } = file;
        let name = spec.name.clone();
        let mut entries = lock(&self.entries);
        if let Some(other) = entries.get(&name) {
            if let Origin::File { path: first, .. } = &other.origin {
                return Err(ManagerError::Invalid(format!(
                    "{} and {} both define pipeline `{name}`: a pipeline has one spec file",
                    first.display(),
                    path.display()
                )));
            }
            other.halt(&mut lock(&other.control));
            tracing::warn!(
                "pipeline {name}: defined by {}; the pipeline of that name in the data directory \
                 is set aside (kept, not run) while the file defines it",
                path.display()
            );
        }
        let stored = Stored {
            format: FORMAT,
            name: name.clone(),
            spec: document,
            modules: Vec::new(),
            desired: Desired::Running,
            created_at: now(),
        };
        let origin = Origin::File {
            path,
            spec: Box::new(spec),
        };
        entries.insert(name, Arc::new(Entry::new(stored, origin)));
        Ok(())
    }
}
