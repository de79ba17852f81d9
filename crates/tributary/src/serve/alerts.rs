//! Alert delivery in a running process: the alerts log to the MQTT server's
//! tenant applications (`tributary_notify::mqtt`).

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
