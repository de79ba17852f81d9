//! Webhooks in the registry: where a tenant's alerts are POSTed, within its
//! `webhooks` quota. The signing secret is generated here, returned once,
//! and read back only by the delivery ([`Registry::all_webhooks`]).

use tributary_core::model::validate_tenant;
use tributary_core::quota::{Quota, QuotaExceeded};
use tributary_core::time::now_ns;
use tributary_rules::Severity;
use tributary_rules::model::validate_name;

use crate::service::Registry;
use crate::store::{Expect, WebhookRecord};
use crate::{Entity, RegistryError};

/// Longest webhook URL, in bytes.
pub const MAX_URL: usize = 2048;
/// Most rules one webhook names.
pub const MAX_RULES: usize = 100;
/// Webhooks read from the store at once.
const PAGE: usize = 500;

/// A webhook to create.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    /// The tenant, which must exist.
    pub tenant: String,
    /// Unique within the tenant, like a rule name.
    pub name: String,
    /// Where alerts are POSTed ([`validate_url`]).
    pub url: String,
    /// The rules whose alerts it gets; empty = every rule.
    pub rules: Vec<String>,
    /// The least severity sent; `None` sends every alert.
    pub min_severity: Option<Severity>,
}

/// Checks a webhook URL: `http` or `https`, a host, no user info, at most
/// [`MAX_URL`] bytes. Where it may point (private addresses) is the
/// delivery's decision, made when it connects.
pub fn validate_url(url: &str) -> Result<(), RegistryError> {
    let bad = |why: &str| RegistryError::invalid("url", why.to_owned());
    if url.len() > MAX_URL {
        return Err(bad("longer than 2048 bytes"));
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|_| bad("not a URL such as https://example.com/hooks/tributary"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("must start with https:// or http://")),
    }
    let Some(authority) = uri.authority() else {
        return Err(bad("has no host"));
    };
    if authority.as_str().contains('@') {
        return Err(bad("must not carry a user name or password"));
    }
    if authority.host().is_empty() {
        return Err(bad("has no host"));
    }
    Ok(())
}

impl Registry {
    /// Creates a webhook with a new secret, within the tenant's quota.
    pub async fn create_webhook(&self, new: NewWebhook) -> Result<WebhookRecord, RegistryError> {
        validate_tenant(&new.tenant)?;
        validate_name(&new.name)?;
        validate_url(&new.url)?;
        if new.rules.len() > MAX_RULES {
            return Err(RegistryError::invalid(
                "rules",
                format!("at most {MAX_RULES} rules"),
            ));
        }
        for (i, r) in new.rules.iter().enumerate() {
            validate_name(r)
                .map_err(|e| RegistryError::invalid(format!("rules[{i}]"), e.message))?;
        }
        let tenant = self.tenant(&new.tenant).await?;
        let _one_at_a_time = self.rule_creation.lock().await;
        let limit = tenant.settings.quotas.get(Quota::Webhooks);
        let held = self
            .store()
            .list_webhooks(
                &new.tenant,
                None,
                usize::try_from(limit).unwrap_or(usize::MAX),
            )
            .await?
            .len() as u64;
        if held >= limit {
            return Err(RegistryError::Quota(QuotaExceeded {
                tenant: new.tenant,
                quota: Quota::Webhooks,
                limit,
                retry_after_secs: None,
            }));
        }
        let secret = format!(
            "whsec_{}{}{}{}",
            tributary_auth::random_id(),
            tributary_auth::random_id(),
            tributary_auth::random_id(),
            tributary_auth::random_id()
        );
        let record = WebhookRecord {
            tenant: new.tenant,
            name: new.name,
            url: new.url,
            secret,
            rules: new.rules,
            min_severity: new.min_severity.unwrap_or(Severity::Info),
            created_at_ns: now_ns(),
            revision: 1,
        };
        match self.store().put_webhook(&record, Expect::Absent).await {
            Ok(()) => {}
            Err(RegistryError::Conflict(_)) => {
                return Err(RegistryError::already_exists(Entity::Webhook, record.name));
            }
            Err(e) => return Err(e),
        }
        self.webhook_generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tracing::info!(tenant = %record.tenant, webhook = %record.name, "webhook created");
        Ok(record)
    }

    /// A tenant's webhooks, by name (with their secrets: callers facing
    /// users must strip them).
    pub async fn list_webhooks(&self, tenant: &str) -> Result<Vec<WebhookRecord>, RegistryError> {
        validate_tenant(tenant)?;
        self.tenant(tenant).await?;
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store()
                .list_webhooks(tenant, after.as_deref(), PAGE)
                .await?;
            let done = page.len() < PAGE;
            after = page.last().map(|h| h.name.clone());
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }

    /// Deletes a webhook; whether it existed.
    pub async fn delete_webhook(&self, tenant: &str, name: &str) -> Result<bool, RegistryError> {
        validate_tenant(tenant)?;
        validate_name(name)?;
        let deleted = self.store().delete_webhook(tenant, name).await?;
        self.webhook_generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(deleted)
    }

    /// Moves whenever a webhook is created or deleted through this
    /// registry (not another replica).
    pub fn webhook_generation(&self) -> u64 {
        self.webhook_generation
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Every webhook of every tenant, with secrets, for the delivery.
    pub async fn all_webhooks(&self) -> Result<Vec<WebhookRecord>, RegistryError> {
        let mut out = Vec::new();
        for tenant in self.list_tenants().await? {
            out.extend(self.list_webhooks(&tenant.name).await?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_are_http_with_a_host_and_no_credentials() {
        for ok in [
            "https://pager.example.com/hooks/tributary",
            "http://127.0.0.1:8080/x?y=1",
            "https://[::1]/a",
        ] {
            assert!(validate_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ftp://example.com/x",
            "example.com/x",
            "https://user:pw@example.com/",
            "https:///x",
            "",
            &format!("https://example.com/{}", "a".repeat(MAX_URL)),
        ] {
            assert!(validate_url(bad).is_err(), "{bad}");
        }
    }
}
