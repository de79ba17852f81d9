//! Parameters of the Prometheus HTTP API, sample value formatting and
//! metric/label name mapping.

use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::Error;

/// Duration units, largest first, in milliseconds.
const UNITS: [(&str, u64); 7] = [
    ("y", 365 * 86_400_000),
    ("w", 7 * 86_400_000),
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// The longest duration, in milliseconds, whose nanoseconds fit an `i64`
/// (about 292 years).
const MAX_MS: u64 = i64::MAX as u64 / 1_000_000;

/// A Prometheus duration in milliseconds (may be 0), or `None`.
pub(crate) fn duration_ms(s: &str) -> Option<u64> {
    let mut rest = s;
    let mut total = 0u64;
    let mut next_unit = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (idx, &(unit, ms)) = UNITS
            .iter()
            .enumerate()
            .skip(next_unit)
            .find(|&(_, &(u, _))| rest.starts_with(u) && !(u == "m" && rest.starts_with("ms")))?;
        total = total.checked_add(n.checked_mul(ms)?)?;
        rest = &rest[unit.len()..];
        next_unit = idx + 1;
    }
    (total <= MAX_MS).then_some(total)
}

/// Parses a PromQL duration: one or more `<integer><unit>` with units `ms`,
/// `s`, `m`, `h`, `d` (24h), `w` (7d), `y` (365d), largest first and each at
/// most once (`1h30m`, `90m`, `1d12h`, `500ms`). It must be greater than 0
/// and at most about 292 years (so its nanoseconds fit an `i64`).
pub fn parse_duration(s: &str) -> Result<Duration, Error> {
    match duration_ms(s) {
        None => Err(Error::parse(format!("not a valid duration string: {s:?}"))),
        Some(0) => Err(Error::parse("duration must be greater than 0")),
        Some(ms) => Ok(Duration::from_millis(ms)),
    }
}

/// Prints a duration the way Prometheus does (`1h30m`, `5m`, `1d`, `250ms`),
/// to the millisecond (finer parts are dropped); zero is `0s`.
pub fn format_duration(d: Duration) -> String {
    let mut ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in UNITS {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

/// Parses the `time`, `start` or `end` parameter (its name is `name`, for the
/// error message) into nanoseconds since the Unix epoch.
///
/// Accepts Unix seconds, integer or fractional (`1700000000`,
/// `1700000000.123`; plain decimals are read exactly, digits past the
/// nanosecond dropped; other float forms such as `1.7e9` are rounded to the
/// nanosecond), or RFC 3339 (`2026-12-07T10:00:00Z`,
/// `2026-12-07T10:00:00.5+01:00`). Refuses NaN, infinities and times outside
/// what `i64` nanoseconds hold (years 1677 to 2262).
pub fn parse_time(name: &str, s: &str) -> Result<i64, Error> {
    let bad = || Error::InvalidParameter {
        name: name.to_owned(),
        msg: format!("cannot parse {s:?} to a valid timestamp"),
    };
    if let Some(ns) = decimal_ns(s) {
        return Ok(ns);
    }
    if let Ok(secs) = s.parse::<f64>() {
        let ns = (secs * 1e9).round();
        return if ns >= i64::MIN as f64 && ns < i64::MAX as f64 {
            Ok(ns as i64)
        } else {
            Err(bad())
        };
    }
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .and_then(|t| i64::try_from(t.unix_timestamp_nanos()).ok())
        .ok_or_else(bad)
}

/// `[+-]digits[.digits]` seconds as exact nanoseconds, or `None` when `s`
/// has another shape or overflows.
fn decimal_ns(s: &str) -> Option<i64> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().chain(frac.bytes()).all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let secs: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac_ns = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(9)
        .fold(0i64, |acc, c| acc * 10 + i64::from(c - b'0'));
    let total = secs.checked_mul(1_000_000_000)?.checked_add(frac_ns)?;
    Some(if neg { -total } else { total })
}

/// Parses the `step` or `timeout` parameter (its name is `name`, for the
/// error message): float seconds (`15`, `0.5`) or a PromQL duration (`15s`,
/// `1m`, `1h30m`). It must be greater than 0 (after rounding to the
/// nanosecond) and fit `i64` nanoseconds.
pub fn parse_duration_param(name: &str, s: &str) -> Result<Duration, Error> {
    let invalid = |msg: String| Error::InvalidParameter {
        name: name.to_owned(),
        msg,
    };
    let unparsable = || invalid(format!("cannot parse {s:?} to a valid duration"));
    let not_positive = || invalid("zero or negative durations are not accepted".to_owned());
    let d = if let Ok(secs) = s.parse::<f64>() {
        if !secs.is_finite() {
            return Err(unparsable());
        }
        if secs <= 0.0 {
            return Err(not_positive());
        }
        let ns = (secs * 1e9).round();
        if ns >= i64::MAX as f64 {
            return Err(invalid(format!(
                "cannot parse {s:?} to a valid duration: it overflows"
            )));
        }
        Duration::from_nanos(ns as u64)
    } else {
        Duration::from_millis(duration_ms(s).ok_or_else(unparsable)?)
    };
    if d.is_zero() {
        return Err(not_positive());
    }
    Ok(d)
}

/// Formats a sample value as the Prometheus HTTP API does in its JSON
/// (`[<time>, "<value>"]`): `NaN`, `+Inf`, `-Inf`, otherwise the shortest
/// decimal that reads back to the same `f64`, never in exponent form (Go's
/// `strconv.FormatFloat(v, 'f', -1, 64)`): `2`, `0.1`, `-0`,
/// `1000000000000000000000` for 1e21, `0.0000001` for 1e-7.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        // Rust's `Display` for f64 is the shortest round-trip representation
        // without an exponent, as Go's 'f' format with precision -1.
        v.to_string()
    }
}

/// Maps a Tributary metric name to a valid Prometheus one,
/// `[a-zA-Z_:][a-zA-Z0-9_:]*`: every character outside `[a-zA-Z0-9_:]`
/// (`.`, `-`, `/`, any non-ASCII character) becomes `_`, and a name
/// starting with a digit (or an empty one) gets a `_` prefix.
///
/// The mapping is not injective: `a.b` and `a_b` both become `a_b`. Callers
/// that expose several metrics must detect the clash themselves.
pub fn sanitize_metric_name(tributary_metric: &str) -> String {
    sanitize(tributary_metric, true)
}

/// Maps a Tributary label name to a valid Prometheus one,
/// `[a-zA-Z_][a-zA-Z0-9_]*`: like [`sanitize_metric_name`], with `:` also
/// becoming `_`. Names starting with `__` are reserved for Prometheus'
/// internal labels (`__name__`), so a user label that would start with `__`
/// gets a `label_` prefix: `__name__` becomes `label___name__`, `..x`
/// becomes `label___x`.
///
/// Not injective either (`a.b`, `a:b` and `a_b` all become `a_b`).
pub fn sanitize_label_name(tributary_label: &str) -> String {
    let s = sanitize(tributary_label, false);
    if s.starts_with("__") {
        format!("label_{s}")
    } else {
        s
    }
}

fn sanitize(name: &str, colon: bool) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    out.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':') {
            c
        } else {
            '_'
        }
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn durations() {
        let ok = |s: &str| parse_duration(s).unwrap();
        assert_eq!(ok("5m"), Duration::from_secs(300));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("90m"), Duration::from_secs(5400));
        assert_eq!(
            ok("1y2w3d4h5m6s7ms"),
            Duration::from_millis(((((365 + 17) * 24 + 4) * 60 + 5) * 60 + 6) * 1000 + 7)
        );
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("1m5ms"), Duration::from_millis(60_005));
        for bad in [
            "",
            "5",
            "m",
            "1.5m",
            "1m1h",
            "1m1m",
            "5x",
            "-5m",
            "5 m",
            "1ms1s",
            "9999999999y",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_duration("0s").unwrap_err().to_string(),
            "parse error: duration must be greater than 0"
        );
        for s in ["5m", "1h30m", "1d", "250ms", "1y1w1d1h1m1s1ms"] {
            assert_eq!(format_duration(ok(s)), s);
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn times() {
        let t = |s: &str| parse_time("time", s).unwrap();
        assert_eq!(t("1700000000"), 1_700_000_000 * S);
        assert_eq!(t("1700000000.123"), 1_700_000_000 * S + 123_000_000);
        assert_eq!(t("1700000000.1234567891"), 1_700_000_000 * S + 123_456_789);
        assert_eq!(t("-1.5"), -S - S / 2);
        assert_eq!(t(".5"), S / 2);
        assert_eq!(t("1.7e9"), 1_700_000_000 * S);
        assert_eq!(t("2026-12-07T10:00:00Z"), 1_796_637_600 * S);
        assert_eq!(
            t("2026-12-07T10:00:00.5+01:00"),
            (1_796_637_600 - 3600) * S + S / 2
        );
        assert_eq!(t("1970-01-01T00:00:00Z"), 0);
        for bad in [
            "abc",
            "",
            "NaN",
            "inf",
            "-Infinity",
            "1e20",
            "-1e20",
            "9300000000",
            "2026-12-07",
            "3000-01-01T00:00:00Z",
            "1_000",
        ] {
            assert!(parse_time("start", bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_time("start", "abc").unwrap_err().to_string(),
            r#"invalid parameter "start": cannot parse "abc" to a valid timestamp"#
        );
    }

    #[test]
    fn duration_params() {
        let d = |s: &str| parse_duration_param("step", s).unwrap();
        assert_eq!(d("15"), Duration::from_secs(15));
        assert_eq!(d("0.5"), Duration::from_millis(500));
        assert_eq!(d("15s"), Duration::from_secs(15));
        assert_eq!(d("1m"), Duration::from_secs(60));
        assert_eq!(d("1h30m"), Duration::from_secs(5400));
        assert_eq!(d("1e-9"), Duration::from_nanos(1));
        let err = |s: &str| parse_duration_param("step", s).unwrap_err().to_string();
        assert_eq!(
            err("0"),
            r#"invalid parameter "step": zero or negative durations are not accepted"#
        );
        assert_eq!(
            err("-5"),
            r#"invalid parameter "step": zero or negative durations are not accepted"#
        );
        assert_eq!(
            err("0s"),
            r#"invalid parameter "step": zero or negative durations are not accepted"#
        );
        assert_eq!(
            err("1e-12"),
            r#"invalid parameter "step": zero or negative durations are not accepted"#
        );
        assert_eq!(
            err("abc"),
            r#"invalid parameter "step": cannot parse "abc" to a valid duration"#
        );
        assert!(err("NaN").contains("cannot parse"));
        assert!(err("inf").contains("cannot parse"));
        assert!(err("1e10").contains("overflows"));
        assert!(parse_duration_param("timeout", "300y").is_err());
    }

    #[test]
    fn values() {
        for (v, s) in [
            (2.0, "2"),
            (0.1, "0.1"),
            (-1.5, "-1.5"),
            (0.0, "0"),
            (-0.0, "-0"),
            (1e21, "1000000000000000000000"),
            (1e-7, "0.0000001"),
            (123_456_789.123, "123456789.123"),
            (1.0 / 3.0, "0.3333333333333333"),
            (1.2345678901234567e30, "1234567890123456700000000000000"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ] {
            assert_eq!(format_value(v), s);
        }
        for v in [0.1 + 0.2, 5e-324, f64::MAX, -2.5e-300, 1e15 + 0.3] {
            assert_eq!(format_value(v).parse::<f64>().unwrap(), v);
            assert!(!format_value(v).contains('e'));
        }
    }

    #[test]
    fn names() {
        assert_eq!(sanitize_metric_name("engine.temp"), "engine_temp");
        assert_eq!(sanitize_metric_name("job:rate:5m"), "job:rate:5m");
        assert_eq!(sanitize_metric_name("temp-°C/s"), "temp__C_s");
        assert_eq!(sanitize_metric_name("1st"), "_1st");
        assert_eq!(sanitize_metric_name(""), "_");
        // Clashes are the caller's problem.
        assert_eq!(sanitize_metric_name("a.b"), sanitize_metric_name("a_b"));
        assert_eq!(sanitize_label_name("a:b"), "a_b");
        assert_eq!(sanitize_label_name("a.b"), sanitize_label_name("a_b"));
        assert_eq!(sanitize_label_name("9lives"), "_9lives");
        assert_eq!(sanitize_label_name("__name__"), "label___name__");
        assert_eq!(sanitize_label_name("..x"), "label___x");
        assert_eq!(sanitize_label_name("_x"), "_x");
        for s in ["a", "é", "1", "__", "a.b:c", "_"] {
            assert!(crate::ast::is_metric_name(&sanitize_metric_name(s)), "{s}");
            assert!(crate::ast::is_label_name(&sanitize_label_name(s)), "{s}");
            assert!(!sanitize_label_name(s).starts_with("__"), "{s}");
        }
    }
}
