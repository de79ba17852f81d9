//! Rollup tables of [`crate::ScyllaStore`]: one per tier, named by its
//! width (`rollups_1m`, `rollups_1h`, `rollups_1d`), created at start-up for
//! the configured tiers ([`crate::ScyllaStore::prepare_rollup_tiers`]).
//!
//! ```text
//! CREATE TABLE rollups_1m (
//!     tenant text, device text, metric text, period bigint, start bigint,
//!     r blob,
//!     PRIMARY KEY ((tenant, device, metric, period), start))
//!   WITH compaction = TimeWindowCompactionStrategy, one window per period
//! ```
//!
//! A partition holds [`BUCKETS_PER_PARTITION`] buckets of one series
//! (`period` = bucket start div (width × 1440)): a day of minutes, 60 days
//! of hours, about 4 years of days, a few hundred KiB at most. `r` is the
//! [`Rollup`] encoded (the store never aggregates server-side, so one blob
//! is all it needs). Writes are idempotent replacements.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, RwLock};

use scylla::response::PagingState;
use scylla::statement::prepared::PreparedStatement;
use tributary_core::SeriesKey;
use tributary_core::retention::RetentionPolicy;
use tributary_core::rollup::{Rollup, RollupKey, Tiers, width_name};
use tributary_store::StoreError;

use crate::ScyllaError;
use crate::session::Cql;

/// Buckets in one partition of a rollup table.
pub const BUCKETS_PER_PARTITION: i64 = 1440;
/// Rows per page of a rollup scan.
const PAGE: i32 = 1440;
/// Point reads of `get_rollups` in flight at once.
const FANOUT: usize = 32;

/// The table of the tier of `width_ns`.
pub fn table_name(width_ns: i64) -> String {
    format!("rollups_{}", width_name(width_ns))
}

/// The `CREATE TABLE` of a tier, for keyspace `ks`.
pub fn create_table_cql(ks: &str, width_ns: i64) -> String {
    let window_minutes = (width_ns / 60_000_000_000).max(1) * BUCKETS_PER_PARTITION;
    format!(
        "CREATE TABLE IF NOT EXISTS {ks}.{table} (\
         tenant text, device text, metric text, period bigint, start bigint, r blob, \
         PRIMARY KEY ((tenant, device, metric, period), start)) \
         WITH compaction = {{'class': 'TimeWindowCompactionStrategy', \
         'compaction_window_unit': 'MINUTES', 'compaction_window_size': {window_minutes}}}",
        table = table_name(width_ns),
    )
}

fn period(start_ns: i64, width_ns: i64) -> i64 {
    start_ns.div_euclid(width_ns.saturating_mul(BUCKETS_PER_PARTITION))
}

struct TierStatements {
    insert: PreparedStatement,
    get: PreparedStatement,
    scan: PreparedStatement,
}

/// The prepared statements of every tier table created so far, and of the
/// `rollup_tiers` table (from when each tier is complete).
pub(crate) struct RollupTables {
    tiers: RwLock<HashMap<i64, Arc<TierStatements>>>,
    since_get: PreparedStatement,
    since_mark: PreparedStatement,
    /// Any one series: none means nothing was ever written.
    any_series: PreparedStatement,
}

impl std::fmt::Debug for RollupTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RollupTables").finish_non_exhaustive()
    }
}

impl RollupTables {
    /// Prepares the statements of `rollup_tiers` (schema version 5).
    pub(crate) async fn new(cql: &Cql, ks: &str) -> Result<Self, ScyllaError> {
        let (since_get, since_mark, any_series) = futures::try_join!(
            cql.prepare(
                format!("SELECT since FROM {ks}.rollup_tiers WHERE width = ?"),
                true
            ),
            // A lightweight transaction: not idempotent.
            cql.prepare(
                format!("INSERT INTO {ks}.rollup_tiers (width, since) VALUES (?, ?) IF NOT EXISTS"),
                false
            ),
            cql.prepare(format!("SELECT tenant FROM {ks}.series LIMIT 1"), true),
        )?;
        Ok(Self {
            tiers: RwLock::default(),
            since_get,
            since_mark,
            any_series,
        })
    }

    pub(crate) async fn since(&self, cql: &Cql, width_ns: i64) -> Result<Option<i64>, StoreError> {
        let rows = cql
            .execute(&self.since_get, (width_ns,))
            .await?
            .into_rows_result()
            .map_err(ScyllaError::decode)?;
        let row: Option<(i64,)> = rows.maybe_first_row().map_err(ScyllaError::decode)?;
        Ok(row.map(|(since,)| since))
    }

    pub(crate) async fn mark_since(
        &self,
        cql: &Cql,
        width_ns: i64,
        since_ns: i64,
    ) -> Result<i64, StoreError> {
        // Nothing written yet: every bucket will hold all its points.
        let empty = cql
            .execute(&self.any_series, ())
            .await?
            .into_rows_result()
            .map_err(ScyllaError::decode)?
            .rows_num()
            == 0;
        let since_ns = if empty { i64::MIN } else { since_ns };
        cql.execute(&self.since_mark, (width_ns, since_ns)).await?;
        // Applied or not, the row holds the first time recorded.
        Ok(self.since(cql, width_ns).await?.unwrap_or(since_ns))
    }

    /// Creates the tables of `tiers` (if missing) and prepares their
    /// statements.
    pub(crate) async fn prepare(
        &self,
        cql: &Cql,
        ks: &str,
        tiers: &Tiers,
    ) -> Result<(), ScyllaError> {
        for &width in tiers.widths() {
            cql.ddl(create_table_cql(ks, width)).await?;
            let table = format!("{ks}.{}", table_name(width));
            let key = "tenant = ? AND device = ? AND metric = ? AND period = ?";
            let (insert, get, mut scan) = futures::try_join!(
                cql.prepare(
                    format!(
                        "INSERT INTO {table} (tenant, device, metric, period, start, r) \
                         VALUES (?, ?, ?, ?, ?, ?) USING TTL ?"
                    ),
                    true
                ),
                cql.prepare(
                    format!("SELECT r FROM {table} WHERE {key} AND start = ?"),
                    true
                ),
                cql.prepare(
                    format!(
                        "SELECT start, r FROM {table} WHERE {key} AND start >= ? AND start < ?"
                    ),
                    true
                ),
            )?;
            scan.set_page_size(PAGE);
            self.tiers
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(width, Arc::new(TierStatements { insert, get, scan }));
        }
        Ok(())
    }

    fn tier(&self, width_ns: i64) -> Result<Arc<TierStatements>, StoreError> {
        self.tiers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&width_ns)
            .cloned()
            .ok_or_else(|| {
                StoreError::Invalid(format!(
                    "no rollup table for the tier of {}: the store was not started with it",
                    width_name(width_ns)
                ))
            })
    }

    pub(crate) async fn get(
        &self,
        cql: &Cql,
        keys: &[RollupKey],
    ) -> Result<Vec<Option<Rollup>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(FANOUT) {
            let mut reads = Vec::with_capacity(chunk.len());
            for k in chunk {
                reads.push(self.get_one(cql, k));
            }
            out.extend(futures::future::try_join_all(reads).await?);
        }
        Ok(out)
    }

    async fn get_one(&self, cql: &Cql, k: &RollupKey) -> Result<Option<Rollup>, StoreError> {
        let tier = self.tier(k.width_ns)?;
        let s = &k.series;
        let rows = cql
            .execute(
                &tier.get,
                (
                    &s.tenant,
                    &s.device,
                    &s.metric,
                    period(k.start_ns, k.width_ns),
                    k.start_ns,
                ),
            )
            .await?
            .into_rows_result()
            .map_err(ScyllaError::decode)?;
        let row: Option<(Vec<u8>,)> = rows.maybe_first_row().map_err(ScyllaError::decode)?;
        row.map(|(r,)| decode(&r)).transpose()
    }

    /// Writes tier by tier, finest first: a coarser bucket is never stored
    /// before the finer ones it was computed from.
    /// Each row lives for what remains of its tenant's retention of the
    /// tier, counted from the bucket's end; a row already expired is not
    /// written.
    pub(crate) async fn write(
        &self,
        cql: &Cql,
        rows: &[(RollupKey, Rollup)],
        policy: &RetentionPolicy,
    ) -> Result<(), StoreError> {
        let now = tributary_core::time::now_ns();
        let mut widths: Vec<i64> = rows.iter().map(|(k, _)| k.width_ns).collect();
        widths.sort_unstable();
        widths.dedup();
        for width in widths {
            let tier = self.tier(width)?;
            let mut of_tier = Vec::new();
            for row in rows {
                if row.0.width_ns != width {
                    continue;
                }
                let keep = policy.of(&row.0.series.tenant).tier(width);
                let end = row.0.start_ns.saturating_add(width);
                if let Some(ttl) = crate::store::point_ttl(end.saturating_sub(1), now, keep.ns()) {
                    of_tier.push((row, ttl));
                }
            }
            for chunk in of_tier.chunks(FANOUT) {
                let mut writes = Vec::with_capacity(chunk.len());
                for (row, ttl) in chunk {
                    writes.push(Self::put(cql, &tier, row, *ttl));
                }
                futures::future::try_join_all(writes).await?;
            }
        }
        Ok(())
    }

    async fn put(
        cql: &Cql,
        tier: &TierStatements,
        (k, r): &(RollupKey, Rollup),
        ttl: i32,
    ) -> Result<(), StoreError> {
        let s = &k.series;
        cql.execute(
            &tier.insert,
            (
                &s.tenant,
                &s.device,
                &s.metric,
                period(k.start_ns, k.width_ns),
                k.start_ns,
                r.encode(),
                ttl,
            ),
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn scan(
        &self,
        cql: &Cql,
        series: &SeriesKey,
        width_ns: i64,
        from_ns: i64,
        to_ns: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Rollup)>, StoreError> {
        let tier = self.tier(width_ns)?;
        let mut out = Vec::new();
        if from_ns >= to_ns || limit == 0 {
            return Ok(out);
        }
        let (first, last) = (period(from_ns, width_ns), period(to_ns - 1, width_ns));
        for p in first..=last {
            let mut state = PagingState::start();
            loop {
                let (result, next) = cql
                    .page(
                        &tier.scan,
                        (
                            &series.tenant,
                            &series.device,
                            &series.metric,
                            p,
                            from_ns,
                            to_ns,
                        ),
                        state,
                    )
                    .await?;
                let rows = result.into_rows_result().map_err(ScyllaError::decode)?;
                for row in rows.rows::<(i64, Vec<u8>)>().map_err(ScyllaError::decode)? {
                    let (start, r) = row.map_err(ScyllaError::decode)?;
                    out.push((start, decode(&r)?));
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
                match next.into_paging_control_flow() {
                    ControlFlow::Break(()) => break,
                    ControlFlow::Continue(s) => state = s,
                }
            }
        }
        Ok(out)
    }
}

fn decode(bytes: &[u8]) -> Result<Rollup, StoreError> {
    Rollup::decode(bytes).ok_or_else(|| StoreError::Backend("corrupt rollup row".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_tables_are_named_by_width_and_partitioned_by_1440_buckets() {
        let minute = 60_000_000_000;
        assert_eq!(table_name(minute), "rollups_1m");
        let cql = create_table_cql("iot", minute);
        assert!(cql.contains("iot.rollups_1m"), "{cql}");
        assert!(cql.contains("PRIMARY KEY ((tenant, device, metric, period), start)"));
        assert!(cql.contains("'compaction_window_size': 1440"), "{cql}");
        assert_eq!(period(0, minute), 0);
        assert_eq!(period(1439 * minute, minute), 0);
        assert_eq!(period(1440 * minute, minute), 1);
        assert_eq!(period(-minute, minute), -1);
    }
}
