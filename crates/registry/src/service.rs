//! [`Registry`]: the registry's business rules over any [`RegistryStore`].
//!
//! Validation, uniqueness, limits, token issue and revocation,
//! authentication and presence live here, once, whatever the backend. Every
//! change that can affect authentication or device lookup is announced as a
//! [`RegistryEvent`] on a bounded broadcast channel ([`Registry::events`]) so
//! caches such as [`crate::LocalDirectory`] can drop stale entries at once.
//!
//! Concurrent updates of one device use optimistic concurrency: read, change,
//! write if the revision is unchanged ([`Expect::Revision`]), retry otherwise.
//! Nothing is lost when two frontends merge labels into the same device.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tributary_auth::{JwtKeys, OperatorClaims, Role, TokenKind};
use tributary_core::Limits;
use tributary_core::directory::{Application, DirectoryError, Principal, TenantPolicy};
/// Re-exported from `tributary_core::events`, where its wire encoding lives.
pub use tributary_core::events::RegistryEvent;
use tributary_core::model::{ValidationError, validate_device_id, validate_label, validate_tenant};
use tributary_core::quota::{Quota, QuotaError, QuotaExceeded};
use tributary_core::selector::Selector;
use tributary_core::time::now_ns;

use crate::store::{
    ApplicationGrants, CredentialKind, CredentialRecord, DeviceRecord, Expect, PresenceRecord,
    RegistryStore, TenantRecord, TenantSettings, TokenHash,
};
use crate::{Entity, RegistryError};

/// The tenant [`Registry::bootstrap`] creates.
pub const DEFAULT_TENANT: &str = "default";

/// How many records one store call fetches while scanning.
const STORE_PAGE: usize = 500;
/// How often a conditional device update is retried before giving up.
const MAX_UPDATE_ATTEMPTS: usize = 16;
/// Longest token secret worth hashing; generated ones are 47 bytes.
const MAX_SECRET_BYTES: usize = 512;
/// Longest display name, credential name and frontend name, in bytes.
const MAX_NAME_BYTES: usize = 256;
/// Lifetime of the bootstrap admin token: ten years.
const ADMIN_TOKEN_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The longest DTLS PSK identity looked up (OpenSSL takes up to 256 bytes).
pub const MAX_PSK_IDENTITY_BYTES: usize = 256;

/// What a PSK credential keeps in `token_hash`: a hash of its identity under
/// a prefix, so that no presented token can ever hash to it.
fn psk_identity_hash(identity: &str) -> TokenHash {
    use sha2::{Digest, Sha256};
    Sha256::digest(format!("psk-identity\0{identity}").as_bytes()).into()
}

/// The file [`Registry::bootstrap`] writes the admin token to.
const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Limits and sizes of the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Identifier limits: `max_device_id_len` and `max_labels` apply here.
    pub limits: Limits,
    /// Most metadata entries on one device.
    pub max_metadata_entries: usize,
    /// Longest metadata key, in bytes.
    pub max_metadata_key_bytes: usize,
    /// Longest metadata value, in bytes.
    pub max_metadata_value_bytes: usize,
    /// Most unrevoked, unexpired tokens of one device.
    pub max_tokens_per_device: usize,
    /// Most results of a listing without paging (tenants, tokens, selects).
    pub max_list_results: usize,
    /// Most devices one `ListDevices` page scans to find matches; a page may
    /// come back short, with a page token to continue.
    pub max_scan_per_page: usize,
    /// Events kept for slow subscribers; a subscriber further behind is told
    /// it lagged and must drop everything it cached.
    pub event_capacity: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            max_metadata_entries: 64,
            max_metadata_key_bytes: 128,
            max_metadata_value_bytes: 1024,
            max_tokens_per_device: 100,
            max_list_results: 10_000,
            max_scan_per_page: 10_000,
            event_capacity: 4096,
        }
    }
}

/// A tenant to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTenant {
    /// Unique name: `[a-z0-9-]`, up to 64 bytes.
    pub name: String,
    /// Human-readable name; may be empty.
    pub display_name: String,
    /// Ingest settings; an empty `device_tag` means `device`.
    pub settings: TenantSettings,
}

/// A device to create.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewDevice {
    /// The tenant, which must exist.
    pub tenant: String,
    /// Unique within the tenant.
    pub id: String,
    /// Initial labels.
    pub labels: BTreeMap<String, String>,
    /// Initial metadata.
    pub metadata: BTreeMap<String, String>,
    /// Also issue a first device token.
    pub issue_token: bool,
}

/// Changes to a device's labels and metadata. A key may not be both set and
/// removed in one update.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceUpdate {
    /// Labels to set, replacing values of the same key.
    pub set_labels: BTreeMap<String, String>,
    /// Label keys to remove; unknown keys are ignored.
    pub remove_labels: Vec<String>,
    /// Metadata to set, replacing values of the same key.
    pub set_metadata: BTreeMap<String, String>,
    /// Metadata keys to remove; unknown keys are ignored.
    pub remove_metadata: Vec<String>,
}

impl DeviceUpdate {
    fn is_empty(&self) -> bool {
        self.set_labels.is_empty()
            && self.remove_labels.is_empty()
            && self.set_metadata.is_empty()
            && self.remove_metadata.is_empty()
    }
}

/// A token to issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// The tenant, which must exist.
    pub tenant: String,
    /// Device token or tenant ingest token.
    pub kind: CredentialKind,
    /// The device, for device tokens (required); `None` for ingest tokens.
    pub device: Option<String>,
    /// A human-readable name, for listing.
    pub name: String,
    /// Lifetime; `None` never expires.
    pub ttl: Option<Duration>,
}

/// A TLS client certificate to register for a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCertificate {
    /// The tenant, which must exist.
    pub tenant: String,
    /// The device the certificate authenticates; it must exist.
    pub device: String,
    /// The certificate, PEM (the first `CERTIFICATE` block counts). Its
    /// subject's organization (`O=`) must be the tenant: see
    /// [`crate::certificate`].
    pub certificate_pem: String,
    /// A human-readable name, for listing.
    pub name: String,
    /// How long the registration lasts; `None` until revoked.
    pub ttl: Option<Duration>,
}

/// A tenant application credential to issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApplication {
    /// The tenant, which must exist.
    pub tenant: String,
    /// The application's name: its MQTT user name is `app:<name>`. 1 to 64
    /// bytes of `[A-Za-z0-9_.-]`. Several tokens may share a name (rotation).
    pub name: String,
    /// MQTT topic filters it may publish to; empty means `#`.
    pub publish: Vec<String>,
    /// MQTT topic filters its subscriptions must stay within; empty means `#`.
    pub subscribe: Vec<String>,
    /// Lifetime; `None` never expires.
    pub ttl: Option<Duration>,
}

/// An application credential that resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedApplication {
    /// The application and its grants.
    pub application: Application,
    /// The credential's expiry, ns since the epoch.
    pub expires_at_ns: Option<i64>,
}

/// Most topic filters per grant list of an application.
const MAX_GRANT_FILTERS: usize = 32;
/// Longest topic filter in a grant, in bytes.
const MAX_GRANT_FILTER_BYTES: usize = 256;
/// Longest application name, in bytes.
const MAX_APP_NAME_BYTES: usize = 64;

/// Checks an application name: 1 to 64 bytes of `[A-Za-z0-9_.-]`.
fn validate_app_name(name: &str) -> Result<(), RegistryError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_APP_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::invalid(
            "name",
            "an application name is 1 to 64 bytes of [A-Za-z0-9_.-]",
        ))
    }
}

/// Checks grant filters (MQTT topic filters, no shared subscriptions) and
/// turns an empty list into `#`.
/// Checks an application's grant filters. No filters grant nothing: an
/// application gets only what it was given by name.
fn grant_filters(field: &str, filters: Vec<String>) -> Result<Vec<String>, RegistryError> {
    if filters.len() > MAX_GRANT_FILTERS {
        return Err(RegistryError::invalid(
            field,
            format!("at most {MAX_GRANT_FILTERS} topic filters"),
        ));
    }
    for filter in &filters {
        let levels: Vec<&str> = filter.split('/').collect();
        let last = levels.len() - 1;
        let wildcards_ok = levels.iter().enumerate().all(|(i, level)| match *level {
            "#" => i == last,
            "+" => true,
            l => !l.contains(['#', '+']),
        });
        if filter.is_empty()
            || filter.len() > MAX_GRANT_FILTER_BYTES
            || filter.contains('\0')
            || filter.chars().any(char::is_control)
            || filter.starts_with("$share/")
            || !wildcards_ok
        {
            return Err(RegistryError::invalid(
                field,
                format!("{filter:?} is not a valid MQTT topic filter"),
            ));
        }
    }
    Ok(filters)
}

/// Parses a SHA-256 certificate fingerprint: 64 hex digits, optionally
/// separated by `:`, any case.
pub fn parse_fingerprint(text: &str) -> Result<TokenHash, RegistryError> {
    let bad = || {
        RegistryError::invalid(
            "fingerprint",
            "expected a SHA-256 fingerprint: 64 hex digits, optionally separated by ':'",
        )
    };
    if text.len() > 95 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    let mut digits = text.bytes().filter(|b| *b != b':');
    for byte in &mut out {
        let (Some(hi), Some(lo)) = (digits.next(), digits.next()) else {
            return Err(bad());
        };
        let hex = |d: u8| {
            char::from(d)
                .to_digit(16)
                .and_then(|v| u8::try_from(v).ok())
        };
        *byte = match (hex(hi), hex(lo)) {
            (Some(h), Some(l)) => h << 4 | l,
            _ => return Err(bad()),
        };
    }
    if digits.next().is_some() {
        return Err(bad());
    }
    Ok(out)
}

/// The canonical text of a fingerprint: 64 lower-case hex digits.
pub fn format_fingerprint(fingerprint: &TokenHash) -> String {
    fingerprint.iter().map(|b| format!("{b:02x}")).collect()
}

/// A freshly issued token. The secret exists only here: it is stored as a
/// hash and cannot be recovered. `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The stored credential.
    pub credential: CredentialRecord,
    /// The secret to hand to the device or agent, once.
    pub secret: String,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("credential", &self.credential)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A device with its presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The stored device.
    pub record: DeviceRecord,
    /// Its presence; the default when it was never seen.
    pub presence: PresenceRecord,
}

/// Which way a listing runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ListOrder {
    /// From the smallest id up.
    #[default]
    Ascending,
    /// From the greatest id down.
    Descending,
}

/// The least id greater than every id that starts with `prefix` (ids are
/// ASCII), or `None` when there is none.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0x7f {
            bytes.push(last + 1);
            return String::from_utf8(bytes).ok();
        }
    }
    None
}

/// One page of a device listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePage {
    /// Matching devices, sorted by id in the listing's order. May hold fewer than the page size even
    /// when more follow (the scan per page is bounded).
    pub devices: Vec<Device>,
    /// Where the next page starts; `None` at the end. Opaque to clients.
    pub next_page_token: Option<String>,
}

/// A credential that resolved: who it is and how long it stays valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// Who presented it.
    pub principal: Principal,
    /// The credential's id, for revocation.
    pub credential_id: String,
    /// The credential's expiry, ns since the epoch.
    pub expires_at_ns: Option<i64>,
}

/// The device registry's business logic. See the [module docs](self).
#[derive(Debug)]
pub struct Registry {
    store: Arc<dyn RegistryStore>,
    config: RegistryConfig,
    events: broadcast::Sender<RegistryEvent>,
    /// Devices of each tenant (the `devices` quota): counted from the store
    /// on first use and kept up to date by this registry's own creations and
    /// deletions; counted again from the store while a tenant is within
    /// [`RECOUNT_NEAR_QUOTA`] of its quota, so that the creations of other
    /// registry replicas count too. Creations of one tenant take its lock in
    /// turn; other tenants' do not wait for them.
    device_counts: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<u64>>>>>,
    /// Held while a rule is created, so that the `rules` quota is counted
    /// and filled by one creation at a time (in this replica).
    pub(crate) rule_creation: tokio::sync::Mutex<()>,
    /// Bumped by every device or tenant change this replica publishes: the
    /// rules' resolved targets are kept until it moves (see
    /// [`crate::rules`]).
    pub(crate) device_generation: std::sync::atomic::AtomicU64,
    /// Bumped by every webhook created or deleted through this replica:
    /// alert delivery in this process reads the webhooks again only when it
    /// moved ([`Registry::webhook_generation`]).
    pub(crate) webhook_generation: std::sync::atomic::AtomicU64,
    /// The rules' targets of each tenant, as last resolved.
    pub(crate) targets: std::sync::Mutex<HashMap<String, crate::rules::ResolvedTargets>>,
    /// Where DTLS pre-shared keys come from; `None`: PSKs are not issued.
    psk: Option<tributary_auth::PskKeys>,
    /// Presence reports, written in groups.
    presence: crate::presence::PresenceWriter,
}

/// How close to its `devices` quota a tenant's count is read from the store
/// again before each creation, rather than trusted from memory.
pub const RECOUNT_NEAR_QUOTA: u64 = 64;

impl Registry {
    /// A registry over `store`.
    pub fn new(store: Arc<dyn RegistryStore>, config: RegistryConfig) -> Self {
        let (events, _) = broadcast::channel(config.event_capacity.max(1));
        Self {
            store,
            config,
            events,
            device_counts: std::sync::Mutex::new(HashMap::new()),
            rule_creation: tokio::sync::Mutex::new(()),
            device_generation: std::sync::atomic::AtomicU64::new(0),
            webhook_generation: std::sync::atomic::AtomicU64::new(0),
            targets: std::sync::Mutex::new(HashMap::new()),
            psk: None,
            presence: Default::default(),
        }
    }

    /// Lets the registry issue and resolve DTLS pre-shared keys, derived
    /// from `keys`. Without them, issuing a PSK is refused.
    pub fn with_psk_keys(mut self, keys: tributary_auth::PskKeys) -> Self {
        self.psk = Some(keys);
        self
    }

    /// The lock over `tenant`'s device count.
    fn device_count(&self, tenant: &str) -> Arc<tokio::sync::Mutex<Option<u64>>> {
        let mut counts = self
            .device_counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.entry(tenant.to_owned()).or_default().clone()
    }

    /// How many devices `tenant` has, as this registry counts them for the
    /// `devices` quota: exact for a single registry; with several replicas,
    /// the others' creations show once this one recounts (near the quota).
    pub async fn device_total(&self, tenant: &str) -> Result<u64, RegistryError> {
        let count = self.device_count(tenant);
        let mut count = count.lock().await;
        if let Some(n) = *count {
            return Ok(n);
        }
        let n = self.count_devices(tenant).await?;
        *count = Some(n);
        Ok(n)
    }

    /// Devices of `tenant` in the store, counted a page at a time.
    async fn count_devices(&self, tenant: &str) -> Result<u64, RegistryError> {
        let mut count = 0u64;
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .list_devices(tenant, after.as_deref(), STORE_PAGE)
                .await?;
            count += page.len() as u64;
            if page.len() < STORE_PAGE {
                return Ok(count);
            }
            after = page.last().map(|d| d.id.clone());
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn RegistryStore> {
        &self.store
    }

    /// Subscribes to changes. Events published before the call are not seen.
    pub fn events(&self) -> broadcast::Receiver<RegistryEvent> {
        self.events.subscribe()
    }

    pub(crate) fn publish(&self, event: RegistryEvent) {
        tracing::debug!(?event, "registry event");
        if matches!(
            event,
            RegistryEvent::DeviceChanged { .. }
                | RegistryEvent::DeviceDeleted { .. }
                | RegistryEvent::TenantChanged { .. }
        ) {
            self.device_generation
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        // An error only means nobody listens right now.
        let _ = self.events.send(event);
    }

    // ----- tenants -----

    /// Creates a tenant. Fails with `AlreadyExists` if the name is taken.
    pub async fn create_tenant(&self, new: NewTenant) -> Result<TenantRecord, RegistryError> {
        validate_tenant(&new.name).map_err(|e| rename_field(e, "name"))?;
        check_text("display_name", &new.display_name, MAX_NAME_BYTES)?;
        let mut settings = new.settings;
        if settings.device_tag.is_empty() {
            settings.device_tag = TenantSettings::default().device_tag;
        }
        validate_label(&settings.device_tag, "").map_err(|e| retag("settings.device_tag", e))?;
        let record = TenantRecord {
            name: new.name,
            display_name: new.display_name,
            created_at_ns: now_ns(),
            settings,
            revision: 1,
        };
        match self.store.put_tenant(&record, Expect::Absent).await {
            Ok(()) => {}
            Err(RegistryError::Conflict(_)) => {
                return Err(RegistryError::already_exists(Entity::Tenant, record.name));
            }
            Err(e) => return Err(e),
        }
        tracing::info!(tenant = %record.name, "tenant created");
        self.publish(RegistryEvent::TenantChanged {
            tenant: record.name.clone(),
        });
        Ok(record)
    }

    /// Whether the credential `id` of `tenant` is in force: it exists, is
    /// not revoked and has not expired.
    pub async fn credential_active(&self, tenant: &str, id: &str) -> Result<bool, RegistryError> {
        validate_tenant(tenant)?;
        let now = now_ns();
        Ok(self
            .store
            .get_credential(tenant, id)
            .await?
            .is_some_and(|c| !c.is_revoked() && c.expires_at_ns.is_none_or(|at| now < at)))
    }

    /// Sets (`set`) and returns to the platform default (`clear`) quotas of
    /// a tenant, by name; every name and value is checked before anything
    /// changes. Frontends and query replicas see the change through the
    /// tenant's cached policy, which the `TenantChanged` event refreshes.
    pub async fn set_tenant_quotas(
        &self,
        name: &str,
        set: &[(String, u64)],
        clear: &[String],
    ) -> Result<TenantRecord, RegistryError> {
        validate_tenant(name)?;
        let invalid = |e: QuotaError| RegistryError::invalid("quotas", e.to_string());
        let set: Vec<(Quota, u64)> = set
            .iter()
            .map(|(q, v)| Ok((q.parse::<Quota>().map_err(invalid)?, *v)))
            .collect::<Result<_, RegistryError>>()?;
        let clear: Vec<Quota> = clear
            .iter()
            .map(|q| q.parse::<Quota>().map_err(invalid))
            .collect::<Result<_, _>>()?;
        let record = self
            .update_tenant_settings(name, |settings| {
                for quota in &clear {
                    settings.quotas.clear(*quota);
                }
                for (quota, value) in &set {
                    settings.quotas.set(*quota, *value).map_err(invalid)?;
                }
                Ok(())
            })
            .await?;
        tracing::info!(tenant = %record.name, quotas = ?record.settings.quotas, "tenant quotas set");
        Ok(record)
    }

    /// Changes a tenant's settings with `change`, at the revision read
    /// (retried against concurrent writers), and announces the change
    /// (`TenantChanged`).
    async fn update_tenant_settings(
        &self,
        name: &str,
        change: impl Fn(&mut TenantSettings) -> Result<(), RegistryError>,
    ) -> Result<TenantRecord, RegistryError> {
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let mut record = self.tenant(name).await?;
            let revision = record.revision;
            change(&mut record.settings)?;
            record.revision = revision + 1;
            match self
                .store
                .put_tenant(&record, Expect::Revision(revision))
                .await
            {
                Ok(()) => {
                    self.publish(RegistryEvent::TenantChanged {
                        tenant: record.name.clone(),
                    });
                    return Ok(record);
                }
                Err(RegistryError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(RegistryError::Conflict(format!(
            "tenant {name:?} is changing too often; retry"
        )))
    }

    /// Sets (`set`, kind and retention names such as `raw` and `30d`) and
    /// returns to the platform default (`clear`) how long a tenant's data
    /// is kept; every name is checked before anything changes. Stores,
    /// processors and query replicas see the change through the tenant's
    /// policy, which the `TenantChanged` event refreshes.
    pub async fn set_tenant_retention(
        &self,
        name: &str,
        set: &[(String, String)],
        clear: &[String],
    ) -> Result<TenantRecord, RegistryError> {
        use tributary_core::retention::{DataKind, Keep};
        validate_tenant(name)?;
        let invalid = |e: String| RegistryError::invalid("retention", e);
        let set: Vec<(DataKind, Keep)> = set
            .iter()
            .map(|(k, v)| {
                let kind: DataKind = k.parse().map_err(invalid)?;
                let keep: Keep = v.parse().map_err(|e| invalid(format!("{kind}: {e}")))?;
                Ok((kind, keep))
            })
            .collect::<Result<_, RegistryError>>()?;
        let clear: Vec<DataKind> = clear
            .iter()
            .map(|k| k.parse::<DataKind>().map_err(invalid))
            .collect::<Result<_, _>>()?;
        let record = self
            .update_tenant_settings(name, |settings| {
                for kind in &clear {
                    settings.retention.clear(*kind);
                }
                for (kind, keep) in &set {
                    settings.retention.set(*kind, *keep).map_err(invalid)?;
                }
                Ok(())
            })
            .await?;
        tracing::info!(tenant = %record.name, retention = ?record.settings.retention.to_named(), "tenant retention set");
        Ok(record)
    }

    /// Sets, then clears, entries of a tenant's LwM2M metric names
    /// ([`tributary_core::lwm2m`]); every entry is checked, and the whole
    /// mapping stays within its limit.
    pub async fn set_tenant_lwm2m_metrics(
        &self,
        name: &str,
        set: &[(String, String)],
        clear: &[String],
    ) -> Result<TenantRecord, RegistryError> {
        use tributary_core::lwm2m::Lwm2mMetrics;
        validate_tenant(name)?;
        let limits = self.config.limits.clone();
        let invalid = |e: String| RegistryError::invalid("lwm2m_metrics", e);
        Lwm2mMetrics::from_named(set.iter().map(|(k, v)| (k.as_str(), v.as_str())), &limits)
            .map_err(invalid)?;
        let record = self
            .update_tenant_settings(name, |settings| {
                for key in clear {
                    settings.lwm2m_metrics.remove(key);
                }
                for (key, value) in set {
                    settings.lwm2m_metrics.insert(key.clone(), value.clone());
                }
                Lwm2mMetrics::from_named(
                    settings
                        .lwm2m_metrics
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str())),
                    &limits,
                )
                .map_err(invalid)?;
                Ok(())
            })
            .await?;
        tracing::info!(tenant = %record.name, lwm2m_metrics = ?record.settings.lwm2m_metrics, "tenant LwM2M metrics set");
        Ok(record)
    }

    /// One tenant.
    pub async fn tenant(&self, name: &str) -> Result<TenantRecord, RegistryError> {
        validate_tenant(name)?;
        self.store
            .get_tenant(name)
            .await?
            .ok_or_else(|| RegistryError::not_found(Entity::Tenant, name))
    }

    /// Every tenant, sorted by name; `LimitExceeded` beyond `max_list_results`.
    pub async fn list_tenants(&self) -> Result<Vec<TenantRecord>, RegistryError> {
        let mut out: Vec<TenantRecord> = Vec::new();
        loop {
            let after = out.last().map(|t| t.name.clone());
            let page = self
                .store
                .list_tenants(after.as_deref(), STORE_PAGE)
                .await?;
            let done = page.len() < STORE_PAGE;
            out.extend(page);
            self.check_list_size("tenants", out.len())?;
            if done {
                return Ok(out);
            }
        }
    }

    /// A tenant's ingest policy.
    pub async fn tenant_policy(&self, tenant: &str) -> Result<TenantPolicy, RegistryError> {
        Ok(self.tenant(tenant).await?.settings.into())
    }

    fn check_list_size(&self, what: &str, len: usize) -> Result<(), RegistryError> {
        if len > self.config.max_list_results {
            return Err(RegistryError::LimitExceeded(format!(
                "more than {} {what} to list; narrow the request",
                self.config.max_list_results
            )));
        }
        Ok(())
    }

    // ----- devices -----

    /// Creates a device in an existing tenant, optionally with a first token.
    pub async fn create_device(
        &self,
        new: NewDevice,
    ) -> Result<(Device, Option<IssuedToken>), RegistryError> {
        validate_tenant(&new.tenant)?;
        validate_device_id(&new.id, &self.config.limits).map_err(|e| rename_field(e, "id"))?;
        self.check_labels("labels", &new.labels)?;
        self.check_metadata("metadata", &new.metadata)?;
        let tenant = self.tenant(&new.tenant).await?;
        // The tenant's `devices` quota: counted and created under the
        // tenant's lock.
        let limit = tenant.settings.quotas.get(Quota::Devices);
        let count = self.device_count(&new.tenant);
        let mut count = count.lock().await;
        let held = match *count {
            Some(n) if n.saturating_add(RECOUNT_NEAR_QUOTA) < limit => n,
            _ => {
                let n = self.count_devices(&new.tenant).await?;
                *count = Some(n);
                n
            }
        };
        if held >= limit {
            return Err(RegistryError::Quota(QuotaExceeded {
                tenant: new.tenant.clone(),
                quota: Quota::Devices,
                limit,
                retry_after_secs: None,
            }));
        }
        let now = now_ns();
        let record = DeviceRecord {
            tenant: new.tenant,
            id: new.id,
            labels: new.labels,
            metadata: new.metadata,
            disabled: false,
            created_at_ns: now,
            updated_at_ns: now,
            revision: 1,
        };
        match self.store.put_device(&record, Expect::Absent).await {
            Ok(()) => {}
            Err(RegistryError::Conflict(_)) => {
                return Err(RegistryError::already_exists(Entity::Device, record.id));
            }
            Err(e) => return Err(e),
        }
        *count = Some(held + 1);
        drop(count);
        tracing::info!(tenant = %record.tenant, device = %record.id, "device created");
        self.publish(RegistryEvent::DeviceChanged {
            tenant: record.tenant.clone(),
            device: record.id.clone(),
            disabled: record.disabled,
        });
        let token = if new.issue_token {
            Some(
                self.issue_token(NewToken {
                    tenant: record.tenant.clone(),
                    kind: CredentialKind::DeviceToken,
                    device: Some(record.id.clone()),
                    name: "initial".into(),
                    ttl: None,
                })
                .await?,
            )
        } else {
            None
        };
        Ok((
            Device {
                record,
                presence: PresenceRecord::default(),
            },
            token,
        ))
    }

    /// A device without its presence, or `None`.
    pub async fn find_device(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<DeviceRecord>, RegistryError> {
        validate_tenant(tenant)?;
        validate_device_id(id, &self.config.limits)?;
        self.store.get_device(tenant, id).await
    }

    /// A device with its presence.
    pub async fn device(&self, tenant: &str, id: &str) -> Result<Device, RegistryError> {
        let record = self
            .find_device(tenant, id)
            .await?
            .ok_or_else(|| RegistryError::not_found(Entity::Device, id))?;
        let presence = self
            .store
            .get_presence(tenant, id)
            .await?
            .unwrap_or_default();
        Ok(Device { record, presence })
    }

    /// One page of the tenant's devices that `selector` matches, sorted by id
    /// in `order`.
    ///
    /// The selector is applied while scanning the tenant's devices in id
    /// order (there is no label index yet): a page scans at most
    /// `max_scan_per_page` devices and may come back short with a
    /// `next_page_token`. `page_size` is clamped to 1..=1000.
    pub async fn list_devices(
        &self,
        tenant: &str,
        selector: &Selector,
        prefix: &str,
        order: ListOrder,
        page_size: usize,
        page_token: Option<&str>,
    ) -> Result<DevicePage, RegistryError> {
        validate_tenant(tenant)?;
        if let Some(token) = page_token {
            validate_device_id(token, &self.config.limits)
                .ok()
                .filter(|()| token.starts_with(prefix))
                .ok_or_else(|| {
                    RegistryError::invalid("page_token", "not a page token of this listing")
                })?;
        }
        if !prefix.is_empty() {
            validate_device_id(prefix, &self.config.limits)
                .map_err(|e| rename_field(e, "id_prefix"))?;
        }
        self.tenant(tenant).await?;
        let page_size = page_size.clamp(1, 1000);
        // The scan's cursor: the last id seen, exclusive.
        let mut cursor = page_token.map(str::to_owned);
        let mut records = Vec::new();
        let mut scanned = 0usize;
        if cursor.is_none() && !prefix.is_empty() {
            match order {
                // Ids with the prefix sort together, the prefix itself
                // first: it is looked up, and the scan starts just after it.
                ListOrder::Ascending => {
                    if let Some(record) = self.store.get_device(tenant, prefix).await?
                        && selector.matches(&record.labels)
                    {
                        records.push(record);
                    }
                    cursor = Some(prefix.to_owned());
                }
                // From the first id past every id with the prefix, down.
                ListOrder::Descending => cursor = prefix_end(prefix),
            }
        }
        // Without a selector every device matches: one more than a page
        // tells whether another page follows.
        let want = if selector.is_empty() {
            page_size + 1
        } else {
            STORE_PAGE
        };
        let next = 'scan: loop {
            if records.len() >= page_size {
                // The prefix's own device filled a page of one.
                break cursor.clone();
            }
            let fetch = want
                .min(STORE_PAGE)
                .min(self.config.max_scan_per_page.saturating_sub(scanned))
                .max(1);
            let batch = match order {
                ListOrder::Ascending => {
                    self.store
                        .list_devices(tenant, cursor.as_deref(), fetch)
                        .await?
                }
                ListOrder::Descending => {
                    self.store
                        .list_devices_desc(tenant, cursor.as_deref(), fetch)
                        .await?
                }
            };
            let mut exhausted = batch.len() < fetch;
            let last = batch.len().saturating_sub(1);
            for (i, record) in batch.into_iter().enumerate() {
                if !record.id.starts_with(prefix) {
                    exhausted = true;
                    break;
                }
                scanned += 1;
                cursor = Some(record.id.clone());
                if selector.matches(&record.labels) {
                    records.push(record);
                    if records.len() == page_size {
                        break 'scan if exhausted && i == last { None } else { cursor };
                    }
                }
            }
            if exhausted {
                break None;
            }
            if scanned >= self.config.max_scan_per_page {
                break cursor;
            }
        };
        let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
        let mut presences = self.store.get_presences(tenant, &ids).await?;
        let devices = records
            .into_iter()
            .map(|record| {
                let presence = presences.remove(&record.id).unwrap_or_default();
                Device { record, presence }
            })
            .collect();
        Ok(DevicePage {
            devices,
            next_page_token: next,
        })
    }

    /// Every device of the tenant that `selector` matches, sorted by id; a
    /// full scan of the tenant. `LimitExceeded` beyond `max_list_results`.
    pub async fn select_devices(
        &self,
        tenant: &str,
        selector: &Selector,
    ) -> Result<Vec<DeviceRecord>, RegistryError> {
        validate_tenant(tenant)?;
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let batch = self
                .store
                .list_devices(tenant, after.as_deref(), STORE_PAGE)
                .await?;
            let done = batch.len() < STORE_PAGE;
            after = batch.last().map(|d| d.id.clone());
            out.extend(batch.into_iter().filter(|d| selector.matches(&d.labels)));
            self.check_list_size("devices", out.len())?;
            if done {
                return Ok(out);
            }
        }
    }

    /// Sets and removes labels and metadata. A no-op update writes nothing.
    pub async fn update_device(
        &self,
        tenant: &str,
        id: &str,
        update: DeviceUpdate,
    ) -> Result<Device, RegistryError> {
        validate_tenant(tenant)?;
        validate_device_id(id, &self.config.limits)?;
        self.check_update(&update)?;
        if update.is_empty() {
            return self.device(tenant, id).await;
        }
        let config = &self.config;
        let record = self
            .modify_device(tenant, id, |d| {
                let mut labels = d.labels.clone();
                let mut metadata = d.metadata.clone();
                for k in &update.remove_labels {
                    labels.remove(k);
                }
                labels.extend(
                    update
                        .set_labels
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone())),
                );
                for k in &update.remove_metadata {
                    metadata.remove(k);
                }
                metadata.extend(
                    update
                        .set_metadata
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone())),
                );
                if labels.len() > config.limits.max_labels {
                    return Err(RegistryError::invalid(
                        "set_labels",
                        format!("a device has at most {} labels", config.limits.max_labels),
                    ));
                }
                if metadata.len() > config.max_metadata_entries {
                    return Err(RegistryError::invalid(
                        "set_metadata",
                        format!(
                            "a device has at most {} metadata entries",
                            config.max_metadata_entries
                        ),
                    ));
                }
                let changed = labels != d.labels || metadata != d.metadata;
                d.labels = labels;
                d.metadata = metadata;
                Ok(changed)
            })
            .await?;
        self.with_presence(record).await
    }

    /// Disables or enables a device. A disabled device cannot authenticate
    /// and refuses data written with tenant ingest tokens.
    pub async fn set_disabled(
        &self,
        tenant: &str,
        id: &str,
        disabled: bool,
    ) -> Result<Device, RegistryError> {
        validate_tenant(tenant)?;
        validate_device_id(id, &self.config.limits)?;
        let record = self
            .modify_device(tenant, id, |d| {
                let changed = d.disabled != disabled;
                d.disabled = disabled;
                Ok(changed)
            })
            .await?;
        tracing::info!(tenant, device = id, disabled, "device enablement set");
        self.with_presence(record).await
    }

    async fn with_presence(&self, record: DeviceRecord) -> Result<Device, RegistryError> {
        let presence = self
            .store
            .get_presence(&record.tenant, &record.id)
            .await?
            .unwrap_or_default();
        Ok(Device { record, presence })
    }

    /// Read, change, conditional write; retried on concurrent changes. `change`
    /// returns whether it changed anything; nothing is written if not.
    async fn modify_device<F>(
        &self,
        tenant: &str,
        id: &str,
        change: F,
    ) -> Result<DeviceRecord, RegistryError>
    where
        F: Fn(&mut DeviceRecord) -> Result<bool, RegistryError>,
    {
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let mut record = self
                .store
                .get_device(tenant, id)
                .await?
                .ok_or_else(|| RegistryError::not_found(Entity::Device, id))?;
            let revision = record.revision;
            if !change(&mut record)? {
                return Ok(record);
            }
            record.revision = revision + 1;
            record.updated_at_ns = now_ns().max(record.updated_at_ns);
            match self
                .store
                .put_device(&record, Expect::Revision(revision))
                .await
            {
                Ok(()) => {
                    self.publish(RegistryEvent::DeviceChanged {
                        tenant: tenant.to_owned(),
                        device: id.to_owned(),
                        disabled: record.disabled,
                    });
                    return Ok(record);
                }
                Err(RegistryError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(RegistryError::Conflict(format!(
            "device {id:?} is changing too often; retry"
        )))
    }

    /// Deletes a device, revoking its tokens first.
    pub async fn delete_device(&self, tenant: &str, id: &str) -> Result<(), RegistryError> {
        validate_tenant(tenant)?;
        validate_device_id(id, &self.config.limits)?;
        if self.store.get_device(tenant, id).await?.is_none() {
            return Err(RegistryError::not_found(Entity::Device, id));
        }
        // Revoke first: a crash in between leaves a device without valid
        // tokens, never valid tokens of a deleted device.
        let now = now_ns();
        let mut after: Option<String> = None;
        loop {
            let batch = self
                .store
                .list_credentials(tenant, Some(id), after.as_deref(), STORE_PAGE)
                .await?;
            let done = batch.len() < STORE_PAGE;
            after = batch.last().map(|c| c.id.clone());
            for credential in batch.into_iter().filter(|c| !c.is_revoked()) {
                self.store
                    .revoke_credential(tenant, &credential.id, now)
                    .await?;
                self.publish(RegistryEvent::CredentialRevoked {
                    tenant: tenant.to_owned(),
                    credential_id: credential.id,
                    device: credential.device,
                });
            }
            if done {
                break;
            }
        }
        if !self.store.delete_device(tenant, id).await? {
            return Err(RegistryError::not_found(Entity::Device, id));
        }
        let count = self.device_count(tenant);
        let mut count = count.lock().await;
        if let Some(n) = count.as_mut() {
            *n = n.saturating_sub(1);
        }
        drop(count);
        tracing::info!(tenant, device = id, "device deleted");
        self.publish(RegistryEvent::DeviceDeleted {
            tenant: tenant.to_owned(),
            device: id.to_owned(),
        });
        Ok(())
    }

    // ----- credentials -----

    /// Issues a device token (for an existing device) or a tenant ingest
    /// token. Only the hash is stored; the secret is in the result, once.
    pub async fn issue_token(&self, req: NewToken) -> Result<IssuedToken, RegistryError> {
        validate_tenant(&req.tenant)?;
        check_text("name", &req.name, MAX_NAME_BYTES)?;
        let now = now_ns();
        let expires_at_ns = expires_at(now, req.ttl)?;
        let token_kind = match (req.kind, &req.device) {
            (CredentialKind::DeviceToken | CredentialKind::DevicePsk, None) => {
                return Err(RegistryError::invalid(
                    "device",
                    "required for device tokens and PSKs",
                ));
            }
            (CredentialKind::DeviceToken | CredentialKind::DevicePsk, Some(device)) => {
                validate_device_id(device, &self.config.limits)?;
                if self.store.get_device(&req.tenant, device).await?.is_none() {
                    return Err(RegistryError::not_found(Entity::Device, device.as_str()));
                }
                let active = self.count_active_tokens(&req.tenant, device, now).await?;
                if active >= self.config.max_tokens_per_device {
                    return Err(RegistryError::LimitExceeded(format!(
                        "device {device:?} has {active} active tokens; revoke one first"
                    )));
                }
                if req.kind == CredentialKind::DevicePsk {
                    return self.issue_psk(&req, device, now, expires_at_ns).await;
                }
                TokenKind::Device
            }
            (CredentialKind::TenantIngestToken, Some(_)) => {
                return Err(RegistryError::invalid(
                    "device",
                    "must be empty for tenant ingest tokens",
                ));
            }
            (CredentialKind::TenantIngestToken, None) => {
                self.tenant(&req.tenant).await?;
                TokenKind::TenantIngest
            }
            (CredentialKind::DeviceCertificate, _) => {
                return Err(RegistryError::invalid(
                    "kind",
                    "certificates have no token: register them with RegisterCertificate",
                ));
            }
            (CredentialKind::Application, _) => {
                return Err(RegistryError::invalid(
                    "kind",
                    "application tokens carry grants: issue them with issue_application",
                ));
            }
        };
        let (credential, secret) = self
            .put_new_credential(|| {
                let generated = tributary_auth::generate_token(token_kind);
                let credential = CredentialRecord {
                    id: tributary_auth::random_id(),
                    tenant: req.tenant.clone(),
                    kind: req.kind,
                    device: req.device.clone(),
                    name: req.name.clone(),
                    token_hash: generated.hash,
                    created_at_ns: now,
                    expires_at_ns,
                    revoked_at_ns: None,
                    grants: None,
                };
                (credential, generated.secret)
            })
            .await?;
        tracing::info!(
            tenant = %credential.tenant,
            credential = %credential.id,
            kind = ?credential.kind,
            device = credential.device.as_deref().unwrap_or(""),
            "token issued"
        );
        Ok(IssuedToken { credential, secret })
    }

    /// Stores a new credential that `make` builds (with fresh randomness
    /// each call), and what goes with it. A random id or hash collision is
    /// astronomically unlikely; trying again with fresh randomness is
    /// cheaper than reasoning about it.
    async fn put_new_credential<T>(
        &self,
        mut make: impl FnMut() -> (CredentialRecord, T),
    ) -> Result<(CredentialRecord, T), RegistryError> {
        for _ in 0..3 {
            let (credential, with) = make();
            match self.store.put_credential(&credential).await {
                Ok(()) => return Ok((credential, with)),
                Err(RegistryError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(RegistryError::Internal(
            "could not allocate a unique credential id".into(),
        ))
    }

    /// Issues a device's DTLS pre-shared key: the secret in the result is
    /// the key (derived, never stored), and the identity is
    /// [`tributary_auth::psk_identity`] of the credential.
    async fn issue_psk(
        &self,
        req: &NewToken,
        device: &str,
        now: i64,
        expires_at_ns: Option<i64>,
    ) -> Result<IssuedToken, RegistryError> {
        let Some(keys) = &self.psk else {
            return Err(RegistryError::invalid(
                "kind",
                "this registry has no PSK secret, so it issues no PSKs (see docs/coap.md)",
            ));
        };
        let (credential, ()) = self
            .put_new_credential(|| {
                let id = tributary_auth::random_id();
                let identity = tributary_auth::psk_identity(&req.tenant, device, &id);
                let credential = CredentialRecord {
                    id,
                    tenant: req.tenant.clone(),
                    kind: CredentialKind::DevicePsk,
                    device: Some(device.to_owned()),
                    name: req.name.clone(),
                    token_hash: psk_identity_hash(&identity),
                    created_at_ns: now,
                    expires_at_ns,
                    revoked_at_ns: None,
                    grants: None,
                };
                (credential, ())
            })
            .await?;
        tracing::info!(
            tenant = %credential.tenant,
            credential = %credential.id,
            device,
            "PSK issued"
        );
        let secret = keys.derive(&credential.tenant, &credential.id);
        Ok(IssuedToken { credential, secret })
    }

    /// Resolves a DTLS PSK identity to its credential and key. Checks the
    /// credential only (kind, device, revoked, expired), not its device's
    /// state, like [`Registry::resolve_token_hash`]. Unknown identities, and
    /// every identity when this registry has no PSK secret, are
    /// `Unauthenticated`.
    pub async fn resolve_psk(
        &self,
        identity: &str,
    ) -> Result<(Authenticated, String), DirectoryError> {
        let keys = self.psk.as_ref().ok_or(DirectoryError::Unauthenticated)?;
        if identity.len() > MAX_PSK_IDENTITY_BYTES {
            return Err(DirectoryError::Unauthenticated);
        }
        let (tenant, device, id) =
            tributary_auth::parse_psk_identity(identity).ok_or(DirectoryError::Unauthenticated)?;
        let credential = self
            .store
            .get_credential(tenant, id)
            .await?
            .ok_or(DirectoryError::Unauthenticated)?;
        if credential.kind != CredentialKind::DevicePsk
            || credential.device.as_deref() != Some(device)
            || credential.is_revoked()
            || credential.is_expired(now_ns())
        {
            return Err(DirectoryError::Unauthenticated);
        }
        let key = keys.derive(&credential.tenant, &credential.id);
        Ok((
            Authenticated {
                principal: Principal::Device {
                    tenant: credential.tenant,
                    device: device.to_owned(),
                },
                credential_id: credential.id,
                expires_at_ns: credential.expires_at_ns,
            },
            key,
        ))
    }

    /// Issues a tenant application token: MQTT user name `app:<name>`, the
    /// secret as password, any client id, publishing and subscribing within
    /// its grants. Only the hash is stored; the secret is in the result, once.
    pub async fn issue_application(
        &self,
        req: NewApplication,
    ) -> Result<IssuedToken, RegistryError> {
        validate_tenant(&req.tenant)?;
        validate_app_name(&req.name)?;
        let grants = ApplicationGrants {
            publish: grant_filters("publish", req.publish)?,
            subscribe: grant_filters("subscribe", req.subscribe)?,
        };
        let now = now_ns();
        let expires_at_ns = expires_at(now, req.ttl)?;
        self.tenant(&req.tenant).await?;
        for _ in 0..3 {
            let generated = tributary_auth::generate_token(TokenKind::Application);
            let credential = CredentialRecord {
                id: tributary_auth::random_id(),
                tenant: req.tenant.clone(),
                kind: CredentialKind::Application,
                device: None,
                name: req.name.clone(),
                token_hash: generated.hash,
                created_at_ns: now,
                expires_at_ns,
                revoked_at_ns: None,
                grants: Some(grants.clone()),
            };
            match self.store.put_credential(&credential).await {
                Ok(()) => {
                    tracing::info!(
                        tenant = %credential.tenant,
                        credential = %credential.id,
                        application = %credential.name,
                        "application token issued"
                    );
                    return Ok(IssuedToken {
                        credential,
                        secret: generated.secret,
                    });
                }
                Err(RegistryError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(RegistryError::Internal(
            "could not allocate a unique credential id".into(),
        ))
    }

    /// Registers a TLS client certificate for an existing device. It then
    /// authenticates the device over mutual TLS without a password, until
    /// revoked ([`Registry::revoke_token`]), or expired (the earlier of the
    /// ttl and the certificate's notAfter). It counts towards the device's
    /// credential limit, and one certificate can be registered only once.
    ///
    /// Only a certificate issued for the tenant (subject `O=<tenant>`) is
    /// accepted, so that no tenant can claim, or probe for, a certificate of
    /// another tenant's device.
    pub async fn register_certificate(
        &self,
        req: NewCertificate,
    ) -> Result<CredentialRecord, RegistryError> {
        validate_tenant(&req.tenant)?;
        validate_device_id(&req.device, &self.config.limits)?;
        check_text("name", &req.name, MAX_NAME_BYTES)?;
        let now = now_ns();
        let certificate = crate::certificate::parse_certificate_pem(&req.certificate_pem)?;
        certificate.check_for(&req.tenant, now)?;
        let fingerprint = certificate.fingerprint;
        let expires_at_ns = Some(match expires_at(now, req.ttl)? {
            Some(at) => at.min(certificate.not_after_ns),
            None => certificate.not_after_ns,
        });
        if self
            .store
            .get_device(&req.tenant, &req.device)
            .await?
            .is_none()
        {
            return Err(RegistryError::not_found(
                Entity::Device,
                req.device.as_str(),
            ));
        }
        let active = self
            .count_active_tokens(&req.tenant, &req.device, now)
            .await?;
        if active >= self.config.max_tokens_per_device {
            return Err(RegistryError::LimitExceeded(format!(
                "device {:?} has {active} active credentials; revoke one first",
                req.device
            )));
        }
        if self.store.credential_by_hash(&fingerprint).await?.is_some() {
            return Err(RegistryError::AlreadyExists {
                kind: Entity::Credential,
                name: format!("certificate {}", format_fingerprint(&fingerprint)),
            });
        }
        for _ in 0..3 {
            let credential = CredentialRecord {
                id: tributary_auth::random_id(),
                tenant: req.tenant.clone(),
                kind: CredentialKind::DeviceCertificate,
                device: Some(req.device.clone()),
                name: req.name.clone(),
                token_hash: fingerprint,
                created_at_ns: now,
                expires_at_ns,
                revoked_at_ns: None,
                grants: None,
            };
            match self.store.put_credential(&credential).await {
                Ok(()) => {
                    tracing::info!(
                        tenant = %credential.tenant,
                        credential = %credential.id,
                        device = %req.device,
                        fingerprint = %format_fingerprint(&fingerprint),
                        "certificate registered"
                    );
                    return Ok(credential);
                }
                // A concurrent registration of the same certificate won.
                Err(RegistryError::Conflict(_))
                    if self.store.credential_by_hash(&fingerprint).await?.is_some() =>
                {
                    return Err(RegistryError::AlreadyExists {
                        kind: Entity::Credential,
                        name: format!("certificate {}", format_fingerprint(&fingerprint)),
                    });
                }
                Err(RegistryError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(RegistryError::Internal(
            "could not allocate a unique credential id".into(),
        ))
    }

    async fn count_active_tokens(
        &self,
        tenant: &str,
        device: &str,
        now: i64,
    ) -> Result<usize, RegistryError> {
        let mut active = 0;
        let mut after: Option<String> = None;
        loop {
            let batch = self
                .store
                .list_credentials(tenant, Some(device), after.as_deref(), STORE_PAGE)
                .await?;
            let done = batch.len() < STORE_PAGE;
            after = batch.last().map(|c| c.id.clone());
            active += batch
                .iter()
                .filter(|c| !c.is_revoked() && !c.is_expired(now))
                .count();
            if done {
                return Ok(active);
            }
        }
    }

    /// The tenant's credentials (only the device's, if given), revoked ones
    /// included, sorted by id. `LimitExceeded` beyond `max_list_results`.
    pub async fn list_tokens(
        &self,
        tenant: &str,
        device: Option<&str>,
    ) -> Result<Vec<CredentialRecord>, RegistryError> {
        validate_tenant(tenant)?;
        if let Some(device) = device {
            validate_device_id(device, &self.config.limits)?;
        }
        let mut out: Vec<CredentialRecord> = Vec::new();
        loop {
            let after = out.last().map(|c| c.id.clone());
            let batch = self
                .store
                .list_credentials(tenant, device, after.as_deref(), STORE_PAGE)
                .await?;
            let done = batch.len() < STORE_PAGE;
            out.extend(batch);
            self.check_list_size("tokens", out.len())?;
            if done {
                return Ok(out);
            }
        }
    }

    /// Revokes a credential. Idempotent.
    pub async fn revoke_token(
        &self,
        tenant: &str,
        credential_id: &str,
    ) -> Result<CredentialRecord, RegistryError> {
        validate_tenant(tenant)?;
        check_text("credential_id", credential_id, MAX_NAME_BYTES)?;
        let record = self
            .store
            .revoke_credential(tenant, credential_id, now_ns())
            .await?
            .ok_or_else(|| RegistryError::not_found(Entity::Credential, credential_id))?;
        tracing::info!(tenant, credential = credential_id, "token revoked");
        self.publish(RegistryEvent::CredentialRevoked {
            tenant: tenant.to_owned(),
            credential_id: credential_id.to_owned(),
            device: record.device.clone(),
        });
        Ok(record)
    }

    /// Resolves a token hash to its principal. Checks the credential only
    /// (revoked, expired), not the state of a device token's device:
    /// [`Registry::authenticate`] and [`crate::LocalDirectory`] do that.
    /// Certificate registrations never resolve here.
    pub async fn resolve_token_hash(
        &self,
        hash: &TokenHash,
    ) -> Result<Authenticated, DirectoryError> {
        self.resolve_credential(hash, false).await
    }

    /// Resolves a certificate fingerprint to the device it is registered
    /// for. Like [`Registry::resolve_token_hash`], checks the registration
    /// only, not its device; tokens never resolve here.
    pub async fn resolve_certificate(
        &self,
        fingerprint: &TokenHash,
    ) -> Result<Authenticated, DirectoryError> {
        self.resolve_credential(fingerprint, true).await
    }

    /// The two lookups: `certificate` says which kinds may answer.
    async fn resolve_credential(
        &self,
        hash: &TokenHash,
        certificate: bool,
    ) -> Result<Authenticated, DirectoryError> {
        let credential = self
            .store
            .credential_by_hash(hash)
            .await?
            .ok_or(DirectoryError::Unauthenticated)?;
        if credential.is_revoked() || credential.is_expired(now_ns()) {
            return Err(DirectoryError::Unauthenticated);
        }
        let is_certificate = credential.kind == CredentialKind::DeviceCertificate;
        if is_certificate != certificate {
            return Err(DirectoryError::Unauthenticated);
        }
        let principal = match (credential.kind, credential.device) {
            (CredentialKind::DeviceToken | CredentialKind::DeviceCertificate, Some(device)) => {
                Principal::Device {
                    tenant: credential.tenant,
                    device,
                }
            }
            (CredentialKind::DeviceToken | CredentialKind::DeviceCertificate, None) => {
                tracing::error!(credential = %credential.id, "device credential without a device");
                return Err(DirectoryError::Unauthenticated);
            }
            (CredentialKind::TenantIngestToken, _) => Principal::TenantIngest {
                tenant: credential.tenant,
                credential_id: credential.id.clone(),
            },
            // Applications and PSKs have their own lookups.
            (CredentialKind::Application | CredentialKind::DevicePsk, _) => {
                return Err(DirectoryError::Unauthenticated);
            }
        };
        Ok(Authenticated {
            principal,
            credential_id: credential.id,
            expires_at_ns: credential.expires_at_ns,
        })
    }

    /// Resolves an application token hash. Checks the credential only
    /// (kind, revoked, expired), not the name it was presented with:
    /// [`Registry::authenticate_application`] and [`crate::LocalDirectory`]
    /// do that. No other kind of token resolves here.
    pub async fn resolve_application(
        &self,
        hash: &TokenHash,
    ) -> Result<AuthenticatedApplication, DirectoryError> {
        let credential = self
            .store
            .credential_by_hash(hash)
            .await?
            .ok_or(DirectoryError::Unauthenticated)?;
        if credential.kind != CredentialKind::Application
            || credential.is_revoked()
            || credential.is_expired(now_ns())
        {
            return Err(DirectoryError::Unauthenticated);
        }
        let Some(grants) = credential.grants else {
            tracing::error!(credential = %credential.id, "application credential without grants");
            return Err(DirectoryError::Unauthenticated);
        };
        Ok(AuthenticatedApplication {
            application: Application {
                tenant: credential.tenant,
                name: credential.name,
                credential_id: credential.id,
                grants: grants.into(),
            },
            expires_at_ns: credential.expires_at_ns,
        })
    }

    /// Resolves an application's token presented as user name `app:<name>`:
    /// unknown, revoked or expired tokens, tokens of other kinds and tokens
    /// issued for another name are `Unauthenticated`. Uncached.
    pub async fn authenticate_application(
        &self,
        name: &str,
        secret: &str,
    ) -> Result<Application, DirectoryError> {
        if secret.is_empty() || secret.len() > MAX_SECRET_BYTES {
            return Err(DirectoryError::Unauthenticated);
        }
        let resolved = self
            .resolve_application(&tributary_auth::hash_token(secret))
            .await?;
        if resolved.application.name != name {
            return Err(DirectoryError::Unauthenticated);
        }
        Ok(resolved.application)
    }

    /// Resolves a client certificate by its fingerprint (hex): unknown,
    /// revoked or expired registrations and those of deleted devices are
    /// `Unauthenticated`; disabled devices are `Forbidden`. Uncached.
    pub async fn authenticate_certificate(
        &self,
        fingerprint: &str,
    ) -> Result<Principal, DirectoryError> {
        let fingerprint =
            parse_fingerprint(fingerprint).map_err(|_| DirectoryError::Unauthenticated)?;
        let resolved = self.resolve_certificate(&fingerprint).await?;
        self.check_device_enabled(&resolved.principal).await?;
        Ok(resolved.principal)
    }

    /// Fails unless a device principal's device exists and is enabled.
    pub(crate) async fn check_device_enabled(
        &self,
        principal: &Principal,
    ) -> Result<(), DirectoryError> {
        if let Principal::Device { tenant, device } = principal {
            match self.store.get_device(tenant, device).await? {
                None => return Err(DirectoryError::Unauthenticated),
                Some(d) if d.disabled => {
                    return Err(DirectoryError::Forbidden(format!(
                        "device {device:?} is disabled"
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Resolves a bearer token: unknown, revoked or expired tokens and tokens
    /// of deleted devices are `Unauthenticated`; tokens of disabled devices
    /// are `Forbidden`. Uncached: every call reads the store.
    pub async fn authenticate(&self, secret: &str) -> Result<Principal, DirectoryError> {
        if secret.is_empty() || secret.len() > MAX_SECRET_BYTES {
            return Err(DirectoryError::Unauthenticated);
        }
        let resolved = self
            .resolve_token_hash(&tributary_auth::hash_token(secret))
            .await?;
        self.check_device_enabled(&resolved.principal).await?;
        Ok(resolved.principal)
    }

    // ----- presence -----

    /// Records that `frontend` saw a device connect (`online`) or disconnect
    /// at `at_ns` (0 = now), and returns the resulting presence, once it is
    /// durable.
    ///
    /// Reports are written in groups ([`crate::presence`]): those that
    /// arrive while one group is written go together in the next. Reports
    /// older than the last one are ignored, and so is a disconnect from a
    /// frontend other than the one the device is online at (the device
    /// reconnected elsewhere).
    pub async fn report_presence(
        &self,
        tenant: &str,
        device: &str,
        online: bool,
        at_ns: i64,
        frontend: &str,
    ) -> Result<PresenceRecord, RegistryError> {
        validate_tenant(tenant)?;
        validate_device_id(device, &self.config.limits)?;
        check_text("frontend", frontend, MAX_NAME_BYTES)?;
        if at_ns < 0 {
            return Err(RegistryError::invalid("at_ns", "must not be negative"));
        }
        let at_ns = if at_ns == 0 { now_ns() } else { at_ns };
        self.presence
            .report(&self.store, tenant, device, online, at_ns, frontend)
            .await
    }

    /// Presence groups written so far, and the reports in them.
    pub fn presence_groups(&self) -> crate::presence::GroupStats {
        self.presence.stats()
    }

    /// A device's presence; the default if it was never seen.
    pub async fn presence(
        &self,
        tenant: &str,
        device: &str,
    ) -> Result<PresenceRecord, RegistryError> {
        Ok(self.device(tenant, device).await?.presence)
    }

    // ----- bootstrap -----

    /// First-start set-up of standalone mode: makes sure tenant
    /// [`DEFAULT_TENANT`] exists (auto-provisioning on, device tag `device`)
    /// and, if `<data_dir>/admin.token` does not exist, issues a ten-year
    /// admin JWT for it, writes it there (mode 0600) and returns it so the
    /// binary can print it once. Returns `None` when the file existed.
    pub async fn bootstrap(
        &self,
        keys: &JwtKeys,
        data_dir: &Path,
    ) -> Result<Option<String>, RegistryError> {
        let default = NewTenant {
            name: DEFAULT_TENANT.into(),
            display_name: "Default".into(),
            settings: TenantSettings {
                auto_provision: true,
                device_tag: "device".into(),
                quotas: Default::default(),
                retention: Default::default(),
                lwm2m_metrics: Default::default(),
            },
        };
        match self.create_tenant(default).await {
            Ok(_) | Err(RegistryError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
        let path = data_dir.join(ADMIN_TOKEN_FILE);
        let io_error =
            |e: std::io::Error| RegistryError::Unavailable(format!("{}: {e}", path.display()));
        std::fs::create_dir_all(data_dir).map_err(io_error)?;
        if path.try_exists().map_err(io_error)? {
            return Ok(None);
        }
        let iat = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| RegistryError::Internal(format!("system clock before 1970: {e}")))?
            .as_secs();
        let claims = OperatorClaims {
            sub: "admin".into(),
            tenant: DEFAULT_TENANT.into(),
            role: Role::Admin,
            iat,
            exp: iat + ADMIN_TOKEN_LIFETIME.as_secs(),
        };
        let token = keys
            .issue(&claims)
            .map_err(|e| RegistryError::Internal(format!("signing admin token: {e}")))?;
        let contents = format!("{token}\n");
        let target = path.clone();
        let written = tokio::task::spawn_blocking(move || {
            tributary_auth::write_private(&target, contents.as_bytes())
        })
        .await
        .map_err(|e| RegistryError::Internal(format!("writing admin token: {e}")))?;
        match written {
            Ok(()) => {
                tracing::info!(path = %path.display(), "admin token written");
                Ok(Some(token))
            }
            // Another process bootstrapped at the same moment: its token stands.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(io_error(e)),
        }
    }

    // ----- validation -----

    fn check_labels(
        &self,
        field: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), RegistryError> {
        let max = self.config.limits.max_labels;
        if labels.len() > max {
            return Err(RegistryError::invalid(
                field,
                format!("a device has at most {max} labels"),
            ));
        }
        for (k, v) in labels {
            validate_label(k, v).map_err(|e| retag(field, e))?;
        }
        Ok(())
    }

    fn check_metadata(
        &self,
        field: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), RegistryError> {
        let c = &self.config;
        if metadata.len() > c.max_metadata_entries {
            return Err(RegistryError::invalid(
                field,
                format!(
                    "a device has at most {} metadata entries",
                    c.max_metadata_entries
                ),
            ));
        }
        for (k, v) in metadata {
            self.check_metadata_key(field, k)?;
            if v.len() > c.max_metadata_value_bytes {
                return Err(RegistryError::invalid(
                    field,
                    format!(
                        "value of {k:?} is longer than {} bytes",
                        c.max_metadata_value_bytes
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_metadata_key(&self, field: &str, key: &str) -> Result<(), RegistryError> {
        let max = self.config.max_metadata_key_bytes;
        if key.is_empty() || key.len() > max || key.chars().any(char::is_control) {
            return Err(RegistryError::invalid(
                field,
                format!("key {key:?} must be 1..={max} bytes without control characters"),
            ));
        }
        Ok(())
    }

    fn check_update(&self, u: &DeviceUpdate) -> Result<(), RegistryError> {
        self.check_labels("set_labels", &u.set_labels)?;
        self.check_metadata("set_metadata", &u.set_metadata)?;
        check_removals(
            "remove_labels",
            &u.remove_labels,
            &u.set_labels,
            self.config.limits.max_labels,
        )?;
        for k in &u.remove_labels {
            validate_label(k, "").map_err(|e| retag("remove_labels", e))?;
        }
        check_removals(
            "remove_metadata",
            &u.remove_metadata,
            &u.set_metadata,
            self.config.max_metadata_entries,
        )?;
        for k in &u.remove_metadata {
            self.check_metadata_key("remove_metadata", k)?;
        }
        Ok(())
    }
}

fn check_removals(
    field: &str,
    keys: &[String],
    set: &BTreeMap<String, String>,
    max: usize,
) -> Result<(), RegistryError> {
    if keys.len() > max {
        return Err(RegistryError::invalid(field, format!("at most {max} keys")));
    }
    if let Some(k) = keys.iter().find(|k| set.contains_key(*k)) {
        return Err(RegistryError::invalid(
            field,
            format!("key {k:?} is also being set"),
        ));
    }
    Ok(())
}

/// Free text: at most `max` bytes, no control characters.
fn check_text(field: &str, s: &str, max: usize) -> Result<(), RegistryError> {
    if s.len() > max {
        return Err(RegistryError::invalid(
            field,
            format!("longer than {max} bytes"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(RegistryError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Names the request field of a validation error, keeping its detail.
fn retag(field: &str, e: ValidationError) -> RegistryError {
    RegistryError::invalid(field, e.to_string())
}

/// Renames the field of a validation error (core says `device`, the request says `id`).
fn rename_field(e: ValidationError, field: &str) -> RegistryError {
    RegistryError::Invalid(ValidationError::new(field, e.message))
}

/// When a credential with this lifetime, issued at `now`, expires: `None`
/// for no lifetime, an error for a zero or overflowing one.
fn expires_at(now: i64, ttl: Option<std::time::Duration>) -> Result<Option<i64>, RegistryError> {
    match ttl {
        None => Ok(None),
        Some(ttl) if ttl.is_zero() => {
            Err(RegistryError::invalid("ttl_seconds", "must be positive"))
        }
        Some(ttl) => i64::try_from(ttl.as_nanos())
            .ok()
            .and_then(|ttl| now.checked_add(ttl))
            .map(Some)
            .ok_or_else(|| RegistryError::invalid("ttl_seconds", "too large")),
    }
}
