//! Raw point records: what a flush makes durable before the points are
//! compacted into chunks.
//!
//! One WAL row is a version byte followed by records
//! `series id uvarint | zigzag uvarint of ts - previous ts | tagged value`.
//! The previous timestamp starts at 0 in each row, and points of one device
//! message usually share a timestamp, so most records spend one byte on it.

use tributary_core::Value;

use super::codec::{Corrupt, Reader, put_uvarint, put_value, read_value, unzigzag, zigzag};

const WAL_VERSION: u8 = 1;

/// Records appended since the last flush.
#[derive(Debug, Default)]
pub(crate) struct WalBuffer {
    buf: Vec<u8>,
    prev_ts: i64,
}

impl WalBuffer {
    /// Appends one point. Returns the number of bytes the buffer grew by.
    pub(crate) fn push(&mut self, series: u64, ts_ns: i64, value: &Value) -> usize {
        let before = self.buf.len();
        if self.buf.is_empty() {
            self.buf.push(WAL_VERSION);
            self.prev_ts = 0;
        }
        put_uvarint(&mut self.buf, series);
        put_uvarint(&mut self.buf, zigzag(ts_ns.wrapping_sub(self.prev_ts)));
        put_value(&mut self.buf, value);
        self.prev_ts = ts_ns;
        self.buf.len() - before
    }

    /// Takes the buffered row, leaving the buffer empty.
    pub(crate) fn take(&mut self) -> Vec<u8> {
        self.prev_ts = 0;
        std::mem::take(&mut self.buf)
    }
}

/// Calls `f(series, ts, value)` for each record of a row, in order.
pub(crate) fn replay(
    row: &[u8],
    mut f: impl FnMut(u64, i64, Value) -> Result<(), Corrupt>,
) -> Result<(), Corrupt> {
    let mut r = Reader::new(row);
    if r.u8()? != WAL_VERSION {
        return Err(Corrupt("unknown WAL row version"));
    }
    let mut prev_ts = 0i64;
    while !r.is_empty() {
        let series = r.uvarint()?;
        let ts = prev_ts.wrapping_add(unzigzag(r.uvarint()?));
        let value = read_value(&mut r)?;
        f(series, ts, value)?;
        prev_ts = ts;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_replay_in_order() {
        let mut w = WalBuffer::default();
        let points = [
            (7u64, 1_700_000_000_000_000_000i64, Value::F64(1.5)),
            (8, 1_700_000_000_000_000_000, Value::I64(-2)),
            (7, i64::MIN, Value::Str("x".into())),
            (u64::MAX, i64::MAX, Value::Bool(true)),
        ];
        for (s, t, v) in &points {
            assert!(w.push(*s, *t, v) > 0);
        }
        let row = w.take();
        assert!(w.take().is_empty());
        let mut back = Vec::new();
        replay(&row, |s, t, v| {
            back.push((s, t, v));
            Ok(())
        })
        .expect("replays");
        assert_eq!(back, points);
    }

    #[test]
    fn shared_timestamps_cost_one_byte() {
        let mut w = WalBuffer::default();
        w.push(1, 1_700_000_000_000_000_000, &Value::F64(1.0));
        // id (1) + ts delta 0 (1) + tag (1) + f64 (8)
        assert_eq!(w.push(2, 1_700_000_000_000_000_000, &Value::F64(2.0)), 11);
    }

    #[test]
    fn corrupt_rows_are_errors() {
        let mut w = WalBuffer::default();
        w.push(1, 5, &Value::Str("hello".into()));
        let row = w.take();
        // The version byte alone is a valid, empty row.
        for cut in 2..row.len() {
            assert!(
                replay(&row[..cut], |_, _, _| Ok(())).is_err(),
                "cut at {cut}"
            );
        }
        assert!(replay(&[9], |_, _, _| Ok(())).is_err());
        assert!(replay(&[], |_, _, _| Ok(())).is_err());
    }
}
