//! [`RulesGrpc`]: the `tributary.v1.RulesService` gRPC server. Viewers get
//! and list rules; operators also create and delete them; admins act in
//! any tenant. Errors map like the registry's (`From<RegistryError> for
//! Status`).

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tributary_auth::{JwtKeys, Role};
use tributary_proto::v1 as pb;
use tributary_proto::v1::rules_service_server::{RulesService, RulesServiceServer};
use tributary_rules::convert::{rule_from_pb, rule_to_pb, silence_to_pb};

use tributary_rules::Severity;

use crate::RegistryError;
use crate::grpc::RegistryGrpc;
use crate::service::Registry;
use crate::silences::NewSilence;
use crate::store::WebhookRecord;
use crate::webhooks::NewWebhook;

/// Rules per `ListRules` page when the request says 0.
const DEFAULT_PAGE_SIZE: usize = 100;

/// The rules gRPC service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RulesGrpc {
    registry: Arc<Registry>,
    /// For its token checks.
    auth: RegistryGrpc,
}

impl RulesGrpc {
    /// Serves the rules of `registry`, verifying operator tokens with `keys`.
    pub fn new(registry: Arc<Registry>, keys: JwtKeys) -> Self {
        Self {
            auth: RegistryGrpc::new(registry.clone(), keys),
            registry,
        }
    }

    /// The tonic service, to add to a `tonic::transport::Server`.
    pub fn server(self) -> RulesServiceServer<RulesGrpc> {
        RulesServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl RulesService for RulesGrpc {
    async fn create_rule(
        &self,
        request: Request<pb::CreateRuleRequest>,
    ) -> Result<Response<pb::Rule>, Status> {
        let asked = request
            .get_ref()
            .rule
            .as_ref()
            .map(|r| r.tenant.clone())
            .unwrap_or_default();
        let (_, tenant) = self.auth.scope(&request, &asked, Role::Operator)?;
        let Some(wire) = request.into_inner().rule else {
            return Err(RegistryError::invalid("rule", "missing").into());
        };
        let rule = rule_from_pb(&wire, &tenant, &self.registry.config().limits)
            .map_err(RegistryError::Invalid)?;
        let rule = self.registry.create_rule(rule).await?;
        Ok(Response::new(rule_to_pb(&rule)))
    }

    async fn get_rule(
        &self,
        request: Request<pb::GetRuleRequest>,
    ) -> Result<Response<pb::Rule>, Status> {
        let (_, tenant) = self
            .auth
            .scope(&request, &request.get_ref().tenant, Role::Viewer)?;
        let rule = self.registry.rule(&tenant, &request.get_ref().name).await?;
        Ok(Response::new(rule_to_pb(&rule)))
    }

    async fn list_rules(
        &self,
        request: Request<pb::ListRulesRequest>,
    ) -> Result<Response<pb::ListRulesResponse>, Status> {
        let (_, tenant) = self
            .auth
            .scope(&request, &request.get_ref().tenant, Role::Viewer)?;
        let req = request.into_inner();
        let size = match req.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n as usize,
        };
        let token = (!req.page_token.is_empty()).then_some(req.page_token.as_str());
        let page = self.registry.list_rules(&tenant, size, token).await?;
        Ok(Response::new(pb::ListRulesResponse {
            rules: page.rules.iter().map(rule_to_pb).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn delete_rule(
        &self,
        request: Request<pb::DeleteRuleRequest>,
    ) -> Result<Response<pb::DeleteRuleResponse>, Status> {
        let (_, tenant) = self
            .auth
            .scope(&request, &request.get_ref().tenant, Role::Operator)?;
        let deleted = self
            .registry
            .delete_rule(&tenant, &request.get_ref().name)
            .await?;
        Ok(Response::new(pb::DeleteRuleResponse { deleted }))
    }

    async fn create_webhook(
        &self,
        request: Request<pb::CreateWebhookRequest>,
    ) -> Result<Response<pb::CreateWebhookResponse>, Status> {
        let asked = request
            .get_ref()
            .webhook
            .as_ref()
            .map(|w| w.tenant.clone())
            .unwrap_or_default();
        let (_, tenant) = self.auth.scope(&request, &asked, Role::Operator)?;
        let Some(w) = request.into_inner().webhook else {
            return Err(RegistryError::invalid("webhook", "missing").into());
        };
        let min_severity = match pb::Severity::try_from(w.min_severity) {
            Ok(pb::Severity::Unspecified) => None,
            Ok(pb::Severity::Info) => Some(Severity::Info),
            Ok(pb::Severity::Warning) => Some(Severity::Warning),
            Ok(pb::Severity::Critical) => Some(Severity::Critical),
            Err(_) => {
                return Err(RegistryError::invalid("min_severity", "unknown severity").into());
            }
        };
        let record = self
            .registry
            .create_webhook(NewWebhook {
                tenant,
                name: w.name,
                url: w.url,
                rules: w.rules,
                min_severity,
            })
            .await?;
        Ok(Response::new(pb::CreateWebhookResponse {
            secret: record.secret.clone(),
            webhook: Some(webhook_to_pb(&record)),
        }))
    }

    async fn list_webhooks(
        &self,
        request: Request<pb::ListWebhooksRequest>,
    ) -> Result<Response<pb::ListWebhooksResponse>, Status> {
        let (_, tenant) = self
            .auth
            .scope(&request, &request.get_ref().tenant, Role::Viewer)?;
        let hooks = self.registry.list_webhooks(&tenant).await?;
        Ok(Response::new(pb::ListWebhooksResponse {
            webhooks: hooks.iter().map(webhook_to_pb).collect(),
        }))
    }

    async fn delete_webhook(
        &self,
        request: Request<pb::DeleteWebhookRequest>,
    ) -> Result<Response<pb::DeleteWebhookResponse>, Status> {
        let (_, tenant) = self
            .auth
            .scope(&request, &request.get_ref().tenant, Role::Operator)?;
        let deleted = self
            .registry
            .delete_webhook(&tenant, &request.get_ref().name)
            .await?;
        Ok(Response::new(pb::DeleteWebhookResponse { deleted }))
    }

    async fn create_silence(
        &self,
        request: Request<pb::CreateSilenceRequest>,
    ) -> Result<Response<pb::Silence>, Status> {
        Ok(Response::new(self.create_silence_inner(request).await?))
    }

    async fn list_silences(
        &self,
        request: Request<pb::ListSilencesRequest>,
    ) -> Result<Response<pb::ListSilencesResponse>, Status> {
        let (_, tenant) = self
            .auth
            .scope(&request, &request.get_ref().tenant, Role::Viewer)?;
        let silences = self.registry.list_silences(&tenant).await?;
        Ok(Response::new(pb::ListSilencesResponse {
            silences: silences.iter().map(silence_to_pb).collect(),
        }))
    }

    async fn delete_silence(
        &self,
        request: Request<pb::DeleteSilenceRequest>,
    ) -> Result<Response<pb::DeleteSilenceResponse>, Status> {
        let (_, tenant) = self
            .auth
            .scope(&request, &request.get_ref().tenant, Role::Operator)?;
        let r = request.get_ref();
        let deleted = self
            .registry
            .delete_silence(&tenant, &r.rule, &r.device)
            .await?;
        Ok(Response::new(pb::DeleteSilenceResponse { deleted }))
    }
}

/// The silence methods of the service.
impl RulesGrpc {
    async fn create_silence_inner(
        &self,
        request: Request<pb::CreateSilenceRequest>,
    ) -> Result<pb::Silence, Status> {
        let asked = request
            .get_ref()
            .silence
            .as_ref()
            .map(|s| s.tenant.clone())
            .unwrap_or_default();
        let (claims, tenant) = self.auth.scope(&request, &asked, Role::Operator)?;
        let Some(wire) = request.into_inner().silence else {
            return Err(RegistryError::invalid("silence", "missing").into());
        };
        let silence = self
            .registry
            .create_silence(NewSilence {
                tenant,
                rule: wire.rule,
                device: wire.device,
                until_ns: wire.until_ns,
                comment: wire.comment,
                by: claims.sub,
            })
            .await?;
        Ok(silence_to_pb(&silence))
    }
}

/// A webhook as users see it: never its secret.
pub(crate) fn webhook_to_pb(w: &WebhookRecord) -> pb::Webhook {
    pb::Webhook {
        tenant: w.tenant.clone(),
        name: w.name.clone(),
        url: w.url.clone(),
        rules: w.rules.clone(),
        min_severity: match w.min_severity {
            Severity::Info => pb::Severity::Info,
            Severity::Warning => pb::Severity::Warning,
            Severity::Critical => pb::Severity::Critical,
        } as i32,
        created_at_ns: w.created_at_ns,
    }
}
