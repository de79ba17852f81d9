//! The embedded store: every series of a standalone node in one redb file.
//!
//! # Design (measured in `docs/store.md`)
//!
//! One redb row per value tops out near 0.35 M points/s on this hardware, so
//! points live in compressed per-series chunks instead, and the write path
//! never touches a B-tree:
//!
//! * **Head.** [`Store::write`] appends to an in-memory head per series (a
//!   vector of `(ts, value)` pairs, unboxed per type: 16 bytes a numeric
//!   point), sharded by device with one short `std::sync::Mutex` hold per
//!   device batch, and to a per-shard buffer of raw point records.
//! * **Flush.** [`Store::flush`] moves the raw records into one redb write
//!   transaction (a `wal` table row per shard) committed with
//!   [`Durability::Immediate`]. Its cost is one `fdatasync` plus a memcpy,
//!   however many series were written. Points stay in the head, where reads
//!   find them.
//! * **Compaction.** When the head holds half its bound, a background thread
//!   freezes it (writes continue into a fresh head), merges each frozen
//!   series into its chunks, and deletes the WAL rows the frozen head covers.
//!   It works in slices of non-durable transactions, so a concurrent flush
//!   waits for one slice at most, and seals the compaction with one durable
//!   transaction that also deletes the covered WAL rows.
//! * **Chunks.** Table `chunks`, keyed `(series id, first ts)`, holds up to
//!   `chunk_max_points` points (and `chunk_max_bytes`) in the format of
//!   `embedded/codec.rs` (delta-of-delta timestamps; doubles as scaled
//!   decimals or XOR; ints as zigzag deltas; bit-packed bools; strings
//!   with repeat marks). A chunk never crosses a UTC day, so the rows of one
//!   (series, day) are the key range `[(id, day), (id, day + 1d))`, the
//!   partition of the ScyllaDB model. New points merge into the chunks they
//!   overlap (late or replayed data; the newer value wins), and into the
//!   newest small chunks before them by a binary-counter rule (a chunk merges
//!   when it holds no more points than what is merged after it), so each
//!   point is rewritten about log2(chunk size / points per compaction) times
//!   and frequent compactions do not leave thousands of tiny chunks.
//! * **Latest.** Table `latest` keeps the newest point of each series as of
//!   the last compaction; the head answers for anything newer.
//! * **Catalog.** Table `series` maps `(tenant, device, metric)` to a `u64`
//!   series id; it is loaded into memory at open (ids, not names, go into
//!   chunks and WAL records).
//!
//! Reads merge the live head, the frozen head and the chunks, in that order
//! of precedence for equal timestamps.
//!
//! # Durability
//!
//! After `flush` returns, every write that returned before it is in a
//! committed WAL row or in committed chunks; reopening replays the WAL rows
//! into the head. Writes not yet flushed are lost by a crash or by dropping
//! the store; the processor replays them from the log.
//!
//! # Threads
//!
//! `write` and `list_metrics` only touch memory and run on the caller's task
//! (0.1 to 0.2 µs per point). `flush`, `scan`, `latest` and `apply_retention`
//! run their redb work under `tokio::task::spawn_blocking`; compaction runs
//! on the store's own thread. Dropping the last handle stops that thread
//! (waiting for at most one compaction slice) and closes the file.
//!
//! # Errors
//!
//! A batch with an empty or oversized name or string fails whole, before
//! anything is applied. A batch that reaches `max_series` fails at the
//! first point of a new series beyond it; the points before it are stored.
//!
//! # Memory
//!
//! The live head is bounded by `memtable_max_points` and
//! `memtable_max_bytes`; the frozen head by the same. A write that would
//! exceed the bound waits up to `max_write_wait` for compaction to make room,
//! then fails with [`StoreError::Backpressure`].

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tributary_core::series::{SeriesGate, SeriesRefused};

use async_trait::async_trait;
use redb::{
    Builder, Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table,
    TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use tributary_core::retention::{Keep, RetentionPolicy};
use tributary_core::rollup::{Rollup, RollupKey, Tiers};
use tributary_core::time::{NS_PER_DAY, now_ns};
use tributary_core::{Sample, SeriesKey, Value};

use crate::{DevicePoints, Latest, Order, Store, StoreError};

mod alerts;
mod blocks;
mod checkpoint;
mod codec;
mod head;
mod rollups;
mod wal;

use codec::{
    ChunkHeader, Corrupt, MAX_CHUNK_POINTS, decode_chunk, decode_chunk_into, decode_latest,
    encode_chunk, encode_latest, raw_size,
};
use head::{SeriesHead, point_bytes};
use wal::WalBuffer;

/// The file inside the store directory.
pub const FILE_NAME: &str = "store.redb";

/// Longest tenant, device or metric name the store accepts, in bytes.
/// Frontends enforce much tighter limits; this one only keeps keys sane.
pub const MAX_NAME_LEN: usize = 1024;
/// Longest string value the store accepts, in bytes.
pub const MAX_STRING_LEN: usize = 1 << 20;

const SERIES: TableDefinition<'static, (&str, &str, &str), u64> = TableDefinition::new("series");
const CHUNKS: TableDefinition<'static, (u64, i64), &[u8]> = TableDefinition::new("chunks");
const LATEST: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("latest");
const WAL: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("wal");
const META: TableDefinition<'static, &str, i64> = TableDefinition::new("meta");
/// Key in `META`: the highest cutoff `apply_retention` has applied.
const META_RETENTION_FLOOR: &str = "retention_floor";
/// Prefix of keys in `META`: per tenant, the highest raw cutoff
/// `apply_retention` has applied.
const META_TENANT_FLOOR: &str = "retention_floor/";

fn floor_key(tenant: &str) -> String {
    format!("{META_TENANT_FLOOR}{tenant}")
}

/// Number of head shards; a power of two.
const SHARDS: usize = 32;
/// Points per compaction transaction.
const SLICE_POINTS: usize = 256 * 1024;
/// Series per retention transaction.
const RETENTION_BATCH: usize = 4096;
/// Longest pause between retries of a failing compaction.
const MAX_COMPACTION_BACKOFF: Duration = Duration::from_secs(30);

/// Configuration of an [`EmbeddedStore`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedStoreConfig {
    /// How long points are kept, such as `"90d"`; `null` keeps them forever.
    /// Points older than this are dropped on write, hidden from reads, and
    /// deleted a whole UTC day at a time by `apply_retention`.
    #[serde(with = "opt_duration")]
    pub retention: Option<Duration>,
    /// Most points the live head holds. Compaction starts at half of it; a
    /// write that would exceed it waits for compaction. Memory use is about
    /// 16 bytes a numeric point, twice (live and frozen head).
    pub memtable_max_points: usize,
    /// Most bytes (estimated) the live head and its unflushed records hold.
    pub memtable_max_bytes: usize,
    /// Most points in one chunk (1..=65536).
    pub chunk_max_points: usize,
    /// Most uncompressed bytes (16 a numeric point) in one chunk; a single
    /// larger point gets a chunk of its own.
    pub chunk_max_bytes: usize,
    /// Most series the store creates; writes of new series beyond it fail.
    pub max_series: u64,
    /// redb page cache, in bytes.
    pub cache_bytes: usize,
    /// How long a write waits for memory before failing with `Backpressure`.
    #[serde(with = "duration")]
    pub max_write_wait: Duration,
}

impl Default for EmbeddedStoreConfig {
    fn default() -> Self {
        Self {
            retention: Some(Duration::from_secs(90 * 86_400)),
            memtable_max_points: 8_000_000,
            memtable_max_bytes: 256 * 1024 * 1024,
            chunk_max_points: 1024,
            chunk_max_bytes: 64 * 1024,
            max_series: 10_000_000,
            cache_bytes: 256 * 1024 * 1024,
            max_write_wait: Duration::from_secs(2),
        }
    }
}

impl EmbeddedStoreConfig {
    /// Checks the values, naming the first bad one.
    pub fn validate(&self) -> Result<(), StoreError> {
        let bad = |what: &str| {
            Err(StoreError::Invalid(format!(
                "embedded store config: {what}"
            )))
        };
        if let Some(r) = self.retention
            && (r.is_zero() || i64::try_from(r.as_nanos()).is_err())
        {
            return bad("retention must be positive and below 292 years");
        }
        if self.memtable_max_points < 2 {
            return bad("memtable_max_points must be at least 2");
        }
        if self.memtable_max_bytes < 4096 {
            return bad("memtable_max_bytes must be at least 4096");
        }
        if !(1..=MAX_CHUNK_POINTS).contains(&self.chunk_max_points) {
            return bad("chunk_max_points must be within 1..=65536");
        }
        if !(64..=16 * 1024 * 1024).contains(&self.chunk_max_bytes) {
            return bad("chunk_max_bytes must be within 64..=16777216");
        }
        if self.max_series == 0 {
            return bad("max_series must be positive");
        }
        Ok(())
    }
}

/// Counters of an [`EmbeddedStore`], for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EmbeddedStoreStats {
    /// Series in the catalog.
    pub series: u64,
    /// Points in the live head.
    pub head_points: u64,
    /// Estimated bytes of the live head and its unflushed records.
    pub head_bytes: u64,
    /// Points in the frozen head being compacted.
    pub frozen_points: u64,
    /// Compactions completed since open.
    pub compactions: u64,
    /// Chunks written since open.
    pub chunks_written: u64,
}

/// What the store's file holds; read on demand, for operators and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EmbeddedDiskStats {
    /// Chunks in the `chunks` table.
    pub chunks: u64,
    /// WAL rows not yet covered by a compaction.
    pub wal_rows: u64,
    /// Series in the catalog table.
    pub series: u64,
    /// Bytes of chunk keys and values (compressed points), without redb's
    /// page overhead and free space.
    pub chunk_bytes: u64,
    /// Size of the store file, in bytes. redb grows it in large steps and
    /// reuses free pages, so it is not proportional to the data.
    pub file_bytes: u64,
}

/// The durable embedded time-series store. See the [module docs](self).
#[derive(Debug)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
    compactor: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Inner {
    db: Database,
    /// The store file.
    path: PathBuf,
    config: EmbeddedStoreConfig,
    /// Every tenant's retention; the configured one until `set_retention`.
    policy: std::sync::RwLock<Arc<RetentionPolicy>>,
    /// The oldest point written whose rollups are not yet
    /// (`Store::rollups_pending_from`); `i64::MAX`: none.
    rollups_pending: std::sync::atomic::AtomicI64,
    /// Per tenant, the highest raw cutoff `apply_retention` has applied.
    floors: std::sync::RwLock<HashMap<String, i64>>,
    shards: Box<[Mutex<Shard>]>,
    /// Flush and freeze bookkeeping; taken before any shard lock.
    coord: Mutex<Coord>,
    /// Held by whoever runs a compaction.
    compaction: Mutex<()>,
    next_series_id: AtomicU64,
    series: AtomicU64,
    /// Series of each tenant (the `series` quota). Locked after a shard.
    tenant_series: Mutex<HashMap<String, u64>>,
    head_points: AtomicUsize,
    head_bytes: AtomicUsize,
    frozen_points: AtomicUsize,
    /// The cutoff applied to every tenant by `apply_retention` before
    /// retention was per tenant (read from older files, never raised).
    retention_floor: AtomicI64,
    compactions: AtomicU64,
    chunks_written: AtomicU64,
    /// Wakes the compactor; capacity 1, so wake-ups coalesce.
    wake: SyncSender<()>,
    shutdown: AtomicBool,
    /// Notified when compaction frees head memory.
    freed: tokio::sync::Notify,
    /// Rollup rows not yet in the `rollups` table (`embedded/rollups.rs`).
    rollup_head: Mutex<rollups::RollupHead>,
    /// The rollup WAL's writer; taken before `rollup_head`.
    rollup_wal: Mutex<rollups::RollupWal>,
    /// A rollup compaction is due.
    rollups_due: AtomicBool,
}

#[derive(Debug, Default)]
struct Shard {
    /// Metric names seen in this shard; devices key their series by index,
    /// so an append compares no heap string but the (hot) interned one.
    metric_ids: HashMap<String, u32>,
    metric_names: Vec<String>,
    tenants: HashMap<String, HashMap<String, DeviceSeries>>,
    wal: WalBuffer,
    new_series: Vec<NewSeries>,
    frozen: Option<Arc<Frozen>>,
    /// Points and estimated bytes of the live heads of this shard.
    points: usize,
    bytes: usize,
}

#[derive(Debug, Default)]
struct DeviceSeries {
    /// Series by interned metric id.
    metrics: IdMap<Slot>,
}

/// Hashes the store's own sequential ids (never client input) by one
/// multiplication: sequential ids spread perfectly over the low bits.
#[derive(Debug, Default, Clone, Copy)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

impl Shard {
    /// The id of a metric name, interning it when new.
    fn metric_id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.metric_ids.get(name) {
            return id;
        }
        // At most `max_series` names exist, far below u32::MAX.
        let id = u32::try_from(self.metric_names.len()).unwrap_or(u32::MAX);
        self.metric_names.push(name.to_owned());
        self.metric_ids.insert(name.to_owned(), id);
        id
    }

    /// The series of a metric of a device, if it exists.
    fn slot_mut(&mut self, tenant: &str, device: &str, metric: &str) -> Option<&mut Slot> {
        let id = *self.metric_ids.get(metric)?;
        self.tenants
            .get_mut(tenant)?
            .get_mut(device)?
            .metrics
            .get_mut(&id)
    }
}

#[derive(Debug)]
struct Slot {
    id: u64,
    head: SeriesHead,
}

/// A head being compacted: normalized, read-only.
#[derive(Debug, Default)]
struct Frozen {
    series: HashMap<u64, SeriesHead>,
}

/// A catalog row not yet committed.
#[derive(Debug, Clone)]
struct NewSeries {
    id: u64,
    tenant: String,
    device: String,
    metric: String,
}

#[derive(Debug, Default)]
struct Coord {
    /// Sequence number of the next WAL row.
    next_seq: u64,
    /// WAL rows taken from the shards and not yet committed.
    unsaved: Vec<(u64, Vec<u8>)>,
    /// Catalog rows taken from the shards and not yet committed.
    unsaved_series: Vec<NewSeries>,
    /// While a frozen head awaits compaction: rows with a smaller sequence
    /// number hold only points of the frozen head (or of older, compacted ones).
    freeze_seq: Option<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves plain data behind, never a broken
    // invariant that matters more than losing the store; keep serving.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Subtracts without wrapping below zero.
fn sub_saturating(counter: &AtomicUsize, n: usize) {
    // The closure never returns `None`, so this cannot fail.
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(n))
    });
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn corrupt(what: &'static str) -> impl Fn(Corrupt) -> StoreError {
    move |e| StoreError::Backend(format!("corrupt {what}: {e}"))
}

/// The first nanosecond of the UTC day holding `ts` (saturating at `i64::MIN`).
fn day_start(ts: i64) -> i64 {
    ts.div_euclid(NS_PER_DAY).saturating_mul(NS_PER_DAY)
}

fn check_name(what: &str, s: &str) -> Result<(), StoreError> {
    if s.is_empty() {
        return Err(StoreError::Invalid(format!("{what} must not be empty")));
    }
    if s.len() > MAX_NAME_LEN {
        return Err(StoreError::Invalid(format!(
            "{what} longer than {MAX_NAME_LEN} bytes"
        )));
    }
    Ok(())
}

/// Validates a batch before any of it is applied; returns its point count.
fn validate(batch: &[DevicePoints]) -> Result<usize, StoreError> {
    let mut n = 0usize;
    for dp in batch {
        check_name("tenant", &dp.tenant)?;
        check_name("device", &dp.device)?;
        for p in &dp.points {
            check_name("metric", &p.metric)?;
            if let Value::Str(s) = &p.value
                && s.len() > MAX_STRING_LEN
            {
                return Err(StoreError::Invalid(format!(
                    "{}: string value longer than {MAX_STRING_LEN} bytes",
                    p.metric
                )));
            }
        }
        n += dp.points.len();
    }
    Ok(n)
}

/// Merges two ascending, deduplicated runs; on equal timestamps `newer` wins.
fn merge_newer_wins(older: Vec<Sample>, newer: Vec<Sample>) -> Vec<Sample> {
    if older.is_empty() {
        return newer;
    }
    if newer.is_empty() {
        return older;
    }
    let mut out = Vec::with_capacity(older.len() + newer.len());
    let mut a = older.into_iter().peekable();
    let mut b = newer.into_iter().peekable();
    loop {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => {
                if x.ts_ns == y.ts_ns {
                    a.next();
                    continue;
                }
                x.ts_ns < y.ts_ns
            }
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_a { a.next() } else { b.next() };
        out.extend(next);
    }
    out
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `dir` and replays its WAL.
    pub fn open(dir: &Path, config: EmbeddedStoreConfig) -> Result<Arc<EmbeddedStore>, StoreError> {
        config.validate()?;
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE_NAME);
        let db = Builder::new()
            .set_cache_size(config.cache_bytes)
            .create(&path)
            .map_err(backend)?;
        {
            let txn = db.begin_write().map_err(backend)?;
            txn.open_table(SERIES).map_err(backend)?;
            txn.open_table(CHUNKS).map_err(backend)?;
            txn.open_table(LATEST).map_err(backend)?;
            txn.open_table(WAL).map_err(backend)?;
            txn.open_table(META).map_err(backend)?;
            txn.open_table(rollups::ROLLUPS).map_err(backend)?;
            txn.open_table(rollups::ROLLUP_WAL).map_err(backend)?;
            txn.open_table(blocks::BLOCKS).map_err(backend)?;
            txn.open_table(blocks::OPEN).map_err(backend)?;
            txn.commit().map_err(backend)?;
        }
        let (wake, wake_rx) = mpsc::sync_channel(1);
        let inner = Arc::new(Inner {
            db,
            path,
            policy: std::sync::RwLock::new(Arc::new(RetentionPolicy::new(
                Keep::from_duration(config.retention),
                Tiers::none(),
            ))),
            floors: std::sync::RwLock::new(HashMap::new()),
            rollups_pending: std::sync::atomic::AtomicI64::new(i64::MAX),
            config,
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            coord: Mutex::new(Coord::default()),
            compaction: Mutex::new(()),
            next_series_id: AtomicU64::new(0),
            series: AtomicU64::new(0),
            tenant_series: Mutex::new(HashMap::new()),
            head_points: AtomicUsize::new(0),
            head_bytes: AtomicUsize::new(0),
            frozen_points: AtomicUsize::new(0),
            retention_floor: AtomicI64::new(i64::MIN),
            compactions: AtomicU64::new(0),
            chunks_written: AtomicU64::new(0),
            wake,
            shutdown: AtomicBool::new(false),
            freed: tokio::sync::Notify::new(),
            rollup_head: Mutex::default(),
            rollup_wal: Mutex::default(),
            rollups_due: AtomicBool::new(false),
        });
        inner.recover()?;
        if inner.recover_rollups()? {
            // Blocks may have closed while the store was shut.
            inner.rollups_due.store(true, Ordering::Relaxed);
        }
        let thread_inner = Arc::clone(&inner);
        let compactor = std::thread::Builder::new()
            .name("store-compactor".into())
            .spawn(move || compactor_loop(&thread_inner, &wake_rx))?;
        if inner.over_soft_bound(0) || inner.rollups_due.load(Ordering::Relaxed) {
            inner.wake_compactor();
        }
        Ok(Arc::new(EmbeddedStore {
            inner,
            compactor: Some(compactor),
        }))
    }

    /// Series of `tenant` (the `series` quota counts them).
    pub fn tenant_series(&self, tenant: &str) -> u64 {
        self.inner.tenant_series(tenant)
    }

    /// Counters for metrics and tests.
    pub fn stats(&self) -> EmbeddedStoreStats {
        let i = &self.inner;
        EmbeddedStoreStats {
            series: i.series.load(Ordering::Relaxed),
            head_points: i.head_points.load(Ordering::Relaxed) as u64,
            head_bytes: i.head_bytes.load(Ordering::Relaxed) as u64,
            frozen_points: i.frozen_points.load(Ordering::Relaxed) as u64,
            compactions: i.compactions.load(Ordering::Relaxed),
            chunks_written: i.chunks_written.load(Ordering::Relaxed),
        }
    }

    /// Counts what the file holds. Walks the pages of the chunk table, so
    /// it takes a while on a large store.
    pub async fn disk_stats(&self) -> Result<EmbeddedDiskStats, StoreError> {
        self.blocking(|inner| {
            let txn = inner.db.begin_read().map_err(backend)?;
            let count = |len: Result<u64, redb::StorageError>| len.map_err(backend);
            let chunks = txn.open_table(CHUNKS).map_err(backend)?;
            Ok(EmbeddedDiskStats {
                chunks: count(chunks.len())?,
                chunk_bytes: chunks.stats().map_err(backend)?.stored_bytes(),
                wal_rows: count(txn.open_table(WAL).map_err(backend)?.len())?,
                series: count(txn.open_table(SERIES).map_err(backend)?.len())?,
                file_bytes: std::fs::metadata(&inner.path)?.len(),
            })
        })
        .await
    }

    /// Compacts the whole head into chunks, and the rollup head into the
    /// `rollups` table, now, durably, and waits for it.
    /// The background compactor does this by itself; this is for tests,
    /// benchmarks and a clean shutdown that should leave no WAL to replay.
    pub async fn compact(&self) -> Result<(), StoreError> {
        self.blocking(|inner| {
            inner.run_compaction(true)?;
            inner.compact_rollups(now_ns()).map(drop)
        })
        .await
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.inner.shutdown.store(true, Ordering::SeqCst);
        self.inner.wake_compactor();
        if let Some(handle) = self.compactor.take()
            && handle.join().is_err()
        {
            tracing::error!("store compactor thread panicked");
        }
    }
}

#[async_trait]
impl SeriesGate for EmbeddedStore {
    async fn admit(
        &self,
        tenant: &str,
        device: &str,
        metrics: &[&str],
        tenant_quota: u64,
    ) -> Result<(), SeriesRefused> {
        self.inner
            .admit_series(tenant, device, metrics, tenant_quota)
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn write(&self, batch: &[DevicePoints]) -> Result<(), StoreError> {
        let n = validate(batch)?;
        if n == 0 {
            return Ok(());
        }
        if n > self.inner.config.memtable_max_points {
            return Err(StoreError::Invalid(format!(
                "batch of {n} points exceeds the memtable bound of {}",
                self.inner.config.memtable_max_points
            )));
        }
        let deadline = Instant::now() + self.inner.config.max_write_wait;
        loop {
            let freed = self.inner.freed.notified();
            let mut freed = std::pin::pin!(freed);
            freed.as_mut().enable();
            if self.inner.admit(n) {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, freed).await.is_err() {
                return Err(StoreError::Backpressure);
            }
        }
        self.inner.insert(batch)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.blocking(Inner::flush).await
    }

    async fn list_metrics(&self, tenant: &str, device: &str) -> Result<Vec<String>, StoreError> {
        let shard = lock(self.inner.shard(tenant, device));
        let mut names: Vec<String> = shard
            .tenants
            .get(tenant)
            .and_then(|devices| devices.get(device))
            .map(|d| {
                d.metrics
                    .keys()
                    .filter_map(|&id| shard.metric_names.get(id as usize).cloned())
                    .collect()
            })
            .unwrap_or_default();
        drop(shard);
        names.sort_unstable();
        Ok(names)
    }

    async fn scan(
        &self,
        series: &SeriesKey,
        from_ns: i64,
        to_ns: i64,
        order: Order,
        limit: usize,
    ) -> Result<Vec<Sample>, StoreError> {
        if limit == 0 || from_ns >= to_ns {
            return Ok(Vec::new());
        }
        let series = series.clone();
        self.blocking(move |inner| inner.scan(&series, from_ns, to_ns, order == Order::Desc, limit))
            .await
    }

    async fn latest(
        &self,
        tenant: &str,
        device: &str,
        metrics: &[String],
    ) -> Result<Vec<Latest>, StoreError> {
        let (tenant, device, metrics) = (tenant.to_owned(), device.to_owned(), metrics.to_vec());
        self.blocking(move |inner| inner.latest(&tenant, &device, &metrics))
            .await
    }

    async fn get_rollups(&self, keys: &[RollupKey]) -> Result<Vec<Option<Rollup>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys = keys.to_vec();
        self.blocking(move |inner| inner.get_rollups(&keys)).await
    }

    async fn write_rollups(&self, rows: &[(RollupKey, Rollup)]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let rows = rows.to_vec();
        self.blocking(move |inner| inner.write_rollups(&rows)).await
    }

    async fn scan_rollups(
        &self,
        series: &SeriesKey,
        width_ns: i64,
        from_ns: i64,
        to_ns: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Rollup)>, StoreError> {
        let series = series.clone();
        self.blocking(move |inner| inner.scan_rollups(&series, width_ns, from_ns, to_ns, limit))
            .await
    }

    async fn scan_rollups_many(
        &self,
        series: &[SeriesKey],
        width_ns: i64,
        from_ns: i64,
        to_ns: i64,
        limit_each: usize,
    ) -> Result<Vec<Vec<(i64, Rollup)>>, StoreError> {
        let series = series.to_vec();
        self.blocking(move |inner| {
            inner.scan_rollups_many(&series, width_ns, from_ns, to_ns, limit_each)
        })
        .await
    }

    async fn fold_rollups_many(
        &self,
        series: &[SeriesKey],
        width_ns: i64,
        from_ns: i64,
        to_ns: i64,
        limit_each: usize,
        mut fold: Box<dyn crate::RollupFold>,
    ) -> Result<Box<dyn crate::RollupFold>, StoreError> {
        let series = series.to_vec();
        self.blocking(move |inner| {
            inner.fold_rollups_many(
                &series,
                width_ns,
                from_ns,
                to_ns,
                limit_each,
                fold.as_mut(),
            )?;
            Ok(fold)
        })
        .await
    }

    fn rollups_pending_from(&self) -> Option<i64> {
        let from = self.inner.rollups_pending.load(Ordering::Acquire);
        (from != i64::MAX).then_some(from)
    }

    fn note_rollups_pending(&self, from_ns: i64) {
        self.inner
            .rollups_pending
            .fetch_min(from_ns, Ordering::AcqRel);
    }

    fn rollups_caught_up(&self) {
        self.inner
            .rollups_pending
            .store(i64::MAX, Ordering::Release);
    }

    async fn rollups_since(&self, width_ns: i64) -> Result<Option<i64>, StoreError> {
        self.blocking(move |inner| inner.rollups_since(width_ns))
            .await
    }

    async fn mark_rollups_since(&self, width_ns: i64, since_ns: i64) -> Result<i64, StoreError> {
        self.blocking(move |inner| inner.mark_rollups_since(width_ns, since_ns))
            .await
    }

    async fn apply_retention(&self, now_ns: i64) -> Result<u64, StoreError> {
        self.blocking(move |inner| inner.apply_retention(now_ns))
            .await
    }

    fn set_retention(&self, policy: Arc<RetentionPolicy>) {
        *self
            .inner
            .policy
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = policy;
    }
}

fn compactor_loop(inner: &Inner, wake: &Receiver<()>) {
    let mut backoff: Option<Duration> = None;
    loop {
        let woke = match backoff {
            None => wake.recv().is_ok(),
            Some(pause) => !matches!(
                wake.recv_timeout(pause),
                Err(RecvTimeoutError::Disconnected)
            ),
        };
        if !woke || inner.shutdown.load(Ordering::SeqCst) {
            return;
        }
        let rollups = || {
            if inner.rollups_due.swap(false, Ordering::Relaxed) {
                inner.compact_rollups(now_ns()).inspect_err(|_| {
                    inner.rollups_due.store(true, Ordering::Relaxed);
                })?;
            }
            Ok(())
        };
        match inner.run_compaction(false).and_then(|_| rollups()) {
            Ok(_) => backoff = None,
            Err(e) => {
                let pause = backoff.map_or(Duration::from_millis(100), |b| {
                    (b * 2).min(MAX_COMPACTION_BACKOFF)
                });
                tracing::error!(error = %e, retry_in_ms = pause.as_millis() as u64, "store compaction failed");
                backoff = Some(pause);
            }
        }
    }
}

impl Inner {
    /// See [`SeriesGate::admit`]. Under the device's shard lock: the series
    /// it creates are in the index before any write of their points can
    /// look for them, and reach the catalog with the next flush.
    fn admit_series(
        &self,
        tenant: &str,
        device: &str,
        metrics: &[&str],
        quota: u64,
    ) -> Result<(), SeriesRefused> {
        let mut guard = lock(self.shard(tenant, device));
        let shard = &mut *guard;
        let new: Vec<&str> = metrics
            .iter()
            .copied()
            .filter(|m| shard.slot_mut(tenant, device, m).is_none())
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let n = new.len() as u64;
        {
            let mut per_tenant = lock(&self.tenant_series);
            let used = per_tenant.get(tenant).copied().unwrap_or(0);
            if used + n > quota {
                return Err(SeriesRefused::TenantQuota { limit: quota });
            }
            let max = self.config.max_series;
            self.series
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                    (c + n <= max).then_some(c + n)
                })
                .map_err(|_| SeriesRefused::StoreFull { limit: max })?;
            *per_tenant.entry(tenant.to_owned()).or_insert(0) += n;
        }
        for metric in new {
            let id = self.next_series_id.fetch_add(1, Ordering::Relaxed);
            let metric_id = shard.metric_id(metric);
            shard.new_series.push(NewSeries {
                id,
                tenant: tenant.to_owned(),
                device: device.to_owned(),
                metric: metric.to_owned(),
            });
            shard
                .tenants
                .entry(tenant.to_owned())
                .or_default()
                .entry(device.to_owned())
                .or_default()
                .metrics
                .insert(
                    metric_id,
                    Slot {
                        id,
                        head: SeriesHead::new(),
                    },
                );
        }
        Ok(())
    }

    /// Series of `tenant`.
    fn tenant_series(&self, tenant: &str) -> u64 {
        lock(&self.tenant_series).get(tenant).copied().unwrap_or(0)
    }

    fn shard(&self, tenant: &str, device: &str) -> &Mutex<Shard> {
        let mut h = DefaultHasher::new();
        tenant.hash(&mut h);
        device.hash(&mut h);
        &self.shards[(h.finish() as usize) & (SHARDS - 1)]
    }

    fn policy(&self) -> Arc<RetentionPolicy> {
        self.policy
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Raw points of `tenant` older than this are treated as expired.
    fn cutoff(&self, tenant: &str) -> i64 {
        let applied = self
            .floors
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(tenant)
            .copied()
            .unwrap_or(i64::MIN);
        self.retention_floor
            .load(Ordering::Relaxed)
            .max(applied)
            .max(self.policy().of(tenant).raw.floor(now_ns()))
    }

    /// Points older than this are expired for every tenant: what
    /// compaction and WAL replay, which see series ids, may drop.
    fn loosest_cutoff(&self) -> i64 {
        let policy = self.policy();
        let now = now_ns();
        let loosest = policy
            .overrides()
            .values()
            .map(|r| r.raw.floor(now))
            .fold(policy.of("").raw.floor(now), i64::min);
        self.retention_floor.load(Ordering::Relaxed).max(loosest)
    }

    /// Rollup buckets of `tenant`'s tier `width_ns` starting before this
    /// are expired.
    fn rollup_floor(&self, tenant: &str, width_ns: i64) -> i64 {
        self.policy()
            .of(tenant)
            .tier(width_ns)
            .bucket_floor(now_ns(), width_ns)
    }

    fn wake_compactor(&self) {
        // Full means a wake-up is already pending.
        let _ = self.wake.try_send(());
    }

    fn over_soft_bound(&self, extra_points: usize) -> bool {
        self.head_points.load(Ordering::Relaxed) + extra_points
            > self.config.memtable_max_points / 2
            || self.head_bytes.load(Ordering::Relaxed) > self.config.memtable_max_bytes / 2
    }

    /// Whether `n` more points fit in the live head; wakes the compactor
    /// when the head is past half of its bound.
    fn admit(&self, n: usize) -> bool {
        if self.over_soft_bound(n) {
            self.wake_compactor();
        }
        self.head_points.load(Ordering::Relaxed) + n <= self.config.memtable_max_points
            && self.head_bytes.load(Ordering::Relaxed) <= self.config.memtable_max_bytes
    }

    fn new_series_id(&self) -> Result<u64, StoreError> {
        let max = self.config.max_series;
        self.series
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| StoreError::Invalid(format!("series limit of {max} reached")))?;
        Ok(self.next_series_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Appends a validated batch to the heads and the WAL buffers.
    fn insert(&self, batch: &[DevicePoints]) -> Result<(), StoreError> {
        let mut cutoffs: Option<(&str, i64)> = None;
        for dp in batch {
            let cutoff = match cutoffs {
                Some((tenant, cutoff)) if tenant == dp.tenant => cutoff,
                _ => {
                    let cutoff = self.cutoff(&dp.tenant);
                    cutoffs = Some((&dp.tenant, cutoff));
                    cutoff
                }
            };
            let mut guard = lock(self.shard(&dp.tenant, &dp.device));
            let shard = &mut *guard;
            // Intern the batch's metric names first (usually all known).
            let ids: Vec<u32> = dp
                .points
                .iter()
                .map(|p| shard.metric_id(&p.metric))
                .collect();
            let Shard {
                tenants,
                wal,
                new_series,
                points,
                bytes,
                ..
            } = shard;
            let devices = match tenants.get_mut(&dp.tenant) {
                Some(devices) => devices,
                None => tenants.entry(dp.tenant.clone()).or_default(),
            };
            let device = match devices.get_mut(&dp.device) {
                Some(device) => device,
                None => devices.entry(dp.device.clone()).or_default(),
            };
            let (mut added_points, mut added_bytes) = (0usize, 0usize);
            let mut failed = None;
            // A series is created even when all its points are expired: its
            // rollups (kept longer) belong to it.
            for (p, &metric) in dp.points.iter().zip(&ids) {
                let slot = if let Some(slot) = device.metrics.get_mut(&metric) {
                    slot
                } else {
                    let id = match self.new_series_id() {
                        Ok(id) => id,
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    };
                    *lock(&self.tenant_series)
                        .entry(dp.tenant.clone())
                        .or_insert(0) += 1;
                    new_series.push(NewSeries {
                        id,
                        tenant: dp.tenant.clone(),
                        device: dp.device.clone(),
                        metric: p.metric.clone(),
                    });
                    device.metrics.entry(metric).or_insert(Slot {
                        id,
                        head: SeriesHead::new(),
                    })
                };
                if p.ts_ns < cutoff {
                    continue;
                }
                added_points += slot.head.push(p.ts_ns, &p.value);
                added_bytes += point_bytes(&p.value) + wal.push(slot.id, p.ts_ns, &p.value);
            }
            // Account for what was applied, also when a point failed.
            *points += added_points;
            *bytes += added_bytes;
            self.head_points.fetch_add(added_points, Ordering::Relaxed);
            self.head_bytes.fetch_add(added_bytes, Ordering::Relaxed);
            if let Some(e) = failed {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Moves every shard's WAL buffer and new catalog rows into `coord`.
    fn take_pending(&self, coord: &mut Coord, shard: &mut Shard) {
        let row = shard.wal.take();
        if !row.is_empty() {
            shard.bytes = shard.bytes.saturating_sub(row.len());
            sub_saturating(&self.head_bytes, row.len());
            coord.unsaved.push((coord.next_seq, row));
            coord.next_seq += 1;
        }
        coord.unsaved_series.append(&mut shard.new_series);
    }

    /// Writes the pending catalog rows and WAL rows into `txn`. WAL rows
    /// below `covered_below` are skipped: a compaction in the same
    /// transaction makes their points durable.
    fn write_pending(
        &self,
        txn: &WriteTransaction,
        coord: &Coord,
        covered_below: u64,
    ) -> Result<(), StoreError> {
        let mut series = txn.open_table(SERIES).map_err(backend)?;
        for s in &coord.unsaved_series {
            series
                .insert(
                    (s.tenant.as_str(), s.device.as_str(), s.metric.as_str()),
                    s.id,
                )
                .map_err(backend)?;
        }
        let mut wal = txn.open_table(WAL).map_err(backend)?;
        for (seq, row) in coord
            .unsaved
            .iter()
            .filter(|(seq, _)| *seq >= covered_below)
        {
            wal.insert(*seq, row.as_slice()).map_err(backend)?;
        }
        Ok(())
    }

    /// Makes every write that returned before this call durable.
    fn flush(&self) -> Result<(), StoreError> {
        let mut coord = lock(&self.coord);
        for shard in self.shards.iter() {
            self.take_pending(&mut coord, &mut lock(shard));
        }
        if coord.unsaved.is_empty() && coord.unsaved_series.is_empty() {
            return Ok(());
        }
        let mut txn = self.db.begin_write().map_err(backend)?;
        txn.set_durability(Durability::Immediate).map_err(backend)?;
        self.write_pending(&txn, &coord, 0)?;
        txn.commit().map_err(backend)?;
        coord.unsaved.clear();
        coord.unsaved_series.clear();
        drop(coord);
        self.freed.notify_waiters();
        Ok(())
    }

    /// Freezes the live head (unless a frozen one awaits compaction) and
    /// compacts the frozen head into chunks. Without `force`, does nothing
    /// unless the head is past half its bound. Returns whether it compacted.
    fn run_compaction(&self, force: bool) -> Result<bool, StoreError> {
        let _one = lock(&self.compaction);
        let started = Instant::now();
        let frozen: Vec<Arc<Frozen>> = {
            let mut coord = lock(&self.coord);
            if coord.freeze_seq.is_none() {
                let empty = self.head_points.load(Ordering::Relaxed) == 0;
                if empty || !(force || self.over_soft_bound(0)) {
                    return Ok(false);
                }
                self.freeze(&mut coord);
            }
            self.shards
                .iter()
                .filter_map(|s| lock(s).frozen.clone())
                .collect()
        };

        let mut series: Vec<(u64, &SeriesHead)> = frozen
            .iter()
            .flat_map(|f| f.series.iter().map(|(id, h)| (*id, h)))
            .collect();
        series.sort_unstable_by_key(|(id, _)| *id);
        let total_points: usize = series.iter().map(|(_, h)| h.len()).sum();

        let cutoff = self.loosest_cutoff();
        let mut chunks_written = 0u64;
        let mut rest = series.as_slice();
        while !rest.is_empty() {
            if self.shutdown.load(Ordering::SeqCst) {
                // The WAL still covers the frozen head; the next open replays it.
                return Ok(false);
            }
            let mut take = 0usize;
            let mut points = 0usize;
            while take < rest.len() && (take == 0 || points < SLICE_POINTS) {
                points += rest[take].1.len();
                take += 1;
            }
            let (slice, tail) = rest.split_at(take);
            rest = tail;
            let mut txn = self.db.begin_write().map_err(backend)?;
            // Made durable by the sealing transaction below (or by any flush).
            txn.set_durability(Durability::None).map_err(backend)?;
            {
                let mut chunks = txn.open_table(CHUNKS).map_err(backend)?;
                let mut latest = txn.open_table(LATEST).map_err(backend)?;
                for (id, head) in slice {
                    chunks_written +=
                        self.compact_series(&mut chunks, &mut latest, *id, head, cutoff)?;
                }
            }
            txn.commit().map_err(backend)?;
        }

        let mut coord = lock(&self.coord);
        let freeze_seq = coord.freeze_seq.unwrap_or(0);
        let mut txn = self.db.begin_write().map_err(backend)?;
        txn.set_durability(Durability::Immediate).map_err(backend)?;
        self.write_pending(&txn, &coord, freeze_seq)?;
        {
            let mut wal = txn.open_table(WAL).map_err(backend)?;
            wal.retain_in(..freeze_seq, |_, _| false).map_err(backend)?;
        }
        txn.commit().map_err(backend)?;
        coord.unsaved.clear();
        coord.unsaved_series.clear();
        coord.freeze_seq = None;
        for shard in self.shards.iter() {
            lock(shard).frozen = None;
        }
        drop(coord);
        self.frozen_points.store(0, Ordering::Relaxed);
        self.compactions.fetch_add(1, Ordering::Relaxed);
        self.chunks_written
            .fetch_add(chunks_written, Ordering::Relaxed);
        self.freed.notify_waiters();
        tracing::debug!(
            series = series.len(),
            points = total_points,
            chunks = chunks_written,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "store compaction done"
        );
        Ok(true)
    }

    /// Moves every live head into a frozen one, with the WAL rows that hold
    /// its points.
    fn freeze(&self, coord: &mut Coord) {
        let mut frozen_points = 0usize;
        // The live head's counts drop once every shard is frozen, not shard
        // by shard: otherwise a write admitted on the room that the first
        // shards made could land in a shard not frozen yet, and the frozen
        // head would exceed its bound by that write.
        let (mut moved_points, mut moved_bytes) = (0usize, 0usize);
        for shard in self.shards.iter() {
            let mut guard = lock(shard);
            self.take_pending(coord, &mut guard);
            let shard = &mut *guard;
            let mut frozen = Frozen::default();
            for device in shard.tenants.values_mut().flat_map(HashMap::values_mut) {
                for slot in device.metrics.values_mut() {
                    if !slot.head.is_empty() {
                        // Expect as many points next time (bounded), sparing reallocations.
                        let hint = slot.head.len().min(1024);
                        let mut head =
                            std::mem::replace(&mut slot.head, SeriesHead::with_capacity(hint));
                        head.normalize();
                        frozen_points += head.len();
                        frozen.series.insert(slot.id, head);
                    }
                }
            }
            moved_points += shard.points;
            moved_bytes += shard.bytes;
            shard.points = 0;
            shard.bytes = 0;
            if !frozen.series.is_empty() {
                shard.frozen = Some(Arc::new(frozen));
            }
        }
        self.frozen_points.store(frozen_points, Ordering::Relaxed);
        sub_saturating(&self.head_points, moved_points);
        sub_saturating(&self.head_bytes, moved_bytes);
        coord.freeze_seq = Some(coord.next_seq);
    }

    /// Merges one frozen series into its chunks and latest row. Returns the
    /// number of chunks written.
    fn compact_series(
        &self,
        chunks: &mut Table<'_, (u64, i64), &[u8]>,
        latest: &mut Table<'_, u64, &[u8]>,
        id: u64,
        head: &SeriesHead,
        cutoff: i64,
    ) -> Result<u64, StoreError> {
        let mut samples = head.samples();
        let expired = samples.partition_point(|s| s.ts_ns < cutoff);
        samples.drain(..expired);
        let Some(last) = samples.last() else {
            return Ok(0);
        };
        let stored = latest
            .get(id)
            .map_err(backend)?
            .map(|g| decode_latest(g.value()))
            .transpose();
        let stored = stored.map_err(corrupt("latest row"))?;
        if stored.is_none_or(|s| s.ts_ns <= last.ts_ns) {
            latest
                .insert(id, encode_latest(last.ts_ns, &last.value).as_slice())
                .map_err(backend)?;
        }
        let mut written = 0;
        for day in samples
            .chunk_by(|a, b| a.ts_ns.div_euclid(NS_PER_DAY) == b.ts_ns.div_euclid(NS_PER_DAY))
        {
            written += self.merge_day(chunks, id, day)?;
        }
        Ok(written)
    }

    /// Merges points of one series and one UTC day into the chunks.
    fn merge_day(
        &self,
        chunks: &mut Table<'_, (u64, i64), &[u8]>,
        id: u64,
        points: &[Sample],
    ) -> Result<u64, StoreError> {
        let (Some(first), Some(last)) = (points.first(), points.last()) else {
            return Ok(0);
        };
        let (p_min, p_max) = (first.ts_ns, last.ts_ns);
        // Chunks to rewrite, newest first: those overlapping the new points,
        // then the small ones just before them (binary-counter rule).
        let mut rewrite: Vec<(i64, Vec<u8>)> = Vec::new();
        let mut merged_count = points.len() as u64;
        for entry in chunks
            .range((id, day_start(p_min))..=(id, p_max))
            .map_err(backend)?
            .rev()
        {
            let (key, value) = entry.map_err(backend)?;
            let header = ChunkHeader::parse(value.value()).map_err(corrupt("chunk"))?;
            if header.max_ts < p_min {
                let full = header.count as usize >= self.config.chunk_max_points
                    || header.raw_bytes as usize >= self.config.chunk_max_bytes;
                if full || u64::from(header.count) > merged_count {
                    break;
                }
            }
            merged_count += u64::from(header.count);
            rewrite.push((key.value().1, value.value().to_vec()));
        }
        if rewrite.is_empty() {
            return self.write_chunks(chunks, id, points, &[]);
        }
        let mut old = Vec::new();
        for (_, bytes) in rewrite.iter().rev() {
            old.extend(decode_chunk(bytes).map_err(corrupt("chunk"))?);
        }
        let replaced: Vec<i64> = rewrite.iter().map(|(start, _)| *start).collect();
        let merged = merge_newer_wins(old, points.to_vec());
        self.write_chunks(chunks, id, &merged, &replaced)
    }

    /// Splits ascending points of one day into chunks and stores them,
    /// replacing the chunks that start at `replaced` (overwritten in place
    /// when a new chunk starts at the same timestamp, removed otherwise).
    fn write_chunks(
        &self,
        chunks: &mut Table<'_, (u64, i64), &[u8]>,
        id: u64,
        points: &[Sample],
        replaced: &[i64],
    ) -> Result<u64, StoreError> {
        let mut parts = Vec::new();
        let mut start = 0;
        while start < points.len() {
            let mut end = start;
            let mut bytes = 0usize;
            while end < points.len() && end - start < self.config.chunk_max_points {
                let size = raw_size(&points[end].value);
                if end > start && bytes + size > self.config.chunk_max_bytes {
                    break;
                }
                bytes += size;
                end += 1;
            }
            parts.push(&points[start..end]);
            start = end;
        }
        for old in replaced {
            if !parts.iter().any(|part| part[0].ts_ns == *old) {
                chunks.remove((id, *old)).map_err(backend)?;
            }
        }
        for part in &parts {
            let encoded = encode_chunk(part).ok_or_else(|| {
                StoreError::Backend("internal: chunk input is not strictly ascending".into())
            })?;
            chunks
                .insert((id, part[0].ts_ns), encoded.as_slice())
                .map_err(backend)?;
        }
        Ok(parts.len() as u64)
    }

    fn scan(
        &self,
        key: &SeriesKey,
        from: i64,
        to: i64,
        desc: bool,
        limit: usize,
    ) -> Result<Vec<Sample>, StoreError> {
        let from = from.max(self.cutoff(&key.tenant));
        if from >= to {
            return Ok(Vec::new());
        }
        let (id, live, frozen) = {
            let mut guard = lock(self.shard(&key.tenant, &key.device));
            let shard = &mut *guard;
            let frozen = shard.frozen.clone();
            let Some(slot) = shard.slot_mut(&key.tenant, &key.device, &key.metric) else {
                return Ok(Vec::new());
            };
            let dropped = slot.head.normalize();
            let live = slot.head.range(from, to, limit, desc);
            let id = slot.id;
            self.forget_points(shard, dropped);
            (id, live, frozen)
        };
        let frozen = frozen.and_then(|f| f.series.get(&id).map(|h| h.range(from, to, limit, desc)));
        let memory = merge_newer_wins(frozen.unwrap_or_default(), live);
        // Read the chunks only after taking the frozen head: a compaction
        // that seals in between is then seen in one of the two.
        let disk = self.read_chunks(id, from, to, desc, limit)?;
        let mut all = merge_newer_wins(disk, memory);
        if desc {
            all.reverse();
        }
        all.truncate(limit);
        Ok(all)
    }

    /// Accounts for points `normalize` dropped from a live head.
    fn forget_points(&self, shard: &mut Shard, dropped: usize) {
        if dropped > 0 {
            shard.points = shard.points.saturating_sub(dropped);
            sub_saturating(&self.head_points, dropped);
        }
    }

    /// Points of the chunks of series `id` within `[from, to)`, ascending;
    /// at most `limit`, taken from the end `desc` reads first.
    fn read_chunks(
        &self,
        id: u64,
        from: i64,
        to: i64,
        desc: bool,
        limit: usize,
    ) -> Result<Vec<Sample>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(CHUNKS).map_err(backend)?;
        let to_incl = to - 1;
        // The chunk starting before `from` may reach into the range.
        let before = table
            .range((id, i64::MIN)..(id, from))
            .map_err(backend)?
            .next_back()
            .transpose();
        let before = before.map_err(backend)?;
        let before = match before {
            Some((_, v)) => {
                let header = ChunkHeader::parse(v.value()).map_err(corrupt("chunk"))?;
                (header.max_ts >= from).then_some(v)
            }
            None => None,
        };
        let within = table.range((id, from)..(id, to)).map_err(backend)?;
        let mut out = Vec::new();
        if !desc {
            for v in before
                .into_iter()
                .map(Ok)
                .chain(within.map(|e| e.map(|(_, v)| v)))
            {
                if out.len() >= limit {
                    break;
                }
                let v = v.map_err(backend)?;
                decode_chunk_into(v.value(), from, to_incl, &mut out).map_err(corrupt("chunk"))?;
            }
            out.truncate(limit);
        } else {
            let mut parts: Vec<Vec<Sample>> = Vec::new();
            let mut n = 0usize;
            for v in within
                .rev()
                .map(|e| e.map(|(_, v)| v))
                .chain(before.into_iter().map(Ok))
            {
                if n >= limit {
                    break;
                }
                let v = v.map_err(backend)?;
                let mut part = Vec::new();
                decode_chunk_into(v.value(), from, to_incl, &mut part).map_err(corrupt("chunk"))?;
                n += part.len();
                parts.push(part);
            }
            out = parts.into_iter().rev().flatten().collect();
            let excess = out.len().saturating_sub(limit);
            out.drain(..excess);
        }
        Ok(out)
    }

    fn latest(
        &self,
        tenant: &str,
        device: &str,
        metrics: &[String],
    ) -> Result<Vec<Latest>, StoreError> {
        let cutoff = self.cutoff(tenant);
        let (wanted, frozen) = {
            let mut guard = lock(self.shard(tenant, device));
            let shard = &mut *guard;
            let frozen = shard.frozen.clone();
            let Shard {
                metric_ids,
                metric_names,
                tenants,
                ..
            } = shard;
            let Some(dev) = tenants.get_mut(tenant).and_then(|d| d.get_mut(device)) else {
                return Ok(Vec::new());
            };
            let mut ids: Vec<(String, u32)> = if metrics.is_empty() {
                dev.metrics
                    .keys()
                    .filter_map(|&id| Some((metric_names.get(id as usize)?.clone(), id)))
                    .collect()
            } else {
                metrics
                    .iter()
                    .filter_map(|m| Some((m.clone(), *metric_ids.get(m)?)))
                    .collect()
            };
            ids.sort_unstable();
            ids.dedup();
            let mut wanted = Vec::with_capacity(ids.len());
            let mut dropped = 0;
            for (name, metric) in ids {
                if let Some(slot) = dev.metrics.get_mut(&metric) {
                    dropped += slot.head.normalize();
                    let live = slot.head.last();
                    wanted.push((name, slot.id, live));
                }
            }
            self.forget_points(shard, dropped);
            (wanted, frozen)
        };
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(LATEST).map_err(backend)?;
        let mut out = Vec::with_capacity(wanted.len());
        for (metric, id, live) in wanted {
            let disk = table
                .get(id)
                .map_err(backend)?
                .map(|g| decode_latest(g.value()))
                .transpose();
            let disk = disk.map_err(corrupt("latest row"))?;
            let frozen = frozen
                .as_ref()
                .and_then(|f| f.series.get(&id))
                .and_then(SeriesHead::last);
            // Equal timestamps: the live head is the newest write, then the frozen head.
            let best = [live, frozen, disk]
                .into_iter()
                .flatten()
                .reduce(|best, next| if next.ts_ns > best.ts_ns { next } else { best });
            if let Some(s) = best.filter(|s| s.ts_ns >= cutoff) {
                out.push(Latest {
                    metric,
                    ts_ns: s.ts_ns,
                    value: s.value,
                });
            }
        }
        Ok(out)
    }

    fn apply_retention(&self, now: i64) -> Result<u64, StoreError> {
        let policy = self.policy();
        // Per tenant: its series, its raw cutoff, and its rollup floors.
        let mut tenants: HashMap<String, Vec<u64>> = HashMap::new();
        for shard in self.shards.iter() {
            let shard = lock(shard);
            for (tenant, devices) in &shard.tenants {
                tenants.entry(tenant.clone()).or_default().extend(
                    devices
                        .values()
                        .flat_map(|d| d.metrics.values().map(|s| s.id)),
                );
            }
        }
        // Per series: its id, its raw cutoff, and per expiring tier its
        // width and first kept bucket.
        type Expiry = (u64, i64, Vec<(i64, i64)>);
        let mut work: Vec<Expiry> = Vec::new();
        let mut floors: Vec<(String, i64)> = Vec::new();
        for (tenant, ids) in tenants {
            let retention = policy.of(&tenant);
            let raw = retention.raw.floor(now);
            let tiers: Vec<(i64, i64)> = retention
                .rollups
                .iter()
                .filter(|(_, keep)| *keep != Keep::Forever)
                .map(|&(width, keep)| (width, keep.bucket_floor(now, width)))
                .collect();
            if raw == i64::MIN && tiers.is_empty() {
                continue;
            }
            if raw != i64::MIN {
                floors.push((tenant, raw));
            }
            work.extend(ids.into_iter().map(|id| (id, raw, tiers.clone())));
        }
        work.sort_unstable_by_key(|(id, _, _)| *id);
        // Hide before deleting: reads stop returning what is about to go.
        {
            let mut applied = self
                .floors
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (tenant, floor) in &floors {
                let at = applied.entry(tenant.clone()).or_insert(i64::MIN);
                *at = (*at).max(*floor);
            }
        }
        let mut removed = 0u64;
        let batches: Vec<&[Expiry]> = if work.is_empty() {
            vec![&[]]
        } else {
            work.chunks(RETENTION_BATCH).collect()
        };
        let last = batches.len() - 1;
        for (i, batch) in batches.into_iter().enumerate() {
            let mut txn = self.db.begin_write().map_err(backend)?;
            // Deletions need not be durable one by one; the last commit seals them.
            let durability = if i == last {
                Durability::Immediate
            } else {
                Durability::None
            };
            txn.set_durability(durability).map_err(backend)?;
            {
                let mut chunks = txn.open_table(CHUNKS).map_err(backend)?;
                let mut latest = txn.open_table(LATEST).map_err(backend)?;
                let mut rollups = txn.open_table(rollups::ROLLUPS).map_err(backend)?;
                let mut sealed = txn.open_table(blocks::BLOCKS).map_err(backend)?;
                for (id, floor, tiers) in batch {
                    let id = *id;
                    for &(width, from) in tiers {
                        for entry in rollups
                            .extract_from_if((id, width, i64::MIN)..(id, width, from), |_, _| true)
                            .map_err(backend)?
                        {
                            entry.map_err(backend)?;
                            removed += 1;
                        }
                        // Whole blocks before the cutoff go; the buckets of
                        // the partial one are filtered on read.
                        let whole = blocks::block_of(width, from);
                        for entry in sealed
                            .extract_from_if((id, width, i64::MIN)..(id, width, whole), |_, _| true)
                            .map_err(backend)?
                        {
                            entry.map_err(backend)?;
                            removed += 1;
                        }
                    }
                    if *floor == i64::MIN {
                        continue;
                    }
                    // Whole days before the cutoff's day go; the partial day is filtered on read.
                    let keep_from = day_start(*floor);
                    for entry in chunks
                        .extract_from_if((id, i64::MIN)..(id, keep_from), |_, _| true)
                        .map_err(backend)?
                    {
                        entry.map_err(backend)?;
                        removed += 1;
                    }
                    let expired = match latest.get(id).map_err(backend)? {
                        Some(g) => {
                            decode_latest(g.value())
                                .map_err(corrupt("latest row"))?
                                .ts_ns
                                < *floor
                        }
                        None => false,
                    };
                    if expired {
                        latest.remove(id).map_err(backend)?;
                    }
                }
                if i == last {
                    let mut meta = txn.open_table(META).map_err(backend)?;
                    for (tenant, floor) in &floors {
                        meta.insert(floor_key(tenant).as_str(), *floor)
                            .map_err(backend)?;
                    }
                }
            }
            txn.commit().map_err(backend)?;
        }
        Ok(removed)
    }

    /// Loads the catalog and the retention floor, and replays the WAL.
    fn recover(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let meta = txn.open_table(META).map_err(backend)?;
        if let Some(floor) = meta.get(META_RETENTION_FLOOR).map_err(backend)? {
            self.retention_floor.store(floor.value(), Ordering::Relaxed);
        }
        {
            let mut floors = self
                .floors
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for entry in meta.range(META_TENANT_FLOOR..).map_err(backend)? {
                let (key, floor) = entry.map_err(backend)?;
                let Some(tenant) = key.value().strip_prefix(META_TENANT_FLOOR) else {
                    break;
                };
                floors.insert(tenant.to_owned(), floor.value());
            }
        }

        let mut max_id: Option<u64> = None;
        let mut count = 0u64;
        let catalog = txn.open_table(SERIES).map_err(backend)?;
        for entry in catalog.iter().map_err(backend)? {
            let (key, id) = entry.map_err(backend)?;
            let (tenant, device, metric) = key.value();
            let id = id.value();
            max_id = max_id.max(Some(id));
            count += 1;
            {
                let mut per_tenant = lock(&self.tenant_series);
                match per_tenant.get_mut(tenant) {
                    Some(n) => *n += 1,
                    None => {
                        per_tenant.insert(tenant.to_owned(), 1);
                    }
                }
            }
            let mut shard = lock(self.shard(tenant, device));
            let metric = shard.metric_id(metric);
            shard
                .tenants
                .entry(tenant.to_owned())
                .or_default()
                .entry(device.to_owned())
                .or_default()
                .metrics
                .insert(
                    metric,
                    Slot {
                        id,
                        head: SeriesHead::new(),
                    },
                );
        }
        // Never reuse an id that chunks or latest rows may still carry.
        let chunks = txn.open_table(CHUNKS).map_err(backend)?;
        if let Some((key, _)) = chunks.last().map_err(backend)? {
            max_id = max_id.max(Some(key.value().0));
        }
        let latest = txn.open_table(LATEST).map_err(backend)?;
        if let Some((key, _)) = latest.last().map_err(backend)? {
            max_id = max_id.max(Some(key.value()));
        }
        self.series.store(count, Ordering::Relaxed);
        self.next_series_id
            .store(max_id.map_or(0, |m| m.saturating_add(1)), Ordering::Relaxed);

        let wal = txn.open_table(WAL).map_err(backend)?;
        let mut replayed: HashMap<u64, SeriesHead> = HashMap::new();
        let mut next_seq = 0u64;
        let mut rows = 0usize;
        let cutoff = self.loosest_cutoff();
        for entry in wal.iter().map_err(backend)? {
            let (seq, row) = entry.map_err(backend)?;
            next_seq = seq.value().saturating_add(1);
            rows += 1;
            wal::replay(row.value(), |id, ts, value| {
                if ts >= cutoff {
                    replayed.entry(id).or_default().push(ts, &value);
                }
                Ok(())
            })
            .map_err(corrupt("WAL row"))?;
        }
        lock(&self.coord).next_seq = next_seq;
        if replayed.is_empty() {
            return Ok(());
        }
        let mut points_total = 0usize;
        for shard in self.shards.iter() {
            let mut guard = lock(shard);
            let shard = &mut *guard;
            for device in shard.tenants.values_mut().flat_map(HashMap::values_mut) {
                for slot in device.metrics.values_mut() {
                    if let Some(mut head) = replayed.remove(&slot.id) {
                        head.normalize();
                        let bytes: usize =
                            head.samples().iter().map(|s| point_bytes(&s.value)).sum();
                        shard.points += head.len();
                        shard.bytes += bytes;
                        points_total += head.len();
                        self.head_points.fetch_add(head.len(), Ordering::Relaxed);
                        self.head_bytes.fetch_add(bytes, Ordering::Relaxed);
                        slot.head = head;
                    }
                }
            }
        }
        if !replayed.is_empty() {
            return Err(StoreError::Backend(format!(
                "corrupt WAL: {} series ids are not in the catalog",
                replayed.len()
            )));
        }
        tracing::info!(rows, points = points_total, "store replayed its WAL");
        Ok(())
    }
}

/// Serde for a duration as a string such as `"90d"` or `"500ms"`.
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn format(d: Duration) -> String {
        let ns = d.as_nanos();
        const UNITS: [(&str, u128); 6] = [
            ("d", 86_400_000_000_000),
            ("h", 3_600_000_000_000),
            ("m", 60_000_000_000),
            ("s", 1_000_000_000),
            ("ms", 1_000_000),
            ("us", 1_000),
        ];
        for (unit, size) in UNITS {
            if ns >= size && ns.is_multiple_of(size) {
                return format!("{}{unit}", ns / size);
            }
        }
        format!("{ns}ns")
    }

    pub(super) fn parse(s: &str) -> Option<Duration> {
        let ns = tributary_core::time::parse_duration(s)?;
        u64::try_from(ns).ok().map(Duration::from_nanos)
    }

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).ok_or_else(|| {
            D::Error::custom(format!(
                "invalid duration {s:?}, expected e.g. \"10s\" or \"90d\""
            ))
        })
    }
}

/// Serde for an optional duration: a string such as `"90d"`, or `null`.
mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&super::duration::format(*d)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => super::duration::parse(&s).map(Some).ok_or_else(|| {
                D::Error::custom(format!("invalid duration {s:?}, expected e.g. \"90d\""))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_prefers_the_newer_run() {
        let s = |t, v| Sample {
            ts_ns: t,
            value: Value::I64(v),
        };
        let merged = merge_newer_wins(
            vec![s(1, 1), s(3, 3), s(5, 5)],
            vec![s(2, 20), s(3, 30), s(6, 60)],
        );
        assert_eq!(merged, vec![s(1, 1), s(2, 20), s(3, 30), s(5, 5), s(6, 60)]);
        assert_eq!(merge_newer_wins(vec![], vec![s(1, 1)]), vec![s(1, 1)]);
        assert_eq!(merge_newer_wins(vec![s(1, 1)], vec![]), vec![s(1, 1)]);
    }

    #[test]
    fn days_start_at_utc_midnight_even_at_the_edges() {
        assert_eq!(day_start(NS_PER_DAY + 5), NS_PER_DAY);
        assert_eq!(day_start(-1), -NS_PER_DAY);
        assert_eq!(day_start(i64::MIN), i64::MIN);
        assert_eq!(day_start(i64::MAX), 106_751 * NS_PER_DAY);
    }

    #[test]
    fn config_durations_are_readable_strings() {
        let config = EmbeddedStoreConfig::default();
        let json = serde_json_like(&config);
        assert!(json.contains("\"retention\":\"90d\""), "{json}");
        assert!(json.contains("\"max_write_wait\":\"2s\""), "{json}");
        assert_eq!(duration::parse("1500ms"), Some(Duration::from_millis(1500)));
        assert_eq!(duration::format(Duration::from_millis(1500)), "1500ms");
        assert_eq!(duration::parse("soon"), None);
    }

    fn serde_json_like(config: &EmbeddedStoreConfig) -> String {
        serde_json::to_string(config).expect("config serializes")
    }

    #[test]
    fn config_validation_names_the_bad_field() {
        let bad = EmbeddedStoreConfig {
            chunk_max_points: 0,
            ..EmbeddedStoreConfig::default()
        };
        let err = bad.validate().expect_err("zero chunk size is refused");
        assert!(err.to_string().contains("chunk_max_points"), "{err}");
        assert!(EmbeddedStoreConfig::default().validate().is_ok());
        let zero = EmbeddedStoreConfig {
            retention: Some(Duration::ZERO),
            ..EmbeddedStoreConfig::default()
        };
        assert!(zero.validate().is_err());
    }
}
