//! Silences in the registry: an operator's "not now" for a rule's alerts,
//! on one device or every device, until a time (see
//! [`tributary_rules::silence`]). Within the tenant's `silences` quota,
//! each at most [`MAX_SILENCE_NS`] ahead; expired ones are dropped when the
//! tenant's silences are next listed or one is created.

use tributary_core::model::{validate_device_id, validate_tenant};
use tributary_core::quota::{Quota, QuotaExceeded};
use tributary_core::time::now_ns;
use tributary_rules::model::validate_name;
use tributary_rules::silence::MAX_SILENCE_NS;

use crate::RegistryError;
use crate::service::Registry;
use crate::store::{Expect, Silence};

/// Most silences, expired ones included, read from one tenant at once.
const MAX_READ: usize = 100_000;
/// Longest comment, in bytes.
pub const MAX_COMMENT: usize = 1024;

/// A silence to create.
#[derive(Debug, Clone)]
pub struct NewSilence {
    /// The tenant, which must exist.
    pub tenant: String,
    /// The rule, which must exist.
    pub rule: String,
    /// One device, or empty for every device of the rule.
    pub device: String,
    /// In force until then, ns since the epoch.
    pub until_ns: i64,
    /// A note for other operators, at most [`MAX_COMMENT`] bytes.
    pub comment: String,
    /// Who creates it: the operator token's subject.
    pub by: String,
}

impl Registry {
    /// Creates a silence, or replaces the one of the same rule and device.
    pub async fn create_silence(&self, new: NewSilence) -> Result<Silence, RegistryError> {
        validate_tenant(&new.tenant)?;
        validate_name(&new.rule)?;
        if !new.device.is_empty() {
            validate_device_id(&new.device, &self.config().limits)?;
        }
        if new.comment.len() > MAX_COMMENT {
            return Err(RegistryError::invalid(
                "comment",
                format!("at most {MAX_COMMENT} bytes"),
            ));
        }
        let now = now_ns();
        if new.until_ns <= now {
            return Err(RegistryError::invalid("until_ns", "must be in the future"));
        }
        if new.until_ns - now > MAX_SILENCE_NS {
            return Err(RegistryError::invalid("until_ns", "at most 90 days ahead"));
        }
        // The rule exists (NOT_FOUND otherwise): a silence of a misspelt
        // rule would silence nothing, quietly.
        self.rule(&new.tenant, &new.rule).await?;
        let limit = self
            .tenant(&new.tenant)
            .await?
            .settings
            .quotas
            .get(Quota::Silences);
        let _one_at_a_time = self.rule_creation.lock().await;
        let key = Silence::key_of(&new.rule, &new.device);
        let held = self.active_silences(&new.tenant).await?;
        let existing = held.iter().find(|s| s.key == key);
        if existing.is_none() && held.len() as u64 >= limit {
            return Err(RegistryError::Quota(QuotaExceeded {
                tenant: new.tenant.clone(),
                quota: Quota::Silences,
                limit,
                retry_after_secs: None,
            }));
        }
        let silence = Silence {
            tenant: new.tenant,
            key,
            rule: new.rule,
            device: new.device,
            until_ns: new.until_ns,
            comment: new.comment,
            created_by: new.by,
            created_at_ns: now,
            revision: existing.map_or(1, |s| s.revision + 1),
        };
        self.store().put_silence(&silence, Expect::Any).await?;
        tracing::info!(
            tenant = %silence.tenant,
            rule = %silence.rule,
            device = %silence.device,
            until_ns = silence.until_ns,
            by = %silence.created_by,
            "silence created"
        );
        Ok(silence)
    }

    /// A tenant's silences in force, by key. Expired ones are deleted.
    pub async fn list_silences(&self, tenant: &str) -> Result<Vec<Silence>, RegistryError> {
        validate_tenant(tenant)?;
        self.tenant(tenant).await?;
        self.active_silences(tenant).await
    }

    async fn active_silences(&self, tenant: &str) -> Result<Vec<Silence>, RegistryError> {
        // Expired ones may sit beside the limit of active ones.
        let all = self.store().list_silences(tenant, None, MAX_READ).await?;
        let now = now_ns();
        let mut active = Vec::new();
        for s in all {
            if s.active(now) {
                active.push(s);
            } else {
                self.store().delete_silence(tenant, &s.key).await?;
            }
        }
        Ok(active)
    }

    /// Deletes the silence of `rule` on `device` (empty = the one for
    /// every device); whether it existed.
    pub async fn delete_silence(
        &self,
        tenant: &str,
        rule: &str,
        device: &str,
    ) -> Result<bool, RegistryError> {
        validate_tenant(tenant)?;
        validate_name(rule)?;
        if !device.is_empty() {
            validate_device_id(device, &self.config().limits)?;
        }
        self.store()
            .delete_silence(tenant, &Silence::key_of(rule, device))
            .await
    }

    /// Every tenant's silences in force, for the processors.
    pub async fn all_silences(&self) -> Result<Vec<Silence>, RegistryError> {
        let mut out = Vec::new();
        let now = now_ns();
        for tenant in self.list_tenants().await? {
            out.extend(
                self.store()
                    .list_silences(&tenant.name, None, MAX_READ)
                    .await?
                    .into_iter()
                    .filter(|s| s.active(now)),
            );
        }
        Ok(out)
    }
}
