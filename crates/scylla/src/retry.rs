//! The retry policy: idempotent statements are retried, the others only
//! when the server certainly did not apply them.
//!
//! The driver's default policy mirrors the Java driver's caution: it does
//! not retry a plain write that timed out, because it cannot know whether
//! the statement is safe to run twice. Here it does know. Every point and
//! index write, and every read, is idempotent (writing a point again
//! changes nothing) and is marked so; only the registry's lightweight
//! transactions are not, and a timed-out one is left to the caller, which
//! reads the record again.

use scylla::errors::{DbError, RequestAttemptError};
use scylla::policies::retry::{RequestInfo, RetryDecision, RetryPolicy, RetrySession};

/// Retries of one request after its first attempt. Each goes to the next
/// node of the query plan; all of them together stay within the request
/// timeout, which the driver enforces.
const MAX_RETRIES: u32 = 2;

/// Retries idempotent statements on timeouts, overload, unavailable
/// replicas and broken connections, up to [`MAX_RETRIES`] times.
#[derive(Debug, Default)]
pub(crate) struct IdempotentRetryPolicy;

impl RetryPolicy for IdempotentRetryPolicy {
    fn new_session(&self) -> Box<dyn RetrySession> {
        Box::new(Session { retries: 0 })
    }
}

struct Session {
    retries: u32,
}

impl Session {
    /// Decides on one failed attempt and counts the retry it makes.
    fn after(&mut self, error: &RequestAttemptError, idempotent: bool) -> RetryDecision {
        let decision = decide(error, idempotent, self.retries);
        if decision != RetryDecision::DontRetry {
            self.retries += 1;
        }
        decision
    }
}

impl RetrySession for Session {
    fn decide_should_retry(&mut self, info: RequestInfo<'_>) -> RetryDecision {
        self.after(info.error, info.is_idempotent)
    }

    fn reset(&mut self) {
        self.retries = 0;
    }
}

/// Whether to retry after `error`, with `retries` retries already made.
fn decide(error: &RequestAttemptError, idempotent: bool, retries: u32) -> RetryDecision {
    if retries >= MAX_RETRIES {
        return RetryDecision::DontRetry;
    }
    let next = RetryDecision::RetryNextTarget(None);
    match error {
        // Never sent, or refused before any replica was written to: safe
        // for any statement.
        RequestAttemptError::UnableToAllocStreamId => next,
        RequestAttemptError::DbError(DbError::Unavailable { .. } | DbError::IsBootstrapping, _) => {
            next
        }
        // The statement may or may not have been applied.
        RequestAttemptError::BrokenConnectionError(_) if idempotent => next,
        RequestAttemptError::DbError(
            DbError::ReadTimeout { .. }
            | DbError::WriteTimeout { .. }
            | DbError::ReadFailure { .. }
            | DbError::WriteFailure { .. }
            | DbError::Overloaded
            | DbError::ServerError
            | DbError::TruncateError,
            _,
        ) if idempotent => next,
        _ => RetryDecision::DontRetry,
    }
}

#[cfg(test)]
mod tests {
    use scylla::errors::WriteType;
    use scylla::statement::Consistency;

    use super::*;

    fn db(e: DbError) -> RequestAttemptError {
        RequestAttemptError::DbError(e, "message".into())
    }

    fn write_timeout() -> RequestAttemptError {
        db(DbError::WriteTimeout {
            consistency: Consistency::LocalQuorum,
            received: 1,
            required: 2,
            write_type: WriteType::Simple,
        })
    }

    #[test]
    fn idempotent_writes_are_retried_after_a_timeout_but_not_forever() {
        let next = RetryDecision::RetryNextTarget(None);
        assert_eq!(decide(&write_timeout(), true, 0), next);
        assert_eq!(decide(&write_timeout(), true, 1), next);
        assert_eq!(
            decide(&write_timeout(), true, MAX_RETRIES),
            RetryDecision::DontRetry
        );
        assert_eq!(decide(&db(DbError::Overloaded), true, 0), next);
    }

    #[test]
    fn lightweight_transactions_are_retried_only_when_surely_not_applied() {
        let next = RetryDecision::RetryNextTarget(None);
        assert_eq!(decide(&write_timeout(), false, 0), RetryDecision::DontRetry);
        assert_eq!(
            decide(&db(DbError::Overloaded), false, 0),
            RetryDecision::DontRetry
        );
        let unavailable = db(DbError::Unavailable {
            consistency: Consistency::LocalQuorum,
            required: 2,
            alive: 1,
        });
        assert_eq!(decide(&unavailable, false, 0), next);
        assert_eq!(
            decide(&RequestAttemptError::UnableToAllocStreamId, false, 0),
            next
        );
    }

    #[test]
    fn bugs_are_never_retried() {
        for e in [
            DbError::SyntaxError,
            DbError::Invalid,
            DbError::Unauthorized,
        ] {
            assert_eq!(decide(&db(e), true, 0), RetryDecision::DontRetry);
        }
    }

    #[test]
    fn a_session_counts_its_retries_and_starts_over_when_reset() {
        let mut session = Session { retries: 0 };
        let timeout = write_timeout();
        assert_ne!(session.after(&timeout, true), RetryDecision::DontRetry);
        assert_ne!(session.after(&timeout, true), RetryDecision::DontRetry);
        assert_eq!(
            session.after(&timeout, true),
            RetryDecision::DontRetry,
            "at most MAX_RETRIES retries"
        );
        session.reset();
        assert_ne!(session.after(&timeout, true), RetryDecision::DontRetry);
    }
}
