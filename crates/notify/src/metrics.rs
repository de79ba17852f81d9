//! Delivery metrics, under `tributary_alerts_`: what was delivered, retried
//! and given up, per channel, so an operator sees a receiver failing
//! before its tenant does.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    /// `webhook` or `mqtt`.
    channel: &'static str,
    /// `delivered`, `retried`, `dead_lettered`, `silenced`.
    outcome: &'static str,
}

/// The delivery counters. Cheap to clone; the default is unregistered.
#[derive(Debug, Clone)]
pub struct DeliveryMetrics {
    outcomes: Family<Outcome, Counter>,
    webhook_seconds: Histogram,
}

impl Default for DeliveryMetrics {
    fn default() -> Self {
        Self {
            outcomes: Family::default(),
            webhook_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
        }
    }
}

impl DeliveryMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("tributary_alerts");
        r.register(
            "deliveries",
            "Alert transitions handed over, by channel (webhook, mqtt) and outcome \
             (delivered, retried: one attempt failed and another follows, \
             dead_lettered: given up, silenced: not sent)",
            m.outcomes.clone(),
        );
        r.register(
            "webhook_request_seconds",
            "Time of one webhook request, answered or not",
            m.webhook_seconds.clone(),
        );
        m
    }

    pub(crate) fn count(&self, channel: &'static str, outcome: &'static str) {
        self.outcomes
            .get_or_create(&Outcome { channel, outcome })
            .inc();
    }

    pub(crate) fn webhook_request(&self, seconds: f64) {
        self.webhook_seconds.observe(seconds);
    }
}
