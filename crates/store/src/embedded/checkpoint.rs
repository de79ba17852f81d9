//! Checkpoints in the embedded store: table `checkpoints`, keyed (group,
//! partition, key), and `checkpoint_offsets`, keyed (group, partition).
//! A save is one durable redb transaction over both, so rows and offset
//! change together.

use redb::{Durability, ReadableDatabase, TableDefinition};

use super::{Inner, backend};
use crate::StoreError;
use crate::checkpoint::{Checkpoint, CheckpointChange, check_changes};

pub(super) const CHECKPOINTS: TableDefinition<'_, (&str, u32, &[u8]), &[u8]> =
    TableDefinition::new("checkpoints");
pub(super) const CHECKPOINT_OFFSETS: TableDefinition<'_, (&str, u32), u64> =
    TableDefinition::new("checkpoint_offsets");

impl Inner {
    pub(super) fn save_checkpoint(
        &self,
        group: &str,
        partition: u32,
        offset: u64,
        changes: &[CheckpointChange],
    ) -> Result<(), StoreError> {
        check_changes(changes)?;
        let mut txn = self.db.begin_write().map_err(backend)?;
        txn.set_durability(Durability::Immediate).map_err(backend)?;
        {
            let mut rows = txn.open_table(CHECKPOINTS).map_err(backend)?;
            for (key, value) in changes {
                let k = (group, partition, key.as_slice());
                match value {
                    Some(v) => {
                        rows.insert(k, v.as_slice()).map_err(backend)?;
                    }
                    None => {
                        rows.remove(k).map_err(backend)?;
                    }
                }
            }
            let mut offsets = txn.open_table(CHECKPOINT_OFFSETS).map_err(backend)?;
            offsets
                .insert((group, partition), offset)
                .map_err(backend)?;
        }
        txn.commit().map_err(backend)
    }

    pub(super) fn load_checkpoint(
        &self,
        group: &str,
        partition: u32,
    ) -> Result<Option<Checkpoint>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let offsets = match txn.open_table(CHECKPOINT_OFFSETS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(backend(e)),
        };
        let Some(offset) = offsets.get((group, partition)).map_err(backend)? else {
            return Ok(None);
        };
        let offset = offset.value();
        let table = txn.open_table(CHECKPOINTS).map_err(backend)?;
        let mut rows = Vec::new();
        let from: (&str, u32, &[u8]) = (group, partition, &[]);
        for row in table.range(from..).map_err(backend)? {
            let (k, v) = row.map_err(backend)?;
            let (g, p, key) = k.value();
            if g != group || p != partition {
                break;
            }
            rows.push((key.to_vec(), v.value().to_vec()));
        }
        Ok(Some(Checkpoint { offset, rows }))
    }
}

#[async_trait::async_trait]
impl crate::checkpoint::CheckpointStore for super::EmbeddedStore {
    async fn save_checkpoint(
        &self,
        group: &str,
        partition: u32,
        offset: u64,
        changes: Vec<crate::checkpoint::CheckpointChange>,
    ) -> Result<(), StoreError> {
        let group = group.to_owned();
        self.blocking(move |inner| inner.save_checkpoint(&group, partition, offset, &changes))
            .await
    }

    async fn load_checkpoint(
        &self,
        group: &str,
        partition: u32,
    ) -> Result<Option<crate::checkpoint::Checkpoint>, StoreError> {
        let group = group.to_owned();
        self.blocking(move |inner| inner.load_checkpoint(&group, partition))
            .await
    }
}
