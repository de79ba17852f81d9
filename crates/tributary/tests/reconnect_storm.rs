//! A fleet reconnecting at once after a restart: 1,000 devices with token
//! auth send their CONNECTs together to a standalone that was just
//! restarted (auth cache cold), and every one is accepted; once each has
//! its SUBACK for its command topic (which waits for its presence to be
//! durable), the registry shows every device online at this frontend, and
//! once they leave, every one offline.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::mqtt::RawMqtt;
use common::*;
use futures::StreamExt;
use tributary_mqtt_codec::{
    Connect, Packet, ProtocolVersion, QoS, ReasonCode, Subscribe, Subscription,
};
use tributary_proto::v1 as pb;

const DEVICES: usize = 1_000;

/// Every device of the default tenant whose id starts with `storm-`, with
/// its presence.
async fn fleet(s: &Standalone) -> Vec<pb::Device> {
    let mut registry = s.registry(&s.admin_token).await;
    let mut devices = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = registry
            .list_devices(pb::ListDevicesRequest {
                page_size: 1000,
                page_token: page_token.clone(),
                id_prefix: "storm-".into(),
                ..Default::default()
            })
            .await
            .expect("ListDevices")
            .into_inner();
        devices.extend(page.devices);
        if page.next_page_token.is_empty() {
            return devices;
        }
        page_token = page.next_page_token;
    }
}

/// A TCP connection to `server` from `source` (one of 127.0.0.1-4: the
/// server lets one source address have 256 handshakes in progress).
async fn connect_from(source: Ipv4Addr, server: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(IpAddr::V4(source), 0))
        .expect("bind");
    socket.connect(server).await.expect("TCP connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connects_at_once_after_a_restart_all_succeed_with_presence_right() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path());
    let tokens: Vec<(String, String)> = futures::stream::iter(0..DEVICES)
        .map(|i| {
            let s = &s;
            async move {
                let id = format!("storm-{i:04}");
                let token = create_device_in(s, "default", &id).await;
                (id, token)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(s.stop().success());

    // Just restarted: nothing is cached.
    let s = Standalone::start(dir.path());
    let mqtt = s.mqtt;
    let connects = tokens.iter().enumerate().map(|(i, (id, token))| {
        let source = Ipv4Addr::new(127, 0, 0, 1 + (i % 4) as u8);
        let mut c = Connect::new(ProtocolVersion::V311, id.clone());
        c.username = Some(id.clone());
        c.password = Some(token.as_bytes().to_vec().into());
        c.keep_alive = 60;
        let commands = format!("devices/{id}/commands/+");
        tokio::spawn(async move {
            let stream = connect_from(source, mqtt).await;
            let (mut m, ack) = RawMqtt::handshake(stream, c).await;
            if ack.reason_code == ReasonCode::Success {
                // Ready for commands once subscribed: the SUBACK comes
                // only once the device's presence is durable.
                m.send(
                    &Subscribe {
                        packet_id: 1,
                        properties: Default::default(),
                        subscriptions: vec![Subscription::new(commands, QoS::AtLeastOnce)],
                    }
                    .into(),
                )
                .await;
                match m.recv(Duration::from_secs(30)).await {
                    Some(Packet::SubAck(_)) => {}
                    other => panic!("expected SUBACK, got {other:?}"),
                }
            }
            (m, ack)
        })
    });
    let opened: Vec<(RawMqtt, _)> = futures::future::join_all(connects)
        .await
        .into_iter()
        .map(|r| r.expect("connect task"))
        .collect();
    let refused: Vec<_> = opened
        .iter()
        .filter(|(_, ack)| ack.reason_code != ReasonCode::Success)
        .map(|(_, ack)| ack.reason_code)
        .collect();
    assert!(refused.is_empty(), "refused CONNACKs: {refused:?}");
    assert_eq!(opened.len(), DEVICES);

    // The registry knows, for every device, that it is online here.
    let devices = fleet(&s).await;
    assert_eq!(devices.len(), DEVICES);
    let offline: Vec<_> = devices
        .iter()
        .filter(|d| !d.presence.as_ref().is_some_and(|p| p.online))
        .map(|d| d.id.as_str())
        .collect();
    assert!(
        offline.is_empty(),
        "online devices shown offline: {offline:?}"
    );
    let frontends: std::collections::BTreeSet<_> = devices
        .iter()
        .filter_map(|d| d.presence.as_ref().map(|p| p.frontend.as_str()))
        .collect();
    assert_eq!(frontends.len(), 1, "{frontends:?}");
    assert_eq!(
        metric(&s, "tributary_mqtt_connections").await,
        Some(DEVICES as f64)
    );

    // They all leave: every one offline.
    drop(opened);
    eventually(Duration::from_secs(30), "every device offline", || async {
        fleet(&s)
            .await
            .iter()
            .all(|d| d.presence.as_ref().is_some_and(|p| !p.online))
            .then_some(())
    })
    .await;
    assert!(s.stop().success());
}

/// Admission control: above `max_connect_rate` (here 5/s, a burst of 5,
/// no waiting) a storm's extra CONNECTs are refused at once with 0x9F
/// Connection rate exceeded and a retry hint, not left to time out; the
/// ones admitted work, and a client that retries later gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_above_the_connect_rate_get_0x9f_with_a_retry_hint() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start_with_env(
        dir.path(),
        &[],
        &[
            ("TRIBUTARY_MQTT__MAX_CONNECT_RATE", "5"),
            ("TRIBUTARY_MQTT__CONNECT_BURST", "5"),
            ("TRIBUTARY_MQTT__MAX_CONNECT_WAIT_MS", "0"),
        ],
    );
    let token = create_device_in(&s, "default", "rate-1").await;
    let mqtt = s.mqtt;
    let connects = (0..20).map(|i| {
        let mut c = Connect::new(ProtocolVersion::V5, format!("rate-1/{i}"));
        c.username = Some("rate-1".into());
        c.password = Some(token.as_bytes().to_vec().into());
        tokio::spawn(async move { RawMqtt::connect_with(mqtt, c).await })
    });
    let acks: Vec<_> = futures::future::join_all(connects)
        .await
        .into_iter()
        .map(|r| r.expect("connect task").1)
        .collect();
    let admitted = acks
        .iter()
        .filter(|a| a.reason_code == ReasonCode::Success)
        .count();
    let refused: Vec<_> = acks
        .iter()
        .filter(|a| a.reason_code != ReasonCode::Success)
        .collect();
    // The burst, and perhaps one more if the storm took over 200 ms.
    assert!((5..=7).contains(&admitted), "{admitted} admitted");
    for ack in &refused {
        assert_eq!(ack.reason_code, ReasonCode::ConnectionRateExceeded);
        let retry: u64 = ack
            .properties
            .user_properties
            .iter()
            .find(|(k, _)| k == "retry-after")
            .expect("a retry-after user property")
            .1
            .parse()
            .expect("seconds");
        assert!((1..=60).contains(&retry), "retry-after {retry}");
        assert!(
            ack.properties
                .reason_string
                .as_deref()
                .is_some_and(|r| r.contains("connects/s")),
            "{:?}",
            ack.properties.reason_string
        );
    }
    assert_eq!(
        metric(
            &s,
            "tributary_mqtt_connects_refused_total{reason=\"connect_rate\"}"
        )
        .await,
        Some(refused.len() as f64)
    );
    // After the hint, a retry gets in.
    let mut c = Connect::new(ProtocolVersion::V5, "rate-1/retry");
    c.username = Some("rate-1".into());
    c.password = Some(token.as_bytes().to_vec().into());
    let ack = eventually(Duration::from_secs(10), "a retry admitted", || {
        let c = c.clone();
        async move {
            let (_, ack) = RawMqtt::connect_with(mqtt, c).await;
            (ack.reason_code == ReasonCode::Success).then_some(ack)
        }
    })
    .await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    assert!(s.stop().success());
}
