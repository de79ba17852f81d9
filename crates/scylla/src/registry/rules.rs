//! Rules on ScyllaDB: table `rules`, one partition per tenant clustered by
//! name, so a listing is one range read (`WHERE tenant = ? AND name > ?`)
//! and needs no index table. A row holds the rule as JSON (`spec`, the
//! embedded store's encoding too) and its revision, the token of the
//! lightweight transactions every write is.

use async_trait::async_trait;
use tributary_registry::{Expect, RegistryError, Rule, RuleStore};

use super::{ANY_ATTEMPTS, ScyllaRegistryStore, conflict, to_i64};
use crate::ScyllaError;

fn encode(rule: &Rule) -> Result<String, RegistryError> {
    serde_json::to_string(rule).map_err(|e| RegistryError::Internal(format!("encoding rule: {e}")))
}

fn decode(spec: &str) -> Result<Rule, ScyllaError> {
    serde_json::from_str(spec).map_err(|e| ScyllaError::Decode(format!("corrupt rule: {e}")))
}

impl ScyllaRegistryStore {
    async fn rules_page(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: i32,
    ) -> Result<Vec<Rule>, ScyllaError> {
        let result = match after {
            None => {
                self.cql
                    .execute(&self.s.rule_list_first, (tenant, limit))
                    .await?
            }
            Some(a) => {
                self.cql
                    .execute(&self.s.rule_list_after, (tenant, a, limit))
                    .await?
            }
        };
        let rows = result.into_rows_result().map_err(ScyllaError::decode)?;
        rows.rows::<(String,)>()
            .map_err(ScyllaError::decode)?
            .map(|r| {
                r.map_err(ScyllaError::decode)
                    .and_then(|(spec,)| decode(&spec))
            })
            .collect()
    }
}

#[async_trait]
impl RuleStore for ScyllaRegistryStore {
    async fn put_rule(&self, rule: &Rule, expect: Expect) -> Result<(), RegistryError> {
        let spec = encode(rule)?;
        let revision = to_i64(rule.revision, "rule revision")?;
        let (tenant, name) = (rule.tenant.as_str(), rule.name.as_str());
        let insert = (tenant, name, spec.as_str(), revision);
        let update = |expected: i64| (spec.as_str(), revision, tenant, name, expected);
        let what = || format!("rule {tenant:?}/{name:?}");
        let s = &self.s;
        match expect {
            Expect::Absent => self
                .lwt(&s.rule_insert, insert)
                .await?
                .expect_applied(&what(), expect),
            Expect::Revision(want) => {
                let Ok(want) = i64::try_from(want) else {
                    return Err(conflict(&what(), expect, None));
                };
                self.lwt(&s.rule_update, update(want))
                    .await?
                    .expect_applied(&what(), expect)
            }
            Expect::Any => {
                for _ in 0..ANY_ATTEMPTS {
                    let out = self.lwt(&s.rule_insert, insert).await?;
                    if out.applied {
                        return Ok(());
                    }
                    let Some(found) = out.revision() else {
                        continue;
                    };
                    if self.lwt(&s.rule_update, update(found)).await?.applied {
                        return Ok(());
                    }
                }
                Err(RegistryError::Conflict(format!(
                    "{}: still changing after {ANY_ATTEMPTS} attempts",
                    what()
                )))
            }
        }
    }

    async fn get_rule(&self, tenant: &str, name: &str) -> Result<Option<Rule>, RegistryError> {
        let row = self
            .one::<(String,)>(&self.s.rule_get, (tenant, name))
            .await?;
        Ok(row.map(|(spec,)| decode(&spec)).transpose()?)
    }

    async fn delete_rule(&self, tenant: &str, name: &str) -> Result<bool, RegistryError> {
        Ok(self.lwt(&self.s.rule_delete, (tenant, name)).await?.applied)
    }

    async fn list_rules(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Rule>, RegistryError> {
        let mut out: Vec<Rule> = Vec::new();
        let mut cursor = after.map(str::to_owned);
        while out.len() < limit {
            let want = (limit - out.len()).min(super::INDEX_PAGE);
            let page = self
                .rules_page(
                    tenant,
                    cursor.as_deref(),
                    i32::try_from(want).unwrap_or(i32::MAX),
                )
                .await?;
            let ended = page.len() < want;
            cursor = page.last().map(|r| r.name.clone());
            out.extend(page);
            if ended {
                break;
            }
        }
        Ok(out)
    }
}
