//! Rules, and replaying one over stored history.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tributary_proto::v1 as pb;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{Caller, Json, Path, Query};
use crate::problem::{ApiResult, Problem};
use crate::registry::TenantParam;
use crate::{Api, Errors, time};

use super::alerts::AlertEvent;
use super::{Severity, deleted};

pub(crate) fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::new()
        .routes(routes!(list_rules, create_rule))
        .routes(routes!(get_rule, delete_rule))
        .routes(routes!(test_rule))
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
