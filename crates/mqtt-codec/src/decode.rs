//! Bytes to packets.

use bytes::{Buf, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, PacketType, ProtocolVersion, PubAck, PubComp,
    PubRec, PubRel, Publish, QoS, RetainHandling, SubAck, Subscribe, Subscription,
    SubscriptionOptions, UnsubAck, Unsubscribe, Will,
};
use crate::properties::{self, AckProperties, Context};
use crate::reason::ReasonCode;
use crate::topic::{parse_shared, validate_topic_filter, validate_topic_name};
use crate::wire::{Reader, VarInt, read_var_int};

/// Decodes one packet from the front of `buf`.
///
/// - `Ok(Some(packet))`: the packet's bytes were removed from `buf`.
/// - `Ok(None)`: `buf` holds only a prefix of a packet; nothing was consumed.
///   Read more bytes into `buf` and call again.
/// - `Err(_)`: the peer sent something invalid; nothing was consumed, and the
///   connection must be closed (after a CONNACK or DISCONNECT carrying
///   [`DecodeError::reason_code`], for a 5.0 peer).
///
/// `version` is `None` until the connection's CONNECT has been decoded: only
/// CONNECT is accepted then, and it decides the version (the returned
/// [`Connect::protocol`]). Afterwards it is `Some`, and a CONNECT is refused
/// as a second CONNECT.
///
/// `max_packet_size` bounds the whole packet (fixed header included). A
/// larger packet is refused as soon as its fixed header has arrived, without
/// waiting for (or buffering) the rest.
pub fn decode(
    buf: &mut BytesMut,
    version: Option<ProtocolVersion>,
    max_packet_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let packet_type = check_first_byte(first, version)?;
    let (remaining, len_bytes) = match read_var_int(&buf[1..]) {
        VarInt::Value(value, len) => (value as usize, len),
        VarInt::Incomplete => return Ok(None),
        VarInt::Invalid => return Err(DecodeError::InvalidRemainingLength),
    };
    let header = 1 + len_bytes;
    let size = header + remaining;
    if size > max_packet_size {
        return Err(DecodeError::PacketTooLarge {
            size,
            max: max_packet_size,
        });
    }
    if buf.len() < size {
        return Ok(None);
    }
    let flags = first & 0x0F;
    // Every packet type but CONNECT has a known version here.
    let v = version.unwrap_or(ProtocolVersion::V5);
    let mut r = Reader::new(&buf[header..size], packet_type);
    let packet = match packet_type {
        PacketType::Publish => {
            // The PUBLISH payload shares the received buffer: parse the
            // header fields first, and take the payload only once the packet
            // is known to be valid.
            let mut publish = publish(&mut r, flags, v)?;
            let payload_start = header + r.position();
            let mut frame = buf.split_to(size).freeze();
            frame.advance(payload_start);
            publish.payload = frame;
            return Ok(Some(Packet::Publish(publish)));
        }
        PacketType::Connect => Packet::Connect(Box::new(connect(&mut r)?)),
        PacketType::ConnAck => Packet::ConnAck(Box::new(connack(&mut r, v)?)),
        PacketType::PubAck => {
            let (packet_id, reason_code, properties) = publish_response(&mut r, v)?;
            Packet::PubAck(PubAck {
                packet_id,
                reason_code,
                properties,
            })
        }
        PacketType::PubRec => {
            let (packet_id, reason_code, properties) = publish_response(&mut r, v)?;
            Packet::PubRec(PubRec {
                packet_id,
                reason_code,
                properties,
            })
        }
        PacketType::PubRel => {
            let (packet_id, reason_code, properties) = publish_response(&mut r, v)?;
            Packet::PubRel(PubRel {
                packet_id,
                reason_code,
                properties,
            })
        }
        PacketType::PubComp => {
            let (packet_id, reason_code, properties) = publish_response(&mut r, v)?;
            Packet::PubComp(PubComp {
                packet_id,
                reason_code,
                properties,
            })
        }
        PacketType::Subscribe => Packet::Subscribe(subscribe(&mut r, v)?),
        PacketType::SubAck => Packet::SubAck(suback(&mut r, v)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(unsubscribe(&mut r, v)?),
        PacketType::UnsubAck => Packet::UnsubAck(unsuback(&mut r, v)?),
        PacketType::PingReq => Packet::PingReq,
        PacketType::PingResp => Packet::PingResp,
        PacketType::Disconnect => Packet::Disconnect(disconnect(&mut r, v)?),
        PacketType::Auth => Packet::Auth(auth(&mut r)?),
    };
    r.finish()?;
    buf.advance(size);
    Ok(Some(packet))
}

/// Checks the packet type and its fixed-header flags: everything the first
/// byte alone can tell.
fn check_first_byte(
    first: u8,
    version: Option<ProtocolVersion>,
) -> Result<PacketType, DecodeError> {
    let raw_type = first >> 4;
    let flags = first & 0x0F;
    let packet_type = PacketType::from_u8(raw_type).ok_or(DecodeError::ReservedPacketType {
        packet_type: raw_type,
    })?;
    match (version, packet_type) {
        (None, PacketType::Connect) => {}
        (None, _) => {
            return Err(DecodeError::ExpectedConnect {
                packet_type: raw_type,
            });
        }
        (Some(_), PacketType::Connect) => return Err(DecodeError::UnexpectedConnect),
        (Some(ProtocolVersion::V311), PacketType::Auth) => {
            return Err(DecodeError::ReservedPacketType {
                packet_type: raw_type,
            });
        }
        (Some(_), _) => {}
    }
    match packet_type.required_flags() {
        Some(required) if flags != required => Err(DecodeError::InvalidFlags {
            packet: packet_type,
            flags,
        }),
        Some(_) => Ok(packet_type),
        None => {
            let qos = (flags >> 1) & 0b11;
            if qos == 3 {
                return Err(DecodeError::InvalidQoS {
                    packet: PacketType::Publish,
                });
            }
            if qos == 0 && flags & 0b1000 != 0 {
                return Err(DecodeError::DupWithQoS0);
            }
            Ok(packet_type)
        }
    }
}

fn packet_id(r: &mut Reader<'_>) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::ZeroPacketId { packet: r.packet() }),
        id => Ok(id),
    }
}

fn reason_code(r: &mut Reader<'_>) -> Result<ReasonCode, DecodeError> {
    let packet = r.packet();
    let code = r.u8()?;
    ReasonCode::from_u8(code)
        .filter(|reason| reason.is_allowed_in(packet))
        .ok_or(DecodeError::InvalidReasonCode { packet, code })
}

fn connect(r: &mut Reader<'_>) -> Result<Connect, DecodeError> {
    let name = r.binary()?;
    let level = r.u8()?;
    let protocol = match (name, ProtocolVersion::from_level(level)) {
        (b"MQTT", Some(version)) => version,
        (b"MQTT" | b"MQIsdp", _) => return Err(DecodeError::UnsupportedProtocolVersion { level }),
        _ => {
            let shown = name.get(..32).unwrap_or(name);
            return Err(DecodeError::UnknownProtocolName {
                name: String::from_utf8_lossy(shown).into_owned(),
            });
        }
    };
    let flags = r.u8()?;
    if flags & 0b0000_0001 != 0 {
        return Err(DecodeError::ReservedConnectFlag);
    }
    let clean_start = flags & 0b0000_0010 != 0;
    let will_flag = flags & 0b0000_0100 != 0;
    let will_qos = (flags >> 3) & 0b11;
    let will_retain = flags & 0b0010_0000 != 0;
    let password_flag = flags & 0b0100_0000 != 0;
    let username_flag = flags & 0b1000_0000 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(DecodeError::InvalidWillFlags);
    }
    let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::InvalidQoS {
        packet: PacketType::Connect,
    })?;
    if protocol == ProtocolVersion::V311 && password_flag && !username_flag {
        return Err(DecodeError::PasswordWithoutUsername);
    }
    let keep_alive = r.u16()?;
    let properties = match protocol {
        ProtocolVersion::V5 => {
            let properties = properties::read(r, Context::Connect)?.into_connect();
            if properties.authentication_data.is_some()
                && properties.authentication_method.is_none()
            {
                return Err(DecodeError::MissingAuthenticationMethod {
                    packet: PacketType::Connect,
                });
            }
            properties
        }
        ProtocolVersion::V311 => Default::default(),
    };
    let client_id = r.string()?;
    let will = if will_flag {
        let properties = match protocol {
            ProtocolVersion::V5 => properties::read(r, Context::Will)?.into_will(),
            ProtocolVersion::V311 => Default::default(),
        };
        let topic = r.string()?;
        validate_topic_name(&topic).map_err(|error| DecodeError::InvalidTopicName {
            packet: PacketType::Connect,
            error,
        })?;
        let payload = Bytes::copy_from_slice(r.binary()?);
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(r.string()?)
    } else {
        None
    };
    let password = if password_flag {
        Some(Bytes::copy_from_slice(r.binary()?))
    } else {
        None
    };
    Ok(Connect {
        protocol,
        clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

fn connack(r: &mut Reader<'_>, version: ProtocolVersion) -> Result<ConnAck, DecodeError> {
    let flags = r.u8()?;
    if flags & 0b1111_1110 != 0 {
        return Err(DecodeError::ReservedConnAckFlags);
    }
    let session_present = flags & 1 != 0;
    let (reason_code, properties) = match version {
        ProtocolVersion::V311 => {
            let code = r.u8()?;
            let reason =
                ReasonCode::from_v311_connack(code).ok_or(DecodeError::InvalidReasonCode {
                    packet: PacketType::ConnAck,
                    code,
                })?;
            (reason, Default::default())
        }
        ProtocolVersion::V5 => {
            let reason = reason_code(r)?;
            (
                reason,
                properties::read(r, Context::ConnAck)?.into_connack(),
            )
        }
    };
    if session_present && reason_code.is_error() {
        return Err(DecodeError::SessionPresentWithError);
    }
    Ok(ConnAck {
        session_present,
        reason_code,
        properties,
    })
}

/// Reads a PUBLISH up to (not including) its payload, which the caller takes
/// from the reader's position.
fn publish(
    r: &mut Reader<'_>,
    flags: u8,
    version: ProtocolVersion,
) -> Result<Publish, DecodeError> {
    let dup = flags & 0b1000 != 0;
    let qos = QoS::from_u8((flags >> 1) & 0b11).ok_or(DecodeError::InvalidQoS {
        packet: PacketType::Publish,
    })?;
    let retain = flags & 0b0001 != 0;
    let topic = r.string()?;
    let packet_id = match qos {
        QoS::AtMostOnce => None,
        QoS::AtLeastOnce | QoS::ExactlyOnce => Some(packet_id(r)?),
    };
    let properties = match version {
        ProtocolVersion::V5 => properties::read(r, Context::Publish)?.into_publish(),
        ProtocolVersion::V311 => Default::default(),
    };
    if topic.is_empty() && version == ProtocolVersion::V5 {
        if properties.topic_alias.is_none() {
            return Err(DecodeError::MissingTopic);
        }
    } else {
        validate_topic_name(&topic).map_err(|error| DecodeError::InvalidTopicName {
            packet: PacketType::Publish,
            error,
        })?;
    }
    Ok(Publish {
        dup,
        qos,
        retain,
        topic,
        packet_id,
        payload: Bytes::new(),
        properties,
    })
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP share one layout. In 5.0 the reason
/// code and the property length may each be omitted (§3.4.2.1).
fn publish_response(
    r: &mut Reader<'_>,
    version: ProtocolVersion,
) -> Result<(u16, ReasonCode, AckProperties), DecodeError> {
    let id = packet_id(r)?;
    if version == ProtocolVersion::V311 || r.is_empty() {
        return Ok((id, ReasonCode::Success, AckProperties::default()));
    }
    let reason = reason_code(r)?;
    let properties = if r.is_empty() {
        AckProperties::default()
    } else {
        properties::read(r, Context::Ack(r.packet()))?.into_ack()
    };
    Ok((id, reason, properties))
}

/// Checks a SUBSCRIBE or UNSUBSCRIBE topic filter, and returns whether it is
/// a shared subscription (5.0 only; 3.1.1 has no shared subscriptions).
fn check_filter(
    filter: &str,
    packet: PacketType,
    version: ProtocolVersion,
) -> Result<bool, DecodeError> {
    let invalid = |error| DecodeError::InvalidTopicFilter { packet, error };
    validate_topic_filter(filter).map_err(invalid)?;
    match version {
        ProtocolVersion::V5 => Ok(parse_shared(filter).map_err(invalid)?.is_some()),
        ProtocolVersion::V311 => Ok(false),
    }
}

fn subscribe(r: &mut Reader<'_>, version: ProtocolVersion) -> Result<Subscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = match version {
        ProtocolVersion::V5 => properties::read(r, Context::Subscribe)?.into_subscribe(),
        ProtocolVersion::V311 => Default::default(),
    };
    let mut subscriptions = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        let byte = r.u8()?;
        let options = match version {
            ProtocolVersion::V311 => {
                if byte & 0b1111_1100 != 0 {
                    return Err(DecodeError::ReservedSubscriptionOptions);
                }
                let qos = QoS::from_u8(byte).ok_or(DecodeError::InvalidQoS {
                    packet: PacketType::Subscribe,
                })?;
                SubscriptionOptions::with_qos(qos)
            }
            ProtocolVersion::V5 => {
                if byte & 0b1100_0000 != 0 {
                    return Err(DecodeError::ReservedSubscriptionOptions);
                }
                SubscriptionOptions {
                    qos: QoS::from_u8(byte & 0b11).ok_or(DecodeError::InvalidSubscriptionQoS)?,
                    no_local: byte & 0b0100 != 0,
                    retain_as_published: byte & 0b1000 != 0,
                    retain_handling: RetainHandling::from_u8((byte >> 4) & 0b11)
                        .ok_or(DecodeError::InvalidRetainHandling)?,
                }
            }
        };
        let shared = check_filter(&filter, PacketType::Subscribe, version)?;
        if shared && options.no_local {
            return Err(DecodeError::NoLocalOnSharedSubscription);
        }
        subscriptions.push(Subscription { filter, options });
    }
    if subscriptions.is_empty() {
        return Err(DecodeError::EmptyPayload {
            packet: PacketType::Subscribe,
        });
    }
    Ok(Subscribe {
        packet_id,
        properties,
        subscriptions,
    })
}

fn suback(r: &mut Reader<'_>, version: ProtocolVersion) -> Result<SubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = match version {
        ProtocolVersion::V5 => properties::read(r, Context::Ack(PacketType::SubAck))?.into_ack(),
        ProtocolVersion::V311 => Default::default(),
    };
    let mut reason_codes = Vec::new();
    while !r.is_empty() {
        let reason = match version {
            ProtocolVersion::V5 => reason_code(r)?,
            ProtocolVersion::V311 => match r.u8()? {
                0x00 => ReasonCode::GRANTED_QOS_0,
                0x01 => ReasonCode::GrantedQoS1,
                0x02 => ReasonCode::GrantedQoS2,
                0x80 => ReasonCode::UnspecifiedError,
                code => {
                    return Err(DecodeError::InvalidReasonCode {
                        packet: PacketType::SubAck,
                        code,
                    });
                }
            },
        };
        reason_codes.push(reason);
    }
    if reason_codes.is_empty() {
        return Err(DecodeError::EmptyPayload {
            packet: PacketType::SubAck,
        });
    }
    Ok(SubAck {
        packet_id,
        properties,
        reason_codes,
    })
}

fn unsubscribe(r: &mut Reader<'_>, version: ProtocolVersion) -> Result<Unsubscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let properties = match version {
        ProtocolVersion::V5 => properties::read(r, Context::Unsubscribe)?.into_unsubscribe(),
        ProtocolVersion::V311 => Default::default(),
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        check_filter(&filter, PacketType::Unsubscribe, version)?;
        filters.push(filter);
    }
    if filters.is_empty() {
        return Err(DecodeError::EmptyPayload {
            packet: PacketType::Unsubscribe,
        });
    }
    Ok(Unsubscribe {
        packet_id,
        properties,
        filters,
    })
}

fn unsuback(r: &mut Reader<'_>, version: ProtocolVersion) -> Result<UnsubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    if version == ProtocolVersion::V311 {
        return Ok(UnsubAck {
            packet_id,
            properties: AckProperties::default(),
            reason_codes: Vec::new(),
        });
    }
    let properties = properties::read(r, Context::Ack(PacketType::UnsubAck))?.into_ack();
    let mut reason_codes = Vec::new();
    while !r.is_empty() {
        reason_codes.push(reason_code(r)?);
    }
    if reason_codes.is_empty() {
        return Err(DecodeError::EmptyPayload {
            packet: PacketType::UnsubAck,
        });
    }
    Ok(UnsubAck {
        packet_id,
        properties,
        reason_codes,
    })
}

fn disconnect(r: &mut Reader<'_>, version: ProtocolVersion) -> Result<Disconnect, DecodeError> {
    if version == ProtocolVersion::V311 || r.is_empty() {
        return Ok(Disconnect::default());
    }
    let reason_code = reason_code(r)?;
    let properties = if r.is_empty() {
        Default::default()
    } else {
        properties::read(r, Context::Disconnect)?.into_disconnect()
    };
    Ok(Disconnect {
        reason_code,
        properties,
    })
}

fn auth(r: &mut Reader<'_>) -> Result<Auth, DecodeError> {
    if r.is_empty() {
        return Ok(Auth::default());
    }
    let reason_code = reason_code(r)?;
    let properties = if r.is_empty() {
        Default::default()
    } else {
        properties::read(r, Context::Auth)?.into_auth()
    };
    let bare_success = reason_code == ReasonCode::Success && properties == Default::default();
    if properties.authentication_method.is_none() && !bare_success {
        return Err(DecodeError::MissingAuthenticationMethod {
            packet: PacketType::Auth,
        });
    }
    Ok(Auth {
        reason_code,
        properties,
    })
}
