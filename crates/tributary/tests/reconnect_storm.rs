//! A fleet reconnecting at once after a restart: 1,000 devices with token
//! auth send their CONNECTs together to a standalone that was just
//! restarted (auth cache cold), and every one is accepted; afterwards the
//! registry shows every device online at this frontend, and once they
//! leave, every one offline.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::mqtt::RawMqtt;
use common::*;
use futures::StreamExt;
use tributary_mqtt_codec::{Connect, ProtocolVersion, ReasonCode};
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
        tokio::spawn(async move {
            let stream = connect_from(source, mqtt).await;
            RawMqtt::handshake(stream, c).await
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

    // The registry knows, for every device, that it is online here. (A
    // CONNACK is sent once the device's presence is durable.)
    let devices = fleet(&s).await;
    assert_eq!(devices.len(), DEVICES);
    let offline: Vec<_> = devices
        .iter()
        .filter(|d| !d.presence.as_ref().is_some_and(|p| p.online))
        .map(|d| d.id.as_str())
        .collect();
    assert!(offline.is_empty(), "online devices shown offline: {offline:?}");
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
