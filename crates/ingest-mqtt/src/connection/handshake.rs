//! The CONNECT phase: read the CONNECT within the connect timeout,
//! authenticate the device or application, attach the session (taking it
//! over when needed), report presence and answer CONNACK. What the CONNACK
//! grants is computed by the pure [`negotiate`], which unit tests call.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::stream::FuturesOrdered;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tributary_core::directory::{Credential, Principal};
use tributary_core::quota::{Quota, QuotaExceeded, Quotas};
use tributary_ingest::IngestError;
use tributary_mqtt_codec::topic::level_count;
use tributary_mqtt_codec::{
    ConnAck, Connect, DecodeError, Packet, PacketType, ProtocolVersion, ReasonCode, decode, encode,
};

use super::{CLOSE_WRITE_TIMEOUT, Connection};
use crate::Shared;
use crate::acl::Identity;
use crate::admission::Admit;
use crate::config::MqttConfig;
use crate::metrics::ConnectRefusal;
use crate::router::Attach;
use crate::tls::Peer;

/// Longest client identifier accepted, in bytes.
const MAX_CLIENT_ID_LEN: usize = 256;
/// How long presence reports may take before they are given up.
const PRESENCE_TIMEOUT: Duration = Duration::from_secs(5);

/// An attached connection after its CONNACK, ready to serve.
pub(super) struct Opened<S> {
    pub(super) conn: Connection<S>,
    pub(super) released: watch::Sender<()>,
    pub(super) device: Option<String>,
    pub(super) counted: ConnectionCount,
}

/// Reads and answers the CONNECT: authentication, session attach (taking it
/// over when needed), presence, CONNACK. `None` when the connection was
/// refused or lost before its CONNACK.
pub(super) async fn open<S>(
    shared: Arc<Shared>,
    stream: S,
    permit: crate::PendingSlot,
    peer: Peer,
) -> Option<Opened<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut rbuf = BytesMut::with_capacity(512);
    let max_packet = shared.config.max_packet_size as usize;
    let connect = match tokio::time::timeout(
        shared.config.connect_timeout(),
        read_connect(&mut reader, &mut rbuf, max_packet),
    )
    .await
    {
        Err(_) => {
            shared
                .metrics
                .connect_refused(ConnectRefusal::ConnectTimeout);
            return None;
        }
        Ok(Err(None)) => return None,
        Ok(Err(Some((error, version)))) => {
            shared
                .metrics
                .connect_refused(ConnectRefusal::MalformedConnect);
            tracing::debug!(%error, "malformed CONNECT");
            if let Some(version) = version {
                refuse(
                    &mut writer,
                    version,
                    error.reason_code(),
                    &error.to_string(),
                )
                .await;
            }
            return None;
        }
        Ok(Ok(connect)) => connect,
    };
    shared.metrics.received(PacketType::Connect);
    let connect_read = Instant::now();
    let version = connect.protocol;
    // Admission: at most `max_connect_rate` CONNECTs a second go on to
    // authentication; the rest wait their turn, or are refused at once.
    match shared.admission.admit(Instant::now()) {
        Admit::Now => {}
        Admit::After(wait) => {
            shared.metrics.connect_delayed();
            tokio::time::sleep(wait).await;
            shared.metrics.connect_phase("admission", wait);
        }
        Admit::Refused { retry_after } => {
            shared.metrics.connect_refused(ConnectRefusal::ConnectRate);
            let secs = retry_after.as_secs().max(1);
            refuse_with(
                &mut writer,
                version,
                ReasonCode::ConnectionRateExceeded,
                &format!(
                    "the server takes {} connects/s; retry after {secs} s",
                    shared.config.max_connect_rate
                ),
                &[("retry-after", secs.to_string())],
            )
            .await;
            return None;
        }
    }
    let phase = Instant::now();
    let accepted = match accept(&shared, &connect, &peer).await {
        Ok(a) => a,
        Err((code, why, message)) => {
            shared.metrics.connect_refused(why);
            refuse(&mut writer, version, code, message).await;
            return None;
        }
    };

    // The tenant's quotas (cached by the directory), and a connection
    // within them. Taking a session over replaces a connection: never
    // refused for the tenant's connection quota.
    let tenant = accepted.identity.tenant().to_owned();
    shared.metrics.connect_phase("auth", phase.elapsed());
    let phase = Instant::now();
    let quotas = match shared.ingestor.quotas(&tenant).await {
        Ok(quotas) => quotas,
        Err(e) => {
            let (code, why, message) = auth_refusal(&e);
            shared.metrics.connect_refused(why);
            refuse(&mut writer, version, code, message).await;
            return None;
        }
    };
    if let Err(wait) = shared.tenant_connect_rates.admit(
        &tenant,
        quotas.get(Quota::ConnectsPerSec),
        quotas.get(Quota::ConnectsBurst),
        Instant::now(),
    ) {
        let e = QuotaExceeded::rate(
            &tenant,
            Quota::ConnectsPerSec,
            quotas.get(Quota::ConnectsPerSec),
            wait,
        );
        refuse_for_quota(&shared, &mut writer, version, &e).await;
        return None;
    }
    let takeover = shared.router().is_attached(&tenant, &accepted.client_id);
    let counted = match ConnectionCount::reserve(&shared, &tenant, &quotas, takeover) {
        Ok(counted) => counted,
        Err(e) => {
            refuse_for_quota(&shared, &mut writer, version, &e).await;
            return None;
        }
    };

    shared.metrics.connect_phase("quotas", phase.elapsed());
    let phase = Instant::now();
    // Attach the session, taking it over from another connection if needed.
    let mut force = false;
    let device = accepted.identity.device();
    let attached = loop {
        let outcome = shared.router().attach(
            &tenant,
            &accepted.client_id,
            device,
            &quotas,
            connect.clean_start,
            force,
        );
        match outcome {
            Attach::Attached(a) => break a,
            Attach::Quota(e) => {
                refuse_for_quota(&shared, &mut writer, version, &e).await;
                return None;
            }
            Attach::TooManySessions => {
                shared
                    .metrics
                    .connect_refused(ConnectRefusal::TooManySessions);
                refuse(
                    &mut writer,
                    version,
                    ReasonCode::QuotaExceeded,
                    "too many sessions",
                )
                .await;
                return None;
            }
            Attach::Busy(mut released) => {
                let let_go = tokio::time::timeout(shared.config.drain_timeout(), async {
                    // The old connection never sends: `changed` fails once
                    // it has dropped its sender, i.e. let the session go.
                    while released.changed().await.is_ok() {}
                })
                .await;
                if let_go.is_err() {
                    tracing::warn!(client_id = %accepted.client_id, "previous connection did not let go in time");
                    force = true;
                }
            }
        }
    };

    let Negotiated {
        connack,
        expiry_secs,
        keep_alive,
        outbound_window,
        client_max_packet,
    } = negotiate(
        &shared.config,
        &connect,
        accepted.assigned.as_deref(),
        attached.present,
    );
    let device = accepted.identity.device().map(str::to_owned);
    {
        let mut router = shared.router();
        router.bind(
            attached.session.id,
            &accepted.identity,
            &accepted.credential,
        );
        if attached.present {
            // A resumed session keeps only the subscriptions the credential
            // it resumes with still allows (an application's grants may
            // have changed since, or it may be another token).
            let dropped = router
                .retain_subscriptions(attached.session.id, |f| accepted.identity.may_subscribe(f));
            if dropped > 0 {
                tracing::info!(tenant = %tenant, client_id = %accepted.client_id, dropped, "resumed session: subscriptions outside the credential's grants removed");
            }
        }
    }
    shared.metrics.connect_phase("session", phase.elapsed());
    // The device's presence is reported beside the CONNACK, not before
    // it: a storm of reconnects would otherwise queue every CONNACK behind
    // the presence writes. The connection holds the client's SUBSCRIBEs
    // until the report is durable, so the frontend that holds the device is
    // known before the device can be sent a command.
    let mut presence_pending = None;
    let bucket = match &device {
        Some(d) => {
            let (first, bucket) = shared.router().device_connected(&tenant, d);
            if first {
                let (shared, tenant, d) = (shared.clone(), tenant.clone(), d.clone());
                presence_pending = Some(tokio::spawn(async move {
                    let phase = Instant::now();
                    report_presence(&shared, &tenant, &d, true).await;
                    shared.metrics.connect_phase("presence", phase.elapsed());
                }));
            }
            bucket
        }
        None => None,
    };
    shared.metrics.connection_opened();
    tracing::debug!(tenant = %tenant, client_id = %accepted.client_id, %version, present = attached.present, "connected");

    let mut conn = Connection {
        shutdown: shared.shutdown.subscribe(),
        shared: shared.clone(),
        version,
        reader,
        writer,
        rbuf,
        wbuf: BytesMut::new(),
        tenant,
        client_id: accepted.client_id,
        identity: accepted.identity,
        principal: accepted.principal,
        session: attached.session,
        generation: attached.generation,
        owned: attached.owned,
        kick: attached.kick,
        expiry_secs,
        keep_alive: (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500)),
        last_read: Instant::now(),
        client_max_packet,
        outbound_window: usize::from(outbound_window),
        aliases: HashMap::new(),
        out_aliases: super::aliases::OutboundAliases::new(match version {
            ProtocolVersion::V5 => connect
                .properties
                .topic_alias_maximum
                .unwrap_or(0)
                .min(shared.config.max_outbound_topic_aliases),
            ProtocolVersion::V311 => 0,
        }),
        inflight: FuturesOrdered::new(),
        inflight_ids: HashSet::new(),
        will: connect.will.clone(),
        bucket,
        problem_info: connect
            .properties
            .request_problem_information
            .unwrap_or(true),
        stalled_since: None,
        retained: Default::default(),
        presence_pending,
        credential_expires: accepted.credential.expires_at_ns.map(|at| {
            let left = at.saturating_sub(tributary_core::time::now_ns()).max(0);
            Instant::now() + Duration::from_nanos(left.unsigned_abs())
        }),
    };
    conn.send(connack.into());
    shared.metrics.connect_took(connect_read.elapsed());
    drop(permit);
    conn.resend_in_flight();
    Some(Opened {
        conn,
        released: attached.released,
        device,
        counted,
    })
}

/// A connection counted in the server's open connections and in its
/// tenant's (the `connections` quota); uncounted when dropped.
pub(super) struct ConnectionCount {
    shared: Arc<Shared>,
    tenant: String,
    limit: u64,
}

impl ConnectionCount {
    /// Counts a connection of `tenant`, unless the tenant already has its
    /// quota of connections (a `takeover` replaces one, so it always fits).
    fn reserve(
        shared: &Arc<Shared>,
        tenant: &str,
        quotas: &Quotas,
        takeover: bool,
    ) -> Result<Self, QuotaExceeded> {
        let limit = quotas.get(Quota::Connections);
        let used = {
            let mut counts = shared.tenant_connections();
            let n = counts.entry(tenant.to_owned()).or_insert(0);
            if !takeover && *n as u64 >= limit {
                return Err(QuotaExceeded {
                    tenant: tenant.to_owned(),
                    quota: Quota::Connections,
                    limit,
                    retry_after_secs: None,
                });
            }
            *n += 1;
            *n
        };
        shared
            .ingestor
            .quota_metrics()
            .observe(tenant, Quota::Connections, limit, used as u64);
        shared
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Ok(Self {
            shared: shared.clone(),
            tenant: tenant.to_owned(),
            limit,
        })
    }
}

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        self.shared
            .connections
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        let used = {
            let mut counts = self.shared.tenant_connections();
            let Some(n) = counts.get_mut(&self.tenant) else {
                return;
            };
            *n -= 1;
            let used = *n;
            if used == 0 {
                counts.remove(&self.tenant);
            }
            used
        };
        self.shared.ingestor.quota_metrics().observe(
            &self.tenant,
            Quota::Connections,
            self.limit,
            used as u64,
        );
    }
}

/// Refuses a CONNECT for a tenant quota, naming it: a count (connections,
/// sessions) gets CONNACK 0x97; a rate (`connects_per_sec`, which carries
/// a retry time) gets 0x9F Connection rate exceeded with a `retry-after`
/// user property in seconds. 3.1.1: 3, server unavailable, for both.
async fn refuse_for_quota<W: AsyncWrite + Unpin>(
    shared: &Shared,
    writer: &mut W,
    version: ProtocolVersion,
    e: &QuotaExceeded,
) {
    shared.metrics.connect_refused(ConnectRefusal::Quota);
    shared.ingestor.quota_metrics().exceeded(e);
    match e.retry_after_secs {
        None => {
            let message = format!("the tenant is at its {} quota of {}", e.quota, e.limit);
            refuse(writer, version, ReasonCode::QuotaExceeded, &message).await;
        }
        Some(secs) => {
            let message = format!(
                "the tenant is at its {} quota of {}/s; retry after {secs} s",
                e.quota, e.limit
            );
            refuse_with(
                writer,
                version,
                ReasonCode::ConnectionRateExceeded,
                &message,
                &[("retry-after", secs.to_string())],
            )
            .await;
        }
    }
}

/// Reads until a whole CONNECT is in. `Err(None)`: the socket closed or
/// failed; `Err(Some(..))`: the bytes are not a valid CONNECT, with the
/// version the client asked for when it can be read.
async fn read_connect<R: AsyncRead + Unpin>(
    reader: &mut R,
    rbuf: &mut BytesMut,
    max_packet: usize,
) -> Result<Connect, Option<(DecodeError, Option<ProtocolVersion>)>> {
    loop {
        match decode(rbuf, None, max_packet) {
            Ok(Some(Packet::Connect(c))) => return Ok(*c),
            // The codec refuses anything but CONNECT as a first packet.
            Ok(Some(other)) => {
                let e = DecodeError::ExpectedConnect {
                    packet_type: other.packet_type() as u8,
                };
                return Err(Some((e, None)));
            }
            Ok(None) => {}
            Err(e) => return Err(Some((e, peek_connect_version(rbuf)))),
        }
        if rbuf.capacity() - rbuf.len() < 256 {
            rbuf.reserve(rbuf.len().max(512));
        }
        match reader.read_buf(rbuf).await {
            Ok(0) | Err(_) => return Err(None),
            Ok(_) => {}
        }
    }
}

/// The protocol version a (possibly malformed) CONNECT asks for, read from
/// its fixed position: type byte, remaining length, `00 04 MQTT`, level.
fn peek_connect_version(buf: &[u8]) -> Option<ProtocolVersion> {
    if buf.first()? >> 4 != 1 {
        return None;
    }
    let len_bytes = buf.iter().skip(1).take(4).position(|b| b & 0x80 == 0)? + 1;
    let rest = buf.get(1 + len_bytes..)?;
    if rest.get(..6)? != b"\x00\x04MQTT" {
        return None;
    }
    ProtocolVersion::from_level(*rest.get(6)?)
}

/// Sends a refusing CONNACK (when the version can express the reason) and
/// closes.
async fn refuse<W: AsyncWrite + Unpin>(
    writer: &mut W,
    version: ProtocolVersion,
    code: ReasonCode,
    message: &str,
) {
    refuse_with(writer, version, code, message, &[]).await;
}

/// [`refuse`], with user properties on a 5.0 CONNACK.
async fn refuse_with<W: AsyncWrite + Unpin>(
    writer: &mut W,
    version: ProtocolVersion,
    code: ReasonCode,
    message: &str,
    user_properties: &[(&str, String)],
) {
    let code = match version {
        ProtocolVersion::V5 if code.is_allowed_in(PacketType::ConnAck) => Some(code),
        ProtocolVersion::V5 => Some(if code == ReasonCode::TopicAliasInvalid {
            ReasonCode::ProtocolError
        } else {
            ReasonCode::MalformedPacket
        }),
        ProtocolVersion::V311 => match code {
            c if c.to_v311_connack().is_some() => Some(c),
            ReasonCode::QuotaExceeded
            | ReasonCode::ServerShuttingDown
            | ReasonCode::ConnectionRateExceeded => Some(ReasonCode::ServerUnavailable),
            // 3.1.1 has no CONNACK for a malformed CONNECT: just close.
            _ => None,
        },
    };
    if let Some(code) = code {
        let mut ack = ConnAck::new(code);
        if version == ProtocolVersion::V5 {
            ack.properties.reason_string = Some(message.chars().take(200).collect());
            ack.properties.user_properties = user_properties
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect();
        }
        let mut out = BytesMut::new();
        if encode(&ack.into(), version, &mut out).is_ok() {
            let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, async {
                let _ = writer.write_all(&out).await;
                let _ = writer.flush().await;
            })
            .await;
        }
    }
    let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, writer.shutdown()).await;
}

/// A refused CONNECT: reason code, event reason, message.
type Refusal = (ReasonCode, ConnectRefusal, &'static str);

/// The device whose registered certificate the client presented in the TLS
/// handshake, if any. An unregistered certificate is no credential: the
/// CONNECT's token decides.
async fn certificate_principal(
    shared: &Shared,
    peer: &Peer,
) -> Result<Option<(Principal, Credential)>, Refusal> {
    let Some(fingerprint) = peer.certificate.as_deref() else {
        return Ok(None);
    };
    match shared.ingestor.authenticate_certificate(fingerprint).await {
        Ok(authenticated) => Ok(Some(authenticated)),
        Err(IngestError::Unauthenticated | IngestError::Invalid(_) | IngestError::TooLarge(_)) => {
            Ok(None)
        }
        Err(e) => Err(auth_refusal(&e)),
    }
}

/// The device (or tenant credential) of the CONNECT's token; the user name
/// is required.
async fn token_principal(shared: &Shared, c: &Connect) -> Result<(Principal, Credential), Refusal> {
    if c.username.is_none() {
        return Err((
            ReasonCode::BadUserNameOrPassword,
            ConnectRefusal::NoCredentials,
            "user name (device id) required",
        ));
    }
    let token = c
        .password
        .as_deref()
        .and_then(|p| std::str::from_utf8(p).ok())
        .unwrap_or_default();
    shared
        .ingestor
        .authenticate_credential(token)
        .await
        .map_err(|e| auth_refusal(&e))
}

/// How a failed authentication refuses the CONNECT.
fn auth_refusal(error: &IngestError) -> Refusal {
    match error {
        IngestError::Forbidden(_) | IngestError::UnknownDevice(_) => (
            ReasonCode::NotAuthorized,
            ConnectRefusal::Forbidden,
            "the device may not connect",
        ),
        IngestError::Overloaded { .. } | IngestError::Unavailable(_) => (
            ReasonCode::ServerUnavailable,
            ConnectRefusal::AuthUnavailable,
            "authentication is unavailable, retry later",
        ),
        IngestError::Unauthenticated | IngestError::Invalid(_) | IngestError::TooLarge(_) => (
            ReasonCode::BadUserNameOrPassword,
            ConnectRefusal::BadCredentials,
            "invalid device id or token",
        ),
        IngestError::Quota(_) => (
            ReasonCode::QuotaExceeded,
            ConnectRefusal::Quota,
            "the tenant is over a quota",
        ),
    }
}

/// A CONNECT that passed authentication.
struct Accepted {
    identity: Identity,
    /// The device principal telemetry is ingested as; `None` for
    /// applications, whose publishes are plain pub/sub.
    principal: Option<Principal>,
    /// The session key: the client id, or for applications
    /// `$app/{name}/{client id}`, which no device client id can equal.
    client_id: String,
    /// The client id the server chose, when the client sent an empty one.
    assigned: Option<String>,
    /// The credential it authenticated with: checked again while the
    /// connection lives (expiry, missed revocations).
    credential: Credential,
}

/// Checks a CONNECT: credentials, client id, will, limits.
async fn accept(shared: &Shared, c: &Connect, peer: &Peer) -> Result<Accepted, Refusal> {
    if let Some(will) = &c.will
        && level_count(&will.topic) > shared.config.max_topic_levels
    {
        return Err((
            ReasonCode::TopicNameInvalid,
            ConnectRefusal::WillTopicInvalid,
            "the will topic has more levels than the server allows",
        ));
    }
    if c.properties.authentication_method.is_some() {
        return Err((
            ReasonCode::BadAuthenticationMethod,
            ConnectRefusal::BadAuthMethod,
            "enhanced authentication is not supported",
        ));
    }
    if shared
        .connections
        .load(std::sync::atomic::Ordering::Acquire)
        >= shared.config.max_connections
    {
        return Err((
            ReasonCode::QuotaExceeded,
            ConnectRefusal::MaxConnections,
            "too many connections",
        ));
    }
    if let Some(name) = c.username.as_deref().and_then(|u| u.strip_prefix("app:")) {
        return accept_application(shared, c, name).await;
    }
    let (principal, credential) = match certificate_principal(shared, peer).await? {
        Some(principal) => principal,
        None => token_principal(shared, c).await?,
    };
    let (tenant, device) = match &principal {
        Principal::Device { tenant, device }
            if c.username.as_deref().is_none_or(|u| u == device) =>
        {
            (tenant.clone(), device.clone())
        }
        Principal::Device { .. } => {
            return Err((
                ReasonCode::BadUserNameOrPassword,
                ConnectRefusal::BadCredentials,
                "invalid device id or token",
            ));
        }
        Principal::TenantIngest { .. } => {
            return Err((
                ReasonCode::NotAuthorized,
                ConnectRefusal::Forbidden,
                "tenant ingest tokens cannot connect over MQTT",
            ));
        }
    };
    let (client_id, assigned) = match assigned_client_id(shared, c, &format!("{device}/"))? {
        Some(assigned) => (assigned.clone(), Some(assigned)),
        None => {
            let bound = c.client_id == device
                || c.client_id
                    .strip_prefix(device.as_str())
                    .is_some_and(|rest| rest.starts_with('/'));
            if !bound {
                return Err((
                    ReasonCode::ClientIdentifierNotValid,
                    ConnectRefusal::ClientId,
                    "the client id must be the device id, or the device id followed by '/' and a suffix",
                ));
            }
            (c.client_id.clone(), None)
        }
    };
    let identity = Identity::Device { tenant, device };
    if let Some(will) = &c.will
        && !identity.may_publish(&will.topic)
    {
        return Err((
            ReasonCode::NotAuthorized,
            ConnectRefusal::WillNotAuthorized,
            "the will topic is outside the device's topics",
        ));
    }
    Ok(Accepted {
        identity,
        principal: Some(principal),
        credential,
        client_id,
        assigned,
    })
}

/// The client id the server assigns (`{prefix}auto-{n}`) when the CONNECT
/// has none, which only a clean session may ask for; `None` when the client
/// named one, which is then checked for length.
fn assigned_client_id(
    shared: &Shared,
    c: &Connect,
    prefix: &str,
) -> Result<Option<String>, Refusal> {
    if !c.client_id.is_empty() {
        if c.client_id.len() > MAX_CLIENT_ID_LEN {
            return Err((
                ReasonCode::ClientIdentifierNotValid,
                ConnectRefusal::ClientId,
                "the client id is too long",
            ));
        }
        return Ok(None);
    }
    if c.protocol == ProtocolVersion::V311 && !c.clean_start {
        return Err((
            ReasonCode::ClientIdentifierNotValid,
            ConnectRefusal::ClientId,
            "an empty client id needs a clean session",
        ));
    }
    let n = shared
        .client_ids
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(Some(format!("{prefix}auto-{n}")))
}

/// Checks the CONNECT of a tenant application (user name `app:<name>`):
/// its token, any client id, a will within its publish grants.
async fn accept_application(shared: &Shared, c: &Connect, name: &str) -> Result<Accepted, Refusal> {
    let token = c
        .password
        .as_deref()
        .and_then(|p| std::str::from_utf8(p).ok())
        .unwrap_or_default();
    let (application, credential) = shared
        .ingestor
        .authenticate_application(name, token)
        .await
        .map_err(|e| match auth_refusal(&e) {
            (ReasonCode::BadUserNameOrPassword, why, _) => (
                ReasonCode::BadUserNameOrPassword,
                why,
                "invalid application name or token",
            ),
            other => other,
        })?;
    let (client_id, assigned) = match assigned_client_id(shared, c, "")? {
        Some(assigned) => (assigned.clone(), Some(assigned)),
        None => (c.client_id.clone(), None),
    };
    let identity = Identity::Application {
        tenant: application.tenant,
        name: application.name,
        grants: application.grants,
    };
    if let Some(will) = &c.will
        && !identity.may_publish(&will.topic)
    {
        return Err((
            ReasonCode::NotAuthorized,
            ConnectRefusal::WillNotAuthorized,
            "the will topic is outside the application's grants",
        ));
    }
    Ok(Accepted {
        identity,
        principal: None,
        client_id: format!("$app/{name}/{client_id}"),
        assigned,
        credential,
    })
}

pub(super) async fn report_presence(shared: &Shared, tenant: &str, device: &str, online: bool) {
    let now = tributary_core::time::now_ns();
    let report = shared
        .presence
        .report(tenant, device, online, now, &shared.config.frontend_id);
    match tokio::time::timeout(PRESENCE_TIMEOUT, report).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(tenant, device, online, error = %e, "presence report failed"),
        Err(_) => tracing::warn!(tenant, device, online, "presence report timed out"),
    }
}

/// What the server grants a CONNECT: its CONNACK and the settings the
/// connection runs with.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Negotiated {
    /// The CONNACK to send (success).
    pub(super) connack: ConnAck,
    /// Session expiry interval in force, in seconds.
    pub(super) expiry_secs: u32,
    /// Keep alive in force, in seconds (0: none).
    pub(super) keep_alive: u16,
    /// Most unacknowledged QoS 1 and 2 deliveries to the client.
    pub(super) outbound_window: u16,
    /// The largest packet the client accepts.
    pub(super) client_max_packet: usize,
}

/// The CONNECT negotiation, without I/O: what the server grants a
/// CONNECT that passed authentication, given its settings, the client id
/// it assigned (if any) and whether a session was resumed.
pub(super) fn negotiate(
    cfg: &MqttConfig,
    connect: &Connect,
    assigned: Option<&str>,
    session_present: bool,
) -> Negotiated {
    let version = connect.protocol;
    let props = &connect.properties;
    let expiry_secs = match version {
        ProtocolVersion::V5 => props
            .session_expiry_interval
            .unwrap_or(0)
            .min(cfg.max_session_expiry_secs),
        ProtocolVersion::V311 if connect.clean_start => 0,
        ProtocolVersion::V311 => cfg.v311_session_expiry_secs,
    };
    let mut keep_alive = connect.keep_alive;
    let mut connack = ConnAck::new(ReasonCode::Success);
    connack.session_present = session_present;
    if version == ProtocolVersion::V5 {
        let p = &mut connack.properties;
        p.receive_maximum = NonZeroU16::new(cfg.receive_maximum);
        p.maximum_packet_size = std::num::NonZeroU32::new(cfg.max_packet_size);
        p.topic_alias_maximum = (cfg.topic_alias_maximum > 0).then_some(cfg.topic_alias_maximum);
        if props.session_expiry_interval.unwrap_or(0) != expiry_secs {
            p.session_expiry_interval = Some(expiry_secs);
        }
        p.assigned_client_identifier = assigned.map(str::to_owned);
        if cfg.max_keep_alive_secs > 0 && (keep_alive == 0 || keep_alive > cfg.max_keep_alive_secs)
        {
            keep_alive = cfg.max_keep_alive_secs;
            p.server_keep_alive = Some(keep_alive);
        }
    }
    let outbound_window = match version {
        ProtocolVersion::V5 => props
            .receive_maximum
            .map_or(u16::MAX, NonZeroU16::get)
            .min(cfg.max_outbound_inflight),
        ProtocolVersion::V311 => cfg.max_outbound_inflight,
    };
    let client_max_packet = props
        .maximum_packet_size
        .map_or(usize::MAX, |m| m.get() as usize);
    Negotiated {
        connack,
        expiry_secs,
        keep_alive,
        outbound_window,
        client_max_packet,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_read_from_a_broken_connect() {
        let mut wire = BytesMut::new();
        encode(
            &Connect::new(ProtocolVersion::V5, "c").into(),
            ProtocolVersion::V5,
            &mut wire,
        )
        .unwrap();
        assert_eq!(peek_connect_version(&wire), Some(ProtocolVersion::V5));
        let mut wire = BytesMut::new();
        encode(
            &Connect::new(ProtocolVersion::V311, "c").into(),
            ProtocolVersion::V311,
            &mut wire,
        )
        .unwrap();
        assert_eq!(peek_connect_version(&wire), Some(ProtocolVersion::V311));
        assert_eq!(peek_connect_version(b"\x10"), None);
        assert_eq!(peek_connect_version(b"\x30\x02ab"), None);
        assert_eq!(peek_connect_version(b"\x10\xff\xff\xff\xff\xff"), None);
    }

    fn v5(keep_alive: u16) -> Connect {
        let mut c = Connect::new(ProtocolVersion::V5, "d1");
        c.keep_alive = keep_alive;
        c
    }

    #[test]
    fn negotiation_grants_within_the_settings() {
        let cfg = MqttConfig {
            max_keep_alive_secs: 300,
            max_session_expiry_secs: 3600,
            max_outbound_inflight: 10,
            ..MqttConfig::default()
        };
        // A 5.0 client asking for more than the server allows is told so.
        let mut c = v5(65_535);
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(u32::MAX);
        c.properties.receive_maximum = NonZeroU16::new(500);
        c.properties.maximum_packet_size = std::num::NonZeroU32::new(2048);
        let n = negotiate(&cfg, &c, None, true);
        assert_eq!(n.keep_alive, 300);
        assert_eq!(n.connack.properties.server_keep_alive, Some(300));
        assert_eq!(n.expiry_secs, 3600);
        assert_eq!(n.connack.properties.session_expiry_interval, Some(3600));
        assert_eq!(n.outbound_window, 10);
        assert_eq!(n.client_max_packet, 2048);
        assert!(n.connack.session_present);
        assert_eq!(
            n.connack.properties.receive_maximum,
            NonZeroU16::new(cfg.receive_maximum)
        );
        // No keep alive at all is capped too; a modest one is left alone.
        assert_eq!(negotiate(&cfg, &v5(0), None, false).keep_alive, 300);
        let modest = negotiate(&cfg, &v5(60), Some("d1/auto-1"), false);
        assert_eq!(modest.keep_alive, 60);
        assert_eq!(modest.connack.properties.server_keep_alive, None);
        assert_eq!(
            modest
                .connack
                .properties
                .assigned_client_identifier
                .as_deref(),
            Some("d1/auto-1")
        );
        assert_eq!(modest.connack.properties.session_expiry_interval, None);
    }

    #[test]
    fn a_v311_session_lives_by_the_clean_session_flag() {
        let cfg = MqttConfig::default();
        let mut c = Connect::new(ProtocolVersion::V311, "d1");
        c.clean_start = true;
        assert_eq!(negotiate(&cfg, &c, None, false).expiry_secs, 0);
        c.clean_start = false;
        let n = negotiate(&cfg, &c, None, false);
        assert_eq!(n.expiry_secs, cfg.v311_session_expiry_secs);
        assert_eq!(n.outbound_window, cfg.max_outbound_inflight);
        assert_eq!(
            n.connack.properties,
            Default::default(),
            "3.1.1 has no properties"
        );
    }
}
