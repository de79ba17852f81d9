//! Interop with Debian's mosquitto_pub and mosquitto_sub, MQTT 3.1.1 and 5.0.
//!
//! These tests fail when the binaries are missing (`scripts/test.sh`
//! installs them), unless `TRIBUTARY_SKIP_MOSQUITTO=1` is set, in which case
//! they say loudly that they were skipped.

mod common;

use std::process::Stdio;

use common::{Rig, WAIT};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tributary_core::Value;

/// Whether the tests may run; panics when the clients are missing and
/// skipping was not asked for.
fn mosquitto_available() -> bool {
    let found = std::process::Command::new("mosquitto_pub")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if found {
        return true;
    }
    if std::env::var("TRIBUTARY_SKIP_MOSQUITTO").as_deref() == Ok("1") {
        eprintln!(
            "SKIPPED: mosquitto interop tests (mosquitto_pub not found, TRIBUTARY_SKIP_MOSQUITTO=1)"
        );
        return false;
    }
    panic!(
        "mosquitto_pub not found: install mosquitto-clients (scripts/test.sh does) or set TRIBUTARY_SKIP_MOSQUITTO=1"
    );
}

async fn mosquitto_pub(rig: &Rig, version: &str, qos: &str, topic: &str, message: &str) {
    let status = tokio::time::timeout(
        WAIT,
        Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &rig.addr.port().to_string(),
                "-V",
                version,
                "-q",
                qos,
            ])
            .args([
                "-i", "d1/pub", "-u", "d1", "-P", "tok-d1", "-t", topic, "-m", message,
            ])
            .status(),
    )
    .await
    .expect("mosquitto_pub finishes")
    .expect("mosquitto_pub runs");
    assert!(
        status.success(),
        "mosquitto_pub -V {version} -q {qos} failed: {status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_telemetry_v311_and_v5() {
    if !mosquitto_available() {
        return;
    }
    let rig = Rig::default().await;
    mosquitto_pub(&rig, "mqttv311", "1", "devices/d1/telemetry/temp", "21.5").await;
    mosquitto_pub(
        &rig,
        "mqttv5",
        "2",
        "devices/d1/telemetry",
        r#"{"values": {"hum": 40}}"#,
    )
    .await;
    // mosquitto_pub exits after its acknowledgement: both are durable.
    let envs = rig.envelopes().await;
    assert_eq!(envs.len(), 2);
    assert_eq!(
        (envs[0].points[0].metric.as_str(), &envs[0].points[0].value),
        ("temp", &Value::F64(21.5))
    );
    assert_eq!(
        (envs[1].points[0].metric.as_str(), &envs[1].points[0].value),
        ("hum", &Value::I64(40))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_sub_receives_qos2_and_retained() {
    if !mosquitto_available() {
        return;
    }
    let rig = Rig::default().await;
    for version in ["mqttv311", "mqttv5"] {
        // A retained message first: mosquitto_sub must get it on subscribe.
        mosquitto_pub(&rig, version, "1", "devices/d1/state", "").await;
        let retained = Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &rig.addr.port().to_string(),
                "-V",
                version,
                "-q",
                "1",
                "-r",
            ])
            .args([
                "-i",
                "d1/pub",
                "-u",
                "d1",
                "-P",
                "tok-d1",
                "-t",
                "devices/d1/state",
                "-m",
                "on",
            ])
            .status()
            .await
            .unwrap();
        assert!(retained.success());
        let port = rig.addr.port().to_string();
        let mut sub = Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-V",
                version,
                "-q",
                "2",
                "-i",
                "d1/sub",
            ])
            .args([
                "-u",
                "d1",
                "-P",
                "tok-d1",
                "-t",
                "devices/d1/#",
                "-C",
                "2",
                "-v",
            ])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(sub.stdout.take().unwrap()).lines();
        // The retained message arrives once the subscription exists; only
        // then is the live message published.
        let first = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("retained message");
        assert_eq!(
            first.unwrap().as_deref(),
            Some("devices/d1/state on"),
            "{version}"
        );
        mosquitto_pub(&rig, version, "2", "devices/d1/jobs", "job-1").await;
        let second = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("live message");
        assert_eq!(
            second.unwrap().as_deref(),
            Some("devices/d1/jobs job-1"),
            "{version}"
        );
        let status = tokio::time::timeout(WAIT, sub.wait())
            .await
            .expect("mosquitto_sub exits")
            .unwrap();
        assert!(status.success(), "{version}");
    }
}
