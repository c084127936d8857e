//! Creating, reading, stopping, starting and deleting pipelines through
//! the routes, and what a pipeline document keeps and hides.

use super::*;

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
            "transforms[0].module: module `agg@1` is an aggregate component, but the step is a transform",
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
