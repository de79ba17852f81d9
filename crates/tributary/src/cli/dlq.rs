//! `dlq` commands: the dead-letter log.

use anyhow::{Context, bail};
use serde_json::json;
use tributary_core::time::format_rfc3339;
use tributary_proto::v1 as pb;

use super::Ctx;
use crate::output::Rows;

#[derive(Debug, clap::Subcommand)]
pub enum DlqCmd {
    /// List dead letters (the tenant's; with `--tenant '*'`, an admin's view
    /// of every tenant), oldest first.
    List {
        /// Most dead letters to print, 1 to 10000.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one dead letter, `PARTITION:OFFSET` as `list` prints it, with
    /// its record.
    Show { id: String },
    /// Append dead letters back to the telemetry log for the processor to
    /// store (after fixing what refused them).
    Replay {
        /// `PARTITION:OFFSET` of each dead letter (at most 1000).
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

fn parse_ref(id: &str) -> anyhow::Result<pb::DeadLetterRef> {
    let (p, o) = id.split_once(':').with_context(|| {
        format!("{id:?}: expected PARTITION:OFFSET, as `tributary dlq list` prints")
    })?;
    Ok(pb::DeadLetterRef {
        partition: p
            .parse()
            .with_context(|| format!("{id:?}: bad partition"))?,
        offset: o.parse().with_context(|| format!("{id:?}: bad offset"))?,
    })
}

fn rows(letters: &[pb::DeadLetter]) -> Rows {
    let mut rows = Rows::new(vec!["id", "tenant", "key", "bytes", "at", "reason"]);
    for d in letters {
        let id = format!("{}:{}", d.partition, d.offset);
        let at = format_rfc3339(d.timestamp_ms.saturating_mul(1_000_000));
        rows.push(
            vec![
                id.clone(),
                d.tenant.clone(),
                d.key.clone(),
                d.value_bytes.to_string(),
                at.clone(),
                d.reason.clone(),
            ],
            json!({"id": id, "tenant": d.tenant, "key": d.key, "bytes": d.value_bytes,
                   "at": at, "reason": d.reason, "source": d.source}),
        );
    }
    rows
}

pub async fn dlq(ctx: &mut Ctx, cmd: DlqCmd) -> anyhow::Result<()> {
    match cmd {
        DlqCmd::List { limit } => {
            if !(1..=10_000).contains(&limit) {
                bail!("--limit must be 1 to 10000");
            }
            let mut out = Vec::new();
            let mut page_token = String::new();
            while out.len() < limit {
                let resp = ctx
                    .dlq
                    .list_dead_letters(pb::ListDeadLettersRequest {
                        tenant: ctx.tenant.clone(),
                        page_size: (limit - out.len()).min(1000) as u32,
                        page_token,
                    })
                    .await?
                    .into_inner();
                out.extend(resp.dead_letters);
                if resp.next_page_token.is_empty() {
                    break;
                }
                page_token = resp.next_page_token;
            }
            ctx.print(&rows(&out));
        }
        DlqCmd::Show { id } => {
            let d = ctx
                .dlq
                .get_dead_letter(pb::GetDeadLetterRequest {
                    tenant: ctx.tenant.clone(),
                    r#ref: Some(parse_ref(&id)?),
                })
                .await?
                .into_inner();
            let id = format!("{}:{}", d.partition, d.offset);
            // The record is a TelemetryEnvelope, unless it is why it is here.
            let record = match <pb::TelemetryEnvelope as prost::Message>::decode(d.value.as_slice())
            {
                Ok(envelope) => format!("{envelope:?}"),
                Err(e) => format!("not a TelemetryEnvelope ({e}): {} bytes", d.value.len()),
            };
            let mut r = Rows::new(vec!["id", "tenant", "key", "reason", "source", "record"]);
            r.push(
                vec![
                    id.clone(),
                    d.tenant.clone(),
                    d.key.clone(),
                    d.reason.clone(),
                    d.source.clone(),
                    record.clone(),
                ],
                json!({"id": id, "tenant": d.tenant, "key": d.key, "reason": d.reason,
                       "source": d.source, "record": record}),
            );
            ctx.print(&r);
        }
        DlqCmd::Replay { ids } => {
            let refs = ids
                .iter()
                .map(|id| parse_ref(id))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let resp = ctx
                .dlq
                .replay_dead_letters(pb::ReplayDeadLettersRequest {
                    tenant: ctx.tenant.clone(),
                    refs,
                })
                .await?
                .into_inner();
            let mut r = Rows::new(vec!["replayed"]);
            r.push(
                vec![resp.replayed.to_string()],
                json!({"replayed": resp.replayed}),
            );
            ctx.print(&r);
        }
    }
    Ok(())
}
