//! `webhooks` commands: where alerts are POSTed.

use anyhow::bail;
use serde_json::json;
use tributary_proto::v1 as pb;

use super::Ctx;
use crate::output::Rows;

#[derive(Debug, clap::Subcommand)]
pub enum WebhooksCmd {
    /// Create a webhook; prints its signing secret once.
    ///
    /// Every alert transition of the tenant (or of --rule) is POSTed to the
    /// URL as JSON, with a `Tributary-Signature: t=<unix>,v1=<hex>` header:
    /// the HMAC-SHA256 of "<unix>.<body>" with the secret (docs/alerts.md).
    Create {
        /// The webhook's name.
        name: String,
        /// `https://…` (or `http://…`).
        #[arg(long)]
        url: String,
        /// Only this rule's alerts (repeatable); every rule when absent.
        #[arg(long = "rule")]
        rules: Vec<String>,
        /// The least severity sent: `info`, `warning` or `critical`.
        #[arg(long)]
        min_severity: Option<String>,
    },
    /// List the tenant's webhooks (never their secrets).
    List,
    /// Delete a webhook.
    Delete {
        /// The webhook's name.
        name: String,
    },
}

fn severity_name(s: i32) -> &'static str {
    match pb::Severity::try_from(s) {
        Ok(pb::Severity::Info) => "info",
        Ok(pb::Severity::Warning) => "warning",
        Ok(pb::Severity::Critical) => "critical",
        _ => "any",
    }
}

fn rows(hooks: &[pb::Webhook], secret: Option<&str>) -> Rows {
    let mut columns = vec!["name", "url", "rules", "min_severity"];
    if secret.is_some() {
        columns.push("secret");
    }
    let mut rows = Rows::new(columns);
    for h in hooks {
        let rules = if h.rules.is_empty() {
            "*".to_owned()
        } else {
            h.rules.join(",")
        };
        let mut row = vec![
            h.name.clone(),
            h.url.clone(),
            rules,
            severity_name(h.min_severity).to_owned(),
        ];
        let mut obj = json!({
            "tenant": h.tenant,
            "name": h.name,
            "url": h.url,
            "rules": h.rules,
            "min_severity": severity_name(h.min_severity),
            "created_at_ns": h.created_at_ns,
        });
        if let Some(secret) = secret {
            row.push(secret.to_owned());
            obj["secret"] = json!(secret);
        }
        rows.push(row, obj);
    }
    rows
}

pub async fn webhooks(ctx: &mut Ctx, cmd: WebhooksCmd) -> anyhow::Result<()> {
    match cmd {
        WebhooksCmd::Create {
            name,
            url,
            rules,
            min_severity,
        } => {
            let min_severity = match min_severity.as_deref() {
                None => pb::Severity::Unspecified,
                Some("info") => pb::Severity::Info,
                Some("warning") => pb::Severity::Warning,
                Some("critical") => pb::Severity::Critical,
                Some(other) => bail!("--min-severity {other:?}: use info, warning or critical"),
            };
            let created = ctx
                .rules
                .create_webhook(pb::CreateWebhookRequest {
                    webhook: Some(pb::Webhook {
                        tenant: ctx.tenant.clone(),
                        name,
                        url,
                        rules,
                        min_severity: min_severity as i32,
                        created_at_ns: 0,
                    }),
                })
                .await?
                .into_inner();
            let hook = created.webhook.unwrap_or_default();
            ctx.print(&rows(&[hook], Some(&created.secret)));
            eprintln!("note: the secret is shown only now; receivers check signatures with it");
        }
        WebhooksCmd::List => {
            let hooks = ctx
                .rules
                .list_webhooks(pb::ListWebhooksRequest {
                    tenant: ctx.tenant.clone(),
                })
                .await?
                .into_inner()
                .webhooks;
            ctx.print(&rows(&hooks, None));
        }
        WebhooksCmd::Delete { name } => {
            let deleted = ctx
                .rules
                .delete_webhook(pb::DeleteWebhookRequest {
                    tenant: ctx.tenant.clone(),
                    name: name.clone(),
                })
                .await?
                .into_inner()
                .deleted;
            if !deleted {
                bail!("no webhook {name:?}");
            }
            eprintln!("deleted webhook {name}");
        }
    }
    Ok(())
}
