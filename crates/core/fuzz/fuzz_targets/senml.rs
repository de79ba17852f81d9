//! SenML JSON: any input gives points within the limits or a located error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tributary_core::Limits;
use tributary_core::formats::senml;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_points_per_request: 64,
        ..Limits::default()
    };
    match senml::parse(data, 1_700_000_000_000_000_000, &limits) {
        Ok(points) => assert!(points.len() <= 64),
        Err(e) => assert!(!e.location.is_empty() && !e.message.is_empty()),
    }
});
