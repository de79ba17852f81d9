//! Command metrics (`tributary_commands_*`) and events.
//!
//! An *event* is something the command service reports: a command sent
//! with its outcome, a call that failed, a routed command that ended. Each
//! is one method here that does everything the event implies (its
//! counters and its log line, at the level it deserves), so a log line and
//! its metric cannot drift apart. The counters are private: nothing counts
//! without going through its event. docs/observability.md ("Events")
//! lists them; a test checks that it names every label.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::Level;
use tributary_core::commands::CommandOutcome;

use crate::error::CommandServiceError;

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

/// How a `SendCommand` call ended: the `status` label of
/// `tributary_commands_sent_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CommandStatus {
    Replied,
    Timeout,
    Offline,
    NotSubscribed,
    Queued,
    /// The call failed (`commands.failed`).
    Error,
}

impl CommandStatus {
    #[cfg(test)]
    pub(crate) const ALL: &[CommandStatus] = &[
        CommandStatus::Replied,
        CommandStatus::Timeout,
        CommandStatus::Offline,
        CommandStatus::NotSubscribed,
        CommandStatus::Queued,
        CommandStatus::Error,
    ];

    /// The Prometheus label value.
    pub(crate) const fn label(self) -> &'static str {
        match self {
            CommandStatus::Replied => "replied",
            CommandStatus::Timeout => "timeout",
            CommandStatus::Offline => "offline",
            CommandStatus::NotSubscribed => "not_subscribed",
            CommandStatus::Queued => "queued",
            CommandStatus::Error => "error",
        }
    }

    /// The status of a command that was sent.
    pub(crate) const fn of(outcome: &CommandOutcome) -> Self {
        match outcome {
            CommandOutcome::Replied(_) => CommandStatus::Replied,
            CommandOutcome::Timeout => CommandStatus::Timeout,
            CommandOutcome::Offline => CommandStatus::Offline,
            CommandOutcome::NotSubscribed => CommandStatus::NotSubscribed,
            CommandOutcome::Queued { .. } => CommandStatus::Queued,
        }
    }
}

/// The level of a failed call's log line: DEBUG for the caller's mistakes
/// (the gRPC status tells them), WARN for a dependency that failed or a
/// full server, ERROR for a bug.
fn failure_level(error: &CommandServiceError) -> Level {
    use tributary_core::directory::DirectoryError;
    match error {
        CommandServiceError::Unauthenticated(_)
        | CommandServiceError::PermissionDenied(_)
        | CommandServiceError::InvalidArgument { .. }
        | CommandServiceError::DeviceNotFound(_)
        | CommandServiceError::DeviceDisabled(_)
        // A tenant over its own quota: its problem, not the server's.
        | CommandServiceError::Quota(_) => Level::DEBUG,
        CommandServiceError::ResourceExhausted(_)
        | CommandServiceError::Directory(DirectoryError::Unavailable(_))
        | CommandServiceError::Unavailable(_)
        | CommandServiceError::Log(_) => Level::WARN,
        CommandServiceError::Directory(_)
        | CommandServiceError::Internal(_)
        | CommandServiceError::Config { .. } => Level::ERROR,
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

/// Counters of the command service, and the events that move them. Cheap
/// to clone (shared).
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

    /// Event `commands.sent` (INFO): `command` went to `tenant`/`device`
    /// and ended with `outcome` after `waited`. Counts its status, and a
    /// reply's latency.
    pub(crate) fn sent(
        &self,
        tenant: &str,
        device: &str,
        command: &str,
        outcome: &CommandOutcome,
        waited: Duration,
    ) {
        let status = CommandStatus::of(outcome);
        self.count(status);
        if let CommandOutcome::Replied(reply) = outcome {
            self.reply_seconds.observe(reply.latency.as_secs_f64());
        }
        tracing::info!(
            event = "commands.sent",
            tenant,
            device,
            command,
            status = status.label(),
            waited_ms = millis(waited),
            "command sent"
        );
    }

    /// Event `commands.failed`: a `SendCommand` call failed with `error`.
    /// Counts status `error`; logs at DEBUG for the caller's mistakes, WARN
    /// for an unavailable dependency or a full server, ERROR for a bug. The
    /// log line is the only place internal error text goes: the caller
    /// gets a generic status.
    pub(crate) fn failed(&self, error: &CommandServiceError) {
        self.count(CommandStatus::Error);
        event_at!(
            failure_level(error),
            event = "commands.failed",
            status = CommandStatus::Error.label(),
            %error,
            "command failed"
        );
    }

    fn count(&self, status: CommandStatus) {
        self.sent
            .get_or_create(&StatusLabel {
                status: status.label(),
            })
            .inc();
    }
}

/// How a command routed through the commands log ended: the `outcome`
/// label of `tributary_commands_routed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RoutedOutcome {
    /// No presence for the device: answered offline without routing.
    NoPresence,
    /// No frontend took it: offline.
    NotAccepted,
    Replied,
    Timeout,
    Offline,
    NotSubscribed,
    Queued,
    Invalid,
    Overloaded,
    Unavailable,
}

impl RoutedOutcome {
    #[cfg(test)]
    pub(crate) const ALL: &[RoutedOutcome] = &[
        RoutedOutcome::NoPresence,
        RoutedOutcome::NotAccepted,
        RoutedOutcome::Replied,
        RoutedOutcome::Timeout,
        RoutedOutcome::Offline,
        RoutedOutcome::NotSubscribed,
        RoutedOutcome::Queued,
        RoutedOutcome::Invalid,
        RoutedOutcome::Overloaded,
        RoutedOutcome::Unavailable,
    ];

    /// The Prometheus label value.
    pub(crate) const fn label(self) -> &'static str {
        match self {
            RoutedOutcome::NoPresence => "no_presence",
            RoutedOutcome::NotAccepted => "not_accepted",
            RoutedOutcome::Replied => "replied",
            RoutedOutcome::Timeout => "timeout",
            RoutedOutcome::Offline => "offline",
            RoutedOutcome::NotSubscribed => "not_subscribed",
            RoutedOutcome::Queued => "queued",
            RoutedOutcome::Invalid => "invalid",
            RoutedOutcome::Overloaded => "overloaded",
            RoutedOutcome::Unavailable => "unavailable",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// Metrics of commands routed to other replicas through the commands log
/// (`RoutedCommandSink`), and the event that moves them. Cheap to clone
/// (shared).
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

    /// Event `commands.routed` (DEBUG: the service's `commands.sent` or
    /// `commands.failed` reports the call): a routed command ended with
    /// `outcome` after `took`. Counts it and records how long it took.
    pub(crate) fn routed(&self, outcome: RoutedOutcome, took: Duration) {
        self.routed
            .get_or_create(&OutcomeLabel {
                outcome: outcome.label(),
            })
            .inc();
        self.seconds.observe(took.as_secs_f64());
        tracing::debug!(
            event = "commands.routed",
            outcome = outcome.label(),
            took_ms = millis(took),
            "routed command ended"
        );
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use tributary_core::commands::CommandReply;

    use super::*;

    use tributary_otel::testing::{encoded, logged};

    #[test]
    fn a_sent_command_is_one_log_line_its_status_count_and_its_latency() {
        let mut registry = Registry::default();
        let m = CommandMetrics::register(&mut registry);
        let reply = CommandOutcome::Replied(CommandReply {
            payload: b"ok".to_vec(),
            content_type: String::new(),
            latency: Duration::from_millis(30),
        });
        let logs = logged(Level::INFO, || {
            m.sent("acme", "d1", "reboot", &reply, Duration::from_millis(31))
        });
        let lines: Vec<&str> = logs.lines().collect();
        assert_eq!(lines.len(), 1, "{logs}");
        for part in [
            "INFO",
            "event=\"commands.sent\"",
            "tenant=\"acme\"",
            "device=\"d1\"",
            "command=\"reboot\"",
            "status=\"replied\"",
            "waited_ms=31",
        ] {
            assert!(lines[0].contains(part), "{part} in {logs}");
        }
        let text = encoded(&registry);
        assert!(
            text.contains("tributary_commands_sent_total{status=\"replied\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("tributary_commands_reply_seconds_count 1\n"),
            "{text}"
        );
    }

    #[test]
    fn failures_count_as_error_and_log_by_whose_fault_it_is() {
        let mut registry = Registry::default();
        let m = CommandMetrics::register(&mut registry);
        let logs = logged(Level::INFO, || {
            m.failed(&CommandServiceError::DeviceNotFound("d9".into()));
            m.failed(&CommandServiceError::Unavailable(
                "frontend-3 refused".into(),
            ));
            m.failed(&CommandServiceError::Internal(
                "auth returned Aborted".into(),
            ));
        });
        let lines: Vec<&str> = logs.lines().collect();
        assert_eq!(lines.len(), 2, "a missing device is DEBUG: {logs}");
        assert!(
            lines[0].contains("WARN") && lines[0].contains("frontend-3 refused"),
            "{logs}"
        );
        assert!(
            lines[1].contains("ERROR") && lines[1].contains("event=\"commands.failed\""),
            "{logs}"
        );
        assert!(encoded(&registry).contains("tributary_commands_sent_total{status=\"error\"} 3\n"));
    }

    #[test]
    fn a_routed_command_is_counted_timed_and_logged() {
        let mut registry = Registry::default();
        let m = RoutingMetrics::register(&mut registry);
        let logs = logged(Level::DEBUG, || {
            m.routed(RoutedOutcome::NotAccepted, Duration::from_millis(5))
        });
        assert!(
            logs.contains("event=\"commands.routed\"")
                && logs.contains("outcome=\"not_accepted\"")
                && logs.contains("took_ms=5"),
            "{logs}"
        );
        let text = encoded(&registry);
        assert!(
            text.contains("tributary_commands_routed_total{outcome=\"not_accepted\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("tributary_commands_routed_seconds_count 1\n"),
            "{text}"
        );
    }

    #[test]
    fn every_label_is_distinct_counted_as_itself_and_in_the_help_text() {
        let statuses: HashSet<&str> = CommandStatus::ALL.iter().map(|s| s.label()).collect();
        assert_eq!(statuses.len(), CommandStatus::ALL.len());
        let outcomes: HashSet<&str> = RoutedOutcome::ALL.iter().map(|o| o.label()).collect();
        assert_eq!(outcomes.len(), RoutedOutcome::ALL.len());
        let mut registry = Registry::default();
        let sent = CommandMetrics::register(&mut registry);
        let routed = RoutingMetrics::register(&mut registry);
        for status in CommandStatus::ALL {
            sent.count(*status);
        }
        for outcome in RoutedOutcome::ALL {
            routed.routed(*outcome, Duration::ZERO);
        }
        let text = encoded(&registry);
        for label in &statuses {
            let line = format!("tributary_commands_sent_total{{status=\"{label}\"}} 1\n");
            assert!(text.contains(&line), "{line} in {text}");
        }
        for label in &outcomes {
            let line = format!("tributary_commands_routed_total{{outcome=\"{label}\"}} 1\n");
            assert!(text.contains(&line), "{line} in {text}");
        }
        let help = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("# HELP {name} ")))
                .unwrap_or_else(|| panic!("{name} in {text}"))
                .to_owned()
        };
        let sent = help("tributary_commands_sent");
        for label in &statuses {
            assert!(sent.contains(label), "{label} in {sent}");
        }
        let routed = help("tributary_commands_routed");
        for label in &outcomes {
            assert!(routed.contains(label), "{label} in {routed}");
        }
    }

    #[test]
    fn the_docs_name_every_event_and_label() {
        let docs = include_str!("../../../docs/observability.md");
        let events = docs
            .split("\n## Events\n")
            .nth(1)
            .expect("docs/observability.md has an Events section");
        let events = events.split("\n## ").next().unwrap_or(events);
        for name in [
            "`commands.sent`",
            "`commands.failed`",
            "`commands.routed`",
            "`tributary_commands_sent_total`",
            "`tributary_commands_routed_total`",
        ] {
            assert!(events.contains(name), "{name}");
        }
        let labels = CommandStatus::ALL
            .iter()
            .map(|s| s.label())
            .chain(RoutedOutcome::ALL.iter().map(|o| o.label()));
        for label in labels {
            assert!(
                events.contains(&format!("`{label}`")),
                "the Events section of docs/observability.md names `{label}`"
            );
        }
    }
}
