//! The end of a connection is one event: one `mqtt.disconnected` log line
//! naming the connection and its reason, and one count of
//! `tributary_mqtt_disconnects_total` under the same reason.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{Raw, Rig, wait_for};
use tributary_mqtt_codec::{Disconnect, Packet, ProtocolVersion, Publish, QoS, ReasonCode};

/// Log lines written by the tracing subscriber under test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// The `mqtt.disconnected` lines of the connection of `client_id`.
    fn disconnected(&self, client_id: &str) -> Vec<String> {
        let field = format!("client_id=\"{client_id}\"");
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains("event=\"mqtt.disconnected\"") && l.contains(&field))
            .map(str::to_owned)
            .collect()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_ends_in_one_disconnected_event_with_its_reason() {
    // The process-wide subscriber (the only test here that sets one): a
    // thread-scoped one misses events whose callsites other threads
    // registered first. Lines are told apart by client id.
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    let rig = Rig::default().await;

    // The client says goodbye: DEBUG, reason `client`.
    let mut c = Raw::client(rig.addr, ProtocolVersion::V5, "d1/bye", "d1").await;
    c.send(Disconnect::new(ReasonCode::NORMAL_DISCONNECTION).into())
        .await;
    assert_eq!(c.expect_close().await, None);
    wait_for("the disconnected line of d1/bye", || {
        !logs.disconnected("d1/bye").is_empty()
    })
    .await;
    let lines = logs.disconnected("d1/bye");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    for part in [
        " DEBUG ",
        "reason=\"client\"",
        "tenant=\"acme\"",
        "device=\"d1\"",
        "disconnected",
    ] {
        assert!(lines[0].contains(part), "{part} in {}", lines[0]);
    }
    let text = rig.metrics_text();
    for line in [
        "tributary_mqtt_disconnects_total{reason=\"client\"} 1",
        "tributary_mqtt_connections 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in {text}");
    }

    // The server closes a 3.1.1 client that published outside its topics:
    // INFO, the rejection's reason.
    let mut old = Raw::client(rig.addr, ProtocolVersion::V311, "d2/old", "d2").await;
    let mut p = Publish::new("devices/d1/x", "no");
    p.qos = QoS::AtLeastOnce;
    p.packet_id = Some(1);
    old.send(Packet::Publish(p)).await;
    assert_eq!(old.expect_close().await, None);
    wait_for("the disconnected line of d2/old", || {
        !logs.disconnected("d2/old").is_empty()
    })
    .await;
    let lines = logs.disconnected("d2/old");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    for part in [" INFO ", "reason=\"not_authorized\"", "device=\"d2\""] {
        assert!(lines[0].contains(part), "{part} in {}", lines[0]);
    }
    let text = rig.metrics_text();
    for line in [
        "tributary_mqtt_disconnects_total{reason=\"client\"} 1",
        "tributary_mqtt_disconnects_total{reason=\"not_authorized\"} 1",
        "tributary_mqtt_publishes_rejected_total{reason=\"not_authorized\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in {text}");
    }
    // The old separate "disconnected" line is gone: no line says
    // "disconnected" without being the event.
    let all = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    let stray = all
        .lines()
        .filter(|l| l.ends_with(" disconnected") || l.contains(" disconnected "))
        .filter(|l| !l.contains("event=\"mqtt.disconnected\""))
        .count();
    assert_eq!(stray, 0, "{all}");
}
