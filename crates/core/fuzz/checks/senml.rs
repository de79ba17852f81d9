//! SenML JSON: any input gives points within the limits or a located error.
//!
//! Shared by the fuzz target `senml` and `tests/fuzz_regressions.rs`.

use tributary_core::Limits;
use tributary_core::formats::senml;

pub(crate) fn check(data: &[u8]) {
    let limits = Limits {
        max_points_per_request: 64,
        ..Limits::default()
    };
    match senml::parse(data, 1_700_000_000_000_000_000, &limits) {
        Ok(points) => assert!(points.len() <= 64),
        Err(e) => assert!(!e.location.is_empty() && !e.message.is_empty()),
    }
}
