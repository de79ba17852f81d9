//! CoAP senders: one UDP endpoint per device, confirmable POSTs to `/t`
//! with the device's token in option 65003, on the project's codec
//! (`tributary-coap-codec`).
//!
//! Each device keeps up to `in_flight` requests open and does what a CoAP
//! client must: it resends a request that got no answer (ACK_TIMEOUT of
//! 2 s, doubling, at most 4 times), stops resending on an empty ACK and then
//! waits for the separate response, which it acknowledges. A request is
//! acked on a 2.xx, failed on any other code (Max-Age holds the device back
//! on 4.29 and 5.03), and failed when nothing answers it within the load's
//! `ack_timeout`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tributary_coap_codec::{Code, Message, MessageType, Token, option};

use crate::engine::{Credential, DeviceTally, SenderCtx, UnackedRanges};
use crate::error::Error;
use crate::payload::{Builder, DeviceGen, Format};
use crate::scenario::{CoapTransport, HttpFormat, Scenario};

/// The option that carries a device's token.
const TOKEN_OPTION: u16 = 65003;
/// RFC 7252's ACK_TIMEOUT and MAX_RETRANSMIT.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_RETRANSMIT: u32 = 4;
/// The longest a Max-Age holds a device back.
const MAX_HOLD: Duration = Duration::from_secs(5);

/// What every CoAP sender of a run shares.
#[derive(Debug)]
pub struct CoapSettings {
    addr: SocketAddr,
    format: Format,
    content_format: u32,
}

impl CoapSettings {
    /// The server's address and the payload format.
    pub async fn new(sc: &Scenario, c: &CoapTransport) -> Result<Self, Error> {
        let addr = tokio::net::lookup_host(&sc.target.coap_addr)
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                Error::Scenario(format!(
                    "target.coap_addr {:?}: no address",
                    sc.target.coap_addr
                ))
            })?;
        let (format, content_format) = match c.format {
            HttpFormat::Senml => (Format::Senml, 110),
            _ => (Format::Json, 50),
        };
        Ok(Self {
            addr,
            format,
            content_format,
        })
    }
}

/// A request in hand.
struct Open {
    origin: Instant,
    points: u64,
    /// Timestamps it carries, for loss accounting.
    first: i64,
    last: i64,
    wire: Vec<u8>,
    token: Token,
    /// When to resend; `None` once an empty ACK said a response will come.
    resend_at: Option<Instant>,
    wait: Duration,
    tries: u32,
    give_up_at: Instant,
}

/// One device posting with its own token.
pub async fn run_device(
    ctx: Arc<SenderCtx>,
    s: Arc<CoapSettings>,
    cred: Credential,
    index: usize,
    local: usize,
    quota: Option<u64>,
    mut stop: watch::Receiver<bool>,
) -> DeviceTally {
    let mut dev = DeviceGen::new(cred.device.clone(), index as u64 + 1);
    let mut unacked = UnackedRanges::default();
    let empty = |dev: &DeviceGen, unacked| DeviceTally::of(dev, 0, 0, unacked);
    if *stop.borrow() {
        return empty(&dev, unacked);
    }
    tokio::select! {
        _ = sleep_until(ctx.connect_at(local)) => {}
        _ = stop.changed() => return empty(&dev, unacked),
    }
    let bind: SocketAddr = match (ctx.source(local), s.addr) {
        (Some(ip), _) => SocketAddr::new(ip, 0),
        (None, SocketAddr::V4(_)) => SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0),
        (None, SocketAddr::V6(_)) => SocketAddr::new(IpAddr::from([0u16; 8]), 0),
    };
    ctx.stats.conn_attempt();
    let started = Instant::now();
    let socket = match UdpSocket::bind(bind).await {
        Ok(sock) if sock.connect(s.addr).await.is_ok() => sock,
        _ => {
            ctx.stats.conn_failed("UDP socket");
            return empty(&dev, unacked);
        }
    };
    ctx.stats.conn_established(started.elapsed());
    let mut builder = Builder::new(ctx.shape.clone());
    let mut pace = ctx.pace(index, quota, Instant::now());
    let (mut sent, mut acked) = (0u64, 0u64);
    let mut open: HashMap<u16, Open> = HashMap::new();
    let mut next_id: u16 = (index as u16).wrapping_mul(7919);
    let mut next_token: u32 = 0;
    let mut body = String::new();
    let mut buf = vec![0u8; 2048];
    let mut stopping = *stop.borrow();
    let mut drain_deadline: Option<Instant> = None;
    let far = Instant::now() + Duration::from_secs(365 * 86_400);
    loop {
        if open.is_empty() && (stopping || pace.exhausted()) {
            break;
        }
        let send_at = if !stopping && open.len() < ctx.in_flight as usize {
            pace.due()
        } else {
            None
        };
        let timer = open
            .values()
            .map(|o| o.resend_at.unwrap_or(o.give_up_at).min(o.give_up_at))
            .min();
        tokio::select! {
            biased;
            _ = stop.changed(), if !stopping => {
                stopping = true;
                drain_deadline = Some(Instant::now() + ctx.ack_timeout);
            }
            r = socket.recv(&mut buf) => {
                let Ok(n) = r else { continue };
                let Ok(msg) = Message::decode(&buf[..n]) else { continue };
                let id = match msg.mtype {
                    MessageType::Acknowledgement | MessageType::Reset => Some(msg.message_id),
                    // A separate response: acknowledge it, and find its
                    // request by token.
                    MessageType::Confirmable | MessageType::NonConfirmable => {
                        if msg.mtype == MessageType::Confirmable {
                            let ack = Message::new(MessageType::Acknowledgement, Code::EMPTY, msg.message_id);
                            let _ = socket.send(&ack.encode()).await;
                        }
                        open.iter().find(|(_, o)| o.token == msg.token).map(|(id, _)| *id)
                    }
                };
                let Some(id) = id else { continue };
                if msg.mtype == MessageType::Acknowledgement && msg.code.is_empty() {
                    if let Some(o) = open.get_mut(&id) {
                        o.resend_at = None;
                    }
                    continue;
                }
                let Some(o) = open.remove(&id) else { continue };
                if msg.code.class() == 2 {
                    ctx.stats.acked(o.points, o.origin.elapsed());
                    acked += o.points;
                } else {
                    let reason = if msg.mtype == MessageType::Reset {
                        "CoAP reset".to_string()
                    } else {
                        format!("CoAP {}", msg.code)
                    };
                    ctx.stats.failed(&reason);
                    if matches!(msg.code, Code::TOO_MANY_REQUESTS | Code::SERVICE_UNAVAILABLE)
                        && let Ok(Some(secs)) = msg.uint_option(option::MAX_AGE)
                    {
                        pace.hold_until(Instant::now() + Duration::from_secs(u64::from(secs)).min(MAX_HOLD));
                    }
                    unacked.push(o.first, o.last);
                }
            }
            _ = sleep_until(send_at.unwrap_or(far)), if send_at.is_some() => {
                let origin = pace.take(Instant::now());
                let before = dev.max_ts();
                let points = builder.messages(s.format, &mut dev, 1, &mut body);
                let first = if before == i64::MIN { dev.min_ts } else { before.saturating_add(1) };
                let id = next_id;
                next_id = next_id.wrapping_add(1);
                next_token = next_token.wrapping_add(1);
                let token = Token::new(&next_token.to_be_bytes()).unwrap_or_default();
                let mut m = Message::new(MessageType::Confirmable, Code::POST, id);
                m.token = token;
                m.add_option(option::URI_PATH, b"t".to_vec());
                m.set_uint_option(option::CONTENT_FORMAT, s.content_format);
                if !cred.token.is_empty() {
                    m.add_option(TOKEN_OPTION, cred.token.as_bytes().to_vec());
                }
                m.payload = body.as_bytes().to_vec();
                let wire = m.encode();
                ctx.stats.sent(points, wire.len() as u64);
                sent += points;
                let _ = socket.send(&wire).await;
                let now = Instant::now();
                open.insert(id, Open {
                    origin,
                    points,
                    first,
                    last: dev.max_ts(),
                    wire,
                    token,
                    resend_at: Some(now + ACK_TIMEOUT),
                    wait: ACK_TIMEOUT,
                    tries: 0,
                    give_up_at: now + ctx.ack_timeout,
                });
            }
            _ = sleep_until(timer.unwrap_or(far)), if timer.is_some() => {
                let now = Instant::now();
                let mut gone = Vec::new();
                for (id, o) in open.iter_mut() {
                    if o.give_up_at <= now {
                        gone.push(*id);
                    } else if o.resend_at.is_some_and(|at| at <= now) {
                        if o.tries == MAX_RETRANSMIT {
                            gone.push(*id);
                            continue;
                        }
                        o.tries += 1;
                        o.wait *= 2;
                        o.resend_at = Some(now + o.wait);
                        let _ = socket.send(&o.wire).await;
                    }
                }
                for id in gone {
                    if let Some(o) = open.remove(&id) {
                        ctx.stats.failed("CoAP timeout");
                        unacked.push(o.first, o.last);
                    }
                }
            }
            _ = sleep_until(drain_deadline.unwrap_or(far)), if drain_deadline.is_some() => break,
        }
    }
    for (_, o) in open.drain() {
        ctx.stats.failed("no answer before the end");
        unacked.push(o.first, o.last);
    }
    ctx.stats.disconnected();
    DeviceTally::of(&dev, sent, acked, unacked)
}
