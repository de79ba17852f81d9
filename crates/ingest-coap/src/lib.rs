//! The CoAP ingest frontend (RFC 7252 over UDP).
//!
//! Devices POST telemetry to `/t` (JSON or SenML JSON) or one value to
//! `/t/{metric}`, with their token in option [`TOKEN_OPTION`]; see
//! [`resource`] for the resources and docs/coap.md for a walk-through.
//!
//! **Nothing acknowledged is lost.** A confirmable request is answered with
//! 2.04 Changed only once its points are durable in the log:
//! piggybacked on the ACK when the append takes less than
//! [`CoapConfig::separate_after_ms`], else as a separate confirmable response
//! after an empty ACK (which tells the client to stop retransmitting), sent
//! again until the client acknowledges it. Every request is remembered by
//! endpoint and message id for EXCHANGE_LIFETIME, so a retransmission gets
//! the same answer and is never appended twice. Non-confirmable requests
//! are best effort: their response (NON) may be lost, and so may they.
//!
//! **No client can hurt another.** Every table is bounded (exchanges,
//! endpoints, requests in hand per endpoint) and refuses with 5.03 and
//! Max-Age when full; a datagram over [`CoapConfig::max_message_bytes`] is
//! refused with 4.13; the tenant's message and byte rates apply as for
//! every frontend (4.29 with Max-Age).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tributary_coap_codec::{Code, Message, MessageType, Token, option};
use tributary_ingest::Ingestor;

mod commands;
mod dtls;
mod exchanges;
mod lwm2m;
mod metrics;
pub mod observe;
pub mod resource;
mod uploads;

pub use metrics::{CoapMetrics, Refusal};
pub use resource::TOKEN_OPTION;

use exchanges::{Admission, Bounds, Exchanges, State};
use observe::{Commands, ObserveBounds};
use uploads::{SharedUploads, UploadBounds};

/// The frontend's settings (`[coap]` in the configuration file, or
/// `TRIBUTARY_COAP__<FIELD>` variables).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoapConfig {
    /// The largest datagram taken; a larger one is refused with 4.13 and
    /// Size1. RFC 7252 advises 1,152 bytes of message for paths with an
    /// unknown MTU.
    pub max_message_bytes: usize,
    /// The largest payload taken in one message.
    pub max_body_bytes: usize,
    /// The largest body taken in blocks (Block1).
    pub max_upload_bytes: usize,
    /// Bytes of all block-wise uploads held until their last block.
    pub max_upload_total_bytes: usize,
    /// Of them, one tenant's devices'.
    pub max_upload_tenant_bytes: usize,
    /// An upload without a block for this long is dropped.
    pub upload_idle_secs: u64,
    /// How long a request is remembered to answer its retransmissions, in
    /// seconds (RFC 7252's EXCHANGE_LIFETIME, 247).
    pub exchange_lifetime_secs: u64,
    /// Requests remembered in all. Each costs about 100 bytes. Only
    /// requests that appended something are remembered for the lifetime; a
    /// refused one is forgotten once answered.
    pub max_exchanges: usize,
    /// Requests of one tenant's devices remembered, so that one tenant
    /// cannot take the whole table.
    pub max_exchanges_per_tenant: u32,
    /// Requests of one endpoint in hand at once (RFC 7252's NSTART is 1 for
    /// the client; this is the server's tolerance).
    pub max_pending_per_peer: u32,
    /// Endpoints with requests remembered.
    pub max_peers: usize,
    /// Of them, from one IP address.
    pub max_peers_per_ip: u32,
    /// An append that takes longer, in milliseconds, is answered with an
    /// empty ACK at once, then a separate response (below the client's
    /// ACK_TIMEOUT of 2 s, so it does not retransmit meanwhile).
    pub separate_after_ms: u64,
    /// The first wait for the ACK of a separate response, in milliseconds
    /// (RFC 7252's ACK_TIMEOUT, 2,000, times 1 to 1.5 at random); it
    /// doubles each time.
    pub ack_timeout_ms: u64,
    /// How many times a separate response or a command notification is
    /// sent again (MAX_RETRANSMIT, 4).
    pub max_retransmit: u32,
    /// Devices registered for commands (Observe on `/c`).
    pub max_observers: usize,
    /// Of them, one tenant's.
    pub max_observers_per_tenant: usize,
    /// How long a registration lasts unless renewed, in seconds.
    pub observe_lifetime_secs: u64,
    /// Commands waiting for a device's reply.
    pub max_pending_commands: usize,
    /// LwM2M clients registered (`/rd`).
    pub max_lwm2m_registrations: usize,
    /// Of them, one tenant's.
    pub max_lwm2m_registrations_per_tenant: usize,
    /// The longest registration lifetime (`lt`) taken, in seconds.
    pub lwm2m_max_lifetime_secs: u64,
    /// How long a client in LwM2M queue mode listens after it sent
    /// something, in seconds (the specification's default is
    /// MAX_TRANSMIT_WAIT, 93 s); a request for it after that waits for its
    /// next update.
    pub lwm2m_queue_window_secs: u64,
    /// How long the server waits for a device's answer to its own request
    /// (an Observe after registration), in seconds.
    pub device_request_secs: u64,
    /// DTLS sessions held at once (each costs an OpenSSL session, about
    /// 20 KiB while in use).
    pub max_dtls_sessions: usize,
    /// Of them, from one IP address.
    pub max_dtls_sessions_per_ip: u32,
    /// DTLS handshakes in progress at once; when full, the oldest one whose
    /// client has not returned a cookie makes room.
    pub max_dtls_handshakes: usize,
    /// A handshake not finished in this many seconds is dropped.
    pub dtls_handshake_secs: u64,
    /// A session without a datagram for this many seconds is closed; the
    /// device handshakes again (RFC 7925 devices that sleep longer keep no
    /// session anyway).
    pub dtls_idle_secs: u64,
}

/// Bytes a DTLS 1.2 record adds to a CoAP message, and then some: a 13-byte
/// header, an 8-byte explicit nonce and up to a 16-byte tag for the AEAD
/// suites, or an IV, MAC and padding for the CBC ones.
const DTLS_OVERHEAD: usize = 128;

impl Default for CoapConfig {
    fn default() -> Self {
        CoapConfig {
            max_message_bytes: 1152,
            max_body_bytes: 1024,
            max_upload_bytes: 64 * 1024,
            max_upload_total_bytes: 64 * 1024 * 1024,
            max_upload_tenant_bytes: 16 * 1024 * 1024,
            upload_idle_secs: 60,
            exchange_lifetime_secs: 247,
            max_exchanges: 1_000_000,
            max_exchanges_per_tenant: 250_000,
            max_pending_per_peer: 8,
            max_peers: 100_000,
            max_peers_per_ip: 10_000,
            separate_after_ms: 1000,
            ack_timeout_ms: 2000,
            max_retransmit: 4,
            max_observers: 100_000,
            max_observers_per_tenant: 50_000,
            observe_lifetime_secs: 24 * 3600,
            max_pending_commands: 10_000,
            max_lwm2m_registrations: 100_000,
            max_lwm2m_registrations_per_tenant: 50_000,
            lwm2m_max_lifetime_secs: 7 * 86_400,
            lwm2m_queue_window_secs: 93,
            device_request_secs: 30,
            max_dtls_sessions: 20_000,
            max_dtls_sessions_per_ip: 1_000,
            max_dtls_handshakes: 1_000,
            dtls_handshake_secs: 10,
            dtls_idle_secs: 3_600,
        }
    }
}

impl CoapConfig {
    /// Checks that every bound is usable.
    pub fn validate(&self) -> Result<(), String> {
        if !(64..=65_507).contains(&self.max_message_bytes) {
            return Err("max_message_bytes: 64 to 65507".into());
        }
        if self.max_body_bytes == 0 || self.max_body_bytes >= self.max_message_bytes {
            return Err("max_body_bytes: at least 1, and below max_message_bytes".into());
        }
        if self.max_exchanges == 0
            || self.max_exchanges_per_tenant == 0
            || self.max_peers == 0
            || self.max_peers_per_ip == 0
            || self.max_pending_per_peer == 0
        {
            return Err(
                "max_exchanges, max_exchanges_per_tenant, max_peers and max_pending_per_peer: at least 1"
                    .into(),
            );
        }
        if self.max_upload_bytes < self.max_body_bytes
            || self.max_upload_tenant_bytes < self.max_upload_bytes
            || self.max_upload_total_bytes < self.max_upload_tenant_bytes
        {
            return Err(
                "max_body_bytes ≤ max_upload_bytes ≤ max_upload_tenant_bytes ≤ max_upload_total_bytes"
                    .into(),
            );
        }
        if !(1..=3600).contains(&self.upload_idle_secs) {
            return Err("upload_idle_secs: 1 to 3600".into());
        }
        if !(1..=3600).contains(&self.exchange_lifetime_secs) {
            return Err("exchange_lifetime_secs: 1 to 3600".into());
        }
        if !(1..=60_000).contains(&self.ack_timeout_ms)
            || !(1..=60_000).contains(&self.separate_after_ms)
        {
            return Err("ack_timeout_ms and separate_after_ms: 1 to 60000".into());
        }
        if self.max_observers == 0
            || self.max_observers_per_tenant == 0
            || self.max_pending_commands == 0
        {
            return Err(
                "max_observers, max_observers_per_tenant and max_pending_commands: at least 1"
                    .into(),
            );
        }
        if !(1..=7 * 86_400).contains(&self.observe_lifetime_secs) {
            return Err("observe_lifetime_secs: 1 to 604800".into());
        }
        if self.max_dtls_sessions == 0
            || self.max_dtls_sessions_per_ip == 0
            || self.max_dtls_handshakes == 0
        {
            return Err(
                "max_dtls_sessions, max_dtls_sessions_per_ip and max_dtls_handshakes: at least 1"
                    .into(),
            );
        }
        if self.max_lwm2m_registrations == 0 || self.max_lwm2m_registrations_per_tenant == 0 {
            return Err(
                "max_lwm2m_registrations and max_lwm2m_registrations_per_tenant: at least 1".into(),
            );
        }
        if !(60..=30 * 86_400).contains(&self.lwm2m_max_lifetime_secs) {
            return Err("lwm2m_max_lifetime_secs: 60 to 2592000".into());
        }
        if !(1..=3600).contains(&self.lwm2m_queue_window_secs) {
            return Err("lwm2m_queue_window_secs: 1 to 3600".into());
        }
        if !(1..=600).contains(&self.device_request_secs) {
            return Err("device_request_secs: 1 to 600".into());
        }
        if !(1..=120).contains(&self.dtls_handshake_secs) {
            return Err("dtls_handshake_secs: 1 to 120".into());
        }
        if !(1..=7 * 86_400).contains(&self.dtls_idle_secs) {
            return Err("dtls_idle_secs: 1 to 604800".into());
        }
        if self.max_retransmit > 10 {
            return Err("max_retransmit: at most 10".into());
        }
        Ok(())
    }
}

/// The CoAP frontend. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct CoapServer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ingestor: Ingestor,
    config: CoapConfig,
    metrics: CoapMetrics,
    exchanges: Mutex<Exchanges>,
    uploads: SharedUploads,
    commands: Commands,
    /// The listener, once serving: commands are sent on it.
    socket: std::sync::OnceLock<Link>,
    /// Message ids of the server's own confirmable and non-confirmable
    /// messages.
    next_id: AtomicU16,
    /// Confirmable messages of the server's (separate responses, command
    /// notifications, requests to LwM2M clients) waiting for their ACK or
    /// RST, by endpoint and message id.
    waiting: Mutex<HashMap<(SocketAddr, u16), oneshot::Sender<Message>>>,
    /// The server's requests to devices waiting for a separate response,
    /// by token.
    responses: Mutex<HashMap<Token, oneshot::Sender<Message>>>,
    /// LwM2M registrations and observations.
    lwm2m: lwm2m::Lwm2m,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How messages reach an endpoint: straight on the UDP socket, or in the
/// endpoint's DTLS session.
#[derive(Debug, Clone)]
pub(crate) enum Link {
    Udp(Arc<UdpSocket>),
    Dtls(Arc<dtls::Dtls>),
}

impl Link {
    /// Sends without waiting: a full socket buffer (or session queue) drops
    /// the datagram, which CoAP's retransmissions recover from (the
    /// client's for a piggybacked response, the server's for a separate
    /// one).
    fn send_bytes(&self, peer: SocketAddr, data: &[u8]) {
        match self {
            Link::Udp(socket) => {
                if let Err(e) = socket.try_send_to(data, peer) {
                    tracing::debug!(%peer, error = %e, "CoAP send failed");
                }
            }
            Link::Dtls(dtls) => dtls.send(peer, data),
        }
    }

    fn send(&self, peer: SocketAddr, msg: &Message) {
        self.send_bytes(peer, &msg.encode());
    }
}

impl CoapServer {
    /// A server that appends through `ingestor`.
    pub fn new(
        ingestor: Ingestor,
        config: CoapConfig,
        metrics: CoapMetrics,
    ) -> Result<Self, String> {
        config.validate()?;
        let bounds = Bounds {
            lifetime: Duration::from_secs(config.exchange_lifetime_secs),
            max_exchanges: config.max_exchanges,
            max_per_tenant: config.max_exchanges_per_tenant,
            max_pending_per_peer: config.max_pending_per_peer,
            max_peers: config.max_peers,
            max_peers_per_ip: config.max_peers_per_ip,
        };
        let uploads = SharedUploads::new(
            UploadBounds {
                max_upload_bytes: config.max_upload_bytes,
                max_total_bytes: config.max_upload_total_bytes,
                max_tenant_bytes: config.max_upload_tenant_bytes,
                idle: Duration::from_secs(config.upload_idle_secs),
            },
            metrics.upload_bytes.clone(),
        );
        let commands = Commands::new(ObserveBounds {
            max_observers: config.max_observers,
            max_per_tenant: config.max_observers_per_tenant,
            lifetime: Duration::from_secs(config.observe_lifetime_secs),
            max_pending: config.max_pending_commands,
        });
        Ok(CoapServer {
            inner: Arc::new(Inner {
                ingestor,
                uploads,
                commands,
                socket: std::sync::OnceLock::new(),
                metrics,
                exchanges: Mutex::new(Exchanges::new(bounds)),
                next_id: AtomicU16::new(rand::random()),
                waiting: Mutex::new(HashMap::new()),
                responses: Mutex::new(HashMap::new()),
                lwm2m: lwm2m::Lwm2m::new(lwm2m::Lwm2mBounds {
                    max_registrations: config.max_lwm2m_registrations,
                    max_per_tenant: config.max_lwm2m_registrations_per_tenant,
                    max_lifetime: Duration::from_secs(config.lwm2m_max_lifetime_secs),
                }),
                config,
            }),
        })
    }

    /// Reports devices registered for commands as online on this frontend
    /// (`frontend`, as presence names it), so that commands are routed here.
    pub fn set_presence(
        &self,
        presence: Arc<dyn tributary_core::directory::PresenceSink>,
        frontend: String,
    ) {
        self.inner.commands.set_presence(presence, frontend);
    }

    /// Ends `device`'s registration for commands, if it has one here, and
    /// reports it offline: with `credential: None` whatever it registered
    /// with (the device was disabled or deleted), with `Some(id)` only when
    /// it registered with that credential, or one not known (`id` was
    /// revoked). Returns whether one ended. A device that may still
    /// authenticate registers again.
    pub async fn end_registration(
        &self,
        tenant: &str,
        device: &str,
        credential: Option<&str>,
    ) -> bool {
        let closed = self.dtls().map_or(0, |dtls| {
            dtls.close_where(|s| {
                s.device() == (tenant, device) && credential.is_none_or(|c| s.credential.id == c)
            })
        });
        if closed > 0 {
            tracing::info!(
                tenant,
                device,
                closed,
                "closing a revoked device's DTLS sessions"
            );
        }
        let lwm2m_ended = self
            .inner
            .lwm2m
            .end_device(tenant, device, credential)
            .is_some();
        let ended = match credential {
            None => self.inner.commands.deregister(tenant, device, None),
            Some(c) => self.inner.commands.deregister_credential(tenant, device, c),
        } || lwm2m_ended;
        if ended {
            self.inner
                .metrics
                .observers(self.inner.commands.observers());
            tracing::info!(
                tenant,
                device,
                "ending a revoked device's CoAP registration"
            );
            self.inner.commands.report(tenant, device, false).await;
        }
        ended || closed > 0
    }

    /// Checks the credential of every registration for commands again, with
    /// the registry itself, and ends those no longer valid (revoked or
    /// expired, the device disabled or deleted): for when revocation events
    /// may have been missed. Returns how many ended. A credential the
    /// registry cannot be asked about right now stays (and is logged).
    pub async fn revalidate(&self) -> usize {
        let mut ended = 0;
        let mut held = self.inner.commands.registrations();
        held.extend(self.inner.lwm2m.registrations());
        if let Some(dtls) = self.dtls() {
            for s in dtls.sessions() {
                let (tenant, device) = s.device();
                held.push((tenant.to_owned(), device.to_owned(), s.credential.id));
            }
        }
        held.sort();
        held.dedup();
        for (tenant, device, credential) in held {
            let cred = tributary_core::directory::Credential {
                id: credential.clone(),
                expires_at_ns: None,
            };
            match self
                .inner
                .ingestor
                .credential_valid(&tenant, &cred, Some(&device))
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    if self
                        .end_registration(&tenant, &device, Some(&credential))
                        .await
                    {
                        ended += 1;
                    }
                }
                Err(e) => tracing::warn!(
                    tenant,
                    device,
                    error = %e,
                    "a CoAP registration's credential could not be checked again"
                ),
            }
        }
        ended
    }

    /// Whether `device` is registered here for commands (Observe on `/c`,
    /// or an LwM2M registration).
    pub fn observed(&self, tenant: &str, device: &str) -> bool {
        self.inner.commands.observed(tenant, device, Instant::now())
            || self.lwm2m_registered(tenant, device)
    }

    /// Serves plain CoAP datagrams from `socket` until `stop` resolves.
    /// Requests in hand then still finish (their appends are durable or
    /// refused). Devices authenticate with their token in
    /// [`TOKEN_OPTION`].
    pub async fn serve(
        &self,
        socket: UdpSocket,
        stop: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let socket = Arc::new(socket);
        let link = Link::Udp(Arc::clone(&socket));
        if self.inner.socket.set(link.clone()).is_err() {
            return Err(std::io::Error::other("this CoAP server is serving already"));
        }
        // One byte more than the largest message tells a larger datagram
        // (truncated by the kernel) from one that fits exactly.
        let max = self.inner.config.max_message_bytes;
        self.receive(&socket, max + 1, stop, |data, peer| {
            if data.len() > max {
                self.oversized(&link, peer, data);
            } else {
                self.datagram(&link, peer, data, None);
            }
        })
        .await
    }

    /// Serves CoAP over DTLS 1.2 with pre-shared keys from `socket` until
    /// `stop` resolves: each device authenticates with the PSK identity
    /// and key the registry issued it (docs/coap.md), and its requests in
    /// the session need no token.
    pub async fn serve_dtls(
        &self,
        socket: UdpSocket,
        stop: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let socket = Arc::new(socket);
        let config = &self.inner.config;
        let bounds = dtls::DtlsBounds {
            max_sessions: config.max_dtls_sessions,
            max_sessions_per_ip: config.max_dtls_sessions_per_ip,
            max_handshakes: config.max_dtls_handshakes,
            handshake_timeout: Duration::from_secs(config.dtls_handshake_secs),
            idle: Duration::from_secs(config.dtls_idle_secs),
            mtu: u32::try_from(config.max_message_bytes + DTLS_OVERHEAD).unwrap_or(u32::MAX),
            max_message: config.max_message_bytes,
        };
        let dtls =
            Arc::new(dtls::Dtls::new(Arc::clone(&socket), bounds).map_err(std::io::Error::other)?);
        if self
            .inner
            .socket
            .set(Link::Dtls(Arc::clone(&dtls)))
            .is_err()
        {
            return Err(std::io::Error::other("this CoAP server is serving already"));
        }
        // Handshake flights and records carry up to DTLS_OVERHEAD bytes
        // more than the message; a larger datagram is not one of ours.
        let limit = config.max_message_bytes + DTLS_OVERHEAD;
        self.receive(&socket, limit + 1, stop, |data, peer| {
            if data.len() > limit {
                self.inner.metrics.dtls_dropped();
            } else {
                dtls.datagram(self, peer, data);
            }
        })
        .await
    }

    /// The DTLS listener, when this server serves one.
    fn dtls(&self) -> Option<Arc<dtls::Dtls>> {
        match self.inner.socket.get() {
            Some(Link::Dtls(d)) => Some(Arc::clone(d)),
            _ => None,
        }
    }

    /// The receive loop: each datagram of at most `buf_len` bytes (a longer
    /// one is cut to that) goes to `take`.
    async fn receive(
        &self,
        socket: &UdpSocket,
        buf_len: usize,
        stop: impl Future<Output = ()>,
        mut take: impl FnMut(&[u8], SocketAddr),
    ) -> std::io::Result<()> {
        let mut sweep = tokio::time::interval(Duration::from_secs(10));
        let mut buf = vec![0u8; buf_len];
        tokio::pin!(stop);
        loop {
            let received = tokio::select! {
                () = &mut stop => return Ok(()),
                _ = sweep.tick() => {
                    self.expire_observers();
                    continue;
                }
                r = socket.recv_from(&mut buf) => r,
            };
            match received {
                Ok((n, peer)) => take(&buf[..n], peer),
                // An ICMP error for an earlier send (a device went away)
                // surfaces here on some systems; it concerns that peer only.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                Err(e) => {
                    tracing::warn!(error = %e, "CoAP receive failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    /// The metrics.
    pub fn metrics(&self) -> &CoapMetrics {
        &self.inner.metrics
    }

    fn datagram(
        &self,
        link: &Link,
        peer: SocketAddr,
        data: &[u8],
        session: Option<&Arc<dtls::SessionAuth>>,
    ) {
        let msg = match Message::decode(data) {
            Ok(m) => m,
            Err(e) => {
                self.inner.metrics.malformed(&e);
                if let Some((MessageType::Confirmable, id)) = e.header {
                    link.send(peer, &Message::new(MessageType::Reset, Code::EMPTY, id));
                }
                return;
            }
        };
        match (msg.mtype, msg.code) {
            (MessageType::Acknowledgement | MessageType::Reset, _) => {
                if let Some(tx) = lock(&self.inner.waiting).remove(&(peer, msg.message_id)) {
                    let _ = tx.send(msg);
                }
            }
            // A notification of a resource the server observes on an LwM2M
            // client: stored, then acknowledged, as a request is answered.
            (MessageType::Confirmable | MessageType::NonConfirmable, code)
                if code.is_response() && self.inner.lwm2m.observed(&msg.token).is_some() =>
            {
                self.request(link, peer, msg, session);
            }
            // A separate response to one of the server's requests.
            (MessageType::Confirmable | MessageType::NonConfirmable, code)
                if code.is_response() && lock(&self.inner.responses).contains_key(&msg.token) =>
            {
                if msg.mtype == MessageType::Confirmable {
                    link.send(
                        peer,
                        &Message::new(MessageType::Acknowledgement, Code::EMPTY, msg.message_id),
                    );
                }
                if let Some(tx) = lock(&self.inner.responses).remove(&msg.token) {
                    let _ = tx.send(msg);
                }
            }
            (MessageType::Confirmable | MessageType::NonConfirmable, code) if code.is_request() => {
                self.request(link, peer, msg, session);
            }
            // A ping (CON 0.00), or a confirmable message the server has no
            // use for (a response it did not ask for): Reset.
            (MessageType::Confirmable, _) => {
                link.send(
                    peer,
                    &Message::new(MessageType::Reset, Code::EMPTY, msg.message_id),
                );
            }
            (MessageType::NonConfirmable, _) => {}
        }
    }

    /// A datagram over the limit: a confirmable request gets 4.13 with the
    /// largest size taken; anything else is dropped.
    fn oversized(&self, link: &Link, peer: SocketAddr, data: &[u8]) {
        let (first, id) = (data[0], u16::from_be_bytes([data[2], data[3]]));
        let tkl = usize::from(first & 0x0f);
        let confirmable = first >> 4 == 0b0100;
        let reply = resource::Reply::error(
            Code::REQUEST_ENTITY_TOO_LARGE,
            format_args!(
                "datagrams of at most {} bytes",
                self.inner.config.max_message_bytes
            ),
        );
        self.inner.metrics.refused(Refusal::TooLarge, &reply);
        if !confirmable || tkl > 8 || !Code(data[1]).is_request() {
            return;
        }
        let mut ack = Message::new(MessageType::Acknowledgement, Code::EMPTY, id);
        ack.token = Token::new(&data[4..4 + tkl]).unwrap_or_default();
        reply.apply(&mut ack, usize::MAX);
        ack.set_uint_option(option::SIZE1, self.inner.config.max_body_bytes as u32);
        self.respond(link, peer, &ack);
    }

    fn request(
        &self,
        link: &Link,
        peer: SocketAddr,
        req: Message,
        session: Option<&Arc<dtls::SessionAuth>>,
    ) {
        let inner = &self.inner;
        let confirmable = req.mtype == MessageType::Confirmable;
        let admission = {
            let mut x = lock(&inner.exchanges);
            let a = x.admit(peer, req.message_id, Instant::now());
            let (exchanges, peers) = x.len();
            inner.metrics.table(exchanges, peers);
            a
        };
        match admission {
            Admission::Duplicate(State::Pending { acked }) => {
                inner.metrics.duplicate();
                if confirmable && acked {
                    link.send(
                        peer,
                        &Message::new(MessageType::Acknowledgement, Code::EMPTY, req.message_id),
                    );
                }
            }
            Admission::Duplicate(State::Done(answer)) => {
                inner.metrics.duplicate();
                link.send_bytes(peer, &answer);
            }
            Admission::Refused(bound) => {
                let refusal = match bound {
                    "peers" => Refusal::Peers,
                    "peers_per_ip" => Refusal::PeersPerIp,
                    "pending_per_peer" => Refusal::PendingPerPeer,
                    _ => Refusal::Exchanges,
                };
                let reply = resource::Reply::error(
                    Code::SERVICE_UNAVAILABLE,
                    format_args!("the server is at its {bound} limit; retry later"),
                )
                .retry_after(1);
                inner.metrics.refused(refusal, &reply);
                let mut msg = self.response_frame(&req);
                reply.apply(&mut msg, req.encoded_len());
                self.respond(link, peer, &msg);
            }
            Admission::New => {
                let (server, link) = (self.clone(), link.clone());
                let session = session.cloned();
                tokio::spawn(async move { server.process(&link, peer, req, session).await });
            }
        }
    }

    /// The frame of a response: a piggybacked ACK to a confirmable request,
    /// a NON (with an id of the server's) to a non-confirmable one.
    fn response_frame(&self, req: &Message) -> Message {
        let mut msg = if req.mtype == MessageType::Confirmable {
            Message::new(MessageType::Acknowledgement, Code::EMPTY, req.message_id)
        } else {
            Message::new(MessageType::NonConfirmable, Code::EMPTY, self.next_id())
        };
        msg.token = req.token;
        msg
    }

    fn next_id(&self) -> u16 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn respond(&self, link: &Link, peer: SocketAddr, msg: &Message) {
        self.inner.metrics.responded(msg.code);
        link.send(peer, msg);
    }

    async fn process(
        &self,
        link: &Link,
        peer: SocketAddr,
        req: Message,
        session: Option<Arc<dtls::SessionAuth>>,
    ) {
        let inner = &self.inner;
        let id = req.message_id;
        let claim = |tenant: &str| lock(&inner.exchanges).claim(peer, id, tenant);
        let cx = resource::Context {
            ingestor: &inner.ingestor,
            metrics: &inner.metrics,
            max_body: inner.config.max_body_bytes,
            claim: &claim,
            peer,
            uploads: &inner.uploads,
            commands: &inner.commands,
            session: session.as_deref(),
            lwm2m: &inner.lwm2m,
        };
        if req.code.is_response() {
            // A notification: acknowledged only once durable, and never
            // early (an empty ACK is what tells the client it is stored).
            let stored = self.notification(&req, session.as_deref()).await;
            if stored && req.mtype == MessageType::Confirmable {
                let ack = Message::new(MessageType::Acknowledgement, Code::EMPTY, id);
                self.finish(peer, id, Code::CHANGED, ack.encode());
                link.send(peer, &ack);
            } else {
                self.finish(peer, id, Code::CHANGED, Vec::new());
            }
            return;
        }
        let work = resource::handle(&cx, &req);
        tokio::pin!(work);
        if req.mtype == MessageType::NonConfirmable {
            let reply = work.await;
            let mut msg = self.response_frame(&req);
            reply.apply(&mut msg, req.encoded_len());
            self.finish(peer, id, reply.code, msg.encode());
            self.respond(link, peer, &msg);
            return;
        }
        let separate_after = Duration::from_millis(inner.config.separate_after_ms);
        match tokio::time::timeout(separate_after, &mut work).await {
            Ok(reply) => {
                let mut msg = self.response_frame(&req);
                reply.apply(&mut msg, req.encoded_len());
                self.finish(peer, id, reply.code, msg.encode());
                self.respond(link, peer, &msg);
                if let Some(registration) = lwm2m_registered(&reply) {
                    let (server, link) = (self.clone(), link.clone());
                    tokio::spawn(
                        async move { server.observe_registration(&link, &registration).await },
                    );
                }
            }
            Err(_) => {
                // Stop the client's retransmissions, then answer separately.
                let ack = Message::new(MessageType::Acknowledgement, Code::EMPTY, id);
                lock(&inner.exchanges).acked(peer, id);
                link.send(peer, &ack);
                inner.metrics.separate();
                let reply = work.await;
                // A retransmission of the request from now on gets the empty
                // ACK again: the response is on its way.
                self.finish(peer, id, reply.code, ack.encode());
                let mut msg = Message::new(MessageType::Confirmable, Code::EMPTY, self.next_id());
                msg.token = req.token;
                reply.apply(&mut msg, req.encoded_len());
                self.inner.metrics.responded(msg.code);
                if self.deliver(link, peer, msg).await != Delivery::Acked {
                    self.inner.metrics.separate_lost();
                    tracing::info!(%peer, "a separate CoAP response was never acknowledged");
                }
            }
        }
    }

    /// Remembers the answer to a request that appended (2.xx) for its
    /// retransmissions; forgets a refused one, which appended nothing.
    fn finish(&self, peer: SocketAddr, id: u16, code: Code, answer: Vec<u8>) {
        let mut x = lock(&self.inner.exchanges);
        if code.class() == 2 {
            x.done(peer, id, answer.into_boxed_slice());
        } else {
            x.forget(peer, id);
        }
        let (exchanges, peers) = x.len();
        self.inner.metrics.table(exchanges, peers);
    }

    /// Sends a confirmable message until it is acknowledged or reset, at
    /// most `max_retransmit` times again, with RFC 7252's backoff; with the
    /// ACK, which may carry a response.
    async fn deliver_answer(
        &self,
        link: &Link,
        peer: SocketAddr,
        msg: Message,
    ) -> (Delivery, Option<Message>) {
        let inner = &self.inner;
        let key = (peer, msg.message_id);
        let (tx, mut rx) = oneshot::channel();
        lock(&inner.waiting).insert(key, tx);
        // Whatever ends this (an answer, giving up, the caller's timeout),
        // the waiting entry goes.
        struct Unwait<'a>(&'a Inner, (SocketAddr, u16));
        impl Drop for Unwait<'_> {
            fn drop(&mut self) {
                lock(&self.0.waiting).remove(&self.1);
            }
        }
        let _unwait = Unwait(inner, key);
        let wire = msg.encode();
        let mut wait = Duration::from_millis(inner.config.ack_timeout_ms)
            .mul_f64(1.0 + rand::random::<f64>() * 0.5);
        for attempt in 0..=inner.config.max_retransmit {
            if attempt > 0 {
                inner.metrics.retransmitted();
            }
            link.send_bytes(peer, &wire);
            match tokio::time::timeout(wait, &mut rx).await {
                Ok(Ok(answer)) if answer.mtype == MessageType::Acknowledgement => {
                    return (Delivery::Acked, Some(answer));
                }
                Ok(Ok(_)) => return (Delivery::Reset, None),
                Ok(Err(_)) => return (Delivery::Lost, None),
                Err(_) => wait *= 2,
            }
        }
        (Delivery::Lost, None)
    }

    /// Sends a confirmable message until it is acknowledged or reset.
    async fn deliver(&self, link: &Link, peer: SocketAddr, msg: Message) -> Delivery {
        self.deliver_answer(link, peer, msg).await.0
    }

    /// Ends registrations past their lifetime, and reports their devices
    /// offline.
    fn expire_observers(&self) {
        self.expire_lwm2m();
        let expired = self.inner.commands.expire(Instant::now());
        self.inner
            .metrics
            .observers(self.inner.commands.observers());
        if expired.is_empty() {
            return;
        }
        let server = self.clone();
        tokio::spawn(async move {
            for (tenant, device) in expired {
                server.inner.commands.report(&tenant, &device, false).await;
            }
        });
    }
}

/// The registration id of a 2.01 Created answer to an LwM2M register
/// (its Location-Path `rd/{id}`).
fn lwm2m_registered(reply: &resource::Reply) -> Option<String> {
    if reply.code != Code::CREATED {
        return None;
    }
    let mut path = reply
        .options
        .iter()
        .filter(|(n, _)| *n == option::LOCATION_PATH)
        .map(|(_, v)| v.as_slice());
    match (path.next(), path.next()) {
        (Some(b"rd"), Some(id)) => String::from_utf8(id.to_vec()).ok(),
        _ => None,
    }
}

/// What became of a confirmable message of the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    Acked,
    Reset,
    Lost,
}
