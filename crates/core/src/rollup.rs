//! Rollups: the statistics of one series over one time bucket, kept by the
//! processor in tiers (1 minute, 1 hour and 1 day by default) so that long
//! aggregates read buckets instead of raw points.
//!
//! A [`Rollup`] holds what every `Aggregate` function needs and merges
//! exactly: count (every sample), and over the numeric samples (booleans as
//! 0/1, strings not at all) their count, sum, minimum, maximum, mean and M2
//! (the sum of squared deviations from the mean, merged with Chan et al.'s
//! parallel formula, which stays accurate where a plain sum of squares
//! cancels catastrophically); and the first and last samples, of any type,
//! with their timestamps. The merge is independent of order except for
//! floating-point rounding of sum, mean and M2.
//!
//! [`Tiers`] are the bucket widths, finest first; each divides the next, so
//! a coarser bucket is exactly the merge of the finer buckets inside it.
//! Buckets are aligned to multiples of their width since the Unix epoch,
//! like `Aggregate` windows.

use crate::model::{Sample, SeriesKey, Value};
use crate::time::{NS_PER_DAY, NS_PER_SEC};

/// Which parts of a [`Rollup`] a reader needs beyond the counts, sum,
/// minimum and maximum, which every merge keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    /// Mean and M2, for the standard deviation.
    pub spread: bool,
    /// The first and last samples.
    pub ends: bool,
}

impl Parts {
    /// Every part.
    pub const ALL: Self = Self {
        spread: true,
        ends: true,
    };
}

impl Default for Parts {
    /// [`Parts::ALL`]: a reader that did not say keeps everything.
    fn default() -> Self {
        Self::ALL
    }
}

/// The statistics of one bucket. See the [module docs](self).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rollup {
    /// Samples of any type.
    pub count: u64,
    /// Numeric samples (doubles, ints, booleans).
    pub numeric: u64,
    /// Sum of the numeric samples.
    pub sum: f64,
    /// Smallest numeric sample (meaningless when `numeric` is 0).
    pub min: f64,
    /// Largest numeric sample.
    pub max: f64,
    /// Mean of the numeric samples.
    pub mean: f64,
    /// Sum of squared deviations of the numeric samples from their mean.
    pub m2: f64,
    /// The earliest sample.
    pub first: Option<Sample>,
    /// The latest sample.
    pub last: Option<Sample>,
}

impl Rollup {
    /// The rollup of `samples` (any order; each timestamp once).
    pub fn of<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Self {
        let mut r = Self::default();
        for s in samples {
            r.add(s);
        }
        r
    }

    /// The rollup of samples sorted by time (each timestamp once): like
    /// [`Rollup::of`], cloning only the first and last.
    pub fn of_sorted(samples: &[Sample]) -> Self {
        let mut r = Self {
            count: samples.len() as u64,
            first: samples.first().cloned(),
            last: samples.last().cloned(),
            ..Self::default()
        };
        for s in samples {
            if let Some(x) = s.value.as_f64() {
                r.add_numeric(x);
            }
        }
        r
    }

    /// Counts one more sample.
    pub fn add(&mut self, sample: &Sample) {
        self.count += 1;
        if let Some(x) = sample.value.as_f64() {
            self.add_numeric(x);
        }
        if self.first.as_ref().is_none_or(|f| sample.ts_ns < f.ts_ns) {
            self.first = Some(sample.clone());
        }
        if self.last.as_ref().is_none_or(|l| sample.ts_ns > l.ts_ns) {
            self.last = Some(sample.clone());
        }
    }

    /// Counts one more numeric sample, of which only the value matters
    /// (no first or last sample is kept): a device's value in a
    /// combination of devices.
    pub fn add_number(&mut self, x: f64) {
        self.count += 1;
        self.add_numeric(x);
    }

    fn add_numeric(&mut self, x: f64) {
        if self.numeric == 0 {
            (self.min, self.max) = (x, x);
        } else {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
        self.numeric += 1;
        self.sum += x;
        // Welford's update.
        let delta = x - self.mean;
        self.mean += delta / self.numeric as f64;
        self.m2 += delta * (x - self.mean);
    }

    /// Merges the statistics of disjoint samples. On equal timestamps the
    /// first and last samples already here stay.
    pub fn merge(&mut self, other: &Rollup) {
        self.merge_parts(other, Parts::ALL);
    }

    /// [`Rollup::merge`] of only the `parts` a reader will look at; the
    /// others are left as they were, meaningless. A reader of many buckets
    /// that answers `avg` skips the spread's two divisions and the samples'
    /// copies this way.
    pub fn merge_parts(&mut self, other: &Rollup, parts: Parts) {
        self.count += other.count;
        if other.numeric > 0 {
            if self.numeric == 0 {
                (self.min, self.max, self.mean, self.m2) =
                    (other.min, other.max, other.mean, other.m2);
            } else {
                self.min = self.min.min(other.min);
                self.max = self.max.max(other.max);
                if parts.spread {
                    let (na, nb) = (self.numeric as f64, other.numeric as f64);
                    let n = na + nb;
                    let delta = other.mean - self.mean;
                    self.mean += delta * nb / n;
                    self.m2 += other.m2 + delta * delta * na * nb / n;
                }
            }
            self.numeric += other.numeric;
            self.sum += other.sum;
        }
        if !parts.ends {
            return;
        }
        if let Some(f) = &other.first
            && self.first.as_ref().is_none_or(|mine| f.ts_ns < mine.ts_ns)
        {
            self.first = Some(f.clone());
        }
        if let Some(l) = &other.last
            && self.last.as_ref().is_none_or(|mine| l.ts_ns > mine.ts_ns)
        {
            self.last = Some(l.clone());
        }
    }

    /// The population standard deviation of the numeric samples.
    pub fn stddev(&self) -> Option<f64> {
        (self.numeric > 0).then(|| (self.m2.max(0.0) / self.numeric as f64).sqrt())
    }

    /// The mean of the numeric samples.
    pub fn avg(&self) -> Option<f64> {
        (self.numeric > 0).then(|| self.sum / self.numeric as f64)
    }

    /// The encoding stores keep (version 1): fixed fields, then the first
    /// and last samples.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(80);
        out.push(1);
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.numeric.to_le_bytes());
        for f in [self.sum, self.min, self.max, self.mean, self.m2] {
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        for s in [&self.first, &self.last] {
            encode_sample(s.as_ref(), &mut out);
        }
        out
    }

    /// Decodes [`Rollup::encode`]; `None` for bytes it did not write.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Self::default();
        r.decode_from(bytes).then_some(r)
    }

    /// [`Rollup::decode`] into `self`, reusing it (a reader of many buckets
    /// decodes each into the same one); false, leaving `self` unspecified,
    /// for bytes [`Rollup::encode`] did not write.
    pub fn decode_from(&mut self, bytes: &[u8]) -> bool {
        self.decode_parts(bytes, Parts::ALL)
    }

    /// [`Rollup::decode_from`] of the `parts` a reader needs: without
    /// `ends`, the first and last samples are neither parsed nor checked,
    /// and left `None`.
    pub fn decode_parts(&mut self, bytes: &[u8], parts: Parts) -> bool {
        // The fixed part: version, two counts and five doubles.
        let Some((head, rest)) = bytes.split_first_chunk::<57>() else {
            return false;
        };
        if head[0] != 1 {
            return false;
        }
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&head[1 + 8 * i..9 + 8 * i]);
            u64::from_le_bytes(w)
        };
        self.count = word(0);
        self.numeric = word(1);
        self.sum = f64::from_bits(word(2));
        self.min = f64::from_bits(word(3));
        self.max = f64::from_bits(word(4));
        self.mean = f64::from_bits(word(5));
        self.m2 = f64::from_bits(word(6));
        if !parts.ends {
            (self.first, self.last) = (None, None);
            return true;
        }
        let mut r = Reader(rest);
        match (decode_sample(&mut r), decode_sample(&mut r)) {
            (Some(first), Some(last)) if r.0.is_empty() => {
                self.first = first;
                self.last = last;
                true
            }
            _ => false,
        }
    }
}

fn encode_sample(s: Option<&Sample>, out: &mut Vec<u8>) {
    let Some(s) = s else {
        out.push(0);
        return;
    };
    let tag = match &s.value {
        Value::F64(_) => 1,
        Value::I64(_) => 2,
        Value::Bool(_) => 3,
        Value::Str(_) => 4,
    };
    out.push(tag);
    out.extend_from_slice(&s.ts_ns.to_le_bytes());
    match &s.value {
        Value::F64(v) => out.extend_from_slice(&v.to_bits().to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(b) => out.push(u8::from(*b)),
        Value::Str(text) => {
            out.extend_from_slice(&(text.len() as u32).to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
    }
}

fn decode_sample(r: &mut Reader<'_>) -> Option<Option<Sample>> {
    // Doubles, the common case, in one bounds check.
    if let Some((&[1, ref ts @ .., a, b, c, d, e, f, g, h], rest)) = r.0.split_first_chunk::<17>() {
        r.0 = rest;
        return Some(Some(Sample {
            ts_ns: i64::from_le_bytes(*ts),
            value: Value::F64(f64::from_le_bytes([a, b, c, d, e, f, g, h])),
        }));
    }
    let tag = r.u8()?;
    if tag == 0 {
        return Some(None);
    }
    let ts_ns = r.u64()? as i64;
    let value = match tag {
        1 => Value::F64(f64::from_bits(r.u64()?)),
        2 => Value::I64(r.u64()? as i64),
        3 => Value::Bool(r.u8()? != 0),
        4 => {
            let len = u32::from_le_bytes(r.take(4)?.try_into().ok()?) as usize;
            Value::Str(String::from_utf8(r.take(len)?.to_vec()).ok()?)
        }
        _ => return None,
    };
    Some(Some(Sample { ts_ns, value }))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// The start of the bucket of width `width_ns` that holds `ts_ns`.
pub fn bucket_start(ts_ns: i64, width_ns: i64) -> i64 {
    ts_ns.saturating_sub(ts_ns.rem_euclid(width_ns))
}

/// One stored bucket: a series, a tier (its width) and the bucket's start.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RollupKey {
    /// The series.
    pub series: SeriesKey,
    /// The tier's bucket width, ns.
    pub width_ns: i64,
    /// The bucket's first nanosecond, a multiple of `width_ns`.
    pub start_ns: i64,
}

/// Most tiers.
pub const MAX_TIERS: usize = 6;

/// The rollup tiers: bucket widths, finest first. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tiers(Vec<i64>);

impl Default for Tiers {
    /// 1 minute, 1 hour, 1 day.
    fn default() -> Self {
        Self(vec![60 * NS_PER_SEC, 3600 * NS_PER_SEC, NS_PER_DAY])
    }
}

impl Tiers {
    /// Checks and builds tiers: at most [`MAX_TIERS`], each at least a
    /// second and at most a day, in whole seconds, each dividing the next
    /// and each dividing a day (so buckets never cross a UTC day boundary
    /// but in the 1-day tier). Empty turns rollups off.
    pub fn new(widths: Vec<i64>) -> Result<Self, String> {
        if widths.len() > MAX_TIERS {
            return Err(format!("at most {MAX_TIERS} rollup tiers"));
        }
        for (i, &w) in widths.iter().enumerate() {
            if !(NS_PER_SEC..=NS_PER_DAY).contains(&w) || w % NS_PER_SEC != 0 {
                return Err(format!(
                    "rollup tier {i}: a width of whole seconds from 1s to 1d"
                ));
            }
            if NS_PER_DAY % w != 0 {
                return Err(format!("rollup tier {i}: its width must divide a day"));
            }
            if let Some(&prev) = i.checked_sub(1).and_then(|p| widths.get(p))
                && (w <= prev || w % prev != 0)
            {
                return Err(format!(
                    "rollup tier {i}: each width must be a multiple of the one before"
                ));
            }
        }
        Ok(Self(widths))
    }

    /// No tiers: rollups off.
    pub fn none() -> Self {
        Self(Vec::new())
    }

    /// The widths, finest first.
    pub fn widths(&self) -> &[i64] {
        &self.0
    }

    /// Whether there are no tiers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses `1m,1h,1d` (or `none`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() || text == "none" {
            return Ok(Self::none());
        }
        let widths = text
            .split(',')
            .map(|w| {
                crate::time::parse_duration(w.trim())
                    .ok_or_else(|| format!("{w:?} is not a duration such as 1m, 1h or 1d"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(widths)
    }
}

/// A short name of a width: `1m`, `1h`, `1d`, `30s`, `15m`.
pub fn width_name(width_ns: i64) -> String {
    let secs = width_ns / NS_PER_SEC;
    match secs {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(ts: i64, v: Value) -> Sample {
        Sample {
            ts_ns: ts,
            value: v,
        }
    }

    #[test]
    fn merging_halves_equals_the_whole() {
        let samples: Vec<Sample> = (0..100)
            .map(|i| match i % 4 {
                0 => s(i, Value::F64(1e9 + f64::from(i as i32) * 0.5)),
                1 => s(i, Value::I64(i)),
                2 => s(i, Value::Bool(i % 8 == 2)),
                _ => s(i, Value::Str(format!("x{i}"))),
            })
            .collect();
        let whole = Rollup::of(&samples);
        assert_eq!(Rollup::of_sorted(&samples), whole);
        let mut a = Rollup::of(&samples[40..]);
        a.merge(&Rollup::of(&samples[..40]));
        assert_eq!(a.count, whole.count);
        assert_eq!(a.numeric, 75);
        assert_eq!((a.min, a.max), (whole.min, whole.max));
        assert_eq!(a.first, whole.first);
        assert_eq!(a.last, whole.last);
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-9 * y.abs().max(1.0);
        assert!(close(a.sum, whole.sum));
        assert!(close(a.stddev().unwrap(), whole.stddev().unwrap()));
    }

    #[test]
    fn a_merge_or_decode_of_some_parts_gets_those_parts_right() {
        let samples: Vec<Sample> = (0..60)
            .map(|i| s(i, Value::F64(f64::from(i as i32 % 7) - 2.5)))
            .collect();
        let chunks: Vec<Rollup> = samples.chunks(9).map(Rollup::of).collect();
        for parts in [
            Parts::ALL,
            Parts {
                spread: false,
                ends: false,
            },
            Parts {
                spread: true,
                ends: false,
            },
            Parts {
                spread: false,
                ends: true,
            },
        ] {
            let (mut all, mut some) = (Rollup::default(), Rollup::default());
            for c in &chunks {
                all.merge(c);
                let mut decoded = Rollup::default();
                assert!(decoded.decode_parts(&c.encode(), parts));
                assert_eq!(decoded.first.is_some(), parts.ends, "{parts:?}");
                some.merge_parts(&decoded, parts);
            }
            let got = (some.count, some.numeric, some.sum, some.min, some.max);
            assert_eq!(
                got,
                (all.count, all.numeric, all.sum, all.min, all.max),
                "{parts:?}"
            );
            if parts.spread {
                assert_eq!((some.mean, some.m2), (all.mean, all.m2), "{parts:?}");
            }
            if parts.ends {
                assert_eq!(
                    (&some.first, &some.last),
                    (&all.first, &all.last),
                    "{parts:?}"
                );
            } else {
                assert_eq!((&some.first, &some.last), (&None, &None), "{parts:?}");
            }
        }
    }

    #[test]
    fn stddev_stays_accurate_far_from_zero() {
        // Integers around 1e6 with a spread of 2, merged in chunks: a plain
        // sum of squares (1e12 each) would keep few digits of the variance.
        let xs: Vec<i64> = (0..1000).map(|i| 1_000_000 + (i * 7919) % 3).collect();
        let samples: Vec<Sample> = xs
            .iter()
            .enumerate()
            .map(|(i, &x)| s(i as i64, Value::I64(x)))
            .collect();
        let mut merged = Rollup::default();
        for chunk in samples.chunks(7) {
            merged.merge(&Rollup::of(chunk));
        }
        // Exact, in integers: n·Σx² − (Σx)² over n².
        let n = xs.len() as i128;
        let sum: i128 = xs.iter().map(|&x| i128::from(x)).sum();
        let sum_sq: i128 = xs.iter().map(|&x| i128::from(x) * i128::from(x)).sum();
        let exact = ((n * sum_sq - sum * sum) as f64 / (n * n) as f64).sqrt();
        let got = merged.stddev().unwrap();
        assert!((got - exact).abs() <= 1e-9 * exact, "{got} vs {exact}");
    }

    #[test]
    fn encoding_round_trips_and_rejects_garbage() {
        let r = Rollup::of(&[
            s(-5, Value::Str("héllo".into())),
            s(7, Value::F64(2.5)),
            s(9, Value::I64(-3)),
        ]);
        assert_eq!(Rollup::decode(&r.encode()), Some(r.clone()));
        assert_eq!(
            Rollup::decode(&Rollup::default().encode()),
            Some(Rollup::default())
        );
        let bytes = r.encode();
        for cut in 0..bytes.len() {
            assert_eq!(Rollup::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        assert_eq!(Rollup::decode(&[2]), None);
    }

    #[test]
    fn tiers_must_nest_and_divide_a_day() {
        assert_eq!(Tiers::parse("1m,1h,1d").unwrap(), Tiers::default());
        assert!(Tiers::parse("none").unwrap().is_empty());
        for bad in [
            "1h,1m",
            "1m,90s",
            "7m",
            "2d",
            "500ms",
            "1m,1m",
            "1s,2s,4s,8s,16s,32s,64s",
        ] {
            assert!(Tiers::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(width_name(60 * NS_PER_SEC), "1m");
        assert_eq!(width_name(NS_PER_DAY), "1d");
        assert_eq!(bucket_start(-1, 10), -10);
    }
}
