//! Rollups in the embedded store.
//!
//! Table `rollups`, keyed `(series id, tier width, bucket start)`, holds
//! them, so that the buckets of one series in one tier are one key range.
//! Values are [`Rollup::encode`]d.
//!
//! The processor rewrites every open bucket at each of its flushes (every
//! few seconds), so writing them straight into that B-tree costs a copy of
//! every page they touch, per flush: about 16 µs a bucket, measured. Writes
//! go instead to a WAL: one durable row per `write_rollups` (table
//! `rollup_wal`, one sequential value), and to an in-memory head that reads
//! consult first. A rollup compaction, on the store's compactor thread once
//! the head holds [`HEAD_MAX_ROWS`] rows or [`COMPACT_EVERY`] has passed,
//! moves the head into `rollups` (where the dozens of rewrites of an open
//! bucket have become one) and deletes the WAL rows it covers, in the same
//! durable transaction. Opening the store replays the WAL rows left.
//!
//! The compaction also seals the rows of closed blocks into one row per
//! block (see [`super::blocks`]), which is what long reads read.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tributary_core::SeriesKey;
use tributary_core::rollup::{Rollup, RollupKey};

use super::blocks::{self, BLOCKS, OPEN};
use super::{Inner, META, backend, lock};
use crate::StoreError;

pub(super) const ROLLUPS: TableDefinition<'static, (u64, i64, i64), &[u8]> =
    TableDefinition::new("rollups");
/// Rollup rows written since the last rollup compaction, one value per
/// `write_rollups`, by sequence number.
pub(super) const ROLLUP_WAL: TableDefinition<'static, u64, &[u8]> =
    TableDefinition::new("rollup_wal");

/// Rows the head holds before a rollup compaction is due.
const HEAD_MAX_ROWS: usize = 256 * 1024;
/// Longest time between rollup compactions while rows are written.
const COMPACT_EVERY: Duration = Duration::from_secs(60);
/// Rows per compaction transaction.
const SLICE_ROWS: usize = 16 * 1024;

type Key = (u64, i64, i64);

/// `meta` key set once every `rollups` row's block is listed in
/// `rollup_open` (stores written before blocks existed list none).
const LAYOUT_KEY: &str = "rollup_layout";
const LAYOUT_BLOCKS: i64 = 2;

/// Rollup rows not yet in the `rollups` table (their WAL rows hold them).
#[derive(Debug, Default)]
pub(super) struct RollupHead {
    live: BTreeMap<Key, Rollup>,
    /// What a rollup compaction is moving into the table.
    frozen: Option<Arc<BTreeMap<Key, Rollup>>>,
    /// WAL rows below this sequence number are covered by `frozen`.
    frozen_below: u64,
    /// When the last rollup compaction ended; `None` until the first.
    compacted_at: Option<Instant>,
}

/// The WAL writer's state: taken for the whole of a WAL write, and to
/// freeze the head, so that a frozen head holds every WAL row below its
/// sequence number.
#[derive(Debug, Default)]
pub(super) struct RollupWal {
    next_seq: u64,
}

fn corrupt() -> StoreError {
    StoreError::Backend("corrupt rollup row".into())
}

/// A WAL value: per row, id, width, start (LE), the encoded rollup's
/// length (u32 LE), and the encoded rollup.
fn encode_wal(rows: &[(Key, &Rollup)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.len() * 96);
    for ((id, width, start), rollup) in rows {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&width.to_le_bytes());
        out.extend_from_slice(&start.to_le_bytes());
        let bytes = rollup.encode();
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

fn decode_wal(mut bytes: &[u8], mut row: impl FnMut(Key, Rollup)) -> Result<(), StoreError> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], StoreError> {
        if bytes.len() < n {
            return Err(corrupt());
        }
        let (head, rest) = bytes.split_at(n);
        *bytes = rest;
        Ok(head)
    }
    let word = |b: &[u8]| <[u8; 8]>::try_from(b).map_err(|_| corrupt());
    while !bytes.is_empty() {
        let id = u64::from_le_bytes(word(take(&mut bytes, 8)?)?);
        let width = i64::from_le_bytes(word(take(&mut bytes, 8)?)?);
        let start = i64::from_le_bytes(word(take(&mut bytes, 8)?)?);
        let len =
            u32::from_le_bytes(<[u8; 4]>::try_from(take(&mut bytes, 4)?).map_err(|_| corrupt())?)
                as usize;
        let rollup = Rollup::decode(take(&mut bytes, len)?).ok_or_else(corrupt)?;
        row((id, width, start), rollup);
    }
    Ok(())
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
        // Buckets past their tier's retention are not returned, like scans
        // (a partial sealed block still holds them).
        let ids: Vec<Option<u64>> = keys
            .iter()
            .map(|k| {
                let kept = k.start_ns >= self.rollup_floor(&k.series.tenant, k.width_ns);
                self.series_id(&k.series).filter(|_| kept)
            })
            .collect();
        // The head first: it holds the newest rows.
        let mut out: Vec<Option<Rollup>> = Vec::with_capacity(keys.len());
        let mut missing = Vec::new();
        {
            let head = lock(&self.rollup_head);
            for (i, (k, id)) in keys.iter().zip(&ids).enumerate() {
                let found = id.and_then(|id| {
                    let key = (id, k.width_ns, k.start_ns);
                    head.live
                        .get(&key)
                        .or_else(|| head.frozen.as_ref().and_then(|f| f.get(&key)))
                        .cloned()
                });
                if found.is_none() && id.is_some() {
                    missing.push(i);
                }
                out.push(found);
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(ROLLUPS).map_err(backend)?;
        let sealed = txn.open_table(BLOCKS).map_err(backend)?;
        for i in missing {
            let (k, id) = (&keys[i], ids[i].expect("only known series are missing"));
            if let Some(v) = table.get((id, k.width_ns, k.start_ns)).map_err(backend)? {
                out[i] = Some(Rollup::decode(v.value()).ok_or_else(corrupt)?);
                continue;
            }
            let block = blocks::block_of(k.width_ns, k.start_ns);
            if let Some(v) = sealed.get((id, k.width_ns, block)).map_err(backend)? {
                let mut found = Vec::with_capacity(1);
                blocks::decode_into(
                    v.value(),
                    k.width_ns,
                    block,
                    k.start_ns,
                    k.start_ns.saturating_add(1),
                    &mut found,
                )?;
                out[i] = found.pop().map(|(_, r)| r);
            }
        }
        Ok(out)
    }

    /// Durable once it returns: one WAL row, then the head.
    pub(super) fn write_rollups(&self, rows: &[(RollupKey, Rollup)]) -> Result<(), StoreError> {
        // Rows already expired in their tenant's tier are not written.
        let rows: Vec<&(RollupKey, Rollup)> = rows
            .iter()
            .filter(|(k, _)| k.start_ns >= self.rollup_floor(&k.series.tenant, k.width_ns))
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        let keyed = rows
            .iter()
            .map(|(k, r)| {
                let id = self.series_id(&k.series).ok_or_else(|| {
                    StoreError::Invalid(format!(
                        "rollup of a series without points: {}/{}/{}",
                        k.series.tenant, k.series.device, k.series.metric
                    ))
                })?;
                Ok(((id, k.width_ns, k.start_ns), r))
            })
            .collect::<Result<Vec<(Key, &Rollup)>, StoreError>>()?;
        let value = encode_wal(&keyed);
        let due = {
            let mut wal = lock(&self.rollup_wal);
            let mut txn = self.db.begin_write().map_err(backend)?;
            txn.set_durability(Durability::Immediate).map_err(backend)?;
            txn.open_table(ROLLUP_WAL)
                .map_err(backend)?
                .insert(wal.next_seq, value.as_slice())
                .map_err(backend)?;
            txn.commit().map_err(backend)?;
            wal.next_seq += 1;
            let mut head = lock(&self.rollup_head);
            for (key, rollup) in keyed {
                head.live.insert(key, rollup.clone());
            }
            let compacted_at = *head.compacted_at.get_or_insert_with(Instant::now);
            head.live.len() >= HEAD_MAX_ROWS || compacted_at.elapsed() >= COMPACT_EVERY
        };
        if due {
            self.rollups_due
                .store(true, std::sync::atomic::Ordering::Relaxed);
            self.wake_compactor();
        }
        Ok(())
    }

    /// Moves the head into the `rollups` table (rows of open blocks) and
    /// the `rollup_blocks` table (buckets of closed blocks), seals the
    /// blocks that have closed since their rows were written, and deletes
    /// the WAL rows the head covered; false if there was nothing to do.
    /// Retried whole after a failure (the frozen head stays until it is in
    /// the tables).
    /// `now_ns` decides which blocks are closed.
    pub(super) fn compact_rollups(&self, now_ns: i64) -> Result<bool, StoreError> {
        let (frozen, below) = {
            let wal = lock(&self.rollup_wal);
            let mut head = lock(&self.rollup_head);
            if head.frozen.is_none() && !head.live.is_empty() {
                head.frozen = Some(Arc::new(std::mem::take(&mut head.live)));
                head.frozen_below = wal.next_seq;
            }
            (head.frozen.clone(), head.frozen_below)
        };
        let now = now_ns;
        // Buckets of closed blocks, by block; rows of open ones.
        let mut closed: BTreeMap<Key, Vec<(i64, Rollup)>> = BTreeMap::new();
        let mut open: Vec<(&Key, &Rollup)> = Vec::new();
        for (key, rollup) in frozen.iter().flat_map(|f| f.iter()) {
            let &(id, width, start) = key;
            let block = blocks::block_of(width, start);
            if blocks::closed(width, block, now) {
                closed
                    .entry((id, width, block))
                    .or_default()
                    .push((start, rollup.clone()));
            } else {
                open.push((key, rollup));
            }
        }
        // Blocks whose rows were written while they were open.
        {
            let txn = self.db.begin_read().map_err(backend)?;
            let listed = txn.open_table(OPEN).map_err(backend)?;
            for entry in listed.iter().map_err(backend)? {
                let (key, _) = entry.map_err(backend)?;
                let key = key.value();
                if blocks::closed(key.1, key.2, now) {
                    closed.entry(key).or_default();
                }
            }
        }
        if frozen.is_none() && closed.is_empty() {
            lock(&self.rollup_head).compacted_at = Some(Instant::now());
            return Ok(false);
        }
        // Work in transactions of about SLICE_ROWS buckets each.
        enum Work<'a> {
            Row(&'a Key, &'a Rollup),
            Seal(Key, Vec<(i64, Rollup)>),
        }
        let mut work: Vec<Work<'_>> = open.into_iter().map(|(k, r)| Work::Row(k, r)).collect();
        work.extend(closed.into_iter().map(|(k, b)| Work::Seal(k, b)));
        let weight = |w: &Work<'_>| match w {
            Work::Row(..) => 1,
            Work::Seal(_, b) => b.len().max(blocks::BLOCK_BUCKETS as usize / 4),
        };
        let mut slices: Vec<Vec<Work<'_>>> = vec![Vec::new()];
        let mut filled = 0;
        for w in work {
            if filled >= SLICE_ROWS {
                slices.push(Vec::new());
                filled = 0;
            }
            filled += weight(&w);
            slices.last_mut().expect("one slice at least").push(w);
        }
        let last = slices.len() - 1;
        for (i, slice) in slices.into_iter().enumerate() {
            let mut txn = self.db.begin_write().map_err(backend)?;
            // Slices need not be durable one by one: the WAL still holds
            // them, until the last commit deletes it with them (and a seal
            // only moves rows already durable).
            let durability = if i == last {
                Durability::Immediate
            } else {
                Durability::None
            };
            txn.set_durability(durability).map_err(backend)?;
            {
                let mut rows = txn.open_table(ROLLUPS).map_err(backend)?;
                let mut sealed = txn.open_table(BLOCKS).map_err(backend)?;
                let mut listed = txn.open_table(OPEN).map_err(backend)?;
                let mut last_listed: Option<Key> = None;
                for w in slice {
                    match w {
                        Work::Row(key, rollup) => {
                            rows.insert(*key, rollup.encode().as_slice())
                                .map_err(backend)?;
                            let block = (key.0, key.1, blocks::block_of(key.1, key.2));
                            if last_listed != Some(block) {
                                if listed.get(block).map_err(backend)?.is_none() {
                                    listed.insert(block, ()).map_err(backend)?;
                                }
                                last_listed = Some(block);
                            }
                        }
                        Work::Seal(block, buckets) => {
                            blocks::seal(&mut sealed, &mut rows, &mut listed, block, buckets)?;
                        }
                    }
                }
                if i == last && frozen.is_some() {
                    let mut wal = txn.open_table(ROLLUP_WAL).map_err(backend)?;
                    for entry in wal.extract_from_if(..below, |_, _| true).map_err(backend)? {
                        entry.map_err(backend)?;
                    }
                }
            }
            txn.commit().map_err(backend)?;
        }
        let mut head = lock(&self.rollup_head);
        if frozen.is_some() {
            head.frozen = None;
        }
        head.compacted_at = Some(Instant::now());
        Ok(true)
    }

    /// Lists the blocks of the `rollups` rows of a store written before
    /// blocks existed, so that compactions seal them; then replays the WAL
    /// rows left into the head. True if blocks wait to be sealed.
    pub(super) fn recover_rollups(&self) -> Result<bool, StoreError> {
        let mut txn = self.db.begin_write().map_err(backend)?;
        txn.set_durability(Durability::Immediate).map_err(backend)?;
        {
            let mut meta = txn.open_table(META).map_err(backend)?;
            if meta.get(LAYOUT_KEY).map_err(backend)?.map(|v| v.value()) != Some(LAYOUT_BLOCKS) {
                let rows = txn.open_table(ROLLUPS).map_err(backend)?;
                let mut listed = txn.open_table(OPEN).map_err(backend)?;
                let mut last: Option<Key> = None;
                for entry in rows.iter().map_err(backend)? {
                    let (key, _) = entry.map_err(backend)?;
                    let (id, width, start) = key.value();
                    let block = (id, width, blocks::block_of(width, start));
                    if last != Some(block) {
                        listed.insert(block, ()).map_err(backend)?;
                        last = Some(block);
                    }
                }
                meta.insert(LAYOUT_KEY, LAYOUT_BLOCKS).map_err(backend)?;
            }
        }
        txn.commit().map_err(backend)?;
        let txn = self.db.begin_read().map_err(backend)?;
        let waiting = !txn
            .open_table(OPEN)
            .map_err(backend)?
            .is_empty()
            .map_err(backend)?;
        let table = txn.open_table(ROLLUP_WAL).map_err(backend)?;
        let mut head = lock(&self.rollup_head);
        let mut wal = lock(&self.rollup_wal);
        for entry in table.iter().map_err(backend)? {
            let (seq, value) = entry.map_err(backend)?;
            decode_wal(value.value(), |key, rollup| {
                head.live.insert(key, rollup);
            })?;
            wal.next_seq = seq.value().saturating_add(1);
        }
        Ok(waiting)
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

    /// Per series, its id and where its read starts (after its tenant's
    /// tier retention), if the store has it; and the head's buckets of it
    /// in `[from, to)`.
    #[allow(
        clippy::type_complexity,
        reason = "two parallel lists, named in the doc"
    )]
    fn rollup_sources(
        &self,
        series: &[SeriesKey],
        width_ns: i64,
        from_ns: i64,
        to_ns: i64,
    ) -> (Vec<Option<(u64, i64)>>, Vec<Vec<(i64, Rollup)>>) {
        let ranges: Vec<Option<(u64, i64)>> = series
            .iter()
            .map(|s| {
                self.series_id(s).map(|id| {
                    let from_ns = from_ns.max(self.rollup_floor(&s.tenant, width_ns));
                    (id, from_ns)
                })
            })
            .collect();
        // The head's rows first, then the tables: a row that moves from the
        // head into a table meanwhile is then found in one or both (the
        // head's copy is never older).
        let head = lock(&self.rollup_head);
        let overlays = ranges
            .iter()
            .map(|r| match *r {
                Some((id, from_ns)) if from_ns < to_ns => {
                    let span = (id, width_ns, from_ns)..(id, width_ns, to_ns);
                    let run = |m: &BTreeMap<Key, Rollup>| -> Vec<(i64, Rollup)> {
                        m.range(span.clone())
                            .map(|((_, _, start), r)| (*start, r.clone()))
                            .collect()
                    };
                    // Frozen then live: the newest copy of a bucket wins.
                    let frozen = head.frozen.as_deref().map(run).unwrap_or_default();
                    blocks::overlay(frozen, run(&head.live))
                }
                _ => Vec::new(),
            })
            .collect();
        (ranges, overlays)
    }

    /// Many series' buckets in one read transaction: sealed blocks, under
    /// rows, under the head ([`Inner::fold_rollups_many`], kept).
    pub(super) fn scan_rollups_many(
        &self,
        series: &[SeriesKey],
        width_ns: i64,
        from_ns: i64,
        to_ns: i64,
        limit: usize,
    ) -> Result<Vec<Vec<(i64, Rollup)>>, StoreError> {
        struct Keep(Vec<Vec<(i64, Rollup)>>);
        impl crate::RollupFold for Keep {
            fn bucket(&mut self, series: usize, start_ns: i64, rollup: &Rollup) {
                self.0[series].push((start_ns, rollup.clone()));
            }
        }
        let mut kept = Keep(vec![Vec::new(); series.len()]);
        self.fold_rollups_many(series, width_ns, from_ns, to_ns, limit, &mut kept)?;
        Ok(kept.0)
    }

    /// Many series' buckets in one read transaction, handed to `fold` as
    /// sealed blocks are decoded: sealed blocks, under rows, under the head.
    pub(super) fn fold_rollups_many(
        &self,
        series: &[SeriesKey],
        width_ns: i64,
        from_ns: i64,
        to_ns: i64,
        limit: usize,
        fold: &mut dyn crate::RollupFold,
    ) -> Result<(), StoreError> {
        if from_ns >= to_ns || limit == 0 {
            return Ok(());
        }
        let (ranges, overlays) = self.rollup_sources(series, width_ns, from_ns, to_ns);
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(ROLLUPS).map_err(backend)?;
        let sealed = txn.open_table(BLOCKS).map_err(backend)?;
        let parts = fold.parts();
        for (i, (r, overlay)) in ranges.iter().zip(overlays).enumerate() {
            let Some((id, from_ns)) = *r else {
                continue;
            };
            let rows = scan_one(&table, id, width_ns, from_ns, to_ns, limit)?;
            let newer = blocks::overlay(rows, overlay);
            blocks::fold(
                &sealed,
                (id, width_ns),
                (from_ns, to_ns),
                newer,
                limit,
                parts,
                |start, rollup| {
                    fold.bucket(i, start, rollup);
                },
            )?;
        }
        Ok(())
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
