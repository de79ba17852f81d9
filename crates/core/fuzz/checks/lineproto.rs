//! Line protocol: any input gives batches within the limits or an error
//! located at a line of the input. The first byte picks the precision.
//!
//! Shared by the fuzz target `lineproto` and `tests/fuzz_regressions.rs`.

use tributary_core::Limits;
use tributary_core::formats::lineproto::{self, Line, Precision};

pub(crate) fn check(data: &[u8]) {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let precision = [
        Precision::Ns,
        Precision::Us,
        Precision::Ms,
        Precision::S,
        Precision::M,
        Precision::H,
    ][usize::from(first) % 6];
    let limits = Limits {
        max_points_per_request: 64,
        max_devices_per_request: 4,
        max_labels: 4,
        ..Limits::default()
    };
    match lineproto::parse(
        body,
        precision,
        "device",
        1_700_000_000_000_000_000,
        &limits,
    ) {
        Ok(batches) => {
            assert!(batches.len() <= 4);
            assert!(batches.iter().map(|b| b.points.len()).sum::<usize>() <= 64);
            assert!(batches.iter().all(|b| b.labels.len() <= 4));
        }
        Err(e) => {
            let lines = body.iter().filter(|b| **b == b'\n').count() + 1;
            let line: usize = e
                .location
                .strip_prefix("line ")
                .and_then(|n| n.parse().ok())
                .expect("errors are located at `line N`");
            assert!((1..=lines).contains(&line), "{e}");
        }
    }
    if let Ok(text) = std::str::from_utf8(body) {
        for line in text.split('\n') {
            let _ = Line::parse(line);
        }
    }
}
