//! The HTTP/JSON API (`/api/v1/…`) against a real standalone, as a user
//! with curl would see it: the same answers as gRPC, problem+json errors
//! with the gRPC code's HTTP status, tenant isolation, live points over
//! Server-Sent Events with resume, and the attacks a hostile client would
//! try.

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tributary_proto::v1 as pb;

/// Sends telemetry for a device over HTTP ingest; expects 204.
async fn ingest(s: &Standalone, device_token: &str, body: Value) {
    let resp = http_client()
        .post(s.url("/v1/telemetry"))
        .bearer_auth(device_token)
        .json(&body)
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

async fn get(s: &Standalone, token: &str, path: &str) -> (StatusCode, Value) {
    let resp = http_client()
        .get(s.api_url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

async fn send(
    s: &Standalone,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    let resp = http_client()
        .request(method, s.api_url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_tokens_and_queries_round_trip_and_match_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path());
    assert_eq!(s.api, s.http, "standalone serves the API on the HTTP port");
    let admin = s.admin_token.clone();

    // Register two devices in a fleet, one with a token.
    let (status, created) = send(
        &s,
        &admin,
        reqwest::Method::POST,
        "/devices",
        json!({"id": "pump-1", "labels": {"fleet": "West"}, "issue_token": true}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["device"]["labels"]["fleet"], "West");
    assert_eq!(created["token"]["credential"]["kind"], "device_token");
    let token1 = created["token"]["token"].as_str().unwrap().to_owned();
    let (status, _) = send(
        &s,
        &admin,
        reqwest::Method::POST,
        "/devices",
        json!({"id": "pump-2", "labels": {"fleet": "West"}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, issued) = send(
        &s,
        &admin,
        reqwest::Method::POST,
        "/tokens",
        json!({"kind": "device_token", "device": "pump-2", "name": "bench"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let token2 = issued["token"].as_str().unwrap().to_owned();

    // Listing with a selector, a page at a time.
    let (status, page) = get(&s, &admin, "/devices?selector=fleet%3DWest&page_size=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["devices"].as_array().unwrap().len(), 1);
    let next = page["next_page_token"].as_str().expect("a second page");
    let (_, page2) = get(
        &s,
        &admin,
        &format!("/devices?selector=fleet%3DWest&page_size=1&page_token={next}"),
    )
    .await;
    assert_eq!(page2["devices"][0]["id"], "pump-2");

    // Points through HTTP ingest (ms timestamps), read back through the
    // API, over a minute that started ten minutes ago.
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let start_s = now_s / 60 * 60 - 600;
    let t0 = start_s * 1_000_000_000;
    let mut points1 = Vec::new();
    let mut points2 = Vec::new();
    for i in 0..60i64 {
        points1.push(json!({"ts": (start_s + i) * 1000, "values": {"temp": 20.0 + i as f64}}));
        points2.push(json!({"ts": (start_s + i) * 1000, "values": {"temp": 40.0 - i as f64}}));
    }
    ingest(&s, &token1, json!(points1)).await;
    ingest(&s, &token2, json!(points2)).await;
    let from = start_s.to_string();
    let to = (start_s + 60).to_string();
    let range = eventually(Duration::from_secs(10), "points stored", || async {
        let (_, r) = get(
            &s,
            &admin,
            &format!("/timeseries/range?device=pump-1&metrics=temp&from={from}&to={to}"),
        )
        .await;
        (r["series"][0]["points"].as_array().map_or(0, |p| p.len()) == 60).then_some(r)
    })
    .await;
    assert_eq!(range["series"][0]["points"][0]["value"], 20.0);
    let first_time = range["series"][0]["points"][0]["time"].as_str().unwrap();
    assert!(
        first_time.ends_with(":00Z"),
        "RFC 3339 at the minute: {first_time}"
    );

    // The aggregate by fleet equals gRPC's Aggregate on the same question.
    let (status, agg) = get(
        &s,
        &admin,
        &format!("/timeseries/aggregate?selector=fleet%3DWest&metrics=temp&from={from}&to={to}&window=30s&functions=avg,min,max,count&group_by=fleet"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{agg}");
    let grpc = s
        .query(&admin)
        .await
        .aggregate(pb::AggregateRequest {
            target: selector_target("fleet=West"),
            metrics: vec!["temp".into()],
            from_ns: t0,
            to_ns: t0 + 60_000_000_000,
            window: "30s".into(),
            functions: vec![
                pb::AggregateFunction::Avg as i32,
                pb::AggregateFunction::Min as i32,
                pb::AggregateFunction::Max as i32,
                pb::AggregateFunction::Count as i32,
            ],
            group_by_label: "fleet".into(),
            tier: String::new(),
            combine_devices: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(agg["series"].as_array().unwrap().len(), grpc.series.len());
    let http_buckets = agg["series"][0]["buckets"].as_array().unwrap();
    let grpc_buckets = &grpc.series[0].buckets;
    assert_eq!(http_buckets.len(), grpc_buckets.len());
    for (h, g) in http_buckets.iter().zip(grpc_buckets) {
        assert_eq!(h["count"].as_u64(), Some(g.count));
        assert_eq!(h["avg"].as_f64(), g.avg);
        assert_eq!(h["min"].as_f64(), g.min);
        assert_eq!(h["max"].as_f64(), g.max);
    }
    assert_eq!(agg["series"][0]["group"], "West");
    assert_eq!(agg["series"][0]["devices"], 2);

    let (_, latest) = get(&s, &admin, "/timeseries/latest?selector=fleet%3DWest").await;
    let mut values: Vec<(String, f64)> = latest["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["device"].as_str().unwrap().to_owned(),
                v["value"].as_f64().unwrap(),
            )
        })
        .collect();
    values.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        values,
        vec![("pump-1".into(), 79.0), ("pump-2".into(), -19.0)]
    );
    let (_, metrics) = get(&s, &admin, "/timeseries/metrics?device=pump-1").await;
    assert_eq!(
        metrics["series"],
        json!([{"device": "pump-1", "metric": "temp"}])
    );

    // Revoking a token over HTTP: the device's writes are refused.
    let id = issued["credential"]["id"].as_str().unwrap();
    let (status, revoked) = send(
        &s,
        &admin,
        reqwest::Method::DELETE,
        &format!("/tokens/{id}"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert_eq!(revoked["revoked"], true);
    eventually(Duration::from_secs(5), "revoked token refused", || async {
        let resp = http_client()
            .post(s.url("/v1/telemetry"))
            .bearer_auth(&token2)
            .json(&json!({"values": {"temp": 1.0}}))
            .send()
            .await
            .unwrap();
        (resp.status() == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;

    // Disable, update, delete.
    let (status, d) = send(
        &s,
        &admin,
        reqwest::Method::POST,
        "/devices/pump-2/disable",
        json!({}),
    )
    .await;
    assert_eq!(
        (status, d["disabled"].clone()),
        (StatusCode::OK, json!(true))
    );
    let (status, d) = send(
        &s,
        &admin,
        reqwest::Method::PATCH,
        "/devices/pump-2",
        json!({"set_labels": {"site": "A"}, "remove_labels": ["fleet"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{d}");
    assert_eq!(d["labels"], json!({"site": "A"}));
    let resp = http_client()
        .delete(s.api_url("/devices/pump-2"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (status, _) = get(&s, &admin, "/devices/pump-2").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A command to an offline device is an outcome, not an error.
    let (status, outcome) = send(
        &s,
        &admin,
        reqwest::Method::POST,
        "/devices/pump-1/commands",
        json!({"name": "reboot", "payload": "now", "timeout_ms": 100}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(outcome["status"], "offline");
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_problem_json_with_the_grpc_codes_status() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path());
    let admin = s.admin_token.clone();
    let c = http_client();

    let problem = |resp: reqwest::Response| async move {
        let status = resp.status();
        let ct = resp.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(ct, "application/problem+json", "{status}");
        let headers = resp.headers().clone();
        (status, headers, resp.json::<Value>().await.unwrap())
    };

    // No token: 401 with a challenge.
    let (status, headers, p) = problem(c.get(s.api_url("/devices")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.contains_key(reqwest::header::WWW_AUTHENTICATE));
    assert_eq!(p["code"], "unauthenticated");
    // A forged token.
    let (status, _, _) = problem(
        c.get(s.api_url("/devices"))
            .bearer_auth("eyJhbGciOiJIUzI1NiJ9.e30.x")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A bad selector: 400 naming the field.
    let (status, _, p) = problem(
        c.get(s.api_url("/timeseries/latest?selector=%3D%3D"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{p}");
    assert!(!p["violations"].as_array().unwrap().is_empty(), "{p}");
    // A bad time, caught by the API itself.
    let (status, _, p) = problem(
        c.get(s.api_url("/timeseries/range?device=x&from=yesterday"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(p["violations"][0]["field"], "from");
    // Both device and selector.
    let (status, _, _) = problem(
        c.get(s.api_url("/timeseries/latest?device=a&selector=b"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Already exists: 409.
    for expect in [StatusCode::CREATED, StatusCode::CONFLICT] {
        let resp = c
            .post(s.api_url("/devices"))
            .bearer_auth(&admin)
            .json(&json!({"id": "dup"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), expect);
    }
    // Unknown path, wrong method, not JSON, unknown field, too large.
    let (status, _, _) = problem(
        c.get(s.api_url("/nope"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = problem(
        c.put(s.api_url("/devices"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _, _) = problem(
        c.post(s.api_url("/devices"))
            .bearer_auth(&admin)
            .body("id=x")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, _, p) = problem(
        c.post(s.api_url("/devices"))
            .bearer_auth(&admin)
            .json(&json!({"id": "x", "colour": "red"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(p["detail"].as_str().unwrap().contains("colour"), "{p}");
    let big = "x".repeat(2 * 1024 * 1024);
    let (status, _, _) = problem(
        c.post(s.api_url("/devices"))
            .bearer_auth(&admin)
            .json(&json!({"id": big}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // Deeply nested JSON is refused, not recursed into.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (status, _, _) = problem(
        c.post(s.api_url("/devices"))
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body(deep)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // The OpenAPI document is served.
    let doc: Value = c
        .get(s.api_url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/devices"]["get"].is_object());
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_keeps_tenants_apart() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path());
    create_tenant(&s, "acme").await;
    create_tenant(&s, "globex").await;
    let acme_token = create_device_in(&s, "acme", "a-1").await;
    ingest(&s, &acme_token, json!({"values": {"temp": 1.5}})).await;
    let acme = s.operator_token("acme", "operator");
    // The strongest tenant-scoped role (admins act in every tenant:
    // docs/security.md).
    let globex = s.operator_token("globex", "operator");
    // acme sees its device and its points.
    eventually(Duration::from_secs(10), "acme's point stored", || async {
        let (_, l) = get(&s, &acme, "/timeseries/latest?device=a-1").await;
        (l["values"].as_array().map_or(0, |v| v.len()) == 1).then_some(())
    })
    .await;

    // globex (even its admin) sees none of it, by name or by listing...
    for path in [
        "/devices/a-1",
        "/timeseries/latest?device=a-1",
        "/timeseries/range?device=a-1",
        "/timeseries/metrics?device=a-1",
        "/timeseries/aggregate?device=a-1",
    ] {
        let (status, body) = get(&s, &globex, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    let (_, devices) = get(&s, &globex, "/devices").await;
    assert_eq!(devices["devices"], json!([]));
    let (_, latest) = get(&s, &globex, "/timeseries/latest?selector=").await;
    assert!(
        latest["values"].as_array().is_none_or(|v| v.is_empty()),
        "{latest}"
    );
    // ...and may not name acme.
    for path in [
        "/devices?tenant=acme",
        "/devices/a-1?tenant=acme",
        "/tokens?tenant=acme",
        "/timeseries/latest?tenant=acme&device=a-1",
        "/stream?tenant=acme&device=a-1",
        "/alerting/rules?tenant=acme",
        "/alerting/alerts?tenant=acme",
        "/alerting/webhooks?tenant=acme",
        "/alerting/silences?tenant=acme",
        "/dead-letters?tenant=acme",
        "/tenants",
    ] {
        let (status, body) = get(&s, &globex, path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
    }
    for (method, path, body) in [
        (
            reqwest::Method::POST,
            "/devices",
            json!({"tenant": "acme", "id": "x"}),
        ),
        (
            reqwest::Method::DELETE,
            "/devices/a-1?tenant=acme",
            json!({}),
        ),
        (
            reqwest::Method::POST,
            "/devices/a-1/disable?tenant=acme",
            json!({}),
        ),
        (
            reqwest::Method::POST,
            "/tokens",
            json!({"tenant": "acme", "kind": "device_token", "device": "a-1"}),
        ),
        (
            reqwest::Method::POST,
            "/devices/a-1/commands?tenant=acme",
            json!({"name": "x"}),
        ),
        (
            reqwest::Method::PATCH,
            "/tenants/acme/quotas",
            json!({"set": {"connections": 1}}),
        ),
    ] {
        let (status, resp) = send(&s, &globex, method.clone(), path, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {resp}");
    }
    // A viewer reads but does not write.
    let viewer = s.operator_token("acme", "viewer");
    let (status, _) = get(&s, &viewer, "/devices/a-1").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(
        &s,
        &viewer,
        reqwest::Method::POST,
        "/devices",
        json!({"id": "v"}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    s.stop();
}

/// Reads SSE events from a response until `n` `points` events arrived.
async fn read_events(resp: &mut reqwest::Response, n: usize) -> Vec<(String, String, Value)> {
    let mut buf = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while events
        .iter()
        .filter(|(e, _, _): &&(String, String, Value)| e == "points")
        .count()
        < n
    {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .expect("events within 15 s")
            .unwrap()
            .expect("the stream stays open");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut event, mut id, mut data) = (String::new(), String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    event = v.into();
                } else if let Some(v) = line.strip_prefix("id: ") {
                    id = v.into();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            if !event.is_empty() {
                events.push((
                    event,
                    id,
                    serde_json::from_str(&data).unwrap_or(Value::String(data)),
                ));
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_points_stream_as_sse_and_resume_after_last_event_id() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path());
    let admin = s.admin_token.clone();
    let token = create_device_in(&s, "default", "d1").await;
    let mut resp = http_client()
        .get(s.api_url("/stream?device=d1&metrics=temp"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    // The subscription is in place once the first point shows up; send
    // until it does.
    let mut sent = 0.0;
    let first = loop {
        sent += 1.0;
        ingest(&s, &token, json!({"values": {"temp": sent, "rpm": 7}})).await;
        if let Ok(events) =
            tokio::time::timeout(Duration::from_millis(500), read_events(&mut resp, 1)).await
        {
            break events;
        }
    };
    let (event, id, data) = &first[0];
    assert_eq!(event, "points");
    assert_eq!(data["device"], "d1");
    assert!(
        data["points"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["metric"] == "temp"),
        "{data}"
    );
    let last = data["points"][0]["value"].as_f64().unwrap();
    drop(resp);

    // While disconnected, three more points; a reconnect with the last id
    // gets exactly those, then live ones.
    let after: Vec<f64> = (1..=3).map(|i| last + 100.0 + f64::from(i)).collect();
    for v in &after {
        ingest(&s, &token, json!({"values": {"temp": v}})).await;
    }
    eventually(Duration::from_secs(10), "points stored", || async {
        let (_, l) = get(&s, &admin, "/timeseries/latest?device=d1&metrics=temp").await;
        (l["values"][0]["value"].as_f64() == Some(after[2])).then_some(())
    })
    .await;
    let mut resp = http_client()
        .get(s.api_url("/stream?device=d1&metrics=temp"))
        .bearer_auth(&admin)
        .header("Last-Event-ID", id.as_str())
        .send()
        .await
        .unwrap();
    let resumed = read_events(&mut resp, 1).await;
    let values: Vec<f64> = resumed[0].2["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_f64().unwrap())
        .collect();
    assert_eq!(values, after, "the points after the last event, once each");
    ingest(&s, &token, json!({"values": {"temp": 999.0}})).await;
    let live = read_events(&mut resp, 1).await;
    assert_eq!(live[0].2["points"][0]["value"], 999.0);
    assert!(live[0].1.parse::<i64>().unwrap() > resumed[0].1.parse::<i64>().unwrap());

    // A garbage Last-Event-ID is refused, not trusted.
    let resp = http_client()
        .get(s.api_url("/stream?device=d1"))
        .bearer_auth(&admin)
        .header("Last-Event-ID", "x".repeat(4000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_count_against_the_live_streams_quota_and_end_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path());
    create_tenant(&s, "acme").await;
    create_device_in(&s, "acme", "d1").await;
    let admin = s.admin_token.clone();
    let (status, _) = send(
        &s,
        &admin,
        reqwest::Method::PATCH,
        "/tenants/acme/quotas",
        json!({"set": {"live_streams": 2}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let acme = s.operator_token("acme", "viewer");
    let open = |token: String| {
        let url = s.api_url("/stream?device=d1");
        async move {
            http_client()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    let refused = eventually(Duration::from_secs(10), "the quota applies", || {
        let acme = acme.clone();
        async move {
            let a = open(acme.clone()).await;
            let b = open(acme.clone()).await;
            let c = open(acme.clone()).await;
            assert_eq!(a.status(), StatusCode::OK);
            assert_eq!(b.status(), StatusCode::OK);
            (c.status() == StatusCode::TOO_MANY_REQUESTS).then_some((a, b, c))
        }
    })
    .await;
    let (mut a, _b, c) = refused;
    assert!(c.headers().contains_key(reqwest::header::RETRY_AFTER));
    let p: Value = c.json().await.unwrap();
    assert_eq!(p["code"], "resource_exhausted");
    // Shutdown ends open streams instead of waiting for them.
    let status = tokio::task::spawn_blocking(move || s.stop()).await.unwrap();
    assert!(status.success(), "{status:?}");
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = a.chunk().await {}
    })
    .await;
    assert!(rest.is_ok(), "the stream ended at shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_silences_and_alerts_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path());
    let admin = s.admin_token.clone();
    let token = create_device_in(&s, "default", "boiler").await;
    let (status, rule) = send(
        &s,
        &admin,
        reqwest::Method::POST,
        "/alerting/rules",
        json!({"name": "hot", "device": "boiler", "metric": "temp",
               "condition": {"type": "threshold", "op": "above", "value": 80.0},
               "severity": "critical"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{rule}");
    assert_eq!(rule["condition"]["type"], "threshold");
    assert_eq!(rule["severity"], "critical");
    let (_, rules) = get(&s, &admin, "/alerting/rules").await;
    assert_eq!(rules["rules"][0]["name"], "hot");

    // A breach raises an alert; it is listed and acknowledged over HTTP.
    let alert = eventually(Duration::from_secs(20), "the alert fires", || async {
        ingest(&s, &token, json!({"values": {"temp": 95.0}})).await;
        let (_, list) = get(&s, &admin, "/alerting/alerts?state=firing").await;
        list["alerts"].as_array().and_then(|a| a.first().cloned())
    })
    .await;
    assert_eq!(alert["rule"], "hot");
    assert_eq!(alert["severity"], "critical");
    let id = alert["alert_id"].as_str().unwrap();
    let (status, acked) = send(
        &s,
        &admin,
        reqwest::Method::POST,
        &format!("/alerting/alerts/{id}/ack"),
        json!({"comment": "on it"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{acked}");
    assert!(acked["acknowledged_by"].is_string(), "{acked}");

    // Silences.
    let (status, silence) = send(
        &s,
        &admin,
        reqwest::Method::POST,
        "/alerting/silences",
        json!({"rule": "hot", "for": "2h", "comment": "maintenance"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{silence}");
    assert!(silence["until"].is_string());
    let (_, list) = get(&s, &admin, "/alerting/silences").await;
    assert_eq!(list["silences"].as_array().unwrap().len(), 1);
    let resp = http_client()
        .delete(s.api_url("/alerting/silences/hot"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = http_client()
        .delete(s.api_url("/alerting/silences/hot"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // Testing a rule over history finds the breach.
    let (status, test) = send(
        &s,
        &admin,
        reqwest::Method::POST,
        "/alerting/rules/test",
        json!({"rule": {"name": "hot2", "device": "boiler", "metric": "temp",
                        "condition": {"type": "threshold", "op": "above", "value": 90.0}},
               "from": "-1h"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{test}");
    assert!(
        test["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["state"] == "firing"),
        "{test}"
    );

    // A webhook, and deleting the rule.
    let (status, hook) = send(
        &s,
        &admin,
        reqwest::Method::POST,
        "/alerting/webhooks",
        json!({"name": "ops", "url": "https://example.invalid/hook", "min_severity": "critical"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    assert!(hook["secret"].as_str().is_some_and(|s| !s.is_empty()));
    let (_, hooks) = get(&s, &admin, "/alerting/webhooks").await;
    assert!(hooks["webhooks"][0].get("secret").is_none(), "{hooks}");
    let resp = http_client()
        .delete(s.api_url("/alerting/rules/hot"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (status, _) = get(&s, &admin, "/alerting/rules/hot").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_admits_only_the_configured_origins() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start_with(
        dir.path(),
        &[
            std::ffi::OsStr::new("--api-cors-origins"),
            std::ffi::OsStr::new("https://console.example.com"),
        ],
    );
    let preflight = |origin: &'static str| {
        let url = s.api_url("/devices");
        async move {
            http_client()
                .request(reqwest::Method::OPTIONS, url)
                .header("Origin", origin)
                .header("Access-Control-Request-Method", "GET")
                .header("Access-Control-Request-Headers", "authorization")
                .send()
                .await
                .unwrap()
        }
    };
    let ok = preflight("https://console.example.com").await;
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://console.example.com"
    );
    let allowed = ok.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(allowed.contains("authorization"), "{allowed}");
    let other = preflight("https://evil.example.net").await;
    assert!(!other.headers().contains_key("access-control-allow-origin"));
    // An actual call from the allowed origin carries the header too.
    let resp = http_client()
        .get(s.api_url("/devices"))
        .bearer_auth(&s.admin_token)
        .header("Origin", "https://console.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://console.example.com"
    );
    s.stop();
}

/// `tributary operator-token` mints a least-privilege token offline (for a
/// Grafana data source): a viewer of one tenant reads and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_token_minted_offline_has_its_role() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path());
    let secret = s.dir.join("jwt.secret");
    let mint = |role: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
            .args([
                "operator-token",
                "--tenant",
                "default",
                "--role",
                role,
                "--ttl",
                "1h",
            ])
            .arg("--jwt-secret-file")
            .arg(&secret)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let viewer = mint("viewer");
    let (status, _) = get(&s, &viewer, "/devices").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = send(
        &s,
        &viewer,
        reqwest::Method::POST,
        "/devices",
        json!({"id": "x"}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = get(&s, &viewer, "/tenants").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let operator = mint("operator");
    let (status, _) = send(
        &s,
        &operator,
        reqwest::Method::POST,
        "/devices",
        json!({"id": "x"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    // A role that does not exist, and a secret that is not there.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args([
            "operator-token",
            "--role",
            "root",
            "--jwt-secret-file",
            "/nonexistent",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    s.stop();
}

/// A tenant holding `max_inflight_per_tenant` requests gets 429 with
/// `Retry-After` for more, on the JSON and the Prometheus API alike, while
/// other tenants are served. The held request is one whose body the client
/// trickles (never finishes), the cheapest way to hold a slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_hold_every_request_slot() {
    use tokio::io::AsyncWriteExt as _;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tributary.toml");
    std::fs::write(&config, "[api]\nmax_inflight_per_tenant = 1\n").unwrap();
    let data = dir.path().join("data");
    // The held body may take a minute before the server gives up on it.
    let s = Standalone::start_with(
        &data,
        &[
            "--config".as_ref(),
            config.as_os_str(),
            "--http-body-grace-secs".as_ref(),
            "60".as_ref(),
        ],
    );
    create_tenant(&s, "acme").await;
    let acme = s.operator_token("acme", "operator");
    // A POST whose body never completes holds acme's one slot.
    async fn hold(s: &Standalone, token: &str) -> tokio::net::TcpStream {
        let mut held = tokio::net::TcpStream::connect(s.api).await.unwrap();
        let head = format!(
            "POST /api/v1/devices HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"id\""
        );
        held.write_all(head.as_bytes()).await.unwrap();
        held
    }
    let mut held = hold(&s, &acme).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let resp = http_client()
            .get(s.api_url("/devices"))
            .bearer_auth(&acme)
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            break resp;
        }
        assert_eq!(resp.status(), StatusCode::OK);
        // The probe may have reached the server first and taken the slot,
        // so that the held request was the one refused: hold another.
        let mut buf = [0u8; 64];
        if !matches!(held.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        {
            held = hold(&s, &acme).await;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after 10 s waiting for acme to be at its limit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(refused.headers().contains_key(reqwest::header::RETRY_AFTER));
    let p: Value = refused.json().await.unwrap();
    assert_eq!(p["quota"][0]["field"], "max_inflight_per_tenant", "{p}");
    let resp = http_client()
        .post(s.api_url("/query"))
        .bearer_auth(&acme)
        .form(&[("query", "1+1")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    // Another tenant is served meanwhile.
    let (status, _) = get(&s, &s.admin_token, "/devices").await;
    assert_eq!(status, StatusCode::OK);
    // Once the slow request ends, acme is served again.
    drop(held);
    eventually(Duration::from_secs(10), "acme served again", || async {
        let (status, _) = get(&s, &acme, "/devices").await;
        (status == StatusCode::OK).then_some(())
    })
    .await;
    s.stop();
}
