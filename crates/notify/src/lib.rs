//! Alert delivery: every transition in the alerts log
//! (`tributary.alerts.v1`) to the places tenants follow them.
//!
//! - [`mqtt`]: to tenant applications, on `alerts/{rule}/{device}`, at QoS 1,
//!   as JSON ([`event_json`]); an application receives it if its grants
//!   let it subscribe there.
//! - [`webhook`]: POSTed to the tenant's webhooks, signed ([`sign`]),
//!   retried with backoff, dead-lettered when given up.
//!
//! Transitions a silence covered (`silenced_until_ns` set by the
//! processor, [`silenced`]) are not delivered; an operator's
//! acknowledgement is, as a transition of state `acknowledged`.
//!
//! Each delivery is a consumer group on the alerts log that commits its
//! offsets only after the transitions before them were handed over, so a
//! restart delivers again what it had not finished (at least once); the
//! alert id with the state identifies a repeat.

mod metrics;
pub mod mqtt;
pub mod sign;
pub mod webhook;

pub use metrics::DeliveryMetrics;
use tributary_proto::v1 as pb;

/// The JSON of an alert transition, as applications receive it:
///
/// ```json
/// {"alert_id": "6e6b…", "tenant": "acme", "rule": "freezer-warm",
///  "device": "freezer-1", "metric": "temp", "state": "firing",
///  "severity": "critical", "started_at_ns": 1765…, "at_ns": 1765…,
///  "value": -12.0, "fired": false, "summary": "temp -12 above -15",
///  "by": "", "comment": ""}
/// ```
pub fn event_json(e: &pb::AlertEvent) -> serde_json::Value {
    let state = state_name(e.state());
    let severity = match e.severity() {
        pb::Severity::Info => "info",
        pb::Severity::Critical => "critical",
        pb::Severity::Warning | pb::Severity::Unspecified => "warning",
    };
    serde_json::json!({
        "alert_id": e.alert_id,
        "tenant": e.tenant,
        "rule": e.rule,
        "rule_revision": e.rule_revision,
        "device": e.device,
        "metric": e.metric,
        "state": state,
        "severity": severity,
        "started_at_ns": e.started_at_ns,
        "at_ns": e.at_ns,
        "value": e.value,
        "fired": e.fired,
        "summary": e.summary,
        "by": e.by,
        "comment": e.comment,
    })
}

/// Whether a silence covered the transition: deliveries skip it.
pub fn silenced(e: &pb::AlertEvent) -> bool {
    e.silenced_until_ns != 0
}

/// An alert state's name in JSON and headers.
pub fn state_name(s: pb::AlertState) -> &'static str {
    match s {
        pb::AlertState::Pending => "pending",
        pb::AlertState::Firing => "firing",
        pb::AlertState::Resolved => "resolved",
        pb::AlertState::Acknowledged => "acknowledged",
        pb::AlertState::Unspecified => "unspecified",
    }
}
