//! Times in the API: RFC 3339 in every response, and in requests RFC 3339,
//! Unix seconds, `now`, or a time relative to now (`-1h`, `now-15m`).

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::problem::Problem;

/// `ns` since the epoch as RFC 3339 in UTC, with as many fractional digits
/// as it needs (`2026-12-07T09:00:00.5Z`).
pub fn rfc3339(ns: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ns.to_string())
}

/// [`rfc3339`], or nothing for 0 (the services' "unset").
pub fn optional(ns: i64) -> Option<String> {
    (ns != 0).then(|| rfc3339(ns))
}

/// Now, in ns since the epoch.
pub fn now_ns() -> i64 {
    let now = OffsetDateTime::now_utc().unix_timestamp_nanos();
    i64::try_from(now).unwrap_or(i64::MAX)
}

/// A duration such as `90s`, `15m`, `1h`, `7d`, `2w` in ns.
pub fn parse_duration_ns(s: &str) -> Option<i64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: i64 = num.parse().ok()?;
    let unit_ns: i64 = match unit {
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        "w" => 7 * 86_400_000_000_000,
        "y" => 365 * 86_400_000_000_000,
        _ => return None,
    };
    n.checked_mul(unit_ns)
}

/// A time parameter: RFC 3339 (`2026-12-07T09:00:00Z`), Unix seconds
/// (`1765098000`, `1765098000.25`), `now`, or `now-1h` / `-1h` (`s`, `m`,
/// `h`, `d`, `w`).
pub fn parse_time(field: &str, s: &str, now: i64) -> Result<i64, Problem> {
    let s = s.trim();
    let bad = || {
        Problem::invalid(
            field,
            format!(
                "{s:?} is not a time: use RFC 3339 (2026-12-07T09:00:00Z), Unix seconds, `now`, or `-1h`"
            ),
        )
    };
    if s == "now" {
        return Ok(now);
    }
    if let Some(rel) = s.strip_prefix("now-").or_else(|| s.strip_prefix('-')) {
        let d = parse_duration_ns(rel).ok_or_else(bad)?;
        return now.checked_sub(d).ok_or_else(bad);
    }
    if let Ok(secs) = s.parse::<f64>() {
        let ns = secs * 1e9;
        // Within what i64 nanoseconds can say (years 1677..2262).
        if !ns.is_finite() || ns.abs() >= 9.2e18 {
            return Err(bad());
        }
        return Ok(ns as i64);
    }
    let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| bad())?;
    i64::try_from(t.unix_timestamp_nanos()).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_every_form() {
        let now = 1_765_098_000_000_000_000;
        assert_eq!(parse_time("from", "now", now).unwrap(), now);
        assert_eq!(
            parse_time("from", "-1h", now).unwrap(),
            now - 3_600_000_000_000
        );
        assert_eq!(
            parse_time("from", "now-15m", now).unwrap(),
            now - 900_000_000_000
        );
        assert_eq!(
            parse_time("from", "1765098000.5", now).unwrap(),
            1_765_098_000_500_000_000
        );
        assert_eq!(
            parse_time("from", "2025-12-07T09:00:00Z", now).unwrap(),
            1_765_098_000_000_000_000
        );
        for bad in [
            "",
            "yesterday",
            "-1x",
            "1e300",
            "NaN",
            "-99999999999999999999d",
        ] {
            let p = parse_time("from", bad, now).unwrap_err();
            assert_eq!(p.violations[0].field, "from", "{bad}");
        }
    }

    #[test]
    fn rfc3339_round_trips() {
        let ns = 1_765_098_000_123_456_789;
        let s = rfc3339(ns);
        assert_eq!(s, "2025-12-07T09:00:00.123456789Z");
        assert_eq!(parse_time("t", &s, 0).unwrap(), ns);
        assert_eq!(optional(0), None);
    }
}
