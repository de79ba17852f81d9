//! Request extractors whose refusals are problem+json, and the bridge from
//! an HTTP request to a gRPC request of the operator services.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use crate::problem::Problem;

/// Headers passed on to the operator services with every call: the
/// credentials, and the W3C trace context so a call's span joins the
/// client's trace.
const FORWARDED: [&str; 3] = ["authorization", "traceparent", "tracestate"];

/// Who is calling: the headers the gRPC services read. Every route builds
/// its gRPC requests with [`Caller::request`], so the services see the same
/// `authorization` metadata as over gRPC and apply the same checks.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    headers: Vec<(&'static str, tonic::metadata::AsciiMetadataValue)>,
}

impl Caller {
    /// The caller of an HTTP request with these headers.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut out = Vec::new();
        for name in FORWARDED {
            if let Some(v) = headers.get(name)
                && let Ok(v) = tonic::metadata::AsciiMetadataValue::try_from(v.as_bytes())
            {
                out.push((name, v));
            }
        }
        Self { headers: out }
    }

    /// A gRPC request carrying `msg` and the caller's headers.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        for (name, value) in &self.headers {
            req.metadata_mut().insert(*name, value.clone());
        }
        req
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::from_headers(&parts.headers))
    }
}

/// A JSON body (`Content-Type: application/json`), refused as problem+json.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: axum::extract::rejection::JsonRejection) -> Problem {
    use axum::extract::rejection::JsonRejection as R;
    match rejection {
        R::MissingJsonContentType(_) => Problem::http(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be JSON, with `Content-Type: application/json`",
        ),
        R::JsonDataError(e) => Problem::invalid("body", e.body_text()),
        R::JsonSyntaxError(e) => Problem::invalid("body", e.body_text()),
        R::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Problem::http(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the body is larger than this API accepts",
        ),
        other => Problem::http(other.status(), other.body_text()),
    }
}

/// Query parameters, refused as problem+json.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(e) => Err(Problem::invalid("query", e.body_text())),
        }
    }
}

/// Path parameters, refused as problem+json.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            Err(e) => Err(Problem::invalid("path", e.body_text())),
        }
    }
}

/// The `Last-Event-ID` header of an SSE reconnect, if any.
pub fn last_event_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}
