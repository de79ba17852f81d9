//! Live points as Server-Sent Events: `GET /api/v1/stream`.
//!
//! Each event is one batch of a device's points as the processor stores
//! them (`event: points`), with an `id` that is the newest point time sent
//! so far, in ns. A client that reconnects with `Last-Event-ID` first gets
//! the stored points after that time (a range read, up to
//! `max_resume_points`; past it, `event: reset` tells it to reload with a
//! range query), then the live points, without repeats: the stream
//! subscribes before it reads, and drops live points a series already sent.
//! What resume cannot bring back: a point stored later with an older time
//! than the id (late data) is not sent again.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use futures::Stream;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use tributary_proto::v1 as pb;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{Caller, Query, last_event_id};
use crate::problem::{ApiResult, Problem};
use crate::timeseries::{SampleValue, list, target};
use crate::{Api, Errors, time};

pub(crate) fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::new().routes(routes!(stream))
}

/// What to follow.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct StreamParams {
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

/// One point of an event.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LivePoint {
    metric: String,
    /// RFC 3339.
    time: String,
    value: SampleValue,
}

/// The data of a `points` event.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PointsEvent {
    device: String,
    points: Vec<LivePoint>,
    /// Batches this stream missed because the client read too slowly
    /// (live delivery is best effort; stored data is not).
    dropped: u64,
}

/// One Server-Sent Event of `GET /stream`, by its fields (the schema of
/// each event of the `text/event-stream`).
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // The events are written by `points_event` and below.
pub(crate) struct StreamEvent {
    event: StreamEventKind,
    /// `points`: a `PointsEvent` as JSON; `reset`: why resuming was not
    /// possible, as text; `error`: a `Problem` as JSON (the stream ends).
    data: String,
    /// `points`: the newest point time sent so far, in ns since the epoch;
    /// reconnect with it as `Last-Event-ID` to resume.
    #[schema(required = false)]
    id: String,
}

/// The kind of an event of `GET /stream`.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub(crate) enum StreamEventKind {
    Points,
    Reset,
    Error,
}

/// Follows live points as Server-Sent Events (`text/event-stream`).
///
/// Events: `points` (data: a `PointsEvent`, id: the newest point time sent,
/// in ns), `reset` (resume was not possible: reload with a range query),
/// `error` (data: a problem; the stream ends). Reconnect with
/// `Last-Event-ID` to resume. Counts against the tenant's `live_streams`
/// quota while open.
#[utoipa::path(get, path = "/stream", tag = "timeseries", params(StreamParams,
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event received, to resume after it")),
    responses((status = 200, description = "An event stream of `points` events",
        content_type = "text/event-stream", body = StreamEvent), Errors))]
async fn stream(
    State(api): State<Api>,
    caller: Caller,
    headers: HeaderMap,
    Query(q): Query<StreamParams>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let target = target(&q.tenant, &q.device, &q.selector)?;
    let metrics = list(&q.metrics);
    let resume = match last_event_id(&headers) {
        None => None,
        Some(id) => Some(id.parse::<i64>().map_err(|_| {
            Problem::invalid(
                "Last-Event-ID",
                "not an id this stream sent (ns since the epoch)",
            )
        })?),
    };
    // Subscribe first: a point stored while the backfill reads is then in
    // one or the other (or both, and dropped once).
    let live = api
        .query
        .subscribe(caller.request(pb::SubscribeRequest {
            target: Some(target.clone()),
            metrics: metrics.clone(),
        }))
        .await?
        .into_inner();

    let mut first: Vec<Event> = Vec::new();
    let mut sent: HashMap<(String, String), i64> = HashMap::new();
    let mut watermark = resume.unwrap_or(0);
    if let Some(after) = resume {
        let max = api.config.max_resume_points;
        let resp = api
            .query
            .query_range(caller.request(pb::QueryRangeRequest {
                target: Some(target),
                metrics,
                from_ns: after.saturating_add(1),
                to_ns: 0,
                limit: max,
                order: pb::Order::Asc as i32,
                page_token: String::new(),
            }))
            .await?
            .into_inner();
        if !resp.next_page_token.is_empty() {
            first.push(Event::default().event("reset").data(format!(
                "more than {max} points since the last event: reload with a range query"
            )));
        } else {
            for s in resp.series {
                if s.points.is_empty() {
                    continue;
                }
                let newest = s.points.iter().map(|p| p.ts_ns).max().unwrap_or(after);
                watermark = watermark.max(newest);
                sent.insert((s.device.clone(), s.metric.clone()), newest);
                let event = PointsEvent {
                    device: s.device,
                    points: s
                        .points
                        .into_iter()
                        .map(|p| LivePoint {
                            metric: s.metric.clone(),
                            time: time::rfc3339(p.ts_ns),
                            value: p.value.into(),
                        })
                        .collect(),
                    dropped: 0,
                };
                first.push(points_event(&event, watermark));
            }
        }
    }

    let live = live
        .scan(
            (sent, watermark, false),
            |(sent, watermark, ended), item| {
                if *ended {
                    return futures::future::ready(None);
                }
                let event = match item {
                    Ok(batch) => {
                        let points: Vec<LivePoint> = batch
                            .points
                            .into_iter()
                            .filter(|p| {
                                sent.get(&(batch.device.clone(), p.metric.clone()))
                                    .is_none_or(|t| p.ts_ns > *t)
                            })
                            .map(|p| {
                                *watermark = (*watermark).max(p.ts_ns);
                                LivePoint {
                                    metric: p.metric,
                                    time: time::rfc3339(p.ts_ns),
                                    value: p.value.into(),
                                }
                            })
                            .collect();
                        if points.is_empty() && batch.dropped == 0 {
                            None
                        } else {
                            Some(points_event(
                                &PointsEvent {
                                    device: batch.device,
                                    points,
                                    dropped: batch.dropped,
                                },
                                *watermark,
                            ))
                        }
                    }
                    Err(status) => {
                        *ended = true;
                        let problem = Problem::from(status);
                        Some(
                            Event::default()
                                .event("error")
                                .data(serde_json::to_string(&*problem).unwrap_or_default()),
                        )
                    }
                };
                futures::future::ready(Some(event))
            },
        )
        .filter_map(|e| futures::future::ready(e.map(Ok)));
    let events = futures::stream::iter(first.into_iter().map(Ok)).chain(live);
    Ok(Sse::new(events.take_until(api.stopped())).keep_alive(api.keep_alive()))
}

fn points_event(event: &PointsEvent, watermark: i64) -> Event {
    let e = Event::default()
        .event("points")
        .data(serde_json::to_string(event).unwrap_or_default());
    if watermark > 0 {
        e.id(watermark.to_string())
    } else {
        e
    }
}
