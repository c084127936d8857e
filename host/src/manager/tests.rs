//! Tests of the manager without the HTTP routes (those, which drive most of
//! the manager, are the router tests in `api/pipeline_tests.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Manager, SpecFile};
use crate::registry::ModuleStore;
use crate::runtime::Runtime;

#[test]
fn allowed_directories_must_be_outside_the_data_directory() {
    let data = tempfile::tempdir().unwrap();
    let store = Arc::new(ModuleStore::open(data.path()).unwrap());
    let data_dir = std::fs::canonicalize(data.path()).unwrap();
    for allowed in [
        data_dir.clone(),
        data_dir.join("pipelines"),
        PathBuf::from("/"),
    ] {
        let e = Manager::open(data.path(), store.clone(), std::slice::from_ref(&allowed))
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            e,
            format!(
                "allowed directory {}: must be outside the data directory {} (and not contain it)",
                allowed.display(),
                data_dir.display()
            )
        );
    }
    let elsewhere = tempfile::tempdir().unwrap();
    Manager::open(data.path(), store, &[elsewhere.path().to_path_buf()]).unwrap();
}

/// `<dir>/<file>`: a spec of pipeline `name` whose step runs `module`.
fn spec_file(dir: &Path, file: &str, name: &str, module: &str) -> PathBuf {
    let path = dir.join(file);
    let text = format!(
        "name: {name}\nkafka: {{ brokers: \"127.0.0.1:1\" }}\nsource: {{ topics: [events] }}\n\
         transforms:\n  - module: {module}\noutputs:\n  default: {{ topic: clean }}\n\
         dead_letter: {{ topic: dlq }}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_spec_file_is_checked_as_sluice_validate_checks_it() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new().unwrap();
    let error = |path: &Path| SpecFile::load(path, &runtime).unwrap_err().to_string();
    let missing = dir.path().join("missing.yaml");
    assert!(
        error(&missing).starts_with(&format!("spec: cannot read {}: ", missing.display())),
        "{}",
        error(&missing)
    );
    let unbuilt = spec_file(dir.path(), "unbuilt.yaml", "orders", "filter.wasm");
    let message = error(&unbuilt);
    assert!(message.starts_with("transforms[0].module: "), "{message}");
    std::fs::write(dir.path().join("filter.wasm"), b"not a component").unwrap();
    let message = error(&unbuilt);
    assert!(message.starts_with("transforms[0] (filter): "), "{message}");
    let named = spec_file(dir.path(), "named.yaml", "Orders", "filter.wasm");
    assert!(error(&named).starts_with("name: "), "{}", error(&named));
}

#[test]
fn two_spec_files_cannot_define_one_pipeline() {
    let data = tempfile::tempdir().unwrap();
    let store = Arc::new(ModuleStore::open(data.path()).unwrap());
    let manager = Manager::open(data.path(), store, &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("filter.wasm"), b"not a component").unwrap();
    let a = spec_file(dir.path(), "a.yaml", "orders", "filter.wasm");
    let b = spec_file(dir.path(), "b.yaml", "orders", "filter.wasm");
    manager.define(SpecFile::read(&a).unwrap()).unwrap();
    let e = manager.define(SpecFile::read(&b).unwrap()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{} and {} both define pipeline `orders`: a pipeline has one spec file",
            a.display(),
            b.display()
        )
    );
}
