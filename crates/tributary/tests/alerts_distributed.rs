//! Rules and alerts in distributed mode, as separate OS processes on a real
//! Kafka-protocol broker (Tansu): the rule and the webhook are created on
//! `tributary registry`; `tributary processor` reads them from there,
//! judges points posted to `tributary ingest`, and appends the alert to the
//! alerts topic; the alert is then listed by the processor's query API,
//! POSTed to the webhook, and published to a tenant application connected
//! to the ingest replica over MQTT.

mod common;

use std::time::Duration;

use common::cluster::{Cluster, Service, channel};
use common::*;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tributary_proto::v1 as pb;
use tributary_proto::v1::alerts_service_client::AlertsServiceClient;
use tributary_proto::v1::rules_service_client::RulesServiceClient;

async fn post(http: &reqwest::Client, ingest: &Service, token: &str, ts_ms: i64, v: f64) {
    let url = format!("http://{}/v1/telemetry", ingest.addr("http"));
    let body = serde_json::json!({"ts": ts_ms, "values": {"temp": v}});
    let r = http
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rule_on_the_registry_fires_through_the_processor_to_a_webhook_mqtt_and_the_api() {
    let (hook, got) = json_receiver().await;
    let cluster = Cluster::start();
    let ingest = cluster.ingest("ingest-a");
    let processor = cluster.processor_with(&["--webhooks-allow-private"]);
    let admin = cluster.admin.clone();
    let token = cluster.device("freezer-1").await;

    let mut rules = RulesServiceClient::with_interceptor(
        channel(cluster.registry.addr("grpc")).await,
        Bearer::new(&admin),
    );
    rules
        .create_webhook(pb::CreateWebhookRequest {
            webhook: Some(pb::Webhook {
                name: "pager".into(),
                url: format!("http://{hook}/hook"),
                ..Default::default()
            }),
        })
        .await
        .expect("CreateWebhook");
    rules
        .create_rule(pb::CreateRuleRequest {
            rule: Some(pb::Rule {
                name: "freezer-warm".into(),
                target: Some(pb::rule::Target::Device("freezer-1".into())),
                metric: "temp".into(),
                kind: Some(pb::rule::Kind::Threshold(pb::ThresholdRule {
                    op: pb::threshold_rule::Op::Above as i32,
                    value: -15.0,
                    ..Default::default()
                })),
                ..Default::default()
            }),
        })
        .await
        .expect("CreateRule");

    // A tenant application on the ingest replica, following alerts.
    let app_token = cluster
        .registry_client()
        .await
        .issue_application_token(pb::IssueApplicationTokenRequest {
            name: "pager".into(),
            subscribe: vec!["alerts/#".into()],
            ..Default::default()
        })
        .await
        .expect("IssueApplicationToken")
        .into_inner()
        .token;
    let addr = ingest.addr("mqtt");
    let mut opts = MqttOptions::new("pager-1", addr.ip().to_string(), addr.port());
    opts.set_credentials("app:pager", app_token)
        .set_keep_alive(Duration::from_secs(30));
    let (app, mut eventloop) = AsyncClient::new(opts, 16);
    let (tx, mut published) = tokio::sync::mpsc::channel::<(String, serde_json::Value)>(64);
    tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = event {
                let topic = String::from_utf8_lossy(&p.topic).into_owned();
                let v = serde_json::from_slice(&p.payload).unwrap_or_default();
                if tx.send((topic, v)).await.is_err() {
                    return;
                }
            }
        }
    });
    app.subscribe("alerts/#", QoS::AtLeastOnce)
        .await
        .expect("SUBSCRIBE");

    // Breaching points until the processor has read the rule and judged
    // one: the alert is listed by the query API as firing.
    let http = reqwest::Client::new();
    let alerts = AlertsServiceClient::with_interceptor(
        channel(processor.addr("grpc")).await,
        Bearer::new(&admin),
    );
    let base = tributary_core::time::now_ns() / 1_000_000 - 600_000;
    let mut i = 0;
    let fired = eventually(Duration::from_secs(60), "the alert fires", || {
        let (http, ingest, token, mut alerts) =
            (http.clone(), &ingest, token.clone(), alerts.clone());
        i += 1;
        let ts = base + i;
        async move {
            post(&http, ingest, &token, ts, -5.0).await;
            let listed = alerts
                .list_alerts(pb::ListAlertsRequest::default())
                .await
                .ok()?
                .into_inner()
                .alerts;
            listed
                .into_iter()
                .find(|a| a.rule == "freezer-warm" && a.state == pb::AlertState::Firing as i32)
        }
    })
    .await;
    assert_eq!(fired.device, "freezer-1");

    let hooked = eventually(Duration::from_secs(30), "the webhook gets it", || {
        let got = got.clone();
        async move { got.lock().unwrap().first().cloned() }
    })
    .await;
    assert_eq!(hooked["alert_id"], fired.alert_id);
    assert_eq!(hooked["state"], "firing");

    let (topic, v) = tokio::time::timeout(Duration::from_secs(30), published.recv())
        .await
        .expect("the application gets the alert over MQTT within 30 s")
        .expect("the MQTT client runs");
    assert_eq!(topic, "alerts/freezer-warm/freezer-1");
    assert_eq!(v["alert_id"], fired.alert_id);
    assert_eq!(v["state"], "firing");
}
