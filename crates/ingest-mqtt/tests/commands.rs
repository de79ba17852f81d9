//! Operator commands through the server's `CommandSink`, against a raw
//! codec device, and device events recorded as events.

mod common;

use std::time::{Duration, Instant};

use common::{Raw, Rig, connect_packet};
use tributary_core::Value;
use tributary_core::commands::{Command, CommandError, CommandOutcome, CommandSink};
use tributary_core::envelope::Kind;
use tributary_mqtt_codec::{
    Disconnect, Packet, ProtocolVersion, PubAck, Publish, QoS, ReasonCode, Subscribe, Subscription,
};

use ProtocolVersion::{V5, V311};

fn command(name: &str, payload: &str, timeout: Duration, ttl: Duration) -> Command {
    Command {
        tenant: "acme".into(),
        device: "d1".into(),
        name: name.into(),
        payload: payload.as_bytes().to_vec(),
        content_type: "application/json".into(),
        timeout,
        ttl,
    }
}

async fn send(rig: &Rig, c: Command) -> Result<CommandOutcome, CommandError> {
    CommandSink::send_command(&rig.server, c).await
}

async fn subscribe_commands(raw: &mut Raw) {
    raw.send(
        Subscribe {
            packet_id: 1,
            properties: Default::default(),
            subscriptions: vec![Subscription::new("devices/d1/commands/+", QoS::AtLeastOnce)],
        }
        .into(),
    )
    .await;
    match raw.recv().await {
        Some(Packet::SubAck(s)) => assert_eq!(s.reason_codes, vec![ReasonCode::GrantedQoS1]),
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

async fn recv_publish(raw: &mut Raw) -> Publish {
    match raw.recv().await {
        Some(Packet::Publish(p)) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

/// Acknowledges a command and answers it on its response topic, echoing the
/// correlation data.
async fn answer(raw: &mut Raw, cmd: &Publish, payload: &'static str, content_type: &str) {
    raw.send(PubAck::new(cmd.packet_id.expect("QoS 1")).into())
        .await;
    let mut reply = Publish::new(
        cmd.properties
            .response_topic
            .clone()
            .expect("a response topic"),
        payload,
    );
    reply.properties.correlation_data = cmd.properties.correlation_data.clone();
    reply.properties.content_type = Some(content_type.into());
    raw.send(reply.into()).await;
}

fn persistent(client_id: &str) -> tributary_mqtt_codec::Connect {
    let mut c = connect_packet(V5, client_id, "d1", "tok-d1");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(600);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_not_subscribed_and_replied() {
    let rig = Rig::default().await;
    let timeout = Duration::from_secs(10);
    let outcome = send(&rig, command("reboot", "{}", timeout, timeout)).await;
    assert_eq!(outcome, Ok(CommandOutcome::Offline));

    let mut device = Raw::device(rig.addr, V5, "d1").await;
    let outcome = send(&rig, command("reboot", "{}", timeout, timeout)).await;
    assert_eq!(
        outcome,
        Ok(CommandOutcome::NotSubscribed),
        "connected without a subscription to its command topic"
    );

    subscribe_commands(&mut device).await;
    let server = rig.server.clone();
    let call = tokio::spawn(async move {
        CommandSink::send_command(
            &server,
            command(
                "set-rate",
                r#"{"hz": 5}"#,
                timeout,
                Duration::from_secs(3600),
            ),
        )
        .await
    });
    let cmd = recv_publish(&mut device).await;
    assert_eq!(cmd.topic, "devices/d1/commands/set-rate");
    assert_eq!(&cmd.payload[..], br#"{"hz": 5}"#);
    assert_eq!(cmd.qos, QoS::AtLeastOnce);
    assert_eq!(
        cmd.properties.content_type.as_deref(),
        Some("application/json")
    );
    assert_eq!(
        cmd.properties.response_topic.as_deref(),
        Some("devices/d1/commands/set-rate/response")
    );
    let expiry = cmd.properties.message_expiry_interval.expect("an expiry");
    assert!(
        (3590..=3600).contains(&expiry),
        "the expiry is the TTL: {expiry}"
    );
    answer(&mut device, &cmd, r#"{"ok": true}"#, "application/json").await;
    let Ok(CommandOutcome::Replied(reply)) = call.await.unwrap() else {
        panic!("expected a reply");
    };
    assert_eq!(reply.payload, br#"{"ok": true}"#);
    assert_eq!(reply.content_type, "application/json");
    assert!(reply.latency > Duration::ZERO && reply.latency < timeout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_command_times_out_on_time() {
    let rig = Rig::default().await;
    let mut device = Raw::device(rig.addr, V311, "d1").await;
    subscribe_commands(&mut device).await;
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let outcome = send(&rig, command("slow", "", timeout, timeout)).await;
    let took = started.elapsed();
    assert_eq!(outcome, Ok(CommandOutcome::Timeout));
    assert!(
        took >= timeout && took < timeout + Duration::from_secs(2),
        "took {took:?}"
    );
    // The device did get it.
    assert_eq!(
        recv_publish(&mut device).await.topic,
        "devices/d1/commands/slow"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_persistent_session_queues_the_command_until_its_ttl() {
    let rig = Rig::default().await;
    let (mut device, _) = Raw::connect(rig.addr, persistent("d1")).await;
    subscribe_commands(&mut device).await;
    device
        .send(Disconnect::new(ReasonCode::NORMAL_DISCONNECTION).into())
        .await;
    assert_eq!(device.expect_close().await, None);
    // The client sees the close before the server has parked the session:
    // wait until the server has seen the device go.
    common::wait_for("the device offline", || {
        rig.presence.0.lock().unwrap().last().is_some_and(|r| !r.2)
    })
    .await;

    let ttl = Duration::from_secs(120);
    let outcome = send(
        &rig,
        command("update", "fw-2", Duration::from_millis(200), ttl),
    )
    .await;
    assert_eq!(outcome, Ok(CommandOutcome::Queued { ttl }));

    let (mut device, ack) = Raw::connect(rig.addr, persistent("d1")).await;
    assert!(ack.session_present);
    let cmd = recv_publish(&mut device).await;
    assert_eq!(cmd.topic, "devices/d1/commands/update");
    assert_eq!(&cmd.payload[..], b"fw-2");
    let expiry = cmd.properties.message_expiry_interval.expect("an expiry");
    assert!(
        (100..=120).contains(&expiry),
        "the remaining TTL counts down: {expiry}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_returns_in_time_answers_its_queued_command() {
    let rig = Rig::default().await;
    let (mut device, _) = Raw::connect(rig.addr, persistent("d1/agent")).await;
    subscribe_commands(&mut device).await;
    drop(device);
    // Wait until the server has seen the device go.
    common::wait_for("the device offline", || {
        rig.presence.0.lock().unwrap().last().is_some_and(|r| !r.2)
    })
    .await;

    let server = rig.server.clone();
    let call = tokio::spawn(async move {
        CommandSink::send_command(
            &server,
            command("ping", "", Duration::from_secs(10), Duration::from_secs(60)),
        )
        .await
    });
    let (mut device, ack) = Raw::connect(rig.addr, persistent("d1/agent")).await;
    assert!(ack.session_present);
    let cmd = recv_publish(&mut device).await;
    answer(&mut device, &cmd, "pong", "text/plain").await;
    let Ok(CommandOutcome::Replied(reply)) = call.await.unwrap() else {
        panic!("expected a reply");
    };
    assert_eq!(reply.payload, b"pong");
    assert_eq!(reply.content_type, "text/plain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_commands_are_refused() {
    let rig = Rig::default().await;
    let t = Duration::from_secs(1);
    for bad in [
        command("a/b", "", t, t),
        command("#", "", t, t),
        Command {
            device: "d/1".into(),
            ..command("x", "", t, t)
        },
        Command {
            content_type: "text/plain\n".into(),
            ..command("x", "", t, t)
        },
        Command {
            payload: vec![0; 2 * 1024 * 1024],
            ..command("x", "", t, t)
        },
    ] {
        let what = format!("{bad:?}").chars().take(120).collect::<String>();
        assert!(
            matches!(send(&rig, bad).await, Err(CommandError::Invalid(_))),
            "{what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_recorded_as_events_and_telemetry_as_telemetry() {
    let rig = Rig::default().await;
    let mut device = Raw::device(rig.addr, V5, "d1").await;
    for (id, topic, payload) in [
        (1, "devices/d1/events/door_open", r#"{"door": "rear"}"#),
        (2, "devices/d1/telemetry/temp", "21.5"),
        (3, "devices/d1/events/boot", ""),
    ] {
        let mut p = Publish::new(topic, payload);
        p.qos = QoS::AtLeastOnce;
        p.packet_id = Some(id);
        device.send(p.into()).await;
        assert!(
            matches!(device.recv().await, Some(Packet::PubAck(a)) if a.reason_code == ReasonCode::Success)
        );
    }
    let envs = rig.envelopes().await;
    let seen: Vec<_> = envs
        .iter()
        .map(|e| {
            (
                e.kind,
                e.points[0].metric.as_str(),
                e.points[0].value.clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (
                Kind::Event,
                "event.door_open",
                Value::Str(r#"{"door": "rear"}"#.into())
            ),
            (Kind::Telemetry, "temp", Value::F64(21.5)),
            (Kind::Event, "event.boot", Value::Bool(true)),
        ]
    );
}
