//! Rollups in the embedded store: table `rollups`, keyed `(series id, tier
//! width, bucket start)`, so that the buckets of one series in one tier are
//! one key range. Values are [`Rollup::encode`]d. Writes are small (the
//! processor writes the buckets its last batches touched) and committed
//! durably, in a transaction of their own.

use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tributary_core::SeriesKey;
use tributary_core::rollup::{Rollup, RollupKey};

use super::{Inner, META, backend, lock};
use crate::StoreError;

pub(super) const ROLLUPS: TableDefinition<'static, (u64, i64, i64), &[u8]> =
    TableDefinition::new("rollups");

fn corrupt() -> StoreError {
    StoreError::Backend("corrupt rollup row".into())
}

impl Inner {
    /// The id of a series, if the store has it.
    pub(super) fn series_id(&self, key: &SeriesKey) -> Option<u64> {
        let mut shard = lock(self.shard(&key.tenant, &key.device));
        shard
            .slot_mut(&key.tenant, &key.device, &key.metric)
            .map(|slot| slot.id)
    }

    pub(super) fn get_rollups(
        &self,
        keys: &[RollupKey],
    ) -> Result<Vec<Option<Rollup>>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(ROLLUPS).map_err(backend)?;
        keys.iter()
            .map(|k| {
                let Some(id) = self.series_id(&k.series) else {
                    return Ok(None);
                };
                match table.get((id, k.width_ns, k.start_ns)).map_err(backend)? {
                    Some(v) => Rollup::decode(v.value()).map(Some).ok_or_else(corrupt),
                    None => Ok(None),
                }
            })
            .collect()
    }

    pub(super) fn write_rollups(&self, rows: &[(RollupKey, Rollup)]) -> Result<(), StoreError> {
        // Rows already expired in their tenant's tier are not written.
        let rows: Vec<&(RollupKey, Rollup)> = rows
            .iter()
            .filter(|(k, _)| k.start_ns >= self.rollup_floor(&k.series.tenant, k.width_ns))
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        let ids = rows
            .iter()
            .map(|(k, _)| {
                self.series_id(&k.series).ok_or_else(|| {
                    StoreError::Invalid(format!(
                        "rollup of a series without points: {}/{}/{}",
                        k.series.tenant, k.series.device, k.series.metric
                    ))
                })
            })
            .collect::<Result<Vec<u64>, _>>()?;
        let mut txn = self.db.begin_write().map_err(backend)?;
        txn.set_durability(Durability::Immediate).map_err(backend)?;
        {
            let mut table = txn.open_table(ROLLUPS).map_err(backend)?;
            for ((k, rollup), id) in rows.into_iter().zip(ids) {
                table
                    .insert((id, k.width_ns, k.start_ns), rollup.encode().as_slice())
                    .map_err(backend)?;
            }
        }
        txn.commit().map_err(backend)
    }

    pub(super) fn scan_rollups(
        &self,
        series: &SeriesKey,
        width_ns: i64,
        from_ns: i64,
        to_ns: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Rollup)>, StoreError> {
        let mut all = self.scan_rollups_many(
            std::slice::from_ref(series),
            width_ns,
            from_ns,
            to_ns,
            limit,
        )?;
        Ok(all.pop().unwrap_or_default())
    }

    /// Many series' buckets in one read transaction.
    pub(super) fn scan_rollups_many(
        &self,
        series: &[SeriesKey],
        width_ns: i64,
        from_ns: i64,
        to_ns: i64,
        limit: usize,
    ) -> Result<Vec<Vec<(i64, Rollup)>>, StoreError> {
        if from_ns >= to_ns || limit == 0 {
            return Ok(vec![Vec::new(); series.len()]);
        }
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(ROLLUPS).map_err(backend)?;
        series
            .iter()
            .map(|s| match self.series_id(s) {
                Some(id) => {
                    let from_ns = from_ns.max(self.rollup_floor(&s.tenant, width_ns));
                    scan_one(&table, id, width_ns, from_ns, to_ns, limit)
                }
                None => Ok(Vec::new()),
            })
            .collect()
    }

    pub(super) fn rollups_since(&self, width_ns: i64) -> Result<Option<i64>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let meta = txn.open_table(META).map_err(backend)?;
        let key = since_key(width_ns);
        Ok(meta.get(key.as_str()).map_err(backend)?.map(|v| v.value()))
    }

    pub(super) fn mark_rollups_since(
        &self,
        width_ns: i64,
        since_ns: i64,
    ) -> Result<i64, StoreError> {
        // Nothing written yet: every bucket will hold all its points.
        let since_ns = if self.series.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            i64::MIN
        } else {
            since_ns
        };
        let mut txn = self.db.begin_write().map_err(backend)?;
        txn.set_durability(Durability::Immediate).map_err(backend)?;
        let key = since_key(width_ns);
        let recorded = {
            let mut meta = txn.open_table(META).map_err(backend)?;
            let existing = meta.get(key.as_str()).map_err(backend)?.map(|v| v.value());
            match existing {
                Some(at) => at,
                None => {
                    meta.insert(key.as_str(), since_ns).map_err(backend)?;
                    since_ns
                }
            }
        };
        txn.commit().map_err(backend)?;
        Ok(recorded)
    }
}

/// The `meta` key of a tier's start.
fn since_key(width_ns: i64) -> String {
    format!("rollups_since/{width_ns}")
}

/// One series' buckets of one tier, from an open table.
fn scan_one(
    table: &redb::ReadOnlyTable<(u64, i64, i64), &[u8]>,
    id: u64,
    width_ns: i64,
    from_ns: i64,
    to_ns: i64,
    limit: usize,
) -> Result<Vec<(i64, Rollup)>, StoreError> {
    let mut out = Vec::new();
    if from_ns >= to_ns {
        return Ok(out);
    }
    for row in table
        .range((id, width_ns, from_ns)..(id, width_ns, to_ns))
        .map_err(backend)?
        .take(limit)
    {
        let (k, v) = row.map_err(backend)?;
        let rollup = Rollup::decode(v.value()).ok_or_else(corrupt)?;
        out.push((k.value().2, rollup));
    }
    Ok(out)
}
