//! Alert latency: from a breaching point being durable (its HTTP 204) to
//! the webhook receiving the transition, through a running standalone
//! started with `--webhooks-allow-private`.
//!
//! ```sh
//! cargo run --release -p tributary --example alert_latency_bench -- \
//!     --http http://127.0.0.1:8080 --grpc http://127.0.0.1:50051 \
//!     --token "$(cat data/admin.token)" --transitions 300
//! ```
//!
//! It registers device `latency-1`, a webhook on a receiver in this
//! process, and a rule `level > 50`; waits until the processor judges
//! (the rules are read every 5 s); then sends points alternating 100 and 0,
//! 50 ms apart, each a transition (firing, resolved), and prints the
//! latency percentiles.

#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tributary_proto::v1 as pb;
use tributary_proto::v1::registry_service_client::RegistryServiceClient;
use tributary_proto::v1::rules_service_client::RulesServiceClient;

fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    r
}

/// When each transition (by its point's timestamp) reached the receiver.
type Arrivals = Arc<Mutex<HashMap<i64, Instant>>>;

#[tokio::main]
async fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        argv.iter()
            .position(|a| a == name)
            .and_then(|i| argv.get(i + 1))
            .cloned()
    };
    let http_url = flag("--http").unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let grpc = flag("--grpc").unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let admin = flag("--token").expect("--token ADMIN_TOKEN");
    let transitions: usize = flag("--transitions").map_or(300, |v| v.parse().expect("N"));

    let arrivals: Arrivals = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(a): axum::extract::State<Arrivals>, body: String| async move {
                    let at = Instant::now();
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body)
                        && let Some(ts) = v["at_ns"].as_i64()
                    {
                        a.lock().unwrap().entry(ts).or_insert(at);
                    }
                    axum::http::StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state(arrivals.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let channel = Channel::from_shared(grpc)
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut registry = RegistryServiceClient::new(channel.clone());
    let mut rules = RulesServiceClient::new(channel);
    let run = tributary_auth::random_id();
    let device = format!("latency-{run}");
    let token = registry
        .create_device(authed(
            pb::CreateDeviceRequest {
                id: device.clone(),
                issue_token: true,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("CreateDevice")
        .into_inner()
        .token
        .expect("token")
        .token;
    rules
        .create_webhook(authed(
            pb::CreateWebhookRequest {
                webhook: Some(pb::Webhook {
                    name: format!("latency-{run}"),
                    url: format!("http://{receiver}/hook"),
                    rules: vec![format!("latency-{run}")],
                    ..Default::default()
                }),
            },
            &admin,
        ))
        .await
        .expect("CreateWebhook");
    rules
        .create_rule(authed(
            pb::CreateRuleRequest {
                rule: Some(pb::Rule {
                    name: format!("latency-{run}"),
                    target: Some(pb::rule::Target::Device(device.clone())),
                    metric: "level".into(),
                    kind: Some(pb::rule::Kind::Threshold(pb::ThresholdRule {
                        op: pb::threshold_rule::Op::Above as i32,
                        value: 50.0,
                        high: 0.0,
                        hysteresis: 0.0,
                    })),
                    ..Default::default()
                }),
            },
            &admin,
        ))
        .await
        .expect("CreateRule");
    let http = reqwest::Client::new();
    let post = |ts_ns: i64, value: f64| {
        let (http, url, token) = (
            http.clone(),
            format!("{http_url}/v1/telemetry"),
            token.clone(),
        );
        async move {
            let r = http
                .post(url)
                .bearer_auth(token)
                .json(&serde_json::json!([{"ts": ts_ns / 1_000_000, "values": {"level": value}}]))
                .send()
                .await
                .expect("POST");
            assert_eq!(r.status(), 204);
            Instant::now()
        }
    };
    // Until the rules are in force: a breach, then a clear, until one lands.
    // Millisecond timestamps: the JSON payload carries `ts` in ms.
    let mut ts = tributary_core::time::now_ns() / 1_000_000 * 1_000_000;
    let mut high = true;
    let warm = Instant::now();
    while arrivals.lock().unwrap().is_empty() {
        assert!(
            warm.elapsed() < Duration::from_secs(30),
            "no alert within 30 s"
        );
        ts += 1_000_000;
        post(ts, if high { 100.0 } else { 0.0 }).await;
        high = !high;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    arrivals.lock().unwrap().clear();
    // The measured transitions.
    let mut sent = Vec::with_capacity(transitions);
    for _ in 0..transitions {
        ts += 1_000_000;
        let durable = post(ts, if high { 100.0 } else { 0.0 }).await;
        high = !high;
        sent.push((ts, durable));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while arrivals.lock().unwrap().len() < transitions && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = arrivals.lock().unwrap().clone();
    let mut lat: Vec<Duration> = sent
        .iter()
        .filter_map(|(ts, durable)| got.get(ts).map(|at| at.saturating_duration_since(*durable)))
        .collect();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
            * 1e3
    };
    println!(
        "transitions={transitions} delivered={} latency_ms p50={:.1} p90={:.1} p99={:.1} max={:.1}",
        lat.len(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
}
