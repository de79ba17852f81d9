//! Record framing on disk. Pure functions over byte slices, no I/O.
//!
//! A frame, all integers little-endian:
//!
//! ```text
//! len: u32          bytes after this field (crc + body)
//! crc: u32          CRC-32 (IEEE) of the body
//! body:
//!   offset: u64
//!   timestamp_ms: i64
//!   key_len: u32
//!   header_count: u32
//!   value_len: u32
//!   key: [u8; key_len]
//!   header_count × (name_len: u32, name: UTF-8, value_len: u32, value)
//!   value: [u8; value_len]
//! ```
//!
//! The body must be consumed exactly: trailing bytes make a frame invalid.

use std::fmt;

use bytes::Bytes;

use crate::{LogRecord, Record};

/// Bytes of the length field.
const LEN_FIELD: usize = 4;
/// Bytes of the length and CRC fields, which precede the checksummed body.
const PREFIX: usize = LEN_FIELD + 4;
/// Fixed part of the body: offset, timestamp, key length, header count, value length.
const FIXED_BODY: usize = 8 + 8 + 4 + 4 + 4;
/// Size of a frame with an empty key, no headers and an empty value.
pub(crate) const MIN_FRAME: usize = PREFIX + FIXED_BODY;
/// Bytes each header adds besides its name and value.
const HEADER_OVERHEAD: usize = 8;
/// The largest frame the format admits, whatever the configuration (1 GiB).
/// Readers use this bound, so records written under a larger
/// `max_record_bytes` stay readable after the limit is lowered.
pub(crate) const MAX_FRAME: usize = 1 << 30;

/// Why a frame could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The length field is below the minimum or above [`MAX_FRAME`].
    BadLength(u64),
    /// The body does not match its checksum.
    Checksum,
    /// The body's fields do not add up to its length.
    Malformed(&'static str),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadLength(len) => write!(f, "invalid frame length {len}"),
            Self::Checksum => f.write_str("checksum mismatch"),
            Self::Malformed(what) => write!(f, "malformed frame: {what}"),
        }
    }
}

/// The encoded size of `record`, saturating (an absurd size fails the limit
/// check rather than wrapping).
pub(crate) fn frame_len(record: &Record) -> usize {
    record
        .headers
        .iter()
        .fold(MIN_FRAME, |acc, (name, value)| {
            acc.saturating_add(HEADER_OVERHEAD)
                .saturating_add(name.len())
                .saturating_add(value.len())
        })
        .saturating_add(record.key.len())
        .saturating_add(record.value.len())
}

/// Appends the frame of `record` at `offset` to `out` and returns its size.
///
/// The caller has checked `frame_len(record) <= MAX_FRAME`, so every length
/// fits in a `u32`.
pub(crate) fn encode(offset: u64, record: &Record, out: &mut Vec<u8>) -> usize {
    let total = frame_len(record);
    debug_assert!(total <= MAX_FRAME, "caller must enforce the frame limit");
    let start = out.len();
    out.reserve(total);
    put_len(out, total - LEN_FIELD);
    out.extend_from_slice(&[0; 4]); // CRC, filled in below.
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&record.timestamp_ms.to_le_bytes());
    put_len(out, record.key.len());
    put_len(out, record.headers.len());
    put_len(out, record.value.len());
    out.extend_from_slice(&record.key);
    for (name, value) in &record.headers {
        put_len(out, name.len());
        out.extend_from_slice(name.as_bytes());
        put_len(out, value.len());
        out.extend_from_slice(value);
    }
    out.extend_from_slice(&record.value);
    let crc = crc32fast::hash(&out[start + PREFIX..]);
    out[start + LEN_FIELD..start + PREFIX].copy_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(out.len() - start, total);
    total
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    // Lengths are bounded by MAX_FRAME (< u32::MAX), checked before encoding.
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
}

/// Reads the total frame size (length field included) from the first four
/// bytes of a frame.
pub(crate) fn total_len(prefix: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(prefix) as usize;
    let total = len.saturating_add(LEN_FIELD);
    if !(MIN_FRAME..=MAX_FRAME).contains(&total) {
        return Err(FrameError::BadLength(len as u64));
    }
    Ok(total)
}

/// A checked frame borrowing its bytes.
#[derive(Debug)]
pub(crate) struct FrameView<'a> {
    pub(crate) offset: u64,
    timestamp_ms: i64,
    key: &'a [u8],
    header_count: usize,
    headers: &'a [u8],
    value: &'a [u8],
}

impl FrameView<'_> {
    /// Copies the frame into an owned record. Copying (rather than slicing a
    /// shared read buffer) keeps a retained record from pinning the buffer.
    pub(crate) fn to_record(&self, partition: u32) -> LogRecord {
        let mut headers = Vec::with_capacity(self.header_count);
        let mut rest = Reader(self.headers);
        for _ in 0..self.header_count {
            // `parse` walked these exact bytes already; a failure here is
            // impossible, and stopping early is the harmless outcome.
            let Some((name, value)) = rest.header() else {
                break;
            };
            headers.push((name.to_owned(), Bytes::copy_from_slice(value)));
        }
        LogRecord {
            partition,
            offset: self.offset,
            key: Bytes::copy_from_slice(self.key),
            value: Bytes::copy_from_slice(self.value),
            headers,
            timestamp_ms: self.timestamp_ms,
        }
    }
}

/// Checks a whole frame (`frame.len()` equals its length field + 4): its
/// checksum and structure, including UTF-8 header names.
pub(crate) fn parse(frame: &[u8]) -> Result<FrameView<'_>, FrameError> {
    let prefix: [u8; 4] = frame
        .get(..LEN_FIELD)
        .and_then(|b| b.try_into().ok())
        .ok_or(FrameError::Malformed("short frame"))?;
    if total_len(prefix)? != frame.len() {
        return Err(FrameError::Malformed(
            "length field disagrees with frame size",
        ));
    }
    let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let body = &frame[PREFIX..];
    if crc32fast::hash(body) != crc {
        return Err(FrameError::Checksum);
    }
    let mut r = Reader(body);
    let bad = FrameError::Malformed("fields exceed the frame");
    let offset = r.u64().ok_or(bad)?;
    let timestamp_ms = r.u64().ok_or(bad)? as i64;
    let key_len = r.len().ok_or(bad)?;
    let header_count = r.len().ok_or(bad)?;
    let value_len = r.len().ok_or(bad)?;
    let key = r.take(key_len).ok_or(bad)?;
    let headers_start = r.0;
    for _ in 0..header_count {
        r.header().ok_or(FrameError::Malformed("bad header"))?;
    }
    let headers = &headers_start[..headers_start.len() - r.0.len()];
    let value = r.take(value_len).ok_or(bad)?;
    if !r.0.is_empty() {
        return Err(FrameError::Malformed("trailing bytes"));
    }
    Ok(FrameView {
        offset,
        timestamp_ms,
        key,
        header_count,
        headers,
        value,
    })
}

/// The offset of a frame without checking it: used to skip frames that were
/// checked when written, while seeking. `frame` is at least [`MIN_FRAME`] long.
pub(crate) fn peek_offset(frame: &[u8]) -> Option<u64> {
    let b = frame.get(PREFIX..PREFIX + 8)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn len(&mut self) -> Option<usize> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize)
    }

    fn header(&mut self) -> Option<(&'a str, &'a [u8])> {
        let name_len = self.len()?;
        let name = std::str::from_utf8(self.take(name_len)?).ok()?;
        let value_len = self.len()?;
        Some((name, self.take(value_len)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            key: Bytes::from_static(b"device-1"),
            value: Bytes::from_static(b"{\"t\":21.5}"),
            headers: vec![
                (
                    "content-type".into(),
                    Bytes::from_static(b"application/json"),
                ),
                ("empty".into(), Bytes::new()),
                ("content-type".into(), Bytes::from_static(&[0, 255])),
            ],
            timestamp_ms: 1_700_000_000_123,
        }
    }

    #[test]
    fn round_trips() {
        let r = record();
        let mut buf = vec![7u8]; // Frames are encoded after existing bytes.
        let n = encode(42, &r, &mut buf);
        assert_eq!(n, frame_len(&r));
        assert_eq!(buf.len(), 1 + n);
        let view = parse(&buf[1..]).expect("valid frame");
        let back = view.to_record(3);
        assert_eq!(back.partition, 3);
        assert_eq!(back.offset, 42);
        assert_eq!(back.key, r.key);
        assert_eq!(back.value, r.value);
        assert_eq!(back.headers, r.headers);
        assert_eq!(back.timestamp_ms, r.timestamp_ms);
        assert_eq!(peek_offset(&buf[1..]), Some(42));
    }

    #[test]
    fn empty_record_is_min_frame() {
        let r = Record {
            key: Bytes::new(),
            value: Bytes::new(),
            headers: vec![],
            timestamp_ms: -1,
        };
        let mut buf = Vec::new();
        assert_eq!(encode(0, &r, &mut buf), MIN_FRAME);
        let back = parse(&buf).expect("valid frame").to_record(0);
        assert!(back.key.is_empty() && back.value.is_empty() && back.headers.is_empty());
        assert_eq!(back.timestamp_ms, -1);
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let mut buf = Vec::new();
        encode(9, &record(), &mut buf);
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    parse(&bad).is_err(),
                    "flip of bit {bit} in byte {byte} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn truncated_frames_are_rejected() {
        let mut buf = Vec::new();
        encode(1, &record(), &mut buf);
        for len in 0..buf.len() {
            assert!(
                parse(&buf[..len]).is_err(),
                "prefix of {len} bytes accepted"
            );
        }
    }

    #[test]
    fn lengths_are_bounded() {
        assert_eq!(total_len([0, 0, 0, 0]), Err(FrameError::BadLength(0)));
        assert!(matches!(
            total_len(u32::MAX.to_le_bytes()),
            Err(FrameError::BadLength(_))
        ));
        let min = u32::try_from(MIN_FRAME - LEN_FIELD).expect("small");
        assert_eq!(total_len(min.to_le_bytes()), Ok(MIN_FRAME));
    }

    #[test]
    fn crc_valid_but_inconsistent_body_is_rejected() {
        // A body whose key length points past the end, with a correct CRC.
        let mut body = Vec::new();
        body.extend_from_slice(&0u64.to_le_bytes());
        body.extend_from_slice(&0i64.to_le_bytes());
        body.extend_from_slice(&1000u32.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        let mut frame = Vec::new();
        frame.extend_from_slice(&u32::try_from(body.len() + 4).expect("small").to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        frame.extend_from_slice(&body);
        assert_eq!(
            parse(&frame).err(),
            Some(FrameError::Malformed("fields exceed the frame"))
        );
    }
}
