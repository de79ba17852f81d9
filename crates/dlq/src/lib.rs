//! The dead-letter service (`tributary.v1.DeadLetterService`): what the
//! processor could not store, and why, for an operator to inspect and,
//! once the cause is fixed, replay.
//!
//! A dead letter of telemetry is data that was acknowledged and is not
//! stored: the ingest path refuses what the store predictably refuses
//! before its ack, so dead letters are what nobody could predict (a corrupt
//! record, a store that changed its limits, a processor with other limits
//! than the frontends). `tributary_processor_dead_lettered_records_total`
//! counts them; this service shows them.
//!
//! The dead-letter log is read from its oldest record each call: it is
//! small by design (every record in it is an alert), and a call reads at
//! most [`MAX_SCAN`] records. Replaying appends the record, as it was, to
//! the telemetry log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tonic::{Request, Response, Status};
use tributary_auth::{JwtKeys, OperatorClaims, Role, authorize};
use tributary_log::{ConsumerOptions, Log, LogRecord, Record, StartFrom};
use tributary_processor::dlq_headers;
use tributary_proto::v1 as pb;
use tributary_proto::v1::dead_letter_service_server::{DeadLetterService, DeadLetterServiceServer};

/// Most dead-letter records one call reads.
pub const MAX_SCAN: usize = 100_000;
/// Most dead letters one replay appends.
pub const MAX_REPLAY: usize = 1_000;
/// How long one call may read the dead-letter log.
const SCAN_TIMEOUT: Duration = Duration::from_secs(10);
/// The header naming the dead letter a replayed record came from.
pub const REPLAYED_FROM: &str = "tributary-replayed-from";
/// The tenant header the frontends set on every record.
const TENANT_HEADER: &str = "tenant";
const CONTENT_TYPE_HEADER: &str = "content-type";

/// The `tributary.v1.DeadLetterService` implementation over the dead-letter
/// log (`dlq`) and the telemetry log replays go to.
#[derive(Debug, Clone)]
pub struct DeadLetterGrpc {
    dlq: Arc<dyn Log>,
    telemetry: Arc<dyn Log>,
    keys: JwtKeys,
}

impl DeadLetterGrpc {
    pub fn new(dlq: Arc<dyn Log>, telemetry: Arc<dyn Log>, keys: JwtKeys) -> Self {
        Self {
            dlq,
            telemetry,
            keys,
        }
    }

    /// The tonic service.
    pub fn into_service(self) -> DeadLetterServiceServer<Self> {
        DeadLetterServiceServer::new(self)
    }

    /// Reads every dead letter `scope` may see, oldest first by position.
    async fn visible(&self, scope: &Scope) -> Result<Vec<LogRecord>, Status> {
        let mut out = Vec::new();
        scan(self.dlq.as_ref(), |r| {
            if scope.sees(r) {
                out.push(r.clone());
            }
        })
        .await?;
        out.sort_by_key(|r| (r.partition, r.offset));
        Ok(out)
    }
}

/// Which dead letters a caller sees: one tenant's, or (`*`, admins) all.
#[derive(Debug)]
enum Scope {
    Tenant(String),
    All,
}

impl Scope {
    fn of<T>(keys: &JwtKeys, req: &Request<T>, tenant: &str) -> Result<Self, Status> {
        let claims: OperatorClaims = authorize(keys, req)?;
        claims.require(Role::Operator)?;
        if tenant == "*" {
            claims.require(Role::Admin)?;
            return Ok(Scope::All);
        }
        Ok(Scope::Tenant(claims.tenant_for(tenant)?))
    }

    fn sees(&self, r: &LogRecord) -> bool {
        match self {
            Scope::All => true,
            Scope::Tenant(t) => header(r, TENANT_HEADER).as_deref() == Some(t.as_str()),
        }
    }
}

fn header(r: &LogRecord, name: &str) -> Option<String> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

/// Reads the log from its oldest record to its end as of the call.
async fn scan(log: &dyn Log, mut visit: impl FnMut(&LogRecord)) -> Result<(), Status> {
    let unavailable =
        |e: tributary_log::LogError| Status::unavailable(format!("dead-letter log: {e}"));
    // The end of each partition now: records appended later are not read.
    let mut remaining: BTreeMap<u32, u64> = BTreeMap::new();
    for p in 0..log.partitions() {
        let w = log.watermarks(p).await.map_err(unavailable)?;
        if w.high > w.low {
            remaining.insert(p, w.high);
        }
    }
    if remaining.is_empty() {
        return Ok(());
    }
    let mut consumer = log
        .consumer(ConsumerOptions {
            group: None,
            start: StartFrom::Earliest,
        })
        .await
        .map_err(unavailable)?;
    let deadline = Instant::now() + SCAN_TIMEOUT;
    let mut read = 0usize;
    while !remaining.is_empty() {
        if Instant::now() >= deadline {
            return Err(Status::deadline_exceeded(
                "the dead-letter log could not be read in time",
            ));
        }
        let batch = consumer
            .poll(1_000, Duration::from_millis(200))
            .await
            .map_err(unavailable)?;
        for r in &batch {
            let Some(&end) = remaining.get(&r.partition) else {
                continue;
            };
            if r.offset >= end {
                continue;
            }
            read += 1;
            if read > MAX_SCAN {
                return Err(Status::resource_exhausted(format!(
                    "the dead-letter log holds more than {MAX_SCAN} records: read it with a Kafka client"
                )));
            }
            visit(r);
            if r.offset + 1 >= end {
                remaining.remove(&r.partition);
            }
        }
    }
    Ok(())
}

fn to_proto(r: &LogRecord, with_value: bool) -> pb::DeadLetter {
    pb::DeadLetter {
        partition: r.partition,
        offset: r.offset,
        tenant: header(r, TENANT_HEADER).unwrap_or_default(),
        reason: header(r, dlq_headers::REASON).unwrap_or_default(),
        source: header(r, dlq_headers::SOURCE).unwrap_or_default(),
        timestamp_ms: r.timestamp_ms,
        key: String::from_utf8_lossy(&r.key).into_owned(),
        value_bytes: u32::try_from(r.value.len()).unwrap_or(u32::MAX),
        value: if with_value {
            r.value.to_vec()
        } else {
            Vec::new()
        },
        content_type: header(r, CONTENT_TYPE_HEADER).unwrap_or_default(),
    }
}

fn parse_token(token: &str) -> Result<Option<(u32, u64)>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || Status::invalid_argument("page_token: not a token this service returned");
    let (p, o) = token.split_once(':').ok_or_else(bad)?;
    Ok(Some((
        p.parse().map_err(|_| bad())?,
        o.parse().map_err(|_| bad())?,
    )))
}

#[tonic::async_trait]
impl DeadLetterService for DeadLetterGrpc {
    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        let scope = Scope::of(&self.keys, &request, &request.get_ref().tenant)?;
        let req = request.into_inner();
        let page = match req.page_size {
            0 => 100,
            n @ 1..=1000 => n as usize,
            n => {
                return Err(Status::invalid_argument(format!(
                    "page_size must be 1 to 1000, got {n}"
                )));
            }
        };
        let after = parse_token(&req.page_token)?;
        let all = self.visible(&scope).await?;
        let rest: Vec<&LogRecord> = all
            .iter()
            .filter(|r| after.is_none_or(|a| (r.partition, r.offset) > a))
            .collect();
        let next_page_token = match rest.get(page) {
            Some(_) => {
                let last = rest[page - 1];
                format!("{}:{}", last.partition, last.offset)
            }
            None => String::new(),
        };
        Ok(Response::new(pb::ListDeadLettersResponse {
            dead_letters: rest.iter().take(page).map(|r| to_proto(r, false)).collect(),
            next_page_token,
        }))
    }

    async fn get_dead_letter(
        &self,
        request: Request<pb::GetDeadLetterRequest>,
    ) -> Result<Response<pb::DeadLetter>, Status> {
        let scope = Scope::of(&self.keys, &request, &request.get_ref().tenant)?;
        let r = request
            .into_inner()
            .r#ref
            .ok_or_else(|| Status::invalid_argument("ref is required"))?;
        self.visible(&scope)
            .await?
            .iter()
            .find(|d| d.partition == r.partition && d.offset == r.offset)
            .map(|d| Response::new(to_proto(d, true)))
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no dead letter at {}:{} in the caller's tenant",
                    r.partition, r.offset
                ))
            })
    }

    async fn replay_dead_letters(
        &self,
        request: Request<pb::ReplayDeadLettersRequest>,
    ) -> Result<Response<pb::ReplayDeadLettersResponse>, Status> {
        let scope = Scope::of(&self.keys, &request, &request.get_ref().tenant)?;
        let req = request.into_inner();
        if req.refs.is_empty() || req.refs.len() > MAX_REPLAY {
            return Err(Status::invalid_argument(format!(
                "refs: name 1 to {MAX_REPLAY} dead letters"
            )));
        }
        let mut wanted: Vec<(u32, u64)> =
            req.refs.iter().map(|r| (r.partition, r.offset)).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let visible = self.visible(&scope).await?;
        let found: Vec<&LogRecord> = visible
            .iter()
            .filter(|r| wanted.binary_search(&(r.partition, r.offset)).is_ok())
            .collect();
        if found.len() != wanted.len() {
            let missing: Vec<String> = wanted
                .iter()
                .filter(|w| !found.iter().any(|r| (r.partition, r.offset) == **w))
                .map(|(p, o)| format!("{p}:{o}"))
                .collect();
            return Err(Status::not_found(format!(
                "no dead letter at {} in the caller's tenant; nothing was replayed",
                missing.join(", ")
            )));
        }
        let records: Vec<Record> = found
            .iter()
            .map(|r| {
                let mut headers: Vec<(String, Bytes)> = r
                    .headers
                    .iter()
                    .filter(|(k, _)| k != dlq_headers::REASON && k != dlq_headers::SOURCE)
                    .cloned()
                    .collect();
                headers.push((
                    REPLAYED_FROM.into(),
                    Bytes::from(format!("{}/{}/{}", self.dlq.topic(), r.partition, r.offset)),
                ));
                Record {
                    key: r.key.clone(),
                    value: r.value.clone(),
                    headers,
                    timestamp_ms: r.timestamp_ms,
                }
            })
            .collect();
        let replayed = records.len();
        self.telemetry
            .append_batch(records)
            .await
            .map_err(|e| Status::unavailable(format!("telemetry log: {e}")))?;
        tracing::info!(replayed, "dead letters replayed to the telemetry log");
        Ok(Response::new(pb::ReplayDeadLettersResponse {
            replayed: u32::try_from(replayed).unwrap_or(u32::MAX),
        }))
    }
}
