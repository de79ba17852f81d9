//! Evaluating the PromQL subset over `QueryService.Aggregate`.
//!
//! A query is evaluated at times `t0, t0 + step, …`. At each time `t`:
//! - a range function `f(x[R])` aggregates the samples of `x` in
//!   `[t − R, t)`; an instant selector `x` is the newest sample in
//!   `[t − L, t)`, where the lookback `L` is 5 minutes, or the step when
//!   that is longer. Windows are closed at the start and open at the end,
//!   like Tributary's Aggregate windows (Prometheus uses `(t − R, t]`), so a
//!   panel and an Aggregate over the same windows agree exactly;
//! - for a range query, the samples come from Aggregate windows of width
//!   `w`, the greatest common divisor of the step and every range, in whole
//!   seconds (so the planner answers from the rollup tiers when `w` allows),
//!   and `t0` is moved back to a multiple of `w` (Grafana aligns to the step
//!   already). An instant query reads one window per range;
//! - `rate` and `increase` take the difference between the last and the
//!   first sample of the window, adding the value after each counter reset
//!   (a drop); a reset inside one rollup bucket is estimated from the
//!   bucket's first, maximum and last values. There is no extrapolation to
//!   the window's edges, so they can be lower than Prometheus' by one
//!   sampling interval's share of the window.

use std::collections::BTreeMap;

use futures::StreamExt as _;
use futures::future::BoxFuture;
use tributary_promql::{AggOp, Expr, RangeFunc, Selector};
use tributary_proto::v1 as pb;

use super::PromError;
use super::series::{Labels, NAME, SeriesRef, select};
use crate::Api;
use crate::extract::Caller;

const NS: i64 = 1_000_000_000;
/// The default lookback of an instant selector.
const LOOKBACK: i64 = 300 * NS;
/// Most evaluation times per series, as Prometheus.
pub(crate) const MAX_POINTS: usize = 11_000;
/// Most Aggregate windows read per series.
const MAX_WINDOWS_PER_SERIES: i64 = 100_000;
/// Most window combinations (steps × windows per step) per series.
const MAX_WORK_PER_SERIES: i64 = 20_000_000;

/// The times a query is evaluated at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Grid {
    /// First time, ns.
    pub t0: i64,
    /// Step, ns (0 for an instant query).
    pub step: i64,
    /// Number of times.
    pub n: usize,
}

impl Grid {
    pub(crate) fn at(&self, i: usize) -> i64 {
        self.t0 + self.step * i as i64
    }
}

/// A value of the query at every time of the grid.
#[derive(Debug)]
pub(crate) enum Val {
    Scalar(Vec<f64>),
    Vector(Vec<Series>),
}

/// One output series: its labels and its value at each time (absent where
/// it has none).
#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub labels: Labels,
    pub values: Vec<Option<f64>>,
}

/// What the query may cost.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub max_series: usize,
}

/// Everything an evaluation needs.
pub(crate) struct Ctx<'a> {
    pub api: &'a Api,
    pub caller: &'a Caller,
    pub grid: Grid,
    /// The lookback of instant selectors.
    lookback: i64,
    /// The Aggregate window of a range query (ns), 0 for an instant query.
    window: i64,
    pub budget: Budget,
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn ranges(e: &Expr, out: &mut Vec<i64>, lookback: i64) {
    match e {
        Expr::Number(_) => {}
        Expr::Selector(_) => out.push(lookback),
        Expr::RangeFunction { range, .. } => {
            out.push(i64::try_from(range.as_nanos()).unwrap_or(i64::MAX))
        }
        Expr::Aggregate { expr, .. } | Expr::Neg(expr) => ranges(expr, out, lookback),
        Expr::Binary { lhs, rhs, .. } => {
            ranges(lhs, out, lookback);
            ranges(rhs, out, lookback);
        }
    }
}

impl<'a> Ctx<'a> {
    /// Plans the evaluation of `expr` from `start` to `end` every `step`
    /// (an instant query: `start == end`, `step == 0`).
    pub(crate) fn plan(
        api: &'a Api,
        caller: &'a Caller,
        expr: &Expr,
        (start, end, step): (i64, i64, i64),
        budget: Budget,
    ) -> Result<Self, PromError> {
        let lookback = LOOKBACK.max(step);
        if step == 0 {
            return Ok(Self {
                api,
                caller,
                grid: Grid {
                    t0: start,
                    step: 0,
                    n: 1,
                },
                lookback,
                window: 0,
                budget,
            });
        }
        if step % NS != 0 {
            return Err(PromError::bad_data(
                "step: Tributary evaluates at whole seconds; use a step such as 15s or 60",
            ));
        }
        let mut rs = Vec::new();
        ranges(expr, &mut rs, lookback);
        for r in &rs {
            if r % NS != 0 {
                return Err(PromError::bad_data(
                    "ranges must be whole seconds, such as [5m] or [90s]",
                ));
            }
        }
        let window = rs.iter().fold(step, |g, r| gcd(g, *r));
        let t0 = start.div_euclid(window) * window;
        let n = usize::try_from((end - t0) / step + 1).unwrap_or(usize::MAX);
        if n > MAX_POINTS {
            return Err(PromError::bad_data(format!(
                "exceeded maximum resolution of {MAX_POINTS} points per timeseries. Try decreasing the query resolution (?step=XX)"
            )));
        }
        let longest = rs.iter().copied().max().unwrap_or(0);
        let windows = (step * (n as i64 - 1) + longest) / window;
        if windows > MAX_WINDOWS_PER_SERIES
            || (longest / window).saturating_mul(n as i64) > MAX_WORK_PER_SERIES
        {
            return Err(PromError::bad_data(format!(
                "the step and the ranges share no divisor coarser than {}s, which makes {windows} windows per series; use a step that divides the ranges (or the reverse)",
                window / NS
            )));
        }
        Ok(Self {
            api,
            caller,
            grid: Grid { t0, step, n },
            lookback,
            window,
            budget,
        })
    }

    /// Evaluates `expr` over the grid.
    pub(crate) fn eval<'e>(&'e self, expr: &'e Expr) -> BoxFuture<'e, Result<Val, PromError>> {
        Box::pin(async move {
            let n = self.grid.n;
            match expr {
                Expr::Number(v) => Ok(Val::Scalar(vec![*v; n])),
                Expr::Neg(e) => Ok(match self.eval(e).await? {
                    Val::Scalar(v) => Val::Scalar(v.into_iter().map(|x| -x).collect()),
                    Val::Vector(series) => Val::Vector(
                        series
                            .into_iter()
                            .map(|mut s| {
                                s.labels.remove(NAME);
                                s.values = s.values.into_iter().map(|v| v.map(|x| -x)).collect();
                                s
                            })
                            .collect(),
                    ),
                }),
                Expr::Binary { op, lhs, rhs } => {
                    let (l, r) = (self.eval(lhs).await?, self.eval(rhs).await?);
                    Ok(match (l, r) {
                        (Val::Scalar(a), Val::Scalar(b)) => {
                            Val::Scalar(a.into_iter().zip(b).map(|(x, y)| op.apply(x, y)).collect())
                        }
                        (Val::Vector(series), Val::Scalar(b)) => {
                            Val::Vector(map_vector(series, |i, x| op.apply(x, b[i])))
                        }
                        (Val::Scalar(a), Val::Vector(series)) => {
                            Val::Vector(map_vector(series, |i, x| op.apply(a[i], x)))
                        }
                        (Val::Vector(_), Val::Vector(_)) => {
                            return Err(PromError::bad_data(
                                "unsupported: arithmetic between two vectors",
                            ));
                        }
                    })
                }
                Expr::Selector(sel) => {
                    self.over_windows(
                        sel,
                        (self.lookback, &[pb::AggregateFunction::Last]),
                        |w| w.last,
                        false,
                    )
                    .await
                }
                Expr::RangeFunction {
                    func,
                    selector,
                    range,
                } => {
                    let r = i64::try_from(range.as_nanos()).unwrap_or(i64::MAX);
                    let secs = r as f64 / NS as f64;
                    let f: fn(&Window, f64) -> Option<f64> = match func {
                        RangeFunc::AvgOverTime => {
                            |w, _| (w.numeric > 0).then(|| w.sum / w.numeric as f64)
                        }
                        RangeFunc::MinOverTime => |w, _| w.min,
                        RangeFunc::MaxOverTime => |w, _| w.max,
                        RangeFunc::SumOverTime => |w, _| (w.numeric > 0).then_some(w.sum),
                        RangeFunc::CountOverTime => {
                            |w, _| (w.numeric > 0).then_some(w.numeric as f64)
                        }
                        RangeFunc::LastOverTime => |w, _| w.last,
                        RangeFunc::Increase => |w, _| (w.numeric > 1).then_some(w.increase),
                        RangeFunc::Rate => |w, secs| (w.numeric > 1).then(|| w.increase / secs),
                    };
                    // As in Prometheus, a function's result is no longer the
                    // metric, except the newest sample itself.
                    let drop_name = *func != RangeFunc::LastOverTime;
                    use pb::AggregateFunction as A;
                    let functions: &[A] = match func {
                        RangeFunc::AvgOverTime
                        | RangeFunc::SumOverTime
                        | RangeFunc::CountOverTime => &[],
                        RangeFunc::MinOverTime => &[A::Min],
                        RangeFunc::MaxOverTime => &[A::Max],
                        RangeFunc::LastOverTime => &[A::Last],
                        RangeFunc::Rate | RangeFunc::Increase => &[A::First, A::Last, A::Max],
                    };
                    self.over_windows(selector, (r, functions), move |w| f(w, secs), drop_name)
                        .await
                }
                Expr::Aggregate { op, by, expr } => {
                    if let Some(val) = self.pushed_down(*op, by, expr).await? {
                        return Ok(val);
                    }
                    let Val::Vector(series) = self.eval(expr).await? else {
                        return Err(PromError::bad_data(format!(
                            "{}: expected a vector, got a scalar",
                            op.name()
                        )));
                    };
                    Ok(Val::Vector(aggregate(*op, by, series, n)))
                }
            }
        })
    }

    /// The `[from, to)` and window of the Aggregate that holds every time's
    /// `[t − range, t)`: windows of `self.window`, or one window for an
    /// instant query.
    fn aggregate_span(&self, range: i64) -> (i64, i64, String) {
        let grid = self.grid;
        if self.window == 0 {
            (grid.t0 - range, grid.t0, String::new())
        } else {
            (
                grid.t0 - range,
                grid.at(grid.n - 1),
                format!("{}s", self.window / NS),
            )
        }
    }

    /// `op by (label) (f_over_time(selector[range]))` answered by one
    /// grouped Aggregate that reduces each device's window with `f` and
    /// combines the devices with `op` (`combine_devices`), when that is the
    /// same answer: one metric, one label that is a device label as it is,
    /// and a range that is the window (or an instant query). `None`: not
    /// this shape; evaluate it series by series.
    async fn pushed_down(
        &self,
        op: AggOp,
        by: &[String],
        expr: &Expr,
    ) -> Result<Option<Val>, PromError> {
        use pb::AggregateFunction as A;
        let Expr::RangeFunction {
            func,
            selector,
            range,
        } = expr
        else {
            return Ok(None);
        };
        let per_device = match func {
            RangeFunc::AvgOverTime => A::Avg,
            RangeFunc::MinOverTime => A::Min,
            RangeFunc::MaxOverTime => A::Max,
            RangeFunc::SumOverTime => A::Sum,
            _ => return Ok(None),
        };
        let combine = match op {
            AggOp::Avg => pb::DeviceCombine::Avg,
            AggOp::Sum => pb::DeviceCombine::Sum,
            AggOp::Min => pb::DeviceCombine::Min,
            AggOp::Max => pb::DeviceCombine::Max,
            AggOp::Count => pb::DeviceCombine::Count,
        };
        let range = i64::try_from(range.as_nanos()).unwrap_or(i64::MAX);
        let [label] = by else { return Ok(None) };
        if label == super::series::DEVICE
            || label.starts_with("__")
            || (self.window != 0 && range != self.window)
        {
            return Ok(None);
        }
        let series = select(self.api, self.caller, selector, self.budget.max_series).await?;
        let Some(first) = series.first() else {
            return Ok(Some(Val::Vector(Vec::new())));
        };
        if series
            .iter()
            .any(|s| !s.verbatim || s.metric != first.metric)
        {
            return Ok(None);
        }
        let mut ids: Vec<String> = series.iter().map(|s| s.device.clone()).collect();
        ids.dedup();
        if ids.len() > MAX_PUSHED_DEVICES {
            return Ok(None);
        }
        let grid = self.grid;
        let (from, to, window) = self.aggregate_span(range);
        let resp = self
            .api
            .query
            .aggregate(self.caller.request(pb::AggregateRequest {
                target: Some(pb::Target {
                    tenant: String::new(),
                    devices: Some(pb::target::Devices::DeviceIds(pb::DeviceIds { ids })),
                }),
                metrics: vec![first.metric.clone()],
                from_ns: from,
                to_ns: to,
                window,
                functions: vec![per_device as i32],
                group_by_label: label.clone(),
                tier: String::new(),
                combine_devices: combine as i32,
            }))
            .await?
            .into_inner();
        let mut out = Vec::new();
        for s in resp.series {
            let mut values = vec![None; grid.n];
            for b in &s.buckets {
                let v = match per_device {
                    A::Avg => b.avg,
                    A::Min => b.min,
                    A::Max => b.max,
                    _ => b.sum,
                };
                // The window [t − range, t) of time i starts at b.start_ns.
                let i = if self.window == 0 {
                    0
                } else {
                    let t = b.start_ns + range - grid.t0;
                    if t < 0 || t % grid.step != 0 {
                        continue;
                    }
                    (t / grid.step) as usize
                };
                if let Some(slot) = values.get_mut(i) {
                    *slot = v;
                }
            }
            if values.iter().all(Option::is_none) {
                continue;
            }
            // Devices without the label group as "": no label, as in
            // Prometheus.
            let labels: Labels = if s.group.is_empty() {
                Labels::new()
            } else {
                [(label.clone(), s.group)].into_iter().collect()
            };
            out.push(Series { labels, values });
        }
        Ok(Some(Val::Vector(out)))
    }

    /// The series of `sel`, each valued at every time by `f` of its samples
    /// in `[t − range, t)`. `drop_name`: the function's result is no longer
    /// the metric (`rate(x)` is not `x`).
    async fn over_windows(
        &self,
        sel: &Selector,
        (range, functions): (i64, &[pb::AggregateFunction]),
        f: impl Fn(&Window) -> Option<f64> + Send + Sync,
        drop_name: bool,
    ) -> Result<Val, PromError> {
        let series = select(self.api, self.caller, sel, self.budget.max_series).await?;
        let per_series = self.read(&series, range, functions, &f).await?;
        let mut out = Vec::new();
        for (mut s, values) in series.into_iter().zip(per_series) {
            if values.iter().all(Option::is_none) {
                continue;
            }
            if drop_name {
                s.labels.remove(NAME);
            }
            out.push(Series {
                labels: s.labels,
                values,
            });
        }
        if drop_name {
            let mut seen = std::collections::BTreeSet::new();
            if let Some(dup) = out.iter().find(|s| !seen.insert(&s.labels)) {
                return Err(PromError::execution(format!(
                    "vector cannot contain metrics with the same labelset {:?}: the function dropped the metric name; add __name__=\"…\" to the selector",
                    dup.labels
                )));
            }
        }
        Ok(Val::Vector(out))
    }

    /// Each series' value at every time: `f` of its samples in
    /// `[t − range, t)`, summarized from the Aggregate `functions` (the sum,
    /// for the count of numeric samples, is always read).
    async fn read(
        &self,
        series: &[SeriesRef],
        range: i64,
        functions: &[pb::AggregateFunction],
        f: &(dyn Fn(&Window) -> Option<f64> + Send + Sync),
    ) -> Result<Vec<Vec<Option<f64>>>, PromError> {
        let grid = self.grid;
        let (from, to, window) = self.aggregate_span(range);
        let windows_each = if self.window == 0 {
            1
        } else {
            usize::try_from((to - from) / self.window)
                .unwrap_or(usize::MAX)
                .max(1)
        };
        // Devices with the same metrics go together, as many per Aggregate
        // as keep its answer within BUCKETS_PER_CALL.
        let mut by_device: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, s) in series.iter().enumerate() {
            by_device.entry(&s.device).or_default().push(i);
        }
        let mut by_metrics: BTreeMap<Vec<&str>, Vec<(&str, Vec<usize>)>> = BTreeMap::new();
        for (device, idx) in by_device {
            let metrics: Vec<&str> = idx.iter().map(|i| series[*i].metric.as_str()).collect();
            by_metrics.entry(metrics).or_default().push((device, idx));
        }
        let mut functions: Vec<i32> = functions.iter().map(|f| *f as i32).collect();
        functions.push(pb::AggregateFunction::Sum as i32);
        functions.sort_unstable();
        functions.dedup();
        let mut calls = Vec::new();
        for (metrics, devices) in by_metrics {
            let per_call =
                (BUCKETS_PER_CALL / (windows_each * metrics.len()).max(1)).clamp(1, 1000);
            for batch in devices.chunks(per_call) {
                let ids: Vec<String> = batch.iter().map(|(d, _)| (*d).to_owned()).collect();
                let wanted: BTreeMap<(String, String), usize> = batch
                    .iter()
                    .flat_map(|(_, idx)| idx.iter())
                    .map(|i| ((series[*i].device.clone(), series[*i].metric.clone()), *i))
                    .collect();
                let request = pb::AggregateRequest {
                    target: Some(pb::Target {
                        tenant: String::new(),
                        devices: Some(pb::target::Devices::DeviceIds(pb::DeviceIds { ids })),
                    }),
                    metrics: metrics.iter().map(|m| (*m).to_owned()).collect(),
                    from_ns: from,
                    to_ns: to,
                    window: window.clone(),
                    functions: functions.clone(),
                    group_by_label: String::new(),
                    tier: String::new(),
                    combine_devices: 0,
                };
                let (api, caller) = (self.api.clone(), self.caller.clone());
                calls.push(async move {
                    let resp = api
                        .query
                        .aggregate(caller.request(request))
                        .await?
                        .into_inner();
                    Ok::<_, PromError>((wanted, resp.series))
                });
            }
        }
        let mut out: Vec<Vec<Option<f64>>> = vec![Vec::new(); series.len()];
        let mut scratch = Vec::new();
        let mut results = futures::stream::iter(calls).buffer_unordered(super::CONCURRENCY);
        while let Some(r) = results.next().await {
            let (wanted, answered) = r?;
            for s in answered {
                // Ungrouped, a series' group is its device.
                let Some(&i) = wanted.get(&(s.group, s.metric)) else {
                    continue;
                };
                out[i] = if self.window == 0 {
                    vec![
                        s.buckets
                            .iter()
                            .map(Window::of)
                            .reduce(Window::then)
                            .as_ref()
                            .and_then(f),
                    ]
                } else {
                    self.slide(from, range, &s.buckets, f, &mut scratch)
                };
            }
        }
        for o in &mut out {
            o.resize(grid.n, None);
        }
        Ok(out)
    }

    /// `f` at every time of the windows of width `self.window` from
    /// `from` in `[t − range, t)`. `scratch` is reused across series.
    fn slide(
        &self,
        from: i64,
        range: i64,
        buckets: &[pb::AggregateBucket],
        f: &(dyn Fn(&Window) -> Option<f64> + Send + Sync),
        scratch: &mut Vec<Option<Window>>,
    ) -> Vec<Option<f64>> {
        let w = self.window;
        let total = ((self.grid.at(self.grid.n - 1) - from) / w).max(0) as usize;
        let per = (range / w) as usize;
        let end_of = |i: usize| ((self.grid.at(i) - from) / w) as usize;
        if per == 1 {
            // Each time's window is one bucket: no combining.
            let mut out = vec![None; self.grid.n];
            let step = (self.grid.step / w) as usize;
            for b in buckets {
                let Ok(k) = usize::try_from((b.start_ns - from).div_euclid(w)) else {
                    continue;
                };
                // The bucket ends the window of time i when k + 1 == end_of(i).
                let first_end = end_of(0);
                if k + 1 >= first_end && (k + 1 - first_end) % step == 0 {
                    let i = (k + 1 - first_end) / step;
                    if i < self.grid.n {
                        out[i] = f(&Window::of(b));
                    }
                }
            }
            return out;
        }
        scratch.clear();
        scratch.resize(total, None);
        for b in buckets {
            let k = (b.start_ns - from).div_euclid(w);
            if let Ok(k) = usize::try_from(k)
                && k < total
            {
                scratch[k] = Some(Window::of(b));
            }
        }
        (0..self.grid.n)
            .map(|i| {
                let end = end_of(i).min(total);
                let start = end.saturating_sub(per);
                scratch[start..end]
                    .iter()
                    .flatten()
                    .cloned()
                    .reduce(Window::then)
                    .as_ref()
                    .and_then(f)
            })
            .collect()
    }
}

/// Most devices an aggregation is pushed down over (`target.device_ids`).
const MAX_PUSHED_DEVICES: usize = 10_000;

/// Buckets one Aggregate call is asked for at most (the query service
/// refuses more than its `max_buckets`, 100,000 by default).
const BUCKETS_PER_CALL: usize = 50_000;

/// The samples of one series in one window, summarized.
#[derive(Debug, Clone, Default)]
pub(crate) struct Window {
    /// Numeric samples (doubles, integers, booleans as 0/1).
    numeric: u64,
    sum: f64,
    min: Option<f64>,
    max: Option<f64>,
    first: Option<f64>,
    last: Option<f64>,
    /// The counter increase within the window, resets counted.
    increase: f64,
}

fn numeric(p: Option<&pb::SamplePoint>) -> Option<f64> {
    use pb::value::Kind;
    match p?.value.as_ref()?.kind.as_ref()? {
        Kind::DoubleValue(d) => Some(*d),
        Kind::IntValue(i) => Some(*i as f64),
        Kind::BoolValue(b) => Some(f64::from(u8::from(*b))),
        Kind::StringValue(_) => None,
    }
}

impl Window {
    fn of(b: &pb::AggregateBucket) -> Self {
        let (first, last) = (numeric(b.first.as_ref()), numeric(b.last.as_ref()));
        // Numeric samples: all of them when the window has a numeric sum.
        let numeric_count = if b.sum.is_some() { b.count } else { 0 };
        let increase = match (first, last, b.max) {
            (Some(f), Some(l), _) if l >= f => l - f,
            (Some(f), Some(l), Some(m)) => (m - f).max(0.0) + l,
            _ => 0.0,
        };
        Self {
            numeric: numeric_count,
            sum: b.sum.unwrap_or(0.0),
            min: b.min,
            max: b.max,
            first,
            last,
            increase,
        }
    }

    /// This window followed by a later one.
    fn then(self, next: Self) -> Self {
        let between = match (self.last, next.first) {
            (Some(a), Some(b)) if b >= a => b - a,
            (Some(_), Some(b)) => b,
            _ => 0.0,
        };
        let pick = |a: Option<f64>, b: Option<f64>, f: fn(f64, f64) -> f64| match (a, b) {
            (Some(a), Some(b)) => Some(f(a, b)),
            (a, b) => a.or(b),
        };
        Self {
            numeric: self.numeric + next.numeric,
            sum: self.sum + next.sum,
            min: pick(self.min, next.min, f64::min),
            max: pick(self.max, next.max, f64::max),
            first: self.first.or(next.first),
            last: next.last.or(self.last),
            increase: self.increase + between + next.increase,
        }
    }
}

fn map_vector(series: Vec<Series>, f: impl Fn(usize, f64) -> f64) -> Vec<Series> {
    series
        .into_iter()
        .map(|mut s| {
            s.labels.remove(NAME);
            s.values = s
                .values
                .into_iter()
                .enumerate()
                .map(|(i, v)| v.map(|x| f(i, x)))
                .collect();
            s
        })
        .collect()
}

/// `op by (by) (series)` at every time.
fn aggregate(op: AggOp, by: &[String], series: Vec<Series>, n: usize) -> Vec<Series> {
    let mut groups: BTreeMap<Labels, Vec<Vec<Option<f64>>>> = BTreeMap::new();
    for s in series {
        let key: Labels = by
            .iter()
            .filter_map(|l| s.labels.get(l).map(|v| (l.clone(), v.clone())))
            .collect();
        groups.entry(key).or_default().push(s.values);
    }
    groups
        .into_iter()
        .map(|(labels, members)| {
            let values = (0..n)
                .map(|i| {
                    let present = members.iter().filter_map(|v| v[i]);
                    let (count, sum, min, max) = present.fold(
                        (0u64, 0.0, f64::INFINITY, f64::NEG_INFINITY),
                        |(c, s, lo, hi), x| (c + 1, s + x, lo.min(x), hi.max(x)),
                    );
                    (count > 0).then(|| match op {
                        AggOp::Sum => sum,
                        AggOp::Avg => sum / count as f64,
                        AggOp::Min => min,
                        AggOp::Max => max,
                        AggOp::Count => count as f64,
                    })
                })
                .collect();
            Series { labels, values }
        })
        .filter(|s| s.values.iter().any(Option::is_some))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(start: i64, values: &[f64]) -> pb::AggregateBucket {
        let point = |v: f64| pb::SamplePoint {
            ts_ns: start,
            value: Some(pb::Value {
                kind: Some(pb::value::Kind::DoubleValue(v)),
            }),
        };
        pb::AggregateBucket {
            start_ns: start,
            count: values.len() as u64,
            min: values.iter().copied().reduce(f64::min),
            max: values.iter().copied().reduce(f64::max),
            avg: None,
            sum: Some(values.iter().sum()),
            first: values.first().map(|v| point(*v)),
            last: values.last().map(|v| point(*v)),
            stddev: None,
        }
    }

    #[test]
    fn a_counter_increase_counts_resets_between_and_within_windows() {
        // 10 → 15, reset, 3 → 7: increase 5 + 3 + 4 = 12.
        let w = Window::of(&bucket(0, &[10.0, 15.0])).then(Window::of(&bucket(1, &[3.0, 7.0])));
        assert_eq!(w.increase, 12.0);
        // A reset inside one bucket: 10 → 20, reset, → 4: 10 + 4.
        let w = Window::of(&bucket(0, &[10.0, 20.0, 4.0]));
        assert_eq!(w.increase, 14.0);
        assert_eq!((w.min, w.max, w.numeric), (Some(4.0), Some(20.0), 3));
    }

    #[test]
    fn aggregation_groups_by_the_labels_and_skips_absent_values() {
        let s = |fleet: &str, values: Vec<Option<f64>>| Series {
            labels: [
                ("fleet".to_string(), fleet.to_string()),
                ("device".into(), values.len().to_string()),
            ]
            .into_iter()
            .collect(),
            values,
        };
        let out = aggregate(
            AggOp::Avg,
            &["fleet".into()],
            vec![
                s("West", vec![Some(1.0), None]),
                s("West", vec![Some(3.0), Some(5.0)]),
                s("East", vec![None, None]),
            ],
            2,
        );
        assert_eq!(out.len(), 1, "a group with no value at any time is dropped");
        assert_eq!(out[0].values, vec![Some(2.0), Some(5.0)]);
        assert_eq!(out[0].labels.len(), 1);
    }
}
