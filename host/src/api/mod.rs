//! The HTTP control plane (`sluice serve`): routes, authentication (the
//! [`guard`] and the bearer token) and rendering (JSON error bodies,
//! `/metrics` text, the dashboard, the OpenAPI document). The work behind
//! the routes is done elsewhere: modules are kept by the
//! [`crate::registry`] and checked by [`crate::runtime::inspect()`],
//! pipelines are run by the [`crate::manager`].
//!
//! Routes (the full description, with request and response shapes, is
//! `GET /v1/openapi.json`, kept in `api/openapi.json`):
//!
//! | route | answer |
//! |---|---|
//! | `GET /`, `GET /dashboard` | 200 `text/html`, the live dashboard: one self-contained page (`api/dashboard.html`) polling `GET /v1/pipelines` every second |
//! | `GET /healthz` | 200 `{"status": "ok"}` |
//! | `GET /readyz` | 200 `{"status": "ready", "not_ready": []}` once every pipeline that should run (desired `running` or `paused`) has started: its source polls, or every worker has its first tasks; else 503 `{"status": "not-ready", "not_ready": [{name, status, error}...]}` |
//! | `GET /v1/openapi.json` | 200, the OpenAPI 3.1 document |
//! | `GET /v1/modules` | 200, every module: name, latest version, number of versions |
//! | `POST /v1/modules/{name}` | body: the component's bytes, `Content-Type: application/wasm` (or `application/octet-stream`); `?config.<key>=<value>` configures the trial `init`. 201 new version, 200 identical to the latest version; 400 bad name or not wasm, 413 too large, 415 other content type, 422 not a Sluice component or its `init` failed, 503 (`Retry-After`) `--max-checks` uploads being checked already, 507 `--max-module-versions` reached |
//! | `GET /v1/modules/{name}` | 200, every version with hash, size, kind and the pipelines using it; 404 |
//! | `GET /v1/modules/{name}/{version}` | 200, one version's metadata; 400, 404 |
//! | `GET /v1/modules/{name}/{version}/wasm` | 200 `application/wasm`, the bytes; 400, 404 |
//! | `DELETE /v1/modules/{name}` | 200 `{name, deleted}`, every version; 404, 409 while a pipeline uses one |
//! | `DELETE /v1/modules/{name}/{version}` | 200 `{name, deleted}`; 400, 404, 409 while in use |
//! | `POST /v1/pipelines` | body: a spec, YAML or JSON (`Content-Type` `application/yaml`, `application/json`, `application/x-yaml` or `text/yaml`), modules as `name[@version]`. 201, the status document, the pipeline started; 400 (the error names the field), 404 unknown module, 409 name taken, 415 other content type, 422 wrong module kind, 507 `--max-pipelines` reached |
//! | `GET /v1/pipelines` | 200, every pipeline's status document |
//! | `GET /v1/pipelines/{name}` | 200, its status document (status `running`/`paused`/`stopped`/`failed`, desired, started_at, error, modules, last_run, progress, throughput, swaps, spec); 400, 404 |
//! | `POST /v1/pipelines/{name}/stop` | 200, the status once stopped; 400, 404 |
//! | `POST /v1/pipelines/{name}/start` | 200, the status once started (a paused one resumes); 400, 404 |
//! | `POST /v1/pipelines/{name}/pause` | 200, the status once paused after its current batch (acknowledged, committed, checkpointed); 400, 404, 409 not running |
//! | `POST /v1/pipelines/{name}/resume` | 200, the status once running again; 400, 404, 409 not running |
//! | `POST /v1/pipelines/{name}/swap` | body (`application/json`) `{"module": "name[@version]", "step": "<step>"}` (`step` optional with one step). 200, the status plus `swap`, its record, once applied at a batch boundary (`trial`, then `live`), or with `swap: null` for a pipeline not running (from its next start); 202 still `pending` after 30 s; 400 bad body, unknown step or not a module reference, 404 unknown pipeline, module or version, 422 wrong module kind or the new module could not start or failed its trial batch (rolled back) |
//! | `DELETE /v1/pipelines/{name}` | 200, the last status; stops it first, then removes `<data>/pipelines/<name>/` with its checkpoints, staged files and Parquet output written under it (the name starts afresh if created again); 400, 404 |
//! | `GET /metrics` | 200, Prometheus text: `sluice_modules`; per pipeline `sluice_pipeline_up`, `sluice_pipeline_paused`, `sluice_pipeline_module_version`, the counters `sluice_records_in_total`, `sluice_records_out_total`, `sluice_dead_letters_total`, `sluice_records_dropped_total`, `sluice_late_records_total`, `sluice_batches_total`, `sluice_guest_traps_total`, `sluice_guest_deadline_hits_total`, `sluice_guest_memory_hits_total`, the histogram `sluice_batch_duration_seconds`, the gauges `sluice_consumer_lag` and, with windows, `sluice_watermark_seconds`, `sluice_state_rows`, `sluice_state_bytes` (see [`metrics`]) |
//!
//! Every rejection is a 4xx (or, for a server fault, 5xx) with the JSON body
//! `{"error": "<message>"}`. When a token is configured (`sluice serve
//! --token-file PATH` or `SLUICE_TOKEN`, never the command line), every
//! request that changes something (anything but GET, HEAD and OPTIONS) needs
//! `Authorization: Bearer <token>`, else 401; reading stays open.
//!
//! Before that, on every route ([`guard`]): a `Host` that is not a loopback
//! name or one given with `--allow-host` is 421 (DNS rebinding); an `Origin`
//! other than the server's own, or `Sec-Fetch-Site: cross-site`/`same-site`,
//! is 403; after the token check, a change whose body has another content
//! type than its route takes is 415 (the bodiless changes take none, or
//! `application/json`). No response carries CORS headers, and `OPTIONS` is
//! 405: a page on another origin cannot change anything, token or not.
//!
//! Status documents show the spec with its secrets redacted: secret-looking
//! Kafka properties and transform config keys, and config values marked
//! `{ secret: "..." }`. Everything the server writes under its data
//! directory is readable by its user only (0600 files, 0700 directories).
//!
//! Uploads are streamed against the size limit (413 as soon as the declared
//! length or the bytes received pass it, without reading further), then
//! checked like `sluice validate` checks a step: a component of the transform
//! or aggregate world, compiled, instantiated with the default limits and its
//! `init` run. Storage is [`crate::registry::ModuleStore`]; pipelines are
//! run by [`crate::manager::Manager`].
//!
//! # Failures
//!
//! Every rejection is an [`ApiError`]: the registry's, the runtime's and
//! the manager's errors map to their status codes in one place each
//! (`From` impls here and in `pipelines.rs`), and their messages go to the
//! user as they are.

pub mod guard;
pub mod metrics;
pub mod modules;
pub mod pipelines;

#[cfg(test)]
mod budget_tests;
#[cfg(test)]
mod guard_tests;
#[cfg(test)]
mod pipeline_tests;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use sha2::{Digest, Sha256};

use crate::manager::Manager;
use crate::registry::{ModuleStore, StoreError};
use crate::runtime::{InspectError, InstantiateError, ModuleError, Runtime};
use crate::spec::Limits;

/// Default cap on an uploaded component's size: 32 MiB.
pub const DEFAULT_MAX_UPLOAD: u64 = 32 * 1024 * 1024;

/// The OpenAPI 3.1 description of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The live dashboard: one page, its CSS and script inline, that polls
/// `GET /v1/pipelines` every second.
pub const DASHBOARD: &str = include_str!("dashboard.html");

/// What the dashboard may load: nothing but itself and the API.
const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; img-src data:; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// Settings of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest accepted upload, in bytes.
    pub max_upload: u64,
    /// Limits of the trial instance an upload's `init` runs in.
    pub limits: Limits,
    /// When set, changes need `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Host names the server answers to besides the loopback names
    /// (`127.0.0.1`, `[::1]`, `localhost`); see [`guard`].
    pub allowed_hosts: Vec<String>,
    /// Most pipelines the server holds (507 past it).
    pub max_pipelines: usize,
    /// Most module versions the store holds, all modules together (507
    /// past it).
    pub max_module_versions: usize,
    /// Most uploads checked (compiled, `init` run) at once (503 with
    /// `Retry-After` past it).
    pub max_checks: usize,
}

/// Default of [`ApiConfig::max_pipelines`].
pub const DEFAULT_MAX_PIPELINES: usize = 100;
/// Default of [`ApiConfig::max_module_versions`].
pub const DEFAULT_MAX_MODULE_VERSIONS: usize = 1000;

/// Default of [`ApiConfig::max_checks`]: half the cores, at least one.
pub fn default_max_checks() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_upload: DEFAULT_MAX_UPLOAD,
            limits: Limits::default(),
            token: None,
            allowed_hosts: Vec::new(),
            max_pipelines: DEFAULT_MAX_PIPELINES,
            max_module_versions: DEFAULT_MAX_MODULE_VERSIONS,
            max_checks: default_max_checks(),
        }
    }
}

/// Which pipelines use `name@version` (a module in use cannot be deleted).
pub type ModuleUsers = Arc<dyn Fn(&str, u32) -> Vec<String> + Send + Sync>;

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<ModuleStore>,
    pub runtime: Runtime,
    pub config: Arc<ApiConfig>,
    pub users: ModuleUsers,
    /// The pipelines this server runs; `None`: the pipeline routes answer 404.
    pub pipelines: Option<Arc<Manager>>,
    /// One permit per upload being checked ([`ApiConfig::max_checks`]).
    pub checks: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// A state without pipelines, in which no pipeline uses any module
    /// (see [`AppState::with_pipelines`]).
    pub fn new(store: ModuleStore, runtime: Runtime, config: ApiConfig) -> Self {
        Self {
            store: Arc::new(store),
            runtime,
            checks: Arc::new(tokio::sync::Semaphore::new(config.max_checks.max(1))),
            config: Arc::new(config),
            users: Arc::new(|_: &str, _: u32| Vec::new()),
            pipelines: None,
        }
    }

    /// Adds the pipeline manager (opened on this state's `store`): the
    /// pipeline routes use it, and a module a pipeline uses cannot be deleted.
    pub fn with_pipelines(self, manager: Arc<Manager>) -> Self {
        let users = manager.clone();
        let mut state = self.with_users(move |name: &str, version: u32| users.users(name, version));
        state.pipelines = Some(manager);
        state
    }

    /// Replaces the function that says which pipelines use a module version.
    pub fn with_users(
        mut self,
        users: impl Fn(&str, u32) -> Vec<String> + Send + Sync + 'static,
    ) -> Self {
        self.users = Arc::new(users);
        self
    }
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/dashboard", get(dashboard))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics::metrics))
        .merge(modules::routes())
        .merge(pipelines::routes())
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such route (see GET /v1/openapi.json)",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route (see GET /v1/openapi.json)",
            )
        })
        .layer(axum::middleware::from_fn(guard::content_type))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` completes, then finishes
/// the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Refuses to listen beyond loopback without a token: anyone who can reach
/// the port could otherwise upload code.
pub fn check_exposure(addr: SocketAddr, token: Option<&str>) -> Result<(), String> {
    if addr.ip().is_loopback() || token.is_some() {
        return Ok(());
    }
    Err(format!(
        "refusing to listen on {addr} without a token: anyone who can reach it could upload code. \
         Pass --token-file (or set SLUICE_TOKEN), or listen on 127.0.0.1"
    ))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Readiness: 200 once every pipeline that should run has started, else
/// 503 naming those that have not (see [`Manager::not_ready`]).
async fn readyz(State(state): State<AppState>) -> Response {
    let not_ready = state
        .pipelines
        .as_ref()
        .map(|m| m.not_ready())
        .unwrap_or_default();
    let (status, word) = if not_ready.is_empty() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not-ready")
    };
    let body = serde_json::json!({ "status": word, "not_ready": not_ready });
    (status, Json(body)).into_response()
}

async fn dashboard() -> impl IntoResponse {
    (
        [(header::CONTENT_SECURITY_POLICY, DASHBOARD_CSP)],
        Html(DASHBOARD),
    )
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// The bearer-token check on every request that changes something.
async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let reads = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if let Some(expected) = &state.config.token
        && !reads
    {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        match given {
            None => {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "this server needs a token for changes: send `Authorization: Bearer <token>` \
                     (the sluice CLI: SLUICE_TOKEN or --token-file)",
                ));
            }
            Some(given) if !same_token(given, expected) => {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "wrong bearer token",
                ));
            }
            Some(_) => {}
        }
    }
    Ok(next.run(request).await)
}

/// Compares the tokens' hashes in constant time: neither the contents nor
/// the lengths leak through timing.
fn same_token(given: &str, expected: &str) -> bool {
    let (a, b) = (
        Sha256::digest(given.as_bytes()),
        Sha256::digest(expected.as_bytes()),
    );
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Every error the API answers with: a status and a message for a person,
/// sent as `{"error": "<message>"}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        tracing::error!("api: {message}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {message}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::InvalidName(_) | StoreError::InvalidVersion(_) => StatusCode::BAD_REQUEST,
            StoreError::NotFound(_) | StoreError::VersionNotFound { .. } => StatusCode::NOT_FOUND,
            StoreError::InUse { .. } => StatusCode::CONFLICT,
            StoreError::Io(_) | StoreError::Corrupt(_) | StoreError::Locked(_) => {
                return Self::internal(e);
            }
        };
        Self::new(status, e.to_string())
    }
}

impl From<ModuleError> for ApiError {
    /// Bytes that are not a component at all are a bad request; a
    /// well-formed module Sluice cannot run is unprocessable.
    fn from(e: ModuleError) -> Self {
        let status = match e {
            ModuleError::NotWasm | ModuleError::Invalid(_) => StatusCode::BAD_REQUEST,
            ModuleError::CoreModule
            | ModuleError::UnsupportedImports(_)
            | ModuleError::WrongWorld(_)
            | ModuleError::CompileTimeout(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ModuleError::TooManyCompiles { .. } | ModuleError::CompileThread(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        Self::new(status, e.to_string())
    }
}

impl From<InstantiateError> for ApiError {
    fn from(e: InstantiateError) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
    }
}

impl From<InspectError> for ApiError {
    fn from(e: InspectError) -> Self {
        match e {
            InspectError::Module(e) => e.into(),
            InspectError::Instantiate(e) => e.into(),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        Self::bad_request(e.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::bad_request(e.body_text())
    }
}
