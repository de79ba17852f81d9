//! `Aggregate`: windowed statistics of many series, optionally merged by a
//! device label.
//!
//! Windows are aligned to multiples of the window width since the Unix epoch
//! (a `1h` window starts on the hour, UTC), so the same bucket means the same
//! interval in every query; the first bucket may start before `from_ns` but
//! only counts samples inside the range. Without a window there is one bucket
//! that starts at `from_ns`. Only windows with samples produce a bucket.
//!
//! Each series is read into its own buckets, which are then merged into its
//! group: the device itself, or the value of `group_by_label` (devices
//! without the label form the group `""`). Memory is bounded by the bucket
//! limit, time by the limit on scanned samples (raw points and rollup
//! buckets alike).
//!
//! **The planner** ([`plan`]) reads rollups where it can. A tier whose width
//! divides the window has buckets that each lie in one window, so the
//! windows are exactly the merge of those buckets. It takes the coarsest
//! such tier for the part of the range its buckets cover whole, and the
//! finer tiers, then raw points, for the partial edges. Buckets that end
//! less than `rollup_min_age` ago are read raw: the processor may not have
//! rolled them up yet. Every window holds a [`Rollup`], filled sample by
//! sample from raw points or merged from stored buckets, so both paths
//! compute the same statistics the same way.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{StreamExt as _, TryStreamExt as _};

use tributary_core::directory::DeviceInfo;
use tributary_core::model::validate_label;
use tributary_core::rollup::{Parts, Rollup, width_name};
use tributary_core::time::parse_duration;
use tributary_core::{Sample, SeriesKey};
use tributary_proto::v1 as pb;
use tributary_store::{Order, RollupFold as _, Store};

use crate::error::QueryError;
use crate::range::sample_to_pb;
use crate::target::{TimeRange, parse_metrics};

/// Which functions a request asked for, as a bit set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Functions(u8);

impl Functions {
    const MIN: u8 = 1;
    const MAX: u8 = 1 << 1;
    const AVG: u8 = 1 << 2;
    const SUM: u8 = 1 << 3;
    const FIRST: u8 = 1 << 4;
    const LAST: u8 = 1 << 5;
    const STDDEV: u8 = 1 << 6;

    /// Parses the request's `functions`. `COUNT` is always computed.
    pub(crate) fn parse(raw: &[i32]) -> Result<Self, QueryError> {
        use pb::AggregateFunction as F;
        let mut bits = 0;
        for (i, f) in raw.iter().enumerate() {
            bits |= match F::try_from(*f) {
                Ok(F::Min) => Self::MIN,
                Ok(F::Max) => Self::MAX,
                Ok(F::Avg) => Self::AVG,
                Ok(F::Sum) => Self::SUM,
                Ok(F::Count) => 0,
                Ok(F::First) => Self::FIRST,
                Ok(F::Last) => Self::LAST,
                Ok(F::Stddev) => Self::STDDEV,
                Ok(F::Unspecified) | Err(_) => {
                    return Err(QueryError::invalid(
                        format!("functions[{i}]"),
                        format!(
                            "unknown aggregate function {f}; use MIN, MAX, AVG, SUM, COUNT, FIRST, LAST or STDDEV"
                        ),
                    ));
                }
            };
        }
        Ok(Self(bits))
    }

    fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }

    /// The parts of a rollup these functions read.
    fn parts(self) -> Parts {
        Parts {
            spread: self.has(Self::STDDEV),
            ends: self.has(Self::FIRST) || self.has(Self::LAST),
        }
    }
}

/// A validated `AggregateRequest`.
#[derive(Debug, Clone)]
pub(crate) struct AggregateQuery {
    /// Sorted; empty means every metric of each device.
    pub(crate) metrics: Vec<String>,
    pub(crate) range: TimeRange,
    /// Window width in ns; `None` is one window over the range.
    pub(crate) window: Option<i64>,
    pub(crate) functions: Functions,
    pub(crate) group_by: Option<String>,
    /// `tier = "raw"`: no rollups.
    pub(crate) raw_only: bool,
    /// Per-device values combined across a group's devices
    /// (`combine_devices`), rather than samples pooled.
    pub(crate) combine: Option<Combine>,
}

/// How a group combines its devices' per-window values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Combine {
    /// The function applied to each device's window: one of
    /// `Functions::{MIN, MAX, AVG, SUM}`.
    per_device: u8,
    /// How the devices' values combine.
    op: pb::DeviceCombine,
}

impl Combine {
    fn parse(req: &pb::AggregateRequest, functions: Functions) -> Result<Option<Self>, QueryError> {
        let op = pb::DeviceCombine::try_from(req.combine_devices).map_err(|_| {
            QueryError::invalid(
                "combine_devices",
                format!("unknown value {}", req.combine_devices),
            )
        })?;
        if op == pb::DeviceCombine::Pooled {
            return Ok(None);
        }
        if req.group_by_label.is_empty() {
            return Err(QueryError::invalid(
                "combine_devices",
                "combines the devices of a group: set group_by_label",
            ));
        }
        let per_device = functions.0;
        if ![
            Functions::MIN,
            Functions::MAX,
            Functions::AVG,
            Functions::SUM,
        ]
        .contains(&per_device)
            || req.functions.len() != 1
        {
            return Err(QueryError::invalid(
                "functions",
                "with combine_devices, exactly one of MIN, MAX, AVG or SUM: the value each device's window is reduced to",
            ));
        }
        Ok(Some(Self { per_device, op }))
    }

    /// A device's window reduced to its value.
    fn value(self, r: &Rollup) -> Option<f64> {
        if r.numeric == 0 {
            return None;
        }
        Some(match self.per_device {
            Functions::MIN => r.min,
            Functions::MAX => r.max,
            Functions::AVG => r.avg()?,
            _ => r.sum,
        })
    }

    /// The bucket of a group's pooled per-device values.
    fn to_pb(self, pooled: &Rollup, start_ns: i64) -> pb::AggregateBucket {
        let v = match self.op {
            pb::DeviceCombine::Avg => pooled.avg(),
            pb::DeviceCombine::Sum => Some(pooled.sum),
            pb::DeviceCombine::Min => Some(pooled.min),
            pb::DeviceCombine::Max => Some(pooled.max),
            pb::DeviceCombine::Count | pb::DeviceCombine::Pooled => Some(pooled.count as f64),
        }
        .filter(|_| pooled.numeric > 0);
        let mut b = pb::AggregateBucket {
            start_ns,
            count: pooled.count,
            ..Default::default()
        };
        match self.per_device {
            Functions::MIN => b.min = v,
            Functions::MAX => b.max = v,
            Functions::AVG => b.avg = v,
            _ => b.sum = v,
        }
        b
    }
}

impl AggregateQuery {
    /// Validates a request. `now_ns` resolves `to_ns = 0`; a range that spans
    /// more than `max_buckets` windows is refused before anything is read.
    pub(crate) fn from_pb(
        req: &pb::AggregateRequest,
        max_metrics: usize,
        max_buckets: usize,
        now_ns: i64,
    ) -> Result<Self, QueryError> {
        let metrics = parse_metrics(&req.metrics, max_metrics)?;
        let range = TimeRange::new(req.from_ns, req.to_ns, now_ns)?;
        let window = if req.window.trim().is_empty() {
            None
        } else {
            Some(parse_duration(&req.window).ok_or_else(|| {
                QueryError::invalid(
                    "window",
                    format!(
                        "{:?} is not a duration such as 10s, 1m, 1h or 1d",
                        req.window
                    ),
                )
            })?)
        };
        let functions = Functions::parse(&req.functions)?;
        let group_by = if req.group_by_label.is_empty() {
            None
        } else {
            validate_label(&req.group_by_label, "")
                .map_err(|e| QueryError::invalid("group_by_label", e.message))?;
            Some(req.group_by_label.clone())
        };
        let raw_only = match req.tier.trim() {
            "" | "auto" => false,
            "raw" => true,
            other => {
                return Err(QueryError::invalid(
                    "tier",
                    format!("{other:?}: leave it empty for the planner, or \"raw\""),
                ));
            }
        };
        let combine = Combine::parse(req, functions)?;
        let query = Self {
            metrics,
            range,
            window,
            functions,
            group_by,
            raw_only,
            combine,
        };
        let windows = query.window_count();
        if windows > max_buckets as u128 {
            return Err(QueryError::invalid(
                "window",
                format!(
                    "the range spans {windows} windows of {}, more than the limit of {max_buckets}; use a wider window or a shorter range",
                    req.window.trim()
                ),
            ));
        }
        Ok(query)
    }

    /// The start of the window that holds `ts_ns`.
    pub(crate) fn window_start(&self, ts_ns: i64) -> i64 {
        match self.window {
            Some(w) => ts_ns.saturating_sub(ts_ns.rem_euclid(w)),
            None => self.range.from_ns,
        }
    }

    /// How many windows the range touches.
    fn window_count(&self) -> u128 {
        let TimeRange { from_ns, to_ns } = self.range;
        match self.window {
            _ if from_ns >= to_ns => 0,
            None => 1,
            Some(w) => {
                let first = i128::from(self.window_start(from_ns));
                let last = i128::from(self.window_start(to_ns - 1));
                ((last - first) / i128::from(w) + 1).unsigned_abs()
            }
        }
    }
}

/// What bounds the work of one `Aggregate`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    /// Most buckets in the response.
    pub(crate) max_buckets: usize,
    /// Most samples read from the store.
    pub(crate) max_scanned_points: u64,
    /// Samples per store scan.
    pub(crate) scan_chunk: usize,
    /// Batches of devices read at once.
    pub(crate) concurrency: usize,
}

/// Where rollups may be read from.
#[derive(Debug, Clone)]
pub(crate) struct Tiering {
    /// The stored tiers, finest first: width, and from when its buckets
    /// are complete (the store's `rollups_since`) and still kept.
    pub(crate) tiers: Vec<(i64, i64)>,
    /// Buckets ending after this are read raw (not rolled up yet, maybe).
    pub(crate) horizon_ns: i64,
    /// Raw points before this have expired.
    pub(crate) raw_floor_ns: i64,
    /// Per tier width: buckets starting before this have expired.
    pub(crate) tier_floors: Vec<(i64, i64)>,
}

impl Default for Tiering {
    fn default() -> Self {
        Self {
            tiers: Vec::new(),
            horizon_ns: 0,
            raw_floor_ns: i64::MIN,
            tier_floors: Vec::new(),
        }
    }
}

impl Tiering {
    /// The oldest time any of `usable` tiers, or raw points, still hold.
    fn kept_from(&self, usable: &[(i64, i64)]) -> i64 {
        usable
            .iter()
            .map(|(w, _)| {
                self.tier_floors
                    .iter()
                    .find(|(fw, _)| fw == w)
                    .map_or(i64::MIN, |(_, f)| *f)
            })
            .fold(self.raw_floor_ns, i64::min)
    }
}

/// One part of a series' range, and where it is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Piece {
    /// Raw points in `[from, to)`.
    Raw(i64, i64),
    /// Buckets of the tier of this width starting in `[from, to)`.
    Tier(i64, i64, i64),
}

/// The pieces of `[from, to)`, in time order: the coarsest usable tier for
/// the buckets it covers whole, finer tiers then raw points at the edges.
/// `tiers` are the usable tiers, finest first, each with the time its
/// buckets are complete from; rollup buckets end at or before `horizon`.
pub(crate) fn plan(from: i64, to: i64, tiers: &[(i64, i64)], horizon: i64) -> Vec<Piece> {
    let mut out = Vec::new();
    split(from, to, tiers, horizon, &mut out);
    out
}

fn split(from: i64, to: i64, tiers: &[(i64, i64)], horizon: i64, out: &mut Vec<Piece>) {
    if from >= to {
        return;
    }
    let Some((&(width, since), finer)) = tiers.split_last() else {
        out.push(Piece::Raw(from, to));
        return;
    };
    let ceil = |t: i64| {
        let r = t.rem_euclid(width);
        if r == 0 {
            Some(t)
        } else {
            t.checked_add(width - r)
        }
    };
    let floor = |t: i64| t - t.rem_euclid(width);
    let (Some(a), b) = (ceil(from.max(since)), floor(to.min(horizon))) else {
        split(from, to, finer, horizon, out);
        return;
    };
    if a >= b {
        split(from, to, finer, horizon, out);
        return;
    }
    split(from, a, finer, horizon, out);
    out.push(Piece::Tier(width, a, b));
    split(b, to, finer, horizon, out);
}

fn to_pb(r: &Rollup, start_ns: i64, f: Functions) -> pb::AggregateBucket {
    let numeric = |bit: u8, v: Option<f64>| v.filter(|_| f.has(bit) && r.numeric > 0);
    let sample = |bit: u8, s: &Option<Sample>| s.clone().filter(|_| f.has(bit)).map(sample_to_pb);
    pb::AggregateBucket {
        start_ns,
        count: r.count,
        min: numeric(Functions::MIN, Some(r.min)),
        max: numeric(Functions::MAX, Some(r.max)),
        avg: numeric(Functions::AVG, r.avg()),
        sum: numeric(Functions::SUM, Some(r.sum)),
        first: sample(Functions::FIRST, &r.first),
        last: sample(Functions::LAST, &r.last),
        stddev: numeric(Functions::STDDEV, r.stddev()),
    }
}

/// The buckets of one (group, metric), sorted by start.
#[derive(Debug, Default)]
struct GroupSeries {
    devices: u32,
    buckets: Vec<(i64, Rollup)>,
}

impl GroupSeries {
    /// Merges one series' windows (sorted by start) in; returns how many
    /// buckets that added. Linear, and one pass in the common case, where
    /// the devices of a group share their windows and merge in place.
    fn merge(&mut self, windows: Vec<(i64, Rollup)>, parts: Parts) -> usize {
        if self.buckets.is_empty() {
            self.buckets = windows;
            return self.buckets.len();
        }
        let mut windows = windows.into_iter();
        let mut at = 0;
        let mut rest = None;
        for (start, r) in windows.by_ref() {
            while self.buckets.get(at).is_some_and(|(s, _)| *s < start) {
                at += 1;
            }
            match self.buckets.get_mut(at) {
                Some((s, into)) if *s == start => into.merge_parts(&r, parts),
                _ => {
                    rest = Some((start, r));
                    break;
                }
            }
        }
        let Some(first) = rest else {
            return 0;
        };
        // A window the group lacks: merge the rest into a new run.
        let before = self.buckets.len();
        let mut merged = Vec::with_capacity(before + windows.len() + 1);
        let mut mine = std::mem::take(&mut self.buckets).into_iter().peekable();
        for (start, r) in std::iter::once(first).chain(windows) {
            while let Some(b) = mine.next_if(|(s, _)| *s < start) {
                merged.push(b);
            }
            match mine.next_if(|(s, _)| *s == start) {
                Some((s, mut into)) => {
                    into.merge_parts(&r, parts);
                    merged.push((s, into));
                }
                None => merged.push((start, r)),
            }
        }
        merged.extend(mine);
        self.buckets = merged;
        self.buckets.len() - before
    }
}

/// Aggregates `query` over `devices` of `tenant`.
pub(crate) async fn run(
    store: &dyn Store,
    tenant: &str,
    devices: &[DeviceInfo],
    query: &AggregateQuery,
    budget: Budget,
    tiering: &Tiering,
) -> Result<pb::AggregateResponse, QueryError> {
    let usable: Vec<(i64, i64)> = if query.raw_only {
        Vec::new()
    } else {
        tiering
            .tiers
            .iter()
            .copied()
            .filter(|(w, _)| query.window.is_none_or(|window| window % w == 0))
            .collect()
    };
    let pieces = plan(
        query.range.from_ns,
        query.range.to_ns,
        &usable,
        tiering.horizon_ns,
    );
    let tier = pieces
        .iter()
        .filter_map(|p| match p {
            Piece::Tier(width, ..) => Some(*width),
            Piece::Raw(..) => None,
        })
        .max()
        .map_or_else(|| "raw".to_owned(), width_name);
    let mut groups: BTreeMap<(String, String), GroupSeries> = BTreeMap::new();
    let mut buckets = 0usize;
    let scanned = AtomicU64::new(0);
    // Batches of devices, `concurrency` at a time, merged in device order.
    // (Indices, not references: a closure over borrowed items trips the
    // compiler's higher-ranked lifetime check in `async_trait` methods.)
    let chunks: Vec<&[DeviceInfo]> = devices.chunks(BATCH_DEVICES).collect();
    let mut batches = std::pin::pin!(
        futures::stream::iter(0..chunks.len())
            .map(|i| read_devices(store, tenant, chunks[i], query, &pieces, budget, &scanned))
            .buffered(budget.concurrency.max(1))
    );
    while let Some(batch) = batches.try_next().await? {
        for (key, devices, windows) in batch {
            let into = groups.entry(key).or_default();
            into.devices = into.devices.saturating_add(devices);
            buckets += into.merge(windows, query.functions.parts());
            if buckets > budget.max_buckets {
                return Err(too_many_buckets(budget.max_buckets));
            }
        }
    }
    let series = groups
        .into_iter()
        .map(|((group, metric), s)| pb::AggregateSeries {
            group,
            metric,
            devices: s.devices,
            buckets: s
                .buckets
                .iter()
                .filter(|(_, acc)| acc.count > 0)
                .map(|(start, acc)| match query.combine {
                    Some(c) => c.to_pb(acc, *start),
                    None => to_pb(acc, *start, query.functions),
                })
                .collect(),
        })
        .collect();
    let kept_from = tiering.kept_from(&usable);
    Ok(pb::AggregateResponse {
        series,
        tier,
        retained_from_ns: if query.range.from_ns < kept_from {
            kept_from
        } else {
            0
        },
    })
}

/// Devices read together: one store read per rollup piece for all their
/// series.
const BATCH_DEVICES: usize = 64;

/// What a batch of devices read: per (group, metric), how many devices had
/// samples, and the windows of them all merged.
type BatchGroups = Vec<((String, String), u32, Vec<(i64, Rollup)>)>;

/// The windows of every requested metric of `devices`, merged per (group,
/// metric) in device order. Rollup pieces are read for all their series at
/// once and merged as they are read (`Store::fold_rollups_many`); raw
/// pieces series by series.
async fn read_devices(
    store: &dyn Store,
    tenant: &str,
    devices: &[DeviceInfo],
    query: &AggregateQuery,
    pieces: &[Piece],
    budget: Budget,
    scanned: &AtomicU64,
) -> Result<BatchGroups, QueryError> {
    let mut keys: Vec<SeriesKey> = Vec::new();
    let mut fold = BatchFold {
        window: query.window,
        parts: query.functions.parts(),
        from_ns: query.range.from_ns,
        max: budget.max_buckets,
        ..BatchFold::default()
    };
    let mut slots: HashMap<(String, String), usize> = HashMap::new();
    // With `combine`: the (group, metric) slots the devices' values go to.
    let mut group_slots: HashMap<(String, String), usize> = HashMap::new();
    for device in devices {
        let metrics = if query.metrics.is_empty() {
            store.list_metrics(tenant, &device.id).await?
        } else {
            query.metrics.clone()
        };
        let label = |label: &String| device.labels.get(label).cloned().unwrap_or_default();
        // Combined: each device's own windows (when a window is read from
        // finer pieces), and its group's.
        let (group, real_group) = match &query.group_by {
            Some(l) if query.combine.is_some() => (device.id.clone(), Some(label(l))),
            Some(l) => (label(l), None),
            None => (device.id.clone(), None),
        };
        for metric in metrics {
            keys.push(SeriesKey::new(tenant, device.id.as_str(), metric.as_str()));
            if let Some(real) = &real_group {
                let next = fold.group_slots.len();
                let slot = *group_slots
                    .entry((real.clone(), metric.clone()))
                    .or_insert(next);
                if slot == next {
                    fold.group_slots.push(Slot::default());
                }
                fold.group_slot_of.push(slot);
            }
            let next = fold.slots.len();
            let slot = *slots.entry((group.clone(), metric)).or_insert(next);
            if slot == next {
                fold.slots.push(Slot::default());
            }
            fold.slot_of.push(slot);
        }
    }
    fold.seen = vec![false; keys.len()];
    for piece in pieces {
        match *piece {
            Piece::Raw(from, to) => {
                fold.direct = None;
                for (i, key) in keys.iter().enumerate() {
                    let mut w = Windows {
                        query,
                        max: budget.max_buckets,
                        out: Vec::new(),
                    };
                    scan_raw(store, key, from, to, budget, scanned, &mut w).await?;
                    for (start, r) in &w.out {
                        fold.bucket(i, *start, r);
                    }
                }
            }
            Piece::Tier(width, from, to) => {
                // A bucket as wide as the window is a device's whole
                // window: its value goes straight to its group.
                fold.direct = query.combine.filter(|_| query.window == Some(width));
                let most = usize::try_from((to - from) / width).unwrap_or(usize::MAX);
                let read_before = fold.read;
                let folded: Box<dyn std::any::Any> = store
                    .fold_rollups_many(&keys, width, from, to, most, Box::new(fold))
                    .await?;
                fold = *folded.downcast::<BatchFold>().map_err(|_| {
                    QueryError::Internal("a store returned another rollup fold".into())
                })?;
                charge(scanned, fold.read - read_before, budget)?;
            }
        }
        if fold.buckets > fold.max {
            return Err(too_many_buckets(fold.max));
        }
    }
    let Some(c) = query.combine else {
        let mut devices = vec![0u32; fold.slots.len()];
        for (i, seen) in fold.seen.iter().enumerate() {
            if *seen {
                devices[fold.slot_of[i]] += 1;
            }
        }
        return Ok(in_slot_order(slots)
            .into_iter()
            .zip(fold.slots)
            .zip(devices)
            .filter(|((_, s), n)| *n > 0 && !s.buckets.is_empty())
            .map(|((key, s), n)| (key, n, s.buckets))
            .collect());
    };
    // Combined: each device's window becomes one sample, its value, in its
    // group; pooling those combines the devices. Windows read whole went
    // there as they came; the others, assembled per device, go now.
    let mut devices = vec![0u32; fold.group_slots.len()];
    for (i, seen) in fold.seen.iter().enumerate() {
        if *seen {
            devices[fold.group_slot_of[i]] += 1;
        }
    }
    let mut groups: Vec<GroupSeries> = fold
        .group_slots
        .into_iter()
        .zip(&devices)
        .map(|(s, &devices)| GroupSeries {
            devices,
            buckets: s.buckets,
        })
        .collect();
    // Each device's own slot, to its group's.
    let mut group_of_slot = vec![0; fold.slots.len()];
    for (&slot, &group) in fold.slot_of.iter().zip(&fold.group_slot_of) {
        group_of_slot[slot] = group;
    }
    for (own, &g) in fold.slots.into_iter().zip(&group_of_slot) {
        let windows: Vec<(i64, Rollup)> = own
            .buckets
            .into_iter()
            .filter_map(|(start, r)| {
                let mut one = Rollup::default();
                one.add_number(c.value(&r)?);
                Some((start, one))
            })
            .collect();
        groups[g].merge(windows, query.functions.parts());
    }
    Ok(in_slot_order(group_slots)
        .into_iter()
        .zip(groups)
        .filter(|(_, g)| g.devices > 0 && !g.buckets.is_empty())
        .map(|(key, g)| (key, g.devices, g.buckets))
        .collect())
}

/// The keys of a slot map, in slot order.
fn in_slot_order(slots: HashMap<(String, String), usize>) -> Vec<(String, String)> {
    let mut keyed: Vec<((String, String), usize)> = slots.into_iter().collect();
    keyed.sort_unstable_by_key(|(_, slot)| *slot);
    keyed.into_iter().map(|(key, _)| key).collect()
}

/// A batch's windows per (group, metric) slot, merged as buckets arrive.
#[derive(Default)]
struct BatchFold {
    window: Option<i64>,
    /// What the requested functions read.
    parts: Parts,
    /// The window of the last bucket (empty at first).
    last_window: std::ops::Range<i64>,
    from_ns: i64,
    /// Per series (index into the batch's keys), its slot.
    slot_of: Vec<usize>,
    /// Per series, whether it had a sample.
    seen: Vec<bool>,
    slots: Vec<Slot>,
    /// With `combine`: per series, its group's slot in `group_slots`.
    group_slot_of: Vec<usize>,
    /// With `combine`: each (group, metric)'s pooled device values.
    group_slots: Vec<Slot>,
    /// Set while reading buckets that are whole windows of a combined
    /// query: each goes to its group as its device's value.
    direct: Option<Combine>,
    /// Buckets received, for the scan budget.
    read: usize,
    /// Windows held, against `max`.
    buckets: usize,
    max: usize,
}

/// One (group, metric)'s windows, sorted by start.
#[derive(Default)]
struct Slot {
    buckets: Vec<(i64, Rollup)>,
    /// Where the last bucket went: the next one usually goes just after.
    hint: usize,
}

impl tributary_store::RollupFold for BatchFold {
    fn parts(&self) -> Parts {
        self.parts
    }

    fn bucket(&mut self, series: usize, start_ns: i64, rollup: &Rollup) {
        self.read += 1;
        if rollup.count == 0 || self.buckets > self.max {
            return;
        }
        let (Some(&slot), Some(seen)) = (self.slot_of.get(series), self.seen.get_mut(series))
        else {
            return;
        };
        *seen = true;
        let start = match self.window {
            // Consecutive buckets mostly share a window: no division then.
            Some(_) if self.last_window.contains(&start_ns) => self.last_window.start,
            Some(w) => {
                let at = start_ns.saturating_sub(start_ns.rem_euclid(w));
                self.last_window = at..at.saturating_add(w);
                at
            }
            None => self.from_ns,
        };
        if let Some(c) = self.direct {
            let (Some(&group), Some(v)) = (self.group_slot_of.get(series), c.value(rollup)) else {
                return;
            };
            let (window, added) = self.group_slots[group].window(start);
            window.add_number(v);
            self.buckets += usize::from(added);
            return;
        }
        let (window, added) = self.slots[slot].window(start);
        window.merge_parts(rollup, self.parts);
        self.buckets += usize::from(added);
    }
}

impl Slot {
    /// The window starting at `start`, added if new (and whether it was).
    fn window(&mut self, start: i64) -> (&mut Rollup, bool) {
        let found = [self.hint, self.hint + 1]
            .into_iter()
            .find(|&i| self.buckets.get(i).is_some_and(|(b, _)| *b == start));
        let (at, added) = match found {
            Some(i) => (i, false),
            None if self.buckets.last().is_none_or(|(b, _)| *b < start) => {
                self.buckets.push((start, Rollup::default()));
                (self.buckets.len() - 1, true)
            }
            None => match self.buckets.binary_search_by_key(&start, |(b, _)| *b) {
                Ok(i) => (i, false),
                Err(i) => {
                    self.buckets.insert(i, (start, Rollup::default()));
                    (i, true)
                }
            },
        };
        self.hint = at;
        (&mut self.buckets[at].1, added)
    }
}

/// Counts what a read returned against the budget (shared by the devices
/// read at once).
fn charge(scanned: &AtomicU64, n: usize, budget: Budget) -> Result<(), QueryError> {
    let total = scanned.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
    if total > budget.max_scanned_points {
        return Err(QueryError::ResourceExhausted {
            subject: "points_scanned",
            message: format!(
                "the aggregate would read more than {} stored points; use a shorter range, fewer metrics or a narrower target",
                budget.max_scanned_points
            ),
        });
    }
    Ok(())
}

/// A series' windows being filled, in time order.
struct Windows<'q> {
    query: &'q AggregateQuery,
    max: usize,
    out: Vec<(i64, Rollup)>,
}

impl Windows<'_> {
    fn slot(&mut self, ts: i64) -> Result<&mut Rollup, QueryError> {
        let start = self.query.window_start(ts);
        if self.out.last().is_none_or(|(s, _)| *s != start) {
            if self.out.len() >= self.max {
                return Err(too_many_buckets(self.max));
            }
            self.out.push((start, Rollup::default()));
        }
        Ok(&mut self.out.last_mut().expect("just pushed").1)
    }

    fn add(&mut self, sample: &Sample) -> Result<(), QueryError> {
        self.slot(sample.ts_ns)?.add(sample);
        Ok(())
    }
}

/// Reads raw points of `[from, to)` in chunks into the windows.
async fn scan_raw(
    store: &dyn Store,
    key: &SeriesKey,
    mut from_ns: i64,
    to_ns: i64,
    budget: Budget,
    scanned: &AtomicU64,
    windows: &mut Windows<'_>,
) -> Result<(), QueryError> {
    let chunk = budget.scan_chunk.max(1);
    while from_ns < to_ns {
        // Ask for one more than the budget allows, to notice going over it.
        let allowed = budget
            .max_scanned_points
            .saturating_sub(scanned.load(Ordering::Relaxed))
            .saturating_add(1);
        let want = usize::try_from(allowed).map_or(chunk, |a| a.min(chunk));
        let samples = store.scan(key, from_ns, to_ns, Order::Asc, want).await?;
        charge(scanned, samples.len(), budget)?;
        let got = samples.len();
        let Some(last_ts) = samples.last().map(|s| s.ts_ns) else {
            break;
        };
        for sample in &samples {
            windows.add(sample)?;
        }
        match last_ts.checked_add(1) {
            Some(next) if got == want => from_ns = next,
            _ => break,
        }
    }
    Ok(())
}

fn too_many_buckets(max: usize) -> QueryError {
    QueryError::invalid(
        "window",
        format!(
            "the result has more than {max} buckets; use a wider window, a shorter range or fewer series"
        ),
    )
}

#[cfg(test)]
mod tests {
    use tributary_core::Value;

    use super::*;
    use crate::testkit::MemStore;

    const BUDGET: Budget = Budget {
        max_buckets: 1000,
        max_scanned_points: 1_000_000,
        scan_chunk: 2,
        concurrency: 3,
    };

    fn device(id: &str, labels: &[(&str, &str)]) -> DeviceInfo {
        DeviceInfo {
            id: id.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            disabled: false,
        }
    }

    fn request(
        from_ns: i64,
        to_ns: i64,
        window: &str,
        functions: &[pb::AggregateFunction],
    ) -> pb::AggregateRequest {
        pb::AggregateRequest {
            from_ns,
            to_ns,
            window: window.into(),
            functions: functions.iter().map(|f| *f as i32).collect(),
            ..Default::default()
        }
    }

    fn query(req: &pb::AggregateRequest) -> AggregateQuery {
        AggregateQuery::from_pb(req, 100, 1000, 1_000_000).unwrap()
    }

    fn field_of(err: QueryError) -> String {
        match err {
            QueryError::InvalidArgument { field, .. } => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    fn floats(points: &[(i64, f64)]) -> Vec<(i64, Value)> {
        points.iter().map(|(t, v)| (*t, Value::F64(*v))).collect()
    }

    use pb::AggregateFunction as F;

    #[test]
    fn windows_align_to_the_epoch() {
        let q = query(&request(5, 35, "10ns", &[]));
        let starts: Vec<_> = [5, 9, 10, 19, 20, 34]
            .iter()
            .map(|t| q.window_start(*t))
            .collect();
        assert_eq!(starts, [0, 0, 10, 10, 20, 30]);
        assert_eq!(q.window_count(), 4);
        assert_eq!(q.window_start(-1), -10);
        assert_eq!(q.window_start(i64::MIN), i64::MIN);
        let hour = 3_600_000_000_000;
        let q = query(&request(0, 1, "1h", &[]));
        assert_eq!(q.window_start(hour + 5), hour);
        // No window: one bucket starting at from_ns.
        let q = query(&request(5, 35, "", &[]));
        assert_eq!((q.window_start(34), q.window_count()), (5, 1));
    }

    #[test]
    fn requests_are_validated() {
        let bad = |req: pb::AggregateRequest| {
            field_of(AggregateQuery::from_pb(&req, 100, 1000, 1_000).unwrap_err())
        };
        assert_eq!(bad(request(0, 10, "ten seconds", &[])), "window");
        assert_eq!(bad(request(0, 10, "0s", &[])), "window");
        // 1001 windows of 1 ns is over the 1000 bucket limit.
        assert_eq!(bad(request(0, 1001, "1ns", &[])), "window");
        assert_eq!(bad(request(0, 10, "", &[F::Unspecified])), "functions[0]");
        assert_eq!(
            bad(pb::AggregateRequest {
                functions: vec![1, 42],
                ..request(0, 10, "", &[])
            }),
            "functions[1]"
        );
        assert_eq!(
            bad(pb::AggregateRequest {
                group_by_label: "a b".into(),
                ..request(0, 10, "", &[])
            }),
            "group_by_label"
        );
        assert_eq!(bad(request(10, 5, "", &[])), "from_ns");
        assert!(AggregateQuery::from_pb(&request(0, 1000, "1ns", &[]), 100, 1000, 1_000).is_ok());
    }

    #[tokio::test]
    async fn functions_over_mixed_types_have_exact_values() {
        let store = MemStore::default();
        store.put(
            "acme",
            "d1",
            "m",
            &[
                (11, Value::F64(1.5)),
                (12, Value::I64(3)),
                (13, Value::Bool(true)),
                (14, Value::Str("x".into())),
                (21, Value::F64(-2.0)),
                (31, Value::Str("only".into())),
                (40, Value::F64(100.0)), // outside [10, 40)
            ],
        );
        let all = [F::Min, F::Max, F::Avg, F::Sum, F::Count, F::First, F::Last];
        let q = query(&request(10, 40, "10ns", &all));
        let resp = run(
            &store,
            "acme",
            &[device("d1", &[])],
            &q,
            BUDGET,
            &Tiering::default(),
        )
        .await
        .unwrap();
        assert_eq!(resp.series.len(), 1);
        let s = &resp.series[0];
        assert_eq!(
            (s.group.as_str(), s.metric.as_str(), s.devices),
            ("d1", "m", 1)
        );
        let b = &s.buckets;
        assert_eq!(
            b.iter().map(|b| b.start_ns).collect::<Vec<_>>(),
            [10, 20, 30]
        );

        assert_eq!(b[0].count, 4);
        assert_eq!(b[0].min, Some(1.0));
        assert_eq!(b[0].max, Some(3.0));
        assert_eq!(b[0].sum, Some(5.5));
        assert_eq!(b[0].avg, Some(5.5 / 3.0));
        assert_eq!(
            b[0].first,
            Some(sample_to_pb(Sample {
                ts_ns: 11,
                value: Value::F64(1.5)
            }))
        );
        assert_eq!(
            b[0].last,
            Some(sample_to_pb(Sample {
                ts_ns: 14,
                value: Value::Str("x".into())
            }))
        );

        assert_eq!(
            (b[1].count, b[1].min, b[1].max, b[1].avg, b[1].sum),
            (1, Some(-2.0), Some(-2.0), Some(-2.0), Some(-2.0))
        );

        // Only a string: counted, first/last filled, no numeric aggregate.
        assert_eq!(
            (b[2].count, b[2].min, b[2].max, b[2].avg, b[2].sum),
            (1, None, None, None, None)
        );
        assert_eq!(
            b[2].first,
            Some(sample_to_pb(Sample {
                ts_ns: 31,
                value: Value::Str("only".into())
            }))
        );
    }

    #[tokio::test]
    async fn unrequested_fields_stay_empty_and_count_is_always_filled() {
        let store = MemStore::default();
        store.put("acme", "d1", "m", &floats(&[(1, 2.0), (2, 4.0)]));
        let q = query(&request(0, 10, "", &[F::Avg]));
        let resp = run(
            &store,
            "acme",
            &[device("d1", &[])],
            &q,
            BUDGET,
            &Tiering::default(),
        )
        .await
        .unwrap();
        let b = &resp.series[0].buckets[0];
        assert_eq!(
            b,
            &pb::AggregateBucket {
                start_ns: 0,
                count: 2,
                avg: Some(3.0),
                ..Default::default()
            }
        );
        let q = query(&request(0, 10, "", &[]));
        let resp = run(
            &store,
            "acme",
            &[device("d1", &[])],
            &q,
            BUDGET,
            &Tiering::default(),
        )
        .await
        .unwrap();
        assert_eq!(
            resp.series[0].buckets[0],
            pb::AggregateBucket {
                start_ns: 0,
                count: 2,
                ..Default::default()
            }
        );
    }

    #[tokio::test]
    async fn combined_devices_reduce_each_device_first() {
        // West: t1 averages 2 over two samples, t2 averages 5 over one.
        // Pooled, West's average is 3; the devices' averages average 3.5.
        let store = MemStore::default();
        store.put("acme", "t1", "load", &floats(&[(1, 1.0), (15, 3.0)]));
        store.put("acme", "t2", "load", &floats(&[(2, 5.0)]));
        store.put("acme", "t3", "load", &floats(&[(3, 10.0)]));
        let devices = [
            device("t1", &[("fleet", "West")]),
            device("t2", &[("fleet", "West")]),
            device("t3", &[("fleet", "East")]),
        ];
        let ask = |op: pb::DeviceCombine, f: F| {
            let req = pb::AggregateRequest {
                metrics: vec!["load".into()],
                group_by_label: "fleet".into(),
                combine_devices: op as i32,
                ..request(0, 20, "", &[f])
            };
            let store = &store;
            let devices = &devices;
            async move {
                let resp = run(
                    store,
                    "acme",
                    devices,
                    &query(&req),
                    BUDGET,
                    &Tiering::default(),
                )
                .await
                .unwrap();
                resp.series
                    .iter()
                    .map(|s| {
                        (
                            s.group.clone(),
                            s.buckets[0].count,
                            s.buckets[0].avg,
                            s.buckets[0].max,
                        )
                    })
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            ask(pb::DeviceCombine::Avg, F::Avg).await,
            [
                ("East".to_string(), 1, Some(10.0), None),
                ("West".into(), 2, Some(3.5), None)
            ]
        );
        assert_eq!(
            ask(pb::DeviceCombine::Min, F::Max).await,
            [
                ("East".to_string(), 1, None, Some(10.0)),
                ("West".into(), 2, None, Some(3.0))
            ]
        );
        // Refused: no group, two functions, a function that cannot combine.
        for req in [
            pb::AggregateRequest {
                combine_devices: pb::DeviceCombine::Avg as i32,
                ..request(0, 20, "", &[F::Avg])
            },
            pb::AggregateRequest {
                group_by_label: "fleet".into(),
                combine_devices: pb::DeviceCombine::Avg as i32,
                ..request(0, 20, "", &[F::Avg, F::Max])
            },
            pb::AggregateRequest {
                group_by_label: "fleet".into(),
                combine_devices: pb::DeviceCombine::Avg as i32,
                ..request(0, 20, "", &[F::Last])
            },
        ] {
            assert!(AggregateQuery::from_pb(&req, 100, 100_000, 0).is_err());
        }
    }

    #[tokio::test]
    async fn group_by_label_merges_devices() {
        let store = MemStore::default();
        store.put("acme", "t1", "load", &floats(&[(1, 1.0), (15, 3.0)]));
        store.put("acme", "t2", "load", &floats(&[(2, 5.0)]));
        store.put("acme", "t3", "load", &floats(&[(3, 10.0)]));
        store.put("acme", "t4", "load", &floats(&[(4, 7.0)]));
        store.put("acme", "t5", "temp", &floats(&[(4, 7.0)])); // another metric, no load
        let devices = [
            device("t1", &[("fleet", "West")]),
            device("t2", &[("fleet", "West")]),
            device("t3", &[("fleet", "East")]),
            device("t4", &[]),
            device("t5", &[("fleet", "West")]),
        ];
        let req = pb::AggregateRequest {
            metrics: vec!["load".into()],
            group_by_label: "fleet".into(),
            ..request(0, 20, "", &[F::Avg, F::Min, F::Max, F::First, F::Last])
        };
        let resp = run(
            &store,
            "acme",
            &devices,
            &query(&req),
            BUDGET,
            &Tiering::default(),
        )
        .await
        .unwrap();
        let got: Vec<_> = resp
            .series
            .iter()
            .map(|s| {
                (
                    s.group.as_str(),
                    s.devices,
                    s.buckets[0].count,
                    s.buckets[0].avg,
                    s.buckets[0].min,
                    s.buckets[0].max,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("", 1, 1, Some(7.0), Some(7.0), Some(7.0)),
                ("East", 1, 1, Some(10.0), Some(10.0), Some(10.0)),
                ("West", 2, 3, Some(3.0), Some(1.0), Some(5.0)),
            ]
        );
        let west = &resp.series[2].buckets[0];
        assert_eq!(west.first.as_ref().map(|p| p.ts_ns), Some(1));
        assert_eq!(west.last.as_ref().map(|p| p.ts_ns), Some(15));

        // Windowed: West has t1 and t2 in [0, 10) and only t1 in [10, 20).
        let req = pb::AggregateRequest {
            window: "10ns".into(),
            ..req
        };
        let resp = run(
            &store,
            "acme",
            &devices,
            &query(&req),
            BUDGET,
            &Tiering::default(),
        )
        .await
        .unwrap();
        let west: Vec<_> = resp.series[2]
            .buckets
            .iter()
            .map(|b| (b.start_ns, b.count, b.avg))
            .collect();
        assert_eq!(west, [(0, 2, Some(3.0)), (10, 1, Some(3.0))]);
    }

    #[tokio::test]
    async fn chunked_scans_see_every_sample() {
        let store = MemStore::default();
        let points: Vec<_> = (0..25).map(|t| (t, Value::I64(t))).collect();
        store.put("acme", "d1", "m", &points);
        let q = query(&request(0, 25, "10ns", &[F::Sum, F::Count]));
        for chunk in [1, 2, 7, 100] {
            let budget = Budget {
                scan_chunk: chunk,
                ..BUDGET
            };
            let resp = run(
                &store,
                "acme",
                &[device("d1", &[])],
                &q,
                budget,
                &Tiering::default(),
            )
            .await
            .unwrap();
            let got: Vec<_> = resp.series[0]
                .buckets
                .iter()
                .map(|b| (b.start_ns, b.count, b.sum))
                .collect();
            assert_eq!(
                got,
                [
                    (0, 10, Some(45.0)),
                    (10, 10, Some(145.0)),
                    (20, 5, Some(110.0))
                ],
                "chunk {chunk}"
            );
        }
    }

    #[tokio::test]
    async fn limits_on_buckets_and_scanned_points_hold() {
        let store = MemStore::default();
        for d in ["d1", "d2", "d3"] {
            store.put("acme", d, "m", &floats(&[(1, 1.0), (11, 1.0)]));
        }
        let devices: Vec<_> = ["d1", "d2", "d3"].iter().map(|d| device(d, &[])).collect();
        let q = query(&request(0, 20, "10ns", &[]));
        // Six buckets over three series; five allowed.
        let budget = Budget {
            max_buckets: 5,
            ..BUDGET
        };
        assert_eq!(
            field_of(
                run(&store, "acme", &devices, &q, budget, &Tiering::default())
                    .await
                    .unwrap_err()
            ),
            "window"
        );
        let budget = Budget {
            max_buckets: 6,
            ..BUDGET
        };
        assert!(
            run(&store, "acme", &devices, &q, budget, &Tiering::default())
                .await
                .is_ok()
        );

        let budget = Budget {
            max_scanned_points: 5,
            ..BUDGET
        };
        let err = run(&store, "acme", &devices, &q, budget, &Tiering::default())
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                QueryError::ResourceExhausted {
                    subject: "points_scanned",
                    ..
                }
            ),
            "{err:?}"
        );
        let budget = Budget {
            max_scanned_points: 6,
            ..BUDGET
        };
        assert!(
            run(&store, "acme", &devices, &q, budget, &Tiering::default())
                .await
                .is_ok()
        );
    }

    const MIN: i64 = 60_000_000_000;
    const HOUR: i64 = 60 * MIN;
    const DAY: i64 = 24 * HOUR;

    #[test]
    fn the_plan_reads_the_coarsest_tier_and_finer_ones_at_the_edges() {
        use Piece::{Raw, Tier};
        let tiers = [(MIN, i64::MIN), (HOUR, i64::MIN), (DAY, i64::MIN)];
        // 00:00:30 .. 2d 01:30:10: raw to the first minute, minutes to the
        // first hour, hours to the first day, one day, hours, minutes, raw.
        let (from, to) = (30_000_000_000, 2 * DAY + HOUR + 30 * MIN + 10_000_000_000);
        assert_eq!(
            plan(from, to, &tiers, i64::MAX),
            vec![
                Raw(from, MIN),
                Tier(MIN, MIN, HOUR),
                Tier(HOUR, HOUR, DAY),
                Tier(DAY, DAY, 2 * DAY),
                Tier(HOUR, 2 * DAY, 2 * DAY + HOUR),
                Tier(MIN, 2 * DAY + HOUR, 2 * DAY + HOUR + 30 * MIN),
                Raw(2 * DAY + HOUR + 30 * MIN, to),
            ]
        );
        // Aligned ranges need no edges; no tier, or a range within one
        // bucket, is all raw.
        assert_eq!(
            plan(0, 2 * DAY, &tiers, i64::MAX),
            vec![Tier(DAY, 0, 2 * DAY)]
        );
        assert_eq!(plan(5, 50, &tiers, i64::MAX), vec![Raw(5, 50)]);
        assert_eq!(plan(0, DAY, &[], i64::MAX), vec![Raw(0, DAY)]);
        // Buckets that end after the horizon are read raw.
        assert_eq!(
            plan(0, DAY, &tiers, 2 * HOUR + 90_000_000_000),
            vec![
                Tier(HOUR, 0, 2 * HOUR),
                Tier(MIN, 2 * HOUR, 2 * HOUR + MIN),
                Raw(2 * HOUR + MIN, DAY)
            ]
        );
        // A tier is read only from when its buckets are complete.
        let late_days = [(MIN, i64::MIN), (HOUR, i64::MIN), (DAY, DAY + 5)];
        assert_eq!(
            plan(0, 3 * DAY, &late_days, i64::MAX),
            vec![Tier(HOUR, 0, 2 * DAY), Tier(DAY, 2 * DAY, 3 * DAY)]
        );
        assert_eq!(
            plan(0, HOUR, &[(MIN, 90_000_000_000)], i64::MAX),
            vec![Raw(0, 2 * MIN), Tier(MIN, 2 * MIN, HOUR)]
        );
        // Extreme bounds do not overflow.
        assert_eq!(
            plan(i64::MAX - 5, i64::MAX, &tiers, i64::MAX),
            vec![Raw(i64::MAX - 5, i64::MAX)]
        );
    }

    /// Writes the exact rollups of every tier for what `store` holds.
    async fn roll_up(store: &MemStore, series: &SeriesKey, tiers: &[i64]) {
        let raw = store
            .scan(series, i64::MIN, i64::MAX, Order::Asc, usize::MAX)
            .await
            .unwrap();
        let mut rows = Vec::new();
        for &w in tiers {
            let mut buckets: BTreeMap<i64, Rollup> = BTreeMap::new();
            for s in &raw {
                buckets
                    .entry(tributary_core::rollup::bucket_start(s.ts_ns, w))
                    .or_default()
                    .add(s);
            }
            rows.extend(buckets.into_iter().map(|(start, r)| {
                (
                    tributary_core::rollup::RollupKey {
                        series: series.clone(),
                        width_ns: w,
                        start_ns: start,
                    },
                    r,
                )
            }));
        }
        store.write_rollups(&rows).await.unwrap();
    }

    fn close(a: Option<f64>, b: Option<f64>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0),
            (a, b) => a == b,
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 128, ..Default::default() })]

        /// Through the planner or over raw points, the same answer: exactly
        /// for count, min, max, first and last; within 1e-9 for the rest.
        #[test]
        fn the_planner_answers_like_a_raw_scan(
            points in proptest::collection::vec((0i64..3 * 86_400, -1000i64..1000, 0u8..4), 0..300),
            from_s in 0i64..3 * 86_400,
            len_s in 1i64..3 * 86_400,
            window in proptest::sample::select(vec!["", "1m", "5m", "1h", "2h", "1d", "90s"]),
            group in proptest::bool::ANY,
            asked in 1u8..=255,
            combine in 0i32..=5,
            horizon_h in proptest::option::of(0i64..72),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let store = MemStore::default();
                let tiers = [MIN, HOUR, DAY];
                for (i, d) in ["d1", "d2", "d3"].iter().enumerate() {
                    let pts: Vec<(i64, Value)> = points
                        .iter()
                        .skip(i)
                        .step_by(3)
                        .map(|&(t, v, kind)| {
                            let ts = t * 1_000_000_000 + 7;
                            (ts, match kind {
                                0 => Value::F64(v as f64 / 8.0),
                                1 => Value::I64(v),
                                2 => Value::Bool(v > 0),
                                _ => Value::Str(format!("s{v}")),
                            })
                        })
                        .collect();
                    store.put("acme", d, "m", &pts);
                    roll_up(&store, &SeriesKey::new("acme", *d, "m"), &tiers).await;
                }
                // A subset of the functions: the reads skip the parts of a
                // rollup that the others need.
                let all = [F::Min, F::Max, F::Avg, F::Sum, F::Count, F::First, F::Last, F::Stddev];
                let mut functions: Vec<F> = all.iter().enumerate().filter(|(i, _)| asked & (1 << i) != 0).map(|(_, f)| *f).collect();
                // Devices combined: one function, each device's value.
                if combine > 0 {
                    functions = vec![[F::Min, F::Max, F::Avg, F::Sum][usize::from(asked % 4)]];
                }
                let from = from_s * 1_000_000_000 + 3;
                let mut req = request(from, from + len_s * 1_000_000_000, window, &functions);
                if group || combine > 0 {
                    req.group_by_label = "fleet".into();
                }
                req.combine_devices = combine;
                let devices = [device("d1", &[("fleet", "a")]), device("d2", &[("fleet", "a")]), device("d3", &[("fleet", "b")])];
                // Rollups up to the horizon, raw points after it.
                let horizon_ns = horizon_h.map_or(i64::MAX, |h| h * HOUR);
                let tiering = Tiering { tiers: tiers.iter().map(|w| (*w, i64::MIN)).collect(), horizon_ns, ..Tiering::default() };
                let budget = Budget { max_buckets: 1_000_000, ..BUDGET };
                let planned = run(&store, "acme", &devices, &AggregateQuery::from_pb(&req, 100, 1_000_000, 0).unwrap(), budget, &tiering).await.unwrap();
                req.tier = "raw".into();
                let raw = run(&store, "acme", &devices, &AggregateQuery::from_pb(&req, 100, 1_000_000, 0).unwrap(), budget, &tiering).await.unwrap();
                proptest::prop_assert_eq!(&raw.tier, "raw");
                proptest::prop_assert_eq!(planned.series.len(), raw.series.len());
                for (p, r) in planned.series.iter().zip(&raw.series) {
                    proptest::prop_assert_eq!((&p.group, &p.metric, p.devices), (&r.group, &r.metric, r.devices));
                    proptest::prop_assert_eq!(p.buckets.len(), r.buckets.len());
                    for (a, b) in p.buckets.iter().zip(&r.buckets) {
                        proptest::prop_assert_eq!((a.start_ns, a.count, a.min, a.max), (b.start_ns, b.count, b.min, b.max));
                        proptest::prop_assert_eq!(&a.first, &b.first);
                        proptest::prop_assert_eq!(&a.last, &b.last);
                        proptest::prop_assert!(close(a.sum, b.sum) && close(a.avg, b.avg) && close(a.stddev, b.stddev),
                            "{:?} vs {:?} (tier {})", a, b, planned.tier);
                    }
                }
                Ok(())
            })?;
        }
    }

    #[tokio::test]
    async fn a_day_of_minutes_reads_rollups_not_points() {
        let store = MemStore::default();
        let pts: Vec<(i64, Value)> = (0..8640)
            .map(|i| (i * 10_000_000_000, Value::F64(1.0)))
            .collect();
        store.put("acme", "d1", "m", &pts);
        let tiers = [MIN, HOUR, DAY];
        roll_up(&store, &SeriesKey::new("acme", "d1", "m"), &tiers).await;
        let tiering = Tiering {
            tiers: tiers.iter().map(|w| (*w, i64::MIN)).collect(),
            horizon_ns: i64::MAX,
            ..Tiering::default()
        };
        let q = query(&request(0, DAY, "1h", &[F::Count]));
        let before = store.scans.load(std::sync::atomic::Ordering::Relaxed);
        let resp = run(&store, "acme", &[device("d1", &[])], &q, BUDGET, &tiering)
            .await
            .unwrap();
        assert_eq!(resp.tier, "1h");
        assert_eq!(resp.series[0].buckets.len(), 24);
        assert!(resp.series[0].buckets.iter().all(|b| b.count == 360));
        assert_eq!(
            store.scans.load(std::sync::atomic::Ordering::Relaxed),
            before,
            "no raw scan"
        );
    }
}
