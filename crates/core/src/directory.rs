//! The seams between the frontends / query service and the device registry.
//!
//! A frontend needs to turn a credential into a principal and to make sure a
//! device exists; the query service needs to resolve label selectors. Both
//! depend on these small traits, never on the registry crate, so the same
//! frontend code runs in-process (standalone) and against a remote registry
//! over gRPC (distributed mode).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::selector::Selector;

/// Who presented a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A device access token: writes for exactly this device.
    Device { tenant: String, device: String },
    /// A tenant ingest token: writes for any device of the tenant.
    TenantIngest {
        tenant: String,
        credential_id: String,
    },
}

impl Principal {
    pub fn tenant(&self) -> &str {
        match self {
            Principal::Device { tenant, .. } | Principal::TenantIngest { tenant, .. } => tenant,
        }
    }
}

/// What a tenant application may do over MQTT: topic filters within its
/// tenant (`#` for everything but `$`-topics).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AppGrants {
    /// Filters of the topics the application may publish to.
    pub publish: Vec<String>,
    /// Filters the application's subscriptions must stay within.
    pub subscribe: Vec<String>,
}

/// A tenant application (backend, integration, dashboard) whose credential
/// resolved: MQTT user name `app:<name>`, password the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    /// The application's tenant.
    pub tenant: String,
    /// The application's name, unique in meaning within the tenant.
    pub name: String,
    /// The credential that authenticated it, for revocation.
    pub credential_id: String,
    /// What it may publish and subscribe to.
    pub grants: AppGrants,
}

/// Per-tenant ingest policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantPolicy {
    /// Create unknown devices on first line-protocol write.
    pub auto_provision: bool,
    /// The line-protocol tag that names the device ("device" by default).
    pub device_tag: String,
    /// The tenant's quotas.
    pub quotas: crate::quota::Quotas,
    /// How long the tenant's data is kept, where it differs from the
    /// platform defaults.
    pub retention: crate::retention::RetentionSettings,
    /// The tenant's LwM2M metric names, beyond the IPSO defaults.
    pub lwm2m_metrics: crate::lwm2m::Lwm2mMetrics,
}

impl Default for TenantPolicy {
    fn default() -> Self {
        Self {
            auto_provision: true,
            device_tag: "device".into(),
            quotas: crate::quota::Quotas::default(),
            retention: crate::retention::RetentionSettings::default(),
            lwm2m_metrics: crate::lwm2m::Lwm2mMetrics::default(),
        }
    }
}

/// A device as the query side sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub disabled: bool,
}

/// Where a device was last seen: what command routing needs to find the
/// frontend replica that holds (or last held) the device's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceInfo {
    /// Whether a connection of the device is open.
    pub online: bool,
    /// When a frontend last reported the device, ns since the epoch.
    pub last_seen_ns: i64,
    /// The frontend replica that reported it (its `frontend_id`).
    pub frontend: String,
}

/// Looks up device presence, as reported through [`PresenceSink`].
#[async_trait]
pub trait PresenceLookup: Send + Sync + std::fmt::Debug + 'static {
    /// The device's presence; `None` when no frontend ever reported it.
    async fn presence(
        &self,
        tenant: &str,
        device: &str,
    ) -> Result<Option<PresenceInfo>, DirectoryError>;
}

/// Why a directory call failed. Frontends map these to 401/403/404/503.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// Unknown, expired or revoked credential.
    #[error("invalid or revoked credential")]
    Unauthenticated,
    /// The credential is valid but may not do this (disabled device, wrong tenant).
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("invalid: {0}")]
    Invalid(String),
    /// The registry could not be reached or failed; retry later.
    #[error("registry unavailable: {0}")]
    Unavailable(String),
}

/// The credential behind an authentication: what a long-lived connection
/// needs to check it again while it lives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credential {
    /// The credential's id (revocation events name it); empty when unknown.
    pub id: String,
    /// When it expires, ns since the epoch; `None`: never.
    pub expires_at_ns: Option<i64>,
}

/// A device's DTLS pre-shared key, resolved from the PSK identity it
/// presented: what the CoAP frontend needs to finish the handshake, and who
/// the session then speaks for. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct PskGrant {
    /// Always a device.
    pub principal: Principal,
    /// The PSK credential, for revocation.
    pub credential: Credential,
    /// The key's bytes, as the device holds them.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for PskGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PskGrant")
            .field("principal", &self.principal)
            .field("credential", &self.credential)
            .field("key", &format_args!("<{} bytes>", self.key.len()))
            .finish()
    }
}

/// What an ingest frontend asks of the registry.
#[async_trait]
pub trait Authenticator: Send + Sync + std::fmt::Debug + 'static {
    /// Resolves a bearer token. Disabled devices and revoked or expired tokens
    /// fail within one second of the change.
    async fn authenticate(&self, token: &str) -> Result<Principal, DirectoryError>;

    /// Resolves a TLS client certificate, by the lower-case hex SHA-256 of
    /// its DER encoding, to the device it was registered for. A separate
    /// path from [`Authenticator::authenticate`]: a certificate credential is
    /// never accepted as a token, nor a token as a certificate. Disabled
    /// devices and revoked registrations fail within one second of the
    /// change, as for tokens. The default knows no certificates.
    async fn authenticate_certificate(
        &self,
        fingerprint: &str,
    ) -> Result<Principal, DirectoryError> {
        let _ = fingerprint;
        Err(DirectoryError::Unauthenticated)
    }

    /// Resolves a tenant application's token, issued for the application
    /// `name`. A separate path from [`Authenticator::authenticate`]: an
    /// application token is never accepted as a device or ingest token, nor
    /// the reverse. Revocations take effect within one second. The default
    /// knows no applications.
    async fn authenticate_application(
        &self,
        name: &str,
        token: &str,
    ) -> Result<Application, DirectoryError> {
        let _ = (name, token);
        Err(DirectoryError::Unauthenticated)
    }

    /// Resolves a DTLS PSK identity to its device and key. A separate path
    /// from the others: a PSK identity is never a token, nor the reverse.
    /// Revoked or expired credentials and deleted devices are
    /// `Unauthenticated`, disabled devices `Forbidden`, within one second of
    /// the change as for tokens. The default knows no PSKs.
    async fn authenticate_psk(&self, identity: &str) -> Result<PskGrant, DirectoryError> {
        let _ = identity;
        Err(DirectoryError::Unauthenticated)
    }

    /// [`Authenticator::authenticate`], with the credential behind the
    /// principal. The default knows no credential details.
    async fn authenticate_credential(
        &self,
        token: &str,
    ) -> Result<(Principal, Credential), DirectoryError> {
        Ok((self.authenticate(token).await?, Credential::default()))
    }

    /// [`Authenticator::authenticate_certificate`], with the registration
    /// behind the principal. The default knows no credential details.
    async fn authenticate_certificate_credential(
        &self,
        fingerprint: &str,
    ) -> Result<(Principal, Credential), DirectoryError> {
        Ok((
            self.authenticate_certificate(fingerprint).await?,
            Credential::default(),
        ))
    }

    /// [`Authenticator::authenticate_application`], with the credential's
    /// expiry. The default knows none.
    async fn authenticate_application_credential(
        &self,
        name: &str,
        token: &str,
    ) -> Result<(Application, Credential), DirectoryError> {
        let app = self.authenticate_application(name, token).await?;
        let credential = Credential {
            id: app.credential_id.clone(),
            expires_at_ns: None,
        };
        Ok((app, credential))
    }

    /// Whether a connection that authenticated with the credential
    /// `credential_id` of `tenant` (for `device`, if a device's) may go on:
    /// the credential is neither revoked nor expired, and the device exists
    /// and is enabled. Asked of the registry itself, not a cache: frontends
    /// ask it when they may have missed revocation events. The default
    /// cannot tell, and says yes.
    async fn credential_valid(
        &self,
        tenant: &str,
        credential_id: &str,
        device: Option<&str>,
    ) -> Result<bool, DirectoryError> {
        let _ = (tenant, credential_id, device);
        Ok(true)
    }

    /// The tenant's ingest policy.
    async fn tenant_policy(&self, tenant: &str) -> Result<TenantPolicy, DirectoryError>;

    /// Makes sure a device may receive data written with a tenant ingest
    /// token: creates it with `labels` when it is unknown and the tenant
    /// allows auto-provisioning, merges new label values into an existing
    /// device, and refuses disabled devices.
    async fn ensure_device(
        &self,
        tenant: &str,
        device: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), DirectoryError>;
}

/// What the query service asks of the registry.
#[async_trait]
pub trait DeviceCatalog: Send + Sync + std::fmt::Debug + 'static {
    /// One device, if it exists.
    async fn device(
        &self,
        tenant: &str,
        device: &str,
    ) -> Result<Option<DeviceInfo>, DirectoryError>;

    /// Every device of the tenant that the selector matches, sorted by id.
    async fn select(
        &self,
        tenant: &str,
        selector: &Selector,
    ) -> Result<Vec<DeviceInfo>, DirectoryError>;

    /// The tenant's quotas (live streams, pending commands). The platform
    /// defaults unless the catalog knows better.
    async fn tenant_quotas(&self, _tenant: &str) -> Result<crate::quota::Quotas, DirectoryError> {
        Ok(crate::quota::Quotas::default())
    }
}

/// Where frontends report device presence.
#[async_trait]
pub trait PresenceSink: Send + Sync + std::fmt::Debug + 'static {
    async fn report(
        &self,
        tenant: &str,
        device: &str,
        online: bool,
        at_ns: i64,
        frontend: &str,
    ) -> Result<(), DirectoryError>;
}

#[async_trait]
impl<T: Authenticator + ?Sized> Authenticator for Arc<T> {
    async fn authenticate(&self, token: &str) -> Result<Principal, DirectoryError> {
        (**self).authenticate(token).await
    }
    async fn authenticate_certificate(
        &self,
        fingerprint: &str,
    ) -> Result<Principal, DirectoryError> {
        (**self).authenticate_certificate(fingerprint).await
    }
    async fn authenticate_application(
        &self,
        name: &str,
        token: &str,
    ) -> Result<Application, DirectoryError> {
        (**self).authenticate_application(name, token).await
    }
    async fn authenticate_credential(
        &self,
        token: &str,
    ) -> Result<(Principal, Credential), DirectoryError> {
        (**self).authenticate_credential(token).await
    }
    async fn authenticate_psk(&self, identity: &str) -> Result<PskGrant, DirectoryError> {
        (**self).authenticate_psk(identity).await
    }
    async fn authenticate_certificate_credential(
        &self,
        fingerprint: &str,
    ) -> Result<(Principal, Credential), DirectoryError> {
        (**self)
            .authenticate_certificate_credential(fingerprint)
            .await
    }
    async fn authenticate_application_credential(
        &self,
        name: &str,
        token: &str,
    ) -> Result<(Application, Credential), DirectoryError> {
        (**self)
            .authenticate_application_credential(name, token)
            .await
    }
    async fn credential_valid(
        &self,
        tenant: &str,
        credential_id: &str,
        device: Option<&str>,
    ) -> Result<bool, DirectoryError> {
        (**self)
            .credential_valid(tenant, credential_id, device)
            .await
    }
    async fn tenant_policy(&self, tenant: &str) -> Result<TenantPolicy, DirectoryError> {
        (**self).tenant_policy(tenant).await
    }
    async fn ensure_device(
        &self,
        tenant: &str,
        device: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), DirectoryError> {
        (**self).ensure_device(tenant, device, labels).await
    }
}
