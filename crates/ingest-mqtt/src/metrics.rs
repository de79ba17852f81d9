//! The frontend's Prometheus metrics, registered under `tributary_mqtt_*`,
//! and its events.
//!
//! A refused CONNECT, a rejected PUBLISH, a dropped message and the end of
//! a connection are *events*: one method each
//! ([`MqttMetrics::connect_refused`], [`MqttMetrics::rejected`],
//! [`MqttMetrics::dropped`], [`MqttMetrics::connection_closed`]) counts it
//! under a reason of a closed enum ([`ConnectRefusal`],
//! [`PublishRejection`], [`MessageDrop`], [`DisconnectReason`]) and logs it
//! at the reason's level, so the log line and the metric cannot drift
//! apart. docs/observability.md ("Events") lists them; a test checks that
//! it names every reason.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::Level;
use tributary_mqtt_codec::PacketType;

/// A closed set of reasons: the `reason` label of one counter.
pub(crate) trait Reason: Copy + std::fmt::Debug + 'static {
    /// Every reason (the tests check each is its own series and named by
    /// the docs).
    #[cfg(test)]
    const ALL: &'static [Self];
    /// The Prometheus label value (dashboards and alerts select on it).
    fn label(self) -> &'static str;
    /// The level of the event's log line.
    fn level(self) -> Level;
}

/// A `tracing` event at a level chosen at run time (the macros take a
/// constant one).
macro_rules! event_at {
    ($level:expr, $($args:tt)+) => {
        match $level {
            Level::ERROR => tracing::error!($($args)+),
            Level::WARN => tracing::warn!($($args)+),
            Level::INFO => tracing::info!($($args)+),
            Level::DEBUG => tracing::debug!($($args)+),
            _ => tracing::trace!($($args)+),
        }
    };
}

/// Declares a reason enum: variant, label, level.
macro_rules! reasons {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $label:literal, $level:ident;)+ }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(crate) enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl Reason for $name {
            #[cfg(test)]
            const ALL: &'static [Self] = &[$($name::$variant),+];

            fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }

            fn level(self) -> Level {
                match self {
                    $($name::$variant => Level::$level,)+
                }
            }
        }
    };
}

reasons! {
    /// Why a connection was refused before or at CONNECT: the `reason` of
    /// `tributary_mqtt_connects_refused_total`. WARN for the server's own
    /// limits and failures, DEBUG for a client's.
    ConnectRefusal {
        ConnectTimeout = "connect_timeout", DEBUG;
        MalformedConnect = "malformed_connect", DEBUG;
        NoCredentials = "no_credentials", DEBUG;
        BadCredentials = "bad_credentials", DEBUG;
        Forbidden = "forbidden", DEBUG;
        /// The registry could not be asked.
        AuthUnavailable = "auth_unavailable", WARN;
        BadAuthMethod = "bad_auth_method", DEBUG;
        /// `--mqtt-max-connections` reached.
        MaxConnections = "max_connections", WARN;
        ClientId = "client_id", DEBUG;
        WillNotAuthorized = "will_not_authorized", DEBUG;
        /// The will topic is over `max_topic_levels`.
        WillTopicInvalid = "will_topic_invalid", DEBUG;
        /// Over one of the tenant's quotas: connections, sessions, sessions
        /// of the device.
        Quota = "quota", DEBUG;
        /// The tenant's session quota.
        TooManySessions = "too_many_sessions", DEBUG;
        /// Every pending-connect slot taken: the socket is closed at once.
        PendingConnects = "pending_connects", WARN;
        /// One source address holds its share of pending-connect slots
        /// (`max_pending_connects_per_source`): the socket is closed at once.
        PendingConnectsPerSource = "pending_connects_per_source", DEBUG;
        /// Over `max_connect_rate`, with no slot within `max_connect_wait_ms`:
        /// CONNACK 0x9F Connection rate exceeded (3.1.1: 3).
        ConnectRate = "connect_rate", WARN;
        ProxyProtocol = "proxy_protocol", DEBUG;
        ProxyProtocolTimeout = "proxy_protocol_timeout", DEBUG;
        TlsHandshake = "tls_handshake", DEBUG;
        TlsHandshakeTimeout = "tls_handshake_timeout", DEBUG;
        WsHandshake = "ws_handshake", DEBUG;
        WsHandshakeTimeout = "ws_handshake_timeout", DEBUG;
    }
}

reasons! {
    /// Why a PUBLISH (or a SUBSCRIBE filter) was refused: the `reason` of
    /// `tributary_mqtt_publishes_rejected_total`. All DEBUG: the server's
    /// own failures (`overloaded`, `unavailable`) are also `ingest.rejected`
    /// events, at WARN.
    PublishRejection {
        Malformed = "malformed", DEBUG;
        Rate = "rate", DEBUG;
        NotAuthorized = "not_authorized", DEBUG;
        Invalid = "invalid", DEBUG;
        TooLarge = "too_large", DEBUG;
        Overloaded = "overloaded", DEBUG;
        Unavailable = "unavailable", DEBUG;
        SubscribeNotAuthorized = "subscribe_not_authorized", DEBUG;
        /// A topic name over `max_topic_levels` (0x90).
        TopicInvalid = "topic_invalid", DEBUG;
        /// Over one of the tenant's quotas (0x97).
        Quota = "quota", DEBUG;
        /// A SUBSCRIBE or UNSUBSCRIBE filter over `max_topic_levels` (0x8F).
        FilterInvalid = "filter_invalid", DEBUG;
        /// A SUBSCRIBE filter beyond `max_filters_per_subscribe` (0x97).
        TooManyFilters = "too_many_filters", DEBUG;
    }
}

reasons! {
    /// Why a message for a subscriber was dropped: the `reason` of
    /// `tributary_mqtt_messages_dropped_total`. DEBUG: one per message, the
    /// counter (and its alert) is the signal.
    MessageDrop {
        OfflineQos0 = "offline_qos0", DEBUG;
        QueueFull = "queue_full", DEBUG;
        RetainedTooLarge = "retained_too_large", DEBUG;
        RetainedLimit = "retained_limit", DEBUG;
        Expired = "expired", DEBUG;
        NoPacketId = "no_packet_id", DEBUG;
        TooLargeForClient = "too_large_for_client", DEBUG;
    }
}

reasons! {
    /// Why a connection (one that got its CONNACK) ended: the `reason` of
    /// `tributary_mqtt_disconnects_total`. DEBUG when the client ended it
    /// or its network failed, and when the server shuts down (one line per
    /// connection; the shutdown is logged once already); INFO when the
    /// server ended it because of the client (a protocol violation, a
    /// refused PUBLISH of a 3.1.1 client, the rate limit, a silent or
    /// stalled client, a takeover, a revocation); WARN when the server
    /// ended it because of its own trouble (`overloaded`, `unavailable`).
    DisconnectReason {
        /// The client sent DISCONNECT.
        Client = "client", DEBUG;
        /// The socket closed without a DISCONNECT.
        Closed = "closed", DEBUG;
        ReadFailed = "read_failed", DEBUG;
        WriteFailed = "write_failed", DEBUG;
        /// A write made no progress for the write timeout.
        WriteStalled = "write_stalled", INFO;
        /// Nothing read for 1.5 times the keep alive.
        KeepAlive = "keep_alive", INFO;
        /// The server shuts down (or moves the client elsewhere).
        Shutdown = "shutdown", DEBUG;
        /// Another connection took the session over (same client id).
        TakenOver = "taken_over", INFO;
        /// The device was disabled or deleted, or a credential revoked.
        Revoked = "revoked", INFO;
        /// The credential the client authenticated with expired.
        CredentialExpired = "credential_expired", INFO;
        Malformed = "malformed", INFO;
        ProtocolError = "protocol_error", INFO;
        TopicAlias = "topic_alias", INFO;
        /// A 5.0 client sent a QoS 1 or 2 PUBLISH with as many
        /// unacknowledged as the Receive Maximum announced (0x93).
        ReceiveMaximum = "receive_maximum", INFO;
        /// A 3.1.1 client published to a topic over `max_topic_levels`.
        TopicInvalid = "topic_invalid", INFO;
        /// A 3.1.1 client over one of its tenant's quotas.
        Quota = "quota", INFO;
        /// Over the device's publish rate.
        Rate = "rate", INFO;
        /// A refused PUBLISH of a 3.1.1 client, which has no other way to
        /// hear it (also for an append refused as not authorized).
        NotAuthorized = "not_authorized", INFO;
        Invalid = "invalid", INFO;
        TooLarge = "too_large", INFO;
        /// The in-flight budget is spent or the log pushed back: no PUBACK,
        /// the client re-sends.
        Overloaded = "overloaded", WARN;
        /// The append failed: no PUBACK, the client re-sends.
        Unavailable = "unavailable", WARN;
    }
}

impl From<PublishRejection> for DisconnectReason {
    /// The reason a connection is closed for a refused PUBLISH (a 3.1.1
    /// client, or a failure the client must retry): the rejection's own
    /// label. A refused SUBSCRIBE filter never closes a connection; the
    /// filter reasons map only to keep the match total.
    fn from(why: PublishRejection) -> Self {
        match why {
            PublishRejection::Malformed => Self::Malformed,
            PublishRejection::Rate => Self::Rate,
            PublishRejection::NotAuthorized | PublishRejection::SubscribeNotAuthorized => {
                Self::NotAuthorized
            }
            PublishRejection::TopicInvalid
            | PublishRejection::FilterInvalid
            | PublishRejection::TooManyFilters => Self::TopicInvalid,
            PublishRejection::Invalid => Self::Invalid,
            PublishRejection::Quota => Self::Quota,
            PublishRejection::TooLarge => Self::TooLarge,
            PublishRejection::Overloaded => Self::Overloaded,
            PublishRejection::Unavailable => Self::Unavailable,
        }
    }
}

/// One event of a reason counter: its name and its log message.
#[derive(Clone, Copy, Debug)]
struct Event {
    name: &'static str,
    message: &'static str,
}

const CONNECT_REFUSED: Event = Event {
    name: "mqtt.connect_refused",
    message: "connection refused",
};
const PUBLISH_REJECTED: Event = Event {
    name: "mqtt.publish_rejected",
    message: "publish rejected",
};
const MESSAGE_DROPPED: Event = Event {
    name: "mqtt.message_dropped",
    message: "message dropped",
};
const DISCONNECTED: Event = Event {
    name: "mqtt.disconnected",
    message: "disconnected",
};

/// Counts `why` in `family` (under its label).
fn count<R: Reason>(family: &Family<ReasonLabel, Counter>, why: R) {
    family
        .get_or_create(&ReasonLabel {
            reason: why.label(),
        })
        .inc();
}

/// Counts `why` in `family` and logs `event` at `why`'s level.
fn emit<R: Reason>(family: &Family<ReasonLabel, Counter>, event: Event, why: R) {
    count(family, why);
    let (Event { name, message }, reason) = (event, why.label());
    event_at!(why.level(), event = name, reason, "{message}");
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// `tributary_mqtt_connect_seconds`: 0.25 ms to about 8 s.
#[derive(Clone, Debug)]
struct ConnectHistogram(Histogram);

impl Default for ConnectHistogram {
    fn default() -> Self {
        Self(connect_histogram())
    }
}

fn connect_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// `tributary_mqtt_connect_phase_seconds`, by phase.
#[derive(Clone, Debug)]
struct PhaseHistograms(Family<PhaseLabel, Histogram, fn() -> Histogram>);

impl Default for PhaseHistograms {
    fn default() -> Self {
        Self(Family::new_with_constructor(connect_histogram))
    }
}

/// Counters and gauges of the MQTT frontend. Cheap to clone (shared).
#[derive(Clone, Debug, Default)]
pub struct MqttMetrics {
    connections_current: Gauge,
    connections_total: Counter,
    connects_refused: Family<ReasonLabel, Counter>,
    connects_delayed: Counter,
    connect_seconds: ConnectHistogram,
    connect_phase_seconds: PhaseHistograms,
    disconnects: Family<ReasonLabel, Counter>,
    packets_received: Family<TypeLabel, Counter>,
    packets_sent: Family<TypeLabel, Counter>,
    publishes_acked: Counter,
    publishes_rejected: Family<ReasonLabel, Counter>,
    messages_delivered: Counter,
    messages_dropped: Family<ReasonLabel, Counter>,
    sessions: Gauge,
    retained: Gauge,
}

impl MqttMetrics {
    /// Creates the metrics and registers them under `tributary_mqtt_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("tributary_mqtt");
        r.register(
            "connections",
            "Open MQTT connections (after CONNACK)",
            m.connections_current.clone(),
        );
        r.register(
            "connections_accepted",
            "MQTT connections accepted since start",
            m.connections_total.clone(),
        );
        r.register(
            "connects_refused",
            "CONNECTs refused, by reason",
            m.connects_refused.clone(),
        );
        r.register(
            "connects_delayed",
            "CONNECTs that waited for their turn under max_connect_rate",
            m.connects_delayed.clone(),
        );
        r.register(
            "connect_seconds",
            "Time from a CONNECT read to its CONNACK sent (accepted connections)",
            m.connect_seconds.0.clone(),
        );
        r.register(
            "connect_phase_seconds",
            "Time accepted CONNECTs spent in each phase before CONNACK: admission (waiting for the connect rate), auth (credentials), quotas, session (attach, takeover); and presence: the durable presence report, beside the CONNACK (SUBSCRIBEs wait for it)",
            m.connect_phase_seconds.0.clone(),
        );
        r.register(
            "disconnects",
            "Connections ended, by reason",
            m.disconnects.clone(),
        );
        r.register(
            "packets_received",
            "Packets received, by type",
            m.packets_received.clone(),
        );
        r.register(
            "packets_sent",
            "Packets sent, by type",
            m.packets_sent.clone(),
        );
        r.register(
            "publishes_acked",
            "QoS 1 and 2 PUBLISHes acknowledged (telemetry: after the durable append)",
            m.publishes_acked.clone(),
        );
        r.register(
            "publishes_rejected",
            "PUBLISHes refused, by reason",
            m.publishes_rejected.clone(),
        );
        r.register(
            "messages_delivered",
            "Messages sent to subscribers",
            m.messages_delivered.clone(),
        );
        r.register(
            "messages_dropped",
            "Messages for subscribers dropped, by reason",
            m.messages_dropped.clone(),
        );
        r.register(
            "sessions",
            "Sessions held, connected or not",
            m.sessions.clone(),
        );
        r.register(
            "retained_messages",
            "Retained messages held, over all tenants",
            m.retained.clone(),
        );
        m
    }

    pub(crate) fn connection_opened(&self) {
        self.connections_current.inc();
        self.connections_total.inc();
    }

    /// Event `mqtt.disconnected`: a connection counted by
    /// [`connection_opened`](Self::connection_opened) ended. Called once per
    /// connection; the line names the connection as its "connected" line
    /// does (tenant, client id) and the device, when it is one.
    pub(crate) fn connection_closed(
        &self,
        why: DisconnectReason,
        tenant: &str,
        client_id: &str,
        device: Option<&str>,
    ) {
        self.connections_current.dec();
        count(&self.disconnects, why);
        let (Event { name, message }, reason) = (DISCONNECTED, why.label());
        event_at!(
            why.level(),
            event = name,
            reason,
            tenant,
            client_id,
            device,
            "{message}"
        );
    }

    /// A CONNECT waited for its turn under `max_connect_rate`.
    pub(crate) fn connect_delayed(&self) {
        self.connects_delayed.inc();
    }

    /// Time an accepted CONNECT spent in one phase.
    pub(crate) fn connect_phase(&self, phase: &'static str, took: std::time::Duration) {
        self.connect_phase_seconds
            .0
            .get_or_create(&PhaseLabel { phase })
            .observe(took.as_secs_f64());
    }

    /// An accepted CONNECT's time from read to CONNACK.
    pub(crate) fn connect_took(&self, took: std::time::Duration) {
        self.connect_seconds.0.observe(took.as_secs_f64());
    }

    /// Event `mqtt.connect_refused`.
    pub(crate) fn connect_refused(&self, why: ConnectRefusal) {
        emit(&self.connects_refused, CONNECT_REFUSED, why);
    }

    pub(crate) fn received(&self, packet: PacketType) {
        self.packets_received
            .get_or_create(&TypeLabel {
                r#type: packet.name(),
            })
            .inc();
    }

    pub(crate) fn sent(&self, packet: PacketType) {
        self.packets_sent
            .get_or_create(&TypeLabel {
                r#type: packet.name(),
            })
            .inc();
    }

    pub(crate) fn acked(&self) {
        self.publishes_acked.inc();
    }

    /// Event `mqtt.publish_rejected`.
    pub(crate) fn rejected(&self, why: PublishRejection) {
        emit(&self.publishes_rejected, PUBLISH_REJECTED, why);
    }

    pub(crate) fn delivered(&self) {
        self.messages_delivered.inc();
    }

    /// Event `mqtt.message_dropped`.
    pub(crate) fn dropped(&self, why: MessageDrop) {
        emit(&self.messages_dropped, MESSAGE_DROPPED, why);
    }

    pub(crate) fn set_sessions(&self, n: usize) {
        self.sessions.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub(crate) fn retained_delta(&self, delta: i64) {
        self.retained.inc_by(delta);
    }

    /// Open connections now.
    pub fn connections(&self) -> i64 {
        self.connections_current.get()
    }

    /// QoS 1 and 2 publishes acknowledged so far.
    pub fn publishes_acked(&self) -> u64 {
        self.publishes_acked.get()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    use tributary_otel::testing::{encoded, logged};

    #[test]
    fn an_event_is_one_log_line_at_its_level_and_one_count() {
        let mut registry = Registry::default();
        let m = MqttMetrics::register(&mut registry);
        let logs = logged(Level::INFO, || {
            m.connect_refused(ConnectRefusal::AuthUnavailable);
            m.connect_refused(ConnectRefusal::BadCredentials);
            m.rejected(PublishRejection::Rate);
            m.dropped(MessageDrop::QueueFull);
        });
        let lines: Vec<&str> = logs.lines().collect();
        assert_eq!(lines.len(), 1, "only the server's trouble at INFO: {logs}");
        for part in [
            "WARN",
            "connection refused",
            "event=\"mqtt.connect_refused\"",
            "reason=\"auth_unavailable\"",
        ] {
            assert!(lines[0].contains(part), "{part} in {logs}");
        }
        let logs = logged(Level::DEBUG, || m.dropped(MessageDrop::Expired));
        assert!(
            logs.contains("DEBUG")
                && logs.contains("event=\"mqtt.message_dropped\"")
                && logs.contains("reason=\"expired\""),
            "{logs}"
        );
        let text = encoded(&registry);
        for line in [
            "tributary_mqtt_connects_refused_total{reason=\"auth_unavailable\"} 1\n",
            "tributary_mqtt_connects_refused_total{reason=\"bad_credentials\"} 1\n",
            "tributary_mqtt_publishes_rejected_total{reason=\"rate\"} 1\n",
            "tributary_mqtt_messages_dropped_total{reason=\"queue_full\"} 1\n",
            "tributary_mqtt_messages_dropped_total{reason=\"expired\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn a_disconnect_is_one_line_naming_the_connection_and_one_count() {
        let mut registry = Registry::default();
        let m = MqttMetrics::register(&mut registry);
        m.connection_opened();
        m.connection_opened();
        m.connection_opened();
        let logs = logged(Level::INFO, || {
            m.connection_closed(DisconnectReason::Client, "acme", "d1", Some("d1"));
            m.connection_closed(DisconnectReason::KeepAlive, "acme", "d2/x", Some("d2"));
            m.connection_closed(DisconnectReason::Overloaded, "other", "$app/all/a", None);
        });
        let lines: Vec<&str> = logs.lines().collect();
        assert_eq!(lines.len(), 2, "a client's own close is DEBUG: {logs}");
        for part in [
            " INFO ",
            "disconnected",
            "event=\"mqtt.disconnected\"",
            "reason=\"keep_alive\"",
            "tenant=\"acme\"",
            "client_id=\"d2/x\"",
            "device=\"d2\"",
        ] {
            assert!(lines[0].contains(part), "{part} in {logs}");
        }
        for part in [
            " WARN ",
            "reason=\"overloaded\"",
            "client_id=\"$app/all/a\"",
        ] {
            assert!(lines[1].contains(part), "{part} in {logs}");
        }
        assert!(!lines[1].contains("device="), "no device: {logs}");
        let text = encoded(&registry);
        for line in [
            "tributary_mqtt_connections 0\n",
            "tributary_mqtt_disconnects_total{reason=\"client\"} 1\n",
            "tributary_mqtt_disconnects_total{reason=\"keep_alive\"} 1\n",
            "tributary_mqtt_disconnects_total{reason=\"overloaded\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn a_publish_refusal_closes_a_connection_under_the_same_label() {
        for why in PublishRejection::ALL {
            let end = DisconnectReason::from(*why);
            if *why == PublishRejection::SubscribeNotAuthorized {
                assert_eq!(end, DisconnectReason::NotAuthorized);
            } else if matches!(
                why,
                PublishRejection::FilterInvalid | PublishRejection::TooManyFilters
            ) {
                // SUBSCRIBE refusals never close a connection.
                assert_eq!(end, DisconnectReason::TopicInvalid);
            } else {
                assert_eq!(end.label(), why.label(), "{why:?}");
            }
        }
    }

    /// Counts every reason of `R` once through `count` and checks that each
    /// is its own series of `metric` under its label, and that the labels
    /// are distinct.
    fn each_reason_is_its_own_series<R: Reason>(metric: &str, count: impl Fn(&MqttMetrics, R)) {
        let labels: HashSet<&str> = R::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), R::ALL.len(), "{metric}: distinct labels");
        let mut registry = Registry::default();
        let m = MqttMetrics::register(&mut registry);
        for why in R::ALL {
            count(&m, *why);
        }
        let text = encoded(&registry);
        for label in &labels {
            let line = format!("{metric}{{reason=\"{label}\"}} 1\n");
            assert!(text.contains(&line), "{line} in {text}");
        }
        let series = text
            .lines()
            .filter(|l| l.starts_with(&format!("{metric}{{")))
            .count();
        assert_eq!(series, R::ALL.len(), "{text}");
    }

    #[test]
    fn every_reason_is_its_own_series_under_its_label() {
        each_reason_is_its_own_series(
            "tributary_mqtt_connects_refused_total",
            |m, why: ConnectRefusal| m.connect_refused(why),
        );
        each_reason_is_its_own_series(
            "tributary_mqtt_publishes_rejected_total",
            |m, why: PublishRejection| m.rejected(why),
        );
        each_reason_is_its_own_series(
            "tributary_mqtt_messages_dropped_total",
            |m, why: MessageDrop| m.dropped(why),
        );
        each_reason_is_its_own_series(
            "tributary_mqtt_disconnects_total",
            |m, why: DisconnectReason| {
                m.connection_opened();
                m.connection_closed(why, "acme", "d1", Some("d1"));
            },
        );
    }

    #[test]
    fn the_docs_name_every_event_and_reason() {
        let docs = include_str!("../../../docs/observability.md");
        let events = docs
            .split("\n## Events\n")
            .nth(1)
            .expect("docs/observability.md has an Events section");
        let events = events.split("\n## ").next().unwrap_or(events);
        let all = [
            CONNECT_REFUSED,
            PUBLISH_REJECTED,
            MESSAGE_DROPPED,
            DISCONNECTED,
        ];
        for name in all.map(|e| e.name) {
            assert!(events.contains(&format!("`{name}`")), "{name}");
        }
        /// The row of the label table for `event`'s reasons.
        fn row(events: &str, event: Event) -> &str {
            let head = format!("| `{}` `reason` |", event.name);
            events
                .lines()
                .find(|l| l.starts_with(&head))
                .unwrap_or_else(|| panic!("a label row for {}", event.name))
        }
        fn check<R: Reason>(events: &str, event: Event) {
            let row = row(events, event);
            for why in R::ALL {
                let label = why.label();
                assert!(
                    row.contains(&format!("`{label}`")),
                    "the Events section of docs/observability.md names reason `{label}` of {}",
                    event.name
                );
            }
        }
        check::<ConnectRefusal>(events, CONNECT_REFUSED);
        check::<PublishRejection>(events, PUBLISH_REJECTED);
        check::<MessageDrop>(events, MESSAGE_DROPPED);
        check::<DisconnectReason>(events, DISCONNECTED);
    }
}
