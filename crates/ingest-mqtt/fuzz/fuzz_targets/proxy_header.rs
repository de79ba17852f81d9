//! The PROXY protocol header parser (v1 and v2) and the listeners' reader.
//! The properties checked are in `../checks/proxy_header.rs`, which
//! `tests/fuzz_regressions.rs` also runs on `../regressions/proxy_header/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/proxy_header.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check(data));
