//! Rollups stay equal to a recomputation from the raw points, whatever the
//! order of the points: in order, out of order, late by hours, overwritten,
//! replayed after a crash, and after a crash in the middle of writing the
//! rollups themselves. A property test over the embedded store.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use proptest::prelude::*;
use tributary_core::retention::{Keep, RetentionPolicy, RetentionSettings};
use tributary_core::rollup::{Rollup, RollupKey, Tiers, bucket_start};
use tributary_core::time::NS_PER_SEC;
use tributary_core::{Point, Sample, SeriesKey, Value};
use tributary_processor::Rollups;
use tributary_store::embedded::{EmbeddedStore, EmbeddedStoreConfig};
use tributary_store::{DevicePoints, Latest, Order, Store, StoreError};

const MINUTE: i64 = 60 * NS_PER_SEC;
/// A UTC midnight, recent enough for the store's default retention.
fn base() -> i64 {
    let now = tributary_core::time::now_ns();
    bucket_start(now, 86_400 * NS_PER_SEC) - 86_400 * NS_PER_SEC
}

/// The embedded store, whose `write_rollups` can be made to stop after a
/// number of rows and fail, as a process killed in the middle would.
#[derive(Debug)]
struct Crashy {
    inner: Arc<EmbeddedStore>,
    /// Rows the next `write_rollups` writes before failing; `usize::MAX`: no crash.
    crash_after: AtomicUsize,
}

#[async_trait]
impl Store for Crashy {
    async fn write(&self, batch: &[DevicePoints]) -> Result<(), StoreError> {
        self.inner.write(batch).await
    }
    async fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush().await
    }
    async fn list_metrics(&self, tenant: &str, device: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list_metrics(tenant, device).await
    }
    async fn scan(
        &self,
        k: &SeriesKey,
        from: i64,
        to: i64,
        order: Order,
        limit: usize,
    ) -> Result<Vec<Sample>, StoreError> {
        self.inner.scan(k, from, to, order, limit).await
    }
    async fn latest(
        &self,
        tenant: &str,
        device: &str,
        metrics: &[String],
    ) -> Result<Vec<Latest>, StoreError> {
        self.inner.latest(tenant, device, metrics).await
    }
    async fn get_rollups(&self, keys: &[RollupKey]) -> Result<Vec<Option<Rollup>>, StoreError> {
        self.inner.get_rollups(keys).await
    }
    async fn write_rollups(&self, rows: &[(RollupKey, Rollup)]) -> Result<(), StoreError> {
        let n = self.crash_after.swap(usize::MAX, Ordering::SeqCst);
        if n == usize::MAX {
            return self.inner.write_rollups(rows).await;
        }
        // Finest tier first, as the stores write them.
        let mut ordered = rows.to_vec();
        ordered.sort_by_key(|(k, _)| k.width_ns);
        ordered.truncate(n);
        self.inner.write_rollups(&ordered).await?;
        Err(StoreError::Backend("killed while writing rollups".into()))
    }
    async fn scan_rollups(
        &self,
        series: &SeriesKey,
        width_ns: i64,
        from_ns: i64,
        to_ns: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Rollup)>, StoreError> {
        self.inner
            .scan_rollups(series, width_ns, from_ns, to_ns, limit)
            .await
    }
    async fn rollups_since(&self, width_ns: i64) -> Result<Option<i64>, StoreError> {
        self.inner.rollups_since(width_ns).await
    }
    async fn mark_rollups_since(&self, width_ns: i64, since_ns: i64) -> Result<i64, StoreError> {
        self.inner.mark_rollups_since(width_ns, since_ns).await
    }
    async fn apply_retention(&self, now_ns: i64) -> Result<u64, StoreError> {
        self.inner.apply_retention(now_ns).await
    }

    fn set_retention(&self, policy: std::sync::Arc<tributary_core::retention::RetentionPolicy>) {
        self.inner.set_retention(policy)
    }
}

#[derive(Debug, Clone)]
enum Step {
    /// Points (metric index, offset in seconds from base, value) written as
    /// one batch.
    Write(Vec<(usize, i64, i64)>),
    /// A flush: rollups written, offsets committed.
    Flush,
    /// The processor dies (after `rows` rollup rows of its flush, if
    /// given) and replays what it had not committed.
    Crash(Option<usize>),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => prop::collection::vec((0..2usize, 0..(3 * 3600i64), -50..50i64), 1..20).prop_map(Step::Write),
        2 => Just(Step::Flush),
        1 => prop::option::of(0..12usize).prop_map(Step::Crash),
    ]
}

fn batch(steps: &[(usize, i64, i64)], base: i64) -> Vec<DevicePoints> {
    vec![DevicePoints {
        tenant: "t".into(),
        device: "d".into(),
        points: steps
            .iter()
            .map(|&(m, secs, v)| Point {
                metric: ["temp", "state"][m].into(),
                ts_ns: base + secs * NS_PER_SEC + 1,
                // The second metric mixes types: ints, bools, strings.
                value: match (m, v.rem_euclid(3)) {
                    (0, _) => Value::F64(v as f64 * 0.25),
                    (_, 0) => Value::I64(v),
                    (_, 1) => Value::Bool(v > 0),
                    _ => Value::Str(format!("s{v}")),
                },
            })
            .collect(),
    }]
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn same(got: &Rollup, want: &Rollup) -> bool {
    got.count == want.count
        && got.numeric == want.numeric
        && got.first == want.first
        && got.last == want.last
        && (want.numeric == 0
            || (got.min == want.min
                && got.max == want.max
                && close(got.sum, want.sum)
                && close(got.mean, want.mean)
                && close(got.m2, want.m2)))
}

async fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let store = Crashy {
        inner: EmbeddedStore::open(dir.path(), EmbeddedStoreConfig::default()).unwrap(),
        crash_after: AtomicUsize::new(usize::MAX),
    };
    let base = base();
    let tiers = Tiers::default();
    let mut rollups = Rollups::new(tiers.clone(), forever(), 1000);
    // Batches written since the last committed flush: replayed on a crash.
    let mut uncommitted: Vec<Vec<DevicePoints>> = Vec::new();
    for step in steps.into_iter().chain([Step::Flush]) {
        match step {
            Step::Write(points) => {
                let b = batch(&points, base);
                store.write(&b).await.unwrap();
                rollups.note(&b);
                uncommitted.push(b);
            }
            Step::Flush => {
                store.flush().await.unwrap();
                rollups.flush(&store, base).await.unwrap();
                uncommitted.clear();
            }
            Step::Crash(rows) => {
                if let Some(rows) = rows {
                    store.flush().await.unwrap();
                    store.crash_after.store(rows, Ordering::SeqCst);
                    let _ = rollups.flush(&store, base).await;
                    // Disarmed, had the flush nothing to write.
                    store.crash_after.store(usize::MAX, Ordering::SeqCst);
                }
                rollups = Rollups::new(tiers.clone(), forever(), 1000);
                for b in &uncommitted {
                    store.write(b).await.unwrap();
                    rollups.note(b);
                }
            }
        }
    }
    // Every bucket of every tier equals its recomputation from raw.
    for metric in ["temp", "state"] {
        let series = SeriesKey::new("t", "d", metric);
        let raw = store
            .scan(
                &series,
                base,
                base + 86_400 * NS_PER_SEC,
                Order::Asc,
                1_000_000,
            )
            .await
            .unwrap();
        for &width in tiers.widths() {
            let mut want: std::collections::BTreeMap<i64, Rollup> = Default::default();
            for s in &raw {
                want.entry(bucket_start(s.ts_ns, width)).or_default().add(s);
            }
            let got = store
                .scan_rollups(
                    &series,
                    width,
                    base - 86_400 * NS_PER_SEC,
                    base + 86_400 * NS_PER_SEC,
                    1_000_000,
                )
                .await
                .unwrap();
            prop_assert_eq!(
                got.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
                want.keys().copied().collect::<Vec<_>>(),
                "{} tier {}: the buckets with points",
                metric,
                width / MINUTE
            );
            for ((start, g), w) in got.iter().zip(want.values()) {
                prop_assert!(
                    same(g, w),
                    "{} tier {} bucket {}: {:?} != raw {:?}",
                    metric,
                    width / MINUTE,
                    (start - base) / NS_PER_SEC,
                    g,
                    w
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn rollups_equal_raw_recomputation(steps in prop::collection::vec(step(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(steps))?;
    }
}

#[tokio::test]
async fn in_order_data_is_never_recomputed() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedStoreConfig::default()).unwrap();
    let base = base();
    let mut rollups = Rollups::new(Tiers::default(), forever(), 1000);
    let mut recomputed = 0;
    for minute in 0..90 {
        let points: Vec<(usize, i64, i64)> = (0..6).map(|i| (0, minute * 60 + i * 10, i)).collect();
        let b = batch(&points, base);
        store.write(&b).await.unwrap();
        rollups.note(&b);
        store.flush().await.unwrap();
        recomputed += rollups
            .flush(store.as_ref(), base)
            .await
            .unwrap()
            .recomputed;
    }
    assert_eq!(
        recomputed, 0,
        "points in time order only ever extend buckets"
    );
    // A late point recomputes its minute, hour and day, and nothing else.
    let b = batch(&[(0, 5, 99)], base);
    store.write(&b).await.unwrap();
    rollups.note(&b);
    let done = rollups.flush(store.as_ref(), base).await.unwrap();
    assert_eq!((done.written, done.recomputed), (3, 3));
}

fn forever() -> Arc<RetentionPolicy> {
    Arc::new(RetentionPolicy::new(Keep::Forever, Tiers::default()))
}

/// Tenant `t` keeps raw points a day and minute buckets two days; hours
/// and days for ever.
#[tokio::test]
async fn a_tenants_retention_bounds_what_is_written_and_recomputed() {
    const HOUR: i64 = 60 * MINUTE;
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedStoreConfig::default()).unwrap();
    let policy = forever();
    let settings = RetentionSettings::from_named([("raw", "1d"), ("1m", "2d")]).unwrap();
    policy.set("t", &settings);
    store.set_retention(policy.clone());
    let mut rollups = Rollups::new(Tiers::default(), policy, 1000);
    let now = tributary_core::time::now_ns();
    let key = |width: i64, ts: i64| RollupKey {
        series: SeriesKey::new("t", "d", "temp"),
        width_ns: width,
        start_ns: bucket_start(ts, width),
    };
    let count = |r: &Option<Rollup>| r.as_ref().map_or(0, |r| r.count);
    // Three days ago: raw and minute buckets are past their retention.
    let old = bucket_start(now - 3 * 86_400 * NS_PER_SEC, HOUR) + 1;
    // A day and a half ago: raw is gone, minute buckets are kept.
    let mid = bucket_start(now - 36 * HOUR, HOUR) + 1;
    let mut write = async |ts: i64| {
        let b = batch(&[(0, 0, 4)], ts - 1);
        store.write(&b).await.unwrap();
        rollups.note(&b);
        store.flush().await.unwrap();
        rollups.flush(store.as_ref(), now).await.unwrap()
    };
    for ts in [old, mid] {
        let first = write(ts).await;
        assert_eq!(first.unreconciled, 0, "a first point is merged in");
        // The same point again (a replay): its buckets reach it, and what
        // they would be recomputed from is gone, so they are kept as they are.
        let again = write(ts).await;
        assert!(again.unreconciled >= 1, "{again:?}");
    }
    let got = store
        .get_rollups(&[
            key(MINUTE, old),
            key(HOUR, old),
            key(86_400 * NS_PER_SEC, old),
            key(MINUTE, mid),
            key(HOUR, mid),
        ])
        .await
        .unwrap();
    let counts: Vec<u64> = got.iter().map(count).collect();
    assert_eq!(
        counts,
        [0, 1, 1, 1, 1],
        "an expired minute is not written; the replay is not counted twice"
    );
    // Backfill past the raw retention, out of order and with a timestamp
    // twice in one batch: no raw points to recompute from, so the new
    // points themselves are sorted and the last write of a timestamp wins.
    let back = mid + 5 * MINUTE;
    let b = batch(&[(0, 20, 5), (0, 0, 1), (0, 20, 7)], back - 1);
    store.write(&b).await.unwrap();
    rollups.note(&b);
    store.flush().await.unwrap();
    let done = rollups.flush(store.as_ref(), now).await.unwrap();
    assert_eq!(done.unreconciled, 0, "{done:?}");
    let got = store.get_rollups(&[key(MINUTE, back)]).await.unwrap();
    let minute = got[0].as_ref().expect("the minute is written");
    assert_eq!((minute.count, minute.sum), (2, 0.25 + 1.75));
    assert!(
        store
            .scan(
                &SeriesKey::new("t", "d", "temp"),
                old - 1,
                now,
                Order::Asc,
                10
            )
            .await
            .unwrap()
            .is_empty(),
        "raw points older than a day are dropped"
    );
}
