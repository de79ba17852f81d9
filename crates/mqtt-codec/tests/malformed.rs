//! A corpus of invalid packets, each with the error the codec must report
//! and the MQTT 5.0 reason code a server sends for it. Every case also
//! checks that nothing was consumed from the buffer.

use bytes::BytesMut;
use tributary_mqtt_codec::topic::TopicError;
use tributary_mqtt_codec::{
    DecodeError, PacketType, PropertyId, ProtocolVersion, ReasonCode, decode,
};

use DecodeError as E;
use PacketType as T;
use ProtocolVersion::{V5, V311};

const MALFORMED: u8 = 0x81;
const PROTOCOL: u8 = 0x82;
const VERSION: u8 = 0x84;
const FILTER: u8 = 0x8F;
const TOPIC: u8 = 0x90;
const ALIAS: u8 = 0x94;
const TOO_LARGE: u8 = 0x95;

/// A packet with this first byte whose remaining length covers `parts`.
fn pkt(first: u8, parts: &[&[u8]]) -> Vec<u8> {
    let body: Vec<u8> = parts.concat();
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut byte = u8::try_from(len % 128).expect("below 128");
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend(body);
    out
}

/// A length-prefixed field (UTF-8 string or binary data).
fn s(bytes: impl AsRef<[u8]>) -> Vec<u8> {
    let bytes = bytes.as_ref();
    let mut out = u16::try_from(bytes.len())
        .expect("short")
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(bytes);
    out
}

/// A 5.0 CONNECT with these flags, properties (with their length) and payload.
fn connect_v5(flags: u8, properties: &[u8], payload: &[&[u8]]) -> Vec<u8> {
    let head = [s("MQTT"), vec![5, flags, 0, 60], properties.to_vec()].concat();
    let mut parts: Vec<&[u8]> = vec![&head];
    parts.extend_from_slice(payload);
    pkt(0x10, &parts)
}

/// A 3.1.1 CONNECT with these flags and payload.
fn connect_v311(flags: u8, payload: &[&[u8]]) -> Vec<u8> {
    let head = [s("MQTT"), vec![4, flags, 0, 60]].concat();
    let mut parts: Vec<&[u8]> = vec![&head];
    parts.extend_from_slice(payload);
    pkt(0x10, &parts)
}

struct Case {
    name: &'static str,
    /// The connection's version (`None` before CONNECT).
    state: Option<ProtocolVersion>,
    bytes: Vec<u8>,
    max: usize,
    error: DecodeError,
    reason: u8,
}

fn case(
    name: &'static str,
    state: Option<ProtocolVersion>,
    bytes: Vec<u8>,
    error: DecodeError,
    reason: u8,
) -> Case {
    Case {
        name,
        state,
        bytes,
        max: 1 << 20,
        error,
        reason,
    }
}

fn corpus() -> Vec<Case> {
    let v5 = Some(V5);
    let v3 = Some(V311);
    let pre = None;
    let client = s("c1");
    vec![
        // Fixed header.
        case(
            "packet type 0",
            v5,
            vec![0x00, 0x00],
            E::ReservedPacketType { packet_type: 0 },
            MALFORMED,
        ),
        case(
            "AUTH is reserved in 3.1.1",
            v3,
            vec![0xF0, 0x00],
            E::ReservedPacketType { packet_type: 15 },
            MALFORMED,
        ),
        case(
            "PUBREL flags 0000",
            v5,
            vec![0x60, 0x02, 0x00, 0x01],
            E::InvalidFlags {
                packet: T::PubRel,
                flags: 0,
            },
            MALFORMED,
        ),
        case(
            "SUBSCRIBE flags 0000",
            v3,
            pkt(0x80, &[&[0, 1], &s("a"), &[0]]),
            E::InvalidFlags {
                packet: T::Subscribe,
                flags: 0,
            },
            MALFORMED,
        ),
        case(
            "UNSUBSCRIBE flags 0011",
            v5,
            pkt(0xA3, &[&[0, 1, 0], &s("a")]),
            E::InvalidFlags {
                packet: T::Unsubscribe,
                flags: 3,
            },
            MALFORMED,
        ),
        case(
            "PINGREQ flags 0001",
            v3,
            vec![0xC1, 0x00],
            E::InvalidFlags {
                packet: T::PingReq,
                flags: 1,
            },
            MALFORMED,
        ),
        case(
            "DISCONNECT flags 0010",
            v5,
            vec![0xE2, 0x00],
            E::InvalidFlags {
                packet: T::Disconnect,
                flags: 2,
            },
            MALFORMED,
        ),
        case(
            "CONNECT flags 0001",
            pre,
            vec![0x11, 0x00],
            E::InvalidFlags {
                packet: T::Connect,
                flags: 1,
            },
            MALFORMED,
        ),
        case(
            "AUTH flags 0001",
            v5,
            vec![0xF1, 0x00],
            E::InvalidFlags {
                packet: T::Auth,
                flags: 1,
            },
            MALFORMED,
        ),
        case(
            "PUBLISH QoS 3",
            v5,
            pkt(0x36, &[&s("a"), &[0, 1, 0]]),
            E::InvalidQoS { packet: T::Publish },
            MALFORMED,
        ),
        case(
            "PUBLISH DUP at QoS 0",
            v3,
            pkt(0x38, &[&s("a")]),
            E::DupWithQoS0,
            MALFORMED,
        ),
        // Remaining length.
        case(
            "remaining length of five bytes",
            v5,
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
            E::InvalidRemainingLength,
            MALFORMED,
        ),
        case(
            "remaining length not in shortest form",
            v3,
            vec![0xC0, 0x80, 0x00],
            E::InvalidRemainingLength,
            MALFORMED,
        ),
        case(
            "PINGREQ with a body",
            v3,
            vec![0xC0, 0x01, 0x00],
            E::TrailingBytes { packet: T::PingReq },
            MALFORMED,
        ),
        case(
            "PINGRESP with a body",
            v5,
            vec![0xD0, 0x01, 0x00],
            E::TrailingBytes {
                packet: T::PingResp,
            },
            MALFORMED,
        ),
        case(
            "remaining length shorter than the packet id",
            v5,
            vec![0x40, 0x01, 0x00],
            E::UnexpectedEnd { packet: T::PubAck },
            MALFORMED,
        ),
        Case {
            name: "packet too large, refused from the fixed header alone",
            state: v5,
            bytes: vec![0x30, 0xFF, 0xFF, 0xFF, 0x7F, 0x00],
            max: 1024,
            error: E::PacketTooLarge {
                size: 268_435_460,
                max: 1024,
            },
            reason: TOO_LARGE,
        },
        Case {
            name: "packet one byte over the limit",
            state: v3,
            bytes: pkt(0x30, &[&s("a"), b"12345"]),
            max: 9,
            error: E::PacketTooLarge { size: 10, max: 9 },
            reason: TOO_LARGE,
        },
        // Connection state.
        case(
            "first packet is not CONNECT",
            pre,
            pkt(0x30, &[&s("a")]),
            E::ExpectedConnect { packet_type: 3 },
            PROTOCOL,
        ),
        case(
            "first packet is AUTH",
            pre,
            vec![0xF0, 0x00],
            E::ExpectedConnect { packet_type: 15 },
            PROTOCOL,
        ),
        case(
            "second CONNECT",
            v5,
            connect_v5(0x02, &[0], &[&client]),
            E::UnexpectedConnect,
            PROTOCOL,
        ),
        // CONNECT.
        case(
            "MQTT 3.1 (MQIsdp, level 3)",
            pre,
            pkt(0x10, &[&s("MQIsdp"), &[3, 2, 0, 60], &client]),
            E::UnsupportedProtocolVersion { level: 3 },
            VERSION,
        ),
        case(
            "protocol level 6",
            pre,
            pkt(0x10, &[&s("MQTT"), &[6, 2, 0, 60], &client]),
            E::UnsupportedProtocolVersion { level: 6 },
            VERSION,
        ),
        case(
            "protocol name HTTP",
            pre,
            pkt(0x10, &[&s("HTTP"), &[4, 2, 0, 60], &client]),
            E::UnknownProtocolName {
                name: "HTTP".into(),
            },
            VERSION,
        ),
        case(
            "CONNECT reserved flag",
            pre,
            connect_v311(0x03, &[&client]),
            E::ReservedConnectFlag,
            MALFORMED,
        ),
        case(
            "will QoS 3",
            pre,
            connect_v311(0x1E, &[&client, &s("w"), &s("m")]),
            E::InvalidQoS { packet: T::Connect },
            MALFORMED,
        ),
        case(
            "will QoS without will flag",
            pre,
            connect_v5(0x0A, &[0], &[&client]),
            E::InvalidWillFlags,
            MALFORMED,
        ),
        case(
            "will retain without will flag",
            pre,
            connect_v311(0x22, &[&client]),
            E::InvalidWillFlags,
            MALFORMED,
        ),
        case(
            "3.1.1 password without user name",
            pre,
            connect_v311(0x42, &[&client, &s("pw")]),
            E::PasswordWithoutUsername,
            MALFORMED,
        ),
        case(
            "user name flag but no user name",
            pre,
            connect_v311(0x82, &[&client]),
            E::UnexpectedEnd { packet: T::Connect },
            MALFORMED,
        ),
        case(
            "will flag but no will payload",
            pre,
            connect_v311(0x06, &[&client, &s("w")]),
            E::UnexpectedEnd { packet: T::Connect },
            MALFORMED,
        ),
        case(
            "missing client identifier",
            pre,
            connect_v311(0x02, &[]),
            E::UnexpectedEnd { packet: T::Connect },
            MALFORMED,
        ),
        case(
            "truncated client identifier",
            pre,
            connect_v311(0x02, &[&[0, 10, b'a', b'b']]),
            E::UnexpectedEnd { packet: T::Connect },
            MALFORMED,
        ),
        case(
            "client identifier not UTF-8",
            pre,
            connect_v311(0x02, &[&s([0xC3, 0x28])]),
            E::InvalidUtf8 { packet: T::Connect },
            MALFORMED,
        ),
        case(
            "client identifier with U+0000",
            pre,
            connect_v5(0x02, &[0], &[&s("a\0b")]),
            E::NullCharacter { packet: T::Connect },
            MALFORMED,
        ),
        case(
            "overlong UTF-8 encoding of U+0000",
            pre,
            connect_v311(0x02, &[&s([b'a', 0xC0, 0x80])]),
            E::InvalidUtf8 { packet: T::Connect },
            MALFORMED,
        ),
        case(
            "UTF-8 encoded surrogate U+D800",
            pre,
            connect_v311(0x02, &[&s([0xED, 0xA0, 0x80])]),
            E::InvalidUtf8 { packet: T::Connect },
            MALFORMED,
        ),
        case(
            "user name not UTF-8",
            pre,
            connect_v311(0x82, &[&client, &s([0xFF])]),
            E::InvalidUtf8 { packet: T::Connect },
            MALFORMED,
        ),
        case(
            "bytes after the password",
            pre,
            connect_v311(0xC2, &[&client, &s("u"), &s("p"), &[0]]),
            E::TrailingBytes { packet: T::Connect },
            MALFORMED,
        ),
        case(
            "will topic with a wildcard",
            pre,
            connect_v311(0x06, &[&client, &s("a/#"), &s("m")]),
            E::InvalidTopicName {
                packet: T::Connect,
                error: TopicError::WildcardInName,
            },
            TOPIC,
        ),
        case(
            "empty will topic",
            pre,
            connect_v5(0x06, &[0], &[&client, &[0], &s(""), &s("m")]),
            E::InvalidTopicName {
                packet: T::Connect,
                error: TopicError::Empty,
            },
            TOPIC,
        ),
        case(
            "duplicate session expiry interval",
            pre,
            connect_v5(0x02, &[10, 0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2], &[&client]),
            E::DuplicateProperty {
                packet: T::Connect,
                property: PropertyId::SessionExpiryInterval,
            },
            PROTOCOL,
        ),
        case(
            "topic alias in CONNECT",
            pre,
            connect_v5(0x02, &[3, 0x23, 0, 1], &[&client]),
            E::PropertyNotAllowed {
                packet: T::Connect,
                property: PropertyId::TopicAlias,
            },
            MALFORMED,
        ),
        case(
            "unknown property 0x7F",
            pre,
            connect_v5(0x02, &[2, 0x7F, 0], &[&client]),
            E::UnknownProperty {
                packet: T::Connect,
                id: 0x7F,
            },
            MALFORMED,
        ),
        case(
            "unknown two-byte property identifier",
            pre,
            connect_v5(0x02, &[3, 0x80, 0x01, 0], &[&client]),
            E::UnknownProperty {
                packet: T::Connect,
                id: 128,
            },
            MALFORMED,
        ),
        case(
            "receive maximum 0",
            pre,
            connect_v5(0x02, &[3, 0x21, 0, 0], &[&client]),
            E::InvalidPropertyValue {
                packet: T::Connect,
                property: PropertyId::ReceiveMaximum,
            },
            PROTOCOL,
        ),
        case(
            "maximum packet size 0",
            pre,
            connect_v5(0x02, &[5, 0x27, 0, 0, 0, 0], &[&client]),
            E::InvalidPropertyValue {
                packet: T::Connect,
                property: PropertyId::MaximumPacketSize,
            },
            PROTOCOL,
        ),
        case(
            "request problem information 2",
            pre,
            connect_v5(0x02, &[2, 0x17, 2], &[&client]),
            E::InvalidPropertyValue {
                packet: T::Connect,
                property: PropertyId::RequestProblemInformation,
            },
            PROTOCOL,
        ),
        case(
            "request response information 7",
            pre,
            connect_v5(0x02, &[2, 0x19, 7], &[&client]),
            E::InvalidPropertyValue {
                packet: T::Connect,
                property: PropertyId::RequestResponseInformation,
            },
            PROTOCOL,
        ),
        case(
            "authentication data without method",
            pre,
            connect_v5(0x02, &[4, 0x16, 0, 1, 9], &[&client]),
            E::MissingAuthenticationMethod { packet: T::Connect },
            PROTOCOL,
        ),
        case(
            "property length past the packet end",
            pre,
            connect_v5(0x02, &[9, 0x11, 0, 0, 0, 1], &[]),
            E::UnexpectedEnd { packet: T::Connect },
            MALFORMED,
        ),
        case(
            "property value past the property length",
            pre,
            connect_v5(0x02, &[3, 0x11, 0, 0, 0, 1], &[&client]),
            E::UnexpectedEnd { packet: T::Connect },
            MALFORMED,
        ),
        case(
            "property length of five bytes",
            pre,
            connect_v5(0x02, &[0xFF, 0xFF, 0xFF, 0xFF, 0x01], &[&client]),
            E::InvalidVarInt { packet: T::Connect },
            MALFORMED,
        ),
        case(
            "session expiry in will properties",
            pre,
            connect_v5(
                0x06,
                &[0],
                &[&client, &[5, 0x11, 0, 0, 0, 1], &s("w"), &s("m")],
            ),
            E::PropertyNotAllowed {
                packet: T::Connect,
                property: PropertyId::SessionExpiryInterval,
            },
            MALFORMED,
        ),
        case(
            "duplicate will delay interval",
            pre,
            connect_v5(
                0x06,
                &[0],
                &[
                    &client,
                    &[10, 0x18, 0, 0, 0, 1, 0x18, 0, 0, 0, 1],
                    &s("w"),
                    &s("m"),
                ],
            ),
            E::DuplicateProperty {
                packet: T::Connect,
                property: PropertyId::WillDelayInterval,
            },
            PROTOCOL,
        ),
        case(
            "user property with a truncated value",
            pre,
            connect_v5(0x02, &[6, 0x26, 0, 1, b'k', 0, 5], &[&client]),
            E::UnexpectedEnd { packet: T::Connect },
            MALFORMED,
        ),
        // CONNACK.
        case(
            "CONNACK reserved flags",
            v3,
            vec![0x20, 0x02, 0x02, 0x00],
            E::ReservedConnAckFlags,
            MALFORMED,
        ),
        case(
            "3.1.1 CONNACK return code 6",
            v3,
            vec![0x20, 0x02, 0x00, 0x06],
            E::InvalidReasonCode {
                packet: T::ConnAck,
                code: 6,
            },
            MALFORMED,
        ),
        case(
            "3.1.1 CONNACK with a property length",
            v3,
            vec![0x20, 0x03, 0x00, 0x00, 0x00],
            E::TrailingBytes { packet: T::ConnAck },
            MALFORMED,
        ),
        case(
            "CONNACK reason code 0x04",
            v5,
            vec![0x20, 0x03, 0x00, 0x04, 0x00],
            E::InvalidReasonCode {
                packet: T::ConnAck,
                code: 4,
            },
            MALFORMED,
        ),
        case(
            "CONNACK refusing with session present",
            v5,
            vec![0x20, 0x03, 0x01, 0x87, 0x00],
            E::SessionPresentWithError,
            PROTOCOL,
        ),
        case(
            "5.0 CONNACK without property length",
            v5,
            vec![0x20, 0x02, 0x00, 0x00],
            E::UnexpectedEnd { packet: T::ConnAck },
            MALFORMED,
        ),
        case(
            "maximum QoS 2",
            v5,
            vec![0x20, 0x05, 0x00, 0x00, 0x02, 0x24, 0x02],
            E::InvalidPropertyValue {
                packet: T::ConnAck,
                property: PropertyId::MaximumQoS,
            },
            PROTOCOL,
        ),
        case(
            "retain available 2",
            v5,
            vec![0x20, 0x05, 0x00, 0x00, 0x02, 0x25, 0x02],
            E::InvalidPropertyValue {
                packet: T::ConnAck,
                property: PropertyId::RetainAvailable,
            },
            PROTOCOL,
        ),
        case(
            "will delay interval in CONNACK",
            v5,
            pkt(0x20, &[&[0, 0, 5, 0x18, 0, 0, 0, 1]]),
            E::PropertyNotAllowed {
                packet: T::ConnAck,
                property: PropertyId::WillDelayInterval,
            },
            MALFORMED,
        ),
        // PUBLISH.
        case(
            "'#' in a PUBLISH topic",
            v5,
            pkt(0x30, &[&s("a/#"), &[0]]),
            E::InvalidTopicName {
                packet: T::Publish,
                error: TopicError::WildcardInName,
            },
            TOPIC,
        ),
        case(
            "'+' in a PUBLISH topic",
            v3,
            pkt(0x30, &[&s("a/+/b")]),
            E::InvalidTopicName {
                packet: T::Publish,
                error: TopicError::WildcardInName,
            },
            TOPIC,
        ),
        case(
            "empty topic in 3.1.1",
            v3,
            pkt(0x30, &[&s("")]),
            E::InvalidTopicName {
                packet: T::Publish,
                error: TopicError::Empty,
            },
            TOPIC,
        ),
        case(
            "empty topic without alias in 5.0",
            v5,
            pkt(0x30, &[&s(""), &[0]]),
            E::MissingTopic,
            PROTOCOL,
        ),
        case(
            "topic alias 0",
            v5,
            pkt(0x30, &[&s("a"), &[3, 0x23, 0, 0]]),
            E::TopicAliasZero,
            ALIAS,
        ),
        case(
            "topic not UTF-8",
            v3,
            pkt(0x30, &[&s([b'a', 0xFE])]),
            E::InvalidUtf8 { packet: T::Publish },
            MALFORMED,
        ),
        case(
            "topic with U+0000",
            v5,
            pkt(0x30, &[&s("a\0"), &[0]]),
            E::NullCharacter { packet: T::Publish },
            MALFORMED,
        ),
        case(
            "truncated topic",
            v5,
            pkt(0x30, &[&[0, 9], b"abc"]),
            E::UnexpectedEnd { packet: T::Publish },
            MALFORMED,
        ),
        case(
            "QoS 1 PUBLISH without packet id",
            v3,
            pkt(0x32, &[&s("a")]),
            E::UnexpectedEnd { packet: T::Publish },
            MALFORMED,
        ),
        case(
            "QoS 1 PUBLISH with packet id 0",
            v3,
            pkt(0x32, &[&s("a"), &[0, 0]]),
            E::ZeroPacketId { packet: T::Publish },
            PROTOCOL,
        ),
        case(
            "QoS 2 PUBLISH with packet id 0",
            v5,
            pkt(0x34, &[&s("a"), &[0, 0, 0]]),
            E::ZeroPacketId { packet: T::Publish },
            PROTOCOL,
        ),
        case(
            "5.0 PUBLISH without property length",
            v5,
            pkt(0x30, &[&s("a")]),
            E::UnexpectedEnd { packet: T::Publish },
            MALFORMED,
        ),
        case(
            "duplicate message expiry interval",
            v5,
            pkt(0x30, &[&s("a"), &[10, 2, 0, 0, 0, 1, 2, 0, 0, 0, 1]]),
            E::DuplicateProperty {
                packet: T::Publish,
                property: PropertyId::MessageExpiryInterval,
            },
            PROTOCOL,
        ),
        case(
            "duplicate topic alias",
            v5,
            pkt(0x30, &[&s("a"), &[6, 0x23, 0, 1, 0x23, 0, 2]]),
            E::DuplicateProperty {
                packet: T::Publish,
                property: PropertyId::TopicAlias,
            },
            PROTOCOL,
        ),
        case(
            "duplicate correlation data",
            v5,
            pkt(0x30, &[&s("a"), &[6, 9, 0, 0, 9, 0, 0]]),
            E::DuplicateProperty {
                packet: T::Publish,
                property: PropertyId::CorrelationData,
            },
            PROTOCOL,
        ),
        case(
            "session expiry interval in PUBLISH",
            v5,
            pkt(0x30, &[&s("a"), &[5, 0x11, 0, 0, 0, 1]]),
            E::PropertyNotAllowed {
                packet: T::Publish,
                property: PropertyId::SessionExpiryInterval,
            },
            MALFORMED,
        ),
        case(
            "payload format indicator 2",
            v5,
            pkt(0x30, &[&s("a"), &[2, 1, 2]]),
            E::InvalidPropertyValue {
                packet: T::Publish,
                property: PropertyId::PayloadFormatIndicator,
            },
            PROTOCOL,
        ),
        case(
            "subscription identifier 0",
            v5,
            pkt(0x30, &[&s("a"), &[2, 0x0B, 0]]),
            E::InvalidPropertyValue {
                packet: T::Publish,
                property: PropertyId::SubscriptionIdentifier,
            },
            PROTOCOL,
        ),
        case(
            "subscription identifier not in shortest form",
            v5,
            pkt(0x30, &[&s("a"), &[3, 0x0B, 0x81, 0x00]]),
            E::InvalidVarInt { packet: T::Publish },
            MALFORMED,
        ),
        case(
            "property identifier not in shortest form",
            v5,
            pkt(0x30, &[&s("a"), &[3, 0x81, 0x00, 0x00]]),
            E::InvalidVarInt { packet: T::Publish },
            MALFORMED,
        ),
        case(
            "response topic with a wildcard",
            v5,
            pkt(0x30, &[&s("a"), &[6, 8], &s("r/+")]),
            E::InvalidPropertyValue {
                packet: T::Publish,
                property: PropertyId::ResponseTopic,
            },
            PROTOCOL,
        ),
        case(
            "user property value not UTF-8",
            v5,
            pkt(0x30, &[&s("a"), &[7, 0x26], &s("k"), &s([0x80])]),
            E::InvalidUtf8 { packet: T::Publish },
            MALFORMED,
        ),
        case(
            "content type with U+0000",
            v5,
            pkt(0x30, &[&s("a"), &[4, 3], &s("\0")]),
            E::NullCharacter { packet: T::Publish },
            MALFORMED,
        ),
        // PUBACK, PUBREC, PUBREL, PUBCOMP.
        case(
            "PUBACK packet id 0",
            v3,
            vec![0x40, 0x02, 0x00, 0x00],
            E::ZeroPacketId { packet: T::PubAck },
            PROTOCOL,
        ),
        case(
            "PUBCOMP packet id 0",
            v5,
            vec![0x70, 0x02, 0x00, 0x00],
            E::ZeroPacketId { packet: T::PubComp },
            PROTOCOL,
        ),
        case(
            "3.1.1 PUBACK with a reason code",
            v3,
            vec![0x40, 0x03, 0x00, 0x01, 0x00],
            E::TrailingBytes { packet: T::PubAck },
            MALFORMED,
        ),
        case(
            "3.1.1 PUBREC truncated",
            v3,
            vec![0x50, 0x01, 0x00],
            E::UnexpectedEnd { packet: T::PubRec },
            MALFORMED,
        ),
        case(
            "PUBACK reason 0x92",
            v5,
            vec![0x40, 0x03, 0x00, 0x01, 0x92],
            E::InvalidReasonCode {
                packet: T::PubAck,
                code: 0x92,
            },
            MALFORMED,
        ),
        case(
            "PUBREL reason 0x10",
            v5,
            vec![0x62, 0x03, 0x00, 0x01, 0x10],
            E::InvalidReasonCode {
                packet: T::PubRel,
                code: 0x10,
            },
            MALFORMED,
        ),
        case(
            "PUBREC undefined reason 0x03",
            v5,
            vec![0x50, 0x03, 0x00, 0x01, 0x03],
            E::InvalidReasonCode {
                packet: T::PubRec,
                code: 0x03,
            },
            MALFORMED,
        ),
        case(
            "PUBACK duplicate reason string",
            v5,
            pkt(0x40, &[&[0, 1, 0, 8, 0x1F], &s("a"), &[0x1F], &s("b")]),
            E::DuplicateProperty {
                packet: T::PubAck,
                property: PropertyId::ReasonString,
            },
            PROTOCOL,
        ),
        case(
            "PUBCOMP topic alias",
            v5,
            vec![0x70, 0x07, 0x00, 0x01, 0x00, 0x03, 0x23, 0x00, 0x01],
            E::PropertyNotAllowed {
                packet: T::PubComp,
                property: PropertyId::TopicAlias,
            },
            MALFORMED,
        ),
        case(
            "PUBACK bytes after properties",
            v5,
            vec![0x40, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00],
            E::TrailingBytes { packet: T::PubAck },
            MALFORMED,
        ),
        // SUBSCRIBE.
        case(
            "3.1.1 SUBSCRIBE without filters",
            v3,
            vec![0x82, 0x02, 0x00, 0x01],
            E::EmptyPayload {
                packet: T::Subscribe,
            },
            PROTOCOL,
        ),
        case(
            "5.0 SUBSCRIBE without filters",
            v5,
            vec![0x82, 0x03, 0x00, 0x01, 0x00],
            E::EmptyPayload {
                packet: T::Subscribe,
            },
            PROTOCOL,
        ),
        case(
            "SUBSCRIBE packet id 0",
            v3,
            pkt(0x82, &[&[0, 0], &s("a"), &[0]]),
            E::ZeroPacketId {
                packet: T::Subscribe,
            },
            PROTOCOL,
        ),
        case(
            "SUBSCRIBE filter without options",
            v3,
            pkt(0x82, &[&[0, 1], &s("a")]),
            E::UnexpectedEnd {
                packet: T::Subscribe,
            },
            MALFORMED,
        ),
        case(
            "3.1.1 options with bit 2 set",
            v3,
            pkt(0x82, &[&[0, 1], &s("a"), &[0x04]]),
            E::ReservedSubscriptionOptions,
            MALFORMED,
        ),
        case(
            "5.0 options with bit 6 set",
            v5,
            pkt(0x82, &[&[0, 1, 0], &s("a"), &[0x40]]),
            E::ReservedSubscriptionOptions,
            MALFORMED,
        ),
        case(
            "3.1.1 requested QoS 3",
            v3,
            pkt(0x82, &[&[0, 1], &s("a"), &[0x03]]),
            E::InvalidQoS {
                packet: T::Subscribe,
            },
            MALFORMED,
        ),
        case(
            "5.0 maximum QoS 3",
            v5,
            pkt(0x82, &[&[0, 1, 0], &s("a"), &[0x03]]),
            E::InvalidSubscriptionQoS,
            PROTOCOL,
        ),
        case(
            "retain handling 3",
            v5,
            pkt(0x82, &[&[0, 1, 0], &s("a"), &[0x30]]),
            E::InvalidRetainHandling,
            PROTOCOL,
        ),
        case(
            "'#' not last",
            v5,
            pkt(0x82, &[&[0, 1, 0], &s("a/#/b"), &[0]]),
            E::InvalidTopicFilter {
                packet: T::Subscribe,
                error: TopicError::InvalidMultiLevelWildcard,
            },
            FILTER,
        ),
        case(
            "'#' not alone in its level",
            v3,
            pkt(0x82, &[&[0, 1], &s("a#"), &[0]]),
            E::InvalidTopicFilter {
                packet: T::Subscribe,
                error: TopicError::InvalidMultiLevelWildcard,
            },
            FILTER,
        ),
        case(
            "'+' not alone in its level",
            v5,
            pkt(0x82, &[&[0, 1, 0], &s("a/b+"), &[0]]),
            E::InvalidTopicFilter {
                packet: T::Subscribe,
                error: TopicError::InvalidSingleLevelWildcard,
            },
            FILTER,
        ),
        case(
            "empty topic filter",
            v3,
            pkt(0x82, &[&[0, 1], &s(""), &[0]]),
            E::InvalidTopicFilter {
                packet: T::Subscribe,
                error: TopicError::Empty,
            },
            FILTER,
        ),
        case(
            "shared subscription without filter",
            v5,
            pkt(0x82, &[&[0, 1, 0], &s("$share/g"), &[0]]),
            E::InvalidTopicFilter {
                packet: T::Subscribe,
                error: TopicError::MissingSharedFilter,
            },
            FILTER,
        ),
        case(
            "shared subscription with empty share name",
            v5,
            pkt(0x82, &[&[0, 1, 0], &s("$share//a"), &[0]]),
            E::InvalidTopicFilter {
                packet: T::Subscribe,
                error: TopicError::InvalidShareName,
            },
            FILTER,
        ),
        case(
            "no local on a shared subscription",
            v5,
            pkt(0x82, &[&[0, 1, 0], &s("$share/g/a"), &[0x04]]),
            E::NoLocalOnSharedSubscription,
            PROTOCOL,
        ),
        case(
            "SUBSCRIBE subscription identifier 0",
            v5,
            pkt(0x82, &[&[0, 1, 2, 0x0B, 0], &s("a"), &[0]]),
            E::InvalidPropertyValue {
                packet: T::Subscribe,
                property: PropertyId::SubscriptionIdentifier,
            },
            PROTOCOL,
        ),
        case(
            "SUBSCRIBE two subscription identifiers",
            v5,
            pkt(0x82, &[&[0, 1, 4, 0x0B, 1, 0x0B, 2], &s("a"), &[0]]),
            E::DuplicateProperty {
                packet: T::Subscribe,
                property: PropertyId::SubscriptionIdentifier,
            },
            PROTOCOL,
        ),
        case(
            "SUBSCRIBE reason string",
            v5,
            pkt(0x82, &[&[0, 1, 4, 0x1F], &s("r"), &s("a"), &[0]]),
            E::PropertyNotAllowed {
                packet: T::Subscribe,
                property: PropertyId::ReasonString,
            },
            MALFORMED,
        ),
        // SUBACK.
        case(
            "3.1.1 SUBACK return code 3",
            v3,
            vec![0x90, 0x03, 0x00, 0x01, 0x03],
            E::InvalidReasonCode {
                packet: T::SubAck,
                code: 3,
            },
            MALFORMED,
        ),
        case(
            "3.1.1 SUBACK return code 0x87",
            v3,
            vec![0x90, 0x03, 0x00, 0x01, 0x87],
            E::InvalidReasonCode {
                packet: T::SubAck,
                code: 0x87,
            },
            MALFORMED,
        ),
        case(
            "SUBACK reason 0x11",
            v5,
            vec![0x90, 0x04, 0x00, 0x01, 0x00, 0x11],
            E::InvalidReasonCode {
                packet: T::SubAck,
                code: 0x11,
            },
            MALFORMED,
        ),
        case(
            "SUBACK without reason codes",
            v5,
            vec![0x90, 0x03, 0x00, 0x01, 0x00],
            E::EmptyPayload { packet: T::SubAck },
            PROTOCOL,
        ),
        // UNSUBSCRIBE and UNSUBACK.
        case(
            "UNSUBSCRIBE without filters",
            v5,
            vec![0xA2, 0x03, 0x00, 0x01, 0x00],
            E::EmptyPayload {
                packet: T::Unsubscribe,
            },
            PROTOCOL,
        ),
        case(
            "UNSUBSCRIBE packet id 0",
            v3,
            pkt(0xA2, &[&[0, 0], &s("a")]),
            E::ZeroPacketId {
                packet: T::Unsubscribe,
            },
            PROTOCOL,
        ),
        case(
            "UNSUBSCRIBE invalid filter",
            v3,
            pkt(0xA2, &[&[0, 1], &s("+a")]),
            E::InvalidTopicFilter {
                packet: T::Unsubscribe,
                error: TopicError::InvalidSingleLevelWildcard,
            },
            FILTER,
        ),
        case(
            "UNSUBSCRIBE shared filter with '+' in share name",
            v5,
            pkt(0xA2, &[&[0, 1, 0], &s("$share/+/a")]),
            E::InvalidTopicFilter {
                packet: T::Unsubscribe,
                error: TopicError::InvalidShareName,
            },
            FILTER,
        ),
        case(
            "3.1.1 UNSUBACK with reason codes",
            v3,
            vec![0xB0, 0x03, 0x00, 0x01, 0x00],
            E::TrailingBytes {
                packet: T::UnsubAck,
            },
            MALFORMED,
        ),
        case(
            "5.0 UNSUBACK without reason codes",
            v5,
            vec![0xB0, 0x03, 0x00, 0x01, 0x00],
            E::EmptyPayload {
                packet: T::UnsubAck,
            },
            PROTOCOL,
        ),
        case(
            "UNSUBACK reason 0x01",
            v5,
            vec![0xB0, 0x04, 0x00, 0x01, 0x00, 0x01],
            E::InvalidReasonCode {
                packet: T::UnsubAck,
                code: 1,
            },
            MALFORMED,
        ),
        // DISCONNECT.
        case(
            "3.1.1 DISCONNECT with a body",
            v3,
            vec![0xE0, 0x01, 0x00],
            E::TrailingBytes {
                packet: T::Disconnect,
            },
            MALFORMED,
        ),
        case(
            "DISCONNECT reason 0x8A (Banned)",
            v5,
            vec![0xE0, 0x01, 0x8A],
            E::InvalidReasonCode {
                packet: T::Disconnect,
                code: 0x8A,
            },
            MALFORMED,
        ),
        case(
            "DISCONNECT receive maximum",
            v5,
            vec![0xE0, 0x05, 0x00, 0x03, 0x21, 0x00, 0x01],
            E::PropertyNotAllowed {
                packet: T::Disconnect,
                property: PropertyId::ReceiveMaximum,
            },
            MALFORMED,
        ),
        case(
            "DISCONNECT duplicate server reference",
            v5,
            pkt(0xE0, &[&[0x9C, 8, 0x1C], &s("a"), &[0x1C], &s("b")]),
            E::DuplicateProperty {
                packet: T::Disconnect,
                property: PropertyId::ServerReference,
            },
            PROTOCOL,
        ),
        // AUTH.
        case(
            "AUTH continue without method",
            v5,
            vec![0xF0, 0x02, 0x18, 0x00],
            E::MissingAuthenticationMethod { packet: T::Auth },
            PROTOCOL,
        ),
        case(
            "AUTH reason only, without method",
            v5,
            vec![0xF0, 0x01, 0x19],
            E::MissingAuthenticationMethod { packet: T::Auth },
            PROTOCOL,
        ),
        case(
            "AUTH reason 0x87",
            v5,
            pkt(0xF0, &[&[0x87, 4, 0x15], &s("m")]),
            E::InvalidReasonCode {
                packet: T::Auth,
                code: 0x87,
            },
            MALFORMED,
        ),
        case(
            "AUTH duplicate method",
            v5,
            pkt(0xF0, &[&[0x18, 8, 0x15], &s("m"), &[0x15], &s("m")]),
            E::DuplicateProperty {
                packet: T::Auth,
                property: PropertyId::AuthenticationMethod,
            },
            PROTOCOL,
        ),
        case(
            "AUTH session expiry",
            v5,
            pkt(0xF0, &[&[0x18, 9, 0x15], &s("m"), &[0x11, 0, 0, 0, 1]]),
            E::PropertyNotAllowed {
                packet: T::Auth,
                property: PropertyId::SessionExpiryInterval,
            },
            MALFORMED,
        ),
    ]
}

#[test]
fn every_malformed_packet_is_refused_with_its_reason_code() {
    let corpus = corpus();
    assert!(corpus.len() > 100, "{} cases", corpus.len());
    let mut failures = Vec::new();
    for case in corpus {
        let mut buf = BytesMut::from(&case.bytes[..]);
        let result = decode(&mut buf, case.state, case.max);
        let expected_reason = ReasonCode::from_u8(case.reason).expect("a reason code");
        match result {
            Err(error) if error == case.error && error.reason_code() == expected_reason => {}
            other => failures.push(format!(
                "{}: expected {:?} ({expected_reason}), got {other:?}",
                case.name, case.error
            )),
        }
        if buf[..] != case.bytes[..] {
            failures.push(format!("{}: bytes were consumed", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn errors_before_the_packet_is_complete_come_from_the_fixed_header() {
    // A packet the fixed header already condemns is refused without waiting
    // for the rest of it.
    let cases: [(&[u8], Option<ProtocolVersion>, DecodeError); 4] = [
        (
            &[0x30, 0xFF, 0xFF, 0x7F],
            Some(V5),
            E::PacketTooLarge {
                size: 2_097_155,
                max: 1024,
            },
        ),
        (&[0x36], Some(V5), E::InvalidQoS { packet: T::Publish }),
        (&[0x20], None, E::ExpectedConnect { packet_type: 2 }),
        (
            &[0x30, 0x80, 0x80, 0x80, 0x80],
            Some(V311),
            E::InvalidRemainingLength,
        ),
    ];
    for (bytes, state, expected) in cases {
        let mut buf = BytesMut::from(bytes);
        assert_eq!(decode(&mut buf, state, 1024), Err(expected));
    }
}
