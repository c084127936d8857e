//! What a browser may not do to the server: the checks that make the API
//! safe against cross-site requests and DNS rebinding by construction, even
//! without a token.
//!
//! In the order they run (Host and Origin before the token check, the
//! content type after it), before any handler:
//! - **Host.** The `Host` header must name the server by a loopback name
//!   (`127.0.0.1`, `[::1]`, `localhost`, any port) or by a name the operator
//!   allowed (`sluice serve --allow-host`). A rebinding page reaches the
//!   server under its own name (`Host: evil.example`): 421. A request with no
//!   `Host` at all (HTTP/1.0 tools) passes; browsers always send one.
//! - **Origin.** A request that carries `Origin` must come from the server's
//!   own origin: `http://` plus the very authority of its `Host` header. Any
//!   other (another port, another name, `null`): 403, whatever the method.
//!   `Sec-Fetch-Site: cross-site` or `same-site` (another port of localhost
//!   is the same site but another origin): 403 too.
//! - **Content type.** Bodies must say what they are: a module upload
//!   `application/wasm` or `application/octet-stream`; a pipeline spec
//!   `application/json`, `application/yaml`, `application/x-yaml` or
//!   `text/yaml`; a swap `application/json`; the other changes carry no body,
//!   so no content type or `application/json`. Anything else: 415. The types
//!   a page may send without a CORS preflight (`text/plain`, forms) are
//!   therefore never accepted.
//!
//! No route answers with CORS headers, and `OPTIONS` gets 405 without
//! `Access-Control-Allow-*`: a preflight fails, so a page cannot send the
//! accepted types either.
//!
//! Cost: a few header comparisons per request.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::{ApiError, AppState};

/// Names the server always answers to.
const LOOPBACK: [&str; 3] = ["127.0.0.1", "[::1]", "localhost"];

/// Types a module upload may have.
pub const WASM_TYPES: [&str; 2] = ["application/wasm", "application/octet-stream"];
/// Types a pipeline spec may have.
pub const SPEC_TYPES: [&str; 4] = [
    "application/yaml",
    "application/json",
    "application/x-yaml",
    "text/yaml",
];
/// Types a swap, and any other change, may have.
pub const JSON_TYPES: [&str; 1] = ["application/json"];

/// The outer middleware: Host, then Origin and Sec-Fetch-Site.
pub async fn guard(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let headers = request.headers();
    let host = check_host(headers, &state.config.allowed_hosts)?;
    check_origin(headers, host)?;
    Ok(next.run(request).await)
}

/// The inner middleware (after the token check): the content type.
pub async fn content_type(request: Request, next: Next) -> Result<Response, ApiError> {
    check_content_type(request.method(), request.uri().path(), request.headers())?;
    Ok(next.run(request).await)
}

/// The `Host` header's name (without port), lowercased, must be allowed.
/// Returns the header's authority, lowercased, for the origin check.
fn check_host<'a>(headers: &'a HeaderMap, allowed: &[String]) -> Result<Option<&'a str>, ApiError> {
    let Some(value) = headers.get(header::HOST) else {
        return Ok(None);
    };
    let authority = value.to_str().ok().map(str::trim).unwrap_or_default();
    let name = host_name(authority).to_ascii_lowercase();
    let known =
        LOOPBACK.contains(&name.as_str()) || allowed.iter().any(|a| a.eq_ignore_ascii_case(&name));
    if authority.is_empty() || !known {
        return Err(ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "Host {authority:?} is not a name of this server: it answers to 127.0.0.1, [::1] \
                 and localhost, and to the names given with `sluice serve --allow-host NAME` \
                 (a page that re-points its own name at this server is refused)"
            ),
        ));
    }
    Ok(Some(authority))
}

/// `name` of `name:port`, `[v6]` of `[v6]:port`.
fn host_name(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(name, _)| name)
}

/// `Origin`, when sent, must be `http://<the Host header>`; `Sec-Fetch-Site`
/// must not say the request comes from another site or origin.
fn check_origin(headers: &HeaderMap, host: Option<&str>) -> Result<(), ApiError> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or_default();
        if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site") {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "cross-origin request refused (Sec-Fetch-Site: {site}): this API answers \
                     only its own pages and non-browser clients"
                ),
            ));
        }
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default().trim();
    let own = host.is_some_and(|host| same_origin(origin, host));
    if !own {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "cross-origin request refused (Origin: {origin}): this API answers only its own \
                 pages and non-browser clients"
            ),
        ));
    }
    Ok(())
}

/// Whether `origin` is `http://host`, the default port written or not.
fn same_origin(origin: &str, host: &str) -> bool {
    let Some(authority) = origin.strip_prefix("http://") else {
        return false;
    };
    let normal = |a: &str| {
        let a = a.to_ascii_lowercase();
        a.strip_suffix(":80").map(str::to_owned).unwrap_or(a)
    };
    normal(authority) == normal(host)
}

/// What a change's body must be.
enum Body {
    /// One of these content types.
    Typed(&'static [&'static str]),
    /// No body: no content type, or `application/json`.
    Empty,
}

/// What the body of `method path` must be; `None` for reads.
fn body_rule(method: &Method, path: &str) -> Option<Body> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    Some(match (method, segments.as_slice()) {
        (&Method::POST, ["v1", "modules", _]) => Body::Typed(&WASM_TYPES),
        (&Method::POST, ["v1", "pipelines"]) => Body::Typed(&SPEC_TYPES),
        (&Method::POST, ["v1", "pipelines", _, "swap"]) => Body::Typed(&JSON_TYPES),
        _ => Body::Empty,
    })
}

/// The content type a client sends with a body for `method path` (a spec
/// as YAML, which JSON is too); `None` for routes that take no body.
pub fn content_type_for(method: &Method, path: &str) -> Option<&'static str> {
    let path = path.split('?').next().unwrap_or_default();
    match body_rule(method, path)? {
        Body::Typed(types) => types.first().copied(),
        Body::Empty => None,
    }
}

/// Refuses a change whose content type the route does not take (415).
fn check_content_type(method: &Method, path: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(rule) = body_rule(method, path) else {
        return Ok(());
    };
    let given = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    let essence = given.map(|v| {
        v.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    let (types, ok) = match (&rule, essence.as_deref()) {
        (Body::Empty, None) => (&JSON_TYPES[..], true),
        (Body::Empty, Some(e)) => (&JSON_TYPES[..], JSON_TYPES.contains(&e)),
        (Body::Typed(types), e) => (*types, e.is_some_and(|e| types.contains(&e))),
    };
    if ok {
        return Ok(());
    }
    let given = given.map_or_else(|| "(none)".to_owned(), |g| format!("{g:?}"));
    let wanted = types.join(", ");
    let message = match rule {
        Body::Empty => format!(
            "{method} {path} takes no body: send no Content-Type (or {wanted}), not {given}"
        ),
        Body::Typed(_) => {
            format!("{method} {path}: Content-Type {given} is not accepted; send one of: {wanted}")
        }
    };
    Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        assert_eq!(host_name("localhost:7878"), "localhost");
        assert_eq!(host_name("[::1]:7878"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
        assert!(same_origin("http://127.0.0.1:7878", "127.0.0.1:7878"));
        assert!(same_origin("http://LocalHost", "localhost:80"));
        assert!(!same_origin("http://127.0.0.1:7879", "127.0.0.1:7878"));
        assert!(!same_origin("https://127.0.0.1:7878", "127.0.0.1:7878"));
        assert!(!same_origin("null", "127.0.0.1:7878"));
    }
}
