//! Rules, webhooks, silences and alerts (`RulesService`, `AlertsService`
//! and `QueryService.TestRule` over HTTP).

use std::convert::Infallible;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use futures::{Stream, StreamExt as _};
use serde::{Deserialize, Serialize};
use tributary_proto::v1 as pb;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{Caller, Json, Path, Query};
use crate::problem::{ApiResult, Problem};
use crate::registry::TenantParam;
use crate::{Api, Errors, time};

pub(crate) fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::new()
        .routes(routes!(list_rules, create_rule))
        .routes(routes!(get_rule, delete_rule))
        .routes(routes!(test_rule))
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(delete_webhook))
        .routes(routes!(list_silences, create_silence))
        .routes(routes!(delete_silence))
        .routes(routes!(list_alerts))
        .routes(routes!(ack_alert))
        .routes(routes!(tail_alerts))
        .routes(routes!(list_alert_dead_letters))
}

/// How bad an alert is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Severity {
    Info,
    #[default]
    Warning,
    Critical,
}

impl Severity {
    fn from_proto(s: i32) -> Self {
        match pb::Severity::try_from(s) {
            Ok(pb::Severity::Info) => Self::Info,
            Ok(pb::Severity::Critical) => Self::Critical,
            _ => Self::Warning,
        }
    }

    fn to_proto(self) -> i32 {
        (match self {
            Self::Info => pb::Severity::Info,
            Self::Warning => pb::Severity::Warning,
            Self::Critical => pb::Severity::Critical,
        }) as i32
    }
}

/// Which way a threshold is breached.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ThresholdOp {
    /// While the value is greater than `value`.
    Above,
    /// While the value is less than `value`.
    Below,
    /// While the value is outside [`value`, `high`].
    Outside,
}

/// Which change a rate-of-change rule watches.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Direction {
    #[default]
    Either,
    Rise,
    Fall,
}

/// What a rule watches for (docs/alerts.md).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Condition {
    /// The value compared with limits.
    Threshold {
        op: ThresholdOp,
        value: f64,
        /// The upper bound, for `outside`.
        #[serde(default)]
        high: f64,
        /// A firing alert clears only once the value is back by this much.
        #[serde(default)]
        hysteresis: f64,
    },
    /// No point of the metric within `timeout` (`10m`; 1s to 30d).
    NoData { timeout: String },
    /// The device offline for `grace` (`0s` to `30d`); the metric must be
    /// `presence.online`.
    Offline {
        #[serde(default)]
        grace: String,
    },
    /// The change over a trailing `window` beyond `bound`.
    RateOfChange {
        window: String,
        bound: f64,
        #[serde(default)]
        per_second: bool,
        #[serde(default)]
        direction: Direction,
    },
    /// More than `k` standard deviations from the EWMA mean, after `warmup`
    /// points (0 = defaults: alpha 0.05, k 4, warmup 30).
    Anomaly {
        #[serde(default)]
        alpha: f64,
        #[serde(default)]
        k: f64,
        #[serde(default)]
        warmup: u32,
    },
}

/// A rule to create (or to test).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewRule {
    #[serde(default)]
    tenant: String,
    /// 1 to 64 of a-z, 0-9, `.`, `_`, `-`.
    name: String,
    /// One device; give this or `selector`.
    #[serde(default)]
    device: Option<String>,
    /// A label selector over the tenant's devices.
    #[serde(default)]
    selector: Option<String>,
    metric: String,
    condition: Condition,
    /// How long a breach must last before the alert fires (`10m`).
    #[serde(default, rename = "for")]
    for_duration: String,
    #[serde(default)]
    severity: Severity,
    #[serde(default)]
    description: String,
}

impl NewRule {
    fn into_proto(self) -> Result<pb::Rule, Problem> {
        use pb::rule::{Kind, Target};
        let target = match (self.device, self.selector) {
            (Some(_), Some(_)) => {
                return Err(Problem::invalid(
                    "device",
                    "give `device` or `selector`, not both",
                ));
            }
            (Some(d), None) => Some(Target::Device(d)),
            (None, Some(s)) => Some(Target::Selector(s)),
            (None, None) => None,
        };
        let kind = match self.condition {
            Condition::Threshold {
                op,
                value,
                high,
                hysteresis,
            } => Kind::Threshold(pb::ThresholdRule {
                op: (match op {
                    ThresholdOp::Above => pb::threshold_rule::Op::Above,
                    ThresholdOp::Below => pb::threshold_rule::Op::Below,
                    ThresholdOp::Outside => pb::threshold_rule::Op::Outside,
                }) as i32,
                value,
                high,
                hysteresis,
            }),
            Condition::NoData { timeout } => Kind::NoData(pb::NoDataRule { timeout }),
            Condition::Offline { grace } => Kind::Offline(pb::OfflineRule { grace }),
            Condition::RateOfChange {
                window,
                bound,
                per_second,
                direction,
            } => Kind::RateOfChange(pb::RateOfChangeRule {
                window,
                bound,
                per_second,
                direction: (match direction {
                    Direction::Either => pb::rate_of_change_rule::Direction::Either,
                    Direction::Rise => pb::rate_of_change_rule::Direction::Rise,
                    Direction::Fall => pb::rate_of_change_rule::Direction::Fall,
                }) as i32,
            }),
            Condition::Anomaly { alpha, k, warmup } => {
                Kind::Anomaly(pb::AnomalyRule { alpha, k, warmup })
            }
        };
        Ok(pb::Rule {
            tenant: self.tenant,
            name: self.name,
            target,
            metric: self.metric,
            kind: Some(kind),
            for_duration: self.for_duration,
            severity: self.severity.to_proto(),
            description: self.description,
            created_at_ns: 0,
            revision: 0,
        })
    }
}

/// A rule.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Rule {
    tenant: String,
    name: String,
    device: Option<String>,
    selector: Option<String>,
    metric: String,
    condition: Option<Condition>,
    #[serde(rename = "for")]
    for_duration: String,
    severity: Severity,
    description: String,
    created_at: Option<String>,
    /// Bumped by every change.
    revision: u64,
}

impl From<pb::Rule> for Rule {
    fn from(r: pb::Rule) -> Self {
        use pb::rule::{Kind, Target};
        let (device, selector) = match r.target {
            Some(Target::Device(d)) => (Some(d), None),
            Some(Target::Selector(s)) => (None, Some(s)),
            None => (None, None),
        };
        let condition = r.kind.map(|k| match k {
            Kind::Threshold(t) => Condition::Threshold {
                op: match pb::threshold_rule::Op::try_from(t.op) {
                    Ok(pb::threshold_rule::Op::Below) => ThresholdOp::Below,
                    Ok(pb::threshold_rule::Op::Outside) => ThresholdOp::Outside,
                    _ => ThresholdOp::Above,
                },
                value: t.value,
                high: t.high,
                hysteresis: t.hysteresis,
            },
            Kind::NoData(n) => Condition::NoData { timeout: n.timeout },
            Kind::Offline(o) => Condition::Offline { grace: o.grace },
            Kind::RateOfChange(r) => Condition::RateOfChange {
                window: r.window,
                bound: r.bound,
                per_second: r.per_second,
                direction: match pb::rate_of_change_rule::Direction::try_from(r.direction) {
                    Ok(pb::rate_of_change_rule::Direction::Rise) => Direction::Rise,
                    Ok(pb::rate_of_change_rule::Direction::Fall) => Direction::Fall,
                    _ => Direction::Either,
                },
            },
            Kind::Anomaly(a) => Condition::Anomaly {
                alpha: a.alpha,
                k: a.k,
                warmup: a.warmup,
            },
        });
        Self {
            tenant: r.tenant,
            name: r.name,
            device,
            selector,
            metric: r.metric,
            condition,
            for_duration: r.for_duration,
            severity: Severity::from_proto(r.severity),
            description: r.description,
            created_at: time::optional(r.created_at_ns),
            revision: r.revision,
        }
    }
}

/// A page of the tenant's rules.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageParams {
    #[serde(default)]
    tenant: String,
    /// 1 to 1000; default 100.
    #[serde(default)]
    page_size: u32,
    #[serde(default)]
    page_token: String,
}

/// Rules.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RuleList {
    rules: Vec<Rule>,
    next_page_token: Option<String>,
}

/// Lists the tenant's rules.
#[utoipa::path(get, path = "/alerting/rules", tag = "alerting", params(PageParams),
    responses((status = 200, body = RuleList), Errors))]
async fn list_rules(
    State(api): State<Api>,
    caller: Caller,
    Query(q): Query<PageParams>,
) -> ApiResult<axum::Json<RuleList>> {
    let resp = api
        .rules
        .list_rules(caller.request(pb::ListRulesRequest {
            tenant: q.tenant,
            page_size: q.page_size,
            page_token: q.page_token,
        }))
        .await?
        .into_inner();
    Ok(axum::Json(RuleList {
        rules: resp.rules.into_iter().map(Rule::from).collect(),
        next_page_token: Some(resp.next_page_token).filter(|t| !t.is_empty()),
    }))
}

/// Creates a rule (roles operator and admin), within the `rules` quota.
#[utoipa::path(post, path = "/alerting/rules", tag = "alerting", request_body = NewRule,
    responses((status = 201, body = Rule), Errors))]
async fn create_rule(
    State(api): State<Api>,
    caller: Caller,
    Json(body): Json<NewRule>,
) -> ApiResult<(StatusCode, axum::Json<Rule>)> {
    let rule = api
        .rules
        .create_rule(caller.request(pb::CreateRuleRequest {
            rule: Some(body.into_proto()?),
        }))
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, axum::Json(rule.into())))
}

/// Reads a rule.
#[utoipa::path(get, path = "/alerting/rules/{name}", tag = "alerting",
    params(("name" = String, Path), TenantParam),
    responses((status = 200, body = Rule), Errors))]
async fn get_rule(
    State(api): State<Api>,
    caller: Caller,
    Path(name): Path<String>,
    Query(t): Query<TenantParam>,
) -> ApiResult<axum::Json<Rule>> {
    let rule = api
        .rules
        .get_rule(caller.request(pb::GetRuleRequest {
            tenant: t.tenant,
            name,
        }))
        .await?
        .into_inner();
    Ok(axum::Json(rule.into()))
}

/// Deletes a rule; its open alerts stop being evaluated.
#[utoipa::path(delete, path = "/alerting/rules/{name}", tag = "alerting",
    params(("name" = String, Path), TenantParam),
    responses((status = 204, description = "Deleted"), Errors))]
async fn delete_rule(
    State(api): State<Api>,
    caller: Caller,
    Path(name): Path<String>,
    Query(t): Query<TenantParam>,
) -> ApiResult<StatusCode> {
    let resp = api
        .rules
        .delete_rule(caller.request(pb::DeleteRuleRequest {
            tenant: t.tenant,
            name: name.clone(),
        }))
        .await?
        .into_inner();
    deleted(resp.deleted, "rule", &name)
}

fn deleted(deleted: bool, kind: &str, name: &str) -> ApiResult<StatusCode> {
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::new(
            tonic::Code::NotFound,
            format!("{kind} {name:?} not found"),
        ))
    }
}

/// A rule to replay over stored history.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleTest {
    /// The rule, as created; it need not exist.
    rule: NewRule,
    /// Start of the history judged; default `-7d`.
    #[serde(default)]
    from: Option<String>,
    /// End; default `now`.
    #[serde(default)]
    to: Option<String>,
    /// Most transitions returned; default 1000, at most 10000.
    #[serde(default)]
    max_transitions: u32,
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

/// What a rule would have done.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RuleTestResult {
    /// The transitions it would have made, by device, then time.
    transitions: Vec<AlertEvent>,
    /// Devices the rule covers.
    devices: u32,
    /// Raw points and rollup buckets read.
    samples_read: u64,
    /// Devices judged over rollup buckets (too many points in the range).
    devices_on_rollups: u32,
    /// The coarsest bucket width used (`1h`), if any.
    coarsest_resolution: Option<String>,
    /// More transitions than `max_transitions`: the rest were dropped.
    truncated: bool,
}

/// Replays a rule over stored history: when it would have fired. Nothing is
/// stored or delivered.
#[utoipa::path(post, path = "/alerting/rules/test", tag = "alerting", request_body = RuleTest,
    responses((status = 200, body = RuleTestResult), Errors))]
async fn test_rule(
    State(api): State<Api>,
    caller: Caller,
    Json(body): Json<RuleTest>,
) -> ApiResult<axum::Json<RuleTestResult>> {
    let now = time::now_ns();
    let from_ns = time::parse_time("from", body.from.as_deref().unwrap_or("-7d"), now)?;
    let to_ns = time::parse_time("to", body.to.as_deref().unwrap_or("now"), now)?;
    if from_ns >= to_ns {
        return Err(Problem::invalid("from", "must be before `to`"));
    }
    let resp = api
        .query
        .test_rule(caller.request(pb::TestRuleRequest {
            rule: Some(body.rule.into_proto()?),
            from_ns,
            to_ns,
            max_transitions: body.max_transitions,
        }))
        .await?
        .into_inner();
    Ok(axum::Json(RuleTestResult {
        transitions: resp.transitions.into_iter().map(AlertEvent::from).collect(),
        devices: resp.devices,
        samples_read: resp.samples_read,
        devices_on_rollups: resp.devices_on_rollups,
        coarsest_resolution: Some(resp.coarsest_resolution).filter(|c| !c.is_empty()),
        truncated: resp.truncated,
    }))
}

// ---------------------------------------------------------------- webhooks

/// A webhook.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Webhook {
    tenant: String,
    name: String,
    url: String,
    /// The rules whose alerts it gets; empty: every rule.
    rules: Vec<String>,
    /// Alerts below this severity are not sent.
    min_severity: Option<Severity>,
    created_at: Option<String>,
}

impl From<pb::Webhook> for Webhook {
    fn from(w: pb::Webhook) -> Self {
        Self {
            tenant: w.tenant,
            name: w.name,
            url: w.url,
            rules: w.rules,
            min_severity: (w.min_severity != pb::Severity::Unspecified as i32)
                .then(|| Severity::from_proto(w.min_severity)),
            created_at: time::optional(w.created_at_ns),
        }
    }
}

/// A webhook to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewWebhook {
    #[serde(default)]
    tenant: String,
    /// 1 to 64 of a-z, 0-9, `.`, `_`, `-`.
    name: String,
    /// `https://…` or `http://…`, at most 2048 bytes.
    url: String,
    #[serde(default)]
    rules: Vec<String>,
    #[serde(default)]
    min_severity: Option<Severity>,
}

/// A created webhook and its signing secret, shown only here.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedWebhook {
    webhook: Webhook,
    /// The HMAC-SHA256 key of the `Tributary-Signature` header.
    secret: String,
}

/// Webhooks.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WebhookList {
    webhooks: Vec<Webhook>,
}

/// Lists the tenant's webhooks (without secrets).
#[utoipa::path(get, path = "/alerting/webhooks", tag = "alerting", params(TenantParam),
    responses((status = 200, body = WebhookList), Errors))]
async fn list_webhooks(
    State(api): State<Api>,
    caller: Caller,
    Query(t): Query<TenantParam>,
) -> ApiResult<axum::Json<WebhookList>> {
    let resp = api
        .rules
        .list_webhooks(caller.request(pb::ListWebhooksRequest { tenant: t.tenant }))
        .await?
        .into_inner();
    Ok(axum::Json(WebhookList {
        webhooks: resp.webhooks.into_iter().map(Webhook::from).collect(),
    }))
}

/// Creates a webhook that alerts are POSTed to, signed.
#[utoipa::path(post, path = "/alerting/webhooks", tag = "alerting", request_body = NewWebhook,
    responses((status = 201, body = CreatedWebhook), Errors))]
async fn create_webhook(
    State(api): State<Api>,
    caller: Caller,
    Json(body): Json<NewWebhook>,
) -> ApiResult<(StatusCode, axum::Json<CreatedWebhook>)> {
    let resp = api
        .rules
        .create_webhook(caller.request(pb::CreateWebhookRequest {
            webhook: Some(pb::Webhook {
                tenant: body.tenant,
                name: body.name,
                url: body.url,
                rules: body.rules,
                min_severity: body.min_severity.map_or(0, Severity::to_proto),
                created_at_ns: 0,
            }),
        }))
        .await?
        .into_inner();
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedWebhook {
            webhook: resp.webhook.unwrap_or_default().into(),
            secret: resp.secret,
        }),
    ))
}

/// Deletes a webhook.
#[utoipa::path(delete, path = "/alerting/webhooks/{name}", tag = "alerting",
    params(("name" = String, Path), TenantParam),
    responses((status = 204, description = "Deleted"), Errors))]
async fn delete_webhook(
    State(api): State<Api>,
    caller: Caller,
    Path(name): Path<String>,
    Query(t): Query<TenantParam>,
) -> ApiResult<StatusCode> {
    let resp = api
        .rules
        .delete_webhook(caller.request(pb::DeleteWebhookRequest {
            tenant: t.tenant,
            name: name.clone(),
        }))
        .await?
        .into_inner();
    deleted(resp.deleted, "webhook", &name)
}

// ---------------------------------------------------------------- silences

/// A silence: its rule's alerts (on one device or all) are not delivered
/// until it ends.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Silence {
    tenant: String,
    rule: String,
    /// One device; absent: every device of the rule.
    device: Option<String>,
    until: Option<String>,
    comment: String,
    created_by: String,
    created_at: Option<String>,
}

impl From<pb::Silence> for Silence {
    fn from(s: pb::Silence) -> Self {
        Self {
            tenant: s.tenant,
            rule: s.rule,
            device: Some(s.device).filter(|d| !d.is_empty()),
            until: time::optional(s.until_ns),
            comment: s.comment,
            created_by: s.created_by,
            created_at: time::optional(s.created_at_ns),
        }
    }
}

/// A silence to create (or to replace, for the same rule and device).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewSilence {
    #[serde(default)]
    tenant: String,
    rule: String,
    #[serde(default)]
    device: String,
    /// Until when: a time (RFC 3339, Unix seconds). Give this or `for`.
    #[serde(default)]
    until: Option<String>,
    /// For how long from now: `2h`, `3d` (at most 90 days).
    #[serde(default, rename = "for")]
    for_duration: Option<String>,
    #[serde(default)]
    comment: String,
}

/// Silences in force.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SilenceList {
    silences: Vec<Silence>,
}

/// Lists the silences in force.
#[utoipa::path(get, path = "/alerting/silences", tag = "alerting", params(TenantParam),
    responses((status = 200, body = SilenceList), Errors))]
async fn list_silences(
    State(api): State<Api>,
    caller: Caller,
    Query(t): Query<TenantParam>,
) -> ApiResult<axum::Json<SilenceList>> {
    let resp = api
        .rules
        .list_silences(caller.request(pb::ListSilencesRequest { tenant: t.tenant }))
        .await?
        .into_inner();
    Ok(axum::Json(SilenceList {
        silences: resp.silences.into_iter().map(Silence::from).collect(),
    }))
}

/// Silences a rule's alerts, on one device or all, until a time.
#[utoipa::path(post, path = "/alerting/silences", tag = "alerting", request_body = NewSilence,
    responses((status = 201, body = Silence), Errors))]
async fn create_silence(
    State(api): State<Api>,
    caller: Caller,
    Json(body): Json<NewSilence>,
) -> ApiResult<(StatusCode, axum::Json<Silence>)> {
    let now = time::now_ns();
    let until_ns = match (body.until, body.for_duration) {
        (Some(_), Some(_)) => {
            return Err(Problem::invalid("until", "give `until` or `for`, not both"));
        }
        (Some(until), None) => time::parse_time("until", &until, now)?,
        (None, Some(d)) => {
            let d = time::parse_duration_ns(&d)
                .filter(|d| *d > 0)
                .ok_or_else(|| {
                    Problem::invalid("for", format!("{d:?} is not a duration such as `2h`"))
                })?;
            now.saturating_add(d)
        }
        (None, None) => return Err(Problem::invalid("until", "give `until` or `for`")),
    };
    let s = api
        .rules
        .create_silence(caller.request(pb::CreateSilenceRequest {
            silence: Some(pb::Silence {
                tenant: body.tenant,
                rule: body.rule,
                device: body.device,
                until_ns,
                comment: body.comment,
                created_by: String::new(),
                created_at_ns: 0,
            }),
        }))
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, axum::Json(s.into())))
}

/// Which silence to end.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SilenceRef {
    #[serde(default)]
    tenant: String,
    /// The device; absent: the rule's silence for every device.
    #[serde(default)]
    device: String,
}

/// Ends a silence.
#[utoipa::path(delete, path = "/alerting/silences/{rule}", tag = "alerting",
    params(("rule" = String, Path), SilenceRef),
    responses((status = 204, description = "Deleted"), Errors))]
async fn delete_silence(
    State(api): State<Api>,
    caller: Caller,
    Path(rule): Path<String>,
    Query(q): Query<SilenceRef>,
) -> ApiResult<StatusCode> {
    let resp = api
        .rules
        .delete_silence(caller.request(pb::DeleteSilenceRequest {
            tenant: q.tenant,
            rule: rule.clone(),
            device: q.device,
        }))
        .await?
        .into_inner();
    deleted(resp.deleted, "silence of rule", &rule)
}

// ---------------------------------------------------------------- alerts

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

/// Follows alert transitions as Server-Sent Events (`event: alert`, data:
/// an `AlertEvent`), from now on. What happened before is in
/// `GET /alerting/alerts`.
#[utoipa::path(get, path = "/alerting/alerts/stream", tag = "alerting", params(TailParams),
    responses((status = 200, description = "An event stream of `alert` events",
        content_type = "text/event-stream", body = AlertEvent), Errors))]
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
