//! The processor's Prometheus metrics and events.
//!
//! An *event* is something the processor reports: a record dead-lettered,
//! a store write retried, an offset commit failed, ... Each is one method
//! of [`ProcessorMetrics`] (or, for the live tail, which has no metrics, a
//! function of [`live_tail_events`]) that does everything the event
//! implies: its counter and its log line, so the two cannot drift apart.
//! The counters are private: nothing counts without going through its
//! event. docs/observability.md ("Events") lists them; a test checks that
//! it names every one.

use std::fmt::Display;
use std::time::Duration;

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
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabel {
    partition: u32,
}

/// Counters and histograms of the processor, and the events that move
/// them. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct ProcessorMetrics {
    records: Counter,
    points_decoded: Family<TenantLabel, Counter>,
    points_stored: Family<TenantLabel, Counter>,
    dead_lettered: Counter,
    store_retries: Counter,
    commit_failures: Counter,
    commits: Counter,
    alert_transitions: Family<StateLabel, Counter>,
    store_write_seconds: Histogram,
    store_flush_seconds: Histogram,
    lag: Family<PartitionLabel, Gauge>,
    rollup_buckets_written: Counter,
    rollup_buckets_recomputed: Counter,
    rollup_points_unreconciled: Counter,
    rollup_flush_seconds: Histogram,
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
            commits: Counter::default(),
            alert_transitions: Family::default(),
            store_write_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            store_flush_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            lag: Family::default(),
            rollup_buckets_written: Counter::default(),
            rollup_buckets_recomputed: Counter::default(),
            rollup_points_unreconciled: Counter::default(),
            rollup_flush_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
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
            "offset_commits",
            "Offset commits, each after the store flush and the rules' checkpoint",
            m.commits.clone(),
        );
        r.register(
            "alert_transitions",
            "Alert transitions appended to the alerts log, by state",
            m.alert_transitions.clone(),
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
            "rollup_buckets_written",
            "Rollup buckets written, every tier",
            m.rollup_buckets_written.clone(),
        );
        r.register(
            "rollup_buckets_recomputed",
            "Rollup buckets computed again from raw points or finer buckets (late, replayed or overwritten points)",
            m.rollup_buckets_recomputed.clone(),
        );
        r.register(
            "rollup_points_unreconciled",
            "Late or replayed points left out of a rollup bucket older than the raw retention",
            m.rollup_points_unreconciled.clone(),
        );
        r.register(
            "rollup_flush_seconds",
            "Time to bring the rollups of one flush up to date",
            m.rollup_flush_seconds.clone(),
        );
        r.register(
            "consumer_lag_records",
            "Records not yet committed, per partition",
            m.lag.clone(),
        );
        m
    }

    /// A record of `tenant` with `points` points decoded (no log line: one
    /// per record).
    pub(crate) fn record_decoded(&self, tenant: &str, points: usize) {
        self.records.inc();
        self.points_decoded
            .get_or_create(&TenantLabel {
                tenant: tenant.to_string(),
            })
            .inc_by(points as u64);
    }

    /// `points` points of `tenant` written to the store (no log line).
    pub(crate) fn points_stored(&self, tenant: &str, points: usize) {
        self.points_stored
            .get_or_create(&TenantLabel {
                tenant: tenant.to_string(),
            })
            .inc_by(points as u64);
    }

    /// A store write of one poll batch succeeded after `took` (retries
    /// included).
    pub(crate) fn store_written(&self, took: Duration) {
        self.store_write_seconds.observe(took.as_secs_f64());
    }

    /// A store flush made the writes durable in `took`.
    pub(crate) fn store_flushed(&self, took: Duration) {
        self.store_flush_seconds.observe(took.as_secs_f64());
    }

    /// One flush's rollups are written (no log line, one per flush; but
    /// event `processor.rollup_unreconciled` (WARN) when points were left
    /// out of buckets older than the raw retention).
    /// Offsets were committed.
    pub(crate) fn committed(&self) {
        self.commits.inc();
    }

    /// An alert transition is in the alerts log.
    pub(crate) fn alert_transition(&self, state: &'static str) {
        self.alert_transitions
            .get_or_create(&StateLabel { state })
            .inc();
    }

    pub(crate) fn rollups_flushed(&self, done: &crate::RollupFlush, took: Duration) {
        self.rollup_buckets_written.inc_by(done.written);
        self.rollup_buckets_recomputed.inc_by(done.recomputed);
        self.rollup_flush_seconds.observe(took.as_secs_f64());
        if done.unreconciled > 0 {
            self.rollup_points_unreconciled.inc_by(done.unreconciled);
            tracing::warn!(
                event = "processor.rollup_unreconciled",
                points = done.unreconciled,
                "late or replayed points older than the raw retention were left out of their rollups"
            );
        }
    }

    /// Event `processor.dead_lettered` (WARN): the poison record at
    /// `partition`/`offset` is in the dead-letter log, with `reason`.
    /// Counts `tributary_processor_dead_lettered_records_total`.
    pub(crate) fn dead_lettered(&self, partition: u32, offset: u64, reason: &str) {
        self.dead_lettered.inc();
        tracing::warn!(
            event = "processor.dead_lettered",
            partition,
            offset,
            reason,
            "poison record dead-lettered"
        );
    }

    /// Event `processor.store_write_retried` (WARN): a store write failed
    /// with the transient `error` and is retried in `delay`. Counts
    /// `tributary_processor_store_write_retries_total`.
    pub(crate) fn store_write_retried(&self, error: &dyn Display, delay: Duration) {
        self.store_retries.inc();
        tracing::warn!(
            event = "processor.store_write_retried",
            %error,
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "store write failed; retrying"
        );
    }

    /// Event `processor.store_refused_batch` (WARN): the store refused part
    /// of a batch as invalid (`reason`); it is written again record by
    /// record, and the refused records are dead-lettered (each its own
    /// `processor.dead_lettered`). No counter of its own.
    pub(crate) fn store_refused_batch(&self, reason: &str) {
        tracing::warn!(
            event = "processor.store_refused_batch",
            reason,
            "store refused part of a batch; writing it record by record"
        );
    }

    /// Event `processor.offset_commit_failed` (WARN): committing offsets
    /// failed with `error` after a successful flush; they are committed
    /// with the next flush. Counts
    /// `tributary_processor_offset_commit_failures_total`.
    pub(crate) fn offset_commit_failed(&self, error: &dyn Display) {
        self.commit_failures.inc();
        tracing::warn!(
            event = "processor.offset_commit_failed",
            %error,
            "offset commit failed; retrying at the next flush"
        );
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

/// Events of the live tail ([`crate::live_tail`]), which runs without
/// metrics: log lines only, defined here with the others.
pub(crate) mod live_tail_events {
    use std::fmt::Display;
    use std::time::Duration;

    /// Event `processor.live_tail.open_failed` (WARN): the tail consumer
    /// cannot be opened; retried in `delay`.
    pub(crate) fn open_failed(error: &dyn Display, delay: Duration) {
        tracing::warn!(
            event = "processor.live_tail.open_failed",
            %error,
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "live tail cannot open a consumer; retrying"
        );
    }

    /// Event `processor.live_tail.poll_failed` (WARN): a poll failed; the
    /// consumer is reopened.
    pub(crate) fn poll_failed(error: &dyn Display) {
        tracing::warn!(
            event = "processor.live_tail.poll_failed",
            %error,
            "live tail poll failed; reopening"
        );
    }

    /// Event `processor.live_tail.skipped` (DEBUG): a record that does not
    /// decode is not published (the processor dead-letters it).
    pub(crate) fn skipped(error: &dyn Display) {
        tracing::debug!(
            event = "processor.live_tail.skipped",
            %error,
            "live tail skipped an undecodable record"
        );
    }
}

#[cfg(test)]
mod tests {

    use tracing::Level;

    use super::*;

    /// The processor's events (the `event` field of their log lines).
    const EVENTS: &[&str] = &[
        "processor.dead_lettered",
        "processor.store_write_retried",
        "processor.store_refused_batch",
        "processor.offset_commit_failed",
        "processor.live_tail.open_failed",
        "processor.live_tail.poll_failed",
        "processor.live_tail.skipped",
    ];

    use tributary_otel::testing::{encoded, logged};

    /// Asserts one WARN line of `event` containing `parts`.
    fn one_warning(logs: &str, event: &str, parts: &[&str]) {
        let lines: Vec<&str> = logs.lines().collect();
        assert_eq!(lines.len(), 1, "{logs}");
        assert!(lines[0].contains("WARN"), "{logs}");
        assert!(
            lines[0].contains(&format!("event=\"{event}\"")),
            "{event} in {logs}"
        );
        for part in parts {
            assert!(lines[0].contains(part), "{part} in {logs}");
        }
    }

    #[test]
    fn each_counted_event_logs_once_and_counts_once() {
        let mut registry = Registry::default();
        let m = ProcessorMetrics::register(&mut registry);
        let logs = logged(Level::INFO, || {
            m.dead_lettered(1, 42, "envelope: bad schema version")
        });
        one_warning(
            &logs,
            "processor.dead_lettered",
            &[
                "partition=1",
                "offset=42",
                "reason=\"envelope: bad schema version\"",
            ],
        );
        let logs = logged(Level::INFO, || {
            m.store_write_retried(&"scylla: timeout", Duration::from_millis(200))
        });
        one_warning(
            &logs,
            "processor.store_write_retried",
            &["error=scylla: timeout", "retry_in_ms=200"],
        );
        let logs = logged(Level::INFO, || {
            m.offset_commit_failed(&"rebalance in progress")
        });
        one_warning(
            &logs,
            "processor.offset_commit_failed",
            &["error=rebalance in progress"],
        );
        let logs = logged(Level::INFO, || m.store_refused_batch("series limit"));
        one_warning(
            &logs,
            "processor.store_refused_batch",
            &["reason=\"series limit\""],
        );

        let text = encoded(&registry);
        for line in [
            "tributary_processor_dead_lettered_records_total 1\n",
            "tributary_processor_store_write_retries_total 1\n",
            "tributary_processor_offset_commit_failures_total 1\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn live_tail_events_log_at_their_level() {
        let logs = logged(Level::INFO, || {
            live_tail_events::open_failed(&"broker down", Duration::from_secs(1));
            live_tail_events::poll_failed(&"broker down");
            live_tail_events::skipped(&"truncated envelope");
        });
        let lines: Vec<&str> = logs.lines().collect();
        assert_eq!(lines.len(), 2, "the skip is DEBUG: {logs}");
        assert!(lines[0].contains("event=\"processor.live_tail.open_failed\""));
        assert!(lines[1].contains("event=\"processor.live_tail.poll_failed\""));
        let logs = logged(Level::DEBUG, || {
            live_tail_events::skipped(&"truncated envelope")
        });
        assert!(
            logs.contains("DEBUG") && logs.contains("event=\"processor.live_tail.skipped\""),
            "{logs}"
        );
    }

    #[test]
    fn every_event_is_listed() {
        let m = ProcessorMetrics::default();
        let logs = logged(Level::DEBUG, || {
            m.dead_lettered(0, 0, "r");
            m.store_write_retried(&"e", Duration::ZERO);
            m.store_refused_batch("r");
            m.offset_commit_failed(&"e");
            live_tail_events::open_failed(&"e", Duration::ZERO);
            live_tail_events::poll_failed(&"e");
            live_tail_events::skipped(&"e");
        });
        let logged: Vec<&str> = logs
            .lines()
            .filter_map(|l| l.split("event=\"").nth(1)?.split('"').next())
            .collect();
        assert_eq!(logged, EVENTS, "{logs}");
    }

    #[test]
    fn the_docs_name_every_event_and_its_metric() {
        let docs = include_str!("../../../docs/observability.md");
        let events = docs
            .split("\n## Events\n")
            .nth(1)
            .expect("docs/observability.md has an Events section");
        let events = events.split("\n## ").next().unwrap_or(events);
        for event in EVENTS {
            assert!(
                events.contains(&format!("`{event}`")),
                "the Events section of docs/observability.md names `{event}`"
            );
        }
        for metric in [
            "tributary_processor_dead_lettered_records_total",
            "tributary_processor_store_write_retries_total",
            "tributary_processor_offset_commit_failures_total",
        ] {
            assert!(events.contains(&format!("`{metric}`")), "{metric}");
        }
    }
}
