//! The HTTP frontend in-process (axum `oneshot`) over a real embedded log:
//! status codes, problem documents, limits, gzip, credentials.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;
use tributary_core::Limits;
use tributary_core::directory::{Authenticator, DirectoryError, Principal, TenantPolicy};
use tributary_core::envelope::Envelope;
use tributary_ingest::{IngestConfig, IngestMetrics, Ingestor};
use tributary_log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use tributary_log::{ConsumerOptions, Log, StartFrom};

/// Two fixed credentials: a device token and a tenant ingest token.
#[derive(Debug)]
struct FixedAuth;

#[async_trait]
impl Authenticator for FixedAuth {
    async fn authenticate(&self, token: &str) -> Result<Principal, DirectoryError> {
        match token {
            "dev" => Ok(Principal::Device {
                tenant: "acme".into(),
                device: "d1".into(),
            }),
            "ingest" => Ok(Principal::TenantIngest {
                tenant: "acme".into(),
                credential_id: "c1".into(),
            }),
            _ => Err(DirectoryError::Unauthenticated),
        }
    }
    async fn tenant_policy(&self, _tenant: &str) -> Result<TenantPolicy, DirectoryError> {
        Ok(TenantPolicy {
            auto_provision: true,
            device_tag: "host".into(),
            ..Default::default()
        })
    }
    async fn ensure_device(
        &self,
        _t: &str,
        device: &str,
        _l: &BTreeMap<String, String>,
    ) -> Result<(), DirectoryError> {
        if device == "blocked" {
            Err(DirectoryError::Forbidden(
                "device blocked is disabled".into(),
            ))
        } else {
            Ok(())
        }
    }
}

struct Rig {
    _dir: tempfile::TempDir,
    log: Arc<EmbeddedLog>,
    app: axum::Router,
}

async fn rig(limits: Limits, max_inflight_bytes: usize) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path().join("log"), EmbeddedLogConfig::new("t", 2))
        .await
        .unwrap();
    let ingestor = Ingestor::new(
        log.clone(),
        Arc::new(FixedAuth),
        IngestConfig {
            limits,
            max_inflight_bytes,
            ..IngestConfig::default()
        },
        IngestMetrics::default(),
    );
    Rig {
        _dir: dir,
        log,
        app: tributary_ingest_http::router(ingestor),
    }
}

async fn send(
    app: &axum::Router,
    req: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (status, headers, json)
}

fn post(uri: &str, auth: Option<&str>, content_type: &str, body: impl Into<Body>) -> Request<Body> {
    let mut b = Request::post(uri).header("content-type", content_type);
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    b.body(body.into()).unwrap()
}

async fn all_envelopes(log: &EmbeddedLog) -> Vec<Envelope> {
    let mut c = log
        .consumer(ConsumerOptions {
            group: None,
            start: StartFrom::Earliest,
        })
        .await
        .unwrap();
    let recs = c.poll(1000, Duration::from_millis(200)).await.unwrap();
    recs.iter()
        .map(|r| Envelope::decode(&r.value, &Limits::default()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_is_durable_before_204() {
    let r = rig(Limits::default(), 1 << 20).await;
    let (status, _, _) = send(
        &r.app,
        post(
            "/v1/telemetry",
            Some("Bearer dev"),
            "application/json",
            r#"{"ts": 1000, "values": {"t": 1.5}}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // By the time 204 came back, the record is in the log.
    let envs = all_envelopes(&r.log).await;
    assert_eq!(envs.len(), 1);
    assert_eq!(
        (envs[0].tenant.as_str(), envs[0].device.as_str()),
        ("acme", "d1")
    );
    assert_eq!(envs[0].points[0].ts_ns, 1_000_000_000);
    assert_eq!(envs[0].content_type, "application/json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_checked() {
    let r = rig(Limits::default(), 1 << 20).await;
    let body = r#"{"values": {"t": 1}}"#;
    let (s, _, p) = send(
        &r.app,
        post("/v1/telemetry", None, "application/json", body),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(p["status"], 401);
    let (s, _, _) = send(
        &r.app,
        post(
            "/v1/telemetry",
            Some("Bearer nope"),
            "application/json",
            body,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // A tenant ingest token can't post device JSON, and a device token can't
    // write line protocol.
    let (s, _, _) = send(
        &r.app,
        post(
            "/v1/telemetry",
            Some("Bearer ingest"),
            "application/json",
            body,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = send(
        &r.app,
        post("/write", Some("Token dev"), "text/plain", "m,host=a v=1"),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // InfluxDB 1.x credentials: Basic auth password, or the `p` parameter.
    let (s, _, _) = send(
        &r.app,
        post(
            "/write",
            Some("Basic dTppbmdlc3Q="),
            "text/plain",
            "m,host=a v=1",
        ),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "Basic u:ingest");
    let (s, _, _) = send(
        &r.app,
        post(
            "/write?db=x&u=u&p=ingest",
            None,
            "text/plain",
            "m,host=a v=2",
        ),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    // A disabled device named by a line is refused.
    let (s, _, p) = send(
        &r.app,
        post(
            "/write",
            Some("Token ingest"),
            "text/plain",
            "m,host=blocked v=1",
        ),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(p["detail"].as_str().unwrap().contains("blocked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_protocol_uses_the_tenant_device_tag_and_precision() {
    let r = rig(Limits::default(), 1 << 20).await;
    let body = "cpu,host=h1,rack=r7 user=1.5,idle=98i 1700000000\ncpu,host=h2 user=2 1700000001\n";
    let (s, _, _) = send(
        &r.app,
        post(
            "/api/v2/write?org=o&bucket=b&precision=s",
            Some("Token ingest"),
            "text/plain",
            body,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let envs = all_envelopes(&r.log).await;
    let mut devices: Vec<_> = envs.iter().map(|e| e.device.clone()).collect();
    devices.sort();
    assert_eq!(devices, ["h1", "h2"]);
    let h1 = envs.iter().find(|e| e.device == "h1").unwrap();
    assert_eq!(h1.points.len(), 2);
    assert!(
        h1.points
            .iter()
            .all(|p| p.ts_ns == 1_700_000_000_000_000_000)
    );
    assert!(h1.points.iter().any(|p| p.metric == "cpu.user"));
    // A request parameter overrides the tag.
    let (s, _, p) = send(
        &r.app,
        post(
            "/write?device_tag=rack",
            Some("Token ingest"),
            "text/plain",
            "cpu,host=h1 v=1",
        ),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(p["detail"].as_str().unwrap().contains("rack"), "{p}");
    let (s, _, p) = send(
        &r.app,
        post(
            "/write?precision=fortnight",
            Some("Token ingest"),
            "text/plain",
            "cpu,host=h1 v=1",
        ),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(p["location"], "precision");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_get_problem_documents_naming_the_place() {
    let r = rig(Limits::default(), 1 << 20).await;
    let (s, h, p) = send(
        &r.app,
        post(
            "/write",
            Some("Token ingest"),
            "text/plain",
            "m,host=a v=1\nm,host=a v=oops\n",
        ),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(h["content-type"], "application/problem+json");
    assert!(p["location"].as_str().unwrap().starts_with("line 2"), "{p}");
    assert!(p["type"].as_str().unwrap().ends_with("/invalid-body"));

    let (s, _, p) = send(
        &r.app,
        post(
            "/v1/telemetry",
            Some("Bearer dev"),
            "application/json",
            r#"{"values": {"t": null}}"#,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(p["detail"].as_str().unwrap().contains("values.t"), "{p}");

    let (s, _, _) = send(
        &r.app,
        post("/v1/telemetry", Some("Bearer dev"), "text/csv", "a,b"),
    )
    .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Nothing of a refused request reached the log.
    assert!(all_envelopes(&r.log).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_limits_and_gzip() {
    let limits = Limits {
        max_body_bytes: 1024,
        max_points_per_request: 3,
        ..Limits::default()
    };
    let r = rig(limits, 1 << 20).await;
    let big = format!(r#"{{"values": {{"s": "{}"}}}}"#, "x".repeat(2000));
    let (s, _, _) = send(
        &r.app,
        post("/v1/telemetry", Some("Bearer dev"), "application/json", big),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);

    let many = r#"{"values": {"a": 1, "b": 2, "c": 3, "d": 4}}"#;
    let (s, _, _) = send(
        &r.app,
        post(
            "/v1/telemetry",
            Some("Bearer dev"),
            "application/json",
            many,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "more points than allowed");

    // gzip works, and a small body that inflates past the limit is refused.
    let gz = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    let mut req = post(
        "/v1/telemetry",
        Some("Bearer dev"),
        "application/json",
        gz(br#"{"values": {"a": 1}}"#),
    );
    req.headers_mut()
        .insert("content-encoding", "gzip".parse().unwrap());
    assert_eq!(send(&r.app, req).await.0, StatusCode::NO_CONTENT);

    let bomb = gz(&vec![b' '; 512 * 1024]);
    assert!(bomb.len() < 1024);
    let mut req = post(
        "/v1/telemetry",
        Some("Bearer dev"),
        "application/json",
        bomb,
    );
    req.headers_mut()
        .insert("content-encoding", "gzip".parse().unwrap());
    assert_eq!(send(&r.app, req).await.0, StatusCode::PAYLOAD_TOO_LARGE);

    let mut req = post(
        "/v1/telemetry",
        Some("Bearer dev"),
        "application/json",
        "{}",
    );
    req.headers_mut()
        .insert("content-encoding", "br".parse().unwrap());
    assert_eq!(send(&r.app, req).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spent_inflight_budget_means_503_with_retry_after() {
    // A budget of 1 KiB: a declared 4 KiB body cannot be admitted.
    let r = rig(Limits::default(), 1024).await;
    let body = format!(r#"{{"values": {{"s": "{}"}}}}"#, "x".repeat(4000));
    let (s, h, p) = send(
        &r.app,
        post(
            "/v1/telemetry",
            Some("Bearer dev"),
            "application/json",
            body,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h["retry-after"], "1");
    assert_eq!(p["status"], 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_outside_retention_are_refused_not_acknowledged() {
    let day = 86_400_000_000_000i64;
    let r = rig(
        Limits {
            max_point_age_ns: 30 * day,
            ..Limits::default()
        },
        1 << 20,
    )
    .await;
    let old = r#"{"ts": "2001-01-01T00:00:00Z", "values": {"t": 1}}"#;
    let (s, _, p) = send(
        &r.app,
        post("/v1/telemetry", Some("Bearer dev"), "application/json", old),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(p["location"], "d1/t");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("older than the retention"),
        "{p}"
    );
    let future = format!(
        r#"{{"ts": {}, "values": {{"t": 1}}}}"#,
        (tributary_core::time::now_ns() + 30 * day) / 1_000_000
    );
    let (s, _, p) = send(
        &r.app,
        post(
            "/v1/telemetry",
            Some("Bearer dev"),
            "application/json",
            future,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{p}");
    assert!(all_envelopes(&r.log).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cbor_and_senml_cbor_are_taken_like_their_json_twins() {
    let r = rig(Limits::default(), 1 << 20).await;
    // [{0: "temp", 2: 21.5}] and {"values": {"x": 1}}.
    let senml = vec![
        0x81u8, 0xa2, 0x00, 0x64, b't', b'e', b'm', b'p', 0x02, 0xf9, 0x4d, 0x60,
    ];
    let doc = vec![
        0xa1u8, 0x66, b'v', b'a', b'l', b'u', b'e', b's', 0xa1, 0x61, b'x', 0x01,
    ];
    for (media, body) in [("application/senml+cbor", senml), ("application/cbor", doc)] {
        let (status, _, problem) = send(
            &r.app,
            post("/v1/telemetry", Some("Bearer dev"), media, body),
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{media}: {problem}");
    }
    let (status, _, problem) = send(
        &r.app,
        post(
            "/v1/telemetry",
            Some("Bearer dev"),
            "application/senml+cbor",
            vec![0x81u8, 0xa1, 0x02],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(problem.to_string().contains("byte 3"), "{problem}");
    let types: Vec<String> = all_envelopes(&r.log)
        .await
        .into_iter()
        .map(|e| e.content_type)
        .collect();
    assert_eq!(types, ["application/senml+cbor", "application/cbor"]);
}
