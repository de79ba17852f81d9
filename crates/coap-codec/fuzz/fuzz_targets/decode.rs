//! CoAP decoding of any datagram, and re-encoding what decodes. The
//! properties checked are in `../checks/decode.rs`, which
//! `tests/fuzz_regressions.rs` also runs on `../regressions/decode/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/decode.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check(data));
