//! Pipelines defined by spec files (`sluice serve --pipeline FILE`), and
//! the server's readiness (`GET /readyz`), through the routes.

use super::*;

/// `<dir>/<name>.yaml`, a spec whose step runs the file `filter.wasm`
/// beside it, written relative to the spec as an operator may: fake bytes,
/// so that its runs fail while loading it.
fn spec_file(dir: &Path, name: &str) -> PathBuf {
    std::fs::write(dir.join("filter.wasm"), b"not a component").unwrap();
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, spec(name, "filter.wasm")).unwrap();
    path
}

async fn readyz(f: &Fixture) -> (StatusCode, Value) {
    send(f, Method::GET, "/readyz", "").await
}

fn ready() -> (StatusCode, Value) {
    (
        StatusCode::OK,
        json!({ "status": "ready", "not_ready": [] }),
    )
}

#[tokio::test]
async fn readiness_names_the_pipelines_that_should_run_and_have_not_started() {
    let f = open();
    assert_eq!(readyz(&f).await, ready());
    seed(&f, "filter", b"not a component", Kind::Transform);
    let (status, doc) = send(
        &f,
        Method::POST,
        "/v1/pipelines",
        &spec("orders", "filter@1"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{doc}");
    let doc = wait_for(&f, "orders", "failed").await;
    assert_eq!(
        readyz(&f).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({
                "status": "not-ready",
                "not_ready": [{ "name": "orders", "status": "failed", "error": doc["error"] }],
            })
        )
    );
    // A stopped pipeline is not one the server runs.
    let (status, doc) = send(&f, Method::POST, "/v1/pipelines/orders/stop", "").await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(readyz(&f).await, ready());
}

#[tokio::test]
async fn a_spec_file_defines_a_pipeline_that_the_api_runs_but_cannot_redefine() {
    let files = tempfile::tempdir().unwrap();
    let path = spec_file(files.path(), "orders");
    let f = start_with(
        tempfile::tempdir().unwrap(),
        None,
        std::slice::from_ref(&path),
    );
    let doc = wait_for(&f, "orders", "failed").await;
    assert_eq!(doc["file"], path.display().to_string());
    assert_eq!(doc["desired"], "running");
    assert_eq!(doc["modules"], json!([]), "no module of the store");
    assert_eq!(doc["spec"]["transforms"][0]["module"], "filter.wasm");
    // Loaded from the file's directory, as `sluice run` loads it.
    let message = doc["error"].as_str().unwrap();
    assert!(message.starts_with("transforms[0] (filter): "), "{message}");
    let stored = f.data.path().join("pipelines/orders.json");
    assert!(!stored.exists(), "the file's pipeline is not stored");
    let (status, _) = readyz(&f).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    let refused = |instead: &str| {
        format!(
            "pipeline `orders` is defined by {} (sluice serve --pipeline): {instead}",
            path.display()
        )
    };
    let create = spec("orders", "filter@1");
    for (method, uri, body, instead) in [
        (
            Method::DELETE,
            "/v1/pipelines/orders",
            "",
            "remove the file from the server's command line and restart the server",
        ),
        (
            Method::POST,
            "/v1/pipelines/orders/swap",
            r#"{"module": "filter@1"}"#,
            "change the module in the file and restart the server",
        ),
        (
            Method::POST,
            "/v1/pipelines",
            create.as_str(),
            "choose another name",
        ),
    ] {
        let (status, doc) = send(&f, method.clone(), uri, body).await;
        assert_eq!(status, StatusCode::CONFLICT, "{method} {uri}: {doc}");
        assert_eq!(error(&doc), refused(instead), "{method} {uri}");
    }

    // Stopped and started like any other, without a document.
    let (status, doc) = send(&f, Method::POST, "/v1/pipelines/orders/stop", "").await;
    assert_eq!(
        (status, &doc["desired"]),
        (StatusCode::OK, &json!("stopped"))
    );
    assert_eq!(readyz(&f).await, ready());
    assert!(!stored.exists());
    // The file wins at the next start: its pipeline should run again.
    let f = f.restart_with(std::slice::from_ref(&path));
    let doc = wait_for(&f, "orders", "failed").await;
    assert_eq!(doc["desired"], "running");
    assert!(!stored.exists());
}

#[tokio::test]
async fn a_spec_file_sets_aside_a_stored_pipeline_of_its_name_while_it_is_given() {
    let f = open();
    seed(&f, "filter", b"not a component", Kind::Transform);
    let (status, doc) = send(
        &f,
        Method::POST,
        "/v1/pipelines",
        &spec("orders", "filter@1"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{doc}");
    wait_for(&f, "orders", "failed").await;

    let files = tempfile::tempdir().unwrap();
    let path = spec_file(files.path(), "orders");
    let f = f.restart_with(std::slice::from_ref(&path));
    let (status, list) = send(&f, Method::GET, "/v1/pipelines", "").await;
    assert_eq!(status, StatusCode::OK);
    let files_of: Vec<&Value> = list["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["file"])
        .collect();
    assert_eq!(files_of, [&json!(path.display().to_string())]);
    // Kept, with the module version it runs.
    assert!(f.data.path().join("pipelines/orders.json").exists());
    let (status, doc) = send(&f, Method::DELETE, "/v1/modules/filter/1", "").await;
    assert_eq!(status, StatusCode::CONFLICT, "{doc}");

    // Back once the server starts without the file.
    let f = f.restart();
    let doc = wait_for(&f, "orders", "failed").await;
    assert_eq!(doc["file"], Value::Null);
    assert_eq!(doc["spec"]["transforms"][0]["module"], "filter@1");
}
