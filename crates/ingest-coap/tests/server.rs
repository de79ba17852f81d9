//! The CoAP frontend on a real UDP socket over a real embedded log, driven
//! by a client written on the codec: durable acknowledgements, piggybacked
//! and separate; retransmissions answered from the exchange cache and
//! never appended twice; refusals with their codes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::net::UdpSocket;
use tributary_coap_codec::{Code, Message, MessageType, Token, option};
use tributary_core::Limits;
use tributary_core::directory::{Authenticator, DirectoryError, Principal, TenantPolicy};
use tributary_core::envelope::Envelope;
use tributary_ingest::{IngestConfig, IngestMetrics, Ingestor};
use tributary_ingest_coap::{CoapConfig, CoapMetrics, CoapServer, TOKEN_OPTION};
use tributary_log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use tributary_log::{ConsumerOptions, Log, StartFrom};

/// One device token, `dev`, of device d1 in tenant acme.
#[derive(Debug)]
struct FixedAuth;

#[async_trait]
impl Authenticator for FixedAuth {
    async fn authenticate(&self, token: &str) -> Result<Principal, DirectoryError> {
        match token {
            // A registry that takes its time: the request stays in hand.
            "slow" => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                Ok(Principal::Device {
                    tenant: "acme".into(),
                    device: "d1".into(),
                })
            }
            "dev" => Ok(Principal::Device {
                tenant: "acme".into(),
                device: "d1".into(),
            }),
            "dev2" => Ok(Principal::Device {
                tenant: "acme".into(),
                device: "d2".into(),
            }),
            "doomed" => Ok(Principal::Device {
                tenant: "acme".into(),
                device: "d3".into(),
            }),
            _ => Err(DirectoryError::Unauthenticated),
        }
    }
    async fn authenticate_credential(
        &self,
        token: &str,
    ) -> Result<(Principal, tributary_core::directory::Credential), DirectoryError> {
        let principal = self.authenticate(token).await?;
        let credential = tributary_core::directory::Credential {
            id: format!("cred-{token}"),
            expires_at_ns: None,
        };
        Ok((principal, credential))
    }
    /// The registry's view: the `doomed` token was revoked (an event the
    /// frontend missed).
    async fn credential_valid(
        &self,
        _tenant: &str,
        credential_id: &str,
        _device: Option<&str>,
    ) -> Result<bool, DirectoryError> {
        Ok(credential_id != "cred-doomed")
    }
    async fn tenant_policy(&self, _tenant: &str) -> Result<TenantPolicy, DirectoryError> {
        Ok(TenantPolicy::default())
    }
    async fn ensure_device(
        &self,
        _t: &str,
        _device: &str,
        _l: &BTreeMap<String, String>,
    ) -> Result<(), DirectoryError> {
        Ok(())
    }
}

struct Rig {
    _dir: tempfile::TempDir,
    log: Arc<EmbeddedLog>,
    server: CoapServer,
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn rig(config: CoapConfig) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path().join("log"), EmbeddedLogConfig::new("t", 2))
        .await
        .unwrap();
    let ingestor = Ingestor::new(
        log.clone(),
        Arc::new(FixedAuth),
        IngestConfig::default(),
        IngestMetrics::default(),
    );
    let server = CoapServer::new(ingestor, config, CoapMetrics::unregistered()).unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let s = server.clone();
    tokio::spawn(async move {
        s.serve(socket, async {
            let _ = stopped.await;
        })
        .await
    });
    Rig {
        _dir: dir,
        log,
        server,
        addr,
        _stop: stop,
    }
}

async fn envelopes(log: &EmbeddedLog) -> Vec<Envelope> {
    let mut c = log
        .consumer(ConsumerOptions {
            group: None,
            start: StartFrom::Earliest,
        })
        .await
        .unwrap();
    let recs = c.poll(1000, Duration::from_millis(200)).await.unwrap();
    recs.iter()
        .map(|r| Envelope::decode(&r.value, &Limits::default()).unwrap())
        .collect()
}

/// A client endpoint.
struct Client {
    socket: UdpSocket,
    server: SocketAddr,
}

impl Client {
    async fn new(server: SocketAddr) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        Client { socket, server }
    }

    async fn send(&self, msg: &Message) {
        self.socket
            .send_to(&msg.encode(), self.server)
            .await
            .unwrap();
    }

    async fn send_raw(&self, data: &[u8]) {
        self.socket.send_to(data, self.server).await.unwrap();
    }

    /// The next datagram, within 5 s.
    async fn recv(&self) -> Message {
        let mut buf = vec![0u8; 2048];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), self.socket.recv_from(&mut buf))
            .await
            .expect("a datagram within 5 s")
            .unwrap();
        Message::decode(&buf[..n]).expect("a well-formed datagram")
    }

    /// Whether a datagram arrives within `wait`.
    async fn silent_for(&self, wait: Duration) -> bool {
        let mut buf = vec![0u8; 2048];
        tokio::time::timeout(wait, self.socket.recv_from(&mut buf))
            .await
            .is_err()
    }
}

fn post(id: u16, path: &[&str], token: Option<&str>, format: Option<u32>, body: &str) -> Message {
    let mut m = Message::new(MessageType::Confirmable, Code::POST, id);
    m.token = Token::new(&id.to_be_bytes()).unwrap();
    for p in path {
        m.add_option(option::URI_PATH, p.as_bytes().to_vec());
    }
    if let Some(t) = token {
        m.add_option(TOKEN_OPTION, t.as_bytes().to_vec());
    }
    if let Some(f) = format {
        m.set_uint_option(option::CONTENT_FORMAT, f);
    }
    // An elective option the server ignores, as padding: an error's
    // diagnostic is sent only when the answer is no larger than the
    // request (see `tiny_requests_get_no_larger_answers`).
    m.add_option(65_000, vec![0; 120]);
    m.payload = body.as_bytes().to_vec();
    m
}

fn diagnostic(m: &Message) -> String {
    String::from_utf8_lossy(&m.payload).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmable_post_is_durable_before_its_ack_and_never_appended_twice() {
    let r = rig(CoapConfig::default()).await;
    let c = Client::new(r.addr).await;
    let req = post(
        0x1234,
        &["t"],
        Some("dev"),
        Some(50),
        r#"{"values": {"temp": 21.5}}"#,
    );
    c.send(&req).await;
    let ack = c.recv().await;
    assert_eq!(
        (ack.mtype, ack.code, ack.message_id, ack.token),
        (
            MessageType::Acknowledgement,
            Code::CHANGED,
            0x1234,
            req.token
        ),
        "a piggybacked 2.04: {}",
        diagnostic(&ack)
    );
    // By the time the ACK came, the record is in the log.
    let stored = envelopes(&r.log).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].device, "d1");
    assert_eq!(stored[0].content_type, "application/json");
    // The ACK was lost, say: the client sends the same message again, and
    // gets the same answer, with nothing appended.
    c.send(&req).await;
    assert_eq!(c.recv().await, ack);
    assert_eq!(
        envelopes(&r.log).await.len(),
        1,
        "a retransmission is not appended"
    );
    // The same message id from another endpoint is another request.
    let other = Client::new(r.addr).await;
    other.send(&req).await;
    assert_eq!(other.recv().await.code, Code::CHANGED);
    assert_eq!(envelopes(&r.log).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senml_and_bare_values_are_stored() {
    let r = rig(CoapConfig::default()).await;
    let c = Client::new(r.addr).await;
    c.send(&post(
        1,
        &["t"],
        Some("dev"),
        Some(110),
        r#"[{"n": "hum", "v": 40}]"#,
    ))
    .await;
    assert_eq!(c.recv().await.code, Code::CHANGED);
    c.send(&post(2, &["t", "temp"], Some("dev"), None, "21.5"))
        .await;
    assert_eq!(c.recv().await.code, Code::CHANGED);
    c.send(&post(3, &["t", "door"], Some("dev"), Some(0), "true"))
        .await;
    assert_eq!(c.recv().await.code, Code::CHANGED);
    // SenML CBOR: [{0: "temp", 2: 21.5}], and CBOR: {"values": {"x": 1}}.
    let mut senml_cbor = post(4, &["t"], Some("dev"), Some(112), "");
    senml_cbor.payload = vec![
        0x81, 0xa2, 0x00, 0x64, b't', b'e', b'm', b'p', 0x02, 0xf9, 0x4d, 0x60,
    ];
    c.send(&senml_cbor).await;
    assert_eq!(c.recv().await.code, Code::CHANGED);
    let mut cbor = post(5, &["t"], Some("dev"), Some(60), "");
    cbor.payload = vec![
        0xa1, 0x66, b'v', b'a', b'l', b'u', b'e', b's', 0xa1, 0x61, b'x', 0x01,
    ];
    c.send(&cbor).await;
    assert_eq!(c.recv().await.code, Code::CHANGED);
    // Malformed CBOR: 4.00 naming the byte.
    let mut bad = post(6, &["t"], Some("dev"), Some(112), "");
    bad.payload = vec![0x81, 0xa1, 0x02];
    c.send(&bad).await;
    let refused = c.recv().await;
    assert_eq!(refused.code, Code::BAD_REQUEST);
    assert!(
        diagnostic(&refused).contains("byte"),
        "{}",
        diagnostic(&refused)
    );
    let stored = envelopes(&r.log).await;
    let types: Vec<&str> = stored.iter().map(|e| e.content_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "application/senml+json",
            "text/plain",
            "text/plain",
            "application/senml+cbor",
            "application/cbor"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_append_gets_an_empty_ack_then_a_separate_response_until_acknowledged() {
    // The "slow" token takes 500 ms to check: longer than 100 ms, so the
    // response is separate.
    let r = rig(CoapConfig {
        separate_after_ms: 100,
        ack_timeout_ms: 100,
        ..CoapConfig::default()
    })
    .await;
    let c = Client::new(r.addr).await;
    let req = post(7, &["t"], Some("slow"), None, r#"{"values": {"temp": 1}}"#);
    c.send(&req).await;
    let empty = c.recv().await;
    assert_eq!(
        (empty.mtype, empty.code, empty.message_id),
        (MessageType::Acknowledgement, Code::EMPTY, 7)
    );
    let response = c.recv().await;
    assert_eq!(
        (response.mtype, response.code, response.token),
        (MessageType::Confirmable, Code::CHANGED, req.token)
    );
    assert_eq!(
        envelopes(&r.log).await.len(),
        1,
        "durable before the response"
    );
    // Not acknowledged: it comes again, the same message.
    assert_eq!(c.recv().await, response);
    // A retransmitted request meanwhile gets the empty ACK again.
    c.send(&req).await;
    loop {
        let m = c.recv().await;
        if m.mtype == MessageType::Acknowledgement {
            assert_eq!((m.code, m.message_id), (Code::EMPTY, 7));
            break;
        }
        assert_eq!(m, response);
    }
    c.send(&Message::new(
        MessageType::Acknowledgement,
        Code::EMPTY,
        response.message_id,
    ))
    .await;
    // Acknowledged: no more of it (the next would come within 400 ms).
    let mut quiet = false;
    for _ in 0..3 {
        if c.silent_for(Duration::from_millis(500)).await {
            quiet = true;
            break;
        }
    }
    assert!(quiet, "the response stops once acknowledged");
    assert_eq!(envelopes(&r.log).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_their_codes_and_diagnostics() {
    let r = rig(CoapConfig {
        max_message_bytes: 400,
        max_body_bytes: 100,
        ..CoapConfig::default()
    })
    .await;
    let c = Client::new(r.addr).await;
    let body = r#"{"values": {"temp": 1}}"#;
    let cases: Vec<(Message, Code, &str)> = vec![
        (
            post(1, &["t"], None, None, body),
            Code::UNAUTHORIZED,
            "option 65003",
        ),
        (
            post(2, &["t"], Some("nope"), None, body),
            Code::UNAUTHORIZED,
            "token",
        ),
        (
            post(3, &["x"], Some("dev"), None, body),
            Code::NOT_FOUND,
            "/t",
        ),
        (
            post(4, &["t"], Some("dev"), Some(42), body),
            Code::UNSUPPORTED_CONTENT_FORMAT,
            "50",
        ),
        (
            post(5, &["t"], Some("dev"), None, "{"),
            Code::BAD_REQUEST,
            "",
        ),
        (
            post(6, &["t"], Some("dev"), None, &"x".repeat(150)),
            Code::REQUEST_ENTITY_TOO_LARGE,
            "100",
        ),
        (
            post(7, &["t", "bad metric"], Some("dev"), None, "1"),
            Code::BAD_REQUEST,
            "metric",
        ),
        (
            {
                let mut m = post(8, &["t"], Some("dev"), None, body);
                m.add_option(option::URI_QUERY, b"token=dev".to_vec());
                m
            },
            Code::BAD_REQUEST,
            "URI",
        ),
        (
            {
                let mut m = post(9, &["t"], Some("dev"), None, body);
                m.add_option(9, Vec::new());
                m
            },
            Code::BAD_OPTION,
            "9",
        ),
        (
            {
                let mut m = post(10, &["t"], Some("dev"), None, body);
                m.code = Code::GET;
                m
            },
            Code::METHOD_NOT_ALLOWED,
            "POST",
        ),
    ];
    for (req, code, says) in cases {
        c.send(&req).await;
        let resp = c.recv().await;
        assert_eq!(resp.message_id, req.message_id);
        assert_eq!(resp.code, code, "{}", diagnostic(&resp));
        assert!(
            diagnostic(&resp).contains(says),
            "{:?} should say {says:?}",
            diagnostic(&resp)
        );
    }
    // A datagram over the limit: 4.13 with the largest body taken.
    let big = post(11, &["t"], Some("dev"), None, &"x".repeat(500));
    c.send(&big).await;
    let resp = c.recv().await;
    assert_eq!(
        (resp.code, resp.token),
        (Code::REQUEST_ENTITY_TOO_LARGE, big.token)
    );
    assert_eq!(resp.uint_option(option::SIZE1), Ok(Some(100)));
    // A malformed confirmable message gets a Reset; a ping too.
    c.send_raw(b"\x49\x01\x00\x0c").await;
    let rst = c.recv().await;
    assert_eq!((rst.mtype, rst.message_id), (MessageType::Reset, 12));
    c.send(&Message::new(MessageType::Confirmable, Code::EMPTY, 13))
        .await;
    let pong = c.recv().await;
    assert_eq!((pong.mtype, pong.message_id), (MessageType::Reset, 13));
    // Discovery.
    let mut get = Message::new(MessageType::Confirmable, Code::GET, 14);
    get.add_option(option::URI_PATH, b".well-known".to_vec());
    get.add_option(option::URI_PATH, b"core".to_vec());
    c.send(&get).await;
    let links = c.recv().await;
    assert_eq!(links.code, Code::CONTENT);
    assert!(diagnostic(&links).contains("</t>"));
    assert!(
        envelopes(&r.log).await.is_empty(),
        "nothing refused was appended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_with_too_many_requests_in_hand_is_told_to_wait() {
    let r = rig(CoapConfig {
        max_pending_per_peer: 2,
        ..CoapConfig::default()
    })
    .await;
    let c = Client::new(r.addr).await;
    let body = r#"{"values": {"temp": 1}}"#;
    // Two requests in hand (their authentication takes 500 ms), then a
    // third from the same endpoint.
    for id in 0..3u16 {
        c.send(&post(id, &["t"], Some("slow"), None, body)).await;
    }
    let busy = c.recv().await;
    assert_eq!(
        (busy.message_id, busy.code),
        (2, Code::SERVICE_UNAVAILABLE),
        "{}",
        diagnostic(&busy)
    );
    assert_eq!(busy.uint_option(option::MAX_AGE), Ok(Some(1)));
    // Another endpoint is not held back.
    let other = Client::new(r.addr).await;
    other.send(&post(0, &["t"], Some("dev"), None, body)).await;
    assert_eq!(other.recv().await.code, Code::CHANGED);
    let mut done: Vec<u16> = Vec::new();
    for _ in 0..2 {
        let m = c.recv().await;
        assert_eq!(m.code, Code::CHANGED);
        done.push(m.message_id);
    }
    done.sort();
    assert_eq!(done, [0, 1]);
    // With them answered, the endpoint may send again.
    c.send(&post(3, &["t"], Some("dev"), None, body)).await;
    assert_eq!(c.recv().await.code, Code::CHANGED);
    assert_eq!(envelopes(&r.log).await.len(), 4);
    let _ = &r.server;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_take_no_room_and_a_tenant_holds_only_its_share() {
    let r = rig(CoapConfig {
        max_exchanges: 10,
        max_exchanges_per_tenant: 3,
        ..CoapConfig::default()
    })
    .await;
    let c = Client::new(r.addr).await;
    let body = r#"{"values": {"temp": 1}}"#;
    // A hundred refused requests, one at a time: none is remembered.
    for id in 0..100u16 {
        c.send(&post(id, &["t"], Some("wrong"), None, body)).await;
        assert_eq!(c.recv().await.code, Code::UNAUTHORIZED);
    }
    // So there is room: the tenant's three are stored, the fourth waits.
    for id in 100..103u16 {
        c.send(&post(id, &["t"], Some("dev"), None, body)).await;
        assert_eq!(c.recv().await.code, Code::CHANGED);
    }
    c.send(&post(103, &["t"], Some("dev"), None, body)).await;
    let full = c.recv().await;
    assert_eq!(
        full.code,
        Code::SERVICE_UNAVAILABLE,
        "{}",
        diagnostic(&full)
    );
    assert!(diagnostic(&full).contains("tenant"));
    assert_eq!(full.uint_option(option::MAX_AGE), Ok(Some(5)));
    assert_eq!(envelopes(&r.log).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_requests_get_no_larger_answers() {
    // A spoofed source gains nothing: an error is never larger than the
    // request that caused it (its diagnostic is left out if it would be).
    let r = rig(CoapConfig::default()).await;
    let c = Client::new(r.addr).await;
    let mut tiny = Message::new(MessageType::Confirmable, Code::POST, 5);
    tiny.add_option(option::URI_PATH, b"t".to_vec());
    c.send(&tiny).await;
    let resp = c.recv().await;
    assert_eq!(resp.code, Code::UNAUTHORIZED);
    assert!(
        resp.encoded_len() <= tiny.encoded_len(),
        "{} > {}",
        resp.encoded_len(),
        tiny.encoded_len()
    );
    tiny.message_id = 6;
    tiny.remove_option(option::URI_PATH);
    tiny.add_option(option::URI_PATH, b"nothing-here".to_vec());
    c.send(&tiny).await;
    let resp = c.recv().await;
    assert_eq!(resp.code, Code::NOT_FOUND);
    assert!(resp.encoded_len() <= tiny.encoded_len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_in_blocks_is_stored_once_whole() {
    use tributary_coap_codec::Block;
    let r = rig(CoapConfig::default()).await;
    let c = Client::new(r.addr).await;
    // 40 values: about 600 bytes of JSON, sent in blocks of 64.
    let values: Vec<String> = (0..40).map(|i| format!("\"m{i:02}\": {i}")).collect();
    let body = format!("{{\"values\": {{{}}}}}", values.join(", "));
    let chunks: Vec<&[u8]> = body.as_bytes().chunks(64).collect();
    let last = chunks.len() - 1;
    for (n, chunk) in chunks.iter().enumerate() {
        let mut req = post(100 + n as u16, &["t"], Some("dev"), Some(50), "");
        let block = Block::new(n as u32, n < last, 64).unwrap();
        req.add_option(option::BLOCK1, block.encode());
        req.payload = chunk.to_vec();
        c.send(&req).await;
        let resp = c.recv().await;
        let want = if n < last {
            Code::CONTINUE
        } else {
            Code::CHANGED
        };
        assert_eq!(resp.code, want, "block {n}: {}", diagnostic(&resp));
        assert_eq!(resp.block1(), Ok(Some(block)), "the block is echoed");
        assert!(envelopes(&r.log).await.is_empty() || n == last);
        if n == 2 {
            // A retransmitted block is answered from memory, not taken twice.
            c.send(&req).await;
            assert_eq!(c.recv().await, resp);
        }
    }
    let stored = envelopes(&r.log).await;
    assert_eq!(stored.len(), 1, "one append for the whole body");
    // A gap: block 0, then block 2.
    let mut first = post(200, &["t"], Some("dev"), Some(50), "");
    first.add_option(option::BLOCK1, Block::new(0, true, 64).unwrap().encode());
    first.payload = chunks[0].to_vec();
    c.send(&first).await;
    assert_eq!(c.recv().await.code, Code::CONTINUE);
    let mut skip = post(201, &["t"], Some("dev"), Some(50), "");
    skip.add_option(option::BLOCK1, Block::new(2, true, 64).unwrap().encode());
    skip.payload = chunks[2].to_vec();
    c.send(&skip).await;
    let gap = c.recv().await;
    assert_eq!(
        gap.code,
        Code::REQUEST_ENTITY_INCOMPLETE,
        "{}",
        diagnostic(&gap)
    );
    assert_eq!(envelopes(&r.log).await.len(), 1);
}

fn command(device: &str, payload: &[u8], timeout: Duration) -> tributary_core::commands::Command {
    tributary_core::commands::Command {
        tenant: "acme".into(),
        device: device.into(),
        name: "blink".into(),
        payload: payload.to_vec(),
        content_type: "text/plain".into(),
        timeout,
        ttl: Duration::ZERO,
    }
}

fn observe_request(id: u16, token: &str, observe: u32) -> Message {
    let mut m = Message::new(MessageType::Confirmable, Code::GET, id);
    m.token = Token::new(b"obs1").unwrap();
    m.add_option(option::URI_PATH, b"c".to_vec());
    m.add_option(TOKEN_OPTION, token.as_bytes().to_vec());
    m.set_uint_option(option::OBSERVE, observe);
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reach_an_observing_device_and_its_reply_comes_back() {
    use tributary_core::commands::{CommandOutcome, CommandSink};
    let r = rig(CoapConfig {
        ack_timeout_ms: 100,
        ..CoapConfig::default()
    })
    .await;
    // Nobody observes yet: offline.
    let outcome = r
        .server
        .send_command(command("d1", b"x", Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(outcome, CommandOutcome::Offline);

    let c = Client::new(r.addr).await;
    c.send(&observe_request(1, "dev", 0)).await;
    let registered = c.recv().await;
    assert_eq!(
        registered.code,
        Code::CONTENT,
        "{}",
        diagnostic(&registered)
    );
    let first_seq = registered
        .observe()
        .unwrap()
        .expect("the Observe option: registered");
    assert!(r.server.observed("acme", "d1"));

    let server = r.server.clone();
    let sent = tokio::spawn(async move {
        server
            .send_command(command("d1", b"3 times", Duration::from_secs(10)))
            .await
    });
    let note = c.recv().await;
    assert_eq!(
        (note.mtype, note.code, note.token.as_bytes()),
        (MessageType::Confirmable, Code::CONTENT, b"obs1".as_slice())
    );
    assert!(
        note.observe().unwrap().unwrap() > first_seq,
        "a fresher notification"
    );
    let body: serde_json::Value = serde_json::from_slice(&note.payload).unwrap();
    assert_eq!(body["name"], "blink");
    assert_eq!(body["payload"], "3 times");
    let id = body["id"].as_str().unwrap().to_owned();
    c.send(&Message::new(
        MessageType::Acknowledgement,
        Code::EMPTY,
        note.message_id,
    ))
    .await;
    // Another device cannot answer it.
    let mut wrong = post(2, &["c", &id], Some("dev2"), Some(0), "not mine");
    wrong.token = Token::new(b"r0").unwrap();
    c.send(&wrong).await;
    assert_eq!(c.recv().await.code, Code::NOT_FOUND);
    let reply = post(3, &["c", &id], Some("dev"), Some(0), "blinked 3 times");
    c.send(&reply).await;
    assert_eq!(c.recv().await.code, Code::CHANGED);
    match sent.await.unwrap().unwrap() {
        CommandOutcome::Replied(r) => {
            assert_eq!(r.payload, b"blinked 3 times");
            assert_eq!(r.content_type, "text/plain");
        }
        other => panic!("expected a reply, got {other:?}"),
    }

    // Too large for one notification: refused, not truncated.
    let err = r
        .server
        .send_command(command("d1", &[b'x'; 2000], Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("fit"), "{err}");

    // A notification answered with Reset ends the registration.
    let server = r.server.clone();
    let sent = tokio::spawn(async move {
        server
            .send_command(command("d1", b"again", Duration::from_secs(10)))
            .await
    });
    let note = c.recv().await;
    c.send(&Message::new(
        MessageType::Reset,
        Code::EMPTY,
        note.message_id,
    ))
    .await;
    assert_eq!(sent.await.unwrap().unwrap(), CommandOutcome::Offline);
    assert!(!r.server.observed("acme", "d1"));

    // Registered again, then deregistered with Observe 1.
    c.send(&observe_request(4, "dev", 0)).await;
    assert!(c.recv().await.observe().unwrap().is_some());
    c.send(&observe_request(5, "dev", 1)).await;
    let done = c.recv().await;
    assert_eq!((done.code, done.observe()), (Code::CONTENT, Ok(None)));
    assert!(!r.server.observed("acme", "d1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_stops_acknowledging_is_offline_and_a_silent_one_times_out() {
    use tributary_core::commands::{CommandOutcome, CommandSink};
    let r = rig(CoapConfig {
        ack_timeout_ms: 50,
        max_retransmit: 2,
        ..CoapConfig::default()
    })
    .await;
    let c = Client::new(r.addr).await;
    c.send(&observe_request(1, "dev", 0)).await;
    assert_eq!(c.recv().await.code, Code::CONTENT);
    // Acknowledged, never answered: a timeout.
    let server = r.server.clone();
    let sent = tokio::spawn(async move {
        server
            .send_command(command("d1", b"x", Duration::from_millis(800)))
            .await
    });
    let note = c.recv().await;
    c.send(&Message::new(
        MessageType::Acknowledgement,
        Code::EMPTY,
        note.message_id,
    ))
    .await;
    assert_eq!(sent.await.unwrap().unwrap(), CommandOutcome::Timeout);
    assert!(r.server.observed("acme", "d1"), "still registered");
    // Never acknowledged: resent, then offline, and the registration ends.
    let outcome = r
        .server
        .send_command(command("d1", b"y", Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(outcome, CommandOutcome::Offline);
    assert!(!r.server.observed("acme", "d1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_end_only_the_registrations_of_their_credential() {
    let r = rig(CoapConfig::default()).await;
    let c = Client::new(r.addr).await;
    let d3 = Client::new(r.addr).await;
    c.send(&observe_request(1, "dev", 0)).await;
    assert_eq!(c.recv().await.code, Code::CONTENT);
    d3.send(&observe_request(1, "doomed", 0)).await;
    assert_eq!(d3.recv().await.code, Code::CONTENT);
    // Another credential of d1 revoked: its registration stays.
    assert!(
        !r.server
            .end_registration("acme", "d1", Some("cred-old"))
            .await
    );
    assert!(r.server.observed("acme", "d1"));
    // Events were missed: checking again ends d3's, whose token the
    // registry no longer accepts, and only that one.
    assert_eq!(r.server.revalidate().await, 1);
    assert!(!r.server.observed("acme", "d3"));
    assert!(r.server.observed("acme", "d1"));
    // Its own credential revoked: it ends.
    assert!(
        r.server
            .end_registration("acme", "d1", Some("cred-dev"))
            .await
    );
    assert!(!r.server.observed("acme", "d1"));
}
