//! The librdkafka client context shared by producers and admin clients:
//! librdkafka's log lines and global errors go to `tracing`.

use rdkafka::client::ClientContext;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// Reports librdkafka's global errors through `tracing`: a fatal error (the
/// client is unusable, an operator must act) at ERROR, the rest at WARN
/// (librdkafka retries them itself: a broker down, a connection reset).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TracingContext;

impl ClientContext for TracingContext {
    fn error(&self, error: KafkaError, reason: &str) {
        report_error(&error, reason);
    }
}

impl ConsumerContext for TracingContext {}

/// Logs a librdkafka global error at the level an operator needs.
pub(crate) fn report_error(error: &KafkaError, reason: &str) {
    if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
        tracing::error!(%error, reason, "Kafka client failed fatally; restart the service");
    } else {
        tracing::warn!(%error, reason, "Kafka client error; librdkafka retries");
    }
}
