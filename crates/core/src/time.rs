//! Time helpers: the clock, RFC 3339 timestamps and window durations.

use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub const NS_PER_MS: i64 = 1_000_000;
pub const NS_PER_SEC: i64 = 1_000_000_000;
pub const NS_PER_DAY: i64 = 86_400 * NS_PER_SEC;

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Parses an RFC 3339 timestamp (`2024-05-01T12:00:00.5+02:00`) to ns since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos()).ok()
}

/// Formats ns since the epoch as RFC 3339 in UTC.
pub fn format_rfc3339(ns: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(ns as i128)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ns.to_string())
}

/// Parses a duration such as `500ms`, `10s`, `1m`, `1h`, `1d`, `2w` into ns.
pub fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: i64 = num.parse().ok()?;
    let mult = match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => NS_PER_MS,
        "s" => NS_PER_SEC,
        "m" => 60 * NS_PER_SEC,
        "h" => 3600 * NS_PER_SEC,
        "d" => NS_PER_DAY,
        "w" => 7 * NS_PER_DAY,
        _ => return None,
    };
    n.checked_mul(mult).filter(|v| *v > 0)
}

/// The start of the day (UTC) that holds `ts_ns`: the store's time bucket.
pub fn day_bucket(ts_ns: i64) -> i64 {
    ts_ns.div_euclid(NS_PER_DAY).saturating_mul(NS_PER_DAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1m"), Some(60 * NS_PER_SEC));
        assert_eq!(parse_duration("1d"), Some(NS_PER_DAY));
        assert_eq!(parse_duration("250ms"), Some(250 * NS_PER_MS));
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("m"), None);
        assert_eq!(parse_duration("5y"), None);
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01Z"), Some(NS_PER_SEC));
        assert_eq!(
            parse_rfc3339("1970-01-01T02:00:01.5+02:00"),
            Some(NS_PER_SEC + 500 * NS_PER_MS)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(format_rfc3339(NS_PER_SEC), "1970-01-01T00:00:01Z");
    }

    #[test]
    fn buckets() {
        assert_eq!(day_bucket(NS_PER_DAY + 5), NS_PER_DAY);
        assert_eq!(day_bucket(-1), -NS_PER_DAY);
        assert_eq!(
            day_bucket(i64::MIN),
            i64::MIN,
            "saturates instead of overflowing"
        );
    }
}
