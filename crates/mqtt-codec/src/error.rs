//! The codec's two error types and their mapping to MQTT 5.0 reason codes.

use crate::packet::{PacketType, ProtocolVersion};
use crate::properties::PropertyId;
use crate::reason::ReasonCode;
use crate::topic::TopicError;

/// Why received bytes are not a valid MQTT packet.
///
/// Every variant is fatal for the connection (MQTT 5.0 §4.13): the server
/// closes it, first sending a CONNACK (for an error in CONNECT) or a
/// DISCONNECT carrying [`DecodeError::reason_code`] when the peer speaks 5.0.
/// Section references are to MQTT 5.0 unless noted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The packet is larger than the receiver's maximum packet size
    /// (detected from the fixed header alone, before the rest arrives).
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge {
        /// The whole packet's size: fixed header plus remaining length.
        size: usize,
        /// The limit passed to `decode`.
        max: usize,
    },
    /// CONNECT asks for an MQTT version other than 3.1.1 and 5.0: MQTT 3.1
    /// (protocol name `MQIsdp`), or protocol name `MQTT` at a level other
    /// than 4 or 5.
    #[error("unsupported MQTT protocol version (protocol level {level})")]
    UnsupportedProtocolVersion {
        /// The protocol level byte received.
        level: u8,
    },
    /// CONNECT names a protocol other than MQTT.
    #[error("unknown protocol name {name:?}")]
    UnknownProtocolName {
        /// The protocol name received (lossily decoded, at most 32 bytes).
        name: String,
    },
    /// The first packet on a connection is not CONNECT (§3.1, [MQTT-3.1.0-1]).
    #[error("the first packet must be CONNECT, received packet type {packet_type}")]
    ExpectedConnect {
        /// The 4-bit packet type received.
        packet_type: u8,
    },
    /// A CONNECT after the first one ([MQTT-3.1.0-2]).
    #[error("a second CONNECT on the same connection")]
    UnexpectedConnect,
    /// Packet type 0, or 15 (AUTH) in MQTT 3.1.1.
    #[error("reserved packet type {packet_type}")]
    ReservedPacketType {
        /// The 4-bit packet type received.
        packet_type: u8,
    },
    /// The fixed header's flag bits are not those the packet type requires
    /// (§2.1.3).
    #[error("invalid fixed header flags {flags:#06b} for {packet}")]
    InvalidFlags {
        /// The packet type.
        packet: PacketType,
        /// The flag bits received.
        flags: u8,
    },
    /// QoS 3 in a PUBLISH, a will, or (3.1.1) a SUBSCRIBE.
    #[error("QoS 3 in {packet}")]
    InvalidQoS {
        /// The packet type.
        packet: PacketType,
    },
    /// DUP set on a QoS 0 PUBLISH ([MQTT-3.3.1-2]).
    #[error("DUP flag set on a QoS 0 PUBLISH")]
    DupWithQoS0,
    /// The remaining length is longer than four bytes, or not in its shortest
    /// form ([MQTT-1.5.5-1]).
    #[error("malformed remaining length")]
    InvalidRemainingLength,
    /// A variable byte integer inside the packet (property length, property
    /// identifier, subscription identifier) is malformed.
    #[error("malformed variable byte integer in {packet}")]
    InvalidVarInt {
        /// The packet type.
        packet: PacketType,
    },
    /// A field runs past the end of the packet (a truncated string, a
    /// missing payload field, ...).
    #[error("{packet} ends in the middle of a field")]
    UnexpectedEnd {
        /// The packet type.
        packet: PacketType,
    },
    /// Bytes are left after the packet's last field.
    #[error("{packet} has bytes after its last field")]
    TrailingBytes {
        /// The packet type.
        packet: PacketType,
    },
    /// A string is not well-formed UTF-8 ([MQTT-1.5.4-1]).
    #[error("{packet} contains a string that is not well-formed UTF-8")]
    InvalidUtf8 {
        /// The packet type.
        packet: PacketType,
    },
    /// A string contains U+0000 ([MQTT-1.5.4-2]).
    #[error("{packet} contains a string with the null character U+0000")]
    NullCharacter {
        /// The packet type.
        packet: PacketType,
    },
    /// The reserved bit of CONNECT's flags is set ([MQTT-3.1.2-3]).
    #[error("CONNECT reserved flag is set")]
    ReservedConnectFlag,
    /// Will QoS or Will Retain set without the Will Flag ([MQTT-3.1.2-11],
    /// [MQTT-3.1.2-13]).
    #[error("CONNECT sets will QoS or will retain without a will")]
    InvalidWillFlags,
    /// 3.1.1 CONNECT with a password but no user name (3.1.1 [MQTT-3.1.2-22]).
    #[error("CONNECT has a password without a user name")]
    PasswordWithoutUsername,
    /// CONNACK acknowledge flags other than Session Present are set
    /// ([MQTT-3.2.2-1]).
    #[error("CONNACK reserved flags are set")]
    ReservedConnAckFlags,
    /// Reserved bits of a subscription options byte are set ([MQTT-3.8.3-5]).
    #[error("SUBSCRIBE options have reserved bits set")]
    ReservedSubscriptionOptions,
    /// A property identifier MQTT 5.0 does not define (§2.2.2.2).
    #[error("unknown property identifier {id} in {packet}")]
    UnknownProperty {
        /// The packet type.
        packet: PacketType,
        /// The identifier received.
        id: u32,
    },
    /// A property the packet may not carry (§2.2.2.2).
    #[error("property {property:?} is not allowed in {packet}")]
    PropertyNotAllowed {
        /// The packet type (CONNECT for will properties).
        packet: PacketType,
        /// The property.
        property: PropertyId,
    },
    /// A reason code the packet may not carry (or, in 3.1.1, a reserved
    /// return code).
    #[error("reason code {code:#04x} is not allowed in {packet}")]
    InvalidReasonCode {
        /// The packet type.
        packet: PacketType,
        /// The value received.
        code: u8,
    },
    /// A property that may appear once appears again.
    #[error("property {property:?} appears more than once in {packet}")]
    DuplicateProperty {
        /// The packet type (CONNECT for will properties).
        packet: PacketType,
        /// The property.
        property: PropertyId,
    },
    /// A property value outside its range (a zero Receive Maximum, a boolean
    /// that is neither 0 nor 1, a response topic with wildcards, ...).
    #[error("invalid value for property {property:?} in {packet}")]
    InvalidPropertyValue {
        /// The packet type (CONNECT for will properties).
        packet: PacketType,
        /// The property.
        property: PropertyId,
    },
    /// A Topic Alias of 0 (§3.3.2.3.4).
    #[error("topic alias 0")]
    TopicAliasZero,
    /// A packet identifier of 0 where a non-zero one is required
    /// ([MQTT-2.2.1-3]).
    #[error("packet identifier 0 in {packet}")]
    ZeroPacketId {
        /// The packet type.
        packet: PacketType,
    },
    /// A SUBSCRIBE or UNSUBSCRIBE without topic filters, or a 5.0 SUBACK or
    /// UNSUBACK without reason codes ([MQTT-3.8.3-2], [MQTT-3.10.3-2]).
    #[error("{packet} has an empty payload")]
    EmptyPayload {
        /// The packet type.
        packet: PacketType,
    },
    /// A subscription's maximum QoS is 3 (5.0, §3.8.3.1).
    #[error("subscription maximum QoS 3")]
    InvalidSubscriptionQoS,
    /// A subscription's Retain Handling is 3 (§3.8.3.1).
    #[error("subscription retain handling 3")]
    InvalidRetainHandling,
    /// No Local set on a shared subscription ([MQTT-3.8.3-4]).
    #[error("no local set on a shared subscription")]
    NoLocalOnSharedSubscription,
    /// CONNECT carries authentication data without an authentication method
    /// (§3.1.2.11.10), or AUTH omits the method (§3.15.2.2.2).
    #[error("{packet} lacks an authentication method")]
    MissingAuthenticationMethod {
        /// The packet type.
        packet: PacketType,
    },
    /// A 5.0 PUBLISH with an empty topic name and no topic alias (§3.3.2.1).
    #[error("PUBLISH has neither a topic name nor a topic alias")]
    MissingTopic,
    /// CONNACK with Session Present set and a failure reason code
    /// ([MQTT-3.2.2-6]).
    #[error("CONNACK refuses the connection but sets session present")]
    SessionPresentWithError,
    /// An invalid topic name in PUBLISH or a will.
    #[error("invalid topic name in {packet}: {error}")]
    InvalidTopicName {
        /// The packet type.
        packet: PacketType,
        /// What is wrong with it.
        error: TopicError,
    },
    /// An invalid topic filter (or shared subscription filter) in SUBSCRIBE
    /// or UNSUBSCRIBE.
    #[error("invalid topic filter in {packet}: {error}")]
    InvalidTopicFilter {
        /// The packet type.
        packet: PacketType,
        /// What is wrong with it.
        error: TopicError,
    },
}

impl DecodeError {
    /// The MQTT 5.0 reason code to send in the CONNACK or DISCONNECT that
    /// reports this error: 0x81 Malformed Packet when the bytes cannot be
    /// parsed, 0x82 Protocol Error when they parse but break a rule, and the
    /// more specific codes §4.13 and the packet sections name (0x84, 0x8F,
    /// 0x90, 0x94, 0x95). For a 3.1.1 CONNECT, map it with
    /// [`ReasonCode::to_v311_connack`].
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            Self::PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            Self::UnsupportedProtocolVersion { .. } | Self::UnknownProtocolName { .. } => {
                ReasonCode::UnsupportedProtocolVersion
            }
            Self::ReservedPacketType { .. }
            | Self::InvalidFlags { .. }
            | Self::InvalidQoS { .. }
            | Self::DupWithQoS0
            | Self::InvalidRemainingLength
            | Self::InvalidVarInt { .. }
            | Self::UnexpectedEnd { .. }
            | Self::TrailingBytes { .. }
            | Self::InvalidUtf8 { .. }
            | Self::NullCharacter { .. }
            | Self::ReservedConnectFlag
            | Self::InvalidWillFlags
            | Self::PasswordWithoutUsername
            | Self::ReservedConnAckFlags
            | Self::ReservedSubscriptionOptions
            | Self::UnknownProperty { .. }
            | Self::PropertyNotAllowed { .. }
            | Self::InvalidReasonCode { .. } => ReasonCode::MalformedPacket,
            Self::ExpectedConnect { .. }
            | Self::UnexpectedConnect
            | Self::DuplicateProperty { .. }
            | Self::InvalidPropertyValue { .. }
            | Self::ZeroPacketId { .. }
            | Self::EmptyPayload { .. }
            | Self::InvalidSubscriptionQoS
            | Self::InvalidRetainHandling
            | Self::NoLocalOnSharedSubscription
            | Self::MissingAuthenticationMethod { .. }
            | Self::MissingTopic
            | Self::SessionPresentWithError => ReasonCode::ProtocolError,
            Self::TopicAliasZero => ReasonCode::TopicAliasInvalid,
            Self::InvalidTopicName { .. } => ReasonCode::TopicNameInvalid,
            Self::InvalidTopicFilter { .. } => ReasonCode::TopicFilterInvalid,
        }
    }
}

/// Why a packet cannot be encoded. Encoding checks the same rules decoding
/// does, so whatever encodes also decodes to an equal packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A string or binary field longer than 65,535 bytes.
    #[error("{field} is {len} bytes long; MQTT strings and binary data hold at most 65,535")]
    TooLong {
        /// Which field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// A string containing U+0000.
    #[error("{field} contains the null character U+0000")]
    NullCharacter {
        /// Which field.
        field: &'static str,
    },
    /// The remaining length (or a property length) would exceed 268,435,455.
    #[error("{packet} is too large: {size} bytes where at most 268,435,455 fit")]
    PacketTooLarge {
        /// The packet type.
        packet: PacketType,
        /// The size that does not fit.
        size: usize,
    },
    /// An invalid topic name (PUBLISH, will).
    #[error("invalid topic name in {packet}: {error}")]
    InvalidTopicName {
        /// The packet type.
        packet: PacketType,
        /// What is wrong with it.
        error: TopicError,
    },
    /// An invalid topic filter (SUBSCRIBE, UNSUBSCRIBE).
    #[error("invalid topic filter in {packet}: {error}")]
    InvalidTopicFilter {
        /// The packet type.
        packet: PacketType,
        /// What is wrong with it.
        error: TopicError,
    },
    /// A packet identifier of 0, a QoS > 0 PUBLISH without one, or a QoS 0
    /// PUBLISH with one.
    #[error("invalid packet identifier in {packet}")]
    InvalidPacketId {
        /// The packet type.
        packet: PacketType,
    },
    /// DUP set on a QoS 0 PUBLISH.
    #[error("DUP flag set on a QoS 0 PUBLISH")]
    DupWithQoS0,
    /// A reason code the packet type may not carry.
    #[error("reason code {code} is not allowed in {packet}")]
    ReasonCodeNotAllowed {
        /// The packet type.
        packet: PacketType,
        /// The reason code.
        code: ReasonCode,
    },
    /// Something MQTT 3.1.1 cannot express (see the crate documentation).
    #[error("{what} cannot be expressed in MQTT 3.1.1")]
    NotInV311 {
        /// What it is.
        what: &'static str,
    },
    /// A CONNECT whose `protocol` differs from the version asked to encode.
    #[error("CONNECT for {packet} encoded as {requested}")]
    VersionMismatch {
        /// The CONNECT's `protocol`.
        packet: ProtocolVersion,
        /// The version passed to `encode`.
        requested: ProtocolVersion,
    },
    /// A property value outside its range.
    #[error("invalid value for property {property:?}")]
    InvalidProperty {
        /// The property.
        property: PropertyId,
    },
    /// A SUBSCRIBE, UNSUBSCRIBE, or 5.0 SUBACK or UNSUBACK with an empty list.
    #[error("{packet} needs at least one entry")]
    EmptyPayload {
        /// The packet type.
        packet: PacketType,
    },
    /// Session Present set on a CONNACK that refuses the connection.
    #[error("CONNACK refuses the connection but sets session present")]
    SessionPresentWithError,
    /// No Local set on a shared subscription.
    #[error("no local set on a shared subscription")]
    NoLocalOnSharedSubscription,
    /// Authentication data without a method (CONNECT), or an AUTH without a
    /// method.
    #[error("{packet} lacks an authentication method")]
    MissingAuthenticationMethod {
        /// The packet type.
        packet: PacketType,
    },
    /// A PUBLISH with an empty topic and no topic alias.
    #[error("PUBLISH has neither a topic name nor a topic alias")]
    MissingTopic,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_was_wrong() {
        let e = DecodeError::PacketTooLarge {
            size: 300,
            max: 256,
        };
        assert_eq!(
            e.to_string(),
            "packet of 300 bytes exceeds the maximum packet size of 256 bytes"
        );
        assert_eq!(e.reason_code(), ReasonCode::PacketTooLarge);
        let e = DecodeError::InvalidFlags {
            packet: PacketType::PubRel,
            flags: 0,
        };
        assert_eq!(
            e.to_string(),
            "invalid fixed header flags 0b0000 for PUBREL"
        );
        assert_eq!(e.reason_code(), ReasonCode::MalformedPacket);
        let e = EncodeError::TooLong {
            field: "client identifier",
            len: 70_000,
        };
        assert_eq!(
            e.to_string(),
            "client identifier is 70000 bytes long; MQTT strings and binary data hold at most 65,535"
        );
    }
}
