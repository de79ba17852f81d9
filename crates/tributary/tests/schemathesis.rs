//! The OpenAPI document (`/api/v1/openapi.json`) checked against a real
//! standalone by a third-party tool, schemathesis (PyPI, 4.x): every
//! operation, including the two event streams, fuzzed from the document,
//! and every response checked: no 5xx, every status documented, the
//! documented content type, bodies, SSE events and headers valid against
//! their schemas, 401 without a token, 405 (with `Allow`) for other
//! methods, and, in its stateful phase, that what was created can be read
//! and what was deleted cannot.
//!
//! Data is seeded first (a device with a token and telemetry, a rule that
//! fired an alert, a webhook, a silence) and named to schemathesis in a
//! config file, so that half its examples address things that exist rather
//! than answering 404. The DELETE operations would remove that data early
//! on, so the first run leaves them to its last (stateful) phase and a
//! second run fuzzes them on their own.
//!
//! Not checked: `positive_data_acceptance` (the document does not spell out
//! every rule the services apply: name alphabets, selector and time
//! syntax, page tokens from an earlier page) and `negative_data_rejection`
//! (utoipa documents a Rust `u32` as `format: int32`, which schemathesis
//! reads as at most 2^31-1, while the server takes any u32).
//!
//! The test fails when schemathesis is missing in CI (`CI` set;
//! `scripts/test.sh` installs it); elsewhere it says loudly that it was
//! skipped.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The checks run against every response (`schemathesis run --help`).
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_schema_conformance,response_headers_conformance,missing_required_header,\
unsupported_method,allow_header_conformance,ignored_auth,use_after_free,\
ensure_resource_availability";

/// Examples per operation and phase: bounds the run to a couple of minutes.
const MAX_EXAMPLES: &str = "30";

/// Longest a run may take before the test gives up on it.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// Whether the test may run; panics when schemathesis is missing in CI.
fn schemathesis_available() -> bool {
    let found = std::process::Command::new("schemathesis")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    if std::env::var_os("CI").is_none() {
        eprintln!(
            "SKIPPED: schemathesis not installed (`pip install 'schemathesis>=4,<5'`; scripts/test.sh does)"
        );
        return false;
    }
    panic!(
        "schemathesis not found and CI is set: `pip install 'schemathesis>=4,<5'` (scripts/test.sh does)"
    );
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// `method path` with a JSON body as the admin; the status and the body.
async fn call(
    s: &Standalone,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = client()
        .request(method, s.api_url(path))
        .bearer_auth(&s.admin_token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Telemetry for the device over HTTP ingest.
async fn ingest(s: &Standalone, device_token: &str, temp: f64) {
    let resp = client()
        .post(s.url("/v1/telemetry"))
        .bearer_auth(device_token)
        .json(&json!({"values": {"temp": temp}}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::NO_CONTENT,
        "{:?}",
        resp.text().await
    );
}

/// What the seeded data is called.
struct Seeded {
    device: String,
    credential: String,
    alert: String,
}

/// A device with a token and telemetry, a rule it breached (a firing
/// alert), a webhook, and a silence.
async fn seed(s: &Standalone) -> Seeded {
    use reqwest::Method;
    let (status, created) = call(
        s,
        Method::POST,
        "/devices",
        Some(json!({"id": "sensor-1", "labels": {"fleet": "west"}, "issue_token": true})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let token = created["token"]["token"].as_str().unwrap().to_owned();
    let credential = created["token"]["credential"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    ingest(s, &token, 21.5).await;

    let (status, rule) = call(
        s,
        Method::POST,
        "/alerting/rules",
        Some(
            json!({"name": "hot", "device": "sensor-1", "metric": "temp",
                    "condition": {"type": "threshold", "op": "above", "value": 80.0}}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{rule}");
    let (status, hook) = call(
        s,
        Method::POST,
        "/alerting/webhooks",
        Some(json!({"name": "ops", "url": "https://example.invalid/hook"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");

    // A breach: the rule fires an alert (once the processor has the rule).
    let alert = eventually(
        Duration::from_secs(30),
        "the seeded alert fires",
        || async {
            ingest(s, &token, 95.0).await;
            let (_, list) = call(s, Method::GET, "/alerting/alerts?state=firing", None).await;
            list["alerts"][0]["alert_id"].as_str().map(str::to_owned)
        },
    )
    .await;
    let (status, silence) = call(
        s,
        Method::POST,
        "/alerting/silences",
        Some(json!({"rule": "hot", "device": "sensor-1", "for": "1h"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{silence}");

    // Points to read back, as the stream's resume and the queries will.
    let (status, latest) = call(s, Method::GET, "/timeseries/latest?device=sensor-1", None).await;
    assert_eq!(status, StatusCode::OK, "{latest}");
    assert_eq!(latest["values"][0]["metric"], "temp", "{latest}");
    Seeded {
        device: "sensor-1".into(),
        credential,
        alert,
    }
}

/// The schemathesis config: dictionaries of the seeded names, offered for
/// half of the examples of the parameters that name them; event streams
/// read for 1 s each (they never end); and, when `deletes_last`, the DELETE
/// operations left out of the coverage and fuzzing phases.
fn config(seeded: &Seeded, deletes_last: bool) -> String {
    let mut c = format!(
        r#"[dictionaries.devices]
values = ["{device}"]
[dictionaries.names]
values = ["hot", "ops"]
[dictionaries.alerts]
values = ["{alert}"]
[dictionaries.credentials]
values = ["{credential}"]
[dictionaries.event-ids]
values = ["0"]

[parameters]
"path.device" = {{ dictionary = "devices", probability = 0.5 }}
"query.device" = {{ dictionary = "devices", probability = 0.5 }}
"path.name" = {{ dictionary = "names", probability = 0.5 }}
"path.rule" = {{ dictionary = "names", probability = 0.5 }}
"path.alert_id" = {{ dictionary = "alerts", probability = 0.5 }}
"path.id" = {{ dictionary = "credentials", probability = 0.5 }}
"header.Last-Event-ID" = {{ dictionary = "event-ids", probability = 0.5 }}

[[operations]]
include-path-regex = "/stream$"
request-timeout = 1
"#,
        device = seeded.device,
        alert = seeded.alert,
        credential = seeded.credential,
    );
    if deletes_last {
        c.push_str(
            r#"
[[operations]]
include-method = "DELETE"
phases.coverage.enabled = false
phases.fuzzing.enabled = false
"#,
        );
    }
    c
}

/// Runs `schemathesis run` against the standalone with `config` and
/// `extra` flags; panics with its output when it finds anything.
async fn run(s: &Standalone, dir: &Path, name: &str, config: &str, extra: &[&str]) {
    let config_path = dir.join(format!("{name}.toml"));
    std::fs::write(&config_path, config).unwrap();
    let header = format!("Authorization: Bearer {}", s.admin_token);
    let mut args = vec!["--config-file", config_path.to_str().unwrap(), "run"];
    let url = s.api_url("/openapi.json");
    args.extend_from_slice(&[&url, "--header", &header, "--checks", CHECKS]);
    args.extend_from_slice(&["--max-examples", MAX_EXAMPLES, "--seed", "1"]);
    // One worker: with more, hypothesis parses source from several threads
    // and CPython 3.11 fails ("AST constructor recursion depth mismatch").
    args.extend_from_slice(&["--workers", "1", "--request-timeout", "20"]);
    args.extend_from_slice(&["--generation-database", "none", "--no-color"]);
    args.extend_from_slice(extra);
    eprintln!(
        "schemathesis ({name}): schemathesis {}",
        args.join(" ").replace(&s.admin_token, "$ADMIN_TOKEN")
    );
    let mut cmd = tokio::process::Command::new("schemathesis");
    cmd.args(&args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let started = Instant::now();
    let out = tokio::time::timeout(RUN_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis ({name}) ran longer than {RUN_TIMEOUT:?}"))
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis ({name}) found problems ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // The summary, for the log.
    let lines: Vec<&str> = stdout.lines().collect();
    let from = lines
        .iter()
        .rposition(|l| l.contains("SUMMARY"))
        .unwrap_or(lines.len().saturating_sub(20));
    eprintln!(
        "schemathesis ({name}) passed in {:?}:\n{}",
        started.elapsed(),
        lines[from..].join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_holds_against_the_running_server() {
    if !schemathesis_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let s = Standalone::start(&data);
    let seeded = seed(&s).await;

    // The event streams are there (schemathesis reads each for a second).
    let mut resp = client()
        .get(s.api_url("/stream?device=sensor-1"))
        .bearer_auth(&s.admin_token)
        .header("Last-Event-ID", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let first = tokio::time::timeout(Duration::from_secs(15), resp.chunk())
        .await
        .expect("the stored points within 15 s")
        .unwrap()
        .expect("the stream stays open");
    let first = String::from_utf8_lossy(&first);
    assert!(first.starts_with("event: points\n"), "{first}");
    drop(resp);
    let resp = client()
        .get(s.api_url("/alerting/alerts/stream"))
        .bearer_auth(&s.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    drop(resp);

    // Every operation; the DELETEs only in the last, stateful phase.
    run(&s, dir.path(), "all", &config(&seeded, true), &[]).await;
    // The DELETEs, fuzzed on their own now that nothing comes after them.
    run(
        &s,
        dir.path(),
        "deletes",
        &config(&seeded, false),
        &[
            "--include-method",
            "DELETE",
            "--phases",
            "examples,coverage,fuzzing",
        ],
    )
    .await;
    assert!(s.stop().success());
}
