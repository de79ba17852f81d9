//! The store: where time series live.
//!
//! The data model matches the ScyllaDB schema of distributed mode: points are
//! keyed by (tenant, device, metric, day bucket) and kept in time order within
//! a bucket; the latest value of each series is kept apart. Writes are
//! idempotent: writing the same (series, timestamp) again overwrites, so a
//! replay of the log never duplicates a point.
//!
//! Durability contract: after [`Store::flush`] returns, every write that
//! returned before it survives a crash. The processor commits log offsets only
//! after a flush, so the log is the write-ahead log of the store: anything not
//! yet flushed is replayed from the log after a crash.
//!
//! [`conformance`] is the test suite every implementation must pass.

use std::fmt::Debug;

use async_trait::async_trait;
use tributary_core::rollup::{Parts, Rollup, RollupKey};
use tributary_core::{Point, Sample, SeriesKey, Value};

pub mod alerts;
pub mod checkpoint;
pub mod conformance;
pub mod embedded;

pub use alerts::{AlertStore, StoredAlert};
pub use checkpoint::{Checkpoint, CheckpointChange, CheckpointStore};

/// Points of one device to write.
#[derive(Debug, Clone, PartialEq)]
pub struct DevicePoints {
    /// The tenant the device belongs to.
    pub tenant: String,
    /// The device id, unique within its tenant.
    pub device: String,
    /// Points of any metrics of the device, in any order.
    pub points: Vec<Point>,
}

/// Scan direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Oldest first.
    #[default]
    Asc,
    /// Newest first.
    Desc,
}

/// The newest point of a series.
#[derive(Debug, Clone, PartialEq)]
pub struct Latest {
    /// The metric name.
    pub metric: String,
    /// Timestamp of the newest point, ns since the Unix epoch.
    pub ts_ns: i64,
    /// Its value.
    pub value: Value,
}

/// Errors of any store implementation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The request can never succeed as it is (empty or oversized names,
    /// a batch larger than the store can hold, a series limit reached).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The store cannot take more right now; retry later.
    #[error("store is overloaded, retry later")]
    Backpressure,
    /// A file system error.
    #[error("store I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The storage engine failed or found corrupt data.
    #[error("store backend: {0}")]
    Backend(String),
}

/// A time-series store.
/// Receives the buckets [`Store::fold_rollups_many`] reads. `Any`, so that
/// its owner can take its own type back from the box.
pub trait RollupFold: std::any::Any + Send {
    /// A bucket of the series at index `series` of the keys read.
    fn bucket(&mut self, series: usize, start_ns: i64, rollup: &Rollup);

    /// The parts of each bucket it reads; a store may leave the others
    /// out of the rollups it hands over (see [`Rollup::decode_parts`]).
    fn parts(&self) -> Parts {
        Parts::ALL
    }
}

#[async_trait]
pub trait Store: Send + Sync + Debug + 'static {
    /// Writes points. Idempotent per (tenant, device, metric, ts): the last
    /// write of a timestamp wins. Also advances the latest value of each
    /// series when a point is at least as new as it. Points older than the
    /// retention are dropped.
    async fn write(&self, batch: &[DevicePoints]) -> Result<(), StoreError>;

    /// Makes every write that returned before this call durable.
    async fn flush(&self) -> Result<(), StoreError>;

    /// The metric names of a device, sorted.
    async fn list_metrics(&self, tenant: &str, device: &str) -> Result<Vec<String>, StoreError>;

    /// Points of one series with `from_ns <= ts < to_ns`, in `order`, at most `limit`.
    async fn scan(
        &self,
        series: &SeriesKey,
        from_ns: i64,
        to_ns: i64,
        order: Order,
        limit: usize,
    ) -> Result<Vec<Sample>, StoreError>;

    /// The latest value of each requested metric of a device (every metric
    /// when `metrics` is empty), sorted by metric. Metrics without data are absent.
    async fn latest(
        &self,
        tenant: &str,
        device: &str,
        metrics: &[String],
    ) -> Result<Vec<Latest>, StoreError>;

    /// The stored rollups of `keys`, in the same order; `None` for a bucket
    /// never written (or expired).
    async fn get_rollups(&self, keys: &[RollupKey]) -> Result<Vec<Option<Rollup>>, StoreError>;

    /// Writes rollups, each replacing what its bucket held. Durable when
    /// this returns. The series must have points (rollups of a series the
    /// store never saw are refused as `Invalid`).
    async fn write_rollups(&self, rows: &[(RollupKey, Rollup)]) -> Result<(), StoreError>;

    /// The rollups of one series in the tier of `width_ns` whose buckets
    /// start in `from_ns <= start < to_ns`, oldest first, at most `limit`.
    async fn scan_rollups(
        &self,
        series: &SeriesKey,
        width_ns: i64,
        from_ns: i64,
        to_ns: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Rollup)>, StoreError>;

    /// [`Store::scan_rollups`] of many series at once (same tier and
    /// range, at most `limit_each` buckets each), in the order given. Stores
    /// may answer in one read; the default asks one series at a time.
    async fn scan_rollups_many(
        &self,
        series: &[SeriesKey],
        width_ns: i64,
        from_ns: i64,
        to_ns: i64,
        limit_each: usize,
    ) -> Result<Vec<Vec<(i64, Rollup)>>, StoreError> {
        let mut out = Vec::with_capacity(series.len());
        for s in series {
            out.push(
                self.scan_rollups(s, width_ns, from_ns, to_ns, limit_each)
                    .await?,
            );
        }
        Ok(out)
    }

    /// [`Store::scan_rollups_many`], handing each bucket to `fold` as it
    /// is read instead of returning them all: for a long range over many
    /// series, keeping every bucket costs more than reading it. Each
    /// series' buckets come in time order, series after series. Returns
    /// `fold`. The default folds what `scan_rollups_many` returns.
    async fn fold_rollups_many(
        &self,
        series: &[SeriesKey],
        width_ns: i64,
        from_ns: i64,
        to_ns: i64,
        limit_each: usize,
        mut fold: Box<dyn RollupFold>,
    ) -> Result<Box<dyn RollupFold>, StoreError> {
        let got = self
            .scan_rollups_many(series, width_ns, from_ns, to_ns, limit_each)
            .await?;
        for (i, rows) in got.iter().enumerate() {
            for (start, rollup) in rows {
                fold.bucket(i, *start, rollup);
            }
        }
        Ok(fold)
    }

    /// From when the rollups of the tier of `width_ns` are complete: every
    /// bucket starting at or after it holds all its points. `None`: the tier
    /// was never kept, so none of its buckets may stand for raw points.
    async fn rollups_since(&self, width_ns: i64) -> Result<Option<i64>, StoreError>;

    /// Raw points from this time on may be written whose rollups are not
    /// yet (the processor writes rollups at most every few seconds, after
    /// the points): a query reads raw points there rather than trust
    /// rollups that lack them. `None`: the rollups hold every point written.
    ///
    /// Kept in memory by a store that the processor and the queries share
    /// (the embedded one); a store without it answers `None`, and its
    /// queries may miss points written less than the processor's rollup
    /// interval ago in buckets older than the query's rollup horizon.
    fn rollups_pending_from(&self) -> Option<i64> {
        None
    }

    /// The processor is about to write points as old as `from_ns` whose
    /// rollups it has not written yet.
    fn note_rollups_pending(&self, from_ns: i64) {
        let _ = from_ns;
    }

    /// The processor wrote the rollups of every point written so far.
    fn rollups_caught_up(&self) {}

    /// Records that the tier of `width_ns` is kept from `since_ns` on,
    /// unless a time was recorded already (the first one stays); returns the
    /// recorded time. A store that holds no series at all records
    /// `i64::MIN` instead: nothing was written before the tier was kept, so
    /// every bucket holds all its points, however old.
    async fn mark_rollups_since(&self, width_ns: i64, since_ns: i64) -> Result<i64, StoreError>;

    /// Deletes expired data: raw points older than their tenant's raw
    /// retention, and rollup buckets that end before their tier's. Stores
    /// with native expiry (Scylla TTLs) may do nothing here, but must not
    /// return expired points from `scan`. Returns the number of buckets or
    /// rows removed, if known.
    async fn apply_retention(&self, now_ns: i64) -> Result<u64, StoreError>;

    /// Shares every tenant's retention (the registry's settings over the
    /// platform defaults). Until it is called, every tenant has the store's
    /// configured raw retention and keeps rollups for ever. Points written
    /// older than their tenant's raw retention are dropped, and rollup rows
    /// written older than their tier's are too.
    fn set_retention(&self, policy: std::sync::Arc<tributary_core::retention::RetentionPolicy>);
}
