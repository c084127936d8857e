//! The store's own tests: names, versions, removal, locking, damage.

use std::fs;

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
