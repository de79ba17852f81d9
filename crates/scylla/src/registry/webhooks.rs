//! Webhooks on ScyllaDB: table `webhooks`, laid out like `rules` (one
//! partition per tenant clustered by name; the record as JSON in `spec`,
//! with its revision for the lightweight transactions).

use async_trait::async_trait;
use tributary_registry::{Expect, RegistryError, WebhookRecord, WebhookStore};

use super::{ANY_ATTEMPTS, ScyllaRegistryStore, conflict, to_i64};
use crate::ScyllaError;

fn encode(rule: &WebhookRecord) -> Result<String, RegistryError> {
    serde_json::to_string(rule)
        .map_err(|e| RegistryError::Internal(format!("encoding webhook: {e}")))
}

fn decode(spec: &str) -> Result<WebhookRecord, ScyllaError> {
    serde_json::from_str(spec).map_err(|e| ScyllaError::Decode(format!("corrupt webhook: {e}")))
}

impl ScyllaRegistryStore {
    async fn webhooks_page(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: i32,
    ) -> Result<Vec<WebhookRecord>, ScyllaError> {
        let result = match after {
            None => {
                self.cql
                    .execute(&self.s.webhook_list_first, (tenant, limit))
                    .await?
            }
            Some(a) => {
                self.cql
                    .execute(&self.s.webhook_list_after, (tenant, a, limit))
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
impl WebhookStore for ScyllaRegistryStore {
    async fn put_webhook(&self, rule: &WebhookRecord, expect: Expect) -> Result<(), RegistryError> {
        let spec = encode(rule)?;
        let revision = to_i64(rule.revision, "webhook revision")?;
        let (tenant, name) = (rule.tenant.as_str(), rule.name.as_str());
        let insert = (tenant, name, spec.as_str(), revision);
        let update = |expected: i64| (spec.as_str(), revision, tenant, name, expected);
        let what = || format!("webhook {tenant:?}/{name:?}");
        let s = &self.s;
        match expect {
            Expect::Absent => self
                .lwt(&s.webhook_insert, insert)
                .await?
                .expect_applied(&what(), expect),
            Expect::Revision(want) => {
                let Ok(want) = i64::try_from(want) else {
                    return Err(conflict(&what(), expect, None));
                };
                self.lwt(&s.webhook_update, update(want))
                    .await?
                    .expect_applied(&what(), expect)
            }
            Expect::Any => {
                for _ in 0..ANY_ATTEMPTS {
                    let out = self.lwt(&s.webhook_insert, insert).await?;
                    if out.applied {
                        return Ok(());
                    }
                    let Some(found) = out.revision() else {
                        continue;
                    };
                    if self.lwt(&s.webhook_update, update(found)).await?.applied {
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

    async fn get_webhook(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<WebhookRecord>, RegistryError> {
        let row = self
            .one::<(String,)>(&self.s.webhook_get, (tenant, name))
            .await?;
        Ok(row.map(|(spec,)| decode(&spec)).transpose()?)
    }

    async fn delete_webhook(&self, tenant: &str, name: &str) -> Result<bool, RegistryError> {
        Ok(self
            .lwt(&self.s.webhook_delete, (tenant, name))
            .await?
            .applied)
    }

    async fn list_webhooks(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<WebhookRecord>, RegistryError> {
        let mut out: Vec<WebhookRecord> = Vec::new();
        let mut cursor = after.map(str::to_owned);
        while out.len() < limit {
            let want = (limit - out.len()).min(super::INDEX_PAGE);
            let page = self
                .webhooks_page(
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
