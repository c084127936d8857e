//! `/v1/modules`: upload, list, show, download and delete components.
//!
//! - `POST /v1/modules/{name}`: the raw body is the component
//!   (`application/wasm`). Read frame by frame against
//!   [`ApiConfig::max_upload`](super::ApiConfig): 413 as soon as the
//!   declared length or the bytes received pass it. Then checked: 400 when
//!   it is not WebAssembly, 422 when it is a core module, a component of
//!   another world or one needing imports Sluice does not give, or when its
//!   `init` (run with the `config.<key>=<value>` query parameters, default
//!   none) rejects the configuration or traps. 201 with
//!   `{name, version, sha256, size, kind, exports, uploaded_at, used_by}` for
//!   a new version, 200 with the existing version when the bytes equal the
//!   latest version's. The check is [`crate::runtime::inspect()`]; the
//!   version is stored in the [`crate::registry`].
//! - `GET /v1/modules`: `{modules: [{name, latest_version, versions, kind, size, sha256, uploaded_at}]}`.
//! - `GET /v1/modules/{name}`: `{name, latest_version, versions: [<version>...]}`, each version with `used_by`.
//! - `GET /v1/modules/{name}/{version}`: one `<version>`.
//! - `GET /v1/modules/{name}/{version}/wasm`: the bytes (`ETag` is the SHA-256).
//! - `DELETE /v1/modules/{name}[/{version}]`: `{name, deleted: [versions]}`;
//!   409 while a pipeline uses a version being deleted.

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use http_body_util::BodyExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{ApiError, AppState};
use crate::registry::{Kind, VersionMeta, parse_version, validate_name};
use crate::runtime;

/// The module routes (state: [`AppState`]).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/modules", get(list))
        .route(
            "/v1/modules/{name}",
            get(show).post(upload).delete(remove_all),
        )
        .route(
            "/v1/modules/{name}/{version}",
            get(version).delete(remove_version),
        )
        .route("/v1/modules/{name}/{version}/wasm", get(download))
}

/// One version, as the API shows it.
#[derive(Debug, Serialize)]
pub struct VersionInfo {
    pub name: String,
    #[serde(flatten)]
    pub meta: VersionMeta,
    /// The pipelines that use this version.
    pub used_by: Vec<String>,
}

#[derive(Debug, Serialize)]
struct ModuleSummary {
    name: String,
    latest_version: u32,
    versions: usize,
    kind: Kind,
    size: u64,
    sha256: String,
    uploaded_at: String,
}

#[derive(Debug, Serialize)]
struct ModuleDetail {
    name: String,
    latest_version: u32,
    versions: Vec<VersionInfo>,
}

#[derive(Debug, Serialize)]
struct Deleted {
    name: String,
    deleted: Vec<u32>,
}

type Reply<T> = Result<Json<T>, ApiError>;

fn info(state: &AppState, name: &str, meta: VersionMeta) -> VersionInfo {
    VersionInfo {
        name: name.to_owned(),
        used_by: (state.users)(name, meta.version),
        meta,
    }
}

/// Runs blocking store or runtime work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal(format!("a worker thread failed: {e}")))?
}

async fn list(State(state): State<AppState>) -> Reply<serde_json::Value> {
    let modules: Vec<ModuleSummary> = state
        .store
        .list()
        .into_iter()
        .filter_map(|(name, versions)| {
            let latest = versions.last()?;
            Some(ModuleSummary {
                latest_version: latest.version,
                versions: versions.len(),
                kind: latest.kind,
                size: latest.size,
                sha256: latest.sha256.clone(),
                uploaded_at: latest.uploaded_at.clone(),
                name,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "modules": modules })))
}

async fn show(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Reply<ModuleDetail> {
    let Path(name) = path?;
    let versions = state.store.versions(&name)?;
    let latest_version = versions.last().map_or(0, |v| v.version);
    let versions = versions
        .into_iter()
        .map(|v| info(&state, &name, v))
        .collect();
    Ok(Json(ModuleDetail {
        name,
        latest_version,
        versions,
    }))
}

async fn version(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Reply<VersionInfo> {
    let Path((name, version)) = path?;
    validate_name(&name)?;
    let meta = state.store.version(&name, parse_version(&version)?)?;
    Ok(Json(info(&state, &name, meta)))
}

async fn download(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Path((name, version)) = path?;
    validate_name(&name)?;
    let version = parse_version(&version)?;
    let store = state.store.clone();
    let (meta, bytes) = blocking(move || {
        let meta = store.version(&name, version)?;
        Ok((meta, store.read(&name, version)?))
    })
    .await?;
    let headers = [
        (header::CONTENT_TYPE, "application/wasm".to_owned()),
        (header::ETAG, format!("\"{}\"", meta.sha256)),
    ];
    Ok((headers, bytes))
}

async fn upload(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<VersionInfo>), ApiError> {
    let Path(name) = path?;
    validate_name(&name)?;
    let config = init_config(query?.0)?;
    let bytes = read_limited(&headers, body, state.config.max_upload).await?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    if let Some(latest) = state.store.latest(&name)
        && latest.sha256 == sha256
    {
        return Ok((StatusCode::OK, Json(info(&state, &name, latest))));
    }
    let stored: usize = state.store.list().iter().map(|(_, v)| v.len()).sum();
    let max = state.config.max_module_versions;
    if stored >= max {
        return Err(ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            format!(
                "this server holds at most {max} module versions (sluice serve \
                 --max-module-versions) and has {stored}: delete unused versions first"
            ),
        ));
    }
    // Compiling and trying `init` is the costly part: a bounded number at
    // once, the others told to come back.
    let Ok(permit) = state.checks.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "this server is checking {} uploads already; retry in a moment",
                state.config.max_checks
            ),
        ));
    };
    let worker = state.clone();
    let module = name.clone();
    let (meta, created) = blocking(move || {
        let limits = worker.config.limits;
        let inspected = runtime::inspect(&worker.runtime, &module, &bytes, limits, config);
        drop(permit);
        Ok(worker.store.add(&module, &bytes, inspected?.into())?)
    })
    .await?;
    let meta = info(&state, &name, meta);
    let status = if created {
        tracing::info!(
            "module {}@{} stored ({} bytes, sha256 {})",
            meta.name,
            meta.meta.version,
            meta.meta.size,
            meta.meta.sha256
        );
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(meta)))
}

async fn remove_all(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Reply<Deleted> {
    let Path(name) = path?;
    remove(state, name, None).await
}

async fn remove_version(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Reply<Deleted> {
    let Path((name, version)) = path?;
    validate_name(&name)?;
    let version = parse_version(&version)?;
    remove(state, name, Some(version)).await
}

async fn remove(state: AppState, name: String, version: Option<u32>) -> Reply<Deleted> {
    blocking(move || {
        let deleted = state.store.remove(&name, version, &*state.users)?;
        tracing::info!("module {name}: deleted versions {deleted:?}");
        Ok(Json(Deleted { name, deleted }))
    })
    .await
}

/// The trial `init`'s configuration, from `config.<key>=<value>` parameters.
fn init_config(query: Vec<(String, String)>) -> Result<Vec<(String, String)>, ApiError> {
    query
        .into_iter()
        .map(|(key, value)| match key.strip_prefix("config.") {
            Some(key) if !key.is_empty() => Ok((key.to_owned(), value)),
            _ => Err(ApiError::bad_request(format!(
                "unknown query parameter `{key}`: the only parameters are `config.<key>=<value>`, \
                 the configuration the module's init is tried with"
            ))),
        })
        .collect()
}

/// Reads the body frame by frame, failing with 413 as soon as the declared
/// length or the bytes received pass `limit`.
async fn read_limited(
    headers: &HeaderMap,
    mut body: Body,
    limit: u64,
) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the module is larger than this server's upload limit of {} bytes (sluice serve --max-upload)",
                limit
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let capacity = usize::try_from(declared.unwrap_or(0).min(limit)).unwrap_or(0);
    let mut bytes = Vec::with_capacity(capacity);
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::bad_request(format!("cannot read the upload: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if (bytes.len() + data.len()) as u64 > limit {
                return Err(too_large());
            }
            bytes.extend_from_slice(&data);
        }
    }
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "the request body is empty: send the component's bytes (e.g. `sluice module push <name> <file.wasm>`)",
        ));
    }
    Ok(bytes)
}
