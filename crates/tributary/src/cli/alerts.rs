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
        /// Only alerts in this state: `pending`, `firing` or `resolved`.
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
}

fn state_name(s: i32) -> &'static str {
    match pb::AlertState::try_from(s) {
        Ok(pb::AlertState::Pending) => "pending",
        Ok(pb::AlertState::Firing) => "firing",
        Ok(pb::AlertState::Resolved) => "resolved",
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
                Some(other) => anyhow::bail!("--state {other:?}: use pending, firing or resolved"),
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
            let mut rows = Rows::new(vec![
                "state", "rule", "device", "started", "fired", "resolved", "summary",
            ]);
            for a in &resp.alerts {
                rows.push(
                    vec![
                        state_name(a.state).to_owned(),
                        a.rule.clone(),
                        a.device.clone(),
                        time(a.started_at_ns),
                        time(a.fired_at_ns),
                        time(a.resolved_at_ns),
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
                        "value": a.value,
                        "summary": a.summary,
                    }),
                );
            }
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
    }
    Ok(())
}
