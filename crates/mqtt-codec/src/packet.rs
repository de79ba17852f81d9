//! The typed MQTT control packets of both protocol versions.

use std::fmt;

use bytes::Bytes;

use crate::properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishProperties, SubscribeProperties, UnsubscribeProperties, WillProperties,
};
use crate::reason::ReasonCode;

/// The MQTT protocol version spoken on a connection.
///
/// The server learns it from the client's CONNECT (protocol name `MQTT`,
/// level 4 or 5) and passes it to every later [`decode`](crate::decode) and
/// [`encode`](crate::encode) call on that connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1.1 (OASIS Standard, 29 October 2014), protocol level 4.
    V311,
    /// MQTT 5.0 (OASIS Standard, 7 March 2019), protocol level 5.
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte a CONNECT carries: 4 for 3.1.1, 5 for 5.0.
    pub const fn level(self) -> u8 {
        match self {
            Self::V311 => 4,
            Self::V5 => 5,
        }
    }

    /// The version with this protocol level, if it is one this crate speaks.
    pub const fn from_level(level: u8) -> Option<Self> {
        match level {
            4 => Some(Self::V311),
            5 => Some(Self::V5),
            _ => None,
        }
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V311 => "MQTT 3.1.1",
            Self::V5 => "MQTT 5.0",
        })
    }
}

/// A quality of service level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(u8)]
pub enum QoS {
    /// QoS 0: at most once, no acknowledgement.
    #[default]
    AtMostOnce = 0,
    /// QoS 1: at least once, acknowledged by PUBACK.
    AtLeastOnce = 1,
    /// QoS 2: exactly once, the PUBREC / PUBREL / PUBCOMP exchange.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS with this wire value; 3 (and anything larger) is not a QoS.
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            2 => Some(Self::ExactlyOnce),
            _ => None,
        }
    }

    /// The wire value: 0, 1 or 2.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

/// Who may send a packet type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Only a client sends it (CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ).
    ClientToServer,
    /// Only a server sends it (CONNACK, SUBACK, UNSUBACK, PINGRESP).
    ServerToClient,
    /// Either side sends it (PUBLISH and its acknowledgements, DISCONNECT, AUTH).
    Both,
}

/// The MQTT control packet types, with their wire values (the high nibble
/// of the first byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// Connection request.
    Connect = 1,
    /// Connect acknowledgement.
    ConnAck = 2,
    /// Publish message.
    Publish = 3,
    /// Publish acknowledgement (QoS 1).
    PubAck = 4,
    /// Publish received (QoS 2, part 1).
    PubRec = 5,
    /// Publish release (QoS 2, part 2).
    PubRel = 6,
    /// Publish complete (QoS 2, part 3).
    PubComp = 7,
    /// Subscribe request.
    Subscribe = 8,
    /// Subscribe acknowledgement.
    SubAck = 9,
    /// Unsubscribe request.
    Unsubscribe = 10,
    /// Unsubscribe acknowledgement.
    UnsubAck = 11,
    /// Ping request.
    PingReq = 12,
    /// Ping response.
    PingResp = 13,
    /// Disconnect notification.
    Disconnect = 14,
    /// Authentication exchange (MQTT 5.0 only; the value is reserved in 3.1.1).
    Auth = 15,
}

impl PacketType {
    /// The packet type with this 4-bit wire value; 0 is reserved.
    pub const fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => Self::Connect,
            2 => Self::ConnAck,
            3 => Self::Publish,
            4 => Self::PubAck,
            5 => Self::PubRec,
            6 => Self::PubRel,
            7 => Self::PubComp,
            8 => Self::Subscribe,
            9 => Self::SubAck,
            10 => Self::Unsubscribe,
            11 => Self::UnsubAck,
            12 => Self::PingReq,
            13 => Self::PingResp,
            14 => Self::Disconnect,
            15 => Self::Auth,
            _ => return None,
        })
    }

    /// The packet's name as the specifications spell it, e.g. `"CONNACK"`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Connect => "CONNECT",
            Self::ConnAck => "CONNACK",
            Self::Publish => "PUBLISH",
            Self::PubAck => "PUBACK",
            Self::PubRec => "PUBREC",
            Self::PubRel => "PUBREL",
            Self::PubComp => "PUBCOMP",
            Self::Subscribe => "SUBSCRIBE",
            Self::SubAck => "SUBACK",
            Self::Unsubscribe => "UNSUBSCRIBE",
            Self::UnsubAck => "UNSUBACK",
            Self::PingReq => "PINGREQ",
            Self::PingResp => "PINGRESP",
            Self::Disconnect => "DISCONNECT",
            Self::Auth => "AUTH",
        }
    }

    /// Who may send this packet type. The codec itself decodes every packet
    /// in both directions (tests use it as a client); a server checks this
    /// to refuse, say, a CONNACK sent to it.
    pub const fn direction(self) -> Direction {
        match self {
            Self::Connect | Self::Subscribe | Self::Unsubscribe | Self::PingReq => {
                Direction::ClientToServer
            }
            Self::ConnAck | Self::SubAck | Self::UnsubAck | Self::PingResp => {
                Direction::ServerToClient
            }
            Self::Publish
            | Self::PubAck
            | Self::PubRec
            | Self::PubRel
            | Self::PubComp
            | Self::Disconnect
            | Self::Auth => Direction::Both,
        }
    }

    /// The fixed-header flag bits this type must carry (all types but
    /// PUBLISH, whose flags are DUP, QoS and RETAIN).
    pub(crate) const fn required_flags(self) -> Option<u8> {
        match self {
            Self::Publish => None,
            Self::PubRel | Self::Subscribe | Self::Unsubscribe => Some(0b0010),
            _ => Some(0),
        }
    }
}

impl fmt::Display for PacketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An MQTT control packet of either protocol version.
///
/// Fields that only MQTT 5.0 has (properties, most reason codes, AUTH) are
/// empty or default when a 3.1.1 packet is decoded; how [`encode`](crate::encode)
/// treats them for a 3.1.1 peer is described in the crate documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT (boxed: it is large and rare).
    Connect(Box<Connect>),
    /// CONNACK (boxed: it is large and rare).
    ConnAck(Box<ConnAck>),
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK.
    PubAck(PubAck),
    /// PUBREC.
    PubRec(PubRec),
    /// PUBREL.
    PubRel(PubRel),
    /// PUBCOMP.
    PubComp(PubComp),
    /// SUBSCRIBE.
    Subscribe(Subscribe),
    /// SUBACK.
    SubAck(SubAck),
    /// UNSUBSCRIBE.
    Unsubscribe(Unsubscribe),
    /// UNSUBACK.
    UnsubAck(UnsubAck),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT.
    Disconnect(Disconnect),
    /// AUTH (MQTT 5.0 only).
    Auth(Auth),
}

impl Packet {
    /// This packet's type.
    pub const fn packet_type(&self) -> PacketType {
        match self {
            Self::Connect(_) => PacketType::Connect,
            Self::ConnAck(_) => PacketType::ConnAck,
            Self::Publish(_) => PacketType::Publish,
            Self::PubAck(_) => PacketType::PubAck,
            Self::PubRec(_) => PacketType::PubRec,
            Self::PubRel(_) => PacketType::PubRel,
            Self::PubComp(_) => PacketType::PubComp,
            Self::Subscribe(_) => PacketType::Subscribe,
            Self::SubAck(_) => PacketType::SubAck,
            Self::Unsubscribe(_) => PacketType::Unsubscribe,
            Self::UnsubAck(_) => PacketType::UnsubAck,
            Self::PingReq => PacketType::PingReq,
            Self::PingResp => PacketType::PingResp,
            Self::Disconnect(_) => PacketType::Disconnect,
            Self::Auth(_) => PacketType::Auth,
        }
    }
}

impl From<Connect> for Packet {
    fn from(p: Connect) -> Self {
        Self::Connect(Box::new(p))
    }
}

impl From<ConnAck> for Packet {
    fn from(p: ConnAck) -> Self {
        Self::ConnAck(Box::new(p))
    }
}

macro_rules! packet_from {
    ($($name:ident),*) => {$(
        impl From<$name> for Packet {
            fn from(p: $name) -> Self {
                Self::$name(p)
            }
        }
    )*};
}

packet_from!(
    Publish,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth
);

/// CONNECT: the first packet a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// The protocol version the client speaks (protocol level 4 or 5).
    pub protocol: ProtocolVersion,
    /// Clean Start (5.0) / Clean Session (3.1.1).
    pub clean_start: bool,
    /// Keep alive in seconds; 0 turns the mechanism off.
    pub keep_alive: u16,
    /// The client identifier; may be empty (a 5.0 server then assigns one; a
    /// 3.1.1 server accepts that only with a clean session). Not checked
    /// beyond the UTF-8 rules: which identifiers to accept is the server's
    /// choice ([MQTT-3.1.3-5]).
    pub client_id: String,
    /// The will message, published if the connection ends abnormally.
    pub will: Option<Will>,
    /// User name.
    pub username: Option<String>,
    /// Password, or any other credential.
    pub password: Option<Bytes>,
    /// CONNECT properties (5.0).
    pub properties: ConnectProperties,
}

impl Connect {
    /// A CONNECT with a clean start, no keep alive, and nothing optional.
    pub fn new(protocol: ProtocolVersion, client_id: impl Into<String>) -> Self {
        Self {
            protocol,
            clean_start: true,
            keep_alive: 0,
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        }
    }
}

/// The will message of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// The topic the will is published to.
    pub topic: String,
    /// The will payload.
    pub payload: Bytes,
    /// The QoS it is published with.
    pub qos: QoS,
    /// Whether it is published as a retained message.
    pub retain: bool,
    /// Will properties (5.0).
    pub properties: WillProperties,
}

/// CONNACK: the server's answer to CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Whether the server resumed an existing session. Must be false when the
    /// reason code refuses the connection.
    pub session_present: bool,
    /// The connect reason code (5.0), or the 3.1.1 return code mapped to its
    /// 5.0 equivalent (see [`ReasonCode::from_v311_connack`]).
    pub reason_code: ReasonCode,
    /// CONNACK properties (5.0).
    pub properties: ConnAckProperties,
}

impl ConnAck {
    /// A CONNACK with this reason code, no session, and no properties.
    pub fn new(reason_code: ReasonCode) -> Self {
        Self {
            session_present: false,
            reason_code,
            properties: ConnAckProperties::default(),
        }
    }
}

/// PUBLISH: an application message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Whether this may be a re-delivery; always false at QoS 0.
    pub dup: bool,
    /// The QoS of this delivery.
    pub qos: QoS,
    /// The RETAIN flag.
    pub retain: bool,
    /// The topic name; empty only in 5.0 when a topic alias stands for it.
    pub topic: String,
    /// The packet identifier: `Some` (non-zero) exactly when QoS > 0.
    pub packet_id: Option<u16>,
    /// The application message. Decoding shares the received buffer
    /// (no copy).
    pub payload: Bytes,
    /// PUBLISH properties (5.0).
    pub properties: PublishProperties,
}

impl Publish {
    /// A QoS 0, non-retained PUBLISH without properties.
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: topic.into(),
            packet_id: None,
            payload: payload.into(),
            properties: PublishProperties::default(),
        }
    }
}

macro_rules! publish_response {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            /// The packet identifier of the exchange.
            pub packet_id: u16,
            /// The reason code; [`ReasonCode::Success`] when absent on the wire.
            pub reason_code: ReasonCode,
            /// Properties (5.0): a reason string and user properties.
            pub properties: AckProperties,
        }

        impl $name {
            /// A successful response for this packet identifier.
            pub fn new(packet_id: u16) -> Self {
                Self {
                    packet_id,
                    reason_code: ReasonCode::Success,
                    properties: AckProperties::default(),
                }
            }
        }
    };
}

publish_response!(
    /// PUBACK: acknowledges a QoS 1 PUBLISH.
    PubAck
);
publish_response!(
    /// PUBREC: acknowledges receipt of a QoS 2 PUBLISH.
    PubRec
);
publish_response!(
    /// PUBREL: releases a QoS 2 PUBLISH after its PUBREC.
    PubRel
);
publish_response!(
    /// PUBCOMP: completes a QoS 2 exchange.
    PubComp
);

/// How retained messages are sent when a subscription is made (5.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// 1: send them only if the subscription did not already exist.
    SendAtNewSubscribe = 1,
    /// 2: do not send retained messages at the time of the subscribe.
    DoNotSend = 2,
}

impl RetainHandling {
    /// The value with this 2-bit encoding; 3 is a protocol error.
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(Self::SendAtSubscribe),
            1 => Some(Self::SendAtNewSubscribe),
            2 => Some(Self::DoNotSend),
            _ => None,
        }
    }
}

/// The subscription options byte of one SUBSCRIBE entry. Only `qos` exists in
/// 3.1.1 (as the Requested QoS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    /// The maximum QoS the server may deliver at.
    pub qos: QoS,
    /// Do not deliver this client's own publications back to it (5.0).
    pub no_local: bool,
    /// Keep the RETAIN flag of forwarded messages (5.0).
    pub retain_as_published: bool,
    /// When retained messages are sent (5.0).
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// Options with this QoS and the 3.1.1-compatible defaults for the rest.
    pub fn with_qos(qos: QoS) -> Self {
        Self {
            qos,
            ..Self::default()
        }
    }
}

/// One topic filter of a SUBSCRIBE, with its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The topic filter, possibly a shared subscription (`$share/{group}/{filter}`, 5.0).
    pub filter: String,
    /// The subscription options.
    pub options: SubscriptionOptions,
}

impl Subscription {
    /// A subscription to `filter` at `qos` with default options.
    pub fn new(filter: impl Into<String>, qos: QoS) -> Self {
        Self {
            filter: filter.into(),
            options: SubscriptionOptions::with_qos(qos),
        }
    }
}

/// SUBSCRIBE: one or more subscription requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// The packet identifier (non-zero).
    pub packet_id: u16,
    /// SUBSCRIBE properties (5.0).
    pub properties: SubscribeProperties,
    /// The requested subscriptions, at least one.
    pub subscriptions: Vec<Subscription>,
}

/// SUBACK: one reason code per requested subscription, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// The packet identifier of the SUBSCRIBE.
    pub packet_id: u16,
    /// Properties (5.0): a reason string and user properties.
    pub properties: AckProperties,
    /// Granted QoS or failure, per subscription. In 3.1.1 only granted QoS
    /// 0, 1, 2 and failure (0x80, [`ReasonCode::UnspecifiedError`]) exist.
    pub reason_codes: Vec<ReasonCode>,
}

/// UNSUBSCRIBE: one or more topic filters to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// The packet identifier (non-zero).
    pub packet_id: u16,
    /// UNSUBSCRIBE properties (5.0).
    pub properties: UnsubscribeProperties,
    /// The topic filters, at least one.
    pub filters: Vec<String>,
}

/// UNSUBACK: acknowledges an UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// The packet identifier of the UNSUBSCRIBE.
    pub packet_id: u16,
    /// Properties (5.0): a reason string and user properties.
    pub properties: AckProperties,
    /// One reason code per topic filter (5.0); always empty in 3.1.1, whose
    /// UNSUBACK carries none.
    pub reason_codes: Vec<ReasonCode>,
}

/// DISCONNECT: the last packet before closing the connection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// The disconnect reason code (5.0); [`ReasonCode::NORMAL_DISCONNECTION`]
    /// in 3.1.1 and when absent on the wire.
    pub reason_code: ReasonCode,
    /// DISCONNECT properties (5.0).
    pub properties: DisconnectProperties,
}

impl Disconnect {
    /// A DISCONNECT with this reason code and no properties.
    pub fn new(reason_code: ReasonCode) -> Self {
        Self {
            reason_code,
            properties: DisconnectProperties::default(),
        }
    }
}

/// AUTH: one step of an enhanced authentication exchange (5.0 only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// Success, Continue authentication or Re-authenticate.
    pub reason_code: ReasonCode,
    /// AUTH properties; the authentication method is required unless the
    /// packet is the bare "success" form (reason code 0x00, no properties).
    pub properties: AuthProperties,
}
