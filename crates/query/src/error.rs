//! The one error type of the crate, and the one place where it becomes a
//! gRPC status.
//!
//! Client mistakes carry `google.rpc` details that name the request field
//! (`BadRequest` field violations such as `target.selector`, `limit`,
//! `window`, `page_token`), so tools can point at what to fix. Failures of the
//! store or the registry are logged here and reach clients only as a generic
//! message: internal error text never leaves the server.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tributary_core::directory::DirectoryError;
use tributary_store::StoreError;

/// How long a client should wait before retrying an overloaded backend.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// No valid operator token.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The token may not do this (role too low, another tenant).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A request field is wrong. `field` is its path in the request, such as
    /// `target.selector` or `metrics[2]`.
    #[error("{field}: {message}")]
    InvalidArgument {
        /// The path of the offending field.
        field: String,
        /// What is wrong with it and how to fix it.
        message: String,
    },
    /// The target names something that does not exist.
    #[error("{kind} {name:?} not found")]
    NotFound {
        /// What was looked up, such as `device`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// The query is valid but too expensive to answer (too many points to
    /// scan, a response too large).
    #[error("resource exhausted: {subject}: {message}")]
    ResourceExhausted {
        /// The quota that was exceeded, such as `points_scanned`.
        subject: &'static str,
        /// What to do instead.
        message: String,
    },
    /// The store failed or is overloaded.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The device registry failed or refused.
    #[error("device catalog: {0}")]
    Directory(#[from] DirectoryError),
    /// A bug or an impossible state; details stay in the server log.
    #[error("internal: {0}")]
    Internal(String),
    /// A [`QueryConfig`](crate::QueryConfig) value is unusable.
    #[error("query config: {field}: {message}")]
    Config {
        /// The config field.
        field: &'static str,
        /// Why it is unusable.
        message: String,
    },
}

impl QueryError {
    /// A field violation.
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Adopts a status from `tributary-auth` (`authorize`, `require`,
    /// `tenant_for`), which speak `tonic::Status` already.
    pub(crate) fn from_auth(status: Status) -> Self {
        match status.code() {
            Code::Unauthenticated => Self::Unauthenticated(status.message().to_string()),
            Code::PermissionDenied => Self::PermissionDenied(status.message().to_string()),
            code => Self::Internal(format!("auth returned {code:?}: {}", status.message())),
        }
    }
}

/// Longest text of a refusal. Messages quote what the client sent, and a
/// gRPC status travels in a header: an unbounded echo would break the
/// response (HTTP/2 header limits) instead of refusing the request.
const MAX_MESSAGE_BYTES: usize = 512;

/// `text`, cut to [`MAX_MESSAGE_BYTES`] on a character boundary.
fn capped(mut text: String) -> String {
    if text.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

impl From<QueryError> for Status {
    fn from(err: QueryError) -> Self {
        let err = match err {
            QueryError::InvalidArgument { field, message } => QueryError::InvalidArgument {
                field: capped(field),
                message: capped(message),
            },
            QueryError::NotFound { kind, name } => QueryError::NotFound {
                kind,
                name: capped(name),
            },
            QueryError::ResourceExhausted { subject, message } => QueryError::ResourceExhausted {
                subject,
                message: capped(message),
            },
            QueryError::Directory(DirectoryError::Invalid(why)) => {
                QueryError::Directory(DirectoryError::Invalid(capped(why)))
            }
            other => other,
        };
        match err {
            QueryError::Unauthenticated(message) => Status::unauthenticated(message),
            QueryError::PermissionDenied(message) => Status::permission_denied(message),
            QueryError::InvalidArgument { field, message } => Status::with_error_details(
                Code::InvalidArgument,
                format!("{field}: {message}"),
                ErrorDetails::with_bad_request_violation(field, message),
            ),
            QueryError::NotFound { kind, name } => Status::with_error_details(
                Code::NotFound,
                format!("{kind} {name:?} not found"),
                ErrorDetails::with_resource_info(kind, name, "", "not found in the tenant"),
            ),
            QueryError::ResourceExhausted { subject, message } => Status::with_error_details(
                Code::ResourceExhausted,
                message.clone(),
                ErrorDetails::with_quota_failure_violation(subject, message),
            ),
            QueryError::Store(StoreError::Backpressure) => unavailable("store is overloaded"),
            QueryError::Directory(DirectoryError::NotFound(what)) => Status::not_found(what),
            QueryError::Directory(DirectoryError::Forbidden(why)) => Status::permission_denied(why),
            QueryError::Directory(DirectoryError::Invalid(why)) => Status::with_error_details(
                Code::InvalidArgument,
                why.clone(),
                ErrorDetails::with_bad_request_violation("target", why),
            ),
            QueryError::Directory(DirectoryError::Unavailable(detail)) => {
                tracing::warn!(error = %detail, "device catalog unavailable");
                unavailable("device registry is unavailable")
            }
            internal @ (QueryError::Store(_)
            | QueryError::Directory(DirectoryError::Unauthenticated)
            | QueryError::Internal(_)
            | QueryError::Config { .. }) => {
                tracing::error!(error = %internal, "query failed");
                Status::internal("internal error")
            }
        }
    }
}

/// `UNAVAILABLE` with a retry hint.
fn unavailable(what: &str) -> Status {
    Status::with_error_details(
        Code::Unavailable,
        format!("{what}, retry later"),
        ErrorDetails::with_retry_info(Some(RETRY_AFTER)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_names_the_field() {
        let status = Status::from(QueryError::invalid("window", "not a duration"));
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad = status
            .get_details_bad_request()
            .expect("bad request details");
        assert_eq!(bad.field_violations.len(), 1);
        assert_eq!(bad.field_violations[0].field, "window");
        assert_eq!(bad.field_violations[0].description, "not a duration");
    }

    #[test]
    fn internal_errors_do_not_leak() {
        let io = std::io::Error::other("/var/lib/tributary/store.redb: disk on fire");
        let status = Status::from(QueryError::Store(StoreError::Io(io)));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
        let status = Status::from(QueryError::Directory(DirectoryError::Unavailable(
            "registry-0.internal:7000 refused".into(),
        )));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            !status.message().contains("registry-0"),
            "{}",
            status.message()
        );
        assert!(status.get_details_retry_info().is_some());
    }

    #[test]
    fn overload_is_retryable_and_not_found_names_the_resource() {
        let status = Status::from(QueryError::Store(StoreError::Backpressure));
        assert_eq!(status.code(), Code::Unavailable);
        let status = Status::from(QueryError::NotFound {
            kind: "device",
            name: "d9".into(),
        });
        assert_eq!(status.code(), Code::NotFound);
        let info = status.get_details_resource_info().expect("resource info");
        assert_eq!(
            (info.resource_type.as_str(), info.resource_name.as_str()),
            ("device", "d9")
        );
    }

    #[test]
    fn auth_statuses_keep_their_code() {
        let e = QueryError::from_auth(Status::unauthenticated("missing token"));
        assert_eq!(Status::from(e).code(), Code::Unauthenticated);
        let e = QueryError::from_auth(Status::permission_denied("other tenant"));
        assert_eq!(Status::from(e).code(), Code::PermissionDenied);
    }
}
