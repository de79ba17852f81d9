//! The cached directory: the `tributary_core::directory` traits over the
//! registry, with caches so that steady-state ingest costs no registry read
//! or write. Two front types share one caching layer:
//!
//! * [`LocalDirectory`], in process over a [`Registry`] (standalone mode),
//!   invalidated by [`Registry::events`];
//! * [`crate::RemoteDirectory`], over the registry's `DirectoryService`
//!   gRPC (distributed mode), invalidated by the events it is given, in
//!   practice those [`crate::events::tail_events`] reads from the log.
//!
//! Both read what they miss from a private `DirectorySource` (the registry,
//! or the gRPC client), and cache it identically.
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
//! Device selection and presence are not cached: they are read from the
//! source on every call.
//!
//! **Invalidation.** A background task reads the event channel and evicts
//! what each event affects as soon as it arrives; if it lagged behind the
//! bounded channel, or is told [`RegistryEvent::Resync`], it clears
//! everything. If the channel closes, everything is cleared and nothing is
//! cached any more (every call reads the source). The TTL is a safety net for
//! changes that bypass the registry (a store edited by hand) or whose event
//! was lost. A fill that raced with an invalidation is not cached: every fill
//! notes the invalidation epoch before reading and stores its result only if
//! no invalidation happened meanwhile, so a stale read can never outlive the
//! event that made it stale.
//!
//! A device token is valid only while its device exists and is enabled; that
//! is checked against the device cache on every call, so disabling a device
//! takes effect as fast as evicting one device entry.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tributary_core::directory::{
    Application, Credential, DeviceInfo, DirectoryError, PresenceInfo, Principal, TenantPolicy,
};
use tributary_core::selector::Selector;
use tributary_core::time::now_ns;

use crate::service::{
    Authenticated, AuthenticatedApplication, DeviceUpdate, NewDevice, Registry, RegistryEvent,
};
use crate::store::{PresenceRecord, TokenHash};
use crate::{Entity, RegistryError};

/// Longest token worth hashing; generated ones are 47 bytes.
pub(crate) const MAX_SECRET_BYTES: usize = 512;

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

impl From<DeviceInfo> for DeviceState {
    fn from(d: DeviceInfo) -> Self {
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

/// Where a cached directory reads what it has not cached. Uncached: every
/// call reads the registry, in process or over gRPC.
#[async_trait]
pub(crate) trait DirectorySource: Send + Sync + fmt::Debug + 'static {
    /// A device or tenant ingest token, given with its hash. May refuse the
    /// token of a disabled device; need not (the cache checks the device).
    async fn resolve_token(
        &self,
        token: &str,
        hash: &TokenHash,
    ) -> Result<Authenticated, DirectoryError>;

    /// A certificate fingerprint, parsed. Like `resolve_token` for the device.
    async fn resolve_certificate(
        &self,
        fingerprint: &TokenHash,
    ) -> Result<Authenticated, DirectoryError>;

    /// An application token presented for `name`, with its hash. May refuse
    /// a token issued for another name; need not (the cache checks it).
    async fn resolve_application(
        &self,
        name: &str,
        token: &str,
        hash: &TokenHash,
    ) -> Result<AuthenticatedApplication, DirectoryError>;

    /// A DTLS PSK identity, with its key. Uncached by design: a handshake
    /// happens once per session, and no key is kept in a cache.
    async fn resolve_psk(&self, identity: &str) -> Result<(Authenticated, String), DirectoryError>;

    /// The tenant's ingest policy.
    async fn tenant_policy(&self, tenant: &str) -> Result<TenantPolicy, DirectoryError>;

    /// One device, if it exists.
    async fn device(
        &self,
        tenant: &str,
        device: &str,
    ) -> Result<Option<DeviceInfo>, DirectoryError>;

    /// The write path of `ensure_device`, once the cache has found that the
    /// device needs creating (`exists` false, and the tenant auto-provisions)
    /// or new labels merged (`exists` true).
    async fn provision(
        &self,
        tenant: &str,
        device: &str,
        labels: &BTreeMap<String, String>,
        exists: bool,
    ) -> Result<(), DirectoryError>;

    /// Every device of the tenant the selector matches, sorted by id.
    async fn select(
        &self,
        tenant: &str,
        selector: &Selector,
    ) -> Result<Vec<DeviceInfo>, DirectoryError>;

    /// Records a presence report.
    async fn report(
        &self,
        tenant: &str,
        device: &str,
        online: bool,
        at_ns: i64,
        frontend: &str,
    ) -> Result<(), DirectoryError>;

    /// A device's presence: `None` for an unknown device or one no frontend
    /// ever reported.
    async fn presence(
        &self,
        tenant: &str,
        device: &str,
    ) -> Result<Option<PresenceInfo>, DirectoryError>;

    /// Whether a credential is in force (not revoked, not expired), read
    /// from the registry, not a cache.
    async fn credential_active(&self, tenant: &str, id: &str) -> Result<bool, DirectoryError>;
}

/// What the caller and the invalidation task share.
#[derive(Debug)]
struct Shared<S> {
    source: S,
    /// Bumped by every invalidation, before it evicts.
    epoch: AtomicU64,
    /// The event channel closed: no invalidation can come any more, so
    /// nothing is cached.
    closed: AtomicBool,
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

impl<S: DirectorySource> Shared<S> {
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
        if self.epoch() == epoch && !self.closed.load(Ordering::SeqCst) {
            cache.insert(key, value);
        }
    }

    /// Applies one item from the event channel.
    fn handle(&self, item: Result<RegistryEvent, broadcast::error::RecvError>) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        match item {
            Ok(RegistryEvent::TenantChanged { tenant }) => lock(&self.policies).remove(&tenant),
            Ok(
                RegistryEvent::DeviceChanged { tenant, device, .. }
                | RegistryEvent::DeviceDeleted { tenant, device },
            ) => {
                lock(&self.devices).remove(&(tenant, device));
            }
            Ok(RegistryEvent::CredentialRevoked {
                tenant,
                credential_id,
                ..
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
            Ok(RegistryEvent::Resync) => {
                tracing::info!("registry events may have been lost; clearing the directory cache");
                self.clear();
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "directory cache missed registry events; clearing it"
                );
                self.clear();
            }
            Err(broadcast::error::RecvError::Closed) => {
                self.closed.store(true, Ordering::SeqCst);
                self.clear();
            }
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
            .source
            .device(tenant, device)
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
        let policy = self.source.tenant_policy(tenant).await?;
        self.fill(&self.policies, epoch, tenant.to_owned(), policy.clone());
        Ok(policy)
    }

    /// A token, through the token cache.
    async fn resolve(&self, token: &str) -> Result<Authenticated, DirectoryError> {
        let hash = tributary_auth::hash_token(token);
        let cached = lock(&self.tokens).get(&hash);
        let resolved = match cached {
            Some(a) => a,
            None => {
                let epoch = self.epoch();
                let a = self.source.resolve_token(token, &hash).await?;
                self.fill(&self.tokens, epoch, hash, a.clone());
                a
            }
        };
        self.unexpired(&self.tokens, &hash, resolved, |a| a.expires_at_ns)
    }

    /// A certificate fingerprint, through the certificate cache.
    async fn resolve_certificate(
        &self,
        fingerprint: TokenHash,
    ) -> Result<Authenticated, DirectoryError> {
        let cached = lock(&self.certificates).get(&fingerprint);
        let resolved = match cached {
            Some(a) => a,
            None => {
                let epoch = self.epoch();
                let a = self.source.resolve_certificate(&fingerprint).await?;
                self.fill(&self.certificates, epoch, fingerprint, a.clone());
                a
            }
        };
        self.unexpired(&self.certificates, &fingerprint, resolved, |a| {
            a.expires_at_ns
        })
    }

    /// An application token, through the application cache.
    async fn resolve_application(
        &self,
        name: &str,
        token: &str,
    ) -> Result<AuthenticatedApplication, DirectoryError> {
        let hash = tributary_auth::hash_token(token);
        let cached = lock(&self.applications).get(&hash);
        let resolved = match cached {
            Some(a) => a,
            None => {
                let epoch = self.epoch();
                let a = self.source.resolve_application(name, token, &hash).await?;
                self.fill(&self.applications, epoch, hash, a.clone());
                a
            }
        };
        self.unexpired(&self.applications, &hash, resolved, |a| a.expires_at_ns)
    }

    /// Refuses (and evicts) a credential past its expiry.
    fn unexpired<V: Clone>(
        &self,
        cache: &Mutex<TtlCache<TokenHash, V>>,
        key: &TokenHash,
        resolved: V,
        expires_at_ns: impl Fn(&V) -> Option<i64>,
    ) -> Result<V, DirectoryError> {
        if expires_at_ns(&resolved).is_some_and(|at| now_ns() >= at) {
            lock(cache).remove(key);
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

/// The caching layer both directories are made of: the caches over a
/// source, and the task that invalidates them.
#[derive(Debug)]
pub(crate) struct CachedDirectory<S> {
    shared: Arc<Shared<S>>,
    _invalidator: AbortOnDrop,
}

impl<S: DirectorySource> CachedDirectory<S> {
    /// Caches over `source`, invalidated by `events`. The receiver must have
    /// subscribed before anything is read from the source, so that no
    /// change is missed.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime (it spawns a task).
    pub(crate) fn new(
        source: S,
        mut events: broadcast::Receiver<RegistryEvent>,
        config: &DirectoryConfig,
    ) -> Self {
        let shared = Arc::new(Shared {
            source,
            epoch: AtomicU64::new(0),
            closed: AtomicBool::new(false),
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

    /// What the caches read from.
    pub(crate) fn source(&self) -> &S {
        &self.shared.source
    }

    /// Entries in the (token, certificate and application, device, tenant)
    /// caches.
    pub(crate) fn cache_sizes(&self) -> (usize, usize, usize) {
        let s = &self.shared;
        (
            lock(&s.tokens).len() + lock(&s.certificates).len() + lock(&s.applications).len(),
            lock(&s.devices).len(),
            lock(&s.policies).len(),
        )
    }

    pub(crate) async fn authenticate(&self, token: &str) -> Result<Principal, DirectoryError> {
        if token.is_empty() || token.len() > MAX_SECRET_BYTES {
            return Err(DirectoryError::Unauthenticated);
        }
        let resolved = self.shared.resolve(token).await?;
        self.shared.check_device(&resolved.principal).await?;
        Ok(resolved.principal)
    }

    pub(crate) async fn authenticate_certificate(
        &self,
        fingerprint: &str,
    ) -> Result<Principal, DirectoryError> {
        let fingerprint = crate::service::parse_fingerprint(fingerprint)
            .map_err(|_| DirectoryError::Unauthenticated)?;
        let resolved = self.shared.resolve_certificate(fingerprint).await?;
        self.shared.check_device(&resolved.principal).await?;
        Ok(resolved.principal)
    }

    pub(crate) async fn authenticate_application(
        &self,
        name: &str,
        token: &str,
    ) -> Result<Application, DirectoryError> {
        if token.is_empty() || token.len() > MAX_SECRET_BYTES {
            return Err(DirectoryError::Unauthenticated);
        }
        let resolved = self.shared.resolve_application(name, token).await?;
        if resolved.application.name != name {
            return Err(DirectoryError::Unauthenticated);
        }
        Ok(resolved.application)
    }

    pub(crate) async fn tenant_policy(&self, tenant: &str) -> Result<TenantPolicy, DirectoryError> {
        self.shared.policy(tenant).await
    }

    pub(crate) async fn authenticate_credential(
        &self,
        token: &str,
    ) -> Result<(Principal, Credential), DirectoryError> {
        if token.is_empty() || token.len() > MAX_SECRET_BYTES {
            return Err(DirectoryError::Unauthenticated);
        }
        let resolved = self.shared.resolve(token).await?;
        self.shared.check_device(&resolved.principal).await?;
        Ok(split_authenticated(resolved))
    }

    pub(crate) async fn authenticate_psk(
        &self,
        identity: &str,
    ) -> Result<tributary_core::directory::PskGrant, DirectoryError> {
        if identity.is_empty() || identity.len() > crate::service::MAX_PSK_IDENTITY_BYTES {
            return Err(DirectoryError::Unauthenticated);
        }
        let (resolved, key) = self.shared.source.resolve_psk(identity).await?;
        self.shared.check_device(&resolved.principal).await?;
        let (principal, credential) = split_authenticated(resolved);
        Ok(tributary_core::directory::PskGrant {
            principal,
            credential,
            key: key.into_bytes(),
        })
    }

    pub(crate) async fn authenticate_certificate_credential(
        &self,
        fingerprint: &str,
    ) -> Result<(Principal, Credential), DirectoryError> {
        let fingerprint = crate::service::parse_fingerprint(fingerprint)
            .map_err(|_| DirectoryError::Unauthenticated)?;
        let resolved = self.shared.resolve_certificate(fingerprint).await?;
        self.shared.check_device(&resolved.principal).await?;
        Ok(split_authenticated(resolved))
    }

    pub(crate) async fn authenticate_application_credential(
        &self,
        name: &str,
        token: &str,
    ) -> Result<(Application, Credential), DirectoryError> {
        if token.is_empty() || token.len() > MAX_SECRET_BYTES {
            return Err(DirectoryError::Unauthenticated);
        }
        let resolved = self.shared.resolve_application(name, token).await?;
        if resolved.application.name != name {
            return Err(DirectoryError::Unauthenticated);
        }
        let credential = Credential {
            id: resolved.application.credential_id.clone(),
            expires_at_ns: resolved.expires_at_ns,
        };
        Ok((resolved.application, credential))
    }

    /// Asks the registry itself (no cache): the credential, and the device.
    pub(crate) async fn credential_valid(
        &self,
        tenant: &str,
        credential_id: &str,
        device: Option<&str>,
    ) -> Result<bool, DirectoryError> {
        if !self
            .shared
            .source
            .credential_active(tenant, credential_id)
            .await?
        {
            return Ok(false);
        }
        match device {
            None => Ok(true),
            Some(device) => Ok(self
                .shared
                .source
                .device(tenant, device)
                .await?
                .is_some_and(|d| !d.disabled)),
        }
    }

    pub(crate) async fn ensure_device(
        &self,
        tenant: &str,
        device: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), DirectoryError> {
        match self.shared.device_state(tenant, device).await? {
            Some(state) if state.disabled => Err(disabled(device)),
            Some(state) if has_labels(&state.labels, labels) => Ok(()),
            Some(_) => {
                self.shared
                    .source
                    .provision(tenant, device, labels, true)
                    .await
            }
            None => {
                if !self.shared.policy(tenant).await?.auto_provision {
                    return Err(not_provisioned(tenant, device));
                }
                self.shared
                    .source
                    .provision(tenant, device, labels, false)
                    .await
            }
        }
    }

    pub(crate) async fn device(
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

    pub(crate) async fn select(
        &self,
        tenant: &str,
        selector: &Selector,
    ) -> Result<Vec<DeviceInfo>, DirectoryError> {
        self.shared.source.select(tenant, selector).await
    }

    pub(crate) async fn report(
        &self,
        tenant: &str,
        device: &str,
        online: bool,
        at_ns: i64,
        frontend: &str,
    ) -> Result<(), DirectoryError> {
        self.shared
            .source
            .report(tenant, device, online, at_ns, frontend)
            .await
    }

    pub(crate) async fn presence(
        &self,
        tenant: &str,
        device: &str,
    ) -> Result<Option<PresenceInfo>, DirectoryError> {
        self.shared.source.presence(tenant, device).await
    }
}

/// Implements the `tributary_core::directory` traits for a type whose
/// `inner` field is a [`CachedDirectory`], by delegation.
macro_rules! delegate_directory_traits {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl tributary_core::directory::Authenticator for $ty {
            async fn authenticate(
                &self,
                token: &str,
            ) -> Result<tributary_core::directory::Principal, DirectoryError> {
                self.inner.authenticate(token).await
            }

            async fn authenticate_certificate(
                &self,
                fingerprint: &str,
            ) -> Result<tributary_core::directory::Principal, DirectoryError> {
                self.inner.authenticate_certificate(fingerprint).await
            }

            async fn authenticate_application(
                &self,
                name: &str,
                token: &str,
            ) -> Result<tributary_core::directory::Application, DirectoryError> {
                self.inner.authenticate_application(name, token).await
            }

            async fn tenant_policy(
                &self,
                tenant: &str,
            ) -> Result<tributary_core::directory::TenantPolicy, DirectoryError> {
                self.inner.tenant_policy(tenant).await
            }

            async fn authenticate_credential(
                &self,
                token: &str,
            ) -> Result<
                (
                    tributary_core::directory::Principal,
                    tributary_core::directory::Credential,
                ),
                DirectoryError,
            > {
                self.inner.authenticate_credential(token).await
            }

            async fn authenticate_psk(
                &self,
                identity: &str,
            ) -> Result<tributary_core::directory::PskGrant, DirectoryError> {
                self.inner.authenticate_psk(identity).await
            }

            async fn authenticate_certificate_credential(
                &self,
                fingerprint: &str,
            ) -> Result<
                (
                    tributary_core::directory::Principal,
                    tributary_core::directory::Credential,
                ),
                DirectoryError,
            > {
                self.inner
                    .authenticate_certificate_credential(fingerprint)
                    .await
            }

            async fn authenticate_application_credential(
                &self,
                name: &str,
                token: &str,
            ) -> Result<
                (
                    tributary_core::directory::Application,
                    tributary_core::directory::Credential,
                ),
                DirectoryError,
            > {
                self.inner
                    .authenticate_application_credential(name, token)
                    .await
            }

            async fn credential_valid(
                &self,
                tenant: &str,
                credential_id: &str,
                device: Option<&str>,
            ) -> Result<bool, DirectoryError> {
                self.inner
                    .credential_valid(tenant, credential_id, device)
                    .await
            }

            async fn ensure_device(
                &self,
                tenant: &str,
                device: &str,
                labels: &std::collections::BTreeMap<String, String>,
            ) -> Result<(), DirectoryError> {
                self.inner.ensure_device(tenant, device, labels).await
            }
        }

        #[async_trait::async_trait]
        impl tributary_core::directory::DeviceCatalog for $ty {
            async fn device(
                &self,
                tenant: &str,
                device: &str,
            ) -> Result<Option<tributary_core::directory::DeviceInfo>, DirectoryError> {
                self.inner.device(tenant, device).await
            }

            /// Uncached: scans the tenant's devices in the registry.
            async fn select(
                &self,
                tenant: &str,
                selector: &tributary_core::selector::Selector,
            ) -> Result<Vec<tributary_core::directory::DeviceInfo>, DirectoryError> {
                self.inner.select(tenant, selector).await
            }

            /// From the cached tenant policy.
            async fn tenant_quotas(
                &self,
                tenant: &str,
            ) -> Result<tributary_core::quota::Quotas, DirectoryError> {
                Ok(self.inner.tenant_policy(tenant).await?.quotas)
            }
        }

        #[async_trait::async_trait]
        impl tributary_core::directory::PresenceSink for $ty {
            async fn report(
                &self,
                tenant: &str,
                device: &str,
                online: bool,
                at_ns: i64,
                frontend: &str,
            ) -> Result<(), DirectoryError> {
                self.inner
                    .report(tenant, device, online, at_ns, frontend)
                    .await
            }
        }

        #[async_trait::async_trait]
        impl tributary_core::directory::PresenceLookup for $ty {
            /// Uncached: reads the registry.
            async fn presence(
                &self,
                tenant: &str,
                device: &str,
            ) -> Result<Option<tributary_core::directory::PresenceInfo>, DirectoryError> {
                self.inner.presence(tenant, device).await
            }
        }
    };
}
pub(crate) use delegate_directory_traits;

/// Whether a device's labels already hold every pair of `wanted`.
fn has_labels(current: &BTreeMap<String, String>, wanted: &BTreeMap<String, String>) -> bool {
    wanted.iter().all(|(k, v)| current.get(k) == Some(v))
}

fn disabled(device: &str) -> DirectoryError {
    DirectoryError::Forbidden(format!("device {device:?} is disabled"))
}

fn not_provisioned(tenant: &str, device: &str) -> DirectoryError {
    DirectoryError::NotFound(format!(
        "device {device:?} does not exist and tenant {tenant:?} does not auto-provision devices"
    ))
}

// ----- over the registry, in process -----

/// Merges `labels` into an existing device and checks it is enabled.
async fn merge_labels(
    registry: &Registry,
    tenant: &str,
    device: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), DirectoryError> {
    let update = DeviceUpdate {
        set_labels: labels.clone(),
        ..DeviceUpdate::default()
    };
    let updated = registry.update_device(tenant, device, update).await?;
    if updated.record.disabled {
        return Err(disabled(device));
    }
    Ok(())
}

/// Creates a device with `labels`; if another writer created it first,
/// merges into theirs.
async fn create_or_merge(
    registry: &Registry,
    tenant: &str,
    device: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), DirectoryError> {
    let new = NewDevice {
        tenant: tenant.to_owned(),
        id: device.to_owned(),
        labels: labels.clone(),
        ..NewDevice::default()
    };
    match registry.create_device(new).await {
        Ok(_) => {
            tracing::info!(tenant, device, "device auto-provisioned");
            Ok(())
        }
        Err(RegistryError::AlreadyExists { .. }) => {
            merge_labels(registry, tenant, device, labels).await
        }
        Err(e) => Err(e.into()),
    }
}

/// `ensure_device` without a cache: what the directory gRPC service does
/// for a remote directory's cache miss.
pub(crate) async fn ensure_device_uncached(
    registry: &Registry,
    tenant: &str,
    device: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), DirectoryError> {
    match registry.find_device(tenant, device).await? {
        Some(d) if d.disabled => Err(disabled(device)),
        Some(d) if has_labels(&d.labels, labels) => Ok(()),
        Some(_) => merge_labels(registry, tenant, device, labels).await,
        None => {
            if !registry.tenant_policy(tenant).await?.auto_provision {
                return Err(not_provisioned(tenant, device));
            }
            create_or_merge(registry, tenant, device, labels).await
        }
    }
}

/// A device's presence record: `None` for an unknown device.
pub(crate) async fn presence_record(
    registry: &Registry,
    tenant: &str,
    device: &str,
) -> Result<Option<PresenceRecord>, DirectoryError> {
    match registry.presence(tenant, device).await {
        Ok(p) => Ok(Some(p)),
        Err(RegistryError::NotFound {
            kind: Entity::Device,
            ..
        }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A presence record as [`PresenceInfo`]: `None` if never reported.
pub(crate) fn presence_info(p: PresenceRecord) -> Option<PresenceInfo> {
    (p.last_seen_ns != 0).then_some(PresenceInfo {
        online: p.online,
        last_seen_ns: p.last_seen_ns,
        frontend: p.frontend,
    })
}

/// A resolved credential as the principal and its credential details.
fn split_authenticated(a: Authenticated) -> (Principal, Credential) {
    (
        a.principal,
        Credential {
            id: a.credential_id,
            expires_at_ns: a.expires_at_ns,
        },
    )
}

/// The registry itself, as [`LocalDirectory`]'s source.
#[derive(Debug)]
pub(crate) struct LocalSource {
    registry: Arc<Registry>,
}

#[async_trait]
impl DirectorySource for LocalSource {
    async fn credential_active(&self, tenant: &str, id: &str) -> Result<bool, DirectoryError> {
        Ok(self.registry.credential_active(tenant, id).await?)
    }

    async fn resolve_token(
        &self,
        _token: &str,
        hash: &TokenHash,
    ) -> Result<Authenticated, DirectoryError> {
        self.registry.resolve_token_hash(hash).await
    }

    async fn resolve_certificate(
        &self,
        fingerprint: &TokenHash,
    ) -> Result<Authenticated, DirectoryError> {
        self.registry.resolve_certificate(fingerprint).await
    }

    async fn resolve_psk(&self, identity: &str) -> Result<(Authenticated, String), DirectoryError> {
        self.registry.resolve_psk(identity).await
    }

    async fn resolve_application(
        &self,
        _name: &str,
        _token: &str,
        hash: &TokenHash,
    ) -> Result<AuthenticatedApplication, DirectoryError> {
        self.registry.resolve_application(hash).await
    }

    async fn tenant_policy(&self, tenant: &str) -> Result<TenantPolicy, DirectoryError> {
        Ok(self.registry.tenant_policy(tenant).await?)
    }

    async fn device(
        &self,
        tenant: &str,
        device: &str,
    ) -> Result<Option<DeviceInfo>, DirectoryError> {
        Ok(self
            .registry
            .find_device(tenant, device)
            .await?
            .map(|d| DeviceInfo {
                id: d.id,
                labels: d.labels,
                disabled: d.disabled,
            }))
    }

    async fn provision(
        &self,
        tenant: &str,
        device: &str,
        labels: &BTreeMap<String, String>,
        exists: bool,
    ) -> Result<(), DirectoryError> {
        if exists {
            merge_labels(&self.registry, tenant, device, labels).await
        } else {
            create_or_merge(&self.registry, tenant, device, labels).await
        }
    }

    async fn select(
        &self,
        tenant: &str,
        selector: &Selector,
    ) -> Result<Vec<DeviceInfo>, DirectoryError> {
        let devices = self.registry.select_devices(tenant, selector).await?;
        Ok(devices
            .into_iter()
            .map(|d| DeviceInfo {
                id: d.id,
                labels: d.labels,
                disabled: d.disabled,
            })
            .collect())
    }

    async fn report(
        &self,
        tenant: &str,
        device: &str,
        online: bool,
        at_ns: i64,
        frontend: &str,
    ) -> Result<(), DirectoryError> {
        self.registry
            .report_presence(tenant, device, online, at_ns, frontend)
            .await?;
        Ok(())
    }

    async fn presence(
        &self,
        tenant: &str,
        device: &str,
    ) -> Result<Option<PresenceInfo>, DirectoryError> {
        Ok(presence_record(&self.registry, tenant, device)
            .await?
            .and_then(presence_info))
    }
}

/// The registry as ingest frontends and the query service see it, in
/// process, cached. See the [module docs](self).
#[derive(Debug)]
pub struct LocalDirectory {
    inner: CachedDirectory<LocalSource>,
}

impl LocalDirectory {
    /// A directory over `registry`, with its invalidation task.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime (it spawns a task).
    pub fn new(registry: Arc<Registry>, config: DirectoryConfig) -> Self {
        // Subscribe before anything is cached, so no change is missed.
        let events = registry.events();
        Self {
            inner: CachedDirectory::new(LocalSource { registry }, events, &config),
        }
    }

    /// The registry underneath.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.inner.source().registry
    }

    /// Entries in the (token, certificate and application, device, tenant) caches, for
    /// metrics and tests.
    pub fn cache_sizes(&self) -> (usize, usize, usize) {
        self.inner.cache_sizes()
    }

    /// A device's presence, uncached: `None` for an unknown device or one
    /// no frontend ever reported.
    pub async fn presence(
        &self,
        tenant: &str,
        device: &str,
    ) -> Result<Option<PresenceInfo>, DirectoryError> {
        self.inner.presence(tenant, device).await
    }
}

delegate_directory_traits!(LocalDirectory);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EmbeddedRegistryStore;
    use crate::service::{NewTenant, RegistryConfig};
    use crate::store::TenantSettings;
    use tributary_core::directory::{Authenticator, DeviceCatalog};

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
                disabled: false,
            })
            .expect("send");
        }
        let item = rx.recv().await;
        assert!(
            matches!(item, Err(broadcast::error::RecvError::Lagged(2))),
            "got {item:?}"
        );
        directory.inner.shared.handle(item);
        assert_eq!(directory.cache_sizes(), (0, 0, 0));
    }
}
