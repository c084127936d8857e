//! Pause, resume, swap and the restarts of failed runs, through the routes.

use super::*;

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
