//! SenML JSON: any input gives points within the limits or a located error.
//! The properties checked are in `../checks/senml.rs`, which
//! `tests/fuzz_regressions.rs` also runs on `../regressions/senml/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/senml.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check(data));
