//! Nothing acknowledged is lost: across a clean restart, and across kill -9
//! in the middle of concurrent posts.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tributary_proto::v1 as pb;

/// Creates a device in the default tenant and returns its token.
async fn device(s: &Standalone, id: &str) -> String {
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

fn base_ns() -> i64 {
    tributary_core::time::now_ns() - 3_600_000_000_000
}

/// Reads back every point of `device`/`metric` and checks each acknowledged
/// (ts, value) is there with its exact value.
async fn assert_all_present(s: &Standalone, device: &str, acked: &[(i64, f64)]) {
    let mut q = s.query(&s.admin_token).await;
    let from = acked.iter().map(|a| a.0).min().unwrap_or(0);
    let to = acked.iter().map(|a| a.0).max().unwrap_or(0) + 1;
    let stored = eventually(
        Duration::from_secs(20),
        "every acknowledged point readable",
        || {
            let mut q = q.clone();
            async move {
                let pts = range_all(&mut q, device, &["v"], from, to).await;
                (pts.len() >= acked.len()).then_some(pts)
            }
        },
    )
    .await;
    let map: std::collections::HashMap<i64, Option<pb::Value>> =
        stored.into_iter().map(|(_, ts, v)| (ts, v)).collect();
    for (ts, v) in acked {
        assert_eq!(
            map.get(ts),
            Some(&f64v(*v)),
            "acknowledged point ts={ts} missing or changed"
        );
    }
    let _ = &mut q;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_every_acknowledged_point() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path());
    let token = device(&s, "meter-1").await;
    let http = reqwest::Client::new();
    let base = base_ns();
    let mut acked = Vec::new();
    for i in 0..200i64 {
        let ts = base + i * 1_000_000_000;
        let v = i as f64 * 0.5;
        let body = serde_json::json!({"ts": ts / 1_000_000, "values": {"v": v}});
        let r = http
            .post(s.url("/v1/telemetry"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        acked.push((ts - ts % 1_000_000, v));
    }
    assert!(s.stop().success());

    let s = Standalone::start(dir.path());
    assert_all_present(&s, "meter-1", &acked).await;
    // The admin token survives restarts and is not reprinted.
    assert!(s.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_acknowledged() {
    under_load_then(|s| {
        s.crash();
        "kill -9"
    })
    .await;
}

/// SIGTERM in the middle of concurrent posts: the server drains (finishes
/// in-flight appends and acknowledges them), exits cleanly well within a
/// pod's grace period, and every acknowledged point is there after a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_and_loses_nothing_acknowledged() {
    under_load_then(|s| {
        let started = std::time::Instant::now();
        let status = s.stop();
        let took = started.elapsed();
        assert!(status.success(), "clean exit after SIGTERM: {status}");
        // The Helm chart gives 45 s; the drain itself should take a fraction.
        assert!(
            took < Duration::from_secs(10),
            "exited {took:?} after SIGTERM"
        );
        "SIGTERM"
    })
    .await;
}

/// Runs 8 concurrent writers against a fresh standalone, stops it with
/// `stop` once 800 points are acknowledged, restarts it and checks every
/// acknowledged point is there with its value.
async fn under_load_then(stop: impl FnOnce(Standalone) -> &'static str) {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path());
    let devices = 8;
    let mut tokens = Vec::new();
    for d in 0..devices {
        tokens.push(device(&s, &format!("sensor-{d}")).await);
    }
    let http = reqwest::Client::new();
    let base = base_ns();
    type Acked = Vec<Vec<(i64, f64)>>;
    let acked: Arc<Mutex<Acked>> = Arc::new(Mutex::new(vec![Vec::new(); devices]));
    let url = s.url("/v1/telemetry");

    // Concurrent writers, each recording what got a 204.
    let mut writers = Vec::new();
    for (d, token) in tokens.into_iter().enumerate() {
        let (http, url, acked) = (http.clone(), url.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..100_000i64 {
                let ts_ms = base / 1_000_000 + i;
                let v = (d as f64) * 1000.0 + i as f64;
                let body = serde_json::json!({"ts": ts_ms, "values": {"v": v}});
                match http.post(&url).bearer_auth(&token).json(&body).send().await {
                    Ok(r) if r.status() == 204 => {
                        acked.lock().unwrap()[d].push((ts_ms * 1_000_000, v))
                    }
                    _ => return,
                }
            }
        }));
    }
    // Let them run until a good number of points are acknowledged, then crash.
    eventually(Duration::from_secs(60), "some acknowledged posts", || {
        let acked = acked.clone();
        async move { (acked.lock().unwrap().iter().map(Vec::len).sum::<usize>() >= 800).then_some(()) }
    })
    .await;
    let how = tokio::task::block_in_place(|| stop(s));
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    let total: usize = acked.iter().map(Vec::len).sum();
    eprintln!("{total} points acknowledged before {how}");

    let s = Standalone::start(dir.path());
    for (d, points) in acked.iter().enumerate() {
        assert_all_present(&s, &format!("sensor-{d}"), points).await;
    }
    assert!(s.stop().success());
}
