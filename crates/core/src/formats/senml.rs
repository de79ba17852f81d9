//! SenML, JSON representation (RFC 8428, `application/senml+json`).
//!
//! A pack is a JSON array of records; every record becomes one point (two
//! with a sum), in pack order:
//!
//! ```json
//! [{"bn": "urn:dev:ow:10e2073a01080063:", "bt": 1.320067464e9, "n": "temp", "u": "Cel", "v": 23.1},
//!  {"n": "temp", "t": 60, "v": 23.4},
//!  {"n": "door", "vb": false}]
//! ```
//!
//! How records are resolved (RFC 8428 section 4):
//!
//! * Base fields (`bn`, `bt`, `bu`, `bv`, `bs`, `bver`) apply to their own
//!   record and to every later record, until a record sets them again.
//! * The metric name is `bn` + `n`. It must be a valid metric name and, as
//!   the RFC requires, start with a letter or a digit.
//! * The time is `bt` + `t` in seconds (either missing counts as 0). Below
//!   2^28 it is relative to now (`-5` is five seconds ago; absent is now);
//!   from 2^28 on it is seconds since the Unix epoch. Times are converted
//!   from their decimal text exactly, so `1.276020076001e9` is
//!   `...076.001` s to the nanosecond.
//! * `v` (plus `bv`) becomes a [`Value::F64`], `vs` a string, `vb` a
//!   boolean. `vd` (binary data, base64url) must be valid base64url and is
//!   stored as the string given, still encoded. A record has at most one of
//!   these.
//! * A sum (`s` plus `bs`; a record has one when either is set) becomes a
//!   [`Value::F64`] under the name with `.sum` appended, so that values and
//!   sums never mix in one series.
//! * A record with neither a value nor a sum is refused.
//! * Units (`bu`, `u`) and the update time (`ut`) are type-checked and then
//!   dropped: Tributary stores no unit per point. Records that differ only
//!   by unit (such as RFC 8428's example 5.1.3, which tells latitude from
//!   longitude by unit) therefore land in the same series; give them
//!   different names.
//! * `bver` above 10 is refused (a receiver must not use a pack of a newer
//!   version than it understands). Labels ending in `_` are
//!   must-understand extensions and are refused; other unknown labels are
//!   ignored, as the RFC requires. A label twice in one record is refused.
//!
//! Errors are located as `record 3` (counting from 1) or
//! `record 3, field "bt"`; malformed JSON as `line L, column C`.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::json::{Key, Leaf, Scalar, reject_scalars, syntax_error};
use super::{ParseError, decimal_to_scaled};
use crate::limits::Limits;
use crate::model::{Point, Value, validate_point};

/// The highest SenML version this parser understands (RFC 8428's).
pub const SENML_VERSION: u64 = 10;

/// Resolved times below this many nanoseconds (2^28 s) are relative to now.
const RELATIVE_BEFORE_NS: i128 = (1 << 28) * 1_000_000_000;

/// Parses a SenML JSON pack into points, in pack order.
///
/// `now_ns` is "now" for relative and absent times. Every point is
/// validated ([`validate_point`]) and at most
/// `limits.max_points_per_request` are accepted (more is an error with
/// [`ParseError::too_large`] set).
///
/// ```
/// use tributary_core::{Limits, Value};
/// use tributary_core::formats::senml;
///
/// let pack = br#"[{"bn": "urn:dev:ow:10e2073a01080063:", "n": "voltage", "u": "V", "v": 120.1},
///                 {"n": "current", "u": "A", "t": -5, "v": 1.2}]"#;
/// let now = 1_700_000_000_000_000_000;
/// let points = senml::parse(pack, now, &Limits::default()).unwrap();
/// assert_eq!(points[1].metric, "urn:dev:ow:10e2073a01080063:current");
/// assert_eq!(points[1].ts_ns, now - 5_000_000_000);
/// assert_eq!(points[1].value, Value::F64(1.2));
/// ```
pub fn parse(body: &[u8], now_ns: i64, limits: &Limits) -> Result<Vec<Point>, ParseError> {
    let mut cx = Cx {
        now_ns,
        limits,
        points: Vec::new(),
        error: None,
        base: Base::default(),
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let outcome = PackVisitor { cx: &mut cx }
        .deserialize(&mut de)
        .and_then(|()| de.end());
    match outcome {
        Ok(()) => Ok(cx.points),
        Err(e) => Err(cx.error.take().unwrap_or_else(|| syntax_error(&e))),
    }
}

/// Base fields in effect.
#[derive(Default)]
struct Base<'de> {
    name: Cow<'de, str>,
    time_ns: i128,
    value: Option<f64>,
    sum: Option<f64>,
}

/// State shared by the visitors of one pack.
struct Cx<'l, 'de> {
    now_ns: i64,
    limits: &'l Limits,
    points: Vec<Point>,
    /// The precise error, set by the visitor that refused the input.
    error: Option<ParseError>,
    base: Base<'de>,
}

impl Cx<'_, '_> {
    fn fail<E: de::Error>(&mut self, error: ParseError) -> E {
        let unwind = E::custom(&error.message);
        self.error = Some(error);
        unwind
    }
}

struct PackVisitor<'c, 'l, 'de> {
    cx: &'c mut Cx<'l, 'de>,
}

impl<'de> DeserializeSeed<'de> for PackVisitor<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PackVisitor<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a SenML pack (a JSON array of records)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut number = 1;
        while seq
            .next_element_seed(RecordVisitor {
                cx: &mut *self.cx,
                number,
            })?
            .is_some()
        {
            number += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.reject("an object"))
    }

    reject_scalars!();
}

impl PackVisitor<'_, '_, '_> {
    fn reject<E: de::Error>(self, found: &str) -> E {
        self.cx.fail(ParseError::new(
            "body",
            format!("expected a SenML pack (a JSON array of records), found {found}"),
        ))
    }
}

/// The fields of one record, as written.
#[derive(Default)]
struct Record<'de> {
    bn: Option<Cow<'de, str>>,
    bt: Option<i128>,
    bv: Option<f64>,
    bs: Option<f64>,
    n: Option<Cow<'de, str>>,
    t: Option<i128>,
    v: Option<f64>,
    vs: Option<Cow<'de, str>>,
    vb: Option<bool>,
    vd: Option<Cow<'de, str>>,
    s: Option<f64>,
}

/// The labels RFC 8428 defines for JSON, as bits for duplicate detection.
fn label_bit(label: &str) -> Option<u16> {
    let index = match label {
        "bn" => 0,
        "bt" => 1,
        "bu" => 2,
        "bv" => 3,
        "bs" => 4,
        "bver" => 5,
        "n" => 6,
        "u" => 7,
        "v" => 8,
        "vs" => 9,
        "vb" => 10,
        "vd" => 11,
        "s" => 12,
        "t" => 13,
        "ut" => 14,
        _ => return None,
    };
    Some(1 << index)
}

struct RecordVisitor<'c, 'l, 'de> {
    cx: &'c mut Cx<'l, 'de>,
    /// 1-based position in the pack.
    number: usize,
}

impl<'de> DeserializeSeed<'de> for RecordVisitor<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RecordVisitor<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a SenML record (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Self { cx, number } = self;
        let mut record = Record::default();
        let mut seen = 0u16;
        while let Some(Key(label)) = map.next_key()? {
            let at = || format!("record {number}, field {label:?}");
            if label.ends_with('_') {
                return Err(cx.fail(ParseError::new(
                    at(),
                    "must-understand extension field is not supported by this server",
                )));
            }
            let Some(bit) = label_bit(&label) else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if seen & bit != 0 {
                return Err(cx.fail(ParseError::new(at(), "duplicate field")));
            }
            seen |= bit;
            let read = match &*label {
                "bt" | "t" => {
                    let raw: &'de RawValue = map.next_value()?;
                    seconds(raw).map(|ns| {
                        if label == "bt" {
                            record.bt = Some(ns);
                        } else {
                            record.t = Some(ns);
                        }
                    })
                }
                _ => {
                    let leaf: Leaf<'de> = map.next_value()?;
                    store(&mut record, &label, leaf)
                }
            };
            if let Err(message) = read {
                return Err(cx.fail(ParseError::new(at(), message)));
            }
        }
        cx.resolve(record, number).map_err(|e| cx.fail(e))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.reject("an array"))
    }

    reject_scalars!();
}

impl RecordVisitor<'_, '_, '_> {
    fn reject<E: de::Error>(self, found: &str) -> E {
        let location = format!("record {}", self.number);
        self.cx.fail(ParseError::new(
            location,
            format!("expected a SenML record (an object), found {found}"),
        ))
    }
}

/// Type-checks one non-time field and keeps it in `record` (or drops it:
/// units, update time).
fn store<'de>(record: &mut Record<'de>, label: &str, leaf: Leaf<'de>) -> Result<(), String> {
    let expected =
        |what: &str, leaf: &Leaf<'_>| format!("expected {what}, found {}", leaf.describe());
    let number = |leaf: Leaf<'_>| leaf.number().ok_or_else(|| expected("a number", &leaf));
    let string = |leaf: Leaf<'de>| match leaf {
        Leaf::Str(s) => Ok(s),
        other => Err(expected("a string", &other)),
    };
    match label {
        "bn" => record.bn = Some(string(leaf)?),
        "n" => record.n = Some(string(leaf)?),
        "bu" | "u" => {
            string(leaf)?;
        }
        "ut" => {
            number(leaf)?;
        }
        "bv" => record.bv = Some(number(leaf)?),
        "bs" => record.bs = Some(number(leaf)?),
        "v" => record.v = Some(number(leaf)?),
        "s" => record.s = Some(number(leaf)?),
        "vs" => record.vs = Some(string(leaf)?),
        "vb" => match leaf {
            Leaf::Bool(b) => record.vb = Some(b),
            other => return Err(expected("a boolean", &other)),
        },
        "vd" => {
            let data = string(leaf)?;
            if !is_base64url(&data) {
                return Err("expected base64url data (RFC 4648 section 5)".to_owned());
            }
            record.vd = Some(data);
        }
        "bver" => {
            let version = match leaf {
                Leaf::Int(i) if i > 0 => i.unsigned_abs(),
                Leaf::UInt(u) if u > 0 => u,
                Leaf::Int(i) => return Err(format!("expected a positive integer, found {i}")),
                Leaf::UInt(u) => return Err(format!("expected a positive integer, found {u}")),
                Leaf::Float(f) => return Err(format!("expected a positive integer, found {f}")),
                other => return Err(expected("a positive integer", &other)),
            };
            if version > SENML_VERSION {
                return Err(format!(
                    "SenML version {version} is newer than this server understands (up to {SENML_VERSION})"
                ));
            }
        }
        // `label_bit` only lets the labels above through.
        _ => {}
    }
    Ok(())
}

/// Reads a time field: seconds as a JSON number, exactly to nanoseconds.
fn seconds(raw: &RawValue) -> Result<i128, String> {
    match Scalar::of(raw) {
        Scalar::Number(text) => {
            decimal_to_scaled(text, 9).ok_or_else(|| format!("time {text} s is out of range"))
        }
        Scalar::Other(leaf) => Err(format!(
            "expected a number of seconds, found {}",
            leaf.describe()
        )),
    }
}

/// Base64url (RFC 4648 section 5): the URL-safe alphabet, without padding
/// as RFC 8428 asks, or with correct padding.
fn is_base64url(data: &str) -> bool {
    let unpadded = data.trim_end_matches('=');
    let padding = data.len() - unpadded.len();
    padding <= 2
        && (padding == 0 || data.len().is_multiple_of(4))
        && unpadded.len() % 4 != 1
        && unpadded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl<'de> Cx<'_, 'de> {
    /// Applies the base fields to `record` and emits its points.
    fn resolve(&mut self, record: Record<'de>, number: usize) -> Result<(), ParseError> {
        let at = || format!("record {number}");
        if let Some(bn) = record.bn {
            self.base.name = bn;
        }
        if let Some(bt) = record.bt {
            self.base.time_ns = bt;
        }
        if record.bv.is_some() {
            self.base.value = record.bv;
        }
        if record.bs.is_some() {
            self.base.sum = record.bs;
        }

        let n = record.n.as_deref().unwrap_or("");
        let mut name = String::with_capacity(self.base.name.len() + n.len());
        name.push_str(&self.base.name);
        name.push_str(n);
        match name.bytes().next() {
            None => {
                return Err(ParseError::new(
                    at(),
                    "no name: neither \"bn\" nor \"n\" is set",
                ));
            }
            Some(first) if !first.is_ascii_alphanumeric() => {
                return Err(ParseError::new(
                    at(),
                    format!(
                        "name {name:?} must start with a letter or a digit (RFC 8428 section 4.5.1)"
                    ),
                ));
            }
            Some(_) => {}
        }

        let out_of_range = || ParseError::new(at(), "time (bt + t) is out of range");
        let time = self
            .base
            .time_ns
            .checked_add(record.t.unwrap_or(0))
            .ok_or_else(out_of_range)?;
        let time = if time < RELATIVE_BEFORE_NS {
            time.checked_add(i128::from(self.now_ns))
                .ok_or_else(out_of_range)?
        } else {
            time
        };
        let ts_ns = i64::try_from(time).map_err(|_| out_of_range())?;

        let given = [
            ("v", record.v.is_some()),
            ("vs", record.vs.is_some()),
            ("vb", record.vb.is_some()),
            ("vd", record.vd.is_some()),
        ];
        if given.iter().filter(|(_, present)| *present).count() > 1 {
            let labels: Vec<&str> = given
                .iter()
                .filter(|(_, present)| *present)
                .map(|(label, _)| *label)
                .collect();
            return Err(ParseError::new(
                at(),
                format!("more than one value field ({})", labels.join(", ")),
            ));
        }
        let value = if let Some(v) = record.v {
            Some(Value::F64(self.base.value.unwrap_or(0.0) + v))
        } else if let Some(vs) = record.vs {
            Some(Value::Str(vs.into_owned()))
        } else if let Some(vb) = record.vb {
            Some(Value::Bool(vb))
        } else {
            record.vd.map(|vd| Value::Str(vd.into_owned()))
        };
        let sum = match (self.base.sum, record.s) {
            (None, None) => None,
            (base, s) => Some(Value::F64(base.unwrap_or(0.0) + s.unwrap_or(0.0))),
        };
        if value.is_none() && sum.is_none() {
            return Err(ParseError::new(
                at(),
                "no value (v, vs, vb or vd) and no sum (s)",
            ));
        }

        let needed = usize::from(value.is_some()) + usize::from(sum.is_some());
        let max = self.limits.max_points_per_request;
        if self.points.len() + needed > max {
            return Err(ParseError::too_large(
                at(),
                format!("more than {max} points in one request"),
            ));
        }
        let sum = sum.map(|sum| (format!("{name}.sum"), sum));
        if let Some(value) = value {
            self.push(
                Point {
                    metric: name,
                    ts_ns,
                    value,
                },
                &at,
            )?;
        }
        if let Some((metric, sum)) = sum {
            self.push(
                Point {
                    metric,
                    ts_ns,
                    value: sum,
                },
                &at,
            )?;
        }
        Ok(())
    }

    fn push(&mut self, point: Point, at: &dyn Fn() -> String) -> Result<(), ParseError> {
        validate_point(&point, self.limits).map_err(|e| ParseError::invalid(at(), &e))?;
        self.points.push(point);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000_000_000;
    const SEC: i64 = 1_000_000_000;

    fn ok(body: &str) -> Vec<Point> {
        match parse(body.as_bytes(), NOW, &Limits::default()) {
            Ok(points) => points,
            Err(e) => panic!("{body}: {e}"),
        }
    }

    #[track_caller]
    fn assert_err(body: &str, location: &str, message_part: &str) {
        match parse(body.as_bytes(), NOW, &Limits::default()) {
            Ok(points) => panic!("{body}: accepted as {points:?}"),
            Err(e) => {
                assert_eq!(e.location, location, "{body}: {e}");
                assert!(
                    e.message.contains(message_part),
                    "{body}: {e} should mention {message_part:?}"
                );
            }
        }
    }

    fn point(metric: &str, ts_ns: i64, value: Value) -> Point {
        Point {
            metric: metric.to_owned(),
            ts_ns,
            value,
        }
    }

    // RFC 8428 section 5.1.1.
    #[test]
    fn rfc_single_datapoint() {
        let points = ok(r#"[{"n":"urn:dev:ow:10e2073a01080063","u":"Cel","v":23.1}]"#);
        assert_eq!(
            points,
            vec![point("urn:dev:ow:10e2073a01080063", NOW, Value::F64(23.1))]
        );
    }

    // RFC 8428 section 5.1.2, first example.
    #[test]
    fn rfc_multiple_datapoints_now() {
        let points = ok(r#"[
            {"bn":"urn:dev:ow:10e2073a01080063:","n":"voltage","u":"V","v":120.1},
            {"n":"current","u":"A","v":1.2}
        ]"#);
        assert_eq!(
            points,
            vec![
                point(
                    "urn:dev:ow:10e2073a01080063:voltage",
                    NOW,
                    Value::F64(120.1)
                ),
                point("urn:dev:ow:10e2073a01080063:current", NOW, Value::F64(1.2)),
            ]
        );
    }

    // RFC 8428 section 5.1.2, second example: absolute base time, relative offsets.
    #[test]
    fn rfc_multiple_datapoints_with_base_time() {
        let points = ok(r#"[
            {"bn":"urn:dev:ow:10e2073a01080063:","bt":1.276020076001e+09,
             "bu":"A","bver":5,"n":"voltage","u":"V","v":120.1},
            {"n":"current","t":-5,"v":1.2},
            {"n":"current","t":-4,"v":1.3},
            {"n":"current","t":-3,"v":1.4},
            {"n":"current","t":-2,"v":1.5},
            {"n":"current","t":-1,"v":1.6},
            {"n":"current","v":1.7}
        ]"#);
        let bt = 1_276_020_076_001_000_000;
        let mut expected = vec![point(
            "urn:dev:ow:10e2073a01080063:voltage",
            bt,
            Value::F64(120.1),
        )];
        for (t, v) in [
            (-5, 1.2),
            (-4, 1.3),
            (-3, 1.4),
            (-2, 1.5),
            (-1, 1.6),
            (0, 1.7),
        ] {
            expected.push(point(
                "urn:dev:ow:10e2073a01080063:current",
                bt + t * SEC,
                Value::F64(v),
            ));
        }
        assert_eq!(points, expected);
    }

    // RFC 8428 section 5.1.5: multiple data types.
    #[test]
    fn rfc_multiple_data_types() {
        let points = ok(r#"[
            {"bn":"urn:dev:ow:10e2073a01080063:","n":"temp","u":"Cel","v":23.1},
            {"n":"label","vs":"Machine Room"},
            {"n":"open","vb":false},
            {"n":"nfc-reader","vd":"aGkgCg"}
        ]"#);
        let name = |n: &str| format!("urn:dev:ow:10e2073a01080063:{n}");
        assert_eq!(
            points,
            vec![
                point(&name("temp"), NOW, Value::F64(23.1)),
                point(&name("label"), NOW, Value::Str("Machine Room".into())),
                point(&name("open"), NOW, Value::Bool(false)),
                point(&name("nfc-reader"), NOW, Value::Str("aGkgCg".into())),
            ]
        );
    }

    // RFC 8428 section 5.1.6: a collection of resources; base name changes midway.
    #[test]
    fn rfc_collection_of_resources() {
        let points = ok(r#"[
            {"bn":"2001:db8::2/","bt":1.320078429e+09,"n":"temperature","u":"Cel","v":27.2},
            {"n":"humidity","u":"%RH","v":80},
            {"bn":"2001:db8::1/","n":"temperature","u":"Cel","v":12.3},
            {"n":"humidity","u":"%RH","v":67}
        ]"#);
        let t = 1_320_078_429 * SEC;
        assert_eq!(
            points,
            vec![
                point("2001:db8::2/temperature", t, Value::F64(27.2)),
                point("2001:db8::2/humidity", t, Value::F64(80.0)),
                point("2001:db8::1/temperature", t, Value::F64(12.3)),
                point("2001:db8::1/humidity", t, Value::F64(67.0)),
            ]
        );
    }

    // RFC 8428 section 5.1.7: lights set 100 ms after an absolute base time.
    #[test]
    fn rfc_setting_an_actuator() {
        let points = ok(r#"[
            {"bt":1.320078429e+09,"bu":"/","n":"2001:db8::3","v":0.5},
            {"n":"2001:db8::4","v":0.5},
            {"n":"2001:db8::3","t":0.1,"v":0},
            {"n":"2001:db8::4","t":0.1,"v":0}
        ]"#);
        let t = 1_320_078_429 * SEC;
        let times: Vec<_> = points.iter().map(|p| p.ts_ns - t).collect();
        assert_eq!(times, vec![0, 0, 100_000_000, 100_000_000]);
        assert_eq!(points[2].value, Value::F64(0.0));
    }

    #[test]
    fn base_value_and_sum() {
        let points = ok(r#"[
            {"bn":"meter:","bv":100,"bs":5000,"n":"power","v":1.5,"s":10},
            {"n":"power","v":-0.5},
            {"n":"energy","s":7},
            {"bs":0,"n":"x","v":1}
        ]"#);
        assert_eq!(
            points,
            vec![
                point("meter:power", NOW, Value::F64(101.5)),
                point("meter:power.sum", NOW, Value::F64(5010.0)),
                point("meter:power", NOW, Value::F64(99.5)),
                point("meter:power.sum", NOW, Value::F64(5000.0)),
                point("meter:energy.sum", NOW, Value::F64(5007.0)),
                point("meter:x", NOW, Value::F64(101.0)),
                point("meter:x.sum", NOW, Value::F64(0.0)),
            ]
        );
        // A base value does not apply to string or boolean values.
        let points = ok(r#"[{"bv":1,"n":"a","vs":"x"},{"n":"b","vb":true}]"#);
        assert_eq!(points[0].value, Value::Str("x".into()));
        assert_eq!(points[1].value, Value::Bool(true));
    }

    #[test]
    fn relative_and_absolute_times() {
        let t = |body: &str| ok(body)[0].ts_ns;
        assert_eq!(t(r#"[{"n":"a","v":1}]"#), NOW);
        assert_eq!(t(r#"[{"n":"a","t":-1.5,"v":1}]"#), NOW - 1_500_000_000);
        assert_eq!(
            t(r#"[{"n":"a","t":10,"v":1}]"#),
            NOW + 10 * SEC,
            "small positive times are in the future"
        );
        assert_eq!(
            t(r#"[{"n":"a","t":268435455,"v":1}]"#),
            NOW + 268_435_455 * SEC
        );
        assert_eq!(
            t(r#"[{"n":"a","t":268435456,"v":1}]"#),
            268_435_456 * SEC,
            "2^28 and up are absolute"
        );
        assert_eq!(
            t(r#"[{"bt":268435000,"n":"a","t":456,"v":1}]"#),
            268_435_456 * SEC,
            "bt + t decides"
        );
        assert_eq!(
            t(r#"[{"bt":1700000000,"n":"a","t":0.000000001,"v":1}]"#),
            1_700_000_000 * SEC + 1
        );
    }

    #[test]
    fn record_errors() {
        assert_err(r#"[{"n":"a"}]"#, "record 1", "no value");
        assert_err(
            r#"[{"n":"a","v":1},{"n":"b","u":"V"}]"#,
            "record 2",
            "no value",
        );
        assert_err(r#"[{"n":"a","bv":3}]"#, "record 1", "no value");
        assert_err(
            r#"[{"n":"a","v":1,"vs":"x"}]"#,
            "record 1",
            "more than one value field (v, vs)",
        );
        assert_err(r#"[{"v":1}]"#, "record 1", "no name");
        assert_err(
            r#"[{"bn":"-x","v":1}]"#,
            "record 1",
            "must start with a letter or a digit",
        );
        assert_err(
            r#"[{"n":"a b","v":1}]"#,
            "record 1",
            "invalid character ' '",
        );
        assert_err(
            r#"[{"n":"a","t":1e30,"v":1}]"#,
            "record 1, field \"t\"",
            "out of range",
        );
        assert_err(
            r#"[{"bt":9.3e9,"n":"a","v":1}]"#,
            "record 1",
            "out of range",
        );
        assert_err(
            r#"[{"n":"a","v":1},{"n":"b","v":1},{"n":"c","v":1,"x_":1}]"#,
            "record 3, field \"x_\"",
            "must-understand",
        );
        assert_err(
            r#"[{"n":"a","v":1,"v":2}]"#,
            "record 1, field \"v\"",
            "duplicate",
        );
        assert_err(
            r#"[{"n":"a","v":"1"}]"#,
            "record 1, field \"v\"",
            "expected a number, found a string",
        );
        assert_err(
            r#"[{"n":"a","vb":1}]"#,
            "record 1, field \"vb\"",
            "expected a boolean",
        );
        assert_err(
            r#"[{"n":1,"v":1}]"#,
            "record 1, field \"n\"",
            "expected a string",
        );
        assert_err(
            r#"[{"n":"a","u":5,"v":1}]"#,
            "record 1, field \"u\"",
            "expected a string",
        );
        assert_err(
            r#"[{"n":"a","t":"now","v":1}]"#,
            "record 1, field \"t\"",
            "expected a number of seconds",
        );
        assert_err(
            r#"[{"n":"a","vd":"a+b/"}]"#,
            "record 1, field \"vd\"",
            "base64url",
        );
        assert_err(
            r#"[{"n":"a","vd":"abcde"}]"#,
            "record 1, field \"vd\"",
            "base64url",
        );
        assert_err(
            r#"[{"bver":11,"n":"a","v":1}]"#,
            "record 1, field \"bver\"",
            "version 11",
        );
        assert_err(
            r#"[{"bver":0,"n":"a","v":1}]"#,
            "record 1, field \"bver\"",
            "positive integer, found 0",
        );
        assert_err(
            r#"[{"bver":-3,"n":"a","v":1}]"#,
            "record 1, field \"bver\"",
            "positive integer, found -3",
        );
        assert_err(
            r#"[{"bver":10.5,"n":"a","v":1}]"#,
            "record 1, field \"bver\"",
            "positive integer, found 10.5",
        );
        assert_err(
            r#"[{"bver":"10","n":"a","v":1}]"#,
            "record 1, field \"bver\"",
            "positive integer, found a string",
        );
        assert_err(r#"[{"n":"a","v":1}, 5]"#, "record 2", "found a number");
        assert_err(r#"{"n":"a","v":1}"#, "body", "found an object");
        assert_err(r#"[{"n":"a","v":1},]"#, "line 1, column 18", "invalid JSON");
    }

    #[test]
    fn accepted_extras() {
        // Unknown labels without '_' are ignored, whatever their type.
        let points = ok(r#"[{"n":"a","v":1,"l":[{"href":"x"}],"ut":60,"bver":10}]"#);
        assert_eq!(points, vec![point("a", NOW, Value::F64(1.0))]);
        // Padded base64url is accepted too; an empty string is valid data.
        assert_eq!(
            ok(r#"[{"n":"a","vd":"aGk="}]"#)[0].value,
            Value::Str("aGk=".into())
        );
        assert_eq!(
            ok(r#"[{"n":"a","vd":""}]"#)[0].value,
            Value::Str(String::new())
        );
        // A name may end in '_': only labels ending in '_' are must-understand.
        assert_eq!(ok(r#"[{"n":"a_","v":1}]"#)[0].metric, "a_");
        assert_eq!(ok("[]"), vec![]);
    }

    #[test]
    fn limits() {
        let limits = Limits {
            max_points_per_request: 2,
            ..Limits::default()
        };
        let e = parse(br#"[{"n":"a","v":1},{"n":"b","v":1,"s":1}]"#, NOW, &limits).unwrap_err();
        assert!(e.too_large, "{e}");
        assert_eq!(e.location, "record 2");
        let limits = Limits {
            max_metric_len: 5,
            ..Limits::default()
        };
        let e = parse(br#"[{"n":"abcde","v":1,"s":1}]"#, NOW, &limits).unwrap_err();
        assert_eq!(e.location, "record 1");
        assert!(e.message.contains("longer than 5"), "{e}");
    }

    #[test]
    fn base64url() {
        for good in ["", "aGkgCg", "aGk", "aGk=", "aA==", "-_-_"] {
            assert!(is_base64url(good), "{good}");
        }
        for bad in ["a", "aGk==", "a===", "a+b/", "aG k", "aGk=x", "aGkgC="] {
            assert!(!is_base64url(bad), "{bad}");
        }
    }
}
