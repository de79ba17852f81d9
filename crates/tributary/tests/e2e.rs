//! End to end: a real standalone process, real HTTP and gRPC clients.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use tributary_proto::v1 as pb;

const HOUR_NS: i64 = 3_600_000_000_000;
const MS: i64 = 1_000_000;

fn base_ns() -> i64 {
    // An hour boundary two hours ago: inside retention, windows predictable.
    let now = tributary_core::time::now_ns();
    (now / HOUR_NS) * HOUR_NS - 2 * HOUR_NS
}

async fn create_device(s: &Standalone, id: &str, labels: &[(&str, &str)]) -> String {
    let resp = s
        .registry(&s.admin_token)
        .await
        .create_device(pb::CreateDeviceRequest {
            tenant: "acme".into(),
            id: id.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            metadata: Default::default(),
            issue_token: true,
        })
        .await
        .expect("CreateDevice")
        .into_inner();
    resp.token.expect("token issued").token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path());
    let http = reqwest::Client::new();
    let base = base_ns();

    // Tenant, devices and tokens over gRPC, as the admin.
    let mut reg = s.registry(&s.admin_token).await;
    reg.create_tenant(pb::CreateTenantRequest {
        name: "acme".into(),
        display_name: "Acme Corp".into(),
        settings: Some(pb::TenantSettings {
            auto_provision: true,
            device_tag: "device".into(),
            quotas: Default::default(),
            retention: Default::default(),
            lwm2m_metrics: Default::default(),
        }),
    })
    .await
    .expect("CreateTenant");
    let t1 = create_device(&s, "truck-1", &[("fleet", "West"), ("type", "truck")]).await;
    let t2 = create_device(&s, "truck-2", &[("fleet", "East"), ("type", "truck")]).await;
    let ingest = reg
        .issue_token(pb::IssueTokenRequest {
            tenant: "acme".into(),
            kind: pb::CredentialKind::TenantIngestToken as i32,
            device: String::new(),
            name: "telegraf".into(),
            ttl_seconds: 0,
        })
        .await
        .expect("IssueToken")
        .into_inner()
        .token;
    // An operator token scoped to acme would be issued by an identity
    // provider; the admin acts in acme by naming it.
    let mut q = s.query(&s.admin_token).await;
    let acme = |t: Option<pb::Target>| {
        t.map(|mut t| {
            t.tenant = "acme".into();
            t
        })
    };

    // Subscribe before posting, to see the points arrive live.
    let mut live = q
        .subscribe(pb::SubscribeRequest {
            target: acme(selector_target("fleet=West")),
            metrics: vec![],
        })
        .await
        .expect("Subscribe")
        .into_inner();

    // JSON: every value type, explicit epoch-ms timestamps.
    let body = serde_json::json!([
        {"ts": base / MS, "values": {"load": 1.5, "door": true, "count": 3, "fw": "1.2"}},
        {"ts": (base + 60_000 * MS) / MS, "values": {"load": 2.5}}
    ]);
    let r = http
        .post(s.url("/v1/telemetry"))
        .bearer_auth(&t1)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());

    // SenML with base name, base time and base value resolved.
    let senml = serde_json::json!([
        {"bn": "env.", "bt": (base as f64) / 1e9, "n": "temp", "u": "Cel", "v": 20.0},
        {"n": "temp", "t": 10, "v": 21.0},
        {"n": "hum", "v": 40}
    ]);
    let r = http
        .post(s.url("/v1/telemetry"))
        .bearer_auth(&t2)
        .header("content-type", "application/senml+json")
        .body(senml.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());

    // Line protocol with a tenant ingest token, gzip-compressed, including a
    // device that doesn't exist yet (auto-provisioned with its tags as labels).
    let lines = format!(
        "truck,device=truck-1,fleet=West load=4.5 {}\ntruck,device=truck-3,fleet=West,type=truck load=3.5,speed=80i {}\n",
        base + 2 * 60_000 * MS,
        base + 2 * 60_000 * MS
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(lines.as_bytes()).unwrap();
    let r = http
        .post(s.url("/api/v2/write?org=acme&bucket=b&precision=ns"))
        .header("authorization", format!("Token {ingest}"))
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());

    // Range: exact values of every type, in order.
    let points = eventually(Duration::from_secs(10), "truck-1 points stored", || {
        let mut q = q.clone();
        async move {
            let mut req = pb::QueryRangeRequest {
                target: acme(device_target("truck-1")),
                metrics: vec![],
                from_ns: base,
                to_ns: base + HOUR_NS,
                limit: 100,
                order: pb::Order::Asc as i32,
                page_token: String::new(),
            };
            req.target.as_mut().unwrap().tenant = "acme".into();
            let resp = q.query_range(req).await.ok()?.into_inner();
            let pts: Vec<_> = resp
                .series
                .into_iter()
                .flat_map(|s| {
                    s.points
                        .into_iter()
                        .map(move |p| (s.metric.clone(), p.ts_ns, p.value))
                })
                .collect();
            (pts.len() == 6).then_some(pts)
        }
    })
    .await;
    assert_eq!(
        points,
        vec![
            ("count".to_string(), base, i64v(3)),
            ("door".to_string(), base, boolv(true)),
            ("fw".to_string(), base, strv("1.2")),
            ("load".to_string(), base, f64v(1.5)),
            ("load".to_string(), base + 60_000 * MS, f64v(2.5)),
            ("truck.load".to_string(), base + 120_000 * MS, f64v(4.5)),
        ]
    );

    // SenML resolved names, times and values.
    let env = range_all_in(&mut q, "acme", "truck-2", base, base + HOUR_NS).await;
    // SenML `v` is a number, stored as a double.
    assert_eq!(
        env,
        vec![
            ("env.hum".to_string(), base, f64v(40.0)),
            ("env.temp".to_string(), base, f64v(20.0)),
            ("env.temp".to_string(), base + 10_000_000_000, f64v(21.0)),
        ]
    );

    // Aggregate by selector, grouped by label: average truck.load per fleet.
    // These points are over an hour old, so the hour tier answers: it holds
    // them once the processor's next rollup flush (within 5 s) has run.
    let request = pb::AggregateRequest {
        target: acme(selector_target("type=truck")),
        metrics: vec!["truck.load".into()],
        from_ns: base,
        to_ns: base + HOUR_NS,
        window: "1h".into(),
        functions: vec![
            pb::AggregateFunction::Avg as i32,
            pb::AggregateFunction::Count as i32,
        ],
        group_by_label: "fleet".into(),
        ..Default::default()
    };
    let agg = eventually(Duration::from_secs(20), "the fleet aggregate", || {
        let (mut q, request) = (q.clone(), request.clone());
        async move {
            let agg = q.aggregate(request).await.expect("Aggregate").into_inner();
            let west = agg.series.iter().find(|s| s.group == "West")?;
            (west.devices == 2 && west.buckets.first()?.count == 2).then_some(agg)
        }
    })
    .await;
    let west = agg
        .series
        .iter()
        .find(|s| s.group == "West")
        .expect("West group");
    assert_eq!(west.devices, 2, "truck-1 and the auto-provisioned truck-3");
    assert_eq!(west.buckets.len(), 1);
    assert_eq!(west.buckets[0].start_ns, base);
    assert_eq!(west.buckets[0].count, 2);
    assert_eq!(west.buckets[0].avg, Some(4.0));

    // Aggregate of one device, per minute.
    let request = pb::AggregateRequest {
        target: acme(device_target("truck-1")),
        metrics: vec!["load".into()],
        from_ns: base,
        to_ns: base + HOUR_NS,
        window: "1m".into(),
        functions: vec![
            pb::AggregateFunction::Max as i32,
            pb::AggregateFunction::Sum as i32,
        ],
        group_by_label: String::new(),
        ..Default::default()
    };
    let agg = eventually(Duration::from_secs(20), "the per-minute aggregate", || {
        let (mut q, request) = (q.clone(), request.clone());
        async move {
            let agg = q.aggregate(request).await.expect("Aggregate").into_inner();
            let counted: u64 = agg
                .series
                .iter()
                .flat_map(|s| &s.buckets)
                .map(|b| b.count)
                .sum();
            (counted == 2).then_some(agg)
        }
    })
    .await;
    assert_eq!(agg.series.len(), 1);
    let b = &agg.series[0].buckets;
    assert_eq!(
        b.iter()
            .map(|b| (b.start_ns, b.count, b.max, b.sum))
            .collect::<Vec<_>>(),
        vec![
            (base, 1, Some(1.5), Some(1.5)),
            (base + 60_000 * MS, 1, Some(2.5), Some(2.5)),
        ]
    );

    // Latest of every truck in fleet West, in one call.
    let latest = q
        .latest(pb::LatestRequest {
            target: acme(selector_target("fleet=West")),
            metrics: vec!["truck.load".into()],
        })
        .await
        .expect("Latest")
        .into_inner();
    let got: Vec<_> = latest
        .values
        .iter()
        .map(|v| (v.device.as_str(), v.ts_ns, v.value.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("truck-1", base + 120_000 * MS, f64v(4.5)),
            ("truck-3", base + 120_000 * MS, f64v(3.5))
        ]
    );

    // The live stream saw truck-1's JSON points.
    let first = tokio::time::timeout(Duration::from_secs(5), live.next())
        .await
        .expect("a live batch within 5 s")
        .expect("stream open")
        .expect("no error");
    assert!(
        first.device == "truck-1" || first.device == "truck-3",
        "{first:?}"
    );
    assert!(!first.points.is_empty());

    // A bad body gets a 400 problem naming the line.
    let r = http
        .post(s.url("/write?db=x"))
        .header("authorization", format!("Token {ingest}"))
        .body("m,device=truck-1 v=1\nm,device=truck-1 v=\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = r.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("line 2"),
        "{problem}"
    );

    // Wrong token: 401.
    let r = http
        .post(s.url("/v1/telemetry"))
        .bearer_auth("tbd_nope")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // A disabled device is refused within one second.
    reg.disable_device(pb::DeviceRef {
        tenant: "acme".into(),
        device: "truck-1".into(),
    })
    .await
    .expect("DisableDevice");
    let disabled_at = Instant::now();
    let status = eventually(Duration::from_secs(1), "disabled device refused", || {
        let http = http.clone();
        let url = s.url("/v1/telemetry");
        let t1 = t1.clone();
        async move {
            let body = serde_json::json!({"values": {"load": 9.0}});
            let r = http
                .post(url)
                .bearer_auth(&t1)
                .json(&body)
                .send()
                .await
                .ok()?;
            (r.status() != 204).then_some(r.status())
        }
    })
    .await;
    assert!(status == 403 || status == 401, "{status}");
    assert!(disabled_at.elapsed() < Duration::from_secs(1));

    assert!(s.stop().success(), "clean exit on SIGTERM");
}

async fn range_all_in(
    q: &mut tributary_proto::v1::query_service_client::QueryServiceClient<
        tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
    >,
    tenant: &str,
    device: &str,
    from_ns: i64,
    to_ns: i64,
) -> Vec<(String, i64, Option<pb::Value>)> {
    eventually(Duration::from_secs(10), "points stored", || {
        let mut q = q.clone();
        async move {
            let resp = q
                .query_range(pb::QueryRangeRequest {
                    target: Some(pb::Target {
                        tenant: tenant.into(),
                        devices: Some(pb::target::Devices::Device(device.into())),
                    }),
                    metrics: vec![],
                    from_ns,
                    to_ns,
                    limit: 1000,
                    order: pb::Order::Asc as i32,
                    page_token: String::new(),
                })
                .await
                .ok()?
                .into_inner();
            let pts: Vec<_> = resp
                .series
                .into_iter()
                .flat_map(|s| {
                    s.points
                        .into_iter()
                        .map(move |p| (s.metric.clone(), p.ts_ns, p.value))
                })
                .collect();
            (!pts.is_empty()).then_some(pts)
        }
    })
    .await
}

/// Runs the `tributary` CLI against the running standalone.
fn cli(s: &Standalone, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(args)
        .env("TRIBUTARY_ENDPOINT", format!("http://{}", s.grpc))
        .env("TRIBUTARY_TOKEN", &s.admin_token)
        .output()
        .expect("run the CLI");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_health_reflection_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path());

    // The CLI: create a labelled device, read its secret from JSON output.
    let (ok, out, err) = cli(
        &s,
        &[
            "devices",
            "create",
            "pump-1",
            "--label",
            "site=north",
            "-o",
            "json",
        ],
    );
    assert!(ok, "{err}");
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    let token = created[0]["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("tbd_"));

    let http = reqwest::Client::new();
    // An RFC 3339 timestamp an hour ago, whole seconds.
    let ts_ns = (tributary_core::time::now_ns() / 1_000_000_000 - 3600) * 1_000_000_000;
    let ts = tributary_core::time::format_rfc3339(ts_ns);
    let body = serde_json::json!({"ts": ts, "values": {"flow": 7.25}});
    let r = http
        .post(s.url("/v1/telemetry"))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    let latest = eventually(Duration::from_secs(10), "CLI sees the point", || {
        let s = &s;
        async move {
            let (ok, out, _) = cli(
                s,
                &["series", "latest", "--select", "site=north", "-o", "csv"],
            );
            (ok && out.lines().count() == 2).then_some(out)
        }
    })
    .await;
    assert_eq!(
        latest,
        format!("device,metric,time,value\npump-1,flow,{ts},7.25\n")
    );

    let (ok, out, _) = cli(&s, &["devices", "list", "--select", "site=north"]);
    assert!(ok);
    assert!(
        out.starts_with("tenant") && out.contains("pump-1") && out.contains("site=north"),
        "{out}"
    );

    // Errors come back as readable messages with the field that was wrong.
    let (ok, _, err) = cli(&s, &["devices", "create", "bad/id"]);
    assert!(!ok);
    assert!(err.contains("InvalidArgument"), "{err}");
    // Another tenant needs an admin; the admin can, and the tenant must exist.
    let (ok, _, err) = cli(&s, &["--tenant", "nope", "devices", "list"]);
    assert!(!ok, "{err}");

    // Standard gRPC health, as grpcurl and Kubernetes probes use it.
    let mut health = tonic_health::pb::health_client::HealthClient::new(s.channel().await);
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "tributary.v1.QueryService".into(),
        })
        .await
        .expect("health check")
        .into_inner();
    assert_eq!(
        resp.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );

    // Reflection lists the services.
    let mut reflection =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
            s.channel().await,
        );
    let req = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut stream = reflection
        .server_reflection_info(futures::stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let reply = stream.next().await.unwrap().unwrap();
    let names = format!("{:?}", reply.message_response);
    assert!(
        names.contains("tributary.v1.RegistryService")
            && names.contains("tributary.v1.QueryService"),
        "{names}"
    );

    // Operations endpoints.
    let m = |p: &str| format!("http://{}{p}", s.metrics);
    assert_eq!(http.get(m("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(http.get(m("/readyz")).send().await.unwrap().status(), 200);
    let metrics = http
        .get(m("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tributary_ingest_points_acked_total{tenant=\"default\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tributary_processor_points_stored_total{tenant=\"default\"} 1"),
        "{metrics}"
    );

    assert!(s.stop().success());
}
