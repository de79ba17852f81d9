//! The protocol-independent core of the ingest frontends.
//!
//! Every frontend (HTTP today, MQTT and CoAP next) parses its protocol and then
//! hands points to an [`Ingestor`], which authenticates the credential,
//! checks the device, wraps the points in a [`TelemetryEnvelope`] and appends
//! it to the log. [`Ingestor::ingest`] returns `Ok` only once the log append
//! is durable: that is the moment a frontend may acknowledge (HTTP 204, MQTT
//! PUBACK). Failures are an [`IngestError`], which each frontend maps to its
//! own protocol (problem+json status, MQTT reason code).
//!
//! [`TelemetryEnvelope`]: tributary_core::envelope::Envelope

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;
use tributary_core::directory::{
    Application, Authenticator, Credential, DirectoryError, Principal,
};
pub use tributary_core::envelope::Kind;
use tributary_core::envelope::{self, Envelope};
use tributary_core::formats::{DeviceBatch, ParseError};
use tributary_core::model::validate_device_id;
use tributary_core::retention::{Keep, RetentionPolicy};
use tributary_core::series::{SeriesGate, SeriesRefused};
use tributary_core::{Limits, Point};
use tributary_log::{Log, LogError, Record};

mod metrics;
pub mod presence;
mod quota;

pub use metrics::{IngestMetrics, Rejection};
pub use quota::QuotaMetrics;
pub use tributary_core::quota::{Quota, QuotaExceeded};

/// Kafka-style record header names the frontends set on every record.
pub mod headers {
    pub const CONTENT_TYPE: &str = "content-type";
    pub const TENANT: &str = "tenant";
    pub const SCHEMA_VERSION: &str = "schema-version";
    pub const TRACEPARENT: &str = "traceparent";
    pub const TRACESTATE: &str = "tracestate";
}

/// Why an ingest request failed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("missing or invalid credential")]
    Unauthenticated,
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("unknown device: {0}")]
    UnknownDevice(String),
    #[error("{0}")]
    Invalid(ParseError),
    #[error("too large: {0}")]
    TooLarge(String),
    /// Retry after the given number of seconds.
    #[error("overloaded, retry in {retry_after_secs} s")]
    Overloaded { retry_after_secs: u32 },
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Over one of the tenant's quotas.
    #[error("{0}")]
    Quota(QuotaExceeded),
}

impl From<ParseError> for IngestError {
    fn from(e: ParseError) -> Self {
        if e.too_large {
            IngestError::TooLarge(e.to_string())
        } else {
            IngestError::Invalid(e)
        }
    }
}

impl From<DirectoryError> for IngestError {
    fn from(e: DirectoryError) -> Self {
        match e {
            DirectoryError::Unauthenticated => IngestError::Unauthenticated,
            DirectoryError::Forbidden(m) => IngestError::Forbidden(m),
            DirectoryError::NotFound(m) => IngestError::UnknownDevice(m),
            DirectoryError::Invalid(m) => IngestError::Invalid(ParseError::new("device", m)),
            DirectoryError::Unavailable(m) => IngestError::Unavailable(m),
        }
    }
}

impl From<LogError> for IngestError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Backpressure => IngestError::Overloaded {
                retry_after_secs: 1,
            },
            LogError::RecordTooLarge { size, limit } => IngestError::TooLarge(format!(
                "record of {size} bytes exceeds the log's limit of {limit}"
            )),
            other => IngestError::Unavailable(other.to_string()),
        }
    }
}

/// Where a request came from, for the envelope.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// Content type of the original payload.
    pub content_type: String,
    /// W3C `traceparent`, if the client sent one.
    pub traceparent: String,
    /// W3C `tracestate`, if the client sent one.
    pub tracestate: String,
    /// What the points are: telemetry samples (the default) or device
    /// events. Recorded as the envelope's `kind`.
    pub kind: Kind,
}

impl Default for RequestContext {
    fn default() -> Self {
        Self {
            content_type: String::new(),
            traceparent: String::new(),
            tracestate: String::new(),
            kind: Kind::Telemetry,
        }
    }
}

/// Default of [`IngestConfig::max_record_bytes`].
pub const DEFAULT_MAX_RECORD_BYTES: usize = 960 * 1024;

/// Frontend settings shared by every protocol.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub limits: Limits,
    /// Payload bytes that may be in flight (read but not yet durable) at once,
    /// over all requests. Past it, requests are refused with "retry later".
    pub max_inflight_bytes: usize,
    /// Largest envelope appended as one log record, in bytes. A device's
    /// batch that encodes larger is split into several envelopes, each at
    /// most this size, so a big request never exceeds the log's record
    /// limit (Kafka's `max.message.bytes`). The default leaves room for the
    /// key and headers under a 1,000,000-byte record.
    pub max_record_bytes: usize,
    /// Admits new series before their points are appended, so that the
    /// store never refuses a point that was acknowledged (the series limit
    /// and the tenant's `series` quota). `None`: the store has no limit to
    /// check ahead (ScyllaDB).
    pub series_gate: Option<Arc<dyn SeriesGate>>,
    /// The platform's retention defaults (`--retention`, `--rollup-tiers`).
    /// When set, a point is refused only when it is older than the longest
    /// retention of its tenant (raw points or any rollup tier, the tenant's
    /// settings over these defaults): older than the raw retention but
    /// inside a tier's, it still counts in the rollups. `None`:
    /// `limits.max_point_age_ns` alone.
    pub retention: Option<Arc<RetentionPolicy>>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            max_inflight_bytes: 512 * 1024 * 1024,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            series_gate: None,
            retention: None,
        }
    }
}

/// The shared ingest path. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Ingestor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    log: Arc<dyn Log>,
    auth: Arc<dyn Authenticator>,
    config: IngestConfig,
    inflight_kib: Arc<Semaphore>,
    metrics: IngestMetrics,
    rates: quota::RateQuotas,
    quota_metrics: QuotaMetrics,
}

/// Holds a share of the in-flight byte budget until dropped.
#[derive(Debug)]
pub struct InflightPermit {
    permit: OwnedSemaphorePermit,
    /// `tributary_ingest_inflight_bytes`, given back on drop.
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for InflightPermit {
    fn drop(&mut self) {
        self.gauge.dec_by(self.bytes() as i64);
    }
}

impl InflightPermit {
    /// Bytes this permit holds.
    pub fn bytes(&self) -> usize {
        self.permit.num_permits() * 1024
    }
}

impl Ingestor {
    pub fn new(
        log: Arc<dyn Log>,
        auth: Arc<dyn Authenticator>,
        config: IngestConfig,
        metrics: IngestMetrics,
    ) -> Self {
        Self::with_quota_metrics(log, auth, config, metrics, QuotaMetrics::default())
    }

    /// [`Ingestor::new`], reporting tenants' quota use to `quota_metrics`.
    pub fn with_quota_metrics(
        log: Arc<dyn Log>,
        auth: Arc<dyn Authenticator>,
        config: IngestConfig,
        metrics: IngestMetrics,
        quota_metrics: QuotaMetrics,
    ) -> Self {
        let mut config = config;
        if config.retention.is_some() {
            // Ages are checked per tenant, against its longest retention.
            config.limits.max_point_age_ns = 0;
        }
        let kib = (config.max_inflight_bytes / 1024).clamp(1, Semaphore::MAX_PERMITS);
        metrics.inflight_limit_bytes.set((kib * 1024) as i64);
        Self {
            inner: Arc::new(Inner {
                log,
                auth,
                config,
                inflight_kib: Arc::new(Semaphore::new(kib)),
                metrics,
                rates: Default::default(),
                quota_metrics,
            }),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.config.limits
    }

    pub fn metrics(&self) -> &IngestMetrics {
        &self.inner.metrics
    }

    /// Where tenants' quota use is reported, for every frontend of this
    /// ingest path.
    pub fn quota_metrics(&self) -> &QuotaMetrics {
        &self.inner.quota_metrics
    }

    /// The tenant's quotas, as the directory has them cached.
    pub async fn quotas(&self, tenant: &str) -> Result<tributary_core::quota::Quotas, IngestError> {
        Ok(self.inner.auth.tenant_policy(tenant).await?.quotas)
    }

    /// Charges one message (or request) of `bytes` payload bytes to the
    /// tenant's message and byte rates. Every frontend calls it before it
    /// parses a message; over a rate it is [`IngestError::Quota`], with
    /// the seconds after which a retry can pass.
    pub async fn admit(&self, tenant: &str, bytes: usize) -> Result<(), IngestError> {
        use quota::Admission;
        let bytes = bytes as u64;
        let rates = &self.inner.rates;
        let metrics = &self.inner.quota_metrics;
        let verdict = match rates.admit(tenant, bytes, None, false, metrics, Instant::now()) {
            Admission::Decided(verdict) => verdict,
            Admission::NeedQuotas => {
                let fresh = match self.inner.auth.tenant_policy(tenant).await {
                    Ok(policy) => Some(policy.quotas),
                    Err(e) => {
                        // Keep enforcing the values last read while the
                        // registry cannot be asked.
                        tracing::debug!(tenant, error = %e, "tenant quotas could not be read");
                        None
                    }
                };
                let had_fresh = fresh.is_some();
                match rates.admit(tenant, bytes, fresh, true, metrics, Instant::now()) {
                    Admission::Decided(verdict) => verdict,
                    Admission::NeedQuotas if had_fresh => Ok(()),
                    Admission::NeedQuotas => {
                        return Err(IngestError::Unavailable(
                            "the tenant's quotas could not be read".into(),
                        ));
                    }
                }
            }
        };
        verdict.map_err(|e| {
            metrics.exceeded(&e);
            self.inner.metrics.rejected(Rejection::Quota, &e);
            IngestError::Quota(e)
        })
    }

    /// Reserves `bytes` of the in-flight budget, or fails with
    /// [`IngestError::Overloaded`] at once when the budget is spent.
    pub fn reserve(&self, bytes: usize) -> Result<InflightPermit, IngestError> {
        Ok(InflightPermit {
            permit: self.acquire(bytes)?,
            gauge: self.inner.metrics.inflight_bytes.clone(),
        })
    }

    /// Grows a reservation to at least `total_bytes` (bodies of unknown
    /// length are reserved as they arrive).
    pub fn reserve_more(
        &self,
        permit: &mut InflightPermit,
        total_bytes: usize,
    ) -> Result<(), IngestError> {
        let held = permit.bytes();
        if total_bytes > held {
            permit.permit.merge(self.acquire(total_bytes - held)?);
        }
        Ok(())
    }

    fn acquire(&self, bytes: usize) -> Result<OwnedSemaphorePermit, IngestError> {
        let kib = (bytes.div_ceil(1024)).clamp(1, Semaphore::MAX_PERMITS) as u32;
        self.inner
            .inflight_kib
            .clone()
            .try_acquire_many_owned(kib)
            .inspect(|_| {
                self.inner
                    .metrics
                    .inflight_bytes
                    .inc_by(i64::from(kib) * 1024);
            })
            .map_err(|_| {
                self.inner
                    .metrics
                    .rejected(Rejection::Overloaded, &"the in-flight byte budget is spent");
                IngestError::Overloaded {
                    retry_after_secs: 1,
                }
            })
    }

    /// Resolves a bearer token.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, IngestError> {
        Ok(self.authenticate_credential(token).await?.0)
    }

    /// [`Ingestor::authenticate`], with the credential behind the principal,
    /// for a connection that lives on (its id, its expiry).
    pub async fn authenticate_credential(
        &self,
        token: &str,
    ) -> Result<(Principal, Credential), IngestError> {
        if token.is_empty() || token.len() > 512 {
            self.inner
                .metrics
                .rejected(Rejection::Unauthenticated, &"empty or oversized token");
            return Err(IngestError::Unauthenticated);
        }
        self.inner
            .auth
            .authenticate_credential(token)
            .await
            .map_err(|e| {
                self.inner.metrics.rejected(auth_rejection(&e), &e);
                e.into()
            })
    }

    /// Whether a connection that authenticated with `credential` (of
    /// `device`, for a device) may go on, asked of the registry itself; for
    /// frontends that may have missed revocation events.
    pub async fn credential_valid(
        &self,
        tenant: &str,
        credential: &Credential,
        device: Option<&str>,
    ) -> Result<bool, IngestError> {
        if credential
            .expires_at_ns
            .is_some_and(|at| tributary_core::time::now_ns() >= at)
        {
            return Ok(false);
        }
        if credential.id.is_empty() {
            return Ok(true);
        }
        Ok(self
            .inner
            .auth
            .credential_valid(tenant, &credential.id, device)
            .await?)
    }

    /// Resolves a DTLS PSK identity to its device and key (CoAP over DTLS).
    /// Refusals are counted as for tokens.
    pub async fn authenticate_psk(
        &self,
        identity: &str,
    ) -> Result<tributary_core::directory::PskGrant, IngestError> {
        if identity.is_empty() || identity.len() > 256 {
            self.inner.metrics.rejected(
                Rejection::Unauthenticated,
                &"empty or oversized PSK identity",
            );
            return Err(IngestError::Unauthenticated);
        }
        self.inner
            .auth
            .authenticate_psk(identity)
            .await
            .map_err(|e| {
                self.inner.metrics.rejected(auth_rejection(&e), &e);
                e.into()
            })
    }

    /// Resolves a TLS client certificate by its SHA-256 fingerprint (lower-case
    /// hex) to the device it is registered for. An unregistered certificate
    /// is `Unauthenticated` and not counted as a rejection: the frontend
    /// falls back to the client's token, which is counted if it fails.
    pub async fn authenticate_certificate(
        &self,
        fingerprint: &str,
    ) -> Result<(Principal, Credential), IngestError> {
        if fingerprint.len() != 64 {
            return Err(IngestError::Unauthenticated);
        }
        self.inner
            .auth
            .authenticate_certificate_credential(fingerprint)
            .await
            .map_err(|e| {
                if e != DirectoryError::Unauthenticated {
                    self.inner.metrics.rejected(Rejection::Forbidden, &e);
                }
                e.into()
            })
    }

    /// Resolves a tenant application's token issued for the application
    /// `name` (MQTT user name `app:<name>`).
    pub async fn authenticate_application(
        &self,
        name: &str,
        token: &str,
    ) -> Result<(Application, Credential), IngestError> {
        if name.is_empty() || token.is_empty() || token.len() > 512 || name.len() > 512 {
            self.inner.metrics.rejected(
                Rejection::Unauthenticated,
                &"empty or oversized application name or token",
            );
            return Err(IngestError::Unauthenticated);
        }
        self.inner
            .auth
            .authenticate_application_credential(name, token)
            .await
            .map_err(|e| {
                self.inner.metrics.rejected(auth_rejection(&e), &e);
                e.into()
            })
    }

    /// Appends points sent by an authenticated device. Returns once durable.
    pub async fn ingest_device(
        &self,
        principal: &Principal,
        points: Vec<Point>,
        ctx: &RequestContext,
    ) -> Result<(), IngestError> {
        let Principal::Device { tenant, device } = principal else {
            return Err(IngestError::Forbidden(
                "this endpoint takes a device access token; tenant ingest tokens write line protocol".into(),
            ));
        };
        self.append(
            tenant,
            vec![DeviceBatch {
                device: device.clone(),
                labels: BTreeMap::new(),
                points,
            }],
            ctx,
        )
        .await
    }

    /// Appends line-protocol batches for devices of a tenant, written with a
    /// tenant ingest token. Unknown devices are auto-provisioned when the
    /// tenant allows it. Returns once every record is durable.
    pub async fn ingest_tenant(
        &self,
        principal: &Principal,
        batches: Vec<DeviceBatch>,
        ctx: &RequestContext,
    ) -> Result<(), IngestError> {
        let Principal::TenantIngest { tenant, .. } = principal else {
            return Err(IngestError::Forbidden(
                "line protocol endpoints take a tenant ingest token (tbi_…), not a device token"
                    .into(),
            ));
        };
        for b in &batches {
            validate_device_id(&b.device, self.limits())
                .map_err(|e| IngestError::Invalid(ParseError::new("device", e.to_string())))?;
            if let Err(e) = self
                .inner
                .auth
                .ensure_device(tenant, &b.device, &b.labels)
                .await
            {
                self.inner
                    .metrics
                    .rejected(Rejection::Device, &format_args!("device {}: {e}", b.device));
                return Err(e.into());
            }
        }
        self.append(tenant, batches, ctx).await
    }

    /// The tenant's LwM2M metric names (through the directory's cache).
    pub async fn lwm2m_metrics(
        &self,
        tenant: &str,
    ) -> Result<tributary_core::lwm2m::Lwm2mMetrics, IngestError> {
        Ok(self.inner.auth.tenant_policy(tenant).await?.lwm2m_metrics)
    }

    /// The tenant's device tag for line protocol.
    pub async fn device_tag(&self, tenant: &str) -> Result<String, IngestError> {
        Ok(self.inner.auth.tenant_policy(tenant).await?.device_tag)
    }

    /// Appends batches of one tenant, inside the span `ingest.append`:
    /// a child of the device's `traceparent` when it sent one, else a new
    /// trace (subject to sampling). The records carry that span's own
    /// context, so the processor's span is its child. Disabled, the span
    /// costs nothing and the device's context is passed on as it came.
    async fn append(
        &self,
        tenant: &str,
        batches: Vec<DeviceBatch>,
        ctx: &RequestContext,
    ) -> Result<(), IngestError> {
        let span = tracing::debug_span!(
            target: tributary_otel::TARGET,
            "ingest.append",
            otel.kind = "producer",
            otel.status_code = tracing::field::Empty,
            tenant,
            devices = batches.len(),
            points = tracing::field::Empty,
            records = tracing::field::Empty,
            log.append_ms = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        let own = if span.is_disabled() {
            None
        } else {
            if !ctx.traceparent.is_empty() {
                tributary_otel::set_remote_parent(&span, &ctx.traceparent, &ctx.tracestate);
            }
            tributary_otel::span_traceparent(&span)
        };
        let trace = match &own {
            Some((traceparent, tracestate)) => Trace {
                traceparent,
                tracestate,
            },
            None => Trace {
                traceparent: &ctx.traceparent,
                tracestate: &ctx.tracestate,
            },
        };
        self.append_traced(tenant, batches, ctx, trace, &span)
            .instrument(span.clone())
            .await
    }

    /// Admits the batches' new series at the store's gate (if it has one),
    /// within the tenant's `series` quota: what the store would refuse is
    /// refused here, before anything is acknowledged.
    async fn admit_series(&self, tenant: &str, batches: &[DeviceBatch]) -> Result<(), IngestError> {
        let Some(gate) = &self.inner.config.series_gate else {
            return Ok(());
        };
        let quota = match self.inner.rates.cached(tenant, Quota::Series) {
            Some(quota) => quota,
            None => self.quotas(tenant).await?.get(Quota::Series),
        };
        for b in batches {
            let mut metrics: Vec<&str> = b.points.iter().map(|p| p.metric.as_str()).collect();
            metrics.sort_unstable();
            metrics.dedup();
            match gate.admit(tenant, &b.device, &metrics, quota).await {
                Ok(()) => {}
                Err(SeriesRefused::TenantQuota { limit }) => {
                    let e = QuotaExceeded {
                        tenant: tenant.to_owned(),
                        quota: Quota::Series,
                        limit,
                        retry_after_secs: None,
                    };
                    self.inner.quota_metrics.exceeded(&e);
                    self.inner.metrics.rejected(Rejection::Quota, &e);
                    return Err(IngestError::Quota(e));
                }
                Err(SeriesRefused::Unavailable(why)) => {
                    self.inner.metrics.rejected(Rejection::Overloaded, &why);
                    return Err(IngestError::Unavailable(format!(
                        "new series cannot be admitted now: {why}"
                    )));
                }
                Err(e @ SeriesRefused::StoreFull { .. }) => {
                    self.inner.metrics.rejected(Rejection::Quota, &e);
                    return Err(IngestError::Forbidden(format!(
                        "{e}: no new series can be stored for now; the operator must raise the limit"
                    )));
                }
            }
        }
        Ok(())
    }

    async fn append_traced(
        &self,
        tenant: &str,
        batches: Vec<DeviceBatch>,
        ctx: &RequestContext,
        trace: Trace<'_>,
        span: &tracing::Span,
    ) -> Result<(), IngestError> {
        let received_at_ns = tributary_core::time::now_ns();
        let limits = self.limits();
        // The tenant's longest retention, looked up for the first point old
        // enough to need it (no retention is shorter than an hour).
        let mut tenant_max_age: Option<Keep> = None;
        let recent = received_at_ns.saturating_sub(tributary_core::retention::MIN_RETENTION_NS);
        for b in &batches {
            for p in &b.points {
                let mut checked = limits.check_timestamp(p.ts_ns, received_at_ns);
                if checked.is_ok()
                    && p.ts_ns < recent
                    && let Some(policy) = &self.inner.config.retention
                {
                    let keep = match tenant_max_age {
                        Some(keep) => keep,
                        None => {
                            let settings = self.inner.auth.tenant_policy(tenant).await?.retention;
                            let keep = policy.resolve(&settings).longest();
                            tenant_max_age = Some(keep);
                            keep
                        }
                    };
                    if p.ts_ns < keep.floor(received_at_ns) {
                        checked = Err(format!(
                            "timestamp {} is older than the tenant's longest retention ({keep})",
                            tributary_core::time::format_rfc3339(p.ts_ns)
                        ));
                    }
                }
                if let Err(message) = checked {
                    self.inner.metrics.rejected(
                        Rejection::Timestamp,
                        &format_args!("{}/{}: {message}", b.device, p.metric),
                    );
                    span.record("otel.status_code", "ERROR");
                    span.record("error", message.as_str());
                    return Err(IngestError::Invalid(ParseError::new(
                        format!("{}/{}", b.device, p.metric),
                        message,
                    )));
                }
            }
        }
        if let Err(e) = self.admit_series(tenant, &batches).await {
            span.record("otel.status_code", "ERROR");
            return Err(e);
        }
        let mut records = Vec::with_capacity(batches.len());
        let mut points = 0usize;
        for b in batches.into_iter().filter(|b| !b.points.is_empty()) {
            points += b.points.len();
            let env = Envelope {
                tenant: tenant.to_string(),
                device: b.device,
                received_at_ns,
                traceparent: trace.traceparent.to_string(),
                tracestate: trace.tracestate.to_string(),
                content_type: ctx.content_type.clone(),
                kind: ctx.kind,
                points: b.points,
            };
            let key = Bytes::from(envelope::record_key(tenant, &env.device));
            for value in encode_split(env, self.inner.config.max_record_bytes) {
                records.push(Record {
                    key: key.clone(),
                    value: Bytes::from(value),
                    headers: self.headers(tenant, &ctx.content_type, trace),
                    timestamp_ms: received_at_ns / 1_000_000,
                });
            }
        }
        if records.is_empty() {
            return Ok(());
        }
        span.record("points", points);
        span.record("records", records.len());
        self.inner.metrics.received(tenant, points);
        let started = Instant::now();
        let result = self.inner.log.append_batch(records).await;
        let elapsed = started.elapsed();
        self.inner
            .metrics
            .appended(tenant, points, elapsed, result.is_ok());
        span.record("log.append_ms", elapsed.as_secs_f64() * 1e3);
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                let why = if matches!(e, LogError::Backpressure) {
                    Rejection::Overloaded
                } else {
                    Rejection::Log
                };
                self.inner.metrics.rejected(
                    why,
                    &format_args!("tenant {tenant}: log append failed, the client will retry: {e}"),
                );
                span.record("otel.status_code", "ERROR");
                span.record("error", tracing::field::display(&e));
                Err(e.into())
            }
        }
    }

    fn headers(&self, tenant: &str, content_type: &str, trace: Trace<'_>) -> Vec<(String, Bytes)> {
        let mut h = vec![
            (
                headers::CONTENT_TYPE.to_string(),
                Bytes::from(content_type.to_string()),
            ),
            (headers::TENANT.to_string(), Bytes::from(tenant.to_string())),
            (
                headers::SCHEMA_VERSION.to_string(),
                Bytes::from(envelope::SCHEMA_VERSION.to_string()),
            ),
        ];
        if !trace.traceparent.is_empty() {
            h.push((
                headers::TRACEPARENT.to_string(),
                Bytes::from(trace.traceparent.to_string()),
            ));
            if !trace.tracestate.is_empty() {
                h.push((
                    headers::TRACESTATE.to_string(),
                    Bytes::from(trace.tracestate.to_string()),
                ));
            }
        }
        h
    }
}

/// How a failed authentication is counted: an unknown credential is
/// `unauthenticated`; anything else (refused, or the directory failed)
/// `forbidden`.
fn auth_rejection(e: &DirectoryError) -> Rejection {
    if *e == DirectoryError::Unauthenticated {
        Rejection::Unauthenticated
    } else {
        Rejection::Forbidden
    }
}

/// The W3C trace context written on an append's records (empty: none).
#[derive(Debug, Clone, Copy)]
struct Trace<'a> {
    traceparent: &'a str,
    tracestate: &'a str,
}

/// Encodes `env`, split into envelopes of at most `max_bytes` each (in
/// point order, so per-device order holds across the pieces). A single
/// point larger than `max_bytes` cannot be split further and is returned
/// as is: the request limits keep points far smaller than a record.
fn encode_split(env: Envelope, max_bytes: usize) -> Vec<Vec<u8>> {
    let encoded = env.encode();
    if encoded.len() <= max_bytes || env.points.len() <= 1 {
        return vec![encoded];
    }
    // Split in proportion to the overshoot, so one pass usually suffices.
    let pieces = encoded.len().div_ceil(max_bytes.max(1)).max(2);
    let per_piece = env.points.len().div_ceil(pieces);
    let mut out = Vec::with_capacity(pieces);
    let mut points = env.points;
    let template = Envelope {
        points: Vec::new(),
        ..env
    };
    while !points.is_empty() {
        let rest = points.split_off(per_piece.min(points.len()));
        let piece = Envelope {
            points,
            ..template.clone()
        };
        out.extend(encode_split(piece, max_bytes));
        points = rest;
    }
    out
}

#[cfg(test)]
mod tests {
    use tributary_core::{Point, Value};

    use super::*;

    fn envelope(points: usize) -> Envelope {
        Envelope {
            tenant: "acme".into(),
            device: "d1".into(),
            received_at_ns: 1,
            traceparent: String::new(),
            tracestate: String::new(),
            content_type: "application/json".into(),
            kind: tributary_core::envelope::Kind::Telemetry,
            points: (0..points)
                .map(|i| Point {
                    metric: format!("metric_{}", i % 7),
                    ts_ns: 1_700_000_000_000_000_000 + i as i64,
                    value: Value::F64(i as f64 * 0.5),
                })
                .collect(),
        }
    }

    #[test]
    fn large_batches_split_into_records_under_the_limit_in_order() {
        let env = envelope(50_000);
        let whole = env.encode().len();
        let max = 64 * 1024;
        assert!(
            whole > 10 * max,
            "the test needs a batch well over the limit"
        );
        let pieces = encode_split(env.clone(), max);
        assert!(pieces.len() >= whole / max);
        let mut points = Vec::new();
        for p in &pieces {
            assert!(p.len() <= max, "a piece of {} bytes exceeds {max}", p.len());
            let d = Envelope::decode(p, &Limits::default()).unwrap();
            assert_eq!((d.tenant.as_str(), d.device.as_str()), ("acme", "d1"));
            points.extend(d.points);
        }
        assert_eq!(points, env.points, "every point, once, in order");
    }

    #[test]
    fn small_batches_stay_one_record() {
        let env = envelope(10);
        assert_eq!(encode_split(env.clone(), 64 * 1024), vec![env.encode()]);
    }
}
