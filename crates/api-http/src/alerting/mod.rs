//! Rules, webhooks, silences and alerts (`RulesService`, `AlertsService`
//! and `QueryService.TestRule` over HTTP).

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tributary_proto::v1 as pb;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;

use crate::Api;
use crate::problem::{ApiResult, Problem};

mod alerts;
mod notify;
mod rules;

pub(crate) fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::new()
        .merge(rules::routes())
        .merge(notify::routes())
        .merge(alerts::routes())
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
    pub(crate) fn from_proto(s: i32) -> Self {
        match pb::Severity::try_from(s) {
            Ok(pb::Severity::Info) => Self::Info,
            Ok(pb::Severity::Critical) => Self::Critical,
            _ => Self::Warning,
        }
    }

    pub(crate) fn to_proto(self) -> i32 {
        (match self {
            Self::Info => pb::Severity::Info,
            Self::Warning => pb::Severity::Warning,
            Self::Critical => pb::Severity::Critical,
        }) as i32
    }
}

/// 204 when something was deleted, 404 naming it when not.
pub(crate) fn deleted(deleted: bool, kind: &str, name: &str) -> ApiResult<StatusCode> {
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::new(
            tonic::Code::NotFound,
            format!("{kind} {name:?} not found"),
        ))
    }
}
