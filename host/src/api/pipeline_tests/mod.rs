//! Router tests (`oneshot`, no socket, no broker) of the pipeline routes and
//! `/metrics`. The stored "modules" are fake bytes, so every run fails while
//! loading its first step, before it would reach Kafka: that is also the
//! test of how a failed run is reported. Pipelines that really run, through
//! the broker and a restarted server, are in `tests/integration/serve.rs`.
//!
//! This file holds the fixture; the tests are in `lifecycle.rs`,
//! `control.rs` (pause, resume, swap, restarts), `documents.rs`
//! (`/metrics`, OpenAPI) and `spec_files.rs` (pipelines of spec files,
//! readiness).

mod control;
mod documents;
mod lifecycle;
mod spec_files;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{ApiConfig, AppState, router};
use crate::manager::{Manager, SpecFile};
use crate::registry::{Checked, Kind, ModuleStore};
use crate::runtime::Runtime;

const TOKEN: &str = "s3cret";

fn runtime() -> Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new().unwrap()).clone()
}

struct Fixture {
    app: Router,
    state: AppState,
    data: tempfile::TempDir,
}

fn start(data: tempfile::TempDir, token: Option<&str>) -> Fixture {
    start_with(data, token, &[])
}

/// A server that also runs the pipelines of spec `files`, as `sluice serve
/// --pipeline FILE` does (their modules are not tried: they are fake).
fn start_with(data: tempfile::TempDir, token: Option<&str>, files: &[PathBuf]) -> Fixture {
    let store = ModuleStore::open(data.path()).unwrap();
    let config = ApiConfig {
        token: token.map(str::to_owned),
        ..ApiConfig::default()
    };
    let state = AppState::new(store, runtime(), config);
    let manager = Arc::new(Manager::open(data.path(), state.store.clone(), &[]).unwrap());
    for file in files {
        manager.define(SpecFile::read(file).unwrap()).unwrap();
    }
    manager.restore();
    let state = state.with_pipelines(manager);
    Fixture {
        app: router(state.clone()),
        state,
        data,
    }
}

fn open() -> Fixture {
    start(tempfile::tempdir().unwrap(), None)
}

/// A fixture whose manager restarts failed pipelines, as `sluice serve`'s
/// does. (The others do not, so that a failed run stays failed.)
fn open_supervised() -> Fixture {
    let f = open();
    f.state.pipelines.as_ref().unwrap().supervise().unwrap();
    f
}

impl Fixture {
    /// Stops the runs and frees the data directory, as a server exit does.
    fn restart(self) -> Fixture {
        self.restart_with(&[])
    }

    /// Like [`Fixture::restart`], the new server running spec `files`.
    fn restart_with(self, files: &[PathBuf]) -> Fixture {
        let Fixture { app, state, data } = self;
        state.pipelines.as_ref().unwrap().shutdown();
        drop((app, state));
        start_with(data, None, files)
    }
}

/// Stores fake bytes directly (the store does not look inside them).
fn seed(f: &Fixture, name: &str, bytes: &[u8], kind: Kind) -> String {
    let checked = Checked {
        kind,
        exports: vec![],
    };
    f.state.store.add(name, bytes, checked).unwrap().0.sha256
}

fn spec(name: &str, module: &str) -> String {
    format!(
        "name: {name}\nkafka: {{ brokers: \"127.0.0.1:1\" }}\nsource: {{ topics: [events] }}\n\
         transforms:\n  - module: {module}\n    config: {{ field: event_type }}\n\
         outputs:\n  default: {{ topic: clean }}\ndead_letter: {{ topic: dlq }}\n"
    )
}

async fn send(f: &Fixture, method: Method, uri: &str, body: &str) -> (StatusCode, Value) {
    let (status, bytes) = send_text(f, method, uri, body, Some(TOKEN)).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn send_text(
    f: &Fixture,
    method: Method,
    uri: &str,
    body: &str,
    token: Option<&str>,
) -> (StatusCode, Vec<u8>) {
    let mut request = Request::builder().method(method.clone()).uri(uri);
    if let Some(content_type) = super::guard::content_type_for(&method, uri) {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request.body(Body::from(body.to_owned())).unwrap();
    let response = f.app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, bytes.to_vec())
}

fn error(json: &Value) -> &str {
    json["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {json}"))
}

/// Polls `GET /v1/pipelines/{name}` until its status is `status`.
async fn wait_for(f: &Fixture, name: &str, status: &str) -> Value {
    wait_until(f, name, status, |doc| doc["status"] == status).await
}

/// Polls `GET /v1/pipelines/{name}` until `done` holds for the document.
async fn wait_until(f: &Fixture, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, doc) = send(f, Method::GET, &format!("/v1/pipelines/{name}"), "").await;
        assert_eq!(code, StatusCode::OK, "{doc}");
        if done(&doc) {
            return doc;
        }
        assert!(Instant::now() < deadline, "never {what}: {doc}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
