//! CBOR and SenML CBOR: any input gives points within the limits or a
//! located error, and agrees with the JSON parser on the decoded document.
//! The properties checked are in `../checks/cbor.rs`, which
//! `tests/fuzz_regressions.rs` also runs on `../regressions/cbor/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/cbor.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check(data));
