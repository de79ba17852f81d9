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

mod aliases;
mod delivery;
mod handshake;
mod inbound;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{oneshot, watch};
use tributary_core::directory::Principal;
use tributary_ingest::IngestError;
use tributary_mqtt_codec::{
    Disconnect, Packet, PacketType, ProtocolVersion, PubComp, PubRel, QoS, ReasonCode, Will,
    decode, encode,
};

use crate::Shared;
use crate::acl::Identity;
use crate::metrics::{DisconnectReason, PublishRejection};
use crate::router::{Detached, Kick};
use crate::session::{Message, Owned, Session, Stage};
use crate::tls::Peer;
use tributary_core::rate::TokenBucket;

use delivery::RetainedCursors;
use handshake::{Opened, open, report_presence};
use inbound::message_from_will;

/// Most deliveries taken from the mailbox per loop turn.
const DELIVERY_BATCH: usize = 64;
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
    /// Plain pub/sub within the tenant's message and byte rates: route it,
    /// then acknowledge (0x10 when no subscriber got it).
    Admitted(Message),
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
pub(crate) async fn run<S>(shared: Arc<Shared>, stream: S, permit: crate::PendingSlot, peer: Peer)
where
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
    /// Topic aliases the server sends the client.
    out_aliases: aliases::OutboundAliases,
    inflight: FuturesOrdered<BoxFuture<'static, Done>>,
    inflight_ids: HashSet<u16>,
    will: Option<Will>,
    bucket: Option<Arc<Mutex<TokenBucket>>>,
    problem_info: bool,
    stalled_since: Option<Instant>,
    /// Retained messages still to send for recent subscriptions.
    retained: RetainedCursors,
    /// When the credential the client authenticated with expires: the
    /// connection ends then.
    credential_expires: Option<Instant>,
    /// The device's online presence report, until it is durable; the
    /// client's SUBSCRIBEs wait for it (see `handshake::open`).
    presence_pending: Option<tokio::task::JoinHandle<()>>,
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

    fn write_room(&self) -> bool {
        self.wbuf.len() < self.shared.config.max_write_buffer
    }

    /// QoS 1 and 2 PUBLISHes the client has not had PUBACK or PUBCOMP for:
    /// what its Receive Maximum counts (MQTT 5.0 section 4.9).
    fn unacknowledged(&self) -> usize {
        self.inflight_ids.len() + self.owned.incoming_qos2.len()
    }

    /// What becomes of the PUBLISH at the head of the read buffer (its
    /// first byte tells), if the head is one:
    /// - `Some(Err(()))`: a 5.0 client over the Receive Maximum;
    /// - `Some(Ok(()))`: held: `receive_maximum` appends are in flight (the
    ///   durability backpressure), or a 3.1.1 client, which has no Receive
    ///   Maximum, has that many unacknowledged;
    /// - `None`: it may be handled.
    fn head_publish(&self) -> Option<Result<(), ()>> {
        let first = *self.rbuf.first()?;
        if first >> 4 != 3 {
            return None;
        }
        let limit = usize::from(self.shared.config.receive_maximum);
        let qos = (first >> 1) & 0x03;
        if qos > 0 && self.unacknowledged() >= limit {
            return Some(match self.version {
                ProtocolVersion::V5 => Err(()),
                ProtocolVersion::V311 => Ok(()),
            });
        }
        (self.inflight.len() >= limit).then_some(Ok(()))
    }

    /// Whether the socket is read: while there is room to write, and no
    /// PUBLISH at the head waits. At the in-flight limit the packets that
    /// complete what is in flight (PUBREL, PUBACK, PINGREQ, …) are still
    /// read and handled, so that a client at its limit finishes a QoS 2
    /// exchange, and a PUBLISH beyond a 5.0 client's Receive Maximum is
    /// seen.
    fn reading(&self) -> bool {
        self.write_room() && self.head_publish().is_none() && !self.head_subscribe_held()
    }

    /// Whether the next packet is a SUBSCRIBE that waits for the device's
    /// presence report.
    fn head_subscribe_held(&self) -> bool {
        self.presence_pending.is_some() && self.rbuf.first().is_some_and(|b| b >> 4 == 8)
    }

    /// The loop; returns why it ended.
    async fn serve(&mut self) -> End {
        loop {
            if let Err(end) = self.process_input() {
                return end;
            }
            self.pump_retained();
            self.pump_deliveries();
            // More retained pages to move, and room for them: come back
            // after anything more urgent.
            let more_retained = self.retained_ready();
            let reading = self.reading();
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
                presence_pending,
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
                Retained,
                PresenceDone,
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
                _ = tokio::task::yield_now(), if more_retained => Event::Retained,
                _ = async {
                    if let Some(report) = presence_pending.as_mut() {
                        let _ = report.await;
                    }
                }, if presence_pending.is_some() => Event::PresenceDone,
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
                Event::Notified | Event::Retained => {}
                Event::PresenceDone => self.presence_pending = None,
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
        let expiry = self.credential_expires.map(|at| {
            (
                at,
                End::Server(
                    ReasonCode::NotAuthorized,
                    DisconnectReason::CredentialExpired,
                ),
            )
        });
        [keep_alive, stall, expiry]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
    }

    /// Decodes and handles buffered packets while there is room in flight.
    fn process_input(&mut self) -> Result<(), End> {
        let max = self.shared.config.max_packet_size as usize;
        while !self.rbuf.is_empty() && self.write_room() {
            if self.head_subscribe_held() {
                break;
            }
            match self.head_publish() {
                Some(Err(())) => {
                    let limit = self.shared.config.receive_maximum;
                    tracing::debug!(tenant = %self.tenant, limit, "Receive Maximum exceeded");
                    return Err(End::Server(
                        ReasonCode::ReceiveMaximumExceeded,
                        DisconnectReason::ReceiveMaximum,
                    ));
                }
                // Held until something in flight completes.
                Some(Ok(())) => break,
                None => {}
            }
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
        // The online report first: the offline one must follow it, in the
        // registry and in the log.
        if let Some(report) = self.presence_pending.take() {
            let _ = report.await;
        }
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
