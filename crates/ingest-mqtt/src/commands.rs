//! [`CommandSink`] for the MQTT server: operator commands delivered to
//! devices connected to this process.
//!
//! | device state | outcome |
//! |---|---|
//! | a connected session subscribes to `devices/{id}/commands/{name}` and answers in time | [`CommandOutcome::Replied`] |
//! | a connected session got it, no answer in time | [`CommandOutcome::Timeout`] |
//! | connected, but no session subscribes to the command topic | [`CommandOutcome::NotSubscribed`] |
//! | offline, no persistent session subscribes | [`CommandOutcome::Offline`] |
//! | offline, a persistent session subscribes: queued until the TTL | the reply if the device comes back and answers within the timeout; [`CommandOutcome::Timeout`] if it came back but did not answer; [`CommandOutcome::Queued`] if it is still offline |
//!
//! A queued command expires (MQTT message expiry, counted down in the
//! PUBLISH sent on resume) after the longer of its TTL and its timeout.

use async_trait::async_trait;
use bytes::Bytes;
use tributary_core::commands::{
    Command, CommandError, CommandOutcome, CommandReply, CommandSink, validate_command_name,
    validate_content_type,
};
use tributary_core::model::{ValidationError, validate_device_id, validate_tenant};

use crate::error::PublishError;
use crate::{CommandRequest, Dispatched, MqttServer};

/// Bytes of a command PUBLISH besides its payload kept free: the fixed
/// header, the topic, the response topic, the correlation data and the
/// content type fit well within it.
const PACKET_OVERHEAD: usize = 1024;

#[async_trait]
impl CommandSink for MqttServer {
    async fn send_command(&self, command: Command) -> Result<CommandOutcome, CommandError> {
        validate_tenant(&command.tenant)?;
        validate_device_id(&command.device, self.shared.ingestor.limits())?;
        validate_command_name(&command.name)?;
        validate_content_type(&command.content_type)?;
        let max_payload =
            (self.shared.config.max_packet_size as usize).saturating_sub(PACKET_OVERHEAD);
        if command.payload.len() > max_payload {
            return Err(ValidationError::new(
                "payload",
                format!("larger than {max_payload} bytes"),
            )
            .into());
        }
        let request = CommandRequest {
            tenant: &command.tenant,
            device: &command.device,
            name: &command.name,
            payload: Bytes::from(command.payload),
            content_type: (!command.content_type.is_empty()).then_some(command.content_type),
            timeout: command.timeout,
            ttl: command.ttl,
        };
        match self.dispatch_command(request).await {
            Ok(Dispatched::Replied { reply, latency }) => {
                Ok(CommandOutcome::Replied(CommandReply {
                    payload: reply.payload.to_vec(),
                    content_type: reply.content_type.unwrap_or_default(),
                    latency,
                }))
            }
            Ok(Dispatched::Unanswered) | Err(PublishError::Timeout(_)) => {
                Ok(CommandOutcome::Timeout)
            }
            Ok(Dispatched::Queued) => Ok(CommandOutcome::Queued {
                ttl: command.ttl.max(command.timeout),
            }),
            Err(PublishError::NoSubscribers(_)) => Ok(CommandOutcome::Offline),
            Err(PublishError::NotSubscribed(_)) => Ok(CommandOutcome::NotSubscribed),
            Err(PublishError::InvalidTopic(why)) => {
                Err(ValidationError::new("command", why).into())
            }
            Err(PublishError::TooManyPending) => Err(CommandError::Overloaded),
            Err(PublishError::ShuttingDown) => Err(CommandError::Unavailable(
                "the MQTT server is shutting down".into(),
            )),
        }
    }
}
