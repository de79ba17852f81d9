//! The crate's error types.

/// Why the server could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// A setting is out of range or inconsistent.
    #[error("invalid MQTT configuration: {0}")]
    Config(String),
    /// The TLS certificate, key or client CA could not be loaded.
    #[error("MQTT TLS: {0}")]
    Tls(String),
    /// Accepting connections failed.
    #[error("MQTT listener: {0}")]
    Io(#[from] std::io::Error),
}

/// Why an in-process publish or request (cloud to device) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The topic is not a valid MQTT topic name.
    #[error("invalid topic: {0}")]
    InvalidTopic(String),
    /// No session of the tenant subscribes to the topic: the device is
    /// offline and has no persistent session that would queue the message.
    #[error("no subscriber for {0}: the device is offline")]
    NoSubscribers(String),
    /// The device is connected, but none of its sessions subscribes to the
    /// topic.
    #[error("no subscriber for {0}: the device is connected but not subscribed")]
    NotSubscribed(String),
    /// The request got no response in time.
    #[error("no response within {0:?}")]
    Timeout(std::time::Duration),
    /// Too many requests are waiting for responses.
    #[error("too many pending requests")]
    TooManyPending,
    /// The server is shutting down.
    #[error("the MQTT server is shutting down")]
    ShuttingDown,
}
