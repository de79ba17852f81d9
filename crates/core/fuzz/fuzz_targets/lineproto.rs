//! Line protocol: batches within the limits or an error located at a line.
//! The properties checked are in `../checks/lineproto.rs`, which
//! `tests/fuzz_regressions.rs` also runs on `../regressions/lineproto/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/lineproto.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check(data));
