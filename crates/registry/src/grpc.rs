//! [`RegistryGrpc`]: the `tributary.v1.RegistryService` gRPC server.
//!
//! Every call verifies the operator JWT in the `authorization` metadata,
//! resolves the tenant it acts in (`OperatorClaims::tenant_for`: the token's
//! own unless an admin names another) and checks the role:
//!
//! | role     | may                                                          |
//! |----------|--------------------------------------------------------------|
//! | viewer   | get and list devices, list tokens (never secrets)            |
//! | operator | also create, update, disable, enable and delete devices; issue and revoke tokens; report presence |
//! | admin    | also create and list tenants, and act in any tenant          |
//!
//! Errors become [`Status`] in one place, `From<RegistryError> for Status`:
//! validation errors carry a `google.rpc.BadRequest` field violation, and
//! internal details are logged, never sent.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tributary_auth::{JwtKeys, OperatorClaims, Role, authorize};
use tributary_core::selector::Selector;
use tributary_proto::v1 as pb;
use tributary_proto::v1::registry_service_server::{RegistryService, RegistryServiceServer};

use crate::RegistryError;
use crate::service::{
    Device, DeviceUpdate, IssuedToken, ListOrder, NewApplication, NewCertificate, NewDevice,
    NewTenant, NewToken, Registry, format_fingerprint, parse_fingerprint,
};
use crate::store::{
    CredentialKind, CredentialRecord, PresenceRecord, TenantRecord, TenantSettings,
};

/// Devices per `ListDevices` page when the request says 0.
const DEFAULT_PAGE_SIZE: usize = 100;

/// The registry's gRPC service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RegistryGrpc {
    registry: Arc<Registry>,
    keys: JwtKeys,
}

impl RegistryGrpc {
    /// DisableDevice and EnableDevice.
    async fn set_disabled(
        &self,
        request: Request<pb::DeviceRef>,
        disabled: bool,
    ) -> Result<Response<pb::Device>, Status> {
        let (_, tenant) = self.scope(&request, &request.get_ref().tenant, Role::Operator)?;
        let device = self
            .registry
            .set_disabled(&tenant, &request.get_ref().device, disabled)
            .await?;
        Ok(Response::new(device_to_proto(device)))
    }

    /// Serves `registry`, verifying operator tokens with `keys`.
    pub fn new(registry: Arc<Registry>, keys: JwtKeys) -> Self {
        Self { registry, keys }
    }

    /// The tonic service, to add to a `tonic::transport::Server`.
    pub fn server(self) -> RegistryServiceServer<RegistryGrpc> {
        RegistryServiceServer::new(self)
    }

    /// Verifies the caller's token, requires `role`, and returns the claims
    /// and the tenant the call acts in.
    #[allow(clippy::result_large_err)] // tonic's Status is what the trait returns.
    pub(crate) fn scope<T>(
        &self,
        req: &Request<T>,
        tenant: &str,
        role: Role,
    ) -> Result<(OperatorClaims, String), Status> {
        let claims = authorize(&self.keys, req)?;
        let tenant = claims.tenant_for(tenant)?;
        claims.require(role)?;
        Ok((claims, tenant))
    }
}

impl From<RegistryError> for Status {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Invalid(v) => {
                let message = format!("invalid {v}");
                Status::with_error_details(
                    Code::InvalidArgument,
                    message,
                    ErrorDetails::with_bad_request_violation(v.field, v.message),
                )
            }
            e @ RegistryError::AlreadyExists { .. } => Status::already_exists(e.to_string()),
            e @ RegistryError::NotFound { .. } => Status::not_found(e.to_string()),
            RegistryError::LimitExceeded(m) => Status::resource_exhausted(m),
            RegistryError::Quota(q) => Status::with_error_details(
                Code::ResourceExhausted,
                format!(
                    "{q}; {}",
                    match q.quota {
                        tributary_core::quota::Quota::Rules =>
                            "delete rules or ask for a higher quota",
                        tributary_core::quota::Quota::RuleDevices =>
                            "narrow the rule's selector or ask for a higher quota",
                        tributary_core::quota::Quota::Webhooks =>
                            "delete webhooks or ask for a higher quota",
                        _ => "delete devices or ask for a higher quota",
                    }
                ),
                ErrorDetails::with_quota_failure_violation(
                    format!("tenant/{}", q.tenant),
                    format!("{}: {}", q.quota, q.limit),
                ),
            ),
            RegistryError::Conflict(_) => Status::aborted("concurrent modification; retry"),
            RegistryError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "registry storage unavailable");
                Status::unavailable("registry storage unavailable; retry later")
            }
            RegistryError::Internal(detail) => {
                tracing::error!(error = %detail, "registry internal error");
                Status::internal("internal error")
            }
        }
    }
}

#[tonic::async_trait]
impl RegistryService for RegistryGrpc {
    async fn set_tenant_quotas(
        &self,
        request: Request<pb::SetTenantQuotasRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        // Quotas protect other tenants: only a platform admin sets them.
        let (_, tenant) = self.scope(&request, &request.get_ref().tenant, Role::Admin)?;
        let req = request.into_inner();
        let set: Vec<(String, u64)> = req.set.into_iter().collect();
        let record = self
            .registry
            .set_tenant_quotas(&tenant, &set, &req.clear)
            .await?;
        Ok(Response::new(tenant_to_proto(record)))
    }

    async fn set_tenant_retention(
        &self,
        request: Request<pb::SetTenantRetentionRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        // Retention spends shared storage: only a platform admin sets it.
        let (_, tenant) = self.scope(&request, &request.get_ref().tenant, Role::Admin)?;
        let req = request.into_inner();
        let set: Vec<(String, String)> = req.set.into_iter().collect();
        let record = self
            .registry
            .set_tenant_retention(&tenant, &set, &req.clear)
            .await?;
        Ok(Response::new(tenant_to_proto(record)))
    }

    async fn set_tenant_lwm2m_metrics(
        &self,
        request: Request<pb::SetTenantLwm2mMetricsRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        // Metric names are the tenant's own affair: its operators set them.
        let (_, tenant) = self.scope(&request, &request.get_ref().tenant, Role::Operator)?;
        let req = request.into_inner();
        let set: Vec<(String, String)> = req.set.into_iter().collect();
        let record = self
            .registry
            .set_tenant_lwm2m_metrics(&tenant, &set, &req.clear)
            .await?;
        Ok(Response::new(tenant_to_proto(record)))
    }

    async fn create_tenant(
        &self,
        request: Request<pb::CreateTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        let (claims, _) = self.scope(&request, "", Role::Admin)?;
        let req = request.into_inner();
        let settings = req
            .settings
            .map(|s| -> Result<TenantSettings, Status> {
                let quotas = tributary_core::quota::Quotas::from_named(
                    s.quotas.iter().map(|(k, v)| (k.as_str(), *v)),
                )
                .map_err(|e| Status::invalid_argument(format!("settings.quotas: {e}")))?;
                let retention = tributary_core::retention::RetentionSettings::from_named(
                    s.retention.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                )
                .map_err(|e| Status::invalid_argument(format!("settings.retention: {e}")))?;
                tributary_core::lwm2m::Lwm2mMetrics::from_named(
                    s.lwm2m_metrics
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str())),
                    &tributary_core::Limits::default(),
                )
                .map_err(|e| Status::invalid_argument(format!("settings.lwm2m_metrics: {e}")))?;
                Ok(TenantSettings {
                    auto_provision: s.auto_provision,
                    device_tag: s.device_tag,
                    quotas,
                    retention,
                    lwm2m_metrics: s.lwm2m_metrics.into_iter().collect(),
                })
            })
            .transpose()?
            .unwrap_or_default();
        let tenant = self
            .registry
            .create_tenant(NewTenant {
                name: req.name,
                display_name: req.display_name,
                settings,
            })
            .await?;
        tracing::info!(operator = %claims.sub, tenant = %tenant.name, "tenant created over gRPC");
        Ok(Response::new(tenant_to_proto(tenant)))
    }

    async fn list_tenants(
        &self,
        request: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        self.scope(&request, "", Role::Admin)?;
        let tenants = self.registry.list_tenants().await?;
        Ok(Response::new(pb::ListTenantsResponse {
            tenants: tenants.into_iter().map(tenant_to_proto).collect(),
        }))
    }

    async fn create_device(
        &self,
        request: Request<pb::CreateDeviceRequest>,
    ) -> Result<Response<pb::CreateDeviceResponse>, Status> {
        let (_, tenant) = self.scope(&request, &request.get_ref().tenant, Role::Operator)?;
        let req = request.into_inner();
        let (device, token) = self
            .registry
            .create_device(NewDevice {
                tenant,
                id: req.id,
                labels: req.labels.into_iter().collect(),
                metadata: req.metadata.into_iter().collect(),
                issue_token: req.issue_token,
            })
            .await?;
        Ok(Response::new(pb::CreateDeviceResponse {
            device: Some(device_to_proto(device)),
            token: token.map(issued_to_proto),
        }))
    }

    async fn get_device(
        &self,
        request: Request<pb::GetDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        let (_, tenant) = self.scope(&request, &request.get_ref().tenant, Role::Viewer)?;
        let device = self
            .registry
            .device(&tenant, &request.get_ref().device)
            .await?;
        Ok(Response::new(device_to_proto(device)))
    }

    async fn list_devices(
        &self,
        request: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        let (_, tenant) = self.scope(&request, &request.get_ref().tenant, Role::Viewer)?;
        let req = request.into_inner();
        let selector = Selector::parse(&req.selector).map_err(RegistryError::from)?;
        let page_size = match usize::try_from(req.page_size) {
            Ok(0) | Err(_) => DEFAULT_PAGE_SIZE,
            Ok(n) => n,
        };
        let page_token = Some(req.page_token.as_str()).filter(|t| !t.is_empty());
        let page = self
            .registry
            .list_devices(
                &tenant,
                &selector,
                &req.id_prefix,
                if req.descending {
                    ListOrder::Descending
                } else {
                    ListOrder::Ascending
                },
                page_size,
                page_token,
            )
            .await?;
        Ok(Response::new(pb::ListDevicesResponse {
            devices: page.devices.into_iter().map(device_to_proto).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
            tenant_devices: self.registry.device_total(&tenant).await?,
        }))
    }

    async fn update_device(
        &self,
        request: Request<pb::UpdateDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        let (_, tenant) = self.scope(&request, &request.get_ref().tenant, Role::Operator)?;
        let req = request.into_inner();
        let update = DeviceUpdate {
            set_labels: req.set_labels.into_iter().collect(),
            remove_labels: req.remove_labels,
            set_metadata: req.set_metadata.into_iter().collect(),
            remove_metadata: req.remove_metadata,
        };
        let device = self
            .registry
            .update_device(&tenant, &req.device, update)
            .await?;
        Ok(Response::new(device_to_proto(device)))
    }

    async fn disable_device(
        &self,
        request: Request<pb::DeviceRef>,
    ) -> Result<Response<pb::Device>, Status> {
        self.set_disabled(request, true).await
    }

    async fn enable_device(
        &self,
        request: Request<pb::DeviceRef>,
    ) -> Result<Response<pb::Device>, Status> {
        self.set_disabled(request, false).await
    }

    async fn delete_device(
        &self,
        request: Request<pb::DeviceRef>,
    ) -> Result<Response<pb::DeleteDeviceResponse>, Status> {
        let (_, tenant) = self.scope(&request, &request.get_ref().tenant, Role::Operator)?;
        self.registry
            .delete_device(&tenant, &request.get_ref().device)
            .await?;
        Ok(Response::new(pb::DeleteDeviceResponse {}))
    }

    async fn issue_token(
        &self,
        request: Request<pb::IssueTokenRequest>,
    ) -> Result<Response<pb::IssueTokenResponse>, Status> {
        let (_, tenant) = self.scope(&request, &request.get_ref().tenant, Role::Operator)?;
        let req = request.into_inner();
        let ttl = Some(req.ttl_seconds)
            .filter(|s| *s > 0)
            .map(Duration::from_secs);
        let kind = match pb::CredentialKind::try_from(req.kind) {
            Ok(pb::CredentialKind::DeviceToken) => CredentialKind::DeviceToken,
            Ok(pb::CredentialKind::TenantIngestToken) => CredentialKind::TenantIngestToken,
            Ok(pb::CredentialKind::DeviceCertificate) => CredentialKind::DeviceCertificate,
            Ok(pb::CredentialKind::Application) => CredentialKind::Application,
            Ok(pb::CredentialKind::DevicePsk) => CredentialKind::DevicePsk,
            Ok(pb::CredentialKind::Unspecified) | Err(_) => {
                return Err(RegistryError::invalid(
                    "kind",
                    "CREDENTIAL_KIND_DEVICE_TOKEN, CREDENTIAL_KIND_TENANT_INGEST_TOKEN or CREDENTIAL_KIND_DEVICE_PSK",
                )
                .into());
            }
        };
        let issued = self
            .registry
            .issue_token(NewToken {
                tenant,
                kind,
                device: Some(req.device).filter(|d| !d.is_empty()),
                name: req.name,
                ttl,
            })
            .await?;
        Ok(Response::new(issued_to_proto(issued)))
    }

    async fn issue_application_token(
        &self,
        request: Request<pb::IssueApplicationTokenRequest>,
    ) -> Result<Response<pb::IssueTokenResponse>, Status> {
        let (_, tenant) = self.scope(&request, &request.get_ref().tenant, Role::Operator)?;
        let req = request.into_inner();
        let issued = self
            .registry
            .issue_application(NewApplication {
                tenant,
                name: req.name,
                publish: req.publish,
                subscribe: req.subscribe,
                ttl: Some(req.ttl_seconds)
                    .filter(|s| *s > 0)
                    .map(Duration::from_secs),
            })
            .await?;
        Ok(Response::new(issued_to_proto(issued)))
    }

    async fn register_certificate(
        &self,
        request: Request<pb::RegisterCertificateRequest>,
    ) -> Result<Response<pb::Credential>, Status> {
        let (_, tenant) = self.scope(&request, &request.get_ref().tenant, Role::Operator)?;
        let req = request.into_inner();
        if req.certificate_pem.is_empty() {
            return Err(RegistryError::invalid(
                "certificate_pem",
                "required: register the certificate (PEM), not its fingerprint, so the registry \
                 can check it is issued for this tenant",
            )
            .into());
        }
        if !req.fingerprint.is_empty() {
            let given = parse_fingerprint(&req.fingerprint)?;
            let parsed = crate::certificate::parse_certificate_pem(&req.certificate_pem)?;
            if given != parsed.fingerprint {
                return Err(RegistryError::invalid(
                    "fingerprint",
                    "does not match certificate_pem",
                )
                .into());
            }
        }
        let credential = self
            .registry
            .register_certificate(NewCertificate {
                tenant,
                device: req.device,
                certificate_pem: req.certificate_pem,
                name: req.name,
                ttl: Some(req.ttl_seconds)
                    .filter(|s| *s > 0)
                    .map(Duration::from_secs),
            })
            .await?;
        Ok(Response::new(credential_to_proto(credential)))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let (_, tenant) = self.scope(&request, &request.get_ref().tenant, Role::Viewer)?;
        let device = Some(request.get_ref().device.as_str()).filter(|d| !d.is_empty());
        let credentials = self.registry.list_tokens(&tenant, device).await?;
        Ok(Response::new(pb::ListTokensResponse {
            credentials: credentials.into_iter().map(credential_to_proto).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::Credential>, Status> {
        let (_, tenant) = self.scope(&request, &request.get_ref().tenant, Role::Operator)?;
        let credential = self
            .registry
            .revoke_token(&tenant, &request.get_ref().credential_id)
            .await?;
        Ok(Response::new(credential_to_proto(credential)))
    }

    async fn report_presence(
        &self,
        request: Request<pb::ReportPresenceRequest>,
    ) -> Result<Response<pb::Presence>, Status> {
        let (_, tenant) = self.scope(&request, &request.get_ref().tenant, Role::Operator)?;
        let req = request.into_inner();
        let presence = self
            .registry
            .report_presence(&tenant, &req.device, req.online, req.at_ns, &req.frontend)
            .await?;
        Ok(Response::new(presence_to_proto(presence)))
    }
}

fn tenant_to_proto(t: TenantRecord) -> pb::Tenant {
    pb::Tenant {
        name: t.name,
        display_name: t.display_name,
        created_at_ns: t.created_at_ns,
        settings: Some(pb::TenantSettings {
            auto_provision: t.settings.auto_provision,
            device_tag: t.settings.device_tag,
            quotas: t
                .settings
                .quotas
                .overrides()
                .map(|(q, v)| (q.name().to_owned(), v))
                .collect(),
            retention: t.settings.retention.to_named().into_iter().collect(),
            lwm2m_metrics: t.settings.lwm2m_metrics.into_iter().collect(),
        }),
    }
}

fn presence_to_proto(p: PresenceRecord) -> pb::Presence {
    pb::Presence {
        online: p.online,
        last_seen_ns: p.last_seen_ns,
        frontend: p.frontend,
    }
}

fn device_to_proto(d: Device) -> pb::Device {
    let r = d.record;
    pb::Device {
        tenant: r.tenant,
        id: r.id,
        labels: r.labels.into_iter().collect(),
        metadata: r.metadata.into_iter().collect(),
        disabled: r.disabled,
        created_at_ns: r.created_at_ns,
        updated_at_ns: r.updated_at_ns,
        presence: Some(presence_to_proto(d.presence)),
    }
}

fn credential_to_proto(c: CredentialRecord) -> pb::Credential {
    let kind = match c.kind {
        CredentialKind::DeviceToken => pb::CredentialKind::DeviceToken,
        CredentialKind::TenantIngestToken => pb::CredentialKind::TenantIngestToken,
        CredentialKind::DeviceCertificate => pb::CredentialKind::DeviceCertificate,
        CredentialKind::Application => pb::CredentialKind::Application,
        CredentialKind::DevicePsk => pb::CredentialKind::DevicePsk,
    };
    let (publish, subscribe) = c
        .grants
        .map(|g| (g.publish, g.subscribe))
        .unwrap_or_default();
    let fingerprint = if c.kind == CredentialKind::DeviceCertificate {
        format_fingerprint(&c.token_hash)
    } else {
        String::new()
    };
    pb::Credential {
        fingerprint,
        publish,
        subscribe,
        id: c.id,
        tenant: c.tenant,
        kind: kind.into(),
        device: c.device.unwrap_or_default(),
        name: c.name,
        created_at_ns: c.created_at_ns,
        expires_at_ns: c.expires_at_ns.unwrap_or(0),
        revoked: c.revoked_at_ns.is_some(),
    }
}

fn issued_to_proto(t: IssuedToken) -> pb::IssueTokenResponse {
    let psk_identity = match (&t.credential.kind, &t.credential.device) {
        (CredentialKind::DevicePsk, Some(device)) => {
            tributary_auth::psk_identity(&t.credential.tenant, device, &t.credential.id)
        }
        _ => String::new(),
    };
    pb::IssueTokenResponse {
        credential: Some(credential_to_proto(t.credential)),
        token: t.secret,
        psk_identity,
    }
}
