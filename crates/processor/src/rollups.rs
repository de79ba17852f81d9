//! Rollup maintenance: the processor keeps every series' rollup tiers equal
//! to what a recomputation from the raw points would give.
//!
//! The points of each written batch are noted ([`Rollups::note`]); at each
//! flush, before the log offsets are committed, the buckets they touch are
//! brought up to date ([`Rollups::flush`]), finest tier first:
//!
//! * **Incremental** (the common case): a bucket whose stored rollup ends
//!   before the new points (its last sample is older than all of them), or
//!   that has none, cannot hold them yet, so the new points are merged in.
//!   Nothing is read but the bucket itself, and a memory of each series'
//!   newest bucket per tier spares even that read for data in time order.
//! * **Recomputed**: a bucket whose stored rollup already reaches the new
//!   points' time might hold them already (a replayed record after a
//!   crash), or hold an older value of their timestamp (an overwrite), or
//!   simply be later data (a late point). Which one is unknowable from the
//!   rollup, so the bucket is computed again from ground truth: the finest
//!   tier from the raw points, a coarser tier from the finer tier's buckets
//!   (as just computed). Invalidation is per series and per bucket.
//!
//! A coarser bucket whose finer buckets were all updated incrementally is
//! updated incrementally too, with the same points. The store writes the
//! finest tier first, and offsets are committed only after the rollups, so
//! after a crash anything not in the rollups is replayed, and anything in a
//! coarser tier is in the finer ones: the rule above stays exact under
//! replay. `docs/rollups.md` has the argument and the measurements.
//!
//! A bucket cannot be recomputed once its ground truth is gone: a
//! finest-tier bucket older than its tenant's raw retention, or a coarser
//! bucket older than the finer tier's. A late or replayed point for it is
//! left out and counted (`tributary_processor_rollup_points_unreconciled_total`).
//! A point new to such a bucket (after everything in it) is still merged
//! in, which is exact. A bucket older than its own tier's retention is not
//! written at all.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tributary_core::retention::RetentionPolicy;

use tributary_core::rollup::{Rollup, RollupKey, Tiers, bucket_start};
use tributary_core::{Sample, SeriesKey};
use tributary_store::{DevicePoints, Order, Store, StoreError};

/// Raw points read per scan when a bucket is recomputed.
const RAW_CHUNK: usize = 10_000;

/// What one flush did, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RollupFlush {
    /// Buckets written (every tier).
    pub written: u64,
    /// Of those, buckets computed again from raw points or finer buckets.
    pub recomputed: u64,
    /// Points left out of a bucket that could not be recomputed.
    pub unreconciled: u64,
}

/// The rollup state of one processor. See the [module docs](self).
#[derive(Debug)]
pub struct Rollups {
    tiers: Tiers,
    /// Points written since the last flush, per tenant, device and metric
    /// (nested so that noting a point allocates nothing once its series is
    /// known), folded per finest-tier bucket.
    pending: HashMap<String, HashMap<String, HashMap<String, Pending>>>,
    /// Each series' newest stored bucket per tier, as written.
    newest: HashMap<SeriesKey, Vec<Option<(i64, Rollup)>>>,
    /// Most series `newest` remembers; it is emptied when full.
    max_remembered: usize,
    /// Points noted since the last flush.
    pending_points: usize,
    /// How long each tenant's raw points and tiers are kept.
    retention: Arc<RetentionPolicy>,
}

/// One series' points noted since the last flush.
#[derive(Debug)]
struct Pending {
    /// The newest timestamp noted: a point at or before it is out of order
    /// (late, or the same timestamp again).
    last_ts: i64,
    /// Per finest-tier bucket, in the order first noted.
    runs: Vec<Run>,
    /// Bucket start to index in `runs`, built at the first point out of
    /// order (in-order points only ever touch the last run).
    index: Option<HashMap<i64, usize>>,
}

impl Default for Pending {
    fn default() -> Self {
        Self {
            last_ts: i64::MIN,
            runs: Vec::new(),
            index: None,
        }
    }
}

/// The new points of one finest-tier bucket.
#[derive(Debug)]
struct Run {
    start: i64,
    /// The oldest new point.
    first_ts: i64,
    /// The points folded in (in-order points, and the others too, for the
    /// count); not used for `samples` runs.
    rollup: Rollup,
    /// A point came out of order: its bucket is computed again from the
    /// raw points (the store has them: points are noted once written).
    tainted: bool,
    /// The points themselves, for a bucket already past its tenant's raw
    /// retention when noted: it cannot be recomputed, so its new points
    /// are sorted and deduplicated exactly instead (rare: backfill).
    samples: Option<Vec<Sample>>,
}

impl Pending {
    fn note(&mut self, sample: Sample, start: i64, keep_samples: bool) {
        let ts = sample.ts_ns;
        let in_order = ts > self.last_ts;
        self.last_ts = self.last_ts.max(ts);
        let at = match self.runs.last() {
            Some(run) if run.start == start => Some(self.runs.len() - 1),
            _ if in_order => None,
            _ => {
                let runs = &self.runs;
                self.index
                    .get_or_insert_with(|| {
                        runs.iter().enumerate().map(|(i, r)| (r.start, i)).collect()
                    })
                    .get(&start)
                    .copied()
            }
        };
        let Some(at) = at else {
            if let Some(index) = &mut self.index {
                index.insert(start, self.runs.len());
            }
            self.runs.push(Run {
                start,
                first_ts: ts,
                rollup: Rollup::default(),
                tainted: false,
                samples: keep_samples.then(Vec::new),
            });
            let run = self.runs.last_mut().expect("just pushed");
            run.add(sample, false);
            return;
        };
        self.runs[at].add(sample, !in_order);
    }
}

impl Run {
    fn add(&mut self, sample: Sample, out_of_order: bool) {
        self.first_ts = self.first_ts.min(sample.ts_ns);
        match &mut self.samples {
            Some(samples) => samples.push(sample),
            None => {
                self.tainted |= out_of_order;
                self.rollup.add(&sample);
            }
        }
    }

    /// The new points' rollup (a `samples` run's sorted, the last write of
    /// a timestamp winning).
    fn finish(self) -> Part {
        let rollup = match self.samples {
            None => self.rollup,
            Some(mut samples) => {
                // Stable: of equal timestamps, the last noted ends last.
                samples.sort_by_key(|p| p.ts_ns);
                let mut deduped: Vec<Sample> = Vec::with_capacity(samples.len());
                for p in samples {
                    match deduped.last_mut() {
                        Some(last) if last.ts_ns == p.ts_ns => *last = p,
                        _ => deduped.push(p),
                    }
                }
                Rollup::of_sorted(&deduped)
            }
        };
        Part {
            start: self.start,
            first_ts: self.first_ts,
            rollup,
            tainted: self.tainted,
        }
    }
}

/// The new points of one bucket of some tier.
#[derive(Debug, Clone)]
struct Part {
    start: i64,
    first_ts: i64,
    rollup: Rollup,
    tainted: bool,
}

/// A bucket to bring up to date.
#[derive(Debug)]
struct Dirty {
    /// Its series, by index in the flush's list.
    series: usize,
    /// The new points in it.
    new: Part,
    /// Whether a finer bucket inside it was computed again.
    recompute: bool,
}

/// The entry of `key` in `map`, allocating the key only when it is new.
fn entry<'m, V: Default>(map: &'m mut HashMap<String, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), V::default());
    }
    map.get_mut(key).expect("just inserted")
}

impl Rollups {
    /// Rollups over `tiers`; `retention` says how long each tenant's raw
    /// points and tiers are kept.
    pub fn new(tiers: Tiers, retention: Arc<RetentionPolicy>, max_remembered: usize) -> Self {
        Self {
            tiers,
            pending: HashMap::new(),
            newest: HashMap::new(),
            pending_points: 0,
            max_remembered,
            retention,
        }
    }

    /// Forgets what it remembers of stored buckets: another processor may
    /// have written them since (the log's partitions moved).
    pub fn forget(&mut self) {
        self.newest.clear();
    }

    /// Points noted since the last flush.
    pub fn pending_points(&self) -> usize {
        self.pending_points
    }

    /// Whether any tier is configured.
    pub fn enabled(&self) -> bool {
        !self.tiers.is_empty()
    }

    /// Notes the points of a batch the store has written.
    pub fn note(&mut self, batch: &[DevicePoints]) {
        let Some(&finest) = self.tiers.widths().first() else {
            return;
        };
        let now = tributary_core::time::now_ns();
        for dp in batch {
            self.pending_points += dp.points.len();
            let raw_floor = self.retention.of(&dp.tenant).raw.floor(now);
            let metrics = entry(entry(&mut self.pending, &dp.tenant), &dp.device);
            for p in &dp.points {
                let start = bucket_start(p.ts_ns, finest);
                entry(metrics, &p.metric).note(
                    Sample {
                        ts_ns: p.ts_ns,
                        value: p.value.clone(),
                    },
                    start,
                    start < raw_floor,
                );
            }
        }
    }

    /// Brings every bucket the noted points touch up to date, durably.
    pub async fn flush(
        &mut self,
        store: &dyn Store,
        now_ns: i64,
    ) -> Result<RollupFlush, StoreError> {
        if self.pending.is_empty() {
            return Ok(RollupFlush::default());
        }
        let widths = self.tiers.widths().to_vec();
        // Per series, in key order: the new points' finest-tier buckets, in
        // time order. The noted points stay until the rollups are written:
        // a failed flush is retried whole.
        let mut fresh: Vec<(SeriesKey, Vec<Part>)> = Vec::new();
        for (tenant, devices) in std::mem::take(&mut self.pending) {
            for (device, metrics) in devices {
                for (metric, pending) in metrics {
                    let mut parts: Vec<Part> = pending.runs.into_iter().map(Run::finish).collect();
                    parts.sort_unstable_by_key(|p| p.start);
                    fresh.push((
                        SeriesKey::new(tenant.as_str(), device.as_str(), metric.as_str()),
                        parts,
                    ));
                }
            }
        }
        fresh.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let stats = self.flush_fresh(store, now_ns, &widths, &fresh).await;
        if stats.is_err() {
            // Retried whole at the next flush.
            self.restore(fresh);
        } else {
            self.pending_points = 0;
        }
        stats
    }

    /// Puts the parts of a failed flush back, to be flushed again.
    fn restore(&mut self, fresh: Vec<(SeriesKey, Vec<Part>)>) {
        for (key, parts) in fresh {
            let pending = entry(
                entry(entry(&mut self.pending, &key.tenant), &key.device),
                &key.metric,
            );
            for p in parts {
                // Noted again after this: out of order, so recomputed.
                pending.last_ts = pending
                    .last_ts
                    .max(p.rollup.last.as_ref().map_or(p.first_ts, |l| l.ts_ns));
                if let Some(index) = &mut pending.index {
                    index.insert(p.start, pending.runs.len());
                }
                pending.runs.push(Run {
                    start: p.start,
                    first_ts: p.first_ts,
                    rollup: p.rollup,
                    tainted: p.tainted,
                    samples: None,
                });
            }
        }
    }

    async fn flush_fresh(
        &mut self,
        store: &dyn Store,
        now_ns: i64,
        widths: &[i64],
        fresh: &[(SeriesKey, Vec<Part>)],
    ) -> Result<RollupFlush, StoreError> {
        let mut stats = RollupFlush::default();
        // (series, bucket start) of the next tier to recompute, because a
        // finer bucket inside it was.
        let mut recompute_next: HashSet<(usize, i64)> = HashSet::new();
        for (tier, &width) in widths.iter().enumerate() {
            let mut dirty: Vec<Dirty> = Vec::new();
            let mut keys: Vec<RollupKey> = Vec::new();
            for (i, (series, parts)) in fresh.iter().enumerate() {
                // Parts in time order: each bucket's are one run.
                let mut lo = 0;
                while lo < parts.len() {
                    let start = bucket_start(parts[lo].start, width);
                    let end = start.saturating_add(width);
                    let hi = lo + parts[lo..].partition_point(|p| p.start < end);
                    let mut new = Part {
                        start,
                        first_ts: i64::MAX,
                        rollup: Rollup::default(),
                        tainted: false,
                    };
                    for p in &parts[lo..hi] {
                        new.first_ts = new.first_ts.min(p.first_ts);
                        new.rollup.merge(&p.rollup);
                        new.tainted |= p.tainted;
                    }
                    dirty.push(Dirty {
                        series: i,
                        new,
                        recompute: recompute_next.contains(&(i, start)),
                    });
                    keys.push(RollupKey {
                        series: series.clone(),
                        width_ns: width,
                        start_ns: start,
                    });
                    lo = hi;
                }
            }
            let stored = self.stored(store, tier, &keys).await?;
            let mut next = HashSet::new();
            let mut rows: Vec<(RollupKey, Rollup)> = Vec::with_capacity(keys.len());
            for ((key, d), old) in keys.into_iter().zip(dirty).zip(stored) {
                let new = &d.new;
                // The stored bucket may already hold the new points (a
                // replay), or an older value of one of their timestamps.
                let reaches = old
                    .as_ref()
                    .and_then(|o| o.last.as_ref())
                    .is_some_and(|l| new.first_ts <= l.ts_ns);
                let retention = self.retention.of(&key.series.tenant);
                if key.start_ns < retention.tier(width).bucket_floor(now_ns, width) {
                    // Expired in its own tier: nothing to keep.
                    continue;
                }
                // Ground truth for this bucket: raw points, or the finer
                // tier's buckets; either may be gone already.
                let source_floor = match tier.checked_sub(1).map(|f| widths[f]) {
                    None => retention.raw.floor(now_ns),
                    Some(finer) => retention.tier(finer).bucket_floor(now_ns, finer),
                };
                let can = key.start_ns >= source_floor;
                let needs_truth = reaches || new.tainted;
                if needs_truth && !can {
                    // Cannot be recomputed: keep what is there.
                    stats.unreconciled += new.rollup.count;
                    continue;
                }
                let (rollup, recomputed) = if needs_truth || (d.recompute && can) {
                    let r = match tier.checked_sub(1) {
                        None => recompute_from_raw(store, &key).await?,
                        Some(finer) => recompute_from_finer(store, &key, widths[finer]).await?,
                    };
                    (r, true)
                } else {
                    let mut r = old.unwrap_or_default();
                    r.merge(&new.rollup);
                    (r, false)
                };
                if recomputed && let Some(&coarser) = widths.get(tier + 1) {
                    next.insert((d.series, bucket_start(key.start_ns, coarser)));
                }
                stats.written += 1;
                stats.recomputed += u64::from(recomputed);
                rows.push((key, rollup));
            }
            // Tier by tier, finest first: a coarser bucket is computed (and
            // stored) only from finer ones already stored.
            store.write_rollups(&rows).await?;
            self.remember(tier, widths.len(), rows);
            recompute_next = next;
        }
        Ok(stats)
    }

    /// The stored rollups of `keys` (all of tier `tier`): from memory when
    /// it holds the bucket, else from the store, in one read.
    async fn stored(
        &self,
        store: &dyn Store,
        tier: usize,
        keys: &[RollupKey],
    ) -> Result<Vec<Option<Rollup>>, StoreError> {
        let mut out = Vec::new();
        let mut missing = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let known = self
                .newest
                .get(&k.series)
                .and_then(|tiers| tiers.get(tier))
                .and_then(Option::as_ref);
            match known {
                Some((start, r)) if *start == k.start_ns => out.push(Some(r.clone())),
                // Even a bucket newer than the newest this processor wrote
                // may be stored (by an earlier run, or another replica).
                _ => {
                    out.push(None);
                    missing.push((i, k.clone()));
                }
            }
        }
        if !missing.is_empty() {
            let keys: Vec<RollupKey> = missing.iter().map(|(_, k)| k.clone()).collect();
            let got = store.get_rollups(&keys).await?;
            for ((i, _), r) in missing.into_iter().zip(got) {
                out[i] = r;
            }
        }
        Ok(out)
    }

    /// Remembers each series' newest written bucket of tier `tier`.
    fn remember(&mut self, tier: usize, tiers: usize, rows: Vec<(RollupKey, Rollup)>) {
        if self.max_remembered == 0 {
            return;
        }
        for (k, r) in rows {
            if self.newest.len() >= self.max_remembered && !self.newest.contains_key(&k.series) {
                self.newest.clear();
            }
            let known = match self.newest.entry(k.series) {
                Entry::Occupied(o) => o.into_mut(),
                Entry::Vacant(v) => v.insert(vec![None; tiers]),
            };
            if known[tier]
                .as_ref()
                .is_none_or(|(start, _)| *start <= k.start_ns)
            {
                known[tier] = Some((k.start_ns, r));
            }
        }
    }
}

/// A finest-tier bucket from its raw points.
async fn recompute_from_raw(store: &dyn Store, key: &RollupKey) -> Result<Rollup, StoreError> {
    let mut rollup = Rollup::default();
    let end = key.start_ns.saturating_add(key.width_ns);
    let mut from = key.start_ns;
    loop {
        let samples = store
            .scan(&key.series, from, end, Order::Asc, RAW_CHUNK)
            .await?;
        for s in &samples {
            rollup.add(s);
        }
        match samples.last() {
            Some(last) if samples.len() == RAW_CHUNK => from = last.ts_ns + 1,
            _ => return Ok(rollup),
        }
    }
}

/// A coarser bucket from the finer tier's stored buckets (written already
/// in this flush).
async fn recompute_from_finer(
    store: &dyn Store,
    key: &RollupKey,
    finer_width: i64,
) -> Result<Rollup, StoreError> {
    let end = key.start_ns.saturating_add(key.width_ns);
    let per = usize::try_from(key.width_ns / finer_width).unwrap_or(usize::MAX);
    let mut rollup = Rollup::default();
    for (_, r) in store
        .scan_rollups(&key.series, finer_width, key.start_ns, end, per)
        .await?
    {
        rollup.merge(&r);
    }
    Ok(rollup)
}
