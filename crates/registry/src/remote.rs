//! [`RemoteDirectory`]: the `tributary_core::directory` traits over the
//! registry's `DirectoryService` gRPC ([`crate::DirectoryGrpc`]), for ingest
//! frontends and query replicas that run apart from the registry.
//!
//! It caches exactly like [`crate::LocalDirectory`] (the same caching layer,
//! see [`crate::directory`]); its caches are invalidated by the events it is
//! given, in practice a receiver of [`crate::events::tail_events`], which
//! reads the registry's events from the log topic
//! `tributary.device-events.v1`.
//!
//! The client is bounded in every way: the channel connects lazily (a
//! registry that is down at start-up is not an error), with a connect
//! timeout; each call has a deadline covering queueing, connecting and the
//! answer; at most `max_concurrent_requests` calls are in flight. An
//! unreachable or silent registry is [`DirectoryError::Unavailable`] within
//! the deadline, never a hang; frontends answer 503 or MQTT 0x88.
//!
//! Wiring, in a frontend process:
//!
//! ```no_run
//! # async fn wire(log: std::sync::Arc<dyn tributary_log::Log>, keys: tributary_auth::JwtKeys)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use tributary_registry::{DirectoryConfig, RemoteDirectory, events::tail_events};
//!
//! // `log` is the `tributary.device-events.v1` topic.
//! let events = tail_events(log);
//! let token = keys.service_token("ingest-mqtt")?;
//! let directory = RemoteDirectory::connect(
//!     "http://registry:7001",
//!     token,
//!     events,
//!     DirectoryConfig::default(),
//! )?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use tributary_core::directory::{
    AppGrants, Application, DeviceInfo, DirectoryError, PresenceInfo, Principal, TenantPolicy,
};
use tributary_core::selector::Selector;
use tributary_proto::v1 as pb;
use tributary_proto::v1::directory_service_client::DirectoryServiceClient;

use crate::batch::{BatchFuture, BatchStats, Batcher};
use crate::directory::{
    CachedDirectory, DirectoryConfig, DirectorySource, delegate_directory_traits,
};
use crate::directory_grpc::{MAX_BATCH_ITEMS, error_from_item, error_from_status};
use crate::service::{Authenticated, AuthenticatedApplication, RegistryEvent};
use crate::store::TokenHash;

/// Largest answer accepted from the registry (a `SelectDevices` of up to
/// `max_list_results` devices with their labels).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// How a [`RemoteDirectory`] talks to the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RemoteConfig {
    /// Longest wait for a TCP connection to the registry
    /// (`connect_timeout_ms`, in milliseconds).
    #[serde(rename = "connect_timeout_ms", with = "millis")]
    pub connect_timeout: Duration,
    /// Deadline of one call, from the moment it is made: waiting for a
    /// connection and for a free slot included (`request_timeout_ms`).
    #[serde(rename = "request_timeout_ms", with = "millis")]
    pub request_timeout: Duration,
    /// Most calls in flight to the registry at once; more wait (within
    /// their deadline).
    pub max_concurrent_requests: usize,
    /// Token lookups and presence reports made at once go to the registry
    /// together, up to this many per call (`AuthenticateTokens`,
    /// `ReportPresences`), so a fleet reconnecting at once is not one round
    /// trip per device. 0: one call each.
    pub max_batch: usize,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            max_concurrent_requests: 256,
            max_batch: 256,
        }
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Puts the service token on every call.
#[derive(Clone)]
struct BearerToken(MetadataValue<Ascii>);

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

type Client = DirectoryServiceClient<InterceptedService<Channel, BearerToken>>;

/// Batch calls of one kind under way at once.
const BATCHES_IN_FLIGHT: usize = 4;

/// The gRPC client, as a [`RemoteDirectory`]'s source.
pub(crate) struct RemoteSource {
    client: Client,
    endpoint: String,
    request_timeout: Duration,
    /// Token lookups, batched (`max_batch` > 0).
    tokens: Option<Batcher<String, Authenticated>>,
    /// Presence reports, batched.
    reports: Option<Batcher<pb::ReportPresenceRequest, ()>>,
}

impl fmt::Debug for RemoteSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token stays out of logs.
        f.debug_struct("RemoteSource")
            .field("endpoint", &self.endpoint)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl RemoteSource {
    fn new(client: Client, endpoint: &str, request_timeout: Duration, max_batch: usize) -> Self {
        let batched = max_batch > 0;
        // A registry older than the batch calls answers UNIMPLEMENTED: from
        // then on, one call each.
        let unsupported = Arc::new(AtomicBool::new(false));
        let tokens = batched.then(|| {
            let (client, endpoint, unsupported) =
                (client.clone(), endpoint.to_owned(), unsupported.clone());
            Batcher::new(
                max_batch,
                BATCHES_IN_FLIGHT,
                request_timeout,
                move |tokens| {
                    let (client, endpoint, unsupported) =
                        (client.clone(), endpoint.clone(), unsupported.clone());
                    Box::pin(authenticate_tokens(
                        client,
                        endpoint,
                        request_timeout,
                        unsupported,
                        tokens,
                    )) as BatchFuture<Authenticated>
                },
            )
        });
        let reports = batched.then(|| {
            let (client, endpoint) = (client.clone(), endpoint.to_owned());
            Batcher::new(
                max_batch,
                BATCHES_IN_FLIGHT,
                request_timeout,
                move |reports| {
                    let (client, endpoint, unsupported) =
                        (client.clone(), endpoint.clone(), unsupported.clone());
                    Box::pin(report_presences(
                        client,
                        endpoint,
                        request_timeout,
                        unsupported,
                        reports,
                    )) as BatchFuture<()>
                },
            )
        });
        Self {
            client,
            endpoint: endpoint.to_owned(),
            request_timeout,
            tokens,
            reports,
        }
    }

    /// Runs one call within the deadline.
    async fn call<T>(
        &self,
        rpc: &'static str,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T, DirectoryError> {
        call_within(&self.endpoint, self.request_timeout, rpc, call).await
    }

    /// Batch calls made so far: token lookups, presence reports.
    fn batch_stats(&self) -> (BatchStats, BatchStats) {
        let stats = |b: Option<BatchStats>| b.unwrap_or_default();
        (
            stats(self.tokens.as_ref().map(Batcher::stats)),
            stats(self.reports.as_ref().map(Batcher::stats)),
        )
    }
}

/// Runs one call of `rpc` to `endpoint` within `timeout`.
async fn call_within<T>(
    endpoint: &str,
    timeout: Duration,
    rpc: &'static str,
    call: impl Future<Output = Result<Response<T>, Status>>,
) -> Result<T, DirectoryError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(error_from_status(rpc, &status)),
        Err(_) => {
            tracing::warn!(rpc, %endpoint, "directory call timed out");
            Err(DirectoryError::Unavailable(format!(
                "the registry did not answer {rpc} within {timeout:?}"
            )))
        }
    }
}

/// One batch call of `rpc` within `timeout`. `Ok(None)`: the registry
/// predates batch calls (UNIMPLEMENTED); that is logged once, and
/// `unsupported` set so that they are not tried again.
async fn batch_call<T>(
    endpoint: &str,
    timeout: Duration,
    unsupported: &AtomicBool,
    rpc: &'static str,
    call: impl Future<Output = Result<Response<T>, Status>>,
) -> Result<Option<T>, DirectoryError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(answer)) => Ok(Some(answer.into_inner())),
        Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
            if !unsupported.swap(true, Ordering::Relaxed) {
                tracing::warn!(%endpoint, "the registry has no batch calls (an older version): one call per lookup");
            }
            Ok(None)
        }
        Ok(Err(status)) => Err(error_from_status(rpc, &status)),
        Err(_) => Err(DirectoryError::Unavailable(format!(
            "the registry did not answer {rpc} within {timeout:?}"
        ))),
    }
}

/// One `AuthenticateTokens` call, or one `AuthenticateToken` per token
/// against an older registry.
async fn authenticate_tokens(
    mut client: Client,
    endpoint: String,
    timeout: Duration,
    unsupported: Arc<AtomicBool>,
    tokens: Vec<String>,
) -> Result<Vec<Result<Authenticated, DirectoryError>>, DirectoryError> {
    use pb::authenticate_token_result::Result as R;
    if !unsupported.load(Ordering::Relaxed) {
        let call = client.authenticate_tokens(pb::AuthenticateTokensRequest {
            tokens: tokens.clone(),
        });
        if let Some(answer) =
            batch_call(&endpoint, timeout, &unsupported, "AuthenticateTokens", call).await?
        {
            return Ok(answer
                .results
                .into_iter()
                .map(|r| match r.result {
                    Some(R::Credential(c)) => credential_from_proto(c),
                    Some(R::Error(e)) => Err(error_from_item("AuthenticateTokens", &e)),
                    None => Err(malformed("a token result without a result")),
                })
                .collect());
        }
    }
    Ok(futures::future::join_all(tokens.into_iter().map(|token| {
        let mut client = client.clone();
        let endpoint = endpoint.clone();
        async move {
            let call = client.authenticate_token(pb::AuthenticateTokenRequest { token });
            credential_from_proto(call_within(&endpoint, timeout, "AuthenticateToken", call).await?)
        }
    }))
    .await)
}

/// One `ReportPresences` call, or one `ReportPresence` per report against
/// an older registry.
async fn report_presences(
    mut client: Client,
    endpoint: String,
    timeout: Duration,
    unsupported: Arc<AtomicBool>,
    reports: Vec<pb::ReportPresenceRequest>,
) -> Result<Vec<Result<(), DirectoryError>>, DirectoryError> {
    use pb::report_presence_result::Result as R;
    if !unsupported.load(Ordering::Relaxed) {
        let call = client.report_presences(pb::ReportPresencesRequest {
            reports: reports.clone(),
        });
        if let Some(answer) =
            batch_call(&endpoint, timeout, &unsupported, "ReportPresences", call).await?
        {
            return Ok(answer
                .results
                .into_iter()
                .map(|r| match r.result {
                    Some(R::Presence(_)) => Ok(()),
                    Some(R::Error(e)) => Err(error_from_item("ReportPresences", &e)),
                    None => Err(malformed("a presence result without a result")),
                })
                .collect());
        }
    }
    Ok(futures::future::join_all(reports.into_iter().map(|report| {
        let mut client = client.clone();
        let endpoint = endpoint.clone();
        async move {
            let call = client.report_presence(report);
            call_within(&endpoint, timeout, "ReportPresence", call)
                .await
                .map(|_| ())
        }
    }))
    .await)
}

/// A malformed answer: the server is not the directory this client knows.
fn malformed(what: &str) -> DirectoryError {
    tracing::error!(what, "malformed directory answer");
    DirectoryError::Unavailable(format!("malformed directory answer: {what}"))
}

fn credential_from_proto(c: pb::DirectoryCredential) -> Result<Authenticated, DirectoryError> {
    use pb::directory_credential::Principal as P;
    let principal = match c.principal {
        Some(P::Device(d)) => Principal::Device {
            tenant: d.tenant,
            device: d.device,
        },
        Some(P::TenantIngest(t)) => Principal::TenantIngest {
            tenant: t.tenant,
            credential_id: c.credential_id.clone(),
        },
        None => return Err(malformed("credential without a principal")),
    };
    Ok(Authenticated {
        principal,
        credential_id: c.credential_id,
        expires_at_ns: c.expires_at_ns,
    })
}

fn application_from_proto(a: pb::DirectoryApplication) -> AuthenticatedApplication {
    AuthenticatedApplication {
        application: Application {
            tenant: a.tenant,
            name: a.name,
            credential_id: a.credential_id,
            grants: AppGrants {
                publish: a.publish,
                subscribe: a.subscribe,
            },
        },
        expires_at_ns: a.expires_at_ns,
    }
}

fn device_from_proto(d: pb::DirectoryDevice) -> DeviceInfo {
    DeviceInfo {
        id: d.id,
        labels: d.labels.into_iter().collect(),
        disabled: d.disabled,
    }
}

#[async_trait]
impl DirectorySource for RemoteSource {
    async fn credential_active(&self, tenant: &str, id: &str) -> Result<bool, DirectoryError> {
        let mut client = self.client.clone();
        let request = pb::CheckCredentialRequest {
            tenant: tenant.to_owned(),
            credential_id: id.to_owned(),
        };
        let answer = self
            .call("CheckCredential", client.check_credential(request))
            .await?;
        Ok(answer.active)
    }

    async fn resolve_token(
        &self,
        token: &str,
        _hash: &TokenHash,
    ) -> Result<Authenticated, DirectoryError> {
        if let Some(batcher) = &self.tokens {
            return batcher.submit(token.to_owned()).await;
        }
        let mut client = self.client.clone();
        let request = pb::AuthenticateTokenRequest {
            token: token.to_owned(),
        };
        let answer = self
            .call("AuthenticateToken", client.authenticate_token(request))
            .await?;
        credential_from_proto(answer)
    }

    async fn resolve_certificate(
        &self,
        fingerprint: &TokenHash,
    ) -> Result<Authenticated, DirectoryError> {
        let mut client = self.client.clone();
        let request = pb::AuthenticateCertificateRequest {
            fingerprint: crate::service::format_fingerprint(fingerprint),
        };
        let answer = self
            .call(
                "AuthenticateCertificate",
                client.authenticate_certificate(request),
            )
            .await?;
        credential_from_proto(answer)
    }

    async fn resolve_psk(&self, identity: &str) -> Result<(Authenticated, String), DirectoryError> {
        let mut client = self.client.clone();
        let request = pb::AuthenticatePskRequest {
            identity: identity.to_owned(),
        };
        let answer = self
            .call("AuthenticatePsk", client.authenticate_psk(request))
            .await?;
        let credential = answer
            .credential
            .ok_or_else(|| malformed("PSK answer without a credential"))?;
        if answer.key.is_empty() {
            return Err(malformed("PSK answer without a key"));
        }
        Ok((credential_from_proto(credential)?, answer.key))
    }

    async fn resolve_application(
        &self,
        name: &str,
        token: &str,
        _hash: &TokenHash,
    ) -> Result<AuthenticatedApplication, DirectoryError> {
        let mut client = self.client.clone();
        let request = pb::AuthenticateApplicationRequest {
            name: name.to_owned(),
            token: token.to_owned(),
        };
        let answer = self
            .call(
                "AuthenticateApplication",
                client.authenticate_application(request),
            )
            .await?;
        Ok(application_from_proto(answer))
    }

    async fn tenant_policy(&self, tenant: &str) -> Result<TenantPolicy, DirectoryError> {
        let mut client = self.client.clone();
        let request = pb::GetTenantPolicyRequest {
            tenant: tenant.to_owned(),
        };
        let settings = self
            .call("GetTenantPolicy", client.get_tenant_policy(request))
            .await?;
        // A quota this replica does not know (a newer registry) is skipped,
        // not fatal: the platform default stays in force for it.
        let mut quotas = tributary_core::quota::Quotas::default();
        for (name, value) in &settings.quotas {
            match name.parse() {
                Ok(quota) => {
                    if let Err(e) = quotas.set(quota, *value) {
                        tracing::warn!(tenant, error = %e, "ignoring an invalid quota from the registry");
                    }
                }
                Err(e) => {
                    tracing::warn!(tenant, error = %e, "ignoring an unknown quota from the registry")
                }
            }
        }
        // Retentions this replica cannot read are skipped the same way.
        let mut retention = tributary_core::retention::RetentionSettings::default();
        for (kind, keep) in &settings.retention {
            let parsed = kind
                .parse()
                .and_then(|k| keep.parse().map(|v| (k, v)))
                .and_then(|(k, v)| retention.set(k, v));
            if let Err(e) = parsed {
                tracing::warn!(tenant, error = %e, "ignoring a retention from the registry");
            }
        }
        // So are LwM2M entries this replica cannot read.
        let lwm2m_metrics = tributary_core::lwm2m::Lwm2mMetrics::from_named(
            settings
                .lwm2m_metrics
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .filter(|(k, v)| {
                    tributary_core::lwm2m::Lwm2mMetrics::from_named(
                        [(*k, *v)],
                        &tributary_core::Limits::default(),
                    )
                    .is_ok()
                }),
            &tributary_core::Limits::default(),
        )
        .unwrap_or_default();
        Ok(TenantPolicy {
            auto_provision: settings.auto_provision,
            device_tag: settings.device_tag,
            quotas,
            retention,
            lwm2m_metrics,
        })
    }

    async fn device(
        &self,
        tenant: &str,
        device: &str,
    ) -> Result<Option<DeviceInfo>, DirectoryError> {
        let mut client = self.client.clone();
        let request = pb::DeviceRef {
            tenant: tenant.to_owned(),
            device: device.to_owned(),
        };
        let answer = self.call("GetDevice", client.get_device(request)).await?;
        Ok(answer.device.map(device_from_proto))
    }

    async fn provision(
        &self,
        tenant: &str,
        device: &str,
        labels: &BTreeMap<String, String>,
        _exists: bool,
    ) -> Result<(), DirectoryError> {
        let mut client = self.client.clone();
        let request = pb::EnsureDeviceRequest {
            tenant: tenant.to_owned(),
            device: device.to_owned(),
            labels: labels.clone().into_iter().collect(),
        };
        self.call("EnsureDevice", client.ensure_device(request))
            .await?;
        Ok(())
    }

    async fn select(
        &self,
        tenant: &str,
        selector: &Selector,
    ) -> Result<Vec<DeviceInfo>, DirectoryError> {
        let text = selector.to_string();
        // The selector travels as text: refuse one whose text means
        // something else rather than select the wrong devices.
        if Selector::parse(&text).as_ref() != Ok(selector) {
            return Err(DirectoryError::Invalid(format!(
                "selector {text:?} cannot be sent as text"
            )));
        }
        let mut client = self.client.clone();
        let request = pb::SelectDevicesRequest {
            tenant: tenant.to_owned(),
            selector: text,
        };
        let answer = self
            .call("SelectDevices", client.select_devices(request))
            .await?;
        Ok(answer.devices.into_iter().map(device_from_proto).collect())
    }

    async fn report(
        &self,
        tenant: &str,
        device: &str,
        online: bool,
        at_ns: i64,
        frontend: &str,
    ) -> Result<(), DirectoryError> {
        let request = pb::ReportPresenceRequest {
            tenant: tenant.to_owned(),
            device: device.to_owned(),
            online,
            at_ns,
            frontend: frontend.to_owned(),
        };
        if let Some(batcher) = &self.reports {
            return batcher.submit(request).await;
        }
        let mut client = self.client.clone();
        self.call("ReportPresence", client.report_presence(request))
            .await?;
        Ok(())
    }

    async fn presence(
        &self,
        tenant: &str,
        device: &str,
    ) -> Result<Option<PresenceInfo>, DirectoryError> {
        let mut client = self.client.clone();
        let request = pb::DeviceRef {
            tenant: tenant.to_owned(),
            device: device.to_owned(),
        };
        let answer = self
            .call("GetPresence", client.get_presence(request))
            .await?;
        Ok(answer.presence.and_then(|p| {
            (p.last_seen_ns != 0).then_some(PresenceInfo {
                online: p.online,
                last_seen_ns: p.last_seen_ns,
                frontend: p.frontend,
            })
        }))
    }
}

/// The registry as a frontend or query replica of distributed mode sees
/// it: over gRPC, cached. See the [module docs](self).
#[derive(Debug)]
pub struct RemoteDirectory {
    inner: CachedDirectory<RemoteSource>,
}

impl RemoteDirectory {
    /// A directory over the `DirectoryService` at `endpoint`
    /// (`http://host:port`), calling with `token` (a platform admin JWT, as
    /// `JwtKeys::service_token` mints), its caches invalidated by `events`,
    /// with the default [`RemoteConfig`]. Connects lazily: the registry need
    /// not be up yet.
    ///
    /// `events` must have subscribed before the directory serves its first
    /// call (a receiver of [`crate::events::tail_events`] does).
    ///
    /// # Errors
    ///
    /// [`DirectoryError::Invalid`] for an endpoint that is not a URI or a
    /// token that cannot be a header value.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime (it spawns tasks).
    pub fn connect(
        endpoint: &str,
        token: String,
        events: broadcast::Receiver<RegistryEvent>,
        config: DirectoryConfig,
    ) -> Result<Self, DirectoryError> {
        Self::connect_with(endpoint, token, events, config, RemoteConfig::default())
    }

    /// [`RemoteDirectory::connect`] with explicit timeouts and concurrency.
    pub fn connect_with(
        endpoint: &str,
        token: String,
        events: broadcast::Receiver<RegistryEvent>,
        config: DirectoryConfig,
        remote: RemoteConfig,
    ) -> Result<Self, DirectoryError> {
        if remote.max_concurrent_requests == 0
            || remote.request_timeout.is_zero()
            || remote.connect_timeout.is_zero()
        {
            return Err(DirectoryError::Invalid(
                "directory client: timeouts and max_concurrent_requests must be positive".into(),
            ));
        }
        if remote.max_batch > MAX_BATCH_ITEMS {
            return Err(DirectoryError::Invalid(format!(
                "directory client: max_batch must be at most {MAX_BATCH_ITEMS}"
            )));
        }
        let mut bearer: MetadataValue<Ascii> = format!("Bearer {token}").parse().map_err(|_| {
            DirectoryError::Invalid("directory client: the token is not a valid header".into())
        })?;
        bearer.set_sensitive(true);
        let channel = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| DirectoryError::Invalid(format!("directory endpoint {endpoint:?}: {e}")))?
            .connect_timeout(remote.connect_timeout)
            .timeout(remote.request_timeout)
            .concurrency_limit(remote.max_concurrent_requests)
            .tcp_nodelay(true)
            .connect_lazy();
        let client = DirectoryServiceClient::with_interceptor(channel, BearerToken(bearer))
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        let source = RemoteSource::new(client, endpoint, remote.request_timeout, remote.max_batch);
        Ok(Self {
            inner: CachedDirectory::new(source, events, &config),
        })
    }

    /// The endpoint it calls.
    pub fn endpoint(&self) -> &str {
        &self.inner.source().endpoint
    }

    /// Entries in the (token, certificate and application, device, tenant)
    /// caches, for metrics and tests.
    pub fn cache_sizes(&self) -> (usize, usize, usize) {
        self.inner.cache_sizes()
    }

    /// Batch calls made so far: token lookups and presence reports (all
    /// zero with `max_batch` 0).
    pub fn batch_stats(&self) -> (BatchStats, BatchStats) {
        self.inner.source().batch_stats()
    }

    /// A device's presence, uncached: `None` for an unknown device or one
    /// no frontend ever reported. Command routing uses it to find the
    /// frontend replica that holds the device.
    pub async fn presence(
        &self,
        tenant: &str,
        device: &str,
    ) -> Result<Option<PresenceInfo>, DirectoryError> {
        self.inner.presence(tenant, device).await
    }
}

delegate_directory_traits!(RemoteDirectory);

impl RemoteDirectory {
    /// Registers `tributary_directory_batch_calls_total{call}` and
    /// `tributary_directory_batched_requests_total{call}` (`call` is
    /// `authenticate_tokens` or `report_presences`), read from this
    /// directory when `/metrics` is scraped: requests / calls is the mean
    /// batch size. The directory is held weakly.
    pub fn register_metrics(
        self: &Arc<Self>,
        registry: &mut prometheus_client::registry::Registry,
    ) {
        registry
            .sub_registry_with_prefix("tributary_directory")
            .register_collector(Box::new(BatchMetrics(Arc::downgrade(self))));
    }
}

/// The batch counters of a [`RemoteDirectory`], sampled at scrape time.
#[derive(Debug)]
struct BatchMetrics(std::sync::Weak<RemoteDirectory>);

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct CallLabel {
    call: &'static str,
}

impl prometheus_client::collector::Collector for BatchMetrics {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric as _;
        use prometheus_client::metrics::counter::ConstCounter;
        let Some(directory) = self.0.upgrade() else {
            return Ok(());
        };
        let (tokens, reports) = directory.batch_stats();
        let rows = [
            ("authenticate_tokens", tokens),
            ("report_presences", reports),
        ];
        let mut family = encoder.encode_descriptor(
            "batch_calls",
            "Batch calls to the registry (lookups and presence reports made at once, sent together), by call",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (call, stats) in rows {
            ConstCounter::new(stats.batches).encode(family.encode_family(&CallLabel { call })?)?;
        }
        let mut family = encoder.encode_descriptor(
            "batched_requests",
            "Lookups and presence reports the batch calls carried, by call",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (call, stats) in rows {
            ConstCounter::new(stats.requests).encode(family.encode_family(&CallLabel { call })?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_milliseconds_and_rejects_unknown_fields() {
        let c: RemoteConfig =
            serde_json::from_str(r#"{"request_timeout_ms": 750, "max_concurrent_requests": 8}"#)
                .expect("config");
        assert_eq!(c.request_timeout, Duration::from_millis(750));
        assert_eq!(c.max_concurrent_requests, 8);
        assert_eq!(c.connect_timeout, RemoteConfig::default().connect_timeout);
        assert!(serde_json::from_str::<RemoteConfig>(r#"{"timeout": 1}"#).is_err());
    }

    #[tokio::test]
    async fn bad_endpoints_tokens_and_limits_are_refused_at_construction() {
        let events = || broadcast::channel::<RegistryEvent>(1).1;
        let bad_endpoint = RemoteDirectory::connect(
            "not a uri",
            "t".into(),
            events(),
            DirectoryConfig::default(),
        );
        assert!(matches!(bad_endpoint, Err(DirectoryError::Invalid(_))));
        let bad_token = RemoteDirectory::connect(
            "http://127.0.0.1:1",
            "line\nbreak".into(),
            events(),
            DirectoryConfig::default(),
        );
        assert!(matches!(bad_token, Err(DirectoryError::Invalid(_))));
        let no_slots = RemoteDirectory::connect_with(
            "http://127.0.0.1:1",
            "t".into(),
            events(),
            DirectoryConfig::default(),
            RemoteConfig {
                max_concurrent_requests: 0,
                ..RemoteConfig::default()
            },
        );
        assert!(matches!(no_slots, Err(DirectoryError::Invalid(_))));
    }
}
