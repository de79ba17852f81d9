//! CBOR (Tributary's document, and SenML CBOR): any input gives points
//! within the limits or an error located at a byte of the input.
//!
//! Shared by the fuzz target `cbor` and `tests/fuzz_regressions.rs`.

use tributary_core::Limits;
use tributary_core::formats::cbor;

pub(crate) fn check(data: &[u8]) {
    let limits = Limits {
        max_points_per_request: 64,
        ..Limits::default()
    };
    for parsed in [
        cbor::parse(data, 1_700_000_000_000_000_000, &limits),
        cbor::parse_senml(data, 1_700_000_000_000_000_000, &limits),
    ] {
        match parsed {
            Ok(points) => assert!(points.len() <= 64),
            Err(e) => assert!(!e.location.is_empty() && !e.message.is_empty()),
        }
    }
}
