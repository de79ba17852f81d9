//! The MQTT data representations (§1.5): integers, variable byte integers,
//! UTF-8 strings and binary data, read from a packet's bytes and written to
//! a [`Sink`].

use bytes::BytesMut;

use crate::error::{DecodeError, EncodeError};
use crate::packet::PacketType;

/// The largest value a variable byte integer holds (four bytes).
pub(crate) const MAX_VAR_INT: u32 = 268_435_455;

/// The outcome of reading a variable byte integer from a prefix of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarInt {
    /// The value and how many bytes encode it.
    Value(u32, usize),
    /// The bytes end before the integer does.
    Incomplete,
    /// More than four bytes, or not the shortest encoding ([MQTT-1.5.5-1]).
    Invalid,
}

/// Reads a variable byte integer from the start of `buf`.
pub(crate) fn read_var_int(buf: &[u8]) -> VarInt {
    let mut value: u32 = 0;
    for (i, &byte) in buf.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            // A last byte of zero after a continuation byte adds nothing: the
            // value had a shorter encoding.
            if i > 0 && byte == 0 {
                return VarInt::Invalid;
            }
            return VarInt::Value(value, i + 1);
        }
    }
    if buf.len() >= 4 {
        VarInt::Invalid
    } else {
        VarInt::Incomplete
    }
}

/// How many bytes the variable byte integer `value` takes.
pub(crate) const fn var_int_len(value: u32) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// A cursor over the bytes of one packet (after its fixed header). Running
/// past the end is [`DecodeError::UnexpectedEnd`]: the remaining length said
/// the packet was complete.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    packet: PacketType,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], packet: PacketType) -> Self {
        Self {
            buf,
            pos: 0,
            packet,
        }
    }

    pub(crate) fn packet(&self) -> PacketType {
        self.packet
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Fails unless every byte was read.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                packet: self.packet,
            })
        }
    }

    fn end(&self) -> DecodeError {
        DecodeError::UnexpectedEnd {
            packet: self.packet,
        }
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or_else(|| self.end())?;
        let bytes = self.buf.get(self.pos..end).ok_or_else(|| self.end())?;
        self.pos = end;
        Ok(bytes)
    }

    /// A reader over the next `n` bytes, which this reader skips.
    pub(crate) fn sub(&mut self, n: usize) -> Result<Reader<'a>, DecodeError> {
        let packet = self.packet;
        Ok(Reader::new(self.take(n)?, packet))
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        let [b] = self.array()?;
        Ok(b)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N)?;
        bytes.try_into().map_err(|_| self.end())
    }

    /// A variable byte integer inside the packet.
    pub(crate) fn var_int(&mut self) -> Result<u32, DecodeError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        match read_var_int(rest) {
            VarInt::Value(value, len) => {
                self.pos += len;
                Ok(value)
            }
            VarInt::Incomplete => Err(self.end()),
            VarInt::Invalid => Err(DecodeError::InvalidVarInt {
                packet: self.packet,
            }),
        }
    }

    /// Binary Data: a two-byte length, then that many bytes.
    pub(crate) fn binary(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// A UTF-8 Encoded String: well-formed, without U+0000.
    pub(crate) fn string(&mut self) -> Result<String, DecodeError> {
        let bytes = self.binary()?;
        if bytes.contains(&0) {
            return Err(DecodeError::NullCharacter {
                packet: self.packet,
            });
        }
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(DecodeError::InvalidUtf8 {
                packet: self.packet,
            }),
        }
    }
}

/// Where encoded bytes go: a buffer, or a [`Counter`] that only measures.
/// Encoding runs once into a counter (which also validates) and once into
/// the buffer, so the length prefixes and the bytes can never disagree.
pub(crate) trait Sink {
    fn put_slice(&mut self, bytes: &[u8]);

    fn put_u8(&mut self, value: u8) {
        self.put_slice(&[value]);
    }

    fn put_u16(&mut self, value: u16) {
        self.put_slice(&value.to_be_bytes());
    }

    fn put_u32(&mut self, value: u32) {
        self.put_slice(&value.to_be_bytes());
    }

    /// A variable byte integer; `value` must be at most [`MAX_VAR_INT`].
    fn put_var_int(&mut self, value: u32) {
        let mut value = value;
        loop {
            // Truncation keeps the low seven bits, which is the point.
            let mut byte = (value & 0x7F) as u8;
            value >>= 7;
            if value > 0 {
                byte |= 0x80;
            }
            self.put_u8(byte);
            if value == 0 {
                break;
            }
        }
    }

    /// Binary Data.
    fn put_binary(&mut self, bytes: &[u8], field: &'static str) -> Result<(), EncodeError> {
        let len = u16::try_from(bytes.len()).map_err(|_| EncodeError::TooLong {
            field,
            len: bytes.len(),
        })?;
        self.put_u16(len);
        self.put_slice(bytes);
        Ok(())
    }

    /// A UTF-8 Encoded String (`&str` is well-formed; U+0000 is refused).
    fn put_string(&mut self, s: &str, field: &'static str) -> Result<(), EncodeError> {
        if s.as_bytes().contains(&0) {
            return Err(EncodeError::NullCharacter { field });
        }
        self.put_binary(s.as_bytes(), field)
    }
}

/// A sink that counts bytes.
#[derive(Debug, Default)]
pub(crate) struct Counter(pub(crate) usize);

impl Sink for Counter {
    fn put_slice(&mut self, bytes: &[u8]) {
        self.0 = self.0.saturating_add(bytes.len());
    }
}

impl Sink for BytesMut {
    fn put_slice(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn var_ints_use_the_shortest_form_and_at_most_four_bytes() {
        let cases: [(u32, &[u8]); 8] = [
            (0, &[0x00]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (MAX_VAR_INT, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ];
        for (value, bytes) in cases {
            let mut buf = BytesMut::new();
            buf.put_var_int(value);
            assert_eq!(&buf[..], bytes, "{value}");
            assert_eq!(var_int_len(value), bytes.len());
            assert_eq!(read_var_int(bytes), VarInt::Value(value, bytes.len()));
            assert_eq!(read_var_int(&bytes[..bytes.len() - 1]), VarInt::Incomplete);
        }
        assert_eq!(
            read_var_int(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            VarInt::Invalid
        );
        assert_eq!(read_var_int(&[0xFF, 0xFF, 0xFF, 0xFF]), VarInt::Invalid);
        assert_eq!(read_var_int(&[0x80, 0x00]), VarInt::Invalid);
        assert_eq!(read_var_int(&[0xFF, 0x80, 0x00]), VarInt::Invalid);
        assert_eq!(read_var_int(&[]), VarInt::Incomplete);
    }

    #[test]
    fn strings_are_checked_both_ways() {
        let mut r = Reader::new(&[0, 2, 0xC3, 0x28], PacketType::Publish);
        assert_eq!(
            r.string(),
            Err(DecodeError::InvalidUtf8 {
                packet: PacketType::Publish
            })
        );
        let mut r = Reader::new(&[0, 1, 0], PacketType::Publish);
        assert_eq!(
            r.string(),
            Err(DecodeError::NullCharacter {
                packet: PacketType::Publish
            })
        );
        let mut r = Reader::new(&[0, 3, b'a'], PacketType::Publish);
        assert_eq!(
            r.string(),
            Err(DecodeError::UnexpectedEnd {
                packet: PacketType::Publish
            })
        );
        // U+FEFF is kept, not stripped ([MQTT-1.5.4-3]).
        let mut r = Reader::new(&[0, 4, 0xEF, 0xBB, 0xBF, b'a'], PacketType::Publish);
        assert_eq!(r.string().as_deref(), Ok("\u{FEFF}a"));

        let mut buf = BytesMut::new();
        assert_eq!(
            buf.put_string("a\0", "topic"),
            Err(EncodeError::NullCharacter { field: "topic" })
        );
        let long = "x".repeat(65_536);
        assert_eq!(
            buf.put_string(&long, "topic"),
            Err(EncodeError::TooLong {
                field: "topic",
                len: 65_536
            })
        );
        assert!(buf.is_empty(), "a refused field writes nothing");
    }
}
