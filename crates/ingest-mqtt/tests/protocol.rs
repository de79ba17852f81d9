//! The server over a real socket, driven by a raw codec client: durable
//! acknowledgements, reason codes, flow control, sessions and routing.

mod common;

use std::num::{NonZeroU16, NonZeroU32};
use std::time::Duration;

use bytes::Bytes;
use common::{Raw, Rig, connect_packet, wait_for};
use tributary_core::Value;
use tributary_ingest_mqtt::{Message, MqttConfig, PublishError};
use tributary_mqtt_codec::{
    Disconnect, Packet, ProtocolVersion, PubAck, PubComp, PubRec, PubRel, Publish, QoS, ReasonCode,
    Subscribe, Subscription, SubscriptionOptions, Unsubscribe, Will,
};

use ProtocolVersion::{V5, V311};

fn publish(topic: &str, payload: &'static str, qos: QoS, id: u16) -> Publish {
    let mut p = Publish::new(topic, payload);
    p.qos = qos;
    p.packet_id = (qos != QoS::AtMostOnce).then_some(id);
    p
}

fn subscribe(id: u16, filter: &str, qos: QoS) -> Packet {
    Subscribe {
        packet_id: id,
        properties: Default::default(),
        subscriptions: vec![Subscription::new(filter, qos)],
    }
    .into()
}

async fn suback(raw: &mut Raw) -> Vec<ReasonCode> {
    match raw.recv().await {
        Some(Packet::SubAck(s)) => s.reason_codes,
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

async fn recv_publish(raw: &mut Raw) -> Publish {
    match raw.recv().await {
        Some(Packet::Publish(p)) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_puback_comes_only_after_the_record_is_in_the_log() {
    let rig = Rig::default().await;
    for version in [V311, V5] {
        let mut c = Raw::device(rig.addr, version, "d1").await;
        let before = rig.envelopes().await.len();
        c.send(
            publish(
                "devices/d1/telemetry",
                r#"{"ts": 1000, "values": {"temp": 21.5}}"#,
                QoS::AtLeastOnce,
                9,
            )
            .into(),
        )
        .await;
        match c.recv().await {
            Some(Packet::PubAck(a)) => {
                assert_eq!((a.packet_id, a.reason_code), (9, ReasonCode::Success))
            }
            other => panic!("expected PUBACK, got {other:?}"),
        }
        // The PUBACK is here: the record must already be readable.
        let envs = rig.envelopes().await;
        assert_eq!(envs.len(), before + 1, "{version}");
        let e = envs.last().unwrap();
        assert_eq!(
            (
                e.tenant.as_str(),
                e.device.as_str(),
                e.content_type.as_str()
            ),
            ("acme", "d1", "application/json")
        );
        assert_eq!(e.points[0].metric, "temp");
        assert_eq!(e.points[0].value, Value::F64(21.5));
        assert_eq!(e.points[0].ts_ns, 1_000_000_000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_publishes_in_flight_are_acked_in_order() {
    let rig = Rig::default().await;
    let mut c = Raw::device(rig.addr, V5, "d1").await;
    for id in 1..=40u16 {
        c.send(publish("devices/d1/telemetry/n", "1", QoS::AtLeastOnce, id).into())
            .await;
    }
    for id in 1..=40u16 {
        match c.recv().await {
            Some(Packet::PubAck(a)) => {
                assert_eq!((a.packet_id, a.reason_code), (id, ReasonCode::Success))
            }
            other => panic!("expected PUBACK {id}, got {other:?}"),
        }
    }
    assert_eq!(rig.envelopes().await.len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_inbound_is_stored_exactly_once() {
    let rig = Rig::default().await;
    let mut c = Raw::device(rig.addr, V5, "d1").await;
    let p = publish("devices/d1/events/boot", "", QoS::ExactlyOnce, 7);
    c.send(p.clone().into()).await;
    assert!(
        matches!(c.recv().await, Some(Packet::PubRec(r)) if r.packet_id == 7 && r.reason_code == ReasonCode::Success)
    );
    // The client did not see the PUBREC and sends again: answered, not stored again.
    let mut dup = p;
    dup.dup = true;
    c.send(dup.into()).await;
    assert!(matches!(c.recv().await, Some(Packet::PubRec(r)) if r.packet_id == 7));
    c.send(PubRel::new(7).into()).await;
    assert!(
        matches!(c.recv().await, Some(Packet::PubComp(r)) if r.packet_id == 7 && r.reason_code == ReasonCode::Success)
    );
    c.send(PubRel::new(7).into()).await;
    assert!(
        matches!(c.recv().await, Some(Packet::PubComp(r)) if r.reason_code == ReasonCode::PacketIdentifierNotFound)
    );
    let envs = rig.envelopes().await;
    assert_eq!(envs.len(), 1);
    assert_eq!(envs[0].points[0].metric, "event.boot");
    assert_eq!(envs[0].points[0].value, Value::Bool(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_reason_codes() {
    let rig = Rig::default().await;
    let cases = [
        (V5, "d1", "d1", "wrong", ReasonCode::BadUserNameOrPassword),
        (V311, "d1", "d1", "wrong", ReasonCode::BadUserNameOrPassword),
        (V5, "d1", "d1", "tok-d2", ReasonCode::BadUserNameOrPassword),
        (
            V5,
            "d2",
            "d1",
            "tok-d1",
            ReasonCode::ClientIdentifierNotValid,
        ),
        (
            V5,
            "d10",
            "d1",
            "tok-d1",
            ReasonCode::ClientIdentifierNotValid,
        ),
        (
            V311,
            "d2",
            "d1",
            "tok-d1",
            ReasonCode::ClientIdentifierNotValid,
        ),
        // A device token is no application token.
        (
            V5,
            "d1",
            "app:dash",
            "tok-d1",
            ReasonCode::BadUserNameOrPassword,
        ),
        (V5, "d1", "d1", "disabled", ReasonCode::NotAuthorized),
        (V311, "d1", "d1", "ingest", ReasonCode::NotAuthorized),
    ];
    for (version, client, user, token, expected) in cases {
        let (mut raw, ack) =
            Raw::connect(rig.addr, connect_packet(version, client, user, token)).await;
        assert_eq!(
            ack.reason_code, expected,
            "{version} {client} {user} {token}"
        );
        assert!(!ack.session_present);
        assert_eq!(raw.expect_close().await, None);
    }
    // Bound client ids: the device id, or the device id, '/', a suffix.
    let (_ok, ack) =
        Raw::connect(rig.addr, connect_packet(V5, "d1/dashboard", "d1", "tok-d1")).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    // An empty client id gets one assigned.
    let (_ok, ack) = Raw::connect(rig.addr, connect_packet(V5, "", "d1", "tok-d1")).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    assert!(
        ack.properties
            .assigned_client_identifier
            .unwrap()
            .starts_with("d1/")
    );
    assert_eq!(ack.properties.receive_maximum, NonZeroU16::new(64));
    let mut c = connect_packet(V311, "", "d1", "tok-d1");
    c.clean_start = false;
    let (_r, ack) = Raw::connect(rig.addr, c).await;
    assert_eq!(ack.reason_code, ReasonCode::ClientIdentifierNotValid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packet_gets_disconnect_and_others_carry_on() {
    let rig = Rig::default().await;
    let mut good = Raw::device(rig.addr, V5, "d1").await;
    let mut bad = Raw::device(rig.addr, V5, "d2").await;
    // A PUBLISH with QoS 3: malformed.
    bad.send_bytes(&[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01])
        .await;
    assert_eq!(bad.expect_close().await, Some(ReasonCode::MalformedPacket));
    let mut bad311 = Raw::device(rig.addr, V311, "d3").await;
    bad311
        .send_bytes(&[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01])
        .await;
    assert_eq!(
        bad311.expect_close().await,
        None,
        "3.1.1 has no DISCONNECT from the server"
    );
    // Garbage before CONNECT: closed without a CONNACK.
    let mut junk = Raw::open(rig.addr, V5).await;
    junk.send_bytes(b"GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(junk.expect_close().await, None);
    good.send(publish("devices/d1/telemetry/t", "1", QoS::AtLeastOnce, 1).into())
        .await;
    assert!(
        matches!(good.recv().await, Some(Packet::PubAck(a)) if a.reason_code == ReasonCode::Success)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_device_closes_only_its_connections() {
    let rig = Rig::default().await;
    let mut revoked5 = Raw::device(rig.addr, V5, "d1").await;
    let mut revoked311 = Raw::device(rig.addr, V311, "d2").await;
    let mut bystander = Raw::device(rig.addr, V5, "d3").await;
    let mut other_tenant = Raw::connect(rig.addr, connect_packet(V5, "d1", "d1", "other-d1"))
        .await
        .0;
    assert_eq!(rig.server.disconnect_device("acme", "d1"), 1);
    assert_eq!(rig.server.disconnect_device("acme", "d2"), 1);
    assert_eq!(
        revoked5.expect_close().await,
        Some(ReasonCode::AdministrativeAction)
    );
    // 3.1.1 has no server DISCONNECT: the connection just closes.
    assert_eq!(revoked311.expect_close().await, None);
    assert_eq!(rig.server.disconnect_device("acme", "nobody"), 0);
    // The same device id in another tenant, and other devices, stay.
    for (raw, device) in [(&mut bystander, "d3"), (&mut other_tenant, "d1")] {
        let topic = format!("devices/{device}/telemetry/t");
        raw.send(publish(&topic, "1", QoS::AtLeastOnce, 1).into())
            .await;
        match raw.recv().await {
            Some(Packet::PubAck(a)) => assert_eq!(a.reason_code, ReasonCode::Success),
            other => panic!("expected a PUBACK, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_disconnects_the_old_connection() {
    let rig = Rig::default().await;
    let mut old = Raw::device(rig.addr, V5, "d1").await;
    let mut new = Raw::device(rig.addr, V5, "d1").await;
    assert_eq!(old.expect_close().await, Some(ReasonCode::SessionTakenOver));
    new.send(publish("devices/d1/telemetry/t", "2", QoS::AtLeastOnce, 1).into())
        .await;
    assert!(matches!(new.recv().await, Some(Packet::PubAck(_))));
    // 3.1.1: the old connection is closed.
    let mut old = Raw::device(rig.addr, V311, "d2").await;
    let _new = Raw::device(rig.addr, V311, "d2").await;
    assert_eq!(old.expect_close().await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_and_connect_timeouts_close_idle_sockets() {
    let rig = Rig::start(MqttConfig {
        connect_timeout_secs: 1,
        ..MqttConfig::default()
    })
    .await;
    let mut c = connect_packet(V5, "d1", "d1", "tok-d1");
    c.keep_alive = 1;
    let (mut raw, _) = Raw::connect(rig.addr, c).await;
    let started = std::time::Instant::now();
    assert_eq!(raw.expect_close().await, Some(ReasonCode::KeepAliveTimeout));
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "1.5 x keep alive, took {:?}",
        started.elapsed()
    );
    let mut silent = Raw::open(rig.addr, V5).await;
    assert_eq!(
        silent.expect_close().await,
        None,
        "no CONNECT within the connect timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_receive_maximum_is_respected() {
    let rig = Rig::default().await;
    let mut c = connect_packet(V5, "d1/sub", "d1", "tok-d1");
    c.properties.receive_maximum = NonZeroU16::new(2);
    let (mut sub, _) = Raw::connect(rig.addr, c).await;
    sub.send(subscribe(1, "devices/d1/jobs", QoS::AtLeastOnce))
        .await;
    assert_eq!(suback(&mut sub).await, vec![ReasonCode::GrantedQoS1]);
    let mut publisher = Raw::device(rig.addr, V5, "d1").await;
    for id in 1..=5u16 {
        publisher
            .send(publish("devices/d1/jobs", "job", QoS::AtLeastOnce, id).into())
            .await;
        assert!(
            matches!(publisher.recv().await, Some(Packet::PubAck(a)) if a.reason_code == ReasonCode::Success)
        );
    }
    let first = sub.drain_until_pong().await;
    assert_eq!(
        first.len(),
        2,
        "only the receive maximum is in flight: {first:?}"
    );
    let ids: Vec<u16> = first
        .iter()
        .map(|p| match p {
            Packet::Publish(p) => p.packet_id.unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    sub.send(PubAck::new(ids[0]).into()).await;
    let next = recv_publish(&mut sub).await;
    assert_eq!(next.qos, QoS::AtLeastOnce);
    assert!(sub.drain_until_pong().await.is_empty(), "window full again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_aliases_from_the_client() {
    let rig = Rig::default().await;
    let mut c = Raw::device(rig.addr, V5, "d1").await;
    let mut p = publish("devices/d1/telemetry/t", "1", QoS::AtLeastOnce, 1);
    p.properties.topic_alias = NonZeroU16::new(3);
    c.send(p.into()).await;
    assert!(
        matches!(c.recv().await, Some(Packet::PubAck(a)) if a.reason_code == ReasonCode::Success)
    );
    let mut p = publish("", "2", QoS::AtLeastOnce, 2);
    p.properties.topic_alias = NonZeroU16::new(3);
    c.send(p.into()).await;
    assert!(
        matches!(c.recv().await, Some(Packet::PubAck(a)) if a.reason_code == ReasonCode::Success)
    );
    let envs = rig.envelopes().await;
    assert_eq!(envs.len(), 2);
    assert_eq!(envs[1].points[0].metric, "t");
    assert_eq!(envs[1].points[0].value, Value::I64(2));
    // Above the advertised maximum: a protocol violation.
    let mut p = publish("devices/d1/x", "3", QoS::AtMostOnce, 0);
    p.properties.topic_alias = NonZeroU16::new(1000);
    c.send(p.into()).await;
    assert_eq!(c.expect_close().await, Some(ReasonCode::TopicAliasInvalid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_refusals() {
    let rig = Rig::default().await;
    let mut c = Raw::device(rig.addr, V5, "d1").await;
    c.send(publish("devices/d2/telemetry/t", "1", QoS::AtLeastOnce, 1).into())
        .await;
    assert!(
        matches!(c.recv().await, Some(Packet::PubAck(a)) if a.reason_code == ReasonCode::NotAuthorized)
    );
    c.send(publish("devices/d1/telemetry", "{not json", QoS::ExactlyOnce, 2).into())
        .await;
    assert!(
        matches!(c.recv().await, Some(Packet::PubRec(r)) if r.reason_code == ReasonCode::PayloadFormatInvalid)
    );
    c.send(
        Subscribe {
            packet_id: 3,
            properties: Default::default(),
            subscriptions: vec![
                Subscription::new("devices/+/telemetry", QoS::AtLeastOnce),
                Subscription::new("devices/d1/#", QoS::ExactlyOnce),
                Subscription::new("#", QoS::AtMostOnce),
            ],
        }
        .into(),
    )
    .await;
    assert_eq!(
        suback(&mut c).await,
        vec![
            ReasonCode::NotAuthorized,
            ReasonCode::GrantedQoS2,
            ReasonCode::NotAuthorized
        ]
    );
    assert!(rig.envelopes().await.is_empty());

    let mut old = Raw::device(rig.addr, V311, "d3").await;
    old.send(subscribe(1, "devices/d2/#", QoS::AtLeastOnce))
        .await;
    assert_eq!(
        suback(&mut old).await,
        vec![ReasonCode::UnspecifiedError],
        "0x80 on the wire"
    );
    old.send(publish("devices/d2/x", "1", QoS::AtLeastOnce, 2).into())
        .await;
    assert_eq!(old.expect_close().await, None, "3.1.1 is disconnected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated() {
    let rig = Rig::default().await;
    let mut acme = Raw::device(rig.addr, V5, "d1").await;
    acme.send(subscribe(1, "devices/d1/#", QoS::AtLeastOnce))
        .await;
    suback(&mut acme).await;
    // Same device id, other tenant.
    let (mut other, ack) = Raw::connect(rig.addr, connect_packet(V5, "d1", "d1", "other-d1")).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    let mut p = publish("devices/d1/state", "secret", QoS::AtLeastOnce, 1);
    p.retain = true;
    other.send(p.into()).await;
    assert!(
        matches!(other.recv().await, Some(Packet::PubAck(a)) if a.reason_code == ReasonCode::NoMatchingSubscribers),
        "the other tenant's publish reaches nobody"
    );
    assert!(acme.drain_until_pong().await.is_empty());
    let mut late = Raw::device(rig.addr, V5, "d1").await;
    late.send(subscribe(2, "devices/d1/#", QoS::AtLeastOnce))
        .await;
    suback(&mut late).await;
    assert!(
        late.drain_until_pong().await.is_empty(),
        "no retained message of the other tenant"
    );
    // Both sessions (one per tenant) stayed connected: no takeover across tenants.
    other.send(Packet::PingReq).await;
    assert!(matches!(other.recv().await, Some(Packet::PingResp)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_resumes_with_queued_messages() {
    let rig = Rig::default().await;
    let connect = || {
        let mut c = connect_packet(V5, "d1/worker", "d1", "tok-d1");
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(300);
        c
    };
    let (mut sub, ack) = Raw::connect(rig.addr, connect()).await;
    assert!(!ack.session_present);
    sub.send(subscribe(1, "devices/d1/commands/#", QoS::ExactlyOnce))
        .await;
    suback(&mut sub).await;
    sub.send(Disconnect::new(ReasonCode::NORMAL_DISCONNECTION).into())
        .await;
    assert_eq!(sub.expect_close().await, None);

    let mut publisher = Raw::device(rig.addr, V5, "d1").await;
    for (id, qos) in [
        (1, QoS::AtLeastOnce),
        (2, QoS::ExactlyOnce),
        (3, QoS::AtMostOnce),
    ] {
        publisher
            .send(publish("devices/d1/commands/go", "x", qos, id).into())
            .await;
    }
    assert!(
        matches!(publisher.recv().await, Some(Packet::PubAck(a)) if a.reason_code == ReasonCode::Success)
    );
    assert!(
        matches!(publisher.recv().await, Some(Packet::PubRec(r)) if r.reason_code == ReasonCode::Success)
    );

    let (mut sub, ack) = Raw::connect(rig.addr, connect()).await;
    assert!(ack.session_present);
    let a = recv_publish(&mut sub).await;
    let b = recv_publish(&mut sub).await;
    assert_eq!(
        (a.qos, b.qos),
        (QoS::AtLeastOnce, QoS::ExactlyOnce),
        "QoS 0 is not queued for offline sessions"
    );
    // Don't acknowledge: the next resume sends them again, DUP set.
    drop(sub);
    let (mut sub, ack) = Raw::connect(rig.addr, connect()).await;
    assert!(ack.session_present);
    let again = recv_publish(&mut sub).await;
    assert!(again.dup);
    assert_eq!(again.packet_id, a.packet_id);
    let b2 = recv_publish(&mut sub).await;
    // Finish the QoS 2 exchange.
    sub.send(PubAck::new(again.packet_id.unwrap()).into()).await;
    sub.send(PubRec::new(b2.packet_id.unwrap()).into()).await;
    assert!(
        matches!(sub.recv().await, Some(Packet::PubRel(r)) if Some(r.packet_id) == b2.packet_id)
    );
    sub.send(PubComp::new(b2.packet_id.unwrap()).into()).await;
    assert!(sub.drain_until_pong().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_published_on_abrupt_disconnect_only() {
    let rig = Rig::default().await;
    let mut watcher = Raw::device(rig.addr, V5, "d1").await;
    watcher
        .send(subscribe(1, "devices/d1/status", QoS::AtLeastOnce))
        .await;
    suback(&mut watcher).await;
    for (client, abrupt) in [("d1/a", false), ("d1/b", true)] {
        let mut c = connect_packet(V311, client, "d1", "tok-d1");
        c.will = Some(Will {
            topic: "devices/d1/status".into(),
            payload: Bytes::from_static(b"offline"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Default::default(),
        });
        let (mut raw, _) = Raw::connect(rig.addr, c).await;
        if abrupt {
            drop(raw);
        } else {
            raw.send(Disconnect::new(ReasonCode::NORMAL_DISCONNECTION).into())
                .await;
            assert_eq!(raw.expect_close().await, None);
        }
    }
    let will = recv_publish(&mut watcher).await;
    assert_eq!(&will.payload[..], b"offline");
    watcher
        .send(PubAck::new(will.packet_id.unwrap()).into())
        .await;
    assert!(
        watcher.drain_until_pong().await.is_empty(),
        "one will: the clean disconnect sent none"
    );
    // A will topic outside the device's topics is refused at CONNECT.
    let mut c = connect_packet(V5, "d1/c", "d1", "tok-d1");
    c.will = Some(Will {
        topic: "devices/d2/status".into(),
        payload: Bytes::new(),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
    });
    let (_raw, ack) = Raw::connect(rig.addr, c).await;
    assert_eq!(ack.reason_code, ReasonCode::NotAuthorized);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_delay_is_cancelled_by_a_resume() {
    let rig = Rig::default().await;
    let mut watcher = Raw::device(rig.addr, V5, "d1").await;
    watcher
        .send(subscribe(1, "devices/d1/status", QoS::AtMostOnce))
        .await;
    suback(&mut watcher).await;
    let connect = |delay: u32| {
        let mut c = connect_packet(V5, "d1/w", "d1", "tok-d1");
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(60);
        let mut will = Will {
            topic: "devices/d1/status".into(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Default::default(),
        };
        will.properties.will_delay_interval = Some(delay);
        c.will = Some(will);
        c
    };
    let (raw, _) = Raw::connect(rig.addr, connect(30)).await;
    drop(raw);
    // Resumed before the delay: no will.
    let (raw, ack) = Raw::connect(rig.addr, connect(1)).await;
    assert!(ack.session_present);
    drop(raw);
    // This time nobody resumes: the will comes after about one second.
    let started = std::time::Instant::now();
    let will = recv_publish(&mut watcher).await;
    assert_eq!(&will.payload[..], b"gone");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert!(
        watcher.drain_until_pong().await.is_empty(),
        "exactly one will"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_and_subscription_options() {
    let rig = Rig::default().await;
    let mut publisher = Raw::device(rig.addr, V5, "d1").await;
    let mut p = publish("devices/d1/config", "v1", QoS::AtLeastOnce, 1);
    p.retain = true;
    publisher.send(p.into()).await;
    publisher.recv().await;

    let mut sub = Raw::client(rig.addr, V5, "d1/s", "d1").await;
    sub.send(subscribe(1, "devices/d1/+", QoS::AtLeastOnce))
        .await;
    assert_eq!(suback(&mut sub).await, vec![ReasonCode::GrantedQoS1]);
    let r = recv_publish(&mut sub).await;
    assert!(r.retain);
    assert_eq!(&r.payload[..], b"v1");
    sub.send(PubAck::new(r.packet_id.unwrap()).into()).await;
    // Retain handling 1: only for a new subscription.
    let mut opts = SubscriptionOptions::with_qos(QoS::AtLeastOnce);
    opts.retain_handling = tributary_mqtt_codec::RetainHandling::SendAtNewSubscribe;
    sub.send(
        Subscribe {
            packet_id: 2,
            properties: Default::default(),
            subscriptions: vec![Subscription {
                filter: "devices/d1/+".into(),
                options: opts,
            }],
        }
        .into(),
    )
    .await;
    suback(&mut sub).await;
    assert!(sub.drain_until_pong().await.is_empty());
    // Live messages: retain flag cleared unless retain-as-published.
    let mut p = publish("devices/d1/config", "v2", QoS::AtMostOnce, 0);
    p.retain = true;
    publisher.send(p.into()).await;
    let live = recv_publish(&mut sub).await;
    assert!(!live.retain);
    // No local: a subscriber does not get its own messages.
    let mut opts = SubscriptionOptions::with_qos(QoS::AtMostOnce);
    opts.no_local = true;
    publisher
        .send(
            Subscribe {
                packet_id: 3,
                properties: Default::default(),
                subscriptions: vec![Subscription {
                    filter: "devices/d1/echo".into(),
                    options: opts,
                }],
            }
            .into(),
        )
        .await;
    suback(&mut publisher).await;
    publisher
        .send(publish("devices/d1/echo", "me", QoS::AtMostOnce, 0).into())
        .await;
    assert!(publisher.drain_until_pong().await.is_empty());
    // An empty retained message clears the topic.
    let mut p = publish("devices/d1/config", "", QoS::AtMostOnce, 0);
    p.retain = true;
    publisher.send(p.into()).await;
    publisher.drain_until_pong().await;
    let mut late = Raw::client(rig.addr, V5, "d1/late", "d1").await;
    late.send(subscribe(1, "devices/d1/#", QoS::AtMostOnce))
        .await;
    suback(&mut late).await;
    assert!(late.drain_until_pong().await.is_empty());
    // No local is the publisher's own option: other subscribers got "me",
    // and the empty retained message, like any other message.
    let others: Vec<Bytes> = sub
        .drain_until_pong()
        .await
        .into_iter()
        .map(|p| match p {
            Packet::Publish(p) => p.payload,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(others, vec![Bytes::from_static(b"me"), Bytes::new()]);
    // Unsubscribe reports what existed.
    sub.send(
        Unsubscribe {
            packet_id: 9,
            properties: Default::default(),
            filters: vec!["devices/d1/+".into(), "nope".into()],
        }
        .into(),
    )
    .await;
    match sub.recv().await {
        Some(Packet::UnsubAck(u)) => {
            assert_eq!(
                u.reason_codes,
                vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted]
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_splits_messages() {
    let rig = Rig::default().await;
    let mut workers = Vec::new();
    for name in ["d1/w1", "d1/w2"] {
        let mut w = Raw::client(rig.addr, V5, name, "d1").await;
        w.send(subscribe(1, "$share/g/devices/d1/jobs", QoS::AtMostOnce))
            .await;
        assert_eq!(suback(&mut w).await, vec![ReasonCode::Success]);
        workers.push(w);
    }
    let mut publisher = Raw::device(rig.addr, V5, "d1").await;
    for i in 0..10u16 {
        publisher
            .send(publish("devices/d1/jobs", "j", QoS::AtLeastOnce, i + 1).into())
            .await;
        publisher.recv().await;
    }
    let mut counts = Vec::new();
    for w in &mut workers {
        counts.push(w.drain_until_pong().await.len());
    }
    assert_eq!(counts, vec![5, 5], "round robin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_outbound_and_user_properties_pass_through() {
    let rig = Rig::default().await;
    let mut sub = Raw::client(rig.addr, V5, "d1/s", "d1").await;
    sub.send(
        Subscribe {
            packet_id: 1,
            properties: tributary_mqtt_codec::SubscribeProperties {
                subscription_identifier: NonZeroU32::new(42),
                user_properties: Vec::new(),
            },
            subscriptions: vec![Subscription::new("devices/d1/rpc/#", QoS::ExactlyOnce)],
        }
        .into(),
    )
    .await;
    assert_eq!(suback(&mut sub).await, vec![ReasonCode::GrantedQoS2]);
    let mut publisher = Raw::device(rig.addr, V5, "d1").await;
    let mut p = publish("devices/d1/rpc/req", "ping", QoS::ExactlyOnce, 5);
    p.properties.user_properties = vec![("k".into(), "v".into())];
    p.properties.response_topic = Some("devices/d1/rpc/resp".into());
    p.properties.correlation_data = Some(Bytes::from_static(b"c1"));
    p.properties.content_type = Some("text/plain".into());
    publisher.send(p.into()).await;
    assert!(
        matches!(publisher.recv().await, Some(Packet::PubRec(r)) if r.reason_code == ReasonCode::Success)
    );
    publisher.send(PubRel::new(5).into()).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubComp(_))));

    let got = recv_publish(&mut sub).await;
    assert_eq!(got.qos, QoS::ExactlyOnce);
    assert_eq!(
        got.properties.user_properties,
        vec![("k".into(), "v".into())]
    );
    assert_eq!(
        got.properties.response_topic.as_deref(),
        Some("devices/d1/rpc/resp")
    );
    assert_eq!(got.properties.correlation_data.as_deref(), Some(&b"c1"[..]));
    assert_eq!(got.properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(
        got.properties.subscription_identifiers,
        vec![NonZeroU32::new(42).unwrap()]
    );
    let id = got.packet_id.unwrap();
    sub.send(PubRec::new(id).into()).await;
    assert!(matches!(sub.recv().await, Some(Packet::PubRel(r)) if r.packet_id == id));
    sub.send(PubComp::new(id).into()).await;
    assert!(sub.drain_until_pong().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_rate_limit() {
    let config = MqttConfig {
        publish_rate_per_device: 0.5,
        publish_burst_per_device: 2,
        ..MqttConfig::default()
    };
    let rig = Rig::start(config).await;
    let mut c = Raw::device(rig.addr, V5, "d1").await;
    for id in 1..=3u16 {
        c.send(publish("devices/d1/telemetry/t", "1", QoS::AtLeastOnce, id).into())
            .await;
    }
    assert!(matches!(c.recv().await, Some(Packet::PubAck(a)) if a.packet_id == 1));
    assert!(matches!(c.recv().await, Some(Packet::PubAck(a)) if a.packet_id == 2));
    assert_eq!(c.expect_close().await, Some(ReasonCode::MessageRateTooHigh));
    // The bucket is per device: a new connection of d1 has no tokens left.
    let mut old = Raw::device(rig.addr, V311, "d1").await;
    old.send(publish("devices/d1/telemetry/t", "1", QoS::AtLeastOnce, 1).into())
        .await;
    assert_eq!(old.expect_close().await, None);
    assert_eq!(rig.envelopes().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_and_shutdown() {
    let mut rig = Rig::start(MqttConfig {
        max_connections: 1,
        ..MqttConfig::default()
    })
    .await;
    let mut first = Raw::device(rig.addr, V5, "d1").await;
    let (_r, ack) = Raw::connect(rig.addr, connect_packet(V5, "d2", "d2", "tok-d2")).await;
    assert_eq!(ack.reason_code, ReasonCode::QuotaExceeded);
    let (_r, ack) = Raw::connect(rig.addr, connect_packet(V311, "d2", "d2", "tok-d2")).await;
    assert_eq!(ack.reason_code, ReasonCode::ServerUnavailable);
    rig.stop().await;
    assert_eq!(
        first.expect_close().await,
        Some(ReasonCode::ServerShuttingDown)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_follows_the_devices_connections() {
    let rig = Rig::default().await;
    let a = Raw::device(rig.addr, V5, "d1").await;
    let (b, _) = Raw::connect(rig.addr, connect_packet(V5, "d1/b", "d1", "tok-d1")).await;
    let reports = || rig.presence.0.lock().unwrap().clone();
    wait_for("online report", || !reports().is_empty()).await;
    drop(a);
    drop(b);
    wait_for("offline report", || reports().len() == 2).await;
    assert_eq!(
        reports(),
        vec![
            ("acme".into(), "d1".into(), true),
            ("acme".into(), "d1".into(), false)
        ],
        "one online when the first connection opens, one offline when the last closes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reach_the_device_and_return_its_answer() {
    let rig = Rig::default().await;
    let err = rig
        .server
        .send_command("acme", "d1", "reboot", Bytes::new(), Duration::from_secs(1))
        .await;
    assert!(
        matches!(err, Err(PublishError::NoSubscribers(_))),
        "{err:?}"
    );

    let mut device = Raw::device(rig.addr, V5, "d1").await;
    // `+`, not `#`: the device would otherwise get its own responses back.
    device
        .send(subscribe(1, "devices/d1/commands/+", QoS::AtLeastOnce))
        .await;
    assert_eq!(suback(&mut device).await, vec![ReasonCode::GrantedQoS1]);
    let server = rig.server.clone();
    let call = tokio::spawn(async move {
        server
            .send_command(
                "acme",
                "d1",
                "reboot",
                Bytes::from_static(b"now"),
                Duration::from_secs(10),
            )
            .await
    });
    let cmd = recv_publish(&mut device).await;
    assert_eq!(cmd.topic, "devices/d1/commands/reboot");
    assert_eq!(&cmd.payload[..], b"now");
    device
        .send(PubAck::new(cmd.packet_id.unwrap()).into())
        .await;
    let mut answer = publish(
        "devices/d1/commands/reboot/response",
        "ok",
        QoS::AtLeastOnce,
        1,
    );
    answer.properties.correlation_data = cmd.properties.correlation_data.clone();
    assert_eq!(
        cmd.properties.response_topic.as_deref(),
        Some("devices/d1/commands/reboot/response")
    );
    device.send(answer.into()).await;
    assert!(
        matches!(device.recv().await, Some(Packet::PubAck(a)) if a.reason_code == ReasonCode::Success)
    );
    let reply = call.await.unwrap().unwrap();
    assert_eq!(&reply.payload[..], b"ok");

    let timeout = rig
        .server
        .send_command(
            "acme",
            "d1",
            "slow",
            Bytes::new(),
            Duration::from_millis(200),
        )
        .await;
    assert_eq!(
        timeout,
        Err(PublishError::Timeout(Duration::from_millis(200)))
    );
    let n = rig
        .server
        .publish("acme", Message::new("devices/d1/commands/notify", "hi"))
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_reaches_subscribers_once_durable_and_metrics_count_it() {
    let rig = Rig::default().await;
    let mut dashboard = Raw::client(rig.addr, V5, "d1/dash", "d1").await;
    dashboard
        .send(subscribe(1, "devices/d1/telemetry/#", QoS::AtMostOnce))
        .await;
    suback(&mut dashboard).await;
    let mut device = Raw::device(rig.addr, V311, "d1").await;
    device
        .send(publish("devices/d1/telemetry/rpm", "900", QoS::AtLeastOnce, 1).into())
        .await;
    assert!(matches!(device.recv().await, Some(Packet::PubAck(_))));
    let seen = recv_publish(&mut dashboard).await;
    assert_eq!(
        (seen.topic.as_str(), &seen.payload[..]),
        ("devices/d1/telemetry/rpm", &b"900"[..])
    );
    assert_eq!(rig.envelopes().await.len(), 1);
    device
        .send(publish("devices/d2/x", "no", QoS::AtLeastOnce, 2).into())
        .await;
    assert_eq!(device.expect_close().await, None);

    for line in [
        "tributary_mqtt_connections 1",
        "tributary_mqtt_connections_accepted_total 2",
        "tributary_mqtt_publishes_acked_total 1",
        "tributary_mqtt_publishes_rejected_total{reason=\"not_authorized\"} 1",
        "tributary_mqtt_packets_received_total{type=\"PUBLISH\"} 2",
        "tributary_mqtt_messages_delivered_total 1",
        "tributary_mqtt_sessions 1",
    ] {
        // The closed connection is counted once its task has finished.
        wait_for(line, || rig.metrics_text().lines().any(|l| l == line)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_one_credential_closes_only_the_connections_that_used_it() {
    // A token rotation: the device runs a connection on its old token and
    // one on its new; revoking the old one leaves the new one.
    let rig = Rig::default().await;
    let (mut old, ack) = Raw::connect(rig.addr, connect_packet(V5, "d1", "d1", "tok-d1")).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    let (mut rotated, ack) =
        Raw::connect(rig.addr, connect_packet(V5, "d1/b", "d1", "tok2-d1")).await;
    assert_eq!(ack.reason_code, ReasonCode::Success, "{ack:?}");
    assert_eq!(
        rig.server
            .disconnect_device_credential("acme", "d1", "cred-tok-d1"),
        1
    );
    assert_eq!(
        old.expect_close().await,
        Some(ReasonCode::AdministrativeAction)
    );
    rotated
        .send(publish("devices/d1/telemetry/t", "1", QoS::AtLeastOnce, 1).into())
        .await;
    match rotated.recv().await {
        Some(Packet::PubAck(a)) => assert_eq!(a.reason_code, ReasonCode::Success),
        other => panic!("the rotated connection stays, and publishes: {other:?}"),
    }
    assert_eq!(
        rig.server
            .disconnect_device_credential("acme", "d1", "cred-nothing"),
        0
    );
    assert_eq!(
        rig.server
            .disconnect_device_credential("acme", "d1", "cred-tok2-d1"),
        1
    );
}
