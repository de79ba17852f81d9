//! Limits on everything a client sends. Every size, rate and count has one.

use serde::{Deserialize, Serialize};

/// Ingest limits, shared by every frontend and checked again by the processor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body, after decompression, in bytes.
    pub max_body_bytes: usize,
    /// Most points in one request or message.
    pub max_points_per_request: usize,
    /// Longest metric name, in bytes.
    pub max_metric_len: usize,
    /// Longest string value, in bytes.
    pub max_string_len: usize,
    /// Longest device id, in bytes.
    pub max_device_id_len: usize,
    /// Most distinct devices in one line-protocol request.
    pub max_devices_per_request: usize,
    /// Most labels on one device.
    pub max_labels: usize,
    /// Points older than this many nanoseconds are refused, so that nothing
    /// is acknowledged that the store's retention would then drop. 0 = no
    /// limit. Standalone sets it to the retention.
    pub max_point_age_ns: i64,
    /// Points more than this many nanoseconds in the future are refused
    /// (a device with a broken clock). 0 = no limit.
    pub max_future_ns: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024 * 1024,
            max_points_per_request: 100_000,
            max_metric_len: 128,
            max_string_len: 4096,
            max_device_id_len: 128,
            max_devices_per_request: 10_000,
            max_labels: 64,
            max_point_age_ns: 0,
            max_future_ns: 7 * 86_400 * 1_000_000_000,
        }
    }
}

impl Limits {
    /// Checks a timestamp against `max_point_age_ns` and `max_future_ns`.
    pub fn check_timestamp(&self, ts_ns: i64, now_ns: i64) -> Result<(), String> {
        if self.max_point_age_ns > 0 && ts_ns < now_ns.saturating_sub(self.max_point_age_ns) {
            return Err(format!(
                "timestamp {} is older than the retention of {} h",
                crate::time::format_rfc3339(ts_ns),
                self.max_point_age_ns / 3_600_000_000_000
            ));
        }
        if self.max_future_ns > 0 && ts_ns > now_ns.saturating_add(self.max_future_ns) {
            return Err(format!(
                "timestamp {} is more than {} h in the future",
                crate::time::format_rfc3339(ts_ns),
                self.max_future_ns / 3_600_000_000_000
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_outside_the_window_are_refused() {
        let hour = 3_600_000_000_000i64;
        let l = Limits {
            max_point_age_ns: 24 * hour,
            max_future_ns: hour,
            ..Limits::default()
        };
        let now = 1_000 * 24 * hour;
        assert!(l.check_timestamp(now, now).is_ok());
        assert!(l.check_timestamp(now - 23 * hour, now).is_ok());
        assert!(
            l.check_timestamp(now - 25 * hour, now)
                .unwrap_err()
                .contains("older than the retention of 24 h")
        );
        assert!(
            l.check_timestamp(now + 2 * hour, now)
                .unwrap_err()
                .contains("in the future")
        );
        let open = Limits {
            max_point_age_ns: 0,
            max_future_ns: 0,
            ..Limits::default()
        };
        assert!(open.check_timestamp(i64::MIN, now).is_ok());
        assert!(open.check_timestamp(i64::MAX, now).is_ok());
    }
}
