//! Tenants, devices and credentials: `RegistryService` over HTTP.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tributary_proto::v1 as pb;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{Caller, Json, Path, Query};
use crate::problem::{ApiResult, Problem};
use crate::{Api, Errors, time};

pub(crate) fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::new()
        .routes(routes!(list_tenants, create_tenant))
        .routes(routes!(set_quotas))
        .routes(routes!(set_retention))
        .routes(routes!(list_devices, create_device))
        .routes(routes!(get_device, update_device, delete_device))
        .routes(routes!(disable_device))
        .routes(routes!(enable_device))
        .routes(routes!(register_certificate))
        .routes(routes!(list_tokens, issue_token))
        .routes(routes!(revoke_token))
        .routes(routes!(issue_application_token))
}

/// The tenant a call addresses: empty or absent = the token's own; only
/// platform admins name another.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct TenantParam {
    /// Another tenant than the token's (platform admins only).
    #[serde(default)]
    pub tenant: String,
}

// ---------------------------------------------------------------- tenants

/// A tenant.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Tenant {
    name: String,
    display_name: String,
    created_at: Option<String>,
    settings: TenantSettings,
}

/// A tenant's settings.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct TenantSettings {
    /// Create unknown devices on their first line-protocol write with a
    /// tenant ingest token.
    auto_provision: bool,
    /// The line-protocol tag that names the device (empty: `device`).
    device_tag: String,
    /// Quotas set for the tenant, by name; read-only here (see
    /// `PATCH /tenants/{tenant}/quotas`).
    quotas: BTreeMap<String, u64>,
    /// Retention set for the tenant, by kind; read-only here.
    retention: BTreeMap<String, String>,
}

impl From<pb::Tenant> for Tenant {
    fn from(t: pb::Tenant) -> Self {
        let s = t.settings.unwrap_or_default();
        Self {
            name: t.name,
            display_name: t.display_name,
            created_at: time::optional(t.created_at_ns),
            settings: TenantSettings {
                auto_provision: s.auto_provision,
                device_tag: s.device_tag,
                quotas: s.quotas.into_iter().collect(),
                retention: s.retention.into_iter().collect(),
            },
        }
    }
}

/// The tenants.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TenantList {
    tenants: Vec<Tenant>,
}

/// Lists every tenant (platform admins).
#[utoipa::path(get, path = "/tenants", tag = "tenants",
    responses((status = 200, body = TenantList), Errors))]
async fn list_tenants(State(api): State<Api>, caller: Caller) -> ApiResult<axum::Json<TenantList>> {
    let resp = api
        .registry
        .list_tenants(caller.request(pb::ListTenantsRequest {}))
        .await?
        .into_inner();
    Ok(axum::Json(TenantList {
        tenants: resp.tenants.into_iter().map(Tenant::from).collect(),
    }))
}

/// A new tenant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewTenant {
    /// 1 to 64 of a-z, 0-9, `-`, `_`.
    name: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    settings: Option<NewTenantSettings>,
}

/// Settings of a new tenant.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct NewTenantSettings {
    auto_provision: bool,
    device_tag: String,
}

/// Creates a tenant (platform admins).
#[utoipa::path(post, path = "/tenants", tag = "tenants", request_body = NewTenant,
    responses((status = 201, body = Tenant), Errors))]
async fn create_tenant(
    State(api): State<Api>,
    caller: Caller,
    Json(body): Json<NewTenant>,
) -> ApiResult<(StatusCode, axum::Json<Tenant>)> {
    let s = body.settings.unwrap_or_default();
    let t = api
        .registry
        .create_tenant(caller.request(pb::CreateTenantRequest {
            name: body.name,
            display_name: body.display_name,
            settings: Some(pb::TenantSettings {
                auto_provision: s.auto_provision,
                device_tag: s.device_tag,
                ..Default::default()
            }),
        }))
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, axum::Json(t.into())))
}

/// Settings to set, and settings to return to the platform default.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QuotaChange {
    /// Quotas to set, by name (`connections`, `messages_per_sec`, ...).
    #[serde(default)]
    set: BTreeMap<String, u64>,
    /// Quotas to return to the platform default.
    #[serde(default)]
    clear: Vec<String>,
}

/// Sets or clears a tenant's quotas (platform admins).
#[utoipa::path(patch, path = "/tenants/{tenant}/quotas", tag = "tenants",
    params(("tenant" = String, Path)), request_body = QuotaChange,
    responses((status = 200, body = Tenant), Errors))]
async fn set_quotas(
    State(api): State<Api>,
    caller: Caller,
    Path(tenant): Path<String>,
    Json(body): Json<QuotaChange>,
) -> ApiResult<axum::Json<Tenant>> {
    let t = api
        .registry
        .set_tenant_quotas(caller.request(pb::SetTenantQuotasRequest {
            tenant,
            set: body.set.into_iter().collect(),
            clear: body.clear,
        }))
        .await?
        .into_inner();
    Ok(axum::Json(t.into()))
}

/// Retentions to set (`raw`, `1m`, `1h`, `1d` → `30d`, `1y`, `forever`),
/// and kinds to return to the platform default.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetentionChange {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    clear: Vec<String>,
}

/// Sets or clears how long a tenant's data is kept (platform admins).
#[utoipa::path(patch, path = "/tenants/{tenant}/retention", tag = "tenants",
    params(("tenant" = String, Path)), request_body = RetentionChange,
    responses((status = 200, body = Tenant), Errors))]
async fn set_retention(
    State(api): State<Api>,
    caller: Caller,
    Path(tenant): Path<String>,
    Json(body): Json<RetentionChange>,
) -> ApiResult<axum::Json<Tenant>> {
    let t = api
        .registry
        .set_tenant_retention(caller.request(pb::SetTenantRetentionRequest {
            tenant,
            set: body.set.into_iter().collect(),
            clear: body.clear,
        }))
        .await?
        .into_inner();
    Ok(axum::Json(t.into()))
}

// ---------------------------------------------------------------- devices

/// Where a device is connected, or was last.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Presence {
    online: bool,
    /// When a frontend last saw it; absent = never.
    last_seen: Option<String>,
    /// The frontend replica that holds (or last held) its connection.
    frontend: String,
}

/// A device.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Device {
    tenant: String,
    id: String,
    labels: BTreeMap<String, String>,
    metadata: BTreeMap<String, String>,
    disabled: bool,
    created_at: Option<String>,
    updated_at: Option<String>,
    presence: Option<Presence>,
}

impl From<pb::Device> for Device {
    fn from(d: pb::Device) -> Self {
        Self {
            tenant: d.tenant,
            id: d.id,
            labels: d.labels.into_iter().collect(),
            metadata: d.metadata.into_iter().collect(),
            disabled: d.disabled,
            created_at: time::optional(d.created_at_ns),
            updated_at: time::optional(d.updated_at_ns),
            presence: d.presence.map(|p| Presence {
                online: p.online,
                last_seen: time::optional(p.last_seen_ns),
                frontend: p.frontend,
            }),
        }
    }
}

/// Which devices to list, a page at a time.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeviceListParams {
    /// Another tenant than the token's (platform admins only).
    #[serde(default)]
    tenant: String,
    /// A label selector: `fleet=West,model!=H-1,region,!retired`.
    #[serde(default)]
    selector: String,
    /// Only devices whose id starts with this.
    #[serde(default)]
    prefix: String,
    /// `asc` (the default) lists from the smallest id up, `desc` from the
    /// greatest down. Pass the same order with a `page_token`.
    #[serde(default)]
    order: SortOrder,
    /// 1 to 1000; default 100.
    #[serde(default)]
    page_size: u32,
    /// From the previous page's `next_page_token`.
    #[serde(default)]
    page_token: String,
}

/// Which way a listing runs, by id.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SortOrder {
    /// From the smallest id up.
    #[default]
    Asc,
    /// From the greatest id down.
    Desc,
}

/// A page of devices.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeviceList {
    devices: Vec<Device>,
    /// Present when more devices remain: pass it as `page_token`.
    next_page_token: Option<String>,
    /// Devices of the tenant in all (not only those listed), as counted for
    /// its `devices` quota.
    tenant_devices: u64,
}

/// Lists devices, optionally by label selector, a page at a time.
#[utoipa::path(get, path = "/devices", tag = "devices", params(DeviceListParams),
    responses((status = 200, body = DeviceList), Errors))]
async fn list_devices(
    State(api): State<Api>,
    caller: Caller,
    Query(q): Query<DeviceListParams>,
) -> ApiResult<axum::Json<DeviceList>> {
    let resp = api
        .registry
        .list_devices(caller.request(pb::ListDevicesRequest {
            tenant: q.tenant,
            selector: q.selector,
            page_size: q.page_size,
            page_token: q.page_token,
            id_prefix: q.prefix,
            descending: q.order == SortOrder::Desc,
        }))
        .await?
        .into_inner();
    Ok(axum::Json(DeviceList {
        devices: resp.devices.into_iter().map(Device::from).collect(),
        next_page_token: Some(resp.next_page_token).filter(|t| !t.is_empty()),
        tenant_devices: resp.tenant_devices,
    }))
}

/// A new device.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewDevice {
    /// Another tenant than the token's (platform admins only).
    #[serde(default)]
    tenant: String,
    /// 1 to 128 of `A-Za-z0-9_.:-`.
    id: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    /// Also issue a first access token, returned once in `token`.
    #[serde(default)]
    issue_token: bool,
}

/// A created device, with its first token if one was asked for.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedDevice {
    device: Device,
    token: Option<IssuedToken>,
}

/// Registers a device.
#[utoipa::path(post, path = "/devices", tag = "devices", request_body = NewDevice,
    responses((status = 201, body = CreatedDevice), Errors))]
async fn create_device(
    State(api): State<Api>,
    caller: Caller,
    Json(body): Json<NewDevice>,
) -> ApiResult<(StatusCode, axum::Json<CreatedDevice>)> {
    let resp = api
        .registry
        .create_device(caller.request(pb::CreateDeviceRequest {
            tenant: body.tenant,
            id: body.id,
            labels: body.labels.into_iter().collect(),
            metadata: body.metadata.into_iter().collect(),
            issue_token: body.issue_token,
        }))
        .await?
        .into_inner();
    let device = resp
        .device
        .ok_or_else(|| Problem::from(tonic::Status::internal("CreateDevice returned no device")))?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedDevice {
            device: device.into(),
            token: resp.token.map(IssuedToken::from),
        }),
    ))
}

/// Reads one device, with its presence.
#[utoipa::path(get, path = "/devices/{device}", tag = "devices",
    params(("device" = String, Path), TenantParam),
    responses((status = 200, body = Device), Errors))]
async fn get_device(
    State(api): State<Api>,
    caller: Caller,
    Path(device): Path<String>,
    Query(t): Query<TenantParam>,
) -> ApiResult<axum::Json<Device>> {
    let d = api
        .registry
        .get_device(caller.request(pb::GetDeviceRequest {
            tenant: t.tenant,
            device,
        }))
        .await?
        .into_inner();
    Ok(axum::Json(d.into()))
}

/// Labels and metadata to set and to remove.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct DeviceChange {
    set_labels: BTreeMap<String, String>,
    remove_labels: Vec<String>,
    set_metadata: BTreeMap<String, String>,
    remove_metadata: Vec<String>,
}

/// Changes a device's labels and metadata.
#[utoipa::path(patch, path = "/devices/{device}", tag = "devices",
    params(("device" = String, Path), TenantParam), request_body = DeviceChange,
    responses((status = 200, body = Device), Errors))]
async fn update_device(
    State(api): State<Api>,
    caller: Caller,
    Path(device): Path<String>,
    Query(t): Query<TenantParam>,
    Json(body): Json<DeviceChange>,
) -> ApiResult<axum::Json<Device>> {
    let d = api
        .registry
        .update_device(caller.request(pb::UpdateDeviceRequest {
            tenant: t.tenant,
            device,
            set_labels: body.set_labels.into_iter().collect(),
            remove_labels: body.remove_labels,
            set_metadata: body.set_metadata.into_iter().collect(),
            remove_metadata: body.remove_metadata,
        }))
        .await?
        .into_inner();
    Ok(axum::Json(d.into()))
}

/// Deletes a device and revokes its credentials.
#[utoipa::path(delete, path = "/devices/{device}", tag = "devices",
    params(("device" = String, Path), TenantParam),
    responses((status = 204, description = "Deleted"), Errors))]
async fn delete_device(
    State(api): State<Api>,
    caller: Caller,
    Path(device): Path<String>,
    Query(t): Query<TenantParam>,
) -> ApiResult<StatusCode> {
    api.registry
        .delete_device(caller.request(pb::DeviceRef {
            tenant: t.tenant,
            device,
        }))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Disables a device: its credentials stop working and its connections
/// close.
#[utoipa::path(post, path = "/devices/{device}/disable", tag = "devices",
    params(("device" = String, Path), TenantParam),
    responses((status = 200, body = Device), Errors))]
async fn disable_device(
    State(api): State<Api>,
    caller: Caller,
    Path(device): Path<String>,
    Query(t): Query<TenantParam>,
) -> ApiResult<axum::Json<Device>> {
    let d = api
        .registry
        .disable_device(caller.request(pb::DeviceRef {
            tenant: t.tenant,
            device,
        }))
        .await?
        .into_inner();
    Ok(axum::Json(d.into()))
}

/// Enables a disabled device.
#[utoipa::path(post, path = "/devices/{device}/enable", tag = "devices",
    params(("device" = String, Path), TenantParam),
    responses((status = 200, body = Device), Errors))]
async fn enable_device(
    State(api): State<Api>,
    caller: Caller,
    Path(device): Path<String>,
    Query(t): Query<TenantParam>,
) -> ApiResult<axum::Json<Device>> {
    let d = api
        .registry
        .enable_device(caller.request(pb::DeviceRef {
            tenant: t.tenant,
            device,
        }))
        .await?
        .into_inner();
    Ok(axum::Json(d.into()))
}

// ---------------------------------------------------------------- credentials

/// What a credential is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CredentialKind {
    /// Authenticates one device.
    DeviceToken,
    /// Writes line protocol for any device of the tenant.
    TenantIngestToken,
    /// A TLS client certificate of one device.
    DeviceCertificate,
    /// A tenant application (MQTT user name `app:<name>`).
    Application,
    /// A DTLS pre-shared key of one device (CoAP over DTLS).
    DevicePsk,
    /// A kind this API version does not know.
    Unknown,
}

impl CredentialKind {
    fn from_proto(kind: i32) -> Self {
        match pb::CredentialKind::try_from(kind) {
            Ok(pb::CredentialKind::DeviceToken) => Self::DeviceToken,
            Ok(pb::CredentialKind::TenantIngestToken) => Self::TenantIngestToken,
            Ok(pb::CredentialKind::DeviceCertificate) => Self::DeviceCertificate,
            Ok(pb::CredentialKind::Application) => Self::Application,
            Ok(pb::CredentialKind::DevicePsk) => Self::DevicePsk,
            _ => Self::Unknown,
        }
    }

    fn to_proto(self) -> pb::CredentialKind {
        match self {
            Self::DeviceToken => pb::CredentialKind::DeviceToken,
            Self::TenantIngestToken => pb::CredentialKind::TenantIngestToken,
            Self::DeviceCertificate => pb::CredentialKind::DeviceCertificate,
            Self::Application => pb::CredentialKind::Application,
            Self::DevicePsk => pb::CredentialKind::DevicePsk,
            Self::Unknown => pb::CredentialKind::Unspecified,
        }
    }
}

/// A credential: a token, certificate or application. Never its secret.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Credential {
    id: String,
    tenant: String,
    kind: CredentialKind,
    /// The device, for device tokens and certificates.
    device: Option<String>,
    name: String,
    created_at: Option<String>,
    /// Absent: never expires.
    expires_at: Option<String>,
    revoked: bool,
    /// Certificates: SHA-256 of the DER certificate, in hex.
    fingerprint: Option<String>,
    /// Applications: topic filters it may publish to.
    publish: Vec<String>,
    /// Applications: topic filters its subscriptions must stay within.
    subscribe: Vec<String>,
}

impl From<pb::Credential> for Credential {
    fn from(c: pb::Credential) -> Self {
        Self {
            id: c.id,
            tenant: c.tenant,
            kind: CredentialKind::from_proto(c.kind),
            device: Some(c.device).filter(|d| !d.is_empty()),
            name: c.name,
            created_at: time::optional(c.created_at_ns),
            expires_at: time::optional(c.expires_at_ns),
            revoked: c.revoked,
            fingerprint: Some(c.fingerprint).filter(|f| !f.is_empty()),
            publish: c.publish,
            subscribe: c.subscribe,
        }
    }
}

/// A new credential with its secret, shown only here.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct IssuedToken {
    credential: Credential,
    /// The secret (for a PSK, the key). It cannot be recovered later.
    token: String,
    /// For a `device_psk`: the PSK identity the device presents with the
    /// key.
    #[serde(skip_serializing_if = "Option::is_none")]
    psk_identity: Option<String>,
}

impl From<pb::IssueTokenResponse> for IssuedToken {
    fn from(t: pb::IssueTokenResponse) -> Self {
        Self {
            credential: t.credential.unwrap_or_default().into(),
            token: t.token,
            psk_identity: Some(t.psk_identity).filter(|i| !i.is_empty()),
        }
    }
}

/// Whose credentials to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct TokenListParams {
    /// Another tenant than the token's (platform admins only).
    #[serde(default)]
    tenant: String,
    /// Only this device's credentials.
    #[serde(default)]
    device: String,
}

/// Credentials.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CredentialList {
    credentials: Vec<Credential>,
}

/// Lists the tenant's credentials (or one device's), without secrets.
#[utoipa::path(get, path = "/tokens", tag = "credentials", params(TokenListParams),
    responses((status = 200, body = CredentialList), Errors))]
async fn list_tokens(
    State(api): State<Api>,
    caller: Caller,
    Query(q): Query<TokenListParams>,
) -> ApiResult<axum::Json<CredentialList>> {
    let resp = api
        .registry
        .list_tokens(caller.request(pb::ListTokensRequest {
            tenant: q.tenant,
            device: q.device,
        }))
        .await?
        .into_inner();
    Ok(axum::Json(CredentialList {
        credentials: resp.credentials.into_iter().map(Credential::from).collect(),
    }))
}

/// A token to issue.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewToken {
    #[serde(default)]
    tenant: String,
    /// `device_token`, `tenant_ingest_token` or `device_psk`.
    kind: CredentialKind,
    /// Required for device tokens and PSKs.
    #[serde(default)]
    device: String,
    #[serde(default)]
    name: String,
    /// Lifetime in seconds; 0 or absent: never expires.
    #[serde(default)]
    ttl_seconds: u64,
}

/// Issues a device token, a tenant ingest token, or a device's DTLS PSK.
#[utoipa::path(post, path = "/tokens", tag = "credentials", request_body = NewToken,
    responses((status = 201, body = IssuedToken), Errors))]
async fn issue_token(
    State(api): State<Api>,
    caller: Caller,
    Json(body): Json<NewToken>,
) -> ApiResult<(StatusCode, axum::Json<IssuedToken>)> {
    let resp = api
        .registry
        .issue_token(caller.request(pb::IssueTokenRequest {
            tenant: body.tenant,
            kind: body.kind.to_proto() as i32,
            device: body.device,
            name: body.name,
            ttl_seconds: body.ttl_seconds,
        }))
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, axum::Json(resp.into())))
}

/// Revokes a credential at once: connections using it close.
#[utoipa::path(delete, path = "/tokens/{id}", tag = "credentials",
    params(("id" = String, Path), TenantParam),
    responses((status = 200, body = Credential), Errors))]
async fn revoke_token(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
    Query(t): Query<TenantParam>,
) -> ApiResult<axum::Json<Credential>> {
    let c = api
        .registry
        .revoke_token(caller.request(pb::RevokeTokenRequest {
            tenant: t.tenant,
            credential_id: id,
        }))
        .await?
        .into_inner();
    Ok(axum::Json(c.into()))
}

/// A TLS client certificate to register for a device.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewCertificate {
    /// The certificate, PEM, at most 16 KiB; its subject O= must be the
    /// tenant's name.
    certificate_pem: String,
    /// Optional SHA-256 of the DER certificate; must match it.
    #[serde(default)]
    fingerprint: String,
    #[serde(default)]
    name: String,
    /// Lifetime in seconds; 0: until the certificate's notAfter.
    #[serde(default)]
    ttl_seconds: u64,
}

/// Registers a TLS client certificate that authenticates the device over
/// MQTT with mutual TLS.
#[utoipa::path(post, path = "/devices/{device}/certificates", tag = "credentials",
    params(("device" = String, Path), TenantParam), request_body = NewCertificate,
    responses((status = 201, body = Credential), Errors))]
async fn register_certificate(
    State(api): State<Api>,
    caller: Caller,
    Path(device): Path<String>,
    Query(t): Query<TenantParam>,
    Json(body): Json<NewCertificate>,
) -> ApiResult<(StatusCode, axum::Json<Credential>)> {
    let c = api
        .registry
        .register_certificate(caller.request(pb::RegisterCertificateRequest {
            tenant: t.tenant,
            device,
            fingerprint: body.fingerprint,
            name: body.name,
            ttl_seconds: body.ttl_seconds,
            certificate_pem: body.certificate_pem,
        }))
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, axum::Json(c.into())))
}

/// A tenant application's token to issue.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewApplication {
    #[serde(default)]
    tenant: String,
    /// 1 to 64 of `A-Za-z0-9_.-`; its MQTT user name is `app:<name>`.
    name: String,
    /// MQTT topic filters it may publish to (`#` for every topic).
    #[serde(default)]
    publish: Vec<String>,
    /// MQTT topic filters its subscriptions must stay within.
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    ttl_seconds: u64,
}

/// Issues a token for a tenant application (MQTT `app:<name>`).
#[utoipa::path(post, path = "/applications", tag = "credentials",
    request_body = NewApplication,
    responses((status = 201, body = IssuedToken), Errors))]
async fn issue_application_token(
    State(api): State<Api>,
    caller: Caller,
    Json(body): Json<NewApplication>,
) -> ApiResult<(StatusCode, axum::Json<IssuedToken>)> {
    let resp = api
        .registry
        .issue_application_token(caller.request(pb::IssueApplicationTokenRequest {
            tenant: body.tenant,
            name: body.name,
            publish: body.publish,
            subscribe: body.subscribe,
            ttl_seconds: body.ttl_seconds,
        }))
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, axum::Json(resp.into())))
}
