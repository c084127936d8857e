//! Router tests of the server's budgets: pipelines, module versions and
//! uploads checked at once.

use std::sync::Arc;

use axum::http::{Method, StatusCode, header};
use serde_json::{Value, json};

use super::{ApiConfig, AppState, router};
use crate::manager::Manager;
use crate::registry::{Checked, Kind, ModuleStore};
use crate::runtime::Runtime;

/// `\0asm`, version 1: an empty core module.
const CORE_MODULE: &[u8] = b"\0asm\x01\0\0\0";

fn state(data: &std::path::Path, config: ApiConfig) -> AppState {
    let store = ModuleStore::open(data).unwrap();
    let state = AppState::new(store, Runtime::new().unwrap(), config);
    let manager = Arc::new(Manager::open(data, state.store.clone(), &[]).unwrap());
    state.with_pipelines(manager)
}

fn seed(state: &AppState, name: &str, bytes: &[u8]) {
    let checked = Checked {
        kind: Kind::Transform,
        exports: vec![],
    };
    state.store.add(name, bytes, checked).unwrap();
}

async fn send(
    state: &AppState,
    method: Method,
    uri: &str,
    body: &'static [u8],
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let content_type = super::guard::content_type_for(&method, uri);
    let headers: Vec<(&str, &str)> = content_type.iter().map(|t| ("content-type", *t)).collect();
    super::guard_tests::send(&router(state.clone()), method, uri, &headers, body).await
}

const SPEC: &[u8] =
    b"name: second\nkafka: { brokers: \"127.0.0.1:1\" }\nsource: { topics: [events] }\n\
    transforms:\n  - module: m\noutputs:\n  default: { topic: clean }\ndead_letter: { topic: dlq }\n";

#[tokio::test]
async fn pipelines_and_module_versions_past_their_budget_are_507() {
    let data = tempfile::tempdir().unwrap();
    let state = state(
        data.path(),
        ApiConfig {
            max_pipelines: 1,
            max_module_versions: 2,
            ..ApiConfig::default()
        },
    );
    seed(&state, "m", b"one");
    seed(&state, "n", b"two");
    let (status, _, json) = send(&state, Method::POST, "/v1/modules/o", CORE_MODULE).await;
    assert_eq!(
        (status, json),
        (
            StatusCode::INSUFFICIENT_STORAGE,
            json!({ "error": "this server holds at most 2 module versions (sluice serve \
                --max-module-versions) and has 2: delete unused versions first" })
        )
    );
    let first = std::str::from_utf8(SPEC)
        .unwrap()
        .replace("second", "first");
    state.pipelines.as_ref().unwrap().create(&first).unwrap();
    let (status, _, json) = send(&state, Method::POST, "/v1/pipelines", SPEC).await;
    assert_eq!(
        (status, json),
        (
            StatusCode::INSUFFICIENT_STORAGE,
            json!({ "error": "this server holds at most 1 pipelines (sluice serve \
                --max-pipelines): delete one first" })
        )
    );
    state.pipelines.as_ref().unwrap().shutdown();
}

#[tokio::test]
async fn uploads_past_the_checks_at_once_are_told_to_retry() {
    let data = tempfile::tempdir().unwrap();
    let state = state(
        data.path(),
        ApiConfig {
            max_checks: 1,
            ..ApiConfig::default()
        },
    );
    let busy = state.checks.clone().try_acquire_owned().unwrap();
    let (status, headers, json) = send(&state, Method::POST, "/v1/modules/m", CORE_MODULE).await;
    assert_eq!(
        (status, json),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "error": "this server is checking 1 uploads already; retry in a moment" })
        )
    );
    assert_eq!(headers[header::RETRY_AFTER], "1");
    drop(busy);
    // A free permit: the upload is checked (and refused: a core module).
    let (status, _, _) = send(&state, Method::POST, "/v1/modules/m", CORE_MODULE).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn concurrent_creations_never_pass_the_pipeline_budget() {
    let data = tempfile::tempdir().unwrap();
    let state = state(data.path(), ApiConfig::default());
    seed(&state, "m", b"one");
    let manager = state.pipelines.clone().unwrap();
    let spec = std::str::from_utf8(SPEC).unwrap();
    let created: Vec<bool> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (manager, spec) = (&manager, spec.replace("second", &format!("p{i}")));
                s.spawn(move || match manager.create_within(&spec, 3) {
                    Ok(_) => true,
                    Err(e) => {
                        assert_eq!(
                            e.to_string(),
                            "this server holds at most 3 pipelines (sluice serve \
                             --max-pipelines): delete one first"
                        );
                        false
                    }
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(created.iter().filter(|&&c| c).count(), 3, "{created:?}");
    assert_eq!(manager.list().len(), 3);
    manager.shutdown();
}
