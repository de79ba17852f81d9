//! Mapping librdkafka errors onto [`LogError`], in one place.

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use tributary_log::LogError;

/// A broker or client failure, with what was being done.
pub(crate) fn backend(context: &str, e: &KafkaError) -> LogError {
    LogError::Backend(format!("{context}: {e}"))
}

/// Maps a failed produce (refused at enqueue, or a failed delivery report).
///
/// A full producer queue is backpressure: the caller tells the device to
/// retry. A record the brokers refuse for its size is `RecordTooLarge`.
/// Everything else (delivery timed out because no broker answered, a fatal
/// idempotence error, authorization) is a backend failure; in every case the
/// caller must not acknowledge the device.
pub(crate) fn produce_error(e: &KafkaError, size: usize, limit: usize) -> LogError {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::QueueFull) => LogError::Backpressure,
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize) => {
            LogError::RecordTooLarge { size, limit }
        }
        Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight) => LogError::Closed,
        Some(RDKafkaErrorCode::MessageTimedOut) => LogError::Backend(format!(
            "produce: no acknowledgement within message.timeout.ms ({e}); are the brokers reachable?"
        )),
        _ => backend("produce", e),
    }
}

/// Runs a blocking librdkafka call (metadata, watermarks, offsets, a
/// synchronous commit) on tokio's blocking pool.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, LogError>
where
    F: FnOnce() -> Result<T, LogError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LogError::Backend(format!("blocking Kafka call failed: {e}")))?
}
