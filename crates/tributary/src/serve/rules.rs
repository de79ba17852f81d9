//! Where a processor reads its rules, and where alert delivery reads the
//! webhooks: the registry in this process (standalone), or `tributary
//! registry` over its internal `DirectoryService` (distributed).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use tonic::transport::{Channel, Endpoint};
use tributary_core::limits::Limits;
use tributary_processor::RuleSource;
use tributary_proto::v1 as pb;
use tributary_proto::v1::directory_service_client::DirectoryServiceClient;
use tributary_rules::{Rule, Silence};

/// The registry in this process (standalone): every tenant's rules with the
/// devices they watch now.
#[derive(Debug, Clone)]
pub struct LocalRules(pub Arc<tributary_registry::Registry>);

#[async_trait]
impl RuleSource for LocalRules {
    async fn rules(&self) -> Result<Vec<(Rule, Vec<String>)>, String> {
        self.0.rules_with_targets().await.map_err(|e| e.to_string())
    }

    async fn silences(&self) -> Result<Vec<Silence>, String> {
        self.0.all_silences().await.map_err(|e| e.to_string())
    }
}

/// `tributary registry` over gRPC, with a service token.
#[derive(Debug, Clone)]
pub struct RemoteRegistry {
    channel: Channel,
    keys: tributary_auth::JwtKeys,
    role: &'static str,
    limits: Limits,
}

impl RemoteRegistry {
    /// A lazy channel to `url`: a registry down at start is retried at each
    /// read, not an error.
    pub fn new(
        url: &str,
        keys: tributary_auth::JwtKeys,
        role: &'static str,
        limits: Limits,
    ) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(url.to_owned())
            .with_context(|| format!("registry URL {url:?}"))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .connect_lazy();
        Ok(Self {
            channel,
            keys,
            role,
            limits,
        })
    }

    fn request<T>(&self, message: T) -> Result<tonic::Request<T>, String> {
        let token = self
            .keys
            .service_token(self.role)
            .map_err(|e| format!("minting the service token: {e}"))?;
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}")
                .parse()
                .map_err(|e| format!("service token as a header: {e}"))?,
        );
        Ok(request)
    }

    fn client(&self) -> DirectoryServiceClient<Channel> {
        // A rule set with its devices may be large: 10,000 devices' ids.
        DirectoryServiceClient::new(self.channel.clone()).max_decoding_message_size(16 << 20)
    }
}

#[async_trait]
impl RuleSource for RemoteRegistry {
    async fn rules(&self) -> Result<Vec<(Rule, Vec<String>)>, String> {
        let request = self.request(pb::ListRuleTargetsRequest {})?;
        let mut stream = self
            .client()
            .list_rule_targets(request)
            .await
            .map_err(|s| format!("registry: {}", s.message()))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(targets) = stream
            .message()
            .await
            .map_err(|s| format!("registry: {}", s.message()))?
        {
            let Some(pb_rule) = targets.rule else {
                continue;
            };
            match tributary_rules::convert::rule_from_pb(&pb_rule, &pb_rule.tenant, &self.limits) {
                Ok(mut rule) => {
                    rule.revision = pb_rule.revision;
                    rule.created_ns = pb_rule.created_at_ns;
                    out.push((rule, targets.devices));
                }
                // The registry validated it under its own limits; this
                // process's are narrower.
                Err(e) => tracing::warn!(
                    tenant = %pb_rule.tenant,
                    rule = %pb_rule.name,
                    error = %e,
                    "a rule this processor cannot evaluate is skipped"
                ),
            }
        }
        Ok(out)
    }

    async fn silences(&self) -> Result<Vec<Silence>, String> {
        let request = self.request(pb::ListAllSilencesRequest {})?;
        let silences = self
            .client()
            .list_all_silences(request)
            .await
            .map_err(|s| format!("registry: {}", s.message()))?
            .into_inner()
            .silences;
        Ok(silences
            .into_iter()
            .map(tributary_rules::convert::silence_from_pb)
            .collect())
    }
}

#[async_trait]
impl tributary_notify::webhook::WebhookSource for RemoteRegistry {
    async fn webhooks(&self) -> Result<Vec<tributary_notify::webhook::Webhook>, String> {
        let request = self.request(pb::ListAllWebhooksRequest {})?;
        let hooks = self
            .client()
            .list_all_webhooks(request)
            .await
            .map_err(|s| format!("registry: {}", s.message()))?
            .into_inner()
            .webhooks;
        Ok(hooks
            .into_iter()
            .filter_map(|h| {
                let w = h.webhook?;
                Some(tributary_notify::webhook::Webhook {
                    tenant: w.tenant,
                    name: w.name,
                    url: w.url,
                    secret: h.secret,
                    rules: w.rules,
                    min_severity: w.min_severity,
                })
            })
            .collect())
    }
}
