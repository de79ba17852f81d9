//! Packets to bytes.

use bytes::BytesMut;

use crate::error::EncodeError;
use crate::packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, PacketType, ProtocolVersion, Publish, QoS, SubAck,
    Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe,
};
use crate::properties::{self, AckProperties};
use crate::reason::ReasonCode;
use crate::topic::{TopicError, parse_shared, validate_topic_filter, validate_topic_name};
use crate::wire::{Counter, MAX_VAR_INT, Sink, var_int_len};

/// Appends `packet`, encoded for a peer speaking `version`, to `buf`.
///
/// Every rule [`decode`](crate::decode) checks is checked here too, so the
/// codec never sends what it would refuse to receive. On error nothing is
/// appended. How 5.0-only fields are treated for a 3.1.1 peer is described
/// in the crate documentation.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let remaining = remaining_length(packet, version)?;
    let start = buf.len();
    buf.reserve(1 + var_int_len(remaining) + remaining as usize);
    buf.put_u8(first_byte(packet));
    buf.put_var_int(remaining);
    if let Err(error) = write_body(packet, version, buf) {
        // Unreachable in practice: the counting pass ran the same checks.
        buf.truncate(start);
        return Err(error);
    }
    Ok(())
}

impl Packet {
    /// The size of this packet once encoded for `version`, fixed header
    /// included: what a server compares with the client's Maximum Packet
    /// Size before sending ([MQTT-3.1.2-24]).
    pub fn encoded_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        let remaining = remaining_length(self, version)?;
        Ok(1 + var_int_len(remaining) + remaining as usize)
    }
}

fn remaining_length(packet: &Packet, version: ProtocolVersion) -> Result<u32, EncodeError> {
    let mut counter = Counter::default();
    write_body(packet, version, &mut counter)?;
    u32::try_from(counter.0)
        .ok()
        .filter(|&len| len <= MAX_VAR_INT)
        .ok_or(EncodeError::PacketTooLarge {
            packet: packet.packet_type(),
            size: counter.0,
        })
}

fn first_byte(packet: &Packet) -> u8 {
    let packet_type = packet.packet_type();
    let flags = match packet {
        Packet::Publish(p) => (u8::from(p.dup) << 3) | (p.qos.as_u8() << 1) | u8::from(p.retain),
        _ => packet_type.required_flags().unwrap_or(0),
    };
    ((packet_type as u8) << 4) | flags
}

fn write_body<S: Sink>(
    packet: &Packet,
    version: ProtocolVersion,
    s: &mut S,
) -> Result<(), EncodeError> {
    match packet {
        Packet::Connect(p) => connect(p, version, s),
        Packet::ConnAck(p) => connack(p, version, s),
        Packet::Publish(p) => publish(p, version, s),
        Packet::PubAck(p) => publish_response(
            PacketType::PubAck,
            p.packet_id,
            p.reason_code,
            &p.properties,
            version,
            s,
        ),
        Packet::PubRec(p) => publish_response(
            PacketType::PubRec,
            p.packet_id,
            p.reason_code,
            &p.properties,
            version,
            s,
        ),
        Packet::PubRel(p) => publish_response(
            PacketType::PubRel,
            p.packet_id,
            p.reason_code,
            &p.properties,
            version,
            s,
        ),
        Packet::PubComp(p) => publish_response(
            PacketType::PubComp,
            p.packet_id,
            p.reason_code,
            &p.properties,
            version,
            s,
        ),
        Packet::Subscribe(p) => subscribe(p, version, s),
        Packet::SubAck(p) => suback(p, version, s),
        Packet::Unsubscribe(p) => unsubscribe(p, version, s),
        Packet::UnsubAck(p) => unsuback(p, version, s),
        Packet::PingReq | Packet::PingResp => Ok(()),
        Packet::Disconnect(p) => disconnect(p, version, s),
        Packet::Auth(p) => auth(p, version, s),
    }
}

fn packet_id<S: Sink>(s: &mut S, id: u16, packet: PacketType) -> Result<(), EncodeError> {
    if id == 0 {
        return Err(EncodeError::InvalidPacketId { packet });
    }
    s.put_u16(id);
    Ok(())
}

fn check_reason(code: ReasonCode, packet: PacketType) -> Result<(), EncodeError> {
    if code.is_allowed_in(packet) {
        Ok(())
    } else {
        Err(EncodeError::ReasonCodeNotAllowed { packet, code })
    }
}

fn topic_name(topic: &str, packet: PacketType) -> Result<(), EncodeError> {
    validate_topic_name(topic).map_err(|error| EncodeError::InvalidTopicName { packet, error })
}

fn connect<S: Sink>(c: &Connect, version: ProtocolVersion, s: &mut S) -> Result<(), EncodeError> {
    const PACKET: PacketType = PacketType::Connect;
    if c.protocol != version {
        return Err(EncodeError::VersionMismatch {
            packet: c.protocol,
            requested: version,
        });
    }
    let v5 = version == ProtocolVersion::V5;
    if !v5 && c.password.is_some() && c.username.is_none() {
        return Err(EncodeError::NotInV311 {
            what: "a password without a user name",
        });
    }
    s.put_string("MQTT", "protocol name")?;
    s.put_u8(version.level());
    let mut flags = 0u8;
    if c.clean_start {
        flags |= 0b0000_0010;
    }
    if let Some(will) = &c.will {
        flags |= 0b0000_0100 | (will.qos.as_u8() << 3);
        if will.retain {
            flags |= 0b0010_0000;
        }
    }
    if c.password.is_some() {
        flags |= 0b0100_0000;
    }
    if c.username.is_some() {
        flags |= 0b1000_0000;
    }
    s.put_u8(flags);
    s.put_u16(c.keep_alive);
    if v5 {
        properties::write(s, &c.properties, PACKET)?;
    }
    s.put_string(&c.client_id, "client identifier")?;
    if let Some(will) = &c.will {
        if v5 {
            properties::write(s, &will.properties, PACKET)?;
        }
        topic_name(&will.topic, PACKET)?;
        s.put_string(&will.topic, "will topic")?;
        s.put_binary(&will.payload, "will payload")?;
    }
    if let Some(username) = &c.username {
        s.put_string(username, "user name")?;
    }
    if let Some(password) = &c.password {
        s.put_binary(password, "password")?;
    }
    Ok(())
}

fn connack<S: Sink>(c: &ConnAck, version: ProtocolVersion, s: &mut S) -> Result<(), EncodeError> {
    check_reason(c.reason_code, PacketType::ConnAck)?;
    if c.session_present && c.reason_code.is_error() {
        return Err(EncodeError::SessionPresentWithError);
    }
    s.put_u8(u8::from(c.session_present));
    match version {
        ProtocolVersion::V311 => {
            let code = c
                .reason_code
                .to_v311_connack()
                .ok_or(EncodeError::NotInV311 {
                    what: "this CONNACK reason code",
                })?;
            s.put_u8(code);
        }
        ProtocolVersion::V5 => {
            s.put_u8(c.reason_code.as_u8());
            properties::write(s, &c.properties, PacketType::ConnAck)?;
        }
    }
    Ok(())
}

fn publish<S: Sink>(p: &Publish, version: ProtocolVersion, s: &mut S) -> Result<(), EncodeError> {
    const PACKET: PacketType = PacketType::Publish;
    match (p.qos, p.packet_id) {
        (QoS::AtMostOnce, None) if p.dup => return Err(EncodeError::DupWithQoS0),
        (QoS::AtMostOnce, None) => {}
        (QoS::AtLeastOnce | QoS::ExactlyOnce, Some(id)) if id != 0 => {}
        _ => return Err(EncodeError::InvalidPacketId { packet: PACKET }),
    }
    match (p.topic.is_empty(), version) {
        (true, ProtocolVersion::V5) if p.properties.topic_alias.is_some() => {}
        (true, ProtocolVersion::V5) => return Err(EncodeError::MissingTopic),
        (true, ProtocolVersion::V311) if p.properties.topic_alias.is_some() => {
            return Err(EncodeError::NotInV311 {
                what: "a topic alias in place of the topic name",
            });
        }
        (true, ProtocolVersion::V311) => {
            return Err(EncodeError::InvalidTopicName {
                packet: PACKET,
                error: TopicError::Empty,
            });
        }
        (false, _) => topic_name(&p.topic, PACKET)?,
    }
    s.put_string(&p.topic, "topic name")?;
    if let Some(id) = p.packet_id {
        s.put_u16(id);
    }
    if version == ProtocolVersion::V5 {
        properties::write(s, &p.properties, PACKET)?;
    }
    s.put_slice(&p.payload);
    Ok(())
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP. In 5.0 the reason code and property
/// length are left out when they carry nothing (§3.4.2.1).
fn publish_response<S: Sink>(
    packet: PacketType,
    id: u16,
    reason: ReasonCode,
    properties: &AckProperties,
    version: ProtocolVersion,
    s: &mut S,
) -> Result<(), EncodeError> {
    check_reason(reason, packet)?;
    packet_id(s, id, packet)?;
    match version {
        ProtocolVersion::V311 if reason.is_error() => Err(EncodeError::NotInV311 {
            what: "a failure reason code in a PUBACK, PUBREC, PUBREL or PUBCOMP",
        }),
        ProtocolVersion::V311 => Ok(()),
        ProtocolVersion::V5 => {
            let no_properties = *properties == AckProperties::default();
            if reason != ReasonCode::Success || !no_properties {
                s.put_u8(reason.as_u8());
            }
            if !no_properties {
                properties::write(s, properties, packet)?;
            }
            Ok(())
        }
    }
}

/// Checks a topic filter as decoding does; true for a 5.0 shared subscription.
fn topic_filter(
    filter: &str,
    packet: PacketType,
    version: ProtocolVersion,
) -> Result<bool, EncodeError> {
    let invalid = |error| EncodeError::InvalidTopicFilter { packet, error };
    validate_topic_filter(filter).map_err(invalid)?;
    match version {
        ProtocolVersion::V5 => Ok(parse_shared(filter).map_err(invalid)?.is_some()),
        ProtocolVersion::V311 => Ok(false),
    }
}

fn options_byte(
    options: &SubscriptionOptions,
    shared: bool,
    version: ProtocolVersion,
) -> Result<u8, EncodeError> {
    match version {
        ProtocolVersion::V311 => {
            if *options != SubscriptionOptions::with_qos(options.qos) {
                return Err(EncodeError::NotInV311 {
                    what: "subscription options other than QoS",
                });
            }
            Ok(options.qos.as_u8())
        }
        ProtocolVersion::V5 => {
            if shared && options.no_local {
                return Err(EncodeError::NoLocalOnSharedSubscription);
            }
            Ok(options.qos.as_u8()
                | (u8::from(options.no_local) << 2)
                | (u8::from(options.retain_as_published) << 3)
                | ((options.retain_handling as u8) << 4))
        }
    }
}

fn subscribe<S: Sink>(
    p: &Subscribe,
    version: ProtocolVersion,
    s: &mut S,
) -> Result<(), EncodeError> {
    const PACKET: PacketType = PacketType::Subscribe;
    if p.subscriptions.is_empty() {
        return Err(EncodeError::EmptyPayload { packet: PACKET });
    }
    packet_id(s, p.packet_id, PACKET)?;
    if version == ProtocolVersion::V5 {
        properties::write(s, &p.properties, PACKET)?;
    }
    for subscription in &p.subscriptions {
        let shared = topic_filter(&subscription.filter, PACKET, version)?;
        let byte = options_byte(&subscription.options, shared, version)?;
        s.put_string(&subscription.filter, "topic filter")?;
        s.put_u8(byte);
    }
    Ok(())
}

fn suback<S: Sink>(p: &SubAck, version: ProtocolVersion, s: &mut S) -> Result<(), EncodeError> {
    const PACKET: PacketType = PacketType::SubAck;
    if p.reason_codes.is_empty() {
        return Err(EncodeError::EmptyPayload { packet: PACKET });
    }
    for &code in &p.reason_codes {
        check_reason(code, PACKET)?;
    }
    packet_id(s, p.packet_id, PACKET)?;
    match version {
        ProtocolVersion::V311 => {
            for &code in &p.reason_codes {
                // 3.1.1 has granted QoS 0, 1, 2, and one failure code, 0x80.
                s.put_u8(if code.is_error() { 0x80 } else { code.as_u8() });
            }
        }
        ProtocolVersion::V5 => {
            properties::write(s, &p.properties, PACKET)?;
            for &code in &p.reason_codes {
                s.put_u8(code.as_u8());
            }
        }
    }
    Ok(())
}

fn unsubscribe<S: Sink>(
    p: &Unsubscribe,
    version: ProtocolVersion,
    s: &mut S,
) -> Result<(), EncodeError> {
    const PACKET: PacketType = PacketType::Unsubscribe;
    if p.filters.is_empty() {
        return Err(EncodeError::EmptyPayload { packet: PACKET });
    }
    packet_id(s, p.packet_id, PACKET)?;
    if version == ProtocolVersion::V5 {
        properties::write(s, &p.properties, PACKET)?;
    }
    for filter in &p.filters {
        topic_filter(filter, PACKET, version)?;
        s.put_string(filter, "topic filter")?;
    }
    Ok(())
}

fn unsuback<S: Sink>(p: &UnsubAck, version: ProtocolVersion, s: &mut S) -> Result<(), EncodeError> {
    const PACKET: PacketType = PacketType::UnsubAck;
    for &code in &p.reason_codes {
        check_reason(code, PACKET)?;
    }
    packet_id(s, p.packet_id, PACKET)?;
    match version {
        ProtocolVersion::V311 => {
            if p.reason_codes.iter().any(|code| code.is_error()) {
                return Err(EncodeError::NotInV311 {
                    what: "a failure reason code in an UNSUBACK",
                });
            }
        }
        ProtocolVersion::V5 => {
            if p.reason_codes.is_empty() {
                return Err(EncodeError::EmptyPayload { packet: PACKET });
            }
            properties::write(s, &p.properties, PACKET)?;
            for &code in &p.reason_codes {
                s.put_u8(code.as_u8());
            }
        }
    }
    Ok(())
}

fn disconnect<S: Sink>(
    p: &Disconnect,
    version: ProtocolVersion,
    s: &mut S,
) -> Result<(), EncodeError> {
    const PACKET: PacketType = PacketType::Disconnect;
    check_reason(p.reason_code, PACKET)?;
    match version {
        ProtocolVersion::V311 if p.reason_code != ReasonCode::NORMAL_DISCONNECTION => {
            Err(EncodeError::NotInV311 {
                what: "a DISCONNECT reason code",
            })
        }
        ProtocolVersion::V311 => Ok(()),
        ProtocolVersion::V5 => {
            let no_properties = p.properties == Default::default();
            if p.reason_code != ReasonCode::NORMAL_DISCONNECTION || !no_properties {
                s.put_u8(p.reason_code.as_u8());
            }
            if !no_properties {
                properties::write(s, &p.properties, PACKET)?;
            }
            Ok(())
        }
    }
}

fn auth<S: Sink>(p: &Auth, version: ProtocolVersion, s: &mut S) -> Result<(), EncodeError> {
    const PACKET: PacketType = PacketType::Auth;
    if version == ProtocolVersion::V311 {
        return Err(EncodeError::NotInV311 { what: "AUTH" });
    }
    check_reason(p.reason_code, PACKET)?;
    let no_properties = p.properties == Default::default();
    let bare_success = p.reason_code == ReasonCode::Success && no_properties;
    if bare_success {
        return Ok(());
    }
    if p.properties.authentication_method.is_none() {
        return Err(EncodeError::MissingAuthenticationMethod { packet: PACKET });
    }
    s.put_u8(p.reason_code.as_u8());
    properties::write(s, &p.properties, PACKET)
}
