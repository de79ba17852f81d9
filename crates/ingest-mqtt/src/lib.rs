//! The MQTT frontend: an MQTT 3.1.1 and 5.0 server for devices whose
//! telemetry acknowledgements wait for the durable log append.
//!
//! What it does:
//!
//! - serves MQTT 3.1.1 and 5.0 clients over any byte stream:
//!   [`MqttServer::serve`] for TCP, [`MqttServer::serve_tls`] for TLS
//!   (rustls, [`MqttTls`], optionally asking for client certificates),
//!   [`MqttServer::serve_ws`] for WebSocket (upgrade at [`WS_PATH`],
//!   subprotocol `mqtt`), [`MqttServer::serve_wss`] for WebSocket over TLS, and [`MqttServer::spawn_connection`] for streams
//!   accepted elsewhere. TLS handshakes and WebSocket upgrades run in the
//!   connection's own task under a timeout, so a bad one affects no one else;
//! - behind a load balancer, reads the PROXY protocol header (v1 or v2) that
//!   starts every connection of the MQTT and MQTT-over-TLS listeners when
//!   [`MqttConfig::proxy_protocol`] is on (before the TLS ClientHello), so
//!   that logs name the real client: each connection's log lines carry the
//!   span `mqtt_connection{remote, transport}`;
//! - authenticates devices: the CONNECT user name is the device id, the
//!   password the device access token ([`tributary_ingest::Ingestor::authenticate`]),
//!   or, over TLS, a client certificate registered for the device
//!   ([`tributary_ingest::Ingestor::authenticate_certificate`]; the user
//!   name is then the device id or absent, no password needed);
//!   the client id must be the device id, or the device id followed by `/`
//!   and any suffix (`d1/dashboard`), so a device can never take over another
//!   device's session; an empty client id gets `{device}/auto-{n}`;
//! - authenticates tenant applications: user name `app:<name>`, password an
//!   application token ([`tributary_ingest::Ingestor::authenticate_application`]),
//!   any client id (their sessions are keyed apart from devices'); they
//!   publish and subscribe within their grants (see [`Identity`]), and their
//!   publishes are plain pub/sub, never telemetry;
//! - ingests telemetry and events published to the device topics (see
//!   [Topics](#topics)): a QoS 1 PUBACK or QoS 2 PUBREC is sent only
//!   once [`tributary_ingest::Ingestor::ingest_device`] returned, i.e. once
//!   the points are durable in the log. Appends of one connection run
//!   concurrently (up to the receive maximum) and share the log's group
//!   commits; acknowledgements go out in PUBLISH order;
//! - routes every other topic as plain pub/sub within the tenant: QoS 0, 1
//!   and 2 both ways, retained messages, wills (with the 5.0 will delay),
//!   shared subscriptions (`$share/{group}/{filter}`, round-robin, preferring
//!   connected members), subscription options (no local, retain as
//!   published, retain handling), subscription identifiers, topic aliases
//!   both ways, maximum packet size both ways, Receive Maximum enforced
//!   (0x93), a capped keep alive (Server Keep Alive), and user properties,
//!   content type, response topic and correlation data passed through;
//! - keeps persistent sessions (clean start 0 with a session expiry, or
//!   3.1.1 clean session 0): subscriptions, queued QoS 1 and 2 messages and
//!   unacknowledged deliveries survive a reconnect, in memory;
//! - reports presence ([`PresenceSink`]) when a device's first connection
//!   opens and its last one closes;
//! - offers an in-process API to publish to a device and await its answer
//!   ([`MqttServer::publish`], [`MqttServer::send_command`]), and
//!   implements [`CommandSink`] for operator commands: a command to an
//!   offline device with a persistent session is queued there until its
//!   TTL (the module `commands` has the outcome table).
//!
//! [`CommandSink`]: tributary_core::commands::CommandSink
//!
//! What it must not do: acknowledge telemetry before it is durable, let one
//! tenant see another's topics, or grow any queue without bound.
//!
//! # Topics
//!
//! | topic | who | what happens |
//! |---|---|---|
//! | `devices/{id}/telemetry` | device `{id}` | JSON, SenML or protobuf `TelemetryEnvelope`, by the 5.0 content type or by sniffing; appended to the log |
//! | `devices/{id}/telemetry/{metric}` | device `{id}` | a bare number, bool or string, one point of `{metric}` |
//! | `devices/{id}/events/{name}` | device `{id}` | one point of metric `event.{name}` (the payload as value; empty: `true`), appended as a record of kind `Event` |
//! | `devices/{id}/commands/{name}` | to device `{id}` | commands ([`MqttServer::send_command`]); the device answers on `.../response` |
//! | anything else under `devices/{id}/` | device `{id}` | plain pub/sub within the tenant |
//!
//! Ingested messages are also delivered to matching subscribers, once durable.
//!
//! # Reason codes
//!
//! | situation | MQTT 5.0 | MQTT 3.1.1 |
//! |---|---|---|
//! | bad token, token of another device or application | CONNACK 0x86 | CONNACK 4 |
//! | disabled device, will topic not allowed | CONNACK 0x87 | CONNACK 5 |
//! | client id not bound to the device | CONNACK 0x85 | CONNACK 2 |
//! | connection or session limit | CONNACK 0x97 | CONNACK 3 |
//! | registry unavailable | CONNACK 0x88 | CONNACK 3 |
//! | publish or subscribe outside the ACL | PUBACK/PUBREC 0x87, SUBACK 0x87 | disconnect, SUBACK 0x80 |
//! | payload not parseable | PUBACK/PUBREC 0x99 | disconnect |
//! | payload over a size or count limit | PUBACK/PUBREC 0x97 | disconnect |
//! | log or registry overloaded or down | DISCONNECT 0x89, no PUBACK: the client re-sends | disconnect |
//! | publish rate over the device's limit | DISCONNECT 0x96 | disconnect |
//! | malformed packet | DISCONNECT with the codec's code (0x81, 0x82, ...) | disconnect |
//! | keep alive ×1.5 without a packet | DISCONNECT 0x8D | disconnect |
//! | same client id connects again | DISCONNECT 0x8E to the old one | disconnect |
//! | server shutdown | DISCONNECT 0x8B after in-flight appends are acknowledged; 0x9D Server moved with a Server Reference when [`MqttConfig::server_reference`] is set | disconnect |
//!
//! MQTT 5.0 allows 0x96 only in DISCONNECT (table 3-4 leaves it out of
//! PUBACK), and a PUBACK with an error code is a final answer that clients do
//! not retry, so transient failures close the connection unacknowledged
//! instead, and the client re-sends the message on reconnect.
//!
//! # Concurrency and state
//!
//! Each connection is one task that owns its socket halves, a bounded write buffer, its in-flight appends
//! and its session's in-flight deliveries. Shared state (sessions,
//! subscription trees, retained messages, presence counts) lives in one
//! router behind a `std::sync::Mutex` that is never held across an `.await`:
//! every router operation is a short in-memory update, so a lock is cheaper
//! than an actor's channel hop, and bounded per-session mailboxes (not the
//! lock) decouple fast publishers from slow subscribers.
//!
//! # What survives a restart
//!
//! Telemetry that was acknowledged: it is in the log. Nothing else:
//! sessions, subscriptions, queued messages and retained messages are held
//! in memory and are lost when the process stops. Clients with persistent
//! sessions see `session present = 0` after a restart and must subscribe
//! again.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tracing::Instrument;
use tributary_core::directory::PresenceSink;
use tributary_core::model::validate_device_id;
use tributary_ingest::Ingestor;
use tributary_mqtt_codec::QoS;
use tributary_mqtt_codec::topic::validate_topic_name;

mod acl;
mod admission;
mod commands;
mod config;
mod connection;
mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod metrics;
mod proxy;
mod router;
mod session;
mod telemetry;
mod tls;
mod trie;
mod ws;

pub use acl::Identity;
pub use config::{MAX_SERVER_REFERENCE_LEN, MAX_TOPIC_LEVELS, MqttConfig};
pub use error::{MqttError, PublishError};
pub use metrics::MqttMetrics;
pub use session::Message;
pub use tls::{DEFAULT_HANDSHAKE_TIMEOUT, MqttTls, fingerprint};
pub use ws::WS_PATH;

use metrics::ConnectRefusal;
use proxy::Prefixed;
use router::Router;
use tls::Peer;

/// State shared by the server and its connections.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Arc<MqttConfig>,
    pub(crate) ingestor: Ingestor,
    pub(crate) presence: Arc<dyn PresenceSink>,
    pub(crate) metrics: MqttMetrics,
    router: Mutex<Router>,
    /// Turns true once the server shuts down.
    pub(crate) shutdown: watch::Sender<bool>,
    /// Connections past CONNACK.
    pub(crate) connections: AtomicUsize,
    /// Counter for assigned client ids.
    pub(crate) client_ids: AtomicU64,
    /// Open connections of each tenant (the `connections` quota).
    tenant_connections: Mutex<HashMap<String, usize>>,
    /// Sockets between accept and CONNACK.
    pending_connects: Arc<Semaphore>,
    /// Sockets between accept and CONNACK, by source (see [`source_key`]).
    pending_by_source: Mutex<HashMap<IpAddr, usize>>,
    /// The connect-rate schedule (`max_connect_rate`).
    pub(crate) admission: admission::ConnectAdmission,
    /// The tenants' `connects_per_sec` quotas.
    pub(crate) tenant_connect_rates: admission::TenantConnectRates,
    /// Connection tasks alive, and a wake-up when that drops to zero.
    active: AtomicUsize,
    idle: Notify,
}

/// Resolves once the flag turns true (or its sender is gone). A function of
/// its own so that no `watch::Ref` lives in a caller's future.
pub(crate) async fn until_true(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

impl Shared {
    pub(crate) fn router(&self) -> MutexGuard<'_, Router> {
        self.router.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn tenant_connections(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.tenant_connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A socket's hold, until its CONNACK, on one of the server's
/// pending-connect slots and, once its address is known, on one of its
/// source's (`max_pending_connects_per_source`): a source that opens
/// sockets and never finishes CONNECT can take its share of the slots, not
/// all of them.
#[derive(Debug)]
pub(crate) struct PendingSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    source: Option<SourceSlot>,
}

#[derive(Debug)]
struct SourceSlot {
    shared: Arc<Shared>,
    key: IpAddr,
}

impl PendingSlot {
    /// Also takes a slot of `remote`'s source; `None` when that source has
    /// used its share (the socket is then closed).
    fn with_source(mut self, shared: &Arc<Shared>, remote: SocketAddr) -> Option<Self> {
        let limit = shared.config.max_pending_connects_per_source;
        if limit == 0 {
            return Some(self);
        }
        let key = source_key(remote.ip());
        {
            let mut by_source = shared
                .pending_by_source
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let n = by_source.entry(key).or_insert(0);
            if *n >= limit {
                return None;
            }
            *n += 1;
        }
        self.source = Some(SourceSlot {
            shared: shared.clone(),
            key,
        });
        Some(self)
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut by_source = self
            .shared
            .pending_by_source
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = by_source.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                by_source.remove(&self.key);
            }
        }
    }
}

/// The source a pending-connect share belongs to: an IPv4 address, or an
/// IPv6 /64 (one subscriber's usual allocation, so that an attacker cannot
/// multiply its share by rotating addresses within it).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::V6(octets.into())
            }
        },
    }
}

/// Counts a connection task while it lives.
struct ActiveTask(Arc<Shared>);

impl Drop for ActiveTask {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The MQTT server. Cheap to clone: clones share one broker.
#[derive(Debug, Clone)]
pub struct MqttServer {
    shared: Arc<Shared>,
}

impl MqttServer {
    /// A server ingesting through `ingestor`, reporting device presence to
    /// `presence`. Fails when the configuration is invalid.
    pub fn new(
        ingestor: Ingestor,
        presence: Arc<dyn PresenceSink>,
        config: MqttConfig,
        metrics: MqttMetrics,
    ) -> Result<Self, MqttError> {
        config.validate()?;
        let config = Arc::new(config);
        let shared = Shared {
            router: Mutex::new(Router::new(
                config.clone(),
                metrics.clone(),
                ingestor.quota_metrics().clone(),
            )),
            tenant_connections: Mutex::new(HashMap::new()),
            pending_connects: Arc::new(Semaphore::new(config.max_pending_connects)),
            pending_by_source: Mutex::new(HashMap::new()),
            admission: admission::ConnectAdmission::new(
                config.max_connect_rate,
                config.connect_burst,
                config.max_connect_wait(),
            ),
            tenant_connect_rates: admission::TenantConnectRates::default(),
            config,
            ingestor,
            presence,
            metrics,
            shutdown: watch::channel(false).0,
            connections: AtomicUsize::new(0),
            client_ids: AtomicU64::new(1),
            active: AtomicUsize::new(0),
            idle: Notify::new(),
        };
        Ok(Self {
            shared: Arc::new(shared),
        })
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &MqttMetrics {
        &self.shared.metrics
    }

    /// The settings in force.
    pub fn config(&self) -> &MqttConfig {
        &self.shared.config
    }

    /// Accepts connections on `listener` until `shutdown` resolves (or
    /// [`MqttServer::shutdown`] is called), then tells every client the
    /// server is going away (after acknowledging its in-flight appends) and
    /// returns once every connection has closed, or after the drain timeout.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), MqttError> {
        self.accept_loop(listener, shutdown, |stream, addr| {
            self.spawn_accepted(stream, addr, Transport::Tcp);
        })
        .await
    }

    /// Like [`MqttServer::serve`], over TLS: each accepted socket runs its
    /// handshake in its own task, bounded by the handshake timeout and by
    /// `max_pending_connects` like a CONNECT, so a failed or slow handshake
    /// affects no other client. With client authentication configured, a
    /// client certificate registered for a device authenticates it.
    pub async fn serve_tls(
        &self,
        listener: TcpListener,
        tls: MqttTls,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), MqttError> {
        self.accept_loop(listener, shutdown, |stream, addr| {
            self.spawn_accepted(stream, addr, Transport::Tls(tls.clone()));
        })
        .await
    }

    /// Like [`MqttServer::serve`], for MQTT over WebSocket: each accepted
    /// socket must upgrade at [`WS_PATH`] with the `mqtt` subprotocol
    /// within the connect timeout; the upgrade runs in the connection's own
    /// task, bounded by `max_pending_connects` like a CONNECT.
    pub async fn serve_ws(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), MqttError> {
        self.accept_loop(listener, shutdown, |stream, addr| {
            self.spawn_accepted(stream, addr, Transport::Ws);
        })
        .await
    }

    /// Like [`MqttServer::serve_ws`], over TLS (`wss://`): the TLS
    /// handshake, then the WebSocket upgrade, each under its timeout, in the
    /// connection's own task. Client certificates authenticate as over
    /// [`MqttServer::serve_tls`].
    pub async fn serve_wss(
        &self,
        listener: TcpListener,
        tls: MqttTls,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), MqttError> {
        self.accept_loop(listener, shutdown, |stream, addr| {
            self.spawn_accepted(stream, addr, Transport::Wss(tls.clone()));
        })
        .await
    }

    /// Serves a socket accepted by a listener in its own task: the PROXY
    /// header when the configuration asks for one, the TLS handshake and
    /// WebSocket upgrade the transport needs, then MQTT, all in a span
    /// naming the client's address.
    fn spawn_accepted(&self, stream: TcpStream, socket_peer: SocketAddr, transport: Transport) {
        self.spawn_task(move |shared, permit| async move {
            let proxied = shared.config.proxy_protocol && transport.takes_proxy_header();
            // Boxed, so that its buffer and timer are freed once the header
            // is read instead of living in the task as long as the connection.
            let header = Box::pin(proxy_header(&shared, stream, socket_peer, proxied));
            let Some((stream, remote)) = header.await else {
                return;
            };
            let Some(permit) = permit.with_source(&shared, remote) else {
                shared
                    .metrics
                    .connect_refused(ConnectRefusal::PendingConnectsPerSource);
                return;
            };
            let span = tracing::info_span!(
                "mqtt_connection",
                %remote,
                transport = transport.name()
            );
            serve_transport(shared, stream, permit, transport)
                .instrument(span)
                .await;
        });
    }

    /// The accept loop shared by the listeners; `accepted` takes each socket.
    async fn accept_loop(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
        accepted: impl Fn(TcpStream, SocketAddr),
    ) -> Result<(), MqttError> {
        tokio::pin!(shutdown);
        let mut stopped = self.shared.shutdown.subscribe();
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = until_true(&mut stopped) => break,
                result = listener.accept() => match result {
                    Ok((stream, peer)) => {
                        // Small packets (acks) must not wait for Nagle.
                        let _ = stream.set_nodelay(true);
                        accepted(stream, peer);
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accepting an MQTT connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        drop(listener);
        self.shutdown();
        let grace = self.shared.config.drain_timeout() + Duration::from_secs(5);
        if tokio::time::timeout(grace, self.drained()).await.is_err() {
            tracing::warn!("MQTT connections still open after the drain timeout");
        }
        Ok(())
    }

    /// Serves one accepted stream (TCP, TLS, WebSocket, in-memory) in its
    /// own task. When too many sockets are waiting for their CONNACK already,
    /// the stream is closed at once.
    pub fn spawn_connection<S>(&self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.spawn_task(move |shared, permit| async move {
            connection::run(shared, stream, permit, Peer::default()).await;
        });
    }

    /// Takes a pending-connect slot and runs `task` in a counted task; when
    /// no slot is free or the server is stopping, does nothing (the caller's
    /// stream is dropped, i.e. closed).
    fn spawn_task<F, Fut>(&self, task: F)
    where
        F: FnOnce(Arc<Shared>, PendingSlot) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Ok(permit) = self.shared.pending_connects.clone().try_acquire_owned() else {
            self.shared
                .metrics
                .connect_refused(ConnectRefusal::PendingConnects);
            return;
        };
        if *self.shared.shutdown.borrow() {
            return;
        }
        self.shared.active.fetch_add(1, Ordering::AcqRel);
        let guard = ActiveTask(self.shared.clone());
        let shared = self.shared.clone();
        let slot = PendingSlot {
            _permit: permit,
            source: None,
        };
        tokio::spawn(async move {
            let _guard = guard;
            task(shared, slot).await;
        });
    }

    /// Starts the shutdown: listeners stop accepting and every connection
    /// drains and closes with 0x8B Server shutting down, or 0x9D Server
    /// moved with the configured [`MqttConfig::server_reference`].
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }

    /// Resolves once no connection task is left.
    pub async fn drained(&self) {
        loop {
            let idle = self.shared.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.shared.active.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Closes every connection of `device` with DISCONNECT 0x98
    /// (administrative action; MQTT 3.1.1 clients see the connection close):
    /// its device was disabled or deleted. A client that still holds a valid credential may reconnect;
    /// its persistent session, if any, is kept until it expires. Returns how
    /// many connections were told to close.
    pub fn disconnect_device(&self, tenant: &str, device: &str) -> usize {
        let kicked = self.shared.router().kick_device(tenant, device);
        if kicked > 0 {
            tracing::info!(
                tenant,
                device,
                connections = kicked,
                "closing revoked device's connections"
            );
        }
        kicked
    }

    /// Closes the connections of `device` that authenticated with
    /// `credential_id` (or with a credential whose id is not known), with
    /// DISCONNECT 0x98: that credential was revoked. The device's
    /// connections with other credentials stay. Returns how many were told
    /// to close.
    pub fn disconnect_device_credential(
        &self,
        tenant: &str,
        device: &str,
        credential_id: &str,
    ) -> usize {
        let kicked = self
            .shared
            .router()
            .kick_device_credential(tenant, device, credential_id);
        if kicked > 0 {
            tracing::info!(
                tenant,
                device,
                credential = credential_id,
                connections = kicked,
                "closing the connections of a revoked device credential"
            );
        }
        kicked
    }

    /// Checks the credential of every connection again, with the registry
    /// itself, and closes (DISCONNECT 0x98) those no longer valid: revoked
    /// or expired credentials, deleted or disabled devices. For when
    /// revocation events may have been missed (the event stream lagged or
    /// resynchronised). Returns how many were closed. A credential the
    /// registry cannot be asked about right now stays (and is logged).
    pub async fn revalidate(&self) -> usize {
        let connections = self.shared.router().attached_credentials();
        let checked = connections.len();
        let mut closed = 0;
        for (id, tenant, device, credential) in connections {
            match self
                .shared
                .ingestor
                .credential_valid(&tenant, &credential, device.as_deref())
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    if self.shared.router().kick_session(id) {
                        closed += 1;
                    }
                }
                Err(e) => {
                    tracing::warn!(tenant, error = %e, "a connection's credential could not be checked again")
                }
            }
        }
        tracing::info!(checked, closed, "connections' credentials checked again");
        closed
    }

    /// Closes the connections of tenant applications that authenticated
    /// with the application credential `credential_id` (it was revoked).
    /// Returns how many were told to go.
    pub fn disconnect_credential(&self, tenant: &str, credential_id: &str) -> usize {
        let kicked = self.shared.router().kick_credential(tenant, credential_id);
        if kicked > 0 {
            tracing::info!(
                tenant,
                credential = credential_id,
                connections = kicked,
                "closing revoked application credential's connections"
            );
        }
        kicked
    }

    /// Publishes `message` within `tenant`, as the platform (not a client):
    /// it reaches every matching subscription, and is retained if its flag
    /// says so. Returns how many sessions it reached.
    pub fn publish(&self, tenant: &str, message: Message) -> Result<usize, PublishError> {
        validate_topic_name(&message.topic)
            .map_err(|e| PublishError::InvalidTopic(e.to_string()))?;
        if *self.shared.shutdown.borrow() {
            return Err(PublishError::ShuttingDown);
        }
        Ok(self.shared.router().route(tenant, message, None))
    }

    /// Sends a command to a device and waits for its answer.
    ///
    /// The command is published at QoS 1 on `devices/{device}/commands/{name}`
    /// with the response topic `devices/{device}/commands/{name}/response` and
    /// unguessable correlation data (128 random bits), and expires after
    /// `timeout` (a persistent session of an offline device keeps it queued
    /// until then). The answer is the first message on the response topic
    /// that a session of `device` publishes with the same correlation data,
    /// or, from a 3.1.1 device that cannot echo it, without any.
    ///
    /// The [`CommandSink`] implementation is the richer form of this call:
    /// a content type, a queueing TTL longer than the wait, and an outcome
    /// that tells an offline device from one that queued the command.
    ///
    /// [`CommandSink`]: tributary_core::commands::CommandSink
    pub async fn send_command(
        &self,
        tenant: &str,
        device: &str,
        name: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message, PublishError> {
        let request = CommandRequest {
            tenant,
            device,
            name,
            payload,
            content_type: None,
            timeout,
            ttl: timeout,
        };
        match self.dispatch_command(request).await? {
            Dispatched::Replied { reply, .. } => Ok(reply),
            Dispatched::Unanswered | Dispatched::Queued => Err(PublishError::Timeout(timeout)),
        }
    }

    /// Publishes a command and waits for its reply: the body of
    /// [`MqttServer::send_command`] and of the [`CommandSink`]
    /// implementation.
    ///
    /// The waiter is registered and the command routed under one router
    /// lock, so a reply can never arrive before its waiter. The command
    /// expires (MQTT message expiry) after the longer of `ttl` and
    /// `timeout`.
    ///
    /// [`CommandSink`]: tributary_core::commands::CommandSink
    pub(crate) async fn dispatch_command(
        &self,
        request: CommandRequest<'_>,
    ) -> Result<Dispatched, PublishError> {
        let CommandRequest {
            tenant,
            device,
            name,
            payload,
            content_type,
            timeout,
            ttl,
        } = request;
        validate_device_id(device, self.shared.ingestor.limits())
            .map_err(|e| PublishError::InvalidTopic(e.to_string()))?;
        if name.is_empty() || name.contains(['/', '+', '#']) {
            return Err(PublishError::InvalidTopic(format!(
                "invalid command name {name:?}"
            )));
        }
        if *self.shared.shutdown.borrow() {
            return Err(PublishError::ShuttingDown);
        }
        let topic = format!("devices/{device}/commands/{name}");
        let response_topic = format!("{topic}/response");
        validate_topic_name(&topic).map_err(|e| PublishError::InvalidTopic(e.to_string()))?;
        let correlation = Bytes::from(command_correlation());
        let started = Instant::now();
        let mut message = Message::new(topic.clone(), payload);
        message.qos = QoS::AtLeastOnce;
        message.content_type = content_type;
        message.response_topic = Some(response_topic.clone());
        message.correlation_data = Some(correlation.clone());
        message.expires_at = Some(started + ttl.max(timeout));
        let (rx, reach) = {
            let mut router = self.shared.router();
            let rx = router
                .add_waiter(tenant, device, &response_topic, correlation.clone())
                .ok_or(PublishError::TooManyPending)?;
            let reach = router.route_reach(tenant, message, None);
            if reach.online + reach.queued == 0 {
                router.remove_waiter(tenant, &response_topic, &correlation);
                return Err(if router.device_online(tenant, device) {
                    PublishError::NotSubscribed(topic)
                } else {
                    PublishError::NoSubscribers(topic)
                });
            }
            (rx, reach)
        };
        let mut stop = self.shared.shutdown.subscribe();
        let answer = tokio::select! {
            r = tokio::time::timeout(timeout, rx) => match r {
                Ok(Ok(answer)) => Ok(Some(answer)),
                Ok(Err(_)) => Err(PublishError::ShuttingDown),
                Err(_) => Ok(None),
            },
            _ = until_true(&mut stop) => Err(PublishError::ShuttingDown),
        };
        match answer {
            Ok(Some(reply)) => Ok(Dispatched::Replied {
                reply: (*reply).clone(),
                latency: started.elapsed(),
            }),
            Ok(None) => {
                let mut router = self.shared.router();
                router.remove_waiter(tenant, &response_topic, &correlation);
                // A device that came back within the timeout got the queued
                // command on resume: it was delivered, and not answered.
                Ok(
                    if reach.online > 0 || router.device_online(tenant, device) {
                        Dispatched::Unanswered
                    } else {
                        Dispatched::Queued
                    },
                )
            }
            Err(e) => {
                self.shared
                    .router()
                    .remove_waiter(tenant, &response_topic, &correlation);
                Err(e)
            }
        }
    }
}

/// Correlation data for a command: 128 random bits, so that no one can
/// guess another request's and answer it.
fn command_correlation() -> String {
    use rand::RngCore;
    let mut raw = [0u8; 16];
    rand::rng().fill_bytes(&mut raw);
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    format!("cmd-{hex}")
}

/// How a listener's sockets carry MQTT.
#[derive(Debug, Clone)]
enum Transport {
    Tcp,
    Tls(MqttTls),
    Ws,
    Wss(MqttTls),
}

impl Transport {
    /// The listeners a TCP load balancer fronts (MQTT and MQTT over TLS)
    /// take the PROXY header; the WebSocket listeners sit behind an HTTP
    /// Ingress or Gateway, which does not send one.
    fn takes_proxy_header(&self) -> bool {
        matches!(self, Transport::Tcp | Transport::Tls(_))
    }

    fn name(&self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls(_) => "tls",
            Transport::Ws => "ws",
            Transport::Wss(_) => "wss",
        }
    }
}

/// The TLS handshake and WebSocket upgrade `transport` needs, each under
/// its timeout, then the MQTT connection.
///
/// Each transport's future is boxed on its own: an async `match` is as large
/// as its largest arm, so without the boxes every plain TCP connection
/// would hold the memory of a TLS handshake and a WebSocket stream (idle
/// connections went from 9.2 to 18.7 KiB of RSS each when they shared one).
async fn serve_transport(
    shared: Arc<Shared>,
    stream: Prefixed<TcpStream>,
    permit: PendingSlot,
    transport: Transport,
) {
    let served: futures::future::BoxFuture<'static, ()> = match transport {
        Transport::Tcp => Box::pin(connection::run(shared, stream, permit, Peer::default())),
        Transport::Tls(tls) => Box::pin(async move {
            let handshake = Box::pin(tls_handshake(&shared, &tls, stream));
            if let Some((stream, peer)) = handshake.await {
                Box::pin(connection::run(shared, stream, permit, peer)).await;
            }
        }),
        Transport::Ws => Box::pin(async move {
            if let Some(ws) = Box::pin(ws_upgrade(&shared, stream)).await {
                Box::pin(connection::run(shared, ws, permit, Peer::default())).await;
            }
        }),
        Transport::Wss(tls) => Box::pin(async move {
            let handshake = Box::pin(tls_handshake(&shared, &tls, stream));
            let Some((stream, peer)) = handshake.await else {
                return;
            };
            if let Some(ws) = Box::pin(ws_upgrade(&shared, stream)).await {
                Box::pin(connection::run(shared, ws, permit, peer)).await;
            }
        }),
    };
    served.await;
}

/// The client's address and the stream to serve: when `proxied`, the address the PROXY header names
/// (read under the connect timeout; the bytes read past it are replayed to
/// TLS or MQTT), else the socket's peer. `None` (counted and logged as
/// `proxy_protocol`, or `proxy_protocol_timeout`) when the header is
/// missing, malformed or late, or the server stops. A socket that closes
/// before its first byte (a load balancer's TCP health check) is not
/// counted, like one that closes before its CONNECT.
async fn proxy_header(
    shared: &Shared,
    mut stream: TcpStream,
    socket_peer: SocketAddr,
    proxied: bool,
) -> Option<(Prefixed<TcpStream>, SocketAddr)> {
    if !proxied {
        return Some((Prefixed::new(stream, Bytes::new()), socket_peer));
    }
    let mut stop = shared.shutdown.subscribe();
    let read = tokio::select! {
        r = tokio::time::timeout(shared.config.connect_timeout(), proxy::read_header(&mut stream)) => r,
        _ = until_true(&mut stop) => return None,
    };
    match read {
        Ok(Ok(Some((header, rest)))) => {
            let remote = header.source().unwrap_or(socket_peer);
            if let proxy::ProxyHeader::Proxied { destination, .. } = header {
                tracing::trace!(%remote, %destination, proxy = %socket_peer, "PROXY header");
            }
            Some((Prefixed::new(stream, rest), remote))
        }
        Ok(Ok(None)) => None,
        Ok(Err(error)) => {
            shared
                .metrics
                .connect_refused(ConnectRefusal::ProxyProtocol);
            tracing::debug!(%error, peer = %socket_peer, "PROXY protocol header refused");
            None
        }
        Err(_) => {
            shared
                .metrics
                .connect_refused(ConnectRefusal::ProxyProtocolTimeout);
            tracing::debug!(peer = %socket_peer, "no PROXY protocol header in time");
            None
        }
    }
}

/// The server side of a TLS handshake, under the handshake timeout; `None`
/// (counted and logged) when it fails, times out or the server stops.
async fn tls_handshake<S>(
    shared: &Shared,
    tls: &MqttTls,
    stream: S,
) -> Option<(tokio_rustls::server::TlsStream<S>, Peer)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut stop = shared.shutdown.subscribe();
    let handshake = tokio::select! {
        r = tokio::time::timeout(tls.handshake_timeout(), tls.acceptor().accept(stream)) => r,
        _ = until_true(&mut stop) => return None,
    };
    match handshake {
        Ok(Ok(stream)) => {
            let peer = Peer::from_tls(stream.get_ref().1.peer_certificates());
            Some((stream, peer))
        }
        Ok(Err(error)) => {
            shared.metrics.connect_refused(ConnectRefusal::TlsHandshake);
            tracing::debug!(%error, "TLS handshake failed");
            None
        }
        Err(_) => {
            shared
                .metrics
                .connect_refused(ConnectRefusal::TlsHandshakeTimeout);
            None
        }
    }
}

/// The WebSocket upgrade at [`WS_PATH`], under the connect timeout; `None`
/// (counted and logged) when it fails, times out or the server stops.
async fn ws_upgrade<S>(shared: &Shared, stream: S) -> Option<ws::WsByteStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = ws::config(
        shared.config.max_packet_size as usize,
        shared.config.max_write_buffer,
    );
    let upgrade =
        tokio_tungstenite::accept_hdr_async_with_config(stream, ws::on_request, Some(config));
    let mut stop = shared.shutdown.subscribe();
    let upgraded = tokio::select! {
        r = tokio::time::timeout(shared.config.connect_timeout(), upgrade) => r,
        _ = until_true(&mut stop) => return None,
    };
    match upgraded {
        Ok(Ok(ws)) => Some(ws::WsByteStream::new(ws)),
        Ok(Err(error)) => {
            shared.metrics.connect_refused(ConnectRefusal::WsHandshake);
            tracing::debug!(%error, "WebSocket upgrade failed");
            None
        }
        Err(_) => {
            shared
                .metrics
                .connect_refused(ConnectRefusal::WsHandshakeTimeout);
            None
        }
    }
}

/// A command for [`MqttServer::dispatch_command`].
#[derive(Debug)]
pub(crate) struct CommandRequest<'a> {
    pub(crate) tenant: &'a str,
    pub(crate) device: &'a str,
    pub(crate) name: &'a str,
    pub(crate) payload: Bytes,
    /// The MQTT 5 content type to send, if any.
    pub(crate) content_type: Option<String>,
    /// How long to wait for the reply.
    pub(crate) timeout: Duration,
    /// How long an offline persistent session keeps the command queued.
    pub(crate) ttl: Duration,
}

/// What became of a dispatched command.
#[derive(Debug)]
pub(crate) enum Dispatched {
    /// The device answered.
    Replied {
        /// The answer.
        reply: Message,
        /// From dispatch to answer.
        latency: Duration,
    },
    /// A connected session got the command; no answer came in time.
    Unanswered,
    /// Only offline persistent sessions queued the command, the device
    /// is still offline, and no answer came in time.
    Queued,
}
