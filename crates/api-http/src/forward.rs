//! The registry's operator services over gRPC, for a query replica whose
//! registry is another process: each call goes to the registry with the
//! caller's metadata (its token), so the registry authenticates and scopes
//! it exactly as if the caller had called it directly.

use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tributary_proto::v1 as pb;
use tributary_proto::v1::registry_service_client::RegistryServiceClient;
use tributary_proto::v1::rules_service_client::RulesServiceClient;

/// Sends each call of a service to its gRPC client, with the request's
/// metadata.
macro_rules! forward {
    ($ty:ident, $client:ident, $trait:path, { $($method:ident($req:ty) -> $resp:ty;)* }) => {
        #[async_trait::async_trait]
        impl $trait for $ty {
            $(
                async fn $method(&self, request: Request<$req>) -> Result<Response<$resp>, Status> {
                    self.0.clone().$method(request).await
                }
            )*
        }
    };
}

/// `RegistryService` of a remote registry.
#[derive(Debug, Clone)]
pub struct RemoteRegistryService(pub RegistryServiceClient<Channel>);

/// `RulesService` of a remote registry.
#[derive(Debug, Clone)]
pub struct RemoteRulesService(pub RulesServiceClient<Channel>);

forward!(RemoteRegistryService, RegistryServiceClient, pb::registry_service_server::RegistryService, {
    create_tenant(pb::CreateTenantRequest) -> pb::Tenant;
    list_tenants(pb::ListTenantsRequest) -> pb::ListTenantsResponse;
    set_tenant_quotas(pb::SetTenantQuotasRequest) -> pb::Tenant;
    set_tenant_retention(pb::SetTenantRetentionRequest) -> pb::Tenant;
    set_tenant_lwm2m_metrics(pb::SetTenantLwm2mMetricsRequest) -> pb::Tenant;
    create_device(pb::CreateDeviceRequest) -> pb::CreateDeviceResponse;
    get_device(pb::GetDeviceRequest) -> pb::Device;
    list_devices(pb::ListDevicesRequest) -> pb::ListDevicesResponse;
    update_device(pb::UpdateDeviceRequest) -> pb::Device;
    disable_device(pb::DeviceRef) -> pb::Device;
    enable_device(pb::DeviceRef) -> pb::Device;
    delete_device(pb::DeviceRef) -> pb::DeleteDeviceResponse;
    issue_token(pb::IssueTokenRequest) -> pb::IssueTokenResponse;
    list_tokens(pb::ListTokensRequest) -> pb::ListTokensResponse;
    revoke_token(pb::RevokeTokenRequest) -> pb::Credential;
    register_certificate(pb::RegisterCertificateRequest) -> pb::Credential;
    issue_application_token(pb::IssueApplicationTokenRequest) -> pb::IssueTokenResponse;
    report_presence(pb::ReportPresenceRequest) -> pb::Presence;
});

forward!(RemoteRulesService, RulesServiceClient, pb::rules_service_server::RulesService, {
    create_rule(pb::CreateRuleRequest) -> pb::Rule;
    get_rule(pb::GetRuleRequest) -> pb::Rule;
    list_rules(pb::ListRulesRequest) -> pb::ListRulesResponse;
    delete_rule(pb::DeleteRuleRequest) -> pb::DeleteRuleResponse;
    create_webhook(pb::CreateWebhookRequest) -> pb::CreateWebhookResponse;
    list_webhooks(pb::ListWebhooksRequest) -> pb::ListWebhooksResponse;
    delete_webhook(pb::DeleteWebhookRequest) -> pb::DeleteWebhookResponse;
    create_silence(pb::CreateSilenceRequest) -> pb::Silence;
    list_silences(pb::ListSilencesRequest) -> pb::ListSilencesResponse;
    delete_silence(pb::DeleteSilenceRequest) -> pb::DeleteSilenceResponse;
});
