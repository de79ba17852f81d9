//! [`LocalDirectory`]: the `tributary_core::directory` traits, in process,
//! over a [`Registry`], with caches so that steady-state ingest costs no
//! registry read or write.
//!
//! Five caches, each bounded (`max_entries`) and each entry living at most
//! `ttl`:
//!
//! * token hash → [`Authenticated`]: keyed by the SHA-256 of the token, never
//!   by the secret. Unknown tokens are not cached, so random guesses cannot
//!   fill it with junk.
//! * certificate fingerprint → [`Authenticated`], apart from the token cache
//!   so that the two lookups never answer for each other. Unknown
//!   fingerprints are not cached either.
//! * application token hash → [`AuthenticatedApplication`], likewise apart.
//! * (tenant, device) → device state (exists, disabled, labels), including
//!   "does not exist".
//! * tenant → [`TenantPolicy`].
//!
//! **Invalidation.** A background task subscribes to [`Registry::events`] and
//! evicts what each event affects as soon as it arrives; if it lagged behind
//! the bounded channel it clears everything. The TTL is a safety net for
//! changes that bypass the registry (a store edited by hand). A fill that
//! raced with an invalidation is not cached: every fill notes the
//! invalidation epoch before reading and stores its result only if no
//! invalidation happened meanwhile, so a stale read can never outlive the
//! event that made it stale.
//!
//! A device token is valid only while its device exists and is enabled; that
//! is checked against the device cache on every call, so disabling a device
//! takes effect as fast as evicting one device entry.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tributary_core::directory::{
    Application, Authenticator, DeviceCatalog, DeviceInfo, DirectoryError, PresenceSink, Principal,
    TenantPolicy,
};
use tributary_core::selector::Selector;
use tributary_core::time::now_ns;

use crate::RegistryError;
use crate::service::{
    Authenticated, AuthenticatedApplication, DeviceUpdate, NewDevice, Registry, RegistryEvent,
};
use crate::store::{DeviceRecord, TokenHash};

/// Longest token worth hashing; generated ones are 47 bytes.
const MAX_SECRET_BYTES: usize = 512;

/// Cache sizes and lifetimes of a [`LocalDirectory`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DirectoryConfig {
    /// Most entries in each cache (tokens, devices, tenants). A full cache
    /// drops expired entries, then arbitrary ones.
    pub max_entries: usize,
    /// Longest life of a cache entry, even without an invalidation event
    /// (`ttl_ms` in configuration files, in milliseconds).
    #[serde(rename = "ttl_ms", with = "millis")]
    pub ttl: Duration,
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            ttl: Duration::from_secs(30),
        }
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// The cached state of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DeviceState {
    disabled: bool,
    labels: BTreeMap<String, String>,
}

impl From<DeviceRecord> for DeviceState {
    fn from(d: DeviceRecord) -> Self {
        Self {
            disabled: d.disabled,
            labels: d.labels,
        }
    }
}

/// A bounded map whose entries expire.
#[derive(Debug)]
struct TtlCache<K, V> {
    map: HashMap<K, (V, Instant)>,
    capacity: usize,
    ttl: Duration,
}

impl<K: Hash + Eq + Clone, V: Clone> TtlCache<K, V> {
    fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            map: HashMap::new(),
            capacity: capacity.max(1),
            ttl,
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        match self.map.get(key) {
            Some((v, at)) if at.elapsed() < self.ttl => Some(v.clone()),
            _ => None,
        }
    }

    fn insert(&mut self, key: K, value: V) {
        if !self.map.contains_key(&key) && self.map.len() >= self.capacity {
            self.make_room();
        }
        self.map.insert(key, (value, Instant::now()));
    }

    /// Drops expired entries and, if that is not enough, an eighth of the
    /// capacity more, so the O(n) sweep runs at most once per capacity/8 inserts.
    fn make_room(&mut self) {
        let ttl = self.ttl;
        self.map.retain(|_, (_, at)| at.elapsed() < ttl);
        if self.map.len() >= self.capacity {
            let excess = self.map.len() + 1 - self.capacity + self.capacity / 8;
            let victims: Vec<K> = self.map.keys().take(excess).cloned().collect();
            for k in victims {
                self.map.remove(&k);
            }
        }
    }

    fn remove(&mut self, key: &K) {
        self.map.remove(key);
    }

    fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        self.map.retain(|k, (v, _)| keep(k, v));
    }

    fn clear(&mut self) {
        self.map.clear();
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

type DeviceKey = (String, String);

/// What the caller and the invalidation task share.
#[derive(Debug)]
struct Shared {
    registry: Arc<Registry>,
    /// Bumped by every invalidation, before it evicts.
    epoch: AtomicU64,
    tokens: Mutex<TtlCache<TokenHash, Authenticated>>,
    certificates: Mutex<TtlCache<TokenHash, Authenticated>>,
    applications: Mutex<TtlCache<TokenHash, AuthenticatedApplication>>,
    devices: Mutex<TtlCache<DeviceKey, Option<DeviceState>>>,
    policies: Mutex<TtlCache<String, TenantPolicy>>,
}

/// Locks a cache. A poisoned lock only means another thread panicked while
/// holding it; the map itself is still a valid cache.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Caches a fill unless an invalidation happened since `epoch` was read.
    fn fill<K: Hash + Eq + Clone, V: Clone>(
        &self,
        cache: &Mutex<TtlCache<K, V>>,
        epoch: u64,
        key: K,
        value: V,
    ) {
        let mut cache = lock(cache);
        if self.epoch() == epoch {
            cache.insert(key, value);
        }
    }

    /// Applies one item from the event channel.
    fn handle(&self, item: Result<RegistryEvent, broadcast::error::RecvError>) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        match item {
            Ok(RegistryEvent::TenantChanged { tenant }) => lock(&self.policies).remove(&tenant),
            Ok(
                RegistryEvent::DeviceChanged { tenant, device }
                | RegistryEvent::DeviceDeleted { tenant, device },
            ) => {
                lock(&self.devices).remove(&(tenant, device));
            }
            Ok(RegistryEvent::CredentialRevoked {
                tenant,
                credential_id,
            }) => {
                // Revocations are rare; a sweep is simpler than a second index.
                let keep = |_: &TokenHash, a: &Authenticated| {
                    !(a.credential_id == credential_id && a.principal.tenant() == tenant)
                };
                lock(&self.tokens).retain(keep);
                lock(&self.certificates).retain(keep);
                lock(&self.applications).retain(|_, a| {
                    !(a.application.credential_id == credential_id
                        && a.application.tenant == tenant)
                });
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "directory cache missed registry events; clearing it"
                );
                self.clear();
            }
            Err(broadcast::error::RecvError::Closed) => self.clear(),
        }
    }

    fn clear(&self) {
        lock(&self.tokens).clear();
        lock(&self.certificates).clear();
        lock(&self.applications).clear();
        lock(&self.devices).clear();
        lock(&self.policies).clear();
    }

    async fn device_state(
        &self,
        tenant: &str,
        device: &str,
    ) -> Result<Option<DeviceState>, DirectoryError> {
        let key = (tenant.to_owned(), device.to_owned());
        if let Some(state) = lock(&self.devices).get(&key) {
            return Ok(state);
        }
        let epoch = self.epoch();
        let state = self
            .registry
            .find_device(tenant, device)
            .await?
            .map(DeviceState::from);
        self.fill(&self.devices, epoch, key, state.clone());
        Ok(state)
    }

    async fn policy(&self, tenant: &str) -> Result<TenantPolicy, DirectoryError> {
        if let Some(policy) = lock(&self.policies).get(&tenant.to_owned()) {
            return Ok(policy);
        }
        let epoch = self.epoch();
        let policy = self.registry.tenant_policy(tenant).await?;
        self.fill(&self.policies, epoch, tenant.to_owned(), policy.clone());
        Ok(policy)
    }

    /// A token hash, through the token cache.
    async fn resolve(&self, hash: TokenHash) -> Result<Authenticated, DirectoryError> {
        self.resolve_in(&self.tokens, hash, false).await
    }

    /// A certificate fingerprint, through the certificate cache.
    async fn resolve_certificate(
        &self,
        fingerprint: TokenHash,
    ) -> Result<Authenticated, DirectoryError> {
        self.resolve_in(&self.certificates, fingerprint, true).await
    }

    async fn resolve_in(
        &self,
        cache: &Mutex<TtlCache<TokenHash, Authenticated>>,
        hash: TokenHash,
        certificate: bool,
    ) -> Result<Authenticated, DirectoryError> {
        let cached = lock(cache).get(&hash);
        let resolved = match cached {
            Some(a) => a,
            None => {
                let epoch = self.epoch();
                let a = if certificate {
                    self.registry.resolve_certificate(&hash).await?
                } else {
                    self.registry.resolve_token_hash(&hash).await?
                };
                self.fill(cache, epoch, hash, a.clone());
                a
            }
        };
        if resolved.expires_at_ns.is_some_and(|at| now_ns() >= at) {
            lock(cache).remove(&hash);
            return Err(DirectoryError::Unauthenticated);
        }
        Ok(resolved)
    }

    /// An application token hash, through the application cache.
    async fn resolve_application(
        &self,
        hash: TokenHash,
    ) -> Result<AuthenticatedApplication, DirectoryError> {
        let cached = lock(&self.applications).get(&hash);
        let resolved = match cached {
            Some(a) => a,
            None => {
                let epoch = self.epoch();
                let a = self.registry.resolve_application(&hash).await?;
                self.fill(&self.applications, epoch, hash, a.clone());
                a
            }
        };
        if resolved.expires_at_ns.is_some_and(|at| now_ns() >= at) {
            lock(&self.applications).remove(&hash);
            return Err(DirectoryError::Unauthenticated);
        }
        Ok(resolved)
    }

    /// Fails unless a device principal's device exists and is enabled.
    async fn check_device(&self, principal: &Principal) -> Result<(), DirectoryError> {
        if let Principal::Device { tenant, device } = principal {
            match self.device_state(tenant, device).await? {
                None => return Err(DirectoryError::Unauthenticated),
                Some(state) if state.disabled => return Err(disabled(device)),
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// Aborts the invalidation task when the directory is dropped.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The registry as ingest frontends and the query service see it, in
/// process, cached. See the [module docs](self).
#[derive(Debug)]
pub struct LocalDirectory {
    shared: Arc<Shared>,
    _invalidator: AbortOnDrop,
}

impl LocalDirectory {
    /// A directory over `registry`, with its invalidation task.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime (it spawns a task).
    pub fn new(registry: Arc<Registry>, config: DirectoryConfig) -> Self {
        // Subscribe before anything is cached, so no change is missed.
        let mut events = registry.events();
        let shared = Arc::new(Shared {
            registry,
            epoch: AtomicU64::new(0),
            tokens: Mutex::new(TtlCache::new(config.max_entries, config.ttl)),
            certificates: Mutex::new(TtlCache::new(config.max_entries, config.ttl)),
            applications: Mutex::new(TtlCache::new(config.max_entries, config.ttl)),
            devices: Mutex::new(TtlCache::new(config.max_entries, config.ttl)),
            policies: Mutex::new(TtlCache::new(config.max_entries, config.ttl)),
        });
        let task_shared = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            loop {
                let item = events.recv().await;
                let closed = matches!(item, Err(broadcast::error::RecvError::Closed));
                task_shared.handle(item);
                if closed {
                    break;
                }
            }
        });
        Self {
            shared,
            _invalidator: AbortOnDrop(task),
        }
    }

    /// The registry underneath.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.shared.registry
    }

    /// Entries in the (token, certificate and application, device, tenant) caches, for
    /// metrics and tests.
    pub fn cache_sizes(&self) -> (usize, usize, usize) {
        (
            lock(&self.shared.tokens).len()
                + lock(&self.shared.certificates).len()
                + lock(&self.shared.applications).len(),
            lock(&self.shared.devices).len(),
            lock(&self.shared.policies).len(),
        )
    }

    /// Merges `labels` into an existing device and checks it is enabled.
    async fn merge_labels(
        &self,
        tenant: &str,
        device: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), DirectoryError> {
        let update = DeviceUpdate {
            set_labels: labels.clone(),
            ..DeviceUpdate::default()
        };
        let updated = self
            .shared
            .registry
            .update_device(tenant, device, update)
            .await?;
        if updated.record.disabled {
            return Err(disabled(device));
        }
        Ok(())
    }
}

fn disabled(device: &str) -> DirectoryError {
    DirectoryError::Forbidden(format!("device {device:?} is disabled"))
}

#[async_trait]
impl Authenticator for LocalDirectory {
    async fn authenticate(&self, token: &str) -> Result<Principal, DirectoryError> {
        if token.is_empty() || token.len() > MAX_SECRET_BYTES {
            return Err(DirectoryError::Unauthenticated);
        }
        let resolved = self
            .shared
            .resolve(tributary_auth::hash_token(token))
            .await?;
        self.shared.check_device(&resolved.principal).await?;
        Ok(resolved.principal)
    }

    async fn authenticate_certificate(
        &self,
        fingerprint: &str,
    ) -> Result<Principal, DirectoryError> {
        let fingerprint = crate::service::parse_fingerprint(fingerprint)
            .map_err(|_| DirectoryError::Unauthenticated)?;
        let resolved = self.shared.resolve_certificate(fingerprint).await?;
        self.shared.check_device(&resolved.principal).await?;
        Ok(resolved.principal)
    }

    async fn authenticate_application(
        &self,
        name: &str,
        token: &str,
    ) -> Result<Application, DirectoryError> {
        if token.is_empty() || token.len() > MAX_SECRET_BYTES {
            return Err(DirectoryError::Unauthenticated);
        }
        let resolved = self
            .shared
            .resolve_application(tributary_auth::hash_token(token))
            .await?;
        if resolved.application.name != name {
            return Err(DirectoryError::Unauthenticated);
        }
        Ok(resolved.application)
    }

    async fn tenant_policy(&self, tenant: &str) -> Result<TenantPolicy, DirectoryError> {
        self.shared.policy(tenant).await
    }

    async fn ensure_device(
        &self,
        tenant: &str,
        device: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), DirectoryError> {
        match self.shared.device_state(tenant, device).await? {
            Some(state) if state.disabled => Err(disabled(device)),
            Some(state) if labels.iter().all(|(k, v)| state.labels.get(k) == Some(v)) => Ok(()),
            Some(_) => self.merge_labels(tenant, device, labels).await,
            None => {
                if !self.shared.policy(tenant).await?.auto_provision {
                    return Err(DirectoryError::NotFound(format!(
                        "device {device:?} does not exist and tenant {tenant:?} does not auto-provision devices"
                    )));
                }
                let new = NewDevice {
                    tenant: tenant.to_owned(),
                    id: device.to_owned(),
                    labels: labels.clone(),
                    ..NewDevice::default()
                };
                match self.shared.registry.create_device(new).await {
                    Ok(_) => {
                        tracing::info!(tenant, device, "device auto-provisioned");
                        Ok(())
                    }
                    // Another writer created it first: merge into theirs.
                    Err(RegistryError::AlreadyExists { .. }) => {
                        self.merge_labels(tenant, device, labels).await
                    }
                    Err(e) => Err(e.into()),
                }
            }
        }
    }
}

#[async_trait]
impl DeviceCatalog for LocalDirectory {
    async fn device(
        &self,
        tenant: &str,
        device: &str,
    ) -> Result<Option<DeviceInfo>, DirectoryError> {
        let state = self.shared.device_state(tenant, device).await?;
        Ok(state.map(|s| DeviceInfo {
            id: device.to_owned(),
            labels: s.labels,
            disabled: s.disabled,
        }))
    }

    /// Uncached: scans the tenant's devices in the registry.
    async fn select(
        &self,
        tenant: &str,
        selector: &Selector,
    ) -> Result<Vec<DeviceInfo>, DirectoryError> {
        let devices = self
            .shared
            .registry
            .select_devices(tenant, selector)
            .await?;
        Ok(devices
            .into_iter()
            .map(|d| DeviceInfo {
                id: d.id,
                labels: d.labels,
                disabled: d.disabled,
            })
            .collect())
    }
}

#[async_trait]
impl PresenceSink for LocalDirectory {
    async fn report(
        &self,
        tenant: &str,
        device: &str,
        online: bool,
        at_ns: i64,
        frontend: &str,
    ) -> Result<(), DirectoryError> {
        self.shared
            .registry
            .report_presence(tenant, device, online, at_ns, frontend)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EmbeddedRegistryStore;
    use crate::service::{NewTenant, RegistryConfig};
    use crate::store::TenantSettings;

    #[test]
    fn ttl_cache_stays_bounded_and_expires() {
        let mut cache = TtlCache::new(100, Duration::from_secs(60));
        for i in 0..10_000 {
            cache.insert(i, i);
            assert!(cache.len() <= 100, "cache grew to {}", cache.len());
        }
        assert_eq!(
            cache.get(&9_999),
            Some(9_999),
            "the newest entry survives eviction"
        );

        let mut expiring = TtlCache::new(10, Duration::ZERO);
        expiring.insert("k", 1);
        assert_eq!(
            expiring.get(&"k"),
            None,
            "an entry older than the TTL is a miss"
        );
    }

    #[test]
    fn config_reads_milliseconds_and_rejects_unknown_fields() {
        let c: DirectoryConfig = serde_json::from_str(r#"{"ttl_ms": 1500}"#).expect("config");
        let expected = DirectoryConfig {
            ttl: Duration::from_millis(1500),
            ..DirectoryConfig::default()
        };
        assert_eq!(c, expected);
        assert!(
            serde_json::from_str::<DirectoryConfig>(r#"{"ttl": 1}"#).is_err(),
            "unknown field"
        );
    }

    #[tokio::test]
    async fn lagging_behind_the_event_channel_clears_every_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedRegistryStore::open(&dir.path().join("registry.redb")).expect("open");
        let registry = Arc::new(Registry::new(store, RegistryConfig::default()));
        registry
            .create_tenant(NewTenant {
                name: "lag".into(),
                display_name: String::new(),
                settings: TenantSettings::default(),
            })
            .await
            .expect("tenant");
        let directory = LocalDirectory::new(Arc::clone(&registry), DirectoryConfig::default());
        directory
            .ensure_device("lag", "d1", &BTreeMap::new())
            .await
            .expect("provision");
        directory.tenant_policy("lag").await.expect("policy");
        let deadline = Instant::now() + Duration::from_secs(5);
        // Wait until the creation event is processed, then warm the caches.
        loop {
            directory.device("lag", "d1").await.expect("device");
            let (_, devices, policies) = directory.cache_sizes();
            if devices == 1 && policies == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "caches never warmed");
            tokio::task::yield_now().await;
        }

        let (tx, mut rx) = broadcast::channel(1);
        for device in ["a", "b", "c"] {
            tx.send(RegistryEvent::DeviceChanged {
                tenant: "other".into(),
                device: device.into(),
            })
            .expect("send");
        }
        let item = rx.recv().await;
        assert!(
            matches!(item, Err(broadcast::error::RecvError::Lagged(2))),
            "got {item:?}"
        );
        directory.shared.handle(item);
        assert_eq!(directory.cache_sizes(), (0, 0, 0));
    }
}
