//! Message bodies: new points with advancing timestamps, never a replayed
//! body, in Tributary JSON, SenML or line protocol.
//!
//! Each device has a [`DeviceGen`]: its timestamps strictly increase (the wall
//! clock, or one nanosecond after the previous point when the clock has not
//! moved), and its values come from a per-device pseudo-random sequence.
//! Timestamps are wall-clock time because the end-to-end latency of a point is
//! measured against its timestamp.

use std::fmt::Write as _;

use crate::scenario::{PayloadConfig, ValueKind};

/// What every message of a run looks like.
#[derive(Debug, Clone)]
pub struct Shape {
    names: Vec<String>,
    values: ValueKind,
    size: usize,
}

impl Shape {
    /// The shape a scenario's payload section describes.
    pub fn new(p: &PayloadConfig) -> Self {
        Self {
            names: p.names(),
            values: p.values,
            size: p.size,
        }
    }

    /// The metric names, in message order.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// One generated value.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Val {
    F64(f64),
    I64(i64),
    Bool(bool),
    Str(u64),
}

/// The generator of one device's points.
#[derive(Debug, Clone)]
pub struct DeviceGen {
    /// The device id.
    pub id: String,
    last_ts: i64,
    rng: u64,
    /// Smallest timestamp generated so far (`i64::MAX` before the first).
    pub min_ts: i64,
}

impl DeviceGen {
    /// A generator for device `id`; `seed` makes its values its own.
    pub fn new(id: String, seed: u64) -> Self {
        Self {
            id,
            last_ts: i64::MIN,
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            min_ts: i64::MAX,
        }
    }

    /// The largest timestamp generated so far.
    pub fn max_ts(&self) -> i64 {
        self.last_ts
    }

    fn next_ts(&mut self) -> i64 {
        let now = tributary_core::time::now_ns();
        let ts = now.max(self.last_ts.saturating_add(1));
        self.last_ts = ts;
        self.min_ts = self.min_ts.min(ts);
        ts
    }

    fn next_u64(&mut self) -> u64 {
        // xorshift64*: cheap, and good enough for test values.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn value(&mut self, kind: ValueKind, index: usize) -> Val {
        let r = self.next_u64();
        let kind = match kind {
            ValueKind::Mixed => match index % 4 {
                0 => ValueKind::F64,
                1 => ValueKind::I64,
                2 => ValueKind::Bool,
                _ => ValueKind::String,
            },
            k => k,
        };
        match kind {
            ValueKind::I64 => Val::I64((r % 1_000_000) as i64 - 500_000),
            ValueKind::Bool => Val::Bool(r & 1 == 1),
            ValueKind::String => Val::Str(r % 100_000),
            ValueKind::F64 | ValueKind::Mixed => Val::F64((r % 100_000) as f64 / 100.0),
        }
    }
}

/// Appends the padding string value for `pad` bytes (`"xxx…"`).
fn pad_string(out: &mut String, pad: usize) {
    out.extend(std::iter::repeat_n('x', pad));
}

/// One message as Tributary JSON: `{"ts":<ms>.<ns>,"values":{...}}`.
fn json_object(out: &mut String, shape: &Shape, ts: i64, vals: &[Val], pad: Option<usize>) {
    // Epoch milliseconds with six decimals: exact to the nanosecond.
    let _ = write!(
        out,
        "{{\"ts\":{}.{:06},\"values\":{{",
        ts.div_euclid(1_000_000),
        ts.rem_euclid(1_000_000)
    );
    for (i, (name, v)) in shape.names.iter().zip(vals).enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "\"{name}\":");
        match v {
            // `{:?}` keeps the decimal point (`5.0`), so a double never turns
            // into a JSON integer.
            Val::F64(f) => {
                let _ = write!(out, "{f:?}");
            }
            Val::I64(n) => {
                let _ = write!(out, "{n}");
            }
            Val::Bool(b) => {
                let _ = write!(out, "{b}");
            }
            Val::Str(s) => {
                let _ = write!(out, "\"s{s}\"");
            }
        }
    }
    if let Some(pad) = pad {
        out.push_str(",\"pad\":\"");
        pad_string(out, pad);
        out.push('"');
    }
    out.push_str("}}");
}

/// One message as SenML records (without the enclosing brackets).
fn senml_records(out: &mut String, shape: &Shape, ts: i64, vals: &[Val], pad: Option<usize>) {
    for (i, (name, v)) in shape.names.iter().zip(vals).enumerate() {
        if i > 0 {
            out.push(',');
        }
        if i == 0 {
            // Base time in seconds with nine decimals: exact to the nanosecond.
            let _ = write!(
                out,
                "{{\"bt\":{}.{:09},",
                ts.div_euclid(1_000_000_000),
                ts.rem_euclid(1_000_000_000)
            );
        } else {
            out.push('{');
        }
        let _ = write!(out, "\"n\":\"{name}\",");
        match v {
            Val::F64(f) => {
                let _ = write!(out, "\"v\":{f:?}}}");
            }
            Val::I64(n) => {
                let _ = write!(out, "\"v\":{n}}}");
            }
            Val::Bool(b) => {
                let _ = write!(out, "\"vb\":{b}}}");
            }
            Val::Str(s) => {
                let _ = write!(out, "\"vs\":\"s{s}\"}}");
            }
        }
    }
    if let Some(pad) = pad {
        out.push_str(",{\"n\":\"pad\",\"vs\":\"");
        pad_string(out, pad);
        out.push_str("\"}");
    }
}

/// The fields and timestamp of a line-protocol line (with its newline); the
/// caller has written `measurement,tags ` before.
fn lp_fields(out: &mut String, shape: &Shape, ts: i64, vals: &[Val], pad: Option<usize>) {
    for (i, (name, v)) in shape.names.iter().zip(vals).enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = match v {
            Val::F64(f) => write!(out, "{name}={f:?}"),
            Val::I64(n) => write!(out, "{name}={n}i"),
            Val::Bool(b) => write!(out, "{name}={b}"),
            Val::Str(s) => write!(out, "{name}=\"s{s}\""),
        };
    }
    if let Some(pad) = pad {
        out.push_str(",pad=\"");
        pad_string(out, pad);
        out.push('"');
    }
    let _ = writeln!(out, " {ts}");
}

/// Body formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Tributary JSON: one object, or an array for batches.
    Json,
    /// SenML: one array of records.
    Senml,
}

/// Builds message bodies.
#[derive(Debug, Clone)]
pub struct Builder {
    shape: Shape,
    vals: Vec<Val>,
    scratch: String,
}

/// How much of a body is padding, per message.
fn pad_for(unpadded: usize, size: usize, overhead: usize) -> Option<usize> {
    (size > unpadded).then(|| size.saturating_sub(unpadded + overhead).max(1))
}

impl Builder {
    /// A builder of messages of this shape.
    pub fn new(shape: Shape) -> Self {
        Self {
            vals: Vec::with_capacity(shape.names.len()),
            shape,
            scratch: String::new(),
        }
    }

    /// Points in one message: the metrics, plus `pad` when padded.
    fn points(&self, pad: Option<usize>) -> u64 {
        self.shape.names.len() as u64 + u64::from(pad.is_some())
    }

    fn fill(&mut self, dev: &mut DeviceGen) {
        self.vals.clear();
        for i in 0..self.shape.names.len() {
            let v = dev.value(self.shape.values, i);
            self.vals.push(v);
        }
    }

    /// Appends `count` messages of `dev` in `format` to `out` (replacing its
    /// contents); returns the number of points.
    pub fn messages(
        &mut self,
        format: Format,
        dev: &mut DeviceGen,
        count: usize,
        out: &mut String,
    ) -> u64 {
        out.clear();
        let (open, close) = match format {
            Format::Json if count == 1 => ("", ""),
            _ => ("[", "]"),
        };
        out.push_str(open);
        let mut points = 0;
        for m in 0..count {
            if m > 0 {
                out.push(',');
            }
            let ts = dev.next_ts();
            self.fill(dev);
            let mut s = std::mem::take(&mut self.scratch);
            s.clear();
            let write = |s: &mut String, pad| match format {
                Format::Json => json_object(s, &self.shape, ts, &self.vals, pad),
                Format::Senml => senml_records(s, &self.shape, ts, &self.vals, pad),
            };
            write(&mut s, None);
            let overhead = match format {
                Format::Json => ",\"pad\":\"\"".len(),
                Format::Senml => ",{\"n\":\"pad\",\"vs\":\"\"}".len(),
            };
            let pad = pad_for(s.len(), self.shape.size, overhead);
            if pad.is_some() {
                s.clear();
                write(&mut s, pad);
            }
            points += self.points(pad);
            out.push_str(&s);
            self.scratch = s;
        }
        out.push_str(close);
        points
    }

    /// Appends one line-protocol line of `dev` to `out`; returns its points.
    /// `tags` is `,k=v,...` (escaped) or empty.
    pub fn line(
        &mut self,
        dev: &mut DeviceGen,
        measurement: &str,
        tags: &str,
        out: &mut String,
    ) -> u64 {
        let ts = dev.next_ts();
        self.fill(dev);
        let start = out.len();
        let _ = write!(out, "{measurement},device={}{tags} ", dev.id);
        let fields = out.len();
        lp_fields(out, &self.shape, ts, &self.vals, None);
        let pad = pad_for(out.len() - start, self.shape.size, ",pad=\"\"".len());
        if pad.is_some() {
            out.truncate(fields);
            lp_fields(out, &self.shape, ts, &self.vals, pad);
        }
        self.points(pad)
    }
}

/// Escapes a line-protocol tag key or value (`,`, `=` and space).
pub fn escape_tag(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, ',' | '=' | ' ' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_core::Limits;
    use tributary_core::formats::{json, lineproto, senml};

    fn shape(values: ValueKind, metrics: usize, size: usize) -> Shape {
        Shape::new(&PayloadConfig {
            metrics,
            metric_names: Vec::new(),
            values,
            size,
        })
    }

    #[test]
    fn timestamps_strictly_advance_and_bodies_never_repeat() {
        let mut dev = DeviceGen::new("d".into(), 7);
        let mut b = Builder::new(shape(ValueKind::F64, 2, 0));
        let mut seen = std::collections::HashSet::new();
        let mut last = i64::MIN;
        for _ in 0..1000 {
            let mut body = String::new();
            b.messages(Format::Json, &mut dev, 1, &mut body);
            assert!(seen.insert(body), "a body was replayed");
            assert!(dev.max_ts() > last);
            last = dev.max_ts();
        }
    }

    #[test]
    fn tributary_parsers_accept_every_format_with_exact_timestamps() {
        let limits = Limits::default();
        for kind in [
            ValueKind::F64,
            ValueKind::I64,
            ValueKind::Bool,
            ValueKind::String,
            ValueKind::Mixed,
        ] {
            let mut dev = DeviceGen::new("dev-1".into(), 1);
            let mut b = Builder::new(shape(kind, 5, 0));
            let mut body = String::new();

            let n = b.messages(Format::Json, &mut dev, 3, &mut body);
            let pts = json::parse(body.as_bytes(), 0, &limits).unwrap();
            assert_eq!(pts.len() as u64, n);
            assert_eq!(n, 15);
            assert_eq!(pts.last().unwrap().ts_ns, dev.max_ts(), "ns-exact JSON ts");

            let n = b.messages(Format::Senml, &mut dev, 2, &mut body);
            let pts = senml::parse(body.as_bytes(), 0, &limits).unwrap();
            assert_eq!(pts.len() as u64, n);
            assert_eq!(pts.last().unwrap().ts_ns, dev.max_ts(), "ns-exact SenML bt");

            body.clear();
            let n1 = b.line(&mut dev, "lt", ",run=a\\ b", &mut body);
            let n2 = b.line(&mut dev, "lt", ",run=a\\ b", &mut body);
            let parsed = lineproto::parse(
                body.as_bytes(),
                lineproto::Precision::Ns,
                "device",
                0,
                &limits,
            )
            .unwrap();
            let count: usize = parsed.iter().map(|d| d.points.len()).sum();
            assert_eq!(count as u64, n1 + n2);
        }
    }

    #[test]
    fn padding_reaches_the_size_and_counts_as_a_point() {
        let limits = Limits::default();
        let mut dev = DeviceGen::new("d".into(), 3);
        let mut b = Builder::new(shape(ValueKind::F64, 2, 500));
        let mut body = String::new();
        let n = b.messages(Format::Json, &mut dev, 1, &mut body);
        assert_eq!(n, 3);
        assert!((500..520).contains(&body.len()), "{}", body.len());
        assert_eq!(json::parse(body.as_bytes(), 0, &limits).unwrap().len(), 3);
        body.clear();
        assert_eq!(b.line(&mut dev, "m", "", &mut body), 3);
        assert!((500..520).contains(&body.len()), "{}", body.len());
    }

    #[test]
    fn tags_are_escaped() {
        assert_eq!(escape_tag("a b,c=d"), "a\\ b\\,c\\=d");
    }
}
