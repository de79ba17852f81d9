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
    eventually(
        Duration::from_secs(10),
        "the disconnect counted",
        || async {
            let name = "tributary_mqtt_disconnects_total{reason=\"receive_maximum\"}";
            (metric(&s, name).await == Some(1.0)).then_some(())
        },
    )
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_command_topics_go_by_alias_to_clients_that_allow_aliases() {
    use tributary_mqtt_codec::{Subscribe, Subscription};
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start_with_env(dir.path(), &[], &[]);
    let mut tokens = std::collections::HashMap::new();
    for device in ["al-0", "al-1"] {
        tokens.insert(device, create_device_in(&s, "default", device).await);
    }
    let subscribe = async |device: &str, max: Option<u16>| {
        let token = tokens[device].clone();
        let mut c = Connect::new(ProtocolVersion::V5, format!("{device}/cmd"));
        c.username = Some(device.into());
        c.password = Some(token.as_bytes().to_vec().into());
        c.keep_alive = 60;
        c.properties.topic_alias_maximum = max;
        let (mut m, _) = RawMqtt::connect_with(s.mqtt, c).await;
        m.send(
            &Subscribe {
                packet_id: 1,
                properties: Default::default(),
                subscriptions: vec![Subscription::new(
                    format!("devices/{device}/commands/+"),
                    QoS::AtMostOnce,
                )],
            }
            .into(),
        )
        .await;
        assert!(matches!(
            m.recv(Duration::from_secs(10)).await,
            Some(Packet::SubAck(_))
        ));
        m
    };
    let next_publish = async |m: &mut RawMqtt| -> (Publish, usize) {
        loop {
            match m.recv(Duration::from_secs(10)).await {
                Some(Packet::Publish(p)) => {
                    let len = Packet::Publish(p.clone())
                        .encoded_len(ProtocolVersion::V5)
                        .unwrap();
                    return (p, len);
                }
                Some(_) => continue,
                None => panic!("no PUBLISH within 10 s"),
            }
        }
    };
    // A client that allows 10 aliases: the topic in full, then in full
    // with alias 1, then alias 1 alone.
    let mut m = subscribe("al-1", Some(10)).await;
    let topic = "devices/al-1/commands/blink";
    let mut sizes = Vec::new();
    for want in [(topic, None), (topic, Some(1)), ("", Some(1))] {
        send_blink(&s, "al-1", 500).await;
        let (p, len) = next_publish(&mut m).await;
        assert_eq!(
            (p.topic.as_str(), p.properties.topic_alias.map(|a| a.get())),
            want
        );
        assert_eq!(p.payload.as_ref(), b"twice");
        sizes.push(len);
    }
    // The saving on the wire: the topic, less its 3-byte alias property.
    assert_eq!(sizes[0] - sizes[2], topic.len() - 3, "{sizes:?}");
    // After a reconnect the topic goes in full again (new connection, no
    // aliases yet).
    drop(m);
    let mut m = subscribe("al-1", Some(10)).await;
    send_blink(&s, "al-1", 500).await;
    let (p, _) = next_publish(&mut m).await;
    assert_eq!((p.topic.as_str(), p.properties.topic_alias), (topic, None));
    // A client that allows none never gets one.
    let mut none = subscribe("al-0", None).await;
    for _ in 0..3 {
        send_blink(&s, "al-0", 500).await;
        let (p, _) = next_publish(&mut none).await;
        assert_eq!(p.properties.topic_alias, None);
        assert_eq!(p.topic, "devices/al-0/commands/blink");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_decodes_the_aliases_and_mosquitto_sub_gets_none() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start_with_env(dir.path(), &[], &[]);
    // rumqttc (crates.io) announces a Topic Alias Maximum of 10 and
    // decodes the aliased PUBLISHes. (rumqttc 0.25 resolves an alias in its
    // own state but hands the application the packet as received, empty
    // topic and all; so this loop resolves them as an application must,
    // from the Topic Alias property rumqttc decoded.)
    let token = create_device_in(&s, "default", "al-3").await;
    let mut opts =
        rumqttc::v5::MqttOptions::new("al-3/cmd", s.mqtt.ip().to_string(), s.mqtt.port());
    opts.set_credentials("al-3", token.as_str())
        .set_keep_alive(Duration::from_secs(30))
        .set_topic_alias_max(Some(10));
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(opts, 16);
    let (got_tx, mut got_rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        use rumqttc::v5::Event;
        use rumqttc::v5::mqttbytes::v5::Packet as P;
        let mut aliases = std::collections::HashMap::new();
        while let Ok(event) = eventloop.poll().await {
            let note = match event {
                Event::Incoming(P::SubAck(_)) => "subscribed".to_owned(),
                Event::Incoming(P::Publish(p)) => {
                    let alias = p.properties.as_ref().and_then(|pr| pr.topic_alias);
                    let topic = match (p.topic.is_empty(), alias) {
                        (false, Some(a)) => {
                            aliases.insert(a, p.topic.clone());
                            format!("{} (alias {a} set)", String::from_utf8_lossy(&p.topic))
                        }
                        (true, Some(a)) => format!(
                            "{} (by alias {a})",
                            String::from_utf8_lossy(aliases.get(&a).map_or(&b""[..], |t| t))
                        ),
                        _ => String::from_utf8_lossy(&p.topic).into_owned(),
                    };
                    format!("{topic} {}", String::from_utf8_lossy(&p.payload))
                }
                _ => continue,
            };
            if got_tx.send(note).await.is_err() {
                return;
            }
        }
    });
    client
        .subscribe(
            "devices/al-3/commands/+",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    let next = async |rx: &mut tokio::sync::mpsc::Receiver<String>| {
        tokio::time::timeout(Duration::from_secs(15), rx.recv())
            .await
            .expect("within 15 s")
            .expect("the event loop ended")
    };
    assert_eq!(next(&mut got_rx).await, "subscribed");
    for want in [
        "devices/al-3/commands/blink twice",
        "devices/al-3/commands/blink (alias 1 set) twice",
        "devices/al-3/commands/blink (by alias 1) twice",
    ] {
        send_blink(&s, "al-3", 500).await;
        assert_eq!(next(&mut got_rx).await, want);
    }

    // mosquitto_sub (libmosquitto 2.0) announces no Topic Alias Maximum
    // (and could not read an empty topic if it did): it gets every topic in
    // full.
    let token = create_device_in(&s, "default", "al-2").await;
    let sub = tokio::process::Command::new("stdbuf")
        .args(["-o0", "mosquitto_sub"])
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &s.mqtt.port().to_string(),
            "-V",
            "mqttv5",
        ])
        .args([
            "-i", "al-2/cmd", "-u", "al-2", "-P", &token, "-q", "1", "-v", "-C", "4",
        ])
        .args(["-t", "devices/al-2/commands/+"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run mosquitto_sub (apt install mosquitto-clients)");
    eventually(
        Duration::from_secs(20),
        "mosquitto_sub subscribed",
        || async {
            let status: serde_json::Value = http_client()
                .post(s.api_url("/devices/al-2/commands"))
                .bearer_auth(&s.admin_token)
                .json(&serde_json::json!({"name": "probe", "payload": "p", "timeout_ms": 100}))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (status["status"] != "not_subscribed" && status["status"] != "offline").then_some(())
        },
    )
    .await;
    for _ in 0..3 {
        send_blink(&s, "al-2", 500).await;
    }
    let out = tokio::time::timeout(Duration::from_secs(20), sub.wait_with_output())
        .await
        .expect("mosquitto_sub got its 4 messages within 20 s")
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "devices/al-2/commands/probe p",
            "devices/al-2/commands/blink twice",
            "devices/al-2/commands/blink twice",
            "devices/al-2/commands/blink twice",
        ],
        "{text}"
    );
}
