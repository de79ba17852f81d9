//! The log: Tributary's durable, partitioned, append-only record stream.
//!
//! The [`Log`] trait has the semantics of one Kafka topic: records with a key
//! go to the partition the key hashes to, keep their order within it, and get
//! consecutive offsets; consumer groups commit per-partition offsets. The
//! processor is written against this trait only, so it is the same code over
//! the embedded log ([`embedded::EmbeddedLog`]) and over Kafka.
//!
//! Durability contract: when [`Log::append`] or [`Log::append_batch`] returns
//! `Ok`, the records survive a crash (`kill -9`, power loss after fsync).
//! Frontends acknowledge devices only after that.
//!
//! [`conformance`] is the test suite every implementation must pass.

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub mod conformance;
pub mod embedded;

/// A record to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Partitioning key; records with the same key keep their order.
    pub key: Bytes,
    /// The payload.
    pub value: Bytes,
    /// Header name/value pairs (Kafka record headers).
    pub headers: Vec<(String, Bytes)>,
    /// Producer timestamp, ms since the epoch.
    pub timestamp_ms: i64,
}

/// Where an appended record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The partition the record's key maps to.
    pub partition: u32,
    /// The record's offset within that partition.
    pub offset: u64,
}

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// The partition the record is in.
    pub partition: u32,
    /// The record's offset within its partition.
    pub offset: u64,
    /// Partitioning key, as appended.
    pub key: Bytes,
    /// The payload, as appended.
    pub value: Bytes,
    /// Header name/value pairs, in the order they were appended.
    pub headers: Vec<(String, Bytes)>,
    /// Producer timestamp, ms since the epoch, as appended.
    pub timestamp_ms: i64,
}

/// Where a consumer with no committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartFrom {
    /// The oldest retained record.
    #[default]
    Earliest,
    /// Only records appended after the consumer opened.
    Latest,
}

/// How to open a consumer.
#[derive(Debug, Clone, Default)]
pub struct ConsumerOptions {
    /// A consumer group. Consumers in a group resume from the group's committed
    /// offsets and may commit. Without a group the consumer is ephemeral and
    /// cannot commit.
    pub group: Option<String>,
    /// Where to start on partitions the group has not committed.
    pub start: StartFrom,
}

/// Lowest and next offsets of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    /// Offset of the oldest retained record.
    pub low: u64,
    /// Offset the next appended record will get.
    pub high: u64,
}

/// Errors of any log implementation.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The log cannot take more right now; the caller should retry later
    /// (HTTP 503 + Retry-After, MQTT: stop reading).
    #[error("log is overloaded, retry later")]
    Backpressure,
    /// A record is larger than the log accepts (its encoded size is `size`).
    #[error("record too large: {size} bytes, limit {limit}")]
    RecordTooLarge {
        /// Encoded size of the record.
        size: usize,
        /// Largest accepted encoded size.
        limit: usize,
    },
    /// The partition does not exist in this topic.
    #[error("no such partition {0}")]
    NoSuchPartition(u32),
    /// Only consumers in a group can commit.
    #[error("consumer has no group and cannot commit")]
    NoGroup,
    /// A configuration or argument the log cannot accept, e.g. a partition
    /// count that differs from the existing topic's, or an empty group name.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The log was closed; no more appends are accepted.
    #[error("log is closed")]
    Closed,
    /// Data on disk (or from the broker) does not have the expected shape.
    #[error("corrupt log: {0}")]
    Corrupt(String),
    /// An I/O error.
    #[error("log I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Any other failure of the implementation (broker errors, a failed writer).
    #[error("log backend: {0}")]
    Backend(String),
}

/// One Kafka-like topic.
#[async_trait]
pub trait Log: Send + Sync + Debug + 'static {
    /// The topic name.
    fn topic(&self) -> &str;

    /// Number of partitions (fixed for the life of the log).
    fn partitions(&self) -> u32;

    /// The partition a key maps to.
    fn partition_for(&self, key: &[u8]) -> u32 {
        partition_for(key, self.partitions())
    }

    /// Appends one record and returns once it is durable.
    async fn append(&self, record: Record) -> Result<Position, LogError> {
        let mut v = self.append_batch(vec![record]).await?;
        v.pop().ok_or(LogError::Closed)
    }

    /// Appends records and returns once all of them are durable. Concurrent
    /// callers share group commits. On error, none of the records may be
    /// counted as stored (some may still be, and will be replayed: consumers
    /// must be idempotent).
    async fn append_batch(&self, records: Vec<Record>) -> Result<Vec<Position>, LogError>;

    /// Opens a consumer.
    async fn consumer(&self, opts: ConsumerOptions) -> Result<Box<dyn Consumer>, LogError>;

    /// Low and high watermarks of a partition.
    async fn watermarks(&self, partition: u32) -> Result<Watermarks, LogError>;

    /// The group's committed offset for a partition (the next offset to read).
    async fn committed(&self, group: &str, partition: u32) -> Result<Option<u64>, LogError>;
}

/// A reader of a log, alone or as part of a consumer group.
#[async_trait]
pub trait Consumer: Send + Debug {
    /// Waits up to `timeout` for records and returns at most `max_records`,
    /// in offset order within each partition. Empty on timeout.
    async fn poll(
        &mut self,
        max_records: usize,
        timeout: Duration,
    ) -> Result<Vec<LogRecord>, LogError>;

    /// Commits, for each `(partition, offset)`, the offset of the next record
    /// to read. Durable when it returns.
    async fn commit(&mut self, offsets: &[(u32, u64)]) -> Result<(), LogError>;

    /// Partitions this consumer currently reads.
    fn assignment(&self) -> Vec<u32>;
}

/// Kafka's default partitioner (murmur2 of the key, positive, modulo), so a
/// key maps to the same partition number in the embedded log and in Kafka.
pub fn partition_for(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

/// Murmur2 as Kafka's Java client implements it (seed 0x9747b28c).
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len() as u32;
    let mut h: u32 = 0x9747_b28c ^ len;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Values from Kafka's own UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58897971
        );
        assert_eq!(murmur2(b"abc") as i32, 479470107);
    }
}
