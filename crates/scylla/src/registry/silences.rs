//! Silences on ScyllaDB: table `silences` (see [`super::named`]), keyed
//! by the silence's key (`<rule>/<device>` or `<rule>/*`).

use async_trait::async_trait;
use tributary_registry::store::Silence;
use tributary_registry::{Expect, RegistryError, SilenceStore};

use super::ScyllaRegistryStore;
use super::named::Statements;

impl ScyllaRegistryStore {
    fn silences(&self) -> Statements<'_> {
        Statements {
            kind: "silence",
            insert: &self.s.silence_insert,
            update: &self.s.silence_update,
            get: &self.s.silence_get,
            delete: &self.s.silence_delete,
            list_first: &self.s.silence_list_first,
            list_after: &self.s.silence_list_after,
        }
    }
}

#[async_trait]
impl SilenceStore for ScyllaRegistryStore {
    async fn put_silence(&self, silence: &Silence, expect: Expect) -> Result<(), RegistryError> {
        self.put_named(
            &self.silences(),
            (&silence.tenant, &silence.key, silence.revision),
            silence,
            expect,
        )
        .await
    }

    async fn delete_silence(&self, tenant: &str, key: &str) -> Result<bool, RegistryError> {
        self.delete_named(&self.silences(), tenant, key).await
    }

    async fn list_silences(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Silence>, RegistryError> {
        self.list_named(&self.silences(), tenant, after, limit, |s: &Silence| {
            s.key.clone()
        })
        .await
    }
}
