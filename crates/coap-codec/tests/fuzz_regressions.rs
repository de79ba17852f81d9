//! Replays the fuzz regression corpus in CI: every file under
//! `fuzz/regressions/decode/` goes through the fuzz target's checks
//! (`fuzz/checks/decode.rs`). The files are inputs that once failed, and
//! seeds. See docs/fuzzing.md.

use std::fs;
use std::path::Path;

#[path = "../fuzz/checks/decode.rs"]
mod decode;

#[test]
fn decode() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/decode");
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
        decode::check(&data);
    }
}
