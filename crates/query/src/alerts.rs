//! [`AlertsGrpc`]: `tributary.v1.AlertsService`, read from the alerts log.
//!
//! `ListAlerts` folds the transitions in the log by alert id into each
//! alert's newest state; it reads at most [`MAX_SCANNED`] records, the
//! oldest first, and says when it stopped short. `TailAlerts` follows the
//! log from now on. Both see only the caller's tenant (an admin may name
//! another), and viewers may read them.

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

use crate::QueryError;

/// Most transitions one `ListAlerts` reads.
pub(crate) const MAX_SCANNED: usize = 1_000_000;
/// Most alerts one `ListAlerts` returns.
pub(crate) const MAX_LIST: u32 = 10_000;
/// Most `TailAlerts` streams open at once, per tenant and in all.
pub(crate) const MAX_TAILS_PER_TENANT: usize = 16;
pub(crate) const MAX_TAILS: usize = 256;
/// Records taken per poll.
const POLL: usize = 1024;
/// Longest acknowledgement comment, in bytes.
pub(crate) const MAX_COMMENT: usize = 1024;
/// Longest wait for the next record of a `ListAlerts` read.
const STALL: Duration = Duration::from_secs(10);

/// The alerts service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AlertsGrpc {
    log: Arc<dyn Log>,
    keys: JwtKeys,
    tails: Arc<Mutex<HashMap<String, usize>>>,
}

impl AlertsGrpc {
    /// Serves the alerts in `log` (`tributary.alerts.v1`).
    pub fn new(log: Arc<dyn Log>, keys: JwtKeys) -> Self {
        Self {
            log,
            keys,
            tails: Arc::default(),
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

    /// Every alert `wanted` picks, folded from the log up to where it ends
    /// now; whether the read stopped short at [`MAX_SCANNED`].
    async fn fold_log(
        &self,
        wanted: &Wanted<'_>,
    ) -> Result<(HashMap<String, pb::Alert>, bool), Status> {
        // Where the log ends now: the fold stops there.
        let mut ends = HashMap::new();
        for p in 0..self.log.partitions() {
            let w = self.log.watermarks(p).await.map_err(internal)?;
            if w.high > w.low {
                ends.insert(p, w.high);
            }
        }
        let mut consumer = self
            .log
            .consumer(ConsumerOptions {
                group: None,
                start: StartFrom::Earliest,
            })
            .await
            .map_err(internal)?;
        let mut alerts: HashMap<String, pb::Alert> = HashMap::new();
        let (mut scanned, mut truncated) = (0usize, false);
        // A consumer on Kafka takes a moment to connect and fetch; the log
        // holds records up to `ends`, so an empty poll means "not yet".
        let mut progress = tokio::time::Instant::now();
        while !ends.is_empty() {
            let records = consumer
                .poll(POLL, Duration::from_millis(200))
                .await
                .map_err(internal)?;
            if records.is_empty() {
                if progress.elapsed() > STALL {
                    return Err(internal(format!(
                        "no record in {STALL:?} while reading up to {ends:?}"
                    )));
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
                let Ok(e) = pb::AlertEvent::decode(r.value.as_ref()) else {
                    continue;
                };
                if !wanted.matches(&e) {
                    continue;
                }
                let alert = alerts
                    .entry(e.alert_id.clone())
                    .or_insert_with(|| pb::Alert {
                        alert_id: e.alert_id.clone(),
                        tenant: e.tenant.clone(),
                        rule: e.rule.clone(),
                        device: e.device.clone(),
                        metric: e.metric.clone(),
                        severity: e.severity,
                        started_at_ns: e.started_at_ns,
                        ..Default::default()
                    });
                fold(alert, e);
            }
            if scanned >= MAX_SCANNED && !ends.is_empty() {
                truncated = true;
                break;
            }
        }
        Ok((alerts, truncated))
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

/// Folds a transition into its alert. An acknowledgement leaves the state
/// as it was.
fn fold(into: &mut pb::Alert, e: pb::AlertEvent) {
    if e.state == pb::AlertState::Acknowledged as i32 {
        if into.acknowledged_at_ns == 0 {
            into.acknowledged_at_ns = e.at_ns;
            into.acknowledged_by = e.by;
        }
        return;
    }
    into.state = e.state;
    into.value = e.value;
    into.summary = e.summary;
    into.silenced_until_ns = e.silenced_until_ns;
    match pb::AlertState::try_from(e.state) {
        Ok(pb::AlertState::Firing) => into.fired_at_ns = e.at_ns,
        Ok(pb::AlertState::Resolved) => into.resolved_at_ns = e.at_ns,
        _ => {}
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
        let (alerts, truncated) = self.fold_log(&wanted).await?;
        let mut out: Vec<pb::Alert> = alerts
            .into_values()
            .filter(|a| in_state(a, req.state))
            .filter(|a| req.from_ns == 0 || a.started_at_ns >= req.from_ns)
            .filter(|a| req.to_ns == 0 || a.started_at_ns < req.to_ns)
            .collect();
        out.sort_by(|a, b| {
            b.started_at_ns
                .cmp(&a.started_at_ns)
                .then_with(|| a.alert_id.cmp(&b.alert_id))
        });
        out.truncate(limit);
        Ok(Response::new(pb::ListAlertsResponse {
            alerts: out,
            truncated,
        }))
    }

    async fn ack_alert(
        &self,
        request: Request<pb::AckAlertRequest>,
    ) -> Result<Response<pb::Alert>, Status> {
        Ok(Response::new(self.ack(request).await?))
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
        let wanted = Wanted {
            tenant: &tenant,
            rule: "",
            device: "",
            alert_id: &req.alert_id,
        };
        let (mut alerts, _) = self.fold_log(&wanted).await?;
        let Some(mut alert) = alerts.remove(&req.alert_id) else {
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
        alert.acknowledged_at_ns = now;
        alert.acknowledged_by = by;
        Ok(alert)
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
