//! A sans-io codec for MQTT 3.1.1 and MQTT 5.0: bytes in, typed [`Packet`]s
//! out, and back.
//!
//! What lives here: every control packet of both versions (CONNECT to AUTH),
//! every MQTT 5.0 property and reason code, in both directions, so the same
//! crate serves Tributary's MQTT server and the tests that play its clients.
//! Decoding checks everything a single packet can tell: reserved bits and
//! flags, the remaining length, UTF-8 rules, QoS and packet identifiers,
//! topic names and filters, which properties and reason codes a packet may
//! carry and how often. The [`topic`] module has the topic helpers (validation,
//! matching, shared subscriptions).
//!
//! What does not: I/O (the caller owns the socket and the buffer), sessions
//! and their state (packet identifier allocation, in-flight windows and
//! Receive Maximum accounting, topic alias tables, keep alive, the defaults of
//! absent properties), routing and subscription storage, authentication. Rules
//! that need such state (a second CONNECT is the exception: the `version`
//! argument tells it) are for the server to check.
//!
//! # Use
//!
//! ```
//! use bytes::BytesMut;
//! use tributary_mqtt_codec::{
//!     decode, encode, Connect, Packet, ProtocolVersion, PubAck, Publish, QoS,
//! };
//!
//! const MAX_PACKET: usize = 1024 * 1024;
//!
//! // The client side of the test: CONNECT, then a QoS 1 PUBLISH.
//! let mut wire = BytesMut::new();
//! let connect = Connect::new(ProtocolVersion::V5, "sensor-1");
//! encode(&connect.into(), ProtocolVersion::V5, &mut wire).unwrap();
//! let mut publish = Publish::new("plant/7/temperature", "21.5");
//! publish.qos = QoS::AtLeastOnce;
//! publish.packet_id = Some(1);
//! encode(&publish.into(), ProtocolVersion::V5, &mut wire).unwrap();
//!
//! // The server side: the version is unknown until CONNECT is decoded.
//! let Some(Packet::Connect(connect)) = decode(&mut wire, None, MAX_PACKET).unwrap() else {
//!     panic!("expected CONNECT");
//! };
//! let version = Some(connect.protocol);
//! let Some(Packet::Publish(publish)) = decode(&mut wire, version, MAX_PACKET).unwrap() else {
//!     panic!("expected PUBLISH");
//! };
//! assert_eq!(&publish.payload[..], b"21.5");
//! assert_eq!(decode(&mut wire, version, MAX_PACKET).unwrap(), None, "buffer drained");
//!
//! let mut out = BytesMut::new();
//! encode(&PubAck::new(1).into(), connect.protocol, &mut out).unwrap();
//! assert_eq!(&out[..], [0x40, 0x02, 0x00, 0x01]);
//! ```
//!
//! [`decode`] returns `Ok(None)` while the buffer holds only part of a packet,
//! consuming nothing, and refuses a packet larger than `max_packet_size` as
//! soon as its fixed header is in, so an announced 256 MB packet is never
//! buffered. It never panics, and allocates no more than the packet's own
//! size. A PUBLISH payload shares the received buffer.
//!
//! # Errors
//!
//! Each [`DecodeError`] names what was wrong and maps to the MQTT 5.0 reason
//! code for the CONNACK or DISCONNECT that reports it
//! ([`DecodeError::reason_code`]), following the specification's own split
//! (MQTT 5.0 §1.2, §4.13): 0x81 Malformed Packet for bytes that cannot be
//! parsed (bad flags, lengths, UTF-8, a property not allowed on the packet, a
//! reason code not in the packet's table), 0x82 Protocol Error for packets
//! that parse but break a rule (duplicate properties, out-of-range property
//! values, packet identifier 0, an empty SUBSCRIBE), and the specific codes
//! 0x84 (protocol version), 0x8F (topic filter), 0x90 (topic name), 0x94
//! (topic alias 0) and 0x95 (packet too large).
//!
//! Where the specification lets a receiver choose, this codec is strict:
//! variable byte integers must use their shortest form ([MQTT-1.5.5-1]), DUP
//! on a QoS 0 PUBLISH is malformed, and a 3.1.1 CONNECT with a password but
//! no user name is malformed. It accepts the "disallowed" Unicode code points
//! (control characters, non-characters), which §1.5.4 only says a receiver
//! MAY refuse.
//!
//! # Encoding for an MQTT 3.1.1 peer
//!
//! [`encode`] checks the same rules as [`decode`], so the server never sends
//! what a strict peer would refuse. For a 3.1.1 peer, 5.0-only information
//! is dropped when 3.1.1 has no field for it and losing it cannot turn a
//! failure into a success, and refused ([`EncodeError::NotInV311`]) when it
//! would:
//!
//! | 5.0 field | sent to a 3.1.1 peer as |
//! |---|---|
//! | properties of any packet (and will properties) | dropped |
//! | CONNACK reason code | the 3.1.1 return code of [`ReasonCode::to_v311_connack`], refused when there is none |
//! | SUBACK reason codes | granted QoS 0/1/2 as is, every failure as 0x80 |
//! | UNSUBACK reason codes | dropped if all succeed (3.1.1 UNSUBACK has none), refused if one fails |
//! | PUBACK/PUBREC/PUBREL/PUBCOMP reason code | dropped if below 0x80, refused otherwise |
//! | DISCONNECT reason code | refused unless Normal disconnection |
//! | AUTH | refused |
//! | No Local, Retain As Published, Retain Handling | refused unless all default |
//! | an empty topic name (topic alias) | refused |
//! | a password without a user name | refused |
//!
//! Decoding a 3.1.1 packet fills the 5.0-only fields with their defaults
//! (no properties, Success, an empty UNSUBACK reason code list), and maps
//! CONNACK return codes with [`ReasonCode::from_v311_connack`] and the SUBACK
//! failure 0x80 to [`ReasonCode::UnspecifiedError`].
//!
//! A server must not send a packet larger than the client's Maximum Packet
//! Size; [`Packet::encoded_len`] tells the size before encoding.

mod decode;
mod encode;
mod error;
mod packet;
mod properties;
mod reason;
pub mod topic;
mod wire;

pub use decode::decode;
pub use encode::encode;
pub use error::{DecodeError, EncodeError};
pub use packet::{
    Auth, ConnAck, Connect, Direction, Disconnect, Packet, PacketType, ProtocolVersion, PubAck,
    PubComp, PubRec, PubRel, Publish, QoS, RetainHandling, SubAck, Subscribe, Subscription,
    SubscriptionOptions, UnsubAck, Unsubscribe, Will,
};
pub use properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PayloadFormat, PropertyId, PublishProperties, SubscribeProperties, UnsubscribeProperties,
    UserProperty, WillProperties,
};
pub use reason::ReasonCode;

/// The largest remaining length a packet can declare (268,435,455 bytes):
/// with the five-byte fixed header, the largest possible packet is
/// [`MAX_PACKET_SIZE`].
pub const MAX_REMAINING_LENGTH: usize = wire::MAX_VAR_INT as usize;

/// The largest packet MQTT can express, fixed header included.
pub const MAX_PACKET_SIZE: usize = MAX_REMAINING_LENGTH + 5;
