//! Behind a load balancer: the PROXY protocol header before MQTT (the client
//! address it names shows in the connection's log lines), and "server moved"
//! instead of "server shutting down" when the fleet is being moved.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::{Raw, Rig, connect_packet, wait_for};
use tributary_ingest_mqtt::MqttConfig;
use tributary_mqtt_codec::{Packet, ProtocolVersion, ReasonCode};

use ProtocolVersion::{V5, V311};

/// A PROXY protocol v2 header (PROXY command, TCP over IPv4) naming
/// `source` as the client, with an AWS TLV that must be skipped.
fn v2_header(source: SocketAddr) -> Vec<u8> {
    let SocketAddr::V4(source) = source else {
        panic!("IPv4 only")
    };
    let mut body = source.ip().octets().to_vec();
    body.extend_from_slice(&[10, 0, 0, 1]);
    body.extend_from_slice(&source.port().to_be_bytes());
    body.extend_from_slice(&1883u16.to_be_bytes());
    body.extend_from_slice(&[0xEA, 0x00, 0x04, 0x01, b'v', b'p', b'c']);
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.extend_from_slice(&[0x21, 0x11]);
    out.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Opens a socket, writes `header`, then CONNECTs as device `device`;
/// returns the client and its CONNACK reason code, or `None` when the
/// server closed the socket instead.
async fn connect_after(
    rig: &Rig,
    header: &[u8],
    version: ProtocolVersion,
    device: &str,
) -> (Raw, Option<ReasonCode>) {
    let mut raw = Raw::open(rig.addr, version).await;
    raw.send_bytes(header).await;
    raw.send(connect_packet(version, device, device, &format!("tok-{device}")).into())
        .await;
    let code = match raw.recv().await {
        Some(Packet::ConnAck(a)) => Some(a.reason_code),
        None => None,
        Some(other) => panic!("expected CONNACK or a close, got {other:?}"),
    };
    (raw, code)
}

/// Log lines written by the tracing subscriber under test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// The "connected" log line of the connection whose span names `remote`.
fn connected_line(logs: &Captured, remote: SocketAddr) -> Option<String> {
    let field = format!("remote={remote}");
    logs.text()
        .lines()
        .find(|l| l.contains(&field) && l.contains(" connected "))
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_address_of_the_header_is_the_connections_remote() {
    // The process-wide subscriber (the only test here that sets one): a
    // thread-scoped one misses events whose callsites other tests' threads
    // registered first. Lines are told apart by the addresses below.
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    let rig = Rig::start(MqttConfig {
        proxy_protocol: true,
        ..MqttConfig::default()
    })
    .await;

    // v2, as AWS NLB sends it.
    let client: SocketAddr = "203.0.113.7:40001".parse().unwrap();
    let (_v2, code) = connect_after(&rig, &v2_header(client), V5, "d1").await;
    assert_eq!(code, Some(ReasonCode::Success));
    let line = connected_line(&logs, client);
    assert!(
        line.is_some(),
        "no connected line naming {client}:\n{}",
        logs.text()
    );
    assert!(line.unwrap().contains("transport=\"tcp\""));

    // v1 over IPv6, as HAProxy's `send-proxy` sends it.
    let v1 = b"PROXY TCP6 2001:db8::7 2001:db8::1 40002 1883\r\n";
    let (_v1, code) = connect_after(&rig, v1, V311, "d2").await;
    assert_eq!(code, Some(ReasonCode::Success));
    let client: SocketAddr = "[2001:db8::7]:40002".parse().unwrap();
    assert!(
        connected_line(&logs, client).is_some(),
        "no connected line naming {client}:\n{}",
        logs.text()
    );

    // UNKNOWN: the proxy does not know; the socket's own peer stands.
    let (unknown, code) = connect_after(&rig, b"PROXY UNKNOWN\r\n", V5, "d3").await;
    assert_eq!(code, Some(ReasonCode::Success));
    let own = unknown.stream.local_addr().unwrap();
    assert!(
        connected_line(&logs, own).is_some(),
        "no connected line naming the socket peer {own}:\n{}",
        logs.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_a_valid_header_is_closed_and_counted() {
    let rig = Rig::start(MqttConfig {
        proxy_protocol: true,
        ..MqttConfig::default()
    })
    .await;
    // A plain MQTT client: CONNECT where the header should be.
    let (_plain, code) = connect_after(&rig, b"", V5, "d1").await;
    assert_eq!(code, None, "closed without a CONNACK");
    // A header naming a TCP4 client with an IPv6 address.
    let bad = b"PROXY TCP4 2001:db8::7 10.0.0.1 40001 1883\r\n";
    let (_bad, code) = connect_after(&rig, bad, V5, "d2").await;
    assert_eq!(code, None);
    let line = "tributary_mqtt_connects_refused_total{reason=\"proxy_protocol\"} 2";
    wait_for(line, || rig.metrics_text().lines().any(|l| l == line)).await;
    // Other clients are served meanwhile.
    let client: SocketAddr = "198.51.100.1:5000".parse().unwrap();
    let (_ok, code) = connect_after(&rig, &v2_header(client), V5, "d3").await;
    assert_eq!(code, Some(ReasonCode::Success));
    assert_eq!(rig.server.metrics().connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_setting_a_header_is_a_malformed_connect() {
    let rig = Rig::default().await;
    let client: SocketAddr = "203.0.113.7:40001".parse().unwrap();
    let (_c, code) = connect_after(&rig, &v2_header(client), V5, "d1").await;
    assert_eq!(code, None);
    let (_c, code) = connect_after(&rig, b"", V5, "d1").await;
    assert_eq!(code, Some(ReasonCode::Success));
}

/// The DISCONNECT a client gets when the server stops, if any.
async fn disconnect_on_stop(config: MqttConfig) -> (Option<Packet>, Option<Packet>) {
    let mut rig = Rig::start(config).await;
    let mut v5 = Raw::device(rig.addr, V5, "d1").await;
    let mut v311 = Raw::device(rig.addr, V311, "d2").await;
    rig.stop().await;
    let v5_packet = v5.recv().await;
    assert!(v5.recv().await.is_none(), "closed after the DISCONNECT");
    (v5_packet, v311.recv().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_says_server_moved_with_the_reference_when_one_is_set() {
    let (v5, v311) = disconnect_on_stop(MqttConfig {
        server_reference: Some("mqtt.new.example.com:8883".into()),
        ..MqttConfig::default()
    })
    .await;
    match v5 {
        Some(Packet::Disconnect(d)) => {
            assert_eq!(d.reason_code, ReasonCode::ServerMoved);
            assert_eq!(
                d.properties.server_reference.as_deref(),
                Some("mqtt.new.example.com:8883")
            );
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    assert!(v311.is_none(), "3.1.1 has no DISCONNECT from the server");

    let (v5, v311) = disconnect_on_stop(MqttConfig::default()).await;
    match v5 {
        Some(Packet::Disconnect(d)) => {
            assert_eq!(d.reason_code, ReasonCode::ServerShuttingDown);
            assert_eq!(d.properties.server_reference, None);
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    assert!(v311.is_none());
}
