//! CoAP devices against a real standalone, with clients that were not
//! written here: libcoap's `coap-client-notls` (Debian's libcoap3-bin) and
//! aiocoap (PyPI). Every acknowledged point is then read back through the
//! query API.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;

/// Whether the interop clients are installed; panics when they are not in
/// CI (scripts/test.sh installs them).
fn clients_available() -> bool {
    let missing: Vec<&str> = [
        (
            Command::new("coap-client-notls").arg("-h").output().is_ok(),
            "coap-client-notls (apt install libcoap3-bin)",
        ),
        (
            Command::new("coap-client-openssl")
                .arg("-h")
                .output()
                .is_ok(),
            "coap-client-openssl (apt install libcoap3-bin)",
        ),
        (
            Command::new("python3")
                .args(["-c", "import aiocoap"])
                .output()
                .is_ok_and(|o| o.status.success()),
            "aiocoap (pip install aiocoap)",
        ),
    ]
    .into_iter()
    .filter(|(ok, _)| !ok)
    .map(|(_, what)| what)
    .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!("the CoAP interop tests need {}", missing.join(", "));
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

fn start(dir: &std::path::Path) -> Standalone {
    Standalone::start_with(
        dir,
        &[
            "--coap-addr".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--coaps-addr".as_ref(),
            "127.0.0.1:0".as_ref(),
        ],
    )
}

/// Runs coap-client-notls; returns (success, stdout + stderr).
fn coap_client(args: &[&str]) -> (bool, String) {
    run_client("coap-client-notls", args)
}

/// Runs coap-client-openssl (DTLS); returns (success, stdout + stderr).
fn coaps_client(args: &[&str]) -> (bool, String) {
    run_client("coap-client-openssl", args)
}

fn run_client(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        // Give up after 10 s rather than libcoap's default 90.
        .args(["-B", "10"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn stored(
    s: &Standalone,
    device: &str,
    metric: &str,
) -> Vec<Option<tributary_proto::v1::Value>> {
    let mut q = s.query(&s.admin_token).await;
    range_all(&mut q, device, &[metric], 0, i64::MAX)
        .await
        .into_iter()
        .map(|(_, _, v)| v)
        .collect()
}

/// The device's presence as the HTTP API shows it: `Some(Some(online))`,
/// or `None` when the API did not answer.
async fn online(s: &Standalone, device: &str) -> Option<Option<bool>> {
    let device: serde_json::Value = http_client()
        .get(s.api_url(&format!("/devices/{device}")))
        .bearer_auth(&s.admin_token)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some(device["presence"]["online"].as_bool())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libcoap_posts_json_senml_and_bare_values_that_are_durable() {
    if !clients_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    let coap = s
        .coap
        .expect("standalone prints coap= when --coap-addr is given");
    let token = http_device(&s, "coap-1", json!({"fleet": "c"})).await;
    let auth = format!("{},{token}", tributary_ingest_coap::TOKEN_OPTION);
    let uri = |path: &str| format!("coap://{coap}{path}");

    let (ok, out) = coap_client(&[
        "-m",
        "post",
        "-O",
        &auth,
        "-t",
        "50",
        "-e",
        r#"{"values": {"temp": 21.5}}"#,
        &uri("/t"),
    ]);
    assert!(ok, "JSON: {out}");
    let (ok, out) = coap_client(&[
        "-m",
        "post",
        "-O",
        &auth,
        "-t",
        "110",
        "-e",
        r#"[{"n": "hum", "v": 40}]"#,
        &uri("/t"),
    ]);
    assert!(ok, "SenML JSON: {out}");
    let (ok, out) = coap_client(&["-m", "post", "-O", &auth, "-e", "3.3", &uri("/t/volt")]);
    assert!(ok, "a bare value: {out}");
    // A body larger than a datagram, in blocks of 64 bytes (Block1).
    let values: Vec<String> = (0..100).map(|i| format!("\"b{i:02}\": {i}.5")).collect();
    let big = format!("{{\"values\": {{{}}}}}", values.join(", "));
    assert!(big.len() > 1024);
    let (ok, out) = coap_client(&[
        "-m",
        "post",
        "-O",
        &auth,
        "-t",
        "50",
        "-b",
        "64",
        "-e",
        &big,
        &uri("/t"),
    ]);
    assert!(ok, "block-wise: {out}");
    // The ACK came after the append was durable: the points are there.
    for (metric, value) in [
        ("temp", 21.5),
        ("hum", 40.0),
        ("volt", 3.3),
        ("b00", 0.5),
        ("b99", 99.5),
    ] {
        let points = eventually(Duration::from_secs(20), metric, || async {
            Some(stored(&s, "coap-1", metric).await).filter(|p| !p.is_empty())
        })
        .await;
        assert_eq!(points, [f64v(value)], "{metric}");
    }

    // Refusals reach libcoap's client as their codes.
    let (_, out) = coap_client(&[
        "-m",
        "post",
        "-O",
        &format!("{},tbd_wrong", tributary_ingest_coap::TOKEN_OPTION),
        "-e",
        "1",
        &uri("/t/volt"),
    ]);
    assert!(out.contains("4.01"), "a wrong token: {out}");
    let (_, out) = coap_client(&[
        "-m",
        "post",
        "-e",
        "1",
        &uri(&format!("/t/volt?token={token}")),
    ]);
    assert!(out.contains("4.00"), "a token in the URI: {out}");
    let (ok, out) = coap_client(&["-m", "get", &uri("/.well-known/core")]);
    assert!(ok && out.contains("</t>"), "discovery: {out}");
    // The same in blocks of 16 bytes (Block2): libcoap puts it together.
    let (ok, blocks) = coap_client(&["-m", "get", "-b", "16", &uri("/.well-known/core")]);
    assert!(ok, "discovery in blocks: {blocks}");
    assert_eq!(blocks.trim(), out.trim(), "the whole body, block by block");
    assert_eq!(
        stored(&s, "coap-1", "volt").await.len(),
        1,
        "nothing refused was stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiocoap_posts_and_a_retransmission_is_stored_once() {
    if !clients_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    let coap = s.coap.expect("coap=");
    let token = http_device(&s, "coap-2", json!({})).await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/coap_aiocoap.py");
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .args([
            coap.ip().to_string(),
            coap.port().to_string(),
            token.clone(),
        ])
        .output()
        .await
        .expect("run python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "aiocoap: {text}");
    for step in ["OK post", "OK duplicate", "OK discovery"] {
        assert!(text.contains(step), "{step}: {text}");
    }
    let aio = eventually(Duration::from_secs(20), "aiocoap's point", || async {
        Some(stored(&s, "coap-2", "aio").await).filter(|p| !p.is_empty())
    })
    .await;
    assert_eq!(aio, [f64v(1.5)]);
    // A marker appended after everything the script sent: once it is
    // stored, so is all that came before it from this device (one
    // partition, in order).
    let resp = http_client()
        .post(s.url("/v1/telemetry"))
        .bearer_auth(&token)
        .json(&json!({"values": {"marker": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::NO_CONTENT);
    eventually(Duration::from_secs(20), "the marker", || async {
        (!stored(&s, "coap-2", "marker").await.is_empty()).then_some(())
    })
    .await;
    // Sent twice with one message id, acknowledged twice, stored once.
    let dedup = stored(&s, "coap-2", "dedup").await;
    assert_eq!(dedup, [i64v(7)], "a retransmission is stored once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libcoap_observes_commands_and_its_reply_reaches_the_operator() {
    if !clients_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    let coap = s.coap.expect("coap=");
    let token = http_device(&s, "coap-3", json!({})).await;
    let auth = format!("{},{token}", tributary_ingest_coap::TOKEN_OPTION);
    // The device observes /c for a minute, printing every notification.
    // (stdbuf: its stdout is a pipe, which libc would buffer to the end.)
    let mut observer = tokio::process::Command::new("stdbuf")
        .args(["-o0", "coap-client-notls"])
        .args([
            "-m",
            "get",
            "-s",
            "60",
            "-B",
            "60",
            "-O",
            &auth,
            &format!("coap://{coap}/c"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("run coap-client-notls");
    let mut printed = observer.stdout.take().unwrap();
    // Registered: the device is online, on this frontend.
    eventually(
        Duration::from_secs(20),
        "the observing device online",
        || async { (online(&s, "coap-3").await? == Some(true)).then_some(()) },
    )
    .await;
    // The operator's command, through the HTTP API.
    let api = s.api_url("/devices/coap-3/commands");
    let admin = s.admin_token.clone();
    let sent = tokio::spawn(async move {
        http_client()
            .post(api)
            .bearer_auth(admin)
            .json(&json!({"name": "blink", "payload": "3 times", "timeout_ms": 20000}))
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    });
    // The notification reaches libcoap's client...
    // (It prints each payload as it comes, with no newline after it.)
    let note = notification(&mut printed, "blink").await;
    assert_eq!(note["payload"], "3 times");
    let id = note["id"].as_str().unwrap().to_owned();
    // ...and its reply, posted with libcoap too, reaches the operator.
    let (ok, out) = coap_client(&[
        "-m",
        "post",
        "-O",
        &auth,
        "-t",
        "0",
        "-e",
        "blinked",
        &format!("coap://{coap}/c/{id}"),
    ]);
    assert!(ok, "reply: {out}");
    let outcome = sent.await.unwrap();
    assert_eq!(outcome["status"], "delivered_replied", "{outcome}");
    assert_eq!(outcome["reply"], "blinked", "{outcome}");
    // Disabling the device ends its registration: it goes offline.
    let resp = http_client()
        .post(s.api_url("/devices/coap-3/disable"))
        .bearer_auth(&s.admin_token)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    eventually(
        Duration::from_secs(20),
        "the disabled device offline",
        || async { (online(&s, "coap-3").await? == Some(false)).then_some(()) },
    )
    .await;
    let _ = observer.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiocoap_observes_commands_and_replies() {
    use tokio::io::AsyncBufReadExt;
    if !clients_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    let coap = s.coap.expect("coap=");
    let token = http_device(&s, "coap-4", json!({})).await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/coap_aiocoap.py");
    let mut device = tokio::process::Command::new("python3")
        .arg(&script)
        .args([
            coap.ip().to_string(),
            coap.port().to_string(),
            token,
            "observe".into(),
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run python3");
    let mut lines = tokio::io::BufReader::new(device.stdout.take().unwrap()).lines();
    async fn next(
        lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
        what: &str,
    ) -> String {
        tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{what} within 30 s"))
            .unwrap()
            .unwrap_or_else(|| panic!("the script ended before {what}"))
    }
    assert_eq!(next(&mut lines, "observing").await, "OK observing");
    let outcome: serde_json::Value = http_client()
        .post(s.api_url("/devices/coap-4/commands"))
        .bearer_auth(&s.admin_token)
        .json(&json!({"name": "reboot", "payload": "5 s", "timeout_ms": 20000}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(outcome["status"], "delivered_replied", "{outcome}");
    assert_eq!(outcome["reply"], "rebooting in 5 s", "{outcome}");
    assert!(
        next(&mut lines, "the reply")
            .await
            .starts_with("OK replied ")
    );
    assert!(device.wait().await.unwrap().success());
}

/// The first command named `name` that a libcoap observer printed (each
/// payload as it comes, with no newline after it), within 20 s.
async fn notification(printed: &mut tokio::process::ChildStdout, name: &str) -> serde_json::Value {
    use tokio::io::AsyncReadExt;
    tokio::time::timeout(Duration::from_secs(20), async {
        let mut text = String::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = printed.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the observer ended without a notification: {text:?}");
            text.push_str(&String::from_utf8_lossy(&chunk[..n]));
            let found = text.match_indices('{').find_map(|(start, _)| {
                serde_json::Deserializer::from_str(&text[start..])
                    .into_iter::<serde_json::Value>()
                    .next()
                    .and_then(Result::ok)
                    .filter(|v| v["name"] == name)
            });
            if let Some(v) = found {
                return v;
            }
        }
    })
    .await
    .expect("a notification within 20 s")
}

/// Issues a DTLS PSK for `device` through the HTTP API: (identity, key,
/// credential id).
async fn http_psk(s: &Standalone, device: &str) -> (String, String, String) {
    let issued: serde_json::Value = http_client()
        .post(s.api_url("/tokens"))
        .bearer_auth(&s.admin_token)
        .json(&json!({"kind": "device_psk", "device": device, "name": "dtls"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let identity = issued["psk_identity"].as_str().expect("psk_identity");
    let key = issued["token"].as_str().expect("token");
    let id = issued["credential"]["id"].as_str().expect("credential id");
    (identity.to_owned(), key.to_owned(), id.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_libcoap_device_with_a_registry_psk_posts_over_dtls_and_gets_commands() {
    if !clients_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    let coaps = s
        .coaps
        .expect("standalone prints coaps= when --coaps-addr is given");
    let _ = http_device(&s, "dtls-1", json!({})).await;
    let (identity, key, credential) = http_psk(&s, "dtls-1").await;
    assert_eq!(identity, format!("default/dtls-1/{credential}"));
    let uri = |path: &str| format!("coaps://{coaps}{path}");
    // Telemetry in the session: no token anywhere.
    // (-v 7 prints each message, so the answer's code shows.)
    let (ok, out) = coaps_client(&[
        "-v",
        "7",
        "-m",
        "post",
        "-u",
        &identity,
        "-k",
        &key,
        "-t",
        "json",
        "-e",
        r#"{"values":{"temp":21.5}}"#,
        &uri("/t"),
    ]);
    assert!(ok && out.contains("c:2.04"), "coap-client-openssl: {out}");
    let (ok, out) = coaps_client(&[
        "-m",
        "post",
        "-u",
        &identity,
        "-k",
        &key,
        "-e",
        "3.3",
        &uri("/t/volt"),
    ]);
    assert!(ok, "coap-client-openssl: {out}");
    // SenML, and a body in blocks of 64 bytes (Block1), in sessions too.
    let (ok, out) = coaps_client(&[
        "-m",
        "post",
        "-u",
        &identity,
        "-k",
        &key,
        "-t",
        "110",
        "-e",
        r#"[{"n":"hum","v":40}]"#,
        &uri("/t"),
    ]);
    assert!(ok, "coap-client-openssl: {out}");
    let body = dir.path().join("reading.json");
    let values: Vec<String> = (0..40).map(|i| format!(r#""blk{i}": {i}"#)).collect();
    std::fs::write(&body, format!(r#"{{"values": {{{}}}}}"#, values.join(", "))).unwrap();
    assert!(std::fs::metadata(&body).unwrap().len() > 500);
    let (ok, out) = coaps_client(&[
        "-m",
        "post",
        "-u",
        &identity,
        "-k",
        &key,
        "-t",
        "50",
        "-b",
        "64",
        "-f",
        body.to_str().unwrap(),
        &uri("/t"),
    ]);
    assert!(ok, "coap-client-openssl: {out}");
    // Acknowledged, so durable: all of it is there.
    eventually(Duration::from_secs(20), "every point stored", || async {
        let temp = stored(&s, "dtls-1", "temp").await;
        let volt = stored(&s, "dtls-1", "volt").await;
        let hum = stored(&s, "dtls-1", "hum").await;
        let last = stored(&s, "dtls-1", "blk39").await;
        (temp.len() == 1 && volt.len() == 1 && hum.len() == 1 && last.len() == 1).then_some(())
    })
    .await;
    // A key that is not the device's gets no session, and stores nothing.
    let wrong = format!("{}x", &key[..key.len() - 1]);
    let (_, out) = coaps_client(&[
        "-v",
        "7",
        "-B",
        "3",
        "-m",
        "post",
        "-u",
        &identity,
        "-k",
        &wrong,
        "-e",
        "9",
        &uri("/t/volt"),
    ]);
    assert!(!out.contains("c:2.04"), "{out}");
    // The device observes /c for commands, over DTLS.
    let mut observer = tokio::process::Command::new("stdbuf")
        .args(["-o0", "coap-client-openssl"])
        .args([
            "-m", "get", "-s", "60", "-B", "60", "-u", &identity, "-k", &key,
        ])
        .arg(uri("/c"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("run coap-client-openssl");
    let mut printed = observer.stdout.take().unwrap();
    eventually(
        Duration::from_secs(20),
        "the observing device online",
        || async { (online(&s, "dtls-1").await? == Some(true)).then_some(()) },
    )
    .await;
    let api = s.api_url("/devices/dtls-1/commands");
    let admin = s.admin_token.clone();
    let sent = tokio::spawn(async move {
        http_client()
            .post(api)
            .bearer_auth(admin)
            .json(&json!({"name": "blink", "payload": "twice", "timeout_ms": 20000}))
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    });
    let note = notification(&mut printed, "blink").await;
    assert_eq!(note["payload"], "twice");
    let id = note["id"].as_str().unwrap().to_owned();
    let (ok, out) = coaps_client(&[
        "-m",
        "post",
        "-u",
        &identity,
        "-k",
        &key,
        "-t",
        "0",
        "-e",
        "blinked",
        &uri(&format!("/c/{id}")),
    ]);
    assert!(ok, "reply: {out}");
    let outcome = sent.await.unwrap();
    assert_eq!(outcome["status"], "delivered_replied", "{outcome}");
    assert_eq!(outcome["reply"], "blinked", "{outcome}");
    // Revoking the PSK ends the session and the registration: offline,
    // and the key opens no new session.
    let resp = http_client()
        .delete(s.api_url(&format!("/tokens/{credential}")))
        .bearer_auth(&s.admin_token)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    eventually(
        Duration::from_secs(20),
        "the revoked device offline",
        || async { (online(&s, "dtls-1").await? == Some(false)).then_some(()) },
    )
    .await;
    let (_, out) = coaps_client(&[
        "-v",
        "7",
        "-B",
        "3",
        "-m",
        "post",
        "-u",
        &identity,
        "-k",
        &key,
        "-e",
        "7",
        &uri("/t/volt"),
    ]);
    assert!(!out.contains("c:2.04"), "a revoked PSK still posts: {out}");
    assert_eq!(stored(&s, "dtls-1", "volt").await.len(), 1);
    let _ = observer.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_lwm2m_client_registers_is_observed_and_its_resources_become_series() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    if !clients_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    let coap = s.coap.expect("coap=");
    let token = http_device(&s, "lwm2m-1", json!({})).await;
    // The tenant names one more resource, a flow meter's (no IPSO default).
    let names = cli(&s, &["tenants", "lwm2m", "default", "3442/1120=flow_rate"]).await;
    assert!(names.contains("flow_rate"), "{names}");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lwm2m_aiocoap.py");
    let mut client = tokio::process::Command::new("python3")
        .arg(&script)
        .args([coap.ip().to_string(), coap.port().to_string(), token])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run python3");
    let mut input = client.stdin.take().unwrap();
    let mut lines = tokio::io::BufReader::new(client.stdout.take().unwrap()).lines();
    async fn next(
        lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
        what: &str,
    ) -> String {
        tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{what} within 30 s"))
            .unwrap()
            .unwrap_or_else(|| panic!("the client ended before {what}"))
    }
    assert!(
        next(&mut lines, "registered")
            .await
            .starts_with("OK registered ")
    );
    eventually(
        Duration::from_secs(20),
        "the registered device online",
        || async { (online(&s, "lwm2m-1").await? == Some(true)).then_some(()) },
    )
    .await;
    assert_eq!(next(&mut lines, "observed").await, "OK observed");
    // The first values, from the answers to the observations: text for
    // the temperature, TLV for the battery level.
    eventually(
        Duration::from_secs(20),
        "the first values stored",
        || async {
            let temperature = stored(&s, "lwm2m-1", "temperature").await;
            let battery = stored(&s, "lwm2m-1", "battery_level").await;
            let flow = stored(&s, "lwm2m-1", "flow_rate").await;
            (temperature.len() == 1 && battery.len() == 1 && flow.len() == 1).then_some(())
        },
    )
    .await;
    // Each notification is stored as a point of the device.
    for (n, value) in [22.25, 23.0, 24.75].into_iter().enumerate() {
        input.write_all(b"next\n").await.unwrap();
        assert_eq!(
            next(&mut lines, "a notification").await,
            format!("OK notified {value:?}")
        );
        eventually(
            Duration::from_secs(20),
            "the notified value stored",
            || async {
                let points = stored(&s, "lwm2m-1", "temperature").await;
                (points.len() == n + 2).then_some(())
            },
        )
        .await;
    }
    let mut q = s.query(&s.admin_token).await;
    let values: Vec<f64> = range_all(&mut q, "lwm2m-1", &["temperature"], 0, i64::MAX)
        .await
        .into_iter()
        .filter_map(|(_, _, v)| match v?.kind? {
            tributary_proto::v1::value::Kind::DoubleValue(f) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(values, [21.5, 22.25, 23.0, 24.75]);
    assert_eq!(next(&mut lines, "updated").await, "OK updated");
    // Device management through the command API.
    let command = |name: &'static str, payload: &'static str| {
        let (api, admin) = (
            s.api_url("/devices/lwm2m-1/commands"),
            s.admin_token.clone(),
        );
        async move {
            let resp = http_client()
                .post(api)
                .bearer_auth(admin)
                .json(&json!({"name": name, "payload": payload, "timeout_ms": 10000}))
                .send()
                .await
                .unwrap();
            let status = resp.status();
            (status, resp.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, read) = command("lwm2m:read", "/3/0/0").await;
    assert!(status.is_success(), "{status} {read}");
    assert_eq!(read["status"], "delivered_replied", "{read}");
    assert_eq!(read["reply"], "Tributary Labs", "{read}");
    let (status, write) = command("lwm2m:write", "/1/0/1 300").await;
    assert_eq!(write["status"], "delivered_replied", "{status} {write}");
    assert_eq!(next(&mut lines, "the write").await, "OK written 300");
    let (status, exec) = command("lwm2m:execute", "/3/0/4").await;
    assert_eq!(exec["status"], "delivered_replied", "{status} {exec}");
    assert_eq!(next(&mut lines, "the execute").await, "OK executed");
    // A resource larger than one datagram comes in blocks (Block2), put
    // back together by the server.
    let (status, serial) = command("lwm2m:read", "/3/0/2").await;
    assert_eq!(serial["status"], "delivered_replied", "{status}");
    assert_eq!(serial["reply"].as_str().map(str::len), Some(3000));
    assert!(serial["reply"].as_str().unwrap().chars().all(|c| c == 'S'));
    // An operator observes a resource with no default name, under a name
    // of their own: its first value is stored; then cancels.
    let (status, observe) = command("lwm2m:observe", "/3324/0/5700 loudness").await;
    assert_eq!(observe["status"], "delivered_replied", "{status} {observe}");
    eventually(
        Duration::from_secs(20),
        "the observed value stored",
        || async { (stored(&s, "lwm2m-1", "loudness").await.len() == 1).then_some(()) },
    )
    .await;
    let (_, cancel) = command("lwm2m:cancel", "/3324/0/5700").await;
    assert_eq!(cancel["reply"], "cancelled", "{cancel}");
    let (_, again) = command("lwm2m:cancel", "/3324/0/5700").await;
    assert_eq!(again["reply"], "not observed", "{again}");
    // A path the client does not have: its 4.04, refused as invalid.
    let (status, missing) = command("lwm2m:read", "/5/0/1").await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{missing}");
    assert!(missing.to_string().contains("4.04"), "{missing}");
    input.write_all(b"deregister\n").await.unwrap();
    assert_eq!(next(&mut lines, "deregistered").await, "OK deregistered");
    eventually(
        Duration::from_secs(20),
        "the deregistered device offline",
        || async { (online(&s, "lwm2m-1").await? == Some(false)).then_some(()) },
    )
    .await;
    assert!(client.wait().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_a_queue_mode_lwm2m_client_waits_for_its_next_update() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    if !clients_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start_with_env(
        dir.path(),
        &["--coap-addr".as_ref(), "127.0.0.1:0".as_ref()],
        &[("TRIBUTARY_COAP__LWM2M_QUEUE_WINDOW_SECS", "1")],
    );
    let coap = s.coap.expect("coap=");
    let token = http_device(&s, "sleepy-1", json!({})).await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lwm2m_aiocoap.py");
    let mut client = tokio::process::Command::new("python3")
        .arg(&script)
        .args([
            coap.ip().to_string(),
            coap.port().to_string(),
            token,
            "queue".into(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run python3");
    let mut input = client.stdin.take().unwrap();
    let mut lines = tokio::io::BufReader::new(client.stdout.take().unwrap()).lines();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("a line within 30 s")
            .unwrap()
            .expect("the client ended early")
    };
    assert!(next().await.starts_with("OK registered "));
    // The client's listening window (1 s here) passes: it is asleep.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (api, admin) = (
        s.api_url("/devices/sleepy-1/commands"),
        s.admin_token.clone(),
    );
    let sent = tokio::spawn(async move {
        http_client()
            .post(api)
            .bearer_auth(admin)
            .json(&json!({"name": "lwm2m:read", "payload": "/3/0/0", "timeout_ms": 30000}))
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    });
    // Held, not sent: the client has read nothing.
    eventually(Duration::from_secs(20), "the read held", || async {
        (metric(&s, "tributary_coap_lwm2m_held").await == Some(1.0)).then_some(())
    })
    .await;
    // It wakes and updates: the held read goes out, and is answered.
    input.write_all(b"wake\n").await.unwrap();
    let mut woke = [next().await, next().await];
    woke.sort();
    assert_eq!(woke, ["OK read manufacturer", "OK updated"]);
    let outcome = sent.await.unwrap();
    assert_eq!(outcome["status"], "delivered_replied", "{outcome}");
    assert_eq!(outcome["reply"], "Tributary Labs", "{outcome}");
    assert_eq!(metric(&s, "tributary_coap_lwm2m_held").await, Some(0.0));
    input.write_all(b"end\n").await.unwrap();
    assert_eq!(next().await, "OK deregistered");
    assert!(client.wait().await.unwrap().success());
}
