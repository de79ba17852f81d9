//! The frontend's Prometheus metrics, under `tributary_coap_*`.
//!
//! A refused request is an event: one method counts it under a reason of
//! the closed enum [`Refusal`] and logs it (event `coap.refused`, at DEBUG:
//! a client can cause refusals at will), so the log line and the metric
//! cannot drift apart.

use std::sync::atomic::{AtomicI64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::resource::Reply;

/// Why a request was refused before it reached the ingestor: the `reason`
/// of `tributary_coap_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A datagram that is not a CoAP message (answered with RST when
    /// confirmable).
    Malformed,
    /// An unrecognized critical option (4.02).
    BadOption,
    /// A Uri-Query, such as a credential in the URI (4.00).
    Query,
    /// No such resource (4.04).
    NotFound,
    /// The wrong method for the resource (4.05).
    Method,
    /// No token option (4.01).
    Unauthenticated,
    /// A malformed option value (4.00).
    Invalid,
    /// Over the body limit (4.13).
    TooLarge,
    /// A Content-Format the resource does not take (4.15).
    ContentFormat,
    /// The server remembers as many exchanges as it may (5.03).
    Exchanges,
    /// The server holds as many endpoints as it may (5.03).
    Peers,
    /// The endpoint has as many requests in hand as it may (5.03).
    PendingPerPeer,
    /// The endpoint's IP address has as many endpoints as it may (5.03).
    PeersPerIp,
    /// The tenant's devices hold their share of the exchange table (5.03).
    TenantExchanges,
    /// A block out of order, or no upload to continue (4.08).
    Incomplete,
    /// The bytes held for block-wise uploads, the server's or the
    /// tenant's, are spent (5.03).
    UploadBytes,
    /// The server, or the tenant, holds as many command registrations as
    /// it may (5.03).
    Observers,
    /// The server, or the tenant, holds as many LwM2M registrations as it
    /// may (5.03).
    Registrations,
}

impl Refusal {
    /// Every reason.
    pub const ALL: &'static [Refusal] = &[
        Refusal::Malformed,
        Refusal::BadOption,
        Refusal::Query,
        Refusal::NotFound,
        Refusal::Method,
        Refusal::Unauthenticated,
        Refusal::Invalid,
        Refusal::TooLarge,
        Refusal::ContentFormat,
        Refusal::Exchanges,
        Refusal::Peers,
        Refusal::PendingPerPeer,
        Refusal::PeersPerIp,
        Refusal::TenantExchanges,
        Refusal::Incomplete,
        Refusal::UploadBytes,
        Refusal::Observers,
        Refusal::Registrations,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::BadOption => "bad_option",
            Refusal::Query => "query",
            Refusal::NotFound => "not_found",
            Refusal::Method => "method",
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::Invalid => "invalid",
            Refusal::TooLarge => "too_large",
            Refusal::ContentFormat => "content_format",
            Refusal::Exchanges => "exchanges",
            Refusal::Peers => "peers",
            Refusal::PendingPerPeer => "pending_per_peer",
            Refusal::PeersPerIp => "peers_per_ip",
            Refusal::TenantExchanges => "tenant_exchanges",
            Refusal::Incomplete => "incomplete",
            Refusal::UploadBytes => "upload_bytes",
            Refusal::Observers => "observers",
            Refusal::Registrations => "registrations",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

/// The CoAP frontend's metrics. Cheap to clone (shared). The plain and the
/// DTLS listener share one set: counters add up, and each listener's
/// [`CoapMetrics::for_listener`] handle adds its own table sizes to the
/// gauges.
#[derive(Debug, Clone)]
pub struct CoapMetrics {
    levels: std::sync::Arc<Levels>,
    dtls_handshakes: Family<OutcomeLabel, Counter>,
    dtls_ended: Family<OutcomeLabel, Counter>,
    dtls_sessions: Gauge,
    dtls_dropped: Counter,
    lwm2m_registrations: Gauge,
    lwm2m_observations: Gauge,
    lwm2m_held: Gauge,
    lwm2m_notifications: Family<OutcomeLabel, Counter>,
    responses: Family<CodeLabel, Counter>,
    refused: Family<ReasonLabel, Counter>,
    duplicates: Counter,
    separate: Counter,
    retransmissions: Counter,
    separate_lost: Counter,
    exchanges: Gauge,
    peers: Gauge,
    pub(crate) upload_bytes: Gauge,
    observers: Gauge,
    commands: Family<OutcomeLabel, Counter>,
}

/// What one listener last reported of its tables, so that its share of a
/// shared gauge moves by the difference.
#[derive(Debug, Default)]
struct Levels {
    exchanges: AtomicI64,
    peers: AtomicI64,
    observers: AtomicI64,
    dtls_sessions: AtomicI64,
    lwm2m_registrations: AtomicI64,
    lwm2m_observations: AtomicI64,
    lwm2m_held: AtomicI64,
}

/// Moves `gauge` by what `level` changed by when set to `now`.
fn level(gauge: &Gauge, level: &AtomicI64, now: usize) {
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let before = level.swap(now, Ordering::Relaxed);
    gauge.inc_by(now - before);
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

impl CoapMetrics {
    /// Registers the metrics under `tributary_coap`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = CoapMetrics::unregistered();
        let r = registry.sub_registry_with_prefix("tributary_coap");
        r.register(
            "responses",
            "Responses sent, by code (2.04: durable in the log)",
            m.responses.clone(),
        );
        r.register(
            "refused",
            "Requests refused before ingest, by reason",
            m.refused.clone(),
        );
        r.register(
            "duplicates",
            "Retransmitted requests answered from the exchange cache, never processed twice",
            m.duplicates.clone(),
        );
        r.register(
            "separate_responses",
            "Responses sent separately, after an empty ACK, because the append took long",
            m.separate.clone(),
        );
        r.register(
            "retransmissions",
            "Confirmable messages the server sent again for want of an ACK",
            m.retransmissions.clone(),
        );
        r.register(
            "separate_lost",
            "Separate responses never acknowledged after every retransmission",
            m.separate_lost.clone(),
        );
        r.register(
            "exchanges",
            "Exchanges remembered for deduplication",
            m.exchanges.clone(),
        );
        r.register(
            "peers",
            "Endpoints with exchanges remembered",
            m.peers.clone(),
        );
        r.register(
            "observers",
            "Devices registered for commands (Observe on /c)",
            m.observers.clone(),
        );
        r.register(
            "commands",
            "Commands sent to CoAP devices, by outcome (replied, timeout, offline, refused)",
            m.commands.clone(),
        );
        r.register(
            "upload_bytes",
            "Bytes of block-wise uploads held until their last block",
            m.upload_bytes.clone(),
        );
        r.register(
            "dtls_handshakes",
            "DTLS handshakes, by outcome (established, bad_psk, failed, timeout, evicted, registry_unavailable, refused_sessions, refused_per_ip, refused_handshakes)",
            m.dtls_handshakes.clone(),
        );
        r.register(
            "dtls_sessions_ended",
            "Established DTLS sessions that ended, by reason (closed, idle, revoked)",
            m.dtls_ended.clone(),
        );
        r.register(
            "dtls_sessions",
            "DTLS sessions held, handshakes in progress included",
            m.dtls_sessions.clone(),
        );
        r.register(
            "lwm2m_registrations",
            "LwM2M clients registered (/rd)",
            m.lwm2m_registrations.clone(),
        );
        r.register(
            "lwm2m_observations",
            "Resources of LwM2M clients observed for telemetry",
            m.lwm2m_observations.clone(),
        );
        r.register(
            "lwm2m_held",
            "Requests held for LwM2M clients in queue mode until they update",
            m.lwm2m_held.clone(),
        );
        r.register(
            "lwm2m_notifications",
            "LwM2M notifications, by outcome (stored, refused, undecodable)",
            m.lwm2m_notifications.clone(),
        );
        r.register(
            "dtls_dropped",
            "Datagrams dropped on the DTLS listener: too large, from no session, or queued past a session's limit",
            m.dtls_dropped.clone(),
        );
        m
    }

    /// A handle for one more listener: same metrics, its own share of the
    /// table gauges.
    pub fn for_listener(&self) -> Self {
        CoapMetrics {
            levels: std::sync::Arc::default(),
            ..self.clone()
        }
    }

    /// Metrics that no registry exports (tests).
    pub fn unregistered() -> Self {
        CoapMetrics {
            levels: std::sync::Arc::default(),
            dtls_handshakes: Family::default(),
            dtls_ended: Family::default(),
            dtls_sessions: Gauge::default(),
            dtls_dropped: Counter::default(),
            lwm2m_registrations: Gauge::default(),
            lwm2m_observations: Gauge::default(),
            lwm2m_held: Gauge::default(),
            lwm2m_notifications: Family::default(),
            responses: Family::default(),
            refused: Family::default(),
            duplicates: Counter::default(),
            separate: Counter::default(),
            retransmissions: Counter::default(),
            separate_lost: Counter::default(),
            exchanges: Gauge::default(),
            peers: Gauge::default(),
            upload_bytes: Gauge::default(),
            observers: Gauge::default(),
            commands: Family::default(),
        }
    }

    pub(crate) fn refused(&self, reason: Refusal, reply: &Reply) {
        self.refused
            .get_or_create(&ReasonLabel {
                reason: reason.label(),
            })
            .inc();
        let diagnostic = String::from_utf8_lossy(&reply.payload);
        // DEBUG for every reason: a client can cause refusals at will, so a
        // line each at WARN would let it flood the log. The counter (and
        // its alert) is the signal.
        tracing::debug!(event = "coap.refused", reason = reason.label(), code = %reply.code, %diagnostic, "CoAP request refused");
    }

    pub(crate) fn malformed(&self, error: &tributary_coap_codec::DecodeError) {
        self.refused
            .get_or_create(&ReasonLabel {
                reason: Refusal::Malformed.label(),
            })
            .inc();
        tracing::debug!(event = "coap.refused", reason = Refusal::Malformed.label(), %error, "CoAP datagram refused");
    }

    pub(crate) fn responded(&self, code: tributary_coap_codec::Code) {
        self.responses
            .get_or_create(&CodeLabel {
                code: code.to_string(),
            })
            .inc();
    }

    pub(crate) fn duplicate(&self) {
        self.duplicates.inc();
    }

    pub(crate) fn separate(&self) {
        self.separate.inc();
    }

    pub(crate) fn retransmitted(&self) {
        self.retransmissions.inc();
    }

    pub(crate) fn observers(&self, n: usize) {
        level(&self.observers, &self.levels.observers, n);
    }

    pub(crate) fn dtls_handshake(&self, outcome: &'static str) {
        self.dtls_handshakes
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// How a session's task ended: a session's end, or a handshake's.
    pub(crate) fn dtls_handshake_end(&self, outcome: &'static str) {
        match outcome {
            "closed" | "idle" | "revoked" => {
                self.dtls_ended
                    .get_or_create(&OutcomeLabel { outcome })
                    .inc();
            }
            _ => self.dtls_handshake(outcome),
        }
    }

    pub(crate) fn dtls_sessions(&self, n: usize) {
        level(&self.dtls_sessions, &self.levels.dtls_sessions, n);
    }

    pub(crate) fn dtls_dropped(&self) {
        self.dtls_dropped.inc();
    }

    pub(crate) fn lwm2m(&self, registrations: usize, observations: usize) {
        level(
            &self.lwm2m_registrations,
            &self.levels.lwm2m_registrations,
            registrations,
        );
        level(
            &self.lwm2m_observations,
            &self.levels.lwm2m_observations,
            observations,
        );
    }

    pub(crate) fn lwm2m_held(&self, n: usize) {
        level(&self.lwm2m_held, &self.levels.lwm2m_held, n);
    }

    pub(crate) fn lwm2m_notification(&self, outcome: &'static str) {
        self.lwm2m_notifications
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    pub(crate) fn command(&self, outcome: &'static str) {
        self.commands.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub(crate) fn separate_lost(&self) {
        self.separate_lost.inc();
    }

    pub(crate) fn table(&self, exchanges: usize, peers: usize) {
        level(&self.exchanges, &self.levels.exchanges, exchanges);
        level(&self.peers, &self.levels.peers, peers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_docs_name_every_refusal() {
        let docs = include_str!("../../../docs/observability.md");
        let row = docs
            .lines()
            .find(|l| l.starts_with("| `coap.refused` `reason`"))
            .expect("docs/observability.md lists the coap.refused reasons");
        for r in Refusal::ALL {
            assert!(
                row.contains(&format!("`{}`", r.label())),
                "docs name reason `{}`",
                r.label()
            );
        }
        let coap = include_str!("../../../docs/coap.md");
        for r in Refusal::ALL {
            assert!(
                coap.contains(&format!("`{}`", r.label())),
                "docs/coap.md names `{}`",
                r.label()
            );
        }
    }
}
