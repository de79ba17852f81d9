//! Alert delivery in a running process: the alerts log to the MQTT server's
//! tenant applications (`tributary_notify::mqtt`) and to the tenants'
//! webhooks (`tributary_notify::webhook`).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tributary_ingest_mqtt::{Message, MqttServer};
use tributary_mqtt_codec::QoS;

/// The MQTT server as a [`tributary_notify::mqtt::Publisher`].
#[derive(Debug, Clone)]
pub struct MqttAlerts(pub MqttServer);

impl tributary_notify::mqtt::Publisher for MqttAlerts {
    fn publish(&self, tenant: &str, topic: String, payload: Bytes) -> Result<usize, String> {
        let mut message = Message::new(topic, payload);
        message.qos = QoS::AtLeastOnce;
        message.content_type = Some("application/json".into());
        self.0.publish(tenant, message).map_err(|e| e.to_string())
    }
}

/// The registry in this process as the webhooks' source.
#[derive(Debug, Clone)]
pub struct LocalWebhooks(pub Arc<tributary_registry::Registry>);

#[async_trait]
impl tributary_notify::webhook::WebhookSource for LocalWebhooks {
    fn generation(&self) -> Option<u64> {
        Some(self.0.webhook_generation())
    }

    async fn webhooks(&self) -> Result<Vec<tributary_notify::webhook::Webhook>, String> {
        let hooks = self.0.all_webhooks().await.map_err(|e| e.to_string())?;
        Ok(hooks
            .into_iter()
            .map(|h| tributary_notify::webhook::Webhook {
                tenant: h.tenant,
                name: h.name,
                url: h.url,
                secret: h.secret,
                rules: h.rules,
                min_severity: match h.min_severity {
                    tributary_rules::Severity::Info => 1,
                    tributary_rules::Severity::Warning => 2,
                    tributary_rules::Severity::Critical => 3,
                },
            })
            .collect())
    }
}
