//! Per-tenant quotas on a real standalone, set the way an operator sets
//! them (`tributary tenants set-quota`), with the refusal each protocol
//! documents, while a second tenant is not affected.

mod common;

use std::time::Duration;

use common::mqtt::RawMqtt;
use common::*;
use tributary_mqtt_codec::{Packet, ProtocolVersion, Publish, QoS, ReasonCode};

async fn post(s: &Standalone, token: &str, value: u32) -> reqwest::Response {
    reqwest::Client::new()
        .post(s.url("/v1/telemetry"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(format!(r#"{{"values": {{"n": {value}}}}}"#))
        .send()
        .await
        .expect("POST")
}

async fn setup() -> (tempfile::TempDir, Standalone, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path());
    create_tenant(&s, "noisy").await;
    create_tenant(&s, "quiet").await;
    let noisy = create_device_in(&s, "noisy", "n1").await;
    let quiet = create_device_in(&s, "quiet", "q1").await;
    (dir, s, noisy, quiet)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_message_rate_gets_429_and_0x97_and_others_do_not() {
    let (_dir, s, noisy, quiet) = setup().await;
    let out = cli(
        &s,
        &[
            "tenants",
            "set-quota",
            "noisy",
            "messages_per_sec=2",
            "messages-burst=5",
        ],
    )
    .await;
    assert!(
        out.contains("\"messages_per_sec\"") && out.contains("\"tenant\""),
        "{out}"
    );
    let shown: serde_json::Value =
        serde_json::from_str(&cli(&s, &["tenants", "quotas", "noisy"]).await).unwrap();
    let row = |name: &str| {
        shown
            .as_array()
            .expect("rows")
            .iter()
            .find(|r| r["quota"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {shown}"))
    };
    assert_eq!(row("messages_burst")["value"], 5);
    assert_eq!(row("messages_burst")["source"], "tenant");
    assert_eq!(row("connections")["source"], "default");

    // HTTP: past the burst, 429 with problem+json naming the quota and a
    // Retry-After. Quota values reach the ingest path within a second.
    let refused = eventually(
        Duration::from_secs(5),
        "a 429 for the noisy tenant",
        || async {
            let r = post(&s, &noisy, 1).await;
            (r.status() == 429).then_some(r)
        },
    )
    .await;
    assert!(refused.headers().get("retry-after").is_some());
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(problem["quota"], "messages_per_sec", "{problem}");
    assert_eq!(problem["limit"], 2, "{problem}");
    assert_eq!(problem["status"], 429);
    // The other tenant is served.
    for i in 0..20 {
        assert_eq!(
            post(&s, &quiet, i).await.status(),
            204,
            "quiet tenant, request {i}"
        );
    }

    // MQTT 5: a PUBACK 0x97 once the rate is spent.
    let (mut m, ack) = RawMqtt::connect(s.mqtt, ProtocolVersion::V5, "n1", "n1", &noisy).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    let mut codes = Vec::new();
    for id in 1..=10 {
        codes.push(m.publish_qos1("devices/n1/telemetry/n", b"1", id).await);
    }
    assert!(
        codes.contains(&Some(ReasonCode::QuotaExceeded)),
        "{codes:?}"
    );
    // MQTT 3.1.1 cannot be told: the connection is closed.
    let (mut old, ack) =
        RawMqtt::connect(s.mqtt, ProtocolVersion::V311, "n1/old", "n1", &noisy).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    let mut closed = false;
    for id in 1..=10 {
        if old
            .publish_qos1("devices/n1/telemetry/n", b"1", id)
            .await
            .is_none()
        {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "a 3.1.1 client over its tenant's rate is disconnected"
    );

    // The metrics show the quota, and that it was hit.
    let limit = metric(
        &s,
        r#"tributary_tenant_quota_limit{tenant="noisy",quota="messages_per_sec"}"#,
    )
    .await;
    assert_eq!(limit, Some(2.0));
    let hits = metric(
        &s,
        r#"tributary_tenant_quota_exceeded_total{tenant="noisy",quota="messages_per_sec"}"#,
    )
    .await
    .unwrap_or(0.0);
    assert!(hits >= 2.0, "{hits}");
    assert_eq!(
        metric(
            &s,
            r#"tributary_tenant_quota_exceeded_total{tenant="quiet",quota="messages_per_sec"}"#,
        )
        .await,
        None
    );
}

/// `connects_per_sec`: a tenant's fleet coming back all at once is held to
/// its own connect rate, refused with 0x9F and a retry hint, while another
/// tenant connects as it likes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_connect_rate_gets_0x9f_and_others_do_not() {
    let (_dir, s, noisy, quiet) = setup().await;
    cli(
        &s,
        &[
            "tenants",
            "set-quota",
            "noisy",
            "connects_per_sec=1",
            "connects_burst=3",
        ],
    )
    .await;
    // Quota values reach the frontend within a second: connect until one
    // is refused.
    let mut n = 0;
    let ack = eventually(
        Duration::from_secs(10),
        "a 0x9F for the noisy tenant",
        || {
            n += 1;
            let client = format!("n1/c{n}");
            let noisy = noisy.clone();
            async move {
                let (_, ack) =
                    RawMqtt::connect(s.mqtt, ProtocolVersion::V5, &client, "n1", &noisy).await;
                (ack.reason_code != ReasonCode::Success).then_some(ack)
            }
        },
    )
    .await;
    assert_eq!(ack.reason_code, ReasonCode::ConnectionRateExceeded);
    let reason = ack.properties.reason_string.clone().unwrap_or_default();
    assert!(reason.contains("connects_per_sec quota of 1/s"), "{reason}");
    let retry: u64 = ack
        .properties
        .user_properties
        .iter()
        .find(|(k, _)| k == "retry-after")
        .map(|(_, v)| v.parse().expect("seconds"))
        .expect("a retry-after user property");
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    // MQTT 3.1.1 has no 0x9F: 3 Server unavailable.
    let (_, ack) = RawMqtt::connect(s.mqtt, ProtocolVersion::V311, "n1/old", "n1", &noisy).await;
    assert_eq!(ack.reason_code, ReasonCode::ServerUnavailable);
    // The other tenant connects as it likes.
    for i in 0..10 {
        let client = format!("q1/{i}");
        let (_, ack) = RawMqtt::connect(s.mqtt, ProtocolVersion::V5, &client, "q1", &quiet).await;
        assert_eq!(ack.reason_code, ReasonCode::Success, "quiet connect {i}");
    }
    let hits = metric(
        &s,
        r#"tributary_tenant_quota_exceeded_total{tenant="noisy",quota="connects_per_sec"}"#,
    )
    .await
    .unwrap_or(0.0);
    assert!(hits >= 2.0, "{hits}");
    // After the hint, the noisy tenant gets in again.
    let ack = eventually(
        Duration::from_secs(10),
        "a noisy connect admitted later",
        || {
            let noisy = noisy.clone();
            async move {
                let (_, ack) =
                    RawMqtt::connect(s.mqtt, ProtocolVersion::V5, "n1/later", "n1", &noisy).await;
                (ack.reason_code == ReasonCode::Success).then_some(ack)
            }
        },
    )
    .await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_and_sessions_of_a_tenant_are_bounded() {
    let (_dir, s, noisy, quiet) = setup().await;
    cli(
        &s,
        &[
            "tenants",
            "set-quota",
            "noisy",
            "connections=2",
            "sessions_per_device=2",
        ],
    )
    .await;
    let mut held = Vec::new();
    for client in ["n1", "n1/b"] {
        let (m, ack) = RawMqtt::connect(s.mqtt, ProtocolVersion::V5, client, "n1", &noisy).await;
        assert_eq!(ack.reason_code, ReasonCode::Success, "{client}");
        held.push(m);
    }
    // A third connection of the tenant: 0x97 (3.1.1: 3, server unavailable).
    let (_, ack) = RawMqtt::connect(s.mqtt, ProtocolVersion::V5, "n1/c", "n1", &noisy).await;
    assert_eq!(ack.reason_code, ReasonCode::QuotaExceeded);
    let (_, ack) = RawMqtt::connect(s.mqtt, ProtocolVersion::V311, "n1/d", "n1", &noisy).await;
    assert_eq!(ack.reason_code, ReasonCode::ServerUnavailable);
    // Taking over one of its own sessions is not a new connection.
    let (_, ack) = RawMqtt::connect(s.mqtt, ProtocolVersion::V5, "n1/b", "n1", &noisy).await;
    assert_eq!(ack.reason_code, ReasonCode::Success, "a takeover");
    // The other tenant connects as it likes.
    for i in 0..4 {
        let client = format!("q1/{i}");
        let (_, ack) = RawMqtt::connect(s.mqtt, ProtocolVersion::V5, &client, "q1", &quiet).await;
        assert_eq!(ack.reason_code, ReasonCode::Success);
    }
    // Sessions of one device: two at most, even with connections to spare.
    cli(&s, &["tenants", "set-quota", "noisy", "connections=100"]).await;
    drop(held);
    // (The sessions of the connections just dropped end as the server
    // sees the sockets close: retry until two new ones are in.)
    let mut sessions = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let third = loop {
        let client = format!("n1/s{}", sessions.len());
        let (m, ack) = RawMqtt::connect(s.mqtt, ProtocolVersion::V5, &client, "n1", &noisy).await;
        match ack.reason_code {
            ReasonCode::Success => sessions.push(m),
            code if sessions.len() == 2 => break (code, sessions.len()),
            code => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "session {} refused with {code:?}",
                    sessions.len()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        assert!(sessions.len() <= 2, "more than two sessions of one device");
    };
    assert_eq!(third.0, ReasonCode::QuotaExceeded);
    assert!(third.1 <= 2, "{} sessions of one device", third.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_past_the_quota_are_refused_not_dropped() {
    let (_dir, s, noisy, _quiet) = setup().await;
    cli(
        &s,
        &["tenants", "set-quota", "noisy", "retained_messages=3"],
    )
    .await;
    let (mut m, ack) = RawMqtt::connect(s.mqtt, ProtocolVersion::V5, "n1", "n1", &noisy).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    let mut codes = Vec::new();
    for i in 0..5u16 {
        let mut p = Publish::new(format!("devices/n1/state/{i}"), "on");
        p.retain = true;
        p.qos = QoS::AtLeastOnce;
        p.packet_id = Some(i + 1);
        m.send(&p.into()).await;
        match m.recv(Duration::from_secs(5)).await {
            Some(Packet::PubAck(a)) => codes.push(a.reason_code),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    // 0x10: no subscribers, but retained; then 0x97 for the 4th and 5th.
    assert_eq!(
        codes,
        [
            ReasonCode::NoMatchingSubscribers,
            ReasonCode::NoMatchingSubscribers,
            ReasonCode::NoMatchingSubscribers,
            ReasonCode::QuotaExceeded,
            ReasonCode::QuotaExceeded,
        ]
    );
}

/// Points of one device's metric stored, as the query API returns them.
async fn stored(s: &Standalone, tenant: &str, device: &str) -> usize {
    let mut q = s.query(&s.admin_token).await;
    let resp = q
        .query_range(tributary_proto::v1::QueryRangeRequest {
            target: Some(tributary_proto::v1::Target {
                tenant: tenant.into(),
                devices: Some(tributary_proto::v1::target::Devices::Device(device.into())),
            }),
            metrics: vec![],
            from_ns: 0,
            to_ns: i64::MAX,
            limit: 10_000,
            order: tributary_proto::v1::Order::Asc as i32,
            page_token: String::new(),
        })
        .await
        .expect("QueryRange")
        .into_inner();
    resp.series.iter().map(|s| s.points.len()).sum()
}

async fn post_metrics(s: &Standalone, token: &str, metrics: &[&str]) -> reqwest::Response {
    let values: Vec<String> = metrics.iter().map(|m| format!(r#""{m}": 1"#)).collect();
    reqwest::Client::new()
        .post(s.url("/v1/telemetry"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(format!(r#"{{"values": {{{}}}}}"#, values.join(", ")))
        .send()
        .await
        .expect("POST")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_beyond_a_limit_are_refused_before_the_ack_never_dead_lettered_after() {
    let dir = tempfile::tempdir().unwrap();
    // The store holds 6 series in all; the noisy tenant may have 3.
    let s = Standalone::start_with(dir.path(), &["--max-series".as_ref(), "6".as_ref()]);
    create_tenant(&s, "noisy").await;
    create_tenant(&s, "quiet").await;
    let noisy = create_device_in(&s, "noisy", "n1").await;
    let quiet = create_device_in(&s, "quiet", "q1").await;
    cli(&s, &["tenants", "set-quota", "noisy", "series=3"]).await;

    let mut acked = 0;
    let r = post_metrics(&s, &noisy, &["a", "b", "c"]).await;
    assert_eq!(r.status(), 204);
    acked += 3;
    // A fourth series: 429 naming the quota, before anything is acked.
    let r = eventually(Duration::from_secs(5), "the series quota", || async {
        let r = post_metrics(&s, &noisy, &["a", "d"]).await;
        (r.status() != 204).then_some(r)
    })
    .await;
    assert_eq!(r.status(), 429);
    let problem: serde_json::Value = r.json().await.unwrap();
    assert_eq!(problem["quota"], "series", "{problem}");
    // Known series still take points.
    assert_eq!(post_metrics(&s, &noisy, &["a", "b"]).await.status(), 204);
    acked += 2;

    // The store's own limit: 6 in all. The quiet tenant gets the last 3...
    assert_eq!(
        post_metrics(&s, &quiet, &["x", "y", "z"]).await.status(),
        204
    );
    // ...and then nobody gets a new one: 403, before the ack.
    let r = post_metrics(&s, &quiet, &["w"]).await;
    assert_eq!(r.status(), 403);
    let problem: serde_json::Value = r.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or("")
            .contains("limit of 6 series"),
        "{problem}"
    );
    // MQTT: a new series over the quota is a PUBACK 0x97, not a PUBACK
    // followed by a dead letter.
    let (mut m, ack) = RawMqtt::connect(s.mqtt, ProtocolVersion::V5, "n1", "n1", &noisy).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    assert_eq!(
        m.publish_qos1("devices/n1/telemetry/e", b"1", 1).await,
        Some(ReasonCode::QuotaExceeded)
    );
    assert_eq!(
        m.publish_qos1("devices/n1/telemetry/a", b"1", 2).await,
        Some(ReasonCode::Success)
    );
    acked += 1;

    // Everything acknowledged is stored, and nothing was dead-lettered.
    eventually(
        Duration::from_secs(10),
        "every acked point stored",
        || async { (stored(&s, "noisy", "n1").await == acked).then_some(()) },
    )
    .await;
    let dead = metric(&s, "tributary_processor_dead_lettered_records_total").await;
    assert_eq!(dead, Some(0.0), "dead letters");
    // As an operator would check: the dead-letter log is empty, for the
    // tenant and for the whole platform.
    let listed: serde_json::Value = serde_json::from_str(&cli(&s, &["dlq", "list"]).await).unwrap();
    assert_eq!(listed, serde_json::json!([]));
    let all: serde_json::Value =
        serde_json::from_str(&cli(&s, &["--tenant", "*", "dlq", "list"]).await).unwrap();
    assert_eq!(all, serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_streams_and_pending_commands_are_bounded_per_tenant() {
    use tributary_proto::v1 as pb;
    use tributary_proto::v1::command_service_client::CommandServiceClient;

    let (_dir, s, noisy, _quiet) = setup().await;
    cli(
        &s,
        &[
            "tenants",
            "set-quota",
            "noisy",
            "live_streams=2",
            "pending_commands=1",
        ],
    )
    .await;
    let target = |tenant: &str| {
        Some(pb::Target {
            tenant: tenant.into(),
            devices: Some(pb::target::Devices::Device(
                if tenant == "noisy" { "n1" } else { "q1" }.into(),
            )),
        })
    };
    let subscribe = |tenant: &'static str| {
        let s = &s;
        async move {
            s.query(&s.admin_token)
                .await
                .subscribe(pb::SubscribeRequest {
                    target: target(tenant),
                    metrics: vec![],
                })
                .await
        }
    };
    // Quotas reach the query service's cache within a moment.
    let mut streams = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let refused = loop {
        match subscribe("noisy").await {
            Ok(stream) => streams.push(stream),
            Err(status) => break status,
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} streams and no refusal",
            streams.len()
        );
    };
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert!(
        refused.message().contains("live_streams"),
        "{}",
        refused.message()
    );
    assert!(streams.len() <= 2);
    // Another tenant's streams are not counted against it.
    let other = subscribe("quiet")
        .await
        .expect("the quiet tenant subscribes");
    drop(other);
    // Closing a stream gives its place back.
    streams.pop();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(stream) = subscribe("noisy").await {
            streams.push(stream);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the closed stream's slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Pending commands: a device that never answers holds the only slot.
    let (mut m, ack) = RawMqtt::connect(s.mqtt, ProtocolVersion::V5, "n1", "n1", &noisy).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    m.send(&Packet::Subscribe(tributary_mqtt_codec::Subscribe {
        packet_id: 1,
        properties: Default::default(),
        subscriptions: vec![tributary_mqtt_codec::Subscription::new(
            "devices/n1/commands/+",
            QoS::AtLeastOnce,
        )],
    }))
    .await;
    assert!(matches!(
        m.recv(Duration::from_secs(5)).await,
        Some(Packet::SubAck(_))
    ));
    let command = |timeout_ms: u32| pb::SendCommandRequest {
        tenant: "noisy".into(),
        device: "n1".into(),
        name: "reboot".into(),
        payload: b"{}".to_vec(),
        content_type: String::new(),
        timeout_ms,
        ttl_seconds: 0,
    };
    let channel = s.channel().await;
    let client =
        || CommandServiceClient::with_interceptor(channel.clone(), Bearer::new(&s.admin_token));
    // Two commands at once, neither answered: one holds the only slot for
    // its whole timeout, the other is refused at once, whichever is first.
    let (mut one, mut two) = (client(), client());
    let mut a = tokio::spawn(async move { one.send_command(command(5_000)).await });
    let mut b = tokio::spawn(async move { two.send_command(command(5_000)).await });
    let (first_done, other) = tokio::time::timeout(Duration::from_secs(4), async {
        tokio::select! {
            r = &mut a => (r, b),
            r = &mut b => (r, a),
        }
    })
    .await
    .expect("one of two commands is refused at once, not after its timeout");
    let refused = first_done
        .unwrap()
        .expect_err("the first command to finish is the refused one");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert!(
        refused.message().contains("pending_commands"),
        "{}",
        refused.message()
    );
    other.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_past_the_quota_are_refused_over_grpc_and_auto_provisioning() {
    use tonic_types::StatusExt;
    use tributary_proto::v1 as pb;

    let (_dir, s, _noisy, _quiet) = setup().await;
    // n1 exists; two devices in all.
    cli(&s, &["tenants", "set-quota", "noisy", "devices=2"]).await;
    let mut r = s.registry(&s.admin_token).await;
    let create = |id: &str| pb::CreateDeviceRequest {
        tenant: "noisy".into(),
        id: id.into(),
        ..Default::default()
    };
    r.create_device(create("n2"))
        .await
        .expect("the second device");
    let status = r
        .create_device(create("n3"))
        .await
        .expect_err("a third device");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    let details = status.get_error_details();
    let violation = &details
        .quota_failure()
        .expect("QuotaFailure details")
        .violations[0];
    assert_eq!(violation.subject, "tenant/noisy");
    assert_eq!(violation.description, "devices: 2");
    // Line protocol would create it on first write: refused, not acked.
    let ingest = r
        .issue_token(pb::IssueTokenRequest {
            tenant: "noisy".into(),
            kind: pb::CredentialKind::TenantIngestToken as i32,
            ..Default::default()
        })
        .await
        .expect("ingest token")
        .into_inner()
        .token;
    let resp = reqwest::Client::new()
        .post(s.url("/write"))
        .header("authorization", format!("Token {ingest}"))
        .body("cpu,device=n3 v=1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "{:?}", resp.text().await);
    // Deleting one makes room.
    r.delete_device(pb::DeviceRef {
        tenant: "noisy".into(),
        device: "n2".into(),
    })
    .await
    .expect("delete");
    r.create_device(create("n3")).await.expect("room again");
}

/// An application of `tenant` that may publish on `chat/#`, connected.
async fn chat_app(s: &Standalone, tenant: &str) -> RawMqtt {
    use tributary_proto::v1 as pb;
    let issued = s
        .registry(&s.admin_token)
        .await
        .issue_application_token(pb::IssueApplicationTokenRequest {
            tenant: tenant.into(),
            name: "chat".into(),
            publish: vec!["chat/#".into()],
            ..Default::default()
        })
        .await
        .expect("IssueApplicationToken")
        .into_inner();
    let (m, ack) =
        RawMqtt::connect(s.mqtt, ProtocolVersion::V5, "c", "app:chat", &issued.token).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_pub_sub_is_charged_to_the_message_rate_too() {
    let (_dir, s, _, _) = setup().await;
    cli(
        &s,
        &[
            "tenants",
            "set-quota",
            "noisy",
            "messages_per_sec=2",
            "messages-burst=5",
        ],
    )
    .await;
    let mut noisy = chat_app(&s, "noisy").await;
    let mut quiet = chat_app(&s, "quiet").await;
    // Publishes that reach no subscriber, and are not telemetry, still cost.
    // Quota values reach the frontends within a second.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut id = 0;
    let refused = loop {
        let mut codes = Vec::new();
        for _ in 0..10 {
            id += 1;
            codes.push(noisy.publish_qos1("chat/room", b"hi", id).await);
        }
        if codes.contains(&Some(ReasonCode::QuotaExceeded)) {
            break codes;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no 0x97 for plain pub/sub within 5 s: {codes:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        refused.iter().take(5).all(|c| c.is_some()),
        "refused with a PUBACK, not a close: {refused:?}"
    );
    // The other tenant's messages are not charged for it.
    for id in 1..=20 {
        assert_eq!(
            quiet.publish_qos1("chat/room", b"hi", id).await,
            Some(ReasonCode::NoMatchingSubscribers),
            "quiet tenant, message {id}"
        );
    }
}
