//! MQTT over WebSocket at `/mqtt`: a tungstenite client for the upgrade
//! rules and packets split across messages, and Eclipse Paho (Python,
//! `transport="websockets"`) as an independent client.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;

use bytes::{Bytes, BytesMut};
use common::{Rig, WAIT, connect_packet};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{WebSocketStream, client_async};
use tributary_core::Value;
use tributary_mqtt_codec::{Packet, ProtocolVersion, Publish, QoS, ReasonCode, decode, encode};

/// Starts a WebSocket listener on the rig's server, returns its address.
async fn listen_ws(rig: &Rig) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = rig.server.clone();
    tokio::spawn(async move {
        server
            .serve_ws(listener, std::future::pending())
            .await
            .unwrap();
    });
    addr
}

/// Upgrades at `path` offering `protocol` (if any).
async fn upgrade(
    addr: SocketAddr,
    path: &str,
    protocol: Option<&str>,
) -> Result<WebSocketStream<TcpStream>, tokio_tungstenite::tungstenite::Error> {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some(p) = protocol {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_str(p).unwrap());
    }
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (ws, response) = tokio::time::timeout(WAIT, client_async(request, tcp))
        .await
        .expect("upgrade finishes")?;
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("mqtt")
    );
    Ok(ws)
}

/// The next MQTT packet from the WebSocket.
async fn recv(ws: &mut WebSocketStream<TcpStream>, buf: &mut BytesMut) -> Option<Packet> {
    let read = async {
        loop {
            if let Some(p) = decode(buf, Some(ProtocolVersion::V5), usize::MAX).unwrap() {
                return Some(p);
            }
            match ws.next().await? {
                Ok(Message::Binary(data)) => buf.extend_from_slice(&data),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(WAIT, read).await.expect("a packet")
}

fn bytes_of(packet: Packet) -> Bytes {
    let mut out = BytesMut::new();
    encode(&packet, ProtocolVersion::V5, &mut out).unwrap();
    out.freeze()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_websocket_with_packets_split_and_merged_across_messages() {
    let rig = Rig::default().await;
    let addr = listen_ws(&rig).await;
    let mut ws = upgrade(addr, "/mqtt", Some("mqtt")).await.expect("upgrade");
    let mut buf = BytesMut::new();

    // CONNECT split over three messages.
    let connect = bytes_of(connect_packet(ProtocolVersion::V5, "d1", "d1", "tok-d1").into());
    for chunk in [&connect[..1], &connect[1..5], &connect[5..]] {
        ws.send(Message::Binary(Bytes::copy_from_slice(chunk)))
            .await
            .unwrap();
    }
    match recv(&mut ws, &mut buf).await {
        Some(Packet::ConnAck(a)) => assert_eq!(a.reason_code, ReasonCode::Success),
        other => panic!("expected CONNACK, got {other:?}"),
    }

    // Two QoS 1 telemetry PUBLISHes in one message: two PUBACKs.
    let mut both = BytesMut::new();
    for (id, value) in [(1u16, "1.5"), (2, "2.5")] {
        let mut p = Publish::new("devices/d1/telemetry/temp", value);
        p.qos = QoS::AtLeastOnce;
        p.packet_id = Some(id);
        both.extend_from_slice(&bytes_of(p.into()));
    }
    ws.send(Message::Binary(both.freeze())).await.unwrap();
    for id in [1, 2] {
        match recv(&mut ws, &mut buf).await {
            Some(Packet::PubAck(a)) => {
                assert_eq!((a.packet_id, a.reason_code), (id, ReasonCode::Success));
            }
            other => panic!("expected PUBACK {id}, got {other:?}"),
        }
    }
    let envs = rig.envelopes().await;
    let values: Vec<_> = envs.iter().map(|e| e.points[0].value.clone()).collect();
    assert_eq!(values, [Value::F64(1.5), Value::F64(2.5)]);

    // A text message is a protocol error: the connection closes.
    ws.send(Message::Text("hello".into())).await.unwrap();
    assert!(recv(&mut ws, &mut buf).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_need_the_mqtt_path_and_subprotocol() {
    let rig = Rig::default().await;
    let addr = listen_ws(&rig).await;
    for (path, protocol, status) in [
        ("/other", Some("mqtt"), 404),
        ("/mqtt", None, 400),
        ("/mqtt", Some("chat"), 400),
    ] {
        match upgrade(addr, path, protocol).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), status, "{path} {protocol:?}");
            }
            Err(other) => panic!("{path} {protocol:?}: unexpected error {other}"),
            Ok(_) => panic!("{path} {protocol:?}: upgrade accepted"),
        }
    }
    // The client's list may name several protocols.
    upgrade(addr, "/mqtt", Some("wamp, mqtt"))
        .await
        .expect("mqtt among others");
}

/// Whether paho may run; panics when it is missing and skipping was not
/// asked for (`TRIBUTARY_SKIP_PAHO=1`).
fn paho_available() -> bool {
    let found = std::process::Command::new("python3")
        .args(["-c", "import paho.mqtt"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    if std::env::var("TRIBUTARY_SKIP_PAHO").as_deref() == Ok("1") {
        eprintln!("SKIPPED: paho WebSocket interop (python3 with paho-mqtt not found)");
        return false;
    }
    panic!(
        "python3 with paho-mqtt not found: `pip install paho-mqtt` or set TRIBUTARY_SKIP_PAHO=1"
    );
}

/// Paho over WebSocket, 3.1.1 and 5.0: QoS 1 telemetry, then a subscription
/// that receives a message the client published itself.
const PAHO_WS: &str = r#"
import sys, threading
import paho.mqtt.client as mqtt

port = int(sys.argv[1])
for proto, name in ((mqtt.MQTTv311, "v311"), (mqtt.MQTTv5, "v5")):
    got = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="d1/ws-" + name,
                    protocol=proto, transport="websockets")
    c.ws_set_options(path="/mqtt")
    c.username_pw_set("d1", "tok-d1")
    c.on_message = lambda client, userdata, msg: got.set() if msg.payload == b"pong" else None
    c.connect("127.0.0.1", port)
    c.loop_start()
    info = c.publish("devices/d1/telemetry/ws", "42", qos=1)
    info.wait_for_publish(timeout=10)
    assert info.is_published(), "telemetry not acknowledged"
    result, _ = c.subscribe("devices/d1/echo", qos=1)
    assert result == mqtt.MQTT_ERR_SUCCESS
    import time
    deadline = time.time() + 10
    while not got.is_set() and time.time() < deadline:
        c.publish("devices/d1/echo", "pong", qos=1)
        got.wait(0.2)
    assert got.is_set(), "no message over the subscription"
    c.disconnect()
    c.loop_stop()
print("OK")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_over_websocket_v311_and_v5() {
    if !paho_available() {
        return;
    }
    let rig = Rig::default().await;
    let addr = listen_ws(&rig).await;
    let output = tokio::time::timeout(
        WAIT * 3,
        tokio::process::Command::new("python3")
            .args(["-c", PAHO_WS, &addr.port().to_string()])
            .output(),
    )
    .await
    .expect("paho finishes")
    .expect("python3 runs");
    assert!(
        output.status.success() && output.stdout.starts_with(b"OK"),
        "paho over WebSocket failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let envs = rig.envelopes().await;
    assert_eq!(envs.len(), 2, "one telemetry message per protocol version");
    assert!(envs.iter().all(|e| e.points[0].value == Value::I64(42)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_listener_takes_no_proxy_header_even_with_proxy_protocol_on() {
    // WebSocket clients come through an HTTP Ingress, which sends no PROXY
    // header: the upgrade must work as it is.
    let rig = Rig::start(tributary_ingest_mqtt::MqttConfig {
        proxy_protocol: true,
        ..tributary_ingest_mqtt::MqttConfig::default()
    })
    .await;
    let addr = listen_ws(&rig).await;
    let mut request = format!("ws://{addr}/mqtt").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut ws, _) = tokio::time::timeout(WAIT, client_async(request, tcp))
        .await
        .expect("upgrade finishes")
        .expect("upgrade succeeds without a PROXY header");
    let connect = bytes_of(connect_packet(ProtocolVersion::V5, "d1", "d1", "tok-d1").into());
    ws.send(Message::Binary(connect)).await.unwrap();
    match recv(&mut ws, &mut BytesMut::new()).await {
        Some(Packet::ConnAck(a)) => assert_eq!(a.reason_code, ReasonCode::Success),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}
