//! The CoAP server as a [`CommandSink`]: a command to a device registered
//! on `/c` goes out as a confirmable notification, and the outcome is the
//! device's reply (POST `/c/{id}`), a timeout, or "offline" when the device
//! has no registration in force or does not acknowledge the notification.

use std::time::Instant;

use async_trait::async_trait;
use base64::Engine as _;
use tributary_coap_codec::{Code, Message, MessageType, option};
use tributary_core::commands::{
    Command, CommandError, CommandOutcome, CommandReply, CommandSink, validate_command_name,
    validate_content_type,
};
use tributary_core::model::{ValidationError, validate_device_id, validate_tenant};

use crate::{CoapServer, Delivery};

#[async_trait]
impl CommandSink for CoapServer {
    async fn send_command(&self, command: Command) -> Result<CommandOutcome, CommandError> {
        let inner = &self.inner;
        validate_tenant(&command.tenant)?;
        validate_device_id(&command.device, inner.ingestor.limits())?;
        validate_command_name(&command.name)?;
        validate_content_type(&command.content_type)?;
        if let Some(operation) = command.name.strip_prefix("lwm2m:") {
            return self.lwm2m_command(&command, operation).await;
        }
        let (tenant, device) = (&command.tenant, &command.device);
        let Some(observer) = inner.commands.notify(tenant, device, Instant::now()) else {
            inner.metrics.command("offline");
            return Ok(CommandOutcome::Offline);
        };
        // A registration came in on the listener, so it is there.
        let Some(link) = inner.socket.get().cloned() else {
            return Err(CommandError::Unavailable(
                "the CoAP server is not serving".into(),
            ));
        };
        let id = format!("{:016x}", rand::random::<u64>());
        let mut body = serde_json::json!({"id": id, "name": command.name});
        if !command.content_type.is_empty() {
            body["content_type"] = command.content_type.clone().into();
        }
        match std::str::from_utf8(&command.payload) {
            Ok(text) => body["payload"] = text.into(),
            Err(_) => {
                body["payload_base64"] = base64::engine::general_purpose::STANDARD
                    .encode(&command.payload)
                    .into();
            }
        }
        let mut msg = Message::new(MessageType::Confirmable, Code::CONTENT, self.next_id());
        msg.token = observer.token;
        msg.set_uint_option(option::OBSERVE, observer.seq);
        msg.set_uint_option(option::CONTENT_FORMAT, 50);
        msg.payload = body.to_string().into_bytes();
        let max = inner.config.max_message_bytes;
        if msg.encoded_len() > max {
            inner.metrics.command("refused");
            return Err(ValidationError::new(
                "payload",
                format!("the command does not fit a CoAP notification of {max} bytes"),
            )
            .into());
        }
        let Some(reply) = inner.commands.expect(&id, tenant, device) else {
            inner.metrics.command("refused");
            return Err(CommandError::Overloaded);
        };
        let started = Instant::now();
        let exchange = async {
            match self.deliver(&link, observer.peer, msg).await {
                Delivery::Acked => match reply.await {
                    Ok(r) => CommandOutcome::Replied(CommandReply {
                        payload: r.payload,
                        content_type: r.content_type,
                        latency: started.elapsed(),
                    }),
                    Err(_) => CommandOutcome::Timeout,
                },
                // Reset: the device no longer wants notifications; no
                // answer after every resend: it is gone. Either way its
                // registration ends.
                Delivery::Reset | Delivery::Lost => {
                    if inner
                        .commands
                        .deregister(tenant, device, Some(observer.token))
                    {
                        inner.metrics.observers(inner.commands.observers());
                        inner.commands.report(tenant, device, false).await;
                    }
                    CommandOutcome::Offline
                }
            }
        };
        let outcome = tokio::time::timeout(command.timeout, exchange)
            .await
            .unwrap_or(CommandOutcome::Timeout);
        inner.commands.forget(&id);
        inner.metrics.command(match outcome {
            CommandOutcome::Replied(_) => "replied",
            CommandOutcome::Timeout => "timeout",
            _ => "offline",
        });
        Ok(outcome)
    }
}
