//! A device over MQTT 5 (rumqttc) that answers commands, for tests that
//! send it some.

use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::mpsc;

use super::Standalone;

/// How long a device waits for a packet before failing.
const WAIT: Duration = Duration::from_secs(15);

/// An MQTT 5 device whose event loop runs in its own task and forwards
/// every incoming packet.
pub struct Device {
    pub client: AsyncClient,
    pub packets: mpsc::Receiver<Packet>,
}

impl Device {
    /// Connects; `session_expiry` > 0 asks for a persistent session.
    pub async fn connect(s: &Standalone, id: &str, token: &str, session_expiry: u32) -> Device {
        let mut opts = MqttOptions::new(id, s.mqtt.ip().to_string(), s.mqtt.port());
        opts.set_credentials(id, token)
            .set_keep_alive(Duration::from_secs(30));
        if session_expiry > 0 {
            opts.set_clean_start(false)
                .set_session_expiry_interval(Some(session_expiry));
        }
        let (client, mut eventloop) = AsyncClient::new(opts, 16);
        let (tx, packets) = mpsc::channel(64);
        tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                if let Event::Incoming(p) = event
                    && tx.send(p).await.is_err()
                {
                    return;
                }
            }
        });
        let mut d = Device { client, packets };
        d.next(|p| matches!(p, Packet::ConnAck(_)).then_some(()))
            .await;
        d
    }

    pub async fn next<T>(&mut self, pick: impl Fn(Packet) -> Option<T>) -> T {
        tokio::time::timeout(WAIT, async {
            loop {
                let p = self.packets.recv().await.expect("event loop ended");
                if let Some(found) = pick(p) {
                    return found;
                }
            }
        })
        .await
        .expect("timed out waiting for a packet")
    }

    pub async fn subscribe_commands(&mut self, id: &str) {
        self.client
            .subscribe(format!("devices/{id}/commands/+"), QoS::AtLeastOnce)
            .await
            .unwrap();
        self.next(|p| matches!(p, Packet::SubAck(_)).then_some(()))
            .await;
    }

    /// Answers every command until the connection ends: a JSON object
    /// echoing the command's name and payload, on its response topic with
    /// its correlation data.
    pub fn answer_forever(mut self) {
        tokio::spawn(async move {
            while let Some(p) = self.packets.recv().await {
                let Packet::Publish(cmd) = p else { continue };
                let topic = String::from_utf8_lossy(&cmd.topic).into_owned();
                let props = cmd.properties.unwrap_or_default();
                let Some(response_topic) = props.response_topic else {
                    continue;
                };
                let name = topic.rsplit('/').next().unwrap_or_default().to_owned();
                let reply = serde_json::json!({
                    "ok": true,
                    "command": name,
                    "got": String::from_utf8_lossy(&cmd.payload),
                });
                let answer = PublishProperties {
                    correlation_data: props.correlation_data,
                    content_type: Some("application/json".into()),
                    ..Default::default()
                };
                if self
                    .client
                    .publish_with_properties(
                        response_topic,
                        QoS::AtLeastOnce,
                        false,
                        reply.to_string(),
                        answer,
                    )
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
}
