//! Webhooks on ScyllaDB: table `webhooks` (see [`super::named`]).

use async_trait::async_trait;
use tributary_registry::{Expect, RegistryError, WebhookRecord, WebhookStore};

use super::ScyllaRegistryStore;
use super::named::Statements;

impl ScyllaRegistryStore {
    fn webhooks(&self) -> Statements<'_> {
        Statements {
            kind: "webhook",
            insert: &self.s.webhook_insert,
            update: &self.s.webhook_update,
            get: &self.s.webhook_get,
            delete: &self.s.webhook_delete,
            list_first: &self.s.webhook_list_first,
            list_after: &self.s.webhook_list_after,
        }
    }
}

#[async_trait]
impl WebhookStore for ScyllaRegistryStore {
    async fn put_webhook(&self, hook: &WebhookRecord, expect: Expect) -> Result<(), RegistryError> {
        self.put_named(
            &self.webhooks(),
            (&hook.tenant, &hook.name, hook.revision),
            hook,
            expect,
        )
        .await
    }

    async fn get_webhook(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<WebhookRecord>, RegistryError> {
        self.get_named(&self.webhooks(), tenant, name).await
    }

    async fn delete_webhook(&self, tenant: &str, name: &str) -> Result<bool, RegistryError> {
        self.delete_named(&self.webhooks(), tenant, name).await
    }

    async fn list_webhooks(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<WebhookRecord>, RegistryError> {
        self.list_named(
            &self.webhooks(),
            tenant,
            after,
            limit,
            |h: &WebhookRecord| h.name.clone(),
        )
        .await
    }
}
