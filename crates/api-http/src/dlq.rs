//! Dead letters: records the processor could not store
//! (`DeadLetterService` over HTTP).

use axum::extract::State;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use tributary_proto::v1 as pb;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{Caller, Json, Path, Query};
use crate::problem::ApiResult;
use crate::registry::TenantParam;
use crate::{Api, Errors, time};

pub(crate) fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::new()
        .routes(routes!(list_dead_letters))
        .routes(routes!(get_dead_letter))
        .routes(routes!(replay_dead_letters))
}

/// A dead letter.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeadLetter {
    /// Where it is in the dead-letter log.
    partition: u32,
    offset: u64,
    /// The record's tenant; empty when it could not be read.
    tenant: String,
    /// Why the processor could not store it.
    reason: String,
    /// `<topic>/<partition>/<offset>` of the original record.
    source: String,
    /// When it was first appended.
    time: Option<String>,
    /// The record's key (`<tenant>/<device>`).
    key: String,
    value_bytes: u32,
    content_type: String,
    /// The record (a TelemetryEnvelope), base64; in the single read only.
    value_base64: Option<String>,
}

impl From<pb::DeadLetter> for DeadLetter {
    fn from(d: pb::DeadLetter) -> Self {
        Self {
            partition: d.partition,
            offset: d.offset,
            tenant: d.tenant,
            reason: d.reason,
            source: d.source,
            time: time::optional(d.timestamp_ms.saturating_mul(1_000_000)),
            key: d.key,
            value_bytes: d.value_bytes,
            content_type: d.content_type,
            value_base64: (!d.value.is_empty()).then(|| STANDARD.encode(&d.value)),
        }
    }
}

/// A page of dead letters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeadLetterListParams {
    /// Another tenant (admins), or `*` for every tenant.
    #[serde(default)]
    tenant: String,
    /// 1 to 1000; default 100.
    #[serde(default)]
    page_size: u32,
    #[serde(default)]
    page_token: String,
}

/// Dead letters, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeadLetterList {
    dead_letters: Vec<DeadLetter>,
    next_page_token: Option<String>,
}

/// Lists dead letters, oldest first, a page at a time.
#[utoipa::path(get, path = "/dead-letters", tag = "dead-letters",
    params(DeadLetterListParams),
    responses((status = 200, body = DeadLetterList), Errors))]
async fn list_dead_letters(
    State(api): State<Api>,
    caller: Caller,
    Query(q): Query<DeadLetterListParams>,
) -> ApiResult<axum::Json<DeadLetterList>> {
    let resp = api
        .dead_letters
        .list_dead_letters(caller.request(pb::ListDeadLettersRequest {
            tenant: q.tenant,
            page_size: q.page_size,
            page_token: q.page_token,
        }))
        .await?
        .into_inner();
    Ok(axum::Json(DeadLetterList {
        dead_letters: resp
            .dead_letters
            .into_iter()
            .map(DeadLetter::from)
            .collect(),
        next_page_token: Some(resp.next_page_token).filter(|t| !t.is_empty()),
    }))
}

/// Reads one dead letter, with its record.
#[utoipa::path(get, path = "/dead-letters/{partition}/{offset}", tag = "dead-letters",
    params(("partition" = u32, Path), ("offset" = u64, Path), TenantParam),
    responses((status = 200, body = DeadLetter), Errors))]
async fn get_dead_letter(
    State(api): State<Api>,
    caller: Caller,
    Path((partition, offset)): Path<(u32, u64)>,
    Query(t): Query<TenantParam>,
) -> ApiResult<axum::Json<DeadLetter>> {
    let d = api
        .dead_letters
        .get_dead_letter(caller.request(pb::GetDeadLetterRequest {
            tenant: t.tenant,
            r#ref: Some(pb::DeadLetterRef { partition, offset }),
        }))
        .await?
        .into_inner();
    Ok(axum::Json(d.into()))
}

/// Where a dead letter is.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeadLetterRef {
    partition: u32,
    offset: u64,
}

/// Dead letters to replay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Replay {
    #[serde(default)]
    tenant: String,
    /// At most 1000.
    refs: Vec<DeadLetterRef>,
}

/// How many were replayed.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Replayed {
    replayed: u32,
}

/// Appends dead letters back to the telemetry log, for the processor to
/// store (or dead-letter again, with the reason of the time).
#[utoipa::path(post, path = "/dead-letters/replay", tag = "dead-letters", request_body = Replay,
    responses((status = 200, body = Replayed), Errors))]
async fn replay_dead_letters(
    State(api): State<Api>,
    caller: Caller,
    Json(body): Json<Replay>,
) -> ApiResult<axum::Json<Replayed>> {
    if body.refs.len() > 1000 {
        return Err(crate::problem::Problem::invalid("refs", "at most 1000"));
    }
    let resp = api
        .dead_letters
        .replay_dead_letters(
            caller.request(pb::ReplayDeadLettersRequest {
                tenant: body.tenant,
                refs: body
                    .refs
                    .into_iter()
                    .map(|r| pb::DeadLetterRef {
                        partition: r.partition,
                        offset: r.offset,
                    })
                    .collect(),
            }),
        )
        .await?
        .into_inner();
    Ok(axum::Json(Replayed {
        replayed: resp.replayed,
    }))
}
