//! The head: recent points of each series, in memory.
//!
//! A series' head is one vector of `(timestamp, value)` pairs in arrival
//! order, unboxed while every value has one type (`(i64, f64)` is 16 bytes a
//! point instead of 40 for `(i64, Value)`), so an append touches one cache
//! line. In-order data (the normal case) stays sorted for free; a point
//! before the newest one marks the head unsorted, and the next read or
//! freeze sorts it once (stable, so the last write of a timestamp wins).

use tributary_core::{Sample, Value};

/// Points of one series, unboxed while they all have one type.
#[derive(Debug, Default)]
enum Column {
    #[default]
    Empty,
    F64(Vec<(i64, f64)>),
    I64(Vec<(i64, i64)>),
    Bool(Vec<(i64, bool)>),
    Str(Vec<(i64, String)>),
    Mixed(Vec<(i64, Value)>),
}

/// Runs `$body` with `$v` bound to the pair vector of whichever variant.
macro_rules! each {
    ($col:expr, $v:ident => $body:expr, empty => $empty:expr) => {
        match $col {
            Column::Empty => $empty,
            Column::F64($v) => $body,
            Column::I64($v) => $body,
            Column::Bool($v) => $body,
            Column::Str($v) => $body,
            Column::Mixed($v) => $body,
        }
    };
}

trait IntoValue {
    fn to_value(&self) -> Value;
}

impl IntoValue for f64 {
    fn to_value(&self) -> Value {
        Value::F64(*self)
    }
}

impl IntoValue for i64 {
    fn to_value(&self) -> Value {
        Value::I64(*self)
    }
}

impl IntoValue for bool {
    fn to_value(&self) -> Value {
        Value::Bool(*self)
    }
}

impl IntoValue for String {
    fn to_value(&self) -> Value {
        Value::Str(self.clone())
    }
}

impl IntoValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}

fn samples_of<T: IntoValue>(pairs: &[(i64, T)]) -> Vec<Sample> {
    pairs
        .iter()
        .map(|(t, v)| Sample {
            ts_ns: *t,
            value: v.to_value(),
        })
        .collect()
}

/// Stable sort by time, keeping the last of equal timestamps. Returns how
/// many pairs were dropped.
fn sort_dedup<T>(pairs: &mut Vec<(i64, T)>) -> usize {
    let before = pairs.len();
    pairs.sort_by_key(|(t, _)| *t);
    // `dedup_by` keeps the first of a run; swapping moves the later value in.
    pairs.dedup_by(|later, kept| {
        if later.0 == kept.0 {
            std::mem::swap(later, kept);
            true
        } else {
            false
        }
    });
    before - pairs.len()
}

impl Column {
    fn len(&self) -> usize {
        each!(self, v => v.len(), empty => 0)
    }

    fn last_ts(&self) -> Option<i64> {
        each!(self, v => v.last().map(|(t, _)| *t), empty => None)
    }

    fn into_mixed(self) -> Vec<(i64, Value)> {
        match self {
            Column::Mixed(v) => v,
            other => {
                let mut out = Vec::with_capacity(other.len() + 1);
                each!(&other, v => out.extend(v.iter().map(|(t, x)| (*t, x.to_value()))), empty => ());
                out
            }
        }
    }

    /// Appends a point, switching to `Mixed` when its type differs.
    fn push(&mut self, ts: i64, value: &Value, capacity: usize) {
        match (&mut *self, value) {
            (Column::F64(v), Value::F64(x)) => v.push((ts, *x)),
            (Column::I64(v), Value::I64(x)) => v.push((ts, *x)),
            (Column::Bool(v), Value::Bool(x)) => v.push((ts, *x)),
            (Column::Str(v), Value::Str(x)) => v.push((ts, x.clone())),
            (Column::Mixed(v), x) => v.push((ts, x.clone())),
            (Column::Empty, x) => {
                fn first<T>(capacity: usize, pair: (i64, T)) -> Vec<(i64, T)> {
                    let mut v = Vec::with_capacity(capacity.max(1));
                    v.push(pair);
                    v
                }
                *self = match x {
                    Value::F64(x) => Column::F64(first(capacity, (ts, *x))),
                    Value::I64(x) => Column::I64(first(capacity, (ts, *x))),
                    Value::Bool(x) => Column::Bool(first(capacity, (ts, *x))),
                    Value::Str(x) => Column::Str(first(capacity, (ts, x.clone()))),
                };
            }
            (_, x) => {
                let mut pairs = std::mem::take(self).into_mixed();
                pairs.push((ts, x.clone()));
                *self = Column::Mixed(pairs);
            }
        }
    }

    /// Replaces the value of the last point.
    fn set_last(&mut self, value: &Value) {
        match (&mut *self, value) {
            (Column::F64(v), Value::F64(x)) => v.last_mut().into_iter().for_each(|p| p.1 = *x),
            (Column::I64(v), Value::I64(x)) => v.last_mut().into_iter().for_each(|p| p.1 = *x),
            (Column::Bool(v), Value::Bool(x)) => v.last_mut().into_iter().for_each(|p| p.1 = *x),
            (Column::Str(v), Value::Str(x)) => {
                v.last_mut().into_iter().for_each(|p| p.1.clone_from(x))
            }
            (Column::Mixed(v), x) => v.last_mut().into_iter().for_each(|p| p.1 = x.clone()),
            (Column::Empty, _) => {}
            (_, x) => {
                let mut pairs = std::mem::take(self).into_mixed();
                if let Some(last) = pairs.last_mut() {
                    last.1 = x.clone();
                }
                *self = Column::Mixed(pairs);
            }
        }
    }
}

/// Estimated heap bytes one point of this value takes in a head.
pub(crate) fn point_bytes(v: &Value) -> usize {
    match v {
        Value::F64(_) | Value::I64(_) | Value::Bool(_) => 16,
        Value::Str(s) => 32 + s.len(),
    }
}

/// The not-yet-compacted points of one series.
#[derive(Debug)]
pub(crate) struct SeriesHead {
    points: Column,
    /// Whether timestamps are strictly increasing.
    sorted: bool,
    /// Capacity to reserve on the first append (the previous head's length).
    capacity: u32,
}

impl Default for SeriesHead {
    fn default() -> Self {
        Self::new()
    }
}

impl SeriesHead {
    pub(crate) fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An empty head that reserves room for `capacity` points on first use.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            points: Column::Empty,
            sorted: true,
            capacity: u32::try_from(capacity).unwrap_or(u32::MAX),
        }
    }

    /// Number of points, duplicates of an unsorted head included.
    pub(crate) fn len(&self) -> usize {
        self.points.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a point. Returns how many points the head grew by (0 when it
    /// overwrote the newest point in place).
    pub(crate) fn push(&mut self, ts_ns: i64, value: &Value) -> usize {
        match self.points.last_ts() {
            Some(last) if last == ts_ns => {
                self.points.set_last(value);
                0
            }
            last => {
                if last.is_some_and(|last| ts_ns < last) {
                    self.sorted = false;
                }
                self.points.push(ts_ns, value, self.capacity as usize);
                1
            }
        }
    }

    /// Sorts by time and keeps the last write of each timestamp. Returns how
    /// many points were dropped as overwritten.
    pub(crate) fn normalize(&mut self) -> usize {
        if self.sorted {
            return 0;
        }
        self.sorted = true;
        each!(&mut self.points, v => sort_dedup(v), empty => 0)
    }

    /// Points with `from <= ts < to`, at most `limit` of them from the end
    /// that `descending` reads first, in ascending order. The head must be
    /// normalized.
    pub(crate) fn range(&self, from: i64, to: i64, limit: usize, descending: bool) -> Vec<Sample> {
        debug_assert!(self.sorted);
        each!(&self.points, v => {
            let lo = v.partition_point(|(t, _)| *t < from);
            let hi = v.partition_point(|(t, _)| *t < to);
            if lo >= hi {
                return Vec::new();
            }
            let (lo, hi) = match hi - lo > limit {
                true if descending => (hi - limit, hi),
                true => (lo, lo + limit),
                false => (lo, hi),
            };
            samples_of(&v[lo..hi])
        }, empty => Vec::new())
    }

    /// The newest point. The head must be normalized.
    pub(crate) fn last(&self) -> Option<Sample> {
        debug_assert!(self.sorted);
        each!(&self.points, v => v.last().map(|(t, x)| Sample { ts_ns: *t, value: x.to_value() }), empty => None)
    }

    /// All points, sorted. The head must be normalized.
    pub(crate) fn samples(&self) -> Vec<Sample> {
        debug_assert!(self.sorted);
        each!(&self.points, v => samples_of(v), empty => Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(samples: &[Sample]) -> Vec<i64> {
        samples.iter().map(|s| s.ts_ns).collect()
    }

    #[test]
    fn in_order_appends_stay_sorted_and_overwrite_in_place() {
        let mut h = SeriesHead::new();
        assert_eq!(h.push(1, &Value::F64(1.0)), 1);
        assert_eq!(h.push(2, &Value::F64(2.0)), 1);
        assert_eq!(h.push(2, &Value::F64(2.5)), 0);
        assert_eq!(h.normalize(), 0);
        assert_eq!(
            h.samples(),
            vec![
                Sample {
                    ts_ns: 1,
                    value: Value::F64(1.0)
                },
                Sample {
                    ts_ns: 2,
                    value: Value::F64(2.5)
                },
            ]
        );
    }

    #[test]
    fn late_points_sort_and_the_last_write_wins() {
        let mut h = SeriesHead::with_capacity(8);
        for (t, v) in [(10, 1), (30, 3), (20, 2), (10, 11), (30, 33), (5, 0)] {
            h.push(t, &Value::I64(v));
        }
        assert_eq!(h.len(), 6);
        assert_eq!(h.normalize(), 2);
        let got = h.samples();
        assert_eq!(ts(&got), vec![5, 10, 20, 30]);
        assert_eq!(got[1].value, Value::I64(11));
        assert_eq!(got[3].value, Value::I64(33));
        assert_eq!(h.last().map(|s| s.ts_ns), Some(30));
    }

    #[test]
    fn types_can_change_within_a_series() {
        let mut h = SeriesHead::new();
        h.push(1, &Value::F64(1.5));
        h.push(2, &Value::I64(2));
        h.push(3, &Value::Str("x".into()));
        h.push(3, &Value::Bool(true));
        h.push(0, &Value::Bool(false));
        h.normalize();
        let values: Vec<Value> = h.samples().into_iter().map(|s| s.value).collect();
        assert_eq!(
            values,
            vec![
                Value::Bool(false),
                Value::F64(1.5),
                Value::I64(2),
                Value::Bool(true)
            ]
        );

        // Overwriting the last point with another type also switches.
        let mut h = SeriesHead::new();
        h.push(1, &Value::Str("a".into()));
        h.push(1, &Value::F64(2.0));
        assert_eq!(
            h.samples(),
            vec![Sample {
                ts_ns: 1,
                value: Value::F64(2.0)
            }]
        );
    }

    #[test]
    fn range_is_half_open_and_limited_from_the_right_end() {
        let mut h = SeriesHead::new();
        for t in 0..10 {
            h.push(t, &Value::I64(t));
        }
        assert_eq!(ts(&h.range(2, 5, usize::MAX, false)), vec![2, 3, 4]);
        assert_eq!(ts(&h.range(2, 9, 2, false)), vec![2, 3]);
        assert_eq!(ts(&h.range(2, 9, 2, true)), vec![7, 8]);
        assert!(h.range(5, 5, 10, false).is_empty());
        assert!(h.range(6, 5, 10, false).is_empty());
    }

    #[test]
    fn the_extreme_timestamps_are_kept() {
        let mut h = SeriesHead::new();
        h.push(i64::MIN, &Value::Bool(true));
        h.push(i64::MAX, &Value::Bool(false));
        assert_eq!(ts(&h.samples()), vec![i64::MIN, i64::MAX]);
    }
}
