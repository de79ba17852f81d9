//! Thin wrappers over crate-private code for the fuzz targets in `fuzz/`
//! and their regression tests (`tests/fuzz_regressions.rs`); compiled only
//! with the feature `fuzzing`, which is off by default and no server needs.
//!
//! Each wrapper calls the code the server runs, unchanged, and returns plain
//! values the targets can check properties on:
//!
//! - [`parse_proxy_header`] and [`read_proxy_header`]: the PROXY protocol
//!   header parser, sans-io and over a reader;
//! - [`SubscriptionTrie`]: the subscription tree of one tenant;
//! - [`covers`], [`application`], [`device`]: the ACL checks;
//! - [`ws_exchange`]: the MQTT-over-WebSocket byte-stream adapter, fed the
//!   client's side of an already upgraded connection.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tributary_core::directory::AppGrants;
use tributary_mqtt_codec::QoS;

use crate::Identity;
use crate::proxy::{self, Prefixed};
use crate::trie::{SubOptions, Subscriber, Trie};
use crate::ws::{self, WsByteStream};

// ---------------------------------------------------------------------------
// PROXY protocol

/// The longest version 1 PROXY header, CRLF included.
pub const PROXY_V1_MAX_LEN: usize = proxy::V1_MAX_LEN;
/// The longest version 2 PROXY header accepted.
pub const PROXY_V2_MAX_LEN: usize = proxy::V2_MAX_LEN;

/// What a PROXY header says (a copy of the crate's own type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// A relayed connection: the client's address and the one it reached.
    Proxied {
        /// The client's address.
        source: SocketAddr,
        /// The address the client connected to.
        destination: SocketAddr,
    },
    /// `UNKNOWN`, `LOCAL`, or a family without IP addresses.
    Local,
}

/// Why a PROXY header was refused (a copy of the crate's own type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyError {
    /// Neither `PROXY ` nor the version 2 signature.
    Missing,
    /// Breaks the specification.
    Malformed(&'static str),
    /// Longer than its version's limit.
    TooLong(usize),
    /// The stream ended within the header.
    Truncated,
}

impl From<proxy::ProxyHeader> for ProxyHeader {
    fn from(h: proxy::ProxyHeader) -> Self {
        match h {
            proxy::ProxyHeader::Proxied {
                source,
                destination,
            } => Self::Proxied {
                source,
                destination,
            },
            proxy::ProxyHeader::Local => Self::Local,
        }
    }
}

impl From<proxy::ProxyError> for ProxyError {
    fn from(e: proxy::ProxyError) -> Self {
        match e {
            proxy::ProxyError::Missing => Self::Missing,
            proxy::ProxyError::Malformed(m) => Self::Malformed(m),
            proxy::ProxyError::TooLong(n) => Self::TooLong(n),
            proxy::ProxyError::Truncated => Self::Truncated,
        }
    }
}

/// The sans-io parser the listeners use: `Ok(Some((header, n)))` when the
/// first `n` bytes of `buf` are a whole header, `Ok(None)` when more bytes
/// are needed.
pub fn parse_proxy_header(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    proxy::parse(buf)
        .map(|r| r.map(|(h, n)| (h.into(), n)))
        .map_err(Into::into)
}

/// What [`read_proxy_header`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRead {
    /// The header, `None` when the stream was empty.
    pub header: Option<ProxyHeader>,
    /// How many bytes the header reader took past the header.
    pub read_past: usize,
    /// Everything the connection code then reads: the bytes taken past the
    /// header (through the crate's `Prefixed` stream) and the rest of the
    /// stream.
    pub after: Vec<u8>,
}

/// Drives the listeners' header reader over `wire`, handed out `chunk`
/// bytes (at least 1) per read, then reads the stream after the header to
/// its end the way the connection code does. The reader is always ready, so
/// this runs without a runtime.
pub fn read_proxy_header(wire: &[u8], chunk: usize) -> Result<ProxyRead, ProxyError> {
    let mut reader = Chunked {
        data: wire,
        chunk: chunk.max(1),
    };
    let Some((header, rest)) = now(proxy::read_header(&mut reader))? else {
        return Ok(ProxyRead {
            header: None,
            read_past: 0,
            after: Vec::new(),
        });
    };
    let read_past = rest.len();
    let mut stream = Prefixed::new(reader, rest);
    let mut after = Vec::new();
    now(stream.read_to_end(&mut after)).expect("an in-memory read does not fail");
    Ok(ProxyRead {
        header: Some(header.into()),
        read_past,
        after,
    })
}

/// A reader handing out at most `chunk` bytes per read.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let n = this.data.len().min(this.chunk).min(buf.remaining());
        buf.put_slice(&this.data[..n]);
        this.data = &this.data[n..];
        Poll::Ready(Ok(()))
    }
}

/// Polls a future that never waits (all its I/O is in memory) once.
fn now<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("an in-memory read never waits"),
    }
}

// ---------------------------------------------------------------------------
// Subscription trie

/// One subscription as the trie returns it: the session and its options
/// packed by [`pack_options`].
pub type Sub = (u64, u8);

/// The options a subscription is inserted with, from one byte: bits 0-1 the
/// QoS (3 reads as 2), bit 2 no local, bit 3 retain as published, bits 4-7
/// the subscription identifier (0: none).
fn unpack_options(tag: u8) -> SubOptions {
    SubOptions {
        qos: match tag & 3 {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        },
        no_local: tag & 4 != 0,
        retain_as_published: tag & 8 != 0,
        id: NonZeroU32::new(u32::from(tag >> 4)),
    }
}

/// The canonical form of an options byte: what the trie gives back for a
/// subscription inserted with `tag` (QoS 3 reads as 2).
pub fn pack_options(tag: u8) -> u8 {
    if tag & 3 == 3 { tag & !1 } else { tag }
}

fn pack(options: SubOptions) -> u8 {
    let qos = match options.qos {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    };
    let id = options.id.map_or(0, |id| {
        u8::try_from(id.get()).expect("identifiers come from 4 bits")
    });
    qos | u8::from(options.no_local) << 2 | u8::from(options.retain_as_published) << 3 | id << 4
}

/// What matched a topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrieMatches {
    /// Plain subscriptions, sorted.
    pub plain: Vec<Sub>,
    /// Each matching shared group: its members in the trie's order and the
    /// round-robin start; sorted.
    pub shared: Vec<(Vec<Sub>, usize)>,
}

/// The subscription tree of one tenant (the router's `Trie`), with
/// sessions as plain numbers and options as one byte.
#[derive(Debug, Default)]
pub struct SubscriptionTrie(Trie);

impl SubscriptionTrie {
    /// Adds or replaces a subscription to `filter` (a valid topic filter,
    /// without `$share/`; `group` is the share name of a shared one).
    /// Returns whether it already existed.
    pub fn insert(&mut self, filter: &str, group: Option<&str>, session: u64, tag: u8) -> bool {
        let subscriber = Subscriber {
            session,
            options: unpack_options(tag),
        };
        self.0.insert(filter, group, subscriber)
    }

    /// Removes a subscription; returns whether it existed.
    pub fn remove(&mut self, filter: &str, group: Option<&str>, session: u64) -> bool {
        self.0.remove(filter, group, session)
    }

    /// The subscriptions matching `topic` (a valid topic name); advances
    /// the round-robin cursor of every matching group.
    pub fn matches(&self, topic: &str) -> TrieMatches {
        let found = self.0.matches(topic);
        let sub = |s: &Subscriber| (s.session, pack(s.options));
        let mut plain: Vec<Sub> = found.plain.iter().map(sub).collect();
        plain.sort_unstable();
        let mut shared: Vec<(Vec<Sub>, usize)> = found
            .shared
            .iter()
            .map(|(members, start)| (members.iter().map(sub).collect(), *start))
            .collect();
        shared.sort_unstable();
        TrieMatches { plain, shared }
    }
}

// ---------------------------------------------------------------------------
// ACL

/// A tenant application with the given publish and subscribe grants.
pub fn application(publish: &[&str], subscribe: &[&str]) -> Identity {
    Identity::Application {
        tenant: "t".to_owned(),
        name: "fuzz".to_owned(),
        grants: AppGrants {
            publish: publish.iter().map(|&s| s.to_owned()).collect(),
            subscribe: subscribe.iter().map(|&s| s.to_owned()).collect(),
        },
    }
}

/// A device of tenant `t`.
pub fn device(device: &str) -> Identity {
    Identity::Device {
        tenant: "t".to_owned(),
        device: device.to_owned(),
    }
}

/// The ACL's `covers(grant, filter)`: whether every topic `filter` (a
/// topic name or filter) can match is matched by `grant`. Computed by
/// [`Identity::may_publish`] of an application whose only publish grant is
/// `grant`, which is exactly that check.
pub fn covers(grant: &str, filter: &str) -> bool {
    application(&[grant], &[]).may_publish(filter)
}

// ---------------------------------------------------------------------------
// WebSocket

/// How the server's reads through the adapter ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsEnd {
    /// End of stream (a close frame, or the connection closed).
    Eof,
    /// An error of this kind.
    Error(io::ErrorKind),
}

/// What [`ws_exchange`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsOutcome {
    /// The bytes the server read through the adapter.
    pub read: Vec<u8>,
    /// How the reads ended.
    pub end: WsEnd,
    /// Whether the server's write of `server_writes` succeeded.
    pub wrote: bool,
    /// Every byte the server sent to the client (WebSocket frames).
    pub sent: Vec<u8>,
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
}

/// Runs the server side of an already upgraded MQTT-over-WebSocket
/// connection (the server's WebSocket limits for `max_packet` and
/// `max_write_buffer`, the crate's byte-stream adapter) over an in-memory
/// pipe of `capacity` bytes each way. The client writes `client_bytes` and
/// closes its side, and reads whatever the server sends. The server first
/// writes `server_writes` through the adapter (when not empty) and flushes,
/// then reads through the adapter, `read_size` bytes at a time, until end
/// of stream or an error, and then shuts the adapter down. A current-thread
/// runtime is built once per thread.
pub fn ws_exchange(
    client_bytes: &[u8],
    server_writes: &[u8],
    max_packet: usize,
    max_write_buffer: usize,
    capacity: usize,
    read_size: usize,
) -> WsOutcome {
    RUNTIME.with(|rt| {
        rt.block_on(async {
            let (client, server) = tokio::io::duplex(capacity.max(1));
            let (mut client_read, mut client_write) = tokio::io::split(client);
            let client_writer = async {
                let _ = client_write.write_all(client_bytes).await;
                let _ = client_write.shutdown().await;
            };
            let client_reader = async {
                let mut sent = Vec::new();
                let _ = client_read.read_to_end(&mut sent).await;
                sent
            };
            let server_side = async {
                let config = ws::config(max_packet, max_write_buffer);
                let inner =
                    WebSocketStream::from_raw_socket(server, Role::Server, Some(config)).await;
                let mut stream = WsByteStream::new(inner);
                let wrote = server_writes.is_empty()
                    || (stream.write_all(server_writes).await.is_ok()
                        && stream.flush().await.is_ok());
                let mut read = Vec::new();
                let mut buf = vec![0u8; read_size.max(1)];
                let end = loop {
                    match stream.read(&mut buf).await {
                        Ok(0) => break WsEnd::Eof,
                        Ok(n) => read.extend_from_slice(&buf[..n]),
                        Err(e) => break WsEnd::Error(e.kind()),
                    }
                };
                let _ = stream.shutdown().await;
                (read, end, wrote)
            };
            let ((), sent, (read, end, wrote)) =
                tokio::join!(client_writer, client_reader, server_side);
            WsOutcome {
                read,
                end,
                wrote,
                sent,
            }
        })
    })
}
