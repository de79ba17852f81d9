//! Replays the fuzz regression corpus in CI: every file under
//! `fuzz/regressions/<target>/` goes through the same checks as the fuzz
//! target of that name (`fuzz/checks/<target>.rs`). The files are inputs
//! that once failed, and seeds. See docs/fuzzing.md.
//!
//! The checks reach crate-private code through the feature `fuzzing`, which
//! the crate's dev-dependency on itself turns on for its tests.

use std::fs;
use std::path::Path;

#[path = "../fuzz/checks/proxy_header.rs"]
mod proxy_header;
#[path = "../fuzz/checks/topic_trie.rs"]
mod topic_trie;
#[path = "../fuzz/checks/ws_frames.rs"]
mod ws_frames;

/// Runs `check` on every file of `fuzz/regressions/{target}/`; fails when
/// the directory is missing or empty.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no inputs in {}", dir.display());
    for path in files {
        let data = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        eprintln!("replaying {}", path.display());
        check(&data);
    }
}

#[test]
fn proxy_header() {
    replay("proxy_header", proxy_header::check);
}

#[test]
fn ws_frames() {
    replay("ws_frames", ws_frames::check);
}

#[test]
fn topic_trie() {
    replay("topic_trie", topic_trie::check);
}
