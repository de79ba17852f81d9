//! Ingest metrics and events, shared by every frontend.
//!
//! An *event* is something the ingest path reports: a rejected request,
//! points received, points acknowledged. Each is one method of
//! [`IngestMetrics`] that does everything the event implies (the counter,
//! and the log line at the level it deserves), so a log line and its
//! metric cannot drift apart. The counters are private: nothing counts
//! without going through its event. docs/observability.md ("Events")
//! lists them; a test checks that it names every reason.

use std::fmt::Display;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::Level;

/// `tracing::event!` at a level chosen at run time (the macro itself needs
/// a constant).
macro_rules! event_at {
    ($level:expr, $($arg:tt)+) => {
        match $level {
            Level::ERROR => tracing::error!($($arg)+),
            Level::WARN => tracing::warn!($($arg)+),
            Level::INFO => tracing::info!($($arg)+),
            Level::DEBUG => tracing::debug!($($arg)+),
            _ => tracing::trace!($($arg)+),
        }
    };
}

/// Why a request or message was refused: the `reason` label of
/// `tributary_ingest_requests_rejected_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// The in-flight byte budget is spent, or the log pushed back.
    Overloaded,
    /// No credential, or one nobody issued.
    Unauthenticated,
    /// A credential that may not do this (or that could not be checked).
    Forbidden,
    /// A line-protocol device that may not be written (unknown and not
    /// auto-provisioned, disabled).
    Device,
    /// A point's timestamp outside the accepted window.
    Timestamp,
    /// The log append failed: a server-side failure; the client retries.
    Log,
    /// A payload that does not parse (counted by the frontend).
    Invalid,
    /// A payload over a size limit (counted by the frontend).
    TooLarge,
    /// Over one of the tenant's quotas (`tributary_tenant_quota_exceeded_total`
    /// says which).
    Quota,
}

impl Rejection {
    /// Every reason, in the order of the docs.
    pub const ALL: &[Rejection] = &[
        Rejection::Overloaded,
        Rejection::Unauthenticated,
        Rejection::Forbidden,
        Rejection::Device,
        Rejection::Timestamp,
        Rejection::Log,
        Rejection::Invalid,
        Rejection::TooLarge,
        Rejection::Quota,
    ];

    /// The Prometheus label value (dashboards and alerts select on it).
    pub const fn label(self) -> &'static str {
        match self {
            Rejection::Overloaded => "overloaded",
            Rejection::Unauthenticated => "unauthenticated",
            Rejection::Forbidden => "forbidden",
            Rejection::Device => "device",
            Rejection::Timestamp => "timestamp",
            Rejection::Log => "log",
            Rejection::Invalid => "invalid",
            Rejection::TooLarge => "too_large",
            Rejection::Quota => "quota",
        }
    }

    /// The level of the event's log line: WARN for the server's own
    /// trouble, DEBUG for a client's mistake (one per bad request: the
    /// counter is the signal, the line is for debugging a device).
    pub const fn level(self) -> Level {
        match self {
            Rejection::Overloaded | Rejection::Log => Level::WARN,
            Rejection::Unauthenticated
            | Rejection::Forbidden
            | Rejection::Device
            | Rejection::Timestamp
            | Rejection::Invalid
            | Rejection::TooLarge
            | Rejection::Quota => Level::DEBUG,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabel {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Counters of the ingest path, and the events that move them. Cheap to
/// clone (shared).
#[derive(Clone, Debug)]
pub struct IngestMetrics {
    points_received: Family<TenantLabel, Counter>,
    points_acked: Family<TenantLabel, Counter>,
    rejected: Family<ReasonLabel, Counter>,
    append_seconds: Histogram,
    /// Bytes of the in-flight budget held right now.
    pub(crate) inflight_bytes: Gauge,
    /// The in-flight budget.
    pub(crate) inflight_limit_bytes: Gauge,
}

impl Default for IngestMetrics {
    fn default() -> Self {
        Self {
            points_received: Family::default(),
            points_acked: Family::default(),
            rejected: Family::default(),
            append_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            inflight_bytes: Gauge::default(),
            inflight_limit_bytes: Gauge::default(),
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
        r.register(
            "inflight_bytes",
            "Bytes read from clients and not yet durable (or refused), held against the in-flight budget",
            m.inflight_bytes.clone(),
        );
        r.register(
            "inflight_limit_bytes",
            "The in-flight budget (--max-inflight-bytes)",
            m.inflight_limit_bytes.clone(),
        );
        m
    }

    /// Event `ingest.rejected`: a request or message was refused. Counts it
    /// under `why` and logs it at `why`'s level with `detail` (what was
    /// wrong; it may name the device, never a credential).
    pub fn rejected(&self, why: Rejection, detail: &dyn Display) {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: why.label(),
            })
            .inc();
        event_at!(
            why.level(),
            event = "ingest.rejected",
            reason = why.label(),
            %detail,
            "request rejected"
        );
    }

    /// `n` valid points of `tenant` are handed to the log (no log line:
    /// one per request).
    pub(crate) fn received(&self, tenant: &str, n: usize) {
        self.points_received
            .get_or_create(&TenantLabel {
                tenant: tenant.to_string(),
            })
            .inc_by(n as u64);
    }

    /// A log append of `n` points of `tenant` ended after `took`: durable
    /// (the points are acknowledged) or not (the caller reports the
    /// rejection).
    pub(crate) fn appended(&self, tenant: &str, n: usize, took: Duration, durable: bool) {
        self.append_seconds.observe(took.as_secs_f64());
        if durable {
            self.points_acked
                .get_or_create(&TenantLabel {
                    tenant: tenant.to_string(),
                })
                .inc_by(n as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    use tributary_otel::testing::{encoded, logged};

    #[test]
    fn a_rejection_is_one_log_line_and_one_count() {
        let mut registry = Registry::default();
        let m = IngestMetrics::register(&mut registry);
        let logs = logged(Level::INFO, || {
            m.rejected(Rejection::Log, &"log backend: broker down");
        });
        let lines: Vec<&str> = logs.lines().collect();
        assert_eq!(lines.len(), 1, "{logs}");
        for part in [
            "WARN",
            "request rejected",
            "event=\"ingest.rejected\"",
            "reason=\"log\"",
            "detail=log backend: broker down",
        ] {
            assert!(lines[0].contains(part), "{part} in {logs}");
        }
        assert!(
            encoded(&registry)
                .contains("tributary_ingest_requests_rejected_total{reason=\"log\"} 1\n"),
            "{}",
            encoded(&registry)
        );
    }

    #[test]
    fn client_mistakes_are_counted_but_logged_at_debug_only() {
        let mut registry = Registry::default();
        let m = IngestMetrics::register(&mut registry);
        let at_info = logged(Level::INFO, || {
            m.rejected(Rejection::Timestamp, &"d1/temp: in the future");
        });
        assert_eq!(at_info, "", "nothing at INFO");
        let at_debug = logged(Level::DEBUG, || {
            m.rejected(Rejection::Timestamp, &"d1/temp: in the future");
        });
        assert!(
            at_debug.contains("DEBUG") && at_debug.contains("reason=\"timestamp\""),
            "{at_debug}"
        );
        assert!(
            encoded(&registry)
                .contains("tributary_ingest_requests_rejected_total{reason=\"timestamp\"} 2\n")
        );
    }

    #[test]
    fn every_reason_is_its_own_series_under_its_label() {
        let mut registry = Registry::default();
        let m = IngestMetrics::register(&mut registry);
        let labels: HashSet<&str> = Rejection::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), Rejection::ALL.len(), "labels are distinct");
        for (i, why) in Rejection::ALL.iter().enumerate() {
            for _ in 0..=i {
                m.rejected(*why, &"x");
            }
        }
        let text = encoded(&registry);
        for (i, why) in Rejection::ALL.iter().enumerate() {
            let line = format!(
                "tributary_ingest_requests_rejected_total{{reason=\"{}\"}} {}\n",
                why.label(),
                i + 1
            );
            assert!(text.contains(&line), "{line} in {text}");
        }
        let series = text
            .lines()
            .filter(|l| l.starts_with("tributary_ingest_requests_rejected_total{"))
            .count();
        assert_eq!(series, Rejection::ALL.len(), "{text}");
    }

    #[test]
    fn the_docs_name_every_reason() {
        let docs = include_str!("../../../docs/observability.md");
        let events = docs
            .split("\n## Events\n")
            .nth(1)
            .expect("docs/observability.md has an Events section");
        let events = events.split("\n## ").next().unwrap_or(events);
        assert!(events.contains("`ingest.rejected`"));
        assert!(events.contains("`tributary_ingest_requests_rejected_total`"));
        for why in Rejection::ALL {
            assert!(
                events.contains(&format!("`{}`", why.label())),
                "the Events section of docs/observability.md names reason `{}`",
                why.label()
            );
        }
    }
}
