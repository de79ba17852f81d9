//! LwM2M device management through the command API: a command named
//! `lwm2m:<operation>` to a registered client becomes a CoAP request to
//! it, and the client's answer is the reply.
//!
//! | command | payload | request |
//! |---|---|---|
//! | `lwm2m:read` | `/3303/0/5700` | GET |
//! | `lwm2m:write` | `/1/0/1 300` (path, a space, the value) | PUT, the value as text (or the command's content type: TLV, SenML JSON or CBOR) |
//! | `lwm2m:execute` | `/3/0/4`, or `/3/0/4 args` | POST |
//! | `lwm2m:observe` | `/3303/0/5700`, or `/3442/0/1120 metric_name` | GET with Observe 0; notifications are stored as the metric (the IPSO name, or the one given) |
//! | `lwm2m:cancel` | `/3303/0/5700` | ends the server's observation of the path |
//!
//! A 2.xx answer is the reply, with its payload and content type; 4.xx is
//! refused as invalid (the path or value is wrong for this client), 5.xx
//! as unavailable, both naming the client's code and diagnostic.

use std::time::Instant;

use tributary_coap_codec::{Code, Message, MessageType, content_format, option};
use tributary_core::commands::{Command, CommandError, CommandOutcome, CommandReply};
use tributary_core::model::ValidationError;

use super::mapping;
use crate::CoapServer;

/// An LwM2M path: object, and optionally instance and resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Path {
    pub object: u16,
    pub instance: Option<u16>,
    pub resource: Option<u16>,
}

impl Path {
    pub(crate) fn parse(text: &str) -> Result<Path, String> {
        let parts: Vec<&str> = text.strip_prefix('/').unwrap_or(text).split('/').collect();
        if parts.len() > 3 {
            return Err("a path has at most three parts: /object/instance/resource".into());
        }
        let number = |i: usize, what: &str| -> Result<Option<u16>, String> {
            parts
                .get(i)
                .map(|p| {
                    p.parse::<u16>()
                        .map_err(|_| format!("{what} {p:?} is not a number from 0 to 65535"))
                })
                .transpose()
        };
        Ok(Path {
            object: number(0, "object")?.ok_or("a path such as /3303/0/5700")?,
            instance: number(1, "instance")?,
            resource: number(2, "resource")?,
        })
    }

    fn segments(self) -> Vec<u16> {
        [Some(self.object), self.instance, self.resource]
            .into_iter()
            .flatten()
            .collect()
    }
}

fn invalid(why: impl Into<String>) -> CommandError {
    CommandError::Invalid(ValidationError::new("payload", why.into()))
}

/// The media type of a Content-Format, for the reply.
fn media_type(format: Option<u16>) -> &'static str {
    match format {
        Some(content_format::TEXT) => "text/plain",
        Some(content_format::LINK_FORMAT) => "application/link-format",
        Some(content_format::OCTET_STREAM) => "application/octet-stream",
        Some(content_format::JSON) => "application/json",
        Some(content_format::CBOR) => "application/cbor",
        Some(content_format::SENML_JSON) => "application/senml+json",
        Some(content_format::SENML_CBOR) => "application/senml+cbor",
        Some(content_format::LWM2M_TLV) => "application/vnd.oma.lwm2m+tlv",
        Some(content_format::LWM2M_JSON) => "application/vnd.oma.lwm2m+json",
        _ => "",
    }
}

/// The Content-Format of a write's value, from the command's content type.
fn write_format(content_type: &str) -> Result<u16, CommandError> {
    Ok(match content_type {
        "" | "text/plain" => content_format::TEXT,
        "application/octet-stream" => content_format::OCTET_STREAM,
        "application/vnd.oma.lwm2m+tlv" => content_format::LWM2M_TLV,
        "application/senml+json" => content_format::SENML_JSON,
        "application/senml+cbor" => content_format::SENML_CBOR,
        other => {
            return Err(invalid(format!(
                "content type {other:?}: a write takes text/plain, application/octet-stream, application/vnd.oma.lwm2m+tlv, application/senml+json or application/senml+cbor"
            )));
        }
    })
}

impl CoapServer {
    /// Whether `device` has an LwM2M registration here.
    pub(crate) fn lwm2m_registered(&self, tenant: &str, device: &str) -> bool {
        self.inner.lwm2m.registration_of(tenant, device).is_some()
    }

    /// Runs an `lwm2m:*` command on the device's registration.
    pub(crate) async fn lwm2m_command(
        &self,
        command: &Command,
        operation: &str,
    ) -> Result<CommandOutcome, CommandError> {
        let inner = &self.inner;
        let Some(reg) = inner
            .lwm2m
            .registration_of(&command.tenant, &command.device)
        else {
            return Ok(CommandOutcome::Offline);
        };
        // A client in queue mode listens only for a while after it sends
        // something: the request waits for its next update.
        let window = std::time::Duration::from_secs(inner.config.lwm2m_queue_window_secs);
        if reg.queue && reg.last_seen.elapsed() >= window {
            inner.metrics.lwm2m_held(inner.lwm2m.held() + 1);
        }
        let reached = inner
            .lwm2m
            .reachable(&reg.id, window, command.timeout)
            .await;
        inner.metrics.lwm2m_held(inner.lwm2m.held());
        let Some(reg) = reached else {
            inner.metrics.command("timeout");
            return Ok(CommandOutcome::Timeout);
        };
        let Some(link) = inner.socket.get().cloned() else {
            return Err(CommandError::Unavailable(
                "the CoAP server is not serving".into(),
            ));
        };
        let text = std::str::from_utf8(&command.payload)
            .map_err(|_| invalid("an LwM2M command's payload is its path (text)"))?;
        let (path_text, rest) = text.trim().split_once(' ').unwrap_or((text.trim(), ""));
        let path = Path::parse(path_text).map_err(invalid)?;
        let mut msg = Message::new(MessageType::Confirmable, Code::GET, self.next_id());
        msg.token = tributary_coap_codec::Token::new(&rand::random::<u64>().to_be_bytes())
            .unwrap_or_else(|| unreachable!("8 bytes"));
        match operation {
            "read" => {}
            "write" => {
                msg.code = Code::PUT;
                msg.set_uint_option(
                    option::CONTENT_FORMAT,
                    u32::from(write_format(&command.content_type)?),
                );
                msg.payload = rest.as_bytes().to_vec();
            }
            "execute" => {
                msg.code = Code::POST;
                if !rest.is_empty() {
                    msg.set_uint_option(option::CONTENT_FORMAT, u32::from(content_format::TEXT));
                    msg.payload = rest.as_bytes().to_vec();
                }
            }
            "observe" => {
                let (Some(instance), Some(resource)) = (path.instance, path.resource) else {
                    return Err(invalid("observe a resource: /object/instance/resource"));
                };
                let full = (path.object, instance, resource);
                let tenant = inner
                    .ingestor
                    .lwm2m_metrics(&command.tenant)
                    .await
                    .unwrap_or_default();
                let (metric, float) =
                    match (mapping::metric_for(&tenant, path.object, resource), rest) {
                        (_, name) if !name.is_empty() => (name.to_owned(), true),
                        (Some((name, float)), _) => (name, float),
                        (None, _) => (format!("lwm2m/{}/{instance}/{resource}", path.object), true),
                    };
                tributary_core::model::validate_metric(&metric, inner.ingestor.limits())
                    .map_err(CommandError::Invalid)?;
                let Some((token, _)) = inner.lwm2m.observe(&reg.id, full, metric, float) else {
                    return Err(CommandError::Overloaded);
                };
                msg.token = token;
                msg.set_uint_option(option::OBSERVE, 0);
            }
            "cancel" => {
                let (Some(instance), Some(resource)) = (path.instance, path.resource) else {
                    return Err(invalid(
                        "cancel a resource's observation: /object/instance/resource",
                    ));
                };
                let ended = inner
                    .lwm2m
                    .unobserve_path(&reg.id, (path.object, instance, resource));
                let (registrations, observations) = inner.lwm2m.len();
                inner.metrics.lwm2m(registrations, observations);
                return Ok(CommandOutcome::Replied(CommandReply {
                    payload: if ended {
                        b"cancelled".to_vec()
                    } else {
                        b"not observed".to_vec()
                    },
                    content_type: "text/plain".into(),
                    latency: std::time::Duration::ZERO,
                }));
            }
            other => {
                return Err(CommandError::Invalid(ValidationError::new(
                    "name",
                    format!(
                        "lwm2m:{other}: the operations are read, write, execute, observe and cancel"
                    ),
                )));
            }
        }
        for segment in path.segments() {
            msg.add_option(option::URI_PATH, segment.to_string().into_bytes());
        }
        if msg.encoded_len() > inner.config.max_message_bytes {
            return Err(invalid(format!(
                "the request does not fit a CoAP message of {} bytes",
                inner.config.max_message_bytes
            )));
        }
        let token = msg.token;
        let started = Instant::now();
        let answer =
            tokio::time::timeout(command.timeout, self.request_device(&link, reg.peer, msg))
                .await
                .ok()
                .flatten();
        let Some(answer) = answer else {
            if operation == "observe" {
                inner.lwm2m.unobserve(&token);
            }
            inner.metrics.command("timeout");
            return Ok(CommandOutcome::Timeout);
        };
        let code = answer.code;
        if code.class() != 2 {
            if operation == "observe" {
                inner.lwm2m.unobserve(&token);
            }
            inner.metrics.command("refused");
            let why = format!(
                "the device answered {code}{}{}",
                if answer.payload.is_empty() { "" } else { ": " },
                String::from_utf8_lossy(&answer.payload)
            );
            return Err(if code.class() == 5 {
                CommandError::Unavailable(why)
            } else {
                invalid(why)
            });
        }
        if operation == "observe" {
            if let Some(observed) = inner.lwm2m.observed(&token) {
                self.store_notification(&observed, &answer).await;
            }
            let (registrations, observations) = inner.lwm2m.len();
            inner.metrics.lwm2m(registrations, observations);
        }
        inner.metrics.command("replied");
        Ok(CommandOutcome::Replied(CommandReply {
            payload: answer.payload.clone(),
            content_type: media_type(answer.content_format().ok().flatten()).to_owned(),
            latency: started.elapsed(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_and_bad_ones_say_why() {
        assert_eq!(
            Path::parse("/3303/0/5700").unwrap(),
            Path {
                object: 3303,
                instance: Some(0),
                resource: Some(5700)
            }
        );
        assert_eq!(Path::parse("3").unwrap().segments(), [3]);
        for bad in ["", "/", "/x", "/3/70000", "/3/0/1/2"] {
            assert!(Path::parse(bad).is_err(), "{bad}");
        }
    }
}
