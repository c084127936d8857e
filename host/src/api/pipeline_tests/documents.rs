//! `/metrics`, the OpenAPI document of the pipeline routes, and the routes
//! of a server without a manager.

use super::*;

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
         # HELP sluice_join_buffered_rows Records a join holds, per side (waiting for matches, or to be emitted alone).\n\
         # TYPE sluice_join_buffered_rows gauge\n\
         # HELP sluice_join_buffered_bytes Bytes of the records a join holds, per side.\n\
         # TYPE sluice_join_buffered_bytes gauge\n\
         # HELP sluice_join_watermark_seconds A join side's watermark.\n\
         # TYPE sluice_join_watermark_seconds gauge\n\
         # HELP sluice_task_records_in_total Records read by a task (a pipeline run as tasks).\n\
         # TYPE sluice_task_records_in_total counter\n\
         # HELP sluice_task_lag Records between a task's positions and its partitions' end offsets.\n\
         # TYPE sluice_task_lag gauge\n\
         # HELP sluice_task_watermark_seconds A task's event-time watermark, Unix seconds.\n\
         # TYPE sluice_task_watermark_seconds gauge\n\
         # HELP sluice_task_state_rows A task's open (window, key) pairs.\n\
         # TYPE sluice_task_state_rows gauge\n\
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
async fn the_pipeline_document_schema_names_every_field() {
    // Which routes are documented is `api::tests::health_and_openapi`'s.
    let f = open();
    let (status, doc) = send(&f, Method::GET, "/v1/openapi.json", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        doc["components"]["schemas"]["Pipeline"]["required"],
        json!([
            "name",
            "status",
            "desired",
            "file",
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
