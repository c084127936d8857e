//! Router tests (`oneshot`, no socket, no broker) of the pipeline routes and
//! `/metrics`. The stored "modules" are fake bytes, so every run fails while
//! loading its first step, before it would reach Kafka: that is also the
//! test of how a failed run is reported. Pipelines that really run, through
//! the broker and a restarted server, are in `tests/integration/serve.rs`.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{ApiConfig, AppState, router};
use crate::manager::Manager;
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
    let store = ModuleStore::open(data.path()).unwrap();
    let config = ApiConfig {
        token: token.map(str::to_owned),
        ..ApiConfig::default()
    };
    let state = AppState::new(store, runtime(), config);
    let manager = Arc::new(Manager::open(data.path(), state.store.clone(), &[]).unwrap());
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
        let Fixture { app, state, data } = self;
        state.pipelines.as_ref().unwrap().shutdown();
        drop((app, state));
        start(data, None)
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

#[tokio::test]
async fn create_show_stop_start_delete_and_a_failed_run() {
    let f = open();
    let sha = seed(&f, "filter", b"not a component", Kind::Transform);
    seed(&f, "filter", b"version two", Kind::Transform);

    let (status, doc) = send(
        &f,
        Method::POST,
        "/v1/pipelines",
        &spec("orders", "filter@1"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{doc}");
    assert_eq!(doc["name"], "orders");
    assert_eq!(doc["desired"], "running");
    assert_eq!(
        doc["modules"],
        json!([{ "step": "filter", "module": "filter", "version": 1, "sha256": sha }])
    );
    assert_eq!(doc["spec"]["transforms"][0]["module"], "filter@1");
    let linked = f
        .data
        .path()
        .join("pipelines/orders/.modules/1/filter.wasm");
    assert_eq!(std::fs::read(&linked).unwrap(), b"not a component");

    // The fake module cannot load: the run fails, the server goes on.
    let doc = wait_for(&f, "orders", "failed").await;
    let message = doc["error"].as_str().unwrap();
    assert!(message.starts_with("transforms[0] (filter): "), "{message}");
    assert!(doc["started_at"].is_string() && doc["stopped_at"].is_string());

    let (status, list) = send(&f, Method::GET, "/v1/pipelines", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["pipelines"].as_array().unwrap().len(), 1);
    assert_eq!(list["pipelines"][0]["name"], "orders");

    let (status, doc) = send(&f, Method::POST, "/v1/pipelines/orders/stop", "").await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["desired"], "stopped");
    let stored: Value = serde_json::from_slice(
        &std::fs::read(f.data.path().join("pipelines/orders.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(stored["desired"], "stopped");

    let (status, doc) = send(&f, Method::POST, "/v1/pipelines/orders/start", "").await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["desired"], "running");
    let doc = wait_for(&f, "orders", "failed").await;
    assert_eq!(doc["modules"][0]["version"], 1, "the version stays pinned");

    let (status, doc) = send(&f, Method::DELETE, "/v1/pipelines/orders", "").await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["name"], "orders");
    assert!(!f.data.path().join("pipelines/orders.json").exists());
    assert!(!linked.exists());
    for (method, uri) in [
        (Method::GET, "/v1/pipelines/orders"),
        (Method::POST, "/v1/pipelines/orders/stop"),
        (Method::POST, "/v1/pipelines/orders/start"),
        (Method::DELETE, "/v1/pipelines/orders"),
    ] {
        let (status, doc) = send(&f, method, uri, "").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(error(&doc), "no pipeline named `orders`");
    }
}

#[tokio::test]
async fn a_plain_name_is_the_latest_version_and_json_is_accepted() {
    let f = open();
    seed(&f, "filter", b"one", Kind::Transform);
    let sha = seed(&f, "filter", b"two", Kind::Transform);
    let yaml = spec("p-json", "filter");
    let yaml = yaml.replace(
        "brokers: \"127.0.0.1:1\" }",
        "brokers: \"127.0.0.1:1\", consumer: { sasl.password: hunter2, fetch.min.bytes: 1 } }",
    );
    let as_json: Value = serde_yaml_ng::from_str(&yaml).unwrap();
    let (status, doc) = send(&f, Method::POST, "/v1/pipelines", &as_json.to_string()).await;
    assert_eq!(status, StatusCode::CREATED, "{doc}");
    assert_eq!(
        doc["modules"],
        json!([{ "step": "filter", "module": "filter", "version": 2, "sha256": sha }])
    );
    assert_eq!(
        doc["spec"]["kafka"]["consumer"],
        json!({ "sasl.password": "<redacted>", "fetch.min.bytes": 1 })
    );
    let stored = std::fs::read_to_string(f.data.path().join("pipelines/p-json.json")).unwrap();
    assert!(stored.contains("hunter2"), "the stored spec is complete");
}

#[tokio::test]
async fn bad_specs_are_400_naming_the_field() {
    let f = open();
    seed(&f, "filter", b"one", Kind::Transform);
    let good = spec("p", "filter");
    for (body, expected) in [
        (
            good.replace("source: { topics: [events] }", "source: { topics: [] }"),
            "source.topics: must name at least one topic",
        ),
        (
            good.replace("dead_letter:", "dead_leter:"),
            "dead_leter: unknown field `dead_leter`",
        ),
        (
            good.replace("name: p\n", "name: P\n"),
            "name: invalid pipeline name `P`",
        ),
        (
            good.replace("module: filter", "module: ./filter.wasm"),
            "transforms[0].module: `./filter.wasm` is not a module reference",
        ),
        (
            good.replace("module: filter", "module: filter@0"),
            "transforms[0].module: `filter@0` is not a module reference",
        ),
        ("[1, 2".to_owned(), "spec: not a YAML or JSON document"),
        ("{}".to_owned(), "spec: missing field `name`"),
        ("name: x".to_owned(), "spec: missing field `kafka`"),
        (String::new(), "spec: the request body is empty"),
    ] {
        let (status, doc) = send(&f, Method::POST, "/v1/pipelines", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {doc}");
        assert!(error(&doc).starts_with(expected), "{expected}: {doc}");
    }
    let (_, list) = send(&f, Method::GET, "/v1/pipelines", "").await;
    assert_eq!(list, json!({ "pipelines": [] }));
    assert!(
        f.state
            .pipelines
            .as_ref()
            .unwrap()
            .users("filter", 1)
            .is_empty(),
        "a refused pipeline holds no module"
    );
    assert!(!f.data.path().join("pipelines/p/.modules").exists());
}

#[tokio::test]
async fn unknown_modules_wrong_kinds_and_duplicates() {
    let f = open();
    seed(&f, "filter", b"one", Kind::Transform);
    seed(&f, "agg", b"agg", Kind::Aggregate);
    for (module, status, expected) in [
        (
            "nope",
            StatusCode::NOT_FOUND,
            "transforms[0].module: no module named `nope`",
        ),
        (
            "nope@2",
            StatusCode::NOT_FOUND,
            "transforms[0].module: no module named `nope`",
        ),
        (
            "filter@9",
            StatusCode::NOT_FOUND,
            "transforms[0].module: module `filter` has no version 9",
        ),
        (
            "agg@1",
            StatusCode::UNPROCESSABLE_ENTITY,
            "transforms[0].module: module `agg@1` is an aggregate component, but the step has no `aggregate` section",
        ),
    ] {
        let (code, doc) = send(&f, Method::POST, "/v1/pipelines", &spec("p", module)).await;
        assert_eq!((code, error(&doc)), (status, expected), "{module}");
    }
    let (status, _) = send(&f, Method::POST, "/v1/pipelines", &spec("p", "filter")).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, doc) = send(&f, Method::POST, "/v1/pipelines", &spec("p", "filter")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        error(&doc),
        "a pipeline named `p` already exists; delete it first or choose another name"
    );
    let (status, doc) = send(&f, Method::GET, "/v1/pipelines/Bad", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error(&doc).starts_with("invalid pipeline name `Bad`"),
        "{doc}"
    );
}

#[tokio::test]
async fn a_module_in_use_cannot_be_deleted() {
    let f = open();
    seed(&f, "filter", b"one", Kind::Transform);
    seed(&f, "filter", b"two", Kind::Transform);
    let (status, _) = send(
        &f,
        Method::POST,
        "/v1/pipelines",
        &spec("orders", "filter@1"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    for uri in ["/v1/modules/filter", "/v1/modules/filter/1"] {
        let (status, doc) = send(&f, Method::DELETE, uri, "").await;
        assert_eq!(status, StatusCode::CONFLICT, "{uri}");
        assert!(error(&doc).contains("used by pipeline(s) orders"), "{doc}");
    }
    let (status, doc) = send(&f, Method::GET, "/v1/modules/filter/1", "").await;
    assert_eq!(
        (status, &doc["used_by"]),
        (StatusCode::OK, &json!(["orders"]))
    );
    let (status, doc) = send(&f, Method::DELETE, "/v1/modules/filter/2", "").await;
    assert_eq!((status, &doc["deleted"]), (StatusCode::OK, &json!([2])));
    send(&f, Method::DELETE, "/v1/pipelines/orders", "").await;
    let (status, doc) = send(&f, Method::DELETE, "/v1/modules/filter", "").await;
    assert_eq!((status, &doc["deleted"]), (StatusCode::OK, &json!([1])));
}

#[tokio::test]
async fn changes_need_the_token_reading_does_not() {
    let f = start(tempfile::tempdir().unwrap(), Some(TOKEN));
    seed(&f, "filter", b"one", Kind::Transform);
    let body = spec("p", "filter");
    for (method, uri, body) in [
        (Method::POST, "/v1/pipelines", body.as_str()),
        (Method::POST, "/v1/pipelines/p/stop", ""),
        (Method::POST, "/v1/pipelines/p/start", ""),
        (Method::POST, "/v1/pipelines/p/pause", ""),
        (Method::POST, "/v1/pipelines/p/resume", ""),
        (
            Method::POST,
            "/v1/pipelines/p/swap",
            r#"{"module": "filter"}"#,
        ),
        (Method::DELETE, "/v1/pipelines/p", ""),
    ] {
        let (status, _) = send_text(&f, method, uri, body, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
    }
    let (status, _) = send(&f, Method::POST, "/v1/pipelines", &body).await;
    assert_eq!(status, StatusCode::CREATED);
    for uri in ["/v1/pipelines", "/v1/pipelines/p", "/metrics"] {
        let (status, _) = send_text(&f, Method::GET, uri, "", None).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
    }
}

#[tokio::test]
async fn pipelines_survive_a_restart_with_their_versions_and_state() {
    let f = open();
    seed(&f, "filter", b"one", Kind::Transform);
    send(&f, Method::POST, "/v1/pipelines", &spec("kept", "filter")).await;
    send(&f, Method::POST, "/v1/pipelines", &spec("parked", "filter")).await;
    send(&f, Method::POST, "/v1/pipelines/parked/stop", "").await;
    seed(&f, "filter", b"two", Kind::Transform);

    let f = f.restart();
    let doc = wait_for(&f, "kept", "failed").await;
    assert_eq!(doc["desired"], "running");
    assert_eq!(
        doc["modules"][0]["version"], 1,
        "`filter` was resolved at creation"
    );
    let (_, doc) = send(&f, Method::GET, "/v1/pipelines/parked", "").await;
    assert_eq!(
        (&doc["status"], &doc["desired"]),
        (&json!("stopped"), &json!("stopped"))
    );
    assert!(
        doc["started_at"].is_null(),
        "a stopped pipeline is not started: {doc}"
    );
    let (status, _) = send(&f, Method::DELETE, "/v1/modules/filter/1", "").await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "restored pipelines hold their modules"
    );
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let f = open();
    seed(&f, "filter", b"one", Kind::Transform);
    seed(&f, "filter", b"two", Kind::Transform);
    seed(&f, "other", b"three", Kind::Transform);
    send(
        &f,
        Method::POST,
        "/v1/pipelines",
        &spec("orders", "filter@1"),
    )
    .await;
    wait_for(&f, "orders", "failed").await;

    let request = Request::get("/metrics").body(Body::empty()).unwrap();
    let response = f.app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        std::str::from_utf8(&bytes).unwrap(),
        "# HELP sluice_modules Stored module versions.\n\
         # TYPE sluice_modules gauge\n\
         sluice_modules 3\n\
         # HELP sluice_pipeline_up 1 while the pipeline runs (paused included), else 0.\n\
         # TYPE sluice_pipeline_up gauge\n\
         sluice_pipeline_up{pipeline=\"orders\"} 0\n\
         # HELP sluice_pipeline_paused 1 while the pipeline is paused.\n\
         # TYPE sluice_pipeline_paused gauge\n\
         sluice_pipeline_paused{pipeline=\"orders\"} 0\n\
         # HELP sluice_pipeline_restarts_total Automatic restarts of the pipeline after a failed run, since the server started.\n\
         # TYPE sluice_pipeline_restarts_total counter\n\
         sluice_pipeline_restarts_total{pipeline=\"orders\"} 0\n\
         # HELP sluice_pipeline_module_version The module version each step of a pipeline runs.\n\
         # TYPE sluice_pipeline_module_version gauge\n\
         sluice_pipeline_module_version{pipeline=\"orders\",step=\"filter\",module=\"filter\",version=\"1\"} 1\n\
         # HELP sluice_records_in_total Records read from the source.\n\
         # TYPE sluice_records_in_total counter\n\
         # HELP sluice_records_dropped_total Records a guest dropped on purpose.\n\
         # TYPE sluice_records_dropped_total counter\n\
         # HELP sluice_late_records_total Records dead-lettered because their window was final.\n\
         # TYPE sluice_late_records_total counter\n\
         # HELP sluice_guest_traps_total Guest calls that trapped.\n\
         # TYPE sluice_guest_traps_total counter\n\
         # HELP sluice_guest_deadline_hits_total Guest calls stopped at their deadline.\n\
         # TYPE sluice_guest_deadline_hits_total counter\n\
         # HELP sluice_guest_memory_hits_total Guest calls stopped at their memory limit.\n\
         # TYPE sluice_guest_memory_hits_total counter\n\
         # HELP sluice_batches_total Batches run.\n\
         # TYPE sluice_batches_total counter\n\
         # HELP sluice_records_out_total Records written, per output.\n\
         # TYPE sluice_records_out_total counter\n\
         # HELP sluice_dead_letters_total Records dead-lettered, per kind of reason.\n\
         # TYPE sluice_dead_letters_total counter\n\
         # HELP sluice_consumer_lag Records between the position and the end offset, per source partition.\n\
         # TYPE sluice_consumer_lag gauge\n\
         # HELP sluice_watermark_seconds The event-time watermark, Unix seconds.\n\
         # TYPE sluice_watermark_seconds gauge\n\
         # HELP sluice_state_rows Open (window, key) pairs.\n\
         # TYPE sluice_state_rows gauge\n\
         # HELP sluice_state_bytes Bytes of window state.\n\
         # TYPE sluice_state_bytes gauge\n\
         # HELP sluice_batch_duration_seconds Time to run a batch, fetch to acknowledgement.\n\
         # TYPE sluice_batch_duration_seconds histogram\n"
    );
}

#[tokio::test]
async fn without_a_manager_the_routes_say_so() {
    let data = tempfile::tempdir().unwrap();
    let store = ModuleStore::open(data.path()).unwrap();
    let app = router(AppState::new(store, runtime(), ApiConfig::default()));
    let request = Request::get("/v1/pipelines").body(Body::empty()).unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_pipeline_routes_are_documented() {
    let f = open();
    let (status, doc) = send(&f, Method::GET, "/v1/openapi.json", "").await;
    assert_eq!(status, StatusCode::OK);
    let paths = &doc["paths"];
    for (path, methods) in [
        ("/metrics", &["get"][..]),
        ("/v1/pipelines", &["get", "post"]),
        ("/v1/pipelines/{name}", &["get", "delete"]),
        ("/v1/pipelines/{name}/stop", &["post"]),
        ("/v1/pipelines/{name}/start", &["post"]),
        ("/v1/pipelines/{name}/pause", &["post"]),
        ("/v1/pipelines/{name}/resume", &["post"]),
        ("/v1/pipelines/{name}/swap", &["post"]),
    ] {
        for method in methods {
            assert!(
                paths[path][method].is_object(),
                "{method} {path} is not documented"
            );
        }
    }
    assert_eq!(
        doc["components"]["schemas"]["Pipeline"]["required"],
        json!([
            "name",
            "status",
            "desired",
            "created_at",
            "started_at",
            "stopped_at",
            "error",
            "restarts",
            "next_restart_at",
            "modules",
            "last_run",
            "progress",
            "throughput",
            "swaps",
            "spec"
        ])
    );
    let status = &doc["components"]["schemas"]["Pipeline"]["properties"]["status"];
    assert_eq!(
        status["enum"],
        json!(["running", "paused", "stopped", "failed"])
    );
    assert_eq!(
        doc["components"]["schemas"]["SwapState"]["enum"],
        json!(["pending", "trial", "live", "rolled-back"])
    );
}

#[tokio::test]
async fn pause_and_resume_need_a_running_pipeline() {
    let f = open();
    seed(&f, "filter", b"not a component", Kind::Transform);
    let (status, _) = send(&f, Method::POST, "/v1/pipelines", &spec("orders", "filter")).await;
    assert_eq!(status, StatusCode::CREATED);
    wait_for(&f, "orders", "failed").await;
    let not_running = "pipeline `orders` is not running; start it first";
    // Failed (it should run), then stopped (it should not): neither has a
    // run, and a refused request changes nothing.
    for desired in ["running", "stopped"] {
        if desired == "stopped" {
            send(&f, Method::POST, "/v1/pipelines/orders/stop", "").await;
        }
        for action in ["pause", "resume"] {
            let uri = format!("/v1/pipelines/orders/{action}");
            let (status, doc) = send(&f, Method::POST, &uri, "").await;
            assert_eq!(
                (status, error(&doc)),
                (StatusCode::CONFLICT, not_running),
                "{action} with desired {desired}"
            );
            let (_, doc) = send(&f, Method::GET, "/v1/pipelines/orders", "").await;
            assert_eq!(
                (&doc["status"], &doc["desired"]),
                (&json!("failed"), &json!(desired)),
                "{action}: {doc}"
            );
        }
    }
    let (status, doc) = send(&f, Method::POST, "/v1/pipelines/nope/pause", "").await;
    assert_eq!(
        (status, error(&doc)),
        (StatusCode::NOT_FOUND, "no pipeline named `nope`")
    );
}

#[tokio::test]
async fn swap_refusals_and_a_swap_of_a_stopped_pipeline() {
    let f = open();
    seed(&f, "filter", b"one", Kind::Transform);
    let two = seed(&f, "filter", b"two", Kind::Transform);
    seed(&f, "agg", b"agg", Kind::Aggregate);
    let (status, _) = send(
        &f,
        Method::POST,
        "/v1/pipelines",
        &spec("orders", "filter@1"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    wait_for(&f, "orders", "failed").await;
    let usage =
        |module: &str, version: u32| f.state.pipelines.as_ref().unwrap().users(module, version);

    let shape = "the body must be JSON {\"module\": \"name@version\", \"step\": \"<step>\"}: ";
    for (body, status, expected) in [
        (
            "",
            StatusCode::BAD_REQUEST,
            format!("{shape}EOF while parsing a value at line 1 column 0"),
        ),
        (
            r#"{"modul": "filter@2"}"#,
            StatusCode::BAD_REQUEST,
            format!("{shape}unknown field `modul`, expected `module` or `step` at line 1 column 8"),
        ),
        (
            r#"{"step": "filter"}"#,
            StatusCode::BAD_REQUEST,
            format!("{shape}missing field `module` at line 1 column 18"),
        ),
        (
            r#"{"module": "filter@2", "step": "nope"}"#,
            StatusCode::BAD_REQUEST,
            "step: pipeline `orders` has no step `nope`; its steps are `filter`".to_owned(),
        ),
        (
            r#"{"module": "Filter@2"}"#,
            StatusCode::BAD_REQUEST,
            "module: `Filter@2` is not a module reference: write `name` or `name@version`"
                .to_owned(),
        ),
        (
            r#"{"module": "nope"}"#,
            StatusCode::NOT_FOUND,
            "module: no module named `nope`".to_owned(),
        ),
        (
            r#"{"module": "filter@9"}"#,
            StatusCode::NOT_FOUND,
            "module: module `filter` has no version 9".to_owned(),
        ),
        (
            r#"{"module": "agg@1", "step": "filter"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "module: module `agg@1` is an aggregate component, but the step is a transform"
                .to_owned(),
        ),
    ] {
        let (code, doc) = send(&f, Method::POST, "/v1/pipelines/orders/swap", body).await;
        assert_eq!((code, error(&doc)), (status, expected.as_str()), "{body}");
    }
    let (status, doc) = send(
        &f,
        Method::POST,
        "/v1/pipelines/nope/swap",
        r#"{"module": "filter@2"}"#,
    )
    .await;
    assert_eq!(
        (status, error(&doc)),
        (StatusCode::NOT_FOUND, "no pipeline named `nope`")
    );
    // A refused swap holds nothing.
    assert_eq!(
        (usage("filter", 1), usage("filter", 2), usage("agg", 1)),
        (vec!["orders".to_owned()], vec![], vec![])
    );

    // A pipeline that is not running takes the new version at once, to run
    // it from its next start.
    let (status, doc) = send(
        &f,
        Method::POST,
        "/v1/pipelines/orders/swap",
        r#"{"module": "filter"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["swap"], Value::Null);
    assert_eq!(
        doc["modules"],
        json!([{ "step": "filter", "module": "filter", "version": 2, "sha256": two }])
    );
    assert_eq!(doc["spec"]["transforms"][0]["module"], "filter@2");
    assert_eq!(
        (usage("filter", 1), usage("filter", 2)),
        (vec![], vec!["orders".to_owned()])
    );
    let stored: Value = serde_json::from_slice(
        &std::fs::read(f.data.path().join("pipelines/orders.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(stored["modules"][0]["version"], 2);
}

#[tokio::test]
async fn a_pipeline_of_several_steps_needs_the_step_named() {
    let f = open();
    seed(&f, "filter", b"one", Kind::Transform);
    let body = spec("chain", "filter@1").replace(
        "transforms:\n",
        "transforms:\n  - name: first\n    module: filter@1\n",
    );
    let (status, doc) = send(&f, Method::POST, "/v1/pipelines", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{doc}");
    let (status, doc) = send(
        &f,
        Method::POST,
        "/v1/pipelines/chain/swap",
        r#"{"module": "filter@1"}"#,
    )
    .await;
    assert_eq!(
        (status, error(&doc)),
        (
            StatusCode::BAD_REQUEST,
            "step: pipeline `chain` has 2 steps; say which to swap: `first`, `filter`"
        )
    );
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

#[tokio::test]
async fn a_failed_pipeline_is_restarted_with_back_off_until_stopped() {
    let f = open_supervised();
    seed(&f, "filter", b"not a component", Kind::Transform);
    let (status, doc) = send(
        &f,
        Method::POST,
        "/v1/pipelines",
        &spec("flaky", "filter@1"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{doc}");

    // Every run fails (the module cannot load); each failure schedules the
    // next start, 1 s after the first failure, then 2 s, ...
    let first = wait_for(&f, "flaky", "failed").await;
    let failed_at = Instant::now();
    assert_eq!(first["restarts"], 0, "{first}");
    assert!(first["next_restart_at"].is_string(), "{first}");
    let message = first["error"].as_str().unwrap().to_owned();
    assert!(message.starts_with("transforms[0] (filter): "), "{message}");

    let doc = wait_until(&f, "flaky", "restarted once", |d| d["restarts"] == 1).await;
    let waited = failed_at.elapsed();
    assert!(
        (Duration::from_millis(800)..Duration::from_secs(5)).contains(&waited),
        "restarted after {waited:?}: {doc}"
    );
    let second = wait_until(&f, "flaky", "failed again", |d| {
        d["restarts"] == 1 && d["status"] == "failed"
    })
    .await;
    let failed_again_at = Instant::now();
    assert_eq!(second["error"], message.as_str(), "{second}");

    let doc = wait_until(&f, "flaky", "restarted twice", |d| d["restarts"] == 2).await;
    let waited = failed_again_at.elapsed();
    assert!(
        (Duration::from_millis(1800)..Duration::from_secs(8)).contains(&waited),
        "the second restart came after {waited:?}, not after the doubled back-off: {doc}"
    );

    let (code, metrics) = send_text(&f, Method::GET, "/metrics", "", None).await;
    assert_eq!(code, StatusCode::OK);
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("sluice_pipeline_restarts_total{pipeline=\"flaky\"} 2\n"),
        "{metrics}"
    );

    // A stopped pipeline is not restarted.
    let (status, doc) = send(&f, Method::POST, "/v1/pipelines/flaky/stop", "").await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["desired"], "stopped");
    assert!(doc["next_restart_at"].is_null(), "{doc}");
    let restarts = doc["restarts"].clone();
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let (_, later) = send(&f, Method::GET, "/v1/pipelines/flaky", "").await;
    assert_ne!(later["status"], "running", "{later}");
    assert_eq!(later["restarts"], restarts, "{later}");
}

#[tokio::test]
async fn deleting_a_pipeline_removes_its_directory_so_the_name_starts_afresh() {
    let f = open();
    seed(&f, "filter", b"not a component", Kind::Transform);
    let (status, doc) = send(&f, Method::POST, "/v1/pipelines", &spec("orders", "filter")).await;
    assert_eq!(status, StatusCode::CREATED, "{doc}");
    // What a run leaves: a checkpoint and an output file.
    let dir = f.data.path().join("pipelines/orders");
    std::fs::create_dir_all(dir.join("checkpoint")).unwrap();
    std::fs::write(dir.join("checkpoint/epochs.log"), b"epoch 7").unwrap();
    std::fs::write(dir.join("out.parquet"), b"rows").unwrap();

    let (status, doc) = send(&f, Method::DELETE, "/v1/pipelines/orders", "").await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert!(!dir.exists(), "{} is left", dir.display());

    let (status, doc) = send(&f, Method::POST, "/v1/pipelines", &spec("orders", "filter")).await;
    assert_eq!(status, StatusCode::CREATED, "{doc}");
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, [".modules"]);
}

#[tokio::test]
async fn secrets_are_redacted_in_reads_and_documents_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let f = open();
    seed(&f, "filter", b"one", Kind::Transform);
    let yaml = spec("vault", "filter")
        .replace(
            "config: { field: event_type }",
            "config: { field: event_type, API_Key: k1, db_password: k2, url: { secret: k3 }, \
             n: 3 }",
        )
        .replace(
            "brokers: \"127.0.0.1:1\" }",
            "brokers: \"127.0.0.1:1\", producer: { ssl.key.password: k4, linger.ms: 5 } }",
        );
    let (status, doc) = send(&f, Method::POST, "/v1/pipelines", &yaml).await;
    assert_eq!(status, StatusCode::CREATED, "{doc}");
    let config = json!({
        "field": "event_type",
        "API_Key": "<redacted>",
        "db_password": "<redacted>",
        "url": { "secret": "<redacted>" },
        "n": 3,
    });
    assert_eq!(doc["spec"]["transforms"][0]["config"], config);
    assert_eq!(
        doc["spec"]["kafka"]["producer"],
        json!({ "ssl.key.password": "<redacted>", "linger.ms": 5 })
    );
    let (_, list) = send(&f, Method::GET, "/v1/pipelines", "").await;
    assert_eq!(
        list["pipelines"][0]["spec"]["transforms"][0]["config"],
        config
    );
    // The document keeps them, for this user only.
    let file = f.data.path().join("pipelines/vault.json");
    assert!(std::fs::read_to_string(&file).unwrap().contains("k3"));
    for (path, mode) in [
        (file, 0o600),
        (f.data.path().join("pipelines"), 0o700),
        (f.data.path().join("pipelines/vault"), 0o700),
        (f.data.path().join("modules"), 0o700),
        (f.data.path().join("modules/index.json"), 0o600),
    ] {
        let got = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(got, mode, "{}", path.display());
    }
}
