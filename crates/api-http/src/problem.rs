//! Errors as RFC 9457 problem details (`application/problem+json`), and the
//! one place where a gRPC status becomes an HTTP status.
//!
//! The API answers through the operator gRPC services, so a refusal is
//! first a `tonic::Status` with its `google.rpc` details. [`Problem::from`]
//! keeps all of it: the code (as `code`), the message (as `detail`), the
//! request fields to fix (`BadRequest` violations, as `violations`), the
//! quota that ran out (`QuotaFailure`, as `quota`), and the retry hint
//! (`RetryInfo`, as the `Retry-After` header and `retry_after_seconds`).

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tonic::Code;
use tonic_types::StatusExt;
use utoipa::ToSchema;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// How long to wait before retrying an overloaded or rate-limited call when
/// the service gave no hint of its own.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Longest `detail`: it may quote what the client sent.
const MAX_DETAIL_BYTES: usize = 1024;

/// An error response (RFC 9457): [`ProblemDetails`], boxed so that
/// `Result<T, Problem>` stays small.
#[derive(Debug, Clone)]
pub struct Problem(Box<ProblemDetails>);

impl std::ops::Deref for Problem {
    type Target = ProblemDetails;
    fn deref(&self) -> &ProblemDetails {
        &self.0
    }
}

impl std::ops::DerefMut for Problem {
    fn deref_mut(&mut self) -> &mut ProblemDetails {
        &mut self.0
    }
}

/// The body of an error response (RFC 9457 problem details).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemDetails {
    /// A URI naming the kind of problem:
    /// `https://tributary.dev/problems/<code>`, such as `.../not-found`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind, such as `Invalid argument`.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong and, where possible, what to do.
    pub detail: String,
    /// The gRPC code the operator services answered with, in lower snake
    /// case: `invalid_argument`, `not_found`, `resource_exhausted`, ...
    pub code: String,
    /// The request fields to fix, when the request was wrong.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<Violation>,
    /// The quota or limit that refused the call.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub quota: Vec<Violation>,
    /// Seconds to wait before retrying (also the `Retry-After` header).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}

/// One field (or quota) and what is wrong with it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Violation {
    /// The request field, such as `target.selector`, or the quota's subject.
    pub field: String,
    /// What is wrong and how to fix it.
    pub description: String,
}

/// The HTTP status of each gRPC code: the one mapping, used by every route.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

fn title(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Cancelled",
        Code::Unknown | Code::Internal | Code::DataLoss => "Internal error",
        Code::InvalidArgument | Code::OutOfRange => "Invalid argument",
        Code::DeadlineExceeded => "Deadline exceeded",
        Code::NotFound => "Not found",
        Code::AlreadyExists => "Already exists",
        Code::PermissionDenied => "Permission denied",
        Code::ResourceExhausted => "Resource exhausted",
        Code::FailedPrecondition => "Failed precondition",
        Code::Aborted => "Aborted",
        Code::Unimplemented => "Not implemented",
        Code::Unavailable => "Unavailable",
        Code::Unauthenticated => "Unauthenticated",
    }
}

fn capped(mut text: String) -> String {
    if text.len() > MAX_DETAIL_BYTES {
        let mut end = MAX_DETAIL_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

impl Problem {
    /// A problem of `code` with `detail` and no further details.
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        let status = http_status(code);
        let retry_after_seconds = matches!(code, Code::ResourceExhausted | Code::Unavailable)
            .then_some(DEFAULT_RETRY_AFTER.as_secs());
        Self(Box::new(ProblemDetails {
            kind: format!(
                "https://tributary.dev/problems/{}",
                code_name(code).replace('_', "-")
            ),
            title: title(code).to_string(),
            status: status.as_u16(),
            detail: capped(detail.into()),
            code: code_name(code).to_string(),
            violations: Vec::new(),
            quota: Vec::new(),
            retry_after_seconds,
        }))
    }

    /// A request field that is wrong (400).
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        let (field, description) = (field.into(), description.into());
        let mut p = Self::new(Code::InvalidArgument, format!("{field}: {description}"));
        p.violations.push(Violation {
            field,
            description: capped(description),
        });
        p
    }

    /// A problem whose HTTP status has no gRPC code of its own (404 for an
    /// unknown path, 405, 413, 415).
    pub fn http(status: StatusCode, detail: impl Into<String>) -> Self {
        let code = match status {
            StatusCode::NOT_FOUND => Code::NotFound,
            StatusCode::PAYLOAD_TOO_LARGE => Code::ResourceExhausted,
            _ => Code::InvalidArgument,
        };
        let mut p = Self::new(code, detail);
        p.status = status.as_u16();
        p.title = status
            .canonical_reason()
            .unwrap_or("Bad request")
            .to_string();
        p.retry_after_seconds = None;
        p
    }
}

impl From<tonic::Status> for Problem {
    fn from(status: tonic::Status) -> Self {
        let code = status.code();
        let detail = if matches!(code, Code::Unknown | Code::Internal | Code::DataLoss) {
            // The services log internal failures; their text stays there.
            tracing::warn!(code = ?code, message = %status.message(), "operator API call failed");
            "internal error; see the server log".to_string()
        } else {
            status.message().to_string()
        };
        let mut p = Self::new(code, detail);
        {
            for d in status.get_error_details_vec() {
                match d {
                    tonic_types::ErrorDetail::BadRequest(b) => {
                        p.violations
                            .extend(b.field_violations.into_iter().map(|v| Violation {
                                field: capped(v.field),
                                description: capped(v.description),
                            }));
                    }
                    tonic_types::ErrorDetail::QuotaFailure(q) => {
                        p.quota.extend(q.violations.into_iter().map(|v| Violation {
                            field: capped(v.subject),
                            description: capped(v.description),
                        }));
                    }
                    tonic_types::ErrorDetail::RetryInfo(r) => {
                        if let Some(delay) = r.retry_delay {
                            // Round up: retrying early only earns another 429.
                            let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
                            p.retry_after_seconds = Some(secs.max(1));
                        }
                    }
                    _ => {}
                }
            }
        }
        p
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after_seconds;
        let body = serde_json::to_vec(&*self.0).unwrap_or_default();
        let mut resp = (status, body).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tributary\""),
            );
        }
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// The result of every route.
pub type ApiResult<T> = Result<T, Problem>;

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::ErrorDetails;

    #[test]
    fn every_grpc_code_has_a_client_or_server_status() {
        for code in (0..=16).map(Code::from_i32) {
            let status = http_status(code);
            if code == Code::Ok {
                assert_eq!(status, StatusCode::OK);
                continue;
            }
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{code:?} → {status}"
            );
        }
        assert_eq!(
            http_status(Code::ResourceExhausted),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
    }

    #[test]
    fn details_become_members_and_retry_after() {
        let status = tonic::Status::with_error_details(
            Code::ResourceExhausted,
            "too many",
            ErrorDetails::with_retry_info(Some(Duration::from_millis(2500))),
        );
        let p = Problem::from(status);
        assert_eq!(p.status, 429);
        assert_eq!(p.retry_after_seconds, Some(3));
        let resp = p.into_response();
        assert_eq!(resp.headers()[header::RETRY_AFTER], "3");
        assert_eq!(resp.headers()[header::CONTENT_TYPE], PROBLEM_JSON);

        let status = tonic::Status::with_error_details(
            Code::InvalidArgument,
            "window: bad",
            ErrorDetails::with_bad_request_violation("window", "bad"),
        );
        let p = Problem::from(status);
        assert_eq!(p.violations.len(), 1);
        assert_eq!(p.violations[0].field, "window");
        assert_eq!(p.retry_after_seconds, None);
    }

    #[test]
    fn internal_text_is_not_leaked() {
        let p = Problem::from(tonic::Status::internal("redb: table corrupt at /var/x"));
        assert_eq!(p.status, 500);
        assert!(!p.detail.contains("redb"), "{}", p.detail);
    }
}
