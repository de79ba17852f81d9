//! Commands to devices (`CommandService` over HTTP).

use axum::extract::State;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use tributary_proto::v1 as pb;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{Caller, Json, Path, Query};
use crate::problem::{ApiResult, Problem};
use crate::registry::TenantParam;
use crate::{Api, Errors};

pub(crate) fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::new().routes(routes!(send_command))
}

/// A command to a device.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewCommand {
    /// One topic level: 1 to 64 of `A-Za-z0-9_.:-`.
    name: String,
    /// The payload as text (UTF-8). Give this or `payload_base64`.
    #[serde(default)]
    payload: Option<String>,
    /// The payload as base64, for binary payloads.
    #[serde(default)]
    payload_base64: Option<String>,
    /// The payload's content type, passed to MQTT 5 devices.
    #[serde(default)]
    content_type: String,
    /// How long to wait for the reply, in ms; default 10000.
    #[serde(default)]
    timeout_ms: u32,
    /// How long it stays queued for an offline device with a persistent
    /// session, in seconds; default 3600.
    #[serde(default)]
    ttl_seconds: u32,
}

/// What became of a command.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CommandStatus {
    /// The device replied within the timeout.
    DeliveredReplied,
    /// The device got it and did not reply in time.
    Timeout,
    /// The device is offline with no persistent session: dropped.
    Offline,
    /// Queued for an offline device's persistent session until its TTL.
    Queued,
    /// The device does not subscribe to its command topic: dropped.
    NotSubscribed,
    /// A status this API version does not know.
    Unknown,
}

/// The outcome of a command.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CommandOutcome {
    status: CommandStatus,
    /// The reply, when it is UTF-8 text.
    reply: Option<String>,
    /// The reply as base64, whatever it is.
    reply_base64: Option<String>,
    reply_content_type: Option<String>,
    /// From sending to the reply (or how long the call waited), in µs.
    latency_us: u64,
    /// For `queued`: how long it stays queued, in seconds.
    ttl_seconds: u32,
}

/// Sends a command and waits for the device's reply (or the timeout). A
/// device that is offline, not subscribed or slow is a 200 with that
/// `status`, not an error.
#[utoipa::path(post, path = "/devices/{device}/commands", tag = "commands",
    params(("device" = String, Path), TenantParam), request_body = NewCommand,
    responses((status = 200, body = CommandOutcome), Errors))]
async fn send_command(
    State(api): State<Api>,
    caller: Caller,
    Path(device): Path<String>,
    Query(t): Query<TenantParam>,
    Json(body): Json<NewCommand>,
) -> ApiResult<axum::Json<CommandOutcome>> {
    let payload = match (body.payload, body.payload_base64) {
        (Some(_), Some(_)) => {
            return Err(Problem::invalid(
                "payload",
                "give `payload` or `payload_base64`, not both",
            ));
        }
        (Some(text), None) => text.into_bytes(),
        (None, Some(b64)) => STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| Problem::invalid("payload_base64", format!("not base64: {e}")))?,
        (None, None) => Vec::new(),
    };
    let resp = api
        .commands
        .send_command(caller.request(pb::SendCommandRequest {
            tenant: t.tenant,
            device,
            name: body.name,
            payload,
            content_type: body.content_type,
            timeout_ms: body.timeout_ms,
            ttl_seconds: body.ttl_seconds,
        }))
        .await?
        .into_inner();
    let status = match pb::CommandStatus::try_from(resp.status) {
        Ok(pb::CommandStatus::DeliveredReplied) => CommandStatus::DeliveredReplied,
        Ok(pb::CommandStatus::Timeout) => CommandStatus::Timeout,
        Ok(pb::CommandStatus::Offline) => CommandStatus::Offline,
        Ok(pb::CommandStatus::Queued) => CommandStatus::Queued,
        Ok(pb::CommandStatus::NotSubscribed) => CommandStatus::NotSubscribed,
        _ => CommandStatus::Unknown,
    };
    let replied = status_replied(status);
    Ok(axum::Json(CommandOutcome {
        status,
        reply: replied
            .then(|| String::from_utf8(resp.reply_payload.clone()).ok())
            .flatten(),
        reply_base64: replied.then(|| STANDARD.encode(&resp.reply_payload)),
        reply_content_type: Some(resp.reply_content_type).filter(|c| !c.is_empty()),
        latency_us: resp.latency_us,
        ttl_seconds: resp.ttl_seconds,
    }))
}

fn status_replied(status: CommandStatus) -> bool {
    matches!(status, CommandStatus::DeliveredReplied)
}
