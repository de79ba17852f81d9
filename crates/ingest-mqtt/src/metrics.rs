//! The frontend's Prometheus metrics, registered under `tributary_mqtt_*`,
//! and its events.
//!
//! A refused CONNECT, a rejected PUBLISH and a dropped message are
//! *events*: one method each ([`MqttMetrics::connect_refused`],
//! [`MqttMetrics::rejected`], [`MqttMetrics::dropped`]) counts it under a
//! reason of a closed enum ([`ConnectRefusal`], [`PublishRejection`],
//! [`MessageDrop`]) and logs it at the reason's level, so the log line and
//! the metric cannot drift apart. docs/observability.md ("Events") lists
//! them; a test checks that it names every reason.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tracing::Level;
use tributary_mqtt_codec::PacketType;

/// A closed set of reasons: the `reason` label of one counter.
pub(crate) trait Reason: Copy + std::fmt::Debug + 'static {
    /// Every reason.
    const ALL: &'static [Self];
    /// The Prometheus label value (dashboards and alerts select on it).
    fn label(self) -> &'static str;
    /// The level of the event's log line.
    fn level(self) -> Level;
    /// The reason whose label is `label`, for the call sites that still
    /// carry a reason as its label (connection.rs `Refusal`,
    /// `refuse_publish`, `ingest_reason`).
    fn from_label(label: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|r| r.label() == label)
    }
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
        /// The tenant's session quota.
        TooManySessions = "too_many_sessions", DEBUG;
        /// Every pending-connect slot taken: the socket is closed at once.
        PendingConnects = "pending_connects", WARN;
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

/// Counts `why` in `family` and logs `event` at `why`'s level.
fn emit<R: Reason>(family: &Family<ReasonLabel, Counter>, event: Event, why: R) {
    family
        .get_or_create(&ReasonLabel {
            reason: why.label(),
        })
        .inc();
    let (Event { name, message }, reason) = (event, why.label());
    match why.level() {
        Level::ERROR => tracing::error!(event = name, reason, "{message}"),
        Level::WARN => tracing::warn!(event = name, reason, "{message}"),
        Level::INFO => tracing::info!(event = name, reason, "{message}"),
        Level::DEBUG => tracing::debug!(event = name, reason, "{message}"),
        _ => tracing::trace!(event = name, reason, "{message}"),
    }
}

/// [`emit`] for a reason still carried as its label: an unlisted label
/// is counted as it is (no count is lost) and reported as the bug it is.
fn emit_label<R: Reason>(family: &Family<ReasonLabel, Counter>, event: Event, label: &'static str) {
    match R::from_label(label) {
        Some(why) => emit(family, event, why),
        None => {
            family.get_or_create(&ReasonLabel { reason: label }).inc();
            tracing::error!(
                event = event.name,
                reason = label,
                "bug: a reason label missing from its enum in metrics.rs"
            );
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Counters and gauges of the MQTT frontend. Cheap to clone (shared).
#[derive(Clone, Debug, Default)]
pub struct MqttMetrics {
    connections_current: Gauge,
    connections_total: Counter,
    connects_refused: Family<ReasonLabel, Counter>,
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

    pub(crate) fn connection_closed(&self, reason: &'static str) {
        self.connections_current.dec();
        self.disconnects
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Event `mqtt.connect_refused`.
    pub(crate) fn connect_refused(&self, why: ConnectRefusal) {
        emit(&self.connects_refused, CONNECT_REFUSED, why);
    }

    /// Event `mqtt.connect_refused`, for a reason carried as its label.
    pub(crate) fn connect_refused_label(&self, label: &'static str) {
        emit_label::<ConnectRefusal>(&self.connects_refused, CONNECT_REFUSED, label);
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

    /// Event `mqtt.publish_rejected`, for a reason carried as its label.
    pub(crate) fn rejected_label(&self, label: &'static str) {
        emit_label::<PublishRejection>(&self.publishes_rejected, PUBLISH_REJECTED, label);
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
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Log lines written by the subscriber under test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Runs `f` with a subscriber at `level` and returns what it logged.
    fn logged(level: Level, f: impl FnOnce()) -> String {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(level)
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned()
    }

    fn encoded(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

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
    fn a_reason_carried_as_its_label_is_the_same_event_and_an_unlisted_one_is_a_loud_bug() {
        let mut registry = Registry::default();
        let m = MqttMetrics::register(&mut registry);
        let logs = logged(Level::DEBUG, || {
            m.connect_refused_label("client_id");
            m.rejected_label("not_authorized");
        });
        assert!(
            logs.contains("event=\"mqtt.connect_refused\" reason=\"client_id\""),
            "{logs}"
        );
        assert!(
            logs.contains("event=\"mqtt.publish_rejected\" reason=\"not_authorized\""),
            "{logs}"
        );
        let logs = logged(Level::INFO, || m.rejected_label("no_such_reason"));
        assert!(
            logs.contains("ERROR") && logs.contains("no_such_reason"),
            "{logs}"
        );
        let text = encoded(&registry);
        for line in [
            "tributary_mqtt_connects_refused_total{reason=\"client_id\"} 1\n",
            "tributary_mqtt_publishes_rejected_total{reason=\"not_authorized\"} 1\n",
            "tributary_mqtt_publishes_rejected_total{reason=\"no_such_reason\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    /// Counts every reason of `R` once through `count` and checks that each
    /// is its own series of `metric` under its label, and that the labels
    /// are distinct and found again by `from_label`.
    fn each_reason_is_its_own_series<R: Reason>(metric: &str, count: impl Fn(&MqttMetrics, R)) {
        let labels: HashSet<&str> = R::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), R::ALL.len(), "{metric}: distinct labels");
        let mut registry = Registry::default();
        let m = MqttMetrics::register(&mut registry);
        for why in R::ALL {
            count(&m, *why);
            assert_eq!(
                R::from_label(why.label()).map(|r| r.label()),
                Some(why.label())
            );
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
    }

    #[test]
    fn the_docs_name_every_event_and_reason() {
        let docs = include_str!("../../../docs/observability.md");
        let events = docs
            .split("\n## Events\n")
            .nth(1)
            .expect("docs/observability.md has an Events section");
        let events = events.split("\n## ").next().unwrap_or(events);
        for name in [CONNECT_REFUSED, PUBLISH_REJECTED, MESSAGE_DROPPED].map(|e| e.name) {
            assert!(events.contains(&format!("`{name}`")), "{name}");
        }
        let labels = ConnectRefusal::ALL
            .iter()
            .map(|r| r.label())
            .chain(PublishRejection::ALL.iter().map(|r| r.label()))
            .chain(MessageDrop::ALL.iter().map(|r| r.label()));
        for label in labels {
            assert!(
                events.contains(&format!("`{label}`")),
                "the Events section of docs/observability.md names reason `{label}`"
            );
        }
    }
}
