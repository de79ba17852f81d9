//! MQTT decoding: any bytes, decoded as a connection before CONNECT and as a
//! 3.1.1 and a 5.0 connection, give packets or errors without panicking;
//! "need more bytes" consumes nothing; every packet decoded re-encodes, and
//! the re-encoding decodes to the same packet.
//!
//! Shared by the fuzz target `decode` and `tests/fuzz_regressions.rs`.

use bytes::BytesMut;
use tributary_mqtt_codec::{Packet, ProtocolVersion, decode, encode};

const MAX_PACKET: usize = 64 * 1024;

fn check_as(data: &[u8], state: Option<ProtocolVersion>) {
    let mut buf = BytesMut::from(data);
    // Decode packets until the stream ends or fails, as a connection would.
    let mut state = state;
    loop {
        let before = buf.len();
        match decode(&mut buf, state, MAX_PACKET) {
            Ok(Some(packet)) => {
                assert!(buf.len() < before, "a packet consumes bytes");
                let version = match &packet {
                    Packet::Connect(connect) => connect.protocol,
                    _ => state.expect("only CONNECT decodes before the version is known"),
                };
                let mut encoded = BytesMut::new();
                encode(&packet, version, &mut encoded).expect("a decoded packet re-encodes");
                assert_eq!(packet.encoded_len(version), Ok(encoded.len()));
                let decode_state = match packet {
                    Packet::Connect(_) => None,
                    _ => Some(version),
                };
                let again = decode(&mut encoded, decode_state, MAX_PACKET)
                    .expect("the re-encoding decodes");
                assert_eq!(again.as_ref(), Some(&packet), "stable under re-encoding");
                assert!(encoded.is_empty());
                state = Some(version);
            }
            Ok(None) | Err(_) => {
                assert_eq!(buf.len(), before, "nothing consumed");
                return;
            }
        }
    }
}

pub(crate) fn check(data: &[u8]) {
    check_as(data, None);
    check_as(data, Some(ProtocolVersion::V311));
    check_as(data, Some(ProtocolVersion::V5));
}
