//! The frontend's settings: one serde struct, every limit in one place.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::MqttError;

/// Settings of the MQTT frontend. Every size, count and rate has a limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// This frontend's name in presence reports (`PresenceSink::report`).
    pub frontend_id: String,
    /// Most concurrent connections. A CONNECT beyond it is refused with
    /// 0x97 Quota exceeded (3.1.1: 3 Server unavailable).
    pub max_connections: usize,
    /// Sockets that may wait for their CONNECT (or their authentication) at
    /// once, beyond which new sockets are closed at once. Bounds the cost of
    /// connection storms.
    pub max_pending_connects: usize,
    /// Of the `max_pending_connects` slots, how many sockets of one source
    /// (an IPv4 address, or an IPv6 /64; the PROXY header's address when
    /// [`MqttConfig::proxy_protocol`] is on) may hold at once; more are
    /// closed at once. 0 turns the per-source bound off: do that behind a
    /// load balancer that does not send the PROXY header, where every
    /// socket comes from the balancer's address.
    pub max_pending_connects_per_source: usize,
    /// Seconds a new socket has to send its CONNECT before it is closed.
    pub connect_timeout_secs: u64,
    /// Most CONNECTs this frontend authenticates per second, sustained (0:
    /// no limit): a fleet coming back after an outage is let in at this
    /// rate. CONNECTs above it wait their turn (see
    /// [`MqttConfig::max_connect_wait_ms`]).
    pub max_connect_rate: f64,
    /// CONNECTs let in at once above [`MqttConfig::max_connect_rate`].
    pub connect_burst: u32,
    /// The longest a CONNECT waits for its turn under
    /// [`MqttConfig::max_connect_rate`]; one that would wait longer is
    /// refused at once with CONNACK 0x9F Connection rate exceeded (3.1.1:
    /// 3 Server unavailable) and, for 5.0, a `retry-after` user property in
    /// seconds. Keep it well under the clients' connect timeout.
    pub max_connect_wait_ms: u64,
    /// The largest packet accepted from a client, in bytes (sent to 5.0
    /// clients as Maximum Packet Size). Larger packets get DISCONNECT 0x95.
    pub max_packet_size: u32,
    /// How many QoS 1 and 2 publications (and QoS 0 telemetry appends) of one
    /// connection may be in flight, i.e. read but not yet durable. Sent to
    /// 5.0 clients as Receive Maximum; at the limit the connection stops
    /// reading its socket.
    pub receive_maximum: u16,
    /// Most unacknowledged QoS 1 and 2 deliveries to one client, also capped
    /// by the client's own Receive Maximum.
    pub max_outbound_inflight: u16,
    /// Most levels in a topic name or filter (`a/b/c` has three). A PUBLISH
    /// or will beyond it is refused with 0x90 Topic Name invalid, a
    /// subscription with 0x8F Topic Filter invalid (3.1.1: a close, or
    /// SUBACK 0x80). At most [`MAX_TOPIC_LEVELS`].
    pub max_topic_levels: usize,
    /// Most distinct topic filters in one SUBSCRIBE; a filter repeated in
    /// the packet counts once. Filters beyond it get 0x97 Quota exceeded
    /// (3.1.1: 0x80).
    pub max_filters_per_subscribe: usize,
    /// The highest topic alias a 5.0 client may use (0 turns aliases off).
    pub topic_alias_maximum: u16,
    /// The most topic aliases the server sends one client, within the
    /// Topic Alias Maximum the client announces (at most 64; 0: none, for
    /// fleets whose clients announce aliases they cannot read).
    pub max_outbound_topic_aliases: u16,
    /// Highest keep alive accepted, in seconds (20 minutes by default); a
    /// larger or zero keep alive of a 5.0 client is replaced, and the
    /// client told so in CONNACK (Server Keep Alive). A 3.1.1 client, which
    /// cannot be told, keeps its own. 0 accepts any.
    pub max_keep_alive_secs: u16,
    /// Longest session expiry interval granted, in seconds.
    pub max_session_expiry_secs: u32,
    /// Session expiry of a 3.1.1 client connecting with Clean Session 0
    /// (3.1.1 has no expiry of its own), in seconds.
    pub v311_session_expiry_secs: u32,
    /// Most messages queued for one session (while it is offline, or faster
    /// than it acknowledges). Further messages for it are dropped and counted.
    pub max_queued_messages: usize,
    /// Most subscriptions one session may hold.
    pub max_subscriptions_per_session: usize,
    /// Most persistent sessions kept (connected or not).
    pub max_sessions: usize,
    /// Most retained messages per tenant.
    pub max_retained_per_tenant: usize,
    /// Largest retained payload, in bytes.
    pub max_retained_payload: usize,
    /// Sustained PUBLISH rate allowed per device, in messages per second
    /// (0 disables the limit). Past it: DISCONNECT 0x96 (5.0), or a close.
    pub publish_rate_per_device: f64,
    /// Burst above the sustained rate, in messages.
    pub publish_burst_per_device: u32,
    /// Bytes of encoded packets a connection may buffer for a slow client
    /// before it stops taking new deliveries and stops reading.
    pub max_write_buffer: usize,
    /// Seconds a write to a client may stall before the connection is closed.
    pub write_timeout_secs: u64,
    /// Seconds a closing connection waits for its in-flight appends, and a
    /// taking-over connection waits for the old one to let go.
    pub drain_timeout_secs: u64,
    /// Every connection accepted by the MQTT and MQTT-over-TLS listeners
    /// must start with a PROXY protocol header, v1 or v2 (HAProxy's
    /// specification), sent by the TCP load balancer in front. The
    /// WebSocket listeners never take one: they sit behind an HTTP Ingress
    /// or Gateway route, which does not send it. The client's address is
    /// taken from the header. Read within the connect
    /// timeout, before any TLS; a socket without a valid header is closed
    /// (`connects_refused{reason="proxy_protocol"}`). Turn it on only behind
    /// a load balancer that sends the header: anyone reaching the
    /// listeners directly could otherwise claim any address.
    pub proxy_protocol: bool,
    /// Where clients should reconnect once this server is gone, e.g.
    /// `mqtt.new-cluster.example.com:8883`: when set, the DISCONNECT sent to
    /// MQTT 5 clients on shutdown is 0x9D Server moved with this Server
    /// Reference instead of 0x8B Server shutting down. At most
    /// [`MAX_SERVER_REFERENCE_LEN`] bytes, no control characters.
    pub server_reference: Option<String>,
}

/// The highest [`MqttConfig::max_topic_levels`] that may be set.
pub const MAX_TOPIC_LEVELS: usize = 256;

/// The longest [`MqttConfig::server_reference`], in bytes.
pub const MAX_SERVER_REFERENCE_LEN: usize = 256;

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            frontend_id: "mqtt".to_owned(),
            max_connections: 20_000,
            max_pending_connects: 2_048,
            max_pending_connects_per_source: 256,
            connect_timeout_secs: 10,
            max_connect_rate: 10_000.0,
            connect_burst: 2_000,
            max_connect_wait_ms: 2_000,
            max_packet_size: 1024 * 1024,
            receive_maximum: 64,
            max_outbound_inflight: 64,
            max_topic_levels: 32,
            max_filters_per_subscribe: 64,
            topic_alias_maximum: 32,
            max_outbound_topic_aliases: 64,
            max_keep_alive_secs: 1200,
            max_session_expiry_secs: 7 * 24 * 3600,
            v311_session_expiry_secs: 24 * 3600,
            max_queued_messages: 1_000,
            max_subscriptions_per_session: 100,
            max_sessions: 100_000,
            max_retained_per_tenant: 10_000,
            max_retained_payload: 64 * 1024,
            publish_rate_per_device: 0.0,
            publish_burst_per_device: 100,
            max_write_buffer: 256 * 1024,
            write_timeout_secs: 30,
            drain_timeout_secs: 10,
            proxy_protocol: false,
            server_reference: None,
        }
    }
}

impl MqttConfig {
    /// Checks that the settings make sense together.
    pub fn validate(&self) -> Result<(), MqttError> {
        let bad = |m: &str| Err(MqttError::Config(m.to_owned()));
        if self.frontend_id.is_empty() {
            return bad("frontend_id must not be empty");
        }
        if self.max_connections == 0 || self.max_pending_connects == 0 {
            return bad("max_connections and max_pending_connects must be at least 1");
        }
        if self.max_packet_size < 64 {
            return bad("max_packet_size must be at least 64 bytes");
        }
        if self.receive_maximum == 0 || self.max_outbound_inflight == 0 {
            return bad("receive_maximum and max_outbound_inflight must be at least 1");
        }
        if !(1..=MAX_TOPIC_LEVELS).contains(&self.max_topic_levels) {
            return Err(MqttError::Config(format!(
                "max_topic_levels must be 1 to {MAX_TOPIC_LEVELS}, got {}",
                self.max_topic_levels
            )));
        }
        if self.max_filters_per_subscribe == 0 {
            return bad("max_filters_per_subscribe must be at least 1");
        }
        if self.connect_timeout_secs == 0 {
            return bad("connect_timeout_secs must be at least 1");
        }
        if !(self.publish_rate_per_device >= 0.0 && self.publish_rate_per_device.is_finite()) {
            return bad("publish_rate_per_device must be a finite number >= 0");
        }
        if !(self.max_connect_rate >= 0.0 && self.max_connect_rate.is_finite()) {
            return bad("max_connect_rate must be a finite number >= 0");
        }
        if self.max_connect_rate > 0.0 && self.connect_burst == 0 {
            return bad("connect_burst must be at least 1 when max_connect_rate is set");
        }
        if self.publish_rate_per_device > 0.0 && self.publish_burst_per_device == 0 {
            return bad("publish_burst_per_device must be at least 1 when a rate is set");
        }
        if self.max_write_buffer < 4096 {
            return bad("max_write_buffer must be at least 4096 bytes");
        }
        if let Some(reference) = &self.server_reference
            && (reference.trim().is_empty()
                || reference.len() > MAX_SERVER_REFERENCE_LEN
                || reference.chars().any(char::is_control))
        {
            return Err(MqttError::Config(format!(
                "server_reference must be 1 to {MAX_SERVER_REFERENCE_LEN} bytes without control characters, got {} bytes",
                reference.len()
            )));
        }
        Ok(())
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    pub(crate) fn max_connect_wait(&self) -> Duration {
        Duration::from_millis(self.max_connect_wait_ms)
    }

    pub(crate) fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.write_timeout_secs.max(1))
    }

    pub(crate) fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_nonsense_is_refused() {
        assert!(MqttConfig::default().validate().is_ok());
        let c = MqttConfig {
            receive_maximum: 0,
            ..MqttConfig::default()
        };
        assert!(c.validate().is_err());
        let c = MqttConfig {
            publish_rate_per_device: f64::NAN,
            ..MqttConfig::default()
        };
        assert!(c.validate().is_err());
        let c = MqttConfig {
            max_packet_size: 10,
            ..MqttConfig::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn server_reference_is_bounded() {
        let with = |r: &str| MqttConfig {
            server_reference: Some(r.to_owned()),
            ..MqttConfig::default()
        };
        assert!(with("mqtt.example.com:8883").validate().is_ok());
        assert!(
            with(&"a".repeat(MAX_SERVER_REFERENCE_LEN))
                .validate()
                .is_ok()
        );
        for bad in [
            String::new(),
            " ".into(),
            "a".repeat(MAX_SERVER_REFERENCE_LEN + 1),
            "a\nb".into(),
            "a\0b".into(),
        ] {
            let err = with(&bad).validate().expect_err(&bad);
            assert!(err.to_string().contains("server_reference"), "{err}");
        }
    }
}
