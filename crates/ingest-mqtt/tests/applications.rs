//! Tenant applications: user name `app:<name>`, an application token, any
//! client id, publish and subscribe within the grants, inside the tenant.

mod common;

use common::{Raw, Rig, connect_packet};
use tributary_mqtt_codec::{
    Packet, ProtocolVersion, Publish, QoS, ReasonCode, Subscribe, Subscription,
};

use ProtocolVersion::{V5, V311};

fn publish(topic: &str, payload: &'static str, qos: QoS, id: u16) -> Packet {
    let mut p = Publish::new(topic, payload);
    p.qos = qos;
    p.packet_id = (qos != QoS::AtMostOnce).then_some(id);
    p.into()
}

fn subscribe(id: u16, filter: &str) -> Packet {
    Subscribe {
        packet_id: id,
        properties: Default::default(),
        subscriptions: vec![Subscription::new(filter, QoS::AtLeastOnce)],
    }
    .into()
}

async fn suback(raw: &mut Raw) -> Vec<ReasonCode> {
    match raw.recv().await {
        Some(Packet::SubAck(s)) => s.reason_codes,
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

async fn puback(raw: &mut Raw) -> (u16, ReasonCode) {
    match raw.recv().await {
        Some(Packet::PubAck(a)) => (a.packet_id, a.reason_code),
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

async fn recv_publish(raw: &mut Raw) -> Publish {
    match raw.recv().await {
        Some(Packet::Publish(p)) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

/// Connects application `name` with `token` and client id `client_id`.
async fn app(rig: &Rig, version: ProtocolVersion, client_id: &str, name: &str, token: &str) -> Raw {
    let (raw, ack) = Raw::connect(
        rig.addr,
        connect_packet(version, client_id, &format!("app:{name}"), token),
    )
    .await;
    assert_eq!(ack.reason_code, ReasonCode::Success, "{ack:?}");
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_credentials_are_checked() {
    let rig = Rig::default().await;
    let cases = [
        // The token of another application, or a device token.
        ("app:dash", "app-all", ReasonCode::BadUserNameOrPassword),
        ("app:dash", "tok-d1", ReasonCode::BadUserNameOrPassword),
        ("app:dash", "", ReasonCode::BadUserNameOrPassword),
        // An application token is no device token.
        ("d1", "app-dash", ReasonCode::BadUserNameOrPassword),
    ];
    for (user, token, expected) in cases {
        let (mut raw, ack) = Raw::connect(rig.addr, connect_packet(V5, "c1", user, token)).await;
        assert_eq!(ack.reason_code, expected, "{user} {token}");
        assert_eq!(raw.expect_close().await, None);
    }
    // An empty client id gets one assigned.
    let (_raw, ack) = Raw::connect(rig.addr, connect_packet(V5, "", "app:dash", "app-dash")).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    assert!(
        ack.properties
            .assigned_client_identifier
            .is_some_and(|id| id.starts_with("auto-"))
    );
    // A will outside the grants is refused.
    let mut c = connect_packet(V311, "w", "app:dash", "app-dash");
    c.will = Some(tributary_mqtt_codec::Will {
        topic: "alerts/gone".into(),
        payload: bytes::Bytes::from_static(b"bye"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
    });
    let (_raw, ack) = Raw::connect(rig.addr, c).await;
    assert_eq!(ack.reason_code, ReasonCode::NotAuthorized);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_sees_telemetry_and_commands_devices_within_its_grants() {
    let rig = Rig::default().await;
    let mut device = Raw::device(rig.addr, V5, "d1").await;
    device.send(subscribe(1, "devices/d1/commands/#")).await;
    assert_eq!(suback(&mut device).await, [ReasonCode::GrantedQoS1]);

    // Any client id, even one equal to a device's: it is a separate session.
    let mut dash = app(&rig, V5, "d1", "dash", "app-dash").await;
    dash.send(subscribe(1, "devices/+/telemetry/#")).await;
    assert_eq!(suback(&mut dash).await, [ReasonCode::GrantedQoS1]);
    for (id, filter) in [(2, "#"), (3, "devices/#"), (4, "other/x")] {
        dash.send(subscribe(id, filter)).await;
        assert_eq!(
            suback(&mut dash).await,
            [ReasonCode::NotAuthorized],
            "{filter}"
        );
    }

    // The device's telemetry reaches the application once durable.
    device
        .send(publish(
            "devices/d1/telemetry/temp",
            "21.5",
            QoS::AtLeastOnce,
            7,
        ))
        .await;
    assert_eq!(puback(&mut device).await, (7, ReasonCode::Success));
    let seen = recv_publish(&mut dash).await;
    assert_eq!(seen.topic, "devices/d1/telemetry/temp");
    assert_eq!(&seen.payload[..], b"21.5");

    // The application commands the device; publishing elsewhere is refused.
    dash.send(publish(
        "devices/d1/commands/reboot",
        "now",
        QoS::AtLeastOnce,
        10,
    ))
    .await;
    assert_eq!(puback(&mut dash).await, (10, ReasonCode::Success));
    let cmd = recv_publish(&mut device).await;
    assert_eq!(cmd.topic, "devices/d1/commands/reboot");
    dash.send(publish(
        "devices/d1/telemetry/temp",
        "99",
        QoS::AtLeastOnce,
        11,
    ))
    .await;
    assert_eq!(puback(&mut dash).await, (11, ReasonCode::NotAuthorized));

    // The device kept its own session: it still answers.
    assert!(device.drain_until_pong().await.is_empty());
    assert_eq!(rig.envelopes().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_publish_on_a_device_topic_is_not_telemetry_and_tenants_stay_apart() {
    let rig = Rig::default().await;
    let mut all = app(&rig, V311, "backend", "all", "app-all").await;
    all.send(subscribe(1, "#")).await;
    assert_eq!(suback(&mut all).await, [ReasonCode::GrantedQoS1]);
    let mut other = app(&rig, V311, "backend", "all", "app-other").await;
    other.send(subscribe(1, "#")).await;
    assert_eq!(suback(&mut other).await, [ReasonCode::GrantedQoS1]);

    // Plain pub/sub: routed to the tenant's subscribers, never ingested.
    all.send(publish(
        "devices/d1/telemetry/temp",
        "5",
        QoS::AtLeastOnce,
        2,
    ))
    .await;
    // Its own subscription gets it back: PUBACK and delivery, in either order.
    let (mut acked, mut echoed) = (None, None);
    for _ in 0..2 {
        match all.recv().await {
            Some(Packet::PubAck(a)) => acked = Some((a.packet_id, a.reason_code)),
            Some(Packet::Publish(p)) => echoed = Some(p.topic),
            other => panic!("expected PUBACK or PUBLISH, got {other:?}"),
        }
    }
    assert_eq!(acked, Some((2, ReasonCode::Success)));
    assert_eq!(echoed.as_deref(), Some("devices/d1/telemetry/temp"));
    // The same client id in another tenant got nothing.
    assert!(other.drain_until_pong().await.is_empty());
    assert!(
        rig.envelopes().await.is_empty(),
        "apps do not write telemetry"
    );
}
