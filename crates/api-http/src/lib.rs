//! Tributary's HTTP/JSON API: `/api/v1/…` over the operator gRPC services.
//!
//! Every route is a translation, not a second implementation: it turns the
//! HTTP request into the gRPC request of the service that owns the
//! operation, calls that service in process (or, for the registry in
//! distributed mode, over gRPC), and turns the answer into JSON. The
//! `Authorization: Bearer <operator token>` header travels as the gRPC
//! `authorization` metadata, so authentication, roles, tenant scoping,
//! quotas and limits are the services' own, and a refusal is the service's
//! `tonic::Status` rendered as problem+json in one place
//! ([`problem::http_status`]).
//!
//! The OpenAPI 3.1 document is generated from these routes and their types
//! ([`openapi`]), served at `/api/v1/openapi.json`, and kept in
//! `docs/openapi.json` (a test fails when it is stale).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tributary_core::quota::{TenantCounter, TenantSlot};
use tributary_proto::v1 as pb;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

mod alerting;
mod commands;
mod dlq;
pub mod extract;
pub mod forward;
pub mod problem;
mod prom;
mod registry;
mod stream;
pub mod time;
mod timeseries;
mod whoami;

pub use problem::{Problem, http_status};

/// The operator services the API calls.
#[derive(Clone)]
pub struct Services {
    pub registry: Arc<dyn pb::registry_service_server::RegistryService>,
    pub rules: Arc<dyn pb::rules_service_server::RulesService>,
    pub query: Arc<
        dyn pb::query_service_server::QueryService<
                SubscribeStream = ReceiverStream<Result<pb::SubscribeResponse, Status>>,
            >,
    >,
    pub commands: Arc<dyn pb::command_service_server::CommandService>,
    pub dead_letters: Arc<dyn pb::dead_letter_service_server::DeadLetterService>,
    pub alerts: Arc<
        dyn pb::alerts_service_server::AlertsService<
                TailAlertsStream = ReceiverStream<Result<pb::AlertEvent, Status>>,
            >,
    >,
    /// The operator token keys, for the calls that read no service (a
    /// Prometheus query of numbers only still needs a valid token).
    pub keys: tributary_auth::JwtKeys,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").finish_non_exhaustive()
    }
}

/// Settings of the HTTP API (`[api]` in the config file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Origins a browser may call the API from (CORS), such as
    /// `https://console.example.com`; `*` for any. Empty: no CORS headers,
    /// so browsers allow only same-origin calls.
    pub cors_origins: Vec<String>,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Seconds between the comments an idle event stream sends, so that
    /// proxies keep it open.
    pub keep_alive_secs: u64,
    /// Most stored points an event stream sends when it resumes from a
    /// `Last-Event-ID`; past it, it says `event: reset` and goes live.
    pub max_resume_points: u32,
    /// Most series one Prometheus API call may read or list.
    pub prom_max_series: usize,
    /// Most requests of one tenant in flight on this replica (event
    /// streams aside: they have the `live_streams` quota); past it, 429.
    pub max_inflight_per_tenant: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            cors_origins: Vec::new(),
            max_body_bytes: 1024 * 1024,
            keep_alive_secs: 15,
            max_resume_points: 10_000,
            prom_max_series: 10_000,
            max_inflight_per_tenant: 64,
        }
    }
}

impl ApiConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        for origin in &self.cors_origins {
            if origin != "*" && HeaderValue::from_str(origin).is_err() {
                return Err(format!("cors_origins: {origin:?} is not a valid origin"));
            }
        }
        if self.max_body_bytes < 1024 {
            return Err("max_body_bytes: at least 1024".into());
        }
        if self.max_inflight_per_tenant == 0 {
            return Err("max_inflight_per_tenant: at least 1".into());
        }
        if self.prom_max_series == 0 {
            return Err("prom_max_series: at least 1".into());
        }
        if !(1..=3600).contains(&self.keep_alive_secs) {
            return Err("keep_alive_secs: from 1 to 3600".into());
        }
        Ok(())
    }
}

/// The state every route gets.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    services: Services,
    config: Arc<ApiConfig>,
    /// Turns true at shutdown: event streams end then, so a graceful stop
    /// does not wait for them.
    stop: tokio::sync::watch::Receiver<bool>,
    /// Each tenant's requests in flight.
    inflight: TenantCounter,
}

impl Api {
    /// Resolves at shutdown.
    /// How often an idle event stream sends a comment.
    pub(crate) fn keep_alive(&self) -> axum::response::sse::KeepAlive {
        axum::response::sse::KeepAlive::new()
            .interval(Duration::from_secs(self.config.keep_alive_secs))
    }

    /// A request slot of the caller's tenant (by its token): `Err` when the
    /// tenant holds `max_inflight_per_tenant` already. A request without a
    /// valid token takes none; the services refuse it.
    pub(crate) fn admit(
        &self,
        headers: &axum::http::HeaderMap,
    ) -> Result<Option<TenantSlot>, usize> {
        let probe = extract::Caller::from_headers(headers).request(());
        match tributary_auth::authorize(&self.keys, &probe) {
            Ok(claims) => self.admit_tenant(&claims.tenant).map(Some),
            Err(_) => Ok(None),
        }
    }

    /// A request slot of `tenant`, whose token was verified already.
    pub(crate) fn admit_tenant(&self, tenant: &str) -> Result<TenantSlot, usize> {
        let limit = self.config.max_inflight_per_tenant;
        self.inflight
            .try_acquire_within(tenant, limit as u64)
            .map(|(slot, _)| slot)
            .ok_or(limit)
    }

    pub(crate) fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static + use<> {
        let mut stop = self.stop.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    }
}

impl std::ops::Deref for Api {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.services
    }
}

/// The error statuses every route may answer, as problem+json.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(crate) enum Errors {
    /// A parameter or the body is wrong; `violations` names the fields.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(problem::ProblemDetails),
    /// No valid `Authorization: Bearer <operator token>`.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(problem::ProblemDetails),
    /// The token's role or tenant does not allow this.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(problem::ProblemDetails),
    /// What the call names does not exist (in the caller's tenant).
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(problem::ProblemDetails),
    /// It exists already, or its state does not allow the call.
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(problem::ProblemDetails),
    /// The body is larger than the API accepts.
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(problem::ProblemDetails),
    /// The body is not `application/json`.
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(problem::ProblemDetails),
    /// A quota or a limit: wait `Retry-After` seconds, or ask for less.
    #[response(status = 429, content_type = "application/problem+json")]
    TooManyRequests(problem::ProblemDetails),
    /// A backend is overloaded or down: retry after `Retry-After` seconds.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(problem::ProblemDetails),
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tributary API",
        description = "Tributary's HTTP/JSON API: tenants, devices, credentials, time series, \
live streams (Server-Sent Events), commands, rules and alerts, and dead letters. Every call \
takes `Authorization: Bearer <operator token>`; errors are RFC 9457 problem+json. The \
Prometheus-compatible query API on the same listener is described in docs/grafana.md.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    servers((url = "/api/v1")),
    // The error body every response references (`Errors`), and the data of
    // the `points` events of `GET /stream` (`StreamEvent` names it).
    components(schemas(problem::ProblemDetails, problem::Violation, stream::PointsEvent)),
    modifiers(&BearerAuth),
    tags(
        (name = "tenants", description = "Tenants, their quotas and retention (platform admins)"),
        (name = "devices", description = "Devices and their labels, metadata and presence"),
        (name = "credentials", description = "Device tokens, ingest tokens, certificates, applications"),
        (name = "timeseries", description = "Ranges, aggregates, latest values and live points"),
        (name = "commands", description = "Commands to devices"),
        (name = "alerting", description = "Rules, webhooks, silences and alerts"),
        (name = "dead-letters", description = "Records the processor could not store"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("An operator token (`tributary token create`)"))
                    .build(),
            ),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    }
}

fn api_routes() -> OpenApiRouter<Api> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(registry::routes())
        .merge(timeseries::routes())
        .merge(stream::routes())
        .merge(commands::routes())
        .merge(dlq::routes())
        .merge(alerting::routes())
        .merge(whoami::routes())
}

/// The OpenAPI 3.1 document of the API, generated from its routes.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_routes().split_for_parts().1
}

/// The OpenAPI document as served and as kept in `docs/openapi.json`.
pub fn openapi_json() -> String {
    openapi_doc_string(&openapi())
}

/// The API's routes, under `/api/v1`. Unknown paths under it answer 404
/// problem+json, and a known path with another method 405.
/// Event streams end when `stop` turns true.
pub fn router(
    services: Services,
    config: ApiConfig,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Router {
    let api = Api {
        services,
        config: Arc::new(config),
        stop,
        inflight: TenantCounter::default(),
    };
    let (routes, doc) = api_routes().split_for_parts();
    let doc = Arc::new(openapi_doc_string(&doc));
    let routes = routes
        .route_layer(axum::middleware::from_fn_with_state(
            api.clone(),
            limit_tenant,
        ))
        .route_layer(axum::middleware::from_fn(require_bearer))
        // The Prometheus API answers in its own format, errors included
        // (docs/grafana.md); it is not part of the OpenAPI document.
        .merge(prom::routes(api.clone()))
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        doc.as_str().to_owned(),
                    )
                }
            }),
        )
        .method_not_allowed_fallback(|| async {
            Problem::http(
                StatusCode::METHOD_NOT_ALLOWED,
                "this path does not take that method; see /api/v1/openapi.json",
            )
        })
        .fallback(|| async {
            Problem::http(
                StatusCode::NOT_FOUND,
                "no such API path; see /api/v1/openapi.json",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(
            api.config.max_body_bytes,
        ))
        .with_state(api.clone());
    let router = Router::new().nest("/api/v1", routes);
    match cors(&api.config) {
        Some(layer) => router.layer(layer),
        None => router,
    }
}

/// Each tenant within its requests in flight (`max_inflight_per_tenant`);
/// event streams aside.
async fn limit_tenant(
    axum::extract::State(api): axum::extract::State<Api>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    if req.uri().path().ends_with("/stream") {
        return next.run(req).await;
    }
    match api.admit(req.headers()) {
        Ok(slot) => {
            let resp = next.run(req).await;
            drop(slot);
            resp
        }
        Err(limit) => {
            let mut p = Problem::new(
                tonic::Code::ResourceExhausted,
                format!("the tenant has {limit} requests in flight on this server; retry shortly"),
            );
            p.quota.push(problem::Violation {
                field: "max_inflight_per_tenant".into(),
                description: format!("at most {limit} requests of a tenant at once"),
            });
            p.into_response()
        }
    }
}

/// Refuses a call without `Authorization: Bearer …` with 401 before its
/// parameters and body are read: the services would refuse it anyway, but
/// only once the route has parsed the request, so an anonymous caller with
/// a bad body would learn a 400 (or 413, 415) instead of being told to
/// authenticate. The token itself is checked by the services.
async fn require_bearer(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let detail = match req.headers().get(axum::http::header::AUTHORIZATION) {
        None => "missing authorization (Bearer token)",
        Some(v) => match v.to_str() {
            Err(_) => "authorization is not ASCII",
            Ok(v) if v.starts_with("Bearer ") || v.starts_with("bearer ") => {
                return next.run(req).await;
            }
            Ok(_) => "authorization must be `Bearer <token>`",
        },
    };
    Problem::new(tonic::Code::Unauthenticated, detail).into_response()
}

fn openapi_doc_string(doc: &utoipa::openapi::OpenApi) -> String {
    let mut s = doc.to_pretty_json().unwrap_or_default();
    s.push('\n');
    s
}

fn cors(config: &ApiConfig) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if config.cors_origins.is_empty() {
        return None;
    }
    let origin = if config.cors_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            config
                .cors_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(origin)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers([
                axum::http::header::AUTHORIZATION,
                axum::http::header::CONTENT_TYPE,
                HeaderName::from_static("last-event-id"),
                HeaderName::from_static("traceparent"),
            ])
            .expose_headers([axum::http::header::RETRY_AFTER])
            .max_age(Duration::from_secs(600)),
    )
}
