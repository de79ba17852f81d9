//! Property tests: arbitrary packets of each version survive encode and
//! decode unchanged; every strict prefix of a packet is "need more bytes"
//! and consumes nothing; arbitrary and mutated bytes never panic, and
//! whatever decodes re-encodes to something that decodes to the same packet.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use proptest::sample::select;
use tributary_mqtt_codec::topic::{matches, validate_topic_filter, validate_topic_name};
use tributary_mqtt_codec::{
    AckProperties, Auth, AuthProperties, ConnAck, ConnAckProperties, Connect, ConnectProperties,
    DecodeError, Disconnect, DisconnectProperties, Packet, PacketType, PayloadFormat,
    ProtocolVersion, PubAck, PubComp, PubRec, PubRel, Publish, PublishProperties, QoS, ReasonCode,
    RetainHandling, SubAck, Subscribe, SubscribeProperties, Subscription, SubscriptionOptions,
    UnsubAck, Unsubscribe, UnsubscribeProperties, Will, WillProperties, decode, encode,
};

use ProtocolVersion::{V5, V311};

const MAX: usize = 1 << 20;

// ---- strategies ------------------------------------------------------------

/// Any text without U+0000, including multi-byte characters.
fn text() -> impl Strategy<Value = String> {
    "[^\\x00]{0,6}"
}

fn topic_name() -> impl Strategy<Value = String> {
    "[^\\x00+#]{1,10}"
}

fn plain_filter() -> impl Strategy<Value = String> {
    let level = prop_oneof![Just("+".to_owned()), "[^\\x00+#/]{0,4}"];
    (prop::collection::vec(level, 1..4), any::<bool>()).prop_map(|(levels, hash)| {
        let mut filter = levels.join("/");
        if hash {
            filter.push_str("/#");
        }
        if filter.is_empty() {
            "#".to_owned()
        } else {
            filter
        }
    })
}

fn topic_filter(version: ProtocolVersion) -> BoxedStrategy<String> {
    match version {
        V311 => plain_filter().boxed(),
        V5 => prop_oneof![
            3 => plain_filter(),
            1 => ("[a-z0-9]{1,4}", plain_filter()).prop_map(|(g, f)| format!("$share/{g}/{f}")),
        ]
        .boxed(),
    }
}

fn bytes() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..12).prop_map(Bytes::from)
}

fn qos() -> impl Strategy<Value = QoS> {
    select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

fn packet_id() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

fn nz16() -> impl Strategy<Value = NonZeroU16> {
    (1..=u16::MAX).prop_map(|v| NonZeroU16::new(v).expect("non-zero"))
}

fn nz32() -> impl Strategy<Value = NonZeroU32> {
    (1..=u32::MAX).prop_map(|v| NonZeroU32::new(v).expect("non-zero"))
}

fn subscription_id() -> impl Strategy<Value = NonZeroU32> {
    (1..=268_435_455u32).prop_map(|v| NonZeroU32::new(v).expect("non-zero"))
}

fn user_properties() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((text(), text()), 0..3)
}

fn payload_format() -> impl Strategy<Value = Option<PayloadFormat>> {
    prop::option::of(select(vec![
        PayloadFormat::Unspecified,
        PayloadFormat::Utf8,
    ]))
}

fn reasons(packet: PacketType) -> Vec<ReasonCode> {
    (0..=u8::MAX)
        .filter_map(ReasonCode::from_u8)
        .filter(|code| code.is_allowed_in(packet))
        .collect()
}

fn connect_properties() -> impl Strategy<Value = ConnectProperties> {
    (
        prop::option::of(any::<u32>()),
        prop::option::of(nz16()),
        prop::option::of(nz32()),
        prop::option::of(any::<u16>()),
        prop::option::of(any::<bool>()),
        prop::option::of(any::<bool>()),
        user_properties(),
        prop::option::of((text(), prop::option::of(bytes()))),
    )
        .prop_map(|(sei, rm, mps, tam, rri, rpi, user_properties, auth)| {
            let (authentication_method, authentication_data) = match auth {
                Some((method, data)) => (Some(method), data),
                None => (None, None),
            };
            ConnectProperties {
                session_expiry_interval: sei,
                receive_maximum: rm,
                maximum_packet_size: mps,
                topic_alias_maximum: tam,
                request_response_information: rri,
                request_problem_information: rpi,
                user_properties,
                authentication_method,
                authentication_data,
            }
        })
}

fn will_properties() -> impl Strategy<Value = WillProperties> {
    (
        prop::option::of(any::<u32>()),
        payload_format(),
        prop::option::of(any::<u32>()),
        prop::option::of(text()),
        prop::option::of(topic_name()),
        prop::option::of(bytes()),
        user_properties(),
    )
        .prop_map(
            |(wdi, pfi, mei, ct, rt, cd, user_properties)| WillProperties {
                will_delay_interval: wdi,
                payload_format_indicator: pfi,
                message_expiry_interval: mei,
                content_type: ct,
                response_topic: rt,
                correlation_data: cd,
                user_properties,
            },
        )
}

fn connect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let will = (
        topic_name(),
        bytes(),
        qos(),
        any::<bool>(),
        will_properties(),
    )
        .prop_map(move |(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties: if version == V5 {
                properties
            } else {
                WillProperties::default()
            },
        });
    (
        any::<bool>(),
        any::<u16>(),
        text(),
        prop::option::of(will),
        prop::option::of(text()),
        prop::option::of(bytes()),
        connect_properties(),
    )
        .prop_map(
            move |(
                clean_start,
                keep_alive,
                client_id,
                will,
                mut username,
                password,
                properties,
            )| {
                if version == V311 && password.is_some() && username.is_none() {
                    username = Some("user".into());
                }
                Packet::from(Connect {
                    protocol: version,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties: if version == V5 {
                        properties
                    } else {
                        ConnectProperties::default()
                    },
                })
            },
        )
}

fn connack_properties() -> impl Strategy<Value = ConnAckProperties> {
    let limits = (
        prop::option::of(any::<u32>()),
        prop::option::of(nz16()),
        prop::option::of(select(vec![QoS::AtMostOnce, QoS::AtLeastOnce])),
        prop::option::of(any::<bool>()),
        prop::option::of(nz32()),
        prop::option::of(any::<u16>()),
        prop::option::of(any::<u16>()),
    );
    let features = (
        prop::option::of(any::<bool>()),
        prop::option::of(any::<bool>()),
        prop::option::of(any::<bool>()),
    );
    let texts = (
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(bytes()),
        user_properties(),
    );
    (limits, features, texts).prop_map(
        |((sei, rm, mq, ra, mps, tam, ska), (wsa, sia, ssa), (aci, rs, ri, sr, am, ad, up))| {
            ConnAckProperties {
                session_expiry_interval: sei,
                receive_maximum: rm,
                maximum_qos: mq,
                retain_available: ra,
                maximum_packet_size: mps,
                assigned_client_identifier: aci,
                topic_alias_maximum: tam,
                reason_string: rs,
                user_properties: up,
                wildcard_subscription_available: wsa,
                subscription_identifiers_available: sia,
                shared_subscription_available: ssa,
                server_keep_alive: ska,
                response_information: ri,
                server_reference: sr,
                authentication_method: am,
                authentication_data: ad,
            }
        },
    )
}

fn connack(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let codes = match version {
        V5 => reasons(PacketType::ConnAck),
        V311 => (0..=5).filter_map(ReasonCode::from_v311_connack).collect(),
    };
    (any::<bool>(), select(codes), connack_properties())
        .prop_map(move |(session_present, reason_code, properties)| {
            Packet::from(ConnAck {
                session_present: session_present && !reason_code.is_error(),
                reason_code,
                properties: if version == V5 {
                    properties
                } else {
                    ConnAckProperties::default()
                },
            })
        })
        .boxed()
}

fn publish_properties() -> impl Strategy<Value = PublishProperties> {
    (
        payload_format(),
        prop::option::of(any::<u32>()),
        prop::option::of(nz16()),
        prop::option::of(topic_name()),
        prop::option::of(bytes()),
        user_properties(),
        prop::collection::vec(subscription_id(), 0..3),
        prop::option::of(text()),
    )
        .prop_map(|(pfi, mei, ta, rt, cd, up, ids, ct)| PublishProperties {
            payload_format_indicator: pfi,
            message_expiry_interval: mei,
            topic_alias: ta,
            response_topic: rt,
            correlation_data: cd,
            user_properties: up,
            subscription_identifiers: ids,
            content_type: ct,
        })
}

fn publish(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let topic = match version {
        V311 => topic_name().boxed(),
        V5 => prop_oneof![4 => topic_name(), 1 => Just(String::new())].boxed(),
    };
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic,
        packet_id(),
        prop::collection::vec(any::<u8>(), 0..64),
        publish_properties(),
    )
        .prop_map(
            move |(dup, qos, retain, topic, id, payload, mut properties)| {
                if version == V311 {
                    properties = PublishProperties::default();
                } else if topic.is_empty() && properties.topic_alias.is_none() {
                    properties.topic_alias = NonZeroU16::new(1);
                }
                let at_most_once = qos == QoS::AtMostOnce;
                Packet::Publish(Publish {
                    dup: dup && !at_most_once,
                    qos,
                    retain,
                    topic,
                    packet_id: (!at_most_once).then_some(id),
                    payload: Bytes::from(payload),
                    properties,
                })
            },
        )
}

fn ack_properties(version: ProtocolVersion) -> BoxedStrategy<AckProperties> {
    match version {
        V311 => Just(AckProperties::default()).boxed(),
        V5 => (prop::option::of(text()), user_properties())
            .prop_map(|(reason_string, user_properties)| AckProperties {
                reason_string,
                user_properties,
            })
            .boxed(),
    }
}

fn publish_response(version: ProtocolVersion, packet: PacketType) -> BoxedStrategy<Packet> {
    let codes = match version {
        V5 => reasons(packet),
        V311 => vec![ReasonCode::Success],
    };
    (packet_id(), select(codes), ack_properties(version))
        .prop_map(move |(packet_id, reason_code, properties)| match packet {
            PacketType::PubAck => PubAck {
                packet_id,
                reason_code,
                properties,
            }
            .into(),
            PacketType::PubRec => PubRec {
                packet_id,
                reason_code,
                properties,
            }
            .into(),
            PacketType::PubRel => PubRel {
                packet_id,
                reason_code,
                properties,
            }
            .into(),
            _ => PubComp {
                packet_id,
                reason_code,
                properties,
            }
            .into(),
        })
        .boxed()
}

fn subscription(version: ProtocolVersion) -> impl Strategy<Value = Subscription> {
    let retain_handling = select(vec![
        RetainHandling::SendAtSubscribe,
        RetainHandling::SendAtNewSubscribe,
        RetainHandling::DoNotSend,
    ]);
    (
        topic_filter(version),
        qos(),
        any::<bool>(),
        any::<bool>(),
        retain_handling,
    )
        .prop_map(move |(filter, qos, no_local, rap, rh)| {
            let options = match version {
                V311 => SubscriptionOptions::with_qos(qos),
                V5 => SubscriptionOptions {
                    qos,
                    no_local: no_local && !filter.starts_with("$share/"),
                    retain_as_published: rap,
                    retain_handling: rh,
                },
            };
            Subscription { filter, options }
        })
}

fn subscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        prop::option::of(subscription_id()),
        user_properties(),
        prop::collection::vec(subscription(version), 1..4),
    )
        .prop_map(move |(packet_id, id, user_properties, subscriptions)| {
            let properties = match version {
                V5 => SubscribeProperties {
                    subscription_identifier: id,
                    user_properties,
                },
                V311 => SubscribeProperties::default(),
            };
            Subscribe {
                packet_id,
                properties,
                subscriptions,
            }
            .into()
        })
}

fn suback(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = match version {
        V5 => reasons(PacketType::SubAck),
        V311 => vec![
            ReasonCode::GRANTED_QOS_0,
            ReasonCode::GrantedQoS1,
            ReasonCode::GrantedQoS2,
            ReasonCode::UnspecifiedError,
        ],
    };
    (
        packet_id(),
        ack_properties(version),
        prop::collection::vec(select(codes), 1..5),
    )
        .prop_map(|(packet_id, properties, reason_codes)| {
            SubAck {
                packet_id,
                properties,
                reason_codes,
            }
            .into()
        })
}

fn unsubscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        user_properties(),
        prop::collection::vec(topic_filter(version), 1..4),
    )
        .prop_map(move |(packet_id, user_properties, filters)| {
            Unsubscribe {
                packet_id,
                properties: match version {
                    V5 => UnsubscribeProperties { user_properties },
                    V311 => UnsubscribeProperties::default(),
                },
                filters,
            }
            .into()
        })
}

fn unsuback(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = match version {
        V5 => prop::collection::vec(select(reasons(PacketType::UnsubAck)), 1..5).boxed(),
        V311 => Just(Vec::new()).boxed(),
    };
    (packet_id(), ack_properties(version), codes).prop_map(
        |(packet_id, properties, reason_codes)| {
            UnsubAck {
                packet_id,
                properties,
                reason_codes,
            }
            .into()
        },
    )
}

fn disconnect(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    match version {
        V311 => Just(Packet::Disconnect(Disconnect::default())).boxed(),
        V5 => (
            select(reasons(PacketType::Disconnect)),
            prop::option::of(any::<u32>()),
            prop::option::of(text()),
            user_properties(),
            prop::option::of(text()),
        )
            .prop_map(|(reason_code, sei, rs, up, sr)| {
                Disconnect {
                    reason_code,
                    properties: DisconnectProperties {
                        session_expiry_interval: sei,
                        reason_string: rs,
                        user_properties: up,
                        server_reference: sr,
                    },
                }
                .into()
            })
            .boxed(),
    }
}

fn auth() -> impl Strategy<Value = Packet> {
    prop_oneof![
        Just(Packet::Auth(Auth::default())),
        (
            select(reasons(PacketType::Auth)),
            text(),
            prop::option::of(bytes()),
            prop::option::of(text()),
            user_properties(),
        )
            .prop_map(|(reason_code, method, data, rs, up)| {
                Auth {
                    reason_code,
                    properties: AuthProperties {
                        authentication_method: Some(method),
                        authentication_data: data,
                        reason_string: rs,
                        user_properties: up,
                    },
                }
                .into()
            }),
    ]
}

fn packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let common = prop_oneof![
        connect(version),
        connack(version),
        publish(version),
        publish_response(version, PacketType::PubAck),
        publish_response(version, PacketType::PubRec),
        publish_response(version, PacketType::PubRel),
        publish_response(version, PacketType::PubComp),
        subscribe(version),
        suback(version),
        unsubscribe(version),
        unsuback(version),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect(version),
    ];
    match version {
        V311 => common.boxed(),
        V5 => prop_oneof![14 => common, 1 => auth()].boxed(),
    }
}

fn version() -> impl Strategy<Value = ProtocolVersion> {
    select(vec![V311, V5])
}

fn versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    version().prop_flat_map(|v| packet(v).prop_map(move |p| (v, p)))
}

// ---- helpers ---------------------------------------------------------------

/// The `version` argument a decoder has for this packet: `None` for CONNECT.
fn state_for(packet: &Packet, version: ProtocolVersion) -> Option<ProtocolVersion> {
    match packet {
        Packet::Connect(_) => None,
        _ => Some(version),
    }
}

/// For bytes that decoded to `packet`: re-encoding succeeds, and decoding
/// the result gives `packet` again.
fn assert_stable(packet: &Packet, version: ProtocolVersion) -> Result<(), TestCaseError> {
    let version = match packet {
        Packet::Connect(c) => c.protocol,
        _ => version,
    };
    let mut buf = BytesMut::new();
    let encoded = encode(packet, version, &mut buf);
    prop_assert!(
        encoded.is_ok(),
        "re-encoding {packet:?} failed: {encoded:?}"
    );
    let again = decode(&mut buf, state_for(packet, version), MAX);
    prop_assert_eq!(again, Ok(Some(packet.clone())));
    prop_assert!(buf.is_empty());
    Ok(())
}

/// Decodes `bytes` as a connection in `state` would, checking the decoder's
/// contract whatever the outcome.
fn decode_any(bytes: &[u8], state: Option<ProtocolVersion>) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::from(bytes);
    match decode(&mut buf, state, MAX) {
        Ok(Some(packet)) => {
            prop_assert!(buf.len() < bytes.len(), "a packet consumes bytes");
            assert_stable(&packet, state.unwrap_or(V5))?;
        }
        Ok(None) | Err(_) => prop_assert_eq!(&buf[..], bytes, "nothing consumed"),
    }
    Ok(())
}

// ---- properties ------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn decode_of_encode_is_identity((version, packet) in versioned_packet()) {
        let mut buf = BytesMut::new();
        encode(&packet, version, &mut buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(packet.encoded_len(version), Ok(buf.len()));
        let decoded = decode(&mut buf, state_for(&packet, version), MAX);
        prop_assert_eq!(decoded, Ok(Some(packet)));
        prop_assert!(buf.is_empty(), "exactly one packet consumed");
    }

    #[test]
    fn every_prefix_needs_more_bytes_and_consumes_nothing(
        (version, packet) in versioned_packet()
    ) {
        let mut full = BytesMut::new();
        encode(&packet, version, &mut full).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let state = state_for(&packet, version);
        for len in 0..full.len() {
            let mut prefix = BytesMut::from(&full[..len]);
            prop_assert_eq!(decode(&mut prefix, state, MAX), Ok(None), "prefix of {} bytes", len);
            prop_assert_eq!(&prefix[..], &full[..len]);
        }
    }

    #[test]
    fn the_size_limit_is_exact((version, packet) in versioned_packet()) {
        let mut full = BytesMut::new();
        encode(&packet, version, &mut full).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let size = full.len();
        let state = state_for(&packet, version);
        let mut buf = full.clone();
        prop_assert_eq!(
            decode(&mut buf, state, size - 1),
            Err(DecodeError::PacketTooLarge { size, max: size - 1 })
        );
        prop_assert_eq!(decode(&mut buf, state, size), Ok(Some(packet)));
    }

    #[test]
    fn a_stream_of_packets_decodes_in_order(
        (version, packets) in version().prop_flat_map(|v| {
            (Just(v), prop::collection::vec(packet(v), 1..6))
        })
    ) {
        // CONNECT only ever comes first on a connection.
        let packets: Vec<Packet> =
            packets.into_iter().filter(|p| !matches!(p, Packet::Connect(_))).collect();
        let mut buf = BytesMut::new();
        for packet in &packets {
            encode(packet, version, &mut buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        for packet in packets {
            prop_assert_eq!(decode(&mut buf, Some(version), MAX), Ok(Some(packet)));
        }
        prop_assert_eq!(decode(&mut buf, Some(version), MAX), Ok(None));
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..96),
        state in prop::option::of(version()),
    ) {
        decode_any(&bytes, state)?;
    }

    #[test]
    fn arbitrary_bodies_behind_valid_headers_never_panic(
        first in select((1u8..=15).map(|t| t << 4 | if matches!(t, 6 | 8 | 10) { 2 } else { 0 })
            .chain([0x32, 0x35, 0x3B])
            .collect::<Vec<u8>>()),
        body in prop::collection::vec(any::<u8>(), 0..96),
        state in prop::option::of(version()),
    ) {
        // A valid fixed header in front of random bytes reaches the packet
        // parsers far more often than fully random input.
        let mut bytes = vec![first, u8::try_from(body.len()).expect("below 128")];
        bytes.extend(body);
        decode_any(&bytes, state)?;
    }

    #[test]
    fn mutated_packets_never_panic(
        (version, packet) in versioned_packet(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut buf = BytesMut::new();
        encode(&packet, version, &mut buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut bytes = buf.to_vec();
        for (at, value) in edits {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        decode_any(&bytes, state_for(&packet, version))?;
    }

    #[test]
    fn filters_match_the_topics_they_were_made_from(
        levels in prop::collection::vec("[^\\x00+#/$]{0,4}", 1..6),
        wild in prop::collection::vec(any::<bool>(), 6),
        hash_from in any::<prop::sample::Index>(),
    ) {
        let topic = levels.join("/");
        prop_assume!(validate_topic_name(&topic).is_ok());
        // Replacing any levels by '+' still matches.
        let plus: Vec<&str> = levels
            .iter()
            .zip(&wild)
            .map(|(level, &w)| if w { "+" } else { level.as_str() })
            .collect();
        let filter = plus.join("/");
        prop_assert!(validate_topic_filter(&filter).is_ok());
        prop_assert!(matches(&filter, &topic), "{} vs {}", filter, topic);
        // So does cutting the filter at any level and ending it with '#'.
        let keep = hash_from.index(plus.len() + 1);
        let mut hash = plus[..keep].to_vec();
        hash.push("#");
        let hash = hash.join("/");
        prop_assert!(matches(&hash, &topic), "{} vs {}", hash, topic);
        // One more level than the topic has never matches.
        let longer = format!("{filter}/+");
        prop_assert!(!matches(&longer, &topic), "{} vs {}", longer, topic);
        // A '$' topic is hidden from filters starting with a wildcard.
        let dollar = format!("$SYS/{topic}");
        prop_assert!(!matches("#", &dollar));
        let plus_first = format!("+/{filter}");
        prop_assert!(!matches(&plus_first, &dollar));
        let explicit = format!("$SYS/{filter}");
        prop_assert!(matches(&explicit, &dollar), "{} vs {}", explicit, dollar);
    }
}
