//! Ingest metrics, shared by every frontend.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabel {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Counters of the ingest path. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct IngestMetrics {
    points_received: Family<TenantLabel, Counter>,
    points_acked: Family<TenantLabel, Counter>,
    rejected: Family<ReasonLabel, Counter>,
    pub(crate) append_seconds: Histogram,
}

impl Default for IngestMetrics {
    fn default() -> Self {
        Self {
            points_received: Family::default(),
            points_acked: Family::default(),
            rejected: Family::default(),
            append_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
        }
    }
}

impl IngestMetrics {
    /// Creates the metrics and registers them under `tributary_ingest_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("tributary_ingest");
        r.register(
            "points_received",
            "Valid points handed to the log, by tenant",
            m.points_received.clone(),
        );
        r.register(
            "points_acked",
            "Points acknowledged to devices after a durable append, by tenant",
            m.points_acked.clone(),
        );
        r.register(
            "requests_rejected",
            "Requests or messages refused, by reason",
            m.rejected.clone(),
        );
        r.register(
            "log_append_seconds",
            "Durable log append latency",
            m.append_seconds.clone(),
        );
        m
    }

    pub(crate) fn received(&self, tenant: &str, n: usize) {
        self.points_received
            .get_or_create(&TenantLabel {
                tenant: tenant.to_string(),
            })
            .inc_by(n as u64);
    }

    pub(crate) fn acked(&self, tenant: &str, n: usize) {
        self.points_acked
            .get_or_create(&TenantLabel {
                tenant: tenant.to_string(),
            })
            .inc_by(n as u64);
    }

    /// Counts a refused request; `reason` is a short fixed label value.
    pub fn rejected(&self, reason: &'static str) {
        self.rejected.get_or_create(&ReasonLabel { reason }).inc();
    }
}
