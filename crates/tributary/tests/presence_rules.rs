//! Offline rules on a real standalone: a device's MQTT connection opens
//! and closes, its frontend appends its presence to the log as
//! `presence.online`, and a rule fires once the device has been offline
//! for its grace, and resolves when the device is back.

mod common;

use std::time::Duration;

use common::*;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tributary_proto::v1 as pb;
use tributary_proto::v1::alerts_service_client::AlertsServiceClient;

/// Connects `device` over MQTT 5 and waits for the CONNACK; the client and
/// its event loop's task.
async fn connect(
    s: &Standalone,
    device: &str,
    token: &str,
) -> (AsyncClient, tokio::task::JoinHandle<()>) {
    let mut opts = MqttOptions::new(device, s.mqtt.ip().to_string(), s.mqtt.port());
    opts.set_credentials(device, token)
        .set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut tx = Some(tx);
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(Packet::ConnAck(_)) = event
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(());
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("CONNACK within 10 s")
        .expect("connected");
    (client, task)
}

async fn gone_alerts(s: &Standalone) -> Vec<pb::Alert> {
    AlertsServiceClient::with_interceptor(s.channel().await, Bearer::new(&s.admin_token))
        .list_alerts(pb::ListAlertsRequest {
            rule: "gone".into(),
            ..Default::default()
        })
        .await
        .expect("ListAlerts")
        .into_inner()
        .alerts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_rule_fires_after_its_grace_and_resolves_when_the_device_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(&dir.path().join("data"));
    let token = s
        .registry(&s.admin_token)
        .await
        .create_device(pb::CreateDeviceRequest {
            id: "gateway-1".into(),
            issue_token: true,
            ..Default::default()
        })
        .await
        .expect("CreateDevice")
        .into_inner()
        .token
        .expect("token")
        .token;
    let created = cli(
        &s,
        &[
            "rules",
            "create",
            "gone",
            "--device",
            "gateway-1",
            "--offline",
            "2s",
        ],
    )
    .await;
    assert!(created.contains("presence.online"), "{created}");

    // Connect and leave, until the processor, which reads rules every few
    // seconds, has the rule when the device goes: the alert fires once the
    // device has been away for 2 s.
    let fired = eventually(
        Duration::from_secs(60),
        "the offline alert fires",
        || async {
            // Followed from before the device leaves: no polling.
            let mut tail = AlertsServiceClient::with_interceptor(
                s.channel().await,
                Bearer::new(&s.admin_token),
            )
            .tail_alerts(pb::TailAlertsRequest {
                rule: "gone".into(),
                ..Default::default()
            })
            .await
            .expect("TailAlerts")
            .into_inner();
            let (client, task) = connect(&s, "gateway-1", &token).await;
            client.disconnect().await.expect("DISCONNECT");
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
            // Fired within 5 s of leaving, or the rule was not read yet.
            let firing = async {
                while let Ok(Some(e)) = tail.message().await {
                    if e.state == pb::AlertState::Firing as i32 {
                        return Some(e.alert_id);
                    }
                }
                None
            };
            let id = tokio::time::timeout(Duration::from_secs(5), firing)
                .await
                .ok()
                .flatten()?;
            gone_alerts(&s).await.into_iter().find(|a| a.alert_id == id)
        },
    )
    .await;
    assert_eq!(fired.device, "gateway-1");
    assert!(
        fired.summary.contains("offline for 2s"),
        "{}",
        fired.summary
    );

    // Back: it resolves.
    let (_client, _task) = connect(&s, "gateway-1", &token).await;
    let resolved = eventually(Duration::from_secs(30), "the alert resolves", || async {
        gone_alerts(&s)
            .await
            .into_iter()
            .find(|a| a.alert_id == fired.alert_id && a.state == pb::AlertState::Resolved as i32)
    })
    .await;
    assert!(resolved.resolved_at_ns >= resolved.fired_at_ns);

    // Presence is judged, not stored: it is not among the device's metrics.
    let metrics = s
        .query(&s.admin_token)
        .await
        .list_metrics(pb::ListMetricsRequest {
            target: Some(pb::Target {
                devices: Some(pb::target::Devices::Device("gateway-1".into())),
                ..Default::default()
            }),
        })
        .await
        .expect("ListMetrics")
        .into_inner();
    assert!(
        format!("{metrics:?}").find("presence.online").is_none(),
        "{metrics:?}"
    );
}
