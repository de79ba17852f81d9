//! Command metrics: `tributary_commands_*`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

/// Counters of the command service. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct CommandMetrics {
    sent: Family<StatusLabel, Counter>,
    reply_seconds: Histogram,
}

impl Default for CommandMetrics {
    fn default() -> Self {
        Self {
            sent: Family::default(),
            reply_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
        }
    }
}

impl CommandMetrics {
    /// Creates the metrics and registers them under `tributary_commands_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("tributary_commands");
        r.register(
            "sent",
            "SendCommand calls by outcome: replied, timeout, offline, not_subscribed, queued, or error",
            m.sent.clone(),
        );
        r.register(
            "reply_seconds",
            "From sending a command to receiving the device's reply",
            m.reply_seconds.clone(),
        );
        m
    }

    /// Counts a call by its outcome; `status` is a short fixed label value.
    pub(crate) fn outcome(&self, status: &'static str) {
        self.sent.get_or_create(&StatusLabel { status }).inc();
    }

    /// Records a reply's latency.
    pub(crate) fn replied(&self, seconds: f64) {
        self.reply_seconds.observe(seconds);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// Metrics of commands routed to other replicas through the commands log
/// (`RoutedCommandSink`). Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct RoutingMetrics {
    routed: Family<OutcomeLabel, Counter>,
    seconds: Histogram,
}

impl Default for RoutingMetrics {
    fn default() -> Self {
        Self {
            routed: Family::default(),
            seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
        }
    }
}

impl RoutingMetrics {
    /// Creates the metrics and registers them under
    /// `tributary_commands_routed_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("tributary_commands");
        r.register(
            "routed",
            "Commands routed through the commands log, by outcome: replied, timeout, offline, \
             not_subscribed, queued, no_presence (answered offline without routing), \
             not_accepted (no frontend took it: offline), invalid, overloaded, unavailable",
            m.routed.clone(),
        );
        r.register(
            "routed_seconds",
            "From looking up a routed command's presence to its outcome",
            m.seconds.clone(),
        );
        m
    }

    /// Counts a routed command by its outcome and records how long it took.
    pub(crate) fn routed(&self, outcome: &'static str, took: std::time::Duration) {
        self.routed.get_or_create(&OutcomeLabel { outcome }).inc();
        self.seconds.observe(took.as_secs_f64());
    }
}
