//! Time series: metrics, ranges, aggregates and latest values
//! (`QueryService` over HTTP).

use axum::extract::State;
use serde::{Deserialize, Serialize};
use tributary_proto::v1 as pb;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{Caller, Query};
use crate::problem::{ApiResult, Problem};
use crate::{Api, Errors, time};

pub(crate) fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::new()
        .routes(routes!(list_metrics))
        .routes(routes!(range))
        .routes(routes!(aggregate))
        .routes(routes!(latest))
}

/// The target of a query: one device, or a label selector (or neither:
/// the service decides).
pub(crate) fn target(tenant: &str, device: &str, selector: &str) -> Result<pb::Target, Problem> {
    use pb::target::Devices;
    let devices = match (device.is_empty(), selector.is_empty()) {
        (false, false) => {
            return Err(Problem::invalid(
                "device",
                "give `device` or `selector`, not both",
            ));
        }
        (false, true) => Some(Devices::Device(device.to_owned())),
        (true, false) => Some(Devices::Selector(selector.to_owned())),
        (true, true) => None,
    };
    Ok(pb::Target {
        tenant: tenant.to_owned(),
        devices,
    })
}

/// A comma-separated list (`temp,rpm`), empty for none.
pub(crate) fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A sample value: a number, a boolean or a string, as the device sent it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub(crate) enum SampleValue {
    Double(f64),
    Int(i64),
    Bool(bool),
    Text(String),
    /// A value of a kind this API version does not know.
    Unknown(Option<()>),
}

impl From<Option<pb::Value>> for SampleValue {
    fn from(v: Option<pb::Value>) -> Self {
        use pb::value::Kind;
        match v.and_then(|v| v.kind) {
            Some(Kind::DoubleValue(d)) if d.is_finite() => Self::Double(d),
            Some(Kind::DoubleValue(d)) => Self::Text(d.to_string()),
            Some(Kind::IntValue(i)) => Self::Int(i),
            Some(Kind::BoolValue(b)) => Self::Bool(b),
            Some(Kind::StringValue(s)) => Self::Text(s),
            None => Self::Unknown(None),
        }
    }
}

impl utoipa::PartialSchema for SampleValue {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Type};
        AnyOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::Number))
            .item(ObjectBuilder::new().schema_type(Type::Boolean))
            .item(ObjectBuilder::new().schema_type(Type::String))
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .description(Some(
                "A number (integers beyond 2^53 lose precision in JavaScript), a boolean or a string",
            ))
            .into()
    }
}

impl utoipa::ToSchema for SampleValue {}

/// Whose metrics to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct MetricsParams {
    /// Another tenant than the token's (platform admins only).
    #[serde(default)]
    tenant: String,
    /// One device.
    #[serde(default)]
    device: String,
    /// A label selector over the tenant's devices: `fleet=West,model!=H-1`.
    #[serde(default)]
    selector: String,
}

/// A device's metric.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SeriesInfo {
    device: String,
    metric: String,
}

/// The series of the target.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SeriesList {
    series: Vec<SeriesInfo>,
}

/// Lists the metrics of one device, or of the devices a selector picks.
#[utoipa::path(get, path = "/timeseries/metrics", tag = "timeseries", params(MetricsParams),
    responses((status = 200, body = SeriesList), Errors))]
async fn list_metrics(
    State(api): State<Api>,
    caller: Caller,
    Query(t): Query<MetricsParams>,
) -> ApiResult<axum::Json<SeriesList>> {
    let resp = api
        .query
        .list_metrics(caller.request(pb::ListMetricsRequest {
            target: Some(target(&t.tenant, &t.device, &t.selector)?),
        }))
        .await?
        .into_inner();
    Ok(axum::Json(SeriesList {
        series: resp
            .series
            .into_iter()
            .map(|s| SeriesInfo {
                device: s.device,
                metric: s.metric,
            })
            .collect(),
    }))
}

/// A range query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RangeParams {
    /// Another tenant than the token's (platform admins only).
    #[serde(default)]
    tenant: String,
    /// One device.
    #[serde(default)]
    device: String,
    /// A label selector over the tenant's devices: `fleet=West,model!=H-1`.
    #[serde(default)]
    selector: String,
    /// Metrics, comma-separated; absent: every metric.
    #[serde(default)]
    metrics: String,
    /// Start (inclusive): RFC 3339, Unix seconds, `now`, or `-1h`; default `-1h`.
    #[serde(default)]
    from: Option<String>,
    /// End (exclusive); default `now`.
    #[serde(default)]
    to: Option<String>,
    /// Most points in the answer, across series; default 10000, at most 100000.
    #[serde(default)]
    limit: u32,
    /// `asc` (default) or `desc`.
    #[serde(default)]
    #[param(inline)]
    order: Option<Order>,
    /// From the previous page's `next_page_token`.
    #[serde(default)]
    page_token: String,
}

/// Sort order by time.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Order {
    Asc,
    Desc,
}

/// The `[from, to)` of a query, from its parameters.
pub(crate) fn span(from: Option<&str>, to: Option<&str>) -> Result<(i64, i64), Problem> {
    let now = time::now_ns();
    let from = time::parse_time("from", from.unwrap_or("-1h"), now)?;
    let to = time::parse_time("to", to.unwrap_or("now"), now)?;
    if from >= to {
        return Err(Problem::invalid("from", "must be before `to`"));
    }
    Ok((from, to))
}

/// One point.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Sample {
    /// RFC 3339.
    time: String,
    value: SampleValue,
}

impl From<pb::SamplePoint> for Sample {
    fn from(p: pb::SamplePoint) -> Self {
        Self {
            time: time::rfc3339(p.ts_ns),
            value: p.value.into(),
        }
    }
}

/// One device's metric over the range.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Series {
    device: String,
    metric: String,
    points: Vec<Sample>,
}

/// Points in the range.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RangeResult {
    series: Vec<Series>,
    /// Present when more points remain: pass it as `page_token`.
    next_page_token: Option<String>,
    /// When the range starts before the raw retention: the oldest time
    /// whose raw points are still kept.
    retained_from: Option<String>,
}

/// Reads raw points, a page at a time.
#[utoipa::path(get, path = "/timeseries/range", tag = "timeseries", params(RangeParams),
    responses((status = 200, body = RangeResult), Errors))]
async fn range(
    State(api): State<Api>,
    caller: Caller,
    Query(q): Query<RangeParams>,
) -> ApiResult<axum::Json<RangeResult>> {
    let (from_ns, to_ns) = span(q.from.as_deref(), q.to.as_deref())?;
    let order = match q.order {
        Some(Order::Desc) => pb::Order::Desc,
        _ => pb::Order::Asc,
    };
    let resp = api
        .query
        .query_range(caller.request(pb::QueryRangeRequest {
            target: Some(target(&q.tenant, &q.device, &q.selector)?),
            metrics: list(&q.metrics),
            from_ns,
            to_ns,
            limit: q.limit,
            order: order as i32,
            page_token: q.page_token,
        }))
        .await?
        .into_inner();
    Ok(axum::Json(RangeResult {
        series: resp
            .series
            .into_iter()
            .map(|s| Series {
                device: s.device,
                metric: s.metric,
                points: s.points.into_iter().map(Sample::from).collect(),
            })
            .collect(),
        next_page_token: Some(resp.next_page_token).filter(|t| !t.is_empty()),
        retained_from: time::optional(resp.retained_from_ns),
    }))
}

/// An aggregate query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AggregateParams {
    /// Another tenant than the token's (platform admins only).
    #[serde(default)]
    tenant: String,
    /// One device.
    #[serde(default)]
    device: String,
    /// A label selector over the tenant's devices: `fleet=West,model!=H-1`.
    #[serde(default)]
    selector: String,
    /// Metrics, comma-separated; absent: every metric.
    #[serde(default)]
    metrics: String,
    /// Start (inclusive); default `-1h`.
    #[serde(default)]
    from: Option<String>,
    /// End (exclusive); default `now`.
    #[serde(default)]
    to: Option<String>,
    /// Window width: `10s`, `1m`, `1h`, `1d`; absent: one window over the range.
    #[serde(default)]
    window: String,
    /// Functions, comma-separated, of `min,max,avg,sum,count,first,last,stddev`;
    /// default `avg,min,max,count`.
    #[serde(default)]
    functions: String,
    /// Group devices by this label's value instead of by device.
    #[serde(default)]
    group_by: String,
    /// `raw` to scan raw points only; absent: the planner uses rollups.
    #[serde(default)]
    tier: String,
    /// With `group_by`: reduce each device's window with the one function
    /// first, then combine the devices' values with this (`avg`, `sum`,
    /// `min`, `max`, `count`); absent: pool the devices' samples.
    #[serde(default)]
    combine: Option<Combine>,
}

/// How a group combines its devices' values.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Combine {
    Avg,
    Sum,
    Min,
    Max,
    Count,
}

fn function(name: &str) -> Result<pb::AggregateFunction, Problem> {
    use pb::AggregateFunction as F;
    Ok(match name {
        "min" => F::Min,
        "max" => F::Max,
        "avg" => F::Avg,
        "sum" => F::Sum,
        "count" => F::Count,
        "first" => F::First,
        "last" => F::Last,
        "stddev" => F::Stddev,
        other => {
            return Err(Problem::invalid(
                "functions",
                format!("{other:?}: use min, max, avg, sum, count, first, last or stddev"),
            ));
        }
    })
}

/// One window.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Bucket {
    /// The window's start, RFC 3339.
    start: String,
    /// Samples in the window.
    count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    avg: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sum: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stddev: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    first: Option<Sample>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last: Option<Sample>,
}

fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|v| v.is_finite())
}

/// One device's (or group's) metric, by window.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AggregateSeries {
    /// The device, or the label's value when grouping.
    group: String,
    metric: String,
    /// Devices that contributed.
    devices: u32,
    buckets: Vec<Bucket>,
}

/// Windows over the range.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AggregateResult {
    series: Vec<AggregateSeries>,
    /// The coarsest rollup tier that answered (`1h`), or `raw`.
    tier: String,
    /// When the range starts before every source that could answer it was
    /// kept: the oldest time any of them still holds.
    retained_from: Option<String>,
}

/// Aggregates by window (rollups where they answer exactly), by device or
/// by a label's value.
#[utoipa::path(get, path = "/timeseries/aggregate", tag = "timeseries",
    params(AggregateParams),
    responses((status = 200, body = AggregateResult), Errors))]
async fn aggregate(
    State(api): State<Api>,
    caller: Caller,
    Query(q): Query<AggregateParams>,
) -> ApiResult<axum::Json<AggregateResult>> {
    let (from_ns, to_ns) = span(q.from.as_deref(), q.to.as_deref())?;
    let names = match list(&q.functions) {
        f if f.is_empty() => vec!["avg".into(), "min".into(), "max".into(), "count".into()],
        f => f,
    };
    if names.len() > 16 {
        return Err(Problem::invalid("functions", "at most 16"));
    }
    let functions = names
        .iter()
        .map(|n| function(n).map(|f| f as i32))
        .collect::<Result<Vec<_>, _>>()?;
    let resp = api
        .query
        .aggregate(caller.request(pb::AggregateRequest {
            target: Some(target(&q.tenant, &q.device, &q.selector)?),
            metrics: list(&q.metrics),
            from_ns,
            to_ns,
            window: q.window,
            functions,
            group_by_label: q.group_by,
            tier: q.tier,
            combine_devices: match q.combine {
                None => pb::DeviceCombine::Pooled,
                Some(Combine::Avg) => pb::DeviceCombine::Avg,
                Some(Combine::Sum) => pb::DeviceCombine::Sum,
                Some(Combine::Min) => pb::DeviceCombine::Min,
                Some(Combine::Max) => pb::DeviceCombine::Max,
                Some(Combine::Count) => pb::DeviceCombine::Count,
            } as i32,
        }))
        .await?
        .into_inner();
    Ok(axum::Json(AggregateResult {
        series: resp
            .series
            .into_iter()
            .map(|s| AggregateSeries {
                group: s.group,
                metric: s.metric,
                devices: s.devices,
                buckets: s
                    .buckets
                    .into_iter()
                    .map(|b| Bucket {
                        start: time::rfc3339(b.start_ns),
                        count: b.count,
                        min: finite(b.min),
                        max: finite(b.max),
                        avg: finite(b.avg),
                        sum: finite(b.sum),
                        stddev: finite(b.stddev),
                        first: b.first.map(Sample::from),
                        last: b.last.map(Sample::from),
                    })
                    .collect(),
            })
            .collect(),
        tier: resp.tier,
        retained_from: time::optional(resp.retained_from_ns),
    }))
}

/// Which latest values to read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LatestParams {
    /// Another tenant than the token's (platform admins only).
    #[serde(default)]
    tenant: String,
    /// One device.
    #[serde(default)]
    device: String,
    /// A label selector over the tenant's devices: `fleet=West,model!=H-1`.
    #[serde(default)]
    selector: String,
    /// Metrics, comma-separated; absent: every metric.
    #[serde(default)]
    metrics: String,
}

/// A series' newest point.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LatestValue {
    device: String,
    metric: String,
    time: String,
    value: SampleValue,
}

/// Newest points.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LatestResult {
    values: Vec<LatestValue>,
}

/// The newest point of each series of the target.
#[utoipa::path(get, path = "/timeseries/latest", tag = "timeseries", params(LatestParams),
    responses((status = 200, body = LatestResult), Errors))]
async fn latest(
    State(api): State<Api>,
    caller: Caller,
    Query(q): Query<LatestParams>,
) -> ApiResult<axum::Json<LatestResult>> {
    let resp = api
        .query
        .latest(caller.request(pb::LatestRequest {
            target: Some(target(&q.tenant, &q.device, &q.selector)?),
            metrics: list(&q.metrics),
        }))
        .await?
        .into_inner();
    Ok(axum::Json(LatestResult {
        values: resp
            .values
            .into_iter()
            .map(|v| LatestValue {
                device: v.device,
                metric: v.metric,
                time: time::rfc3339(v.ts_ns),
                value: v.value.into(),
            })
            .collect(),
    }))
}
