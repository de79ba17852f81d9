//! [`ScyllaAlerts`]: the alert history ([`AlertStore`]) on ScyllaDB.
//!
//! - `alerts ((tenant), started, id)`, clustered newest first: a tenant's
//!   listing is one slice of its partition; `updated` and `value` beside.
//! - `alert_ids ((tenant, id))` → `started`, to find one alert by id.
//!
//! Every write carries `USING TTL` = the history's retention, so an alert
//! expires that long after its last change without a sweep
//! ([`AlertStore::expire_alerts`] returns 0).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use scylla::client::session::Session;
use scylla::statement::batch::{Batch, BatchStatement, BatchType};
use scylla::statement::prepared::PreparedStatement;
use tributary_store::alerts::check_alerts;
use tributary_store::{AlertStore, StoreError, StoredAlert};

use crate::session::Cql;
use crate::{ScyllaConfig, ScyllaError};

/// The alert history on ScyllaDB. See the [module docs](self).
pub struct ScyllaAlerts {
    cql: Cql,
    insert: PreparedStatement,
    insert_id: PreparedStatement,
    get_id: PreparedStatement,
    get: PreparedStatement,
    list: PreparedStatement,
    ttl_secs: i32,
}

impl std::fmt::Debug for ScyllaAlerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaAlerts")
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

impl ScyllaAlerts {
    /// Connects, migrates the keyspace and prepares the statements; alerts
    /// are kept `keep` after their last change (at most 20 years).
    pub async fn connect(config: &ScyllaConfig, keep: Duration) -> Result<Arc<Self>, ScyllaError> {
        let session = crate::connect(config).await?;
        crate::migrate(&session, config).await?;
        Self::new(session, config, keep).await
    }

    /// The history on a session whose keyspace was migrated.
    pub async fn new(
        session: Arc<Session>,
        config: &ScyllaConfig,
        keep: Duration,
    ) -> Result<Arc<Self>, ScyllaError> {
        config.validate()?;
        let ttl_secs =
            i32::try_from(keep.as_secs().clamp(1, 20 * 365 * 86_400)).unwrap_or(i32::MAX);
        let cql = Cql::new(session, config);
        let ks = &config.keyspace;
        let prepare = |text: String| cql.prepare(text, true);
        Ok(Arc::new(Self {
            insert: prepare(format!(
                "INSERT INTO {ks}.alerts (tenant, started, id, updated, value) \
                 VALUES (?, ?, ?, ?, ?) USING TTL ?"
            ))
            .await?,
            insert_id: prepare(format!(
                "INSERT INTO {ks}.alert_ids (tenant, id, started) VALUES (?, ?, ?) USING TTL ?"
            ))
            .await?,
            get_id: prepare(format!(
                "SELECT started FROM {ks}.alert_ids WHERE tenant = ? AND id = ?"
            ))
            .await?,
            get: prepare(format!(
                "SELECT updated, value FROM {ks}.alerts WHERE tenant = ? AND started = ? AND id = ?"
            ))
            .await?,
            // `(started, id) < (to, '')` is `started < to`: ids are never
            // empty.
            list: prepare(format!(
                "SELECT started, id, updated, value FROM {ks}.alerts \
                 WHERE tenant = ? AND (started, id) < (?, ?) AND (started) >= (?) LIMIT ?"
            ))
            .await?,
            ttl_secs,
            cql,
        }))
    }
}

/// The values of one batch statement.
enum Values {
    Row(String, i64, String, i64, Vec<u8>, i32),
    Id(String, String, i64, i32),
}

impl scylla::serialize::row::SerializeRow for Values {
    fn serialize(
        &self,
        ctx: &scylla::serialize::row::RowSerializationContext<'_>,
        writer: &mut scylla::serialize::writers::RowWriter<'_>,
    ) -> Result<(), scylla::serialize::SerializationError> {
        match self {
            Self::Row(t, s, i, u, v, ttl) => (t, s, i, u, v, ttl).serialize(ctx, writer),
            Self::Id(t, i, s, ttl) => (t, i, s, ttl).serialize(ctx, writer),
        }
    }

    fn is_empty(&self) -> bool {
        false
    }
}

#[async_trait]
impl AlertStore for ScyllaAlerts {
    async fn put_alerts(&self, alerts: Vec<StoredAlert>) -> Result<(), StoreError> {
        check_alerts(&alerts)?;
        // Each alert's two rows are in two partitions: one small batch per
        // alert, idempotent (a retry writes the same).
        for a in alerts {
            let batch = Batch::new_with_statements(
                BatchType::Unlogged,
                vec![
                    BatchStatement::PreparedStatement(self.insert.clone()),
                    BatchStatement::PreparedStatement(self.insert_id.clone()),
                ],
            );
            let mut batch = batch;
            batch.set_is_idempotent(true);
            let values = vec![
                Values::Row(
                    a.tenant.clone(),
                    a.started_at_ns,
                    a.alert_id.clone(),
                    a.updated_at_ns,
                    a.value,
                    self.ttl_secs,
                ),
                Values::Id(a.tenant, a.alert_id, a.started_at_ns, self.ttl_secs),
            ];
            self.cql.batch(&batch, values).await?;
        }
        Ok(())
    }

    async fn get_alert(
        &self,
        tenant: &str,
        alert_id: &str,
    ) -> Result<Option<StoredAlert>, StoreError> {
        let started = self
            .cql
            .execute(&self.get_id, (tenant, alert_id))
            .await?
            .into_rows_result()
            .map_err(ScyllaError::decode)?
            .maybe_first_row::<(i64,)>()
            .map_err(ScyllaError::decode)?;
        let Some((started,)) = started else {
            return Ok(None);
        };
        let row = self
            .cql
            .execute(&self.get, (tenant, started, alert_id))
            .await?
            .into_rows_result()
            .map_err(ScyllaError::decode)?
            .maybe_first_row::<(i64, Vec<u8>)>()
            .map_err(ScyllaError::decode)?;
        Ok(row.map(|(updated, value)| StoredAlert {
            tenant: tenant.to_owned(),
            alert_id: alert_id.to_owned(),
            started_at_ns: started,
            updated_at_ns: updated,
            value,
        }))
    }

    async fn list_alerts(
        &self,
        tenant: &str,
        (from_ns, to_ns): (i64, i64),
        before: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<StoredAlert>, StoreError> {
        if from_ns >= to_ns || limit == 0 {
            return Ok(Vec::new());
        }
        let (upper_started, upper_id) = match before {
            Some((started, id)) if started < to_ns => (started, id),
            Some(_) | None => (to_ns, String::new()),
        };
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let rows = self
            .cql
            .execute(
                &self.list,
                (tenant, upper_started, upper_id.as_str(), from_ns, limit),
            )
            .await?
            .into_rows_result()
            .map_err(ScyllaError::decode)?;
        let mut out = Vec::new();
        for row in rows
            .rows::<(i64, String, i64, Vec<u8>)>()
            .map_err(ScyllaError::decode)?
        {
            let (started, id, updated, value) = row.map_err(ScyllaError::decode)?;
            out.push(StoredAlert {
                tenant: tenant.to_owned(),
                alert_id: id,
                started_at_ns: started,
                updated_at_ns: updated,
                value,
            });
        }
        Ok(out)
    }

    async fn expire_alerts(&self, _before_ns: i64) -> Result<u64, StoreError> {
        Ok(0)
    }
}
