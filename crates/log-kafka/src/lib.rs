//! The Kafka implementation of Tributary's [`Log`] trait, over rdkafka
//! (bundled librdkafka).
//!
//! A [`KafkaLog`] is one topic. It is what distributed mode uses where
//! standalone uses `tributary_log::embedded::EmbeddedLog`, and it passes the
//! same conformance suite (`tributary_log::conformance`).
//!
//! * **Appends** go through one idempotent producer with `acks=all`. Each
//!   record is sent to the partition `partition_for(key, partitions)`
//!   (Kafka's murmur2 partitioner, set explicitly), so a key lands on the same
//!   partition number in the embedded log and in Kafka, and one device's
//!   records keep their order. [`Log::append_batch`] returns `Ok` only once
//!   every record's delivery report says the brokers have it. A full
//!   producer queue is [`LogError::Backpressure`] at once; a broker that does
//!   not answer fails the append after `message.timeout.ms`. Nothing is
//!   dropped silently, nothing blocks forever.
//! * **Consumers** ([`KafkaConsumer`]) are one `StreamConsumer` each: in a
//!   consumer group with manual, synchronous commits, or alone with an
//!   explicit assignment of every partition. The commit and rebalance
//!   protocol is documented in [`consumer`].
//! * **Topics** are created through the admin API ([`ensure_topics`]); the
//!   four topics of a distributed Tributary are in [`topics`].
//! * **Metrics**: [`ProducerQueueMetrics`] exports the producers' queue
//!   depth (`tributary_log_producer_queue_messages{topic}`), read when
//!   scraped.
//!
//! This crate must not decide anything about payloads: it moves opaque
//! records with their keys, headers and timestamps. It does not retry
//! appends either: a failed append is the caller's to report (the device
//! retries), because only the caller knows whether it acknowledged anything.
//!
//! ```no_run
//! use std::time::Duration;
//! use tributary_log::{ConsumerOptions, Log, Record, StartFrom};
//! use tributary_log_kafka::{KafkaConfig, KafkaLog};
//!
//! # async fn run() -> Result<(), tributary_log::LogError> {
//! let log = KafkaLog::connect(KafkaConfig {
//!     brokers: vec!["127.0.0.1:9092".into()],
//!     ..KafkaConfig::default()
//! })
//! .await?;
//! let pos = log
//!     .append(Record {
//!         key: "acme/dev-1".into(),
//!         value: "payload".into(),
//!         headers: vec![("content-type".into(), "application/json".into())],
//!         timestamp_ms: 1_700_000_000_000,
//!     })
//!     .await?; // acknowledged by every in-sync replica
//! let mut consumer = log
//!     .consumer(ConsumerOptions { group: Some("processor".into()), start: StartFrom::Earliest })
//!     .await?;
//! let batch = consumer.poll(500, Duration::from_secs(1)).await?;
//! if let Some(last) = batch.last() {
//!     consumer.commit(&[(last.partition, last.offset + 1)]).await?;
//! }
//! # let _ = pos;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;
use tributary_log::{
    Consumer, ConsumerOptions, Log, LogError, Position, Record, Watermarks, partition_for,
};

pub mod config;
pub mod consumer;
mod context;
mod error;
mod metrics;
pub mod topics;

pub use config::{
    AssignmentStrategy, Compression, ConsumerSettings, KafkaConfig, ProducerSettings,
};
pub use consumer::KafkaConsumer;
pub use metrics::ProducerQueueMetrics;
pub use topics::{KafkaAdmin, TopicSpec, TopicStatus, ensure_topics, tributary_topics};

use crate::config::validate_group;
use crate::context::TracingContext;
use crate::error::{backend, blocking, produce_error};

/// One Kafka topic as a [`Log`].
pub struct KafkaLog {
    config: KafkaConfig,
    producer: FutureProducer<TracingContext>,
    closed: AtomicBool,
}

impl fmt::Debug for KafkaLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaLog")
            .field("brokers", &self.config.brokers)
            .field("topic", &self.config.topic)
            .field("partitions", &self.config.partitions)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl KafkaLog {
    /// Validates `config`, creates the topic if it is missing and
    /// `create_topic` is set, waits (up to `connect_timeout_ms`) until every
    /// partition has a leader, and checks that the topic has exactly
    /// `partitions` partitions (`LogError::Invalid` otherwise).
    pub async fn connect(config: KafkaConfig) -> Result<Arc<Self>, LogError> {
        config.validate()?;
        let admin = KafkaAdmin::new(&config)?;
        if config.create_topic {
            // The topic accepts the largest batch the producer may send.
            let spec = TopicSpec::new(&config.topic, config.partitions, config.replication_factor)
                .with_config(
                    "max.message.bytes",
                    config.producer.librdkafka_message_max_bytes().to_string(),
                );
            ensure_topics(&admin, &[spec]).await?;
        } else {
            topics::wait_for_topic(
                admin.client(),
                &config.topic,
                config.partitions,
                Instant::now() + config.connect_timeout(),
                config.request_timeout(),
            )
            .await?;
        }
        let producer: FutureProducer<TracingContext> = config
            .producer_client_config()
            .create_with_context(TracingContext)
            .map_err(|e| backend("create producer", &e))?;
        tracing::info!(brokers = ?config.brokers, topic = %config.topic,
            partitions = config.partitions, "connected to Kafka");
        Ok(Arc::new(Self {
            config,
            producer,
            closed: AtomicBool::new(false),
        }))
    }

    /// The configuration this log was connected with.
    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// Opens a consumer with its Kafka-specific API ([`KafkaConsumer::lag`]).
    /// [`Log::consumer`] returns the same consumer boxed.
    pub async fn kafka_consumer(&self, opts: ConsumerOptions) -> Result<KafkaConsumer, LogError> {
        KafkaConsumer::open(&self.config, opts).await
    }

    /// The producer's fatal error, if it had one. An idempotent producer
    /// that hit a fatal error (for example an unrecoverable sequence gap)
    /// fails every append from then on; a health check should report it
    /// so the service is restarted.
    pub fn fatal_error(&self) -> Option<String> {
        self.producer
            .client()
            .fatal_error()
            .map(|(code, reason)| format!("{code}: {reason}"))
    }

    /// Messages handed to the producer that the brokers have not
    /// acknowledged yet: queued, in flight, or acknowledged with their
    /// delivery report not yet handled (librdkafka's `rd_kafka_outq_len`,
    /// which also counts the rare pending client callback). Cheap: no
    /// broker round trip. Bounded by `queue_max_messages` plus what is in
    /// flight.
    pub fn producer_queue_messages(&self) -> u64 {
        u64::try_from(self.producer.in_flight_count()).unwrap_or(0)
    }

    /// Refuses further appends, then waits (up to `message.timeout.ms`)
    /// until every record already handed to the producer is delivered or
    /// has failed.
    pub async fn close(&self) -> Result<(), LogError> {
        self.closed.store(true, Ordering::SeqCst);
        let producer = self.producer.clone();
        let timeout =
            std::time::Duration::from_millis(u64::from(self.config.producer.message_timeout_ms));
        blocking(move || {
            producer
                .flush(timeout)
                .map_err(|e| backend("flush producer", &e))
        })
        .await
    }

    fn check_partition(&self, partition: u32) -> Result<i32, LogError> {
        if partition >= self.config.partitions {
            return Err(LogError::NoSuchPartition(partition));
        }
        i32::try_from(partition).map_err(|_| LogError::NoSuchPartition(partition))
    }
}

/// A record's size as the limit counts it: key, value, header names and
/// values.
fn record_size(r: &Record) -> usize {
    r.key.len()
        + r.value.len()
        + r.headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
}

/// Checks what Kafka cannot represent, before anything is sent.
fn check_record(r: &Record, limit: usize) -> Result<usize, LogError> {
    let size = record_size(r);
    if size > limit {
        return Err(LogError::RecordTooLarge { size, limit });
    }
    if r.timestamp_ms <= 0 {
        // librdkafka reads 0 as "now" and Kafka has no negative timestamps:
        // such a record would not come back with its timestamp.
        return Err(LogError::Invalid(format!(
            "record timestamp {} ms: Kafka needs a positive timestamp",
            r.timestamp_ms
        )));
    }
    if let Some((name, _)) = r.headers.iter().find(|(k, _)| k.contains('\0')) {
        // librdkafka reads header names back as C strings.
        return Err(LogError::Invalid(format!(
            "header name {name:?} contains a NUL byte"
        )));
    }
    Ok(size)
}

#[async_trait]
impl Log for KafkaLog {
    fn topic(&self) -> &str {
        &self.config.topic
    }

    fn partitions(&self) -> u32 {
        self.config.partitions
    }

    /// Sends every record to its key's partition, then waits for all
    /// delivery reports. `Ok` only if the brokers acknowledged every record
    /// (`acks=all`). If the producer queue is full, fails at once with
    /// `Backpressure`; records of the batch already queued may still be
    /// delivered (the trait allows it: consumers are idempotent).
    async fn append_batch(&self, records: Vec<Record>) -> Result<Vec<Position>, LogError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(LogError::Closed);
        }
        let limit = self.config.producer.max_record_bytes as usize;
        let mut sizes = Vec::with_capacity(records.len());
        for r in &records {
            sizes.push(check_record(r, limit)?);
        }
        let mut pending = Vec::with_capacity(records.len());
        for (r, size) in records.iter().zip(&sizes) {
            let partition = partition_for(&r.key, self.config.partitions);
            let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
            for (name, value) in &r.headers {
                headers = headers.insert(Header {
                    key: name.as_str(),
                    value: Some(&value[..]),
                });
            }
            let record = FutureRecord::to(&self.config.topic)
                .partition(self.check_partition(partition)?)
                .key(&r.key[..])
                .payload(&r.value[..])
                .timestamp(r.timestamp_ms)
                .headers(headers);
            match self.producer.send_result(record) {
                Ok(delivery) => pending.push((partition, *size, delivery)),
                Err((e, _)) => return Err(produce_error(&e, *size, limit)),
            }
        }
        // Every delivery future resolves within message.timeout.ms. Await
        // them all, so that no report is left behind, and return the first
        // failure.
        let mut positions = Vec::with_capacity(pending.len());
        let mut failure = None;
        for (partition, size, delivery) in pending {
            match delivery.await {
                Ok(Ok(d)) => {
                    let position = u32::try_from(d.partition)
                        .ok()
                        .filter(|p| *p == partition)
                        .zip(u64::try_from(d.offset).ok())
                        .map(|(partition, offset)| Position { partition, offset });
                    match position {
                        Some(p) => positions.push(p),
                        None => {
                            failure.get_or_insert(LogError::Corrupt(format!(
                                "delivery report for partition {partition} says partition {} offset {}",
                                d.partition, d.offset
                            )));
                        }
                    }
                }
                Ok(Err((e, _))) => {
                    failure.get_or_insert(produce_error(&e, size, limit));
                }
                Err(_canceled) => {
                    failure.get_or_insert(LogError::Closed);
                }
            }
        }
        match failure {
            Some(e) => {
                tracing::debug!(topic = %self.config.topic, error = %e, "append failed");
                Err(e)
            }
            None => Ok(positions),
        }
    }

    async fn consumer(&self, opts: ConsumerOptions) -> Result<Box<dyn Consumer>, LogError> {
        Ok(Box::new(self.kafka_consumer(opts).await?))
    }

    async fn watermarks(&self, partition: u32) -> Result<Watermarks, LogError> {
        let p = self.check_partition(partition)?;
        let producer = self.producer.clone();
        let topic = self.config.topic.clone();
        let timeout = self.config.request_timeout();
        let (low, high) = blocking(move || {
            producer
                .client()
                .fetch_watermarks(&topic, p, timeout)
                .map_err(|e| backend("fetch watermarks", &e))
        })
        .await?;
        match (u64::try_from(low), u64::try_from(high)) {
            (Ok(low), Ok(high)) if low <= high => Ok(Watermarks { low, high }),
            _ => Err(LogError::Corrupt(format!(
                "partition {partition}: watermarks {low}..{high}"
            ))),
        }
    }

    /// Asks the group coordinator through a short-lived consumer that uses
    /// the group's id but does not join it, so the group's members are not
    /// disturbed.
    async fn committed(&self, group: &str, partition: u32) -> Result<Option<u64>, LogError> {
        validate_group(group)?;
        let p = self.check_partition(partition)?;
        let config = self.config.consumer_client_config(group, "earliest");
        let topic = self.config.topic.clone();
        let timeout = self.config.request_timeout();
        blocking(move || {
            let consumer: BaseConsumer<TracingContext> = config
                .create_with_context(TracingContext)
                .map_err(|e| backend("create consumer", &e))?;
            let mut tpl = TopicPartitionList::with_capacity(1);
            tpl.add_partition(&topic, p);
            let committed = consumer
                .committed_offsets(tpl, timeout)
                .map_err(|e| backend("committed offsets", &e))?;
            let offset = committed.find_partition(&topic, p).map(|e| e.offset());
            match offset {
                Some(Offset::Offset(o)) => u64::try_from(o)
                    .map(Some)
                    .map_err(|_| LogError::Corrupt(format!("committed offset {o}"))),
                _ => Ok(None),
            }
        })
        .await
    }
}
