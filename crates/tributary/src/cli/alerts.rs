//! `alerts` commands: what the rules raised.

use futures::StreamExt;
use serde_json::json;
use tributary_core::time::format_rfc3339;
use tributary_proto::v1 as pb;

use super::Ctx;
use crate::output::Rows;

#[derive(Debug, clap::Subcommand)]
pub enum AlertsCmd {
    /// List alerts with their newest state, newest first.
    List {
        /// Only this rule's.
        #[arg(long, short = 'r', default_value = "")]
        rule: String,
        /// Only this device's.
        #[arg(long, short = 'd', default_value = "")]
        device: String,
        /// Only alerts in this state: `pending`, `firing`, `resolved`, or
        /// `acknowledged` (acknowledged and not resolved).
        #[arg(long)]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Print alert transitions as they happen.
    Tail {
        #[arg(long, short = 'r', default_value = "")]
        rule: String,
        #[arg(long, short = 'd', default_value = "")]
        device: String,
    },
    /// Acknowledge a pending or firing alert: someone is on it. Webhooks and
    /// MQTT applications get the acknowledgement as a transition.
    Ack {
        /// The alert's id, from `alerts list`.
        alert_id: String,
        /// A note for the others.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Silence a rule's alerts for a while: still evaluated and listed, not
    /// delivered to webhooks or over MQTT.
    ///
    /// Name an alert (its rule on its device), or --rule with --device, or
    /// --rule alone for every device.
    Silence {
        /// The alert whose rule and device to silence.
        alert_id: Option<String>,
        #[arg(long, short = 'r', conflicts_with = "alert_id")]
        rule: Option<String>,
        #[arg(long, short = 'd', requires = "rule")]
        device: Option<String>,
        /// How long: `30m`, `2h`, `3d`; at most 90 days.
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        /// Why, for the others.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// List the silences in force.
    Silences,
    /// List webhook deliveries given up on, newest first.
    DeadLetters {
        /// At most this many (up to 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// End a silence now.
    Unsilence {
        #[arg(long, short = 'r')]
        rule: String,
        /// The device; the silence of every device when absent.
        #[arg(long, short = 'd', default_value = "")]
        device: String,
    },
}

fn silence_rows(silences: &[pb::Silence]) -> Rows {
    let mut rows = Rows::new(vec!["rule", "device", "until", "by", "comment"]);
    for s in silences {
        rows.push(
            vec![
                s.rule.clone(),
                if s.device.is_empty() {
                    "*".to_owned()
                } else {
                    s.device.clone()
                },
                time(s.until_ns),
                s.created_by.clone(),
                s.comment.clone(),
            ],
            json!({
                "rule": s.rule,
                "device": s.device,
                "until_ns": s.until_ns,
                "created_by": s.created_by,
                "created_at_ns": s.created_at_ns,
                "comment": s.comment,
            }),
        );
    }
    rows
}

fn alert_rows(alerts: &[pb::Alert]) -> Rows {
    let mut rows = Rows::new(vec![
        "id", "state", "rule", "device", "started", "fired", "resolved", "ack", "summary",
    ]);
    for a in alerts {
        let mut state = state_name(a.state).to_owned();
        if a.silenced_until_ns > tributary_core::time::now_ns() {
            state.push_str(" (silenced)");
        }
        rows.push(
            vec![
                a.alert_id.clone(),
                state,
                a.rule.clone(),
                a.device.clone(),
                time(a.started_at_ns),
                time(a.fired_at_ns),
                time(a.resolved_at_ns),
                a.acknowledged_by.clone(),
                a.summary.clone(),
            ],
            json!({
                "alert_id": a.alert_id,
                "state": state_name(a.state),
                "rule": a.rule,
                "device": a.device,
                "metric": a.metric,
                "started_at_ns": a.started_at_ns,
                "fired_at_ns": a.fired_at_ns,
                "resolved_at_ns": a.resolved_at_ns,
                "acknowledged_at_ns": a.acknowledged_at_ns,
                "acknowledged_by": a.acknowledged_by,
                "silenced_until_ns": a.silenced_until_ns,
                "value": a.value,
                "summary": a.summary,
            }),
        );
    }
    rows
}

fn state_name(s: i32) -> &'static str {
    match pb::AlertState::try_from(s) {
        Ok(pb::AlertState::Pending) => "pending",
        Ok(pb::AlertState::Firing) => "firing",
        Ok(pb::AlertState::Resolved) => "resolved",
        Ok(pb::AlertState::Acknowledged) => "acknowledged",
        _ => "unknown",
    }
}

fn time(ns: i64) -> String {
    if ns == 0 {
        String::new()
    } else {
        format_rfc3339(ns)
    }
}

pub async fn alerts(ctx: &mut Ctx, cmd: AlertsCmd) -> anyhow::Result<()> {
    match cmd {
        AlertsCmd::List {
            rule,
            device,
            state,
            limit,
        } => {
            let state = match state.as_deref() {
                None => pb::AlertState::Unspecified,
                Some("pending") => pb::AlertState::Pending,
                Some("firing") => pb::AlertState::Firing,
                Some("resolved") => pb::AlertState::Resolved,
                Some("acknowledged") => pb::AlertState::Acknowledged,
                Some(other) => anyhow::bail!(
                    "--state {other:?}: use pending, firing, resolved or acknowledged"
                ),
            };
            let resp = ctx
                .alerts
                .list_alerts(pb::ListAlertsRequest {
                    tenant: ctx.tenant.clone(),
                    rule,
                    device,
                    state: state as i32,
                    limit,
                    ..Default::default()
                })
                .await?
                .into_inner();
            let rows = alert_rows(&resp.alerts);
            ctx.print(&rows);
            if resp.truncated {
                eprintln!(
                    "note: the alerts log holds more transitions than one listing reads; older alerts are missing"
                );
            }
        }
        AlertsCmd::Tail { rule, device } => {
            use std::io::Write;
            let mut stream = ctx
                .alerts
                .tail_alerts(pb::TailAlertsRequest {
                    tenant: ctx.tenant.clone(),
                    rule,
                    device,
                })
                .await?
                .into_inner();
            let json_out = ctx.output == crate::output::Format::Json;
            while let Some(e) = stream.next().await {
                let e = e?;
                let line = if json_out {
                    json!({
                        "alert_id": e.alert_id,
                        "state": state_name(e.state),
                        "rule": e.rule,
                        "device": e.device,
                        "metric": e.metric,
                        "started_at_ns": e.started_at_ns,
                        "at_ns": e.at_ns,
                        "value": e.value,
                        "summary": e.summary,
                        "silenced_until_ns": e.silenced_until_ns,
                        "by": e.by,
                        "comment": e.comment,
                    })
                    .to_string()
                } else {
                    format!(
                        "{}  {:<8}  {}  {}  {}",
                        format_rfc3339(e.at_ns),
                        state_name(e.state),
                        e.rule,
                        e.device,
                        e.summary
                    )
                };
                let mut out = std::io::stdout().lock();
                writeln!(out, "{line}")?;
                out.flush()?;
            }
        }
        AlertsCmd::Ack { alert_id, comment } => {
            let alert = ctx
                .alerts
                .ack_alert(pb::AckAlertRequest {
                    tenant: ctx.tenant.clone(),
                    alert_id,
                    comment,
                })
                .await?
                .into_inner();
            ctx.print(&alert_rows(&[alert]));
        }
        AlertsCmd::Silence {
            alert_id,
            rule,
            device,
            duration,
            comment,
        } => {
            let Some(span) = tributary_core::time::parse_duration(&duration) else {
                anyhow::bail!("--for {duration:?}: a duration such as 30m, 2h or 3d");
            };
            let (rule, device) = match (alert_id, rule) {
                (Some(id), _) => {
                    let found = ctx
                        .alerts
                        .list_alerts(pb::ListAlertsRequest {
                            tenant: ctx.tenant.clone(),
                            alert_id: id.clone(),
                            ..Default::default()
                        })
                        .await?
                        .into_inner()
                        .alerts;
                    let Some(a) = found.into_iter().next() else {
                        anyhow::bail!("no alert {id}; `tributary alerts list` shows their ids");
                    };
                    (a.rule, a.device)
                }
                (None, Some(rule)) => (rule, device.unwrap_or_default()),
                (None, None) => anyhow::bail!("name an alert id, or --rule (and --device)"),
            };
            let silence = ctx
                .rules
                .create_silence(pb::CreateSilenceRequest {
                    silence: Some(pb::Silence {
                        tenant: ctx.tenant.clone(),
                        rule,
                        device,
                        until_ns: tributary_core::time::now_ns().saturating_add(span),
                        comment,
                        ..Default::default()
                    }),
                })
                .await?
                .into_inner();
            ctx.print(&silence_rows(&[silence]));
        }
        AlertsCmd::DeadLetters { limit } => {
            let resp = ctx
                .alerts
                .list_alert_dead_letters(pb::ListAlertDeadLettersRequest {
                    tenant: ctx.tenant.clone(),
                    limit,
                })
                .await?
                .into_inner();
            let mut rows = Rows::new(vec!["at", "webhook", "attempts", "reason", "alert"]);
            for d in &resp.dead_letters {
                let body: serde_json::Value =
                    serde_json::from_str(&d.body).unwrap_or(serde_json::Value::Null);
                let alert = format!(
                    "{} {} {}",
                    body["alert_id"].as_str().unwrap_or("?"),
                    body["state"].as_str().unwrap_or("?"),
                    body["summary"].as_str().unwrap_or("")
                );
                rows.push(
                    vec![
                        time(d.at_ns),
                        d.webhook.clone(),
                        d.attempts.to_string(),
                        d.reason.clone(),
                        alert,
                    ],
                    json!({
                        "at_ns": d.at_ns,
                        "webhook": d.webhook,
                        "attempts": d.attempts,
                        "reason": d.reason,
                        "body": body,
                    }),
                );
            }
            ctx.print(&rows);
            if resp.truncated {
                eprintln!("note: the dead-letter log holds more than one listing reads");
            }
        }
        AlertsCmd::Silences => {
            let silences = ctx
                .rules
                .list_silences(pb::ListSilencesRequest {
                    tenant: ctx.tenant.clone(),
                })
                .await?
                .into_inner()
                .silences;
            ctx.print(&silence_rows(&silences));
        }
        AlertsCmd::Unsilence { rule, device } => {
            let deleted = ctx
                .rules
                .delete_silence(pb::DeleteSilenceRequest {
                    tenant: ctx.tenant.clone(),
                    rule: rule.clone(),
                    device,
                })
                .await?
                .into_inner()
                .deleted;
            if !deleted {
                anyhow::bail!("rule {rule} had no silence there");
            }
        }
    }
    Ok(())
}
