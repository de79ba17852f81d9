//! Rules in the registry: created, read, listed and deleted per tenant,
//! within the tenant's `rules` quota, each watching at most `rule_devices`
//! devices. The stream processors read them ([`Registry::rules_with_targets`])
//! and evaluate them.

use tributary_core::model::validate_tenant;
use tributary_core::quota::{Quota, QuotaExceeded};
use tributary_core::time::now_ns;
use tributary_rules::{Rule, Target};

use crate::service::Registry;
use crate::store::Expect;
use crate::{Entity, RegistryError};

/// Rules read from the store at once.
const PAGE: usize = 500;

/// One page of a tenant's rules.
#[derive(Debug, Clone)]
pub struct RulePage {
    /// The rules, by name.
    pub rules: Vec<Rule>,
    /// The name to list after for the next page; `None` at the end.
    pub next_page_token: Option<String>,
}

impl Registry {
    /// Creates `rule` (validated by the caller's conversion, and again
    /// here) in its tenant: revision 1, created now. Refused past the
    /// tenant's `rules` quota, or when its target names a device that does
    /// not exist or selects more than `rule_devices` devices.
    pub async fn create_rule(&self, mut rule: Rule) -> Result<Rule, RegistryError> {
        validate_tenant(&rule.tenant)?;
        rule.validate(&self.config().limits)?;
        let tenant = self.tenant(&rule.tenant).await?;
        let watched = self.rule_targets(&rule).await?.len() as u64;
        let most = tenant.settings.quotas.get(Quota::RuleDevices);
        if watched > most {
            return Err(RegistryError::Quota(QuotaExceeded {
                tenant: rule.tenant.clone(),
                quota: Quota::RuleDevices,
                limit: most,
                retry_after_secs: None,
            }));
        }
        let _one_at_a_time = self.rule_creation.lock().await;
        let limit = tenant.settings.quotas.get(Quota::Rules);
        if self.count_rules(&rule.tenant, limit).await? >= limit {
            return Err(RegistryError::Quota(QuotaExceeded {
                tenant: rule.tenant.clone(),
                quota: Quota::Rules,
                limit,
                retry_after_secs: None,
            }));
        }
        rule.revision = 1;
        rule.created_ns = now_ns();
        match self.store().put_rule(&rule, Expect::Absent).await {
            Ok(()) => {}
            Err(RegistryError::Conflict(_)) => {
                return Err(RegistryError::already_exists(Entity::Rule, rule.name));
            }
            Err(e) => return Err(e),
        }
        tracing::info!(tenant = %rule.tenant, rule = %rule.name, devices = watched, "rule created");
        Ok(rule)
    }

    /// Rules of `tenant` in the store, up to `at_most`.
    async fn count_rules(&self, tenant: &str, at_most: u64) -> Result<u64, RegistryError> {
        let mut count = 0u64;
        let mut after: Option<String> = None;
        while count < at_most {
            let page = self
                .store()
                .list_rules(tenant, after.as_deref(), PAGE)
                .await?;
            count += page.len() as u64;
            if page.len() < PAGE {
                break;
            }
            after = page.last().map(|r| r.name.clone());
        }
        Ok(count)
    }

    /// One rule.
    pub async fn rule(&self, tenant: &str, name: &str) -> Result<Rule, RegistryError> {
        validate_tenant(tenant)?;
        tributary_rules::model::validate_name(name)?;
        self.store()
            .get_rule(tenant, name)
            .await?
            .ok_or_else(|| RegistryError::not_found(Entity::Rule, name))
    }

    /// A page of a tenant's rules, by name.
    pub async fn list_rules(
        &self,
        tenant: &str,
        page_size: usize,
        page_token: Option<&str>,
    ) -> Result<RulePage, RegistryError> {
        validate_tenant(tenant)?;
        if let Some(token) = page_token {
            tributary_rules::model::validate_name(token).map_err(|_| {
                RegistryError::invalid("page_token", "not a page token of this listing")
            })?;
        }
        self.tenant(tenant).await?;
        let page_size = page_size.clamp(1, 1000);
        let mut rules = self
            .store()
            .list_rules(tenant, page_token, page_size + 1)
            .await?;
        let next_page_token = if rules.len() > page_size {
            rules.truncate(page_size);
            rules.last().map(|r| r.name.clone())
        } else {
            None
        };
        Ok(RulePage {
            rules,
            next_page_token,
        })
    }

    /// Deletes a rule; whether it existed.
    pub async fn delete_rule(&self, tenant: &str, name: &str) -> Result<bool, RegistryError> {
        validate_tenant(tenant)?;
        tributary_rules::model::validate_name(name)?;
        let deleted = self.store().delete_rule(tenant, name).await?;
        if deleted {
            tracing::info!(tenant, rule = name, "rule deleted");
        }
        Ok(deleted)
    }

    /// The ids of the devices a rule watches now: its device if it exists,
    /// or those its selector matches.
    pub async fn rule_targets(&self, rule: &Rule) -> Result<Vec<String>, RegistryError> {
        match &rule.target {
            Target::Device(d) => match self.store().get_device(&rule.tenant, d).await? {
                Some(_) => Ok(vec![d.clone()]),
                None => Err(RegistryError::not_found(Entity::Device, d.clone())),
            },
            Target::Selector(s) => Ok(self
                .select_devices(&rule.tenant, s)
                .await?
                .into_iter()
                .map(|d| d.id)
                .collect()),
        }
    }

    /// The devices each of `rules` (a tenant's, all of them) watches: as
    /// last resolved when neither the rules nor this replica's devices
    /// changed since and it is younger than [`TARGETS_MAX_AGE`], else from
    /// one scan of the tenant's devices.
    async fn targets_of(
        &self,
        tenant: &str,
        rules: &[Rule],
    ) -> Result<Vec<Vec<String>>, RegistryError> {
        use std::sync::atomic::Ordering;
        let generation = self.device_generation.load(Ordering::Relaxed);
        let revisions: Vec<(String, u64)> =
            rules.iter().map(|r| (r.name.clone(), r.revision)).collect();
        {
            let cache = self
                .targets
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(c) = cache.get(tenant)
                && c.generation == generation
                && c.revisions == revisions
                && c.at.elapsed() < TARGETS_MAX_AGE
            {
                return Ok(c.targets.clone());
            }
        }
        let targets = self.scan_targets(tenant, rules).await?;
        self.targets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                tenant.to_owned(),
                ResolvedTargets {
                    generation,
                    revisions,
                    at: std::time::Instant::now(),
                    targets: targets.clone(),
                },
            );
        Ok(targets)
    }

    /// One scan of the tenant's devices, a page at a time, resolves every
    /// rule's targets.
    async fn scan_targets(
        &self,
        tenant: &str,
        rules: &[Rule],
    ) -> Result<Vec<Vec<String>>, RegistryError> {
        // One scan of the tenant's devices, a page at a time.
        let mut targets: Vec<Vec<String>> = vec![Vec::new(); rules.len()];
        let mut by_device: std::collections::HashMap<&str, Vec<usize>> =
            std::collections::HashMap::new();
        let mut selectors = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            match &rule.target {
                Target::Device(d) => by_device.entry(d.as_str()).or_default().push(i),
                Target::Selector(s) => selectors.push((i, s)),
            }
        }
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store()
                .list_devices(tenant, after.as_deref(), PAGE)
                .await?;
            let done = page.len() < PAGE;
            after = page.last().map(|d| d.id.clone());
            for device in &page {
                for &i in by_device.get(device.id.as_str()).into_iter().flatten() {
                    targets[i].push(device.id.clone());
                }
                for (i, s) in &selectors {
                    if s.matches(&device.labels) {
                        targets[*i].push(device.id.clone());
                    }
                }
            }
            if done {
                break;
            }
        }
        Ok(targets)
    }

    /// Every rule of every tenant with the devices it watches now (a rule
    /// whose device is gone watches none), for the processors. One scan of
    /// each tenant's devices resolves all its rules' targets; it is reused
    /// while nothing changed (see [`Registry::targets_of`]).
    pub async fn rules_with_targets(&self) -> Result<Vec<(Rule, Vec<String>)>, RegistryError> {
        let mut out = Vec::new();
        for tenant in self.list_tenants().await? {
            let mut rules = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = self
                    .store()
                    .list_rules(&tenant.name, after.as_deref(), PAGE)
                    .await?;
                let done = page.len() < PAGE;
                after = page.last().map(|r| r.name.clone());
                rules.extend(page);
                if done {
                    break;
                }
            }
            if rules.is_empty() {
                continue;
            }
            let targets = self.targets_of(&tenant.name, &rules).await?;
            out.extend(rules.into_iter().zip(targets));
        }
        Ok(out)
    }
}

/// How long resolved targets are reused at most: device changes made
/// through another registry replica are seen within this.
pub const TARGETS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// A tenant's rules' targets, as last resolved.
#[derive(Debug)]
pub(crate) struct ResolvedTargets {
    /// [`Registry::device_generation`] when resolved.
    generation: u64,
    /// The rules (name, revision) they were resolved for.
    revisions: Vec<(String, u64)>,
    at: std::time::Instant,
    targets: Vec<Vec<String>>,
}
