//! MQTT 5's limits a server announces, enforced: Receive Maximum (a client
//! that sends more QoS 1 or 2 PUBLISHes than it may have unacknowledged is
//! disconnected with 0x93) and Server Keep Alive (a longer keep alive is
//! capped in CONNACK, and the cap is what the server times out by).
//! Driven packet by packet with the project's codec, as an attacker would.

mod common;

use std::time::{Duration, Instant};

use common::mqtt::RawMqtt;
use common::*;
use tributary_mqtt_codec::{Connect, Packet, ProtocolVersion, PubRel, Publish, QoS, ReasonCode};

/// A standalone whose MQTT server announces `receive_maximum`, and a
/// device's token.
async fn start(dir: &std::path::Path, env: &[(&str, &str)]) -> (Standalone, String) {
    let s = Standalone::start_with_env(dir, &[], env);
    let token = create_device_in(&s, "default", "rm-1").await;
    (s, token)
}

fn publish(qos: QoS, id: u16) -> Packet {
    let mut p = Publish::new(
        "devices/rm-1/telemetry",
        br#"{"values": {"x": 1}}"#.to_vec(),
    );
    p.qos = qos;
    p.packet_id = Some(id);
    p.into()
}

/// The DISCONNECT the server sends before closing, if any, within 10 s.
async fn disconnect_reason(m: &mut RawMqtt) -> Option<ReasonCode> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match m.recv(Duration::from_secs(10)).await? {
            Packet::Disconnect(d) => return Some(d.reason_code),
            _ => continue,
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_publishes_beyond_the_receive_maximum_get_0x93() {
    let dir = tempfile::tempdir().unwrap();
    let (s, token) = start(dir.path(), &[("TRIBUTARY_MQTT__RECEIVE_MAXIMUM", "4")]).await;
    let (mut m, ack) = RawMqtt::connect(s.mqtt, ProtocolVersion::V5, "rm-1", "rm-1", &token).await;
    assert_eq!(ack.properties.receive_maximum.map(|r| r.get()), Some(4));
    // Five QoS 1 PUBLISHes in one write, before any PUBACK can come: the
    // fifth is one more than the client may have unacknowledged.
    let mut burst = bytes::BytesMut::new();
    for id in 1..=5 {
        tributary_mqtt_codec::encode(
            &publish(QoS::AtLeastOnce, id),
            ProtocolVersion::V5,
            &mut burst,
        )
        .unwrap();
    }
    use tokio::io::AsyncWriteExt;
    m.stream.write_all(&burst).await.unwrap();
    assert_eq!(
        disconnect_reason(&mut m).await,
        Some(ReasonCode::ReceiveMaximumExceeded)
    );
    assert!(m.closed_within(Duration::from_secs(5)).await);
    eventually(Duration::from_secs(10), "the disconnect counted", || async {
        let name = "tributary_mqtt_disconnects_total{reason=\"receive_maximum\"}";
        (metric_value(&s, name).await == Some(1.0)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_publishes_with_pubrel_withheld_beyond_the_receive_maximum_get_0x93() {
    let dir = tempfile::tempdir().unwrap();
    let (s, token) = start(dir.path(), &[("TRIBUTARY_MQTT__RECEIVE_MAXIMUM", "4")]).await;
    let (mut m, _) = RawMqtt::connect(s.mqtt, ProtocolVersion::V5, "rm-1", "rm-1", &token).await;
    // Four QoS 2 PUBLISHes, each answered with PUBREC (durable).
    for id in 1..=4 {
        m.send(&publish(QoS::ExactlyOnce, id)).await;
        match m.recv(Duration::from_secs(10)).await {
            Some(Packet::PubRec(r)) => {
                assert_eq!((r.packet_id, r.reason_code), (id, ReasonCode::Success))
            }
            other => panic!("expected PUBREC {id}, got {other:?}"),
        }
    }
    // At the limit the client may still complete them: a PUBREL is read
    // and answered, which frees one.
    m.send(&PubRel::new(1).into()).await;
    assert!(matches!(
        m.recv(Duration::from_secs(10)).await,
        Some(Packet::PubComp(c)) if c.packet_id == 1
    ));
    m.send(&publish(QoS::ExactlyOnce, 5)).await;
    assert!(matches!(
        m.recv(Duration::from_secs(10)).await,
        Some(Packet::PubRec(r)) if r.packet_id == 5
    ));
    // PUBRELs withheld: four unacknowledged, and a fifth is one too many.
    m.send(&publish(QoS::ExactlyOnce, 6)).await;
    assert_eq!(
        disconnect_reason(&mut m).await,
        Some(ReasonCode::ReceiveMaximumExceeded)
    );
    // QoS 0 is not counted: a client at its limit that publishes at QoS 0
    // is held back, not disconnected.
    let (mut q, _) = RawMqtt::connect(s.mqtt, ProtocolVersion::V5, "rm-1", "rm-1", &token).await;
    for id in 1..=4 {
        q.send(&publish(QoS::ExactlyOnce, id)).await;
        assert!(matches!(
            q.recv(Duration::from_secs(10)).await,
            Some(Packet::PubRec(_))
        ));
    }
    let mut zero = Publish::new(
        "devices/rm-1/telemetry",
        br#"{"values": {"z": 1}}"#.to_vec(),
    );
    zero.qos = QoS::AtMostOnce;
    q.send(&zero.into()).await;
    q.send(&PubRel::new(1).into()).await;
    assert!(matches!(
        q.recv(Duration::from_secs(10)).await,
        Some(Packet::PubComp(c)) if c.packet_id == 1
    ));
    assert!(!q.closed_within(Duration::from_millis(300)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_keep_alive_is_capped_and_the_cap_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    // The default cap: 20 minutes.
    let (s, token) = start(dir.path(), &[]).await;
    let mut c = Connect::new(ProtocolVersion::V5, "rm-1");
    c.username = Some("rm-1".into());
    c.password = Some(token.as_bytes().to_vec().into());
    c.keep_alive = 65_535;
    let (_m, ack) = RawMqtt::connect_with(s.mqtt, c.clone()).await;
    assert_eq!(ack.properties.server_keep_alive, Some(1200));
    // Within the cap, the client's own keep alive stands.
    c.keep_alive = 60;
    let (_m, ack) = RawMqtt::connect_with(s.mqtt, c.clone()).await;
    assert_eq!(ack.properties.server_keep_alive, None);
    drop(s);

    // A cap of 1 s: a silent client is dropped after 1.5 s with 0x8D.
    let dir = tempfile::tempdir().unwrap();
    let (s, token) = start(dir.path(), &[("TRIBUTARY_MQTT__MAX_KEEP_ALIVE_SECS", "1")]).await;
    c.password = Some(token.as_bytes().to_vec().into());
    c.keep_alive = 65_535;
    let started = Instant::now();
    let (mut m, ack) = RawMqtt::connect_with(s.mqtt, c).await;
    assert_eq!(ack.properties.server_keep_alive, Some(1));
    assert_eq!(
        disconnect_reason(&mut m).await,
        Some(ReasonCode::KeepAliveTimeout)
    );
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(1400) && after < Duration::from_secs(5),
        "dropped after {after:?}"
    );
}

/// A metric's value from /metrics.
async fn metric_value(s: &Standalone, name: &str) -> Option<f64> {
    let text = http_client()
        .get(format!("http://{}/metrics", s.metrics))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
