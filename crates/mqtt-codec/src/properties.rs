//! MQTT 5.0 properties (§2.2.2): one typed struct per packet type, holding
//! exactly the properties that packet may carry, so a property can never be
//! encoded where it is not allowed.
//!
//! Absent properties are `None` (or an empty list): the codec keeps the
//! difference between "absent" and "present with the default value", and
//! leaves the spec's defaults (Receive Maximum 65,535, Request Problem
//! Information 1, ...) to the session layer.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::Bytes;

use crate::error::{DecodeError, EncodeError};
use crate::packet::{PacketType, QoS};
use crate::topic::validate_topic_name;
use crate::wire::{Counter, MAX_VAR_INT, Reader, Sink};

/// The MQTT 5.0 property identifiers (§2.2.2.2, table 2-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PropertyId {
    /// 0x01, byte.
    PayloadFormatIndicator = 0x01,
    /// 0x02, four byte integer.
    MessageExpiryInterval = 0x02,
    /// 0x03, UTF-8 string.
    ContentType = 0x03,
    /// 0x08, UTF-8 string.
    ResponseTopic = 0x08,
    /// 0x09, binary data.
    CorrelationData = 0x09,
    /// 0x0B, variable byte integer.
    SubscriptionIdentifier = 0x0B,
    /// 0x11, four byte integer.
    SessionExpiryInterval = 0x11,
    /// 0x12, UTF-8 string.
    AssignedClientIdentifier = 0x12,
    /// 0x13, two byte integer.
    ServerKeepAlive = 0x13,
    /// 0x15, UTF-8 string.
    AuthenticationMethod = 0x15,
    /// 0x16, binary data.
    AuthenticationData = 0x16,
    /// 0x17, byte.
    RequestProblemInformation = 0x17,
    /// 0x18, four byte integer.
    WillDelayInterval = 0x18,
    /// 0x19, byte.
    RequestResponseInformation = 0x19,
    /// 0x1A, UTF-8 string.
    ResponseInformation = 0x1A,
    /// 0x1C, UTF-8 string.
    ServerReference = 0x1C,
    /// 0x1F, UTF-8 string.
    ReasonString = 0x1F,
    /// 0x21, two byte integer.
    ReceiveMaximum = 0x21,
    /// 0x22, two byte integer.
    TopicAliasMaximum = 0x22,
    /// 0x23, two byte integer.
    TopicAlias = 0x23,
    /// 0x24, byte.
    MaximumQoS = 0x24,
    /// 0x25, byte.
    RetainAvailable = 0x25,
    /// 0x26, UTF-8 string pair.
    UserProperty = 0x26,
    /// 0x27, four byte integer.
    MaximumPacketSize = 0x27,
    /// 0x28, byte.
    WildcardSubscriptionAvailable = 0x28,
    /// 0x29, byte.
    SubscriptionIdentifierAvailable = 0x29,
    /// 0x2A, byte.
    SharedSubscriptionAvailable = 0x2A,
}

impl PropertyId {
    /// The property with this identifier, if MQTT 5.0 defines one.
    pub const fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0x01 => Self::PayloadFormatIndicator,
            0x02 => Self::MessageExpiryInterval,
            0x03 => Self::ContentType,
            0x08 => Self::ResponseTopic,
            0x09 => Self::CorrelationData,
            0x0B => Self::SubscriptionIdentifier,
            0x11 => Self::SessionExpiryInterval,
            0x12 => Self::AssignedClientIdentifier,
            0x13 => Self::ServerKeepAlive,
            0x15 => Self::AuthenticationMethod,
            0x16 => Self::AuthenticationData,
            0x17 => Self::RequestProblemInformation,
            0x18 => Self::WillDelayInterval,
            0x19 => Self::RequestResponseInformation,
            0x1A => Self::ResponseInformation,
            0x1C => Self::ServerReference,
            0x1F => Self::ReasonString,
            0x21 => Self::ReceiveMaximum,
            0x22 => Self::TopicAliasMaximum,
            0x23 => Self::TopicAlias,
            0x24 => Self::MaximumQoS,
            0x25 => Self::RetainAvailable,
            0x26 => Self::UserProperty,
            0x27 => Self::MaximumPacketSize,
            0x28 => Self::WildcardSubscriptionAvailable,
            0x29 => Self::SubscriptionIdentifierAvailable,
            0x2A => Self::SharedSubscriptionAvailable,
            _ => return None,
        })
    }

    /// The identifier byte.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    const fn bit(self) -> u64 {
        1 << (self as u8)
    }
}

/// The Payload Format Indicator's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum PayloadFormat {
    /// 0: unspecified bytes.
    #[default]
    Unspecified = 0,
    /// 1: UTF-8 encoded character data.
    Utf8 = 1,
}

/// A user property: a name and a value, both UTF-8 strings. Order is
/// significant and names may repeat.
pub type UserProperty = (String, String);

/// CONNECT properties (§3.1.2.11).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectProperties {
    /// Seconds the session outlives the connection (absent: 0).
    pub session_expiry_interval: Option<u32>,
    /// How many QoS 1 and 2 publications the client processes at once.
    pub receive_maximum: Option<NonZeroU16>,
    /// The largest packet the client accepts.
    pub maximum_packet_size: Option<NonZeroU32>,
    /// The highest topic alias the client accepts (absent: 0, none).
    pub topic_alias_maximum: Option<u16>,
    /// Whether the client asks for Response Information in CONNACK.
    pub request_response_information: Option<bool>,
    /// Whether the server may send reason strings and user properties on
    /// failures (absent: true).
    pub request_problem_information: Option<bool>,
    /// User properties.
    pub user_properties: Vec<UserProperty>,
    /// The enhanced authentication method.
    pub authentication_method: Option<String>,
    /// Authentication data; requires a method.
    pub authentication_data: Option<Bytes>,
}

/// Will properties, in the CONNECT payload (§3.1.3.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WillProperties {
    /// Seconds the server waits before publishing the will.
    pub will_delay_interval: Option<u32>,
    /// What the will payload is.
    pub payload_format_indicator: Option<PayloadFormat>,
    /// The will message's lifetime in seconds.
    pub message_expiry_interval: Option<u32>,
    /// The will payload's content type.
    pub content_type: Option<String>,
    /// A topic name for responses (no wildcards).
    pub response_topic: Option<String>,
    /// Correlation data for responses.
    pub correlation_data: Option<Bytes>,
    /// User properties, kept in order.
    pub user_properties: Vec<UserProperty>,
}

/// CONNACK properties (§3.2.2.3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAckProperties {
    /// The session expiry interval the server uses instead of the client's.
    pub session_expiry_interval: Option<u32>,
    /// How many QoS 1 and 2 publications the server processes at once.
    pub receive_maximum: Option<NonZeroU16>,
    /// The highest QoS the server supports: 0 or 1 (absent: 2).
    pub maximum_qos: Option<QoS>,
    /// Whether retained messages are supported (absent: true).
    pub retain_available: Option<bool>,
    /// The largest packet the server accepts.
    pub maximum_packet_size: Option<NonZeroU32>,
    /// The client identifier the server assigned to an empty one.
    pub assigned_client_identifier: Option<String>,
    /// The highest topic alias the server accepts (absent: 0, none).
    pub topic_alias_maximum: Option<u16>,
    /// A human-readable reason.
    pub reason_string: Option<String>,
    /// User properties.
    pub user_properties: Vec<UserProperty>,
    /// Whether wildcard subscriptions are supported (absent: true).
    pub wildcard_subscription_available: Option<bool>,
    /// Whether subscription identifiers are supported (absent: true).
    pub subscription_identifiers_available: Option<bool>,
    /// Whether shared subscriptions are supported (absent: true).
    pub shared_subscription_available: Option<bool>,
    /// The keep alive the client must use instead of its own.
    pub server_keep_alive: Option<u16>,
    /// The basis for the client's response topics.
    pub response_information: Option<String>,
    /// Another server the client should use.
    pub server_reference: Option<String>,
    /// The enhanced authentication method.
    pub authentication_method: Option<String>,
    /// Authentication data.
    pub authentication_data: Option<Bytes>,
}

/// PUBLISH properties (§3.3.2.3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublishProperties {
    /// What the payload is.
    pub payload_format_indicator: Option<PayloadFormat>,
    /// The message's lifetime in seconds.
    pub message_expiry_interval: Option<u32>,
    /// A topic alias standing for (or set to) the topic name.
    pub topic_alias: Option<NonZeroU16>,
    /// A topic name for responses (no wildcards).
    pub response_topic: Option<String>,
    /// Correlation data for responses.
    pub correlation_data: Option<Bytes>,
    /// User properties, kept in order.
    pub user_properties: Vec<UserProperty>,
    /// The identifiers of the subscriptions this delivery matched (server to
    /// client only), each at most 268,435,455.
    pub subscription_identifiers: Vec<NonZeroU32>,
    /// The payload's content type.
    pub content_type: Option<String>,
}

/// Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK
/// (§3.4.2.2 and following): a reason string and user properties.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AckProperties {
    /// A human-readable reason.
    pub reason_string: Option<String>,
    /// User properties.
    pub user_properties: Vec<UserProperty>,
}

/// SUBSCRIBE properties (§3.8.2.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscribeProperties {
    /// The identifier stored with the subscriptions, at most 268,435,455.
    pub subscription_identifier: Option<NonZeroU32>,
    /// User properties.
    pub user_properties: Vec<UserProperty>,
}

/// UNSUBSCRIBE properties (§3.10.2.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnsubscribeProperties {
    /// User properties.
    pub user_properties: Vec<UserProperty>,
}

/// DISCONNECT properties (§3.14.2.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DisconnectProperties {
    /// A new session expiry interval (client to server only).
    pub session_expiry_interval: Option<u32>,
    /// A human-readable reason.
    pub reason_string: Option<String>,
    /// User properties.
    pub user_properties: Vec<UserProperty>,
    /// Another server the client should use.
    pub server_reference: Option<String>,
}

/// AUTH properties (§3.15.2.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthProperties {
    /// The authentication method (required, see [`Auth`](crate::Auth)).
    pub authentication_method: Option<String>,
    /// Authentication data.
    pub authentication_data: Option<Bytes>,
    /// A human-readable reason.
    pub reason_string: Option<String>,
    /// User properties.
    pub user_properties: Vec<UserProperty>,
}

/// Where a property set appears, which decides the properties allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Context {
    Connect,
    Will,
    ConnAck,
    Publish,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK.
    Ack(PacketType),
    Subscribe,
    Unsubscribe,
    Disconnect,
    Auth,
}

macro_rules! mask {
    ($($id:ident),* $(,)?) => { 0 $(| PropertyId::$id.bit())* };
}

impl Context {
    fn packet(self) -> PacketType {
        match self {
            Self::Connect | Self::Will => PacketType::Connect,
            Self::ConnAck => PacketType::ConnAck,
            Self::Publish => PacketType::Publish,
            Self::Ack(packet) => packet,
            Self::Subscribe => PacketType::Subscribe,
            Self::Unsubscribe => PacketType::Unsubscribe,
            Self::Disconnect => PacketType::Disconnect,
            Self::Auth => PacketType::Auth,
        }
    }

    /// The properties allowed here, one bit per identifier.
    const fn allowed(self) -> u64 {
        match self {
            Self::Connect => mask!(
                SessionExpiryInterval,
                ReceiveMaximum,
                MaximumPacketSize,
                TopicAliasMaximum,
                RequestResponseInformation,
                RequestProblemInformation,
                UserProperty,
                AuthenticationMethod,
                AuthenticationData,
            ),
            Self::Will => mask!(
                WillDelayInterval,
                PayloadFormatIndicator,
                MessageExpiryInterval,
                ContentType,
                ResponseTopic,
                CorrelationData,
                UserProperty,
            ),
            Self::ConnAck => mask!(
                SessionExpiryInterval,
                ReceiveMaximum,
                MaximumQoS,
                RetainAvailable,
                MaximumPacketSize,
                AssignedClientIdentifier,
                TopicAliasMaximum,
                ReasonString,
                UserProperty,
                WildcardSubscriptionAvailable,
                SubscriptionIdentifierAvailable,
                SharedSubscriptionAvailable,
                ServerKeepAlive,
                ResponseInformation,
                ServerReference,
                AuthenticationMethod,
                AuthenticationData,
            ),
            Self::Publish => mask!(
                PayloadFormatIndicator,
                MessageExpiryInterval,
                TopicAlias,
                ResponseTopic,
                CorrelationData,
                UserProperty,
                SubscriptionIdentifier,
                ContentType,
            ),
            Self::Ack(_) => mask!(ReasonString, UserProperty),
            Self::Subscribe => mask!(SubscriptionIdentifier, UserProperty),
            Self::Unsubscribe => mask!(UserProperty),
            Self::Disconnect => mask!(
                SessionExpiryInterval,
                ReasonString,
                UserProperty,
                ServerReference
            ),
            Self::Auth => mask!(
                AuthenticationMethod,
                AuthenticationData,
                ReasonString,
                UserProperty
            ),
        }
    }

    /// Whether `id` may appear more than once here.
    fn repeatable(self, id: PropertyId) -> bool {
        id == PropertyId::UserProperty
            || (id == PropertyId::SubscriptionIdentifier && self == Self::Publish)
    }
}

/// Every property, as parsed before being sorted into a packet's struct.
/// Only the fields allowed by the [`Context`] are ever set.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    payload_format_indicator: Option<PayloadFormat>,
    message_expiry_interval: Option<u32>,
    content_type: Option<String>,
    response_topic: Option<String>,
    correlation_data: Option<Bytes>,
    subscription_identifiers: Vec<NonZeroU32>,
    session_expiry_interval: Option<u32>,
    assigned_client_identifier: Option<String>,
    server_keep_alive: Option<u16>,
    authentication_method: Option<String>,
    authentication_data: Option<Bytes>,
    request_problem_information: Option<bool>,
    will_delay_interval: Option<u32>,
    request_response_information: Option<bool>,
    response_information: Option<String>,
    server_reference: Option<String>,
    reason_string: Option<String>,
    receive_maximum: Option<NonZeroU16>,
    topic_alias_maximum: Option<u16>,
    topic_alias: Option<NonZeroU16>,
    maximum_qos: Option<QoS>,
    retain_available: Option<bool>,
    user_properties: Vec<UserProperty>,
    maximum_packet_size: Option<NonZeroU32>,
    wildcard_subscription_available: Option<bool>,
    subscription_identifier_available: Option<bool>,
    shared_subscription_available: Option<bool>,
}

/// Reads a property length and the properties it covers.
pub(crate) fn read(r: &mut Reader<'_>, context: Context) -> Result<Parsed, DecodeError> {
    let packet = context.packet();
    let len = r.var_int()?;
    let mut r = r.sub(len as usize)?;
    let mut parsed = Parsed::default();
    let mut seen: u64 = 0;
    while !r.is_empty() {
        let raw = r.var_int()?;
        let id = u8::try_from(raw)
            .ok()
            .and_then(PropertyId::from_u8)
            .ok_or(DecodeError::UnknownProperty { packet, id: raw })?;
        if context.allowed() & id.bit() == 0 {
            return Err(DecodeError::PropertyNotAllowed {
                packet,
                property: id,
            });
        }
        if seen & id.bit() != 0 && !context.repeatable(id) {
            return Err(DecodeError::DuplicateProperty {
                packet,
                property: id,
            });
        }
        seen |= id.bit();
        parsed.read_value(&mut r, id, packet)?;
    }
    Ok(parsed)
}

fn invalid(packet: PacketType, property: PropertyId) -> DecodeError {
    DecodeError::InvalidPropertyValue { packet, property }
}

fn read_bool(r: &mut Reader<'_>, id: PropertyId) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(invalid(r.packet(), id)),
    }
}

impl Parsed {
    fn read_value(
        &mut self,
        r: &mut Reader<'_>,
        id: PropertyId,
        packet: PacketType,
    ) -> Result<(), DecodeError> {
        use PropertyId as P;
        match id {
            P::PayloadFormatIndicator => {
                self.payload_format_indicator = Some(match r.u8()? {
                    0 => PayloadFormat::Unspecified,
                    1 => PayloadFormat::Utf8,
                    _ => return Err(invalid(packet, id)),
                });
            }
            P::MessageExpiryInterval => self.message_expiry_interval = Some(r.u32()?),
            P::ContentType => self.content_type = Some(r.string()?),
            P::ResponseTopic => {
                let topic = r.string()?;
                validate_topic_name(&topic).map_err(|_| invalid(packet, id))?;
                self.response_topic = Some(topic);
            }
            P::CorrelationData => self.correlation_data = Some(Bytes::copy_from_slice(r.binary()?)),
            P::SubscriptionIdentifier => {
                let value = NonZeroU32::new(r.var_int()?).ok_or(invalid(packet, id))?;
                self.subscription_identifiers.push(value);
            }
            P::SessionExpiryInterval => self.session_expiry_interval = Some(r.u32()?),
            P::AssignedClientIdentifier => self.assigned_client_identifier = Some(r.string()?),
            P::ServerKeepAlive => self.server_keep_alive = Some(r.u16()?),
            P::AuthenticationMethod => self.authentication_method = Some(r.string()?),
            P::AuthenticationData => {
                self.authentication_data = Some(Bytes::copy_from_slice(r.binary()?));
            }
            P::RequestProblemInformation => {
                self.request_problem_information = Some(read_bool(r, id)?);
            }
            P::WillDelayInterval => self.will_delay_interval = Some(r.u32()?),
            P::RequestResponseInformation => {
                self.request_response_information = Some(read_bool(r, id)?);
            }
            P::ResponseInformation => self.response_information = Some(r.string()?),
            P::ServerReference => self.server_reference = Some(r.string()?),
            P::ReasonString => self.reason_string = Some(r.string()?),
            P::ReceiveMaximum => {
                self.receive_maximum = Some(NonZeroU16::new(r.u16()?).ok_or(invalid(packet, id))?);
            }
            P::TopicAliasMaximum => self.topic_alias_maximum = Some(r.u16()?),
            P::TopicAlias => {
                self.topic_alias =
                    Some(NonZeroU16::new(r.u16()?).ok_or(DecodeError::TopicAliasZero)?);
            }
            P::MaximumQoS => {
                self.maximum_qos = Some(match r.u8()? {
                    0 => QoS::AtMostOnce,
                    1 => QoS::AtLeastOnce,
                    _ => return Err(invalid(packet, id)),
                });
            }
            P::RetainAvailable => self.retain_available = Some(read_bool(r, id)?),
            P::UserProperty => {
                let name = r.string()?;
                let value = r.string()?;
                self.user_properties.push((name, value));
            }
            P::MaximumPacketSize => {
                self.maximum_packet_size =
                    Some(NonZeroU32::new(r.u32()?).ok_or(invalid(packet, id))?);
            }
            P::WildcardSubscriptionAvailable => {
                self.wildcard_subscription_available = Some(read_bool(r, id)?);
            }
            P::SubscriptionIdentifierAvailable => {
                self.subscription_identifier_available = Some(read_bool(r, id)?);
            }
            P::SharedSubscriptionAvailable => {
                self.shared_subscription_available = Some(read_bool(r, id)?);
            }
        }
        Ok(())
    }

    pub(crate) fn into_connect(self) -> ConnectProperties {
        ConnectProperties {
            session_expiry_interval: self.session_expiry_interval,
            receive_maximum: self.receive_maximum,
            maximum_packet_size: self.maximum_packet_size,
            topic_alias_maximum: self.topic_alias_maximum,
            request_response_information: self.request_response_information,
            request_problem_information: self.request_problem_information,
            user_properties: self.user_properties,
            authentication_method: self.authentication_method,
            authentication_data: self.authentication_data,
        }
    }

    pub(crate) fn into_will(self) -> WillProperties {
        WillProperties {
            will_delay_interval: self.will_delay_interval,
            payload_format_indicator: self.payload_format_indicator,
            message_expiry_interval: self.message_expiry_interval,
            content_type: self.content_type,
            response_topic: self.response_topic,
            correlation_data: self.correlation_data,
            user_properties: self.user_properties,
        }
    }

    pub(crate) fn into_connack(self) -> ConnAckProperties {
        ConnAckProperties {
            session_expiry_interval: self.session_expiry_interval,
            receive_maximum: self.receive_maximum,
            maximum_qos: self.maximum_qos,
            retain_available: self.retain_available,
            maximum_packet_size: self.maximum_packet_size,
            assigned_client_identifier: self.assigned_client_identifier,
            topic_alias_maximum: self.topic_alias_maximum,
            reason_string: self.reason_string,
            user_properties: self.user_properties,
            wildcard_subscription_available: self.wildcard_subscription_available,
            subscription_identifiers_available: self.subscription_identifier_available,
            shared_subscription_available: self.shared_subscription_available,
            server_keep_alive: self.server_keep_alive,
            response_information: self.response_information,
            server_reference: self.server_reference,
            authentication_method: self.authentication_method,
            authentication_data: self.authentication_data,
        }
    }

    pub(crate) fn into_publish(self) -> PublishProperties {
        PublishProperties {
            payload_format_indicator: self.payload_format_indicator,
            message_expiry_interval: self.message_expiry_interval,
            topic_alias: self.topic_alias,
            response_topic: self.response_topic,
            correlation_data: self.correlation_data,
            user_properties: self.user_properties,
            subscription_identifiers: self.subscription_identifiers,
            content_type: self.content_type,
        }
    }

    pub(crate) fn into_ack(self) -> AckProperties {
        AckProperties {
            reason_string: self.reason_string,
            user_properties: self.user_properties,
        }
    }

    pub(crate) fn into_subscribe(mut self) -> SubscribeProperties {
        SubscribeProperties {
            // At most one: SUBSCRIBE does not allow repeating it.
            subscription_identifier: self.subscription_identifiers.pop(),
            user_properties: self.user_properties,
        }
    }

    pub(crate) fn into_unsubscribe(self) -> UnsubscribeProperties {
        UnsubscribeProperties {
            user_properties: self.user_properties,
        }
    }

    pub(crate) fn into_disconnect(self) -> DisconnectProperties {
        DisconnectProperties {
            session_expiry_interval: self.session_expiry_interval,
            reason_string: self.reason_string,
            user_properties: self.user_properties,
            server_reference: self.server_reference,
        }
    }

    pub(crate) fn into_auth(self) -> AuthProperties {
        AuthProperties {
            authentication_method: self.authentication_method,
            authentication_data: self.authentication_data,
            reason_string: self.reason_string,
            user_properties: self.user_properties,
        }
    }
}

/// A packet's property set, written in identifier order.
pub(crate) trait WriteProperties {
    /// Writes the properties (without their length), checking their values.
    fn write_to<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError>;
}

/// Writes a property length and then the properties.
pub(crate) fn write<S: Sink, P: WriteProperties>(
    s: &mut S,
    properties: &P,
    packet: PacketType,
) -> Result<(), EncodeError> {
    let mut counter = Counter::default();
    properties.write_to(&mut counter)?;
    let len = u32::try_from(counter.0)
        .ok()
        .filter(|&len| len <= MAX_VAR_INT)
        .ok_or(EncodeError::PacketTooLarge {
            packet,
            size: counter.0,
        })?;
    s.put_var_int(len);
    properties.write_to(s)
}

fn put_u8<S: Sink>(s: &mut S, id: PropertyId, value: Option<u8>) {
    if let Some(value) = value {
        s.put_u8(id.as_u8());
        s.put_u8(value);
    }
}

fn put_bool<S: Sink>(s: &mut S, id: PropertyId, value: Option<bool>) {
    put_u8(s, id, value.map(u8::from));
}

fn put_u16<S: Sink>(s: &mut S, id: PropertyId, value: Option<u16>) {
    if let Some(value) = value {
        s.put_u8(id.as_u8());
        s.put_u16(value);
    }
}

fn put_u32<S: Sink>(s: &mut S, id: PropertyId, value: Option<u32>) {
    if let Some(value) = value {
        s.put_u8(id.as_u8());
        s.put_u32(value);
    }
}

fn put_string<S: Sink>(
    s: &mut S,
    id: PropertyId,
    value: Option<&str>,
    field: &'static str,
) -> Result<(), EncodeError> {
    if let Some(value) = value {
        s.put_u8(id.as_u8());
        s.put_string(value, field)?;
    }
    Ok(())
}

fn put_binary<S: Sink>(
    s: &mut S,
    id: PropertyId,
    value: Option<&Bytes>,
    field: &'static str,
) -> Result<(), EncodeError> {
    if let Some(value) = value {
        s.put_u8(id.as_u8());
        s.put_binary(value, field)?;
    }
    Ok(())
}

fn put_subscription_identifier<S: Sink>(s: &mut S, id: NonZeroU32) -> Result<(), EncodeError> {
    if id.get() > MAX_VAR_INT {
        return Err(EncodeError::InvalidProperty {
            property: PropertyId::SubscriptionIdentifier,
        });
    }
    s.put_u8(PropertyId::SubscriptionIdentifier.as_u8());
    s.put_var_int(id.get());
    Ok(())
}

fn put_response_topic<S: Sink>(s: &mut S, topic: Option<&str>) -> Result<(), EncodeError> {
    if let Some(topic) = topic {
        validate_topic_name(topic).map_err(|_| EncodeError::InvalidProperty {
            property: PropertyId::ResponseTopic,
        })?;
    }
    put_string(s, PropertyId::ResponseTopic, topic, "response topic")
}

fn put_user_properties<S: Sink>(s: &mut S, pairs: &[UserProperty]) -> Result<(), EncodeError> {
    for (name, value) in pairs {
        s.put_u8(PropertyId::UserProperty.as_u8());
        s.put_string(name, "user property name")?;
        s.put_string(value, "user property value")?;
    }
    Ok(())
}

fn payload_format(value: Option<PayloadFormat>) -> Option<u8> {
    value.map(|f| f as u8)
}

impl WriteProperties for ConnectProperties {
    fn write_to<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        use PropertyId as P;
        if self.authentication_data.is_some() && self.authentication_method.is_none() {
            return Err(EncodeError::MissingAuthenticationMethod {
                packet: PacketType::Connect,
            });
        }
        put_u32(s, P::SessionExpiryInterval, self.session_expiry_interval);
        put_string(
            s,
            P::AuthenticationMethod,
            self.authentication_method.as_deref(),
            "authentication method",
        )?;
        put_binary(
            s,
            P::AuthenticationData,
            self.authentication_data.as_ref(),
            "authentication data",
        )?;
        put_bool(
            s,
            P::RequestProblemInformation,
            self.request_problem_information,
        );
        put_bool(
            s,
            P::RequestResponseInformation,
            self.request_response_information,
        );
        put_u16(
            s,
            P::ReceiveMaximum,
            self.receive_maximum.map(NonZeroU16::get),
        );
        put_u16(s, P::TopicAliasMaximum, self.topic_alias_maximum);
        put_user_properties(s, &self.user_properties)?;
        put_u32(
            s,
            P::MaximumPacketSize,
            self.maximum_packet_size.map(NonZeroU32::get),
        );
        Ok(())
    }
}

impl WriteProperties for WillProperties {
    fn write_to<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        use PropertyId as P;
        put_u8(
            s,
            P::PayloadFormatIndicator,
            payload_format(self.payload_format_indicator),
        );
        put_u32(s, P::MessageExpiryInterval, self.message_expiry_interval);
        put_string(
            s,
            P::ContentType,
            self.content_type.as_deref(),
            "content type",
        )?;
        put_response_topic(s, self.response_topic.as_deref())?;
        put_binary(
            s,
            P::CorrelationData,
            self.correlation_data.as_ref(),
            "correlation data",
        )?;
        put_u32(s, P::WillDelayInterval, self.will_delay_interval);
        put_user_properties(s, &self.user_properties)
    }
}

impl WriteProperties for ConnAckProperties {
    fn write_to<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        use PropertyId as P;
        let maximum_qos = match self.maximum_qos {
            None => None,
            Some(QoS::ExactlyOnce) => {
                return Err(EncodeError::InvalidProperty {
                    property: P::MaximumQoS,
                });
            }
            Some(qos) => Some(qos.as_u8()),
        };
        put_u32(s, P::SessionExpiryInterval, self.session_expiry_interval);
        put_string(
            s,
            P::AssignedClientIdentifier,
            self.assigned_client_identifier.as_deref(),
            "assigned client identifier",
        )?;
        put_u16(s, P::ServerKeepAlive, self.server_keep_alive);
        put_string(
            s,
            P::AuthenticationMethod,
            self.authentication_method.as_deref(),
            "authentication method",
        )?;
        put_binary(
            s,
            P::AuthenticationData,
            self.authentication_data.as_ref(),
            "authentication data",
        )?;
        put_string(
            s,
            P::ResponseInformation,
            self.response_information.as_deref(),
            "response information",
        )?;
        put_string(
            s,
            P::ServerReference,
            self.server_reference.as_deref(),
            "server reference",
        )?;
        put_string(
            s,
            P::ReasonString,
            self.reason_string.as_deref(),
            "reason string",
        )?;
        put_u16(
            s,
            P::ReceiveMaximum,
            self.receive_maximum.map(NonZeroU16::get),
        );
        put_u16(s, P::TopicAliasMaximum, self.topic_alias_maximum);
        put_u8(s, P::MaximumQoS, maximum_qos);
        put_bool(s, P::RetainAvailable, self.retain_available);
        put_user_properties(s, &self.user_properties)?;
        put_u32(
            s,
            P::MaximumPacketSize,
            self.maximum_packet_size.map(NonZeroU32::get),
        );
        put_bool(
            s,
            P::WildcardSubscriptionAvailable,
            self.wildcard_subscription_available,
        );
        put_bool(
            s,
            P::SubscriptionIdentifierAvailable,
            self.subscription_identifiers_available,
        );
        put_bool(
            s,
            P::SharedSubscriptionAvailable,
            self.shared_subscription_available,
        );
        Ok(())
    }
}

impl WriteProperties for PublishProperties {
    fn write_to<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        use PropertyId as P;
        put_u8(
            s,
            P::PayloadFormatIndicator,
            payload_format(self.payload_format_indicator),
        );
        put_u32(s, P::MessageExpiryInterval, self.message_expiry_interval);
        put_string(
            s,
            P::ContentType,
            self.content_type.as_deref(),
            "content type",
        )?;
        put_response_topic(s, self.response_topic.as_deref())?;
        put_binary(
            s,
            P::CorrelationData,
            self.correlation_data.as_ref(),
            "correlation data",
        )?;
        for &id in &self.subscription_identifiers {
            put_subscription_identifier(s, id)?;
        }
        put_u16(s, P::TopicAlias, self.topic_alias.map(NonZeroU16::get));
        put_user_properties(s, &self.user_properties)
    }
}

impl WriteProperties for AckProperties {
    fn write_to<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        put_string(
            s,
            PropertyId::ReasonString,
            self.reason_string.as_deref(),
            "reason string",
        )?;
        put_user_properties(s, &self.user_properties)
    }
}

impl WriteProperties for SubscribeProperties {
    fn write_to<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        if let Some(id) = self.subscription_identifier {
            put_subscription_identifier(s, id)?;
        }
        put_user_properties(s, &self.user_properties)
    }
}

impl WriteProperties for UnsubscribeProperties {
    fn write_to<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        put_user_properties(s, &self.user_properties)
    }
}

impl WriteProperties for DisconnectProperties {
    fn write_to<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        use PropertyId as P;
        put_u32(s, P::SessionExpiryInterval, self.session_expiry_interval);
        put_string(
            s,
            P::ServerReference,
            self.server_reference.as_deref(),
            "server reference",
        )?;
        put_string(
            s,
            P::ReasonString,
            self.reason_string.as_deref(),
            "reason string",
        )?;
        put_user_properties(s, &self.user_properties)
    }
}

impl WriteProperties for AuthProperties {
    fn write_to<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        use PropertyId as P;
        put_string(
            s,
            P::AuthenticationMethod,
            self.authentication_method.as_deref(),
            "authentication method",
        )?;
        put_binary(
            s,
            P::AuthenticationData,
            self.authentication_data.as_ref(),
            "authentication data",
        )?;
        put_string(
            s,
            P::ReasonString,
            self.reason_string.as_deref(),
            "reason string",
        )?;
        put_user_properties(s, &self.user_properties)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_identifier_round_trips_and_fits_the_mask() {
        let ids: Vec<PropertyId> = (0..=u8::MAX).filter_map(PropertyId::from_u8).collect();
        assert_eq!(ids.len(), 27, "MQTT 5.0 defines 27 properties");
        for id in ids {
            assert_eq!(PropertyId::from_u8(id.as_u8()), Some(id));
            assert!(id.as_u8() < 64);
        }
    }

    #[test]
    fn each_property_is_allowed_where_table_2_4_says() {
        use PropertyId as P;
        // (property, contexts where it is allowed)
        let table: [(PropertyId, &[Context]); 27] = [
            (
                P::PayloadFormatIndicator,
                &[Context::Publish, Context::Will],
            ),
            (P::MessageExpiryInterval, &[Context::Publish, Context::Will]),
            (P::ContentType, &[Context::Publish, Context::Will]),
            (P::ResponseTopic, &[Context::Publish, Context::Will]),
            (P::CorrelationData, &[Context::Publish, Context::Will]),
            (
                P::SubscriptionIdentifier,
                &[Context::Publish, Context::Subscribe],
            ),
            (
                P::SessionExpiryInterval,
                &[Context::Connect, Context::ConnAck, Context::Disconnect],
            ),
            (P::AssignedClientIdentifier, &[Context::ConnAck]),
            (P::ServerKeepAlive, &[Context::ConnAck]),
            (
                P::AuthenticationMethod,
                &[Context::Connect, Context::ConnAck, Context::Auth],
            ),
            (
                P::AuthenticationData,
                &[Context::Connect, Context::ConnAck, Context::Auth],
            ),
            (P::RequestProblemInformation, &[Context::Connect]),
            (P::WillDelayInterval, &[Context::Will]),
            (P::RequestResponseInformation, &[Context::Connect]),
            (P::ResponseInformation, &[Context::ConnAck]),
            (P::ServerReference, &[Context::ConnAck, Context::Disconnect]),
            (
                P::ReasonString,
                &[
                    Context::ConnAck,
                    Context::Ack(PacketType::PubAck),
                    Context::Disconnect,
                    Context::Auth,
                ],
            ),
            (P::ReceiveMaximum, &[Context::Connect, Context::ConnAck]),
            (P::TopicAliasMaximum, &[Context::Connect, Context::ConnAck]),
            (P::TopicAlias, &[Context::Publish]),
            (P::MaximumQoS, &[Context::ConnAck]),
            (P::RetainAvailable, &[Context::ConnAck]),
            (
                P::UserProperty,
                &[
                    Context::Connect,
                    Context::Will,
                    Context::ConnAck,
                    Context::Publish,
                    Context::Ack(PacketType::PubAck),
                    Context::Subscribe,
                    Context::Unsubscribe,
                    Context::Disconnect,
                    Context::Auth,
                ],
            ),
            (P::MaximumPacketSize, &[Context::Connect, Context::ConnAck]),
            (P::WildcardSubscriptionAvailable, &[Context::ConnAck]),
            (P::SubscriptionIdentifierAvailable, &[Context::ConnAck]),
            (P::SharedSubscriptionAvailable, &[Context::ConnAck]),
        ];
        let all = [
            Context::Connect,
            Context::Will,
            Context::ConnAck,
            Context::Publish,
            Context::Ack(PacketType::PubAck),
            Context::Subscribe,
            Context::Unsubscribe,
            Context::Disconnect,
            Context::Auth,
        ];
        for (id, allowed) in table {
            for context in all {
                assert_eq!(
                    context.allowed() & id.bit() != 0,
                    allowed.contains(&context),
                    "{id:?} in {context:?}"
                );
            }
        }
    }
}
