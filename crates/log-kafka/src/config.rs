//! Configuration of the Kafka log and the librdkafka properties it maps to.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};
use tributary_log::LogError;

/// Most partitions a topic may be configured with (as the embedded log).
pub const MAX_PARTITIONS: u32 = 1024;

/// Longest consumer group name, in bytes (as the embedded log).
pub const MAX_GROUP_NAME: usize = 255;

/// Bytes librdkafka's `message.max.bytes` is set above
/// [`ProducerSettings::max_record_bytes`], for the record batch framing, so
/// that librdkafka never refuses a record this crate accepted.
const FRAMING_MARGIN_BYTES: u32 = 64 * 1024;

/// Longest wait between reconnection attempts to a broker, in ms.
const RECONNECT_BACKOFF_MAX_MS: u32 = 1_000;

/// librdkafka properties this crate sets itself; `librdkafka_options` may
/// not override them, because the log's guarantees depend on them.
const MANAGED_OPTIONS: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "client.id",
    "allow.auto.create.topics",
    "reconnect.backoff.max.ms",
    "group.id",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "enable.partition.eof",
    "compression.type",
    "compression.codec",
    "linger.ms",
    "queue.buffering.max.ms",
    "batch.size",
    "batch.num.messages",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "queue.buffering.max.messages",
    "queue.buffering.max.kbytes",
    "message.max.bytes",
    "session.timeout.ms",
    "max.poll.interval.ms",
    "queued.max.messages.kbytes",
    "partition.assignment.strategy",
    "fetch.wait.max.ms",
    "fetch.error.backoff.ms",
];

/// Connection, topic and client settings of a [`KafkaLog`](crate::KafkaLog).
///
/// Defaults suit one topic on a small cluster; every size and queue is
/// bounded. [`KafkaConfig::validate`] runs at connect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, each `host:port` (`bootstrap.servers`).
    pub brokers: Vec<String>,
    /// The topic this log appends to and reads: 1 to 249 characters from
    /// `[A-Za-z0-9._-]`.
    pub topic: String,
    /// Partitions of the topic, 1 to [`MAX_PARTITIONS`]. Used when creating
    /// it, and checked against an existing topic: records are sent to
    /// `partition_for(key, partitions)`, so the count must match.
    pub partitions: u32,
    /// Replication factor when the topic is created (at least 1; 3 on a
    /// production cluster).
    pub replication_factor: u16,
    /// Create the topic through the admin API when it does not exist.
    pub create_topic: bool,
    /// `client.id` reported to the brokers (shows in broker logs and quotas).
    pub client_id: String,
    /// How long [`KafkaLog::connect`](crate::KafkaLog::connect) waits for the
    /// brokers and for the topic to have a leader on every partition, in ms.
    pub connect_timeout_ms: u64,
    /// Timeout of metadata, watermark and offset requests, in ms.
    pub request_timeout_ms: u64,
    /// Producer settings.
    pub producer: ProducerSettings,
    /// Consumer settings.
    pub consumer: ConsumerSettings,
    /// Extra librdkafka properties for every client (for example
    /// `socket.keepalive.enable`). Properties this crate sets itself (acks,
    /// idempotence, commit mode, the settings above...) are refused.
    pub librdkafka_options: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: vec!["127.0.0.1:9092".into()],
            topic: crate::topics::TELEMETRY.into(),
            partitions: 4,
            replication_factor: 1,
            create_topic: true,
            client_id: "tributary".into(),
            connect_timeout_ms: 30_000,
            request_timeout_ms: 10_000,
            producer: ProducerSettings::default(),
            consumer: ConsumerSettings::default(),
            librdkafka_options: BTreeMap::new(),
        }
    }
}

/// Compression of produced record batches (`compression.type`).
///
/// zstd is not offered: it needs librdkafka built with libzstd (rdkafka's
/// `zstd` feature), which this build leaves out to stay lean. lz4 compresses
/// the protobuf envelopes well at a small CPU cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// No compression.
    None,
    /// gzip: smallest, slowest.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4 (the default): fast, and what Kafka users usually pick.
    #[default]
    Lz4,
}

impl Compression {
    /// The librdkafka `compression.type` value.
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
        }
    }
}

/// Producer settings. The producer is always idempotent with `acks=all`:
/// an append returns only once every in-sync replica has the records, and
/// librdkafka's retries never duplicate or reorder them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProducerSettings {
    /// Batch compression.
    pub compression: Compression,
    /// How long librdkafka waits to fill a batch before sending it
    /// (`linger.ms`). Appenders wait for their ack, so linger adds straight
    /// to every append's latency and, at a given concurrency, divides
    /// throughput; while requests are in flight librdkafka batches anyway.
    /// Measured against Tansu (docs/kafka.md): 256 appenders did 64-82k
    /// records/s at 0-1 ms, 34-41k at 5 ms and 10k at 20 ms.
    pub linger_ms: u32,
    /// Largest record batch per partition, in bytes (`batch.size`).
    pub batch_size_bytes: u32,
    /// Most records per batch (`batch.num.messages`).
    pub batch_num_messages: u32,
    /// How long a record may wait for its delivery report, retries
    /// included, in ms (`message.timeout.ms`). An append fails after this
    /// long when the brokers are unreachable, so the device is told to retry
    /// instead of waiting forever.
    pub message_timeout_ms: u32,
    /// Most records queued in the producer, unsent or awaiting an ack
    /// (`queue.buffering.max.messages`). A full queue fails appends at once
    /// with `LogError::Backpressure`.
    pub queue_max_messages: u32,
    /// Most KiB queued in the producer (`queue.buffering.max.kbytes`). A full
    /// queue fails appends at once with `LogError::Backpressure`.
    pub queue_max_kbytes: u32,
    /// Largest record (key, value and headers), in bytes; larger records
    /// fail with `LogError::RecordTooLarge`. When the log creates its
    /// topic, it sets the topic's `max.message.bytes` to this plus 64 KiB of
    /// framing; an existing topic must allow it too (Kafka's default is
    /// 1,048,588 bytes).
    pub max_record_bytes: u32,
}

impl Default for ProducerSettings {
    fn default() -> Self {
        Self {
            compression: Compression::Lz4,
            linger_ms: 1,
            batch_size_bytes: 1_000_000,
            batch_num_messages: 10_000,
            message_timeout_ms: 15_000,
            queue_max_messages: 100_000,
            queue_max_kbytes: 64 * 1024,
            max_record_bytes: 1_000_000,
        }
    }
}

/// How consumers are assigned partitions within a group
/// (`partition.assignment.strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AssignmentStrategy {
    /// Incremental cooperative rebalancing (KIP-429): a rebalance revokes only
    /// the partitions that move, so the other consumers keep processing.
    #[default]
    CooperativeSticky,
    /// Eager range assignment: every rebalance revokes every partition.
    Range,
    /// Eager round-robin assignment.
    Roundrobin,
}

impl AssignmentStrategy {
    /// The librdkafka `partition.assignment.strategy` value.
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            Self::CooperativeSticky => "cooperative-sticky",
            Self::Range => "range",
            Self::Roundrobin => "roundrobin",
        }
    }
}

/// Consumer settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerSettings {
    /// A group member that sends no heartbeat for this long is considered
    /// dead and its partitions move to the others, in ms
    /// (`session.timeout.ms`). This bounds how long a crashed processor's
    /// partitions stand still.
    pub session_timeout_ms: u32,
    /// A member that does not poll for this long leaves the group, in ms
    /// (`max.poll.interval.ms`).
    pub max_poll_interval_ms: u32,
    /// Most KiB prefetched per consumer (`queued.max.messages.kbytes`): the
    /// bound on a consumer's read-ahead memory.
    pub queued_max_kbytes: u32,
    /// Most bytes (keys, values, headers) one `poll` returns, but always at
    /// least one record.
    pub max_poll_bytes: usize,
    /// Longest time a broker holds a fetch open waiting for data, in ms
    /// (`fetch.wait.max.ms`). Apache Kafka answers as soon as data arrives,
    /// so this only bounds idle round trips; a broker that does not wake
    /// waiting fetches (Tansu) adds up to this much latency per hop, which
    /// is why it is short by default.
    pub fetch_wait_max_ms: u32,
    /// Partition assignment within a group.
    pub assignment_strategy: AssignmentStrategy,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            session_timeout_ms: 10_000,
            max_poll_interval_ms: 300_000,
            queued_max_kbytes: 16 * 1024,
            max_poll_bytes: 16 * 1024 * 1024,
            fetch_wait_max_ms: 20,
            assignment_strategy: AssignmentStrategy::CooperativeSticky,
        }
    }
}

fn invalid<T>(message: String) -> Result<T, LogError> {
    Err(LogError::Invalid(message))
}

/// Checks a Kafka topic name: 1 to 249 characters from `[A-Za-z0-9._-]`.
pub fn validate_topic_name(topic: &str) -> Result<(), LogError> {
    let ok = (1..=249).contains(&topic.len())
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && topic != "."
        && topic != "..";
    if ok {
        Ok(())
    } else {
        invalid(format!(
            "topic {topic:?}: use 1 to 249 characters from [A-Za-z0-9._-]"
        ))
    }
}

/// Checks a consumer group name: 1 to [`MAX_GROUP_NAME`] bytes without
/// control characters.
pub fn validate_group(group: &str) -> Result<(), LogError> {
    if group.is_empty() || group.len() > MAX_GROUP_NAME || group.chars().any(char::is_control) {
        return invalid(format!(
            "group names are 1 to {MAX_GROUP_NAME} bytes without control characters: {group:?}"
        ));
    }
    Ok(())
}

impl KafkaConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), LogError> {
        if self.brokers.is_empty() {
            return invalid("brokers: at least one host:port is required".into());
        }
        for broker in &self.brokers {
            let ok = broker
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
                && !broker.contains(',')
                && !broker.chars().any(char::is_whitespace);
            if !ok {
                return invalid(format!("brokers: {broker:?} is not host:port"));
            }
        }
        validate_topic_name(&self.topic)?;
        if !(1..=MAX_PARTITIONS).contains(&self.partitions) {
            return invalid(format!(
                "partitions {}: must be 1 to {MAX_PARTITIONS}",
                self.partitions
            ));
        }
        if self.replication_factor == 0 {
            return invalid("replication_factor must be at least 1".into());
        }
        if self.client_id.is_empty() || self.client_id.chars().any(char::is_control) {
            return invalid(format!(
                "client_id {:?} is empty or has control characters",
                self.client_id
            ));
        }
        if !(100..=600_000).contains(&self.connect_timeout_ms) {
            return invalid("connect_timeout_ms: must be 100 to 600000".into());
        }
        if !(100..=600_000).contains(&self.request_timeout_ms) {
            return invalid("request_timeout_ms: must be 100 to 600000".into());
        }
        self.producer.validate()?;
        self.consumer.validate()?;
        for key in self.librdkafka_options.keys() {
            if MANAGED_OPTIONS.contains(&key.as_str()) {
                return invalid(format!(
                    "librdkafka_options: {key:?} is set by Tributary; use the matching setting"
                ));
            }
        }
        Ok(())
    }

    /// Timeout of metadata, watermark and offset requests.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// How long connect waits for the brokers and the topic.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// Properties every client shares: brokers, client id, extra options.
    pub(crate) fn base_client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.brokers.join(","))
            .set("client.id", &self.client_id)
            // Topics are created on purpose, with the configured partition
            // count, never as a side effect of a metadata request.
            .set("allow.auto.create.topics", "false")
            // librdkafka notices records that timed out in a down broker's
            // queue only when its reconnect backoff expires (10 s at most by
            // default): keep the backoff short so an append to unreachable
            // brokers fails about message.timeout.ms after it started.
            .set(
                "reconnect.backoff.max.ms",
                RECONNECT_BACKOFF_MAX_MS.to_string(),
            );
        for (k, v) in &self.librdkafka_options {
            c.set(k, v);
        }
        c
    }

    /// The producer's properties.
    pub(crate) fn producer_client_config(&self) -> ClientConfig {
        let p = &self.producer;
        let mut c = self.base_client_config();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", p.compression.as_librdkafka())
            .set("linger.ms", p.linger_ms.to_string())
            .set("batch.size", p.batch_size_bytes.to_string())
            .set("batch.num.messages", p.batch_num_messages.to_string())
            .set("message.timeout.ms", p.message_timeout_ms.to_string())
            .set(
                "queue.buffering.max.messages",
                p.queue_max_messages.to_string(),
            )
            .set("queue.buffering.max.kbytes", p.queue_max_kbytes.to_string())
            .set(
                "message.max.bytes",
                p.librdkafka_message_max_bytes().to_string(),
            );
        c
    }

    /// A consumer's properties, for `group_id` (a real group or a throwaway
    /// one for an ephemeral consumer).
    pub(crate) fn consumer_client_config(&self, group_id: &str, reset: &str) -> ClientConfig {
        let s = &self.consumer;
        let mut c = self.base_client_config();
        c.set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", reset)
            .set("session.timeout.ms", s.session_timeout_ms.to_string())
            .set("max.poll.interval.ms", s.max_poll_interval_ms.to_string())
            .set("fetch.wait.max.ms", s.fetch_wait_max_ms.to_string())
            // After an empty or failed fetch librdkafka backs off this long
            // (default 500 ms): the same bound as the wait keeps one hop's
            // latency near the wait on a broker that answers empty fetches
            // at once.
            .set("fetch.error.backoff.ms", s.fetch_wait_max_ms.to_string())
            .set(
                "queued.max.messages.kbytes",
                s.queued_max_kbytes.to_string(),
            )
            .set(
                "partition.assignment.strategy",
                s.assignment_strategy.as_librdkafka(),
            )
            // Fetch records as large as the producer may write.
            .set(
                "message.max.bytes",
                self.producer.librdkafka_message_max_bytes().to_string(),
            );
        c
    }
}

impl ProducerSettings {
    fn validate(&self) -> Result<(), LogError> {
        if self.linger_ms > 60_000 {
            return invalid("producer.linger_ms: at most 60000".into());
        }
        if !(1_000..=1_000_000_000).contains(&self.batch_size_bytes) {
            return invalid("producer.batch_size_bytes: must be 1000 to 1000000000".into());
        }
        if !(1..=1_000_000).contains(&self.batch_num_messages) {
            return invalid("producer.batch_num_messages: must be 1 to 1000000".into());
        }
        if self.message_timeout_ms <= self.linger_ms || self.message_timeout_ms > 3_600_000 {
            return invalid(
                "producer.message_timeout_ms: must exceed linger_ms and be at most 3600000".into(),
            );
        }
        if !(1..=10_000_000).contains(&self.queue_max_messages) {
            return invalid("producer.queue_max_messages: must be 1 to 10000000".into());
        }
        if !(1..=2_097_151).contains(&self.queue_max_kbytes) {
            return invalid("producer.queue_max_kbytes: must be 1 to 2097151".into());
        }
        if !(1_024..=512 * 1024 * 1024).contains(&self.max_record_bytes) {
            return invalid("producer.max_record_bytes: must be 1 KiB to 512 MiB".into());
        }
        if u64::from(self.max_record_bytes) > u64::from(self.queue_max_kbytes) * 1024 {
            return invalid(
                "producer.max_record_bytes: must fit in queue_max_kbytes, or no record could be queued"
                    .into(),
            );
        }
        Ok(())
    }

    /// librdkafka's `message.max.bytes`: the record limit plus framing.
    pub(crate) fn librdkafka_message_max_bytes(&self) -> u32 {
        self.max_record_bytes.saturating_add(FRAMING_MARGIN_BYTES)
    }
}

impl ConsumerSettings {
    fn validate(&self) -> Result<(), LogError> {
        if !(1_000..=3_600_000).contains(&self.session_timeout_ms) {
            return invalid("consumer.session_timeout_ms: must be 1000 to 3600000".into());
        }
        if self.max_poll_interval_ms < self.session_timeout_ms
            || self.max_poll_interval_ms > 86_400_000
        {
            return invalid(
                "consumer.max_poll_interval_ms: must be at least session_timeout_ms and at most 86400000"
                    .into(),
            );
        }
        if !(1..=300_000).contains(&self.fetch_wait_max_ms) {
            return invalid("consumer.fetch_wait_max_ms: must be 1 to 300000".into());
        }
        if !(1..=2_097_151).contains(&self.queued_max_kbytes) {
            return invalid("consumer.queued_max_kbytes: must be 1 to 2097151".into());
        }
        if self.max_poll_bytes == 0 {
            return invalid("consumer.max_poll_bytes: must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_safe() {
        let c = KafkaConfig::default();
        c.validate().expect("defaults validate");
        let p = c.producer_client_config();
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        assert_eq!(p.get("acks"), Some("all"));
        assert_eq!(p.get("compression.type"), Some("lz4"));
        let consumer = c.consumer_client_config("g", "earliest");
        assert_eq!(consumer.get("enable.auto.commit"), Some("false"));
        assert_eq!(consumer.get("group.id"), Some("g"));
    }

    #[test]
    fn bad_fields_are_named() {
        let cases: Vec<(KafkaConfig, &str)> = vec![
            (
                KafkaConfig {
                    brokers: vec![],
                    ..KafkaConfig::default()
                },
                "brokers",
            ),
            (
                KafkaConfig {
                    brokers: vec!["nohost".into()],
                    ..KafkaConfig::default()
                },
                "brokers",
            ),
            (
                KafkaConfig {
                    topic: "a/b".into(),
                    ..KafkaConfig::default()
                },
                "topic",
            ),
            (
                KafkaConfig {
                    partitions: 0,
                    ..KafkaConfig::default()
                },
                "partitions",
            ),
            (
                KafkaConfig {
                    replication_factor: 0,
                    ..KafkaConfig::default()
                },
                "replication_factor",
            ),
            (
                KafkaConfig {
                    librdkafka_options: [("acks".to_string(), "1".to_string())].into(),
                    ..KafkaConfig::default()
                },
                "acks",
            ),
            (
                KafkaConfig {
                    producer: ProducerSettings {
                        max_record_bytes: 10 * 1024 * 1024,
                        queue_max_kbytes: 1024,
                        ..ProducerSettings::default()
                    },
                    ..KafkaConfig::default()
                },
                "max_record_bytes",
            ),
        ];
        for (config, field) in cases {
            match config.validate() {
                Err(LogError::Invalid(message)) => {
                    assert!(message.contains(field), "{field}: {message}")
                }
                other => panic!("{field}: expected Invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let json = r#"{"brokers":["k:9092"],"topic":"t","partitions":2,"acks":"1"}"#;
        assert!(serde_json::from_str::<KafkaConfig>(json).is_err());
        let json = r#"{"brokers":["k:9092"],"topic":"t","partitions":2,"producer":{"compression":"gzip"}}"#;
        let c: KafkaConfig = serde_json::from_str(json).expect("parses");
        assert_eq!(c.producer.compression, Compression::Gzip);
        assert_eq!(c.producer.linger_ms, ProducerSettings::default().linger_ms);
    }

    #[test]
    fn group_names_are_checked() {
        assert!(validate_group("processor").is_ok());
        assert!(validate_group("").is_err());
        assert!(validate_group("a\nb").is_err());
        assert!(validate_group(&"g".repeat(MAX_GROUP_NAME + 1)).is_err());
    }
}
