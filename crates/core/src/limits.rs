//! Limits on everything a client sends. Every size, rate and count has one.

use serde::{Deserialize, Serialize};

/// Ingest limits, shared by every frontend and checked again by the processor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body, after decompression, in bytes.
    pub max_body_bytes: usize,
    /// Most points in one request or message.
    pub max_points_per_request: usize,
    /// Longest metric name, in bytes.
    pub max_metric_len: usize,
    /// Longest string value, in bytes.
    pub max_string_len: usize,
    /// Longest device id, in bytes.
    pub max_device_id_len: usize,
    /// Most distinct devices in one line-protocol request.
    pub max_devices_per_request: usize,
    /// Most labels on one device.
    pub max_labels: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024 * 1024,
            max_points_per_request: 100_000,
            max_metric_len: 128,
            max_string_len: 4096,
            max_device_id_len: 128,
            max_devices_per_request: 10_000,
            max_labels: 64,
        }
    }
}
