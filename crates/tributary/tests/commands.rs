//! Cloud-to-device commands end to end: an operator's gRPC `SendCommand`
//! and the `tributary commands send` CLI, through a real standalone
//! process, to rumqttc devices over MQTT 5 and 3.1.1.

mod common;

use std::time::{Duration, Instant};

use common::device::Device;
use common::*;
use rumqttc::v5::mqttbytes::v5::Packet;
use tokio::sync::mpsc;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tributary_proto::v1 as pb;
use tributary_proto::v1::command_service_client::CommandServiceClient;

/// How long a test waits for anything before failing.
const WAIT: Duration = Duration::from_secs(15);

type Commands = CommandServiceClient<InterceptedService<Channel, Bearer>>;

async fn create_device(s: &Standalone, id: &str) -> String {
    s.registry(&s.admin_token)
        .await
        .create_device(pb::CreateDeviceRequest {
            tenant: String::new(),
            id: id.into(),
            labels: Default::default(),
            metadata: Default::default(),
            issue_token: true,
        })
        .await
        .expect("CreateDevice")
        .into_inner()
        .token
        .expect("token")
        .token
}

async fn commands(s: &Standalone) -> Commands {
    CommandServiceClient::with_interceptor(s.channel().await, Bearer::new(&s.admin_token))
}

fn request(device: &str, name: &str, payload: &str, timeout_ms: u32) -> pb::SendCommandRequest {
    pb::SendCommandRequest {
        tenant: String::new(),
        device: device.into(),
        name: name.into(),
        payload: payload.as_bytes().to_vec(),
        content_type: "application/json".into(),
        timeout_ms,
        ttl_seconds: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_command_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path());
    let pump = create_device(&s, "pump-1").await;
    let mute = create_device(&s, "mute-1").await;
    let sleepy = create_device(&s, "sleepy-1").await;
    create_device(&s, "ghost-1").await;
    let mut cmds = commands(&s).await;

    // A device that never connected: OFFLINE, at once.
    let started = Instant::now();
    let resp = cmds
        .send_command(request("ghost-1", "reboot", "{}", 5_000))
        .await
        .expect("SendCommand")
        .into_inner();
    assert_eq!(resp.status(), pb::CommandStatus::Offline);
    assert!(started.elapsed() < Duration::from_secs(2));

    // A device that answers: the operator gets its reply.
    let mut device = Device::connect(&s, "pump-1", &pump, 0).await;
    device.subscribe_commands("pump-1").await;
    device.answer_forever();
    let resp = cmds
        .send_command(request("pump-1", "set-speed", r#"{"rpm": 900}"#, 10_000))
        .await
        .expect("SendCommand")
        .into_inner();
    assert_eq!(resp.status(), pb::CommandStatus::DeliveredReplied);
    assert_eq!(resp.reply_content_type, "application/json");
    let reply: serde_json::Value = serde_json::from_slice(&resp.reply_payload).unwrap();
    assert_eq!(
        reply,
        serde_json::json!({"ok": true, "command": "set-speed", "got": r#"{"rpm": 900}"#})
    );
    assert!(resp.latency_us > 0 && resp.latency_us < 10_000_000);

    // A 3.1.1 device that receives commands but never answers: TIMEOUT,
    // within the timeout.
    let mut opts = rumqttc::MqttOptions::new("mute-1", s.mqtt.ip().to_string(), s.mqtt.port());
    opts.set_credentials("mute-1", mute.as_str())
        .set_keep_alive(Duration::from_secs(30));
    let (mute_client, mut mute_loop) = rumqttc::AsyncClient::new(opts, 16);
    let (got_tx, mut got_rx) = mpsc::channel(8);
    tokio::spawn(async move {
        while let Ok(event) = mute_loop.poll().await {
            match event {
                rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) => {
                    let _ = got_tx.send(String::from("subscribed")).await;
                }
                rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => {
                    let _ = got_tx.send(p.topic).await;
                }
                _ => {}
            }
        }
    });
    mute_client
        .subscribe("devices/mute-1/commands/+", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let first = tokio::time::timeout(WAIT, got_rx.recv()).await.unwrap();
    assert_eq!(first.as_deref(), Some("subscribed"));
    let started = Instant::now();
    let resp = cmds
        .send_command(request("mute-1", "selftest", "", 700))
        .await
        .expect("SendCommand")
        .into_inner();
    let took = started.elapsed();
    assert_eq!(resp.status(), pb::CommandStatus::Timeout);
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(3),
        "TIMEOUT after {took:?}"
    );
    let delivered = tokio::time::timeout(WAIT, got_rx.recv()).await.unwrap();
    assert_eq!(
        delivered.as_deref(),
        Some("devices/mute-1/commands/selftest"),
        "the silent device did get the command"
    );

    // A device with a persistent session, offline: QUEUED until the TTL,
    // and delivered when it comes back.
    let mut sleeper = Device::connect(&s, "sleepy-1", &sleepy, 3600).await;
    sleeper.subscribe_commands("sleepy-1").await;
    sleeper.client.disconnect().await.unwrap();
    eventually(WAIT, "sleepy-1 offline", || {
        let mut cmds = cmds.clone();
        async move {
            let resp = cmds
                .send_command(pb::SendCommandRequest {
                    ttl_seconds: 600,
                    ..request("sleepy-1", "update", "fw-2", 200)
                })
                .await
                .expect("SendCommand")
                .into_inner();
            // Until the server has seen the disconnect, the command goes to
            // the live connection and times out.
            (resp.status() == pb::CommandStatus::Queued).then_some(resp)
        }
    })
    .await;
    let mut sleeper = Device::connect(&s, "sleepy-1", &sleepy, 3600).await;
    let (payload, expiry) = sleeper
        .next(|p| match p {
            Packet::Publish(p) if &p.topic[..] == b"devices/sleepy-1/commands/update" => Some((
                p.payload.clone(),
                p.properties.and_then(|pr| pr.message_expiry_interval),
            )),
            _ => None,
        })
        .await;
    assert_eq!(&payload[..], b"fw-2");
    let expiry = expiry.expect("a message expiry");
    assert!((500..=600).contains(&expiry), "remaining TTL {expiry}");

    // The CLI prints the reply and exits 0; an offline device exits 1.
    let out = cli(
        &s,
        &[
            "--device",
            "pump-1",
            "--name",
            "reboot",
            "--payload",
            r#"{"delay": 5}"#,
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("replied"), "{stdout}");
    assert!(stdout.contains(r#""command":"reboot""#), "{stdout}");
    assert!(stdout.contains(r#"{\"delay\": 5}"#), "{stdout}");
    let out = cli(
        &s,
        &["-o", "json", "--device", "ghost-1", "--name", "reboot"],
    )
    .await;
    assert!(!out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(r#""status": "offline""#));
    assert!(String::from_utf8_lossy(&out.stderr).contains("offline"));

    drop(mute_client);
    assert!(s.stop().success());
}

/// Runs `tributary commands send ARGS` against the platform.
async fn cli(s: &Standalone, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tributary"));
    cmd.args(["commands", "send", "--endpoint"])
        .arg(format!("http://{}", s.grpc))
        .args(["--token", &s.admin_token, "--timeout", "10s"])
        .args(args);
    tokio::task::spawn_blocking(move || cmd.output().expect("run the CLI"))
        .await
        .unwrap()
}
