//! Router tests of [`super::guard`]: foreign `Host` names, cross-origin
//! requests and bodies of the wrong type are refused before any handler.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{ApiConfig, AppState, router};
use crate::registry::ModuleStore;
use crate::runtime::Runtime;

/// `\0asm`, version 1: an empty core module.
const CORE_MODULE: &[u8] = b"\0asm\x01\0\0\0";

fn app(allowed_hosts: &[&str]) -> (Router, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let store = ModuleStore::open(data.path()).unwrap();
    let config = ApiConfig {
        allowed_hosts: allowed_hosts.iter().map(|h| h.to_string()).collect(),
        ..ApiConfig::default()
    };
    let state = AppState::new(store, Runtime::new().unwrap(), config);
    (router(state), data)
}

pub(super) async fn send(
    app: &Router,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: &'static [u8],
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (parts.status, parts.headers, json)
}

#[tokio::test]
async fn only_loopback_names_and_allowed_hosts_are_answered() {
    let (app, _data) = app(&["sluice.internal"]);
    for host in [
        "127.0.0.1:7878",
        "127.0.0.1",
        "localhost:1",
        "LOCALHOST:7878",
        "[::1]:7878",
        "sluice.internal:7878",
        "Sluice.Internal",
    ] {
        let (status, _, json) =
            send(&app, Method::GET, "/v1/modules", &[("host", host)], b"").await;
        assert_eq!(
            (status, json),
            (StatusCode::OK, json!({ "modules": [] })),
            "{host}"
        );
    }
    for host in [
        "evil.example",
        "evil.example:7878",
        "127.0.0.2:7878",
        "localhost.evil.example",
    ] {
        let (status, _, json) =
            send(&app, Method::GET, "/v1/pipelines", &[("host", host)], b"").await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{host}");
        assert_eq!(
            json["error"],
            format!(
                "Host {host:?} is not a name of this server: it answers to 127.0.0.1, [::1] and \
                 localhost, and to the names given with `sluice serve --allow-host NAME` (a page \
                 that re-points its own name at this server is refused)"
            )
        );
    }
}

#[tokio::test]
async fn the_probes_answer_by_the_same_rules() {
    // What a kubelet sends: a loopback name (the probes set `Host:
    // localhost`) or an allowed one (the pod's IP), no Origin.
    let (app, _data) = app(&["10.1.2.3"]);
    for (uri, body) in [
        ("/healthz", json!({ "status": "ok" })),
        ("/readyz", json!({ "status": "ready", "not_ready": [] })),
    ] {
        for host in ["localhost", "127.0.0.1:7878", "10.1.2.3:7878"] {
            let (status, _, json) = send(&app, Method::GET, uri, &[("host", host)], b"").await;
            assert_eq!(
                (status, json),
                (StatusCode::OK, body.clone()),
                "{uri} {host}"
            );
        }
        let (status, _, _) = send(&app, Method::GET, uri, &[("host", "evil.example")], b"").await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{uri}");
        let headers = [("host", "localhost"), ("origin", "http://evil.example")];
        let (status, _, _) = send(&app, Method::GET, uri, &headers, b"").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri}");
    }
}

#[tokio::test]
async fn cross_origin_requests_are_refused_whatever_the_method() {
    let (app, _data) = app(&[]);
    let host = ("host", "127.0.0.1:7878");
    for (method, uri) in [
        (Method::GET, "/v1/pipelines"),
        (Method::POST, "/v1/modules/m"),
        (Method::POST, "/v1/pipelines/p/stop"),
        (Method::DELETE, "/v1/pipelines/p"),
        (Method::OPTIONS, "/v1/modules/m"),
    ] {
        for origin in [
            "http://evil.example",
            "http://127.0.0.1:9999",
            "http://localhost:7878",
            "https://127.0.0.1:7878",
            "null",
        ] {
            let headers = [
                host,
                ("origin", origin),
                ("content-type", "application/wasm"),
            ];
            let (status, response, json) =
                send(&app, method.clone(), uri, &headers, CORE_MODULE).await;
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "{method} {uri} from {origin}"
            );
            assert_eq!(
                json["error"],
                format!(
                    "cross-origin request refused (Origin: {origin}): this API answers only its \
                     own pages and non-browser clients"
                )
            );
            assert!(
                response
                    .keys()
                    .all(|k| !k.as_str().starts_with("access-control-"))
            );
        }
        for site in ["cross-site", "same-site"] {
            let headers = [host, ("sec-fetch-site", site)];
            let (status, _, json) = send(&app, method.clone(), uri, &headers, b"").await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {uri} {site}");
            assert_eq!(
                json["error"],
                format!(
                    "cross-origin request refused (Sec-Fetch-Site: {site}): this API answers \
                     only its own pages and non-browser clients"
                )
            );
        }
    }
    // The server's own pages (the dashboard) pass.
    let own = [
        host,
        ("origin", "http://127.0.0.1:7878"),
        ("sec-fetch-site", "same-origin"),
    ];
    let (status, _, json) = send(&app, Method::GET, "/v1/modules", &own, b"").await;
    assert_eq!((status, json), (StatusCode::OK, json!({ "modules": [] })));
}

#[tokio::test]
async fn bodies_need_the_content_type_of_their_route() {
    let (app, _data) = app(&[]);
    for (uri, given, wanted) in [
        (
            "/v1/modules/m",
            None,
            "application/wasm, application/octet-stream",
        ),
        (
            "/v1/modules/m",
            Some("text/plain"),
            "application/wasm, application/octet-stream",
        ),
        (
            "/v1/pipelines",
            Some("application/x-www-form-urlencoded"),
            "application/yaml, application/json, application/x-yaml, text/yaml",
        ),
        (
            "/v1/pipelines",
            Some("multipart/form-data; boundary=x"),
            "application/yaml, application/json, application/x-yaml, text/yaml",
        ),
        (
            "/v1/pipelines/p/swap",
            Some("text/plain;charset=UTF-8"),
            "application/json",
        ),
    ] {
        let headers: Vec<(&str, &str)> = given.map(|g| ("content-type", g)).into_iter().collect();
        let (status, _, json) = send(&app, Method::POST, uri, &headers, CORE_MODULE).await;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{uri} {given:?}"
        );
        let given = given.map_or_else(|| "(none)".to_owned(), |g| format!("{g:?}"));
        assert_eq!(
            json["error"],
            format!("POST {uri}: Content-Type {given} is not accepted; send one of: {wanted}")
        );
    }
    for (method, uri) in [
        (Method::POST, "/v1/pipelines/p/stop"),
        (Method::DELETE, "/v1/pipelines/p"),
        (Method::DELETE, "/v1/modules/m"),
    ] {
        let headers = [("content-type", "text/plain")];
        let (status, _, json) = send(&app, method.clone(), uri, &headers, b"x").await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{method} {uri}");
        assert_eq!(
            json["error"],
            format!(
                "{method} {uri} takes no body: send no Content-Type (or application/json), not \
                 \"text/plain\""
            )
        );
    }
    // The right types reach the handlers.
    for content_type in ["application/wasm", "Application/Octet-Stream"] {
        let headers = [("content-type", content_type)];
        let (status, _, json) =
            send(&app, Method::POST, "/v1/modules/m", &headers, CORE_MODULE).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{content_type}: {json}"
        );
    }
    let (status, _, _) = send(&app, Method::DELETE, "/v1/modules/m", &[], b"").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn no_cors_headers_and_no_answered_preflight() {
    let (app, _data) = app(&[]);
    let preflight = [
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "content-type"),
    ];
    let (status, headers, _) = send(&app, Method::OPTIONS, "/v1/modules/m", &preflight, b"").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        headers
            .keys()
            .all(|k| !k.as_str().starts_with("access-control-")),
        "{headers:?}"
    );
    let (_, headers, _) = send(&app, Method::GET, "/v1/modules", &[], b"").await;
    assert!(
        headers
            .keys()
            .all(|k| !k.as_str().starts_with("access-control-"))
    );
}
