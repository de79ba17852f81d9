//! The web console in a real browser: Debian's headless Chromium, driven by
//! playwright-core (`crates/console/browser-test/console.test.mjs`), against
//! a real standalone. The script signs in, creates a device and copies its
//! token, sees a point posted with curl appear in the device's plot within
//! 2 s, switches the plot to 30 days, draws 30 days of a 10 s series from
//! aggregates (within 100 ms of the data arriving), sends a command that
//! this test's MQTT device answers, and signs out. It checks the first
//! load (under 300 ms and 500 KB) on the way.
//!
//! `UPDATE_SCREENSHOTS=1` writes its screenshots to `docs/console/`.
//!
//! The test fails when Node.js, Chromium or playwright-core is missing in
//! CI (`CI` set; `scripts/test.sh` installs them); elsewhere it says loudly
//! that it was skipped.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::device::Device;
use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

/// The seeded series: one point every 10 s for 30 days.
const SEED_STEP_MS: i64 = 10_000;
const SEED_DAYS: i64 = 30;

fn browser_test_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../console/browser-test")
}

/// Whether the browser test can run; panics when it cannot in CI.
fn browser_available() -> bool {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let missing: Vec<&str> = [
        (
            std::process::Command::new("node")
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success()),
            "node",
        ),
        (Path::new(&chromium).exists(), "chromium"),
        (
            std::process::Command::new("openssl")
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success()),
            "openssl",
        ),
        (
            ["playwright-core", "axe-core"].iter().all(|m| {
                browser_test_dir()
                    .join(format!("node_modules/{m}/package.json"))
                    .exists()
            }),
            "playwright-core and axe-core (npm ci in crates/console/browser-test)",
        ),
    ]
    .into_iter()
    .filter(|(ok, _)| !ok)
    .map(|(_, what)| what)
    .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "the console's browser test needs {} (scripts/test.sh installs them)",
        missing.join(", ")
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

/// `SEED_DAYS` of `v` every `step_ms` up to now, in batches.
async fn seed(s: &Standalone, token: &str, step_ms: i64) -> u64 {
    let now_ms = tributary_core::time::now_ns() / 1_000_000;
    let from_ms = now_ms - SEED_DAYS * 86_400_000 + 3_600_000;
    let times: Vec<i64> = (0..)
        .map(|i| from_ms + i * step_ms)
        .take_while(|t| *t < now_ms)
        .collect();
    for batch in times.chunks(5000) {
        let points: Vec<Value> = batch
            .iter()
            .map(|t| json!({"ts": t, "values": {"v": 20.0 + ((t / 3_600_000) % 24) as f64 + (t % 7) as f64 / 10.0}}))
            .collect();
        let r = http_client()
            .post(s.url("/v1/telemetry"))
            .bearer_auth(token)
            .json(&points)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    }
    times.len() as u64
}

/// Points of `device`'s `v` that the aggregate API counts over 30 days.
async fn counted(s: &Standalone, device: &str) -> u64 {
    let r: Value = http_client()
        .get(s.api_url("/timeseries/aggregate"))
        .bearer_auth(&s.admin_token)
        .query(&[
            ("device", device),
            ("metrics", "v"),
            ("from", "-31d"),
            ("window", "1d"),
            ("functions", "count"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["series"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["buckets"].as_array().cloned().unwrap_or_default())
        .map(|b| b["count"].as_u64().unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    if !browser_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tributary.toml");
    std::fs::write(&config, "[query]\nrollup_min_age_secs = 0\n").unwrap();
    let s = Standalone::start_with(
        &dir.path().join("data"),
        &["--config".as_ref(), config.as_os_str()],
    );
    // 30 days of a 10 s series, and a coarser one in another fleet.
    let seeded = http_device(&s, "seeded-1", json!({"fleet": "f0"})).await;
    let other = http_device(&s, "seeded-2", json!({"fleet": "f1"})).await;
    let n = seed(&s, &seeded, SEED_STEP_MS).await;
    let m = seed(&s, &other, 600_000).await;
    for (id, want) in [("seeded-1", n), ("seeded-2", m)] {
        eventually(
            Duration::from_secs(120),
            "the seeded points are stored",
            || async { (counted(&s, id).await == want).then_some(()) },
        )
        .await;
    }

    let shots = std::env::var_os("UPDATE_SCREENSHOTS")
        .map(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/console"))
        .unwrap_or_else(|| dir.path().join("shots"));
    let mut node = tokio::process::Command::new("node")
        .arg("console.test.mjs")
        .current_dir(browser_test_dir())
        .env("BASE_URL", format!("http://{}", s.api))
        .env("OPERATOR_TOKEN", s.operator_token("default", "operator"))
        .env("ADMIN_TOKEN", &s.admin_token)
        .env("SEEDED_DEVICE", "seeded-1")
        .env("SHOTS_DIR", &shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start node");
    let mut stdin = node.stdin.take().unwrap();
    let mut out = BufReader::new(node.stdout.take().unwrap()).lines();
    let mut err = node.stderr.take().unwrap();
    let stderr = tokio::spawn(async move {
        let mut text = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut err, &mut text).await;
        text
    });
    let mut transcript = Vec::new();
    let run = tokio::time::timeout(Duration::from_secs(180), async {
        while let Some(line) = out.next_line().await.unwrap() {
            eprintln!("browser: {line}");
            if let Some(token) = line.strip_prefix("TOKEN ") {
                // The device the console created, online and answering.
                let mut d = Device::connect(&s, "console-1", token, 0).await;
                d.subscribe_commands("console-1").await;
                d.answer_forever();
                stdin.write_all(b"READY\n").await.unwrap();
            }
            transcript.push(line);
        }
        node.wait().await.unwrap()
    })
    .await;
    let stderr = stderr.await.unwrap_or_default();
    let status = run.unwrap_or_else(|_| panic!("the browser test ran over 3 minutes\n{stderr}"));
    assert!(
        status.success(),
        "the browser test failed ({status}):\n{}\n--- stderr ---\n{stderr}",
        transcript.join("\n")
    );
    assert_eq!(transcript.last().map(String::as_str), Some("STEP done"));
    for metric in transcript.iter().filter(|l| l.starts_with("METRIC ")) {
        eprintln!("{metric}");
    }
    s.stop();
}
