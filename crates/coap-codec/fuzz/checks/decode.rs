//! CoAP decoding: any datagram gives a message or an error without
//! panicking; an error names the header only when it could be read; a
//! message re-encodes to a datagram that decodes to the same message, with
//! its options in order and its typed options read without panicking.
//!
//! Shared by the fuzz target `decode` and `tests/fuzz_regressions.rs`.

use tributary_coap_codec::{MAX_OPTIONS, Message};

pub(crate) fn check(data: &[u8]) {
    match Message::decode(data) {
        Ok(m) => {
            assert!(m.options().len() <= MAX_OPTIONS);
            assert!(m.options().windows(2).all(|w| w[0].number <= w[1].number));
            let _ = (m.content_format(), m.block1(), m.block2(), m.observe());
            let _ = m.uri_path().count();
            let again = Message::decode(&m.encode()).expect("a decoded message re-encodes");
            assert_eq!(again, m, "stable under re-encoding");
        }
        Err(e) => {
            if let Some((_, id)) = e.header {
                assert!(data.len() >= 4);
                assert_eq!(id, u16::from_be_bytes([data[2], data[3]]));
            }
        }
    }
}
