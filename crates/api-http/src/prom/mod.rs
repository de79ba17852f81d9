//! The Prometheus-compatible query API, at the paths Grafana's built-in
//! Prometheus data source calls (docs/grafana.md): `/api/v1/query`,
//! `/query_range`, `/labels`, `/label/<name>/values`, `/series`,
//! `/metadata` and `/status/buildinfo`, each with GET and POST
//! (form-encoded).
//!
//! The tenant is the Bearer token's (Grafana sends it as a custom
//! `Authorization` header); every read goes through the operator services,
//! with the token, so the same scoping, quotas and limits apply. Answers and
//! errors use Prometheus' JSON envelope (`{"status": "success", "data": …}`,
//! `{"status": "error", "errorType": …, "error": …}`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as AxPath, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde_json::{Value, json};
use tributary_promql::{Expr, Selector, format_value, parse, parse_duration_param, parse_time};

use crate::Api;
use crate::extract::Caller;

mod eval;
mod series;

use eval::{Budget, Ctx, Val};

/// Aggregate calls in flight per query.
pub(crate) const CONCURRENCY: usize = 16;
/// The longest a query may run (`timeout` is capped at it).
const MAX_TIMEOUT: Duration = Duration::from_secs(300);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Most `match[]` selectors per call.
const MAX_MATCHERS: usize = 32;
/// The Prometheus API version Tributary answers like, for Grafana's
/// feature detection.
const PROMETHEUS_VERSION: &str = "2.40.0";

pub(crate) fn routes(api: Api) -> Router<Api> {
    Router::new()
        .route("/query", get(query).post(query))
        .route("/query_range", get(query_range).post(query_range))
        .route("/labels", get(labels).post(labels))
        .route("/label/{name}/values", get(label_values))
        .route("/series", get(series_list).post(series_list))
        .route("/metadata", get(metadata))
        .route_layer(axum::middleware::from_fn_with_state(api, authenticate))
        .route("/status/buildinfo", get(buildinfo))
}

/// Every call but buildinfo needs a valid operator token, even one that
/// reads no data (`1+1`): the same check the services make. Each tenant
/// stays within its requests in flight.
async fn authenticate(
    State(api): State<Api>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let probe = Caller::from_headers(req.headers()).request(());
    let claims = match tributary_auth::authorize(&api.keys, &probe) {
        Ok(claims) => claims,
        Err(status) => return PromError::from(status).into_response(),
    };
    match api.admit_tenant(&claims.tenant) {
        Ok(slot) => {
            let resp = next.run(req).await;
            drop(slot);
            resp
        }
        Err(limit) => PromError {
            status: StatusCode::TOO_MANY_REQUESTS,
            kind: "unavailable",
            message: format!(
                "the tenant has {limit} requests in flight on this server; retry shortly"
            ),
            retry_after: Some(1),
        }
        .into_response(),
    }
}

/// A refusal, as Prometheus words it.
#[derive(Debug)]
pub(crate) struct PromError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl PromError {
    pub(crate) fn bad_data(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "bad_data",
            message: message.into(),
            retry_after: None,
        }
    }

    /// A query that is valid but cannot be answered as asked.
    pub(crate) fn execution(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            kind: "execution",
            message: message.into(),
            retry_after: None,
        }
    }

    pub(crate) fn too_many(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            kind: "execution",
            message: message.into(),
            retry_after: None,
        }
    }
}

impl From<tributary_promql::Error> for PromError {
    fn from(e: tributary_promql::Error) -> Self {
        Self::bad_data(e.to_string())
    }
}

impl From<tonic::Status> for PromError {
    fn from(status: tonic::Status) -> Self {
        use tonic::Code;
        let problem = crate::Problem::from(status.clone());
        let (http, kind) = match status.code() {
            Code::InvalidArgument | Code::OutOfRange => (StatusCode::BAD_REQUEST, "bad_data"),
            Code::ResourceExhausted => (StatusCode::UNPROCESSABLE_ENTITY, "execution"),
            Code::DeadlineExceeded => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Code::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Code::PermissionDenied => (StatusCode::FORBIDDEN, "forbidden"),
            _ => (crate::http_status(status.code()), "internal"),
        };
        Self {
            status: http,
            kind,
            message: problem.detail.clone(),
            retry_after: problem.retry_after_seconds,
        }
    }
}

impl IntoResponse for PromError {
    fn into_response(self) -> Response {
        let body = json!({"status": "error", "errorType": self.kind, "error": self.message});
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tributary\""),
            );
        }
        resp
    }
}

fn success(data: impl Serialize) -> Response {
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

/// The parameters of a call: the query string's, then a form body's.
struct Params(Vec<(String, String)>);

impl Params {
    fn new(query: Option<String>, body: &Bytes) -> Self {
        let mut out: Vec<(String, String)> =
            form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        out.extend(form_urlencoded::parse(body).into_owned());
        Self(out)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn required(&self, name: &str) -> Result<&str, PromError> {
        self.get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| PromError::bad_data(format!("invalid parameter \"{name}\": missing")))
    }

    fn time(&self, name: &str) -> Result<Option<i64>, PromError> {
        self.get(name)
            .filter(|v| !v.is_empty())
            .map(|v| parse_time(name, v))
            .transpose()
            .map_err(PromError::from)
    }

    /// `match[]` selectors.
    fn matchers(&self) -> Result<Vec<Selector>, PromError> {
        let raw: Vec<&str> = self
            .0
            .iter()
            .filter(|(k, _)| k == "match[]")
            .map(|(_, v)| v.as_str())
            .collect();
        if raw.len() > MAX_MATCHERS {
            return Err(PromError::bad_data(format!(
                "at most {MAX_MATCHERS} match[] selectors"
            )));
        }
        raw.into_iter()
            .map(|m| match parse(m)? {
                Expr::Selector(s) => Ok(s),
                _ => Err(PromError::bad_data(format!(
                    "match[] {m:?}: expected a series selector such as metric{{label=\"v\"}}"
                ))),
            })
            .collect()
    }

    fn timeout(&self) -> Result<Duration, PromError> {
        Ok(match self.get("timeout").filter(|v| !v.is_empty()) {
            Some(t) => parse_duration_param("timeout", t)?.min(MAX_TIMEOUT),
            None => DEFAULT_TIMEOUT,
        })
    }
}

fn now_ns() -> i64 {
    crate::time::now_ns()
}

fn secs(ns: i64) -> f64 {
    // Milliseconds, as Prometheus answers.
    (ns / 1_000_000) as f64 / 1000.0
}

/// Plans `expr` over `(start, end, step)` and evaluates it within the
/// call's `timeout`; returns the times it was evaluated at and its value.
async fn evaluate(
    api: &Api,
    caller: &Caller,
    params: &Params,
    expr: &Expr,
    span: (i64, i64, i64),
) -> Result<(eval::Grid, Val), PromError> {
    let budget = Budget {
        max_series: api.config.prom_max_series,
    };
    let ctx = Ctx::plan(api, caller, expr, span, budget)?;
    let val = tokio::time::timeout(params.timeout()?, ctx.eval(expr))
        .await
        .map_err(|_| timeout())??;
    Ok((ctx.grid, val))
}

/// `GET|POST /api/v1/query`: an instant query.
async fn query(
    State(api): State<Api>,
    caller: Caller,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, PromError> {
    let params = Params::new(q, &body);
    let expr = parse(params.required("query")?)?;
    let t = params.time("time")?.unwrap_or_else(now_ns);
    let (_, val) = evaluate(&api, &caller, &params, &expr, (t, t, 0)).await?;
    let ts = secs(t);
    Ok(match val {
        Val::Scalar(v) => {
            success(json!({"resultType": "scalar", "result": [ts, format_value(v[0])]}))
        }
        Val::Vector(series) => {
            let mut result: Vec<Value> = series
                .into_iter()
                .filter_map(|s| {
                    s.values[0].map(|v| json!({"metric": s.labels, "value": [ts, format_value(v)]}))
                })
                .collect();
            result.sort_by(|a, b| a["metric"].to_string().cmp(&b["metric"].to_string()));
            success(json!({"resultType": "vector", "result": result}))
        }
    })
}

fn timeout() -> PromError {
    PromError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        kind: "timeout",
        message: "query timed out in expression evaluation".into(),
        retry_after: None,
    }
}

/// `GET|POST /api/v1/query_range`.
async fn query_range(
    State(api): State<Api>,
    caller: Caller,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, PromError> {
    let params = Params::new(q, &body);
    let expr = parse(params.required("query")?)?;
    let start = parse_time("start", params.required("start")?)?;
    let end = parse_time("end", params.required("end")?)?;
    if end < start {
        return Err(PromError::bad_data(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    let step = parse_duration_param("step", params.required("step")?)?;
    let step = i64::try_from(step.as_nanos()).unwrap_or(i64::MAX);
    let (grid, val) = evaluate(&api, &caller, &params, &expr, (start, end, step)).await?;
    let points = |values: &[Option<f64>]| -> Vec<Value> {
        values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| json!([secs(grid.at(i)), format_value(v)])))
            .collect()
    };
    let mut result: Vec<Value> = match val {
        Val::Scalar(v) => {
            let values: Vec<Option<f64>> = v.into_iter().map(Some).collect();
            vec![json!({"metric": {}, "values": points(&values)})]
        }
        Val::Vector(series) => series
            .into_iter()
            .map(|s| json!({"metric": s.labels, "values": points(&s.values)}))
            .collect(),
    };
    result.sort_by(|a, b| a["metric"].to_string().cmp(&b["metric"].to_string()));
    Ok(success(json!({"resultType": "matrix", "result": result})))
}

/// The `start`/`end` of a metadata call, when either is given.
fn span(params: &Params) -> Result<Option<(i64, i64)>, PromError> {
    let (start, end) = (params.time("start")?, params.time("end")?);
    Ok(match (start, end) {
        (None, None) => None,
        (s, e) => Some((
            s.unwrap_or(i64::MIN / 2),
            e.unwrap_or_else(now_ns).saturating_add(1),
        )),
    })
}

/// The series of `match[]` (every series of the tenant when there is none).
async fn matched(
    api: &Api,
    caller: &Caller,
    params: &Params,
    required: bool,
) -> Result<Vec<series::SeriesRef>, PromError> {
    let mut selectors = params.matchers()?;
    if selectors.is_empty() {
        if required {
            return Err(PromError::bad_data("no match[] parameter provided"));
        }
        // Every series: `{__name__=~".+"}`.
        selectors.push(Selector {
            name: None,
            matchers: vec![tributary_promql::Matcher::new(
                series::NAME,
                tributary_promql::MatchOp::RegexMatch,
                ".+",
            )?],
        });
    }
    series::select_all(
        api,
        caller,
        &selectors,
        span(params)?,
        api.config.prom_max_series,
    )
    .await
}

/// `GET|POST /api/v1/labels`: label names.
async fn labels(
    State(api): State<Api>,
    caller: Caller,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, PromError> {
    let params = Params::new(q, &body);
    let names: BTreeSet<String> = matched(&api, &caller, &params, false)
        .await?
        .into_iter()
        .flat_map(|s| s.labels.into_keys())
        .collect();
    Ok(success(names))
}

/// `GET /api/v1/label/<name>/values`.
async fn label_values(
    State(api): State<Api>,
    caller: Caller,
    AxPath(name): AxPath<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, PromError> {
    let params = Params::new(q, &Bytes::new());
    let values: BTreeSet<String> = matched(&api, &caller, &params, false)
        .await?
        .into_iter()
        .filter_map(|mut s| s.labels.remove(&name))
        .collect();
    Ok(success(values))
}

/// `GET|POST /api/v1/series`: the label sets of the series `match[]`
/// selects.
async fn series_list(
    State(api): State<Api>,
    caller: Caller,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, PromError> {
    let params = Params::new(q, &body);
    let series: Vec<BTreeMap<String, String>> = matched(&api, &caller, &params, true)
        .await?
        .into_iter()
        .map(|s| s.labels)
        .collect();
    Ok(success(series))
}

/// `GET /api/v1/metadata`: every metric, typed `unknown` (Tributary does not
/// know a counter from a gauge).
async fn metadata(
    State(api): State<Api>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Response, PromError> {
    let params = Params::new(q, &Bytes::new());
    let limit: Option<usize> = params
        .get("limit")
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.parse::<i64>()
                .map_err(|_| PromError::bad_data("invalid parameter \"limit\""))
        })
        .transpose()?
        .and_then(|l| usize::try_from(l).ok().filter(|l| *l > 0));
    let wanted = params.get("metric").filter(|m| !m.is_empty());
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in matched(&api, &caller, &params, false).await? {
        let name = s.labels.get(series::NAME).cloned().unwrap_or_default();
        if wanted.is_none_or(|w| w == name) {
            out.entry(name).or_default().insert(s.metric);
        }
    }
    let data: BTreeMap<String, Value> = out
        .into_iter()
        .take(limit.unwrap_or(usize::MAX))
        .map(|(name, originals)| {
            let help = format!(
                "Tributary metric {}",
                originals.into_iter().collect::<Vec<_>>().join(", ")
            );
            (name, json!([{"type": "unknown", "help": help, "unit": ""}]))
        })
        .collect();
    Ok(success(data))
}

/// `GET /api/v1/status/buildinfo`.
async fn buildinfo() -> Response {
    success(json!({
        "version": PROMETHEUS_VERSION,
        "revision": "",
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
        "application": format!("tributary {}", env!("CARGO_PKG_VERSION")),
    }))
}
