//! The Kafka [`Consumer`]: a `StreamConsumer` per consumer, in a group with
//! manual commits, or alone with an explicit assignment.
//!
//! # Commit and rebalance protocol
//!
//! * `poll` hands records out; nothing is committed automatically
//!   (`enable.auto.commit=false`, `enable.auto.offset.store=false`).
//! * The processor writes what it polled to the store, flushes it, and then
//!   calls [`Consumer::commit`] with the next offsets. `commit` is
//!   synchronous (`CommitMode::Sync`): when it returns `Ok`, the group's
//!   offsets are on the broker.
//! * Each offset given to `commit` is kept as *acknowledged* until the
//!   broker confirms it. If a commit fails (typically
//!   `REBALANCE_IN_PROGRESS` while the group rebalances), the offset stays
//!   acknowledged; the next `commit` retries it, and so does the revoke hook.
//! * On revocation, librdkafka calls the context's `pre_rebalance` hook from
//!   inside `poll`, before the partitions go to another member. The hook
//!   cannot wait for the processor to flush (it is synchronous and runs
//!   inside our own `poll`), so it commits exactly what the processor has
//!   already acknowledged and the broker has not confirmed, for the revoked
//!   partitions, synchronously, unless the assignment was lost (the session
//!   expired: the broker would refuse the commit anyway).
//! * Records handed out but not yet acknowledged are read again by the
//!   partition's next owner, from the group's committed offset. That replay
//!   is harmless because store writes are idempotent: a point is identified
//!   by (tenant, device, metric, timestamp), so writing it again changes
//!   nothing.
//! * After a revocation, `commit` skips offsets of partitions this consumer
//!   no longer owns: committing them could move the new owner's offset
//!   backwards (more replay) or be refused by the broker for a stale
//!   generation. The new owner's replay covers them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures::FutureExt;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;
use tributary_log::{Consumer, ConsumerOptions, LogError, LogRecord, StartFrom};

use crate::config::{KafkaConfig, validate_group};
use crate::context::report_error;
use crate::error::{backend, blocking};

/// A consumer of one Kafka topic, in a group or alone.
///
/// Besides the [`Consumer`] trait it reports per-partition lag
/// ([`KafkaConsumer::lag`]) for the processor's metric.
pub struct KafkaConsumer {
    /// `None` only while dropping.
    consumer: Option<Arc<StreamConsumer<RebalanceContext>>>,
    topic: String,
    partitions: u32,
    group: Option<String>,
    start: StartFrom,
    shared: Arc<Shared>,
    request_timeout: Duration,
    max_poll_bytes: usize,
}

impl fmt::Debug for KafkaConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConsumer")
            .field("topic", &self.topic)
            .field("group", &self.group)
            .field("start", &self.start)
            .finish_non_exhaustive()
    }
}

/// State shared by the consumer and its rebalance hook.
#[derive(Debug, Default)]
struct Shared {
    /// Offsets given to `commit` that the broker has not confirmed, per
    /// partition.
    acknowledged: Mutex<BTreeMap<u32, u64>>,
    /// Rebalances seen (assignments and revocations), for tests and logs.
    rebalances: AtomicU64,
}

impl Shared {
    fn acknowledged(&self) -> MutexGuard<'_, BTreeMap<u32, u64>> {
        // The map stays consistent even if a holder panicked: every update is
        // a single insert or remove.
        self.acknowledged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Runs the revoke side of the commit protocol (see the module docs).
struct RebalanceContext {
    topic: String,
    shared: Arc<Shared>,
}

impl ClientContext for RebalanceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        report_error(&error, reason);
    }
}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.shared.rebalances.fetch_add(1, Ordering::Relaxed);
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let revoked = partitions_of(tpl, &self.topic);
                let pending: Vec<(u32, u64)> = {
                    let mut acknowledged = self.shared.acknowledged();
                    revoked
                        .iter()
                        .filter_map(|p| acknowledged.remove(p).map(|o| (*p, o)))
                        .collect()
                };
                tracing::info!(topic = %self.topic, partitions = ?revoked, "partitions revoked");
                if pending.is_empty() {
                    return;
                }
                if consumer.assignment_lost() {
                    tracing::warn!(topic = %self.topic, offsets = ?pending,
                        "assignment lost before acknowledged offsets were committed; the new owner replays them");
                    return;
                }
                let result = offsets_tpl(&self.topic, &pending)
                    .and_then(|tpl| consumer.commit(&tpl, CommitMode::Sync));
                match result {
                    Ok(()) => tracing::info!(topic = %self.topic, offsets = ?pending,
                        "committed acknowledged offsets of revoked partitions"),
                    Err(error) => tracing::warn!(topic = %self.topic, offsets = ?pending, %error,
                        "could not commit acknowledged offsets on revoke; the new owner replays them"),
                }
            }
            Rebalance::Assign(tpl) => {
                tracing::info!(topic = %self.topic, partitions = ?partitions_of(tpl, &self.topic), "partitions assigned");
            }
            Rebalance::Error(error) => {
                tracing::warn!(topic = %self.topic, %error, "rebalance failed; librdkafka rejoins");
            }
        }
    }
}

/// The partitions of `topic` in a list, sorted.
fn partitions_of(tpl: &TopicPartitionList, topic: &str) -> Vec<u32> {
    let set: BTreeSet<u32> = tpl
        .elements_for_topic(topic)
        .iter()
        .filter_map(|e| u32::try_from(e.partition()).ok())
        .collect();
    set.into_iter().collect()
}

/// A list of `(partition, offset)` for `topic`.
fn offsets_tpl(topic: &str, offsets: &[(u32, u64)]) -> Result<TopicPartitionList, KafkaError> {
    let mut tpl = TopicPartitionList::with_capacity(offsets.len());
    for &(p, o) in offsets {
        // Both were range-checked by the caller; saturate rather than wrap.
        let p = i32::try_from(p).unwrap_or(i32::MAX);
        let o = i64::try_from(o).unwrap_or(i64::MAX);
        tpl.add_partition_offset(topic, p, Offset::Offset(o))?;
    }
    Ok(tpl)
}

/// A group id for a consumer without a group, unique per process and call.
fn ephemeral_group_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "tributary-ephemeral-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl KafkaConsumer {
    /// Opens a consumer of `config.topic`.
    ///
    /// With a group, it subscribes, and the group's coordinator assigns
    /// partitions (on the first polls); partitions without a committed offset
    /// start at `opts.start`. Without a group, it is assigned every partition
    /// at once, from the low watermark (`Earliest`) or from the high watermark
    /// as of now (`Latest`), under a throwaway group id, and cannot commit.
    pub(crate) async fn open(
        config: &KafkaConfig,
        opts: ConsumerOptions,
    ) -> Result<Self, LogError> {
        if let Some(group) = &opts.group {
            validate_group(group)?;
        }
        let group_id = opts.group.clone().unwrap_or_else(ephemeral_group_id);
        let reset = match opts.start {
            StartFrom::Earliest => "earliest",
            StartFrom::Latest => "latest",
        };
        let shared = Arc::new(Shared::default());
        let context = RebalanceContext {
            topic: config.topic.clone(),
            shared: Arc::clone(&shared),
        };
        let consumer: StreamConsumer<RebalanceContext> = config
            .consumer_client_config(&group_id, reset)
            .create_with_context(context)
            .map_err(|e| backend("create consumer", &e))?;
        let this = Self {
            consumer: Some(Arc::new(consumer)),
            topic: config.topic.clone(),
            partitions: config.partitions,
            group: opts.group,
            start: opts.start,
            shared,
            request_timeout: config.request_timeout(),
            max_poll_bytes: config.consumer.max_poll_bytes,
        };
        let consumer = this.client()?;
        if this.group.is_some() {
            consumer
                .subscribe(&[&this.topic])
                .map_err(|e| backend("subscribe", &e))?;
        } else {
            let topic = this.topic.clone();
            let (partitions, start, timeout) = (this.partitions, this.start, this.request_timeout);
            blocking(move || {
                let mut tpl = TopicPartitionList::with_capacity(partitions as usize);
                for p in 0..partitions {
                    let p = i32::try_from(p).unwrap_or(i32::MAX);
                    let offset = match start {
                        StartFrom::Earliest => Offset::Beginning,
                        StartFrom::Latest => {
                            let (_, high) = consumer
                                .fetch_watermarks(&topic, p, timeout)
                                .map_err(|e| backend("fetch watermarks", &e))?;
                            Offset::Offset(high)
                        }
                    };
                    tpl.add_partition_offset(&topic, p, offset)
                        .map_err(|e| backend("assign", &e))?;
                }
                consumer.assign(&tpl).map_err(|e| backend("assign", &e))
            })
            .await?;
        }
        Ok(this)
    }

    fn client(&self) -> Result<Arc<StreamConsumer<RebalanceContext>>, LogError> {
        self.consumer.clone().ok_or(LogError::Closed)
    }

    /// The consumer group, if any.
    pub fn group(&self) -> Option<&str> {
        self.group.as_deref()
    }

    /// How many rebalance events (assignments, revocations) this consumer
    /// has seen.
    pub fn rebalances(&self) -> u64 {
        self.shared.rebalances.load(Ordering::Relaxed)
    }

    /// Offsets given to `commit` that the broker has not confirmed yet
    /// (their commit failed), per partition. They are retried by the next
    /// `commit` and before the partition is revoked.
    pub fn unconfirmed_commits(&self) -> Vec<(u32, u64)> {
        self.shared
            .acknowledged()
            .iter()
            .map(|(p, o)| (*p, *o))
            .collect()
    }

    /// Per assigned partition, how many records are in the log after this
    /// consumer's position: the high watermark minus the offset of the next
    /// record `poll` would return. A partition not read yet counts from the
    /// group's committed offset, or else from where the consumer starts.
    /// Asks the brokers for the watermarks (one request per partition).
    pub async fn lag(&self) -> Result<Vec<(u32, u64)>, LogError> {
        let consumer = self.client()?;
        let topic = self.topic.clone();
        let (timeout, start, grouped) = (self.request_timeout, self.start, self.group.is_some());
        blocking(move || {
            let assigned = partitions_of(
                &consumer
                    .assignment()
                    .map_err(|e| backend("assignment", &e))?,
                &topic,
            );
            let positions = consumer.position().map_err(|e| backend("position", &e))?;
            let mut committed = None;
            let mut out = Vec::with_capacity(assigned.len());
            for p in assigned {
                let kp = i32::try_from(p).unwrap_or(i32::MAX);
                let (low, high) = consumer
                    .fetch_watermarks(&topic, kp, timeout)
                    .map_err(|e| backend("fetch watermarks", &e))?;
                let position = match positions.find_partition(&topic, kp).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => {
                        if grouped && committed.is_none() {
                            committed = Some(
                                consumer
                                    .committed(timeout)
                                    .map_err(|e| backend("committed offsets", &e))?,
                            );
                        }
                        match committed
                            .as_ref()
                            .and_then(|c| c.find_partition(&topic, kp))
                            .map(|e| e.offset())
                        {
                            Some(Offset::Offset(o)) => o,
                            _ => match start {
                                StartFrom::Earliest => low,
                                StartFrom::Latest => high,
                            },
                        }
                    }
                };
                out.push((p, u64::try_from(high.saturating_sub(position)).unwrap_or(0)));
            }
            Ok(out)
        })
        .await
    }

    /// Converts a librdkafka record, copying it out of librdkafka's buffer.
    fn to_record(&self, m: &BorrowedMessage<'_>) -> Result<LogRecord, LogError> {
        let partition = u32::try_from(m.partition())
            .map_err(|_| LogError::Corrupt(format!("record with partition {}", m.partition())))?;
        let offset = u64::try_from(m.offset())
            .map_err(|_| LogError::Corrupt(format!("record with offset {}", m.offset())))?;
        let mut headers = Vec::new();
        if let Some(h) = m.headers() {
            headers.reserve(h.count());
            for i in 0..h.count() {
                // rdkafka panics on a header name that is not UTF-8 (only a
                // foreign producer can write one): skip that header rather
                // than take the consumer down.
                match catch_unwind(AssertUnwindSafe(|| h.try_get(i))) {
                    Ok(Some(header)) => headers.push((
                        header.key.to_owned(),
                        header.value.map_or_else(Bytes::new, Bytes::copy_from_slice),
                    )),
                    Ok(None) => break,
                    Err(_) => tracing::warn!(topic = %self.topic, partition, offset, index = i,
                        "skipping a record header whose name is not UTF-8"),
                }
            }
        }
        Ok(LogRecord {
            partition,
            offset,
            key: m.key().map_or_else(Bytes::new, Bytes::copy_from_slice),
            value: m.payload().map_or_else(Bytes::new, Bytes::copy_from_slice),
            headers,
            timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
        })
    }

    /// Decides what a consume error means: `Err` if the consumer cannot go
    /// on, `Ok` (after logging) for what librdkafka recovers from itself.
    fn consume_error(&self, e: KafkaError) -> Result<(), LogError> {
        use rdkafka::types::RDKafkaErrorCode as Code;
        match &e {
            KafkaError::PartitionEOF(_) => Ok(()),
            KafkaError::MessageConsumptionFatal(_) => Err(backend("consume (fatal)", &e)),
            KafkaError::MessageConsumption(
                Code::TopicAuthorizationFailed
                | Code::GroupAuthorizationFailed
                | Code::UnknownTopicOrPartition
                | Code::UnknownTopic
                | Code::Fatal,
            ) => Err(backend("consume", &e)),
            _ => {
                tracing::warn!(topic = %self.topic, error = %e, "consume error; librdkafka retries");
                Ok(())
            }
        }
    }
}

fn record_bytes(r: &LogRecord) -> usize {
    r.key.len()
        + r.value.len()
        + r.headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
}

#[async_trait]
impl Consumer for KafkaConsumer {
    /// Waits up to `timeout` for the first record, then takes what else is
    /// already fetched, up to `max_records` and the configured
    /// `max_poll_bytes`. Rebalance hooks run inside this call.
    async fn poll(
        &mut self,
        max_records: usize,
        timeout: Duration,
    ) -> Result<Vec<LogRecord>, LogError> {
        if max_records == 0 {
            return Ok(Vec::new());
        }
        let consumer = self.client()?;
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Err(_elapsed) => return Ok(out),
                Ok(Ok(m)) => {
                    out.push(self.to_record(&m)?);
                    break;
                }
                Ok(Err(e)) => self.consume_error(e)?,
            }
        }
        let mut bytes = out.iter().map(record_bytes).sum::<usize>();
        while out.len() < max_records && bytes < self.max_poll_bytes {
            match consumer.recv().now_or_never() {
                None => break,
                Some(Ok(m)) => {
                    let r = self.to_record(&m)?;
                    bytes += record_bytes(&r);
                    out.push(r);
                }
                Some(Err(e)) => {
                    self.consume_error(e)?;
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Commits synchronously; see the module docs for the protocol. Offsets
    /// of partitions no longer assigned to this consumer are skipped.
    async fn commit(&mut self, offsets: &[(u32, u64)]) -> Result<(), LogError> {
        if self.group.is_none() {
            return Err(LogError::NoGroup);
        }
        for &(p, o) in offsets {
            if p >= self.partitions {
                return Err(LogError::NoSuchPartition(p));
            }
            if i64::try_from(o).is_err() {
                return Err(LogError::Invalid(format!("offset {o} is out of range")));
            }
        }
        let consumer = self.client()?;
        let assigned: BTreeSet<u32> = self.assignment().into_iter().collect();
        let to_commit: Vec<(u32, u64)> = {
            let mut acknowledged = self.shared.acknowledged();
            for &(p, o) in offsets {
                if assigned.contains(&p) {
                    acknowledged.insert(p, o);
                } else {
                    tracing::debug!(topic = %self.topic, partition = p, offset = o,
                        "not committing a partition this consumer no longer owns; its new owner replays it");
                }
            }
            acknowledged.retain(|p, _| assigned.contains(p));
            acknowledged.iter().map(|(p, o)| (*p, *o)).collect()
        };
        if to_commit.is_empty() {
            return Ok(());
        }
        let topic = self.topic.clone();
        let sent = to_commit.clone();
        blocking(move || {
            let tpl = offsets_tpl(&topic, &sent).map_err(|e| backend("commit", &e))?;
            consumer
                .commit(&tpl, CommitMode::Sync)
                .map_err(|e| backend("commit", &e))
        })
        .await?;
        let mut acknowledged = self.shared.acknowledged();
        for (p, o) in to_commit {
            if acknowledged.get(&p) == Some(&o) {
                acknowledged.remove(&p);
            }
        }
        Ok(())
    }

    fn assignment(&self) -> Vec<u32> {
        let Some(consumer) = &self.consumer else {
            return Vec::new();
        };
        match consumer.assignment() {
            Ok(tpl) => partitions_of(&tpl, &self.topic),
            Err(error) => {
                tracing::debug!(topic = %self.topic, %error, "no assignment");
                Vec::new()
            }
        }
    }
}

impl Drop for KafkaConsumer {
    /// Leaves the group: librdkafka revokes the assignment (running the
    /// revoke hook, which may commit) and waits for the broker, so that the
    /// remaining members get the partitions at once instead of after the
    /// session timeout. That waits on the network, so on a multi-threaded
    /// runtime it runs in `block_in_place`.
    fn drop(&mut self) {
        let Some(consumer) = self.consumer.take() else {
            return;
        };
        let close = move || drop(consumer);
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(close);
            }
            _ => close(),
        }
    }
}
