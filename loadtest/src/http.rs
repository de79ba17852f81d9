//! HTTP senders: one per device (Tributary JSON or SenML with the device's
//! token), or one per line-protocol client (batches over its devices).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use crate::engine::{Credential, DeviceTally, SenderCtx, UnackedRanges};
use crate::error::Error;
use crate::pace::Pace;
use crate::payload::{Builder, DeviceGen, Format, escape_tag};
use crate::scenario::{HttpFormat, HttpTransport, Scenario};

/// The longest a server's Retry-After holds a sender back.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);
/// The most bytes read from a refusal's body (for the log).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// What every HTTP sender of a run shares.
#[derive(Debug)]
pub struct HttpSettings {
    clients: Vec<reqwest::Client>,
    url: String,
    format: HttpFormat,
    batch: usize,
    measurement: String,
    tags: String,
    ingest_auth: Option<String>,
}

impl HttpSettings {
    /// HTTP clients (one per source address) and the request shape.
    pub fn new(
        sc: &Scenario,
        h: &HttpTransport,
        ingest_token: Option<String>,
    ) -> Result<Self, Error> {
        let build = |source: Option<std::net::IpAddr>| {
            reqwest::Client::builder()
                .timeout(h.timeout.0)
                .tcp_nodelay(true)
                .pool_idle_timeout(Duration::from_secs(90))
                .local_address(source)
                .build()
                .map_err(|e| Error::Scenario(format!("HTTP client: {e}")))
        };
        let clients = if sc.target.source_addrs.is_empty() {
            vec![build(None)?]
        } else {
            sc.target
                .source_addrs
                .iter()
                .map(|ip| build(Some(*ip)))
                .collect::<Result<_, _>>()?
        };
        let url = match h.format {
            HttpFormat::LineProtocol => sc.target.write_url(),
            HttpFormat::Json | HttpFormat::Senml => {
                format!("{}/v1/telemetry", sc.target.http_url.trim_end_matches('/'))
            }
        };
        let tags = sc
            .devices
            .labels
            .iter()
            .map(|(k, v)| format!(",{}={}", escape_tag(k), escape_tag(v)))
            .collect();
        Ok(Self {
            clients,
            url,
            format: h.format,
            batch: h.batch,
            measurement: h.measurement.clone(),
            tags,
            ingest_auth: ingest_token
                .filter(|t| !t.is_empty())
                .map(|t| format!("Token {t}")),
        })
    }

    fn client(&self, local: usize) -> reqwest::Client {
        self.clients[local % self.clients.len()].clone()
    }
}

/// Why a request did not succeed.
struct Refusal {
    reason: String,
    retry_after: Option<Duration>,
}

/// Posts one body; `Ok` on any 2xx.
async fn post(
    client: reqwest::Client,
    url: String,
    auth: Option<String>,
    content_type: &'static str,
    body: String,
) -> Result<(), Refusal> {
    let mut rb = client
        .post(url)
        .header(CONTENT_TYPE, content_type)
        .body(body);
    if let Some(a) = auth {
        rb = rb.header(AUTHORIZATION, a);
    }
    match rb.send().await {
        Ok(r) if r.status().is_success() => {
            // Drain the (normally empty) body so the connection is reused.
            let _ = r.bytes().await;
            Ok(())
        }
        Ok(mut r) => {
            let status = r.status().as_u16();
            let retry_after = r
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
            let mut snippet = Vec::new();
            while let Ok(Some(chunk)) = r.chunk().await {
                if snippet.len() < MAX_ERROR_BODY {
                    snippet.extend_from_slice(
                        &chunk[..chunk.len().min(MAX_ERROR_BODY - snippet.len())],
                    );
                }
            }
            tracing::debug!(status, body = %String::from_utf8_lossy(&snippet), "request refused");
            Err(Refusal {
                reason: format!("HTTP {status}"),
                retry_after,
            })
        }
        Err(e) => Err(Refusal {
            reason: if e.is_timeout() {
                "HTTP timeout".into()
            } else if e.is_connect() {
                "HTTP connect failed".into()
            } else {
                "HTTP request failed".into()
            },
            retry_after: None,
        }),
    }
}

/// A request's bookkeeping while it is open.
struct Open<T> {
    origin: Instant,
    points: u64,
    /// Sender-specific: which devices' points (and timestamps) it carries.
    extra: T,
}

type Pending = FuturesUnordered<Pin<Box<dyn Future<Output = (u64, Result<(), Refusal>)> + Send>>>;

/// The request loop shared by both sender kinds: keeps up to `in_flight`
/// requests open, paced by `pace`, until the quota is used up or `stop`.
/// `next` builds the next body and returns `(body, points, extra)`;
/// `finished` is told about every request: answered with success (`true`),
/// refused, or unanswered at the end (`false`).
#[allow(clippy::too_many_arguments)]
async fn request_loop<T: Send + 'static>(
    ctx: &SenderCtx,
    s: &HttpSettings,
    client: reqwest::Client,
    auth: Option<String>,
    content_type: &'static str,
    pace: &mut Pace,
    stop: &mut watch::Receiver<bool>,
    mut next: impl FnMut() -> (String, u64, T),
    mut finished: impl FnMut(bool, u64, T),
) {
    let mut pending: Pending = FuturesUnordered::new();
    let mut open: HashMap<u64, Open<T>> = HashMap::new();
    let mut next_id = 0u64;
    let mut stopping = *stop.borrow();
    let mut drain_deadline = None;
    let far = Instant::now() + Duration::from_secs(365 * 86_400);
    loop {
        if pending.is_empty() && (stopping || pace.exhausted()) {
            break;
        }
        let send_at = if !stopping && pending.len() < ctx.in_flight as usize {
            pace.due()
        } else {
            None
        };
        tokio::select! {
            biased;
            _ = stop.changed(), if !stopping => {
                stopping = true;
                drain_deadline = Some(Instant::now() + ctx.ack_timeout);
            }
            Some((id, result)) = pending.next(), if !pending.is_empty() => {
                let Some(o) = open.remove(&id) else { continue };
                match &result {
                    Ok(()) => ctx.stats.acked(o.points, o.origin.elapsed()),
                    Err(r) => {
                        ctx.stats.failed(&r.reason);
                        if let Some(wait) = r.retry_after {
                            pace.hold_until(Instant::now() + wait);
                        }
                    }
                }
                finished(result.is_ok(), o.points, o.extra);
            }
            _ = sleep_until(send_at.unwrap_or(far)), if send_at.is_some() => {
                let origin = pace.take(Instant::now());
                let (body, points, extra) = next();
                ctx.stats.sent(points, body.len() as u64);
                let id = next_id;
                next_id += 1;
                open.insert(id, Open { origin, points, extra });
                let req = post(client.clone(), s.url.clone(), auth.clone(), content_type, body);
                pending.push(Box::pin(async move { (id, req.await) }));
            }
            _ = sleep_until(drain_deadline.unwrap_or(far)), if drain_deadline.is_some() => {
                break;
            }
        }
    }
    for (_, o) in open.drain() {
        ctx.stats.failed("no answer before the end");
        finished(false, o.points, o.extra);
    }
}

/// Waits for the ramp-up slot; false when stopped meanwhile.
async fn ramp(ctx: &SenderCtx, local: usize, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = sleep_until(ctx.connect_at(local)) => true,
        _ = stop.changed() => false,
    }
}

/// One device posting Tributary JSON or SenML with its own token.
pub async fn run_device(
    ctx: Arc<SenderCtx>,
    s: Arc<HttpSettings>,
    cred: Credential,
    index: usize,
    local: usize,
    quota: Option<u64>,
    mut stop: watch::Receiver<bool>,
) -> DeviceTally {
    let mut dev = DeviceGen::new(cred.device.clone(), index as u64 + 1);
    let mut unacked = UnackedRanges::default();
    if !ramp(&ctx, local, &mut stop).await {
        return DeviceTally::of(&dev, 0, 0, unacked);
    }
    let (format, content_type) = match s.format {
        HttpFormat::Senml => (Format::Senml, "application/senml+json"),
        _ => (Format::Json, "application/json"),
    };
    let mut builder = Builder::new(ctx.shape.clone());
    let mut pace = ctx.pace(index, quota, Instant::now());
    let (mut sent, mut acked) = (0u64, 0u64);
    let auth = (!cred.token.is_empty()).then(|| format!("Bearer {}", cred.token));
    let batch = s.batch;
    request_loop(
        &ctx,
        &s,
        s.client(local),
        auth,
        content_type,
        &mut pace,
        &mut stop,
        || {
            let mut body = String::new();
            let before = dev.max_ts();
            let points = builder.messages(format, &mut dev, batch, &mut body);
            sent += points;
            // The timestamps of this batch: after the previous batch's.
            let first = if before == i64::MIN {
                dev.min_ts
            } else {
                before.saturating_add(1)
            };
            (body, points, (first, dev.max_ts()))
        },
        |ok, points, (first, last)| {
            if ok {
                acked += points;
            } else {
                unacked.push(first, last);
            }
        },
    )
    .await;
    DeviceTally::of(&dev, sent, acked, unacked)
}

/// One line-protocol client: batches of `batch` lines that cycle over its
/// devices, with the tenant ingest token (or none, for InfluxDB peers).
pub async fn run_lp_client(
    ctx: Arc<SenderCtx>,
    s: Arc<HttpSettings>,
    devices: Vec<String>,
    index: usize,
    local: usize,
    quota: Option<u64>,
    mut stop: watch::Receiver<bool>,
) -> Vec<DeviceTally> {
    let mut gens: Vec<DeviceGen> = devices
        .into_iter()
        .enumerate()
        .map(|(i, id)| DeviceGen::new(id, ((index as u64) << 32) + i as u64 + 1))
        .collect();
    let n = gens.len();
    let mut sent = vec![0u64; n];
    let mut acked = vec![0u64; n];
    let mut unacked = vec![UnackedRanges::default(); n];
    if n > 0 && ramp(&ctx, local, &mut stop).await {
        let mut builder = Builder::new(ctx.shape.clone());
        let mut pace = ctx.pace(index, quota, Instant::now());
        let mut cursor = 0usize;
        let mut capacity = 4096;
        let batch = s.batch;
        request_loop(
            &ctx,
            &s,
            s.client(local),
            s.ingest_auth.clone(),
            "text/plain; charset=utf-8",
            &mut pace,
            &mut stop,
            || {
                let mut body = String::with_capacity(capacity);
                // Per device: points, first and last timestamp in this batch.
                let mut per_device = vec![(0u64, i64::MAX, i64::MIN); n];
                let mut points = 0;
                for _ in 0..batch {
                    let d = cursor % n;
                    cursor = cursor.wrapping_add(1);
                    let p = builder.line(&mut gens[d], &s.measurement, &s.tags, &mut body);
                    let ts = gens[d].max_ts();
                    let e = &mut per_device[d];
                    *e = (e.0 + p, e.1.min(ts), e.2.max(ts));
                    points += p;
                }
                capacity = capacity.max(body.len());
                for (total, e) in sent.iter_mut().zip(&per_device) {
                    *total += e.0;
                }
                (body, points, per_device)
            },
            |ok, _, per_device| {
                for (d, (p, first, last)) in per_device.into_iter().enumerate() {
                    if p == 0 {
                        continue;
                    }
                    if ok {
                        acked[d] += p;
                    } else {
                        unacked[d].push(first, last);
                    }
                }
            },
        )
        .await;
    }
    gens.iter()
        .zip(sent.iter().zip(&acked))
        .zip(unacked)
        .map(|((g, (s, a)), u)| DeviceTally::of(g, *s, *a, u))
        .collect()
}
