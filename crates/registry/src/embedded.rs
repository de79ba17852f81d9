//! The embedded registry store: one redb file, durable on every write.
//!
//! Tables (keys sort byte-wise, so listings come out in id order):
//!
//! | table                | key                       | value                  |
//! |----------------------|---------------------------|------------------------|
//! | `meta`               | name                      | u64 (schema version)   |
//! | `tenants`            | name                      | JSON [`TenantRecord`]  |
//! | `devices`            | (tenant, id)              | JSON [`DeviceRecord`]  |
//! | `credentials`        | (tenant, id)              | JSON [`CredentialRecord`] |
//! | `credential_hashes`  | token hash                | (tenant, id)           |
//! | `device_credentials` | (tenant, device, cred id) | ()                     |
//! | `presence`           | (tenant, device)          | JSON [`PresenceRecord`] |
//! | `rules`              | (tenant, name)            | JSON [`Rule`]          |
//! | `webhooks`           | (tenant, name)            | JSON [`WebhookRecord`] |
//! | `silences`           | (tenant, key)             | JSON [`Silence`]       |
//!
//! Every write is one redb transaction committed with redb's default
//! durability (fsync before the call returns), so conditional writes are
//! atomic and nothing acknowledged is lost in a crash. redb calls block, so
//! each runs on Tokio's blocking pool.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::RegistryError;
use crate::store::{
    CredentialRecord, CredentialStore, DeviceRecord, DeviceStore, Expect, PresenceRecord,
    PresenceStore, Rule, RuleStore, Silence, SilenceStore, TenantRecord, TenantStore, TokenHash,
    WebhookRecord, WebhookStore,
};

const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const TENANTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("tenants");
const DEVICES: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("devices");
const CREDENTIALS: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("credentials");
const CREDENTIAL_HASHES: TableDefinition<'_, &[u8; 32], (&str, &str)> =
    TableDefinition::new("credential_hashes");
const DEVICE_CREDENTIALS: TableDefinition<'_, (&str, &str, &str), ()> =
    TableDefinition::new("device_credentials");
const PRESENCE: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("presence");
const RULES: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("rules");
const WEBHOOKS: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("webhooks");
const SILENCES: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("silences");

/// The schema version this code writes and reads.
const SCHEMA_VERSION: u64 = 1;

/// A [`crate::RegistryStore`] in one redb file.
#[derive(Debug)]
pub struct EmbeddedRegistryStore {
    db: Arc<Database>,
    /// Bounds the blocking threads working on the file at once: a storm of
    /// thousands of lookups waits here as tasks, cheaply, instead of as
    /// hundreds of blocking threads that contend for two cores and redb's
    /// own locks.
    slots: Arc<tokio::sync::Semaphore>,
}

/// Blocking threads that may work on the registry file at once.
const STORAGE_THREADS: usize = 8;

impl EmbeddedRegistryStore {
    /// Opens (or creates) the registry file at `path`, e.g.
    /// `<data-dir>/registry.redb`, creating missing parent directories.
    /// Fails if another process has the file open.
    pub fn open(path: &Path) -> Result<Arc<Self>, RegistryError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                RegistryError::Unavailable(format!("creating {}: {e}", parent.display()))
            })?;
        }
        let db = Database::create(path)
            .map_err(|e| RegistryError::Unavailable(format!("opening {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(storage)?;
        {
            let mut meta = txn.open_table(META).map_err(storage)?;
            let version = meta
                .get("schema_version")
                .map_err(storage)?
                .map(|v| v.value());
            match version {
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION)
                        .map_err(storage)?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(other) => {
                    return Err(RegistryError::Internal(format!(
                        "{} has registry schema version {other}; this build reads version {SCHEMA_VERSION}",
                        path.display()
                    )));
                }
            }
            txn.open_table(TENANTS).map_err(storage)?;
            txn.open_table(DEVICES).map_err(storage)?;
            txn.open_table(CREDENTIALS).map_err(storage)?;
            txn.open_table(CREDENTIAL_HASHES).map_err(storage)?;
            txn.open_table(DEVICE_CREDENTIALS).map_err(storage)?;
            txn.open_table(PRESENCE).map_err(storage)?;
            txn.open_table(RULES).map_err(storage)?;
            txn.open_table(WEBHOOKS).map_err(storage)?;
            txn.open_table(SILENCES).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        Ok(Arc::new(Self {
            db: Arc::new(db),
            slots: Arc::new(tokio::sync::Semaphore::new(STORAGE_THREADS)),
        }))
    }

    /// Runs blocking redb work on Tokio's blocking pool, at most
    /// [`STORAGE_THREADS`] at once.
    async fn run<T, F>(&self, f: F) -> Result<T, RegistryError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, RegistryError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| RegistryError::Internal("registry storage closed".into()))?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            f(&db)
        })
        .await
        .map_err(|e| RegistryError::Internal(format!("registry storage task failed: {e}")))?
    }

    /// Runs a point read (one or two keys, a few hundred bytes) on the
    /// calling task. Such a read is served from redb's cache or the OS page
    /// cache in microseconds; handing it to a blocking thread costs more
    /// than the read itself (two thread wake-ups, and two trips through
    /// the runtime's run queue), and under a reconnect storm, when every
    /// CONNECT of a just-restarted server reads its credential and its
    /// device, those trips were most of a CONNECT's latency. Scans, writes
    /// and commits go through [`Self::run`].
    fn read_now<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        f(&self.db)
    }

    /// Reads and decodes the record at `(tenant, key)` of a pair-keyed
    /// table (a point read: [`Self::read_now`]).
    async fn get_pair<T: DeserializeOwned + Send + 'static>(
        &self,
        table: TableDefinition<'static, (&'static str, &'static str), &'static [u8]>,
        tenant: &str,
        key: &str,
    ) -> Result<Option<T>, RegistryError> {
        self.read_now(|db| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(table).map_err(storage)?;
            table
                .get((tenant, key))
                .map_err(storage)?
                .map(|v| decode(v.value()))
                .transpose()
        })
    }
}

/// Maps a redb error: I/O problems are retryable, the rest are internal.
fn storage(e: impl Into<redb::Error>) -> RegistryError {
    match e.into() {
        redb::Error::Io(io) => RegistryError::Unavailable(io.to_string()),
        other => RegistryError::Internal(other.to_string()),
    }
}

fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, RegistryError> {
    serde_json::to_vec(record).map_err(|e| RegistryError::Internal(format!("encoding record: {e}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RegistryError> {
    serde_json::from_slice(bytes)
        .map_err(|e| RegistryError::Internal(format!("corrupt registry record: {e}")))
}

/// Checks a conditional write against the stored revision (`None`: absent).
fn check_expect(what: &str, stored: Option<u64>, expect: Expect) -> Result<(), RegistryError> {
    let ok = match (expect, stored) {
        (Expect::Any, _) | (Expect::Absent, None) => true,
        (Expect::Revision(want), Some(have)) => want == have,
        (Expect::Absent, Some(_)) | (Expect::Revision(_), None) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(RegistryError::Conflict(format!(
            "{what}: expected {expect:?}, found revision {stored:?}"
        )))
    }
}

#[async_trait]
impl TenantStore for EmbeddedRegistryStore {
    async fn put_tenant(&self, tenant: &TenantRecord, expect: Expect) -> Result<(), RegistryError> {
        let tenant = tenant.clone();
        self.run(move |db| {
            let bytes = encode(&tenant)?;
            let txn = db.begin_write().map_err(storage)?;
            {
                let mut table = txn.open_table(TENANTS).map_err(storage)?;
                let stored = match table.get(tenant.name.as_str()).map_err(storage)? {
                    Some(v) => Some(decode::<TenantRecord>(v.value())?.revision),
                    None => None,
                };
                check_expect(&format!("tenant {:?}", tenant.name), stored, expect)?;
                table
                    .insert(tenant.name.as_str(), bytes.as_slice())
                    .map_err(storage)?;
            }
            txn.commit().map_err(storage)
        })
        .await
    }

    async fn get_tenant(&self, name: &str) -> Result<Option<TenantRecord>, RegistryError> {
        let name = name.to_owned();
        self.run(move |db| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(TENANTS).map_err(storage)?;
            table
                .get(name.as_str())
                .map_err(storage)?
                .map(|v| decode(v.value()))
                .transpose()
        })
        .await
    }

    async fn list_tenants(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TenantRecord>, RegistryError> {
        let after = after.map(str::to_owned);
        self.run(move |db| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(TENANTS).map_err(storage)?;
            let range = match &after {
                Some(a) => table.range::<&str>((Bound::Excluded(a.as_str()), Bound::Unbounded)),
                None => table.range::<&str>(..),
            }
            .map_err(storage)?;
            let mut out = Vec::new();
            for entry in range.take(limit) {
                let (_, v) = entry.map_err(storage)?;
                out.push(decode(v.value())?);
            }
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl DeviceStore for EmbeddedRegistryStore {
    async fn put_device(&self, device: &DeviceRecord, expect: Expect) -> Result<(), RegistryError> {
        let device = device.clone();
        self.run(move |db| {
            let bytes = encode(&device)?;
            let key = (device.tenant.as_str(), device.id.as_str());
            let txn = db.begin_write().map_err(storage)?;
            {
                let mut table = txn.open_table(DEVICES).map_err(storage)?;
                let stored = match table.get(key).map_err(storage)? {
                    Some(v) => Some(decode::<DeviceRecord>(v.value())?.revision),
                    None => None,
                };
                check_expect(
                    &format!("device {:?}/{:?}", device.tenant, device.id),
                    stored,
                    expect,
                )?;
                table.insert(key, bytes.as_slice()).map_err(storage)?;
            }
            txn.commit().map_err(storage)
        })
        .await
    }

    async fn get_device(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<DeviceRecord>, RegistryError> {
        self.get_pair(DEVICES, tenant, id).await
    }

    async fn devices_exist(&self, keys: &[(String, String)]) -> Result<Vec<bool>, RegistryError> {
        let keys = keys.to_vec();
        self.run(move |db| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(DEVICES).map_err(storage)?;
            keys.iter()
                .map(|(tenant, device)| {
                    Ok(table
                        .get((tenant.as_str(), device.as_str()))
                        .map_err(storage)?
                        .is_some())
                })
                .collect()
        })
        .await
    }

    async fn delete_device(&self, tenant: &str, id: &str) -> Result<bool, RegistryError> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.run(move |db| {
            let key = (tenant.as_str(), id.as_str());
            let txn = db.begin_write().map_err(storage)?;
            let existed = {
                let mut devices = txn.open_table(DEVICES).map_err(storage)?;
                let existed = devices.remove(key).map_err(storage)?.is_some();
                let mut presence = txn.open_table(PRESENCE).map_err(storage)?;
                presence.remove(key).map_err(storage)?;
                existed
            };
            txn.commit().map_err(storage)?;
            Ok(existed)
        })
        .await
    }

    async fn list_devices(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeviceRecord>, RegistryError> {
        self.list_pairs(DEVICES, tenant, after, limit).await
    }

    async fn list_devices_desc(
        &self,
        tenant: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeviceRecord>, RegistryError> {
        let (tenant, before) = (tenant.to_owned(), before.map(str::to_owned));
        self.run(move |db| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(DEVICES).map_err(storage)?;
            // Every key of a tenant sorts before (tenant + "\0", ""): no
            // tenant name falls between the two.
            let beyond = format!("{tenant}\0");
            let range: KeyRange<'_> = (
                Bound::Included((tenant.as_str(), "")),
                match before.as_deref() {
                    Some(b) => Bound::Excluded((tenant.as_str(), b)),
                    None => Bound::Excluded((beyond.as_str(), "")),
                },
            );
            let mut out = Vec::new();
            for entry in table.range(range).map_err(storage)?.rev() {
                if out.len() >= limit {
                    break;
                }
                let (_, v) = entry.map_err(storage)?;
                out.push(decode(v.value())?);
            }
            Ok(out)
        })
        .await
    }
}

/// A range over (tenant, id) keys.
type KeyRange<'a> = (Bound<(&'a str, &'a str)>, Bound<(&'a str, &'a str)>);

/// The (tenant, id) keys of `tenant` after `after`, onwards; the caller stops
/// at the first key of another tenant.
fn tenant_range<'a>(tenant: &'a str, after: Option<&'a str>) -> KeyRange<'a> {
    match after {
        Some(a) => (Bound::Excluded((tenant, a)), Bound::Unbounded),
        None => (Bound::Included((tenant, "")), Bound::Unbounded),
    }
}

#[async_trait]
impl CredentialStore for EmbeddedRegistryStore {
    async fn put_credential(&self, credential: &CredentialRecord) -> Result<(), RegistryError> {
        let credential = credential.clone();
        self.run(move |db| {
            let bytes = encode(&credential)?;
            let key = (credential.tenant.as_str(), credential.id.as_str());
            let txn = db.begin_write().map_err(storage)?;
            {
                let mut table = txn.open_table(CREDENTIALS).map_err(storage)?;
                if table.get(key).map_err(storage)?.is_some() {
                    return Err(RegistryError::Conflict(format!(
                        "credential id {:?} is taken",
                        credential.id
                    )));
                }
                let mut hashes = txn.open_table(CREDENTIAL_HASHES).map_err(storage)?;
                if hashes
                    .get(&credential.token_hash)
                    .map_err(storage)?
                    .is_some()
                {
                    return Err(RegistryError::Conflict("token hash is taken".into()));
                }
                table.insert(key, bytes.as_slice()).map_err(storage)?;
                hashes
                    .insert(&credential.token_hash, key)
                    .map_err(storage)?;
                if let Some(device) = &credential.device {
                    let mut by_device = txn.open_table(DEVICE_CREDENTIALS).map_err(storage)?;
                    by_device
                        .insert(
                            (
                                credential.tenant.as_str(),
                                device.as_str(),
                                credential.id.as_str(),
                            ),
                            (),
                        )
                        .map_err(storage)?;
                }
            }
            txn.commit().map_err(storage)
        })
        .await
    }

    async fn get_credential(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<CredentialRecord>, RegistryError> {
        self.get_pair(CREDENTIALS, tenant, id).await
    }

    async fn credential_by_hash(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<CredentialRecord>, RegistryError> {
        // Two point reads: on the calling task (`read_now`).
        self.read_now(|db| {
            let txn = db.begin_read().map_err(storage)?;
            let hashes = txn.open_table(CREDENTIAL_HASHES).map_err(storage)?;
            let Some(key) = hashes.get(hash).map_err(storage)? else {
                return Ok(None);
            };
            let table = txn.open_table(CREDENTIALS).map_err(storage)?;
            let record = table.get(key.value()).map_err(storage)?;
            record.map(|v| decode(v.value())).transpose()
        })
    }

    async fn list_credentials(
        &self,
        tenant: &str,
        device: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<CredentialRecord>, RegistryError> {
        let (tenant, device, after) = (
            tenant.to_owned(),
            device.map(str::to_owned),
            after.map(str::to_owned),
        );
        self.run(move |db| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(CREDENTIALS).map_err(storage)?;
            let mut out = Vec::new();
            match &device {
                None => {
                    for entry in table
                        .range(tenant_range(&tenant, after.as_deref()))
                        .map_err(storage)?
                    {
                        if out.len() >= limit {
                            break;
                        }
                        let (k, v) = entry.map_err(storage)?;
                        if k.value().0 != tenant {
                            break;
                        }
                        out.push(decode(v.value())?);
                    }
                }
                Some(device) => {
                    let index = txn.open_table(DEVICE_CREDENTIALS).map_err(storage)?;
                    let (t, d) = (tenant.as_str(), device.as_str());
                    let start = match after.as_deref() {
                        Some(a) => Bound::Excluded((t, d, a)),
                        None => Bound::Included((t, d, "")),
                    };
                    for entry in index.range((start, Bound::Unbounded)).map_err(storage)? {
                        if out.len() >= limit {
                            break;
                        }
                        let (k, _) = entry.map_err(storage)?;
                        let (kt, kd, id) = k.value();
                        if kt != t || kd != d {
                            break;
                        }
                        match table.get((t, id)).map_err(storage)? {
                            Some(v) => out.push(decode(v.value())?),
                            None => {
                                return Err(RegistryError::Internal(format!(
                                    "device credential index names missing credential {id:?}"
                                )));
                            }
                        }
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn revoke_credential(
        &self,
        tenant: &str,
        id: &str,
        at_ns: i64,
    ) -> Result<Option<CredentialRecord>, RegistryError> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.run(move |db| {
            let key = (tenant.as_str(), id.as_str());
            let txn = db.begin_write().map_err(storage)?;
            let record = {
                let mut table = txn.open_table(CREDENTIALS).map_err(storage)?;
                let stored = table
                    .get(key)
                    .map_err(storage)?
                    .map(|v| decode::<CredentialRecord>(v.value()));
                let Some(mut record) = stored.transpose()? else {
                    return Ok(None);
                };
                if record.revoked_at_ns.is_some() {
                    return Ok(Some(record));
                }
                record.revoked_at_ns = Some(at_ns);
                table
                    .insert(key, encode(&record)?.as_slice())
                    .map_err(storage)?;
                record
            };
            txn.commit().map_err(storage)?;
            Ok(Some(record))
        })
        .await
    }
}

#[async_trait]
impl PresenceStore for EmbeddedRegistryStore {
    async fn set_presence(
        &self,
        tenant: &str,
        device: &str,
        presence: &PresenceRecord,
    ) -> Result<(), RegistryError> {
        let (tenant, device, presence) = (tenant.to_owned(), device.to_owned(), presence.clone());
        self.run(move |db| {
            let bytes = encode(&presence)?;
            let txn = db.begin_write().map_err(storage)?;
            {
                let mut table = txn.open_table(PRESENCE).map_err(storage)?;
                table
                    .insert((tenant.as_str(), device.as_str()), bytes.as_slice())
                    .map_err(storage)?;
            }
            txn.commit().map_err(storage)
        })
        .await
    }

    async fn set_presences(
        &self,
        presences: &[(String, String, PresenceRecord)],
    ) -> Result<(), RegistryError> {
        let presences = presences.to_vec();
        self.run(move |db| {
            let txn = db.begin_write().map_err(storage)?;
            {
                let mut table = txn.open_table(PRESENCE).map_err(storage)?;
                for (tenant, device, presence) in &presences {
                    table
                        .insert(
                            (tenant.as_str(), device.as_str()),
                            encode(presence)?.as_slice(),
                        )
                        .map_err(storage)?;
                }
            }
            txn.commit().map_err(storage)
        })
        .await
    }

    async fn get_presence(
        &self,
        tenant: &str,
        device: &str,
    ) -> Result<Option<PresenceRecord>, RegistryError> {
        self.get_pair(PRESENCE, tenant, device).await
    }

    async fn get_presences_of(
        &self,
        keys: &[(String, String)],
    ) -> Result<Vec<Option<PresenceRecord>>, RegistryError> {
        let keys = keys.to_vec();
        self.run(move |db| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(PRESENCE).map_err(storage)?;
            keys.iter()
                .map(|(tenant, device)| {
                    table
                        .get((tenant.as_str(), device.as_str()))
                        .map_err(storage)?
                        .map(|v| decode(v.value()))
                        .transpose()
                })
                .collect()
        })
        .await
    }

    async fn get_presences(
        &self,
        tenant: &str,
        devices: &[String],
    ) -> Result<BTreeMap<String, PresenceRecord>, RegistryError> {
        let (tenant, devices) = (tenant.to_owned(), devices.to_vec());
        self.run(move |db| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(PRESENCE).map_err(storage)?;
            let mut out = BTreeMap::new();
            for device in devices {
                let found = table
                    .get((tenant.as_str(), device.as_str()))
                    .map_err(storage)?;
                if let Some(v) = found {
                    let record = decode(v.value())?;
                    out.insert(device, record);
                }
            }
            Ok(out)
        })
        .await
    }
}

/// A record kept by (tenant, name) with a revision: rules and webhooks.
trait Named: serde::Serialize + DeserializeOwned + Clone + Send + 'static {
    /// What it is called in conflicts: `rule`, `webhook`.
    const KIND: &'static str;
    fn tenant(&self) -> &str;
    fn name(&self) -> &str;
    fn revision(&self) -> u64;
}

impl Named for Rule {
    const KIND: &'static str = "rule";
    fn tenant(&self) -> &str {
        &self.tenant
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn revision(&self) -> u64 {
        self.revision
    }
}

impl Named for WebhookRecord {
    const KIND: &'static str = "webhook";
    fn tenant(&self) -> &str {
        &self.tenant
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn revision(&self) -> u64 {
        self.revision
    }
}

impl Named for Silence {
    const KIND: &'static str = "silence";
    fn tenant(&self) -> &str {
        &self.tenant
    }
    fn name(&self) -> &str {
        &self.key
    }
    fn revision(&self) -> u64 {
        self.revision
    }
}

type PairTable = TableDefinition<'static, (&'static str, &'static str), &'static [u8]>;

impl EmbeddedRegistryStore {
    /// Writes a named record if `expect` holds against its stored revision.
    async fn put_named<T: Named>(
        &self,
        table: PairTable,
        record: &T,
        expect: Expect,
    ) -> Result<(), RegistryError> {
        let record = record.clone();
        self.run(move |db| {
            let bytes = encode(&record)?;
            let key = (record.tenant(), record.name());
            let txn = db.begin_write().map_err(storage)?;
            {
                let mut table = txn.open_table(table).map_err(storage)?;
                let stored = match table.get(key).map_err(storage)? {
                    Some(v) => Some(decode::<T>(v.value())?.revision()),
                    None => None,
                };
                check_expect(
                    &format!("{} {:?}/{:?}", T::KIND, record.tenant(), record.name()),
                    stored,
                    expect,
                )?;
                table.insert(key, bytes.as_slice()).map_err(storage)?;
            }
            txn.commit().map_err(storage)
        })
        .await
    }

    /// Deletes the record at (tenant, key); whether it existed.
    async fn delete_pair(
        &self,
        table: PairTable,
        tenant: &str,
        key: &str,
    ) -> Result<bool, RegistryError> {
        let (tenant, key) = (tenant.to_owned(), key.to_owned());
        self.run(move |db| {
            let txn = db.begin_write().map_err(storage)?;
            let existed = {
                let mut table = txn.open_table(table).map_err(storage)?;
                table
                    .remove((tenant.as_str(), key.as_str()))
                    .map_err(storage)?
                    .is_some()
            };
            txn.commit().map_err(storage)?;
            Ok(existed)
        })
        .await
    }

    /// Up to `limit` records of `tenant` after `after`, in key order.
    async fn list_pairs<T: DeserializeOwned + Send + 'static>(
        &self,
        table: PairTable,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<T>, RegistryError> {
        let (tenant, after) = (tenant.to_owned(), after.map(str::to_owned));
        self.run(move |db| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(table).map_err(storage)?;
            let mut out = Vec::new();
            for entry in table
                .range(tenant_range(&tenant, after.as_deref()))
                .map_err(storage)?
            {
                if out.len() >= limit {
                    break;
                }
                let (k, v) = entry.map_err(storage)?;
                if k.value().0 != tenant {
                    break;
                }
                out.push(decode(v.value())?);
            }
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl RuleStore for EmbeddedRegistryStore {
    async fn put_rule(&self, rule: &Rule, expect: Expect) -> Result<(), RegistryError> {
        self.put_named(RULES, rule, expect).await
    }

    async fn get_rule(&self, tenant: &str, name: &str) -> Result<Option<Rule>, RegistryError> {
        self.get_pair(RULES, tenant, name).await
    }

    async fn delete_rule(&self, tenant: &str, name: &str) -> Result<bool, RegistryError> {
        self.delete_pair(RULES, tenant, name).await
    }

    async fn list_rules(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Rule>, RegistryError> {
        self.list_pairs(RULES, tenant, after, limit).await
    }
}

#[async_trait]
impl WebhookStore for EmbeddedRegistryStore {
    async fn put_webhook(&self, hook: &WebhookRecord, expect: Expect) -> Result<(), RegistryError> {
        self.put_named(WEBHOOKS, hook, expect).await
    }

    async fn get_webhook(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<WebhookRecord>, RegistryError> {
        self.get_pair(WEBHOOKS, tenant, name).await
    }

    async fn delete_webhook(&self, tenant: &str, name: &str) -> Result<bool, RegistryError> {
        self.delete_pair(WEBHOOKS, tenant, name).await
    }

    async fn list_webhooks(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<WebhookRecord>, RegistryError> {
        self.list_pairs(WEBHOOKS, tenant, after, limit).await
    }
}

#[async_trait]
impl SilenceStore for EmbeddedRegistryStore {
    async fn put_silence(&self, silence: &Silence, expect: Expect) -> Result<(), RegistryError> {
        self.put_named(SILENCES, silence, expect).await
    }

    async fn delete_silence(&self, tenant: &str, key: &str) -> Result<bool, RegistryError> {
        self.delete_pair(SILENCES, tenant, key).await
    }

    async fn list_silences(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Silence>, RegistryError> {
        self.list_pairs(SILENCES, tenant, after, limit).await
    }
}
