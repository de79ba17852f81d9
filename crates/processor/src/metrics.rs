//! The processor's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabel {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabel {
    partition: u32,
}

/// Counters and histograms of the processor. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct ProcessorMetrics {
    records: Counter,
    points_decoded: Family<TenantLabel, Counter>,
    points_stored: Family<TenantLabel, Counter>,
    pub(crate) dead_lettered: Counter,
    pub(crate) store_retries: Counter,
    pub(crate) commit_failures: Counter,
    pub(crate) store_write_seconds: Histogram,
    pub(crate) store_flush_seconds: Histogram,
    lag: Family<PartitionLabel, Gauge>,
}

impl Default for ProcessorMetrics {
    fn default() -> Self {
        Self {
            records: Counter::default(),
            points_decoded: Family::default(),
            points_stored: Family::default(),
            dead_lettered: Counter::default(),
            store_retries: Counter::default(),
            commit_failures: Counter::default(),
            store_write_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            store_flush_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            lag: Family::default(),
        }
    }
}

impl ProcessorMetrics {
    /// Creates the metrics and registers them under `tributary_processor_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("tributary_processor");
        r.register("records", "Log records consumed", m.records.clone());
        r.register(
            "points_decoded",
            "Points decoded from valid records, by tenant",
            m.points_decoded.clone(),
        );
        r.register(
            "points_stored",
            "Points written to the store, by tenant (compare with tributary_ingest_points_received_total)",
            m.points_stored.clone(),
        );
        r.register(
            "dead_lettered_records",
            "Poison records sent to the dead-letter log",
            m.dead_lettered.clone(),
        );
        r.register(
            "store_write_retries",
            "Store writes retried after a transient failure",
            m.store_retries.clone(),
        );
        r.register(
            "offset_commit_failures",
            "Offset commits that failed and were retried at the next flush",
            m.commit_failures.clone(),
        );
        r.register(
            "store_write_seconds",
            "Store write latency per poll batch",
            m.store_write_seconds.clone(),
        );
        r.register(
            "store_flush_seconds",
            "Store flush (durability) latency",
            m.store_flush_seconds.clone(),
        );
        r.register(
            "consumer_lag_records",
            "Records not yet committed, per partition",
            m.lag.clone(),
        );
        m
    }

    pub(crate) fn record_decoded(&self, tenant: &str, points: usize) {
        self.records.inc();
        self.points_decoded
            .get_or_create(&TenantLabel {
                tenant: tenant.to_string(),
            })
            .inc_by(points as u64);
    }

    pub(crate) fn points_stored(&self, tenant: &str, points: usize) {
        self.points_stored
            .get_or_create(&TenantLabel {
                tenant: tenant.to_string(),
            })
            .inc_by(points as u64);
    }

    /// Replaces the lag gauges with `lags`, one per partition this replica
    /// is assigned: a partition that moved to another replica in a
    /// rebalance stops being reported here, so a sum over replicas (an
    /// autoscaler's input) never counts a partition twice.
    pub(crate) fn set_lags(&self, lags: &[(u32, u64)]) {
        self.lag.clear();
        for &(partition, lag) in lags {
            self.lag
                .get_or_create(&PartitionLabel { partition })
                .set(i64::try_from(lag).unwrap_or(i64::MAX));
        }
    }
}
