//! [`ScyllaRegistryStore`]: the registry's storage on ScyllaDB.
//!
//! Each record lives in its own partition, so that the conditional writes
//! the registry relies on ([`Expect`]) are lightweight transactions (Paxos)
//! on that one record, and two devices of a tenant never contend:
//!
//! | table | key | holds |
//! | --- | --- | --- |
//! | `tenants` | `name` | a [`TenantRecord`] |
//! | `devices` | `(tenant, id)` | a [`DeviceRecord`] |
//! | `credentials` | `(tenant, id)` | a [`CredentialRecord`] |
//! | `credential_hashes` | `token_hash` | the `(tenant, id)` owning a token hash |
//! | `presence` | `(tenant, device)` | a [`PresenceRecord`] |
//! | `rules` | `tenant`, clustered by `name` | a [`tributary_registry::Rule`] as JSON ([`named`]) |
//! | `webhooks` | `tenant`, clustered by `name` | a [`tributary_registry::WebhookRecord`] as JSON ([`named`]) |
//!
//! Listings read small index tables clustered by id, one partition per
//! tenant (`device_ids`, `credential_ids`), per (tenant, device)
//! (`device_credentials`), or one for all tenants (`tenant_names`), then
//! fetch the records they name. An index row is written *before* its record,
//! so an acknowledged record is always listed; a crash in between leaves an
//! index row without a record, which listings skip. Deleting a device
//! removes its index row with `USING TIMESTAMP` of the index row's own write
//! time, so a re-creation racing the delete (which writes the index row
//! again, later) is never hidden by it.
//!
//! Every write to a record table is a lightweight transaction (never mixed
//! with plain writes, which would break Paxos' linearizability); index and
//! presence rows are plain, idempotent writes.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt, stream};
use scylla::DeserializeRow;
use scylla::client::session::Session;
use scylla::response::query_result::QueryResult;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, MaybeUnset, Row};
use tributary_registry::{
    CredentialKind, CredentialRecord, CredentialStore, DeviceRecord, DeviceStore, Expect,
    PresenceRecord, PresenceStore, RegistryError, TenantRecord, TenantSettings, TenantStore,
    TokenHash,
};

use tributary_core::quota::{Quota, Quotas};

use crate::session::Cql;
use crate::{ScyllaConfig, ScyllaError};

mod named;
mod rules;
mod silences;
mod webhooks;

/// Most index rows read by one request of a listing: a listing with a larger
/// `limit` reads several, so no response grows with the caller's limit.
const INDEX_PAGE: usize = 1000;
/// Records fetched at once for one listing page or presence lookup.
const FETCH_FANOUT: usize = 16;
/// The one partition of `tenant_names`: tenants are few, and one partition
/// lists them in name order. Bound rather than written into the statements,
/// so that the driver routes those reads and writes by token too.
const TENANT_SHARD: i32 = 0;
/// Attempts of an unconditional ([`Expect::Any`]) write racing other writers.
const ANY_ATTEMPTS: usize = 16;

/// The registry's storage traits on ScyllaDB; see the module docs for the
/// tables. Hold it as `Arc<dyn RegistryStore>` like the embedded one.
pub struct ScyllaRegistryStore {
    cql: Cql,
    s: Statements,
    keyspace: String,
}

impl fmt::Debug for ScyllaRegistryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScyllaRegistryStore")
            .field("keyspace", &self.keyspace)
            .finish_non_exhaustive()
    }
}

/// Defines the prepared statements: each field's CQL text (with `{ks}` for
/// the keyspace) and whether it is idempotent (safe for the driver to retry).
macro_rules! statements {
    ($($name:ident, $idempotent:expr, $cql:literal;)+) => {
        struct Statements {
            $($name: PreparedStatement,)+
        }

        /// The CQL text of every registry statement, for keyspace `ks`,
        /// with whether it is idempotent.
        #[cfg(test)]
        pub(crate) fn statement_texts(ks: &str) -> Vec<(&'static str, bool, String)> {
            vec![$((stringify!($name), $idempotent, format!($cql, ks = ks)),)+]
        }

        impl Statements {
            async fn prepare(cql: &Cql, ks: &str) -> Result<Self, ScyllaError> {
                let ($($name,)+) = futures::try_join!(
                    $(cql.prepare(format!($cql, ks = ks), $idempotent),)+
                )?;
                Ok(Self { $($name,)+ })
            }
        }
    };
}

// Lightweight transactions are not idempotent: a retried one that had
// applied would report "not applied".
statements! {
    tenant_insert, false,
        "INSERT INTO {ks}.tenants (name, display_name, created_at_ns, auto_provision, device_tag, quotas, retention, lwm2m_metrics, revision) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS";
    tenant_update, false,
        "UPDATE {ks}.tenants SET display_name = ?, created_at_ns = ?, auto_provision = ?, device_tag = ?, \
         quotas = ?, retention = ?, lwm2m_metrics = ?, revision = ? WHERE name = ? IF revision = ?";
    tenant_get, true,
        "SELECT name, display_name, created_at_ns, auto_provision, device_tag, quotas, retention, lwm2m_metrics, revision \
         FROM {ks}.tenants WHERE name = ?";
    tenant_index, true,
        "INSERT INTO {ks}.tenant_names (shard, name, w) VALUES (?, ?, true)";
    tenant_list_first, true,
        "SELECT name FROM {ks}.tenant_names WHERE shard = ? LIMIT ?";
    tenant_list_after, true,
        "SELECT name FROM {ks}.tenant_names WHERE shard = ? AND name > ? LIMIT ?";

    device_insert, false,
        "INSERT INTO {ks}.devices (tenant, id, labels, metadata, disabled, created_at_ns, updated_at_ns, revision) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS";
    device_update, false,
        "UPDATE {ks}.devices SET labels = ?, metadata = ?, disabled = ?, created_at_ns = ?, updated_at_ns = ?, \
         revision = ? WHERE tenant = ? AND id = ? IF revision = ?";
    device_get, true,
        "SELECT tenant, id, labels, metadata, disabled, created_at_ns, updated_at_ns, revision \
         FROM {ks}.devices WHERE tenant = ? AND id = ?";
    device_delete, false,
        "DELETE FROM {ks}.devices WHERE tenant = ? AND id = ? IF EXISTS";
    device_index, true,
        "INSERT INTO {ks}.device_ids (tenant, id, w) VALUES (?, ?, true)";
    device_index_written, true,
        "SELECT WRITETIME(w) FROM {ks}.device_ids WHERE tenant = ? AND id = ?";
    device_unindex, true,
        "DELETE FROM {ks}.device_ids USING TIMESTAMP ? WHERE tenant = ? AND id = ?";
    device_list_first, true,
        "SELECT id FROM {ks}.device_ids WHERE tenant = ? LIMIT ?";
    device_list_after, true,
        "SELECT id FROM {ks}.device_ids WHERE tenant = ? AND id > ? LIMIT ?";
    device_list_last, true,
        "SELECT id FROM {ks}.device_ids WHERE tenant = ? ORDER BY id DESC LIMIT ?";
    device_list_before, true,
        "SELECT id FROM {ks}.device_ids WHERE tenant = ? AND id < ? ORDER BY id DESC LIMIT ?";

    hash_claim, false,
        "INSERT INTO {ks}.credential_hashes (token_hash, tenant, id) VALUES (?, ?, ?) IF NOT EXISTS";
    hash_release, false,
        "DELETE FROM {ks}.credential_hashes WHERE token_hash = ? IF tenant = ? AND id = ?";
    hash_get, true,
        "SELECT tenant, id FROM {ks}.credential_hashes WHERE token_hash = ?";
    credential_insert, false,
        "INSERT INTO {ks}.credentials (tenant, id, kind, device, name, token_hash, created_at_ns, \
         expires_at_ns, revoked_at_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS";
    credential_get, true,
        "SELECT tenant, id, kind, device, name, token_hash, created_at_ns, expires_at_ns, revoked_at_ns \
         FROM {ks}.credentials WHERE tenant = ? AND id = ?";
    credential_revoke, false,
        "UPDATE {ks}.credentials SET revoked_at_ns = ? WHERE tenant = ? AND id = ? \
         IF revoked_at_ns = null AND token_hash = ?";
    credential_index, true,
        "INSERT INTO {ks}.credential_ids (tenant, id, w) VALUES (?, ?, true)";
    credential_list_first, true,
        "SELECT id FROM {ks}.credential_ids WHERE tenant = ? LIMIT ?";
    credential_list_after, true,
        "SELECT id FROM {ks}.credential_ids WHERE tenant = ? AND id > ? LIMIT ?";
    device_credential_index, true,
        "INSERT INTO {ks}.device_credentials (tenant, device, id, w) VALUES (?, ?, ?, true) USING TIMESTAMP ?";
    device_credential_unindex, true,
        "DELETE FROM {ks}.device_credentials USING TIMESTAMP ? WHERE tenant = ? AND device = ? AND id = ?";
    device_credential_list_first, true,
        "SELECT id FROM {ks}.device_credentials WHERE tenant = ? AND device = ? LIMIT ?";
    device_credential_list_after, true,
        "SELECT id FROM {ks}.device_credentials WHERE tenant = ? AND device = ? AND id > ? LIMIT ?";

    presence_set, true,
        "INSERT INTO {ks}.presence (tenant, device, online, last_seen_ns, frontend) VALUES (?, ?, ?, ?, ?)";
    presence_get, true,
        "SELECT online, last_seen_ns, frontend FROM {ks}.presence WHERE tenant = ? AND device = ?";
    presence_delete, true,
        "DELETE FROM {ks}.presence WHERE tenant = ? AND device = ?";

    rule_insert, false,
        "INSERT INTO {ks}.rules (tenant, name, spec, revision) VALUES (?, ?, ?, ?) IF NOT EXISTS";
    rule_update, false,
        "UPDATE {ks}.rules SET spec = ?, revision = ? WHERE tenant = ? AND name = ? IF revision = ?";
    rule_get, true,
        "SELECT spec FROM {ks}.rules WHERE tenant = ? AND name = ?";
    rule_delete, false,
        "DELETE FROM {ks}.rules WHERE tenant = ? AND name = ? IF EXISTS";
    rule_list_first, true,
        "SELECT spec FROM {ks}.rules WHERE tenant = ? LIMIT ?";
    rule_list_after, true,
        "SELECT spec FROM {ks}.rules WHERE tenant = ? AND name > ? LIMIT ?";

    webhook_insert, false,
        "INSERT INTO {ks}.webhooks (tenant, name, spec, revision) VALUES (?, ?, ?, ?) IF NOT EXISTS";
    webhook_update, false,
        "UPDATE {ks}.webhooks SET spec = ?, revision = ? WHERE tenant = ? AND name = ? IF revision = ?";
    webhook_get, true,
        "SELECT spec FROM {ks}.webhooks WHERE tenant = ? AND name = ?";
    webhook_delete, false,
        "DELETE FROM {ks}.webhooks WHERE tenant = ? AND name = ? IF EXISTS";
    webhook_list_first, true,
        "SELECT spec FROM {ks}.webhooks WHERE tenant = ? LIMIT ?";
    webhook_list_after, true,
        "SELECT spec FROM {ks}.webhooks WHERE tenant = ? AND name > ? LIMIT ?";

    silence_insert, false,
        "INSERT INTO {ks}.silences (tenant, name, spec, revision) VALUES (?, ?, ?, ?) IF NOT EXISTS";
    silence_update, false,
        "UPDATE {ks}.silences SET spec = ?, revision = ? WHERE tenant = ? AND name = ? IF revision = ?";
    silence_get, true,
        "SELECT spec FROM {ks}.silences WHERE tenant = ? AND name = ?";
    silence_delete, false,
        "DELETE FROM {ks}.silences WHERE tenant = ? AND name = ? IF EXISTS";
    silence_list_first, true,
        "SELECT spec FROM {ks}.silences WHERE tenant = ? LIMIT ?";
    silence_list_after, true,
        "SELECT spec FROM {ks}.silences WHERE tenant = ? AND name > ? LIMIT ?";
}

impl ScyllaRegistryStore {
    /// Connects to the cluster of `config`, migrates the schema, and opens
    /// the registry store.
    pub async fn connect(config: &ScyllaConfig) -> Result<Arc<Self>, ScyllaError> {
        let session = crate::connect(config).await?;
        crate::migrate(&session, config).await?;
        Box::pin(Self::new(session, config)).await
    }

    /// Opens the registry store on a session whose keyspace was migrated
    /// ([`crate::migrate`]); prepares every statement.
    pub async fn new(
        session: Arc<Session>,
        config: &ScyllaConfig,
    ) -> Result<Arc<Self>, ScyllaError> {
        config.validate()?;
        let cql = Cql::new(session, config);
        // Boxed: joining every preparation makes a large future.
        let s = Box::pin(Statements::prepare(&cql, &config.keyspace)).await?;
        Ok(Arc::new(Self {
            cql,
            s,
            keyspace: config.keyspace.clone(),
        }))
    }

    /// Runs a lightweight transaction and reads its outcome.
    async fn lwt(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Lwt, ScyllaError> {
        Lwt::from_result(self.cql.execute(statement, values).await?)
    }

    /// Reads at most one row.
    async fn one<R>(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Option<R>, ScyllaError>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
    {
        let rows = self
            .cql
            .execute(statement, values)
            .await?
            .into_rows_result()
            .map_err(ScyllaError::decode)?;
        rows.maybe_first_row::<R>().map_err(ScyllaError::decode)
    }

    /// The first column of every row, as text (the ids of an index page).
    async fn ids(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Vec<String>, ScyllaError> {
        let rows = self
            .cql
            .execute(statement, values)
            .await?
            .into_rows_result()
            .map_err(ScyllaError::decode)?;
        rows.rows::<(String,)>()
            .map_err(ScyllaError::decode)?
            .map(|r| r.map(|(id,)| id).map_err(ScyllaError::decode))
            .collect()
    }

    /// One page of an index, after `after`.
    async fn index_page(
        &self,
        index: Index<'_>,
        after: Option<&str>,
        limit: i32,
    ) -> Result<Vec<String>, ScyllaError> {
        let s = &self.s;
        match (index, after) {
            (Index::Tenants, None) => self.ids(&s.tenant_list_first, (TENANT_SHARD, limit)).await,
            (Index::Tenants, Some(a)) => {
                self.ids(&s.tenant_list_after, (TENANT_SHARD, a, limit))
                    .await
            }
            (Index::Devices(t), None) => self.ids(&s.device_list_first, (t, limit)).await,
            (Index::Devices(t), Some(a)) => self.ids(&s.device_list_after, (t, a, limit)).await,
            (Index::DevicesDesc(t), None) => self.ids(&s.device_list_last, (t, limit)).await,
            (Index::DevicesDesc(t), Some(b)) => {
                self.ids(&s.device_list_before, (t, b, limit)).await
            }
            (Index::Credentials(t), None) => self.ids(&s.credential_list_first, (t, limit)).await,
            (Index::Credentials(t), Some(a)) => {
                self.ids(&s.credential_list_after, (t, a, limit)).await
            }
            (Index::DeviceCredentials(t, d), None) => {
                self.ids(&s.device_credential_list_first, (t, d, limit))
                    .await
            }
            (Index::DeviceCredentials(t, d), Some(a)) => {
                self.ids(&s.device_credential_list_after, (t, d, a, limit))
                    .await
            }
        }
    }

    /// Up to `limit` records named by `index` after `after`, in index order:
    /// reads index pages, fetches their records (`fetch`), keeps those that
    /// exist and pass `keep`, until the page is full or the index ends.
    async fn listing<T, F, Fut>(
        &self,
        index: Index<'_>,
        after: Option<&str>,
        limit: usize,
        fetch: F,
        keep: impl Fn(&T) -> bool,
    ) -> Result<Vec<T>, ScyllaError>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<Option<T>, ScyllaError>>,
    {
        let mut out = Vec::new();
        let mut cursor = after.map(str::to_owned);
        while out.len() < limit {
            let want = (limit - out.len()).min(INDEX_PAGE);
            let page = self
                .index_page(
                    index,
                    cursor.as_deref(),
                    i32::try_from(want).unwrap_or(i32::MAX),
                )
                .await?;
            let ended = page.len() < want;
            cursor = page.last().cloned();
            let records: Vec<Option<T>> = stream::iter(page)
                .map(&fetch)
                .buffered(FETCH_FANOUT)
                .try_collect()
                .await?;
            out.extend(records.into_iter().flatten().filter(|r| keep(r)));
            if ended || cursor.is_none() {
                break;
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    async fn tenant(&self, name: &str) -> Result<Option<TenantRecord>, ScyllaError> {
        self.one::<TenantRow>(&self.s.tenant_get, (name,))
            .await?
            .map(TenantRow::into_record)
            .transpose()
    }

    async fn device(&self, tenant: &str, id: &str) -> Result<Option<DeviceRecord>, ScyllaError> {
        self.one::<DeviceRow>(&self.s.device_get, (tenant, id))
            .await?
            .map(DeviceRow::into_record)
            .transpose()
    }

    async fn credential(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<CredentialRecord>, ScyllaError> {
        self.one::<CredentialRow>(&self.s.credential_get, (tenant, id))
            .await?
            .map(CredentialRow::into_record)
            .transpose()
    }

    async fn presence(
        &self,
        tenant: &str,
        device: &str,
    ) -> Result<Option<PresenceRecord>, ScyllaError> {
        let row = self
            .one::<(Option<bool>, Option<i64>, Option<String>)>(
                &self.s.presence_get,
                (tenant, device),
            )
            .await?;
        Ok(row.map(|(online, last_seen_ns, frontend)| PresenceRecord {
            online: online.unwrap_or(false),
            last_seen_ns: last_seen_ns.unwrap_or(0),
            frontend: frontend.unwrap_or_default(),
        }))
    }

    /// A device's presence, keyed by the device, for `get_presences`.
    async fn presence_entry(
        &self,
        tenant: &str,
        device: &str,
    ) -> Result<Option<(String, PresenceRecord)>, ScyllaError> {
        Ok(self
            .presence(tenant, device)
            .await?
            .map(|p| (device.to_owned(), p)))
    }

    async fn put_tenant_inner(
        &self,
        t: &TenantRecord,
        expect: Expect,
    ) -> Result<(), RegistryError> {
        let revision = to_i64(t.revision, "tenant revision")?;
        let s = &self.s;
        let quotas = quotas_to_row(&t.settings.quotas);
        let retention = t.settings.retention.to_named();
        let insert = (
            t.name.as_str(),
            t.display_name.as_str(),
            t.created_at_ns,
            t.settings.auto_provision,
            t.settings.device_tag.as_str(),
            &quotas,
            &retention,
            &t.settings.lwm2m_metrics,
            revision,
        );
        let update = |expected: i64| {
            (
                t.display_name.as_str(),
                t.created_at_ns,
                t.settings.auto_provision,
                t.settings.device_tag.as_str(),
                &quotas,
                &retention,
                &t.settings.lwm2m_metrics,
                revision,
                t.name.as_str(),
                expected,
            )
        };
        let what = || format!("tenant {:?}", t.name);
        match expect {
            Expect::Absent => {
                self.cql
                    .execute(&s.tenant_index, (TENANT_SHARD, t.name.as_str()))
                    .await?;
                let out = self.lwt(&s.tenant_insert, insert).await?;
                out.expect_applied(&what(), expect)
            }
            Expect::Revision(want) => {
                let Ok(want) = i64::try_from(want) else {
                    return Err(conflict(&what(), expect, None));
                };
                let out = self.lwt(&s.tenant_update, update(want)).await?;
                out.expect_applied(&what(), expect)
            }
            Expect::Any => {
                self.cql
                    .execute(&s.tenant_index, (TENANT_SHARD, t.name.as_str()))
                    .await?;
                for _ in 0..ANY_ATTEMPTS {
                    let out = self.lwt(&s.tenant_insert, insert).await?;
                    if out.applied {
                        return Ok(());
                    }
                    let Some(found) = out.revision() else {
                        continue;
                    };
                    if self.lwt(&s.tenant_update, update(found)).await?.applied {
                        return Ok(());
                    }
                }
                Err(RegistryError::Conflict(format!(
                    "{}: still changing after {ANY_ATTEMPTS} attempts",
                    what()
                )))
            }
        }
    }

    async fn put_device_inner(
        &self,
        d: &DeviceRecord,
        expect: Expect,
    ) -> Result<(), RegistryError> {
        let revision = to_i64(d.revision, "device revision")?;
        let s = &self.s;
        let key = (d.tenant.as_str(), d.id.as_str());
        let insert = (
            key.0,
            key.1,
            &d.labels,
            &d.metadata,
            d.disabled,
            d.created_at_ns,
            d.updated_at_ns,
            revision,
        );
        let update = |expected: i64| {
            (
                &d.labels,
                &d.metadata,
                d.disabled,
                d.created_at_ns,
                d.updated_at_ns,
                revision,
                key.0,
                key.1,
                expected,
            )
        };
        let what = || format!("device {:?}/{:?}", d.tenant, d.id);
        match expect {
            Expect::Absent => {
                self.cql.execute(&s.device_index, key).await?;
                let out = self.lwt(&s.device_insert, insert).await?;
                out.expect_applied(&what(), expect)
            }
            Expect::Revision(want) => {
                let Ok(want) = i64::try_from(want) else {
                    return Err(conflict(&what(), expect, None));
                };
                let out = self.lwt(&s.device_update, update(want)).await?;
                out.expect_applied(&what(), expect)
            }
            Expect::Any => {
                self.cql.execute(&s.device_index, key).await?;
                for _ in 0..ANY_ATTEMPTS {
                    let out = self.lwt(&s.device_insert, insert).await?;
                    if out.applied {
                        return Ok(());
                    }
                    let Some(found) = out.revision() else {
                        continue;
                    };
                    if self.lwt(&s.device_update, update(found)).await?.applied {
                        return Ok(());
                    }
                }
                Err(RegistryError::Conflict(format!(
                    "{}: still changing after {ANY_ATTEMPTS} attempts",
                    what()
                )))
            }
        }
    }

    async fn delete_device_inner(&self, tenant: &str, id: &str) -> Result<bool, ScyllaError> {
        let s = &self.s;
        // Read before the delete: a re-creation after it writes the index
        // row again with a later timestamp, which this delete must not hide.
        let written = self
            .one::<(Option<i64>,)>(&s.device_index_written, (tenant, id))
            .await?
            .and_then(|(w,)| w);
        let existed = self.lwt(&s.device_delete, (tenant, id)).await?.applied;
        self.cql.execute(&s.presence_delete, (tenant, id)).await?;
        if existed && let Some(written) = written {
            self.cql
                .execute(&s.device_unindex, (written, tenant, id))
                .await?;
        }
        Ok(existed)
    }

    async fn put_credential_inner(&self, c: &CredentialRecord) -> Result<(), RegistryError> {
        if c.grants.is_some() {
            // The credentials table has no grants column yet: refuse rather
            // than store an application credential that would lose them.
            return Err(RegistryError::Internal(
                "application credentials (grants) are not supported on ScyllaDB yet".into(),
            ));
        }
        let s = &self.s;
        let (tenant, id) = (c.tenant.as_str(), c.id.as_str());
        let hash = c.token_hash.as_slice();
        if !self.lwt(&s.hash_claim, (hash, tenant, id)).await?.applied {
            return Err(RegistryError::Conflict("token hash is taken".into()));
        }
        // Index rows first, so that a listing never misses an acknowledged
        // credential. The device index row carries a timestamp of our own,
        // so that undoing it below cannot remove a later write of it.
        let indexed_at = now_us();
        self.cql.execute(&s.credential_index, (tenant, id)).await?;
        if let Some(device) = &c.device {
            self.cql
                .execute(
                    &s.device_credential_index,
                    (tenant, device.as_str(), id, indexed_at),
                )
                .await?;
        }
        let insert = (
            tenant,
            id,
            kind_name(c.kind),
            unset_if_none(c.device.as_deref()),
            c.name.as_str(),
            hash,
            c.created_at_ns,
            unset_if_none(c.expires_at_ns),
            unset_if_none(c.revoked_at_ns),
        );
        let out = self.lwt(&s.credential_insert, insert).await?;
        if out.applied {
            return Ok(());
        }
        // The id is taken: give the hash back, and drop the device index row
        // unless the existing credential belongs to the same device. Both are
        // best effort: listings skip index rows whose record disagrees, and
        // lookups by hash check the record's hash.
        if let Err(e) = self.lwt(&s.hash_release, (hash, tenant, id)).await {
            tracing::warn!(error = %e, tenant, id, "could not release the token hash of a refused credential");
        }
        if let Some(device) = &c.device
            && out.text("device") != Some(device.as_str())
        {
            let undo = (indexed_at, tenant, device.as_str(), id);
            if let Err(e) = self.cql.execute(&s.device_credential_unindex, undo).await {
                tracing::warn!(error = %e, tenant, id, "could not undo the device index row of a refused credential");
            }
        }
        Err(RegistryError::Conflict(format!(
            "credential id {:?} is taken",
            c.id
        )))
    }

    async fn credential_by_hash_inner(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<CredentialRecord>, ScyllaError> {
        let owner = self
            .one::<(String, String)>(&self.s.hash_get, (hash.as_slice(),))
            .await?;
        let Some((tenant, id)) = owner else {
            return Ok(None);
        };
        // A claim left by a refused or interrupted put may name a credential
        // with another hash; only the credential that has this hash counts.
        Ok(self
            .credential(&tenant, &id)
            .await?
            .filter(|c| c.token_hash == *hash))
    }

    async fn revoke_inner(
        &self,
        tenant: &str,
        id: &str,
        at_ns: i64,
    ) -> Result<Option<CredentialRecord>, ScyllaError> {
        let Some(mut record) = self.credential(tenant, id).await? else {
            return Ok(None);
        };
        if record.revoked_at_ns.is_some() {
            return Ok(Some(record));
        }
        let values = (at_ns, tenant, id, record.token_hash.as_slice());
        if self.lwt(&self.s.credential_revoke, values).await?.applied {
            record.revoked_at_ns = Some(at_ns);
            return Ok(Some(record));
        }
        // Revoked by someone else in between: theirs is the first time.
        self.credential(tenant, id).await
    }
}

/// Which index a listing reads.
#[derive(Debug, Clone, Copy)]
enum Index<'a> {
    Tenants,
    Devices(&'a str),
    /// A tenant's device ids from the greatest down.
    DevicesDesc(&'a str),
    Credentials(&'a str),
    DeviceCredentials(&'a str, &'a str),
}

#[async_trait]
impl TenantStore for ScyllaRegistryStore {
    async fn put_tenant(&self, tenant: &TenantRecord, expect: Expect) -> Result<(), RegistryError> {
        self.put_tenant_inner(tenant, expect).await
    }

    async fn get_tenant(&self, name: &str) -> Result<Option<TenantRecord>, RegistryError> {
        Ok(self.tenant(name).await?)
    }

    async fn list_tenants(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TenantRecord>, RegistryError> {
        let fetch = |name: String| async move { self.tenant(&name).await };
        Ok(self
            .listing(Index::Tenants, after, limit, fetch, |_| true)
            .await?)
    }
}

#[async_trait]
impl DeviceStore for ScyllaRegistryStore {
    async fn put_device(&self, device: &DeviceRecord, expect: Expect) -> Result<(), RegistryError> {
        self.put_device_inner(device, expect).await
    }

    async fn get_device(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<DeviceRecord>, RegistryError> {
        Ok(self.device(tenant, id).await?)
    }

    /// One read per device, 64 at a time.
    async fn devices_exist(&self, keys: &[(String, String)]) -> Result<Vec<bool>, RegistryError> {
        use futures::stream::{self, StreamExt, TryStreamExt};
        let reads: Vec<_> = keys
            .iter()
            .map(|(tenant, id)| self.device(tenant, id))
            .collect();
        let found: Vec<_> = stream::iter(reads).buffered(64).try_collect().await?;
        Ok(found.iter().map(Option::is_some).collect())
    }

    async fn delete_device(&self, tenant: &str, id: &str) -> Result<bool, RegistryError> {
        Ok(self.delete_device_inner(tenant, id).await?)
    }

    async fn list_devices(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeviceRecord>, RegistryError> {
        let fetch = |id: String| async move { self.device(tenant, &id).await };
        Ok(self
            .listing(Index::Devices(tenant), after, limit, fetch, |_| true)
            .await?)
    }

    async fn list_devices_desc(
        &self,
        tenant: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeviceRecord>, RegistryError> {
        let fetch = |id: String| async move { self.device(tenant, &id).await };
        Ok(self
            .listing(Index::DevicesDesc(tenant), before, limit, fetch, |_| true)
            .await?)
    }
}

#[async_trait]
impl CredentialStore for ScyllaRegistryStore {
    async fn put_credential(&self, credential: &CredentialRecord) -> Result<(), RegistryError> {
        self.put_credential_inner(credential).await
    }

    async fn get_credential(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<CredentialRecord>, RegistryError> {
        Ok(self.credential(tenant, id).await?)
    }

    async fn credential_by_hash(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<CredentialRecord>, RegistryError> {
        Ok(self.credential_by_hash_inner(hash).await?)
    }

    async fn list_credentials(
        &self,
        tenant: &str,
        device: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<CredentialRecord>, RegistryError> {
        let fetch = |id: String| async move { self.credential(tenant, &id).await };
        let listed = match device {
            None => {
                self.listing(Index::Credentials(tenant), after, limit, fetch, |_| true)
                    .await
            }
            Some(device) => {
                let index = Index::DeviceCredentials(tenant, device);
                let mine = |c: &CredentialRecord| c.device.as_deref() == Some(device);
                self.listing(index, after, limit, fetch, mine).await
            }
        };
        Ok(listed?)
    }

    async fn revoke_credential(
        &self,
        tenant: &str,
        id: &str,
        at_ns: i64,
    ) -> Result<Option<CredentialRecord>, RegistryError> {
        Ok(self.revoke_inner(tenant, id, at_ns).await?)
    }
}

#[async_trait]
impl PresenceStore for ScyllaRegistryStore {
    async fn set_presence(
        &self,
        tenant: &str,
        device: &str,
        presence: &PresenceRecord,
    ) -> Result<(), RegistryError> {
        let values = (
            tenant,
            device,
            presence.online,
            presence.last_seen_ns,
            presence.frontend.as_str(),
        );
        self.cql.execute(&self.s.presence_set, values).await?;
        Ok(())
    }

    /// One write per device, 64 at a time: rows of different partitions
    /// gain nothing from a CQL batch, and a logged batch costs more.
    async fn set_presences(
        &self,
        presences: &[(String, String, PresenceRecord)],
    ) -> Result<(), RegistryError> {
        use futures::stream::{self, StreamExt, TryStreamExt};
        // Made first (futures are lazy): a `map` adaptor over the borrowed
        // rows would not be `Send` for every lifetime async_trait needs.
        let writes: Vec<_> = presences
            .iter()
            .map(|(tenant, device, presence)| self.set_presence(tenant, device, presence))
            .collect();
        stream::iter(writes)
            .buffer_unordered(64)
            .try_collect::<()>()
            .await
    }

    async fn get_presence(
        &self,
        tenant: &str,
        device: &str,
    ) -> Result<Option<PresenceRecord>, RegistryError> {
        Ok(self.presence(tenant, device).await?)
    }

    /// One read per device, 64 at a time.
    async fn get_presences_of(
        &self,
        keys: &[(String, String)],
    ) -> Result<Vec<Option<PresenceRecord>>, RegistryError> {
        use futures::stream::{self, StreamExt, TryStreamExt};
        let reads: Vec<_> = keys
            .iter()
            .map(|(tenant, device)| self.presence(tenant, device))
            .collect();
        Ok(stream::iter(reads).buffered(64).try_collect().await?)
    }

    async fn get_presences(
        &self,
        tenant: &str,
        devices: &[String],
    ) -> Result<BTreeMap<String, PresenceRecord>, RegistryError> {
        // Collected first: a lazy `map` adaptor held across the awaits would
        // make the future's type too general for `async_trait`'s `Send` check.
        let lookups: Vec<_> = devices
            .iter()
            .map(|device| self.presence_entry(tenant, device))
            .collect();
        let found: Vec<Option<(String, PresenceRecord)>> = stream::iter(lookups)
            .buffer_unordered(FETCH_FANOUT)
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }
}

/// The outcome of a lightweight transaction: whether it applied, and the
/// columns the server returned with it (ScyllaDB returns the old row
/// whether or not the condition held; Cassandra only when it failed).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Lwt {
    pub(crate) applied: bool,
    pub(crate) columns: Vec<(String, Option<CqlValue>)>,
}

impl Lwt {
    pub(crate) fn from_result(result: QueryResult) -> Result<Self, ScyllaError> {
        let rows = result.into_rows_result().map_err(ScyllaError::decode)?;
        let names: Vec<String> = rows
            .column_specs()
            .iter()
            .map(|spec| spec.name().to_owned())
            .collect();
        let row: Option<Row> = rows.maybe_first_row().map_err(ScyllaError::decode)?;
        let row =
            row.ok_or_else(|| ScyllaError::Decode("a conditional write returned no row".into()))?;
        Self::from_columns(names.into_iter().zip(row.columns).collect())
    }

    pub(crate) fn from_columns(
        columns: Vec<(String, Option<CqlValue>)>,
    ) -> Result<Self, ScyllaError> {
        let applied = columns
            .iter()
            .find(|(name, _)| name == "[applied]")
            .and_then(|(_, v)| match v {
                Some(CqlValue::Boolean(b)) => Some(*b),
                _ => None,
            })
            .ok_or_else(|| {
                ScyllaError::Decode("a conditional write returned no [applied] column".into())
            })?;
        Ok(Self { applied, columns })
    }

    fn value(&self, name: &str) -> Option<&CqlValue> {
        self.columns
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_ref())
    }

    /// The stored `revision` the server returned, if any.
    pub(crate) fn revision(&self) -> Option<i64> {
        match self.value("revision") {
            Some(CqlValue::BigInt(r)) => Some(*r),
            _ => None,
        }
    }

    /// A text column the server returned, if any.
    pub(crate) fn text(&self, name: &str) -> Option<&str> {
        match self.value(name) {
            Some(CqlValue::Text(s) | CqlValue::Ascii(s)) => Some(s),
            _ => None,
        }
    }

    /// `Ok` if applied, else the [`RegistryError::Conflict`] of the write.
    fn expect_applied(&self, what: &str, expect: Expect) -> Result<(), RegistryError> {
        if self.applied {
            Ok(())
        } else {
            Err(conflict(what, expect, self.revision()))
        }
    }
}

fn conflict(what: &str, expect: Expect, found: Option<i64>) -> RegistryError {
    RegistryError::Conflict(format!(
        "{what}: expected {expect:?}, found revision {found:?}"
    ))
}

fn to_i64(v: u64, what: &str) -> Result<i64, RegistryError> {
    i64::try_from(v)
        .map_err(|_| RegistryError::Internal(format!("{what} {v} exceeds the bigint range")))
}

fn from_i64(v: Option<i64>, what: &str) -> Result<u64, ScyllaError> {
    v.and_then(|v| u64::try_from(v).ok())
        .ok_or_else(|| ScyllaError::Decode(format!("{what} is missing or negative: {v:?}")))
}

fn required<T>(v: Option<T>, what: &str) -> Result<T, ScyllaError> {
    v.ok_or_else(|| ScyllaError::Decode(format!("{what} is missing")))
}

/// An absent optional column is left unset rather than bound to null, which
/// would write a tombstone.
fn unset_if_none<T>(v: Option<T>) -> MaybeUnset<T> {
    v.map_or(MaybeUnset::Unset, MaybeUnset::Set)
}

/// Microseconds since the epoch: CQL write timestamps.
fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The `kind` column of a credential: the record's serde names.
pub(crate) fn kind_name(kind: CredentialKind) -> &'static str {
    match kind {
        CredentialKind::DeviceToken => "device_token",
        CredentialKind::TenantIngestToken => "tenant_ingest_token",
        CredentialKind::DeviceCertificate => "device_certificate",
        CredentialKind::DevicePsk => "device_psk",
        CredentialKind::Application => "application",
    }
}

pub(crate) fn kind_from_name(name: &str) -> Result<CredentialKind, ScyllaError> {
    match name {
        "device_token" => Ok(CredentialKind::DeviceToken),
        "tenant_ingest_token" => Ok(CredentialKind::TenantIngestToken),
        "device_certificate" => Ok(CredentialKind::DeviceCertificate),
        "device_psk" => Ok(CredentialKind::DevicePsk),
        "application" => Ok(CredentialKind::Application),
        other => Err(ScyllaError::Decode(format!(
            "unknown credential kind {other:?}"
        ))),
    }
}

#[derive(Debug, DeserializeRow)]
pub(crate) struct TenantRow {
    pub(crate) name: String,
    pub(crate) display_name: Option<String>,
    pub(crate) created_at_ns: Option<i64>,
    pub(crate) auto_provision: Option<bool>,
    pub(crate) device_tag: Option<String>,
    /// Absent in rows written before quotas existed, and when none is set.
    pub(crate) quotas: Option<BTreeMap<String, i64>>,
    /// Absent in rows written before retention tiers, and when none is set.
    pub(crate) retention: Option<BTreeMap<String, String>>,
    /// Absent in rows written before LwM2M, and when none is set.
    pub(crate) lwm2m_metrics: Option<BTreeMap<String, String>>,
    pub(crate) revision: Option<i64>,
}

/// The quotas set for a tenant, as their column holds them.
fn quotas_to_row(quotas: &Quotas) -> BTreeMap<String, i64> {
    quotas
        .overrides()
        // Quota values are at most 2^50: they fit.
        .map(|(q, v)| (q.name().to_owned(), i64::try_from(v).unwrap_or(i64::MAX)))
        .collect()
}

fn quotas_from_row(row: Option<BTreeMap<String, i64>>) -> Result<Quotas, ScyllaError> {
    let mut quotas = Quotas::default();
    for (name, value) in row.unwrap_or_default() {
        let quota: Quota = name
            .parse()
            .map_err(|e| ScyllaError::Decode(format!("tenant quotas: {e}")))?;
        let value = u64::try_from(value)
            .map_err(|_| ScyllaError::Decode(format!("tenant quota {name} is negative")))?;
        quotas
            .set(quota, value)
            .map_err(|e| ScyllaError::Decode(format!("tenant quotas: {e}")))?;
    }
    Ok(quotas)
}

impl TenantRow {
    pub(crate) fn into_record(self) -> Result<TenantRecord, ScyllaError> {
        Ok(TenantRecord {
            revision: from_i64(self.revision, "tenant revision")?,
            created_at_ns: required(self.created_at_ns, "tenant created_at_ns")?,
            settings: TenantSettings {
                auto_provision: required(self.auto_provision, "tenant auto_provision")?,
                device_tag: required(self.device_tag, "tenant device_tag")?,
                quotas: quotas_from_row(self.quotas)?,
                retention: self
                    .retention
                    .unwrap_or_default()
                    .try_into()
                    .map_err(|e| ScyllaError::Decode(format!("tenant retention: {e}")))?,
                lwm2m_metrics: self.lwm2m_metrics.unwrap_or_default(),
            },
            display_name: self.display_name.unwrap_or_default(),
            name: self.name,
        })
    }
}

#[derive(Debug, DeserializeRow)]
pub(crate) struct DeviceRow {
    pub(crate) tenant: String,
    pub(crate) id: String,
    /// An empty map is stored as null.
    #[scylla(default_when_null)]
    pub(crate) labels: BTreeMap<String, String>,
    #[scylla(default_when_null)]
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) disabled: Option<bool>,
    pub(crate) created_at_ns: Option<i64>,
    pub(crate) updated_at_ns: Option<i64>,
    pub(crate) revision: Option<i64>,
}

impl DeviceRow {
    pub(crate) fn into_record(self) -> Result<DeviceRecord, ScyllaError> {
        Ok(DeviceRecord {
            revision: from_i64(self.revision, "device revision")?,
            disabled: required(self.disabled, "device disabled")?,
            created_at_ns: required(self.created_at_ns, "device created_at_ns")?,
            updated_at_ns: required(self.updated_at_ns, "device updated_at_ns")?,
            tenant: self.tenant,
            id: self.id,
            labels: self.labels,
            metadata: self.metadata,
        })
    }
}

#[derive(Debug, DeserializeRow)]
pub(crate) struct CredentialRow {
    pub(crate) tenant: String,
    pub(crate) id: String,
    pub(crate) kind: Option<String>,
    pub(crate) device: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) token_hash: Option<Vec<u8>>,
    pub(crate) created_at_ns: Option<i64>,
    pub(crate) expires_at_ns: Option<i64>,
    pub(crate) revoked_at_ns: Option<i64>,
}

impl CredentialRow {
    pub(crate) fn into_record(self) -> Result<CredentialRecord, ScyllaError> {
        let hash = required(self.token_hash, "credential token_hash")?;
        let token_hash: TokenHash = hash.as_slice().try_into().map_err(|_| {
            ScyllaError::Decode(format!(
                "credential token_hash has {} bytes, not 32",
                hash.len()
            ))
        })?;
        Ok(CredentialRecord {
            kind: kind_from_name(&required(self.kind, "credential kind")?)?,
            token_hash,
            created_at_ns: required(self.created_at_ns, "credential created_at_ns")?,
            name: self.name.unwrap_or_default(),
            device: self.device,
            expires_at_ns: self.expires_at_ns,
            revoked_at_ns: self.revoked_at_ns,
            tenant: self.tenant,
            id: self.id,
            // Not stored here yet: `put_credential` refuses records with grants.
            grants: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lwt_outcomes_are_read_by_column_name() {
        let applied = Lwt::from_columns(vec![
            ("[applied]".into(), Some(CqlValue::Boolean(true))),
            ("revision".into(), None),
        ])
        .expect("has [applied]");
        assert!(applied.applied);
        assert_eq!(applied.revision(), None);

        // ScyllaDB returns the old row, in table order, after [applied].
        let refused = Lwt::from_columns(vec![
            ("[applied]".into(), Some(CqlValue::Boolean(false))),
            ("tenant".into(), Some(CqlValue::Text("t".into()))),
            ("device".into(), Some(CqlValue::Text("pump-1".into()))),
            ("revision".into(), Some(CqlValue::BigInt(7))),
        ])
        .expect("has [applied]");
        assert!(!refused.applied);
        assert_eq!(refused.revision(), Some(7));
        assert_eq!(refused.text("device"), Some("pump-1"));
        assert_eq!(refused.text("missing"), None);
        match refused.expect_applied("device \"t\"/\"d\"", Expect::Revision(6)) {
            Err(RegistryError::Conflict(msg)) => {
                assert!(
                    msg.contains("Revision(6)") && msg.contains("Some(7)"),
                    "{msg}"
                );
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert!(matches!(
            Lwt::from_columns(vec![("revision".into(), Some(CqlValue::BigInt(1)))]),
            Err(ScyllaError::Decode(_))
        ));
    }

    #[test]
    fn rows_become_the_records_that_were_written() {
        let tenant = TenantRow {
            name: "acme".into(),
            display_name: Some("Acme".into()),
            created_at_ns: Some(5),
            auto_provision: Some(true),
            device_tag: Some("host".into()),
            quotas: Some([("connections".to_owned(), 7)].into()),
            retention: None,
            lwm2m_metrics: None,
            revision: Some(3),
        }
        .into_record()
        .expect("complete row");
        assert_eq!(
            tenant,
            TenantRecord {
                name: "acme".into(),
                display_name: "Acme".into(),
                created_at_ns: 5,
                settings: TenantSettings {
                    auto_provision: true,
                    device_tag: "host".into(),
                    quotas: Quotas::from_named([("connections", 7)]).unwrap(),
                    retention: Default::default(),
                    lwm2m_metrics: Default::default(),
                },
                revision: 3,
            }
        );

        let device = DeviceRow {
            tenant: "acme".into(),
            id: "pump-1".into(),
            labels: BTreeMap::from([("fleet".into(), "west".into())]),
            metadata: BTreeMap::new(),
            disabled: Some(false),
            created_at_ns: Some(1),
            updated_at_ns: Some(2),
            revision: Some(1),
        }
        .into_record()
        .expect("complete row");
        assert_eq!(device.labels["fleet"], "west");
        assert!(device.metadata.is_empty());
        assert_eq!(
            (device.created_at_ns, device.updated_at_ns, device.revision),
            (1, 2, 1)
        );

        let credential = |hash: Vec<u8>, kind: &str| CredentialRow {
            tenant: "acme".into(),
            id: "c1".into(),
            kind: Some(kind.into()),
            device: Some("pump-1".into()),
            name: Some("token".into()),
            token_hash: Some(hash),
            created_at_ns: Some(9),
            expires_at_ns: None,
            revoked_at_ns: Some(10),
        };
        let c = credential(vec![7; 32], "device_token")
            .into_record()
            .expect("complete row");
        assert_eq!(c.kind, CredentialKind::DeviceToken);
        assert_eq!(c.token_hash, [7; 32]);
        assert_eq!(c.device.as_deref(), Some("pump-1"));
        assert_eq!((c.expires_at_ns, c.revoked_at_ns), (None, Some(10)));
        assert!(matches!(
            credential(vec![7; 31], "device_token").into_record(),
            Err(ScyllaError::Decode(_))
        ));
        assert!(matches!(
            credential(vec![7; 32], "admin_token").into_record(),
            Err(ScyllaError::Decode(_))
        ));
    }

    #[test]
    fn rows_missing_required_columns_are_corrupt() {
        let row = TenantRow {
            name: "acme".into(),
            display_name: Some("Acme".into()),
            created_at_ns: Some(5),
            auto_provision: Some(true),
            device_tag: Some("host".into()),
            quotas: None,
            retention: None,
            lwm2m_metrics: None,
            revision: Some(-1),
        };
        assert!(matches!(row.into_record(), Err(ScyllaError::Decode(_))));
        let row = DeviceRow {
            tenant: "acme".into(),
            id: "d".into(),
            labels: BTreeMap::new(),
            metadata: BTreeMap::new(),
            disabled: None,
            created_at_ns: Some(1),
            updated_at_ns: Some(2),
            revision: Some(1),
        };
        assert!(matches!(row.into_record(), Err(ScyllaError::Decode(_))));
    }

    #[test]
    fn credential_kinds_use_the_record_serde_names() {
        for kind in [
            CredentialKind::DeviceToken,
            CredentialKind::TenantIngestToken,
            CredentialKind::DeviceCertificate,
            CredentialKind::Application,
            CredentialKind::DevicePsk,
        ] {
            let json = serde_json::to_string(&kind).expect("serializes");
            assert_eq!(json, format!("\"{}\"", kind_name(kind)));
            assert_eq!(kind_from_name(kind_name(kind)).expect("known"), kind);
        }
    }

    #[test]
    fn record_writes_are_conditional_and_never_retried_while_index_writes_are() {
        for (name, idempotent, cql) in statement_texts("ks") {
            let conditional = cql.contains(" IF ");
            let record_table = [
                "ks.tenants ",
                "ks.devices ",
                "ks.credentials ",
                "ks.credential_hashes ",
            ]
            .iter()
            .any(|t| cql.contains(t));
            let writes =
                cql.starts_with("INSERT") || cql.starts_with("UPDATE") || cql.starts_with("DELETE");
            if writes && record_table {
                assert!(
                    conditional,
                    "{name}: record writes are lightweight transactions"
                );
            }
            assert_eq!(
                idempotent, !conditional,
                "{name}: only plain statements are retried"
            );
        }
    }
}
