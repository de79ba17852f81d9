//! The frontend's Prometheus metrics, registered under `tributary_mqtt_*`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tributary_mqtt_codec::PacketType;

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

    pub(crate) fn connect_refused(&self, reason: &'static str) {
        self.connects_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
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

    pub(crate) fn rejected(&self, reason: &'static str) {
        self.publishes_rejected
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub(crate) fn delivered(&self) {
        self.messages_delivered.inc();
    }

    pub(crate) fn dropped(&self, reason: &'static str) {
        self.messages_dropped
            .get_or_create(&ReasonLabel { reason })
            .inc();
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
