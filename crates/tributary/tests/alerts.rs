//! Rules on a real standalone: created from the CLI, judged by the
//! processor as points arrive over HTTP, their alerts listed and followed
//! over gRPC, and neither lost nor fired twice across a kill -9.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use tributary_proto::v1 as pb;
use tributary_proto::v1::alerts_service_client::AlertsServiceClient;

const S: i64 = 1_000_000_000;

async fn device(s: &Standalone, id: &str, kind: &str) -> String {
    s.registry(&s.admin_token)
        .await
        .create_device(pb::CreateDeviceRequest {
            id: id.into(),
            labels: [("kind".to_owned(), kind.to_owned())].into(),
            issue_token: true,
            ..Default::default()
        })
        .await
        .expect("CreateDevice")
        .into_inner()
        .token
        .expect("token")
        .token
}

/// Posts one point with its timestamp (ns) and waits for the 204.
async fn post(s: &Standalone, token: &str, metric: &str, ts_ns: i64, value: f64) {
    let r = reqwest::Client::new()
        .post(s.url("/v1/telemetry"))
        .bearer_auth(token)
        .json(&serde_json::json!([{"ts": ts_ns / 1_000_000, "values": {metric: value}}]))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap_or_default());
}

async fn alerts(
    s: &Standalone,
) -> AlertsServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
> {
    AlertsServiceClient::with_interceptor(s.channel().await, Bearer::new(&s.admin_token))
}

/// Every alert of the tenant, by (rule, device): its newest state.
async fn listed(s: &Standalone) -> BTreeMap<(String, String), pb::Alert> {
    alerts(s)
        .await
        .list_alerts(pb::ListAlertsRequest::default())
        .await
        .expect("ListAlerts")
        .into_inner()
        .alerts
        .into_iter()
        .map(|a| ((a.rule.clone(), a.device.clone()), a))
        .collect()
}

fn state(a: &pb::Alert) -> pb::AlertState {
    pb::AlertState::try_from(a.state).unwrap_or_default()
}

/// Posts a breaching point of `metric` (now) again and again until the rule
/// has judged one: the processor reads rules every few seconds.
async fn until_judged(
    s: &Standalone,
    token: &str,
    rule: &str,
    device: &str,
    metric: &str,
    value: f64,
) -> pb::Alert {
    eventually(
        Duration::from_secs(30),
        "the rule to judge a point",
        || async {
            post(s, token, metric, tributary_core::time::now_ns(), value).await;
            listed(s)
                .await
                .remove(&(rule.to_owned(), device.to_owned()))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threshold_rule_from_the_cli_fires_after_its_for_and_clears_with_hysteresis() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(&dir.path().join("data"));
    let token = device(&s, "freezer-1", "freezer").await;
    let created = cli(
        &s,
        &[
            "rules",
            "create",
            "freezer-warm",
            "--selector",
            "kind=freezer",
            "--metric",
            "temp",
            "--above",
            "-15",
            "--for",
            "10m",
            "--hysteresis",
            "0.5",
            "--severity",
            "critical",
        ],
    )
    .await;
    assert!(
        created.contains("temp > -15 (clears at ≤ -15.5) for 10m"),
        "{created}"
    );
    let listed_rules = cli(&s, &["rules", "list"]).await;
    assert!(listed_rules.contains("\"freezer-warm\""), "{listed_rules}");

    // A warm point: pending, not firing, for 10 minutes of point time.
    let pending = until_judged(&s, &token, "freezer-warm", "freezer-1", "temp", -10.0).await;
    assert_eq!(state(&pending), pb::AlertState::Pending, "{pending:?}");
    let t0 = pending.started_at_ns;

    let mut tail = alerts(&s)
        .await
        .tail_alerts(pb::TailAlertsRequest::default())
        .await
        .expect("TailAlerts")
        .into_inner();
    // Still warm 10 minutes on: it fires. Then it hovers at the limit (no
    // flapping), then cools past the hysteresis: resolved.
    post(&s, &token, "temp", t0 + 600 * S, -12.0).await;
    post(&s, &token, "temp", t0 + 601 * S, -15.2).await;
    post(&s, &token, "temp", t0 + 602 * S, -14.9).await;
    post(&s, &token, "temp", t0 + 603 * S, -15.6).await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let e = tokio::time::timeout(Duration::from_secs(20), tail.next())
            .await
            .expect("a transition within 20 s")
            .expect("the stream stays open")
            .expect("an event");
        seen.push(e);
    }
    let states: Vec<pb::AlertState> = seen.iter().map(|e| e.state()).collect();
    assert_eq!(states, [pb::AlertState::Firing, pb::AlertState::Resolved]);
    assert!(
        seen.iter().all(|e| e.alert_id == pending.alert_id),
        "one alert: {seen:?}"
    );
    assert_eq!(seen[0].at_ns, t0 + 600 * S);
    assert_eq!(seen[0].value, Some(-12.0));
    assert_eq!(seen[1].at_ns, t0 + 603 * S);
    assert_eq!(seen[0].severity(), pb::Severity::Critical);

    let now = cli(&s, &["alerts", "list"]).await;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&now).expect("JSON");
    assert_eq!(rows.len(), 1, "{now}");
    assert_eq!(rows[0]["state"], "resolved");
    assert_eq!(rows[0]["fired_at_ns"], t0 + 600 * S);
    assert_eq!(rows[0]["resolved_at_ns"], t0 + 603 * S);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_data_fires_for_a_device_that_stops_and_for_one_that_never_reported() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(&dir.path().join("data"));
    let chatty = device(&s, "meter-1", "meter").await;
    device(&s, "meter-2", "meter").await;
    cli(
        &s,
        &[
            "rules",
            "create",
            "meter-silent",
            "--selector",
            "kind=meter",
            "--metric",
            "kwh",
            "--no-data",
            "3s",
        ],
    )
    .await;
    // meter-2 never reports: it fires a timeout after the rule reached the
    // processor. meter-1 keeps reporting meanwhile: it does not.
    let silent = eventually(
        Duration::from_secs(40),
        "meter-2's no-data alert",
        || async {
            post(&s, &chatty, "kwh", tributary_core::time::now_ns(), 1.0).await;
            listed(&s)
                .await
                .remove(&("meter-silent".to_owned(), "meter-2".to_owned()))
        },
    )
    .await;
    assert_eq!(state(&silent), pb::AlertState::Firing);
    assert_eq!(silent.summary, "no kwh for 3s");
    assert!(
        !listed(&s)
            .await
            .contains_key(&("meter-silent".to_owned(), "meter-1".to_owned())),
        "meter-1 kept reporting"
    );
    // meter-1 stops: its alert fires about 3 s after its last point.
    let stopped = tributary_core::time::now_ns();
    let fired = eventually(
        Duration::from_secs(20),
        "meter-1's no-data alert",
        || async {
            listed(&s)
                .await
                .remove(&("meter-silent".to_owned(), "meter-1".to_owned()))
                .filter(|a| state(a) == pb::AlertState::Firing)
        },
    )
    .await;
    let after = fired.fired_at_ns - stopped;
    assert!(
        (2 * S..15 * S).contains(&after),
        "fired {} ms after the last point",
        after / 1_000_000
    );
    // It reports again: resolved.
    post(&s, &chatty, "kwh", tributary_core::time::now_ns(), 2.0).await;
    eventually(
        Duration::from_secs(20),
        "meter-1's alert to resolve",
        || async {
            listed(&s)
                .await
                .remove(&("meter-silent".to_owned(), "meter-1".to_owned()))
                .filter(|a| state(a) == pb::AlertState::Resolved)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_with_one_alert_pending_and_one_firing_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = Standalone::start(&data);
    let a = device(&s, "pump-a", "pump").await;
    let b = device(&s, "pump-b", "pump").await;
    cli(
        &s,
        &[
            "rules",
            "create",
            "hot",
            "--selector",
            "kind=pump",
            "--metric",
            "temp",
            "--above",
            "80",
            "--for",
            "10m",
        ],
    )
    .await;
    let pa = until_judged(&s, &a, "hot", "pump-a", "temp", 90.0).await;
    let t0 = pa.started_at_ns;
    post(&s, &a, "temp", t0 + 600 * S, 91.0).await;
    post(&s, &b, "temp", t0, 95.0).await;
    let before = eventually(
        Duration::from_secs(20),
        "a firing and b pending",
        || async {
            let now = listed(&s).await;
            let a = now.get(&("hot".to_owned(), "pump-a".to_owned()))?;
            let b = now.get(&("hot".to_owned(), "pump-b".to_owned()))?;
            (state(a) == pb::AlertState::Firing && state(b) == pb::AlertState::Pending)
                .then(|| (a.clone(), b.clone()))
        },
    )
    .await;
    // Let a commit (and its checkpoint) happen with both in that state,
    // then kill -9.
    let committed = counter(&s, "tributary_processor_offset_commits_total").await;
    eventually(
        Duration::from_secs(30),
        "a commit after the transitions",
        || async {
            (counter(&s, "tributary_processor_offset_commits_total").await > committed)
                .then_some(())
        },
    )
    .await;
    s.crash();

    let s = Standalone::start(&data);
    // b stays breached 10 minutes on: it fires, as the alert that was
    // pending. a cools: its firing alert resolves.
    post(&s, &b, "temp", t0 + 600 * S, 96.0).await;
    post(&s, &a, "temp", t0 + 700 * S, 20.0).await;
    let after = eventually(
        Duration::from_secs(30),
        "b firing and a resolved",
        || async {
            let now = listed(&s).await;
            let a = now.get(&("hot".to_owned(), "pump-a".to_owned()))?;
            let b = now.get(&("hot".to_owned(), "pump-b".to_owned()))?;
            (state(a) == pb::AlertState::Resolved && state(b) == pb::AlertState::Firing)
                .then(|| (a.clone(), b.clone()))
        },
    )
    .await;
    assert_eq!(
        after.0.alert_id, before.0.alert_id,
        "a's alert is the one that fired"
    );
    assert_eq!(
        after.1.alert_id, before.1.alert_id,
        "b's alert is the one that was pending"
    );
    assert_eq!(after.1.started_at_ns, t0);
    s.stop();

    // Every transition in the alerts log: each (alert, state) that happened
    // is there, and nothing else: a repeat would carry the same id.
    let log = tributary_log::embedded::EmbeddedLog::open(
        data.join("log/alerts"),
        tributary_log::embedded::EmbeddedLogConfig::new("tributary.alerts.v1", 1),
    )
    .await
    .expect("alerts log");
    let mut consumer =
        tributary_log::Log::consumer(log.as_ref(), tributary_log::ConsumerOptions::default())
            .await
            .expect("consumer");
    let mut transitions = BTreeSet::new();
    loop {
        let records = consumer
            .poll(1000, Duration::from_millis(300))
            .await
            .expect("poll");
        if records.is_empty() {
            break;
        }
        for r in records {
            let e = <pb::AlertEvent as prost::Message>::decode(r.value.as_ref())
                .expect("an AlertEvent");
            transitions.insert((
                e.device.clone(),
                e.alert_id.clone(),
                e.state().as_str_name().to_owned(),
            ));
        }
    }
    let expected: BTreeSet<(String, String, String)> = [
        ("pump-a", &before.0.alert_id, "ALERT_STATE_PENDING"),
        ("pump-a", &before.0.alert_id, "ALERT_STATE_FIRING"),
        ("pump-a", &before.0.alert_id, "ALERT_STATE_RESOLVED"),
        ("pump-b", &before.1.alert_id, "ALERT_STATE_PENDING"),
        ("pump-b", &before.1.alert_id, "ALERT_STATE_FIRING"),
    ]
    .into_iter()
    .map(|(d, id, st)| (d.to_owned(), id.clone(), st.to_owned()))
    .collect();
    assert_eq!(transitions, expected);
}

/// A counter's value on the metrics endpoint (0 when absent).
async fn counter(s: &Standalone, name: &str) -> f64 {
    let body = reqwest::get(format!("http://{}/metrics", s.metrics))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    body.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_gets_alerts_over_mqtt_with_mosquitto_sub() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(&dir.path().join("data"));
    let token = device(&s, "freezer-1", "freezer").await;
    // An application that may follow alerts (and publish a probe).
    let app = s
        .registry(&s.admin_token)
        .await
        .issue_application_token(pb::IssueApplicationTokenRequest {
            name: "pager".into(),
            subscribe: vec!["alerts/#".into()],
            publish: vec!["alerts/probe".into()],
            ..Default::default()
        })
        .await
        .expect("IssueApplicationToken")
        .into_inner()
        .token;
    let port = s.mqtt.port().to_string();
    let mut sub = tokio::process::Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-i",
            "pager-sub",
        ])
        .args(["-u", "app:pager", "-P", &app, "-t", "alerts/#", "-v"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("mosquitto_sub (Debian's mosquitto-clients)");
    let mut lines = BufReader::new(sub.stdout.take().unwrap()).lines();
    // Subscribed once a probe comes back.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = tokio::process::Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-V",
                "mqttv5",
                "-q",
                "1",
                "-i",
                "pager-pub",
            ])
            .args([
                "-u",
                "app:pager",
                "-P",
                &app,
                "-t",
                "alerts/probe",
                "-m",
                "probe",
            ])
            .status()
            .await
            .expect("mosquitto_pub");
        assert!(status.success());
        let line = tokio::time::timeout(Duration::from_millis(500), lines.next_line()).await;
        if let Ok(Ok(Some(l))) = line {
            assert_eq!(l, "alerts/probe probe");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "mosquitto_sub never got the probe"
        );
    }
    cli(
        &s,
        &[
            "rules",
            "create",
            "freezer-warm",
            "--selector",
            "kind=freezer",
            "--metric",
            "temp",
            "--above",
            "-15",
        ],
    )
    .await;
    let fired = until_judged(&s, &token, "freezer-warm", "freezer-1", "temp", -10.0).await;
    post(&s, &token, "temp", fired.started_at_ns + S, -20.0).await;
    // Both transitions arrive, as JSON on alerts/{rule}/{device}.
    let mut got = Vec::new();
    while got.len() < 2 {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("an alert within 20 s")
            .expect("read")
            .expect("mosquitto_sub is running");
        if line == "alerts/probe probe" {
            continue;
        }
        let (topic, json) = line.split_once(' ').expect("topic and payload");
        assert_eq!(topic, "alerts/freezer-warm/freezer-1");
        let v: serde_json::Value = serde_json::from_str(json).expect("JSON");
        got.push(v);
    }
    assert_eq!(got[0]["state"], "firing");
    assert_eq!(got[0]["alert_id"], fired.alert_id);
    assert_eq!(got[0]["value"], -10.0);
    assert_eq!(got[1]["state"], "resolved");
    assert_eq!(got[1]["alert_id"], fired.alert_id);
    assert_eq!(got[1]["fired"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threshold_alert_reaches_a_webhook_signed_with_its_secret() {
    use std::sync::{Arc, Mutex};
    type Got = Arc<Mutex<Vec<(axum::http::HeaderMap, String)>>>;
    let got: Got = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(got): axum::extract::State<Got>,
                 headers: axum::http::HeaderMap,
                 body: String| async move {
                    got.lock().unwrap().push((headers, body));
                    axum::http::StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start_with(
        &dir.path().join("data"),
        &["--webhooks-allow-private".as_ref()],
    );
    let token = device(&s, "freezer-1", "freezer").await;
    let created = cli(
        &s,
        &[
            "webhooks",
            "create",
            "pager",
            "--url",
            &format!("http://{receiver}/hook"),
            "--rule",
            "freezer-warm",
        ],
    )
    .await;
    let created: serde_json::Value = serde_json::from_str(&created).expect("JSON");
    let secret = created[0]["secret"]
        .as_str()
        .expect("the secret, once")
        .to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let listed = cli(&s, &["webhooks", "list"]).await;
    assert!(
        !listed.contains(&secret),
        "listing never shows the secret: {listed}"
    );
    cli(
        &s,
        &[
            "rules",
            "create",
            "freezer-warm",
            "--selector",
            "kind=freezer",
            "--metric",
            "temp",
            "--above",
            "-15",
        ],
    )
    .await;
    // Another rule's alerts do not go to this webhook.
    cli(
        &s,
        &[
            "rules",
            "create",
            "freezer-any",
            "--selector",
            "kind=freezer",
            "--metric",
            "temp",
            "--above",
            "-100",
        ],
    )
    .await;
    let fired = until_judged(&s, &token, "freezer-warm", "freezer-1", "temp", -10.0).await;
    post(&s, &token, "temp", fired.started_at_ns + S, -20.0).await;
    let deliveries = eventually(
        Duration::from_secs(30),
        "firing and resolved at the webhook",
        || {
            let got = got.clone();
            async move {
                let got = got.lock().unwrap().clone();
                (got.len() >= 2).then_some(got)
            }
        },
    )
    .await;
    let states: Vec<String> = deliveries
        .iter()
        .map(|(h, body)| {
            let v: serde_json::Value = serde_json::from_str(body).expect("JSON body");
            assert_eq!(v["rule"], "freezer-warm", "only the rule it names");
            assert_eq!(v["alert_id"], fired.alert_id);
            assert_eq!(h["tributary-alert-id"].to_str().unwrap(), fired.alert_id);
            // The receiver's check: HMAC-SHA256 of "<t>.<body>" with the secret.
            let sig = h["tributary-signature"].to_str().unwrap();
            let t: i64 = sig[2..sig.find(',').unwrap()].parse().unwrap();
            assert_eq!(
                sig,
                tributary_notify::sign::signature(&secret, t, body.as_bytes())
            );
            let age = tributary_core::time::now_ns() / S - t;
            assert!((0..60).contains(&age), "signed {age} s ago");
            v["state"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(states[..2], ["firing", "resolved"]);
    // Counted for the operator.
    let delivered = counter(
        &s,
        r#"tributary_alerts_deliveries_total{channel="webhook",outcome="delivered"}"#,
    )
    .await;
    assert!(delivered >= 2.0, "{delivered}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_test_shows_when_a_rule_would_have_fired_over_history_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(&dir.path().join("data"));
    let token = device(&s, "freezer-1", "freezer").await;
    // Forty minutes ago the freezer warmed for 11 minutes, then cooled.
    let m = 60 * S;
    let t0 = tributary_core::time::now_ns() / m * m - 40 * m;
    for (at, v) in [
        (0, -20.0),
        (1, -10.0),
        (5, -9.0),
        (12, -8.0),
        (13, -20.0),
        (20, -21.0),
    ] {
        post(&s, &token, "temp", t0 + at * m, v).await;
    }
    let args = [
        "rules",
        "test",
        "freezer-warm",
        "--selector",
        "kind=freezer",
        "--metric",
        "temp",
        "--above",
        "-15",
        "--for",
        "10m",
        "--from",
        "1h",
    ];
    // The points are stored once the processor has them.
    let shown: Vec<serde_json::Value> = eventually(
        Duration::from_secs(30),
        "the test sees the history",
        || async {
            let out = cli(&s, &args).await;
            let rows: Vec<serde_json::Value> = serde_json::from_str(&out).expect("JSON");
            (rows.len() == 3).then_some(rows)
        },
    )
    .await;
    let states: Vec<(&str, i64)> = shown
        .iter()
        .map(|r| {
            (
                r["state"].as_str().unwrap(),
                (r["at_ns"].as_i64().unwrap() - t0) / m,
            )
        })
        .collect();
    assert_eq!(states, [("pending", 1), ("firing", 12), ("resolved", 13)]);
    assert_eq!(shown[1]["alert_id"], shown[2]["alert_id"]);
    assert_eq!(shown[1]["value"], -8.0);
    // A longer `for` would not have fired at all.
    let mut longer = args.to_vec();
    longer[10] = "15m";
    let out = cli(&s, &longer).await;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).expect("JSON");
    let fired: Vec<&serde_json::Value> = rows.iter().filter(|r| r["state"] == "firing").collect();
    assert!(fired.is_empty(), "{rows:?}");
    // Testing created no rule and raised no alert.
    let rules: Vec<serde_json::Value> =
        serde_json::from_str(&cli(&s, &["rules", "list"]).await).expect("JSON");
    assert!(rules.is_empty(), "{rules:?}");
    assert!(listed(&s).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_acknowledges_an_alert_and_silences_a_rule_from_the_cli() {
    let (hook, got) = json_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start_with(
        &dir.path().join("data"),
        &["--webhooks-allow-private".as_ref()],
    );
    let token = device(&s, "freezer-1", "freezer").await;
    cli(
        &s,
        &[
            "webhooks",
            "create",
            "pager",
            "--url",
            &format!("http://{hook}/hook"),
        ],
    )
    .await;
    // A webhook whose receiver answers 404: its deliveries are given up.
    cli(
        &s,
        &[
            "webhooks",
            "create",
            "broken",
            "--url",
            &format!("http://{hook}/missing"),
        ],
    )
    .await;
    cli(
        &s,
        &[
            "rules",
            "create",
            "freezer-warm",
            "--device",
            "freezer-1",
            "--metric",
            "temp",
            "--above",
            "-15",
        ],
    )
    .await;
    let fired = until_judged(&s, &token, "freezer-warm", "freezer-1", "temp", -10.0).await;
    assert_eq!(state(&fired), pb::AlertState::Firing);

    // Acknowledged: listed with who did it, and passed on to the webhook.
    let acked = cli(
        &s,
        &["alerts", "ack", &fired.alert_id, "--comment", "on my way"],
    )
    .await;
    let acked: serde_json::Value = serde_json::from_str(&acked).expect("JSON");
    assert_eq!(
        acked[0]["state"], "firing",
        "an acknowledged alert still fires"
    );
    assert_ne!(acked[0]["acknowledged_at_ns"], 0);
    let by = acked[0]["acknowledged_by"].as_str().unwrap().to_owned();
    assert!(!by.is_empty(), "who acknowledged it");
    let again = cli(&s, &["alerts", "ack", &fired.alert_id]).await;
    let again: serde_json::Value = serde_json::from_str(&again).expect("JSON");
    assert_eq!(
        again[0]["acknowledged_at_ns"], acked[0]["acknowledged_at_ns"],
        "acknowledging again changes nothing"
    );
    let listed_acked = cli(&s, &["alerts", "list", "--state", "acknowledged"]).await;
    assert!(listed_acked.contains(&fired.alert_id), "{listed_acked}");
    let ack = eventually(Duration::from_secs(30), "the webhook gets the ack", || {
        let got = got.clone();
        async move {
            got.lock()
                .unwrap()
                .iter()
                .find(|v| v["state"] == "acknowledged")
                .cloned()
        }
    })
    .await;
    assert_eq!(ack["alert_id"], fired.alert_id);
    assert_eq!(ack["comment"], "on my way");
    assert_eq!(ack["by"], by.as_str());

    // Silenced for an hour: alerts are still raised and listed, marked,
    // but not delivered. New alerts are raised (breach, clear) until one
    // is marked: the processor has read the silence.
    let silenced = cli(
        &s,
        &[
            "alerts",
            "silence",
            &fired.alert_id,
            "--for",
            "1h",
            "--comment",
            "defrosting",
        ],
    )
    .await;
    let silenced: serde_json::Value = serde_json::from_str(&silenced).expect("JSON");
    assert_eq!(silenced[0]["rule"], "freezer-warm");
    assert_eq!(silenced[0]["device"], "freezer-1");
    let listed_silences = cli(&s, &["alerts", "silences"]).await;
    assert!(listed_silences.contains("defrosting"), "{listed_silences}");
    // Clear, then raise alerts until one carries the silence.
    let cycle = || async {
        let now = tributary_core::time::now_ns();
        post(&s, &token, "temp", now, -20.0).await;
        post(&s, &token, "temp", now + 1_000_000, -10.0).await;
        post(&s, &token, "temp", now + 2_000_000, -20.0).await;
        alerts(&s)
            .await
            .list_alerts(pb::ListAlertsRequest {
                rule: "freezer-warm".into(),
                limit: 10_000,
                ..Default::default()
            })
            .await
            .expect("ListAlerts")
            .into_inner()
            .alerts
    };
    let quiet = eventually(
        Duration::from_secs(30),
        "an alert raised under the silence",
        || async {
            // The first alert marked may have fired before the processor
            // read the silence and resolved after; the second one started
            // after that, under the silence from start to end.
            let mut marked: Vec<pb::Alert> = cycle()
                .await
                .into_iter()
                .filter(|a| a.silenced_until_ns != 0 && state(a) == pb::AlertState::Resolved)
                .collect();
            marked.sort_by_key(|a| a.started_at_ns);
            (marked.len() >= 2).then(|| marked.pop().unwrap())
        },
    )
    .await;
    // Unsilenced: the next alerts are delivered again.
    cli(
        &s,
        &[
            "alerts",
            "unsilence",
            "--rule",
            "freezer-warm",
            "--device",
            "freezer-1",
        ],
    )
    .await;
    let loud = eventually(
        Duration::from_secs(30),
        "an alert raised after the silence",
        || async {
            cycle().await.into_iter().find(|a| {
                a.started_at_ns > quiet.started_at_ns
                    && a.silenced_until_ns == 0
                    && state(a) == pb::AlertState::Resolved
            })
        },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "the webhook gets the later alert",
        || {
            let got = got.clone();
            let id = loud.alert_id.clone();
            async move {
                got.lock()
                    .unwrap()
                    .iter()
                    .any(|v| v["alert_id"] == id.as_str() && v["state"] == "resolved")
                    .then_some(())
            }
        },
    )
    .await;
    // Deliveries keep the log's order: the silenced alert came before, and
    // none of its transitions went out.
    let all = got.lock().unwrap().clone();
    assert!(
        !all.iter().any(|v| v["alert_id"] == quiet.alert_id.as_str()),
        "a silenced alert is not delivered: {all:?}"
    );
    let silenced = counter(
        &s,
        r#"tributary_alerts_deliveries_total{channel="webhook",outcome="silenced"}"#,
    )
    .await;
    assert!(
        silenced >= 1.0,
        "silenced transitions are counted: {silenced}"
    );
    // The broken webhook's deliveries are dead letters an operator can list.
    let dead = eventually(
        Duration::from_secs(30),
        "the 404s dead-lettered",
        || async {
            let dead = cli(&s, &["alerts", "dead-letters"]).await;
            let dead: Vec<serde_json::Value> = serde_json::from_str(&dead).expect("JSON");
            dead.iter()
                .any(|d| d["body"]["alert_id"] == loud.alert_id.as_str())
                .then_some(dead)
        },
    )
    .await;
    assert!(dead.iter().all(|d| d["webhook"] == "broken"), "{dead:?}");
    assert!(
        dead[0]["reason"].as_str().unwrap().contains("404"),
        "{dead:?}"
    );

    // A resolved alert cannot be acknowledged; a silence needs a real rule
    // and a time in reach.
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["alerts", "ack", &quiet.alert_id])
        .args([
            "--endpoint",
            &format!("http://{}", s.grpc),
            "--token",
            &s.admin_token,
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("resolved"), "{err}");
    let mut rules = tributary_proto::v1::rules_service_client::RulesServiceClient::with_interceptor(
        s.channel().await,
        Bearer::new(&s.admin_token),
    );
    for (rule, until, why) in [
        (
            "no-such-rule",
            tributary_core::time::now_ns() + S,
            tonic::Code::NotFound,
        ),
        (
            "freezer-warm",
            tributary_core::time::now_ns() - S,
            tonic::Code::InvalidArgument,
        ),
        (
            "freezer-warm",
            tributary_core::time::now_ns() + 91 * 86_400 * S,
            tonic::Code::InvalidArgument,
        ),
    ] {
        let e = rules
            .create_silence(pb::CreateSilenceRequest {
                silence: Some(pb::Silence {
                    rule: rule.into(),
                    until_ns: until,
                    ..Default::default()
                }),
            })
            .await
            .expect_err("refused");
        assert_eq!(e.code(), why, "{rule} until {until}: {e:?}");
    }
}

// Hostile clients of the new entry points.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_tails_past_the_limit_are_refused_and_freed_when_closed() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(&dir.path().join("data"));
    let mut client = alerts(&s).await;
    let mut open = Vec::new();
    for _ in 0..16 {
        open.push(
            client
                .tail_alerts(pb::TailAlertsRequest::default())
                .await
                .expect("within the limit")
                .into_inner(),
        );
    }
    let refused = client
        .tail_alerts(pb::TailAlertsRequest::default())
        .await
        .expect_err("the 17th tail of a tenant");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("alert tails"),
        "{}",
        refused.message()
    );
    // Closing one frees its slot (once the server notices).
    drop(open.pop());
    eventually(Duration::from_secs(20), "a freed tail slot", || {
        let mut client = client.clone();
        async move {
            client
                .tail_alerts(pb::TailAlertsRequest::default())
                .await
                .ok()
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_silences_and_rule_tests_refuse_what_a_client_oversizes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(&dir.path().join("data"));
    device(&s, "freezer-1", "freezer").await;
    device(&s, "freezer-2", "freezer").await;
    device(&s, "freezer-3", "freezer").await;
    cli(
        &s,
        &[
            "rules",
            "create",
            "warm",
            "--selector",
            "kind=freezer",
            "--metric",
            "temp",
            "--above",
            "0",
        ],
    )
    .await;
    let mut alerts = alerts(&s).await;
    let code =
        |r: Result<tonic::Response<pb::Alert>, tonic::Status>| r.expect_err("refused").code();
    // An alert id of 1 MiB, a comment of 2 KiB.
    for (alert_id, comment) in [
        ("f".repeat(1 << 20), String::new()),
        ("0".repeat(32), "x".repeat(2048)),
        ("not hex at all, but 32 bytes ok!".into(), String::new()),
    ] {
        let r = alerts
            .ack_alert(pb::AckAlertRequest {
                alert_id,
                comment,
                ..Default::default()
            })
            .await;
        assert_eq!(code(r), tonic::Code::InvalidArgument);
    }
    let many = alerts
        .list_alert_dead_letters(pb::ListAlertDeadLettersRequest {
            limit: 1001,
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(many.code(), tonic::Code::InvalidArgument, "{many:?}");
    let lists = alerts
        .list_alerts(pb::ListAlertsRequest {
            limit: 10_001,
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(lists.code(), tonic::Code::InvalidArgument, "{lists:?}");
    let unknown = alerts
        .ack_alert(pb::AckAlertRequest {
            alert_id: "0".repeat(32),
            ..Default::default()
        })
        .await;
    assert_eq!(code(unknown), tonic::Code::NotFound);

    // Silences: a 2 KiB comment; past the tenant's `silences` quota.
    let mut rules = tributary_proto::v1::rules_service_client::RulesServiceClient::with_interceptor(
        s.channel().await,
        Bearer::new(&s.admin_token),
    );
    let silence = |device: &str, comment: String| pb::CreateSilenceRequest {
        silence: Some(pb::Silence {
            rule: "warm".into(),
            device: device.into(),
            until_ns: tributary_core::time::now_ns() + 3600 * S,
            comment,
            ..Default::default()
        }),
    };
    let long = rules
        .create_silence(silence("freezer-1", "x".repeat(2048)))
        .await
        .expect_err("refused");
    assert_eq!(long.code(), tonic::Code::InvalidArgument, "{long:?}");
    s.registry(&s.admin_token)
        .await
        .set_tenant_quotas(pb::SetTenantQuotasRequest {
            tenant: "default".into(),
            set: [("silences".to_owned(), 2)].into(),
            ..Default::default()
        })
        .await
        .expect("SetTenantQuotas");
    for d in ["freezer-1", "freezer-2"] {
        rules
            .create_silence(silence(d, String::new()))
            .await
            .expect("within the quota");
    }
    // Replacing one is not a new one.
    rules
        .create_silence(silence("freezer-2", "longer".into()))
        .await
        .expect("a replacement");
    let over = rules
        .create_silence(silence("freezer-3", String::new()))
        .await
        .expect_err("the third");
    assert_eq!(over.code(), tonic::Code::ResourceExhausted, "{over:?}");
    assert!(over.message().contains("silences"), "{}", over.message());

    // Rule tests: too many transitions asked, an empty range, no rule.
    let mut query = s.query(&s.admin_token).await;
    let rule = pb::Rule {
        name: "t".into(),
        target: Some(pb::rule::Target::Selector("kind=freezer".into())),
        metric: "temp".into(),
        kind: Some(pb::rule::Kind::Threshold(pb::ThresholdRule {
            op: pb::threshold_rule::Op::Above as i32,
            value: 0.0,
            ..Default::default()
        })),
        ..Default::default()
    };
    for (req, why) in [
        (
            pb::TestRuleRequest {
                rule: Some(rule.clone()),
                max_transitions: 10_001,
                ..Default::default()
            },
            "max_transitions",
        ),
        (
            pb::TestRuleRequest {
                rule: Some(rule.clone()),
                from_ns: 10,
                to_ns: 10,
                ..Default::default()
            },
            "from_ns",
        ),
        (pb::TestRuleRequest::default(), "rule"),
        (
            pb::TestRuleRequest {
                rule: Some(pb::Rule {
                    metric: "m".repeat(64 << 10),
                    ..rule.clone()
                }),
                ..Default::default()
            },
            "metric",
        ),
    ] {
        let e = query.test_rule(req).await.expect_err("refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{why}: {e:?}");
        assert!(e.message().contains(why), "{why}: {}", e.message());
    }
}
