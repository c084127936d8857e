//! Router tests (`oneshot`, no socket) for what needs no real component:
//! every route's shape and every rejection. Uploads of real components
//! (the guests built by the tests crate) are in `tests/integration/api.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{ApiConfig, AppState, check_exposure, router, same_token};
use crate::registry::{Checked, Kind, ModuleStore};
use crate::runtime::Runtime;

const TOKEN: &str = "s3cret";
/// `\0asm`, version 1: an empty core module.
const CORE_MODULE: &[u8] = b"\0asm\x01\0\0\0";
/// `\0asm`, component layer: an empty component (it exports nothing).
const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";
/// A component importing an instance `foo:bar/baz` that exports a function
/// `f: func()`.
const FOREIGN_IMPORT: &[u8] = b"\0asm\x0d\0\x01\0\
    \x07\x0e\x01\x42\x02\x01\x40\x00\x01\x00\x04\x00\x01f\x01\x00\
    \x0a\x10\x01\x00\x0bfoo:bar/baz\x05\x00";

fn runtime() -> Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new().unwrap()).clone()
}

struct Fixture {
    app: Router,
    state: AppState,
    _data: tempfile::TempDir,
}

fn fixture(config: ApiConfig) -> Fixture {
    let data = tempfile::tempdir().unwrap();
    let store = ModuleStore::open(data.path()).unwrap();
    let state = AppState::new(store, runtime(), config).with_users(|name: &str, version: u32| {
        if name == "busy" && version == 1 {
            vec!["orders".to_string()]
        } else {
            Vec::new()
        }
    });
    Fixture {
        app: router(state.clone()),
        state,
        _data: data,
    }
}

fn open() -> Fixture {
    fixture(ApiConfig::default())
}

/// Stores fake bytes directly (the store does not look inside them).
fn seed(f: &Fixture, name: &str, bytes: &[u8]) {
    let checked = Checked {
        kind: Kind::Transform,
        exports: vec!["sluice:transform/transform@0.1.0".into()],
    };
    f.state.store.add(name, bytes, checked).unwrap();
}

/// `method uri` with `body`, of the content type the route takes.
fn request(method: Method, uri: &str, body: impl Into<Body>) -> Request<Body> {
    let mut request = Request::builder().method(method.clone()).uri(uri);
    if let Some(content_type) = super::guard::content_type_for(&method, uri) {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    request.body(body.into()).unwrap()
}

async fn send(f: &Fixture, request: Request<Body>) -> (StatusCode, Value) {
    let (status, _, bytes) = send_raw(f, request).await;
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json)
}

async fn send_raw(
    f: &Fixture,
    request: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, Bytes) {
    let response = f.app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, bytes)
}

async fn upload(f: &Fixture, name: &str, bytes: &'static [u8]) -> (StatusCode, Value) {
    send(
        f,
        request(Method::POST, &format!("/v1/modules/{name}"), bytes),
    )
    .await
}

fn error(json: &Value) -> &str {
    json["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {json}"))
}

#[tokio::test]
async fn health_and_openapi() {
    let f = open();
    let (status, json) = send(&f, request(Method::GET, "/healthz", Body::empty())).await;
    assert_eq!((status, json), (StatusCode::OK, json!({ "status": "ok" })));
    // No pipelines to wait for (the pipeline routes' tests have some).
    let (status, json) = send(&f, request(Method::GET, "/readyz", Body::empty())).await;
    assert_eq!(
        (status, json),
        (
            StatusCode::OK,
            json!({ "status": "ready", "not_ready": [] })
        )
    );
    let (status, doc) = send(&f, request(Method::GET, "/v1/openapi.json", Body::empty())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/", &["get"][..]),
        ("/dashboard", &["get"]),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
        ("/v1/openapi.json", &["get"]),
        ("/v1/modules", &["get"]),
        ("/v1/modules/{name}", &["get", "post", "delete"]),
        ("/v1/modules/{name}/{version}", &["get", "delete"]),
        ("/v1/modules/{name}/{version}/wasm", &["get"]),
        ("/v1/pipelines", &["get", "post"]),
        ("/v1/pipelines/{name}", &["get", "delete"]),
        ("/v1/pipelines/{name}/stop", &["post"]),
        ("/v1/pipelines/{name}/start", &["post"]),
        ("/v1/pipelines/{name}/pause", &["post"]),
        ("/v1/pipelines/{name}/resume", &["post"]),
        ("/v1/pipelines/{name}/swap", &["post"]),
        ("/metrics", &["get"]),
    ] {
        for method in methods {
            assert!(
                paths[path][method].is_object(),
                "{method} {path} is not documented"
            );
        }
    }
    assert_eq!(paths.len(), 17, "a documented route does not exist");
}

#[tokio::test]
async fn the_dashboard_is_one_page_polling_the_pipelines() {
    let f = fixture(ApiConfig {
        token: Some(TOKEN.into()),
        ..ApiConfig::default()
    });
    for uri in ["/", "/dashboard"] {
        let (status, headers, body) = send_raw(&f, request(Method::GET, uri, Body::empty())).await;
        assert_eq!(status, StatusCode::OK, "GET {uri} (reading needs no token)");
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("connect-src 'self'"), "{csp}");
        let page = std::str::from_utf8(&body).unwrap();
        assert_eq!(page, super::DASHBOARD);
        assert!(page.starts_with("<!doctype html>\n<html lang=\"en\">"));
        assert!(
            page.contains(r#"const API = "/v1/pipelines";"#) && page.contains("fetch(API, "),
            "the page does not poll /v1/pipelines"
        );
        assert!(!page.contains("innerHTML"), "data must go in textContent");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let f = open();
    let (status, json) = send(&f, request(Method::GET, "/v2/nothing", Body::empty())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error(&json).starts_with("no such route"));
    let (status, json) = send(&f, request(Method::PUT, "/v1/modules/m", Body::empty())).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(error(&json).starts_with("method not allowed"));
}

#[tokio::test]
async fn an_upload_over_the_declared_limit_is_refused_unread() {
    let f = fixture(ApiConfig {
        max_upload: 1024,
        ..ApiConfig::default()
    });
    let polled = Arc::new(AtomicBool::new(false));
    let flag = polled.clone();
    let body = Body::from_stream(futures::stream::once(async move {
        flag.store(true, Ordering::SeqCst);
        Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 2048]))
    }));
    let request = Request::post("/v1/modules/big")
        .header(header::CONTENT_LENGTH, "2048")
        .header(header::CONTENT_TYPE, "application/wasm")
        .body(body)
        .unwrap();
    let (status, json) = send(&f, request).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        error(&json),
        "the module is larger than this server's upload limit of 1024 bytes (sluice serve --max-upload)"
    );
    assert!(!polled.load(Ordering::SeqCst), "the body was read");
}

#[tokio::test]
async fn a_streamed_upload_is_cut_off_at_the_limit() {
    static CHUNK: [u8; 64 * 1024] = [0; 64 * 1024];
    let f = fixture(ApiConfig {
        max_upload: 1024 * 1024,
        ..ApiConfig::default()
    });
    // Endless and without a length: only stopping at the limit can answer.
    let body = Body::from_stream(futures::stream::repeat_with(|| {
        Ok::<_, std::io::Error>(Bytes::from_static(&CHUNK))
    }));
    let request = Request::post("/v1/modules/big")
        .header(header::CONTENT_TYPE, "application/wasm")
        .body(body)
        .unwrap();
    let (status, json) =
        tokio::time::timeout(std::time::Duration::from_secs(30), send(&f, request))
            .await
            .expect("the upload was read past its limit");
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{json}");
    assert!(f.state.store.list().is_empty());
}

#[tokio::test]
async fn what_is_not_a_sluice_component_is_refused_with_the_reason() {
    let f = open();
    let (status, json) = upload(&f, "m", b"hello, world").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error(&json).starts_with("not a WebAssembly binary"),
        "{json}"
    );

    let (status, json) = upload(&f, "m", CORE_MODULE).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let message = error(&json);
    assert!(message.contains("Sluice needs a component"), "{message}");
    assert!(
        message.contains("cargo build --target wasm32-wasip2"),
        "{message}"
    );

    let (status, json) = upload(&f, "m", EMPTY_COMPONENT).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        error(&json).starts_with(
            "the component implements none of `sluice:transform/transform@0.1.0`, \
             `sluice:transform/aggregate@0.1.0` and `sluice:transform/join@0.1.0`: "
        ),
        "{json}"
    );

    let (status, json) = upload(&f, "m", FOREIGN_IMPORT).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let message = error(&json);
    assert!(
        message.starts_with("the component needs imports Sluice does not provide: "),
        "{message}"
    );
    assert!(message.contains("foo:bar/baz"), "{message}");

    let (status, json) = upload(&f, "m", b"\0asm\x0d\0\x01\0\xff\xff").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error(&json).starts_with("invalid component: "), "{json}");

    let (status, json) = upload(&f, "m", b"").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error(&json).starts_with("the request body is empty"),
        "{json}"
    );

    let (status, json) = send(
        &f,
        request(Method::POST, "/v1/modules/m?mode=x", CORE_MODULE),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error(&json).starts_with("unknown query parameter `mode`"),
        "{json}"
    );

    assert!(f.state.store.list().is_empty(), "nothing was stored");
}

#[tokio::test]
async fn bad_names_and_versions_are_refused() {
    let f = open();
    seed(&f, "m", b"one");
    let long = "a".repeat(64);
    for name in ["..", "a%2Fb", "A", "a.b", "-a", "%2E%2E", long.as_str()] {
        for (method, uri) in [
            (Method::POST, format!("/v1/modules/{name}")),
            (Method::GET, format!("/v1/modules/{name}")),
            (Method::DELETE, format!("/v1/modules/{name}")),
            (Method::GET, format!("/v1/modules/{name}/1")),
            (Method::GET, format!("/v1/modules/{name}/1/wasm")),
            (Method::DELETE, format!("/v1/modules/{name}/1")),
        ] {
            let (status, json) = send(&f, request(method.clone(), &uri, CORE_MODULE)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {uri}: {json}");
            assert!(error(&json).starts_with("invalid module name"), "{json}");
        }
    }
    for version in ["0", "01", "x", "-1", "1.0", "4294967296"] {
        for (method, uri) in [
            (Method::GET, format!("/v1/modules/m/{version}")),
            (Method::GET, format!("/v1/modules/m/{version}/wasm")),
            (Method::DELETE, format!("/v1/modules/m/{version}")),
        ] {
            let (status, json) = send(&f, request(method.clone(), &uri, Body::empty())).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {uri}: {json}");
            assert!(error(&json).starts_with("invalid version"), "{json}");
        }
    }
}

#[tokio::test]
async fn changes_need_the_token_reads_do_not() {
    let f = fixture(ApiConfig {
        token: Some(TOKEN.into()),
        ..ApiConfig::default()
    });
    seed(&f, "m", b"one");
    for (method, uri) in [
        (Method::POST, "/v1/modules/m"),
        (Method::DELETE, "/v1/modules/m"),
        (Method::DELETE, "/v1/modules/m/1"),
    ] {
        let (status, headers, body) = send_raw(&f, request(method.clone(), uri, "x")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert!(
            error(&json).contains("Authorization: Bearer <token>"),
            "{json}"
        );
        for auth in [
            "Bearer wrong",
            "Bearer s3cret-but-longer",
            "Basic czNjcmV0",
            "s3cret",
        ] {
            let request = Request::builder()
                .method(method.clone())
                .uri(uri)
                .header(header::AUTHORIZATION, auth)
                .body(Body::from("x"))
                .unwrap();
            let (status, _) = send(&f, request).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {uri} with {auth}"
            );
        }
    }
    for uri in [
        "/healthz",
        "/readyz",
        "/v1/modules",
        "/v1/modules/m",
        "/v1/modules/m/1",
        "/v1/modules/m/1/wasm",
    ] {
        let (status, _, _) = send_raw(&f, request(Method::GET, uri, Body::empty())).await;
        assert_eq!(status, StatusCode::OK, "GET {uri}");
    }
    // With the token, the request reaches the handler.
    let authorized = |method: Method, uri: &str, body: &'static [u8]| {
        let mut request = request(method, uri, body);
        request.headers_mut().insert(
            header::AUTHORIZATION,
            format!("bearer {TOKEN}").parse().unwrap(),
        );
        request
    };
    let (status, json) = send(&f, authorized(Method::POST, "/v1/modules/m", b"not wasm")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
    let (status, json) = send(&f, authorized(Method::DELETE, "/v1/modules/m", b"")).await;
    assert_eq!(
        (status, json),
        (StatusCode::OK, json!({ "name": "m", "deleted": [1] }))
    );
}

#[tokio::test]
async fn list_show_download_and_delete() {
    let f = open();
    let (status, json) = send(&f, request(Method::GET, "/v1/modules", Body::empty())).await;
    assert_eq!((status, json), (StatusCode::OK, json!({ "modules": [] })));
    seed(&f, "m", b"one");
    seed(&f, "m", b"two");
    seed(&f, "solo", b"three");

    let (status, json) = send(&f, request(Method::GET, "/v1/modules", Body::empty())).await;
    assert_eq!(status, StatusCode::OK);
    let summary: Vec<(String, u64, u64, String)> = json["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let field = |k: &str| m[k].as_u64().unwrap();
            let kind = m["kind"].as_str().unwrap().to_owned();
            (
                m["name"].as_str().unwrap().to_owned(),
                field("latest_version"),
                field("versions"),
                kind,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("m".into(), 2, 2, "transform".into()),
            ("solo".into(), 1, 1, "transform".into())
        ]
    );

    let (status, json) = send(&f, request(Method::GET, "/v1/modules/m", Body::empty())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["latest_version"], 2);
    let versions = json["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    let v2 = &versions[1];
    assert_eq!(v2["name"], "m");
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["size"], 3);
    assert_eq!(v2["kind"], "transform");
    assert_eq!(
        v2["sha256"],
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"two"))
    );
    assert_eq!(v2["exports"], json!(["sluice:transform/transform@0.1.0"]));
    assert_eq!(v2["used_by"], json!([]));
    assert!(v2["uploaded_at"].as_str().unwrap().ends_with('Z'));

    let (status, json) = send(&f, request(Method::GET, "/v1/modules/m/1", Body::empty())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (json["version"].as_u64(), json["size"].as_u64()),
        (Some(1), Some(3))
    );

    let (status, headers, bytes) = send_raw(
        &f,
        request(Method::GET, "/v1/modules/m/2/wasm", Body::empty()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/wasm");
    assert_eq!(
        headers[header::ETAG],
        format!("\"{}\"", v2["sha256"].as_str().unwrap())
    );
    assert_eq!(&bytes[..], b"two");

    for uri in [
        "/v1/modules/nope",
        "/v1/modules/nope/1",
        "/v1/modules/nope/1/wasm",
        "/v1/modules/m/3",
    ] {
        let (status, json) = send(&f, request(Method::GET, uri, Body::empty())).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert!(
            error(&json).starts_with("no module named `nope`")
                || error(&json) == "module `m` has no version 3"
        );
    }

    let (status, json) = send(
        &f,
        request(Method::DELETE, "/v1/modules/m/1", Body::empty()),
    )
    .await;
    assert_eq!(
        (status, json),
        (StatusCode::OK, json!({ "name": "m", "deleted": [1] }))
    );
    let (status, _) = send(
        &f,
        request(Method::DELETE, "/v1/modules/m/1", Body::empty()),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, json) = send(&f, request(Method::DELETE, "/v1/modules/m", Body::empty())).await;
    assert_eq!(
        (status, json),
        (StatusCode::OK, json!({ "name": "m", "deleted": [2] }))
    );
    let (status, json) = send(&f, request(Method::DELETE, "/v1/modules/m", Body::empty())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error(&json), "no module named `m`");
}

#[tokio::test]
async fn a_module_in_use_cannot_be_deleted() {
    let f = open();
    seed(&f, "busy", b"one");
    seed(&f, "busy", b"two");
    let (status, json) = send(&f, request(Method::GET, "/v1/modules/busy", Body::empty())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["versions"][0]["used_by"], json!(["orders"]));
    for uri in ["/v1/modules/busy", "/v1/modules/busy/1"] {
        let (status, json) = send(&f, request(Method::DELETE, uri, Body::empty())).await;
        assert_eq!(status, StatusCode::CONFLICT, "{uri}");
        assert!(
            error(&json).contains("used by pipeline(s) orders; remove it from them first"),
            "{json}"
        );
    }
    let (status, _) = send(
        &f,
        request(Method::DELETE, "/v1/modules/busy/2", Body::empty()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(f.state.store.versions("busy").unwrap().len(), 1);
}

#[tokio::test]
async fn reuploading_the_latest_bytes_is_idempotent() {
    let f = open();
    seed(&f, "m", b"\0asm same bytes");
    let (status, json) = upload(&f, "m", b"\0asm same bytes").await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["version"], 1);
    assert_eq!(f.state.store.versions("m").unwrap().len(), 1);
}

#[test]
fn listening_beyond_loopback_needs_a_token() {
    check_exposure("127.0.0.1:7878".parse().unwrap(), None).unwrap();
    check_exposure("[::1]:7878".parse().unwrap(), None).unwrap();
    check_exposure("0.0.0.0:7878".parse().unwrap(), Some(TOKEN)).unwrap();
    let err = check_exposure("0.0.0.0:7878".parse().unwrap(), None).unwrap_err();
    assert!(
        err.starts_with("refusing to listen on 0.0.0.0:7878 without a token"),
        "{err}"
    );
}

#[test]
fn tokens_compare_whole() {
    assert!(same_token(TOKEN, TOKEN));
    for other in ["", "s3cre", "s3cret ", "S3cret"] {
        assert!(!same_token(other, TOKEN), "{other:?}");
    }
}
