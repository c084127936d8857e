//! `/v1/pipelines`: create, list, show, stop, start, pause, resume, swap
//! modules of, and delete the pipelines run by this server's [`Manager`].
//!
//! - `POST /v1/pipelines`: the body is a spec, YAML or JSON, as `sluice run`
//!   reads it, except that a transform's `module` is `name` or
//!   `name@version` of a stored module. 201 with the pipeline's status
//!   document, the pipeline started; 400 with the spec's error (it names
//!   the field), 404 for an unknown module or version, 409 when the name is
//!   taken, 422 when a module is of the wrong kind for its step.
//! - `GET /v1/pipelines`: `{pipelines: [<status>...]}`.
//! - `GET /v1/pipelines/{name}`: `<status>`: `{name, status, desired,
//!   created_at, started_at, stopped_at, error, modules: [{step, module,
//!   version, sha256}], last_run, spec}`.
//! - `POST /v1/pipelines/{name}/stop`, `.../start`: the status afterwards
//!   (stopping waits for the current batch to finish).
//! - `POST /v1/pipelines/{name}/pause`, `.../resume`: the status afterwards
//!   (pausing waits for the current batch, its acknowledgements and, with
//!   checkpoints, a checkpoint). 409 when the pipeline is not running.
//! - `POST /v1/pipelines/{name}/swap`: body `{"module": "name[@version]",
//!   "step": "<step>"}` (`step` may be left out when there is one). The
//!   status document plus `swap`, the swap's record: 200 once it took
//!   effect at a batch boundary (`trial` until its first batch with
//!   records, then `live` or `rolled-back`), 202 if still `pending` after
//!   30 s, 422 when the new module could not start (the old one runs on).
//!   For a stopped pipeline, 200 and `swap: null`: it takes effect at start.
//! - `DELETE /v1/pipelines/{name}`: stops it, then forgets it; the last status.
//!
//! A pipeline defined by a spec file (`sluice serve --pipeline`) is read,
//! stopped, started, paused and resumed like the others; swapping its
//! modules, deleting it and creating another under its name are 409: the
//! file defines it.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;

use super::{ApiError, AppState};
use crate::manager::{Manager, ManagerError, PipelineStatus};
use crate::pipeline::SwapState;
use crate::registry::StoreError;

/// The pipeline routes (state: [`AppState`]).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/pipelines", get(list).post(create))
        .route("/v1/pipelines/{name}", get(show).delete(remove))
        .route("/v1/pipelines/{name}/stop", post(stop))
        .route("/v1/pipelines/{name}/start", post(start))
        .route("/v1/pipelines/{name}/pause", post(pause))
        .route("/v1/pipelines/{name}/resume", post(resume))
        .route("/v1/pipelines/{name}/swap", post(swap))
}

impl From<ManagerError> for ApiError {
    fn from(e: ManagerError) -> Self {
        let status = match &e {
            ManagerError::Spec(_) | ManagerError::InvalidName(_) | ManagerError::Invalid(_) => {
                StatusCode::BAD_REQUEST
            }
            ManagerError::NotRunning(_) => StatusCode::CONFLICT,
            ManagerError::Full(_) => StatusCode::INSUFFICIENT_STORAGE,
            ManagerError::NotFound(_) => StatusCode::NOT_FOUND,
            ManagerError::Exists(_) | ManagerError::DefinedByFile { .. } => StatusCode::CONFLICT,
            ManagerError::WrongKind { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ManagerError::Module { source, .. } => match source {
                StoreError::InvalidName(_) | StoreError::InvalidVersion(_) => {
                    StatusCode::BAD_REQUEST
                }
                StoreError::NotFound(_) | StoreError::VersionNotFound { .. } => {
                    StatusCode::NOT_FOUND
                }
                _ => return Self::internal(e),
            },
            ManagerError::Io(_) | ManagerError::Corrupt(_) => return Self::internal(e),
        };
        Self::new(status, e.to_string())
    }
}

fn manager(state: &AppState) -> Result<Arc<Manager>, ApiError> {
    state.pipelines.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "this server runs no pipelines (it was started without a pipeline manager)",
        )
    })
}

/// Runs blocking manager work off the async threads.
async fn blocking<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&Manager) -> Result<T, ManagerError> + Send + 'static,
) -> Result<T, ApiError> {
    let manager = manager(state)?;
    tokio::task::spawn_blocking(move || work(&manager))
        .await
        .map_err(|e| ApiError::internal(format!("a worker thread failed: {e}")))?
        .map_err(ApiError::from)
}

async fn create(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<PipelineStatus>), ApiError> {
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad_request("spec: the body is not UTF-8 text"))?;
    if text.trim().is_empty() {
        return Err(ApiError::bad_request(
            "spec: the request body is empty: send the pipeline spec, YAML or JSON",
        ));
    }
    let max = state.config.max_pipelines;
    let created = blocking(&state, move |m| m.create_within(&text, max)).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn list(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let pipelines = manager(&state)?.list();
    Ok(Json(serde_json::json!({ "pipelines": pipelines })))
}

async fn show(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<PipelineStatus>, ApiError> {
    let Path(name) = path?;
    Ok(Json(manager(&state)?.get(&name)?))
}

async fn stop(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<PipelineStatus>, ApiError> {
    let Path(name) = path?;
    Ok(Json(blocking(&state, move |m| m.stop(&name)).await?))
}

async fn start(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<PipelineStatus>, ApiError> {
    let Path(name) = path?;
    Ok(Json(blocking(&state, move |m| m.start(&name)).await?))
}

async fn remove(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<PipelineStatus>, ApiError> {
    let Path(name) = path?;
    Ok(Json(blocking(&state, move |m| m.delete(&name)).await?))
}

async fn pause(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<PipelineStatus>, ApiError> {
    let Path(name) = path?;
    Ok(Json(blocking(&state, move |m| m.pause(&name)).await?))
}

async fn resume(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<PipelineStatus>, ApiError> {
    let Path(name) = path?;
    Ok(Json(blocking(&state, move |m| m.resume(&name)).await?))
}

/// The body of `POST /v1/pipelines/{name}/swap`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwapBody {
    module: String,
    step: Option<String>,
}

async fn swap(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Path(name) = path?;
    let body: SwapBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be JSON {{\"module\": \"name@version\", \"step\": \"<step>\"}}: {e}"
        ))
    })?;
    let (status, record) = blocking(&state, move |m| {
        m.swap(&name, body.step.as_deref(), &body.module)
    })
    .await?;
    let code = match record.as_ref().map(|r| r.state) {
        Some(SwapState::RolledBack) => {
            let reason = record.and_then(|r| r.reason).unwrap_or_default();
            return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, reason));
        }
        Some(SwapState::Pending) => StatusCode::ACCEPTED,
        _ => StatusCode::OK,
    };
    let mut doc = serde_json::to_value(status).expect("a status serializes");
    doc["swap"] = serde_json::to_value(record).expect("a swap record serializes");
    Ok((code, Json(doc)))
}
