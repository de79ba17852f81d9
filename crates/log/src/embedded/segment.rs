//! Segment files: naming, positional frame reads, the sparse offset index and
//! recovery of the active segment's tail.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::format::{self, FrameError, MIN_FRAME};
use super::lock;

/// Suffix of segment files.
const SEGMENT_SUFFIX: &str = ".log";
/// Bytes read at once when scanning frames.
const READ_CHUNK: usize = 256 * 1024;
/// One sparse-index entry per this many bytes of segment.
pub(crate) const INDEX_INTERVAL: u64 = 64 * 1024;

/// The file name of the segment whose first record has offset `base`.
pub(crate) fn file_name(base: u64) -> String {
    format!("{base:020}{SEGMENT_SUFFIX}")
}

/// The base offset encoded in a segment file name, if it is one.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Makes directory entry changes (create, rename, delete) in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// One segment file, shared by the partition's writer and its readers.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Offset of the segment's first record.
    pub(crate) base: u64,
    pub(crate) path: PathBuf,
    /// Read handle. Readers keep reading it after the file is unlinked.
    file: File,
    /// Bytes known to be fsynced. Readers never read past it.
    durable_len: AtomicU64,
    /// Sorted `(offset, file position)` pairs, about [`INDEX_INTERVAL`] apart.
    index: Mutex<Vec<(u64, u64)>>,
}

impl Segment {
    /// Opens the read handle of an existing segment file.
    pub(crate) fn open(
        path: PathBuf,
        base: u64,
        durable_len: u64,
        index: Vec<(u64, u64)>,
    ) -> io::Result<Self> {
        let file = File::open(&path)?;
        Ok(Self {
            base,
            path,
            file,
            durable_len: AtomicU64::new(durable_len),
            index: Mutex::new(index),
        })
    }

    pub(crate) fn durable_len(&self) -> u64 {
        self.durable_len.load(Ordering::Acquire)
    }

    /// Publishes that the first `len` bytes are fsynced.
    pub(crate) fn set_durable_len(&self, len: u64) {
        self.durable_len.store(len, Ordering::Release);
    }

    /// A reader over the segment's durable bytes.
    pub(crate) fn reader(&self) -> FrameReader<'_> {
        FrameReader::new(&self.file, self.durable_len())
    }

    /// Remembers that the frame of `offset` starts at `pos`, unless an entry
    /// within [`INDEX_INTERVAL`] bytes exists.
    pub(crate) fn note_position(&self, offset: u64, pos: u64) {
        let mut index = lock(&self.index);
        let at = index.partition_point(|&(o, _)| o < offset);
        let far_from_prev =
            at == 0 && pos >= INDEX_INTERVAL || at > 0 && pos >= index[at - 1].1 + INDEX_INTERVAL;
        let far_from_next = index
            .get(at)
            .is_none_or(|&(_, p)| p >= pos + INDEX_INTERVAL);
        if far_from_prev && far_from_next {
            index.insert(at, (offset, pos));
        }
    }

    /// The closest known frame start at or before `offset`.
    pub(crate) fn index_lookup(&self, offset: u64) -> (u64, u64) {
        let index = lock(&self.index);
        let at = index.partition_point(|&(o, _)| o <= offset);
        if at == 0 {
            (self.base, 0)
        } else {
            index[at - 1]
        }
    }
}

/// What is at a position of a segment.
#[derive(Debug)]
pub(crate) enum Next<'a> {
    /// The position is the end of the readable bytes.
    End,
    /// A whole frame (not yet checked beyond its length field).
    Frame(&'a [u8]),
    /// Bytes that cannot start a frame: a torn write, or corruption.
    Invalid(String),
}

/// Reads frames from a file by position, a chunk at a time, never past `end`.
#[derive(Debug)]
pub(crate) struct FrameReader<'f> {
    file: &'f File,
    end: u64,
    buf: Vec<u8>,
    /// File position of `buf[0]`.
    buf_pos: u64,
}

impl<'f> FrameReader<'f> {
    pub(crate) fn new(file: &'f File, end: u64) -> Self {
        Self {
            file,
            end,
            buf: Vec::new(),
            buf_pos: 0,
        }
    }

    /// The frame starting at `pos`.
    pub(crate) fn next_at(&mut self, pos: u64) -> io::Result<Next<'_>> {
        if pos >= self.end {
            return Ok(Next::End);
        }
        let left = self.end - pos;
        if left < MIN_FRAME as u64 {
            return Ok(Next::Invalid(format!(
                "{left} trailing bytes are shorter than a frame"
            )));
        }
        self.fill(pos, 4)?;
        let at = (pos - self.buf_pos) as usize;
        let prefix = [
            self.buf[at],
            self.buf[at + 1],
            self.buf[at + 2],
            self.buf[at + 3],
        ];
        let total = match format::total_len(prefix) {
            Ok(total) => total,
            Err(e) => return Ok(Next::Invalid(e.to_string())),
        };
        if total as u64 > left {
            return Ok(Next::Invalid(format!(
                "frame of {total} bytes runs past the end ({left} bytes left)"
            )));
        }
        self.fill(pos, total)?;
        let at = (pos - self.buf_pos) as usize;
        Ok(Next::Frame(&self.buf[at..at + total]))
    }

    /// Ensures `buf` holds `[pos, pos + len)`; `pos + len <= end`.
    fn fill(&mut self, pos: u64, len: usize) -> io::Result<()> {
        let buf_end = self.buf_pos + self.buf.len() as u64;
        if pos >= self.buf_pos && pos + len as u64 <= buf_end {
            return Ok(());
        }
        // Both bounds are at most `end - pos`, which fits the frame or chunk.
        let want = len
            .max(READ_CHUNK)
            .min(usize::try_from(self.end - pos).unwrap_or(usize::MAX));
        self.buf.clear();
        self.buf.resize(want, 0);
        self.buf_pos = pos;
        self.file.read_exact_at(&mut self.buf, pos)
    }
}

/// The valid prefix of a segment found by [`recover`].
#[derive(Debug)]
pub(crate) struct Recovered {
    /// Bytes of complete, valid frames with consecutive offsets.
    pub(crate) valid_len: u64,
    /// Offset the next record gets.
    pub(crate) next_offset: u64,
    /// Sparse index of the valid frames.
    pub(crate) index: Vec<(u64, u64)>,
    /// Why scanning stopped before the end of the file, if it did.
    pub(crate) invalid_tail: Option<String>,
}

/// Scans every frame of a segment from its start and stops at the first one
/// that is torn, corrupt or out of sequence.
pub(crate) fn recover(file: &File, base: u64) -> io::Result<Recovered> {
    let file_len = file.metadata()?.len();
    let mut reader = FrameReader::new(file, file_len);
    let (mut pos, mut next_offset) = (0u64, base);
    let mut index = Vec::new();
    let mut last_indexed: Option<u64> = None;
    let invalid_tail = loop {
        let frame = match reader.next_at(pos)? {
            Next::End => break None,
            Next::Invalid(why) => break Some(why),
            Next::Frame(frame) => frame,
        };
        match format::parse(frame) {
            Ok(view) if view.offset == next_offset => {}
            Ok(view) => {
                break Some(format!(
                    "offset {} where {next_offset} was expected",
                    view.offset
                ));
            }
            Err(FrameError::Checksum) => break Some("checksum mismatch".into()),
            Err(e) => break Some(e.to_string()),
        }
        if last_indexed.is_none_or(|last| pos >= last + INDEX_INTERVAL) && pos >= INDEX_INTERVAL {
            index.push((next_offset, pos));
            last_indexed = Some(pos);
        }
        pos += frame.len() as u64;
        next_offset += 1;
    };
    let invalid_tail = invalid_tail.map(|why| format!("{why} at byte {pos} of {file_len}"));
    Ok(Recovered {
        valid_len: pos,
        next_offset,
        index,
        invalid_tail,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use bytes::Bytes;

    use super::*;
    use crate::Record;

    #[test]
    fn names_round_trip_and_sort_numerically() {
        assert_eq!(file_name(42), "00000000000000000042.log");
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_file_name("00000000000000000042.log.tmp"), None);
        assert_eq!(parse_file_name("42.log"), None);
        assert_eq!(parse_file_name("0000000000000000004x.log"), None);
        assert!(file_name(9) < file_name(10));
    }

    fn write_frames(file: &mut File, base: u64, n: u64, value_len: usize) -> u64 {
        let mut buf = Vec::new();
        for i in 0..n {
            let r = Record {
                key: Bytes::new(),
                value: Bytes::from(vec![i as u8; value_len]),
                headers: vec![],
                timestamp_ms: 0,
            };
            format::encode(base + i, &r, &mut buf);
        }
        file.write_all(&buf).expect("write");
        buf.len() as u64
    }

    #[test]
    fn recover_stops_at_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(file_name(100));
        let mut file = File::create(&path).expect("create");
        let good = write_frames(&mut file, 100, 5, 10);
        file.write_all(&[1, 2, 3]).expect("write");
        let r = recover(&File::open(&path).expect("open"), 100).expect("recover");
        assert_eq!(r.valid_len, good);
        assert_eq!(r.next_offset, 105);
        assert!(r.invalid_tail.is_some());
    }

    #[test]
    fn recover_rejects_out_of_sequence_offsets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(file_name(0));
        let mut file = File::create(&path).expect("create");
        let good = write_frames(&mut file, 0, 3, 1);
        write_frames(&mut file, 7, 2, 1);
        let r = recover(&File::open(&path).expect("open"), 0).expect("recover");
        assert_eq!((r.valid_len, r.next_offset), (good, 3));
        assert!(r.invalid_tail.is_some_and(|why| why.contains("offset 7")));
    }

    #[test]
    fn index_finds_frames_and_reader_reads_across_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(file_name(0));
        let mut file = File::create(&path).expect("create");
        // 400 frames of ~5 KiB: several read chunks and index entries.
        let len = write_frames(&mut file, 0, 400, 5000);
        let file = File::open(&path).expect("open");
        let r = recover(&file, 0).expect("recover");
        assert_eq!(
            (r.valid_len, r.next_offset, r.invalid_tail),
            (len, 400, None)
        );
        assert!(r.index.len() > 20, "index has {} entries", r.index.len());
        let seg = Segment::open(path, 0, len, r.index).expect("segment");
        let (o, mut pos) = seg.index_lookup(333);
        assert!(o <= 333 && o > 300, "lookup gave offset {o}");
        let mut reader = seg.reader();
        for want in o..400 {
            let Next::Frame(frame) = reader.next_at(pos).expect("read") else {
                panic!("no frame at {pos}")
            };
            let view = format::parse(frame).expect("valid");
            assert_eq!(view.offset, want);
            assert_eq!(view.to_record(0).value[0], want as u8);
            pos += frame.len() as u64;
        }
        assert!(matches!(reader.next_at(pos).expect("read"), Next::End));
    }

    #[test]
    fn note_position_keeps_entries_sorted_and_spaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(file_name(0));
        File::create(&path).expect("create");
        let seg = Segment::open(path, 0, 0, vec![]).expect("segment");
        seg.note_position(10, 10 * INDEX_INTERVAL);
        seg.note_position(3, 3 * INDEX_INTERVAL);
        seg.note_position(4, 3 * INDEX_INTERVAL + 1); // Too close to 3: skipped.
        seg.note_position(0, 0); // Position 0 needs no entry.
        assert_eq!(
            *lock(&seg.index),
            vec![(3, 3 * INDEX_INTERVAL), (10, 10 * INDEX_INTERVAL)]
        );
        assert_eq!(seg.index_lookup(2), (0, 0));
        assert_eq!(seg.index_lookup(9), (3, 3 * INDEX_INTERVAL));
        assert_eq!(seg.index_lookup(99), (10, 10 * INDEX_INTERVAL));
    }
}
