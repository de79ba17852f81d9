//! Every packet type in both versions: round trips through encode and
//! decode, byte vectors written by hand from the specifications' examples,
//! and the documented treatment of 5.0-only fields for 3.1.1 peers.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};
use tributary_mqtt_codec::{
    AckProperties, Auth, AuthProperties, ConnAck, ConnAckProperties, Connect, ConnectProperties,
    DecodeError, Disconnect, DisconnectProperties, EncodeError, Packet, PacketType, PayloadFormat,
    ProtocolVersion, PubAck, PubComp, PubRec, PubRel, Publish, PublishProperties, QoS, ReasonCode,
    RetainHandling, SubAck, Subscribe, SubscribeProperties, Subscription, SubscriptionOptions,
    UnsubAck, Unsubscribe, UnsubscribeProperties, Will, WillProperties, decode, encode,
};

use ProtocolVersion::{V5, V311};

const MAX: usize = 1 << 20;

fn encoded(packet: &Packet, version: ProtocolVersion) -> BytesMut {
    let mut buf = BytesMut::new();
    encode(packet, version, &mut buf).expect("encodes");
    assert_eq!(
        packet.encoded_len(version),
        Ok(buf.len()),
        "encoded_len agrees with the bytes"
    );
    buf
}

fn decoded(bytes: &[u8], version: ProtocolVersion) -> Packet {
    let mut buf = BytesMut::from(bytes);
    let connection = match bytes.first() {
        Some(first) if first >> 4 == 1 => None,
        _ => Some(version),
    };
    let packet = decode(&mut buf, connection, MAX)
        .expect("decodes")
        .expect("complete packet");
    assert!(buf.is_empty(), "the whole packet was consumed");
    packet
}

/// Encodes, decodes, and checks the packet came back unchanged.
fn round_trip(packet: impl Into<Packet>, version: ProtocolVersion) -> BytesMut {
    let packet = packet.into();
    let bytes = encoded(&packet, version);
    assert_eq!(decoded(&bytes, version), packet, "{version}");
    bytes
}

fn user_props() -> Vec<(String, String)> {
    vec![
        ("region".into(), "eu-west".into()),
        ("region".into(), "again, same name".into()),
    ]
}

fn full_connect(version: ProtocolVersion) -> Connect {
    Connect {
        protocol: version,
        clean_start: false,
        keep_alive: 60,
        client_id: "meter-42".into(),
        will: Some(Will {
            topic: "meters/42/status".into(),
            payload: Bytes::from_static(b"offline"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: match version {
                V5 => WillProperties {
                    will_delay_interval: Some(30),
                    payload_format_indicator: Some(PayloadFormat::Utf8),
                    message_expiry_interval: Some(3_600),
                    content_type: Some("text/plain".into()),
                    response_topic: Some("meters/42/reply".into()),
                    correlation_data: Some(Bytes::from_static(&[1, 2, 3])),
                    user_properties: user_props(),
                },
                V311 => WillProperties::default(),
            },
        }),
        username: Some("meter".into()),
        password: Some(Bytes::from_static(b"s3cret\0with-nul-is-fine-in-binary")),
        properties: match version {
            V5 => ConnectProperties {
                session_expiry_interval: Some(u32::MAX),
                receive_maximum: NonZeroU16::new(20),
                maximum_packet_size: NonZeroU32::new(65_536),
                topic_alias_maximum: Some(10),
                request_response_information: Some(true),
                request_problem_information: Some(false),
                user_properties: user_props(),
                authentication_method: Some("SCRAM-SHA-1".into()),
                authentication_data: Some(Bytes::from_static(b"client-first")),
            },
            V311 => ConnectProperties::default(),
        },
    }
}

#[test]
fn connect_round_trips_in_both_versions() {
    for version in [V311, V5] {
        round_trip(full_connect(version), version);
        round_trip(Connect::new(version, ""), version);
    }
    // 5.0 allows a password without a user name.
    let mut connect = Connect::new(V5, "c");
    connect.password = Some(Bytes::from_static(b"token"));
    round_trip(connect, V5);
}

#[test]
fn connect_v311_matches_a_hand_written_vector() {
    // Variable header as in the 3.1.1 example (figure 3.6): "MQTT", level 4,
    // flags 0xCE (user name, password, will QoS 1, will, clean session),
    // keep alive 10.
    let bytes = [
        0x10, 0x22, // CONNECT, remaining length 34
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xCE, 0x00, 0x0A, // variable header
        0x00, 0x02, b'c', b'1', // client identifier
        0x00, 0x03, b'a', b'/', b'w', // will topic
        0x00, 0x03, b'b', b'y', b'e', // will payload
        0x00, 0x04, b'u', b's', b'e', b'r', // user name
        0x00, 0x02, b'p', b'w', // password
    ];
    let expected = Connect {
        protocol: V311,
        clean_start: true,
        keep_alive: 10,
        client_id: "c1".into(),
        will: Some(Will {
            topic: "a/w".into(),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: WillProperties::default(),
        }),
        username: Some("user".into()),
        password: Some(Bytes::from_static(b"pw")),
        properties: ConnectProperties::default(),
    };
    assert_eq!(decoded(&bytes, V311), Packet::from(expected.clone()));
    assert_eq!(&encoded(&expected.into(), V311)[..], &bytes[..]);
}

#[test]
fn connect_v5_matches_a_hand_written_vector() {
    // Variable header as in the 5.0 example (figure 3-6): "MQTT", version 5,
    // flags 0xCE, keep alive 10, properties: Session Expiry Interval 10.
    let bytes = [
        0x10, 0x2E, // CONNECT, remaining length 46
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0xCE, 0x00, 0x0A, // variable header
        0x05, 0x11, 0x00, 0x00, 0x00, 0x0A, // properties: session expiry 10
        0x00, 0x02, b'c', b'1', // client identifier
        0x05, 0x18, 0x00, 0x00, 0x00, 0x3C, // will properties: will delay 60
        0x00, 0x03, b'a', b'/', b'w', // will topic
        0x00, 0x03, b'b', b'y', b'e', // will payload
        0x00, 0x04, b'u', b's', b'e', b'r', // user name
        0x00, 0x02, b'p', b'w', // password
    ];
    let expected = Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 10,
        client_id: "c1".into(),
        will: Some(Will {
            topic: "a/w".into(),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: WillProperties {
                will_delay_interval: Some(60),
                ..WillProperties::default()
            },
        }),
        username: Some("user".into()),
        password: Some(Bytes::from_static(b"pw")),
        properties: ConnectProperties {
            session_expiry_interval: Some(10),
            ..ConnectProperties::default()
        },
    };
    assert_eq!(decoded(&bytes, V5), Packet::from(expected.clone()));
    assert_eq!(&encoded(&expected.into(), V5)[..], &bytes[..]);
}

#[test]
fn connack_round_trips_in_both_versions() {
    let mut accepted = ConnAck::new(ReasonCode::Success);
    accepted.session_present = true;
    for version in [V311, V5] {
        round_trip(accepted.clone(), version);
        for code in 0..=5 {
            let reason = ReasonCode::from_v311_connack(code).expect("3.1.1 code");
            round_trip(ConnAck::new(reason), version);
        }
    }
    assert_eq!(
        &encoded(&accepted.clone().into(), V311)[..],
        [0x20, 0x02, 0x01, 0x00]
    );
    assert_eq!(
        &encoded(&accepted.into(), V5)[..],
        [0x20, 0x03, 0x01, 0x00, 0x00]
    );

    let full = ConnAck {
        session_present: false,
        reason_code: ReasonCode::Success,
        properties: ConnAckProperties {
            session_expiry_interval: Some(0),
            receive_maximum: NonZeroU16::new(100),
            maximum_qos: Some(QoS::AtLeastOnce),
            retain_available: Some(false),
            maximum_packet_size: NonZeroU32::new(1_048_576),
            assigned_client_identifier: Some("auto-7f3a".into()),
            topic_alias_maximum: Some(16),
            reason_string: Some("welcome".into()),
            user_properties: user_props(),
            wildcard_subscription_available: Some(true),
            subscription_identifiers_available: Some(false),
            shared_subscription_available: Some(true),
            server_keep_alive: Some(30),
            response_information: Some("replies/auto-7f3a".into()),
            server_reference: Some("[fe80::1]:1883".into()),
            authentication_method: Some("SCRAM-SHA-1".into()),
            authentication_data: Some(Bytes::from_static(b"server-final")),
        },
    };
    round_trip(full, V5);
    round_trip(ConnAck::new(ReasonCode::QuotaExceeded), V5);
}

#[test]
fn publish_round_trips_in_both_versions() {
    for version in [V311, V5] {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let mut publish = Publish::new("plant/7/temperature", Bytes::from_static(b"21.5"));
            publish.qos = qos;
            publish.retain = true;
            if qos != QoS::AtMostOnce {
                publish.packet_id = Some(65_535);
                publish.dup = true;
            }
            round_trip(publish, version);
        }
        round_trip(Publish::new("/", Bytes::new()), version);
    }
    let with_properties = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "requests/lamp".into(),
        packet_id: Some(7),
        payload: Bytes::from_static(b"{\"on\":true}"),
        properties: PublishProperties {
            payload_format_indicator: Some(PayloadFormat::Utf8),
            message_expiry_interval: Some(120),
            topic_alias: NonZeroU16::new(3),
            response_topic: Some("replies/lamp".into()),
            correlation_data: Some(Bytes::from_static(b"req-1")),
            user_properties: user_props(),
            subscription_identifiers: vec![
                NonZeroU32::new(1).expect("non-zero"),
                NonZeroU32::new(268_435_455).expect("non-zero"),
                NonZeroU32::new(1).expect("non-zero"),
            ],
            content_type: Some("application/json".into()),
        },
    };
    round_trip(with_properties, V5);
    // 5.0: an empty topic name stands for an established topic alias.
    let mut aliased = Publish::new("", Bytes::from_static(b"x"));
    aliased.properties.topic_alias = NonZeroU16::new(3);
    round_trip(aliased, V5);
}

#[test]
fn publish_matches_the_spec_example() {
    // Topic "a/b", packet identifier 10 (5.0 figure 3-9, 3.1.1 figure 3.11),
    // QoS 1, payload "hi".
    let v5 = [
        0x32, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, 0x00, b'h', b'i',
    ];
    let v311 = [
        0x32, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, b'h', b'i',
    ];
    let mut publish = Publish::new("a/b", Bytes::from_static(b"hi"));
    publish.qos = QoS::AtLeastOnce;
    publish.packet_id = Some(10);
    let packet = Packet::Publish(publish);
    assert_eq!(decoded(&v5, V5), packet);
    assert_eq!(decoded(&v311, V311), packet);
    assert_eq!(&encoded(&packet, V5)[..], v5);
    assert_eq!(&encoded(&packet, V311)[..], v311);
}

#[test]
fn publish_payload_shares_the_received_buffer() {
    let mut publish = Publish::new("bulk", Bytes::from(vec![7u8; 4_096]));
    publish.qos = QoS::AtLeastOnce;
    publish.packet_id = Some(1);
    let mut buf = encoded(&publish.clone().into(), V5);
    let start = buf.as_ptr() as usize;
    let end = start + buf.len();
    let Some(Packet::Publish(decoded)) = decode(&mut buf, Some(V5), MAX).expect("valid") else {
        panic!("expected PUBLISH");
    };
    let payload = decoded.payload.as_ptr() as usize;
    assert!((start..end).contains(&payload), "no copy of the payload");
    assert_eq!(decoded, publish);
}

#[test]
fn publish_responses_round_trip_in_both_versions() {
    for version in [V311, V5] {
        round_trip(PubAck::new(1), version);
        round_trip(PubRec::new(2), version);
        round_trip(PubRel::new(3), version);
        round_trip(PubComp::new(4), version);
    }
    let properties = AckProperties {
        reason_string: Some("quota".into()),
        user_properties: user_props(),
    };
    round_trip(
        PubAck {
            packet_id: 9,
            reason_code: ReasonCode::QuotaExceeded,
            properties: properties.clone(),
        },
        V5,
    );
    round_trip(
        PubRec {
            packet_id: 9,
            reason_code: ReasonCode::NoMatchingSubscribers,
            properties: AckProperties::default(),
        },
        V5,
    );
    round_trip(
        PubRel {
            packet_id: 9,
            reason_code: ReasonCode::PacketIdentifierNotFound,
            properties: properties.clone(),
        },
        V5,
    );
    round_trip(
        PubComp {
            packet_id: 9,
            reason_code: ReasonCode::Success,
            properties,
        },
        V5,
    );
    // The short forms: remaining length 2 for success without properties,
    // 3 for a reason code without properties.
    assert_eq!(
        &encoded(&PubRel::new(1).into(), V5)[..],
        [0x62, 0x02, 0x00, 0x01]
    );
    let not_found = PubComp {
        packet_id: 1,
        reason_code: ReasonCode::PacketIdentifierNotFound,
        properties: AckProperties::default(),
    };
    assert_eq!(
        &encoded(&not_found.into(), V5)[..],
        [0x70, 0x03, 0x00, 0x01, 0x92]
    );
    // A receiver accepts the long form of a plain success too.
    assert_eq!(
        decoded(&[0x40, 0x04, 0x00, 0x01, 0x00, 0x00], V5),
        Packet::PubAck(PubAck::new(1))
    );
}

#[test]
fn subscribe_round_trips_in_both_versions() {
    let plain = Subscribe {
        packet_id: 10,
        properties: SubscribeProperties::default(),
        subscriptions: vec![
            Subscription::new("a/b", QoS::AtLeastOnce),
            Subscription::new("c/d", QoS::ExactlyOnce),
        ],
    };
    // The payload example of both specifications (5.0 figure 3-21).
    let v311 = round_trip(plain.clone(), V311);
    assert_eq!(
        &v311[..],
        [
            0x82, 0x0E, 0x00, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x01, 0x00, 0x03, b'c', b'/',
            b'd', 0x02
        ]
    );
    let v5 = round_trip(plain, V5);
    assert_eq!(
        &v5[..],
        [
            0x82, 0x0F, 0x00, 0x0A, 0x00, 0x00, 0x03, b'a', b'/', b'b', 0x01, 0x00, 0x03, b'c',
            b'/', b'd', 0x02
        ]
    );
    let options = Subscribe {
        packet_id: 11,
        properties: SubscribeProperties {
            subscription_identifier: NonZeroU32::new(268_435_455),
            user_properties: user_props(),
        },
        subscriptions: vec![
            Subscription {
                filter: "sport/+/player1/#".into(),
                options: SubscriptionOptions {
                    qos: QoS::AtMostOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::DoNotSend,
                },
            },
            Subscription {
                filter: "$share/workers/jobs/#".into(),
                options: SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: RetainHandling::SendAtNewSubscribe,
                },
            },
        ],
    };
    round_trip(options, V5);
}

#[test]
fn suback_round_trips_in_both_versions() {
    let mut suback = SubAck {
        packet_id: 10,
        properties: AckProperties::default(),
        reason_codes: vec![
            ReasonCode::GRANTED_QOS_0,
            ReasonCode::GrantedQoS1,
            ReasonCode::GrantedQoS2,
            ReasonCode::UnspecifiedError,
        ],
    };
    let v311 = round_trip(suback.clone(), V311);
    assert_eq!(&v311[..], [0x90, 0x06, 0x00, 0x0A, 0x00, 0x01, 0x02, 0x80]);
    round_trip(suback.clone(), V5);
    suback.properties.reason_string = Some("no wildcards here".into());
    suback.reason_codes = vec![
        ReasonCode::WildcardSubscriptionsNotSupported,
        ReasonCode::SharedSubscriptionsNotSupported,
    ];
    round_trip(suback, V5);
}

#[test]
fn unsubscribe_and_unsuback_round_trip_in_both_versions() {
    let unsubscribe = Unsubscribe {
        packet_id: 10,
        properties: UnsubscribeProperties::default(),
        filters: vec!["a/b".into(), "c/d".into()],
    };
    // The payload example of both specifications (5.0 figure 3.30).
    let v311 = round_trip(unsubscribe.clone(), V311);
    assert_eq!(
        &v311[..],
        [
            0xA2, 0x0C, 0x00, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x03, b'c', b'/', b'd'
        ]
    );
    round_trip(unsubscribe, V5);
    round_trip(
        Unsubscribe {
            packet_id: 1,
            properties: UnsubscribeProperties {
                user_properties: user_props(),
            },
            filters: vec!["$share/g/x/+".into()],
        },
        V5,
    );

    let v311_ack = UnsubAck {
        packet_id: 10,
        properties: AckProperties::default(),
        reason_codes: Vec::new(),
    };
    assert_eq!(&round_trip(v311_ack, V311)[..], [0xB0, 0x02, 0x00, 0x0A]);
    round_trip(
        UnsubAck {
            packet_id: 10,
            properties: AckProperties {
                reason_string: Some("partly".into()),
                user_properties: Vec::new(),
            },
            reason_codes: vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted],
        },
        V5,
    );
}

#[test]
fn ping_disconnect_and_auth_round_trip() {
    for version in [V311, V5] {
        assert_eq!(&round_trip(Packet::PingReq, version)[..], [0xC0, 0x00]);
        assert_eq!(&round_trip(Packet::PingResp, version)[..], [0xD0, 0x00]);
        assert_eq!(
            &round_trip(Disconnect::default(), version)[..],
            [0xE0, 0x00]
        );
    }
    round_trip(Disconnect::new(ReasonCode::DisconnectWithWillMessage), V5);
    round_trip(
        Disconnect {
            reason_code: ReasonCode::UseAnotherServer,
            properties: DisconnectProperties {
                session_expiry_interval: Some(0),
                reason_string: Some("maintenance".into()),
                user_properties: user_props(),
                server_reference: Some("other.example:1883".into()),
            },
        },
        V5,
    );
    assert_eq!(&round_trip(Auth::default(), V5)[..], [0xF0, 0x00]);
    round_trip(
        Auth {
            reason_code: ReasonCode::ContinueAuthentication,
            properties: AuthProperties {
                authentication_method: Some("GS2-KRB5".into()),
                authentication_data: Some(Bytes::from_static(b"token")),
                reason_string: Some("step 2".into()),
                user_properties: user_props(),
            },
        },
        V5,
    );
}

#[test]
fn consecutive_packets_decode_in_order() {
    let mut buf = BytesMut::new();
    let packets: Vec<Packet> = vec![
        Connect::new(V311, "c").into(),
        Packet::PingReq,
        Publish::new("t", Bytes::from_static(b"1")).into(),
        Disconnect::default().into(),
    ];
    for packet in &packets {
        encode(packet, V311, &mut buf).expect("encodes");
    }
    let mut version = None;
    for expected in &packets {
        let packet = decode(&mut buf, version, MAX)
            .expect("valid")
            .expect("complete");
        if let Packet::Connect(connect) = &packet {
            version = Some(connect.protocol);
        }
        assert_eq!(&packet, expected);
    }
    assert_eq!(decode(&mut buf, version, MAX), Ok(None));
}

#[test]
fn v311_drops_what_it_cannot_carry_and_refuses_what_would_change_meaning() {
    // Dropped: properties, success details.
    let mut publish = Publish::new("t", Bytes::from_static(b"x"));
    publish.properties.message_expiry_interval = Some(5);
    publish.properties.user_properties = user_props();
    let bytes = encoded(&publish.into(), V311);
    assert_eq!(
        decoded(&bytes, V311),
        Packet::Publish(Publish::new("t", Bytes::from_static(b"x")))
    );
    let puback = PubAck {
        packet_id: 3,
        reason_code: ReasonCode::NoMatchingSubscribers,
        properties: AckProperties::default(),
    };
    assert_eq!(&encoded(&puback.into(), V311)[..], [0x40, 0x02, 0x00, 0x03]);
    let unsuback = UnsubAck {
        packet_id: 3,
        properties: AckProperties::default(),
        reason_codes: vec![ReasonCode::NoSubscriptionExisted],
    };
    assert_eq!(
        &encoded(&unsuback.into(), V311)[..],
        [0xB0, 0x02, 0x00, 0x03]
    );
    // Mapped: SUBACK failures and CONNACK reasons.
    let suback = SubAck {
        packet_id: 3,
        properties: AckProperties::default(),
        reason_codes: vec![ReasonCode::NotAuthorized],
    };
    assert_eq!(
        &encoded(&suback.into(), V311)[..],
        [0x90, 0x03, 0x00, 0x03, 0x80]
    );
    assert_eq!(
        &encoded(&ConnAck::new(ReasonCode::Banned).into(), V311)[..],
        [0x20, 0x02, 0x00, 0x05]
    );

    // Refused.
    let refused: Vec<(Packet, &str)> = vec![
        (
            PubAck {
                packet_id: 1,
                reason_code: ReasonCode::NotAuthorized,
                properties: AckProperties::default(),
            }
            .into(),
            "failure PUBACK",
        ),
        (
            UnsubAck {
                packet_id: 1,
                properties: AckProperties::default(),
                reason_codes: vec![ReasonCode::NotAuthorized],
            }
            .into(),
            "failure UNSUBACK",
        ),
        (
            Disconnect::new(ReasonCode::DisconnectWithWillMessage).into(),
            "DISCONNECT reason",
        ),
        (
            Auth {
                reason_code: ReasonCode::ReAuthenticate,
                properties: AuthProperties {
                    authentication_method: Some("m".into()),
                    ..AuthProperties::default()
                },
            }
            .into(),
            "AUTH",
        ),
        (
            Subscribe {
                packet_id: 1,
                properties: SubscribeProperties::default(),
                subscriptions: vec![Subscription {
                    filter: "a".into(),
                    options: SubscriptionOptions {
                        no_local: true,
                        ..SubscriptionOptions::default()
                    },
                }],
            }
            .into(),
            "no local",
        ),
        (
            ConnAck::new(ReasonCode::PacketTooLarge).into(),
            "CONNACK reason",
        ),
        (
            {
                let mut connect = Connect::new(V311, "c");
                connect.password = Some(Bytes::from_static(b"p"));
                connect.into()
            },
            "password without user name",
        ),
        (
            {
                let mut publish = Publish::new("", Bytes::new());
                publish.properties.topic_alias = NonZeroU16::new(1);
                publish.into()
            },
            "topic alias",
        ),
    ];
    for (packet, what) in refused {
        let mut buf = BytesMut::new();
        let result = encode(&packet, V311, &mut buf);
        assert!(
            matches!(result, Err(EncodeError::NotInV311 { .. })),
            "{what}: {result:?}"
        );
        assert!(buf.is_empty(), "{what}: nothing written on error");
    }
}

#[test]
fn encode_refuses_what_decode_would_refuse() {
    let cases: Vec<(Packet, ProtocolVersion, EncodeError)> = vec![
        (
            {
                let mut p = Publish::new("a/+", Bytes::new());
                p.qos = QoS::AtMostOnce;
                p.into()
            },
            V5,
            EncodeError::InvalidTopicName {
                packet: PacketType::Publish,
                error: tributary_mqtt_codec::topic::TopicError::WildcardInName,
            },
        ),
        (
            {
                let mut p = Publish::new("a", Bytes::new());
                p.qos = QoS::AtLeastOnce;
                p.into()
            },
            V5,
            EncodeError::InvalidPacketId {
                packet: PacketType::Publish,
            },
        ),
        (
            {
                let mut p = Publish::new("a", Bytes::new());
                p.dup = true;
                p.into()
            },
            V311,
            EncodeError::DupWithQoS0,
        ),
        (
            Publish::new("", Bytes::new()).into(),
            V5,
            EncodeError::MissingTopic,
        ),
        (
            PubAck::new(0).into(),
            V5,
            EncodeError::InvalidPacketId {
                packet: PacketType::PubAck,
            },
        ),
        (
            PubRel {
                packet_id: 1,
                reason_code: ReasonCode::NoMatchingSubscribers,
                properties: AckProperties::default(),
            }
            .into(),
            V5,
            EncodeError::ReasonCodeNotAllowed {
                packet: PacketType::PubRel,
                code: ReasonCode::NoMatchingSubscribers,
            },
        ),
        (
            Subscribe {
                packet_id: 1,
                properties: SubscribeProperties::default(),
                subscriptions: Vec::new(),
            }
            .into(),
            V5,
            EncodeError::EmptyPayload {
                packet: PacketType::Subscribe,
            },
        ),
        (
            Subscribe {
                packet_id: 1,
                properties: SubscribeProperties::default(),
                subscriptions: vec![Subscription {
                    filter: "$share/g/a".into(),
                    options: SubscriptionOptions {
                        no_local: true,
                        ..SubscriptionOptions::default()
                    },
                }],
            }
            .into(),
            V5,
            EncodeError::NoLocalOnSharedSubscription,
        ),
        (
            Unsubscribe {
                packet_id: 1,
                properties: UnsubscribeProperties::default(),
                filters: vec!["a/#/b".into()],
            }
            .into(),
            V311,
            EncodeError::InvalidTopicFilter {
                packet: PacketType::Unsubscribe,
                error: tributary_mqtt_codec::topic::TopicError::InvalidMultiLevelWildcard,
            },
        ),
        (
            {
                let mut c = ConnAck::new(ReasonCode::NotAuthorized);
                c.session_present = true;
                c.into()
            },
            V5,
            EncodeError::SessionPresentWithError,
        ),
        (
            {
                let mut c = ConnAck::new(ReasonCode::Success);
                c.properties.maximum_qos = Some(QoS::ExactlyOnce);
                c.into()
            },
            V5,
            EncodeError::InvalidProperty {
                property: tributary_mqtt_codec::PropertyId::MaximumQoS,
            },
        ),
        (
            {
                let mut c = Connect::new(V5, "c");
                c.properties.authentication_data = Some(Bytes::from_static(b"d"));
                c.into()
            },
            V5,
            EncodeError::MissingAuthenticationMethod {
                packet: PacketType::Connect,
            },
        ),
        (
            Connect::new(V311, "c").into(),
            V5,
            EncodeError::VersionMismatch {
                packet: V311,
                requested: V5,
            },
        ),
        (
            Connect::new(V5, "nul\0inside").into(),
            V5,
            EncodeError::NullCharacter {
                field: "client identifier",
            },
        ),
        (
            Connect::new(V5, "x".repeat(65_536)).into(),
            V5,
            EncodeError::TooLong {
                field: "client identifier",
                len: 65_536,
            },
        ),
        (
            {
                let mut p = Publish::new("t", Bytes::new());
                p.properties.subscription_identifiers =
                    vec![NonZeroU32::new(268_435_456).expect("non-zero")];
                p.into()
            },
            V5,
            EncodeError::InvalidProperty {
                property: tributary_mqtt_codec::PropertyId::SubscriptionIdentifier,
            },
        ),
        (
            Auth {
                reason_code: ReasonCode::ContinueAuthentication,
                properties: AuthProperties::default(),
            }
            .into(),
            V5,
            EncodeError::MissingAuthenticationMethod {
                packet: PacketType::Auth,
            },
        ),
    ];
    for (packet, version, expected) in cases {
        let mut buf = BytesMut::from(&b"kept"[..]);
        assert_eq!(encode(&packet, version, &mut buf), Err(expected.clone()));
        assert_eq!(&buf[..], b"kept", "{expected}: the buffer is untouched");
        assert_eq!(packet.encoded_len(version), Err(expected));
    }
}

#[test]
fn a_packet_too_large_for_mqtt_is_refused() {
    // 268,435,455 bytes of remaining length is the most MQTT can express.
    let payload = Bytes::from(vec![0u8; tributary_mqtt_codec::MAX_REMAINING_LENGTH]);
    let packet = Packet::Publish(Publish::new("t", payload));
    assert_eq!(
        packet.encoded_len(V311),
        Err(EncodeError::PacketTooLarge {
            packet: PacketType::Publish,
            size: tributary_mqtt_codec::MAX_REMAINING_LENGTH + 3,
        })
    );
    let payload = Bytes::from(vec![0u8; tributary_mqtt_codec::MAX_REMAINING_LENGTH - 3]);
    let packet = Packet::Publish(Publish::new("t", payload));
    assert_eq!(
        packet.encoded_len(V311),
        Ok(tributary_mqtt_codec::MAX_PACKET_SIZE)
    );
}

#[test]
fn decode_errors_map_to_the_reason_codes_a_server_sends() {
    // A 3.1 client ("MQIsdp", level 3) learns its version is unsupported,
    // and the server can answer in 3.1.1 terms.
    let mqisdp = [
        0x10, 0x10, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x3C, 0x00,
        0x02, b'c', b'1',
    ];
    let error = decode(&mut BytesMut::from(&mqisdp[..]), None, MAX).expect_err("3.1");
    assert_eq!(error, DecodeError::UnsupportedProtocolVersion { level: 3 });
    assert_eq!(error.reason_code(), ReasonCode::UnsupportedProtocolVersion);
    assert_eq!(error.reason_code().to_v311_connack(), Some(1));
}
