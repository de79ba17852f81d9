//! The crate's error type, and the one place where driver errors are mapped
//! onto the [`StoreError`] and [`RegistryError`] of the seams.

use scylla::errors::{DbError, ExecutionError, NewSessionError, PrepareError, RequestAttemptError};
use tributary_registry::RegistryError;
use tributary_store::StoreError;

/// Why connecting, migrating or a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ScyllaError {
    /// The configuration or URL is invalid; the message names the field.
    #[error("invalid ScyllaDB config: {0}")]
    Config(String),
    /// No session could be opened to the contact points.
    #[error("connecting to ScyllaDB: {0}")]
    Connect(Box<NewSessionError>),
    /// A statement could not be prepared (usually: the schema is missing).
    #[error("preparing a CQL statement: {0}")]
    Prepare(Box<PrepareError>),
    /// A request failed.
    #[error("ScyllaDB request failed: {0}")]
    Execution(Box<ExecutionError>),
    /// The keyspace's schema is not one this build can use.
    #[error("ScyllaDB schema: {0}")]
    Schema(String),
    /// Every in-flight slot stayed taken for the whole queue timeout.
    #[error("too many ScyllaDB requests in flight, retry later")]
    Saturated,
    /// A row did not have the shape this build wrote.
    #[error("unexpected ScyllaDB data: {0}")]
    Decode(String),
}

impl From<NewSessionError> for ScyllaError {
    fn from(e: NewSessionError) -> Self {
        Self::Connect(Box::new(e))
    }
}

impl From<PrepareError> for ScyllaError {
    fn from(e: PrepareError) -> Self {
        Self::Prepare(Box::new(e))
    }
}

impl From<ExecutionError> for ScyllaError {
    fn from(e: ExecutionError) -> Self {
        Self::Execution(Box::new(e))
    }
}

impl ScyllaError {
    /// A [`ScyllaError::Decode`] from any result-reading error of the driver.
    pub(crate) fn decode(e: impl std::fmt::Display) -> Self {
        Self::Decode(e.to_string())
    }

    /// Whether retrying later may succeed: overload, timeouts, unavailable
    /// replicas, broken connections. Everything else is a bug or a
    /// misconfiguration that a retry will not fix.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Saturated | Self::Connect(_) => true,
            Self::Execution(e) => execution_is_transient(e),
            Self::Prepare(e) => matches!(**e, PrepareError::ConnectionPoolError(_)),
            Self::Config(_) | Self::Schema(_) | Self::Decode(_) => false,
        }
    }
}

fn execution_is_transient(e: &ExecutionError) -> bool {
    match e {
        ExecutionError::RequestTimeout(_)
        | ExecutionError::ConnectionPoolError(_)
        | ExecutionError::EmptyPlan
        | ExecutionError::SchemaAgreementError(_)
        | ExecutionError::MetadataError(_) => true,
        ExecutionError::LastAttemptError(attempt) => attempt_is_transient(attempt),
        _ => false,
    }
}

fn attempt_is_transient(e: &RequestAttemptError) -> bool {
    match e {
        RequestAttemptError::UnableToAllocStreamId
        | RequestAttemptError::BrokenConnectionError(_) => true,
        RequestAttemptError::DbError(db, _) => matches!(
            db,
            DbError::Unavailable { .. }
                | DbError::Overloaded
                | DbError::IsBootstrapping
                | DbError::ReadTimeout { .. }
                | DbError::WriteTimeout { .. }
                | DbError::ReadFailure { .. }
                | DbError::WriteFailure { .. }
                | DbError::RateLimitReached { .. }
                | DbError::TruncateError
        ),
        _ => false,
    }
}

impl From<ScyllaError> for StoreError {
    fn from(e: ScyllaError) -> Self {
        match e {
            ScyllaError::Config(msg) => StoreError::Invalid(msg),
            e if e.is_transient() => {
                tracing::debug!(error = %e, "transient ScyllaDB error");
                StoreError::Backpressure
            }
            e => StoreError::Backend(e.to_string()),
        }
    }
}

impl From<ScyllaError> for RegistryError {
    fn from(e: ScyllaError) -> Self {
        if e.is_transient() {
            RegistryError::Unavailable(e.to_string())
        } else {
            RegistryError::Internal(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use scylla::statement::Consistency;

    use super::*;

    fn db(e: DbError) -> ScyllaError {
        ScyllaError::from(ExecutionError::LastAttemptError(
            RequestAttemptError::DbError(e, "message".into()),
        ))
    }

    #[test]
    fn overload_and_timeouts_are_backpressure_bugs_are_backend_errors() {
        let timeout = ScyllaError::from(ExecutionError::RequestTimeout(Duration::from_secs(1)));
        assert!(matches!(
            StoreError::from(timeout),
            StoreError::Backpressure
        ));
        assert!(matches!(
            StoreError::from(ScyllaError::Saturated),
            StoreError::Backpressure
        ));
        assert!(matches!(
            StoreError::from(db(DbError::Overloaded)),
            StoreError::Backpressure
        ));
        let unavailable = db(DbError::Unavailable {
            consistency: Consistency::LocalQuorum,
            required: 2,
            alive: 1,
        });
        assert!(matches!(
            RegistryError::from(unavailable),
            RegistryError::Unavailable(_)
        ));
        assert!(matches!(
            StoreError::from(db(DbError::SyntaxError)),
            StoreError::Backend(_)
        ));
        assert!(matches!(
            RegistryError::from(db(DbError::Invalid)),
            RegistryError::Internal(_)
        ));
        assert!(matches!(
            StoreError::from(ScyllaError::Decode("bad kind".into())),
            StoreError::Backend(_)
        ));
        assert!(matches!(
            StoreError::from(ScyllaError::Config("bad".into())),
            StoreError::Invalid(_)
        ));
    }
}
