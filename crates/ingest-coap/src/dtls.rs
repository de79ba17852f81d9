//! DTLS 1.2 with pre-shared keys (RFC 6347, RFC 4279): CoAP on :5684.
//!
//! **Why OpenSSL.** The record layer and handshake are OpenSSL's (through
//! the `openssl` crate's safe API), the same library that libcoap's
//! `coap-client-openssl`, Californium's interop tests and most gateways run
//! against: DTLS 1.2 with PSK cipher suites, cookie exchange and
//! retransmission are mature there, and the system's copy gets security
//! updates from the distribution. `webrtc-dtls` was the pure-Rust choice,
//! but it is built for WebRTC's certificate fingerprints, its PSK path sees
//! little use, and it would add a second TLS stack beside rustls. OpenSSL
//! is driven here without sockets: each endpoint's `SslStream` reads and
//! writes an in-memory [`Pipe`] of whole datagrams, and one task per
//! endpoint moves them between the pipe and the shared UDP socket. No
//! `unsafe` code is written here.
//!
//! **Who the device is.** The PSK identity is `<tenant>/<device>/<id>`,
//! and the key is a PSK credential the registry issued (see
//! `tributary_auth::PskKeys`). OpenSSL asks for the key inside the
//! handshake, synchronously, while the registry is asked asynchronously: so
//! the identity is read from the client's ClientKeyExchange before OpenSSL
//! sees that datagram ([`client_key_exchange_identity`]), the registry is
//! asked, and the key (or nothing, which fails the handshake with an alert)
//! is waiting when OpenSSL asks. Requests in the session then speak for that
//! device: no token option is needed, and any is ignored.
//!
//! **Limits.** Sessions in all and per IP address, handshakes in progress,
//! a handshake deadline and an idle timeout; cookie exchange (RFC 6347
//! 4.2.1) before any key is looked up, so a spoofed source gets only a
//! small HelloVerifyRequest back. When the handshakes in progress are at
//! their limit, the oldest one whose client has not yet returned a cookie
//! makes room: a flood from spoofed addresses cannot hold the table against
//! clients that answer.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslMethod, SslMode, SslOptions, SslSessionCacheMode, SslStream,
    SslVersion,
};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tributary_core::directory::{Credential, Principal};

use crate::{CoapServer, Link, lock};

/// The cipher suites offered, strongest first. RFC 7252 (9.1.3.1) makes
/// TLS_PSK_WITH_AES_128_CCM_8 mandatory for CoAP; the others are what
/// common DTLS clients also offer. No suite without a PSK is enabled.
const CIPHERS: &str = "PSK-AES128-CCM8:PSK-AES128-CCM:PSK-AES256-CCM:PSK-AES128-GCM-SHA256:\
                       ECDHE-PSK-AES128-CBC-SHA256:PSK-AES128-CBC-SHA256";

/// Datagrams queued for one endpoint's task; more are dropped (the
/// client's and the server's retransmissions recover).
const QUEUE: usize = 32;

/// Who a DTLS session speaks for: the device of its PSK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionAuth {
    pub(crate) principal: Principal,
    pub(crate) credential: Credential,
}

impl SessionAuth {
    /// Tenant and device.
    pub(crate) fn device(&self) -> (&str, &str) {
        match &self.principal {
            Principal::Device { tenant, device } => (tenant, device),
            // A PSK always names a device; the registry never grants others.
            Principal::TenantIngest { tenant, .. } => (tenant, ""),
        }
    }
}

/// The limits of the DTLS listener.
#[derive(Debug, Clone)]
pub(crate) struct DtlsBounds {
    pub max_sessions: usize,
    pub max_sessions_per_ip: u32,
    pub max_handshakes: usize,
    pub handshake_timeout: Duration,
    pub idle: Duration,
    pub mtu: u32,
    /// The largest plaintext CoAP message taken.
    pub max_message: usize,
}

/// What an endpoint's task is given.
enum Input {
    /// A datagram from the endpoint.
    Datagram(Vec<u8>),
    /// A CoAP message to send to it, in the session.
    Send(Vec<u8>),
    /// End the session (revoked credential).
    Close,
}

/// What an endpoint's task and the table share.
#[derive(Debug)]
struct Shared {
    peer: SocketAddr,
    started: Instant,
    /// The client returned a valid cookie.
    verified: AtomicBool,
    /// The PSK identity and key, once the registry answered.
    psk: Mutex<Option<(Vec<u8>, Vec<u8>)>>,
    /// Set once the handshake finished.
    auth: OnceLock<SessionAuth>,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    tx: mpsc::Sender<Input>,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Table {
    by_peer: HashMap<SocketAddr, Entry>,
    per_ip: HashMap<IpAddr, u32>,
    handshaking: usize,
    next_seq: u64,
}

/// The DTLS listener's state: the OpenSSL context and a session per
/// endpoint.
pub(crate) struct Dtls {
    ctx: SslContext,
    socket: Arc<UdpSocket>,
    table: Mutex<Table>,
    bounds: DtlsBounds,
}

impl std::fmt::Debug for Dtls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dtls")
            .field("sessions", &lock(&self.table).by_peer.len())
            .field("bounds", &self.bounds)
            .finish()
    }
}

/// Why a new endpoint got no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    Sessions,
    PerIp,
    Handshakes,
}

impl Dtls {
    pub(crate) fn new(socket: Arc<UdpSocket>, bounds: DtlsBounds) -> Result<Self, String> {
        let ctx = context().map_err(|e| format!("setting up DTLS: {e}"))?;
        Ok(Dtls {
            ctx,
            socket,
            table: Mutex::new(Table::default()),
            bounds,
        })
    }

    /// A datagram from `peer`: to its session, or the start of one.
    pub(crate) fn datagram(self: &Arc<Self>, server: &CoapServer, peer: SocketAddr, data: &[u8]) {
        let metrics = &server.inner.metrics;
        let tx = {
            let mut table = lock(&self.table);
            let restarted = is_client_hello(data)
                && table
                    .by_peer
                    .get(&peer)
                    .is_some_and(|e| e.shared.auth.get().is_some());
            if restarted {
                // A ClientHello on an established session: the device
                // restarted and kept its port (LwM2M clients often bind a
                // fixed one). The old session goes, and the hello starts a
                // new one, cookie first (RFC 6347 4.2.8 would keep the old
                // one until the new one is verified; see docs/coap.md).
                if let Some(seq) = table.by_peer.get(&peer).map(|e| e.seq) {
                    Self::unlink(&mut table, peer, seq);
                }
                None
            } else {
                table.by_peer.get(&peer).map(|e| e.tx.clone())
            }
        };
        if let Some(tx) = tx {
            if tx.try_send(Input::Datagram(data.to_vec())).is_err() {
                metrics.dtls_dropped();
            }
            return;
        }
        // Only a ClientHello starts a session; anything else from an
        // unknown endpoint (a stale session's records) is dropped.
        if !is_client_hello(data) {
            metrics.dtls_dropped();
            return;
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let shared = Arc::new(Shared {
            peer,
            started: Instant::now(),
            verified: AtomicBool::new(false),
            psk: Mutex::new(None),
            auth: OnceLock::new(),
        });
        let seq = match self.admit(peer, tx.clone(), Arc::clone(&shared)) {
            Ok(seq) => seq,
            Err(why) => {
                metrics.dtls_handshake(match why {
                    Refused::Sessions => "refused_sessions",
                    Refused::PerIp => "refused_per_ip",
                    Refused::Handshakes => "refused_handshakes",
                });
                return;
            }
        };
        metrics.dtls_sessions(lock(&self.table).by_peer.len());
        let _ = tx.try_send(Input::Datagram(data.to_vec()));
        let (dtls, server) = (Arc::clone(self), server.clone());
        tokio::spawn(async move {
            let outcome = dtls.run(&server, &shared, rx).await;
            dtls.remove(peer, seq);
            let sessions = lock(&dtls.table).by_peer.len();
            server.inner.metrics.dtls_sessions(sessions);
            server.inner.metrics.dtls_handshake_end(outcome);
        });
    }

    fn admit(
        &self,
        peer: SocketAddr,
        tx: mpsc::Sender<Input>,
        shared: Arc<Shared>,
    ) -> Result<u64, Refused> {
        let mut table = lock(&self.table);
        if table.by_peer.len() >= self.bounds.max_sessions {
            return Err(Refused::Sessions);
        }
        if table.per_ip.get(&peer.ip()).copied().unwrap_or(0) >= self.bounds.max_sessions_per_ip {
            return Err(Refused::PerIp);
        }
        if table.handshaking >= self.bounds.max_handshakes {
            // Make room by the oldest handshake whose client never returned
            // a cookie (it may not even own its address).
            let victim = table
                .by_peer
                .iter()
                .filter(|(_, e)| {
                    e.shared.auth.get().is_none() && !e.shared.verified.load(Ordering::Relaxed)
                })
                .min_by_key(|(_, e)| e.shared.started)
                .map(|(p, e)| (*p, e.seq));
            let Some((victim, seq)) = victim else {
                return Err(Refused::Handshakes);
            };
            // Dropping its entry drops the last sender: its task ends.
            Self::unlink(&mut table, victim, seq);
        }
        table.next_seq += 1;
        let seq = table.next_seq;
        table.by_peer.insert(peer, Entry { seq, tx, shared });
        *table.per_ip.entry(peer.ip()).or_default() += 1;
        table.handshaking += 1;
        Ok(seq)
    }

    /// Takes the endpoint's entry out of the table if it is still `seq`'s.
    fn unlink(table: &mut Table, peer: SocketAddr, seq: u64) {
        if table.by_peer.get(&peer).is_none_or(|e| e.seq != seq) {
            return;
        }
        let Some(entry) = table.by_peer.remove(&peer) else {
            return;
        };
        if entry.shared.auth.get().is_none() {
            table.handshaking -= 1;
        }
        if let Some(n) = table.per_ip.get_mut(&peer.ip()) {
            *n -= 1;
            if *n == 0 {
                table.per_ip.remove(&peer.ip());
            }
        }
    }

    fn remove(&self, peer: SocketAddr, seq: u64) {
        Self::unlink(&mut lock(&self.table), peer, seq);
    }

    /// Marks the session established: it no longer counts as a handshake.
    fn established(&self, shared: &Arc<Shared>, auth: SessionAuth) {
        let mut table = lock(&self.table);
        let listed = table
            .by_peer
            .get(&shared.peer)
            .is_some_and(|e| Arc::ptr_eq(&e.shared, shared));
        if shared.auth.set(auth).is_ok() && listed {
            table.handshaking -= 1;
        }
    }

    /// Sends a CoAP message to `peer` in its session; dropped when it has
    /// none or its queue is full (CoAP's retransmissions recover).
    pub(crate) fn send(&self, peer: SocketAddr, data: &[u8]) {
        let tx = lock(&self.table).by_peer.get(&peer).map(|e| e.tx.clone());
        if let Some(tx) = tx {
            let _ = tx.try_send(Input::Send(data.to_vec()));
        }
    }

    /// Ends the sessions whose device `keep` refuses; returns how many.
    pub(crate) fn close_where(&self, mut refuse: impl FnMut(&SessionAuth) -> bool) -> usize {
        let table = lock(&self.table);
        let mut closed = 0;
        for entry in table.by_peer.values() {
            if entry.shared.auth.get().is_some_and(&mut refuse) {
                let _ = entry.tx.try_send(Input::Close);
                closed += 1;
            }
        }
        closed
    }

    /// Every established session's device and credential.
    pub(crate) fn sessions(&self) -> Vec<SessionAuth> {
        lock(&self.table)
            .by_peer
            .values()
            .filter_map(|e| e.shared.auth.get().cloned())
            .collect()
    }

    /// One endpoint's session, from the first ClientHello to the end.
    async fn run(
        &self,
        server: &CoapServer,
        shared: &Arc<Shared>,
        mut rx: mpsc::Receiver<Input>,
    ) -> &'static str {
        let peer = shared.peer;
        let mut stream = match self.stream(shared) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "a DTLS session could not be set up");
                return "failed";
            }
        };
        // The handshake.
        let deadline = tokio::time::Instant::now() + self.bounds.handshake_timeout;
        let mut grant: Option<SessionAuth> = None;
        loop {
            let input = match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(input)) => input,
                // Its entry left the table: evicted to make room.
                Ok(None) => return "evicted",
                Err(_) => return "timeout",
            };
            let data = match input {
                Input::Datagram(d) => d,
                Input::Send(_) => continue,
                Input::Close => return "evicted",
            };
            if grant.is_none()
                && let Some(identity) = client_key_exchange_identity(&data)
            {
                match self.lookup(server, identity).await {
                    Ok((auth, key)) => {
                        *lock(&shared.psk) = Some((identity.to_vec(), key));
                        grant = Some(auth);
                    }
                    // No key: OpenSSL refuses the identity with an alert.
                    Err(outcome) => {
                        stream.get_mut().inbound = Some(data);
                        let _ = stream.accept();
                        self.flush(&mut stream, peer);
                        return outcome;
                    }
                }
            }
            stream.get_mut().inbound = Some(data);
            let step = stream.accept();
            self.flush(&mut stream, peer);
            match step {
                Ok(()) => break,
                Err(e) if e.code() == ErrorCode::WANT_READ => continue,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "DTLS handshake failed");
                    return "failed";
                }
            }
        }
        let Some(auth) = grant else {
            // OpenSSL finished a handshake without asking for the key (a
            // resumed session, which is switched off): refuse it.
            return "failed";
        };
        *lock(&shared.psk) = None;
        self.established(shared, auth.clone());
        server.inner.metrics.dtls_handshake("established");
        let auth = Arc::new(auth);
        let link = Link::Dtls(
            server
                .dtls()
                .unwrap_or_else(|| unreachable!("serving DTLS")),
        );
        let mut buf = vec![0u8; 16 * 1024];
        // The session.
        loop {
            let input = match tokio::time::timeout(self.bounds.idle, rx.recv()).await {
                Ok(Some(input)) => input,
                Ok(None) => return "closed",
                Err(_) => {
                    let _ = stream.shutdown();
                    self.flush(&mut stream, peer);
                    return "idle";
                }
            };
            match input {
                Input::Datagram(d) => {
                    stream.get_mut().inbound = Some(d);
                    loop {
                        match stream.ssl_read(&mut buf) {
                            Ok(n) => {
                                if n > self.bounds.max_message {
                                    server.oversized(&link, peer, &buf[..n]);
                                } else {
                                    server.datagram(&link, peer, &buf[..n], Some(&auth));
                                }
                            }
                            Err(e) if e.code() == ErrorCode::WANT_READ => break,
                            Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                                let _ = stream.shutdown();
                                self.flush(&mut stream, peer);
                                return "closed";
                            }
                            Err(e) => {
                                tracing::debug!(%peer, error = %e, "DTLS session failed");
                                self.flush(&mut stream, peer);
                                return "closed";
                            }
                        }
                    }
                    self.flush(&mut stream, peer);
                }
                Input::Send(message) => {
                    if let Err(e) = stream.ssl_write(&message) {
                        tracing::debug!(%peer, error = %e, "DTLS write failed");
                    }
                    self.flush(&mut stream, peer);
                }
                Input::Close => {
                    let _ = stream.shutdown();
                    self.flush(&mut stream, peer);
                    return "revoked";
                }
            }
        }
    }

    /// Asks the registry for a PSK identity's key.
    async fn lookup(
        &self,
        server: &CoapServer,
        identity: &[u8],
    ) -> Result<(SessionAuth, Vec<u8>), &'static str> {
        let Ok(identity) = std::str::from_utf8(identity) else {
            return Err("bad_psk");
        };
        match server.inner.ingestor.authenticate_psk(identity).await {
            Ok(grant) if matches!(grant.principal, Principal::Device { .. }) => Ok((
                SessionAuth {
                    principal: grant.principal,
                    credential: grant.credential,
                },
                grant.key,
            )),
            Ok(_) => Err("bad_psk"),
            Err(tributary_ingest::IngestError::Unavailable(_)) => Err("registry_unavailable"),
            Err(_) => Err("bad_psk"),
        }
    }

    fn stream(&self, shared: &Arc<Shared>) -> Result<SslStream<Pipe>, openssl::error::ErrorStack> {
        let mut ssl = Ssl::new(&self.ctx)?;
        ssl.set_ex_data(shared_index()?, Arc::clone(shared));
        ssl.set_mtu(self.bounds.mtu)?;
        SslStream::new(ssl, Pipe::default())
    }

    /// Sends what OpenSSL wrote, one datagram per record flight.
    fn flush(&self, stream: &mut SslStream<Pipe>, peer: SocketAddr) {
        for datagram in stream.get_mut().outbound.drain(..) {
            if let Err(e) = self.socket.try_send_to(&datagram, peer) {
                tracing::debug!(error = %e, "DTLS send failed");
            }
        }
    }
}

/// The ex-data slot of an `Ssl` that holds its endpoint's [`Shared`].
fn shared_index() -> Result<openssl::ex_data::Index<Ssl, Arc<Shared>>, openssl::error::ErrorStack> {
    static INDEX: OnceLock<openssl::ex_data::Index<Ssl, Arc<Shared>>> = OnceLock::new();
    if let Some(i) = INDEX.get() {
        return Ok(*i);
    }
    let i = Ssl::new_ex_index()?;
    Ok(*INDEX.get_or_init(|| i))
}

/// The OpenSSL context: DTLS 1.2 only, PSK suites only, cookies on,
/// session resumption off (every session proves its key).
fn context() -> Result<SslContext, openssl::error::ErrorStack> {
    let mut b = SslContext::builder(SslMethod::dtls_server())?;
    b.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
    b.set_max_proto_version(Some(SslVersion::DTLS1_2))?;
    b.set_cipher_list(CIPHERS)?;
    b.set_options(SslOptions::COOKIE_EXCHANGE | SslOptions::NO_QUERY_MTU | SslOptions::NO_TICKET);
    b.set_session_cache_mode(SslSessionCacheMode::OFF);
    b.set_mode(SslMode::RELEASE_BUFFERS);
    let mut cookie_key = [0u8; 32];
    openssl::rand::rand_bytes(&mut cookie_key)?;
    let cookie_key = Arc::new(cookie_key);
    let generate_key = Arc::clone(&cookie_key);
    b.set_cookie_generate_cb(move |ssl, out| {
        let peer = ssl
            .ex_data(shared_index()?)
            .map(|s| s.peer)
            .ok_or_else(openssl::error::ErrorStack::get)?;
        let cookie = cookie_for(&generate_key, peer);
        let n = cookie.len().min(out.len());
        out[..n].copy_from_slice(&cookie[..n]);
        Ok(n)
    });
    b.set_cookie_verify_cb(move |ssl, cookie| {
        let Some(shared) = shared_index().ok().and_then(|i| ssl.ex_data(i)) else {
            return false;
        };
        let expected = cookie_for(&cookie_key, shared.peer);
        let ok = openssl::memcmp::eq(&expected[..], cookie.get(..expected.len()).unwrap_or(&[]))
            && cookie.len() == expected.len();
        if ok {
            shared.verified.store(true, Ordering::Relaxed);
        }
        ok
    });
    b.set_psk_server_callback(|ssl, identity, out| {
        let shared = ssl
            .ex_data(shared_index()?)
            .ok_or_else(openssl::error::ErrorStack::get)?;
        let psk = lock(&shared.psk);
        match (&*psk, identity) {
            (Some((known, key)), Some(identity)) if known == identity && key.len() <= out.len() => {
                out[..key.len()].copy_from_slice(key);
                Ok(key.len())
            }
            // Unknown identity: no key, and OpenSSL ends the handshake.
            _ => Ok(0),
        }
    });
    Ok(b.build())
}

/// HMAC-SHA-256 of the endpoint's address, 16 bytes: a cookie only the
/// holder of that address can return.
fn cookie_for(key: &[u8; 32], peer: SocketAddr) -> [u8; 16] {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    match peer.ip() {
        IpAddr::V4(ip) => mac.update(&ip.octets()),
        IpAddr::V6(ip) => mac.update(&ip.octets()),
    }
    mac.update(&peer.port().to_be_bytes());
    let full = mac.finalize().into_bytes();
    let mut cookie = [0u8; 16];
    cookie.copy_from_slice(&full[..16]);
    cookie
}

/// Whether a datagram starts with a DTLS handshake record holding a
/// ClientHello (epoch 0).
fn is_client_hello(data: &[u8]) -> bool {
    data.len() >= 13 + 12
        && data[0] == 22
        && data[1] == 0xfe
        && data[3..5] == [0, 0]
        && data[13] == 1
}

/// The PSK identity in a datagram's ClientKeyExchange (RFC 4279 2: the
/// message starts with `opaque psk_identity<0..2^16-1>`), if the datagram
/// holds the start of one in a record of epoch 0. Records are walked by
/// their lengths; anything short or malformed yields `None`, and OpenSSL
/// then judges the datagram itself.
pub(crate) fn client_key_exchange_identity(mut data: &[u8]) -> Option<&[u8]> {
    const RECORD_HEADER: usize = 13;
    const HANDSHAKE_HEADER: usize = 12;
    const HANDSHAKE: u8 = 22;
    const CLIENT_KEY_EXCHANGE: u8 = 16;
    while data.len() >= RECORD_HEADER {
        let kind = data[0];
        let epoch = u16::from_be_bytes([data[3], data[4]]);
        let len = usize::from(u16::from_be_bytes([data[11], data[12]]));
        let fragment = data.get(RECORD_HEADER..RECORD_HEADER + len)?;
        data = &data[RECORD_HEADER + len..];
        if kind != HANDSHAKE || epoch != 0 || fragment.len() < HANDSHAKE_HEADER + 2 {
            continue;
        }
        let offset = u32::from_be_bytes([0, fragment[6], fragment[7], fragment[8]]);
        if fragment[0] != CLIENT_KEY_EXCHANGE || offset != 0 {
            continue;
        }
        let body = &fragment[HANDSHAKE_HEADER..];
        let n = usize::from(u16::from_be_bytes([body[0], body[1]]));
        return body.get(2..2 + n);
    }
    None
}

/// An endpoint's datagrams in memory, for OpenSSL: one read returns one
/// datagram (or would block), one write is one datagram out.
#[derive(Debug, Default)]
pub(crate) struct Pipe {
    inbound: Option<Vec<u8>>,
    outbound: Vec<Vec<u8>>,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inbound.take() {
            Some(d) => {
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                Ok(n)
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Bounded by OpenSSL's records, themselves bounded by the MTU.
        self.outbound.push(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u8, epoch: u16, body: &[u8]) -> Vec<u8> {
        let mut r = vec![kind, 0xfe, 0xfd];
        r.extend_from_slice(&epoch.to_be_bytes());
        r.extend_from_slice(&[0; 6]);
        r.extend_from_slice(&(body.len() as u16).to_be_bytes());
        r.extend_from_slice(body);
        r
    }

    fn handshake(msg: u8, body: &[u8]) -> Vec<u8> {
        let len = (body.len() as u32).to_be_bytes();
        let mut h = vec![
            msg, len[1], len[2], len[3], 0, 2, 0, 0, 0, len[1], len[2], len[3],
        ];
        h.extend_from_slice(body);
        h
    }

    #[test]
    fn the_identity_is_read_from_a_client_key_exchange_among_other_records() {
        let mut cke = vec![0, 14];
        cke.extend_from_slice(b"acme/dev-1/abc");
        let mut datagram = record(22, 0, &handshake(16, &cke));
        datagram.extend(record(20, 0, &[1]));
        datagram.extend(record(22, 1, &[0; 40]));
        assert_eq!(
            client_key_exchange_identity(&datagram),
            Some(&b"acme/dev-1/abc"[..])
        );
        // Behind another handshake message.
        let mut two = record(22, 0, &handshake(11, &[0; 20]));
        two.extend(&datagram);
        assert_eq!(
            client_key_exchange_identity(&two),
            Some(&b"acme/dev-1/abc"[..])
        );
    }

    #[test]
    fn short_or_foreign_datagrams_yield_no_identity() {
        let mut cke = vec![0, 200];
        cke.extend_from_slice(b"short");
        for d in [
            vec![],
            vec![22; 5],
            record(22, 0, &handshake(16, &cke)),
            record(22, 1, &handshake(16, &[0, 1, b'x'])),
            record(23, 0, &handshake(16, &[0, 1, b'x'])),
            record(22, 0, &handshake(1, &[0, 1, b'x'])),
        ] {
            assert_eq!(client_key_exchange_identity(&d), None, "{d:?}");
        }
        // A record that claims more than the datagram holds.
        let mut cut = record(22, 0, &handshake(16, &[0, 1, b'x']));
        cut.truncate(cut.len() - 1);
        assert_eq!(client_key_exchange_identity(&cut), None);
    }

    #[test]
    fn only_a_client_hello_starts_a_session() {
        assert!(is_client_hello(&record(22, 0, &handshake(1, &[0; 40]))));
        assert!(!is_client_hello(&record(22, 0, &handshake(16, &[0; 40]))));
        assert!(!is_client_hello(&record(23, 1, &[0; 40])));
        assert!(!is_client_hello(&[22, 0xfe]));
    }

    #[test]
    fn cookies_depend_on_the_endpoint() {
        let key = [7u8; 32];
        let a: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let b: SocketAddr = "10.0.0.1:5001".parse().unwrap();
        assert_eq!(cookie_for(&key, a), cookie_for(&key, a));
        assert_ne!(cookie_for(&key, a), cookie_for(&key, b));
        assert_ne!(cookie_for(&key, a), cookie_for(&[8u8; 32], a));
    }

    #[test]
    fn the_context_builds_with_the_system_openssl() {
        context().expect("DTLS 1.2 with PSK suites");
    }
}
