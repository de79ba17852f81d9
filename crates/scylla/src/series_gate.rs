//! [`ScyllaSeriesGate`]: the tenants' `series` quota on ScyllaDB, checked by
//! the ingest frontends before they acknowledge.
//!
//! | table | key | holds |
//! |---|---|---|
//! | `series` | `((tenant, device), metric)` | the series that exist (shared with [`crate::ScyllaStore`]) |
//! | `tenant_series` | `tenant` | a counter of the series admitted through the gate |
//!
//! A series the gate has seen is remembered in memory (bounded, cleared when
//! full), so the common case, points of known series, costs nothing. For a
//! batch with unknown metrics the gate reads the device's row of `series`;
//! the metrics still missing are new. It reads the tenant's counter, refuses
//! the batch if the new series would take the tenant past its quota, and
//! otherwise creates each with a lightweight transaction (`IF NOT EXISTS`)
//! and counts the ones it created. Two frontends admitting the same series
//! at once count it once. Two admitting *different* new series at once can
//! each see room for theirs: the quota can be passed by the series admitted
//! concurrently, never more. Series created before this table existed
//! (schema version 4) are not counted.

use std::collections::HashSet;
use std::fmt;
use std::ops::ControlFlow;
use std::sync::Arc;

use async_trait::async_trait;
use scylla::response::PagingState;
use scylla::statement::prepared::PreparedStatement;
use tributary_core::series::{SeriesGate, SeriesRefused};

use crate::config::ScyllaConfig;
use crate::error::ScyllaError;
use crate::registry::Lwt;
use crate::session::Cql;
use crate::store::IndexCache;

/// Rows of a device's `series` partition fetched per page.
const METRICS_PAGE: i32 = 1000;

/// See the [module docs](self).
pub struct ScyllaSeriesGate {
    cql: Cql,
    device_metrics: PreparedStatement,
    create: PreparedStatement,
    count: PreparedStatement,
    add: PreparedStatement,
    known: IndexCache,
}

impl fmt::Debug for ScyllaSeriesGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScyllaSeriesGate").finish_non_exhaustive()
    }
}

/// The CQL of the gate's statements, for keyspace `ks`.
pub(crate) fn statement_texts(ks: &str) -> [String; 4] {
    [
        format!("SELECT metric FROM {ks}.series WHERE tenant = ? AND device = ?"),
        format!("INSERT INTO {ks}.series (tenant, device, metric) VALUES (?, ?, ?) IF NOT EXISTS"),
        format!("SELECT series FROM {ks}.tenant_series WHERE tenant = ?"),
        format!("UPDATE {ks}.tenant_series SET series = series + ? WHERE tenant = ?"),
    ]
}

impl ScyllaSeriesGate {
    /// Connects, migrates the keyspace and prepares the gate.
    pub async fn connect(config: &ScyllaConfig) -> Result<Arc<Self>, ScyllaError> {
        let session = crate::connect(config).await?;
        crate::migrate(&session, config).await?;
        Self::new(session, config).await
    }

    /// The gate on a session whose keyspace was migrated.
    pub async fn new(
        session: Arc<crate::Session>,
        config: &ScyllaConfig,
    ) -> Result<Arc<Self>, ScyllaError> {
        config.validate()?;
        let cql = Cql::new(session, config);
        let [device_metrics, create, count, add] = statement_texts(&config.keyspace);
        // A lightweight transaction or a counter update is not idempotent:
        // a retry of one that applied would count twice.
        let (mut device_metrics, create, count, add) = futures::try_join!(
            cql.prepare(device_metrics, true),
            cql.prepare(create, false),
            cql.prepare(count, true),
            cql.prepare(add, false),
        )?;
        device_metrics.set_page_size(METRICS_PAGE);
        Ok(Arc::new(Self {
            cql,
            device_metrics,
            create,
            count,
            add,
            known: IndexCache::new(config.index_cache_entries),
        }))
    }

    /// The metric names of a device's series, a page at a time.
    async fn existing(&self, tenant: &str, device: &str) -> Result<HashSet<String>, ScyllaError> {
        let mut metrics = HashSet::new();
        let mut state = PagingState::start();
        loop {
            let (result, next) = self
                .cql
                .page(&self.device_metrics, (tenant, device), state)
                .await?;
            let rows = result.into_rows_result().map_err(ScyllaError::decode)?;
            for row in rows.rows::<(String,)>().map_err(ScyllaError::decode)? {
                metrics.insert(row.map_err(ScyllaError::decode)?.0);
            }
            match next.into_paging_control_flow() {
                ControlFlow::Break(()) => return Ok(metrics),
                ControlFlow::Continue(s) => state = s,
            }
        }
    }

    /// The series counted for `tenant`.
    async fn counted(&self, tenant: &str) -> Result<u64, ScyllaError> {
        let rows = self
            .cql
            .execute(&self.count, (tenant,))
            .await?
            .into_rows_result()
            .map_err(ScyllaError::decode)?;
        let row: Option<(scylla::value::Counter,)> =
            rows.maybe_first_row().map_err(ScyllaError::decode)?;
        Ok(row.map_or(0, |(c,)| u64::try_from(c.0).unwrap_or(0)))
    }

    async fn admit_new(
        &self,
        tenant: &str,
        device: &str,
        metrics: &[&str],
        tenant_quota: u64,
    ) -> Result<(), GateError> {
        let key = |metric: &str| self.known.key(&(tenant, device, metric));
        let unknown: Vec<&str> = metrics
            .iter()
            .copied()
            .filter(|m| !self.known.contains(key(m)))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let existing = self.existing(tenant, device).await?;
        let mut new = Vec::new();
        for metric in unknown {
            if existing.contains(metric) {
                self.known.insert(key(metric));
            } else {
                new.push(metric);
            }
        }
        if new.is_empty() {
            return Ok(());
        }
        let held = self.counted(tenant).await?;
        if held.saturating_add(new.len() as u64) > tenant_quota {
            return Err(GateError::Refused(SeriesRefused::TenantQuota {
                limit: tenant_quota,
            }));
        }
        for metric in new {
            let created = Lwt::from_result(
                self.cql
                    .execute(&self.create, (tenant, device, metric))
                    .await?,
            )?;
            if created.applied {
                self.cql
                    .execute(&self.add, (scylla::value::Counter(1), tenant))
                    .await?;
            }
            self.known.insert(key(metric));
        }
        Ok(())
    }
}

enum GateError {
    Refused(SeriesRefused),
    Backend(ScyllaError),
}

impl From<ScyllaError> for GateError {
    fn from(e: ScyllaError) -> Self {
        Self::Backend(e)
    }
}

#[async_trait]
impl SeriesGate for ScyllaSeriesGate {
    async fn admit(
        &self,
        tenant: &str,
        device: &str,
        metrics: &[&str],
        tenant_quota: u64,
    ) -> Result<(), SeriesRefused> {
        match self.admit_new(tenant, device, metrics, tenant_quota).await {
            Ok(()) => Ok(()),
            Err(GateError::Refused(refused)) => Err(refused),
            Err(GateError::Backend(e)) => {
                tracing::warn!(tenant, device, error = %e, "series gate: ScyllaDB unavailable");
                Err(SeriesRefused::Unavailable(e.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_series_are_created_once_and_counted_per_tenant() {
        let [metrics, create, count, add] = statement_texts("iot");
        assert!(metrics.contains("FROM iot.series WHERE tenant = ? AND device = ?"));
        assert!(create.ends_with("IF NOT EXISTS"), "{create}");
        assert!(count.contains("FROM iot.tenant_series WHERE tenant = ?"));
        assert!(add.contains("SET series = series + ?"), "{add}");
    }
}
