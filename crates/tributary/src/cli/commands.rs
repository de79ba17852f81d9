//! `commands` commands: cloud-to-device commands.

use anyhow::{Context, bail};
use serde_json::json;
use tributary_core::time::{NS_PER_MS, NS_PER_SEC, parse_duration};
use tributary_proto::v1 as pb;

use super::Ctx;
use crate::output::Rows;

#[derive(Debug, clap::Subcommand)]
pub enum CommandsCmd {
    /// Send a command to a device and print its reply.
    ///
    /// The device receives it over MQTT on `devices/{device}/commands/{name}`
    /// and answers on `devices/{device}/commands/{name}/response`. Exits
    /// with 0 when the device replied or the command was queued for an
    /// offline device's persistent session, and with 1 when the device is
    /// offline, not subscribed, or did not reply in time.
    Send {
        /// The device.
        #[arg(long, short = 'd')]
        device: String,
        /// The command name, e.g. `reboot`.
        #[arg(long, short = 'n')]
        name: String,
        /// The payload sent to the device, as text.
        #[arg(long, short = 'p', default_value = "")]
        payload: String,
        /// The payload's content type, for MQTT 5 devices.
        #[arg(long, default_value = "")]
        content_type: String,
        /// How long to wait for the reply, e.g. `500ms`, `10s`, `2m`.
        #[arg(long, default_value = "10s")]
        timeout: String,
        /// How long the command stays queued for an offline device with a
        /// persistent session, e.g. `10m`, `1h`; the server's default (1 h)
        /// when absent.
        #[arg(long)]
        ttl: Option<String>,
    },
}

pub async fn commands(ctx: &mut Ctx, cmd: CommandsCmd) -> anyhow::Result<()> {
    match cmd {
        CommandsCmd::Send {
            device,
            name,
            payload,
            content_type,
            timeout,
            ttl,
        } => {
            let timeout_ns = parse_duration(&timeout).with_context(|| {
                format!("--timeout {timeout:?}: expected a duration such as 10s")
            })?;
            let timeout_ms = u32::try_from(timeout_ns / NS_PER_MS)
                .ok()
                .filter(|ms| *ms > 0)
                .with_context(|| format!("--timeout {timeout:?}: between 1ms and 49 days"))?;
            let ttl_seconds = match &ttl {
                None => 0,
                Some(t) => parse_duration(t)
                    .and_then(|ns| u32::try_from(ns / NS_PER_SEC).ok())
                    .filter(|s| *s > 0)
                    .with_context(|| {
                        format!("--ttl {t:?}: expected a duration of at least 1s, such as 1h")
                    })?,
            };
            let resp = ctx
                .commands
                .send_command(pb::SendCommandRequest {
                    tenant: ctx.tenant.clone(),
                    device: device.clone(),
                    name: name.clone(),
                    payload: payload.into_bytes(),
                    content_type,
                    timeout_ms,
                    ttl_seconds,
                })
                .await?
                .into_inner();
            ctx.print(&reply_rows(&resp));
            match resp.status() {
                pb::CommandStatus::DeliveredReplied => {}
                pb::CommandStatus::Queued => eprintln!(
                    "note: {device} is offline; the command is queued for {} s and delivered when it reconnects",
                    resp.ttl_seconds
                ),
                pb::CommandStatus::Timeout => {
                    bail!("{device} got the command but did not reply within {timeout}")
                }
                pb::CommandStatus::Offline => {
                    bail!("{device} is offline and keeps no session: the command was dropped")
                }
                pb::CommandStatus::NotSubscribed => bail!(
                    "{device} is connected but not subscribed to devices/{device}/commands/+: the command was dropped"
                ),
                pb::CommandStatus::Unspecified => bail!("the server answered without a status"),
            }
        }
    }
    Ok(())
}

fn status_text(status: pb::CommandStatus) -> &'static str {
    match status {
        pb::CommandStatus::DeliveredReplied => "replied",
        pb::CommandStatus::Timeout => "timeout",
        pb::CommandStatus::Offline => "offline",
        pb::CommandStatus::Queued => "queued",
        pb::CommandStatus::NotSubscribed => "not_subscribed",
        pb::CommandStatus::Unspecified => "unspecified",
    }
}

/// One row: the status, the latency and the reply (as text when it is
/// UTF-8, as hex otherwise).
fn reply_rows(resp: &pb::SendCommandResponse) -> Rows {
    let status = status_text(resp.status());
    let latency_ms = resp.latency_us as f64 / 1000.0;
    let (reply_text, reply_json) = match std::str::from_utf8(&resp.reply_payload) {
        Ok(text) => (text.to_owned(), json!({ "reply": text })),
        Err(_) => {
            let hex: String = resp
                .reply_payload
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            (format!("0x{hex}"), json!({ "reply_hex": hex }))
        }
    };
    let mut object = json!({
        "status": status,
        "latency_ms": latency_ms,
        "reply_content_type": resp.reply_content_type,
        "ttl_seconds": resp.ttl_seconds,
    });
    if let (Some(o), Some(r)) = (object.as_object_mut(), reply_json.as_object()) {
        o.extend(r.clone());
    }
    let mut rows = Rows::new(vec!["status", "latency", "content_type", "reply"]);
    rows.push(
        vec![
            status.to_owned(),
            format!("{latency_ms:.1}ms"),
            resp.reply_content_type.clone(),
            reply_text,
        ],
        object,
    );
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Format;

    #[test]
    fn a_reply_prints_as_text_or_hex() {
        let resp = pb::SendCommandResponse {
            status: pb::CommandStatus::DeliveredReplied as i32,
            reply_payload: br#"{"ok":true}"#.to_vec(),
            reply_content_type: "application/json".into(),
            latency_us: 12_345,
            ttl_seconds: 0,
        };
        assert_eq!(
            reply_rows(&resp).render(Format::Table),
            "status   latency  content_type      reply\n\
             replied  12.3ms   application/json  {\"ok\":true}\n"
        );
        let binary = pb::SendCommandResponse {
            reply_payload: vec![0xff, 0x00],
            ..resp
        };
        let out = reply_rows(&binary).render(Format::Json);
        assert!(out.contains("\"reply_hex\": \"ff00\""), "{out}");
    }
}
