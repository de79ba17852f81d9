//! The MQTT transports and credentials of a real standalone process, driven
//! the way an operator would: `--tls-cert/--tls-key/--tls-client-ca`, the
//! CLI's `devices cert add` and `tokens issue --app`, `mosquitto_pub` over
//! mutual TLS without a password, and Eclipse Paho over WebSocket as a
//! tenant application.
//!
//! Fails when mosquitto_pub or paho-mqtt is missing, unless
//! `TRIBUTARY_SKIP_MOSQUITTO=1` / `TRIBUTARY_SKIP_PAHO=1` is set, in which
//! case it says loudly that it was skipped.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tributary_proto::v1 as pb;

const WAIT: Duration = Duration::from_secs(30);

fn tools_available() -> bool {
    let ok = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success() || cmd == "mosquitto_pub")
    };
    let mosquitto = ok("mosquitto_pub", &["--help"]);
    let paho = ok("python3", &["-c", "import paho.mqtt"]);
    if mosquitto && paho {
        return true;
    }
    let skip = |var: &str| std::env::var(var).as_deref() == Ok("1");
    if (!mosquitto && skip("TRIBUTARY_SKIP_MOSQUITTO")) || (!paho && skip("TRIBUTARY_SKIP_PAHO")) {
        eprintln!("SKIPPED: MQTT transport e2e test (mosquitto_pub or paho-mqtt not found)");
        return false;
    }
    panic!(
        "mosquitto_pub ({mosquitto}) and python3 with paho-mqtt ({paho}) are needed: scripts/test.sh installs them"
    );
}

/// The first row of the CLI's JSON output.
fn first_row(json: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(json).expect("JSON output");
    match v {
        serde_json::Value::Array(mut rows) => rows.remove(0),
        row => row,
    }
}

/// `mosquitto_pub` over mutual TLS with the client certificate and no
/// password; returns whether it succeeded.
async fn publish_with_certificate(dir: &std::path::Path, port: u16, value: &str) -> bool {
    let status = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", "mqttv5"])
            .args(["-q", "1", "-i", "sensor-1"])
            .arg("--cafile")
            .arg(dir.join("ca.pem"))
            .arg("--cert")
            .arg(dir.join("client.pem"))
            .arg("--key")
            .arg(dir.join("client.key"))
            .args(["-t", "devices/sensor-1/telemetry/temp", "-m", value])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status(),
    )
    .await
    .expect("mosquitto_pub finishes")
    .expect("mosquitto_pub runs");
    status.success()
}

/// Paho over WebSocket as application `dash`: subscribes to every device's
/// telemetry, says READY, prints the first message it gets.
const PAHO_APP: &str = r#"
import sys
import paho.mqtt.client as mqtt
port, token = int(sys.argv[1]), sys.argv[2]
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="dashboard-1",
                protocol=mqtt.MQTTv5, transport="websockets")
c.ws_set_options(path="/mqtt")
c.username_pw_set("app:dash", token)
def on_connect(client, userdata, flags, reason, props):
    if reason.is_failure:
        print("REFUSED", reason, flush=True); sys.exit(1)
    client.subscribe("devices/+/telemetry/#", qos=1)
def on_subscribe(client, userdata, mid, reasons, props):
    print("READY" if not reasons[0].is_failure else "DENIED", flush=True)
def on_message(client, userdata, msg):
    print("GOT", msg.topic, msg.payload.decode(), flush=True)
    client.disconnect()
c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
c.connect("127.0.0.1", port)
c.loop_forever()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_device_and_websocket_application_end_to_end() {
    if !tools_available() {
        return;
    }
    // A CA, a server certificate for 127.0.0.1 and a device certificate.
    let pki = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "ca");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    // Issued for the tenant: the registry registers it nowhere else.
    client_params
        .distinguished_name
        .push(DnType::OrganizationName, "default");
    client_params
        .distinguished_name
        .push(DnType::CommonName, "sensor-1");
    let client = client_params.signed_by(&client_key, &ca).unwrap();
    for (name, pem) in [
        ("ca.pem", ca.pem()),
        ("server.pem", server.pem()),
        ("server.key", server_key.serialize_pem()),
        ("client.pem", client.pem()),
        ("client.key", client_key.serialize_pem()),
    ] {
        std::fs::write(pki.path().join(name), pem).unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca_file) = (
        pki.path().join("server.pem"),
        pki.path().join("server.key"),
        pki.path().join("ca.pem"),
    );
    let s = Standalone::start_with(
        dir.path(),
        &[
            "--mqtt-tls-addr".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--mqtt-wss-addr".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--tls-cert".as_ref(),
            cert.as_os_str(),
            "--tls-key".as_ref(),
            key.as_os_str(),
            "--tls-client-ca".as_ref(),
            ca_file.as_os_str(),
        ],
    );
    let mqtts = s.mqtts.expect("the TLS listener started");

    // The device, without a token; its certificate registered by the CLI.
    s.registry(&s.admin_token)
        .await
        .create_device(pb::CreateDeviceRequest {
            id: "sensor-1".into(),
            ..Default::default()
        })
        .await
        .expect("CreateDevice");
    assert!(
        !publish_with_certificate(pki.path(), mqtts.port(), "1").await,
        "an unregistered certificate is no credential"
    );
    let added = first_row(
        &cli(
            &s,
            &[
                "devices",
                "cert",
                "add",
                "--device",
                "sensor-1",
                "--certificate",
                pki.path().join("client.pem").to_str().expect("utf-8 path"),
            ],
        )
        .await,
    );
    let credential_id = added["credential_id"].as_str().expect("an id").to_owned();

    // Another tenant can neither claim the certificate (and with it the
    // device's connections) nor register it by fingerprint alone.
    create_tenant(&s, "globex").await;
    create_device_in(&s, "globex", "sensor-1").await;
    let mut registry = s.registry(&s.admin_token).await;
    let claim = registry
        .register_certificate(pb::RegisterCertificateRequest {
            tenant: "globex".into(),
            device: "sensor-1".into(),
            certificate_pem: client.pem(),
            ..Default::default()
        })
        .await
        .expect_err("globex claims the certificate of default's device");
    assert_eq!(claim.code(), tonic::Code::InvalidArgument, "{claim:?}");
    assert!(claim.message().contains("another tenant"), "{claim:?}");
    let by_fingerprint = registry
        .register_certificate(pb::RegisterCertificateRequest {
            tenant: "globex".into(),
            device: "sensor-1".into(),
            fingerprint: tributary_ingest_mqtt::fingerprint(client.der()),
            ..Default::default()
        })
        .await
        .expect_err("a fingerprint alone registers");
    assert_eq!(by_fingerprint.code(), tonic::Code::InvalidArgument);

    // The application, over WebSocket, watching every device's telemetry.
    let issued = first_row(
        &cli(
            &s,
            &[
                "tokens",
                "issue",
                "--app",
                "dash",
                "--subscribe",
                "devices/+/telemetry/#",
            ],
        )
        .await,
    );
    let app_token = issued["token"].as_str().expect("a token").to_owned();
    assert!(app_token.starts_with("tba_"));
    let mut paho = tokio::process::Command::new("python3")
        .args(["-c", PAHO_APP, &s.mqtt_ws.port().to_string(), &app_token])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let mut lines = BufReader::new(paho.stdout.take().unwrap()).lines();
    let next_line = async |lines: &mut tokio::io::Lines<_>| {
        tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("paho prints in time")
            .expect("paho output")
            .expect("a line")
    };
    assert_eq!(next_line(&mut lines).await, "READY");

    // The device publishes with its certificate only; the application sees it.
    assert!(publish_with_certificate(pki.path(), mqtts.port(), "21.5").await);
    assert_eq!(
        next_line(&mut lines).await,
        "GOT devices/sensor-1/telemetry/temp 21.5"
    );
    let status = tokio::time::timeout(WAIT, paho.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());

    // Revoking the certificate locks the device out within a second.
    cli(&s, &["tokens", "revoke", &credential_id]).await;
    let revoked_at = std::time::Instant::now();
    while publish_with_certificate(pki.path(), mqtts.port(), "3").await {
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "a revoked certificate still authenticates after 1 s"
        );
    }
    assert!(s.stop().success());
}
