//! One client connection, from the first byte to the close.
//!
//! A connection is one task. It reads CONNECT (within the connect timeout),
//! authenticates, attaches its session (taking it over from another
//! connection if need be) and answers CONNACK; then one `select!` loop
//! serves, in priority order: a takeover kick, server shutdown, completed
//! log appends (their acknowledgements go out in PUBLISH order), writes of
//! buffered packets, reads of the socket, deliveries queued by the router,
//! and the keep-alive and write-stall deadlines.
//!
//! Bounds, so that nothing grows without limit:
//! - at most `receive_maximum` PUBLISHes are in flight (read, not yet
//!   acknowledged: appends to the log, and QoS 2 exchanges awaiting PUBREL);
//!   at the limit the connection stops reading its socket, which pushes back
//!   on the device through TCP;
//! - at most `max_write_buffer` bytes of encoded packets wait for a slow
//!   client; past it the connection neither reads nor takes deliveries (they
//!   wait in the session's bounded mailbox);
//! - a write that makes no progress for `write_timeout` closes the
//!   connection.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU16;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{oneshot, watch};
use tributary_core::directory::Principal;
use tributary_ingest::{IngestError, Kind, RequestContext};
use tributary_mqtt_codec::topic::parse_shared;
use tributary_mqtt_codec::{
    ConnAck, Connect, DecodeError, Disconnect, Packet, PacketType, PayloadFormat, ProtocolVersion,
    PubAck, PubComp, PubRec, PubRel, Publish, PublishProperties, QoS, ReasonCode, RetainHandling,
    SubAck, Subscribe, UnsubAck, Unsubscribe, Will, decode, encode,
};

use crate::Shared;
use crate::acl::Identity;
use crate::metrics::{ConnectRefusal, DisconnectReason, MessageDrop, PublishRejection};
use crate::rate::TokenBucket;
use crate::router::{Attach, Detached, Kick, SubscribeError};
use crate::session::{Delivery, Message, Outbound, Owned, Session, Stage};
use crate::telemetry::{self, DeviceTopic};
use crate::tls::Peer;
use crate::trie::SubOptions;

/// Longest client identifier accepted, in bytes.
const MAX_CLIENT_ID_LEN: usize = 256;
/// Most deliveries taken from the mailbox per loop turn.
const DELIVERY_BATCH: usize = 64;
/// How long presence reports may take before they are given up.
const PRESENCE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the final packets of a closing connection may take to write.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client sent DISCONNECT.
    Client { publish_will: bool },
    /// The socket closed or failed without a DISCONNECT.
    Lost(DisconnectReason),
    /// The server ends the connection: a DISCONNECT with this reason code
    /// is sent to a 5.0 client; a 3.1.1 client's socket is just closed.
    Server(ReasonCode, DisconnectReason),
}

impl End {
    fn reason(self) -> DisconnectReason {
        match self {
            End::Client { .. } => DisconnectReason::Client,
            End::Lost(why) | End::Server(_, why) => why,
        }
    }
}

/// What a finished in-flight PUBLISH turned into.
#[derive(Debug)]
enum Outcome {
    /// Telemetry appended durably: route it, then acknowledge.
    Ingested(Message),
    /// Routed at once; `reached` sessions or requests got it.
    Routed { reached: usize },
    /// Refused with this reason code (5.0 only).
    Refused(ReasonCode, String),
    /// The append failed.
    Failed(IngestError),
}

#[derive(Debug)]
struct Done {
    packet_id: Option<u16>,
    qos: QoS,
    outcome: Outcome,
}

/// Serves one connection to its end. `permit` is the pending-connect slot,
/// released once CONNACK is sent.
///
/// The CONNECT phase runs boxed: its state (the CONNECT packet, the
/// authentication and session futures) is freed once CONNACK is sent
/// instead of staying in every idle connection's task for its lifetime.
pub(crate) async fn run<S>(
    shared: Arc<Shared>,
    stream: S,
    permit: tokio::sync::OwnedSemaphorePermit,
    peer: Peer,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(opened) = Box::pin(open(shared, stream, permit, peer)).await else {
        return;
    };
    let Opened {
        mut conn,
        released,
        device,
        counted,
    } = opened;
    let end = conn.serve().await;
    Box::pin(conn.finish(end, released, device)).await;
    drop(counted);
}

/// An attached connection after its CONNACK, ready to serve.
struct Opened<S> {
    conn: Connection<S>,
    released: watch::Sender<()>,
    device: Option<String>,
    counted: ConnectionCount,
}

/// Reads and answers the CONNECT: authentication, session attach (taking it
/// over when needed), presence, CONNACK. `None` when the connection was
/// refused or lost before its CONNACK.
async fn open<S>(
    shared: Arc<Shared>,
    stream: S,
    permit: tokio::sync::OwnedSemaphorePermit,
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
    let version = connect.protocol;
    let accepted = match accept(&shared, &connect, &peer).await {
        Ok(a) => a,
        Err((code, why, message)) => {
            shared.metrics.connect_refused(why);
            refuse(&mut writer, version, code, message).await;
            return None;
        }
    };

    // Attach the session, taking it over from another connection if needed.
    let tenant = accepted.identity.tenant().to_owned();
    let mut force = false;
    let attached = loop {
        let outcome =
            shared
                .router()
                .attach(&tenant, &accepted.client_id, connect.clean_start, force);
        match outcome {
            Attach::Attached(a) => break a,
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

    let cfg = &shared.config;
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
    connack.session_present = attached.present;
    if version == ProtocolVersion::V5 {
        let p = &mut connack.properties;
        p.receive_maximum = NonZeroU16::new(cfg.receive_maximum);
        p.maximum_packet_size = std::num::NonZeroU32::new(cfg.max_packet_size);
        p.topic_alias_maximum = (cfg.topic_alias_maximum > 0).then_some(cfg.topic_alias_maximum);
        if props.session_expiry_interval.unwrap_or(0) != expiry_secs {
            p.session_expiry_interval = Some(expiry_secs);
        }
        if let Some(assigned) = &accepted.assigned {
            p.assigned_client_identifier = Some(assigned.clone());
        }
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
    let device = accepted.identity.device().map(str::to_owned);
    shared
        .router()
        .bind_device(attached.session.id, device.as_deref());
    let bucket = match &device {
        Some(d) => {
            let (first, bucket) = shared.router().device_connected(&tenant, d);
            if first {
                report_presence(&shared, &tenant, d, true).await;
            }
            bucket
        }
        None => None,
    };
    shared.metrics.connection_opened();
    let counted = ConnectionCount::new(&shared);
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
        inflight: FuturesOrdered::new(),
        inflight_ids: HashSet::new(),
        will: connect.will.clone(),
        bucket,
        problem_info: props.request_problem_information.unwrap_or(true),
        stalled_since: None,
    };
    conn.send(connack.into());
    drop(permit);
    conn.resend_in_flight();
    Some(Opened {
        conn,
        released: attached.released,
        device,
        counted,
    })
}

/// Decrements the open-connection count when dropped.
struct ConnectionCount(Arc<Shared>);

impl ConnectionCount {
    fn new(shared: &Arc<Shared>) -> Self {
        shared
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Self(shared.clone())
    }
}

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        self.0
            .connections
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
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
    let code = match version {
        ProtocolVersion::V5 if code.is_allowed_in(PacketType::ConnAck) => Some(code),
        ProtocolVersion::V5 => Some(if code == ReasonCode::TopicAliasInvalid {
            ReasonCode::ProtocolError
        } else {
            ReasonCode::MalformedPacket
        }),
        ProtocolVersion::V311 => match code {
            c if c.to_v311_connack().is_some() => Some(c),
            ReasonCode::QuotaExceeded | ReasonCode::ServerShuttingDown => {
                Some(ReasonCode::ServerUnavailable)
            }
            // 3.1.1 has no CONNACK for a malformed CONNECT: just close.
            _ => None,
        },
    };
    if let Some(code) = code {
        let mut ack = ConnAck::new(code);
        if version == ProtocolVersion::V5 {
            ack.properties.reason_string = Some(message.chars().take(200).collect());
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
async fn certificate_principal(shared: &Shared, peer: &Peer) -> Result<Option<Principal>, Refusal> {
    let Some(fingerprint) = peer.certificate.as_deref() else {
        return Ok(None);
    };
    match shared.ingestor.authenticate_certificate(fingerprint).await {
        Ok(principal) => Ok(Some(principal)),
        Err(IngestError::Unauthenticated | IngestError::Invalid(_) | IngestError::TooLarge(_)) => {
            Ok(None)
        }
        Err(e) => Err(auth_refusal(&e)),
    }
}

/// The device (or tenant credential) of the CONNECT's token; the user name
/// is required.
async fn token_principal(shared: &Shared, c: &Connect) -> Result<Principal, Refusal> {
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
        .authenticate(token)
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
}

/// Checks a CONNECT: credentials, client id, will, limits.
async fn accept(shared: &Shared, c: &Connect, peer: &Peer) -> Result<Accepted, Refusal> {
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
    let principal = match certificate_principal(shared, peer).await? {
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
    let (client_id, assigned) = if c.client_id.is_empty() {
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
        let assigned = format!("{device}/auto-{n}");
        (assigned.clone(), Some(assigned))
    } else {
        let bound = c.client_id == device
            || c.client_id
                .strip_prefix(device.as_str())
                .is_some_and(|rest| rest.starts_with('/'));
        if !bound || c.client_id.len() > MAX_CLIENT_ID_LEN {
            return Err((
                ReasonCode::ClientIdentifierNotValid,
                ConnectRefusal::ClientId,
                "the client id must be the device id, or the device id followed by '/' and a suffix",
            ));
        }
        (c.client_id.clone(), None)
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
        client_id,
        assigned,
    })
}

/// Checks the CONNECT of a tenant application (user name `app:<name>`):
/// its token, any client id, a will within its publish grants.
async fn accept_application(shared: &Shared, c: &Connect, name: &str) -> Result<Accepted, Refusal> {
    let token = c
        .password
        .as_deref()
        .and_then(|p| std::str::from_utf8(p).ok())
        .unwrap_or_default();
    let application = shared
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
    let (client_id, assigned) = if c.client_id.is_empty() {
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
        let assigned = format!("auto-{n}");
        (assigned.clone(), Some(assigned))
    } else if c.client_id.len() > MAX_CLIENT_ID_LEN {
        return Err((
            ReasonCode::ClientIdentifierNotValid,
            ConnectRefusal::ClientId,
            "the client id is too long",
        ));
    } else {
        (c.client_id.clone(), None)
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
    })
}

async fn report_presence(shared: &Shared, tenant: &str, device: &str, online: bool) {
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

/// Writes some of `buf`, and flushes once all of it is written (TLS
/// streams buffer).
async fn write_some<W: AsyncWrite + Unpin>(writer: &mut W, buf: &[u8]) -> std::io::Result<usize> {
    let n = writer.write(buf).await?;
    if n == buf.len() {
        writer.flush().await?;
    }
    Ok(n)
}

/// An attached connection.
struct Connection<S> {
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    version: ProtocolVersion,
    reader: ReadHalf<S>,
    writer: WriteHalf<S>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    tenant: String,
    /// The session key (as the "connected" log line names it).
    client_id: String,
    identity: Identity,
    /// The device principal for telemetry; `None` for applications.
    principal: Option<Principal>,
    session: Arc<Session>,
    generation: u64,
    owned: Owned,
    kick: oneshot::Receiver<Kick>,
    expiry_secs: u32,
    keep_alive: Option<Duration>,
    last_read: Instant,
    client_max_packet: usize,
    outbound_window: usize,
    aliases: HashMap<u16, String>,
    inflight: FuturesOrdered<BoxFuture<'static, Done>>,
    inflight_ids: HashSet<u16>,
    will: Option<Will>,
    bucket: Option<Arc<Mutex<TokenBucket>>>,
    problem_info: bool,
    stalled_since: Option<Instant>,
}

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn send(&mut self, packet: Packet) {
        let kind = packet.packet_type();
        match encode(&packet, self.version, &mut self.wbuf) {
            Ok(()) => self.shared.metrics.sent(kind),
            Err(e) => tracing::debug!(packet = kind.name(), error = %e, "packet not sent"),
        }
    }

    fn in_flight(&self) -> usize {
        self.inflight.len() + self.owned.incoming_qos2.len()
    }

    fn may_read(&self) -> bool {
        self.in_flight() < usize::from(self.shared.config.receive_maximum)
            && self.wbuf.len() < self.shared.config.max_write_buffer
    }

    /// The loop; returns why it ended.
    async fn serve(&mut self) -> End {
        loop {
            if let Err(end) = self.process_input() {
                return end;
            }
            self.pump_deliveries();
            let reading = self.may_read();
            if !reading {
                // The client may well be sending: we are not reading. Keep
                // alive counts from when reading resumes.
                self.last_read = Instant::now();
            }
            let delivering = self.wbuf.len() < self.shared.config.max_write_buffer;
            let deadline = self.deadline();
            let wake_at =
                tokio::time::Instant::from_std(deadline.map_or_else(Instant::now, |(t, _)| t));
            let Self {
                kick,
                shutdown,
                inflight,
                writer,
                wbuf,
                reader,
                rbuf,
                session,
                ..
            } = self;
            enum Event {
                Kicked(Kick),
                Shutdown,
                Done(Done),
                Wrote(std::io::Result<usize>),
                Read(std::io::Result<usize>),
                Notified,
                Deadline,
            }
            let event = tokio::select! {
                biased;
                k = kick => Event::Kicked(k.unwrap_or(Kick::TakenOver)),
                _ = crate::until_true(shutdown) => Event::Shutdown,
                Some(done) = inflight.next(), if !inflight.is_empty() => Event::Done(done),
                r = write_some(writer, wbuf), if !wbuf.is_empty() => Event::Wrote(r),
                r = reader.read_buf(rbuf), if reading => Event::Read(r),
                _ = session.notify.notified(), if delivering => Event::Notified,
                _ = tokio::time::sleep_until(wake_at), if deadline.is_some() => Event::Deadline,
            };
            match event {
                Event::Kicked(Kick::TakenOver) => {
                    return End::Server(ReasonCode::SessionTakenOver, DisconnectReason::TakenOver);
                }
                Event::Kicked(Kick::Revoked) => {
                    return End::Server(
                        ReasonCode::AdministrativeAction,
                        DisconnectReason::Revoked,
                    );
                }
                Event::Shutdown => {
                    let code = match self.shared.config.server_reference {
                        Some(_) => ReasonCode::ServerMoved,
                        None => ReasonCode::ServerShuttingDown,
                    };
                    return End::Server(code, DisconnectReason::Shutdown);
                }
                Event::Done(done) => {
                    if let Err(end) = self.complete(done, true) {
                        return end;
                    }
                }
                Event::Wrote(Ok(0)) | Event::Wrote(Err(_)) => {
                    return End::Lost(DisconnectReason::WriteFailed);
                }
                Event::Wrote(Ok(n)) => {
                    self.wbuf.advance(n);
                    self.stalled_since = None;
                    if self.wbuf.is_empty() && self.wbuf.capacity() > 64 * 1024 {
                        self.wbuf = BytesMut::new();
                    }
                }
                Event::Read(Ok(0)) => return End::Lost(DisconnectReason::Closed),
                Event::Read(Err(_)) => return End::Lost(DisconnectReason::ReadFailed),
                Event::Read(Ok(_)) => self.last_read = Instant::now(),
                Event::Notified => {}
                Event::Deadline => {
                    if let Some((t, end)) = deadline
                        && Instant::now() >= t
                    {
                        return end;
                    }
                }
            }
        }
    }

    /// The next deadline: keep alive (1.5 times the interval since the last
    /// read), or a write that has not progressed for the write timeout.
    fn deadline(&mut self) -> Option<(Instant, End)> {
        let keep_alive = self.keep_alive.map(|ka| {
            (
                self.last_read + ka,
                End::Server(ReasonCode::KeepAliveTimeout, DisconnectReason::KeepAlive),
            )
        });
        let stall = if self.wbuf.is_empty() {
            self.stalled_since = None;
            None
        } else {
            let since = *self.stalled_since.get_or_insert_with(Instant::now);
            Some((
                since + self.shared.config.write_timeout(),
                End::Lost(DisconnectReason::WriteStalled),
            ))
        };
        match (keep_alive, stall) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    /// Decodes and handles buffered packets while there is room in flight.
    fn process_input(&mut self) -> Result<(), End> {
        let max = self.shared.config.max_packet_size as usize;
        while !self.rbuf.is_empty() && self.may_read() {
            match decode(&mut self.rbuf, Some(self.version), max) {
                Ok(Some(packet)) => self.handle(packet)?,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(tenant = %self.tenant, error = %e, "malformed packet");
                    self.shared.metrics.rejected(PublishRejection::Malformed);
                    return Err(End::Server(e.reason_code(), DisconnectReason::Malformed));
                }
            }
        }
        if self.rbuf.is_empty() && self.rbuf.capacity() > 64 * 1024 {
            self.rbuf = BytesMut::new();
        }
        if self.rbuf.capacity() - self.rbuf.len() < 256 {
            self.rbuf.reserve(self.rbuf.len().max(512));
        }
        Ok(())
    }

    fn handle(&mut self, packet: Packet) -> Result<(), End> {
        self.shared.metrics.received(packet.packet_type());
        match packet {
            Packet::Publish(p) => self.publish(p),
            Packet::PubAck(a) => {
                if self
                    .owned
                    .outbound
                    .get(&a.packet_id)
                    .is_some_and(|o| o.stage == Stage::Ack)
                {
                    self.owned.outbound.remove(&a.packet_id);
                }
                Ok(())
            }
            Packet::PubRec(r) => {
                match self.owned.outbound.get_mut(&r.packet_id) {
                    Some(o) if o.stage == Stage::Received && r.reason_code.is_error() => {
                        self.owned.outbound.remove(&r.packet_id);
                    }
                    Some(o) if o.stage != Stage::Ack => {
                        o.stage = Stage::Released;
                        self.send(PubRel::new(r.packet_id).into());
                    }
                    _ => {
                        let mut rel = PubRel::new(r.packet_id);
                        if self.version == ProtocolVersion::V5 {
                            rel.reason_code = ReasonCode::PacketIdentifierNotFound;
                        }
                        self.send(rel.into());
                    }
                }
                Ok(())
            }
            Packet::PubRel(r) => {
                let mut comp = PubComp::new(r.packet_id);
                if !self.owned.incoming_qos2.remove(&r.packet_id)
                    && self.version == ProtocolVersion::V5
                {
                    comp.reason_code = ReasonCode::PacketIdentifierNotFound;
                }
                self.send(comp.into());
                Ok(())
            }
            Packet::PubComp(c) => {
                if self
                    .owned
                    .outbound
                    .get(&c.packet_id)
                    .is_some_and(|o| o.stage == Stage::Released)
                {
                    self.owned.outbound.remove(&c.packet_id);
                }
                Ok(())
            }
            Packet::Subscribe(s) => {
                self.subscribe(s);
                Ok(())
            }
            Packet::Unsubscribe(u) => {
                self.unsubscribe(u);
                Ok(())
            }
            Packet::PingReq => {
                self.send(Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect(d) => {
                if let Some(expiry) = d.properties.session_expiry_interval {
                    // Setting an expiry on DISCONNECT when CONNECT had none is
                    // a protocol error (MQTT 5.0 §3.14.2.2.2).
                    if self.expiry_secs == 0 && expiry != 0 {
                        return Err(End::Server(
                            ReasonCode::ProtocolError,
                            DisconnectReason::ProtocolError,
                        ));
                    }
                    self.expiry_secs = expiry.min(self.shared.config.max_session_expiry_secs);
                }
                Err(End::Client {
                    publish_will: d.reason_code == ReasonCode::DisconnectWithWillMessage,
                })
            }
            Packet::Auth(_) => Err(End::Server(
                ReasonCode::ProtocolError,
                DisconnectReason::ProtocolError,
            )),
            Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp => Err(End::Server(
                ReasonCode::ProtocolError,
                DisconnectReason::ProtocolError,
            )),
        }
    }

    /// Refuses a PUBLISH: a 5.0 client gets the reason code in its PUBACK or
    /// PUBREC (nothing at QoS 0); a 3.1.1 client, which has no way to hear
    /// it, is disconnected.
    fn refuse_publish(
        &mut self,
        p: &Publish,
        code: ReasonCode,
        rejection: PublishRejection,
        why: String,
    ) -> Result<(), End> {
        self.shared.metrics.rejected(rejection);
        if self.version == ProtocolVersion::V311 {
            return Err(End::Server(code, rejection.into()));
        }
        if let Some(id) = p.packet_id {
            self.inflight_ids.insert(id);
            let done = Done {
                packet_id: Some(id),
                qos: p.qos,
                outcome: Outcome::Refused(code, why),
            };
            self.inflight.push_back(Box::pin(std::future::ready(done)));
        }
        Ok(())
    }

    fn publish(&mut self, mut p: Publish) -> Result<(), End> {
        // Topic aliases (5.0): set on first use, then stand for the topic.
        if let Some(alias) = p.properties.topic_alias {
            if alias.get() > self.shared.config.topic_alias_maximum {
                return Err(End::Server(
                    ReasonCode::TopicAliasInvalid,
                    DisconnectReason::TopicAlias,
                ));
            }
            if p.topic.is_empty() {
                match self.aliases.get(&alias.get()) {
                    Some(topic) => p.topic = topic.clone(),
                    None => {
                        return Err(End::Server(
                            ReasonCode::ProtocolError,
                            DisconnectReason::TopicAlias,
                        ));
                    }
                }
            } else {
                self.aliases.insert(alias.get(), p.topic.clone());
            }
        }
        // A re-sent QoS 2 PUBLISH that already got its PUBREC is answered
        // again without being processed again; a re-sent PUBLISH still in
        // flight will be answered when it completes.
        if let Some(id) = p.packet_id {
            if p.qos == QoS::ExactlyOnce && self.owned.incoming_qos2.contains(&id) {
                self.send(PubRec::new(id).into());
                return Ok(());
            }
            if self.inflight_ids.contains(&id) {
                return Ok(());
            }
        }
        if let Some(bucket) = &self.bucket {
            let allowed = bucket
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .try_take(Instant::now());
            if !allowed {
                self.shared.metrics.rejected(PublishRejection::Rate);
                return Err(End::Server(
                    ReasonCode::MessageRateTooHigh,
                    DisconnectReason::Rate,
                ));
            }
        }
        if !self.identity.may_publish(&p.topic) {
            let why = format!("not authorized to publish to {}", p.topic);
            return self.refuse_publish(
                &p,
                ReasonCode::NotAuthorized,
                PublishRejection::NotAuthorized,
                why,
            );
        }
        if p.properties.payload_format_indicator == Some(PayloadFormat::Utf8)
            && std::str::from_utf8(&p.payload).is_err()
        {
            let why = "the payload format indicator says UTF-8, the payload is not".to_owned();
            return self.refuse_publish(
                &p,
                ReasonCode::PayloadFormatInvalid,
                PublishRejection::Invalid,
                why,
            );
        }
        let message = message_from(&p);
        // Device topics are telemetry only for devices (the ACL keeps each
        // in its own); for applications every topic is plain pub/sub.
        let device_topic = self
            .principal
            .as_ref()
            .and_then(|principal| Some((DeviceTopic::parse(&p.topic)?, principal.clone())));
        let Some((topic, principal)) = device_topic else {
            // Plain pub/sub within the tenant.
            let reached = self
                .shared
                .router()
                .route(&self.tenant, message, Some(self.session.id));
            if let Some(id) = p.packet_id {
                self.inflight_ids.insert(id);
                let done = Done {
                    packet_id: Some(id),
                    qos: p.qos,
                    outcome: Outcome::Routed { reached },
                };
                self.inflight.push_back(Box::pin(std::future::ready(done)));
            }
            return Ok(());
        };
        let limits = self.shared.ingestor.limits();
        let parsed = telemetry::parse(
            topic,
            &p.payload,
            p.properties.content_type.as_deref(),
            &self.tenant,
            tributary_core::time::now_ns(),
            limits,
        );
        let parsed = match parsed {
            Ok(parsed) => parsed,
            Err(e) => {
                let (code, rejection) = if e.too_large {
                    (ReasonCode::QuotaExceeded, PublishRejection::TooLarge)
                } else {
                    (ReasonCode::PayloadFormatInvalid, PublishRejection::Invalid)
                };
                return self.refuse_publish(&p, code, rejection, e.to_string());
            }
        };
        let permit = match self.shared.ingestor.reserve(p.payload.len()) {
            Ok(permit) => permit,
            Err(_) => {
                self.shared.metrics.rejected(PublishRejection::Overloaded);
                return Err(End::Server(
                    ReasonCode::ServerBusy,
                    DisconnectReason::Overloaded,
                ));
            }
        };
        let user = |name: &str| {
            p.properties
                .user_properties
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let ctx = RequestContext {
            content_type: parsed.content_type.to_owned(),
            traceparent: user("traceparent"),
            tracestate: user("tracestate"),
            kind: match topic {
                DeviceTopic::Event { .. } => Kind::Event,
                DeviceTopic::Telemetry { .. } | DeviceTopic::Metric { .. } => Kind::Telemetry,
            },
        };
        let ingestor = self.shared.ingestor.clone();
        let (packet_id, qos) = (p.packet_id, p.qos);
        if let Some(id) = packet_id {
            self.inflight_ids.insert(id);
        }
        self.inflight.push_back(Box::pin(async move {
            let result = ingestor
                .ingest_device(&principal, parsed.points, &ctx)
                .await;
            drop(permit);
            let outcome = match result {
                Ok(()) => Outcome::Ingested(message),
                Err(e) => Outcome::Failed(e),
            };
            Done {
                packet_id,
                qos,
                outcome,
            }
        }));
        Ok(())
    }

    /// Acknowledges a finished PUBLISH. `live` is false while a closing
    /// connection drains: failures then end nothing more.
    fn complete(&mut self, done: Done, live: bool) -> Result<(), End> {
        if let Some(id) = done.packet_id {
            self.inflight_ids.remove(&id);
        }
        let (code, why) = match done.outcome {
            Outcome::Ingested(message) => {
                self.shared
                    .router()
                    .route(&self.tenant, message, Some(self.session.id));
                (ReasonCode::Success, None)
            }
            Outcome::Routed { reached: 0 } => (ReasonCode::NoMatchingSubscribers, None),
            Outcome::Routed { .. } => (ReasonCode::Success, None),
            Outcome::Refused(code, why) => (code, Some(why)),
            Outcome::Failed(e) => {
                let (code, rejection, transient) = ingest_reason(&e);
                self.shared.metrics.rejected(rejection);
                if transient || self.version == ProtocolVersion::V311 {
                    // A PUBACK is a final answer: a retryable failure is
                    // reported by closing without one, so that the client
                    // sends the message again.
                    tracing::debug!(tenant = %self.tenant, error = %e, "append failed; disconnecting");
                    return if live && done.qos != QoS::AtMostOnce {
                        Err(End::Server(
                            if transient {
                                ReasonCode::ServerBusy
                            } else {
                                code
                            },
                            rejection.into(),
                        ))
                    } else {
                        Ok(())
                    };
                }
                (code, Some(e.to_string()))
            }
        };
        let Some(id) = done.packet_id else {
            return Ok(());
        };
        let code =
            if self.version == ProtocolVersion::V311 && code == ReasonCode::NoMatchingSubscribers {
                ReasonCode::Success
            } else {
                code
            };
        if !code.is_error() {
            self.shared.metrics.acked();
        }
        let mut properties = tributary_mqtt_codec::AckProperties::default();
        if self.problem_info && self.version == ProtocolVersion::V5 {
            properties.reason_string = why.map(|w| w.chars().take(256).collect());
        }
        match done.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send(
                PubAck {
                    packet_id: id,
                    reason_code: code,
                    properties,
                }
                .into(),
            ),
            QoS::ExactlyOnce => {
                if !code.is_error() {
                    self.owned.incoming_qos2.insert(id);
                }
                self.send(
                    PubRec {
                        packet_id: id,
                        reason_code: code,
                        properties,
                    }
                    .into(),
                );
            }
        }
        Ok(())
    }

    fn subscribe(&mut self, s: Subscribe) {
        let mut codes = Vec::with_capacity(s.subscriptions.len());
        let mut retained = Vec::new();
        {
            let mut router = self.shared.router();
            for sub in &s.subscriptions {
                if !self.identity.may_subscribe(&sub.filter) {
                    self.shared
                        .metrics
                        .rejected(PublishRejection::SubscribeNotAuthorized);
                    codes.push(ReasonCode::NotAuthorized);
                    continue;
                }
                let shared_sub = matches!(parse_shared(&sub.filter), Ok(Some(_)));
                let options = SubOptions {
                    qos: sub.options.qos,
                    no_local: sub.options.no_local,
                    retain_as_published: sub.options.retain_as_published,
                    id: s.properties.subscription_identifier,
                };
                match router.subscribe(self.session.id, &sub.filter, options) {
                    Ok(existed) => {
                        codes.push(ReasonCode::granted(sub.options.qos));
                        let send_retained = match sub.options.retain_handling {
                            RetainHandling::SendAtSubscribe => true,
                            RetainHandling::SendAtNewSubscribe => !existed,
                            RetainHandling::DoNotSend => false,
                        };
                        if send_retained && !shared_sub {
                            retained.extend(
                                router
                                    .retained_for(&self.tenant, &sub.filter)
                                    .into_iter()
                                    .map(|m| (m, options)),
                            );
                        }
                    }
                    Err(SubscribeError::TooMany) => codes.push(ReasonCode::QuotaExceeded),
                    Err(SubscribeError::NoSession) => codes.push(ReasonCode::UnspecifiedError),
                }
            }
        }
        self.send(
            SubAck {
                packet_id: s.packet_id,
                properties: Default::default(),
                reason_codes: codes,
            }
            .into(),
        );
        for (message, options) in retained {
            let delivery = Delivery {
                qos: message.qos.min(options.qos),
                retain: true,
                subscription_ids: options.id.into_iter().collect(),
                message,
            };
            if self
                .session
                .enqueue(delivery, self.shared.config.max_queued_messages)
                .is_err()
            {
                self.shared.metrics.dropped(MessageDrop::QueueFull);
            }
        }
    }

    fn unsubscribe(&mut self, u: Unsubscribe) {
        let codes: Vec<ReasonCode> = {
            let mut router = self.shared.router();
            u.filters
                .iter()
                .map(|f| {
                    if router.unsubscribe(self.session.id, f) {
                        ReasonCode::Success
                    } else {
                        ReasonCode::NoSubscriptionExisted
                    }
                })
                .collect()
        };
        let reason_codes = if self.version == ProtocolVersion::V5 {
            codes
        } else {
            Vec::new()
        };
        self.send(
            UnsubAck {
                packet_id: u.packet_id,
                properties: Default::default(),
                reason_codes,
            }
            .into(),
        );
    }

    /// Moves queued deliveries into the write buffer, within the client's
    /// receive maximum and the write buffer limit.
    fn pump_deliveries(&mut self) {
        while self.wbuf.len() < self.shared.config.max_write_buffer {
            let room = self
                .outbound_window
                .saturating_sub(self.owned.outbound.len());
            let budget = self.shared.config.max_write_buffer - self.wbuf.len();
            let (batch, expired) = self
                .session
                .take(DELIVERY_BATCH, room, budget, Instant::now());
            for _ in 0..expired {
                self.shared.metrics.dropped(MessageDrop::Expired);
            }
            if batch.is_empty() {
                return;
            }
            for delivery in batch {
                self.deliver(delivery);
            }
        }
    }

    fn deliver(&mut self, delivery: Delivery) {
        let packet_id = if delivery.qos == QoS::AtMostOnce {
            None
        } else {
            match self.owned.next_pid() {
                Some(id) => Some(id),
                None => {
                    self.shared.metrics.dropped(MessageDrop::NoPacketId);
                    return;
                }
            }
        };
        let publish = publish_from(&delivery, packet_id, false);
        // Never send a packet larger than the client accepts: it is dropped
        // as if delivered (MQTT 5.0 §3.1.2.11.4).
        let fits = Packet::Publish(publish.clone())
            .encoded_len(self.version)
            .is_ok_and(|n| n <= self.client_max_packet);
        if !fits {
            self.shared.metrics.dropped(MessageDrop::TooLargeForClient);
            return;
        }
        if let Some(id) = packet_id {
            let stage = if delivery.qos == QoS::AtLeastOnce {
                Stage::Ack
            } else {
                Stage::Received
            };
            self.owned.outbound.insert(id, Outbound { delivery, stage });
        }
        self.shared.metrics.delivered();
        self.send(publish.into());
    }

    /// Re-sends what was in flight when a resumed session's last connection
    /// ended: PUBLISH with DUP set, or PUBREL.
    fn resend_in_flight(&mut self) {
        let resend: Vec<(u16, Outbound)> = self
            .owned
            .outbound
            .iter()
            .map(|(id, o)| (*id, o.clone()))
            .collect();
        for (id, o) in resend {
            match o.stage {
                Stage::Ack | Stage::Received => {
                    let publish = publish_from(&o.delivery, Some(id), true);
                    self.send(publish.into());
                }
                Stage::Released => self.send(PubRel::new(id).into()),
            }
        }
    }

    /// Ends the connection: drains in-flight appends (acknowledging them if
    /// the socket still works), says goodbye, publishes or schedules the will,
    /// and lets the session go.
    async fn finish(mut self, end: End, released: watch::Sender<()>, device: Option<String>) {
        let socket_ok = !matches!(end, End::Lost(_));
        let drain_timeout = self.shared.config.drain_timeout();
        let drained = tokio::time::timeout(drain_timeout, async {
            while let Some(done) = self.inflight.next().await {
                let _ = self.complete(done, false);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(tenant = %self.tenant, "in-flight appends did not finish before the drain timeout");
        }
        if let End::Server(code, _) = end
            && self.version == ProtocolVersion::V5
            && code.is_allowed_in(PacketType::Disconnect)
        {
            let mut disconnect = Disconnect::new(code);
            if code == ReasonCode::ServerMoved {
                disconnect.properties.server_reference =
                    self.shared.config.server_reference.clone();
            }
            self.send(disconnect.into());
        }
        if socket_ok && !self.wbuf.is_empty() {
            let Self { writer, wbuf, .. } = &mut self;
            let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, async {
                let _ = writer.write_all(wbuf).await;
                let _ = writer.flush().await;
            })
            .await;
        }
        let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, self.writer.shutdown()).await;

        let publish_will = match end {
            End::Client { publish_will } => publish_will,
            End::Lost(_) => true,
            // A server restart (or move) is not a device failure.
            End::Server(code, _) => !matches!(
                code,
                ReasonCode::ServerShuttingDown | ReasonCode::ServerMoved
            ),
        };
        let shared = self.shared.clone();
        let owned = std::mem::take(&mut self.owned);
        let (id, generation, expiry) = (self.session.id, self.generation, self.expiry_secs);
        let detached = shared.router().detach(id, generation, owned, expiry);
        if detached == Detached::Parked {
            let shared = shared.clone();
            let mut stop = shared.shutdown.subscribe();
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(u64::from(expiry))) => shared.router().expire(id, generation),
                    _ = crate::until_true(&mut stop) => {}
                }
            });
        }
        if let Some(will) = self.will.take().filter(|_| publish_will) {
            let delay = match self.version {
                ProtocolVersion::V5 => will.properties.will_delay_interval.unwrap_or(0).min(expiry),
                ProtocolVersion::V311 => 0,
            };
            let message = message_from_will(will);
            let tenant = self.tenant.clone();
            if delay == 0 {
                shared.router().route(&tenant, message, None);
            } else {
                let shared = shared.clone();
                let mut stop = shared.shutdown.subscribe();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(u64::from(delay))) => {
                            let mut router = shared.router();
                            if !router.resumed_since(id, generation) {
                                router.route(&tenant, message, None);
                            }
                        }
                        _ = crate::until_true(&mut stop) => {}
                    }
                });
            }
        }
        // Only now may a taking-over connection attach.
        drop(released);
        if let Some(device) = &device {
            let last = shared.router().device_disconnected(&self.tenant, device);
            if last {
                report_presence(&shared, &self.tenant, device, false).await;
            }
        }
        shared.metrics.connection_closed(
            end.reason(),
            &self.tenant,
            &self.client_id,
            device.as_deref(),
        );
    }
}

/// Maps an append failure to a reason code, the rejection it is, and
/// whether it is transient (worth a retry).
fn ingest_reason(e: &IngestError) -> (ReasonCode, PublishRejection, bool) {
    use PublishRejection as R;
    match e {
        IngestError::Unauthenticated
        | IngestError::Forbidden(_)
        | IngestError::UnknownDevice(_) => (ReasonCode::NotAuthorized, R::NotAuthorized, false),
        IngestError::Invalid(_) => (ReasonCode::PayloadFormatInvalid, R::Invalid, false),
        IngestError::TooLarge(_) => (ReasonCode::QuotaExceeded, R::TooLarge, false),
        IngestError::Overloaded { .. } => (ReasonCode::ServerBusy, R::Overloaded, true),
        IngestError::Unavailable(_) => (ReasonCode::ServerBusy, R::Unavailable, true),
    }
}

/// The routed message of a client's PUBLISH.
fn message_from(p: &Publish) -> Message {
    let props = &p.properties;
    Message {
        topic: p.topic.clone(),
        payload: p.payload.clone(),
        qos: p.qos,
        retain: p.retain,
        payload_format: props.payload_format_indicator,
        content_type: props.content_type.clone(),
        response_topic: props.response_topic.clone(),
        correlation_data: props.correlation_data.clone(),
        user_properties: props.user_properties.clone(),
        expires_at: props
            .message_expiry_interval
            .map(|s| Instant::now() + Duration::from_secs(u64::from(s))),
    }
}

fn message_from_will(will: Will) -> Message {
    let props = will.properties;
    Message {
        topic: will.topic,
        payload: will.payload,
        qos: will.qos,
        retain: will.retain,
        payload_format: props.payload_format_indicator,
        content_type: props.content_type,
        response_topic: props.response_topic,
        correlation_data: props.correlation_data,
        user_properties: props.user_properties,
        expires_at: props
            .message_expiry_interval
            .map(|s| Instant::now() + Duration::from_secs(u64::from(s))),
    }
}

/// The PUBLISH that carries a delivery.
fn publish_from(d: &Delivery, packet_id: Option<u16>, dup: bool) -> Publish {
    let m = &d.message;
    let remaining = m.expires_at.map(|t| {
        let left = t.saturating_duration_since(Instant::now());
        u32::try_from(left.as_secs() + u64::from(left.subsec_nanos() > 0))
            .unwrap_or(u32::MAX)
            .max(1)
    });
    Publish {
        dup: dup && d.qos != QoS::AtMostOnce,
        qos: d.qos,
        retain: d.retain,
        topic: m.topic.clone(),
        packet_id,
        payload: m.payload.clone(),
        properties: PublishProperties {
            payload_format_indicator: m.payload_format,
            message_expiry_interval: remaining,
            topic_alias: None,
            response_topic: m.response_topic.clone(),
            correlation_data: m.correlation_data.clone(),
            user_properties: m.user_properties.clone(),
            subscription_identifiers: d.subscription_ids.clone(),
            content_type: m.content_type.clone(),
        },
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

    #[test]
    fn transient_failures_are_not_final_answers() {
        assert!(
            ingest_reason(&IngestError::Overloaded {
                retry_after_secs: 1
            })
            .2
        );
        assert!(ingest_reason(&IngestError::Unavailable("x".into())).2);
        let (code, _, transient) = ingest_reason(&IngestError::Forbidden("x".into()));
        assert_eq!((code, transient), (ReasonCode::NotAuthorized, false));
        for e in [
            IngestError::Unauthenticated,
            IngestError::TooLarge("x".into()),
            IngestError::Invalid(tributary_core::formats::ParseError::new("a", "b")),
        ] {
            assert!(ingest_reason(&e).0.is_allowed_in(PacketType::PubAck), "{e}");
        }
    }
}
