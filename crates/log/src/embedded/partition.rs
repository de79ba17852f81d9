//! One partition: its segments, its writer thread (group commit) and the
//! reads and truncation that run against it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

use super::format;
use super::segment::{self, INDEX_INTERVAL, Next, Segment};
use super::{read_lock, write_lock};
use crate::{LogError, LogRecord, Record};

/// Frames are gathered into a buffer of about this size before a `write`.
const WRITE_BUFFER: usize = 1024 * 1024;
/// The write buffer shrinks back after holding a frame larger than this.
const MAX_RETAINED_BUFFER: usize = 4 * WRITE_BUFFER;

/// The directory of partition `id` under the topic directory.
pub(crate) fn dir_name(id: u32) -> String {
    format!("partition-{id}")
}

/// State of a partition shared by its writer, readers and the truncator.
#[derive(Debug)]
pub(crate) struct Partition {
    pub(crate) id: u32,
    dir: PathBuf,
    /// Sorted by base offset; never empty; the last one is the active one.
    segments: RwLock<Vec<Arc<Segment>>>,
    /// Offset of the next record; every record below it is durable.
    high: AtomicU64,
    pub(crate) counters: Counters,
}

/// Monotonic counters of a partition.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) records: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) fsyncs: AtomicU64,
    pub(crate) group_commits: AtomicU64,
    pub(crate) segments_deleted: AtomicU64,
}

/// A request to the writer: append these records, in order, contiguously.
#[derive(Debug)]
pub(crate) struct AppendRequest {
    /// The partition to append to, one of the writer thread's.
    pub(crate) partition: u32,
    pub(crate) records: Vec<Record>,
    /// Answered with the offset of the first record once all are durable.
    pub(crate) reply: oneshot::Sender<Result<u64, LogError>>,
}

impl Partition {
    /// Opens (or creates) the partition directory, recovers the active
    /// segment and returns the partition with its writer, not yet running.
    pub(crate) fn open(
        topic_dir: &Path,
        id: u32,
        segment_bytes: u64,
        appended: Arc<watch::Sender<u64>>,
    ) -> Result<(Arc<Self>, Writer), LogError> {
        let dir = topic_dir.join(dir_name(id));
        if !dir.exists() {
            fs::create_dir(&dir)?;
            segment::sync_dir(topic_dir)?;
        }
        let mut bases = Vec::new();
        for entry in fs::read_dir(&dir)? {
            let name = entry?.file_name();
            match name.to_str().and_then(segment::parse_file_name) {
                Some(base) => bases.push(base),
                None => {
                    warn!(partition = id, file = ?name, "ignoring a file that is not a segment")
                }
            }
        }
        bases.sort_unstable();
        if bases.is_empty() {
            create_segment_file(&dir, 0)?;
            bases.push(0);
        }
        let Some((&active_base, sealed)) = bases.split_last() else {
            return Err(LogError::Corrupt(format!("partition {id} has no segment")));
        };
        let mut segments = Vec::with_capacity(bases.len());
        for &base in sealed {
            let path = dir.join(segment::file_name(base));
            let len = fs::metadata(&path)?.len();
            segments.push(Arc::new(Segment::open(path, base, len, Vec::new())?));
        }

        let path = dir.join(segment::file_name(active_base));
        let file = OpenOptions::new().read(true).append(true).open(&path)?;
        let recovered = segment::recover(&file, active_base)?;
        if let Some(why) = &recovered.invalid_tail {
            warn!(
                partition = id,
                segment = %path.display(),
                valid_bytes = recovered.valid_len,
                next_offset = recovered.next_offset,
                "truncating the invalid tail of the active segment: {why}"
            );
            file.set_len(recovered.valid_len)?;
            file.sync_all()?;
        }
        let last_indexed = recovered.index.last().map_or(0, |&(_, pos)| pos);
        let active = Arc::new(Segment::open(
            path,
            active_base,
            recovered.valid_len,
            recovered.index,
        )?);
        segments.push(Arc::clone(&active));
        let partition = Arc::new(Self {
            id,
            dir: dir.clone(),
            segments: RwLock::new(segments),
            high: AtomicU64::new(recovered.next_offset),
            counters: Counters::default(),
        });
        debug!(
            partition = id,
            low = partition.low(),
            high = recovered.next_offset,
            "partition opened"
        );
        let writer = Writer {
            partition: Arc::clone(&partition),
            dir,
            file,
            active,
            len: recovered.valid_len,
            last_indexed,
            next_offset: recovered.next_offset,
            segment_bytes,
            buf: Vec::with_capacity(WRITE_BUFFER),
            appended,
            failed: None,
        };
        Ok((partition, writer))
    }

    /// Offset of the oldest retained record.
    pub(crate) fn low(&self) -> u64 {
        read_lock(&self.segments).first().map_or(0, |s| s.base)
    }

    /// Offset of the next record; all records below are durable.
    pub(crate) fn high(&self) -> u64 {
        self.high.load(Ordering::Acquire)
    }

    /// Number of segment files and their durable bytes.
    pub(crate) fn disk_usage(&self) -> (usize, u64) {
        let segments = read_lock(&self.segments);
        (
            segments.len(),
            segments.iter().map(|s| s.durable_len()).sum(),
        )
    }

    /// Deletes every sealed segment whose records are all below `offset`,
    /// oldest first, and returns how many were deleted.
    pub(crate) fn truncate_below(&self, offset: u64) -> io::Result<usize> {
        let removed: Vec<Arc<Segment>> = {
            let mut segments = write_lock(&self.segments);
            // A segment's records are all below `offset` when the next
            // segment starts at or below it. The active segment stays.
            let n = segments
                .windows(2)
                .take_while(|w| w[1].base <= offset)
                .count();
            segments.drain(..n).collect()
        };
        if removed.is_empty() {
            return Ok(0);
        }
        for s in &removed {
            match fs::remove_file(&s.path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        segment::sync_dir(&self.dir)?;
        self.counters
            .segments_deleted
            .fetch_add(removed.len() as u64, Ordering::Relaxed);
        info!(
            partition = self.id,
            segments = removed.len(),
            low = self.low(),
            "deleted consumed segments"
        );
        Ok(removed.len())
    }

    /// Reads records from `*next` on into `out`, within `budget`; moves
    /// `*next` (and the cached `cursor`) past them. A position below the low
    /// watermark skips to it; a position at or above the high watermark reads
    /// nothing.
    pub(crate) fn read(
        &self,
        next: &mut u64,
        cursor: &mut Option<Cursor>,
        budget: &mut Budget,
        out: &mut Vec<LogRecord>,
    ) -> Result<(), LogError> {
        // `high` first: the writer publishes segment lengths before it.
        let high = self.high();
        let low = self.low();
        if *next < low {
            debug!(
                partition = self.id,
                from = *next,
                to = low,
                "skipping to the low watermark"
            );
            *next = low;
            *cursor = None;
        }
        if *next >= high || !budget.has_room() {
            return Ok(());
        }
        let mut cur = match cursor.take() {
            Some(c) if c.offset == *next => c,
            _ => self.seek(*next)?,
        };
        while cur.offset < high && budget.has_room() {
            {
                let mut reader = cur.segment.reader();
                while cur.offset < high && budget.has_room() {
                    let frame = match reader.next_at(cur.pos)? {
                        Next::End => break,
                        Next::Invalid(why) => {
                            return Err(self.corrupt(&cur.segment, cur.pos, &why));
                        }
                        Next::Frame(frame) => frame,
                    };
                    let view = format::parse(frame)
                        .map_err(|e| self.corrupt(&cur.segment, cur.pos, &e.to_string()))?;
                    if view.offset != cur.offset {
                        let why =
                            format!("offset {} where {} was expected", view.offset, cur.offset);
                        return Err(self.corrupt(&cur.segment, cur.pos, &why));
                    }
                    out.push(view.to_record(self.id));
                    budget.take(frame.len());
                    cur.pos += frame.len() as u64;
                    cur.offset += 1;
                }
            }
            if cur.offset >= high || !budget.has_room() {
                break;
            }
            // The segment is exhausted but more records are durable: they
            // are in the segment that starts where this one ends.
            cur = match self.segment_starting_at(cur.offset) {
                Some(segment) => Cursor {
                    segment,
                    pos: 0,
                    offset: cur.offset,
                },
                None if cur.offset < self.low() => {
                    // Truncated while we read; skip to what is left.
                    let low = self.low();
                    self.seek(low)?
                }
                None => {
                    let why = format!(
                        "no segment holds offset {} (high watermark {high})",
                        cur.offset
                    );
                    return Err(self.corrupt(&cur.segment, cur.pos, &why));
                }
            };
        }
        *next = cur.offset;
        *cursor = Some(cur);
        Ok(())
    }

    /// A cursor at durable record `offset` (`low <= offset < high`).
    fn seek(&self, offset: u64) -> Result<Cursor, LogError> {
        let segment = {
            let segments = read_lock(&self.segments);
            let at = segments.partition_point(|s| s.base <= offset);
            match at.checked_sub(1).and_then(|i| segments.get(i)) {
                Some(s) => Arc::clone(s),
                None => {
                    return Err(LogError::Corrupt(format!(
                        "partition {}: offset {offset} precedes every segment",
                        self.id
                    )));
                }
            }
        };
        let (mut at, mut pos) = segment.index_lookup(offset);
        let mut reader = segment.reader();
        while at < offset {
            let frame = match reader.next_at(pos)? {
                Next::Frame(frame) => frame,
                Next::End => {
                    return Err(self.corrupt(
                        &segment,
                        pos,
                        &format!("offset {offset} is past the segment's end"),
                    ));
                }
                Next::Invalid(why) => return Err(self.corrupt(&segment, pos, &why)),
            };
            if format::peek_offset(frame) != Some(at) {
                return Err(self.corrupt(&segment, pos, &format!("frame is not offset {at}")));
            }
            segment.note_position(at, pos);
            pos += frame.len() as u64;
            at += 1;
        }
        Ok(Cursor {
            segment,
            pos,
            offset,
        })
    }

    fn segment_starting_at(&self, base: u64) -> Option<Arc<Segment>> {
        let segments = read_lock(&self.segments);
        segments
            .binary_search_by_key(&base, |s| s.base)
            .ok()
            .map(|i| Arc::clone(&segments[i]))
    }

    fn corrupt(&self, segment: &Segment, pos: u64, why: &str) -> LogError {
        error!(partition = self.id, segment = %segment.path.display(), pos, "corrupt segment: {why}");
        LogError::Corrupt(format!(
            "partition {} segment {} at byte {pos}: {why}",
            self.id,
            segment.path.display()
        ))
    }
}

/// Where a reader stopped: the frame of `offset` starts at `pos` in `segment`.
#[derive(Debug)]
pub(crate) struct Cursor {
    segment: Arc<Segment>,
    pos: u64,
    offset: u64,
}

/// How much one poll may still return. At least one record is always allowed,
/// however large, so a record bigger than the byte budget cannot wedge a
/// consumer.
#[derive(Debug)]
pub(crate) struct Budget {
    records: usize,
    bytes: usize,
}

impl Budget {
    pub(crate) fn new(records: usize, bytes: usize) -> Self {
        Self {
            records,
            bytes: bytes.max(1),
        }
    }

    pub(crate) fn has_room(&self) -> bool {
        self.records > 0 && self.bytes > 0
    }

    fn take(&mut self, bytes: usize) {
        self.records -= 1;
        self.bytes = self.bytes.saturating_sub(bytes);
    }
}

fn create_segment_file(dir: &Path, base: u64) -> io::Result<(PathBuf, File)> {
    let path = dir.join(segment::file_name(base));
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .open(&path)?;
    // The entry must be durable before any record in the file is acknowledged.
    segment::sync_dir(dir)?;
    Ok((path, file))
}

/// The single writer of a partition, run on its own thread.
#[derive(Debug)]
pub(crate) struct Writer {
    partition: Arc<Partition>,
    dir: PathBuf,
    /// Append handle of the active segment.
    file: File,
    active: Arc<Segment>,
    /// Bytes written to the active segment (excluding `buf`).
    len: u64,
    /// Position of the last index entry of the active segment.
    last_indexed: u64,
    next_offset: u64,
    segment_bytes: u64,
    buf: Vec<u8>,
    appended: Arc<watch::Sender<u64>>,
    /// Set after an I/O error; the partition then refuses appends until reopened.
    failed: Option<String>,
}

/// The loop of one writer thread, which serves `writers`: the partitions
/// `p` with `p % threads` equal to its index, in increasing order (so the
/// writer of `p` is `writers[p / threads]`). Runs until every sender is
/// dropped and the queue is empty. Each round drains all waiting requests
/// (up to `max_batch`); for each partition with requests it writes them,
/// fsyncs once and answers them all (a group commit per partition).
pub(crate) fn run_writers(
    mut writers: Vec<Writer>,
    threads: u32,
    mut rx: mpsc::Receiver<AppendRequest>,
    max_batch: usize,
) {
    let mut batch = Vec::with_capacity(max_batch);
    let mut waiting: Vec<Vec<AppendRequest>> = writers.iter().map(|_| Vec::new()).collect();
    while rx.blocking_recv_many(&mut batch, max_batch) > 0 {
        for req in batch.drain(..) {
            let i = (req.partition / threads) as usize;
            debug_assert_eq!(writers[i].partition.id, req.partition);
            waiting[i].push(req);
        }
        for (writer, requests) in writers.iter_mut().zip(&mut waiting) {
            if !requests.is_empty() {
                writer.commit(requests);
            }
        }
    }
    let ids: Vec<u32> = writers.iter().map(|w| w.partition.id).collect();
    debug!(partitions = ?ids, "writer stopped");
}

impl Writer {
    fn commit(&mut self, batch: &mut Vec<AppendRequest>) {
        if let Some(why) = &self.failed {
            let msg = format!(
                "partition {} failed after an I/O error ({why}); reopen the log",
                self.partition.id
            );
            for req in batch.drain(..) {
                let _ = req.reply.send(Err(LogError::Backend(msg.clone())));
            }
            return;
        }
        let mut firsts = Vec::with_capacity(batch.len());
        match self.write_batch(batch, &mut firsts) {
            Ok(()) => {
                for (req, first) in batch.drain(..).zip(firsts) {
                    // The appender may have given up waiting; the records are stored anyway.
                    let _ = req.reply.send(Ok(first));
                }
            }
            Err(e) => {
                // After a failed write or fsync the file's state is unknown
                // (the kernel may have dropped dirty pages), so the partition
                // stops; reopening recovers the valid prefix.
                error!(partition = self.partition.id, error = %e, "append failed; the partition stops accepting appends");
                self.failed = Some(e.to_string());
                for req in batch.drain(..) {
                    let _ = req
                        .reply
                        .send(Err(LogError::Io(io::Error::new(e.kind(), e.to_string()))));
                }
            }
        }
    }

    fn write_batch(&mut self, batch: &[AppendRequest], firsts: &mut Vec<u64>) -> io::Result<()> {
        let (mut records, mut bytes) = (0u64, 0u64);
        for req in batch {
            firsts.push(self.next_offset);
            for record in &req.records {
                bytes += self.write_record(record)? as u64;
                records += 1;
            }
        }
        self.flush()?;
        self.file.sync_data()?;
        let c = &self.partition.counters;
        c.fsyncs.fetch_add(1, Ordering::Relaxed);
        c.group_commits.fetch_add(1, Ordering::Relaxed);
        c.records.fetch_add(records, Ordering::Relaxed);
        c.bytes.fetch_add(bytes, Ordering::Relaxed);
        // Lengths before the watermark: a reader that sees the new high
        // watermark also sees the bytes behind it.
        self.active.set_durable_len(self.len);
        self.partition
            .high
            .store(self.next_offset, Ordering::Release);
        self.appended.send_modify(|n| *n = n.wrapping_add(records));
        Ok(())
    }

    fn write_record(&mut self, record: &Record) -> io::Result<usize> {
        let size = format::frame_len(record);
        let mut pos = self.len + self.buf.len() as u64;
        if pos > 0 && pos + size as u64 > self.segment_bytes {
            self.roll()?;
            pos = 0;
        }
        if pos >= self.last_indexed + INDEX_INTERVAL {
            self.active.note_position(self.next_offset, pos);
            self.last_indexed = pos;
        }
        format::encode(self.next_offset, record, &mut self.buf);
        self.next_offset += 1;
        if self.buf.len() >= WRITE_BUFFER {
            self.flush()?;
        }
        Ok(size)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file.write_all(&self.buf)?;
        self.len += self.buf.len() as u64;
        self.buf.clear();
        if self.buf.capacity() > MAX_RETAINED_BUFFER {
            self.buf = Vec::with_capacity(WRITE_BUFFER);
        }
        Ok(())
    }

    /// Seals the active segment (durably) and starts a new one at the next offset.
    fn roll(&mut self) -> io::Result<()> {
        self.flush()?;
        self.file.sync_data()?;
        self.partition
            .counters
            .fsyncs
            .fetch_add(1, Ordering::Relaxed);
        // Sealed and durable; readers may read all of it.
        self.active.set_durable_len(self.len);
        let base = self.next_offset;
        let (path, file) = create_segment_file(&self.dir, base)?;
        let segment = Arc::new(Segment::open(path, base, 0, Vec::new())?);
        write_lock(&self.partition.segments).push(Arc::clone(&segment));
        debug!(
            partition = self.partition.id,
            base, "rolled to a new segment"
        );
        self.active = segment;
        self.file = file;
        self.len = 0;
        self.last_indexed = 0;
        Ok(())
    }
}
