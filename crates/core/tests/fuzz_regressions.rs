//! Replays the fuzz regression corpus in CI: every file under
//! `fuzz/regressions/<target>/` goes through the same checks as the fuzz
//! target of that name (`fuzz/checks/<target>.rs`). The files are inputs
//! that once failed, and seeds. See docs/fuzzing.md.

use std::fs;
use std::path::Path;

#[path = "../fuzz/checks/cbor.rs"]
mod cbor;
#[path = "../fuzz/checks/json.rs"]
mod json;
#[path = "../fuzz/checks/lineproto.rs"]
mod lineproto;
#[path = "../fuzz/checks/senml.rs"]
mod senml;

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
fn json() {
    replay("json", json::check);
}

#[test]
fn lineproto() {
    replay("lineproto", lineproto::check);
}

#[test]
fn senml() {
    replay("senml", senml::check);
}

#[test]
fn cbor() {
    replay("cbor", cbor::check);
}
