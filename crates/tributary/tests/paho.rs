//! Interop with Eclipse Paho (Python `paho-mqtt` 2.x), a second,
//! independent MQTT client, against a real standalone process: MQTT 3.1.1
//! and 5.0 connects with device credentials, QoS 1 and 2 telemetry, command
//! subscriptions, ACL refusals, and one command answered over MQTT 5
//! request/response (`tests/paho/interop.py`); and MQTT 5 topic aliases
//! from the server, decoded by paho (`tests/paho/aliases.py`).
//!
//! The test fails when python3 or paho-mqtt is missing (`scripts/test.sh`
//! installs paho-mqtt), unless `TRIBUTARY_SKIP_PAHO=1` is set, in which case
//! it says loudly that it was skipped.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};
use tributary_proto::v1 as pb;
use tributary_proto::v1::command_service_client::CommandServiceClient;

const WAIT: Duration = Duration::from_secs(30);

/// Whether the test may run; panics when paho is missing and skipping was
/// not asked for.
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
        eprintln!(
            "SKIPPED: paho-mqtt interop test (python3 with paho-mqtt not found, TRIBUTARY_SKIP_PAHO=1)"
        );
        return false;
    }
    panic!(
        "python3 with paho-mqtt not found: `pip install paho-mqtt` (scripts/test.sh does) or set TRIBUTARY_SKIP_PAHO=1"
    );
}

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

/// The script's next line; panics on EOF or after [`WAIT`].
async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("the paho script answers in time")
        .expect("reading the script's output")
        .expect("the paho script ended early (see its output above)")
}

/// Starts `tests/paho/<script>` against the standalone's MQTT listener
/// (host and port first, then `args`), its stdout read line by line.
fn run_script(
    s: &Standalone,
    script: &str,
    args: &[&str],
) -> (tokio::process::Child, Lines<BufReader<ChildStdout>>) {
    let path = format!("{}/tests/paho/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new("python3")
        .arg(path)
        .args([&s.mqtt.ip().to_string(), &s.mqtt.port().to_string()])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("run python3");
    let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    (child, lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_v311_and_v5_clients() {
    if !paho_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path());
    let token = create_device(&s, "paho-1").await;
    create_device(&s, "paho-2").await;
    let (mut child, mut lines) = run_script(&s, "interop.py", &["paho-1", &token, "paho-2"]);

    let mut passed = Vec::new();
    loop {
        let line = next_line(&mut lines).await;
        eprintln!("paho: {line}");
        if line == "ready" {
            break;
        }
        match line.strip_prefix("ok ") {
            Some(check) => passed.push(check.to_owned()),
            None => panic!("paho check failed: {line}"),
        }
    }
    assert_eq!(
        passed,
        [
            "v311-wrong-password-refused",
            "v311-connect",
            "v311-qos1-puback",
            "v311-qos2-pubcomp",
            "v311-subscribe-commands",
            "v311-subscribe-refused",
            "v311-publish-refused",
            "v5-wrong-password-refused",
            "v5-connect",
            "v5-qos1-puback",
            "v5-qos2-pubcomp",
            "v5-publish-refused",
            "v5-subscribe-refused",
            "v5-subscribe-commands",
        ]
    );

    // The paho device is subscribed to its commands: send it one.
    let mut commands =
        CommandServiceClient::with_interceptor(s.channel().await, Bearer::new(&s.admin_token));
    let resp = commands
        .send_command(pb::SendCommandRequest {
            device: "paho-1".into(),
            name: "blink".into(),
            payload: b"3".to_vec(),
            timeout_ms: 10_000,
            ..Default::default()
        })
        .await
        .expect("SendCommand")
        .into_inner();
    assert_eq!(resp.status(), pb::CommandStatus::DeliveredReplied);
    assert_eq!(resp.reply_content_type, "application/json");
    let reply: serde_json::Value = serde_json::from_slice(&resp.reply_payload).unwrap();
    assert_eq!(
        reply,
        serde_json::json!({"client": "paho", "command": "blink", "got": "3"})
    );
    for expected in ["ok v5-command-replied", "done"] {
        let line = next_line(&mut lines).await;
        eprintln!("paho: {line}");
        assert_eq!(line, expected);
    }
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("the paho script exits")
        .unwrap();
    assert!(status.success(), "{status}");

    // Every publish paho saw acknowledged is stored, with its value; the
    // refused ones are not.
    let mut q = s.query(&s.admin_token).await;
    let latest = eventually(WAIT, "paho's points stored", || {
        let mut q = q.clone();
        async move {
            let values = q
                .latest(pb::LatestRequest {
                    target: device_target("paho-1"),
                    metrics: Vec::new(),
                })
                .await
                .expect("Latest")
                .into_inner()
                .values;
            (values.len() >= 4).then_some(values)
        }
    })
    .await;
    let mut got: Vec<_> = latest.into_iter().map(|v| (v.metric, v.value)).collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            ("paho311_q1".to_owned(), f64v(1.5)),
            ("paho311_q2".to_owned(), i64v(2)),
            ("paho5_q1".to_owned(), f64v(3.5)),
            ("paho5_q2".to_owned(), f64v(4.5)),
        ]
    );
    let other = q
        .list_metrics(pb::ListMetricsRequest {
            target: device_target("paho-2"),
        })
        .await
        .expect("ListMetrics")
        .into_inner();
    assert!(
        other.series.is_empty(),
        "refused publishes stored: {other:?}"
    );
    assert!(s.stop().success());
}

/// Runs `tests/paho/aliases.py` for `device`, announcing `maximum` as its
/// Topic Alias Maximum, sends it three commands, and returns the lines the
/// script printed for them.
async fn paho_receives_commands(s: &Standalone, device: &str, maximum: u16) -> Vec<String> {
    let token = create_device(s, device).await;
    let (mut child, mut lines) =
        run_script(s, "aliases.py", &[device, &token, &maximum.to_string()]);
    assert_eq!(next_line(&mut lines).await, "ready");
    let mut got = Vec::new();
    for _ in 0..3 {
        // The device does not answer: the command is delivered, then
        // times out waiting for a reply.
        send_blink(s, device, 200).await;
        let line = next_line(&mut lines).await;
        eprintln!("paho: {line}");
        got.push(line);
    }
    assert_eq!(next_line(&mut lines).await, "done");
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("the paho script exits")
        .unwrap();
    assert!(status.success(), "{status}");
    got
}

/// Outbound topic aliases (MQTT 5.0 section 3.3.2.3.4) with a client
/// written elsewhere: paho, announcing a Topic Alias Maximum of 10, gets
/// the repeated command topic by alias with an empty topic, and decodes it
/// to the right topic; announcing none, it gets the topic in full each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_decodes_topic_aliases_and_gets_none_when_it_allows_none() {
    if !paho_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path());
    let topic = "devices/paho-al/commands/blink";
    assert_eq!(
        paho_receives_commands(&s, "paho-al", 10).await,
        [
            format!("got {topic} twice raw={topic} alias=-"),
            format!("got {topic} twice raw={topic} alias=1"),
            format!("got {topic} twice raw=- alias=1"),
        ]
    );
    let topic = "devices/paho-none/commands/blink";
    assert_eq!(
        paho_receives_commands(&s, "paho-none", 0).await,
        vec![format!("got {topic} twice raw={topic} alias=-"); 3]
    );
    assert!(s.stop().success());
}
