//! The HTTP ingest frontend.
//!
//! | route | credential | body |
//! |---|---|---|
//! | `POST /v1/telemetry` | device access token | Tributary JSON, SenML (`application/senml+json`), or either in CBOR (`application/cbor`, `application/senml+cbor`) |
//! | `POST /write` | tenant ingest token | InfluxDB 1.x line protocol (`db`, `precision`) |
//! | `POST /api/v2/write` | tenant ingest token | InfluxDB 2.x line protocol (`org`, `bucket`, `precision`) |
//!
//! Bodies may be gzip-compressed (`Content-Encoding: gzip`). A request gets
//! `204 No Content` only after its points are durable in the log. Errors are
//! RFC 9457 `application/problem+json` documents that name the offending line
//! or field. Under backpressure the answer is `503` with `Retry-After`.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tributary_core::directory::Principal;
use tributary_core::formats::{self, lineproto::Precision};
use tributary_ingest::{IngestError, Ingestor, Rejection, RequestContext};

mod body;
mod problem;

pub use problem::Problem;
pub use tributary_http_server::HttpLimits;

/// The frontend's router. Serve it with [`serve`] or any axum server.
pub fn router(ingestor: Ingestor) -> Router {
    Router::new()
        .route("/v1/telemetry", post(telemetry))
        .route("/write", post(write_v1))
        .route("/api/v2/write", post(write_v2))
        .route("/ping", get(ping).head(ping))
        .fallback(not_found)
        .with_state(ingestor)
}

/// Serves the router on `listener` within `limits` (connections, header
/// time, idle keep-alive, minimum body rate: see [`HttpLimits`]) until
/// `shutdown` resolves, then lets in-flight requests finish (their appends
/// complete and get their answer).
pub async fn serve(
    listener: tokio::net::TcpListener,
    limits: HttpLimits,
    ingestor: Ingestor,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tributary_http_server::serve(listener, router(ingestor), limits, shutdown).await
}

/// InfluxDB clients probe `/ping` before writing.
async fn ping() -> StatusCode {
    StatusCode::NO_CONTENT
}

async fn not_found() -> Response {
    Problem::new(StatusCode::NOT_FOUND, "not-found", "No such endpoint")
        .detail("Tributary ingests at POST /v1/telemetry, /write and /api/v2/write")
        .into_response()
}

/// Maps a body that could not be read to HTTP.
fn body_error_response(e: body::BodyError) -> Response {
    match e {
        body::BodyError::Ingest(e) => error_response(e),
        body::BodyError::TooSlow(m) => Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "body-too-slow",
            "Request body too slow",
        )
        .detail(format!("{m}; nothing from this request was acknowledged"))
        .into_response(),
    }
}

/// Maps the shared ingest errors to HTTP, in one place.
fn error_response(e: IngestError) -> Response {
    match e {
        IngestError::Unauthenticated => Problem::new(StatusCode::UNAUTHORIZED, "unauthenticated", "Invalid credential")
            .detail("send `Authorization: Bearer <token>` with a valid, unrevoked token of an enabled device")
            .into_response(),
        IngestError::Forbidden(m) => Problem::new(StatusCode::FORBIDDEN, "forbidden", "Not allowed").detail(m).into_response(),
        IngestError::UnknownDevice(m) => Problem::new(StatusCode::FORBIDDEN, "unknown-device", "Unknown device")
            .detail(format!("{m}; create it first, or enable auto-provisioning for the tenant"))
            .into_response(),
        IngestError::Invalid(pe) => Problem::new(StatusCode::BAD_REQUEST, "invalid-body", "Invalid request body")
            .detail(pe.to_string())
            .location(&pe.location)
            .into_response(),
        IngestError::TooLarge(m) => {
            Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", "Request too large").detail(m).into_response()
        }
        IngestError::Overloaded { retry_after_secs } => {
            let mut r = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "Overloaded, retry later")
                .detail("the ingest pipeline is at capacity; nothing from this request was acknowledged")
                .into_response();
            r.headers_mut().insert(header::RETRY_AFTER, retry_after_secs.into());
            r
        }
        IngestError::Quota(q) => {
            let retry = q.retry_after_secs.unwrap_or(60);
            let mut r = Problem::new(StatusCode::TOO_MANY_REQUESTS, "quota-exceeded", "Over a tenant quota")
                .detail(format!("{q}; nothing from this request was acknowledged; retry in {retry} s"))
                .quota(q.quota.name(), q.limit)
                .into_response();
            r.headers_mut().insert(header::RETRY_AFTER, retry.into());
            r
        }
        IngestError::Unavailable(m) => {
            tracing::warn!(error = %m, "ingest unavailable");
            let mut r = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Temporarily unavailable")
                .detail("the log or registry could not be reached; nothing from this request was acknowledged")
                .into_response();
            r.headers_mut().insert(header::RETRY_AFTER, 1.into());
            r
        }
    }
}

fn request_context(headers: &HeaderMap, content_type: &str) -> RequestContext {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 512)
            .unwrap_or_default()
            .to_string()
    };
    RequestContext {
        content_type: content_type.to_string(),
        traceparent: get("traceparent"),
        tracestate: get("tracestate"),
        ..RequestContext::default()
    }
}

/// The bearer credential: `Authorization: Bearer|Token <t>`, Basic auth's
/// password (InfluxDB 1.x clients), or the `p` query parameter (InfluxDB 1.x).
fn credential(headers: &HeaderMap, query_password: Option<&str>) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        for scheme in ["Bearer ", "bearer ", "Token ", "token "] {
            if let Some(t) = v.strip_prefix(scheme) {
                return Some(t.trim().to_string());
            }
        }
        if let Some(b) = v
            .strip_prefix("Basic ")
            .or_else(|| v.strip_prefix("basic "))
        {
            use base64::Engine;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            return text.split_once(':').map(|(_, p)| p.to_string());
        }
        return None;
    }
    query_password.map(str::to_string)
}

async fn authenticate(
    ingestor: &Ingestor,
    headers: &HeaderMap,
    query_password: Option<&str>,
) -> Result<Principal, Response> {
    let token = credential(headers, query_password)
        .ok_or_else(|| error_response(IngestError::Unauthenticated))?;
    ingestor.authenticate(&token).await.map_err(error_response)
}

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

async fn telemetry(State(ingestor): State<Ingestor>, headers: HeaderMap, body: Body) -> Response {
    let principal = match authenticate(&ingestor, &headers, None).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let media = media_type(&headers);
    type Parser = fn(
        &[u8],
        i64,
        &tributary_core::Limits,
    ) -> Result<Vec<tributary_core::model::Point>, formats::ParseError>;
    let (parse, media): (Parser, &str) = match media.as_str() {
        "" | "application/json" => (formats::json::parse, "application/json"),
        "application/senml+json" => (formats::senml::parse, "application/senml+json"),
        "application/cbor" => (formats::cbor::parse, "application/cbor"),
        "application/senml+cbor" => (formats::cbor::parse_senml, "application/senml+cbor"),
        other => {
            return Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported content type",
            )
            .detail(format!(
                "{other:?}; use application/json, application/senml+json, application/cbor or application/senml+cbor"
            ))
            .into_response();
        }
    };
    let limits = ingestor.limits().clone();
    let (bytes, _permit) = match body::read(&ingestor, &headers, body, limits.max_body_bytes).await
    {
        Ok(b) => b,
        Err(e) => return body_error_response(e),
    };
    // The tenant's message and byte rates.
    if let Err(e) = ingestor.admit(principal.tenant(), bytes.len()).await {
        return error_response(e);
    }
    let now = tributary_core::time::now_ns();
    let parsed = parse(&bytes, now, &limits);
    let points = match parsed {
        Ok(p) => p,
        Err(e) => {
            ingestor.metrics().rejected(Rejection::Invalid, &e);
            return error_response(e.into());
        }
    };
    let ctx = request_context(&headers, media);
    match ingestor.ingest_device(&principal, points, &ctx).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error_response(e),
    }
}

/// Query parameters of InfluxDB 1.x `/write`.
#[derive(Debug, Deserialize)]
struct V1Params {
    /// Database: accepted and ignored (the tenant comes from the token).
    #[allow(dead_code)]
    db: Option<String>,
    precision: Option<String>,
    /// InfluxDB 1.x query-string credentials.
    #[allow(dead_code)]
    u: Option<String>,
    p: Option<String>,
    /// The tag that names the device, overriding the tenant's setting.
    device_tag: Option<String>,
}

/// Query parameters of InfluxDB 2.x `/api/v2/write`.
#[derive(Debug, Deserialize)]
struct V2Params {
    #[allow(dead_code)]
    org: Option<String>,
    #[allow(dead_code)]
    bucket: Option<String>,
    precision: Option<String>,
    device_tag: Option<String>,
}

async fn write_v1(
    State(ingestor): State<Ingestor>,
    Query(q): Query<V1Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    write_lines(ingestor, headers, body, q.precision, q.device_tag, q.p).await
}

async fn write_v2(
    State(ingestor): State<Ingestor>,
    Query(q): Query<V2Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    write_lines(ingestor, headers, body, q.precision, q.device_tag, None).await
}

async fn write_lines(
    ingestor: Ingestor,
    headers: HeaderMap,
    body: Body,
    precision: Option<String>,
    device_tag: Option<String>,
    query_password: Option<String>,
) -> Response {
    let principal = match authenticate(&ingestor, &headers, query_password.as_deref()).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let precision = match precision.as_deref().map(Precision::parse) {
        None => Precision::Ns,
        Some(Some(p)) => p,
        Some(None) => {
            return error_response(IngestError::Invalid(formats::ParseError::new(
                "precision",
                "must be one of ns, us, ms, s (or n, u, m, h)",
            )));
        }
    };
    let device_tag = match device_tag {
        Some(t) if !t.is_empty() => t,
        _ => match ingestor.device_tag(principal.tenant()).await {
            Ok(t) => t,
            Err(e) => return error_response(e),
        },
    };
    let limits = ingestor.limits().clone();
    let (bytes, _permit) = match body::read(&ingestor, &headers, body, limits.max_body_bytes).await
    {
        Ok(b) => b,
        Err(e) => return body_error_response(e),
    };
    // The tenant's message and byte rates.
    if let Err(e) = ingestor.admit(principal.tenant(), bytes.len()).await {
        return error_response(e);
    }
    let now = tributary_core::time::now_ns();
    let parse = tokio::task::block_in_place(|| {
        formats::lineproto::parse(&bytes, precision, &device_tag, now, &limits)
    });
    let batches = match parse {
        Ok(b) => b,
        Err(e) => {
            ingestor.metrics().rejected(Rejection::Invalid, &e);
            return error_response(e.into());
        }
    };
    let ctx = request_context(&headers, "text/plain; format=influx-line");
    match ingestor.ingest_tenant(&principal, batches, &ctx).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error_response(e),
    }
}

/// How long clients are told to wait when the frontend sheds load.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
