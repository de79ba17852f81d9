//! Rules on ScyllaDB: table `rules` (see [`super::named`]).

use async_trait::async_trait;
use tributary_registry::{Expect, RegistryError, Rule, RuleStore};

use super::ScyllaRegistryStore;
use super::named::Statements;

impl ScyllaRegistryStore {
    fn rules(&self) -> Statements<'_> {
        Statements {
            kind: "rule",
            insert: &self.s.rule_insert,
            update: &self.s.rule_update,
            get: &self.s.rule_get,
            delete: &self.s.rule_delete,
            list_first: &self.s.rule_list_first,
            list_after: &self.s.rule_list_after,
        }
    }
}

#[async_trait]
impl RuleStore for ScyllaRegistryStore {
    async fn put_rule(&self, rule: &Rule, expect: Expect) -> Result<(), RegistryError> {
        self.put_named(
            &self.rules(),
            (&rule.tenant, &rule.name, rule.revision),
            rule,
            expect,
        )
        .await
    }

    async fn get_rule(&self, tenant: &str, name: &str) -> Result<Option<Rule>, RegistryError> {
        self.get_named(&self.rules(), tenant, name).await
    }

    async fn delete_rule(&self, tenant: &str, name: &str) -> Result<bool, RegistryError> {
        self.delete_named(&self.rules(), tenant, name).await
    }

    async fn list_rules(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Rule>, RegistryError> {
        self.list_named(&self.rules(), tenant, after, limit, |r: &Rule| {
            r.name.clone()
        })
        .await
    }
}
