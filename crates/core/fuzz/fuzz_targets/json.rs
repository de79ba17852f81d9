//! Tributary JSON: any input gives points within the limits or a located error.
//! The properties checked are in `../checks/json.rs`, which
//! `tests/fuzz_regressions.rs` also runs on `../regressions/json/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/json.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check(data));
