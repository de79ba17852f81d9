//! Sealed rollup blocks: the buckets of one series in one tier over
//! [`BLOCK_BUCKETS`] consecutive bucket widths, in one row of table
//! `rollup_blocks`, keyed `(series id, tier width, block start)`.
//!
//! A long aggregate reads one row per block instead of one per bucket: a
//! month of hour buckets is 12 rows rather than 720, which is most of what
//! a fleet-wide aggregate costs (see docs/rollups.md, "Storage").
//!
//! Buckets of a block that is still open (its end is less than
//! [`SEAL_GRACE`] ago) stay one row per bucket in table `rollups`, since the
//! processor rewrites them at every flush, and the block's key is listed in
//! table `rollup_open`. A rollup compaction seals the blocks that have
//! closed: it merges their rows into the block row and deletes them, in one
//! transaction. A bucket written to a sealed block (a late correction) is
//! merged into it directly. Readers merge the three sources, newest last:
//! block, row, then the in-memory head.

use redb::{ReadableTable, TableDefinition};
use tributary_core::rollup::{Parts, Rollup, bucket_start};

use super::backend;
use crate::StoreError;

pub(super) const BLOCKS: TableDefinition<'static, (u64, i64, i64), &[u8]> =
    TableDefinition::new("rollup_blocks");
/// Blocks that have rows in table `rollups`, to be sealed once closed.
pub(super) const OPEN: TableDefinition<'static, (u64, i64, i64), ()> =
    TableDefinition::new("rollup_open");

/// Buckets per block.
pub(super) const BLOCK_BUCKETS: i64 = 64;
/// How long after its end a block is sealed: the processor rewrites the
/// buckets of the last minutes at every flush, and those should stay cheap
/// rows until they settle.
pub(super) const SEAL_GRACE_NS: i64 = 3600 * 1_000_000_000;

/// `(series id, tier width, start)`.
pub(super) type Key = (u64, i64, i64);

fn corrupt() -> StoreError {
    StoreError::Backend("corrupt rollup block".into())
}

/// The span of a block of the tier of `width_ns`, in ns (tier widths are at
/// most a day, so this cannot overflow).
pub(super) fn span(width_ns: i64) -> i64 {
    width_ns.saturating_mul(BLOCK_BUCKETS)
}

/// The start of the block that holds the bucket starting at `start_ns`.
pub(super) fn block_of(width_ns: i64, start_ns: i64) -> i64 {
    bucket_start(start_ns, span(width_ns))
}

/// Whether the block starting at `block_ns` is sealed at `now_ns`.
pub(super) fn closed(width_ns: i64, block_ns: i64, now_ns: i64) -> bool {
    block_ns.saturating_add(span(width_ns)) <= now_ns.saturating_sub(SEAL_GRACE_NS)
}

/// Encodes a block's buckets, sorted by start, all inside the block: a
/// version byte (1), then per bucket its index in the block (u8), the
/// length of its encoded rollup (u16 LE) and the encoded rollup.
pub(super) fn encode(width_ns: i64, block_ns: i64, buckets: &[(i64, Rollup)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + buckets.len() * 100);
    out.push(1);
    for (start, rollup) in buckets {
        let index = (start - block_ns) / width_ns;
        debug_assert!(
            (0..BLOCK_BUCKETS).contains(&index),
            "bucket outside its block"
        );
        let bytes = rollup.encode();
        out.push(index as u8);
        out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

/// Appends the buckets of an encoded block whose start is in
/// `[from_ns, to_ns)` to `out`, in order.
pub(super) fn decode_into(
    bytes: &[u8],
    width_ns: i64,
    block_ns: i64,
    from_ns: i64,
    to_ns: i64,
    out: &mut Vec<(i64, Rollup)>,
) -> Result<(), StoreError> {
    for_each(
        bytes,
        width_ns,
        block_ns,
        from_ns,
        to_ns,
        Parts::ALL,
        |start, rollup| {
            out.push((start, rollup.clone()));
            true
        },
    )
}

/// Hands the buckets of an encoded block whose start is in
/// `[from_ns, to_ns)` to `f`, in order, while it returns true (each
/// decoded into the same rollup).
pub(super) fn for_each(
    bytes: &[u8],
    width_ns: i64,
    block_ns: i64,
    from_ns: i64,
    to_ns: i64,
    parts: Parts,
    mut f: impl FnMut(i64, &Rollup) -> bool,
) -> Result<(), StoreError> {
    let Some((&1, mut rest)) = bytes.split_first() else {
        return Err(corrupt());
    };
    let mut rollup = Rollup::default();
    while !rest.is_empty() {
        if rest.len() < 3 {
            return Err(corrupt());
        }
        let index = i64::from(rest[0]);
        let len = usize::from(u16::from_le_bytes([rest[1], rest[2]]));
        let body = rest.get(3..3 + len).ok_or_else(corrupt)?;
        rest = &rest[3 + len..];
        let start = block_ns + index * width_ns;
        if start >= to_ns {
            break;
        }
        if start >= from_ns {
            if !rollup.decode_parts(body, parts) {
                return Err(corrupt());
            }
            if !f(start, &rollup) {
                break;
            }
        }
    }
    Ok(())
}

/// Merges two runs sorted by start; on equal starts `newer`'s bucket wins.
pub(super) fn overlay(older: Vec<(i64, Rollup)>, newer: Vec<(i64, Rollup)>) -> Vec<(i64, Rollup)> {
    if newer.is_empty() {
        return older;
    }
    if older.is_empty() {
        return newer;
    }
    // Newer buckets after the older ones (the rows of the newest, open block).
    let mut older = older;
    if older.last().map(|(s, _)| s) < newer.first().map(|(s, _)| s) {
        older.extend(newer);
        return older;
    }
    let mut out = Vec::with_capacity(older.len() + newer.len());
    let mut older = older.into_iter().peekable();
    for (start, rollup) in newer {
        while let Some(o) = older.next_if(|(s, _)| *s < start) {
            out.push(o);
        }
        older.next_if(|(s, _)| *s == start);
        out.push((start, rollup));
    }
    out.extend(older);
    out
}

/// Hands the buckets of one series in one tier in `[from_ns, to_ns)` to
/// `f`, in order, at most `limit`: those of sealed blocks, each replaced by
/// the bucket of `newer` (sorted) with the same start, and `newer`'s other
/// buckets in their place. Blocks are decoded as they are read.
pub(super) fn fold(
    table: &impl ReadableTable<(u64, i64, i64), &'static [u8]>,
    (id, width_ns): (u64, i64),
    (from_ns, to_ns): (i64, i64),
    newer: Vec<(i64, Rollup)>,
    limit: usize,
    parts: Parts,
    mut f: impl FnMut(i64, &Rollup),
) -> Result<(), StoreError> {
    if limit == 0 {
        return Ok(());
    }
    // By index rather than a peekable iterator, which would move a rollup
    // in and out of its peeked slot at every sealed bucket.
    let mut next = 0;
    let mut left = limit;
    // False once `limit` buckets went out.
    let mut emit = |start: i64, rollup: &Rollup| {
        f(start, rollup);
        left -= 1;
        left > 0
    };
    let mut more = true;
    if from_ns < to_ns {
        let first = block_of(width_ns, from_ns);
        for row in table
            .range((id, width_ns, first)..(id, width_ns, to_ns))
            .map_err(backend)?
        {
            let (k, v) = row.map_err(backend)?;
            for_each(
                v.value(),
                width_ns,
                k.value().2,
                from_ns,
                to_ns,
                parts,
                |start, rollup| {
                    while let Some((s, r)) = newer.get(next).filter(|(s, _)| *s < start) {
                        next += 1;
                        if !emit(*s, r) {
                            more = false;
                            return false;
                        }
                    }
                    more = match newer.get(next).filter(|(s, _)| *s == start) {
                        Some((s, r)) => {
                            next += 1;
                            emit(*s, r)
                        }
                        None => emit(start, rollup),
                    };
                    more
                },
            )?;
            if !more {
                break;
            }
        }
    }
    if more {
        for (s, r) in &newer[next..] {
            if !emit(*s, r) {
                break;
            }
        }
    }
    Ok(())
}

/// Merges `buckets` (sorted, all in the block `(id, width, block)`) into
/// that block, over what it and the `rollups` rows inside it held; deletes
/// those rows and the block's `rollup_open` entry.
pub(super) fn seal(
    blocks: &mut redb::Table<'_, (u64, i64, i64), &'static [u8]>,
    rows: &mut redb::Table<'_, (u64, i64, i64), &'static [u8]>,
    open: &mut redb::Table<'_, (u64, i64, i64), ()>,
    (id, width_ns, block_ns): Key,
    buckets: Vec<(i64, Rollup)>,
) -> Result<(), StoreError> {
    let end = block_ns.saturating_add(span(width_ns));
    let mut held = Vec::new();
    if let Some(v) = blocks.get((id, width_ns, block_ns)).map_err(backend)? {
        decode_into(v.value(), width_ns, block_ns, i64::MIN, i64::MAX, &mut held)?;
    }
    let mut loose = Vec::new();
    for entry in rows
        .extract_from_if((id, width_ns, block_ns)..(id, width_ns, end), |_, _| true)
        .map_err(backend)?
    {
        let (k, v) = entry.map_err(backend)?;
        let rollup = Rollup::decode(v.value()).ok_or_else(corrupt)?;
        loose.push((k.value().2, rollup));
    }
    open.remove((id, width_ns, block_ns)).map_err(backend)?;
    let merged = overlay(overlay(held, loose), buckets);
    if merged.is_empty() {
        return Ok(());
    }
    blocks
        .insert(
            (id, width_ns, block_ns),
            encode(width_ns, block_ns, &merged).as_slice(),
        )
        .map_err(backend)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_core::{Sample, Value};

    fn rollup(x: f64) -> Rollup {
        Rollup::of(&[Sample {
            ts_ns: 1,
            value: Value::F64(x),
        }])
    }

    #[test]
    fn a_block_decodes_to_the_buckets_it_was_given_within_a_range() {
        let width = 60;
        let block = block_of(width, 60 * 130);
        assert_eq!(block, 60 * 128);
        let buckets: Vec<(i64, Rollup)> = [0, 1, 5, 63]
            .iter()
            .map(|i| (block + i * width, rollup(*i as f64)))
            .collect();
        let bytes = encode(width, block, &buckets);
        let mut all = Vec::new();
        decode_into(&bytes, width, block, i64::MIN, i64::MAX, &mut all).unwrap();
        assert_eq!(all, buckets);
        let mut some = Vec::new();
        decode_into(
            &bytes,
            width,
            block,
            block + width,
            block + 6 * width,
            &mut some,
        )
        .unwrap();
        assert_eq!(some, buckets[1..3]);
        let mut truncated = Vec::new();
        assert!(
            decode_into(
                &bytes[..bytes.len() - 1],
                width,
                block,
                i64::MIN,
                i64::MAX,
                &mut truncated
            )
            .is_err()
        );
        assert!(decode_into(&[2], width, block, 0, 1, &mut truncated).is_err());
    }

    #[test]
    fn overlay_keeps_order_and_prefers_the_newer_bucket() {
        let older = vec![(1, rollup(1.0)), (3, rollup(3.0)), (5, rollup(5.0))];
        let newer = vec![(0, rollup(10.0)), (3, rollup(30.0)), (6, rollup(60.0))];
        let got = overlay(older, newer);
        let starts: Vec<i64> = got.iter().map(|(s, _)| *s).collect();
        assert_eq!(starts, [0, 1, 3, 5, 6]);
        assert_eq!(got[2].1, rollup(30.0));
    }

    #[test]
    fn a_block_closes_a_grace_after_its_end() {
        let width = 3600 * 1_000_000_000;
        let end = span(width);
        assert!(!closed(width, 0, end));
        assert!(!closed(width, 0, end + SEAL_GRACE_NS - 1));
        assert!(closed(width, 0, end + SEAL_GRACE_NS));
    }

    /// A store holding one series with a point at `at`, and its inner state.
    async fn store_with_series(
        dir: &std::path::Path,
        at: i64,
    ) -> std::sync::Arc<crate::embedded::EmbeddedStore> {
        use crate::{DevicePoints, Store};
        use tributary_core::Point;
        let store = crate::embedded::EmbeddedStore::open(dir, Default::default()).unwrap();
        store
            .write(&[DevicePoints {
                tenant: "t".into(),
                device: "d".into(),
                points: vec![Point {
                    metric: "m".into(),
                    ts_ns: at,
                    value: Value::F64(0.0),
                }],
            }])
            .await
            .unwrap();
        store.flush().await.unwrap();
        store
    }

    fn series() -> tributary_core::SeriesKey {
        tributary_core::SeriesKey::new("t", "d", "m")
    }

    fn key(start_ns: i64) -> tributary_core::rollup::RollupKey {
        tributary_core::rollup::RollupKey {
            series: series(),
            width_ns: MINUTE,
            start_ns,
        }
    }

    const MINUTE: i64 = 60 * 1_000_000_000;

    /// (start, sum) of what a scan and point lookups return.
    fn read(inner: &crate::embedded::Inner, from: i64, to: i64) -> Vec<(i64, f64)> {
        let scanned: Vec<(i64, f64)> = inner
            .scan_rollups_many(&[series()], MINUTE, from, to, usize::MAX)
            .unwrap()
            .pop()
            .unwrap()
            .into_iter()
            .map(|(s, r)| (s, r.sum))
            .collect();
        let keys: Vec<_> = scanned.iter().map(|(s, _)| key(*s)).collect();
        let got: Vec<(i64, f64)> = inner
            .get_rollups(&keys)
            .unwrap()
            .into_iter()
            .zip(&keys)
            .map(|(r, k)| (k.start_ns, r.expect("a scanned bucket is found").sum))
            .collect();
        assert_eq!(got, scanned, "point lookups agree with the scan");
        for limit in [usize::MAX, 2] {
            let mut folded = Collect::default();
            inner
                .fold_rollups_many(&[series()], MINUTE, from, to, limit, &mut folded)
                .unwrap();
            let expected: Vec<(i64, f64)> = scanned.iter().copied().take(limit).collect();
            assert_eq!(
                folded.0, expected,
                "a fold agrees with the scan (limit {limit})"
            );
        }
        scanned
    }

    #[derive(Default)]
    struct Collect(Vec<(i64, f64)>);

    impl crate::RollupFold for Collect {
        fn bucket(&mut self, series: usize, start_ns: i64, rollup: &Rollup) {
            assert_eq!(series, 0);
            self.0.push((start_ns, rollup.sum));
        }
    }

    /// Rows in `rollups`, rows in `rollup_blocks`, and blocks listed open.
    fn tables(inner: &crate::embedded::Inner) -> (u64, u64, u64) {
        use redb::{ReadableDatabase, ReadableTableMetadata};
        let txn = inner.db.begin_read().unwrap();
        (
            txn.open_table(super::super::rollups::ROLLUPS)
                .unwrap()
                .len()
                .unwrap(),
            txn.open_table(BLOCKS).unwrap().len().unwrap(),
            txn.open_table(OPEN).unwrap().len().unwrap(),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocks_are_sealed_once_closed_corrected_in_place_and_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let a = block_of(
            MINUTE,
            tributary_core::time::now_ns() - 10 * 86_400 * 1_000_000_000,
        );
        let b = a + span(MINUTE);
        let store = store_with_series(dir.path(), a).await;
        let inner = &store.inner;
        let write = |rows: &[(i64, f64)]| {
            let rows: Vec<_> = rows.iter().map(|&(s, v)| (key(s), rollup(v))).collect();
            inner.write_rollups(&rows).unwrap();
        };
        write(&[
            (a, 1.0),
            (a + MINUTE, 2.0),
            (a + 63 * MINUTE, 3.0),
            (b, 4.0),
        ]);
        let all = vec![
            (a, 1.0),
            (a + MINUTE, 2.0),
            (a + 63 * MINUTE, 3.0),
            (b, 4.0),
        ];
        assert_eq!(read(inner, a, b + span(MINUTE)), all, "from the head");

        // Both blocks still open: rows, and both listed.
        assert!(inner.compact_rollups(a + span(MINUTE) / 2).unwrap());
        assert_eq!(tables(inner), (4, 0, 2));
        assert_eq!(read(inner, a, b + span(MINUTE)), all, "from rows");

        // A grace after its end, block a is sealed; b stays rows.
        assert!(inner.compact_rollups(b + SEAL_GRACE_NS).unwrap());
        assert_eq!(tables(inner), (1, 1, 1));
        assert_eq!(
            read(inner, a, b + span(MINUTE)),
            all,
            "from a block and a row"
        );
        assert_eq!(
            read(inner, a + MINUTE, a + 2 * MINUTE),
            [(a + MINUTE, 2.0)],
            "inside a block"
        );

        // A late correction in the sealed block, over it from the head, then in it.
        write(&[(a + MINUTE, 20.0), (a + 5 * MINUTE, 5.0)]);
        let corrected = vec![
            (a, 1.0),
            (a + MINUTE, 20.0),
            (a + 5 * MINUTE, 5.0),
            (a + 63 * MINUTE, 3.0),
            (b, 4.0),
        ];
        assert_eq!(
            read(inner, a, b + span(MINUTE)),
            corrected,
            "head over a block"
        );
        assert!(inner.compact_rollups(b + SEAL_GRACE_NS).unwrap());
        assert_eq!(tables(inner), (1, 1, 1));
        assert_eq!(
            read(inner, a, b + span(MINUTE)),
            corrected,
            "corrected in the block"
        );
        drop(store);

        // A store from before blocks: every bucket a row, none listed.
        {
            use redb::ReadableTable;
            let db = redb::Database::create(dir.path().join(crate::embedded::FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut sealed = txn.open_table(BLOCKS).unwrap();
                let mut rows = txn.open_table(super::super::rollups::ROLLUPS).unwrap();
                let mut blocks_held = Vec::new();
                for e in sealed.iter().unwrap() {
                    let (k, v) = e.unwrap();
                    let (id, width, block) = k.value();
                    let mut buckets = Vec::new();
                    decode_into(v.value(), width, block, i64::MIN, i64::MAX, &mut buckets).unwrap();
                    blocks_held.push((id, width, buckets));
                }
                sealed.retain(|_, _| false).unwrap();
                for (id, width, buckets) in blocks_held {
                    for (start, r) in buckets {
                        rows.insert((id, width, start), r.encode().as_slice())
                            .unwrap();
                    }
                }
                txn.open_table(OPEN).unwrap().retain(|_, _| false).unwrap();
                txn.open_table(super::super::META)
                    .unwrap()
                    .remove("rollup_layout")
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let store = crate::embedded::EmbeddedStore::open(dir.path(), Default::default()).unwrap();
        let inner = &store.inner;
        // (The compactor, woken at open, may be sealing them meanwhile.)
        assert_eq!(read(inner, a, b + span(MINUTE)), corrected, "legacy rows");
        // Listed at open, sealed by the next compaction (both closed by now).
        store.compact().await.unwrap();
        assert_eq!(tables(inner), (0, 2, 0));
        assert_eq!(
            read(inner, a, b + span(MINUTE)),
            corrected,
            "migrated into blocks"
        );
    }
}
