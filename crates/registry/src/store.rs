//! The registry's storage seam.
//!
//! Small traits, one per aggregate, rather than one trait with twenty
//! methods: [`TenantStore`], [`DeviceStore`], [`CredentialStore`],
//! [`PresenceStore`], [`RuleStore`], [`WebhookStore`] and [`SilenceStore`]. Each maps onto its own table (or set
//! of tables) in every backend, can be read and reviewed alone, and a test
//! double can implement just the part it needs. [`RegistryStore`] gathers
//! them, is implemented
//! automatically for anything that implements them, and is what
//! [`crate::Registry`] holds (`Arc<dyn RegistryStore>`).
//!
//! The traits are storage only. They do not validate identifiers, enforce
//! uniqueness beyond their conditional writes ([`Expect`]), check tenants
//! exist, publish events or apply limits: [`crate::Registry`] does.
//!
//! Listing is by key order with a cursor: `after` is the last key of the
//! previous page (exclusive), `limit` bounds the page. A listing never holds a
//! transaction or a server-side cursor open between pages, so it works the
//! same on redb and on ScyllaDB (`WHERE tenant = ? AND id > ? LIMIT ?`).

use std::collections::BTreeMap;
use std::fmt::Debug;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tributary_core::quota::Quotas;
pub use tributary_rules::{Rule, Silence};

use crate::RegistryError;

/// The stored form of a token: the SHA-256 of its secret
/// (`tributary_auth::hash_token`). The secret itself is never stored.
pub type TokenHash = [u8; 32];

/// The precondition of a conditional write: optimistic concurrency that maps
/// to a ScyllaDB lightweight transaction (`IF NOT EXISTS`, `IF revision = ?`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The record must not exist (create).
    Absent,
    /// The record must exist with exactly this revision (update after read).
    Revision(u64),
    /// Write unconditionally.
    Any,
}

/// Settings of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantSettings {
    /// Create unknown devices on their first write with a tenant ingest token.
    pub auto_provision: bool,
    /// The line-protocol tag that names the device.
    pub device_tag: String,
    /// The tenant's quotas (the values set for it; the rest are the
    /// platform defaults). Absent in records written before quotas existed.
    #[serde(default)]
    pub quotas: Quotas,
    /// How long the tenant's data is kept, where it differs from the
    /// platform defaults. Absent in records written before retention tiers.
    #[serde(default)]
    pub retention: tributary_core::retention::RetentionSettings,
    /// LwM2M metric names, `"OBJECT/RESOURCE" = "metric"` (checked when
    /// set; see [`tributary_core::lwm2m`]). Absent in older records.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lwm2m_metrics: BTreeMap<String, String>,
}

impl Default for TenantSettings {
    fn default() -> Self {
        let policy = tributary_core::directory::TenantPolicy::default();
        Self {
            auto_provision: policy.auto_provision,
            device_tag: policy.device_tag,
            quotas: Quotas::default(),
            retention: Default::default(),
            lwm2m_metrics: BTreeMap::new(),
        }
    }
}

impl From<TenantSettings> for tributary_core::directory::TenantPolicy {
    fn from(s: TenantSettings) -> Self {
        Self {
            auto_provision: s.auto_provision,
            device_tag: s.device_tag,
            quotas: s.quotas,
            retention: s.retention,
            // Checked when set; an entry that no longer passes (a tighter
            // metric limit) is left out rather than failing the tenant.
            lwm2m_metrics: tributary_core::lwm2m::Lwm2mMetrics::from_named(
                s.lwm2m_metrics
                    .iter()
                    .filter(|(k, v)| {
                        tributary_core::lwm2m::Lwm2mMetrics::from_named(
                            [(k.as_str(), v.as_str())],
                            &tributary_core::Limits::default(),
                        )
                        .is_ok()
                    })
                    .map(|(k, v)| (k.as_str(), v.as_str())),
                &tributary_core::Limits::default(),
            )
            .unwrap_or_default(),
        }
    }
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    /// Unique name: the key.
    pub name: String,
    /// A human-readable name.
    pub display_name: String,
    /// Creation time, ns since the epoch.
    pub created_at_ns: i64,
    /// Ingest settings.
    pub settings: TenantSettings,
    /// Incremented on every write; the token of [`Expect::Revision`].
    pub revision: u64,
}

/// A device. Keyed by (tenant, id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// The device's tenant.
    pub tenant: String,
    /// Unique within the tenant.
    pub id: String,
    /// Labels, matched by selectors.
    pub labels: BTreeMap<String, String>,
    /// Free-form metadata, not matched by selectors.
    pub metadata: BTreeMap<String, String>,
    /// A disabled device cannot authenticate or receive data.
    pub disabled: bool,
    /// Creation time, ns since the epoch.
    pub created_at_ns: i64,
    /// Last change, ns since the epoch.
    pub updated_at_ns: i64,
    /// Incremented on every write; the token of [`Expect::Revision`].
    pub revision: u64,
}

/// What a credential authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// One device (`tbd_…` tokens).
    DeviceToken,
    /// Line-protocol writes for any device of the tenant (`tbi_…` tokens).
    TenantIngestToken,
    /// A TLS client certificate registered for one device. Its
    /// `token_hash` holds the SHA-256 fingerprint of the DER certificate
    /// (public, not a secret), and only the certificate lookup
    /// ([`crate::Registry::resolve_certificate`]) accepts it: the token
    /// lookup refuses this kind, so it can never serve as a password.
    DeviceCertificate,
    /// A tenant application (`tba_…` tokens): MQTT user name `app:<name>`
    /// (the credential's `name`), publishing and subscribing within its
    /// `grants`. Only the application lookup
    /// ([`crate::Registry::resolve_application`]) accepts it.
    Application,
    /// A DTLS pre-shared key for one device (CoAP on :5684). The registry
    /// keeps no key: it derives it from its PSK secret and the credential's
    /// tenant and id ([`tributary_auth::PskKeys`]). The identity is
    /// `<tenant>/<device>/<id>`; `token_hash` holds a hash of it that no
    /// token can match. Only the PSK lookup ([`crate::Registry::resolve_psk`])
    /// accepts it.
    DevicePsk,
}

/// The MQTT topic filters a tenant application may publish and subscribe
/// to, within its tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationGrants {
    /// Filters of the topics it may publish to.
    pub publish: Vec<String>,
    /// Filters its subscriptions must stay within.
    pub subscribe: Vec<String>,
}

impl From<ApplicationGrants> for tributary_core::directory::AppGrants {
    fn from(g: ApplicationGrants) -> Self {
        Self {
            publish: g.publish,
            subscribe: g.subscribe,
        }
    }
}

/// A credential: everything about a token except its secret. Keyed by
/// (tenant, id) and findable by [`TokenHash`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialRecord {
    /// Random id, unique within the tenant (and in practice globally).
    pub id: String,
    /// The credential's tenant.
    pub tenant: String,
    /// What it authenticates.
    pub kind: CredentialKind,
    /// The device, for device tokens.
    pub device: Option<String>,
    /// A human-readable name, for listing.
    pub name: String,
    /// SHA-256 of the secret; for [`CredentialKind::DeviceCertificate`], the
    /// certificate's SHA-256 fingerprint.
    pub token_hash: TokenHash,
    /// Issue time, ns since the epoch.
    pub created_at_ns: i64,
    /// Expiry, ns since the epoch; `None` never expires.
    pub expires_at_ns: Option<i64>,
    /// When it was revoked, ns since the epoch; `None` while valid.
    pub revoked_at_ns: Option<i64>,
    /// What an [`CredentialKind::Application`] may do; `None` for the
    /// other kinds. An application credential without grants may do
    /// nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<ApplicationGrants>,
}

impl CredentialRecord {
    /// Whether the credential was revoked.
    pub fn is_revoked(&self) -> bool {
        self.revoked_at_ns.is_some()
    }

    /// Whether the credential has expired at `now_ns`.
    pub fn is_expired(&self, now_ns: i64) -> bool {
        self.expires_at_ns.is_some_and(|at| now_ns >= at)
    }
}

/// Where and when a device was last seen. The default means "never seen".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceRecord {
    /// Whether a frontend holds a connection of the device.
    pub online: bool,
    /// Last time a frontend saw the device, ns since the epoch; 0 = never.
    pub last_seen_ns: i64,
    /// The frontend that reported last.
    pub frontend: String,
}

/// Tenants, keyed by name.
#[async_trait]
pub trait TenantStore: Send + Sync + Debug {
    /// Writes a tenant if `expect` holds, else fails with [`RegistryError::Conflict`].
    async fn put_tenant(&self, tenant: &TenantRecord, expect: Expect) -> Result<(), RegistryError>;

    /// One tenant.
    async fn get_tenant(&self, name: &str) -> Result<Option<TenantRecord>, RegistryError>;

    /// Up to `limit` tenants with a name greater than `after`, sorted by name.
    async fn list_tenants(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TenantRecord>, RegistryError>;
}

/// Devices, keyed by (tenant, id).
#[async_trait]
pub trait DeviceStore: Send + Sync + Debug {
    /// Writes a device if `expect` holds, else fails with [`RegistryError::Conflict`].
    async fn put_device(&self, device: &DeviceRecord, expect: Expect) -> Result<(), RegistryError>;

    /// One device.
    async fn get_device(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<DeviceRecord>, RegistryError>;

    /// Whether each (tenant, device) exists, in order; one read where the
    /// store can (presence groups check their devices with it). The
    /// default reads them one by one.
    async fn devices_exist(&self, keys: &[(String, String)]) -> Result<Vec<bool>, RegistryError> {
        let mut out = Vec::with_capacity(keys.len());
        for (tenant, device) in keys {
            out.push(self.get_device(tenant, device).await?.is_some());
        }
        Ok(out)
    }

    /// Deletes a device and its presence. Returns whether it existed.
    /// Its credentials are kept: they are the audit trail.
    async fn delete_device(&self, tenant: &str, id: &str) -> Result<bool, RegistryError>;

    /// Up to `limit` devices of `tenant` with an id greater than `after`, sorted by id.
    async fn list_devices(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeviceRecord>, RegistryError>;

    /// Up to `limit` devices of `tenant` with an id less than `before`
    /// (every id when `None`), sorted by id from the greatest down.
    async fn list_devices_desc(
        &self,
        tenant: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeviceRecord>, RegistryError>;
}

/// Credentials, keyed by (tenant, id), with a lookup by token hash.
#[async_trait]
pub trait CredentialStore: Send + Sync + Debug {
    /// Inserts a new credential. Fails with [`RegistryError::Conflict`] if its
    /// (tenant, id) or its token hash is taken.
    async fn put_credential(&self, credential: &CredentialRecord) -> Result<(), RegistryError>;

    /// One credential.
    async fn get_credential(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<CredentialRecord>, RegistryError>;

    /// The credential whose secret hashes to `hash`, revoked or not.
    async fn credential_by_hash(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<CredentialRecord>, RegistryError>;

    /// Up to `limit` credentials of `tenant` (only those of `device`, if
    /// given) with an id greater than `after`, sorted by id. Revoked ones too.
    async fn list_credentials(
        &self,
        tenant: &str,
        device: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<CredentialRecord>, RegistryError>;

    /// Marks a credential revoked at `at_ns` and returns it; `None` if it does
    /// not exist. Idempotent: revoking again keeps the first revocation time.
    async fn revoke_credential(
        &self,
        tenant: &str,
        id: &str,
        at_ns: i64,
    ) -> Result<Option<CredentialRecord>, RegistryError>;
}

/// Device presence, keyed by (tenant, device). Written often (every connect
/// and disconnect), so it lives apart from the device record.
#[async_trait]
pub trait PresenceStore: Send + Sync + Debug {
    /// Writes a device's presence.
    async fn set_presence(
        &self,
        tenant: &str,
        device: &str,
        presence: &PresenceRecord,
    ) -> Result<(), RegistryError>;

    /// Writes several devices' presence (of any tenants) as one durable
    /// write where the store can: a reconnect storm's reports go in groups
    /// (`crate::presence`). At most one entry per (tenant, device). The
    /// default writes them one by one.
    async fn set_presences(
        &self,
        presences: &[(String, String, PresenceRecord)],
    ) -> Result<(), RegistryError> {
        for (tenant, device, presence) in presences {
            self.set_presence(tenant, device, presence).await?;
        }
        Ok(())
    }

    /// A device's presence, if any was ever written.
    async fn get_presence(
        &self,
        tenant: &str,
        device: &str,
    ) -> Result<Option<PresenceRecord>, RegistryError>;

    /// The presence of each (tenant, device), in order (`None`: never
    /// written); one read where the store can. The default reads them one
    /// by one.
    async fn get_presences_of(
        &self,
        keys: &[(String, String)],
    ) -> Result<Vec<Option<PresenceRecord>>, RegistryError> {
        let mut out = Vec::with_capacity(keys.len());
        for (tenant, device) in keys {
            out.push(self.get_presence(tenant, device).await?);
        }
        Ok(out)
    }

    /// The presence of several devices of a tenant at once (for listings).
    /// Devices without presence are absent from the map.
    async fn get_presences(
        &self,
        tenant: &str,
        devices: &[String],
    ) -> Result<BTreeMap<String, PresenceRecord>, RegistryError>;
}

/// Rules, keyed by (tenant, name); the record is the rule itself, with its
/// revision.
#[async_trait]
pub trait RuleStore: Send + Sync + Debug {
    /// Writes a rule if `expect` holds, else fails with [`RegistryError::Conflict`].
    async fn put_rule(&self, rule: &Rule, expect: Expect) -> Result<(), RegistryError>;

    /// One rule.
    async fn get_rule(&self, tenant: &str, name: &str) -> Result<Option<Rule>, RegistryError>;

    /// Deletes a rule. Returns whether it existed.
    async fn delete_rule(&self, tenant: &str, name: &str) -> Result<bool, RegistryError>;

    /// Up to `limit` rules of `tenant` with a name greater than `after`,
    /// sorted by name.
    async fn list_rules(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Rule>, RegistryError>;
}

/// A webhook of a tenant: where its alerts are POSTed, signed with its
/// secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookRecord {
    /// The webhook's tenant.
    pub tenant: String,
    /// Unique within the tenant.
    pub name: String,
    /// `http://` or `https://`.
    pub url: String,
    /// The HMAC-SHA256 key of the signature header. Shown once, when the
    /// webhook is created; never listed.
    pub secret: String,
    /// The rules whose alerts it gets; empty = every rule.
    pub rules: Vec<String>,
    /// Alerts below this severity are not sent.
    pub min_severity: tributary_rules::Severity,
    /// Creation time, ns since the epoch.
    pub created_at_ns: i64,
    /// Incremented on every write; the token of [`Expect::Revision`].
    pub revision: u64,
}

/// Webhooks, keyed by (tenant, name).
#[async_trait]
pub trait WebhookStore: Send + Sync + Debug {
    /// Writes a webhook if `expect` holds, else fails with [`RegistryError::Conflict`].
    async fn put_webhook(&self, hook: &WebhookRecord, expect: Expect) -> Result<(), RegistryError>;

    /// One webhook.
    async fn get_webhook(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<WebhookRecord>, RegistryError>;

    /// Deletes a webhook. Returns whether it existed.
    async fn delete_webhook(&self, tenant: &str, name: &str) -> Result<bool, RegistryError>;

    /// Up to `limit` webhooks of `tenant` with a name greater than `after`,
    /// sorted by name.
    async fn list_webhooks(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<WebhookRecord>, RegistryError>;
}

/// Operators' silences of alerts, keyed by (tenant, [`Silence::key`]).
#[async_trait]
pub trait SilenceStore: Send + Sync + Debug {
    /// Writes a silence if `expect` holds, else fails with [`RegistryError::Conflict`].
    async fn put_silence(&self, silence: &Silence, expect: Expect) -> Result<(), RegistryError>;

    /// Deletes a silence. Returns whether it existed.
    async fn delete_silence(&self, tenant: &str, key: &str) -> Result<bool, RegistryError>;

    /// Up to `limit` silences of `tenant` with a key greater than `after`,
    /// sorted by key; expired ones included.
    async fn list_silences(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Silence>, RegistryError>;
}

/// Everything the registry stores. Implemented for every type that implements
/// the aggregate traits; hold it as `Arc<dyn RegistryStore>`.
pub trait RegistryStore:
    TenantStore
    + DeviceStore
    + CredentialStore
    + PresenceStore
    + RuleStore
    + WebhookStore
    + SilenceStore
{
}

impl<
    T: TenantStore
        + DeviceStore
        + CredentialStore
        + PresenceStore
        + RuleStore
        + WebhookStore
        + SilenceStore
        + ?Sized,
> RegistryStore for T
{
}
