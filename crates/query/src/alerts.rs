//! [`AlertsGrpc`]: `tributary.v1.AlertsService`.
//!
//! `ListAlerts` reads the tenant's alert history (each alert's newest
//! state, kept by [`crate::keep_history`]), newest first, filtering by
//! rule, device and state as it goes; it reads at most [`MAX_SCANNED`]
//! stored alerts of the tenant and says when it stopped short. `TailAlerts`
//! follows the alerts log from now on. `AckAlert` appends an
//! acknowledgement to the log and to the history. All see only the
//! caller's tenant (an admin may name another); viewers may list and tail.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tributary_auth::{JwtKeys, Role, authorize};
use tributary_log::{ConsumerOptions, Log, StartFrom};
use tributary_proto::v1 as pb;
use tributary_proto::v1::alerts_service_server::{AlertsService, AlertsServiceServer};
use tributary_store::AlertStore;

use crate::QueryError;
use crate::alert_history::{decoded, fold, stored};

/// Most stored alerts of its tenant one `ListAlerts` reads.
pub(crate) const MAX_SCANNED: usize = 100_000;
/// Most alerts one `ListAlerts` returns.
pub(crate) const MAX_LIST: u32 = 10_000;
/// Most `TailAlerts` streams open at once, per tenant and in all.
pub(crate) const MAX_TAILS_PER_TENANT: usize = 16;
pub(crate) const MAX_TAILS: usize = 256;
/// Records taken per poll.
const POLL: usize = 1024;
/// Most dead letters one call returns, and reads.
pub(crate) const MAX_DEAD_LETTERS: u32 = 1000;
const MAX_SCANNED_DEAD_LETTERS: usize = 1_000_000;
/// Stored alerts read per page of a `ListAlerts` from the history.
const HISTORY_PAGE: usize = 1000;
/// Longest acknowledgement comment, in bytes.
pub(crate) const MAX_COMMENT: usize = 1024;

/// The alerts service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AlertsGrpc {
    log: Arc<dyn Log>,
    /// Webhook deliveries given up on (`tributary.alerts.dlq.v1`).
    dead_letters: Arc<dyn Log>,
    /// The alert history, kept by [`crate::keep_history`].
    history: Arc<dyn AlertStore>,
    keys: JwtKeys,
    tails: Arc<Mutex<HashMap<String, usize>>>,
}

impl AlertsGrpc {
    /// Serves the alerts in `log` (`tributary.alerts.v1`).
    pub fn new(
        (log, dead_letters): (Arc<dyn Log>, Arc<dyn Log>),
        history: Arc<dyn AlertStore>,
        keys: JwtKeys,
    ) -> Self {
        Self {
            log,
            dead_letters,
            history,
            keys,
            tails: Arc::default(),
        }
    }

    /// Alerts of the history `wanted` picks that started in `range`, newest
    /// first, at most `limit`; whether it stopped at [`MAX_SCANNED`]
    /// stored alerts read.
    async fn list_history(
        &self,
        wanted: &Wanted<'_>,
        (range, state, limit): ((i64, i64), i32, usize),
    ) -> Result<(Vec<pb::Alert>, bool), Status> {
        if !wanted.alert_id.is_empty() {
            let found = self
                .history
                .get_alert(wanted.tenant, wanted.alert_id)
                .await
                .map_err(internal)?;
            let alert = found.map(|s| decoded(&s)).transpose().map_err(internal)?;
            return Ok((alert.into_iter().collect(), false));
        }
        let mut out = Vec::new();
        let (mut before, mut scanned) = (None, 0usize);
        loop {
            let page = self
                .history
                .list_alerts(wanted.tenant, range, before.clone(), HISTORY_PAGE)
                .await
                .map_err(internal)?;
            let done = page.len() < HISTORY_PAGE;
            scanned += page.len();
            before = page.last().map(|s| (s.started_at_ns, s.alert_id.clone()));
            for s in &page {
                let a = decoded(s).map_err(internal)?;
                if (wanted.rule.is_empty() || a.rule == wanted.rule)
                    && (wanted.device.is_empty() || a.device == wanted.device)
                    && in_state(&a, state)
                {
                    out.push(a);
                    if out.len() >= limit {
                        return Ok((out, false));
                    }
                }
            }
            if done {
                return Ok((out, false));
            }
            if scanned >= MAX_SCANNED {
                return Ok((out, true));
            }
        }
    }

    /// The tonic service.
    pub fn server(self) -> AlertsServiceServer<AlertsGrpc> {
        AlertsServiceServer::new(self)
    }

    #[allow(clippy::result_large_err)]
    fn tenant<T>(
        &self,
        request: &Request<T>,
        asked: &str,
        role: Role,
    ) -> Result<(String, String), QueryError> {
        let claims = authorize(&self.keys, request).map_err(QueryError::from_auth)?;
        claims.require(role).map_err(QueryError::from_auth)?;
        let tenant = claims.tenant_for(asked).map_err(QueryError::from_auth)?;
        Ok((tenant, claims.sub))
    }
}

/// Which transitions a caller wants.
struct Wanted<'a> {
    tenant: &'a str,
    rule: &'a str,
    device: &'a str,
    alert_id: &'a str,
}

impl Wanted<'_> {
    fn matches(&self, e: &pb::AlertEvent) -> bool {
        e.tenant == self.tenant
            && (self.rule.is_empty() || e.rule == self.rule)
            && (self.device.is_empty() || e.device == self.device)
            && (self.alert_id.is_empty() || e.alert_id == self.alert_id)
    }
}

/// Whether an alert passes a `ListAlerts` state filter.
fn in_state(a: &pb::Alert, state: i32) -> bool {
    if state == pb::AlertState::Acknowledged as i32 {
        return a.acknowledged_at_ns != 0 && a.state != pb::AlertState::Resolved as i32;
    }
    state == 0 || a.state == state
}

#[tonic::async_trait]
impl AlertsService for AlertsGrpc {
    async fn list_alerts(
        &self,
        request: Request<pb::ListAlertsRequest>,
    ) -> Result<Response<pb::ListAlertsResponse>, Status> {
        let (tenant, _) = self.tenant(&request, &request.get_ref().tenant, Role::Viewer)?;
        let req = request.into_inner();
        let limit = match req.limit {
            0 => 100,
            n if n > MAX_LIST => {
                return Err(QueryError::invalid("limit", format!("at most {MAX_LIST}")).into());
            }
            n => n,
        } as usize;
        let wanted = Wanted {
            tenant: &tenant,
            rule: &req.rule,
            device: &req.device,
            alert_id: &req.alert_id,
        };
        let range = (
            if req.from_ns == 0 {
                i64::MIN
            } else {
                req.from_ns
            },
            if req.to_ns == 0 { i64::MAX } else { req.to_ns },
        );
        let (alerts, truncated) = self
            .list_history(&wanted, (range, req.state, limit))
            .await?;
        Ok(Response::new(pb::ListAlertsResponse { alerts, truncated }))
    }

    async fn ack_alert(
        &self,
        request: Request<pb::AckAlertRequest>,
    ) -> Result<Response<pb::Alert>, Status> {
        Ok(Response::new(self.ack(request).await?))
    }

    async fn list_alert_dead_letters(
        &self,
        request: Request<pb::ListAlertDeadLettersRequest>,
    ) -> Result<Response<pb::ListAlertDeadLettersResponse>, Status> {
        let (tenant, _) = self.tenant(&request, &request.get_ref().tenant, Role::Operator)?;
        let limit = match request.get_ref().limit {
            0 => 100,
            n if n > MAX_DEAD_LETTERS => {
                return Err(
                    QueryError::invalid("limit", format!("at most {MAX_DEAD_LETTERS}")).into(),
                );
            }
            n => n as usize,
        };
        Ok(Response::new(self.dead_letters_of(&tenant, limit).await?))
    }

    type TailAlertsStream = ReceiverStream<Result<pb::AlertEvent, Status>>;

    async fn tail_alerts(
        &self,
        request: Request<pb::TailAlertsRequest>,
    ) -> Result<Response<Self::TailAlertsStream>, Status> {
        let (tenant, _) = self.tenant(&request, &request.get_ref().tenant, Role::Viewer)?;
        let req = request.into_inner();
        let slot = TailSlot::take(&self.tails, &tenant)?;
        let mut consumer = self
            .log
            .consumer(ConsumerOptions {
                group: None,
                start: StartFrom::Latest,
            })
            .await
            .map_err(internal)?;
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            let _slot = slot;
            let wanted = Wanted {
                tenant: &tenant,
                rule: &req.rule,
                device: &req.device,
                alert_id: "",
            };
            loop {
                let polled = tokio::select! {
                    () = tx.closed() => return,
                    r = consumer.poll(POLL, Duration::from_millis(500)) => r,
                };
                let records = match polled {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(internal(e))).await;
                        return;
                    }
                };
                for r in records {
                    let Ok(e) = pb::AlertEvent::decode(r.value.as_ref()) else {
                        continue;
                    };
                    if wanted.matches(&e) && tx.send(Ok(e)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

impl AlertsGrpc {
    async fn ack(&self, request: Request<pb::AckAlertRequest>) -> Result<pb::Alert, Status> {
        let (tenant, by) = self.tenant(&request, &request.get_ref().tenant, Role::Operator)?;
        let req = request.into_inner();
        if req.alert_id.len() != 32 || !req.alert_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(
                QueryError::invalid("alert_id", "32 hex digits, as ListAlerts shows").into(),
            );
        }
        if req.comment.len() > MAX_COMMENT {
            return Err(
                QueryError::invalid("comment", format!("at most {MAX_COMMENT} bytes")).into(),
            );
        }
        let found = self
            .history
            .get_alert(&tenant, &req.alert_id)
            .await
            .map_err(internal)?
            .map(|s| decoded(&s))
            .transpose()
            .map_err(internal)?;
        let Some(mut alert) = found else {
            return Err(Status::not_found(format!(
                "no alert {} in tenant {tenant}",
                req.alert_id
            )));
        };
        if alert.acknowledged_at_ns != 0 {
            return Ok(alert);
        }
        if alert.state == pb::AlertState::Resolved as i32 {
            return Err(Status::failed_precondition(format!(
                "alert {} has resolved; there is nothing to acknowledge",
                req.alert_id
            )));
        }
        let now = tributary_core::time::now_ns();
        let event = pb::AlertEvent {
            alert_id: alert.alert_id.clone(),
            tenant: alert.tenant.clone(),
            rule: alert.rule.clone(),
            device: alert.device.clone(),
            metric: alert.metric.clone(),
            state: pb::AlertState::Acknowledged as i32,
            severity: alert.severity,
            started_at_ns: alert.started_at_ns,
            at_ns: now,
            summary: alert.summary.clone(),
            by: by.clone(),
            comment: req.comment,
            ..Default::default()
        };
        // Keyed like the processor's transitions: the same partition, so
        // deliveries see it after the transitions before it.
        self.log
            .append(tributary_log::Record {
                key: format!("{}/{}", alert.tenant, alert.device)
                    .into_bytes()
                    .into(),
                value: event.encode_to_vec().into(),
                headers: Vec::new(),
                timestamp_ms: now / 1_000_000,
            })
            .await
            .map_err(internal)?;
        tracing::info!(tenant = %alert.tenant, alert_id = %alert.alert_id, by = %by, "alert acknowledged");
        fold(&mut alert, &event);
        // Listed as acknowledged at once, before the history folds the
        // event (which then changes nothing).
        self.history
            .put_alerts(vec![stored(&alert, now)])
            .await
            .map_err(internal)?;
        Ok(alert)
    }
}

impl AlertsGrpc {
    /// The newest `limit` dead letters of `tenant` (keyed `tenant/webhook`),
    /// reading the log from its start to where it ends now.
    async fn dead_letters_of(
        &self,
        tenant: &str,
        limit: usize,
    ) -> Result<pb::ListAlertDeadLettersResponse, Status> {
        use tributary_notify::webhook::dlq_headers;
        let mut ends = HashMap::new();
        for p in 0..self.dead_letters.partitions() {
            let w = self.dead_letters.watermarks(p).await.map_err(internal)?;
            if w.high > w.low {
                ends.insert(p, w.high);
            }
        }
        let mut consumer = self
            .dead_letters
            .consumer(ConsumerOptions {
                group: None,
                start: StartFrom::Earliest,
            })
            .await
            .map_err(internal)?;
        let prefix = format!("{tenant}/");
        let mut newest = std::collections::VecDeque::with_capacity(limit);
        let (mut scanned, mut truncated) = (0usize, false);
        let mut progress = tokio::time::Instant::now();
        while !ends.is_empty() {
            let records = consumer
                .poll(POLL, Duration::from_millis(200))
                .await
                .map_err(internal)?;
            if records.is_empty() {
                // A Kafka consumer takes a moment to connect and fetch.
                if progress.elapsed() > Duration::from_secs(10) {
                    return Err(internal("the alerts dead-letter log stopped answering"));
                }
                continue;
            }
            progress = tokio::time::Instant::now();
            for r in records {
                if ends
                    .get(&r.partition)
                    .is_some_and(|end| r.offset + 1 >= *end)
                {
                    ends.remove(&r.partition);
                }
                scanned += 1;
                if !r.key.starts_with(prefix.as_bytes()) {
                    continue;
                }
                let header = |name: &str| {
                    r.headers
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_default()
                };
                if newest.len() == limit {
                    newest.pop_front();
                }
                newest.push_back(pb::AlertDeadLetter {
                    webhook: header(dlq_headers::WEBHOOK),
                    reason: header(dlq_headers::REASON),
                    attempts: header(dlq_headers::ATTEMPTS).parse().unwrap_or(0),
                    at_ns: r.timestamp_ms.saturating_mul(1_000_000),
                    body: String::from_utf8_lossy(&r.value).into_owned(),
                });
            }
            if scanned >= MAX_SCANNED_DEAD_LETTERS && !ends.is_empty() {
                truncated = true;
                break;
            }
        }
        Ok(pb::ListAlertDeadLettersResponse {
            dead_letters: newest.into_iter().rev().collect(),
            truncated,
        })
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "alerts log");
    Status::unavailable("the alerts log is unavailable; retry later")
}

/// One open `TailAlerts` stream, counted per tenant until dropped.
struct TailSlot {
    tails: Arc<Mutex<HashMap<String, usize>>>,
    tenant: String,
}

impl TailSlot {
    #[allow(clippy::result_large_err)]
    fn take(tails: &Arc<Mutex<HashMap<String, usize>>>, tenant: &str) -> Result<Self, Status> {
        let mut open = tails.lock().unwrap_or_else(PoisonError::into_inner);
        let all: usize = open.values().sum();
        let mine = open.get(tenant).copied().unwrap_or(0);
        if mine >= MAX_TAILS_PER_TENANT || all >= MAX_TAILS {
            return Err(QueryError::ResourceExhausted {
                subject: "alert_tails",
                message: format!(
                    "at most {MAX_TAILS_PER_TENANT} alert tails per tenant and {MAX_TAILS} in all are open; close one"
                ),
            }
            .into());
        }
        *open.entry(tenant.to_owned()).or_default() += 1;
        Ok(Self {
            tails: tails.clone(),
            tenant: tenant.to_owned(),
        })
    }
}

impl Drop for TailSlot {
    fn drop(&mut self) {
        let mut open = self.tails.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.tenant);
            }
        }
    }
}
