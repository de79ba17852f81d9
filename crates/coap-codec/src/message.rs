//! The message: header, token, options and payload (RFC 7252 section 3).

use std::fmt;

use crate::block::Block;
use crate::code::Code;
use crate::option::{self, decode_uint, encode_uint};

/// The most options one message may carry. A datagram of 1,500 bytes could
/// hold about 1,500 empty ones; no CoAP exchange needs more than a few
/// dozen (a long Uri-Path, Uri-Query pairs).
pub const MAX_OPTIONS: usize = 64;

/// The message type (RFC 7252 section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// CON: needs an acknowledgement; retransmitted until it gets one.
    Confirmable,
    /// NON: best effort, never acknowledged.
    NonConfirmable,
    /// ACK: acknowledges a CON, maybe with the response piggybacked.
    Acknowledgement,
    /// RST: "I cannot process that message" (or a ping's answer).
    Reset,
}

impl MessageType {
    fn from_bits(bits: u8) -> Self {
        match bits & 0x3 {
            0 => MessageType::Confirmable,
            1 => MessageType::NonConfirmable,
            2 => MessageType::Acknowledgement,
            _ => MessageType::Reset,
        }
    }

    fn bits(self) -> u8 {
        match self {
            MessageType::Confirmable => 0,
            MessageType::NonConfirmable => 1,
            MessageType::Acknowledgement => 2,
            MessageType::Reset => 3,
        }
    }
}

/// A token: 0 to 8 bytes that match a response to its request.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Token {
    len: u8,
    bytes: [u8; 8],
}

impl Token {
    /// The empty token.
    pub const EMPTY: Token = Token {
        len: 0,
        bytes: [0; 8],
    };

    /// A token of these bytes; `None` when longer than 8.
    pub fn new(bytes: &[u8]) -> Option<Self> {
        let len = u8::try_from(bytes.len()).ok().filter(|l| *l <= 8)?;
        let mut t = Token { len, bytes: [0; 8] };
        t.bytes[..bytes.len()].copy_from_slice(bytes);
        Some(t)
    }

    /// Its bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("0x")?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// One option: its number and its value's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoapOption {
    /// The option number.
    pub number: u16,
    /// The value, as sent.
    pub value: Vec<u8>,
}

/// A CoAP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// CON, NON, ACK or RST.
    pub mtype: MessageType,
    /// The method, the response code, or 0.00 for Empty.
    pub code: Code,
    /// Matches an ACK or RST to its message, and detects duplicates.
    pub message_id: u16,
    /// Matches a response to its request.
    pub token: Token,
    /// Sorted by number; options of one number keep their order.
    options: Vec<CoapOption>,
    /// The payload; empty when there is none.
    pub payload: Vec<u8>,
}

/// What was wrong with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    /// Shorter than the 4-byte header.
    #[error("shorter than a CoAP header")]
    TooShort,
    /// A version other than 1: such messages are silently ignored.
    #[error("unknown CoAP version")]
    UnknownVersion,
    /// Token length 9 to 15 (reserved).
    #[error("token length over 8")]
    TokenTooLong,
    /// An Empty message (0.00) with a token, options or payload.
    #[error("an Empty message with content after its header")]
    EmptyWithContent,
    /// A token, option or extended field runs past the end.
    #[error("truncated")]
    Truncated,
    /// Option delta or length nibble 15 outside the payload marker.
    #[error("reserved option nibble 15")]
    ReservedNibble,
    /// An option number over 65,535.
    #[error("option number over 65535")]
    OptionNumberOverflow,
    /// A payload marker with no payload after it.
    #[error("payload marker without a payload")]
    MarkerWithoutPayload,
    /// More than [`MAX_OPTIONS`] options.
    #[error("more than {MAX_OPTIONS} options")]
    TooManyOptions,
}

/// A datagram that is not a well-formed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct DecodeError {
    /// What was wrong.
    pub kind: DecodeErrorKind,
    /// The type and message id, when the header could be read: a
    /// confirmable message with a format error is answered with a Reset
    /// carrying that id; anything else is ignored.
    pub header: Option<(MessageType, u16)>,
}

/// An option whose value does not fit its format (a uint over 4 bytes, a
/// Block value over 3 bytes or with SZX 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("option {number}: malformed value")]
pub struct BadOptionValue {
    /// The option number.
    pub number: u16,
}

impl Message {
    /// A message with no token, options or payload.
    pub fn new(mtype: MessageType, code: Code, message_id: u16) -> Self {
        Message {
            mtype,
            code,
            message_id,
            token: Token::EMPTY,
            options: Vec::new(),
            payload: Vec::new(),
        }
    }

    /// Reads one datagram.
    pub fn decode(data: &[u8]) -> Result<Self, DecodeError> {
        let [first, code, id_hi, id_lo, ..] = *data else {
            return Err(DecodeError {
                kind: DecodeErrorKind::TooShort,
                header: None,
            });
        };
        if first >> 6 != 1 {
            return Err(DecodeError {
                kind: DecodeErrorKind::UnknownVersion,
                header: None,
            });
        }
        let mtype = MessageType::from_bits(first >> 4);
        let message_id = u16::from_be_bytes([id_hi, id_lo]);
        let fail = |kind| DecodeError {
            kind,
            header: Some((mtype, message_id)),
        };
        let tkl = usize::from(first & 0x0f);
        if tkl > 8 {
            return Err(fail(DecodeErrorKind::TokenTooLong));
        }
        let code = Code(code);
        if code.is_empty() && (tkl != 0 || data.len() > 4) {
            return Err(fail(DecodeErrorKind::EmptyWithContent));
        }
        let token_bytes = data
            .get(4..4 + tkl)
            .ok_or(fail(DecodeErrorKind::Truncated))?;
        let token = Token::new(token_bytes).ok_or(fail(DecodeErrorKind::TokenTooLong))?;
        let mut pos = 4 + tkl;
        let mut options = Vec::new();
        let mut number: u32 = 0;
        let mut payload = Vec::new();
        while let Some(&byte) = data.get(pos) {
            pos += 1;
            if byte == 0xff {
                if pos == data.len() {
                    return Err(fail(DecodeErrorKind::MarkerWithoutPayload));
                }
                payload = data[pos..].to_vec();
                break;
            }
            let delta = extended(byte >> 4, data, &mut pos).map_err(fail)?;
            let len = extended(byte & 0x0f, data, &mut pos).map_err(fail)?;
            number += delta;
            let number16 =
                u16::try_from(number).map_err(|_| fail(DecodeErrorKind::OptionNumberOverflow))?;
            let value = data
                .get(pos..pos + len as usize)
                .ok_or(fail(DecodeErrorKind::Truncated))?;
            pos += len as usize;
            if options.len() == MAX_OPTIONS {
                return Err(fail(DecodeErrorKind::TooManyOptions));
            }
            options.push(CoapOption {
                number: number16,
                value: value.to_vec(),
            });
        }
        Ok(Message {
            mtype,
            code,
            message_id,
            token,
            options,
            payload,
        })
    }

    /// The datagram.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Appends the datagram to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let token = self.token.as_bytes();
        out.push((1 << 6) | (self.mtype.bits() << 4) | token.len() as u8);
        out.push(self.code.0);
        out.extend_from_slice(&self.message_id.to_be_bytes());
        out.extend_from_slice(token);
        let mut last = 0u16;
        for o in &self.options {
            let delta = u32::from(o.number - last);
            last = o.number;
            let len = o.value.len() as u32;
            let (dn, dx) = nibble(delta);
            let (ln, lx) = nibble(len);
            out.push((dn << 4) | ln);
            out.extend_from_slice(&dx);
            out.extend_from_slice(&lx);
            out.extend_from_slice(&o.value);
        }
        if !self.payload.is_empty() {
            out.push(0xff);
            out.extend_from_slice(&self.payload);
        }
    }

    /// The datagram's length in bytes.
    pub fn encoded_len(&self) -> usize {
        let mut last = 0u16;
        let options: usize = self
            .options
            .iter()
            .map(|o| {
                let delta = u32::from(o.number - last);
                last = o.number;
                1 + nibble(delta).1.len() + nibble(o.value.len() as u32).1.len() + o.value.len()
            })
            .sum();
        let payload = if self.payload.is_empty() {
            0
        } else {
            1 + self.payload.len()
        };
        4 + self.token.as_bytes().len() + options + payload
    }

    /// Every option, sorted by number.
    pub fn options(&self) -> &[CoapOption] {
        &self.options
    }

    /// Adds an option after those of the same or lower numbers. Values of
    /// an option over 65,804 bytes cannot be encoded: the caller keeps
    /// them within a datagram anyway.
    pub fn add_option(&mut self, number: u16, value: Vec<u8>) {
        let at = self.options.partition_point(|o| o.number <= number);
        self.options.insert(at, CoapOption { number, value });
    }

    /// Replaces every option of `number` with one of this value.
    pub fn set_option(&mut self, number: u16, value: Vec<u8>) {
        self.remove_option(number);
        self.add_option(number, value);
    }

    /// Replaces every option of `number` with this unsigned integer.
    pub fn set_uint_option(&mut self, number: u16, value: u32) {
        self.set_option(number, encode_uint(value));
    }

    /// Removes every option of `number`.
    pub fn remove_option(&mut self, number: u16) {
        self.options.retain(|o| o.number != number);
    }

    /// The first value of option `number`.
    pub fn option(&self, number: u16) -> Option<&[u8]> {
        self.options_of(number).next()
    }

    /// Every value of option `number`, in order.
    pub fn options_of(&self, number: u16) -> impl Iterator<Item = &[u8]> {
        self.options
            .iter()
            .filter(move |o| o.number == number)
            .map(|o| o.value.as_slice())
    }

    /// Option `number` as an unsigned integer.
    pub fn uint_option(&self, number: u16) -> Result<Option<u32>, BadOptionValue> {
        self.option(number)
            .map(|v| decode_uint(v).ok_or(BadOptionValue { number }))
            .transpose()
    }

    /// The Uri-Path segments, in order (not checked as UTF-8).
    pub fn uri_path(&self) -> impl Iterator<Item = &[u8]> {
        self.options_of(option::URI_PATH)
    }

    /// The Content-Format.
    pub fn content_format(&self) -> Result<Option<u16>, BadOptionValue> {
        let number = option::CONTENT_FORMAT;
        self.uint_option(number)?
            .map(|n| u16::try_from(n).map_err(|_| BadOptionValue { number }))
            .transpose()
    }

    /// The Block1 option (the request body's block).
    pub fn block1(&self) -> Result<Option<Block>, BadOptionValue> {
        self.block(option::BLOCK1)
    }

    /// The Block2 option (the response body's block).
    pub fn block2(&self) -> Result<Option<Block>, BadOptionValue> {
        self.block(option::BLOCK2)
    }

    fn block(&self, number: u16) -> Result<Option<Block>, BadOptionValue> {
        self.option(number)
            .map(|v| Block::decode(v).ok_or(BadOptionValue { number }))
            .transpose()
    }

    /// The Observe option: 0 registers, 1 deregisters; a notification's
    /// sequence number (24 bits).
    pub fn observe(&self) -> Result<Option<u32>, BadOptionValue> {
        let number = option::OBSERVE;
        match self.option(number) {
            Some(v) if v.len() > 3 => Err(BadOptionValue { number }),
            Some(v) => Ok(decode_uint(v)),
            None => Ok(None),
        }
    }
}

/// Reads an option delta or length from its nibble and extended bytes.
fn extended(nibble: u8, data: &[u8], pos: &mut usize) -> Result<u32, DecodeErrorKind> {
    match nibble {
        0..=12 => Ok(u32::from(nibble)),
        13 => {
            let b = *data.get(*pos).ok_or(DecodeErrorKind::Truncated)?;
            *pos += 1;
            Ok(u32::from(b) + 13)
        }
        14 => {
            let b = data.get(*pos..*pos + 2).ok_or(DecodeErrorKind::Truncated)?;
            *pos += 2;
            Ok(u32::from(u16::from_be_bytes([b[0], b[1]])) + 269)
        }
        _ => Err(DecodeErrorKind::ReservedNibble),
    }
}

/// An option delta or length as its nibble and extended bytes.
fn nibble(n: u32) -> (u8, Vec<u8>) {
    match n {
        0..=12 => (n as u8, Vec::new()),
        13..=268 => (13, vec![(n - 13) as u8]),
        _ => (14, ((n - 269) as u16).to_be_bytes().to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(data: &[u8]) -> DecodeError {
        Message::decode(data).unwrap_err()
    }

    #[test]
    fn the_rfc_examples_decode() {
        // Figure 16: CON GET /temperature; its piggybacked 2.05 response.
        let req = Message::decode(b"\x40\x01\x7d\x34\xbbtemperature").unwrap();
        assert_eq!(req.options().len(), 1);
        let resp = Message::decode(b"\x60\x45\x7d\x34\xff22.3 C").unwrap();
        assert_eq!(resp.mtype, MessageType::Acknowledgement);
        assert_eq!(resp.code, Code::CONTENT);
        assert_eq!(resp.payload, b"22.3 C");
        // With a token (figure 17's 0x71).
        let t = Message::decode(b"\x41\x01\x7d\x35\x71\xbbtemperature").unwrap();
        assert_eq!(t.token.as_bytes(), [0x71]);
        // An empty ACK, and a ping (CON 0.00).
        let ack = Message::decode(b"\x60\x00\x7d\x34").unwrap();
        assert!(ack.code.is_empty() && ack.payload.is_empty());
    }

    #[test]
    fn format_errors_say_whether_the_header_was_read() {
        assert_eq!(err(b"\x40\x01\x00").header, None);
        assert_eq!(
            err(b"\x80\x01\x00\x01").kind,
            DecodeErrorKind::UnknownVersion
        );
        assert_eq!(
            err(b"\x80\x01\x00\x01").header,
            None,
            "no RST for another version"
        );
        let e = err(b"\x49\x01\x00\x07");
        assert_eq!(e.kind, DecodeErrorKind::TokenTooLong);
        assert_eq!(e.header, Some((MessageType::Confirmable, 7)));
        assert_eq!(
            err(b"\x42\x01\x00\x07\x01").kind,
            DecodeErrorKind::Truncated
        );
        assert_eq!(
            err(b"\x60\x00\x00\x07\xff\x01").kind,
            DecodeErrorKind::EmptyWithContent
        );
        assert_eq!(
            err(b"\x61\x00\x00\x07\x01").kind,
            DecodeErrorKind::EmptyWithContent
        );
        assert_eq!(
            err(b"\x40\x01\x00\x07\xff").kind,
            DecodeErrorKind::MarkerWithoutPayload
        );
        assert_eq!(
            err(b"\x40\x01\x00\x07\xf1x").kind,
            DecodeErrorKind::ReservedNibble
        );
        assert_eq!(
            err(b"\x40\x01\x00\x07\x1f").kind,
            DecodeErrorKind::ReservedNibble
        );
        assert_eq!(
            err(b"\x40\x01\x00\x07\xd1").kind,
            DecodeErrorKind::Truncated
        );
        assert_eq!(
            err(b"\x40\x01\x00\x07\x13ab").kind,
            DecodeErrorKind::Truncated
        );
        // 65,000 + 65,000 overflows 16 bits.
        let mut big = b"\x40\x01\x00\x07".to_vec();
        for _ in 0..2 {
            big.push(0xe0);
            big.extend_from_slice(&(65_000u16 - 269).to_be_bytes());
        }
        assert_eq!(err(&big).kind, DecodeErrorKind::OptionNumberOverflow);
        let mut many = b"\x40\x01\x00\x07".to_vec();
        many.extend(std::iter::repeat_n(0x00, MAX_OPTIONS + 1));
        assert_eq!(err(&many).kind, DecodeErrorKind::TooManyOptions);
        many.truncate(4 + MAX_OPTIONS);
        assert_eq!(Message::decode(&many).unwrap().options().len(), MAX_OPTIONS);
    }

    #[test]
    fn options_keep_their_order_and_use_extended_deltas() {
        let mut m = Message::new(MessageType::Confirmable, Code::POST, 1);
        m.token = Token::new(&[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        m.add_option(option::URI_PATH, b"t".to_vec());
        m.add_option(option::URI_PATH, b"temp".to_vec());
        m.add_option(option::URI_HOST, b"example".to_vec());
        m.set_uint_option(option::CONTENT_FORMAT, 50);
        m.add_option(option::NO_RESPONSE, vec![26]);
        m.add_option(65_003, vec![b'x'; 300]);
        m.payload = b"{}".to_vec();
        let wire = m.encode();
        assert_eq!(wire.len(), m.encoded_len());
        let back = Message::decode(&wire).unwrap();
        assert_eq!(back, m);
        let path: Vec<&[u8]> = back.uri_path().collect();
        assert_eq!(path, [b"t".as_slice(), b"temp"]);
        assert_eq!(back.content_format(), Ok(Some(50)));
        assert_eq!(back.option(65_003).map(<[u8]>::len), Some(300));
        m.set_uint_option(option::CONTENT_FORMAT, 110);
        assert_eq!(m.content_format(), Ok(Some(110)));
        m.set_option(option::CONTENT_FORMAT, vec![1, 0, 0, 0, 0]);
        assert_eq!(m.content_format(), Err(BadOptionValue { number: 12 }));
    }
}
