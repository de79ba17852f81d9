//! [`ScyllaCheckpoints`]: the [`CheckpointStore`] of distributed mode.
//!
//! ```text
//! CREATE TABLE checkpoints (
//!     grp text, part int, key blob, value blob, covers bigint static,
//!     PRIMARY KEY ((grp, part), key))
//! ```
//!
//! One partition per (consumer group, log partition). A save writes its
//! changed rows in UNLOGGED batches of at most `max_batch_rows` (a batch in
//! one partition is applied atomically) and sets the static `covers`, the
//! offset, in the last one. A save of more rows than one batch is not
//! atomic: a crash in between leaves rows newer than `covers`, which the
//! processor reads as a checkpoint of the older offset with some rows ahead
//! of it; replaying the records in between then finds those series already
//! past them (docs/alerts.md, "Crashes").

use std::ops::ControlFlow;
use std::sync::Arc;

use async_trait::async_trait;
use scylla::client::session::Session;
use scylla::response::PagingState;
use scylla::statement::batch::{Batch, BatchStatement, BatchType};
use scylla::statement::prepared::PreparedStatement;
use tributary_store::checkpoint::check_changes;
use tributary_store::{Checkpoint, CheckpointChange, CheckpointStore, StoreError};

use crate::session::Cql;
use crate::{ScyllaConfig, ScyllaError};

/// Rows per page of a checkpoint load.
const PAGE: i32 = 1000;

/// Checkpoints on ScyllaDB. See the [module docs](self).
pub struct ScyllaCheckpoints {
    cql: Cql,
    upsert: PreparedStatement,
    delete: PreparedStatement,
    covers: PreparedStatement,
    get_covers: PreparedStatement,
    rows: PreparedStatement,
    max_batch_rows: usize,
}

impl std::fmt::Debug for ScyllaCheckpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaCheckpoints").finish_non_exhaustive()
    }
}

impl ScyllaCheckpoints {
    /// Connects, migrates the keyspace and prepares the statements.
    pub async fn connect(config: &ScyllaConfig) -> Result<Arc<Self>, ScyllaError> {
        let session = crate::connect(config).await?;
        crate::migrate(&session, config).await?;
        Self::new(session, config).await
    }

    /// Opens the checkpoint store on a session whose keyspace was migrated
    /// ([`crate::migrate`]); prepares its statements.
    pub async fn new(
        session: Arc<Session>,
        config: &ScyllaConfig,
    ) -> Result<Arc<Self>, ScyllaError> {
        let cql = Cql::new(session, config);
        let ks = &config.keyspace;
        let prepare = |text: String| cql.prepare(text, true);
        Ok(Arc::new(Self {
            upsert: prepare(format!(
                "INSERT INTO {ks}.checkpoints (grp, part, key, value) VALUES (?, ?, ?, ?)"
            ))
            .await?,
            delete: prepare(format!(
                "DELETE FROM {ks}.checkpoints WHERE grp = ? AND part = ? AND key = ?"
            ))
            .await?,
            covers: prepare(format!(
                "UPDATE {ks}.checkpoints SET covers = ? WHERE grp = ? AND part = ?"
            ))
            .await?,
            get_covers: prepare(format!(
                "SELECT covers FROM {ks}.checkpoints WHERE grp = ? AND part = ? LIMIT 1"
            ))
            .await?,
            rows: {
                let mut s = prepare(format!(
                    "SELECT key, value FROM {ks}.checkpoints WHERE grp = ? AND part = ?"
                ))
                .await?;
                s.set_page_size(PAGE);
                s
            },
            max_batch_rows: config.max_batch_rows.max(2),
            cql,
        }))
    }
}

/// The values of one batch statement.
enum Values {
    Upsert(String, i32, Vec<u8>, Vec<u8>),
    Delete(String, i32, Vec<u8>),
    Covers(i64, String, i32),
}

impl scylla::serialize::row::SerializeRow for Values {
    fn serialize(
        &self,
        ctx: &scylla::serialize::row::RowSerializationContext<'_>,
        writer: &mut scylla::serialize::writers::RowWriter<'_>,
    ) -> Result<(), scylla::serialize::SerializationError> {
        match self {
            Self::Upsert(g, p, k, v) => (g, p, k, v).serialize(ctx, writer),
            Self::Delete(g, p, k) => (g, p, k).serialize(ctx, writer),
            Self::Covers(o, g, p) => (o, g, p).serialize(ctx, writer),
        }
    }

    fn is_empty(&self) -> bool {
        false
    }
}

#[async_trait]
impl CheckpointStore for ScyllaCheckpoints {
    async fn save_checkpoint(
        &self,
        group: &str,
        partition: u32,
        offset: u64,
        changes: Vec<CheckpointChange>,
    ) -> Result<(), StoreError> {
        check_changes(&changes)?;
        let part = i32::try_from(partition)
            .map_err(|_| StoreError::Invalid(format!("partition {partition} out of range")))?;
        let covers = i64::try_from(offset)
            .map_err(|_| StoreError::Invalid(format!("offset {offset} out of range")))?;
        let mut statements: Vec<(PreparedStatement, Values)> = changes
            .into_iter()
            .map(|(key, value)| match value {
                Some(v) => (
                    self.upsert.clone(),
                    Values::Upsert(group.to_owned(), part, key, v),
                ),
                None => (
                    self.delete.clone(),
                    Values::Delete(group.to_owned(), part, key),
                ),
            })
            .collect();
        statements.push((
            self.covers.clone(),
            Values::Covers(covers, group.to_owned(), part),
        ));
        for chunk in statements.chunks(self.max_batch_rows) {
            let mut batch = Batch::new_with_statements(
                BatchType::Unlogged,
                chunk
                    .iter()
                    .map(|(s, _)| BatchStatement::PreparedStatement(s.clone()))
                    .collect(),
            );
            batch.set_is_idempotent(true);
            let values: Vec<&Values> = chunk.iter().map(|(_, v)| v).collect();
            self.cql.batch(&batch, values).await?;
        }
        Ok(())
    }

    async fn load_checkpoint(
        &self,
        group: &str,
        partition: u32,
    ) -> Result<Option<Checkpoint>, StoreError> {
        let part = i32::try_from(partition)
            .map_err(|_| StoreError::Invalid(format!("partition {partition} out of range")))?;
        let covers = self
            .cql
            .execute(&self.get_covers, (group, part))
            .await?
            .into_rows_result()
            .map_err(ScyllaError::decode)?
            .maybe_first_row::<(Option<i64>,)>()
            .map_err(ScyllaError::decode)?
            .and_then(|(c,)| c);
        let Some(covers) = covers else {
            return Ok(None);
        };
        let mut rows = Vec::new();
        let mut state = PagingState::start();
        loop {
            let (result, next) = self.cql.page(&self.rows, (group, part), state).await?;
            let page = result.into_rows_result().map_err(ScyllaError::decode)?;
            for row in page
                .rows::<(Option<Vec<u8>>, Option<Vec<u8>>)>()
                .map_err(ScyllaError::decode)?
            {
                // A partition holding only `covers` reads as one row of nulls.
                if let (Some(k), Some(v)) = row.map_err(ScyllaError::decode)? {
                    rows.push((k, v));
                }
            }
            match next.into_paging_control_flow() {
                ControlFlow::Break(()) => break,
                ControlFlow::Continue(s) => state = s,
            }
        }
        Ok(Some(Checkpoint {
            offset: u64::try_from(covers).unwrap_or(0),
            rows,
        }))
    }
}
