//! Tributary JSON: any input gives points within the limits or a located error.
//!
//! Shared by the fuzz target `json` and `tests/fuzz_regressions.rs`.

use tributary_core::Limits;
use tributary_core::formats::json;

pub(crate) fn check(data: &[u8]) {
    let limits = Limits {
        max_points_per_request: 64,
        ..Limits::default()
    };
    match json::parse(data, 0, &limits) {
        Ok(points) => assert!(points.len() <= 64),
        Err(e) => assert!(!e.location.is_empty() && !e.message.is_empty()),
    }
}
