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
//! A finest-tier bucket older than the raw retention cannot be recomputed
//! (its raw points are gone); a late or replayed point for it is left out
//! and counted (`tributary_processor_rollup_points_unreconciled_total`).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

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
    /// Points written since the last flush, per series, in arrival order.
    pending: HashMap<SeriesKey, Vec<Sample>>,
    /// Each series' newest stored bucket per tier, as written.
    newest: HashMap<SeriesKey, Vec<Option<(i64, Rollup)>>>,
    /// Most series `newest` remembers; it is emptied when full.
    max_remembered: usize,
    /// Raw points older than this are gone (nanoseconds of retention).
    raw_retention_ns: Option<i64>,
}

/// A bucket to bring up to date.
#[derive(Debug)]
struct Dirty {
    /// The new points in it (deduplicated, ascending), when incremental.
    points: Vec<Sample>,
    /// Whether it must be computed again from ground truth.
    recompute: bool,
}

impl Rollups {
    /// Rollups over `tiers`; `raw_retention` is the raw points' retention.
    pub fn new(
        tiers: Tiers,
        raw_retention: Option<std::time::Duration>,
        max_remembered: usize,
    ) -> Self {
        Self {
            tiers,
            pending: HashMap::new(),
            newest: HashMap::new(),
            max_remembered,
            raw_retention_ns: raw_retention.and_then(|r| i64::try_from(r.as_nanos()).ok()),
        }
    }

    /// Forgets what it remembers of stored buckets: another processor may
    /// have written them since (the log's partitions moved).
    pub fn forget(&mut self) {
        self.newest.clear();
    }

    /// Whether any tier is configured.
    pub fn enabled(&self) -> bool {
        !self.tiers.is_empty()
    }

    /// Notes the points of a batch the store has written.
    pub fn note(&mut self, batch: &[DevicePoints]) {
        if !self.enabled() {
            return;
        }
        for dp in batch {
            for p in &dp.points {
                let key = SeriesKey::new(dp.tenant.as_str(), dp.device.as_str(), p.metric.as_str());
                self.pending.entry(key).or_default().push(Sample {
                    ts_ns: p.ts_ns,
                    value: p.value.clone(),
                });
            }
        }
    }

    /// Brings every bucket the noted points touch up to date, durably.
    pub async fn flush(
        &mut self,
        store: &dyn Store,
        now_ns: i64,
    ) -> Result<RollupFlush, StoreError> {
        let mut stats = RollupFlush::default();
        if self.pending.is_empty() {
            return Ok(stats);
        }
        let raw_floor = self
            .raw_retention_ns
            .map_or(i64::MIN, |r| now_ns.saturating_sub(r));
        let widths = self.tiers.widths().to_vec();
        // Per series: the new points, the last write of a timestamp winning.
        // The noted points stay until the rollups are written: a failed
        // flush is retried whole.
        let mut fresh: BTreeMap<SeriesKey, Vec<Sample>> = BTreeMap::new();
        for (series, points) in &self.pending {
            let mut by_ts: BTreeMap<i64, &Sample> = BTreeMap::new();
            for p in points {
                by_ts.insert(p.ts_ns, p);
            }
            fresh.insert(series.clone(), by_ts.into_values().cloned().collect());
        }
        let mut rows: Vec<(RollupKey, Rollup)> = Vec::new();
        // The buckets of the tier before, as computed in this flush, and
        // whether each was recomputed.
        let mut finer: BTreeMap<RollupKey, (Rollup, bool)> = BTreeMap::new();
        for (tier, &width) in widths.iter().enumerate() {
            let mut dirty: BTreeMap<RollupKey, Dirty> = BTreeMap::new();
            for (series, points) in &fresh {
                for p in points {
                    let key = RollupKey {
                        series: series.clone(),
                        width_ns: width,
                        start_ns: bucket_start(p.ts_ns, width),
                    };
                    dirty
                        .entry(key)
                        .or_insert_with(|| Dirty {
                            points: Vec::new(),
                            recompute: false,
                        })
                        .points
                        .push(p.clone());
                }
            }
            if tier > 0 {
                // A coarser bucket holding a recomputed finer one is
                // recomputed from the finer tier.
                for (k, (_, recomputed)) in &finer {
                    if *recomputed {
                        let key = RollupKey {
                            series: k.series.clone(),
                            width_ns: width,
                            start_ns: bucket_start(k.start_ns, width),
                        };
                        if let Some(d) = dirty.get_mut(&key) {
                            d.recompute = true;
                        }
                    }
                }
            }
            let stored = self.stored(store, tier, dirty.keys()).await?;
            let mut computed: BTreeMap<RollupKey, (Rollup, bool)> = BTreeMap::new();
            for ((key, d), old) in dirty.into_iter().zip(stored) {
                let reaches = old.as_ref().is_some_and(|o| {
                    o.last
                        .as_ref()
                        .is_some_and(|l| d.points.first().is_some_and(|p| p.ts_ns <= l.ts_ns))
                });
                let (rollup, recomputed) = if tier == 0 && reaches {
                    if key.start_ns < raw_floor {
                        // The raw points are gone: keep what is there.
                        stats.unreconciled += d.points.len() as u64;
                        continue;
                    }
                    (recompute_from_raw(store, &key).await?, true)
                } else if tier > 0 && (d.recompute || reaches) {
                    let finer_width = widths[tier - 1];
                    (
                        recompute_from_finer(store, &key, finer_width, &finer).await?,
                        true,
                    )
                } else {
                    let mut r = old.unwrap_or_default();
                    r.merge(&Rollup::of(&d.points));
                    (r, false)
                };
                stats.written += 1;
                stats.recomputed += u64::from(recomputed);
                computed.insert(key, (rollup, recomputed));
            }
            rows.extend(computed.iter().map(|(k, (r, _))| (k.clone(), r.clone())));
            finer = computed;
        }
        store.write_rollups(&rows).await?;
        self.pending.clear();
        self.remember(&widths, rows);
        Ok(stats)
    }

    /// The stored rollups of `keys` (all of tier `tier`): from memory when
    /// it holds the bucket, else from the store, in one read.
    async fn stored<'k>(
        &self,
        store: &dyn Store,
        tier: usize,
        keys: impl Iterator<Item = &'k RollupKey>,
    ) -> Result<Vec<Option<Rollup>>, StoreError> {
        let mut out = Vec::new();
        let mut missing = Vec::new();
        for (i, k) in keys.enumerate() {
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

    /// Remembers each series' newest written bucket per tier.
    fn remember(&mut self, widths: &[i64], rows: Vec<(RollupKey, Rollup)>) {
        if self.max_remembered == 0 {
            return;
        }
        for (k, r) in rows {
            let Some(tier) = widths.iter().position(|w| *w == k.width_ns) else {
                continue;
            };
            if self.newest.len() >= self.max_remembered && !self.newest.contains_key(&k.series) {
                self.newest.clear();
            }
            let tiers = match self.newest.entry(k.series) {
                Entry::Occupied(o) => o.into_mut(),
                Entry::Vacant(v) => v.insert(vec![None; widths.len()]),
            };
            if tiers[tier]
                .as_ref()
                .is_none_or(|(start, _)| *start <= k.start_ns)
            {
                tiers[tier] = Some((k.start_ns, r));
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

/// A coarser bucket from the finer tier: the stored finer buckets, with
/// those computed in this flush in their place.
async fn recompute_from_finer(
    store: &dyn Store,
    key: &RollupKey,
    finer_width: i64,
    computed: &BTreeMap<RollupKey, (Rollup, bool)>,
) -> Result<Rollup, StoreError> {
    let end = key.start_ns.saturating_add(key.width_ns);
    let per = usize::try_from(key.width_ns / finer_width).unwrap_or(usize::MAX);
    let mut parts: BTreeMap<i64, Rollup> = store
        .scan_rollups(&key.series, finer_width, key.start_ns, end, per)
        .await?
        .into_iter()
        .collect();
    let lo = RollupKey {
        series: key.series.clone(),
        width_ns: finer_width,
        start_ns: key.start_ns,
    };
    for (k, (r, _)) in computed.range(lo..) {
        if k.series != key.series || k.start_ns >= end {
            break;
        }
        parts.insert(k.start_ns, r.clone());
    }
    let mut rollup = Rollup::default();
    for r in parts.values() {
        rollup.merge(r);
    }
    Ok(rollup)
}
