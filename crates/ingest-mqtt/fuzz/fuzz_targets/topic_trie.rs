//! The subscription trie and the ACL checks against the codec's topic matching.
//! The properties checked are in `../checks/topic_trie.rs`, which
//! `tests/fuzz_regressions.rs` also runs on `../regressions/topic_trie/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/topic_trie.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check(data));
