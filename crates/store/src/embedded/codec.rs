//! Byte encodings of the embedded store: varints, single values (WAL and
//! latest table) and compressed chunks of one series.
//!
//! Everything here is pure. Decoders never panic and never trust a length
//! they read: corrupt input is a [`Corrupt`] error.
//!
//! # Chunk layout (version 1)
//!
//! ```text
//! header   version u8 = 1 | count u32 LE | raw_bytes u32 LE | min_ts i64 LE | max_ts i64 LE
//! sections six of them, each `uvarint length` + bytes, in this order:
//!   ts     delta-of-delta of the timestamps after the first (= min_ts), zigzag uvarints
//!   types  run-length encoded value types: (type u8, run length uvarint)*
//!   f64    empty without doubles; else a mode byte, then per double:
//!          mode 0..=15, decimal: zigzag uvarint of the delta of `m`, where the
//!            double is exactly `m / 10^mode` (sensor readings such as 21.37);
//!          mode 0xff, XOR: control byte (leading zero bytes << 4 | trailing
//!            zero bytes) of `bits XOR previous bits`, then the meaningful
//!            bytes, little endian (any double, bit for bit)
//!   i64    per int: zigzag uvarint of the delta to the previous int
//!   bool   one bit per bool, least significant bit first
//!   str    per string: uvarint (length + 1) then the bytes; 0 = same as the previous string
//! ```
//!
//! Timestamps are strictly increasing inside a chunk. All arithmetic on
//! timestamps and ints is wrapping, so every i64 round-trips, `i64::MIN` and
//! `i64::MAX` included. Doubles round-trip bit for bit (`-0.0`, NaN payloads).

use std::fmt;

use tributary_core::{Sample, Value};

/// The chunk format version this code writes and reads.
const CHUNK_VERSION: u8 = 1;
/// Size of the fixed chunk header.
pub(crate) const CHUNK_HEADER_LEN: usize = 1 + 4 + 4 + 8 + 8;
/// Most points a decoder accepts in one chunk, whatever the header says.
pub(crate) const MAX_CHUNK_POINTS: usize = 65_536;

/// f64 section mode: XOR with the previous double's bits.
const F64_XOR: u8 = 0xff;
/// Highest decimal exponent; 10^15 and every mantissa below 2^53 are exact doubles.
const MAX_DECIMAL_EXP: u8 = 15;
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];
/// Largest mantissa magnitude of the decimal mode: every integer up to it is a double.
const MAX_MANTISSA: f64 = 9_007_199_254_740_992.0;

const TYPE_F64: u8 = 0;
const TYPE_I64: u8 = 1;
const TYPE_BOOL: u8 = 2;
const TYPE_STR: u8 = 3;

/// Tags of a single encoded value (WAL records and the latest table).
const TAG_F64: u8 = 0;
const TAG_I64: u8 = 1;
const TAG_FALSE: u8 = 2;
const TAG_TRUE: u8 = 3;
const TAG_STR: u8 = 4;

/// Bytes that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Corrupt(pub(crate) &'static str);

impl fmt::Display for Corrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Corrupt {}

// ---------------------------------------------------------------------------
// Primitives
// ---------------------------------------------------------------------------

/// Appends `v` as an unsigned LEB128 varint.
pub(crate) fn put_uvarint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Maps signed to unsigned so that small magnitudes stay small.
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Inverse of [`zigzag`].
pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// A bounds-checked cursor over encoded bytes.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Corrupt> {
        let (&b, rest) = self.buf.split_first().ok_or(Corrupt("truncated"))?;
        self.buf = rest;
        Ok(b)
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], Corrupt> {
        if n > self.buf.len() {
            return Err(Corrupt("truncated"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Corrupt> {
        let b = self.bytes(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    pub(crate) fn u32_le(&mut self) -> Result<u32, Corrupt> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn i64_le(&mut self) -> Result<i64, Corrupt> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    pub(crate) fn uvarint(&mut self) -> Result<u64, Corrupt> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8()?;
            if i == 9 && b > 1 {
                return Err(Corrupt("varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Corrupt("varint longer than 10 bytes"))
    }

    pub(crate) fn varint_len(&mut self) -> Result<usize, Corrupt> {
        usize::try_from(self.uvarint()?).map_err(|_| Corrupt("length does not fit in memory"))
    }

    /// A `uvarint length` + bytes section.
    fn section(&mut self) -> Result<Reader<'a>, Corrupt> {
        let len = self.varint_len()?;
        Ok(Reader::new(self.bytes(len)?))
    }
}

// ---------------------------------------------------------------------------
// Single values (WAL records, latest table)
// ---------------------------------------------------------------------------

/// Appends one tagged value.
pub(crate) fn put_value(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::F64(x) => {
            buf.push(TAG_F64);
            buf.extend_from_slice(&x.to_bits().to_le_bytes());
        }
        Value::I64(x) => {
            buf.push(TAG_I64);
            put_uvarint(buf, zigzag(*x));
        }
        Value::Bool(false) => buf.push(TAG_FALSE),
        Value::Bool(true) => buf.push(TAG_TRUE),
        Value::Str(s) => {
            buf.push(TAG_STR);
            put_uvarint(buf, s.len() as u64);
            buf.extend_from_slice(s.as_bytes());
        }
    }
}

/// Reads one tagged value.
pub(crate) fn read_value(r: &mut Reader<'_>) -> Result<Value, Corrupt> {
    Ok(match r.u8()? {
        TAG_F64 => Value::F64(f64::from_bits(u64::from_le_bytes(r.array()?))),
        TAG_I64 => Value::I64(unzigzag(r.uvarint()?)),
        TAG_FALSE => Value::Bool(false),
        TAG_TRUE => Value::Bool(true),
        TAG_STR => {
            let len = r.varint_len()?;
            let bytes = r.bytes(len)?;
            Value::Str(
                std::str::from_utf8(bytes)
                    .map_err(|_| Corrupt("string is not UTF-8"))?
                    .to_owned(),
            )
        }
        _ => return Err(Corrupt("unknown value tag")),
    })
}

/// Encodes the latest point of a series: `ts i64 LE` + tagged value.
pub(crate) fn encode_latest(ts_ns: i64, v: &Value) -> Vec<u8> {
    let mut buf = Vec::with_capacity(8 + 9);
    buf.extend_from_slice(&ts_ns.to_le_bytes());
    put_value(&mut buf, v);
    buf
}

/// Decodes what [`encode_latest`] wrote.
pub(crate) fn decode_latest(bytes: &[u8]) -> Result<Sample, Corrupt> {
    let mut r = Reader::new(bytes);
    let ts_ns = r.i64_le()?;
    let value = read_value(&mut r)?;
    if !r.is_empty() {
        return Err(Corrupt("trailing bytes after latest value"));
    }
    Ok(Sample { ts_ns, value })
}

// ---------------------------------------------------------------------------
// Chunks
// ---------------------------------------------------------------------------

/// The fixed header of a chunk, readable without decoding the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkHeader {
    /// Number of points.
    pub(crate) count: u32,
    /// Estimated uncompressed size, see [`raw_size`].
    pub(crate) raw_bytes: u32,
    /// Timestamp of the first point.
    pub(crate) min_ts: i64,
    /// Timestamp of the last point.
    pub(crate) max_ts: i64,
}

impl ChunkHeader {
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, Corrupt> {
        let mut r = Reader::new(bytes);
        if r.u8()? != CHUNK_VERSION {
            return Err(Corrupt("unknown chunk version"));
        }
        let h = ChunkHeader {
            count: r.u32_le()?,
            raw_bytes: r.u32_le()?,
            min_ts: r.i64_le()?,
            max_ts: r.i64_le()?,
        };
        if h.count == 0 || h.count as usize > MAX_CHUNK_POINTS {
            return Err(Corrupt("chunk point count out of range"));
        }
        if h.min_ts > h.max_ts || (h.count == 1) != (h.min_ts == h.max_ts) {
            return Err(Corrupt("chunk time range is inconsistent"));
        }
        Ok(h)
    }
}

/// The estimated uncompressed size of one point, used to bound chunks.
pub(crate) fn raw_size(v: &Value) -> usize {
    8 + match v {
        Value::F64(_) | Value::I64(_) => 8,
        Value::Bool(_) => 1,
        Value::Str(s) => s.len() + 2,
    }
}

fn type_of(v: &Value) -> u8 {
    match v {
        Value::F64(_) => TYPE_F64,
        Value::I64(_) => TYPE_I64,
        Value::Bool(_) => TYPE_BOOL,
        Value::Str(_) => TYPE_STR,
    }
}

fn put_section(out: &mut Vec<u8>, section: &[u8]) {
    put_uvarint(out, section.len() as u64);
    out.extend_from_slice(section);
}

/// Encodes points with strictly increasing timestamps into one chunk.
///
/// Returns `None` when `points` is empty, longer than [`MAX_CHUNK_POINTS`],
/// or not strictly increasing: callers build chunks from sorted, deduplicated
/// data, so that is a bug, which must not become a corrupt chunk on disk.
pub(crate) fn encode_chunk(points: &[Sample]) -> Option<Vec<u8>> {
    let first = points.first()?;
    let last = points.last()?;
    if points.len() > MAX_CHUNK_POINTS || points.windows(2).any(|w| w[0].ts_ns >= w[1].ts_ns) {
        return None;
    }
    let raw: usize = points.iter().map(|p| raw_size(&p.value)).sum();

    let mut ts = Vec::with_capacity(points.len());
    let mut types = Vec::with_capacity(4);
    let mut doubles: Vec<f64> = Vec::new();
    let mut i64s = Vec::new();
    let mut bools = Vec::new();
    let mut nbools = 0usize;
    let mut strs = Vec::new();

    let (mut prev_ts, mut prev_delta) = (first.ts_ns, 0i64);
    let mut prev_int = 0i64;
    let mut prev_str: Option<&str> = None;
    let mut run: Option<(u8, u64)> = None;

    for (i, p) in points.iter().enumerate() {
        if i > 0 {
            let delta = p.ts_ns.wrapping_sub(prev_ts);
            put_uvarint(&mut ts, zigzag(delta.wrapping_sub(prev_delta)));
            prev_ts = p.ts_ns;
            prev_delta = delta;
        }
        let t = type_of(&p.value);
        run = match run {
            Some((rt, n)) if rt == t => Some((rt, n + 1)),
            Some((rt, n)) => {
                types.push(rt);
                put_uvarint(&mut types, n);
                Some((t, 1))
            }
            None => Some((t, 1)),
        };
        match &p.value {
            Value::F64(x) => doubles.push(*x),
            Value::I64(x) => {
                put_uvarint(&mut i64s, zigzag(x.wrapping_sub(prev_int)));
                prev_int = *x;
            }
            Value::Bool(b) => {
                if nbools.is_multiple_of(8) {
                    bools.push(0);
                }
                if *b && let Some(byte) = bools.last_mut() {
                    *byte |= 1 << (nbools % 8);
                }
                nbools += 1;
            }
            Value::Str(s) => {
                if prev_str == Some(s.as_str()) {
                    strs.push(0);
                } else {
                    put_uvarint(&mut strs, s.len() as u64 + 1);
                    strs.extend_from_slice(s.as_bytes());
                    prev_str = Some(s);
                }
            }
        }
    }
    if let Some((rt, n)) = run {
        types.push(rt);
        put_uvarint(&mut types, n);
    }
    let f64s = encode_doubles(&doubles);

    let body = ts.len() + types.len() + f64s.len() + i64s.len() + bools.len() + strs.len();
    let mut out = Vec::with_capacity(CHUNK_HEADER_LEN + body + 6 * 3);
    out.push(CHUNK_VERSION);
    out.extend_from_slice(&(points.len() as u32).to_le_bytes());
    out.extend_from_slice(&u32::try_from(raw).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&first.ts_ns.to_le_bytes());
    out.extend_from_slice(&last.ts_ns.to_le_bytes());
    for section in [&ts, &types, &f64s, &i64s, &bools, &strs] {
        put_section(&mut out, section);
    }
    Some(out)
}

/// The mantissa of `v` as `m / 10^exp`, if that gives back `v` bit for bit.
fn decimal_mantissa(v: f64, exp: u8) -> Option<i64> {
    let div = POW10[usize::from(exp)];
    let m = (v * div).round();
    if m.is_nan() || m.abs() >= MAX_MANTISSA {
        return None;
    }
    // `m` is integral and below 2^53 in magnitude: the cast is exact. Check
    // exactly what the decoder computes (it turns -0.0 into 0.0, for one).
    let m = m as i64;
    let back = m as f64 / div;
    (back.to_bits() == v.to_bits()).then_some(m)
}

/// The f64 section: decimal when every double is a short decimal, XOR otherwise.
fn encode_doubles(doubles: &[f64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(doubles.len() * 2 + 1);
    if doubles.is_empty() {
        return out;
    }
    // The smallest exponent that fits the value needing the most digits.
    let mut exp = 0u8;
    let decimal = doubles.iter().all(|&v| {
        while decimal_mantissa(v, exp).is_none() {
            if exp == MAX_DECIMAL_EXP {
                return false;
            }
            exp += 1;
        }
        true
    });
    if decimal {
        let mut mantissas = Vec::with_capacity(doubles.len());
        for &v in doubles {
            match decimal_mantissa(v, exp) {
                Some(m) => mantissas.push(m),
                None => return encode_xor(doubles),
            }
        }
        out.push(exp);
        let mut prev = 0i64;
        for m in mantissas {
            put_uvarint(&mut out, zigzag(m.wrapping_sub(prev)));
            prev = m;
        }
        return out;
    }
    encode_xor(doubles)
}

fn encode_xor(doubles: &[f64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(doubles.len() * 7 + 1);
    out.push(F64_XOR);
    let mut prev = 0u64;
    for v in doubles {
        let bits = v.to_bits();
        put_xor(&mut out, bits ^ prev);
        prev = bits;
    }
    out
}

/// Reads the doubles of an f64 section, one at a time.
#[derive(Debug)]
enum DoubleReader {
    Xor { prev: u64 },
    Decimal { prev: i64, div: f64 },
}

impl DoubleReader {
    fn new(section: &mut Reader<'_>) -> Result<Self, Corrupt> {
        if section.is_empty() {
            // No doubles: any attempt to read one fails on the empty section.
            return Ok(DoubleReader::Xor { prev: 0 });
        }
        Ok(match section.u8()? {
            F64_XOR => DoubleReader::Xor { prev: 0 },
            exp if exp <= MAX_DECIMAL_EXP => DoubleReader::Decimal {
                prev: 0,
                div: POW10[usize::from(exp)],
            },
            _ => return Err(Corrupt("unknown double encoding")),
        })
    }

    fn next(&mut self, section: &mut Reader<'_>) -> Result<f64, Corrupt> {
        match self {
            DoubleReader::Xor { prev } => {
                *prev ^= read_xor(section)?;
                Ok(f64::from_bits(*prev))
            }
            DoubleReader::Decimal { prev, div } => {
                *prev = prev.wrapping_add(unzigzag(section.uvarint()?));
                Ok(*prev as f64 / *div)
            }
        }
    }
}

/// XOR of two doubles' bits, as control byte + meaningful bytes.
fn put_xor(buf: &mut Vec<u8>, x: u64) {
    if x == 0 {
        buf.push(0x80);
        return;
    }
    let lead = x.leading_zeros() / 8;
    let trail = x.trailing_zeros() / 8;
    buf.push(((lead << 4) | trail) as u8);
    let n = (8 - lead - trail) as usize;
    let bytes = (x >> (trail * 8)).to_le_bytes();
    buf.extend_from_slice(&bytes[..n]);
}

fn read_xor(r: &mut Reader<'_>) -> Result<u64, Corrupt> {
    let ctrl = r.u8()?;
    let (lead, trail) = (u32::from(ctrl >> 4), u32::from(ctrl & 0x0f));
    if lead + trail > 8 {
        return Err(Corrupt("bad double control byte"));
    }
    let n = (8 - lead - trail) as usize;
    if n == 0 {
        return Ok(0);
    }
    let mut bytes = [0u8; 8];
    bytes[..n].copy_from_slice(r.bytes(n)?);
    Ok(u64::from_le_bytes(bytes) << (trail * 8))
}

/// Decodes a whole chunk.
pub(crate) fn decode_chunk(bytes: &[u8]) -> Result<Vec<Sample>, Corrupt> {
    let mut out = Vec::new();
    decode_chunk_into(bytes, i64::MIN, i64::MAX, &mut out)?;
    Ok(out)
}

/// Decodes a chunk and appends its points with `from <= ts <= to_inclusive`
/// to `out`, in ascending order. Returns the header.
pub(crate) fn decode_chunk_into(
    bytes: &[u8],
    from: i64,
    to_inclusive: i64,
    out: &mut Vec<Sample>,
) -> Result<ChunkHeader, Corrupt> {
    let header = ChunkHeader::parse(bytes)?;
    let mut r = Reader::new(bytes.get(CHUNK_HEADER_LEN..).ok_or(Corrupt("truncated"))?);
    let mut ts = r.section()?;
    let mut types = r.section()?;
    let mut f64s = r.section()?;
    let mut i64s = r.section()?;
    let mut bools = r.section()?;
    let mut strs = r.section()?;
    if !r.is_empty() {
        return Err(Corrupt("trailing bytes after chunk"));
    }

    let count = header.count as usize;
    let (mut prev_ts, mut prev_delta) = (header.min_ts, 0i64);
    let mut doubles = DoubleReader::new(&mut f64s)?;
    let mut prev_int = 0i64;
    let mut prev_str: Option<String> = None;
    let mut nbools = 0usize;
    let mut bool_byte = 0u8;
    let (mut run_type, mut run_left) = (0u8, 0u64);

    out.reserve(count.min(MAX_CHUNK_POINTS));
    for i in 0..count {
        let t = if i == 0 {
            header.min_ts
        } else {
            let delta = prev_delta.wrapping_add(unzigzag(ts.uvarint()?));
            let t = prev_ts.wrapping_add(delta);
            if t <= prev_ts {
                return Err(Corrupt("chunk timestamps are not increasing"));
            }
            prev_delta = delta;
            prev_ts = t;
            t
        };
        while run_left == 0 {
            run_type = types.u8()?;
            run_left = types.uvarint()?;
        }
        run_left -= 1;
        let value = match run_type {
            TYPE_F64 => Value::F64(doubles.next(&mut f64s)?),
            TYPE_I64 => {
                prev_int = prev_int.wrapping_add(unzigzag(i64s.uvarint()?));
                Value::I64(prev_int)
            }
            TYPE_BOOL => {
                if nbools.is_multiple_of(8) {
                    bool_byte = bools.u8()?;
                }
                let b = bool_byte & (1 << (nbools % 8)) != 0;
                nbools += 1;
                Value::Bool(b)
            }
            TYPE_STR => {
                let tag = strs.varint_len()?;
                let s = if tag == 0 {
                    prev_str.clone().ok_or(Corrupt("string repeats nothing"))?
                } else {
                    let b = strs.bytes(tag - 1)?;
                    let s = std::str::from_utf8(b)
                        .map_err(|_| Corrupt("string is not UTF-8"))?
                        .to_owned();
                    prev_str = Some(s.clone());
                    s
                };
                Value::Str(s)
            }
            _ => return Err(Corrupt("unknown value type in chunk")),
        };
        if t >= from && t <= to_inclusive {
            out.push(Sample { ts_ns: t, value });
        }
    }
    if prev_ts != header.max_ts {
        return Err(Corrupt(
            "chunk ends at another timestamp than its header says",
        ));
    }
    if run_left != 0
        || !(ts.is_empty() && types.is_empty() && f64s.is_empty() && i64s.is_empty())
        || !(bools.is_empty() && strs.is_empty())
    {
        return Err(Corrupt("chunk has more data than points"));
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn s(ts_ns: i64, value: Value) -> Sample {
        Sample { ts_ns, value }
    }

    /// Equality that tells -0.0 from 0.0 and compares NaN payloads.
    fn same(a: &[Sample], b: &[Sample]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                x.ts_ns == y.ts_ns
                    && match (&x.value, &y.value) {
                        (Value::F64(p), Value::F64(q)) => p.to_bits() == q.to_bits(),
                        (p, q) => p == q,
                    }
            })
    }

    fn round_trip(points: &[Sample]) -> Vec<u8> {
        let bytes = encode_chunk(points).expect("valid input encodes");
        let back = decode_chunk(&bytes).expect("own output decodes");
        assert!(
            same(points, &back),
            "round trip changed the points:\n{points:?}\n{back:?}"
        );
        let h = ChunkHeader::parse(&bytes).expect("header parses");
        assert_eq!(h.count as usize, points.len());
        assert_eq!(h.min_ts, points[0].ts_ns);
        assert_eq!(h.max_ts, points[points.len() - 1].ts_ns);
        bytes
    }

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [0u64, 1, 127, 128, 16_383, 16_384, u64::MAX / 2, u64::MAX] {
            let mut buf = Vec::new();
            put_uvarint(&mut buf, v);
            let mut r = Reader::new(&buf);
            assert_eq!(r.uvarint(), Ok(v));
            assert!(r.is_empty());
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
        // Eleven continuation bytes, or a tenth byte with more than one bit.
        assert!(Reader::new(&[0xff; 11]).uvarint().is_err());
        let mut too_big = vec![0xff; 9];
        too_big.push(0x02);
        assert!(Reader::new(&too_big).uvarint().is_err());
    }

    #[test]
    fn every_type_round_trips_with_edge_values() {
        let points = vec![
            s(i64::MIN, Value::I64(i64::MIN)),
            s(i64::MIN + 1, Value::I64(i64::MAX)),
            s(-5, Value::I64(0)),
            s(0, Value::F64(-0.0)),
            s(1, Value::F64(0.0)),
            s(2, Value::F64(f64::MAX)),
            s(3, Value::F64(f64::MIN_POSITIVE)),
            s(4, Value::F64(-f64::MAX)),
            s(5, Value::F64(5e-324)),
            s(6, Value::F64(1e300)),
            s(7, Value::Bool(true)),
            s(8, Value::Bool(false)),
            s(9, Value::Str(String::new())),
            s(10, Value::Str(String::new())),
            s(11, Value::Str("é ü 🌊".into())),
            s(12, Value::Str("x".repeat(100_000))),
            s(13, Value::Str("x".repeat(100_000))),
            s(i64::MAX - 1, Value::Bool(true)),
            s(i64::MAX, Value::F64(21.5)),
        ];
        round_trip(&points);
    }

    #[test]
    fn single_point_chunks_round_trip() {
        for v in [
            Value::F64(1.5),
            Value::I64(-7),
            Value::Bool(false),
            Value::Str("on".into()),
        ] {
            round_trip(&[s(1_700_000_000_000_000_000, v)]);
        }
    }

    #[test]
    fn regular_series_compress_well() {
        // A day of a slowly changing gauge at 10 s spacing, 1024 points.
        let start = 1_700_000_000_000_000_000i64;
        let points: Vec<Sample> = (0..1024)
            .map(|i| {
                s(
                    start + i * 10_000_000_000,
                    Value::F64(20.0 + f64::from((i % 7) as i32) * 0.5),
                )
            })
            .collect();
        let bytes = round_trip(&points);
        // 16 raw bytes per point; delta-of-delta timestamps are one byte each.
        assert!(bytes.len() < 1024 * 6, "chunk of {} bytes", bytes.len());

        let ints: Vec<Sample> = (0..1024)
            .map(|i| s(start + i * 10_000_000_000, Value::I64(1000 + i)))
            .collect();
        assert!(round_trip(&ints).len() < 1024 * 3);

        let bools: Vec<Sample> = (0..1024)
            .map(|i| s(start + i * 10_000_000_000, Value::Bool(i % 3 == 0)))
            .collect();
        assert!(round_trip(&bools).len() < 1024 * 2);

        let strs: Vec<Sample> = (0..1024)
            .map(|i| {
                s(
                    start + i * 10_000_000_000,
                    Value::Str(if i < 500 { "ok" } else { "alarm" }.into()),
                )
            })
            .collect();
        assert!(round_trip(&strs).len() < 1024 * 3);
    }

    #[test]
    fn short_decimals_use_the_decimal_mode_and_others_fall_back() {
        let start = 1_700_000_000_000_000_000i64;
        let readings: Vec<Sample> = [21.37, 21.4, 21.41, -3.5, 0.0, 1e6, 0.001]
            .iter()
            .enumerate()
            .map(|(i, v)| s(start + i as i64, Value::F64(*v)))
            .collect();
        let decimal = round_trip(&readings);
        // One byte a timestamp, about two a mantissa delta.
        assert!(
            decimal.len() < CHUNK_HEADER_LEN + 7 * 6,
            "{} bytes",
            decimal.len()
        );
        for odd in [
            -0.0,
            0.1 + 0.2,
            f64::MAX,
            5e-324,
            f64::INFINITY,
            f64::NAN,
            1e300,
            123_456_789.123_456_79,
        ] {
            let mut points = readings.clone();
            points.push(s(start + 100, Value::F64(odd)));
            round_trip(&points);
        }
        assert_eq!(decimal_mantissa(21.37, 2), Some(2137));
        assert_eq!(decimal_mantissa(21.37, 1), None);
        assert_eq!(decimal_mantissa(-0.0, 0), None);
        assert_eq!(decimal_mantissa(9_007_199_254_740_993.0, 0), None);
    }

    #[test]
    fn sensor_readings_take_a_fifth_of_their_xor_size() {
        // Two-decimal readings jittering around a level, as the benchmark writes.
        let start = 1_700_000_000_000_000_000i64;
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let readings: Vec<Sample> = (0..1024)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let v = ((21.0 + (x % 200) as f64 / 100.0) * 100.0).round() / 100.0;
                s(start + i * 1_000_000_000, Value::F64(v))
            })
            .collect();
        let doubles: Vec<f64> = readings.iter().filter_map(|p| p.value.as_f64()).collect();
        let decimal = encode_doubles(&doubles).len() as f64 / 1024.0;
        let xor = encode_xor(&doubles).len() as f64 / 1024.0;
        assert!(decimal < 2.1, "{decimal} bytes a double as decimals");
        assert!(xor > 6.0, "{xor} bytes a double as XOR");
        let chunk = round_trip(&readings).len() as f64 / 1024.0;
        assert!(chunk < 3.2, "{chunk} bytes a point in a chunk");
    }

    #[test]
    fn rejects_what_it_cannot_store() {
        assert_eq!(encode_chunk(&[]), None);
        assert_eq!(
            encode_chunk(&[s(2, Value::I64(1)), s(2, Value::I64(2))]),
            None
        );
        assert_eq!(
            encode_chunk(&[s(3, Value::I64(1)), s(2, Value::I64(2))]),
            None
        );
    }

    #[test]
    fn corrupt_chunks_are_errors() {
        let bytes =
            encode_chunk(&[s(1, Value::F64(1.0)), s(2, Value::Str("a".into()))]).expect("encodes");
        for cut in 0..bytes.len() {
            assert!(
                decode_chunk(&bytes[..cut]).is_err(),
                "truncated at {cut} decoded"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_chunk(&longer).is_err());
        let mut version = bytes.clone();
        version[0] = 9;
        assert!(decode_chunk(&version).is_err());
        let mut count = bytes.clone();
        count[1] = 3;
        assert!(decode_chunk(&count).is_err());
    }

    #[test]
    fn range_filter_keeps_only_the_window() {
        let points: Vec<Sample> = (0..100).map(|i| s(i * 10, Value::I64(i))).collect();
        let bytes = encode_chunk(&points).expect("encodes");
        let mut out = Vec::new();
        decode_chunk_into(&bytes, 15, 49, &mut out).expect("decodes");
        let ts: Vec<i64> = out.iter().map(|p| p.ts_ns).collect();
        assert_eq!(ts, vec![20, 30, 40]);
    }

    #[test]
    fn single_values_round_trip() {
        for v in [
            Value::F64(-0.0),
            Value::F64(f64::MIN),
            Value::I64(i64::MIN),
            Value::I64(i64::MAX),
            Value::Bool(true),
            Value::Bool(false),
            Value::Str(String::new()),
            Value::Str("ünï".into()),
        ] {
            let bytes = encode_latest(-42, &v);
            let back = decode_latest(&bytes).expect("decodes");
            assert!(same(&[s(-42, v)], &[back]));
        }
        assert!(decode_latest(&[0; 8]).is_err());
        assert!(decode_latest(&[0, 0, 0, 0, 0, 0, 0, 0, 9]).is_err());
        assert!(decode_latest(&[0, 0, 0, 0, 0, 0, 0, 0, TAG_STR, 2, 0xff, 0xfe]).is_err());
    }

    fn value_strategy() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<u64>().prop_map(|b| Value::F64(f64::from_bits(b))),
            prop_oneof![
                Just(0.0f64),
                Just(-0.0),
                (-1000i32..1000).prop_map(|x| f64::from(x) / 4.0)
            ]
            .prop_map(Value::F64),
            any::<i64>().prop_map(Value::I64),
            (-100i64..100).prop_map(Value::I64),
            any::<bool>().prop_map(Value::Bool),
            prop_oneof![Just(String::new()), Just("on".to_string()), ".{0,40}"]
                .prop_map(Value::Str),
        ]
    }

    fn series_strategy() -> impl Strategy<Value = Vec<Sample>> {
        (
            any::<i64>(),
            prop::collection::vec(
                (prop_oneof![1u64..=3, 1u64..=u64::MAX / 4], value_strategy()),
                1..300,
            ),
        )
            .prop_map(|(start, steps)| {
                let mut out = Vec::with_capacity(steps.len());
                let mut ts = start;
                for (step, value) in steps {
                    out.push(s(ts, value));
                    match ts.checked_add_unsigned(step) {
                        Some(next) => ts = next,
                        None => break,
                    }
                }
                out
            })
    }

    fn decimal_series_strategy() -> impl Strategy<Value = Vec<Sample>> {
        prop::collection::vec((any::<i32>(), 0u8..=15, prop::bool::weighted(0.02)), 1..200)
            .prop_map(|values| {
                values
                    .into_iter()
                    .enumerate()
                    .map(|(i, (k, exp, neg_zero))| {
                        let v = if neg_zero {
                            -0.0
                        } else {
                            f64::from(k) / POW10[usize::from(exp)]
                        };
                        s(i as i64 * 1000, Value::F64(v))
                    })
                    .collect()
            })
    }

    proptest! {
        #[test]
        fn decimal_doubles_round_trip(points in decimal_series_strategy()) {
            let bytes = encode_chunk(&points).expect("sorted input encodes");
            let back = decode_chunk(&bytes).expect("own output decodes");
            prop_assert!(same(&points, &back));
        }

        #[test]
        fn chunks_round_trip(points in series_strategy()) {
            let bytes = encode_chunk(&points).expect("sorted input encodes");
            let back = decode_chunk(&bytes).expect("own output decodes");
            prop_assert!(same(&points, &back));
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_chunk(&bytes);
            let _ = decode_latest(&bytes);
        }

        #[test]
        fn flipping_a_byte_never_panics(points in series_strategy(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut bytes = encode_chunk(&points).expect("encodes");
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
            let _ = decode_chunk(&bytes);
        }
    }
}
