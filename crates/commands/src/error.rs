//! The one error type of the crate, and the one place where it becomes a
//! gRPC status.
//!
//! Client mistakes carry `google.rpc` details that name the request field
//! (`BadRequest` field violations such as `name` or `timeout_ms`). Failures
//! of the registry or of command routing reach clients as a generic message
//! with a retry hint: internal error text never leaves the server. It is
//! logged by the `commands.failed` event (`CommandMetrics::failed`), with
//! the call's count, not here.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tributary_core::commands::CommandError;
use tributary_core::directory::DirectoryError;

/// How long a client should wait before retrying.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why a `SendCommand` call failed. An offline or silent device is not an
/// error: it is a response status.
#[derive(Debug, thiserror::Error)]
pub enum CommandServiceError {
    /// No valid operator token.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The token may not do this (role below operator, another tenant).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A request field is wrong.
    #[error("{field}: {message}")]
    InvalidArgument {
        /// The offending field, such as `name` or `timeout_ms`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The device does not exist in the tenant.
    #[error("device {0:?} not found")]
    DeviceNotFound(String),
    /// The device is disabled: it may not connect, so it gets no commands.
    #[error("device {0:?} is disabled")]
    DeviceDisabled(String),
    /// Too many commands are waiting for replies.
    #[error("too many pending commands: {0}")]
    ResourceExhausted(String),
    /// Over one of the tenant's quotas (`pending_commands`).
    #[error("{0}")]
    Quota(tributary_core::quota::QuotaExceeded),
    /// The device registry failed.
    #[error("device catalog: {0}")]
    Directory(DirectoryError),
    /// Command routing failed (shutting down, unreachable).
    #[error("command routing: {0}")]
    Unavailable(String),
    /// The commands log failed (opening its consumer at start-up).
    #[error("commands log: {0}")]
    Log(#[from] tributary_log::LogError),
    /// A bug or an impossible state; details stay in the server log.
    #[error("internal: {0}")]
    Internal(String),
    /// A [`CommandConfig`](crate::CommandConfig) value is unusable.
    #[error("command config: {field}: {message}")]
    Config {
        /// The config field.
        field: &'static str,
        /// Why it is unusable.
        message: String,
    },
}

impl CommandServiceError {
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
            Code::Unauthenticated => Self::Unauthenticated(status.message().to_owned()),
            Code::PermissionDenied => Self::PermissionDenied(status.message().to_owned()),
            code => Self::Internal(format!("auth returned {code:?}: {}", status.message())),
        }
    }
}

impl From<DirectoryError> for CommandServiceError {
    fn from(e: DirectoryError) -> Self {
        match e {
            DirectoryError::NotFound(what) => Self::DeviceNotFound(what),
            DirectoryError::Forbidden(why) => Self::PermissionDenied(why),
            DirectoryError::Invalid(why) => Self::invalid("device", why),
            other => Self::Directory(other),
        }
    }
}

impl From<CommandError> for CommandServiceError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Invalid(v) => Self::invalid(v.field, v.message),
            CommandError::Overloaded => {
                Self::ResourceExhausted("too many commands are waiting for replies".into())
            }
            CommandError::Unavailable(why) => Self::Unavailable(why),
        }
    }
}

impl From<CommandServiceError> for Status {
    fn from(err: CommandServiceError) -> Self {
        match err {
            CommandServiceError::Unauthenticated(message) => Status::unauthenticated(message),
            CommandServiceError::PermissionDenied(message) => Status::permission_denied(message),
            CommandServiceError::InvalidArgument { field, message } => Status::with_error_details(
                Code::InvalidArgument,
                format!("{field}: {message}"),
                ErrorDetails::with_bad_request_violation(field, message),
            ),
            CommandServiceError::DeviceNotFound(name) => Status::with_error_details(
                Code::NotFound,
                format!("device {name:?} not found"),
                ErrorDetails::with_resource_info("device", name, "", "not found in the tenant"),
            ),
            CommandServiceError::DeviceDisabled(name) => Status::with_error_details(
                Code::FailedPrecondition,
                format!("device {name:?} is disabled; enable it to send it commands"),
                ErrorDetails::with_precondition_failure_violation(
                    "DISABLED",
                    format!("device/{name}"),
                    "the device is disabled",
                ),
            ),
            CommandServiceError::Quota(q) => Status::with_error_details(
                Code::ResourceExhausted,
                format!("{q}; wait for a command to finish, or ask for a higher quota"),
                ErrorDetails::with_quota_failure_violation(
                    format!("tenant/{}", q.tenant),
                    format!("{}: {}", q.quota, q.limit),
                ),
            ),
            CommandServiceError::ResourceExhausted(message) => Status::with_error_details(
                Code::ResourceExhausted,
                format!("{message}; retry later"),
                ErrorDetails::with_retry_info(Some(RETRY_AFTER)),
            ),
            CommandServiceError::Directory(DirectoryError::Unavailable(_)) => {
                unavailable("device registry is unavailable")
            }
            CommandServiceError::Unavailable(_) | CommandServiceError::Log(_) => {
                unavailable("command routing is unavailable")
            }
            CommandServiceError::Directory(_)
            | CommandServiceError::Internal(_)
            | CommandServiceError::Config { .. } => Status::internal("internal error"),
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
        let status = Status::from(CommandServiceError::invalid(
            "timeout_ms",
            "at most 300000 ms",
        ));
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad = status
            .get_details_bad_request()
            .expect("bad request details");
        assert_eq!(bad.field_violations[0].field, "timeout_ms");
        assert_eq!(bad.field_violations[0].description, "at most 300000 ms");
    }

    #[test]
    fn internal_errors_do_not_leak_and_overload_is_retryable() {
        let status = Status::from(CommandServiceError::Unavailable(
            "frontend-3.internal:1883 refused".into(),
        ));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            !status.message().contains("frontend-3"),
            "{}",
            status.message()
        );
        assert!(status.get_details_retry_info().is_some());
        let status = Status::from(CommandServiceError::Directory(
            DirectoryError::Unauthenticated,
        ));
        assert_eq!(
            (status.code(), status.message()),
            (Code::Internal, "internal error")
        );
        let status = Status::from(CommandServiceError::from(CommandError::Overloaded));
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.get_details_retry_info().is_some());
    }

    #[test]
    fn missing_and_disabled_devices_say_so() {
        let status = Status::from(CommandServiceError::from(DirectoryError::NotFound(
            "d9".into(),
        )));
        assert_eq!(status.code(), Code::NotFound);
        let status = Status::from(CommandServiceError::DeviceDisabled("d1".into()));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.get_details_precondition_failure().is_some());
    }
}
