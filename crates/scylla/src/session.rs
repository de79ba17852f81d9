//! Opening a session, and running statements through a bounded number of
//! in-flight slots.

use std::sync::Arc;
use std::time::Duration;

use scylla::client::Compression;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::policies::timestamp_generator::MonotonicTimestampGenerator;
use scylla::response::query_result::QueryResult;
use scylla::response::{PagingState, PagingStateResponse};
use scylla::serialize::batch::BatchValues;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::Batch;
use scylla::statement::prepared::PreparedStatement;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::retry::IdempotentRetryPolicy;
use crate::{ScyllaConfig, ScyllaError};

/// Opens a session to the cluster of `config`.
///
/// The session's default execution profile carries everything the backends
/// rely on:
/// - token-aware (and shard-aware) routing: a prepared statement whose
///   partition key is fully bound goes straight to a replica that owns it,
///   in the local datacenter when one is configured;
/// - the configured consistency and serial consistency, and request timeout;
/// - a retry policy that retries a statement on another node after a
///   timeout, overload or broken connection when it is marked idempotent
///   (every read and plain write here is; the lightweight transactions are
///   not, and are retried only when the server certainly did not apply them);
/// - client-side, monotonic write timestamps, so that two writes of one
///   cell from this process apply in the order they were made even when
///   different coordinators handle them;
/// - LZ4 compression of frames.
///
/// Share one session between the store and the registry store of a process
/// ([`crate::ScyllaStore::new`], [`crate::ScyllaRegistryStore::new`]).
pub async fn connect(config: &ScyllaConfig) -> Result<Arc<Session>, ScyllaError> {
    config.validate()?;
    let mut policy = DefaultPolicy::builder().token_aware(true);
    if let Some(dc) = &config.local_datacenter {
        policy = policy
            .prefer_datacenter(dc.clone())
            .permit_dc_failover(false);
    }
    let profile = ExecutionProfile::builder()
        .consistency(config.consistency.to_driver())
        .serial_consistency(Some(config.serial_consistency.to_driver()))
        .request_timeout(Some(config.request_timeout))
        .load_balancing_policy(policy.build())
        .retry_policy(Arc::new(IdempotentRetryPolicy))
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(config.contact_points()?)
        .connection_timeout(config.connect_timeout)
        .compression(Some(Compression::Lz4))
        .timestamp_generator(Arc::new(MonotonicTimestampGenerator::new()))
        .default_execution_profile_handle(profile.into_handle());
    if let Some(credentials) = &config.credentials {
        builder = builder.user(&credentials.username, &credentials.password);
    }
    let session = builder.build().await?;
    tracing::info!(nodes = ?config.nodes, keyspace = %config.keyspace, "connected to ScyllaDB");
    Ok(Arc::new(session))
}

/// A session plus a bound on the requests in flight through it: every
/// request takes a slot first and waits at most `queue_timeout` for one.
#[derive(Debug, Clone)]
pub(crate) struct Cql {
    session: Arc<Session>,
    slots: Slots,
}

/// A bounded number of in-flight slots, taken with a deadline.
#[derive(Debug, Clone)]
struct Slots {
    semaphore: Arc<Semaphore>,
    queue_timeout: Duration,
}

impl Slots {
    fn new(max_in_flight: usize, queue_timeout: Duration) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(max_in_flight)),
            queue_timeout,
        }
    }

    /// A slot, or [`ScyllaError::Saturated`] when none frees up in time.
    async fn take(&self) -> Result<SemaphorePermit<'_>, ScyllaError> {
        match tokio::time::timeout(self.queue_timeout, self.semaphore.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; treat it like a full queue anyway.
            Ok(Err(_)) | Err(_) => Err(ScyllaError::Saturated),
        }
    }
}

impl Cql {
    pub(crate) fn new(session: Arc<Session>, config: &ScyllaConfig) -> Self {
        Self {
            session,
            slots: Slots::new(config.max_in_flight, config.queue_timeout),
        }
    }

    async fn slot(&self) -> Result<SemaphorePermit<'_>, ScyllaError> {
        self.slots.take().await
    }

    /// Prepares a statement, marking it idempotent (safe to retry) or not.
    pub(crate) async fn prepare(
        &self,
        cql: String,
        idempotent: bool,
    ) -> Result<PreparedStatement, ScyllaError> {
        let mut statement = self.session.prepare(cql).await?;
        statement.set_is_idempotent(idempotent);
        Ok(statement)
    }

    /// Runs a schema statement (idempotent DDL such as `CREATE TABLE IF
    /// NOT EXISTS`); the driver waits for schema agreement.
    pub(crate) async fn ddl(&self, cql: String) -> Result<(), ScyllaError> {
        let _slot = self.slot().await?;
        self.session.query_unpaged(cql, ()).await?;
        Ok(())
    }

    /// Runs a statement whose result fits one response (writes, point
    /// reads, `LIMIT`ed reads).
    pub(crate) async fn execute(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<QueryResult, ScyllaError> {
        let _slot = self.slot().await?;
        Ok(self.session.execute_unpaged(statement, values).await?)
    }

    /// Fetches one page of a read, from `state` on.
    pub(crate) async fn page(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
        state: PagingState,
    ) -> Result<(QueryResult, PagingStateResponse), ScyllaError> {
        let _slot = self.slot().await?;
        Ok(self
            .session
            .execute_single_page(statement, values, state)
            .await?)
    }

    /// Runs a batch.
    pub(crate) async fn batch(
        &self,
        batch: &Batch,
        values: impl BatchValues,
    ) -> Result<(), ScyllaError> {
        let _slot = self.slot().await?;
        self.session.batch(batch, values).await?;
        Ok(())
    }
}

impl ScyllaConfig {
    /// The contact points, each with its port.
    pub(crate) fn contact_points(&self) -> Result<Vec<String>, ScyllaError> {
        self.nodes
            .iter()
            .map(|n| crate::config::parse_node(n).map_err(ScyllaError::Config))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_fails_with_saturated_after_the_queue_timeout() {
        let slots = Slots::new(2, Duration::from_millis(100));
        let first = slots.take().await.expect("a free slot");
        let second = slots.take().await.expect("a free slot");
        let started = tokio::time::Instant::now();
        let third = slots.take().await;
        assert!(
            matches!(third, Err(ScyllaError::Saturated)),
            "every slot is taken: {third:?}"
        );
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(100),
            "waited the queue timeout"
        );
        drop(first);
        let again = slots.take().await;
        assert!(again.is_ok(), "a released slot is taken again");
        drop(second);
    }
}
