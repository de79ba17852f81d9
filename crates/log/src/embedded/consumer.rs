//! [`EmbeddedConsumer`]: reads every partition of an [`EmbeddedLog`](super::EmbeddedLog).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Shared;
use super::partition::{Budget, Cursor};
use crate::{Consumer, LogError, LogRecord};

/// A consumer of an embedded log. The embedded log runs in one process, so
/// every consumer is assigned all partitions (it is the whole group).
///
/// It keeps its own read position per partition, starting from the group's
/// committed offset when there is one. `poll` is cancel-safe: if its future
/// is dropped, no record is lost and the positions stay where they were.
#[derive(Debug)]
pub struct EmbeddedConsumer {
    shared: Arc<Shared>,
    group: Option<String>,
    /// Next offset to read, per partition.
    positions: Vec<u64>,
    /// Where the last read stopped, per partition, to avoid seeking again.
    cursors: Vec<Option<Cursor>>,
    /// The partition the next read starts with, rotated for fairness.
    next_partition: usize,
    appended: watch::Receiver<u64>,
}

impl EmbeddedConsumer {
    pub(crate) fn new(shared: Arc<Shared>, group: Option<String>, positions: Vec<u64>) -> Self {
        let appended = shared.appended.subscribe();
        let cursors = positions.iter().map(|_| None).collect();
        Self {
            shared,
            group,
            positions,
            cursors,
            next_partition: 0,
            appended,
        }
    }

    /// Whether some partition has durable records at or past our position.
    fn has_unread(&self) -> bool {
        self.shared
            .partitions
            .iter()
            .zip(&self.positions)
            .any(|(p, &pos)| pos < p.high())
    }

    /// Reads what is available now, on the blocking pool.
    async fn read_available(&mut self, max_records: usize) -> Result<Vec<LogRecord>, LogError> {
        let n = self.positions.len();
        let shared = Arc::clone(&self.shared);
        let mut positions = self.positions.clone();
        // Taken, not cloned: if this future is dropped, the cache is simply
        // empty next time and positions are unchanged.
        let mut cursors = std::mem::take(&mut self.cursors);
        cursors.resize_with(n, || None);
        let start = self.next_partition;
        self.next_partition = (start + 1) % n.max(1);
        let (result, positions, cursors) = tokio::task::spawn_blocking(move || {
            let mut budget = Budget::new(max_records, shared.config.max_poll_bytes);
            let mut out = Vec::new();
            let mut result = Ok(());
            for i in 0..n {
                let p = (start + i) % n;
                if let Err(e) = shared.partitions[p].read(
                    &mut positions[p],
                    &mut cursors[p],
                    &mut budget,
                    &mut out,
                ) {
                    result = Err(e);
                    break;
                }
            }
            (result.map(|()| out), positions, cursors)
        })
        .await
        .map_err(|e| LogError::Backend(format!("read task failed: {e}")))?;
        let records = result?;
        self.positions = positions;
        self.cursors = cursors;
        Ok(records)
    }
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn poll(
        &mut self,
        max_records: usize,
        timeout: Duration,
    ) -> Result<Vec<LogRecord>, LogError> {
        if max_records == 0 {
            return Ok(Vec::new());
        }
        let now = Instant::now();
        // A timeout too large to add is as good as forever (a century).
        let deadline = now
            .checked_add(timeout)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400));
        loop {
            // Mark the current version seen before looking, so an append that
            // lands after the look wakes the wait below.
            self.appended.borrow_and_update();
            if self.has_unread() {
                let records = self.read_available(max_records).await?;
                if !records.is_empty() {
                    return Ok(records);
                }
            }
            match tokio::time::timeout_at(deadline, self.appended.changed()).await {
                Err(_elapsed) => return Ok(Vec::new()),
                Ok(Ok(())) => {}
                // The sender lives in `shared`, which we hold; kept for completeness.
                Ok(Err(_closed)) => {
                    tokio::time::sleep_until(deadline).await;
                    return Ok(Vec::new());
                }
            }
        }
    }

    async fn commit(&mut self, offsets: &[(u32, u64)]) -> Result<(), LogError> {
        let Some(group) = self.group.clone() else {
            return Err(LogError::NoGroup);
        };
        for &(p, _) in offsets {
            self.shared.partition(p)?;
        }
        if offsets.is_empty() {
            return Ok(());
        }
        let shared = Arc::clone(&self.shared);
        let offsets = offsets.to_vec();
        tokio::task::spawn_blocking(move || shared.commit(&group, &offsets))
            .await
            .map_err(|e| LogError::Backend(format!("commit task failed: {e}")))?
    }

    fn assignment(&self) -> Vec<u32> {
        (0..self.shared.config.partitions).collect()
    }
}
