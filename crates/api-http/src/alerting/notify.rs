//! Where alerts go: webhooks; and where they do not: silences.

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

use super::{Severity, deleted};

pub(crate) fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::new()
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(delete_webhook))
        .routes(routes!(list_silences, create_silence))
        .routes(routes!(delete_silence))
}

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
