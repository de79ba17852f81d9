//! Nothing acknowledged over CoAP is lost: several devices post confirmable
//! requests concurrently, the process is killed with SIGKILL mid-stream,
//! and after a restart every point that got its 2.04 is queryable with its
//! exact value.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tributary_coap_codec::{Code, Message, MessageType, Token, option};

/// Acknowledged points of one device: (ts_ns, value).
type Ledger = Arc<Mutex<Vec<(i64, f64)>>>;

/// Devices posting at once, one UDP endpoint each.
const DEVICES: usize = 4;
/// Requests each device keeps in flight.
const INFLIGHT: usize = 4;
/// Acknowledged requests, over all devices, before the kill.
const ACKED_BEFORE_KILL: usize = 2_000;

fn start(dir: &std::path::Path) -> Standalone {
    Standalone::start_with(dir, &["--coap-addr".as_ref(), "127.0.0.1:0".as_ref()])
}

/// Posts `{"ts": …, "values": {"v": …}}` with up to `INFLIGHT` confirmable
/// requests outstanding, until the server stops answering; records each
/// point whose 2.04 came back.
async fn run_device(coap: SocketAddr, token: String, base_ms: i64, acked: Ledger) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut sent: HashMap<u16, (i64, f64)> = HashMap::new();
    let mut next: u16 = 0;
    let mut buf = vec![0u8; 2048];
    loop {
        while sent.len() < INFLIGHT {
            let i = i64::from(next);
            let (ts_ms, v) = (base_ms + i, i as f64 + 0.25);
            let mut m = Message::new(MessageType::Confirmable, Code::POST, next);
            m.token = Token::new(&next.to_be_bytes()).unwrap();
            m.add_option(option::URI_PATH, b"t".to_vec());
            m.set_uint_option(option::CONTENT_FORMAT, 50);
            m.add_option(
                tributary_ingest_coap::TOKEN_OPTION,
                token.as_bytes().to_vec(),
            );
            m.payload = format!(r#"{{"ts": {ts_ms}, "values": {{"v": {v}}}}}"#).into_bytes();
            if socket.send_to(&m.encode(), coap).await.is_err() {
                return;
            }
            sent.insert(next, (ts_ms * 1_000_000, v));
            next += 1;
        }
        // A server that is gone answers nothing: that ends the device.
        let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_secs(3), socket.recv_from(&mut buf)).await
        else {
            return;
        };
        let Ok(reply) = Message::decode(&buf[..n]) else {
            continue;
        };
        let Some(point) = sent.remove(&reply.message_id) else {
            continue;
        };
        assert_eq!(
            reply.code,
            Code::CHANGED,
            "{:?}",
            String::from_utf8_lossy(&reply.payload)
        );
        acked.lock().unwrap().push(point);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_acknowledged_over_coap() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    let coap = s.coap.expect("coap=");
    let base_ms = tributary_core::time::now_ns() / 1_000_000 - 3_600_000;
    let mut ledgers = Vec::new();
    let mut tasks = Vec::new();
    for d in 0..DEVICES {
        let token = create_device_in(&s, "default", &format!("node-{d}")).await;
        let acked: Ledger = Arc::default();
        ledgers.push(acked.clone());
        tasks.push(tokio::spawn(run_device(coap, token, base_ms, acked)));
    }
    let total =
        |ledgers: &[Ledger]| -> usize { ledgers.iter().map(|l| l.lock().unwrap().len()).sum() };
    eventually(
        Duration::from_secs(120),
        "requests acknowledged by every device",
        || {
            let enough = total(&ledgers) >= ACKED_BEFORE_KILL
                && ledgers.iter().all(|l| !l.lock().unwrap().is_empty());
            async move { enough.then_some(()) }
        },
    )
    .await;
    s.crash();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("the device notices the kill")
            .unwrap();
    }
    eprintln!(
        "{} requests acknowledged when the process was killed",
        total(&ledgers)
    );

    let s = start(dir.path());
    for (d, ledger) in ledgers.iter().enumerate() {
        let points = ledger.lock().unwrap().clone();
        assert_all_stored(&s, &format!("node-{d}"), &points).await;
    }
    assert!(s.stop().success());
}
