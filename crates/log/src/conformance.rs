//! The conformance suite every [`Log`] implementation must pass.
//!
//! Shaped like quickwit's `storage_test_suite`: an implementation provides a
//! [`LogFactory`] that creates a fresh topic per call, and its tests run
//! either [`run_all`] or each check on its own (one `#[test]` per check, so a
//! failure names it). Each check returns a [`ConformanceError`] naming
//! itself rather than panicking, and uses its own group names, so checks may
//! share a cluster.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//!
//! use tributary_log::conformance::{self, LogFactory};
//! use tributary_log::embedded::{EmbeddedLog, EmbeddedLogConfig};
//! use tributary_log::{Log, LogError};
//!
//! struct Factory {
//!     root: std::path::PathBuf,
//!     next: AtomicU32,
//! }
//!
//! #[async_trait::async_trait]
//! impl LogFactory for Factory {
//!     async fn create(&self, partitions: u32) -> Result<Arc<dyn Log>, LogError> {
//!         let n = self.next.fetch_add(1, Ordering::Relaxed);
//!         let config = EmbeddedLogConfig::new(format!("topic-{n}"), partitions);
//!         Ok(EmbeddedLog::open(self.root.join(format!("topic-{n}")), config).await?)
//!     }
//! }
//!
//! # async fn run() {
//! let factory = Factory { root: "/tmp/conformance".into(), next: AtomicU32::new(0) };
//! conformance::run_all(&factory).await.expect("the log conforms");
//! # }
//! ```
//!
//! The checks wait for conditions with deadlines ([`DEADLINE`]), never with
//! fixed sleeps, so they suit a broker that takes a while to assign
//! partitions.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;

use crate::{Consumer, ConsumerOptions, Log, LogError, LogRecord, Position, Record, StartFrom};

/// How long a check waits for records it expects.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// How long a check polls to show that nothing more arrives.
const QUIET: Duration = Duration::from_millis(300);

/// Creates logs for the suite.
#[async_trait]
pub trait LogFactory: Send + Sync {
    /// A new, empty topic with `partitions` partitions, uniquely named per call.
    async fn create(&self, partitions: u32) -> Result<Arc<dyn Log>, LogError>;
}

/// A failed check.
#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    /// The log behaved differently from the contract.
    #[error("{check}: {message}")]
    Failed {
        /// The check's name (its function name).
        check: &'static str,
        /// What was expected and what happened.
        message: String,
    },
    /// The log returned an error where none was expected.
    #[error("{check}: {context}: {source}")]
    Log {
        /// The check's name (its function name).
        check: &'static str,
        /// The operation that failed.
        context: String,
        /// The error.
        source: LogError,
    },
}

/// Every failed check of a [`run_all`].
#[derive(Debug)]
pub struct ConformanceFailures(pub Vec<ConformanceError>);

impl fmt::Display for ConformanceFailures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} conformance check(s) failed:", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConformanceFailures {}

type CheckResult = Result<(), ConformanceError>;

/// The name of every check, in the order [`run_all`] runs them.
pub const CHECKS: &[&str] = &[
    "append_assigns_consecutive_offsets",
    "same_key_same_partition_in_order",
    "append_batch_spans_partitions",
    "concurrent_appends_get_distinct_offsets",
    "earliest_reads_everything_once_in_order",
    "latest_skips_existing_records",
    "group_resumes_after_commit",
    "ephemeral_consumer_cannot_commit",
    "headers_and_timestamps_round_trip",
    "empty_and_large_values_round_trip",
    "poll_respects_max_records",
    "poll_times_out_empty",
    "poll_wakes_up_on_append",
    "watermarks_track_appends",
];

/// Runs every check, continuing after failures, and reports all that failed.
pub async fn run_all(factory: &dyn LogFactory) -> Result<(), ConformanceFailures> {
    let mut failures = Vec::new();
    for result in [
        append_assigns_consecutive_offsets(factory).await,
        same_key_same_partition_in_order(factory).await,
        append_batch_spans_partitions(factory).await,
        concurrent_appends_get_distinct_offsets(factory).await,
        earliest_reads_everything_once_in_order(factory).await,
        latest_skips_existing_records(factory).await,
        group_resumes_after_commit(factory).await,
        ephemeral_consumer_cannot_commit(factory).await,
        headers_and_timestamps_round_trip(factory).await,
        empty_and_large_values_round_trip(factory).await,
        poll_respects_max_records(factory).await,
        poll_times_out_empty(factory).await,
        poll_wakes_up_on_append(factory).await,
        watermarks_track_appends(factory).await,
    ] {
        if let Err(e) = result {
            failures.push(e);
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(ConformanceFailures(failures))
    }
}

/// Returns early from a check with a [`ConformanceError::Failed`].
macro_rules! ensure {
    ($check:expr, $cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(ConformanceError::Failed { check: $check, message: format!($($fmt)+) });
        }
    };
}

/// Attaches a check name and context to a log error.
trait Ctx<T> {
    fn ctx(self, check: &'static str, context: &str) -> Result<T, ConformanceError>;
}

impl<T> Ctx<T> for Result<T, LogError> {
    fn ctx(self, check: &'static str, context: &str) -> Result<T, ConformanceError> {
        self.map_err(|source| ConformanceError::Log {
            check,
            context: context.to_owned(),
            source,
        })
    }
}

fn record(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Record {
    Record {
        key: key.into(),
        value: value.into(),
        headers: Vec::new(),
        timestamp_ms: now_ms(),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A group name no other check, run or process uses.
fn unique_group(check: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "conformance-{check}-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn consumer_opts(group: Option<String>, start: StartFrom) -> ConsumerOptions {
    ConsumerOptions { group, start }
}

/// Polls until `want` records arrived or [`DEADLINE`] passed, and returns
/// what arrived (possibly more than `want`).
async fn read_n(
    check: &'static str,
    consumer: &mut dyn Consumer,
    want: usize,
) -> Result<Vec<LogRecord>, ConformanceError> {
    let deadline = Instant::now() + DEADLINE;
    let mut out = Vec::with_capacity(want);
    while out.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        ensure!(
            check,
            !left.is_zero(),
            "read {} of {want} records before the {DEADLINE:?} deadline",
            out.len()
        );
        out.extend(
            consumer
                .poll(want - out.len(), left)
                .await
                .ctx(check, "poll")?,
        );
    }
    Ok(out)
}

/// Checks that nothing more arrives within [`QUIET`].
async fn expect_quiet(check: &'static str, consumer: &mut dyn Consumer) -> CheckResult {
    let extra = consumer.poll(100, QUIET).await.ctx(check, "poll")?;
    ensure!(
        check,
        extra.is_empty(),
        "expected no more records, got {} (first: partition {} offset {})",
        extra.len(),
        extra[0].partition,
        extra[0].offset
    );
    Ok(())
}

/// Checks that records are in strictly increasing offset order per partition.
fn check_order(check: &'static str, records: &[LogRecord]) -> CheckResult {
    let mut last: HashMap<u32, u64> = HashMap::new();
    for r in records {
        if let Some(prev) = last.insert(r.partition, r.offset) {
            ensure!(
                check,
                r.offset > prev,
                "partition {}: offset {} after {prev}",
                r.partition,
                r.offset
            );
        }
    }
    Ok(())
}

/// Keys that, between them, hash to every one of `partitions` partitions.
fn keys_covering(log: &dyn Log, partitions: u32) -> Vec<Bytes> {
    let mut by_partition: BTreeMap<u32, Bytes> = BTreeMap::new();
    for i in 0..10_000u32 {
        if by_partition.len() == partitions as usize {
            break;
        }
        let key = Bytes::from(format!("key-{i}"));
        by_partition.entry(log.partition_for(&key)).or_insert(key);
    }
    by_partition.into_values().collect()
}

/// Appends with one key get consecutive offsets in their partition, from the
/// partition's high watermark; another partition counts on its own.
pub async fn append_assigns_consecutive_offsets(factory: &dyn LogFactory) -> CheckResult {
    const CHECK: &str = "append_assigns_consecutive_offsets";
    let log = factory.create(3).await.ctx(CHECK, "create")?;
    let keys = keys_covering(&*log, 3);
    ensure!(CHECK, keys.len() == 3, "no keys found for all 3 partitions");
    for key in &keys {
        let p = log.partition_for(key);
        let start = log.watermarks(p).await.ctx(CHECK, "watermarks")?.high;
        for i in 0..10u64 {
            let pos = log
                .append(record(key.clone(), format!("v{i}")))
                .await
                .ctx(CHECK, "append")?;
            ensure!(
                CHECK,
                pos == Position {
                    partition: p,
                    offset: start + i
                },
                "append #{i} with key {key:?} landed at {pos:?}, expected partition {p} offset {}",
                start + i
            );
        }
    }
    Ok(())
}

/// Records with the same key land in `partition_for(key)` and are read back
/// in the order appended.
pub async fn same_key_same_partition_in_order(factory: &dyn LogFactory) -> CheckResult {
    const CHECK: &str = "same_key_same_partition_in_order";
    let log = factory.create(4).await.ctx(CHECK, "create")?;
    let keys: Vec<String> = (0..8).map(|k| format!("device-{k}")).collect();
    for i in 0..20 {
        for key in &keys {
            let pos = log
                .append(record(key.clone(), format!("{key}/{i}")))
                .await
                .ctx(CHECK, "append")?;
            let want = log.partition_for(key.as_bytes());
            ensure!(
                CHECK,
                pos.partition == want,
                "key {key} went to partition {}, not {want}",
                pos.partition
            );
        }
    }
    let mut consumer = log
        .consumer(consumer_opts(None, StartFrom::Earliest))
        .await
        .ctx(CHECK, "consumer")?;
    let records = read_n(CHECK, &mut *consumer, keys.len() * 20).await?;
    check_order(CHECK, &records)?;
    for key in &keys {
        let values: Vec<&Bytes> = records
            .iter()
            .filter(|r| r.key == key.as_bytes())
            .map(|r| &r.value)
            .collect();
        let want: Vec<Bytes> = (0..20).map(|i| Bytes::from(format!("{key}/{i}"))).collect();
        ensure!(
            CHECK,
            values.len() == want.len(),
            "key {key}: read {} records, appended 20",
            values.len()
        );
        ensure!(
            CHECK,
            values.iter().zip(&want).all(|(a, b)| *a == b),
            "key {key}: values out of order: {values:?}"
        );
        let p = log.partition_for(key.as_bytes());
        ensure!(
            CHECK,
            records
                .iter()
                .filter(|r| r.key == key.as_bytes())
                .all(|r| r.partition == p),
            "key {key}: read back from a partition other than {p}"
        );
    }
    Ok(())
}

/// One `append_batch` over many partitions returns positions in input
/// order, each in its key's partition, consecutive per partition.
pub async fn append_batch_spans_partitions(factory: &dyn LogFactory) -> CheckResult {
    const CHECK: &str = "append_batch_spans_partitions";
    let log = factory.create(4).await.ctx(CHECK, "create")?;
    let keys = keys_covering(&*log, 4);
    let batch: Vec<Record> = (0..40)
        .map(|i| record(keys[i % keys.len()].clone(), format!("batch-{i}")))
        .collect();
    let positions = log
        .append_batch(batch.clone())
        .await
        .ctx(CHECK, "append_batch")?;
    ensure!(
        CHECK,
        positions.len() == batch.len(),
        "{} positions for {} records",
        positions.len(),
        batch.len()
    );
    let mut next: HashMap<u32, u64> = HashMap::new();
    for (r, pos) in batch.iter().zip(&positions) {
        let want = log.partition_for(&r.key);
        ensure!(
            CHECK,
            pos.partition == want,
            "{:?} went to partition {}, not {want}",
            r.value,
            pos.partition
        );
        if let Some(expected) = next.get(&pos.partition) {
            ensure!(
                CHECK,
                pos.offset == *expected,
                "partition {}: offset {} after {}",
                pos.partition,
                pos.offset,
                expected - 1
            );
        }
        next.insert(pos.partition, pos.offset + 1);
    }
    ensure!(
        CHECK,
        next.len() == 4,
        "the batch reached {} partitions, expected 4",
        next.len()
    );
    for (&p, &end) in &next {
        let high = log.watermarks(p).await.ctx(CHECK, "watermarks")?.high;
        ensure!(
            CHECK,
            high == end,
            "partition {p}: high watermark {high} after the batch, expected {end}"
        );
    }
    let mut consumer = log
        .consumer(consumer_opts(None, StartFrom::Earliest))
        .await
        .ctx(CHECK, "consumer")?;
    let records = read_n(CHECK, &mut *consumer, batch.len()).await?;
    let stored: HashMap<(u32, u64), &Bytes> = records
        .iter()
        .map(|r| ((r.partition, r.offset), &r.value))
        .collect();
    for (r, pos) in batch.iter().zip(&positions) {
        ensure!(
            CHECK,
            stored.get(&(pos.partition, pos.offset)) == Some(&&r.value),
            "{pos:?} does not hold {:?}",
            r.value
        );
    }
    Ok(())
}

/// Concurrent appenders never share an offset nor leave a gap.
pub async fn concurrent_appends_get_distinct_offsets(factory: &dyn LogFactory) -> CheckResult {
    const CHECK: &str = "concurrent_appends_get_distinct_offsets";
    const TASKS: usize = 8;
    const PER_TASK: usize = 25;
    let log = factory.create(2).await.ctx(CHECK, "create")?;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let log = Arc::clone(&log);
        tasks.spawn(async move {
            let mut positions = Vec::with_capacity(PER_TASK);
            for i in 0..PER_TASK {
                positions.push(
                    log.append(record(format!("k{}", (t + i) % 5), format!("{t}/{i}")))
                        .await?,
                );
            }
            Ok::<_, LogError>(positions)
        });
    }
    let mut by_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        let positions = joined.map_err(|e| ConformanceError::Failed {
            check: CHECK,
            message: format!("task: {e}"),
        })?;
        for pos in positions.ctx(CHECK, "append")? {
            by_partition
                .entry(pos.partition)
                .or_default()
                .push(pos.offset);
        }
    }
    for (p, mut offsets) in by_partition {
        offsets.sort_unstable();
        let n = offsets.len() as u64;
        ensure!(
            CHECK,
            offsets.iter().copied().eq(0..n),
            "partition {p}: offsets are not exactly 0..{n}: {offsets:?}"
        );
    }
    Ok(())
}

/// A consumer from `Earliest` reads every record exactly once, in order
/// per partition, and then nothing more.
pub async fn earliest_reads_everything_once_in_order(factory: &dyn LogFactory) -> CheckResult {
    const CHECK: &str = "earliest_reads_everything_once_in_order";
    let log = factory.create(4).await.ctx(CHECK, "create")?;
    let batch: Vec<Record> = (0..100)
        .map(|i| record(format!("k{}", i % 13), format!("r{i}")))
        .collect();
    let positions = log
        .append_batch(batch.clone())
        .await
        .ctx(CHECK, "append_batch")?;
    let mut consumer = log
        .consumer(consumer_opts(None, StartFrom::Earliest))
        .await
        .ctx(CHECK, "consumer")?;
    let records = read_n(CHECK, &mut *consumer, batch.len()).await?;
    check_order(CHECK, &records)?;
    let mut seen = HashSet::new();
    for r in &records {
        ensure!(
            CHECK,
            seen.insert((r.partition, r.offset)),
            "partition {} offset {} read twice",
            r.partition,
            r.offset
        );
    }
    ensure!(
        CHECK,
        records.len() == batch.len(),
        "read {} records, appended {}",
        records.len(),
        batch.len()
    );
    for (r, pos) in batch.iter().zip(&positions) {
        let got = records
            .iter()
            .find(|x| x.partition == pos.partition && x.offset == pos.offset);
        ensure!(
            CHECK,
            got.is_some_and(|x| x.value == r.value && x.key == r.key),
            "{pos:?} missing or different"
        );
    }
    expect_quiet(CHECK, &mut *consumer).await
}

/// A consumer from `Latest` (without commits) skips records appended before
/// it opened and reads those appended after.
pub async fn latest_skips_existing_records(factory: &dyn LogFactory) -> CheckResult {
    const CHECK: &str = "latest_skips_existing_records";
    let log = factory.create(2).await.ctx(CHECK, "create")?;
    let old: Vec<Record> = (0..10).map(|i| record(format!("k{i}"), "old")).collect();
    log.append_batch(old).await.ctx(CHECK, "append_batch")?;
    let mut consumer = log
        .consumer(consumer_opts(None, StartFrom::Latest))
        .await
        .ctx(CHECK, "consumer")?;
    // A Kafka consumer resolves "latest" on its first poll.
    expect_quiet(CHECK, &mut *consumer).await?;
    let new: Vec<Record> = (0..6).map(|i| record(format!("k{i}"), "new")).collect();
    log.append_batch(new).await.ctx(CHECK, "append_batch")?;
    let records = read_n(CHECK, &mut *consumer, 6).await?;
    ensure!(
        CHECK,
        records.iter().all(|r| r.value == "new"),
        "read records appended before the consumer opened: {:?}",
        records
            .iter()
            .map(|r| (r.partition, r.offset, r.value.clone()))
            .collect::<Vec<_>>()
    );
    expect_quiet(CHECK, &mut *consumer).await
}

/// A new consumer of a group resumes after the offsets the group committed;
/// partitions the group never committed start from `Earliest`; another group
/// is unaffected.
pub async fn group_resumes_after_commit(factory: &dyn LogFactory) -> CheckResult {
    const CHECK: &str = "group_resumes_after_commit";
    let log = factory.create(2).await.ctx(CHECK, "create")?;
    let keys = keys_covering(&*log, 2);
    ensure!(CHECK, keys.len() == 2, "no keys found for both partitions");
    let (p0, p1) = (log.partition_for(&keys[0]), log.partition_for(&keys[1]));
    let batch: Vec<Record> = (0..20)
        .map(|i| record(keys[i % 2].clone(), format!("g{i}")))
        .collect();
    log.append_batch(batch).await.ctx(CHECK, "append_batch")?;
    let group = unique_group(CHECK);
    ensure!(
        CHECK,
        log.committed(&group, p0)
            .await
            .ctx(CHECK, "committed")?
            .is_none(),
        "a new group has a committed offset"
    );

    let mut first = log
        .consumer(consumer_opts(Some(group.clone()), StartFrom::Earliest))
        .await
        .ctx(CHECK, "consumer")?;
    let read = read_n(CHECK, &mut *first, 20).await?;
    // Commit partition p0 up to (excluding) offset 4; leave p1 uncommitted.
    first.commit(&[(p0, 4)]).await.ctx(CHECK, "commit")?;
    ensure!(
        CHECK,
        read.len() == 20,
        "first consumer read {} of 20",
        read.len()
    );
    let committed = log.committed(&group, p0).await.ctx(CHECK, "committed")?;
    ensure!(
        CHECK,
        committed == Some(4),
        "committed({p0}) is {committed:?} after committing 4"
    );
    ensure!(
        CHECK,
        log.committed(&group, p1)
            .await
            .ctx(CHECK, "committed")?
            .is_none(),
        "partition {p1} has a committed offset without a commit"
    );
    drop(first);

    let mut second = log
        .consumer(consumer_opts(Some(group.clone()), StartFrom::Earliest))
        .await
        .ctx(CHECK, "consumer")?;
    let resumed = read_n(CHECK, &mut *second, 16).await?;
    let mut got: Vec<(u32, u64)> = resumed.iter().map(|r| (r.partition, r.offset)).collect();
    got.sort_unstable();
    let mut want: Vec<(u32, u64)> = (4..10)
        .map(|o| (p0, o))
        .chain((0..10).map(|o| (p1, o)))
        .collect();
    want.sort_unstable();
    ensure!(
        CHECK,
        got == want,
        "the group resumed with {got:?}, expected {want:?}"
    );
    expect_quiet(CHECK, &mut *second).await?;

    let other = unique_group(CHECK);
    let mut third = log
        .consumer(consumer_opts(Some(other), StartFrom::Earliest))
        .await
        .ctx(CHECK, "consumer")?;
    let all = read_n(CHECK, &mut *third, 20).await?;
    ensure!(
        CHECK,
        all.len() == 20,
        "another group read {} records, expected all 20",
        all.len()
    );
    Ok(())
}

/// A consumer without a group cannot commit.
pub async fn ephemeral_consumer_cannot_commit(factory: &dyn LogFactory) -> CheckResult {
    const CHECK: &str = "ephemeral_consumer_cannot_commit";
    let log = factory.create(1).await.ctx(CHECK, "create")?;
    log.append(record("k", "v")).await.ctx(CHECK, "append")?;
    let mut consumer = log
        .consumer(consumer_opts(None, StartFrom::Earliest))
        .await
        .ctx(CHECK, "consumer")?;
    read_n(CHECK, &mut *consumer, 1).await?;
    let result = consumer.commit(&[(0, 1)]).await;
    ensure!(
        CHECK,
        matches!(result, Err(LogError::NoGroup)),
        "commit without a group returned {result:?}"
    );
    Ok(())
}

/// Headers (in order, duplicates and empty values included), keys and
/// timestamps come back exactly as appended.
pub async fn headers_and_timestamps_round_trip(factory: &dyn LogFactory) -> CheckResult {
    const CHECK: &str = "headers_and_timestamps_round_trip";
    let log = factory.create(1).await.ctx(CHECK, "create")?;
    let records = vec![
        Record {
            key: Bytes::from_static(b"dev-1"),
            value: Bytes::from_static(b"{\"t\":1}"),
            headers: vec![
                (
                    "content-type".into(),
                    Bytes::from_static(b"application/json"),
                ),
                ("trace".into(), Bytes::from_static(&[0, 1, 2, 255])),
                ("trace".into(), Bytes::from_static(b"second")),
                ("empty".into(), Bytes::new()),
            ],
            timestamp_ms: 1_700_000_000_123,
        },
        Record {
            key: Bytes::from_static(b"dev-1"),
            value: Bytes::from_static(b"x"),
            headers: vec![],
            timestamp_ms: 1,
        },
    ];
    log.append_batch(records.clone())
        .await
        .ctx(CHECK, "append_batch")?;
    let mut consumer = log
        .consumer(consumer_opts(None, StartFrom::Earliest))
        .await
        .ctx(CHECK, "consumer")?;
    let read = read_n(CHECK, &mut *consumer, 2).await?;
    for (want, got) in records.iter().zip(&read) {
        ensure!(
            CHECK,
            got.key == want.key,
            "key {:?}, appended {:?}",
            got.key,
            want.key
        );
        ensure!(
            CHECK,
            got.headers == want.headers,
            "headers {:?}, appended {:?}",
            got.headers,
            want.headers
        );
        ensure!(
            CHECK,
            got.timestamp_ms == want.timestamp_ms,
            "timestamp {}, appended {}",
            got.timestamp_ms,
            want.timestamp_ms
        );
    }
    Ok(())
}

/// Empty keys and values, and a value of 512 KiB, round-trip.
pub async fn empty_and_large_values_round_trip(factory: &dyn LogFactory) -> CheckResult {
    const CHECK: &str = "empty_and_large_values_round_trip";
    let log = factory.create(1).await.ctx(CHECK, "create")?;
    let large: Bytes = (0..512 * 1024u32)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let records = vec![
        record(Bytes::new(), Bytes::new()),
        record("k", large.clone()),
        record("k", Bytes::new()),
    ];
    log.append_batch(records.clone())
        .await
        .ctx(CHECK, "append_batch")?;
    let mut consumer = log
        .consumer(consumer_opts(None, StartFrom::Earliest))
        .await
        .ctx(CHECK, "consumer")?;
    let read = read_n(CHECK, &mut *consumer, 3).await?;
    ensure!(
        CHECK,
        read.len() == 3,
        "read {} records, appended 3",
        read.len()
    );
    ensure!(
        CHECK,
        read[0].key.is_empty() && read[0].value.is_empty(),
        "empty record came back non-empty"
    );
    ensure!(
        CHECK,
        read[1].value == large,
        "the 512 KiB value came back as {} different bytes",
        read[1].value.len()
    );
    ensure!(
        CHECK,
        read[2].value.is_empty(),
        "empty value came back with {} bytes",
        read[2].value.len()
    );
    Ok(())
}

/// `poll` never returns more than `max_records`, and successive polls
/// continue where the last one stopped.
pub async fn poll_respects_max_records(factory: &dyn LogFactory) -> CheckResult {
    const CHECK: &str = "poll_respects_max_records";
    let log = factory.create(1).await.ctx(CHECK, "create")?;
    let batch: Vec<Record> = (0..10).map(|i| record("k", format!("{i}"))).collect();
    log.append_batch(batch).await.ctx(CHECK, "append_batch")?;
    let mut consumer = log
        .consumer(consumer_opts(None, StartFrom::Earliest))
        .await
        .ctx(CHECK, "consumer")?;
    let deadline = Instant::now() + DEADLINE;
    let mut offsets = Vec::new();
    while offsets.len() < 10 && Instant::now() < deadline {
        let got = consumer.poll(3, DEADLINE).await.ctx(CHECK, "poll")?;
        ensure!(
            CHECK,
            got.len() <= 3,
            "poll(3) returned {} records",
            got.len()
        );
        offsets.extend(got.iter().map(|r| r.offset));
    }
    ensure!(
        CHECK,
        offsets == (0..10).collect::<Vec<u64>>(),
        "read offsets {offsets:?}, expected 0..10"
    );
    Ok(())
}

/// `poll` on an idle log returns an empty batch, without error, once its
/// timeout expires.
pub async fn poll_times_out_empty(factory: &dyn LogFactory) -> CheckResult {
    const CHECK: &str = "poll_times_out_empty";
    let log = factory.create(2).await.ctx(CHECK, "create")?;
    let mut consumer = log
        .consumer(consumer_opts(None, StartFrom::Earliest))
        .await
        .ctx(CHECK, "consumer")?;
    let timeout = Duration::from_millis(200);
    let start = Instant::now();
    let got = consumer.poll(10, timeout).await.ctx(CHECK, "poll")?;
    let elapsed = start.elapsed();
    ensure!(
        CHECK,
        got.is_empty(),
        "poll on an empty log returned {} records",
        got.len()
    );
    ensure!(
        CHECK,
        elapsed < timeout + Duration::from_secs(5),
        "poll({timeout:?}) took {elapsed:?}"
    );
    Ok(())
}

/// A `poll` waiting with a long timeout returns promptly when a record is
/// appended.
pub async fn poll_wakes_up_on_append(factory: &dyn LogFactory) -> CheckResult {
    const CHECK: &str = "poll_wakes_up_on_append";
    const LONG: Duration = Duration::from_secs(10);
    let log = factory.create(2).await.ctx(CHECK, "create")?;
    let mut consumer = log
        .consumer(consumer_opts(None, StartFrom::Earliest))
        .await
        .ctx(CHECK, "consumer")?;
    // Let a broker-backed consumer finish joining before timing it.
    expect_quiet(CHECK, &mut *consumer).await?;
    let start = Instant::now();
    let appender = async {
        tokio::task::yield_now().await;
        log.append(record("k", "wake")).await
    };
    let (polled, appended) = tokio::join!(consumer.poll(10, LONG), appender);
    let elapsed = start.elapsed();
    appended.ctx(CHECK, "append")?;
    let polled = polled.ctx(CHECK, "poll")?;
    ensure!(
        CHECK,
        polled.len() == 1 && polled[0].value == "wake",
        "poll returned {polled:?}"
    );
    ensure!(
        CHECK,
        elapsed < LONG / 2,
        "poll returned after {elapsed:?}, not promptly after the append"
    );
    Ok(())
}

/// Watermarks of a new topic are 0/0, the high watermark advances with each
/// append, `low <= high` always holds, and unknown partitions are rejected.
pub async fn watermarks_track_appends(factory: &dyn LogFactory) -> CheckResult {
    const CHECK: &str = "watermarks_track_appends";
    let log = factory.create(3).await.ctx(CHECK, "create")?;
    for p in 0..3 {
        let w = log.watermarks(p).await.ctx(CHECK, "watermarks")?;
        ensure!(
            CHECK,
            w.low == 0 && w.high == 0,
            "partition {p} of a new topic has watermarks {w:?}"
        );
    }
    let keys = keys_covering(&*log, 3);
    for (n, key) in keys.iter().enumerate() {
        let p = log.partition_for(key);
        for _ in 0..=n {
            log.append(record(key.clone(), "w"))
                .await
                .ctx(CHECK, "append")?;
        }
        let w = log.watermarks(p).await.ctx(CHECK, "watermarks")?;
        ensure!(
            CHECK,
            w.high == n as u64 + 1 && w.low <= w.high,
            "partition {p}: {w:?} after {} appends",
            n + 1
        );
    }
    let result = log.watermarks(3).await;
    ensure!(
        CHECK,
        matches!(result, Err(LogError::NoSuchPartition(3))),
        "watermarks(3) of 3 partitions: {result:?}"
    );
    Ok(())
}
