//! The web console: plain HTML, CSS and JavaScript modules (no build step,
//! no Node.js, no CDN), embedded in the binary by `build.rs` and served at
//! `/` and `/console/…` next to the HTTP API.
//!
//! The console is a client of the public HTTP API (`/api/v1/…`) only: it has
//! no endpoint of its own, so everything it shows can also be scripted. It
//! signs in with an operator token kept in `sessionStorage` and sends it as
//! `Authorization: Bearer …`; the token never appears in a URL. See
//! docs/console.md.
//!
//! Every response carries a strict `Content-Security-Policy` (scripts and
//! styles from this origin only, no inline script, no framing), so that a
//! value a device sent cannot run as script in an operator's browser.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// One embedded file.
#[derive(Debug)]
pub(crate) struct Asset {
    /// Path under `assets/`, with `/`.
    pub(crate) path: &'static str,
    pub(crate) body: &'static [u8],
    /// A quoted hash of the body.
    pub(crate) etag: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The policy every console response carries.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The console's routes: `/` (the page) and `/console/{path}` (its scripts,
/// styles and vendored libraries). Merge it with the API's router.
pub fn router() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/console/{*path}", get(asset))
}

/// The paths of the embedded files (under `assets/`, with `/`).
pub fn asset_paths() -> impl Iterator<Item = &'static str> {
    ASSETS.iter().map(|a| a.path)
}

/// The embedded file at `path`, if any.
pub fn asset_body(path: &str) -> Option<&'static [u8]> {
    find(path).map(|a| a.body)
}

fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

async fn index(headers: HeaderMap) -> Response {
    match find("index.html") {
        Some(a) => serve(a, &headers),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match find(&path).filter(|a| a.path != "index.html") {
        Some(a) => serve(a, &headers),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "no such console file\n",
        )
            .into_response(),
    }
}

fn serve(a: &'static Asset, headers: &HeaderMap) -> Response {
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|t| t.trim() == a.etag || t.trim() == "*")
        });
    let common = [
        (header::ETAG, HeaderValue::from_static(a.etag)),
        // Revalidated every time: an upgrade is seen at once, and an
        // unchanged file costs a 304.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(a.path)),
        )],
        a.body,
    )
        .into_response()
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}
