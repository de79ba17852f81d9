//! The checkpoint seam: state a consumer group keeps per log partition,
//! saved with the offset it covers, so that a restart or a partition moving
//! to another replica resumes it exactly. The stream processor keeps its
//! rule state here (`tributary_rules::Engine::checkpoint`).
//!
//! A checkpoint is a set of key → value rows per (group, partition), changed
//! incrementally, and the offset of the first record it does not cover. The
//! processor saves a checkpoint before it commits the same offset, and
//! skips evaluating replayed records below the checkpoint's offset.

use std::fmt::Debug;

use async_trait::async_trait;

use crate::StoreError;

/// A saved checkpoint of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// The offset of the first record the rows do not cover.
    pub offset: u64,
    /// Every row, sorted by key.
    pub rows: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A change to a checkpoint: a key and its new value, or `None` to delete it.
pub type CheckpointChange = (Vec<u8>, Option<Vec<u8>>);

/// Most bytes of one checkpoint key, and of one value.
pub const MAX_CHECKPOINT_KEY: usize = 1024;
pub const MAX_CHECKPOINT_VALUE: usize = 64 * 1024;

/// Where checkpoints are kept. See the [module docs](self).
#[async_trait]
pub trait CheckpointStore: Send + Sync + Debug {
    /// Applies `changes` to the checkpoint of `(group, partition)` and
    /// records that it covers the records before `offset`. Durable when it
    /// returns. A key or value over [`MAX_CHECKPOINT_KEY`] or
    /// [`MAX_CHECKPOINT_VALUE`] fails the call with
    /// [`StoreError::Invalid`] before anything changes.
    async fn save_checkpoint(
        &self,
        group: &str,
        partition: u32,
        offset: u64,
        changes: Vec<CheckpointChange>,
    ) -> Result<(), StoreError>;

    /// The checkpoint of `(group, partition)`; `None` if none was saved.
    async fn load_checkpoint(
        &self,
        group: &str,
        partition: u32,
    ) -> Result<Option<Checkpoint>, StoreError>;
}

/// Checks the sizes [`CheckpointStore::save_checkpoint`] bounds.
pub fn check_changes(changes: &[CheckpointChange]) -> Result<(), StoreError> {
    for (k, v) in changes {
        if k.is_empty() || k.len() > MAX_CHECKPOINT_KEY {
            return Err(StoreError::Invalid(format!(
                "checkpoint key of {} bytes; keys are 1 to {MAX_CHECKPOINT_KEY} bytes",
                k.len()
            )));
        }
        if v.as_ref().is_some_and(|v| v.len() > MAX_CHECKPOINT_VALUE) {
            return Err(StoreError::Invalid(format!(
                "checkpoint value over {MAX_CHECKPOINT_VALUE} bytes"
            )));
        }
    }
    Ok(())
}
