//! MQTT over WebSocket: the server's byte-stream adapter fed a client's frames.
//! The properties checked are in `../checks/ws_frames.rs`, which
//! `tests/fuzz_regressions.rs` also runs on `../regressions/ws_frames/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/ws_frames.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check(data));
