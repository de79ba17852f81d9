//! Backends chosen by URL: `kafka://…` for the log, `scylla://…` or a
//! directory for the store and the registry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use anyhow::{Context, bail};
use tributary_log_kafka::{KafkaConfig, KafkaLog, ProducerQueueMetrics, topics};
use tributary_registry::{EmbeddedRegistryStore, RegistryStore};
use tributary_store::embedded::{EmbeddedStore, EmbeddedStoreConfig};
use tributary_store::{AlertStore, CheckpointStore, Store};

use super::args::KafkaArgs;

/// The producer queue depth of every Kafka log this process connected
/// through [`KafkaArgs::connect`]; `/metrics` exports it
/// ([`super::ops::Ops::serve`] registers it). Process-wide because a
/// process's producers are: each role connects its topics in its own place
/// (ingest, query APIs, processor, registry), and the gauge must be
/// registered once. Empty, so absent from `/metrics`, on the embedded log.
static PRODUCER_QUEUES: LazyLock<ProducerQueueMetrics> =
    LazyLock::new(ProducerQueueMetrics::default);

/// The process's producer-queue gauge (see [`PRODUCER_QUEUES`]).
pub fn producer_queue_metrics() -> ProducerQueueMetrics {
    PRODUCER_QUEUES.clone()
}

/// Partitions of the commands topic when a service creates it.
pub const COMMANDS_PARTITIONS: u32 = 4;
/// Partitions of the device-events topic: registry changes are few, and one
/// partition keeps them in one order.
pub const DEVICE_EVENTS_PARTITIONS: u32 = 1;
/// Partitions of the dead-letter topic.
pub const DLQ_PARTITIONS: u32 = 1;
/// Partitions of the alerts topic and its dead letters: transitions are few
/// next to telemetry, and one partition keeps them in one order.
pub const ALERTS_PARTITIONS: u32 = 1;

impl KafkaArgs {
    /// The brokers of `--log kafka://b1:9092,b2:9092`.
    pub fn brokers(&self) -> anyhow::Result<Vec<String>> {
        let Some(rest) = self.log_url.strip_prefix("kafka://") else {
            bail!(
                "--log {:?}: expected kafka://broker1:9092[,broker2:9092…]; \
                 the embedded log runs only inside `tributary standalone`",
                self.log_url
            );
        };
        let brokers: Vec<String> = rest
            .trim_end_matches('/')
            .split(',')
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .map(|b| {
                if b.contains(':') {
                    b.to_owned()
                } else {
                    format!("{b}:9092")
                }
            })
            .collect();
        if brokers.is_empty() {
            bail!("--log {:?}: no broker named", self.log_url);
        }
        Ok(brokers)
    }

    /// The configuration of one topic's log.
    pub fn config(
        &self,
        topic: &str,
        partitions: u32,
        client_id: &str,
    ) -> anyhow::Result<KafkaConfig> {
        let mut config = KafkaConfig {
            brokers: self.brokers()?,
            topic: topic.to_owned(),
            partitions,
            replication_factor: self.kafka_replication_factor,
            client_id: client_id.to_owned(),
            ..KafkaConfig::default()
        };
        config.producer.compression = serde_json::from_value(serde_json::Value::String(
            self.kafka_compression.to_ascii_lowercase(),
        ))
        .with_context(|| {
            format!(
                "--kafka-compression {:?}: expected none, gzip, snappy or lz4",
                self.kafka_compression
            )
        })?;
        config.producer.linger_ms = self.kafka_linger_ms;
        config.producer.batch_num_messages = self.kafka_batch_num_messages;
        config.producer.max_record_bytes = self.kafka_max_record_bytes;
        let mut options = BTreeMap::new();
        for kv in &self.kafka_options {
            let Some((k, v)) = kv.split_once('=') else {
                bail!("--kafka-option {kv:?}: expected key=value");
            };
            options.insert(k.trim().to_owned(), v.trim().to_owned());
        }
        config.librdkafka_options = options;
        Ok(config)
    }

    /// Connects to one topic, creating it when missing. Its producer's
    /// queue depth joins `/metrics` ([`producer_queue_metrics`]).
    pub async fn connect(
        &self,
        topic: &str,
        partitions: u32,
        client_id: &str,
    ) -> anyhow::Result<Arc<KafkaLog>> {
        let config = self.config(topic, partitions, client_id)?;
        let log = KafkaLog::connect(config)
            .await
            .with_context(|| format!("connecting to Kafka topic {topic} at {}", self.log_url))?;
        PRODUCER_QUEUES.watch(&log);
        Ok(log)
    }

    /// The telemetry topic.
    pub async fn telemetry(&self, client_id: &str) -> anyhow::Result<Arc<KafkaLog>> {
        self.connect(topics::TELEMETRY, self.kafka_partitions, client_id)
            .await
    }

    /// The commands topic (requests to frontends and their results).
    pub async fn commands(&self, client_id: &str) -> anyhow::Result<Arc<KafkaLog>> {
        self.connect(topics::COMMANDS, COMMANDS_PARTITIONS, client_id)
            .await
    }

    /// The device-events topic (registry changes).
    pub async fn device_events(&self, client_id: &str) -> anyhow::Result<Arc<KafkaLog>> {
        self.connect(topics::DEVICE_EVENTS, DEVICE_EVENTS_PARTITIONS, client_id)
            .await
    }

    /// The dead-letter topic.
    pub async fn dlq(&self, client_id: &str) -> anyhow::Result<Arc<KafkaLog>> {
        self.connect(topics::DLQ, DLQ_PARTITIONS, client_id).await
    }

    /// The alerts topic (`tributary.alerts.v1`, docs/alerts.md).
    pub async fn alerts(&self, client_id: &str) -> anyhow::Result<Arc<KafkaLog>> {
        self.connect(topics::ALERTS, ALERTS_PARTITIONS, client_id)
            .await
    }

    /// The alert deliveries webhooks gave up on.
    pub async fn alerts_dlq(&self, client_id: &str) -> anyhow::Result<Arc<KafkaLog>> {
        self.connect(topics::ALERTS_DLQ, ALERTS_PARTITIONS, client_id)
            .await
    }
}

fn open_embedded(dir: &Path, retention: Option<Duration>) -> anyhow::Result<Arc<EmbeddedStore>> {
    EmbeddedStore::open(
        dir,
        EmbeddedStoreConfig {
            retention,
            ..Default::default()
        },
    )
    .with_context(|| format!("opening the embedded store in {}", dir.display()))
}

/// The store and what lives beside it.
pub struct StoreParts {
    pub store: Arc<dyn Store>,
    pub checkpoints: Arc<dyn CheckpointStore>,
    /// The alert history.
    pub alerts: Arc<dyn AlertStore>,
}

/// A store URL: `scylla://host:9042[,host…]/keyspace[?…]` or a directory
/// (optionally `file://`) for the embedded store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// The embedded store in this directory; one process only.
    Embedded(PathBuf),
    /// A ScyllaDB cluster.
    Scylla(String),
}

impl StoreUrl {
    /// Parses `--store`.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("scylla://") {
            return Ok(Self::Scylla(url.to_owned()));
        }
        if let Some((scheme, _)) = url.split_once("://")
            && scheme != "file"
        {
            bail!("--store {url:?}: expected scylla://host:9042/keyspace or a directory");
        }
        let path = url.strip_prefix("file://").unwrap_or(url);
        if path.is_empty() {
            bail!("--store is empty");
        }
        Ok(Self::Embedded(PathBuf::from(path)))
    }

    /// Opens the time-series store and, beside it, where the processor
    /// keeps its rule checkpoints and the alert history: the same embedded
    /// store, or tables of the Scylla keyspace.
    pub async fn open_store_parts(
        &self,
        retention: Option<Duration>,
        tiers: &tributary_core::rollup::Tiers,
    ) -> anyhow::Result<StoreParts> {
        match self {
            Self::Embedded(dir) => {
                let store = open_embedded(dir, retention)?;
                Ok(StoreParts {
                    store: store.clone(),
                    checkpoints: store.clone(),
                    alerts: store,
                })
            }
            Self::Scylla(url) => {
                let store = self.open_store(retention, tiers).await?;
                let config = tributary_scylla::ScyllaConfig::from_url(url)
                    .with_context(|| format!("--store {}", redact(url)))?;
                let checkpoints = tributary_scylla::ScyllaCheckpoints::connect(&config)
                    .await
                    .with_context(|| format!("connecting to ScyllaDB at {}", redact(url)))?;
                let alerts =
                    tributary_scylla::ScyllaAlerts::connect(&config, tributary_query::DEFAULT_KEEP)
                        .await
                        .with_context(|| format!("connecting to ScyllaDB at {}", redact(url)))?;
                Ok(StoreParts {
                    store,
                    checkpoints,
                    alerts,
                })
            }
        }
    }

    /// Opens the time-series store.
    pub async fn open_store(
        &self,
        retention: Option<Duration>,
        tiers: &tributary_core::rollup::Tiers,
    ) -> anyhow::Result<Arc<dyn Store>> {
        match self {
            Self::Embedded(dir) => Ok(open_embedded(dir, retention)?),
            Self::Scylla(url) => {
                let config = tributary_scylla::ScyllaConfig::from_url(url)
                    .with_context(|| format!("--store {}", redact(url)))?;
                let store = tributary_scylla::ScyllaStore::connect(&config)
                    .await
                    .with_context(|| format!("connecting to ScyllaDB at {}", redact(url)))?;
                store
                    .prepare_rollup_tiers(tiers)
                    .await
                    .context("creating the rollup tables")?;
                Ok(store)
            }
        }
    }

    /// Opens the series gate of a ScyllaDB store, for ingest replicas. The
    /// embedded store's gate is the store itself, in its own process.
    pub async fn open_series_gate(
        &self,
    ) -> anyhow::Result<Arc<dyn tributary_core::series::SeriesGate>> {
        match self {
            Self::Embedded(dir) => bail!(
                "{}: the embedded store admits series in its own process only",
                dir.display()
            ),
            Self::Scylla(url) => {
                let config = tributary_scylla::ScyllaConfig::from_url(url)
                    .with_context(|| format!("--store {}", redact(url)))?;
                let gate = tributary_scylla::ScyllaSeriesGate::connect(&config)
                    .await
                    .with_context(|| format!("connecting to ScyllaDB at {}", redact(url)))?;
                Ok(gate)
            }
        }
    }

    /// Opens the registry's store (a redb file under the directory, or the
    /// registry tables of the Scylla keyspace).
    pub async fn open_registry(&self) -> anyhow::Result<Arc<dyn RegistryStore>> {
        match self {
            Self::Embedded(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                let path = registry_file(dir);
                let store = EmbeddedRegistryStore::open(&path)
                    .with_context(|| format!("opening the registry {}", path.display()))?;
                Ok(store)
            }
            Self::Scylla(url) => {
                let config = tributary_scylla::ScyllaConfig::from_url(url)
                    .with_context(|| format!("--store {}", redact(url)))?;
                let store = tributary_scylla::ScyllaRegistryStore::connect(&config)
                    .await
                    .with_context(|| format!("connecting to ScyllaDB at {}", redact(url)))?;
                Ok(store)
            }
        }
    }
}

/// The registry database inside a data directory.
pub fn registry_file(dir: &Path) -> PathBuf {
    dir.join("registry.redb")
}

/// A URL with its password (if any) hidden, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls() {
        assert_eq!(
            StoreUrl::parse("scylla://a:9042/ks").unwrap(),
            StoreUrl::Scylla("scylla://a:9042/ks".into())
        );
        assert_eq!(
            StoreUrl::parse("file:///var/lib/t").unwrap(),
            StoreUrl::Embedded("/var/lib/t".into())
        );
        assert_eq!(
            StoreUrl::parse("./data").unwrap(),
            StoreUrl::Embedded("./data".into())
        );
        assert!(StoreUrl::parse("postgres://x").is_err());
        assert!(StoreUrl::parse("").is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("scylla://u:secret@h:9042/ks"),
            "scylla://***@h:9042/ks"
        );
        assert_eq!(redact("scylla://h:9042/ks"), "scylla://h:9042/ks");
    }
}
