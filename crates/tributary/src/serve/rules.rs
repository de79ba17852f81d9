//! Where a processor reads its rules.

use std::sync::Arc;

use async_trait::async_trait;
use tributary_processor::RuleSource;
use tributary_rules::Rule;

/// The registry in this process (standalone): every tenant's rules with the
/// devices they watch now.
#[derive(Debug, Clone)]
pub struct LocalRules(pub Arc<tributary_registry::Registry>);

#[async_trait]
impl RuleSource for LocalRules {
    async fn rules(&self) -> Result<Vec<(Rule, Vec<String>)>, String> {
        self.0.rules_with_targets().await.map_err(|e| e.to_string())
    }
}
