//! The distributed mode end to end, as separate OS processes: a real
//! Kafka-protocol broker (Tansu), `tributary registry`, two `tributary
//! ingest` replicas and `tributary processor --with-query`.
//!
//! * devices post through both replicas (HTTP and MQTT) and every point is
//!   read back with its exact value;
//! * an ingest replica is killed (SIGKILL) in the middle of the load:
//!   nothing it acknowledged is lost;
//! * the processor is restarted: nothing is lost or duplicated;
//! * disabling a device closes its MQTT connection on the replica that
//!   holds it, through the device-events topic, within a second;
//! * an operator's command reaches the device on whichever replica holds
//!   it, and the reply comes back.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{Cluster, Service, channel};
use common::*;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tonic::transport::Channel;
use tributary_proto::v1 as pb;
use tributary_proto::v1::command_service_client::CommandServiceClient;
use tributary_proto::v1::query_service_client::QueryServiceClient;

/// Posts one point; true when acknowledged (204).
async fn post(http: &reqwest::Client, ingest: &Service, token: &str, ts_ms: i64, v: f64) -> bool {
    let url = format!("http://{}/v1/telemetry", ingest.addr("http"));
    let body = serde_json::json!({"ts": ts_ms, "values": {"v": v}});
    matches!(
        http.post(url).bearer_auth(token).json(&body).send().await,
        Ok(r) if r.status() == 204
    )
}

/// Every acknowledged (ts_ms, value) of `device` is stored, exactly once.
async fn assert_exactly(
    q: &QueryServiceClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>,
    device: &str,
    acked: &[(i64, f64)],
) {
    let from = acked.iter().map(|a| a.0).min().unwrap() * 1_000_000;
    let to = (acked.iter().map(|a| a.0).max().unwrap() + 1) * 1_000_000;
    let stored = eventually(
        Duration::from_secs(30),
        "every acknowledged point stored",
        || {
            let mut q = q.clone();
            async move {
                let pts = range_all(&mut q, device, &["v"], from, to).await;
                (pts.len() >= acked.len()).then_some(pts)
            }
        },
    )
    .await;
    let mut by_ts: BTreeMap<i64, Vec<Option<pb::Value>>> = BTreeMap::new();
    for (_, ts, v) in stored {
        by_ts.entry(ts).or_default().push(v);
    }
    for (ts, v) in acked {
        let got = by_ts.get(&(ts * 1_000_000));
        assert_eq!(
            got,
            Some(&vec![f64v(*v)]),
            "{device}: point at {ts} ms missing, changed or duplicated"
        );
    }
    assert_eq!(
        by_ts.len(),
        acked.len(),
        "{device}: points nobody acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn distributed_mode_end_to_end() {
    let cluster = Cluster::start();
    let a = cluster.ingest("ingest-a");
    let b = cluster.ingest("ingest-b");
    let processor = cluster.processor();
    let admin = cluster.admin.clone();
    let query = QueryServiceClient::with_interceptor(
        channel(processor.addr("grpc")).await,
        Bearer::new(&admin),
    );

    let t1 = cluster.device("pump-1").await;
    let t2 = cluster.device("pump-2").await;
    let http = reqwest::Client::new();
    let base = tributary_core::time::now_ns() / 1_000_000 - 3_600_000;

    // 1. Both replicas take data, and it all reads back exactly.
    let mut acked1 = Vec::new();
    let mut acked2 = Vec::new();
    for i in 0..20 {
        let ts = base + i;
        assert!(
            post(&http, &a, &t1, ts, i as f64).await,
            "ingest-a acknowledges"
        );
        acked1.push((ts, i as f64));
        assert!(
            post(&http, &b, &t2, ts, -(i as f64)).await,
            "ingest-b acknowledges"
        );
        acked2.push((ts, -(i as f64)));
    }
    assert_exactly(&query, "pump-1", &acked1).await;
    assert_exactly(&query, "pump-2", &acked2).await;

    // 2. Kill ingest-a in the middle of concurrent load on both replicas.
    let t3 = cluster.device("pump-3").await;
    let t4 = cluster.device("pump-4").await;
    let acked3 = Arc::new(Mutex::new(Vec::new()));
    let acked4 = Arc::new(Mutex::new(Vec::new()));
    let a_http = a.addr("http");
    let b_http = b.addr("http");
    let mut writers = Vec::new();
    for (token, addr, acked, sign) in [
        (t3, a_http, acked3.clone(), 1.0),
        (t4, b_http, acked4.clone(), -1.0),
    ] {
        let http = http.clone();
        writers.push(tokio::spawn(async move {
            let url = format!("http://{addr}/v1/telemetry");
            let mut failures = 0;
            for i in 0..100_000i64 {
                let (ts, v) = (base + 1000 + i, sign * i as f64);
                let body = serde_json::json!({"ts": ts, "values": {"v": v}});
                match http.post(&url).bearer_auth(&token).json(&body).send().await {
                    Ok(r) if r.status() == 204 => acked.lock().unwrap().push((ts, v)),
                    _ => {
                        failures += 1;
                        if failures > 3 {
                            return;
                        }
                    }
                }
                if sign < 0.0 && i >= 400 {
                    return;
                }
            }
        }));
    }
    eventually(Duration::from_secs(30), "load on ingest-a", || {
        let n = acked3.lock().unwrap().len();
        async move { (n >= 150).then_some(()) }
    })
    .await;
    a.crash();
    for w in writers {
        w.await.unwrap();
    }
    let acked3 = acked3.lock().unwrap().clone();
    let acked4 = acked4.lock().unwrap().clone();
    assert!(acked3.len() >= 150 && acked4.len() >= 400);
    assert_exactly(&query, "pump-3", &acked3).await;
    assert_exactly(&query, "pump-4", &acked4).await;

    // 3. Restart the processor; points posted while it is down are stored
    //    once it is back, and nothing is stored twice.
    assert!(
        processor.stop().success(),
        "processor exits cleanly on SIGTERM"
    );
    let mut acked5 = Vec::new();
    let t5 = cluster.device("pump-5").await;
    for i in 0..50 {
        let ts = base + 200_000 + i;
        assert!(post(&http, &b, &t5, ts, i as f64 * 0.25).await);
        acked5.push((ts, i as f64 * 0.25));
    }
    let processor = cluster.processor();
    let mut query = QueryServiceClient::with_interceptor(
        channel(processor.addr("grpc")).await,
        Bearer::new(&admin),
    );
    assert_exactly(&query, "pump-5", &acked5).await;
    for (d, acked) in [
        ("pump-1", &acked1),
        ("pump-2", &acked2),
        ("pump-3", &acked3),
        ("pump-4", &acked4),
    ] {
        assert_exactly(&query, d, acked).await;
    }
    let agg = query
        .aggregate(pb::AggregateRequest {
            target: device_target("pump-4"),
            metrics: vec!["v".into()],
            from_ns: (base + 1000) * 1_000_000,
            to_ns: (base + 200_000) * 1_000_000,
            window: String::new(),
            functions: vec![pb::AggregateFunction::Count as i32],
            ..Default::default()
        })
        .await
        .expect("Aggregate")
        .into_inner();
    let count: u64 = agg
        .series
        .iter()
        .flat_map(|s| s.buckets.iter())
        .map(|b| b.count)
        .sum();
    assert_eq!(
        count as usize,
        acked4.len(),
        "count over the restart: no duplicates"
    );

    // 4. A command reaches the device through the replica that holds its
    //    connection, and the reply comes back to the operator.
    let t6 = cluster.device("valve-6").await;
    let (client, mut packets) = mqtt_device(&b, "valve-6", &t6).await;
    client
        .subscribe("devices/valve-6/commands/+", QoS::AtLeastOnce)
        .await
        .unwrap();
    wait_packet(&mut packets, |p| matches!(p, Packet::SubAck(_))).await;
    let answering = tokio::spawn(answer_commands(client, packets, 4));
    let mut commands = CommandServiceClient::with_interceptor(
        channel(processor.addr("grpc")).await,
        Bearer::new(&admin),
    );
    for round in 0..4 {
        let started = Instant::now();
        let resp = commands
            .send_command(pb::SendCommandRequest {
                device: "valve-6".into(),
                name: "open".into(),
                payload: format!("{{\"round\":{round}}}").into_bytes(),
                timeout_ms: 10_000,
                ..Default::default()
            })
            .await
            .expect("SendCommand")
            .into_inner();
        assert_eq!(
            resp.status(),
            pb::CommandStatus::DeliveredReplied,
            "{resp:?}"
        );
        assert_eq!(
            resp.reply_payload,
            format!("opened {{\"round\":{round}}}").into_bytes()
        );
        eprintln!("routed command round trip {round}: {:?}", started.elapsed());
    }
    let mut packets = answering.await.unwrap();

    // 5. Disabling the device closes its connection on ingest-b within 1 s.
    let disabled_at = Instant::now();
    cluster
        .registry_client()
        .await
        .disable_device(pb::DeviceRef {
            device: "valve-6".into(),
            ..Default::default()
        })
        .await
        .expect("DisableDevice");
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match packets.recv().await {
                Some(Packet::Disconnect(d)) => return Some(d.reason_code),
                Some(_) => {}
                None => return None,
            }
        }
    })
    .await
    .expect("the disabled device's connection was closed");
    assert!(
        disabled_at.elapsed() < Duration::from_secs(1),
        "closed after {:?}",
        disabled_at.elapsed()
    );
    if let Some(code) = closed {
        assert_eq!(code as u8, 0x98, "DISCONNECT with administrative action");
    }
    // And the replica refuses its data.
    assert!(
        !post(&http, &b, &t6, base + 300_000, 1.0).await,
        "a disabled device's post is refused"
    );

    assert!(b.stop().success(), "ingest-b exits cleanly on SIGTERM");
    assert!(processor.stop().success());
    assert!(cluster.registry.stop().success());
}

/// Answers `n` commands with "opened <payload>" on their response topics,
/// then hands the packet stream back.
async fn answer_commands(
    client: AsyncClient,
    mut packets: tokio::sync::mpsc::Receiver<Packet>,
    n: usize,
) -> tokio::sync::mpsc::Receiver<Packet> {
    let mut answered = 0;
    while answered < n {
        let Some(p) = packets.recv().await else { break };
        let Packet::Publish(cmd) = p else { continue };
        let props = cmd.properties.clone().unwrap_or_default();
        let reply = rumqttc::v5::mqttbytes::v5::PublishProperties {
            correlation_data: props.correlation_data.clone(),
            ..Default::default()
        };
        let mut payload = b"opened ".to_vec();
        payload.extend_from_slice(&cmd.payload);
        client
            .publish_with_properties(
                props.response_topic.expect("response topic"),
                QoS::AtLeastOnce,
                false,
                payload,
                reply,
            )
            .await
            .unwrap();
        answered += 1;
    }
    packets
}

/// An MQTT 5 device on `ingest`; packets arrive on the receiver.
async fn mqtt_device(
    ingest: &Service,
    id: &str,
    token: &str,
) -> (AsyncClient, tokio::sync::mpsc::Receiver<Packet>) {
    let addr = ingest.addr("mqtt");
    let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    opts.set_credentials(id, token)
        .set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(p) = event
                && tx.send(p).await.is_err()
            {
                return;
            }
        }
    });
    wait_packet(&mut rx, |p| matches!(p, Packet::ConnAck(_))).await;
    (client, rx)
}

async fn wait_packet(rx: &mut tokio::sync::mpsc::Receiver<Packet>, pick: impl Fn(&Packet) -> bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let p = rx.recv().await.expect("MQTT event loop ended");
            if pick(&p) {
                return;
            }
        }
    })
    .await
    .expect("timed out waiting for an MQTT packet");
}
