//! Interop with rumqttc, a third-party client, over MQTT 3.1.1 and 5.0.

mod common;

use std::time::Duration;

use common::{Rig, WAIT};
use tributary_core::Value;

/// Polls an event loop until `pick` returns something, or panics after [`WAIT`].
macro_rules! next_event {
    ($eventloop:expr, $pick:expr) => {{
        tokio::time::timeout(WAIT, async {
            loop {
                let event = $eventloop.poll().await.expect("event loop");
                if let Some(found) = $pick(event) {
                    break found;
                }
            }
        })
        .await
        .expect("timed out waiting for an event")
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v311_qos1_telemetry_is_durable_when_acked() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let rig = Rig::default().await;
    let mut opts = MqttOptions::new("d1", "127.0.0.1", rig.addr.port());
    opts.set_credentials("d1", "tok-d1")
        .set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    next_event!(eventloop, |e| matches!(
        e,
        Event::Incoming(Packet::ConnAck(_))
    )
    .then_some(()));
    client
        .publish(
            "devices/d1/telemetry",
            QoS::AtLeastOnce,
            false,
            r#"{"values": {"rpm": 1200}}"#,
        )
        .await
        .unwrap();
    next_event!(eventloop, |e| matches!(
        e,
        Event::Incoming(Packet::PubAck(_))
    )
    .then_some(()));
    let envs = rig.envelopes().await;
    assert_eq!(envs.len(), 1, "durable when PUBACK arrives");
    assert_eq!(envs[0].points[0].value, Value::I64(1200));

    // QoS 2 round trip through a subscription of the same client.
    client
        .subscribe("devices/d1/echo", QoS::ExactlyOnce)
        .await
        .unwrap();
    next_event!(eventloop, |e| matches!(
        e,
        Event::Incoming(Packet::SubAck(_))
    )
    .then_some(()));
    client
        .publish("devices/d1/echo", QoS::ExactlyOnce, false, "hello")
        .await
        .unwrap();
    let got = next_event!(eventloop, |e| match e {
        Event::Incoming(Packet::Publish(p)) => Some(p),
        _ => None,
    });
    assert_eq!(
        (&got.payload[..], got.qos),
        (&b"hello"[..], QoS::ExactlyOnce)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_request_response_with_properties() {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::{Packet, Publish, PublishProperties};
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let rig = Rig::default().await;
    // Each client's event loop runs in its own task and forwards what it
    // receives: a client only sends while its loop is polled.
    let connect = |id: &str| {
        let mut opts = MqttOptions::new(id, "127.0.0.1", rig.addr.port());
        opts.set_credentials("d1", "tok-d1")
            .set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(opts, 16);
        let (tx, rx) = tokio::sync::mpsc::channel::<Packet>(16);
        tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                if let Event::Incoming(p) = event
                    && tx.send(p).await.is_err()
                {
                    return;
                }
            }
        });
        (client, rx)
    };
    async fn next<T>(
        rx: &mut tokio::sync::mpsc::Receiver<Packet>,
        pick: impl Fn(Packet) -> Option<T>,
    ) -> T {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(found) = pick(rx.recv().await.expect("event loop ended")) {
                    return found;
                }
            }
        })
        .await
        .expect("timed out waiting for a packet")
    }
    let publish = |p: Packet| match p {
        Packet::Publish(p) => Some(p),
        _ => None,
    };
    let (responder, mut responder_rx) = connect("d1/responder");
    responder
        .subscribe("devices/d1/rpc/request", QoS::AtLeastOnce)
        .await
        .unwrap();
    next(&mut responder_rx, |p| {
        matches!(p, Packet::SubAck(_)).then_some(())
    })
    .await;
    let (requester, mut requester_rx) = connect("d1/requester");
    requester
        .subscribe("devices/d1/rpc/reply", QoS::AtLeastOnce)
        .await
        .unwrap();
    next(&mut requester_rx, |p| {
        matches!(p, Packet::SubAck(_)).then_some(())
    })
    .await;

    let props = PublishProperties {
        response_topic: Some("devices/d1/rpc/reply".into()),
        correlation_data: Some("42".into()),
        user_properties: vec![("origin".into(), "test".into())],
        ..Default::default()
    };
    requester
        .publish_with_properties(
            "devices/d1/rpc/request",
            QoS::AtLeastOnce,
            false,
            "ping",
            props,
        )
        .await
        .unwrap();
    let request: Publish = next(&mut responder_rx, publish).await;
    assert_eq!(&request.payload[..], b"ping");
    let props = request.properties.expect("properties pass through");
    assert_eq!(
        props.user_properties,
        vec![("origin".to_string(), "test".to_string())]
    );
    let reply_props = PublishProperties {
        correlation_data: props.correlation_data.clone(),
        ..Default::default()
    };
    let reply_topic = props.response_topic.expect("response topic");
    responder
        .publish_with_properties(reply_topic, QoS::AtLeastOnce, false, "pong", reply_props)
        .await
        .unwrap();
    let reply: Publish = next(&mut requester_rx, publish).await;
    assert_eq!(&reply.payload[..], b"pong");
    assert_eq!(
        reply.properties.and_then(|p| p.correlation_data).as_deref(),
        Some(&b"42"[..])
    );
}
