//! The module versions a pipeline holds: its spec's references resolved
//! against the module store, the blobs linked under its directory, and the
//! record of which pipeline uses which version (see the invariants in the
//! parent module).

use std::fs;
use std::path::PathBuf;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Manager, ManagerError, StepModule, Usage, lock};
use crate::registry::IoError;
use crate::registry::{ModuleRef, StoreError};
use crate::spec::{Confinement, PipelineSpec, SpecError};

impl Manager {
    /// The pipelines using `module@version`: running it, or swapping to it.
    pub fn users(&self, module: &str, version: u32) -> Vec<String> {
        let uses =
            |held: &Vec<(String, u32)>| held.iter().any(|(m, v)| m == module && *v == version);
        let mut users: Vec<String> = lock(&self.usage)
            .iter()
            .filter(|(_, held)| uses(held))
            .map(|(name, _)| name.clone())
            .collect();
        for (name, held) in lock(&self.trials).iter() {
            if uses(held) && !users.contains(name) {
                users.push(name.clone());
            }
        }
        users.sort();
        users
    }

    /// Resolves the spec's module references (`pinned`: the versions
    /// recorded at creation) and parses it. Registers the versions as used
    /// by `name`; on failure, releases them.
    pub(super) fn resolve(
        &self,
        name: &str,
        value: &Value,
        pinned: Option<&[StepModule]>,
    ) -> Result<(PipelineSpec, Vec<StepModule>), ManagerError> {
        let mut value = value.clone();
        let mut refs = Vec::new();
        if let Some(Value::Array(transforms)) = value.get_mut("transforms") {
            for (i, t) in transforms.iter_mut().enumerate() {
                let field = format!("transforms[{i}].module");
                let Some(Value::String(text)) = t.get("module") else {
                    continue; // the spec parser names the problem
                };
                let mut module: ModuleRef = text.parse().map_err(|_| {
                    SpecError::new(
                        &field,
                        format!(
                            "`{text}` is not a module reference: write `name` or `name@version` of a module \
                             pushed to this server (sluice module push)"
                        ),
                    )
                })?;
                if let Some(pin) = pinned.and_then(|p| p.get(i)) {
                    module.version = Some(pin.version);
                }
                let version = match module.version {
                    Some(v) => v,
                    None => match self.store.latest(&module.name) {
                        Some(meta) => meta.version,
                        None => {
                            return Err(ManagerError::Module {
                                field,
                                source: StoreError::NotFound(module.name),
                            });
                        }
                    },
                };
                let aggregate = super::step_kind(t);
                let step = match t.get("name") {
                    Some(Value::String(step)) => step.clone(),
                    _ => module.name.clone(),
                };
                if let Some(object) = t.as_object_mut() {
                    object.insert("name".into(), Value::String(step.clone()));
                }
                refs.push((i, field, module.name, version, aggregate, step));
            }
        }
        // Hold first, then check (see the module docs).
        let held: Vec<(String, u32)> = refs.iter().map(|r| (r.2.clone(), r.3)).collect();
        lock(&self.usage).insert(name.to_owned(), held);
        let result = (|| {
            let mut modules = Vec::new();
            for (i, field, module, version, aggregate, step) in refs {
                let meta = self.store.version(&module, version).map_err(|source| {
                    ManagerError::Module {
                        field: field.clone(),
                        source,
                    }
                })?;
                if let Some(mismatch) = super::kind_mismatch(aggregate, meta.kind) {
                    return Err(ManagerError::WrongKind {
                        field,
                        module: format!("{module}@{version}"),
                        mismatch,
                    });
                }
                let file = self.module_file(name, &module, version, &meta.sha256)?;
                value["transforms"][i]["module"] = Value::String(file.display().to_string());
                modules.push(StepModule {
                    step,
                    module,
                    version,
                    sha256: meta.sha256,
                });
            }
            let text = serde_json::to_string(&value).expect("a JSON value serializes");
            let confinement =
                Confinement::new(self.data.join("pipelines").join(name), self.allowed.clone());
            let spec = crate::spec::parse_confined(&text, &confinement)?;
            Ok((spec, modules))
        })();
        if result.is_err() {
            // A pipeline that exists keeps its recorded versions held.
            match pinned {
                Some(modules) => self.hold(name, modules),
                None => {
                    self.release(name);
                    let _ = fs::remove_dir_all(self.modules_dir(name));
                }
            }
        }
        result
    }

    pub(super) fn modules_dir(&self, name: &str) -> PathBuf {
        self.data.join("pipelines").join(name).join(".modules")
    }

    /// `<data>/pipelines/<name>/.modules/<version>/<module>.wasm`: a hard
    /// link to (or, failing that, a copy of) the store's blob. Named after
    /// the module, because the runtime names a step's module (in logs and
    /// dead-letter headers) after its file.
    pub(super) fn module_file(
        &self,
        name: &str,
        module: &str,
        version: u32,
        sha256: &str,
    ) -> Result<PathBuf, ManagerError> {
        let dir = self.modules_dir(name).join(version.to_string());
        let file = dir.join(format!("{module}.wasm"));
        let current = fs::read(&file)
            .map(|bytes| hex::encode(Sha256::digest(bytes)) == sha256)
            .unwrap_or(false);
        if !current {
            let blob = self.store.blob_path(sha256);
            crate::registry::private_dir(&dir).map_err(IoError::of("create", &dir))?;
            let _ = fs::remove_file(&file);
            fs::hard_link(&blob, &file)
                .or_else(|_| fs::copy(&blob, &file).map(drop))
                .map_err(IoError::of("link the module into", &file))?;
        }
        Ok(file)
    }

    pub(super) fn hold(&self, name: &str, modules: &[StepModule]) {
        hold(&self.usage, name, modules);
    }

    pub(super) fn release(&self, name: &str) {
        lock(&self.usage).remove(name);
        lock(&self.trials).remove(name);
    }
}

/// Records that pipeline `name` uses `modules` (and nothing else).
pub(super) fn hold(usage: &Usage, name: &str, modules: &[StepModule]) {
    let held = modules
        .iter()
        .map(|m| (m.module.clone(), m.version))
        .collect();
    lock(usage).insert(name.to_owned(), held);
}
