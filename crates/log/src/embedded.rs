//! [`EmbeddedLog`]: a durable, single-process log with the semantics of one
//! Kafka topic, for Tributary's standalone mode.
//!
//! Layout of a topic directory:
//!
//! ```text
//! <dir>/LOCK                  advisory lock: one open instance per directory
//! <dir>/meta.json             format version, topic name, partition count
//! <dir>/offsets.json          committed offsets per consumer group
//! <dir>/partition-<p>/<base offset, 20 digits>.log   segment files
//! ```
//!
//! * **Appends** go to one writer thread per partition through a bounded
//!   queue; a full queue answers [`LogError::Backpressure`] at once. Each
//!   writer round takes every waiting request, writes them, calls
//!   `fdatasync` once and then acknowledges them all (group commit).
//! * **Readers** see only fsynced records. They wait on a watch channel that
//!   writers bump after each commit, and read segment files with positional
//!   reads on the blocking thread pool.
//! * **Recovery** scans the active (last) segment of each partition on open
//!   and truncates a torn or corrupt tail; sealed segments were fsynced
//!   before the next one was created and are checked as they are read.
//! * **Truncation** deletes sealed segments whose records every known
//!   consumer group has committed past.
//!
//! The on-disk format is described in `docs/log.md`. A record is
//! acknowledged only after `fdatasync` of its segment, and creating or
//! deleting a file is followed by an fsync of its directory.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use crate::{Consumer, ConsumerOptions, Log, LogError, Position, Record, StartFrom, Watermarks};

mod consumer;
mod format;
mod offsets;
mod partition;
mod segment;

pub use consumer::EmbeddedConsumer;
use offsets::OffsetStore;
use partition::{AppendRequest, Partition, Writer};

const META_FILE: &str = "meta.json";
const META_TMP: &str = "meta.json.tmp";
const LOCK_FILE: &str = "LOCK";
const FORMAT_VERSION: u32 = 1;
/// Most partitions a topic may have.
pub const MAX_PARTITIONS: u32 = 1024;
/// Smallest accepted segment size.
pub const MIN_SEGMENT_BYTES: u64 = 1024;
/// Largest accepted record (encoded size): 1 GiB.
pub const MAX_RECORD_BYTES: usize = format::MAX_FRAME;
/// Longest accepted queue of pending appends per partition.
pub const MAX_PENDING_APPENDS: usize = 1 << 16;

/// Configuration of an [`EmbeddedLog`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedLogConfig {
    /// Topic name: 1 to 249 characters from `[A-Za-z0-9._-]`, as in Kafka.
    /// Checked against the directory's topic on reopen.
    pub topic: String,
    /// Number of partitions, 1 to [`MAX_PARTITIONS`]. Fixed when the topic
    /// is created; reopening with another count fails.
    pub partitions: u32,
    /// A segment file is sealed and a new one started once the next record
    /// would take it past this size (a single larger record gets a segment
    /// of its own). At least [`MIN_SEGMENT_BYTES`].
    pub segment_bytes: u64,
    /// Largest record, as encoded (key, value, headers and 36 bytes of
    /// framing), up to [`MAX_RECORD_BYTES`]. Larger appends fail with
    /// [`LogError::RecordTooLarge`].
    pub max_record_bytes: usize,
    /// Append requests (one per partition per `append_batch` call) that may
    /// wait for one writer thread; beyond that, appends fail with
    /// [`LogError::Backpressure`]. 1 to [`MAX_PENDING_APPENDS`].
    pub max_pending_appends: usize,
    /// Writer threads; partition `p` is written by thread `p % writer_threads`.
    /// Each thread's round writes the requests waiting for each of its
    /// partitions and fsyncs each of those once. 0 (the default) picks half
    /// the CPUs, at least 1 and at most `partitions`: on a small machine one
    /// thread committing every partition's group beats one thread per
    /// partition competing for the cores. Not part of the stored layout, so
    /// it may change between runs.
    pub writer_threads: u32,
    /// Bytes one `poll` returns at most (at least one record is always
    /// returned, whatever its size).
    pub max_poll_bytes: usize,
}

impl Default for EmbeddedLogConfig {
    fn default() -> Self {
        Self {
            topic: "telemetry".to_owned(),
            partitions: 4,
            segment_bytes: 64 * 1024 * 1024,
            max_record_bytes: 32 * 1024 * 1024,
            max_pending_appends: 1024,
            max_poll_bytes: 16 * 1024 * 1024,
            writer_threads: 0,
        }
    }
}

impl EmbeddedLogConfig {
    /// The default configuration for `topic` with `partitions` partitions.
    pub fn new(topic: impl Into<String>, partitions: u32) -> Self {
        Self {
            topic: topic.into(),
            partitions,
            ..Self::default()
        }
    }

    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), LogError> {
        let invalid = |msg: String| Err(LogError::Invalid(msg));
        let topic_ok = (1..=249).contains(&self.topic.len())
            && self
                .topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && self.topic != "."
            && self.topic != "..";
        if !topic_ok {
            return invalid(format!(
                "topic {:?}: use 1 to 249 characters from [A-Za-z0-9._-]",
                self.topic
            ));
        }
        if !(1..=MAX_PARTITIONS).contains(&self.partitions) {
            return invalid(format!(
                "partitions {}: must be 1 to {MAX_PARTITIONS}",
                self.partitions
            ));
        }
        if self.segment_bytes < MIN_SEGMENT_BYTES {
            return invalid(format!(
                "segment_bytes {}: must be at least {MIN_SEGMENT_BYTES}",
                self.segment_bytes
            ));
        }
        if !(format::MIN_FRAME..=MAX_RECORD_BYTES).contains(&self.max_record_bytes) {
            return invalid(format!(
                "max_record_bytes {}: must be {} to {MAX_RECORD_BYTES}",
                self.max_record_bytes,
                format::MIN_FRAME
            ));
        }
        if !(1..=MAX_PENDING_APPENDS).contains(&self.max_pending_appends) {
            return invalid(format!(
                "max_pending_appends {}: must be 1 to {MAX_PENDING_APPENDS}",
                self.max_pending_appends
            ));
        }
        if self.max_poll_bytes == 0 {
            return invalid("max_poll_bytes must be at least 1".to_owned());
        }
        if self.writer_threads > MAX_PARTITIONS {
            return invalid(format!(
                "writer_threads {}: must be 0 (automatic) to {MAX_PARTITIONS}",
                self.writer_threads
            ));
        }
        Ok(())
    }

    /// The writer threads the log runs: [`EmbeddedLogConfig::writer_threads`],
    /// or when 0 half the CPUs; always 1 to `partitions`.
    pub fn effective_writer_threads(&self) -> u32 {
        let wanted = if self.writer_threads == 0 {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            u32::try_from(cpus / 2).unwrap_or(u32::MAX)
        } else {
            self.writer_threads
        };
        wanted.clamp(1, self.partitions.max(1))
    }
}

/// What `meta.json` holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    format_version: u32,
    topic: String,
    partitions: u32,
}

/// State shared by the log and its consumers.
#[derive(Debug)]
pub(crate) struct Shared {
    dir: PathBuf,
    config: EmbeddedLogConfig,
    partitions: Vec<Arc<Partition>>,
    offsets: OffsetStore,
    /// Bumped by writers after each group commit; consumers wait on it.
    appended: Arc<watch::Sender<u64>>,
    /// Holds the directory's advisory lock (writer threads hold it too).
    _lock: Arc<File>,
}

impl Shared {
    fn partition(&self, p: u32) -> Result<&Arc<Partition>, LogError> {
        self.partitions
            .get(p as usize)
            .ok_or(LogError::NoSuchPartition(p))
    }

    /// Durably commits `offsets` for `group`, then deletes the segments no
    /// group needs any more. Blocking.
    fn commit(&self, group: &str, offsets: &[(u32, u64)]) -> Result<(), LogError> {
        self.offsets.commit(group, offsets)?;
        let mut seen = Vec::with_capacity(offsets.len());
        for &(p, _) in offsets {
            if !seen.contains(&p) {
                seen.push(p);
                self.truncate(p);
            }
        }
        Ok(())
    }

    /// Deletes partition `p`'s sealed segments below every group's committed
    /// offset. Failures are logged, not returned: the commit that triggered
    /// it is already durable, and the next commit retries.
    fn truncate(&self, p: u32) {
        let (Ok(partition), Some(min)) = (self.partition(p), self.offsets.min_committed(p)) else {
            return;
        };
        // Never past the high watermark, even if a group committed beyond it.
        if let Err(e) = partition.truncate_below(min.min(partition.high())) {
            warn!(partition = p, error = %e, "deleting consumed segments failed; will retry after the next commit");
        }
    }
}

/// The queue and thread of one writer, which serves the partitions `p`
/// with `p % writer threads == its index`.
#[derive(Debug)]
struct WriterSlot {
    tx: RwLock<Option<mpsc::Sender<AppendRequest>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// A durable embedded log: one Kafka-like topic in a local directory.
///
/// Open it with [`EmbeddedLog::open`], use it through the [`Log`] trait, and
/// call [`EmbeddedLog::close`] on shutdown so queued appends finish and the
/// directory lock is released deterministically. Dropping it without
/// `close` also lets the writers finish their queues, in the background.
pub struct EmbeddedLog {
    shared: Arc<Shared>,
    writers: Vec<WriterSlot>,
    closed: AtomicBool,
}

impl fmt::Debug for EmbeddedLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedLog")
            .field("dir", &self.shared.dir)
            .field("topic", &self.shared.config.topic)
            .field("partitions", &self.shared.config.partitions)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl EmbeddedLog {
    /// Opens the topic in `dir`, creating it if the directory holds none.
    /// Runs recovery on the blocking thread pool.
    pub async fn open(
        dir: impl Into<PathBuf>,
        config: EmbeddedLogConfig,
    ) -> Result<Arc<Self>, LogError> {
        let dir = dir.into();
        tokio::task::spawn_blocking(move || Self::open_blocking(&dir, config))
            .await
            .map_err(|e| LogError::Backend(format!("open task failed: {e}")))?
    }

    /// Like [`EmbeddedLog::open`], blocking the calling thread (recovery
    /// reads each partition's active segment).
    ///
    /// Fails with [`LogError::Invalid`] if the configuration is out of range,
    /// if the directory holds a topic with another name or partition count,
    /// or if another instance has the directory open.
    pub fn open_blocking(dir: &Path, config: EmbeddedLogConfig) -> Result<Arc<Self>, LogError> {
        config.validate()?;
        if !dir.exists() {
            fs::create_dir_all(dir)?;
            // The topic directory's own entry must be durable too.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                segment::sync_dir(parent)?;
            }
        }
        let lock = Arc::new(lock_dir(dir)?);
        let exists = check_meta(dir, &config)?;

        let (appended, _) = watch::channel(0u64);
        let appended = Arc::new(appended);
        let threads = config.effective_writer_threads();
        let mut partitions = Vec::with_capacity(config.partitions as usize);
        let mut owned: Vec<Vec<Writer>> = (0..threads).map(|_| Vec::new()).collect();
        for p in 0..config.partitions {
            let (partition, writer) =
                Partition::open(dir, p, config.segment_bytes, Arc::clone(&appended))?;
            partitions.push(partition);
            owned[(p % threads) as usize].push(writer);
        }
        let mut writers = Vec::with_capacity(threads as usize);
        for (t, group) in owned.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel(config.max_pending_appends);
            let max_batch = config.max_pending_appends;
            let thread_lock = Arc::clone(&lock);
            let thread = std::thread::Builder::new()
                .name(format!("log-writer-{t}"))
                .spawn(move || {
                    let _lock = thread_lock;
                    partition::run_writers(group, threads, rx, max_batch);
                })?;
            writers.push(WriterSlot {
                tx: RwLock::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
            });
        }
        if !exists {
            write_meta(dir, &config)?;
        }
        let offsets = OffsetStore::load(dir)?;
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            config,
            partitions,
            offsets,
            appended,
            _lock: lock,
        });
        for p in 0..shared.config.partitions {
            shared.truncate(p);
        }
        info!(
            dir = %dir.display(),
            topic = %shared.config.topic,
            partitions = shared.config.partitions,
            writer_threads = threads,
            created = !exists,
            "embedded log opened"
        );
        Ok(Arc::new(Self {
            shared,
            writers,
            closed: AtomicBool::new(false),
        }))
    }

    /// Stops accepting appends, waits until the writers have finished every
    /// queued append, and stops them. Consumers keep reading what is stored.
    /// The directory lock is released once the log and its consumers are
    /// dropped.
    pub async fn close(&self) -> Result<(), LogError> {
        self.stop_accepting();
        let threads: Vec<JoinHandle<()>> = self
            .writers
            .iter()
            .filter_map(|w| lock(&w.thread).take())
            .collect();
        if threads.is_empty() {
            return Ok(());
        }
        let panicked = tokio::task::spawn_blocking(move || {
            threads.into_iter().filter_map(|t| t.join().err()).count()
        })
        .await
        .map_err(|e| LogError::Backend(format!("close task failed: {e}")))?;
        if panicked > 0 {
            return Err(LogError::Backend(format!(
                "{panicked} writer thread(s) panicked"
            )));
        }
        info!(dir = %self.shared.dir.display(), "embedded log closed");
        Ok(())
    }

    fn stop_accepting(&self) {
        self.closed.store(true, Ordering::Release);
        for w in &self.writers {
            // Dropping the sender ends the writer once its queue is empty.
            write_lock(&w.tx).take();
        }
    }

    /// The topic directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &EmbeddedLogConfig {
        &self.shared.config
    }

    /// Forgets a consumer group, so it no longer holds back truncation.
    /// Returns whether the group existed.
    pub async fn delete_group(&self, group: &str) -> Result<bool, LogError> {
        let shared = Arc::clone(&self.shared);
        let group = group.to_owned();
        tokio::task::spawn_blocking(move || {
            let existed = shared.offsets.delete(&group)?;
            for p in 0..shared.config.partitions {
                shared.truncate(p);
            }
            Ok(existed)
        })
        .await
        .map_err(|e| LogError::Backend(format!("delete task failed: {e}")))?
    }

    /// Counters and gauges per partition, for metrics.
    pub fn stats(&self) -> LogStats {
        let partitions = self
            .shared
            .partitions
            .iter()
            .map(|p| {
                let w = &self.writers[p.id as usize % self.writers.len()];
                let c = &p.counters;
                let (segments, bytes_on_disk) = p.disk_usage();
                let queued_appends = read_lock(&w.tx)
                    .as_ref()
                    .map_or(0, |tx| tx.max_capacity().saturating_sub(tx.capacity()));
                PartitionStats {
                    partition: p.id,
                    appended_records: c.records.load(Ordering::Relaxed),
                    appended_bytes: c.bytes.load(Ordering::Relaxed),
                    fsyncs: c.fsyncs.load(Ordering::Relaxed),
                    group_commits: c.group_commits.load(Ordering::Relaxed),
                    segments,
                    segments_deleted: c.segments_deleted.load(Ordering::Relaxed),
                    bytes_on_disk,
                    low: p.low(),
                    high: p.high(),
                    queued_appends,
                }
            })
            .collect();
        LogStats { partitions }
    }

    fn sender(&self, p: u32) -> Result<mpsc::Sender<AppendRequest>, LogError> {
        if p >= self.shared.config.partitions {
            return Err(LogError::NoSuchPartition(p));
        }
        let slot = &self.writers[p as usize % self.writers.len()];
        read_lock(&slot.tx).clone().ok_or(LogError::Closed)
    }
}

impl Drop for EmbeddedLog {
    fn drop(&mut self) {
        // Writers finish their queues and exit on their own.
        self.stop_accepting();
    }
}

#[async_trait]
impl Log for EmbeddedLog {
    fn topic(&self) -> &str {
        &self.shared.config.topic
    }

    fn partitions(&self) -> u32 {
        self.shared.config.partitions
    }

    async fn append_batch(&self, records: Vec<Record>) -> Result<Vec<Position>, LogError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        let limit = self.shared.config.max_record_bytes;
        if let Some(size) = records
            .iter()
            .map(format::frame_len)
            .find(|&size| size > limit)
        {
            return Err(LogError::RecordTooLarge { size, limit });
        }
        let count = records.len();
        // Per partition: the records in input order and their input indexes.
        let mut by_partition: BTreeMap<u32, (Vec<Record>, Vec<usize>)> = BTreeMap::new();
        for (i, record) in records.into_iter().enumerate() {
            let entry = by_partition
                .entry(self.partition_for(&record.key))
                .or_default();
            entry.0.push(record);
            entry.1.push(i);
        }
        // Reserve a queue slot on every partition first, so that a full
        // queue rejects the whole batch before any of it is enqueued.
        let mut permits = Vec::with_capacity(by_partition.len());
        for &p in by_partition.keys() {
            match self.sender(p)?.try_reserve_owned() {
                Ok(permit) => permits.push(permit),
                Err(TrySendError::Full(_)) => return Err(LogError::Backpressure),
                Err(TrySendError::Closed(_)) => return Err(LogError::Closed),
            }
        }
        let mut pending = Vec::with_capacity(by_partition.len());
        for ((p, (records, indexes)), permit) in by_partition.into_iter().zip(permits) {
            let (reply, rx) = oneshot::channel();
            permit.send(AppendRequest {
                partition: p,
                records,
                reply,
            });
            pending.push((p, indexes, rx));
        }
        let mut positions = vec![
            Position {
                partition: 0,
                offset: 0
            };
            count
        ];
        for (partition, indexes, rx) in pending {
            let first = rx.await.map_err(|_| {
                LogError::Backend(format!("writer of partition {partition} stopped"))
            })??;
            for (offset, i) in (first..).zip(indexes) {
                positions[i] = Position { partition, offset };
            }
        }
        Ok(positions)
    }

    async fn consumer(&self, opts: ConsumerOptions) -> Result<Box<dyn Consumer>, LogError> {
        if let Some(group) = &opts.group {
            offsets::validate_group(group)?;
        }
        let positions = self
            .shared
            .partitions
            .iter()
            .map(|p| {
                let committed = opts
                    .group
                    .as_deref()
                    .and_then(|g| self.shared.offsets.get(g, p.id));
                committed.unwrap_or(match opts.start {
                    StartFrom::Earliest => p.low(),
                    StartFrom::Latest => p.high(),
                })
            })
            .collect();
        Ok(Box::new(EmbeddedConsumer::new(
            Arc::clone(&self.shared),
            opts.group,
            positions,
        )))
    }

    async fn watermarks(&self, partition: u32) -> Result<Watermarks, LogError> {
        let p = self.shared.partition(partition)?;
        let high = p.high();
        Ok(Watermarks {
            low: p.low().min(high),
            high,
        })
    }

    async fn committed(&self, group: &str, partition: u32) -> Result<Option<u64>, LogError> {
        self.shared.partition(partition)?;
        Ok(self.shared.offsets.get(group, partition))
    }
}

/// Counters and gauges of an [`EmbeddedLog`], from [`EmbeddedLog::stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStats {
    /// One entry per partition, in partition order.
    pub partitions: Vec<PartitionStats>,
}

impl LogStats {
    /// Records appended since the log was opened, over all partitions.
    pub fn appended_records(&self) -> u64 {
        self.partitions.iter().map(|p| p.appended_records).sum()
    }

    /// Encoded bytes appended since the log was opened, over all partitions.
    pub fn appended_bytes(&self) -> u64 {
        self.partitions.iter().map(|p| p.appended_bytes).sum()
    }

    /// `fdatasync` calls since the log was opened, over all partitions.
    pub fn fsyncs(&self) -> u64 {
        self.partitions.iter().map(|p| p.fsyncs).sum()
    }

    /// Bytes of segment files, over all partitions.
    pub fn bytes_on_disk(&self) -> u64 {
        self.partitions.iter().map(|p| p.bytes_on_disk).sum()
    }
}

/// Counters (since open) and gauges of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionStats {
    /// The partition.
    pub partition: u32,
    /// Records appended (counter).
    pub appended_records: u64,
    /// Encoded bytes appended, framing included (counter).
    pub appended_bytes: u64,
    /// `fdatasync` calls: one per group commit plus one per sealed segment (counter).
    pub fsyncs: u64,
    /// Group commits: write rounds that acknowledged one or more appends (counter).
    pub group_commits: u64,
    /// Segment files now (gauge).
    pub segments: usize,
    /// Segment files deleted by truncation (counter).
    pub segments_deleted: u64,
    /// Durable bytes in segment files now (gauge).
    pub bytes_on_disk: u64,
    /// Low watermark (gauge).
    pub low: u64,
    /// High watermark (gauge).
    pub high: u64,
    /// Append requests waiting for the writer (gauge).
    pub queued_appends: usize,
}

/// Takes the directory's advisory lock, so two instances (in one process or
/// two) never write the same files.
fn lock_dir(dir: &Path) -> Result<File, LogError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(LogError::Invalid(format!(
            "{} is already open by another log instance",
            dir.display()
        ))),
        Err(TryLockError::Error(e)) => Err(e.into()),
    }
}

/// Checks `meta.json` against `config`. Returns whether the topic exists.
fn check_meta(dir: &Path, config: &EmbeddedLogConfig) -> Result<bool, LogError> {
    let path = dir.join(META_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // No topic yet, or creation was interrupted before meta.json was
            // written (it is written last). Refuse to adopt data without it.
            for entry in fs::read_dir(dir)? {
                let pdir = entry?.path();
                let is_partition = pdir
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("partition-"));
                if is_partition && pdir.is_dir() && has_data(&pdir)? {
                    return Err(LogError::Corrupt(format!(
                        "{} is missing but {} holds records",
                        path.display(),
                        pdir.display()
                    )));
                }
            }
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    };
    let meta: Meta = serde_json::from_slice(&bytes)
        .map_err(|e| LogError::Corrupt(format!("{}: {e}", path.display())))?;
    if meta.format_version != FORMAT_VERSION {
        return Err(LogError::Corrupt(format!(
            "{}: format version {} is not supported (expected {FORMAT_VERSION})",
            path.display(),
            meta.format_version
        )));
    }
    if meta.topic != config.topic || meta.partitions != config.partitions {
        return Err(LogError::Invalid(format!(
            "{} holds topic {:?} with {} partitions; configured: {:?} with {} (partitions are fixed at creation)",
            dir.display(),
            meta.topic,
            meta.partitions,
            config.topic,
            config.partitions
        )));
    }
    for p in 0..config.partitions {
        let pdir = dir.join(partition::dir_name(p));
        if !pdir.is_dir() {
            return Err(LogError::Corrupt(format!("{} is missing", pdir.display())));
        }
    }
    Ok(true)
}

fn has_data(partition_dir: &Path) -> Result<bool, LogError> {
    for entry in fs::read_dir(partition_dir)? {
        let entry = entry?;
        if entry.metadata()?.len() > 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

fn write_meta(dir: &Path, config: &EmbeddedLogConfig) -> Result<(), LogError> {
    let meta = Meta {
        format_version: FORMAT_VERSION,
        topic: config.topic.clone(),
        partitions: config.partitions,
    };
    let bytes = serde_json::to_vec_pretty(&meta).map_err(|e| LogError::Backend(e.to_string()))?;
    let tmp = dir.join(META_TMP);
    let mut file = File::create(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, dir.join(META_FILE))?;
    segment::sync_dir(dir)?;
    Ok(())
}

/// Locks a mutex, ignoring poisoning: every critical section here leaves the
/// data consistent at each step, so a panic elsewhere does not invalidate it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read_lock<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write_lock<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_are_valid_and_ranges_enforced() {
        EmbeddedLogConfig::default()
            .validate()
            .expect("defaults are valid");
        let bad = [
            EmbeddedLogConfig {
                topic: String::new(),
                ..Default::default()
            },
            EmbeddedLogConfig {
                topic: "a/b".into(),
                ..Default::default()
            },
            EmbeddedLogConfig {
                topic: "..".into(),
                ..Default::default()
            },
            EmbeddedLogConfig {
                partitions: 0,
                ..Default::default()
            },
            EmbeddedLogConfig {
                partitions: MAX_PARTITIONS + 1,
                ..Default::default()
            },
            EmbeddedLogConfig {
                segment_bytes: 10,
                ..Default::default()
            },
            EmbeddedLogConfig {
                max_record_bytes: 1,
                ..Default::default()
            },
            EmbeddedLogConfig {
                max_record_bytes: MAX_RECORD_BYTES + 1,
                ..Default::default()
            },
            EmbeddedLogConfig {
                max_pending_appends: 0,
                ..Default::default()
            },
            EmbeddedLogConfig {
                max_poll_bytes: 0,
                ..Default::default()
            },
        ];
        for config in bad {
            assert!(
                matches!(config.validate(), Err(LogError::Invalid(_))),
                "{config:?} accepted"
            );
        }
    }

    #[test]
    fn config_deserializes_with_defaults_and_rejects_unknown_fields() {
        let c: EmbeddedLogConfig = serde_json::from_str(r#"{"partitions": 8}"#).expect("valid");
        assert_eq!(
            c,
            EmbeddedLogConfig {
                partitions: 8,
                ..Default::default()
            }
        );
        assert!(serde_json::from_str::<EmbeddedLogConfig>(r#"{"partitons": 8}"#).is_err());
    }
}
