//! Tests of the manager without the HTTP routes (those, which drive most of
//! the manager, are the router tests in `api/pipeline_tests.rs`).

use std::path::PathBuf;
use std::sync::Arc;

use super::Manager;
use crate::registry::ModuleStore;

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
