//! A sans-io CoAP message codec: RFC 7252's message format, with the option
//! values of the Block options (RFC 7959) and Observe (RFC 7641).
//!
//! [`Message::decode`] takes one datagram and gives a typed [`Message`] or a
//! [`DecodeError`] that says whether the header could be read (a
//! confirmable message with a format error is answered with a Reset, which
//! needs its message id). [`Message::encode`] writes a message back. The
//! codec checks every message-format rule of RFC 7252 section 3: the
//! version, token lengths 0 to 8, option deltas and lengths (nibble 15 is
//! reserved), option numbers within 16 bits, no payload marker without a
//! payload, and an Empty message with nothing after its header. It bounds
//! its own work: at most [`MAX_OPTIONS`] options per message.
//!
//! ```
//! use tributary_coap_codec::{Code, Message, MessageType, option};
//!
//! // RFC 7252 figure 16's request: CON GET /temperature, message id 0x7d34.
//! let wire = b"\x40\x01\x7d\x34\xbbtemperature";
//! let msg = Message::decode(wire).unwrap();
//! assert_eq!(msg.mtype, MessageType::Confirmable);
//! assert_eq!(msg.code, Code::GET);
//! assert_eq!(msg.message_id, 0x7d34);
//! assert_eq!(msg.uri_path().collect::<Vec<_>>(), [b"temperature".as_slice()]);
//!
//! let mut reply = Message::new(MessageType::Acknowledgement, Code::CONTENT, msg.message_id);
//! reply.token = msg.token;
//! reply.set_uint_option(option::CONTENT_FORMAT, 0);
//! reply.payload = b"22.3 C".to_vec();
//! assert_eq!(Message::decode(&reply.encode()).unwrap(), reply);
//! ```

mod block;
mod code;
mod message;
pub mod option;

pub use block::Block;
pub use code::Code;
pub use message::{DecodeError, DecodeErrorKind, MAX_OPTIONS, Message, MessageType, Token};

/// Content-Format numbers (the IANA "CoAP Content-Formats" registry) that
/// Tributary reads or writes.
pub mod content_format {
    /// `text/plain; charset=utf-8`.
    pub const TEXT: u16 = 0;
    /// `application/link-format` (RFC 6690).
    pub const LINK_FORMAT: u16 = 40;
    /// `application/octet-stream`.
    pub const OCTET_STREAM: u16 = 42;
    /// `application/json`.
    pub const JSON: u16 = 50;
    /// `application/cbor`.
    pub const CBOR: u16 = 60;
    /// `application/senml+json` (RFC 8428).
    pub const SENML_JSON: u16 = 110;
    /// `application/senml+cbor` (RFC 8428).
    pub const SENML_CBOR: u16 = 112;
    /// `application/vnd.oma.lwm2m+tlv`.
    pub const LWM2M_TLV: u16 = 11542;
    /// `application/vnd.oma.lwm2m+json` (LwM2M 1.0).
    pub const LWM2M_JSON: u16 = 11543;
}
