//! A lean MQTT client for load: one task per connection, on the project's
//! sans-io codec (`tributary-mqtt-codec`).
//!
//! Why not a general-purpose client: a device here is one task with one
//! socket, a read buffer, a write buffer and a small window of unanswered
//! publishes, which keeps 15,000 connections in a few tens of MiB; and the
//! task sees every packet, so it times each PUBLISH to its own PUBACK (or
//! PUBCOMP) and counts every refusal by its reason code.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};
use tributary_mqtt_codec::{
    Connect, Disconnect, Packet, ProtocolVersion, PubAck, PubComp, PubRec, PubRel, Publish, QoS,
    ReasonCode, decode, encode,
};

use crate::engine::{Credential, DeviceTally, SenderCtx, UnackedRanges};
use crate::error::Error;
use crate::payload::{Builder, DeviceGen, Format};
use crate::scenario::{LoadMode, MqttTransport, MqttVersion, Scenario};

/// The largest packet accepted from the server.
const MAX_INBOUND_PACKET: usize = 1024 * 1024;
/// Connection attempts in a row before a device gives up.
const MAX_CONNECT_ATTEMPTS: u32 = 5;

/// A byte stream: plain TCP or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What every connection of a run shares.
pub struct MqttSettings {
    addr: SocketAddr,
    version: ProtocolVersion,
    qos: QoS,
    clean: bool,
    session_expiry: u32,
    keep_alive: u16,
    topic: String,
    connect_timeout: Duration,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
}

impl std::fmt::Debug for MqttSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSettings")
            .field("addr", &self.addr)
            .field("version", &self.version)
            .field("qos", &self.qos)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl MqttSettings {
    /// Resolves the address and loads the TLS configuration.
    pub async fn new(sc: &Scenario, m: &MqttTransport) -> Result<Self, Error> {
        let target = &sc.target.mqtt_addr;
        let addr = tokio::net::lookup_host(target.as_str())
            .await
            .map_err(|e| Error::Scenario(format!("target.mqtt_addr {target:?}: {e}")))?
            .next()
            .ok_or_else(|| Error::Scenario(format!("target.mqtt_addr {target:?}: no address")))?;
        let tls = if m.tls {
            let host = target.rsplit_once(':').map_or(target.as_str(), |(h, _)| h);
            let name = m.server_name.clone().unwrap_or_else(|| host.to_string());
            let ca = m
                .ca_file
                .as_deref()
                .ok_or_else(|| Error::Tls("transport.tls needs transport.ca_file".into()))?;
            Some(tls_connector(ca, &name)?)
        } else {
            None
        };
        Ok(Self {
            addr,
            version: match m.version {
                MqttVersion::V311 => ProtocolVersion::V311,
                MqttVersion::V5 => ProtocolVersion::V5,
            },
            qos: QoS::from_u8(m.qos).unwrap_or(QoS::AtLeastOnce),
            clean: m.clean_session,
            session_expiry: u32::try_from(m.session_expiry.0.as_secs()).unwrap_or(u32::MAX),
            keep_alive: u16::try_from(m.keep_alive.0.as_secs()).unwrap_or(u16::MAX),
            topic: m.topic.clone(),
            connect_timeout: m.connect_timeout.0,
            tls,
        })
    }
}

fn tls_connector(
    ca_file: &std::path::Path,
    server_name: &str,
) -> Result<
    (
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    ),
    Error,
> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| Error::Tls(format!("{}: {e}", ca_file.display())))?;
    for cert in certs {
        let cert = cert.map_err(|e| Error::Tls(format!("{}: {e}", ca_file.display())))?;
        roots
            .add(cert)
            .map_err(|e| Error::Tls(format!("{}: {e}", ca_file.display())))?;
    }
    if roots.is_empty() {
        return Err(Error::Tls(format!(
            "{}: no certificate in the file",
            ca_file.display()
        )));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Tls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| Error::Tls(format!("server name {server_name:?}: {e}")))?;
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
}

/// A connection the server accepted.
struct Session {
    io: Box<dyn Io>,
    rbuf: BytesMut,
    receive_maximum: u16,
}

/// Why a connection attempt failed, and whether trying again could help.
struct ConnectFailure {
    reason: String,
    retry: bool,
}

impl ConnectFailure {
    fn retry(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            retry: true,
        }
    }
}

async fn connect(
    s: &MqttSettings,
    cred: &Credential,
    source: Option<IpAddr>,
) -> Result<Session, ConnectFailure> {
    let socket = if s.addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| ConnectFailure::retry(format!("socket: {}", e.kind())))?;
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| ConnectFailure::retry(format!("bind {ip}: {}", e.kind())))?;
    }
    let tcp = socket
        .connect(s.addr)
        .await
        .map_err(|e| ConnectFailure::retry(format!("TCP connect: {}", e.kind())))?;
    let _ = tcp.set_nodelay(true);
    let mut io: Box<dyn Io> = match &s.tls {
        Some((connector, name)) => Box::new(connector.connect(name.clone(), tcp).await.map_err(
            |e| ConnectFailure {
                // A certificate the client refuses stays refused.
                retry: e.kind() != std::io::ErrorKind::InvalidData,
                reason: format!("TLS handshake: {e}"),
            },
        )?),
        None => Box::new(tcp),
    };
    let mut connect = Connect::new(s.version, cred.device.clone());
    connect.clean_start = s.clean;
    connect.keep_alive = s.keep_alive;
    if !cred.token.is_empty() {
        connect.username = Some(cred.device.clone());
        connect.password = Some(Bytes::from(cred.token.clone()));
    }
    if s.version == ProtocolVersion::V5 && !s.clean {
        connect.properties.session_expiry_interval = Some(s.session_expiry);
    }
    let mut wbuf = BytesMut::new();
    encode(&connect.into(), s.version, &mut wbuf).map_err(|e| ConnectFailure {
        reason: format!("encoding CONNECT: {e}"),
        retry: false,
    })?;
    io.write_all(&wbuf)
        .await
        .map_err(|e| ConnectFailure::retry(format!("write CONNECT: {}", e.kind())))?;
    io.flush()
        .await
        .map_err(|e| ConnectFailure::retry(format!("write CONNECT: {}", e.kind())))?;
    let mut rbuf = BytesMut::with_capacity(256);
    loop {
        match decode(&mut rbuf, Some(s.version), MAX_INBOUND_PACKET) {
            Ok(Some(Packet::ConnAck(ack))) => {
                if ack.reason_code.is_error() {
                    let reason = format!(
                        "CONNACK 0x{:02X} {}",
                        ack.reason_code.as_u8(),
                        ack.reason_code.name()
                    );
                    // Busy servers and limits may clear; refusals of the
                    // credentials will not.
                    let retry = matches!(
                        ack.reason_code,
                        ReasonCode::ServerBusy
                            | ReasonCode::ServerUnavailable
                            | ReasonCode::QuotaExceeded
                    );
                    return Err(ConnectFailure { reason, retry });
                }
                let receive_maximum = ack.properties.receive_maximum.map_or(u16::MAX, |v| v.get());
                return Ok(Session {
                    io,
                    rbuf,
                    receive_maximum,
                });
            }
            Ok(Some(other)) => {
                return Err(ConnectFailure::retry(format!(
                    "{} before CONNACK",
                    other.packet_type()
                )));
            }
            Ok(None) => {}
            Err(e) => return Err(ConnectFailure::retry(format!("malformed CONNACK: {e}"))),
        }
        match io.read_buf(&mut rbuf).await {
            Ok(0) => return Err(ConnectFailure::retry("closed before CONNACK")),
            Ok(_) => {}
            Err(e) => return Err(ConnectFailure::retry(format!("read CONNACK: {}", e.kind()))),
        }
    }
}

/// Where a QoS 1/2 publish stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Published,
    /// PUBREL sent, waiting for PUBCOMP.
    Released,
}

#[derive(Debug)]
struct InFlight {
    packet_id: u16,
    stage: Stage,
    /// Latency counts from here.
    origin: Instant,
    /// Sent (or re-sent) at; the ack timeout counts from here.
    sent_at: Instant,
    /// The message's timestamp (all its points share it).
    ts: i64,
    points: u64,
    /// Kept for a persistent session, which re-sends it after a reconnect.
    publish: Option<Publish>,
}

/// How a connection ended.
enum End {
    /// The sender is done (quota used up and answered, or stopped).
    Finished,
    /// The connection broke; the reason is counted.
    Lost(String),
}

/// One device's whole life: connect (after its ramp slot), publish per the
/// schedule, reconnect when the connection breaks, and stop when told.
pub async fn run_device(
    ctx: Arc<SenderCtx>,
    s: Arc<MqttSettings>,
    cred: Credential,
    index: usize,
    local: usize,
    quota: Option<u64>,
    mut stop: watch::Receiver<bool>,
) -> DeviceTally {
    let mut dev = DeviceGen::new(cred.device.clone(), index as u64 + 1);
    let mut st = DeviceState {
        builder: Builder::new(ctx.shape.clone()),
        topic: s.topic.replace("{device}", &cred.device),
        inflight: VecDeque::new(),
        next_pid: 1,
        sent: 0,
        acked: 0,
        unacked: UnackedRanges::default(),
        stopping: *stop.borrow(),
        drain_deadline: None,
        body: String::new(),
    };
    let source = ctx.source(local);
    // Wait for this connection's ramp-up slot.
    tokio::select! {
        _ = sleep_until(ctx.connect_at(local)) => {}
        _ = stop.changed() => st.stopping = true,
    }
    let mut pace = None;
    let mut failures = 0u32;
    // Stopped while disconnected: what is unanswered stays so.
    while !st.stopping {
        ctx.stats.conn_attempt();
        let began = Instant::now();
        let attempt = tokio::select! {
            r = timeout(s.connect_timeout, connect(&s, &cred, source)) => r,
            _ = stop.changed() => { st.stopping = true; break; }
        };
        let session = match attempt {
            Ok(Ok(session)) => session,
            Ok(Err(f)) => {
                ctx.stats.conn_failed(&f.reason);
                failures += 1;
                if !f.retry || failures >= MAX_CONNECT_ATTEMPTS {
                    break;
                }
                backoff(failures, &mut stop, &mut st.stopping).await;
                continue;
            }
            Err(_) => {
                ctx.stats.conn_failed("connect timeout");
                failures += 1;
                if failures >= MAX_CONNECT_ATTEMPTS {
                    break;
                }
                backoff(failures, &mut stop, &mut st.stopping).await;
                continue;
            }
        };
        failures = 0;
        ctx.stats.conn_established(began.elapsed());
        let pace = pace.get_or_insert_with(|| ctx.pace(index, quota, Instant::now()));
        let end = st.serve(&ctx, &s, session, pace, &mut dev, &mut stop).await;
        ctx.stats.disconnected();
        match end {
            End::Finished => break,
            End::Lost(reason) => {
                ctx.stats.error(&format!("connection lost: {reason}"));
                if s.clean {
                    st.fail_all(&ctx, "connection lost");
                }
                if st.stopping || (pace.exhausted() && st.inflight.is_empty()) {
                    break;
                }
                backoff(1, &mut stop, &mut st.stopping).await;
            }
        }
    }
    st.fail_all(&ctx, "no answer before the end");
    DeviceTally::of(&dev, st.sent, st.acked, st.unacked)
}

/// Waits before reconnecting: 100 ms doubling per failure, at most 5 s, and
/// no longer than until `stop`.
async fn backoff(failures: u32, stop: &mut watch::Receiver<bool>, stopping: &mut bool) {
    let wait = Duration::from_millis(100 << failures.min(6)).min(Duration::from_secs(5));
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = stop.changed() => *stopping = true,
    }
}

struct DeviceState {
    builder: Builder,
    topic: String,
    inflight: VecDeque<InFlight>,
    next_pid: u16,
    sent: u64,
    acked: u64,
    unacked: UnackedRanges,
    stopping: bool,
    drain_deadline: Option<Instant>,
    body: String,
}

impl DeviceState {
    /// Counts a message as failed and remembers its timestamp.
    fn fail(&mut self, ctx: &SenderCtx, f: &InFlight, reason: &str) {
        ctx.stats.failed(reason);
        self.unacked.push(f.ts, f.ts);
    }

    fn fail_all(&mut self, ctx: &SenderCtx, reason: &str) {
        while let Some(f) = self.inflight.pop_front() {
            self.fail(ctx, &f, reason);
        }
    }

    fn allocate_pid(&mut self) -> u16 {
        loop {
            let pid = self.next_pid;
            self.next_pid = self.next_pid.checked_add(1).unwrap_or(1);
            if !self.inflight.iter().any(|f| f.packet_id == pid) {
                return pid;
            }
        }
    }

    /// One connection: publish, read answers, ping, until done or broken.
    async fn serve(
        &mut self,
        ctx: &SenderCtx,
        s: &MqttSettings,
        session: Session,
        pace: &mut crate::pace::Pace,
        dev: &mut DeviceGen,
        stop: &mut watch::Receiver<bool>,
    ) -> End {
        let Session {
            mut io,
            mut rbuf,
            receive_maximum,
        } = session;
        let window = if s.qos == QoS::AtMostOnce {
            1
        } else {
            (ctx.in_flight as usize).min(usize::from(receive_maximum).max(1))
        };
        let mut wbuf = BytesMut::with_capacity(256);
        // A persistent session re-sends what is unanswered, in order.
        let now = Instant::now();
        for f in self.inflight.iter_mut() {
            f.sent_at = now;
            let packet: Packet = match (f.stage, &f.publish) {
                (Stage::Published, Some(p)) => {
                    let mut p = p.clone();
                    p.dup = true;
                    p.into()
                }
                _ => PubRel::new(f.packet_id).into(),
            };
            if let Err(e) = encode(&packet, s.version, &mut wbuf) {
                return End::Lost(format!("encoding a re-sent packet: {e}"));
            }
        }
        let ping_every =
            (s.keep_alive > 0).then(|| Duration::from_secs(u64::from(s.keep_alive)).mul_f64(0.75));
        let mut last_write = Instant::now();
        let far = Instant::now() + Duration::from_secs(365 * 86_400);
        // A churning device leaves after its hold, cleanly.
        let leave_at = ctx
            .hold
            .filter(|_| ctx.mode == LoadMode::Idle)
            .map(|h| Instant::now() + h);
        loop {
            if !wbuf.is_empty() {
                let w = async {
                    io.write_all(&wbuf).await?;
                    io.flush().await
                };
                if let Err(e) = w.await {
                    return End::Lost(format!("write: {}", e.kind()));
                }
                wbuf.clear();
                last_write = Instant::now();
            }
            let now = Instant::now();
            if self.stopping && self.inflight.is_empty() {
                break;
            }
            if !self.stopping
                && ctx.mode != LoadMode::Idle
                && pace.exhausted()
                && self.inflight.is_empty()
            {
                break;
            }
            if let Some(d) = self.drain_deadline
                && now >= d
            {
                break;
            }
            if leave_at.is_some_and(|d| now >= d) {
                break;
            }
            let send_at = if !self.stopping && self.inflight.len() < window {
                pace.due()
            } else {
                None
            };
            let expiry = self.inflight.front().map(|f| f.sent_at + ctx.ack_timeout);
            let wake = [expiry, self.drain_deadline, leave_at]
                .into_iter()
                .flatten()
                .min();
            let ping_at = ping_every.map(|p| last_write + p);
            tokio::select! {
                biased;
                _ = stop.changed(), if !self.stopping => {
                    self.stopping = true;
                    self.drain_deadline = Some(Instant::now() + ctx.ack_timeout);
                }
                r = io.read_buf(&mut rbuf) => match r {
                    Ok(0) => return End::Lost("closed by the server".into()),
                    Err(e) => return End::Lost(format!("read: {}", e.kind())),
                    Ok(_) => loop {
                        match decode(&mut rbuf, Some(s.version), MAX_INBOUND_PACKET) {
                            Ok(Some(p)) => {
                                if let Err(reason) = self.handle(ctx, s, p, &mut wbuf) {
                                    return End::Lost(reason);
                                }
                            }
                            Ok(None) => break,
                            Err(e) => return End::Lost(format!("malformed packet from the server: {e}")),
                        }
                    },
                },
                _ = sleep_until(send_at.unwrap_or(far)), if send_at.is_some() => {
                    if let Err(reason) = self.publish(ctx, s, pace, dev, &mut wbuf) {
                        return End::Lost(reason);
                    }
                }
                _ = sleep_until(wake.unwrap_or(far)), if wake.is_some() => {
                    let now = Instant::now();
                    while self.inflight.front().is_some_and(|f| f.sent_at + ctx.ack_timeout <= now) {
                        if let Some(f) = self.inflight.pop_front() {
                            self.fail(ctx, &f, "ack timeout");
                        }
                    }
                }
                _ = sleep_until(ping_at.unwrap_or(far)), if ping_at.is_some() => {
                    if let Err(e) = encode(&Packet::PingReq, s.version, &mut wbuf) {
                        return End::Lost(format!("encoding PINGREQ: {e}"));
                    }
                }
            }
        }
        // A clean goodbye; the server may already be gone, which is fine.
        wbuf.clear();
        if encode(
            &Disconnect::new(ReasonCode::NORMAL_DISCONNECTION).into(),
            s.version,
            &mut wbuf,
        )
        .is_ok()
        {
            let _ = timeout(Duration::from_secs(1), async {
                let _ = io.write_all(&wbuf).await;
                let _ = io.shutdown().await;
            })
            .await;
        }
        End::Finished
    }

    fn publish(
        &mut self,
        ctx: &SenderCtx,
        s: &MqttSettings,
        pace: &mut crate::pace::Pace,
        dev: &mut DeviceGen,
        wbuf: &mut BytesMut,
    ) -> Result<(), String> {
        let now = Instant::now();
        let origin = pace.take(now);
        let points = self.builder.messages(Format::Json, dev, 1, &mut self.body);
        let ts = dev.max_ts();
        let payload = Bytes::copy_from_slice(self.body.as_bytes());
        let bytes = payload.len() as u64;
        let packet_id = (s.qos != QoS::AtMostOnce).then(|| self.allocate_pid());
        let mut publish = Publish::new(self.topic.clone(), payload);
        publish.qos = s.qos;
        publish.packet_id = packet_id;
        let keep = (!s.clean && packet_id.is_some()).then(|| publish.clone());
        encode(&publish.into(), s.version, wbuf).map_err(|e| format!("encoding PUBLISH: {e}"))?;
        ctx.stats.sent(points, bytes);
        self.sent += points;
        if let Some(packet_id) = packet_id {
            self.inflight.push_back(InFlight {
                packet_id,
                stage: Stage::Published,
                origin,
                sent_at: now,
                ts,
                points,
                publish: keep,
            });
        }
        Ok(())
    }

    fn complete(&mut self, ctx: &SenderCtx, i: usize, reason: ReasonCode, packet: &str) {
        let Some(f) = self.inflight.remove(i) else {
            return;
        };
        if reason.is_error() {
            let why = format!("{packet} 0x{:02X} {}", reason.as_u8(), reason.name());
            self.fail(ctx, &f, &why);
        } else {
            ctx.stats.acked(f.points, f.origin.elapsed());
            self.acked += f.points;
        }
    }

    fn handle(
        &mut self,
        ctx: &SenderCtx,
        s: &MqttSettings,
        packet: Packet,
        wbuf: &mut BytesMut,
    ) -> Result<(), String> {
        let find = |inflight: &VecDeque<InFlight>, pid: u16, stage: Stage| {
            inflight
                .iter()
                .position(|f| f.packet_id == pid && f.stage == stage)
        };
        let mut out: Option<Packet> = None;
        match packet {
            Packet::PubAck(a) if s.qos == QoS::AtLeastOnce => {
                match find(&self.inflight, a.packet_id, Stage::Published) {
                    Some(i) => self.complete(ctx, i, a.reason_code, "PUBACK"),
                    None => ctx.stats.error("late or unknown PUBACK"),
                }
            }
            Packet::PubRec(r) if s.qos == QoS::ExactlyOnce => {
                match find(&self.inflight, r.packet_id, Stage::Published) {
                    Some(i) if r.reason_code.is_error() => {
                        self.complete(ctx, i, r.reason_code, "PUBREC")
                    }
                    Some(i) => {
                        if let Some(f) = self.inflight.get_mut(i) {
                            f.stage = Stage::Released;
                            f.publish = None;
                        }
                        out = Some(PubRel::new(r.packet_id).into());
                    }
                    None => {
                        // Release it anyway so the server can forget it.
                        ctx.stats.error("late or unknown PUBREC");
                        out = Some(PubRel::new(r.packet_id).into());
                    }
                }
            }
            Packet::PubComp(c) if s.qos == QoS::ExactlyOnce => {
                match find(&self.inflight, c.packet_id, Stage::Released) {
                    Some(i) => self.complete(ctx, i, c.reason_code, "PUBCOMP"),
                    None => ctx.stats.error("late or unknown PUBCOMP"),
                }
            }
            Packet::PingResp => {}
            Packet::Disconnect(d) => {
                return Err(format!(
                    "DISCONNECT 0x{:02X} {}",
                    d.reason_code.as_u8(),
                    d.reason_code.name()
                ));
            }
            // Nothing is subscribed, but answer what arrives as the
            // protocol requires.
            Packet::Publish(p) => match (p.qos, p.packet_id) {
                (QoS::AtLeastOnce, Some(id)) => out = Some(PubAck::new(id).into()),
                (QoS::ExactlyOnce, Some(id)) => out = Some(PubRec::new(id).into()),
                _ => {}
            },
            Packet::PubRel(r) => out = Some(PubComp::new(r.packet_id).into()),
            other => {
                return Err(format!(
                    "unexpected {} from the server",
                    other.packet_type()
                ));
            }
        }
        if let Some(p) = out {
            encode(&p, s.version, wbuf).map_err(|e| format!("encoding an answer: {e}"))?;
        }
        Ok(())
    }
}
