//! Alert history in the embedded store: table `alerts`, keyed (tenant,
//! started, id) with the last change time before the value, and
//! `alert_ids`, keyed (tenant, id) → started. A write is one durable redb
//! transaction over both.

use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Inner, backend};
use crate::StoreError;
use crate::alerts::{StoredAlert, check_alerts};

pub(super) const ALERTS: TableDefinition<'_, (&str, i64, &str), &[u8]> =
    TableDefinition::new("alerts");
pub(super) const ALERT_IDS: TableDefinition<'_, (&str, &str), i64> =
    TableDefinition::new("alert_ids");

fn decode(tenant: &str, started: i64, id: &str, v: &[u8]) -> Result<StoredAlert, StoreError> {
    let (updated, value) = v
        .split_first_chunk::<8>()
        .ok_or_else(|| StoreError::Backend(format!("alert {tenant}/{id}: a corrupt row")))?;
    Ok(StoredAlert {
        tenant: tenant.to_owned(),
        alert_id: id.to_owned(),
        started_at_ns: started,
        updated_at_ns: i64::from_le_bytes(*updated),
        value: value.to_vec(),
    })
}

impl Inner {
    pub(super) fn put_alerts(&self, alerts: &[StoredAlert]) -> Result<(), StoreError> {
        check_alerts(alerts)?;
        let mut txn = self.db.begin_write().map_err(backend)?;
        txn.set_durability(Durability::Immediate).map_err(backend)?;
        {
            let mut rows = txn.open_table(ALERTS).map_err(backend)?;
            let mut ids = txn.open_table(ALERT_IDS).map_err(backend)?;
            for a in alerts {
                let mut v = Vec::with_capacity(8 + a.value.len());
                v.extend_from_slice(&a.updated_at_ns.to_le_bytes());
                v.extend_from_slice(&a.value);
                rows.insert(
                    (a.tenant.as_str(), a.started_at_ns, a.alert_id.as_str()),
                    v.as_slice(),
                )
                .map_err(backend)?;
                ids.insert((a.tenant.as_str(), a.alert_id.as_str()), a.started_at_ns)
                    .map_err(backend)?;
            }
        }
        txn.commit().map_err(backend)
    }

    pub(super) fn get_alert(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<StoredAlert>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let ids = match txn.open_table(ALERT_IDS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(backend(e)),
        };
        let Some(started) = ids.get((tenant, id)).map_err(backend)? else {
            return Ok(None);
        };
        let started = started.value();
        let rows = txn.open_table(ALERTS).map_err(backend)?;
        let Some(v) = rows.get((tenant, started, id)).map_err(backend)? else {
            return Ok(None);
        };
        decode(tenant, started, id, v.value()).map(Some)
    }

    pub(super) fn list_alerts(
        &self,
        tenant: &str,
        (from_ns, to_ns): (i64, i64),
        before: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<StoredAlert>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let rows = match txn.open_table(ALERTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(backend(e)),
        };
        let mut out = Vec::new();
        if from_ns >= to_ns || limit == 0 {
            return Ok(out);
        }
        let low: (&str, i64, &str) = (tenant, from_ns, "");
        // Ids are never empty: (tenant, to, "") is below every id at `to`.
        let high: (&str, i64, &str) = match &before {
            Some((started, id)) if *started < to_ns => (tenant, *started, id.as_str()),
            Some(_) | None => (tenant, to_ns, ""),
        };
        for row in rows.range(low..high).map_err(backend)?.rev() {
            let (k, v) = row.map_err(backend)?;
            let (t, started, id) = k.value();
            out.push(decode(t, started, id, v.value())?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    pub(super) fn expire_alerts(&self, before_ns: i64) -> Result<u64, StoreError> {
        let mut expired: Vec<(String, i64, String)> = Vec::new();
        {
            let txn = self.db.begin_read().map_err(backend)?;
            let rows = match txn.open_table(ALERTS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
                Err(e) => return Err(backend(e)),
            };
            for row in rows.iter().map_err(backend)? {
                let (k, v) = row.map_err(backend)?;
                let (tenant, started, id) = k.value();
                let a = decode(tenant, started, id, v.value())?;
                if a.updated_at_ns < before_ns {
                    expired.push((a.tenant, started, a.alert_id));
                }
            }
        }
        if expired.is_empty() {
            return Ok(0);
        }
        let txn = self.db.begin_write().map_err(backend)?;
        {
            let mut rows = txn.open_table(ALERTS).map_err(backend)?;
            let mut ids = txn.open_table(ALERT_IDS).map_err(backend)?;
            for (tenant, started, id) in &expired {
                rows.remove((tenant.as_str(), *started, id.as_str()))
                    .map_err(backend)?;
                ids.remove((tenant.as_str(), id.as_str()))
                    .map_err(backend)?;
            }
        }
        txn.commit().map_err(backend)?;
        Ok(expired.len() as u64)
    }
}

#[async_trait::async_trait]
impl crate::alerts::AlertStore for super::EmbeddedStore {
    async fn put_alerts(&self, alerts: Vec<StoredAlert>) -> Result<(), StoreError> {
        self.blocking(move |inner| inner.put_alerts(&alerts)).await
    }

    async fn get_alert(
        &self,
        tenant: &str,
        alert_id: &str,
    ) -> Result<Option<StoredAlert>, StoreError> {
        let (tenant, id) = (tenant.to_owned(), alert_id.to_owned());
        self.blocking(move |inner| inner.get_alert(&tenant, &id))
            .await
    }

    async fn list_alerts(
        &self,
        tenant: &str,
        range: (i64, i64),
        before: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<StoredAlert>, StoreError> {
        let tenant = tenant.to_owned();
        self.blocking(move |inner| inner.list_alerts(&tenant, range, before, limit))
            .await
    }

    async fn expire_alerts(&self, before_ns: i64) -> Result<u64, StoreError> {
        self.blocking(move |inner| inner.expire_alerts(before_ns))
            .await
    }
}
