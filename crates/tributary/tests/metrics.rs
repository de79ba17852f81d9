//! The `/metrics` counters add up after a known load: every point the
//! ingest path acknowledged was received, every refused request is counted
//! under its reason, and the processor stored exactly what was
//! acknowledged (per tenant: a gap between received and stored would be
//! silent loss). gRPC calls are timed by service, method and status code.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use tributary_proto::v1 as pb;

/// Sums of every sample of each metric family in Prometheus text, keyed by
/// `name{labels}` and by bare `name`.
fn scrape(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        *out.entry(series.to_owned()).or_default() += v;
        let name = series.split('{').next().unwrap_or(series).to_owned();
        if name != series {
            *out.entry(name).or_default() += v;
        }
    }
    out
}

async fn metrics(s: &Standalone) -> BTreeMap<String, f64> {
    let text = reqwest::get(format!("http://{}/metrics", s.metrics))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    scrape(&text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_add_up_after_a_known_load() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path());
    let token = s
        .registry(&s.admin_token)
        .await
        .create_device(pb::CreateDeviceRequest {
            id: "meter-1".into(),
            issue_token: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .token
        .unwrap()
        .token;
    let http = reqwest::Client::new();
    let url = s.url("/v1/telemetry");
    let base_ms = tributary_core::time::now_ns() / 1_000_000 - 60_000;

    // 40 good requests of 3 points each.
    for i in 0..40i64 {
        let body = serde_json::json!({"ts": base_ms + i, "values": {"a": i, "b": 0.5, "c": true}});
        let r = http
            .post(&url)
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    // 7 refused: 5 unparseable bodies, 2 with a bad token.
    for _ in 0..5 {
        let r = http
            .post(&url)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
    }
    for _ in 0..2 {
        let r = http
            .post(&url)
            .bearer_auth("tbd_wrong")
            .json(&serde_json::json!({"values": {"a": 1}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }

    let m = eventually(
        Duration::from_secs(20),
        "the processor stored what was acknowledged",
        || async {
            let m = metrics(&s).await;
            (m.get("tributary_processor_points_stored_total")
                .copied()
                .unwrap_or(0.0)
                >= 120.0)
                .then_some(m)
        },
    )
    .await;
    let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
    assert_eq!(
        get("tributary_ingest_points_received_total"),
        120.0,
        "{m:#?}"
    );
    assert_eq!(get("tributary_ingest_points_acked_total"), 120.0);
    assert_eq!(
        get("tributary_processor_points_stored_total"),
        120.0,
        "stored = acked"
    );
    assert_eq!(
        get("tributary_ingest_points_received_total{tenant=\"default\"}"),
        get("tributary_processor_points_stored_total{tenant=\"default\"}"),
        "per tenant, received and stored agree"
    );
    assert_eq!(
        get("tributary_ingest_requests_rejected_total"),
        7.0,
        "every refusal is counted: {m:#?}"
    );
    assert!(
        get("tributary_ingest_requests_rejected_total{reason=\"invalid\"}") >= 5.0,
        "{m:#?}"
    );
    assert_eq!(get("tributary_processor_dead_lettered_records_total"), 0.0);
    assert!(
        !m.keys()
            .any(|k| k.starts_with("tributary_log_producer_queue_messages")),
        "the embedded log has no producer queue: {m:#?}"
    );

    // Operator queries: 3 QueryRange and 2 Latest that succeed, 1 Latest
    // with a bad token.
    let from_ns = (base_ms - 1) * 1_000_000;
    let to_ns = (base_ms + 100) * 1_000_000;
    let mut q = s.query(&s.admin_token).await;
    for _ in 0..3 {
        let points = range_all(&mut q, "meter-1", &["a"], from_ns, to_ns).await;
        assert_eq!(points.len(), 40);
    }
    for _ in 0..2 {
        let latest = q
            .latest(pb::LatestRequest {
                target: device_target("meter-1"),
                metrics: vec!["a".into()],
            })
            .await
            .expect("Latest")
            .into_inner();
        assert_eq!(latest.values.len(), 1);
    }
    let refused = s
        .query("not-a-token")
        .await
        .latest(pb::LatestRequest {
            target: device_target("meter-1"),
            metrics: vec![],
        })
        .await
        .expect_err("a bad token is refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    let m = metrics(&s).await;
    let calls = |service: &str, method: &str, code: &str| {
        m.get(&format!(
            "tributary_grpc_server_handling_seconds_count{{service=\"tributary.v1.{service}\",method=\"{method}\",code=\"{code}\"}}"
        ))
        .copied()
        .unwrap_or(0.0)
    };
    assert!(calls("QueryService", "QueryRange", "OK") >= 3.0, "{m:#?}");
    assert!(calls("QueryService", "Latest", "OK") >= 2.0, "{m:#?}");
    assert!(
        calls("QueryService", "Latest", "UNAUTHENTICATED") >= 1.0,
        "{m:#?}"
    );
    assert!(
        calls("RegistryService", "CreateDevice", "OK") >= 1.0,
        "{m:#?}"
    );
    assert!(s.stop().success());
}
