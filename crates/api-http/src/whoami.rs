//! `GET /whoami`: the caller's token, checked and described (its tenant,
//! role and expiry), so that a client (the console's sign-in, a script)
//! can tell a good token from a bad one and what it may do, without trying
//! a call of each kind.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::extract::Caller;
use crate::problem::{ApiResult, Problem};
use crate::{Api, Errors, time};

pub(crate) fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::new().routes(routes!(whoami))
}

/// What an operator token says, once verified.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Identity {
    /// Who the token was issued to.
    subject: String,
    /// The token's own tenant (admins may act in others).
    tenant: String,
    /// `viewer`, `operator` or `admin`.
    role: String,
    issued_at: Option<String>,
    expires_at: Option<String>,
}

/// Checks the caller's token and says who it is for.
#[utoipa::path(get, path = "/whoami", tag = "credentials",
    responses((status = 200, body = Identity), Errors))]
async fn whoami(State(api): State<Api>, caller: Caller) -> ApiResult<axum::Json<Identity>> {
    let claims =
        tributary_auth::authorize(&api.keys, &caller.request(())).map_err(Problem::from)?;
    let secs = |s: u64| {
        time::optional(
            i64::try_from(s)
                .unwrap_or(i64::MAX / 1_000_000_000)
                .saturating_mul(1_000_000_000),
        )
    };
    Ok(axum::Json(Identity {
        subject: claims.sub,
        tenant: claims.tenant,
        role: match claims.role {
            tributary_auth::Role::Viewer => "viewer",
            tributary_auth::Role::Operator => "operator",
            tributary_auth::Role::Admin => "admin",
        }
        .to_owned(),
        issued_at: secs(claims.iat),
        expires_at: secs(claims.exp),
    }))
}
