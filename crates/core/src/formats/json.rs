//! Tributary's JSON telemetry format (`application/json`).
//!
//! A body is one object, or an array of objects:
//!
//! ```json
//! {"ts": "2024-05-01T12:00:00Z", "values": {"temp": 21.5, "door": true, "count": 3, "fw": "1.2"}}
//! ```
//!
//! * `values` (required, not empty) maps metric names to values. A JSON
//!   integer (no fraction, no exponent) that fits an `i64` becomes
//!   [`Value::I64`]; any other number becomes [`Value::F64`]; booleans and
//!   strings stay what they are. `null`, objects and arrays are refused.
//! * `ts` (optional) is an RFC 3339 string or epoch milliseconds, an integer
//!   or a decimal (`1714564800000.25`), converted exactly to nanoseconds.
//!   Absent or `null` means the time the request was received.
//! * Any other key is refused, so that a typo (`"value"`, `"time"`) is
//!   reported instead of silently dropping data.
//!
//! A repeated metric name inside one `values` yields two points with the
//! same timestamp; the store keeps the later one.
//!
//! Errors name a path: `values.temp`, `ts`, or `[2].values.temp` for the
//! third object of an array (indexes count from 0, as in `jq`). Malformed
//! JSON is reported as `line L, column C`.
//!
//! The parser streams over the body with `serde` visitors: keys and strings
//! are borrowed where the JSON has no escapes, and no intermediate document
//! is built.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::{ParseError, decimal_to_scaled};
use crate::limits::Limits;
use crate::model::{Point, Value, validate_point};
use crate::time::parse_rfc3339;

/// Implements the scalar `visit_*` methods of a container visitor by calling
/// its `reject(self, found: &str) -> E`, so that a wrong type is reported
/// with the visitor's location instead of serde's generic message.
macro_rules! reject_scalars {
    () => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(self.reject("a boolean"))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(self.reject("a number"))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(self.reject("a number"))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(self.reject("a number"))
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Err(self.reject("a string"))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Err(self.reject("null"))
        }
    };
}
pub(super) use reject_scalars;

/// Parses a JSON telemetry body into points, in body order.
///
/// `now_ns` is the timestamp of points whose object has no `ts`. Every point
/// is validated ([`validate_point`]) and at most
/// `limits.max_points_per_request` are accepted (more is an error with
/// [`ParseError::too_large`] set).
///
/// ```
/// use tributary_core::{Limits, Value};
/// use tributary_core::formats::json;
///
/// let body = br#"{"ts": 1714564800000, "values": {"temp": 21.5, "count": 3}}"#;
/// let points = json::parse(body, 0, &Limits::default()).unwrap();
/// assert_eq!(points[0].ts_ns, 1_714_564_800_000_000_000);
/// assert_eq!(points[1].value, Value::I64(3));
///
/// let err = json::parse(br#"{"values": {"temp": null}}"#, 0, &Limits::default()).unwrap_err();
/// assert_eq!(err.location, "values.temp");
/// ```
pub fn parse(body: &[u8], now_ns: i64, limits: &Limits) -> Result<Vec<Point>, ParseError> {
    let mut cx = Cx {
        now_ns,
        limits,
        points: Vec::new(),
        error: None,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let outcome = BodySeed { cx: &mut cx }
        .deserialize(&mut de)
        .and_then(|()| de.end());
    match outcome {
        Ok(()) => Ok(cx.points),
        Err(e) => Err(cx.error.take().unwrap_or_else(|| syntax_error(&e))),
    }
}

/// State shared by the visitors of one body.
struct Cx<'l> {
    now_ns: i64,
    limits: &'l Limits,
    points: Vec<Point>,
    /// The precise error, set by the visitor that refused the input; the
    /// `serde_json::Error` it returns only unwinds the parse.
    error: Option<ParseError>,
}

impl Cx<'_> {
    fn fail<E: de::Error>(&mut self, error: ParseError) -> E {
        let unwind = E::custom(&error.message);
        self.error = Some(error);
        unwind
    }
}

/// Where an object of the body is: the whole body, or one array element.
#[derive(Clone, Copy)]
struct At(Option<usize>);

impl At {
    fn object(self) -> String {
        match self.0 {
            None => "body".to_owned(),
            Some(i) => format!("[{i}]"),
        }
    }

    fn field(self, path: &str) -> String {
        match self.0 {
            None => path.to_owned(),
            Some(i) => format!("[{i}].{path}"),
        }
    }
}

struct BodySeed<'c, 'l> {
    cx: &'c mut Cx<'l>,
}

impl<'de> DeserializeSeed<'de> for BodySeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BodySeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object or an array of objects")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        ObjectVisitor {
            cx: self.cx,
            at: At(None),
        }
        .visit_map(map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while seq
            .next_element_seed(ObjectVisitor {
                cx: &mut *self.cx,
                at: At(Some(index)),
            })?
            .is_some()
        {
            index += 1;
        }
        Ok(())
    }

    reject_scalars!();
}

impl BodySeed<'_, '_> {
    fn reject<E: de::Error>(self, found: &str) -> E {
        self.cx.fail(ParseError::new(
            "body",
            format!("expected a JSON object or an array of objects, found {found}"),
        ))
    }
}

struct ObjectVisitor<'c, 'l> {
    cx: &'c mut Cx<'l>,
    at: At,
}

impl<'de> DeserializeSeed<'de> for ObjectVisitor<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ObjectVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object with \"values\" and an optional \"ts\"")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Self { cx, at } = self;
        let first = cx.points.len();
        let mut ts: Option<Option<i64>> = None;
        let mut has_values = false;
        while let Some(Key(key)) = map.next_key()? {
            match &*key {
                "ts" => {
                    if ts.is_some() {
                        return Err(cx.fail(ParseError::new(at.field("ts"), "duplicate field")));
                    }
                    let raw: &RawValue = map.next_value()?;
                    ts =
                        Some(timestamp(raw).map_err(|message| {
                            cx.fail(ParseError::new(at.field("ts"), message))
                        })?);
                }
                "values" => {
                    if has_values {
                        return Err(cx.fail(ParseError::new(at.field("values"), "duplicate field")));
                    }
                    has_values = true;
                    map.next_value_seed(ValuesVisitor { cx: &mut *cx, at })?;
                }
                other => {
                    return Err(cx.fail(ParseError::new(
                        at.object(),
                        format!("unknown field {other:?}; expected \"ts\" or \"values\""),
                    )));
                }
            }
        }
        if !has_values {
            return Err(cx.fail(ParseError::new(at.object(), "missing field \"values\"")));
        }
        if let Some(Some(ts_ns)) = ts {
            for point in &mut cx.points[first..] {
                point.ts_ns = ts_ns;
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.reject("an array"))
    }

    reject_scalars!();
}

impl ObjectVisitor<'_, '_> {
    fn reject<E: de::Error>(self, found: &str) -> E {
        let location = self.at.object();
        self.cx.fail(ParseError::new(
            location,
            format!("expected an object, found {found}"),
        ))
    }
}

/// Reads `ts`: RFC 3339 text, epoch milliseconds, or `null` (absent).
fn timestamp(raw: &RawValue) -> Result<Option<i64>, String> {
    const EXPECTED: &str =
        "expected an RFC 3339 timestamp (\"2024-05-01T12:00:00Z\") or epoch milliseconds";
    match Scalar::of(raw) {
        Scalar::Number(text) => decimal_to_scaled(text, 6)
            .and_then(|ns| i64::try_from(ns).ok())
            .map(Some)
            .ok_or_else(|| format!("timestamp {text} ms is out of range")),
        Scalar::Other(Leaf::Null) => Ok(None),
        Scalar::Other(Leaf::Str(s)) => parse_rfc3339(&s)
            .map(Some)
            .ok_or_else(|| format!("{EXPECTED}, found {s:?}")),
        Scalar::Other(other) => Err(format!("{EXPECTED}, found {}", other.describe())),
    }
}

struct ValuesVisitor<'c, 'l> {
    cx: &'c mut Cx<'l>,
    at: At,
}

impl<'de> DeserializeSeed<'de> for ValuesVisitor<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValuesVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of metric names to values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Self { cx, at } = self;
        let mut count = 0usize;
        while let Some(Key(name)) = map.next_key()? {
            let leaf: Leaf<'de> = map.next_value()?;
            let location = || at.field(&format!("values.{name}"));
            let value = match leaf {
                Leaf::Bool(b) => Value::Bool(b),
                Leaf::Int(i) => Value::I64(i),
                Leaf::UInt(u) => i64::try_from(u).map_or(Value::F64(u as f64), Value::I64),
                Leaf::Float(f) => Value::F64(f),
                Leaf::Str(s) => Value::Str(s.into_owned()),
                Leaf::Null => {
                    return Err(cx.fail(ParseError::new(
                        location(),
                        "null is not a value; omit the metric instead",
                    )));
                }
                other @ (Leaf::Array | Leaf::Object) => {
                    return Err(cx.fail(ParseError::new(
                        location(),
                        format!(
                            "expected a number, a boolean or a string, found {}",
                            other.describe()
                        ),
                    )));
                }
            };
            let max = cx.limits.max_points_per_request;
            if cx.points.len() >= max {
                return Err(cx.fail(ParseError::too_large(
                    location(),
                    format!("more than {max} points in one request"),
                )));
            }
            let point = Point {
                metric: name.into_owned(),
                ts_ns: cx.now_ns,
                value,
            };
            if let Err(e) = validate_point(&point, cx.limits) {
                return Err(cx.fail(ParseError::invalid(
                    at.field(&format!("values.{}", point.metric)),
                    &e,
                )));
            }
            cx.points.push(point);
            count += 1;
        }
        if count == 0 {
            return Err(cx.fail(ParseError::new(
                at.field("values"),
                "must hold at least one value",
            )));
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.reject("an array"))
    }

    reject_scalars!();
}

impl ValuesVisitor<'_, '_> {
    fn reject<E: de::Error>(self, found: &str) -> E {
        let location = self.at.field("values");
        self.cx.fail(ParseError::new(
            location,
            format!("expected an object of metric names to values, found {found}"),
        ))
    }
}

// ---- Helpers shared with the SenML parser. ----

/// Turns a malformed-JSON error into a [`ParseError`] at `line L, column C`.
pub(super) fn syntax_error(e: &serde_json::Error) -> ParseError {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = text.strip_suffix(&suffix).unwrap_or(&text);
    ParseError::new(
        format!("line {}, column {}", e.line(), e.column()),
        format!("invalid JSON: {message}"),
    )
}

/// An object key, borrowed from the body unless it has escapes.
pub(super) struct Key<'de>(pub(super) Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Any JSON value, with containers skipped: what a field turned out to be,
/// so that the caller can check its type and name the field in the error.
#[derive(Debug, PartialEq)]
pub(super) enum Leaf<'de> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(Cow<'de, str>),
    Array,
    Object,
}

impl Leaf<'_> {
    /// The value as a number, if it is one.
    pub(super) fn number(&self) -> Option<f64> {
        match *self {
            Leaf::Int(i) => Some(i as f64),
            Leaf::UInt(u) => Some(u as f64),
            Leaf::Float(f) => Some(f),
            _ => None,
        }
    }

    /// What the value is, for "expected X, found Y" messages.
    pub(super) fn describe(&self) -> &'static str {
        match self {
            Leaf::Null => "null",
            Leaf::Bool(_) => "a boolean",
            Leaf::Int(_) | Leaf::UInt(_) | Leaf::Float(_) => "a number",
            Leaf::Str(_) => "a string",
            Leaf::Array => "an array",
            Leaf::Object => "an object",
        }
    }
}

impl<'de> Deserialize<'de> for Leaf<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LeafVisitor;
        impl<'de> Visitor<'de> for LeafVisitor {
            type Value = Leaf<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Leaf<'de>, E> {
                Ok(Leaf::Null)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Leaf<'de>, E> {
                Ok(Leaf::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Leaf<'de>, E> {
                Ok(Leaf::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Leaf<'de>, E> {
                Ok(Leaf::UInt(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Leaf<'de>, E> {
                Ok(Leaf::Float(v))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Leaf<'de>, E> {
                Ok(Leaf::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Leaf<'de>, E> {
                Ok(Leaf::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Leaf<'de>, E> {
                Ok(Leaf::Str(Cow::Owned(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Leaf<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Leaf::Array)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Leaf<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Leaf::Object)
            }
        }
        deserializer.deserialize_any(LeafVisitor)
    }
}

/// A JSON value whose numbers keep their text, for timestamps that must be
/// converted exactly (see [`decimal_to_scaled`]).
pub(super) enum Scalar<'de> {
    /// The number as written, such as `1.276020076001e+09`.
    Number(&'de str),
    Other(Leaf<'de>),
}

impl<'de> Scalar<'de> {
    pub(super) fn of(raw: &'de RawValue) -> Self {
        let text = raw.get().trim();
        match text.as_bytes().first() {
            Some(b'-' | b'0'..=b'9') => Scalar::Number(text),
            Some(b'[') => Scalar::Other(Leaf::Array),
            Some(b'{') => Scalar::Other(Leaf::Object),
            // A string, `true`, `false` or `null`, already checked by
            // serde_json when `raw` was captured: reading it again cannot
            // fail, so the fallback is never taken.
            _ => Scalar::Other(serde_json::from_str(text).unwrap_or(Leaf::Null)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000_000_000_000_000;

    fn ok(body: &str) -> Vec<Point> {
        match parse(body.as_bytes(), NOW, &Limits::default()) {
            Ok(points) => points,
            Err(e) => panic!("{body}: {e}"),
        }
    }

    fn err(body: &str) -> ParseError {
        match parse(body.as_bytes(), NOW, &Limits::default()) {
            Ok(points) => panic!("{body}: accepted as {points:?}"),
            Err(e) => e,
        }
    }

    fn point(metric: &str, ts_ns: i64, value: Value) -> Point {
        Point {
            metric: metric.to_owned(),
            ts_ns,
            value,
        }
    }

    #[test]
    fn single_object_with_every_value_type() {
        let points = ok(
            r#"{"ts": "2024-05-01T12:00:00Z", "values": {"temp": 21.5, "door": true, "count": 3, "fw": "1.2"}}"#,
        );
        let ts = 1_714_564_800_000_000_000;
        assert_eq!(
            points,
            vec![
                point("temp", ts, Value::F64(21.5)),
                point("door", ts, Value::Bool(true)),
                point("count", ts, Value::I64(3)),
                point("fw", ts, Value::Str("1.2".into())),
            ]
        );
    }

    #[test]
    fn numbers_are_ints_only_when_written_as_integers_that_fit() {
        let points = ok(
            r#"{"values": {"a": -7, "b": 7.0, "c": 1e3, "d": 9223372036854775807, "e": 9223372036854775808}}"#,
        );
        let values: Vec<_> = points.into_iter().map(|p| p.value).collect();
        assert_eq!(
            values,
            vec![
                Value::I64(-7),
                Value::F64(7.0),
                Value::F64(1000.0),
                Value::I64(i64::MAX),
                Value::F64(9_223_372_036_854_775_808.0),
            ]
        );
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            ok(r#"{"values": {"a": 1}}"#)[0].ts_ns,
            NOW,
            "missing ts means now"
        );
        assert_eq!(ok(r#"{"ts": null, "values": {"a": 1}}"#)[0].ts_ns, NOW);
        assert_eq!(
            ok(r#"{"ts": 1714564800000, "values": {"a": 1}}"#)[0].ts_ns,
            1_714_564_800_000_000_000
        );
        assert_eq!(
            ok(r#"{"ts": 1714564800000.123456, "values": {"a": 1}}"#)[0].ts_ns,
            1_714_564_800_000_123_456
        );
        assert_eq!(
            ok(r#"{"ts": -1.5, "values": {"a": 1}}"#)[0].ts_ns,
            -1_500_000
        );
        assert_eq!(
            ok(r#"{"ts": "2024-05-01T14:00:00.25+02:00", "values": {"a": 1}}"#)[0].ts_ns,
            1_714_564_800_250_000_000
        );
        // `ts` after `values` applies to the values all the same.
        let points = ok(r#"{"values": {"a": 1, "b": 2}, "ts": 5}"#);
        assert!(points.iter().all(|p| p.ts_ns == 5_000_000), "{points:?}");
    }

    #[test]
    fn arrays_of_objects_keep_their_own_timestamps() {
        let points = ok(
            r#"[{"ts": 1, "values": {"a": 1}}, {"values": {"a": 2}}, {"ts": 3, "values": {"a": 3, "b": false}}]"#,
        );
        assert_eq!(
            points,
            vec![
                point("a", 1_000_000, Value::I64(1)),
                point("a", NOW, Value::I64(2)),
                point("a", 3_000_000, Value::I64(3)),
                point("b", 3_000_000, Value::Bool(false)),
            ]
        );
        assert_eq!(ok("[]"), vec![], "an empty batch is valid and empty");
    }

    #[test]
    fn escaped_names_and_strings_are_decoded() {
        let points = ok(r#"{"values": {"t\u0065mp": "a\"b\\c\u00e9"}}"#);
        assert_eq!(
            points,
            vec![point("temp", NOW, Value::Str("a\"b\\cé".into()))]
        );
    }

    #[track_caller]
    fn assert_err(body: &str, location: &str, message_part: &str) {
        let e = err(body);
        assert_eq!(e.location, location, "{body}: {e}");
        assert!(
            e.message.contains(message_part),
            "{body}: {e} should mention {message_part:?}"
        );
        assert!(!e.too_large, "{body}: {e}");
    }

    #[test]
    fn errors_name_the_field() {
        assert_err(r#"{"values": {"temp": null}}"#, "values.temp", "null");
        assert_err(
            r#"[{"values": {"a": 1}}, {"values": {"a": 1}}, {"values": {"temp": null}}]"#,
            "[2].values.temp",
            "null",
        );
        assert_err(
            r#"{"values": {"temp": {"v": 1}}}"#,
            "values.temp",
            "found an object",
        );
        assert_err(
            r#"{"values": {"temp": [1, 2]}}"#,
            "values.temp",
            "found an array",
        );
        assert_err(r#"{"values": {}}"#, "values", "at least one value");
        assert_err(r#"[{"values": {}}]"#, "[0].values", "at least one value");
        assert_err(r#"{"values": [1]}"#, "values", "found an array");
        assert_err(r#"{"values": 3}"#, "values", "found a number");
        assert_err(r#"{"ts": 1}"#, "body", "missing field \"values\"");
        assert_err(r#"[{"ts": 1}]"#, "[0]", "missing field \"values\"");
        assert_err(
            r#"{"values": {"a": 1}, "time": 1}"#,
            "body",
            "unknown field \"time\"",
        );
        assert_err(
            r#"[{"values": {"a": 1}, "value": 1}]"#,
            "[0]",
            "unknown field \"value\"",
        );
        assert_err(
            r#"{"values": {"a": 1}, "values": {"b": 1}}"#,
            "values",
            "duplicate",
        );
        assert_err(
            r#"{"ts": 1, "ts": 2, "values": {"a": 1}}"#,
            "ts",
            "duplicate",
        );
        assert_err(
            r#"{"ts": "yesterday", "values": {"a": 1}}"#,
            "ts",
            "RFC 3339",
        );
        assert_err(
            r#"{"ts": true, "values": {"a": 1}}"#,
            "ts",
            "found a boolean",
        );
        assert_err(r#"{"ts": 1e300, "values": {"a": 1}}"#, "ts", "out of range");
        assert_err(
            r#"{"ts": 9223372036855, "values": {"a": 1}}"#,
            "ts",
            "out of range",
        );
        assert_err(r#"[1]"#, "[0]", "expected an object, found a number");
        assert_err(r#"[[]]"#, "[0]", "found an array");
        assert_err(r#""hello""#, "body", "found a string");
        assert_err("null", "body", "found null");
    }

    #[test]
    fn points_are_validated() {
        assert_err(
            r#"{"values": {"bad name": 1}}"#,
            "values.bad name",
            "invalid character",
        );
        assert_err(r#"{"values": {"": 1}}"#, "values.", "must not be empty");
        let limits = Limits {
            max_string_len: 3,
            ..Limits::default()
        };
        let e = parse(br#"{"values": {"fw": "1.2.3"}}"#, NOW, &limits).unwrap_err();
        assert_eq!(e.location, "values.fw");
        assert!(e.message.contains("longer than 3 bytes"), "{e}");
    }

    #[test]
    fn malformed_json_is_located() {
        let e = err("{\"values\": {\"a\": 1,}}");
        assert_eq!(e.location, "line 1, column 20", "{e}");
        assert!(e.message.starts_with("invalid JSON: "), "{e}");
        let e = err("{\"values\": {\"a\": 1}}\n  x");
        assert_eq!(e.location, "line 2, column 3", "{e}");
        assert!(err("").message.contains("EOF"));
        assert_err(
            r#"{"values": {"a": 1e999}}"#,
            "line 1, column 22",
            "out of range",
        );
    }

    #[test]
    fn too_many_points_is_too_large() {
        let limits = Limits {
            max_points_per_request: 2,
            ..Limits::default()
        };
        assert_eq!(
            parse(br#"{"values": {"a": 1, "b": 2}}"#, NOW, &limits).map(|p| p.len()),
            Ok(2)
        );
        let e = parse(
            br#"[{"values": {"a": 1, "b": 2}}, {"values": {"c": 3}}]"#,
            NOW,
            &limits,
        )
        .unwrap_err();
        assert!(e.too_large, "{e}");
        assert_eq!(e.location, "[1].values.c");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let body = format!(
            "{{\"values\": {{\"a\": {}1{}}}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(err(&body).location, "values.a");
        let body = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(err(&body).location, "[0]");
    }
}
