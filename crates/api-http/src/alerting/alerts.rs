//! Alerts: listed from the history, acknowledged, followed as events; and
//! the webhook deliveries given up on.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, Sse};
use futures::{Stream, StreamExt as _};
use serde::{Deserialize, Serialize};
use tributary_proto::v1 as pb;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{Caller, Json, Path, Query};
use crate::problem::{ApiResult, Problem};
use crate::{Api, Errors, time};

use super::Severity;

pub(crate) fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::new()
        .routes(routes!(list_alerts))
        .routes(routes!(ack_alert))
        .routes(routes!(tail_alerts))
        .routes(routes!(list_alert_dead_letters))
}

/// One alert transition.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AlertEvent {
    alert_id: String,
    tenant: String,
    rule: String,
    rule_revision: u64,
    device: String,
    metric: String,
    state: AlertState,
    severity: Severity,
    started_at: Option<String>,
    /// When this transition happened.
    at: Option<String>,
    value: Option<f64>,
    /// For `resolved`: whether the alert had fired.
    fired: bool,
    summary: String,
    /// Until when a silence covered it.
    silenced_until: Option<String>,
    /// For `acknowledged`: who, and their note.
    by: Option<String>,
    comment: Option<String>,
}

impl From<pb::AlertEvent> for AlertEvent {
    fn from(e: pb::AlertEvent) -> Self {
        Self {
            alert_id: e.alert_id,
            tenant: e.tenant,
            rule: e.rule,
            rule_revision: e.rule_revision,
            device: e.device,
            metric: e.metric,
            state: AlertState::from_proto(e.state),
            severity: Severity::from_proto(e.severity),
            started_at: time::optional(e.started_at_ns),
            at: time::optional(e.at_ns),
            value: e.value.filter(|v| v.is_finite()),
            fired: e.fired,
            summary: e.summary,
            silenced_until: time::optional(e.silenced_until_ns),
            by: Some(e.by).filter(|b| !b.is_empty()),
            comment: Some(e.comment).filter(|c| !c.is_empty()),
        }
    }
}

/// An alert's state.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AlertState {
    Pending,
    Firing,
    Resolved,
    /// As an event: an operator acknowledged it. As a filter: acknowledged
    /// and not resolved.
    Acknowledged,
    Unknown,
}

impl AlertState {
    fn from_proto(s: i32) -> Self {
        match pb::AlertState::try_from(s) {
            Ok(pb::AlertState::Pending) => Self::Pending,
            Ok(pb::AlertState::Firing) => Self::Firing,
            Ok(pb::AlertState::Resolved) => Self::Resolved,
            Ok(pb::AlertState::Acknowledged) => Self::Acknowledged,
            _ => Self::Unknown,
        }
    }

    fn to_proto(self) -> i32 {
        (match self {
            Self::Pending => pb::AlertState::Pending,
            Self::Firing => pb::AlertState::Firing,
            Self::Resolved => pb::AlertState::Resolved,
            Self::Acknowledged => pb::AlertState::Acknowledged,
            Self::Unknown => pb::AlertState::Unspecified,
        }) as i32
    }
}

/// An alert: its newest state and when it went through each.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Alert {
    alert_id: String,
    tenant: String,
    rule: String,
    device: String,
    metric: String,
    state: AlertState,
    severity: Severity,
    started_at: Option<String>,
    fired_at: Option<String>,
    resolved_at: Option<String>,
    value: Option<f64>,
    summary: String,
    acknowledged_at: Option<String>,
    acknowledged_by: Option<String>,
    silenced_until: Option<String>,
}

impl From<pb::Alert> for Alert {
    fn from(a: pb::Alert) -> Self {
        Self {
            alert_id: a.alert_id,
            tenant: a.tenant,
            rule: a.rule,
            device: a.device,
            metric: a.metric,
            state: AlertState::from_proto(a.state),
            severity: Severity::from_proto(a.severity),
            started_at: time::optional(a.started_at_ns),
            fired_at: time::optional(a.fired_at_ns),
            resolved_at: time::optional(a.resolved_at_ns),
            value: a.value.filter(|v| v.is_finite()),
            summary: a.summary,
            acknowledged_at: time::optional(a.acknowledged_at_ns),
            acknowledged_by: Some(a.acknowledged_by).filter(|b| !b.is_empty()),
            silenced_until: time::optional(a.silenced_until_ns),
        }
    }
}

/// Which alerts to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AlertListParams {
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    rule: String,
    #[serde(default)]
    device: String,
    #[serde(default)]
    state: Option<AlertState>,
    /// Alerts that started at or after this time.
    #[serde(default)]
    from: Option<String>,
    /// Alerts that started before this time.
    #[serde(default)]
    to: Option<String>,
    /// 1 to 10000; default 100.
    #[serde(default)]
    limit: u32,
    /// One alert.
    #[serde(default)]
    alert_id: String,
}

/// Alerts, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AlertList {
    alerts: Vec<Alert>,
    /// More alerts were in the range than one call reads.
    truncated: bool,
}

/// Lists alerts, newest first, from the alert history (30 days).
#[utoipa::path(get, path = "/alerting/alerts", tag = "alerting", params(AlertListParams),
    responses((status = 200, body = AlertList), Errors))]
async fn list_alerts(
    State(api): State<Api>,
    caller: Caller,
    Query(q): Query<AlertListParams>,
) -> ApiResult<axum::Json<AlertList>> {
    let now = time::now_ns();
    let from_ns = match q.from.as_deref() {
        Some(f) => time::parse_time("from", f, now)?,
        None => 0,
    };
    let to_ns = match q.to.as_deref() {
        Some(t) => time::parse_time("to", t, now)?,
        None => 0,
    };
    let resp = api
        .alerts
        .list_alerts(caller.request(pb::ListAlertsRequest {
            tenant: q.tenant,
            rule: q.rule,
            device: q.device,
            state: q.state.map_or(0, AlertState::to_proto),
            from_ns,
            to_ns,
            limit: q.limit,
            alert_id: q.alert_id,
        }))
        .await?
        .into_inner();
    Ok(axum::Json(AlertList {
        alerts: resp.alerts.into_iter().map(Alert::from).collect(),
        truncated: resp.truncated,
    }))
}

/// An acknowledgement.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Ack {
    tenant: String,
    /// At most 1024 bytes.
    comment: String,
}

/// Acknowledges a pending or firing alert; a resolved one is 409.
#[utoipa::path(post, path = "/alerting/alerts/{alert_id}/ack", tag = "alerting",
    params(("alert_id" = String, Path)), request_body = Ack,
    responses((status = 200, body = Alert), Errors))]
async fn ack_alert(
    State(api): State<Api>,
    caller: Caller,
    Path(alert_id): Path<String>,
    Json(body): Json<Ack>,
) -> ApiResult<axum::Json<Alert>> {
    let a = api
        .alerts
        .ack_alert(caller.request(pb::AckAlertRequest {
            tenant: body.tenant,
            alert_id,
            comment: body.comment,
        }))
        .await?
        .into_inner();
    Ok(axum::Json(a.into()))
}

/// Which transitions to follow.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct TailParams {
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    rule: String,
    #[serde(default)]
    device: String,
}

/// One Server-Sent Event of `GET /alerting/alerts/stream`, by its fields
/// (the schema of each event of the `text/event-stream`).
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // The events are written by `tail_alerts`.
pub(crate) struct AlertStreamEvent {
    event: AlertStreamEventKind,
    /// `alert`: an `AlertEvent` as JSON; `error`: a `Problem` as JSON (the
    /// stream ends).
    data: String,
    /// `alert`: `<alert_id>:<ns since the epoch of the transition>`.
    #[schema(required = false)]
    id: String,
}

/// The kind of an event of `GET /alerting/alerts/stream`.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub(crate) enum AlertStreamEventKind {
    Alert,
    Error,
}

/// Follows alert transitions as Server-Sent Events (`event: alert`, data:
/// an `AlertEvent`), from now on. What happened before is in
/// `GET /alerting/alerts`.
#[utoipa::path(get, path = "/alerting/alerts/stream", tag = "alerting", params(TailParams),
    responses((status = 200, description = "An event stream of `alert` events",
        content_type = "text/event-stream", body = AlertStreamEvent), Errors))]
async fn tail_alerts(
    State(api): State<Api>,
    caller: Caller,
    Query(q): Query<TailParams>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let events = api
        .alerts
        .tail_alerts(caller.request(pb::TailAlertsRequest {
            tenant: q.tenant,
            rule: q.rule,
            device: q.device,
        }))
        .await?
        .into_inner();
    let events = events.scan(false, |ended, item| {
        if *ended {
            return futures::future::ready(None);
        }
        let event = match item {
            Ok(e) => Event::default()
                .event("alert")
                .id(format!("{}:{}", e.alert_id, e.at_ns))
                .data(serde_json::to_string(&AlertEvent::from(e)).unwrap_or_default()),
            Err(status) => {
                *ended = true;
                Event::default()
                    .event("error")
                    .data(serde_json::to_string(&*Problem::from(status)).unwrap_or_default())
            }
        };
        futures::future::ready(Some(Ok(event)))
    });
    Ok(Sse::new(events.take_until(api.stopped())).keep_alive(api.keep_alive()))
}

/// Which webhook dead letters to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AlertDeadLetterParams {
    #[serde(default)]
    tenant: String,
    /// 1 to 1000; default 100.
    #[serde(default)]
    limit: u32,
}

/// A webhook delivery given up on.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AlertDeadLetter {
    webhook: String,
    /// `http 404`, `timeout`, `queue_full`, ...
    reason: String,
    attempts: u32,
    at: Option<String>,
    /// The body the webhook was sent.
    body: String,
}

/// Webhook dead letters, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AlertDeadLetterList {
    dead_letters: Vec<AlertDeadLetter>,
    truncated: bool,
}

/// Lists webhook deliveries given up on, newest first.
#[utoipa::path(get, path = "/alerting/dead-letters", tag = "alerting",
    params(AlertDeadLetterParams),
    responses((status = 200, body = AlertDeadLetterList), Errors))]
async fn list_alert_dead_letters(
    State(api): State<Api>,
    caller: Caller,
    Query(q): Query<AlertDeadLetterParams>,
) -> ApiResult<axum::Json<AlertDeadLetterList>> {
    let resp = api
        .alerts
        .list_alert_dead_letters(caller.request(pb::ListAlertDeadLettersRequest {
            tenant: q.tenant,
            limit: q.limit,
        }))
        .await?
        .into_inner();
    Ok(axum::Json(AlertDeadLetterList {
        dead_letters: resp
            .dead_letters
            .into_iter()
            .map(|d| AlertDeadLetter {
                webhook: d.webhook,
                reason: d.reason,
                attempts: d.attempts,
                at: time::optional(d.at_ns),
                body: d.body,
            })
            .collect(),
        truncated: resp.truncated,
    }))
}
