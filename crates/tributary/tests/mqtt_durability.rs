//! Nothing PUBACKed is lost: several MQTT clients publish QoS 1 telemetry
//! concurrently, the process is killed with SIGKILL mid-stream, and after a
//! restart every acknowledged point is queryable with its exact value.

mod common;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tributary_proto::v1 as pb;

/// Devices publishing at once, one MQTT connection each.
const DEVICES: usize = 6;
/// Publishes each client keeps in flight (sent, not yet PUBACKed).
const INFLIGHT: u16 = 32;
/// Acknowledged publishes, over all clients, before the kill.
const ACKED_BEFORE_KILL: usize = 10_000;

async fn create_device(s: &Standalone, id: &str) -> String {
    s.registry(&s.admin_token)
        .await
        .create_device(pb::CreateDeviceRequest {
            tenant: String::new(),
            id: id.into(),
            labels: Default::default(),
            metadata: Default::default(),
            issue_token: true,
        })
        .await
        .expect("CreateDevice")
        .into_inner()
        .token
        .expect("token")
        .token
}

/// What one client has sent and what got its PUBACK.
#[derive(Default)]
struct Ledger {
    /// Publishes handed to the client, in order, not yet given a packet id.
    queued: VecDeque<(i64, f64)>,
    /// Publishes on the wire, by packet id.
    inflight: HashMap<u16, (i64, f64)>,
    /// PUBACKed points: (ts_ns, value).
    acked: Vec<(i64, f64)>,
}

/// Connects device `d` and publishes QoS 1 telemetry until the connection
/// dies, recording every PUBACKed point in `ledger`. rumqttc reports each
/// publish it puts on the wire (`Outgoing::Publish(pkid)`) in the order the
/// publishes were handed to it, which maps packet ids back to points.
fn run_client(
    s: &Standalone,
    d: usize,
    token: String,
    base_ms: i64,
    ledger: Arc<Mutex<Ledger>>,
) -> (tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>) {
    let id = format!("meter-{d}");
    let mut opts = MqttOptions::new(&id, s.mqtt.ip().to_string(), s.mqtt.port());
    opts.set_credentials(&id, token)
        .set_keep_alive(Duration::from_secs(30))
        .set_inflight(INFLIGHT);
    let (client, mut eventloop) = AsyncClient::new(opts, usize::from(INFLIGHT));
    let events = {
        let ledger = ledger.clone();
        tokio::spawn(async move {
            // Ends on the first connection error: the kill.
            while let Ok(event) = eventloop.poll().await {
                let mut l = ledger.lock().unwrap();
                match event {
                    Event::Outgoing(Outgoing::Publish(pkid)) => {
                        let point = l.queued.pop_front().expect("a publish was queued");
                        l.inflight.insert(pkid, point);
                    }
                    Event::Incoming(Packet::PubAck(ack)) => {
                        let point = l.inflight.remove(&ack.pkid).expect("PUBACK of a publish");
                        l.acked.push(point);
                    }
                    _ => {}
                }
            }
        })
    };
    let topic = format!("devices/{id}/telemetry");
    let publisher = tokio::spawn(async move {
        for i in 0..1_000_000i64 {
            let ts_ms = base_ms + i;
            let v = (d as f64) * 1e7 + i as f64 + 0.25;
            let body = serde_json::json!({"ts": ts_ms, "values": {"v": v}}).to_string();
            ledger
                .lock()
                .unwrap()
                .queued
                .push_back((ts_ms * 1_000_000, v));
            if client
                .publish(&topic, QoS::AtLeastOnce, false, body)
                .await
                .is_err()
            {
                return;
            }
        }
    });
    (events, publisher)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_qos1_load_loses_nothing_pubacked() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path());
    let mut tokens = Vec::new();
    for d in 0..DEVICES {
        tokens.push(create_device(&s, &format!("meter-{d}")).await);
    }
    let base_ms = tributary_core::time::now_ns() / 1_000_000 - 3_600_000;
    let ledgers: Vec<Arc<Mutex<Ledger>>> = (0..DEVICES).map(|_| Arc::default()).collect();
    let mut tasks = Vec::new();
    for (d, token) in tokens.into_iter().enumerate() {
        tasks.push(run_client(&s, d, token, base_ms, ledgers[d].clone()));
    }
    let acked = |ledgers: &[Arc<Mutex<Ledger>>]| -> usize {
        ledgers.iter().map(|l| l.lock().unwrap().acked.len()).sum()
    };
    eventually(
        Duration::from_secs(120),
        "publishes acknowledged by every client",
        || {
            let enough = acked(&ledgers) >= ACKED_BEFORE_KILL
                && ledgers.iter().all(|l| !l.lock().unwrap().acked.is_empty());
            async move { enough.then_some(()) }
        },
    )
    .await;
    s.crash();
    for (events, publisher) in tasks {
        tokio::time::timeout(Duration::from_secs(30), events)
            .await
            .expect("the client notices the kill")
            .unwrap();
        publisher.abort();
    }
    let unacked: usize = ledgers
        .iter()
        .map(|l| l.lock().unwrap().inflight.len())
        .sum();
    eprintln!(
        "{} publishes PUBACKed and {unacked} in flight when the process was killed",
        acked(&ledgers)
    );

    let s = Standalone::start(dir.path());
    for (d, ledger) in ledgers.iter().enumerate() {
        let points = ledger.lock().unwrap().acked.clone();
        assert_all_stored(&s, &format!("meter-{d}"), &points).await;
    }
    assert!(s.stop().success());
}
