//! Any message the codec can build encodes to a datagram that decodes to
//! the same message, and any datagram either decodes or is refused with a
//! reason, without a panic.

use proptest::prelude::*;
use tributary_coap_codec::{Code, Message, MessageType, Token};

fn message() -> impl Strategy<Value = Message> {
    (
        0u8..4,
        any::<u8>(),
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 0..=8),
        proptest::collection::vec(
            (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..300)),
            0..12,
        ),
        proptest::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(t, code, id, token, options, payload)| {
            let mtype = [
                MessageType::Confirmable,
                MessageType::NonConfirmable,
                MessageType::Acknowledgement,
                MessageType::Reset,
            ][usize::from(t)];
            // An Empty message has nothing after its header.
            let empty = code == 0;
            let mut m = Message::new(mtype, Code(code), id);
            if !empty {
                m.token = Token::new(&token).unwrap();
                for (number, value) in options {
                    m.add_option(number, value);
                }
                m.payload = payload;
            }
            m
        })
}

proptest! {
    #[test]
    fn messages_round_trip(m in message()) {
        let wire = m.encode();
        prop_assert_eq!(wire.len(), m.encoded_len());
        prop_assert_eq!(Message::decode(&wire), Ok(m));
    }

    #[test]
    fn any_bytes_decode_or_are_refused(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(m) = Message::decode(&data) {
            // What decodes re-encodes to a datagram that decodes the same
            // (not always the same bytes: uints may carry leading zeros).
            prop_assert_eq!(Message::decode(&m.encode()), Ok(m));
        }
    }
}
