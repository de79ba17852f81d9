//! The query service's configuration: every limit a request is held to.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::QueryError;

/// Limits and tuning of the query service. Every field has a default, so an
/// empty config section is valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// Most devices one request may address. A selector that matches more is
    /// refused with `INVALID_ARGUMENT` on `target.selector`.
    pub max_devices: usize,
    /// Most metric names one request may list in `metrics`.
    pub max_metrics: usize,
    /// Most series (device, metric) that `ListMetrics` and `Latest` return.
    pub max_series: usize,
    /// Most buckets one `Aggregate` response holds, over all its series.
    pub max_buckets: usize,
    /// Most stored samples one `Aggregate` may read before it is refused with
    /// `RESOURCE_EXHAUSTED`.
    pub max_scanned_points: u64,
    /// Largest encoded response, in bytes. `QueryRange` ends a page early to
    /// stay below it; the other calls are refused with `RESOURCE_EXHAUSTED`.
    /// Keep it below the clients' decoding limit (4 MiB by default in gRPC).
    pub max_response_bytes: usize,
    /// Store calls one request keeps in flight (`ListMetrics`, `Latest`).
    pub store_concurrency: usize,
    /// Most `Subscribe` streams open at once on this server.
    pub max_subscriptions: usize,
    /// Messages buffered per `Subscribe` stream before the stream lags.
    pub subscribe_buffer: usize,
    /// How often a selector `Subscribe` re-resolves its devices, in
    /// milliseconds, so that newly labelled devices appear.
    pub subscribe_refresh_ms: u64,
    /// `Aggregate` reads rollup buckets only when they ended at least this
    /// many seconds ago; newer ones are read raw (the processor rolls up a
    /// bucket at its next flush, a fraction of a second after its points).
    pub rollup_min_age_secs: u64,
    /// The rollup tiers' widths in ns, finest first: those the processor
    /// keeps (`--rollup-tiers`, not this section). Empty: raw scans only.
    #[serde(skip)]
    pub rollup_tiers: Vec<i64>,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            max_devices: 10_000,
            max_metrics: 1_000,
            max_series: 100_000,
            max_buckets: 100_000,
            max_scanned_points: 100_000_000,
            max_response_bytes: 4 * 1024 * 1024 - 64 * 1024,
            store_concurrency: 16,
            max_subscriptions: 1024,
            subscribe_buffer: 64,
            subscribe_refresh_ms: 5_000,
            rollup_min_age_secs: 60,
            rollup_tiers: tributary_core::rollup::Tiers::default().widths().to_vec(),
        }
    }
}

impl QueryConfig {
    /// Checks that every limit is usable. Call it at start-up.
    pub fn validate(&self) -> Result<(), QueryError> {
        let positive = [
            ("max_devices", self.max_devices),
            ("max_metrics", self.max_metrics),
            ("max_series", self.max_series),
            ("max_buckets", self.max_buckets),
            ("store_concurrency", self.store_concurrency),
            ("max_subscriptions", self.max_subscriptions),
            ("subscribe_buffer", self.subscribe_buffer),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(QueryError::Config {
                    field,
                    message: "must be at least 1".into(),
                });
            }
        }
        if self.max_scanned_points == 0 {
            return Err(QueryError::Config {
                field: "max_scanned_points",
                message: "must be at least 1".into(),
            });
        }
        if self.max_response_bytes < 64 * 1024 {
            return Err(QueryError::Config {
                field: "max_response_bytes",
                message: "must be at least 65536".into(),
            });
        }
        if self.subscribe_refresh_ms < 100 {
            return Err(QueryError::Config {
                field: "subscribe_refresh_ms",
                message: "must be at least 100".into(),
            });
        }
        Ok(())
    }

    /// The selector refresh period of `Subscribe`.
    pub fn subscribe_refresh(&self) -> Duration {
        Duration::from_millis(self.subscribe_refresh_ms.max(100))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_zero_limits_are_not() {
        assert!(QueryConfig::default().validate().is_ok());
        let bad = QueryConfig {
            max_buckets: 0,
            ..QueryConfig::default()
        };
        let err = bad.validate().unwrap_err();
        assert!(err.to_string().contains("max_buckets"), "{err}");
        let bad = QueryConfig {
            subscribe_refresh_ms: 1,
            ..QueryConfig::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn partial_config_fills_defaults_and_rejects_unknown_fields() {
        let c: QueryConfig = serde_json::from_str(r#"{"max_devices": 5}"#).unwrap();
        assert_eq!(c.max_devices, 5);
        assert_eq!(c.max_buckets, QueryConfig::default().max_buckets);
        assert!(serde_json::from_str::<QueryConfig>(r#"{"max_device": 5}"#).is_err());
    }
}
