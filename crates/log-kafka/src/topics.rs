//! Tributary's topics, and their creation through the Kafka admin API.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::types::RDKafkaErrorCode;
use tokio::time::Instant;
use tributary_log::LogError;

use crate::config::{KafkaConfig, MAX_PARTITIONS, validate_topic_name};
use crate::context::TracingContext;
use crate::error::{backend, blocking};

/// Telemetry envelopes from the frontends, keyed `tenant/device` (see
/// `tributary_core::envelope::record_key`), so that one device's points keep
/// their order. Read by the processor group.
pub const TELEMETRY: &str = "tributary.telemetry.v1";
/// Commands to devices, keyed `tenant/device`, read by the frontend
/// replicas.
pub const COMMANDS: &str = "tributary.commands.v1";
/// Registry changes and presence (device disabled, deleted, token revoked,
/// connected), keyed `tenant/device`, read by every frontend replica.
pub const DEVICE_EVENTS: &str = "tributary.device-events.v1";
/// Records the processor could not decode, with the reason in a header,
/// keyed as the original record.
pub const DLQ: &str = "tributary.dlq.v1";

/// Alert transitions from the processors (`tributary.v1.AlertEvent`),
/// keyed `tenant/device`; read by alert delivery and the alerts API.
pub const ALERTS: &str = "tributary.alerts.v1";
/// Alert deliveries a webhook gave up on, with the reason in a header.
pub const ALERTS_DLQ: &str = "tributary.alerts.dlq.v1";
/// How long dead letters are kept by default when [`tributary_topics`]
/// creates the DLQ topic: 14 days, for an operator to look at them.
pub const DLQ_RETENTION_MS: u64 = 14 * 24 * 3_600_000;

/// A topic to create if missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// The topic name (1 to 249 characters from `[A-Za-z0-9._-]`).
    pub name: String,
    /// Number of partitions, 1 to [`MAX_PARTITIONS`].
    pub partitions: u32,
    /// Replication factor, at least 1.
    pub replication_factor: u16,
    /// Topic-level configuration for creation (`retention.ms`,
    /// `max.message.bytes`, ...). Not applied to an existing topic.
    pub configs: BTreeMap<String, String>,
}

impl TopicSpec {
    /// A topic with the broker's default configuration.
    pub fn new(name: impl Into<String>, partitions: u32, replication_factor: u16) -> Self {
        Self {
            name: name.into(),
            partitions,
            replication_factor,
            configs: BTreeMap::new(),
        }
    }

    /// Adds a topic-level configuration entry.
    pub fn with_config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.configs.insert(key.into(), value.into());
        self
    }

    fn validate(&self) -> Result<(), LogError> {
        validate_topic_name(&self.name)?;
        if !(1..=MAX_PARTITIONS).contains(&self.partitions) {
            return Err(LogError::Invalid(format!(
                "topic {}: partitions {} must be 1 to {MAX_PARTITIONS}",
                self.name, self.partitions
            )));
        }
        if self.replication_factor == 0 {
            return Err(LogError::Invalid(format!(
                "topic {}: replication factor must be at least 1",
                self.name
            )));
        }
        Ok(())
    }
}

/// The topics of a distributed Tributary, all with `partitions` partitions
/// and `replication_factor` replicas. The DLQs keep records for
/// [`DLQ_RETENTION_MS`]; the others use the brokers' retention.
pub fn tributary_topics(partitions: u32, replication_factor: u16) -> Vec<TopicSpec> {
    vec![
        TopicSpec::new(TELEMETRY, partitions, replication_factor),
        TopicSpec::new(COMMANDS, partitions, replication_factor),
        TopicSpec::new(DEVICE_EVENTS, partitions, replication_factor),
        TopicSpec::new(DLQ, partitions, replication_factor)
            .with_config("retention.ms", DLQ_RETENTION_MS.to_string()),
        TopicSpec::new(ALERTS, partitions, replication_factor),
        TopicSpec::new(ALERTS_DLQ, partitions, replication_factor)
            .with_config("retention.ms", DLQ_RETENTION_MS.to_string()),
    ]
}

/// What [`ensure_topics`] found for one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicStatus {
    /// The topic did not exist and was created.
    Created,
    /// The topic existed already, with the expected partition count.
    AlreadyExists,
}

/// An admin client, for creating topics.
pub struct KafkaAdmin {
    client: Arc<AdminClient<TracingContext>>,
    timeout: Duration,
}

impl fmt::Debug for KafkaAdmin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaAdmin")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl KafkaAdmin {
    /// An admin client for `config`'s brokers. Operations wait up to
    /// `config.connect_timeout_ms`. Connecting is lazy: this fails only on an
    /// invalid configuration.
    pub fn new(config: &KafkaConfig) -> Result<Self, LogError> {
        config.validate()?;
        let client = config
            .base_client_config()
            .create_with_context(TracingContext)
            .map_err(|e| backend("create admin client", &e))?;
        Ok(Self {
            client: Arc::new(client),
            timeout: config.connect_timeout(),
        })
    }
}

impl KafkaAdmin {
    pub(crate) fn client(&self) -> &Arc<AdminClient<TracingContext>> {
        &self.client
    }
}

/// Creates every topic of `specs` that does not exist, and waits until each
/// has a leader on every partition. A topic that exists already is accepted
/// ([`TopicStatus::AlreadyExists`]) if its partition count matches the
/// spec; otherwise the result is `LogError::Invalid`, because records are
/// routed with `partition_for(key, partitions)`. Returns one status per
/// spec, in order.
pub async fn ensure_topics(
    admin: &KafkaAdmin,
    specs: &[TopicSpec],
) -> Result<Vec<TopicStatus>, LogError> {
    let mut names = std::collections::BTreeSet::new();
    for spec in specs {
        spec.validate()?;
        if !names.insert(spec.name.as_str()) {
            return Err(LogError::Invalid(format!(
                "topic {} is listed twice",
                spec.name
            )));
        }
    }
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let deadline = Instant::now() + admin.timeout;
    let new_topics: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|s| {
            let mut t = NewTopic::new(
                &s.name,
                // Validated above: at most MAX_PARTITIONS.
                i32::try_from(s.partitions).unwrap_or(i32::MAX),
                TopicReplication::Fixed(i32::from(s.replication_factor)),
            );
            for (k, v) in &s.configs {
                t = t.set(k, v);
            }
            t
        })
        .collect();
    let options = AdminOptions::new()
        .request_timeout(Some(admin.timeout))
        .operation_timeout(Some(admin.timeout));
    let results = admin
        .client
        .create_topics(&new_topics, &options)
        .await
        .map_err(|e| backend("create topics", &e))?;
    let mut statuses = Vec::with_capacity(specs.len());
    for spec in specs {
        let result = results.iter().find(|r| match r {
            Ok(name) | Err((name, _)) => *name == spec.name,
        });
        let status = match result {
            Some(Ok(_)) => TopicStatus::Created,
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => TopicStatus::AlreadyExists,
            Some(Err((name, code))) => return Err(create_error(name, *code)),
            None => {
                return Err(LogError::Backend(format!(
                    "create topics: the broker did not answer for topic {}",
                    spec.name
                )));
            }
        };
        if status == TopicStatus::Created {
            tracing::info!(topic = %spec.name, partitions = spec.partitions,
                replication_factor = spec.replication_factor, "created topic");
        }
        statuses.push(status);
    }
    for spec in specs {
        wait_for_topic(
            &admin.client,
            &spec.name,
            spec.partitions,
            deadline,
            admin.timeout,
        )
        .await?;
    }
    Ok(statuses)
}

fn create_error(topic: &str, code: RDKafkaErrorCode) -> LogError {
    let message = format!("create topic {topic}: {code}");
    match code {
        RDKafkaErrorCode::InvalidPartitions
        | RDKafkaErrorCode::InvalidReplicationFactor
        | RDKafkaErrorCode::InvalidReplicaAssignment
        | RDKafkaErrorCode::InvalidConfig
        | RDKafkaErrorCode::InvalidTopic
        | RDKafkaErrorCode::PolicyViolation => LogError::Invalid(message),
        _ => LogError::Backend(message),
    }
}

/// What the brokers' metadata says about a topic.
enum TopicState {
    /// Every partition has a leader.
    Ready,
    /// Not (yet) visible or without leaders; the reason, for the timeout
    /// error.
    NotReady(String),
}

/// Waits until `topic` has `partitions` partitions, each with a leader.
/// Fails at once with `Invalid` if it has another partition count.
pub(crate) async fn wait_for_topic(
    client: &Arc<AdminClient<TracingContext>>,
    topic: &str,
    partitions: u32,
    deadline: Instant,
    request_timeout: Duration,
) -> Result<(), LogError> {
    let mut backoff = Duration::from_millis(20);
    loop {
        let c = Arc::clone(client);
        let name = topic.to_owned();
        let timeout = request_timeout.min(deadline.saturating_duration_since(Instant::now()));
        let state = blocking(move || {
            let metadata = c
                .inner()
                .fetch_metadata(Some(&name), timeout)
                .map_err(|e| backend("fetch metadata", &e))?;
            topic_state(&metadata, &name, partitions)
        })
        .await;
        let reason = match state {
            Ok(TopicState::Ready) => return Ok(()),
            Ok(TopicState::NotReady(reason)) => reason,
            Err(LogError::Invalid(m)) => return Err(LogError::Invalid(m)),
            Err(e) => e.to_string(),
        };
        if Instant::now() + backoff >= deadline {
            return Err(LogError::Backend(format!(
                "topic {topic} is not ready: {reason}"
            )));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}

fn topic_state(
    metadata: &rdkafka::metadata::Metadata,
    topic: &str,
    partitions: u32,
) -> Result<TopicState, LogError> {
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(TopicState::NotReady("not in the metadata".into()));
    };
    if let Some(e) = t.error() {
        return Ok(TopicState::NotReady(format!(
            "{}",
            RDKafkaErrorCode::from(e)
        )));
    }
    let found = t.partitions().len();
    if found == 0 {
        return Ok(TopicState::NotReady("no partitions yet".into()));
    }
    if found != partitions as usize {
        return Err(LogError::Invalid(format!(
            "topic {topic} has {found} partitions, configured {partitions}: \
             records would go to other partitions than the embedded log's"
        )));
    }
    if let Some(p) = t
        .partitions()
        .iter()
        .find(|p| p.leader() < 0 || p.error().is_some())
    {
        return Ok(TopicState::NotReady(format!(
            "partition {} has no leader",
            p.id()
        )));
    }
    Ok(TopicState::Ready)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_topics() {
        let specs = tributary_topics(6, 3);
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [TELEMETRY, COMMANDS, DEVICE_EVENTS, DLQ, ALERTS, ALERTS_DLQ]
        );
        assert!(
            specs
                .iter()
                .all(|s| s.partitions == 6 && s.replication_factor == 3)
        );
        assert_eq!(
            specs[3].configs.get("retention.ms").map(String::as_str),
            Some("1209600000")
        );
        assert_eq!(
            specs[5].configs.get("retention.ms").map(String::as_str),
            Some("1209600000")
        );
        assert!(specs.iter().all(|s| s.validate().is_ok()));
    }

    /// Bad specs are refused before any request: the admin client points at
    /// a port nothing listens on, and the answer is immediate.
    #[tokio::test]
    async fn bad_specs_are_refused_before_contacting_a_broker() {
        let config = KafkaConfig {
            brokers: vec!["127.0.0.1:1".into()],
            ..KafkaConfig::default()
        };
        let admin = KafkaAdmin::new(&config).expect("admin");
        for specs in [
            vec![TopicSpec::new("a b", 1, 1)],
            vec![TopicSpec::new("t", 0, 1)],
            vec![TopicSpec::new("t", MAX_PARTITIONS + 1, 1)],
            vec![TopicSpec::new("t", 1, 0)],
            vec![TopicSpec::new("t", 1, 1), TopicSpec::new("t", 2, 1)],
        ] {
            let result = ensure_topics(&admin, &specs).await;
            assert!(
                matches!(result, Err(LogError::Invalid(_))),
                "{specs:?}: {result:?}"
            );
        }
        assert_eq!(ensure_topics(&admin, &[]).await.expect("nothing to do"), []);
    }
}
