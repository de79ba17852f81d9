//! Payload formats devices and agents send, parsed into [`Point`]s.
//!
//! * [`json`]: Tributary's JSON, `{"ts": .., "values": {..}}` or an array of those;
//! * [`senml`]: SenML JSON (RFC 8428);
//! * [`lineproto`]: InfluxDB line protocol, for tenant ingest tokens.
//!
//! Every parser is total: any input yields points or a [`ParseError`] that
//! names where the problem is (a line, a record, a field). None panics,
//! allocates without bound, or accepts more than the [`Limits`] allow.
//!
//! [`Limits`]: crate::Limits

use std::collections::BTreeMap;

use crate::model::Point;

pub mod json;
pub mod lineproto;
pub mod senml;

/// A parse or validation failure that says where it happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct ParseError {
    /// Where: `line 3`, `record 2`, `values.temp`, `body`.
    pub location: String,
    pub message: String,
    /// True when the input is refused only for exceeding a size or count limit
    /// (HTTP 413 rather than 400).
    pub too_large: bool,
}

impl ParseError {
    pub fn new(location: impl Into<String>, message: impl Into<String>) -> Self {
        Self { location: location.into(), message: message.into(), too_large: false }
    }

    pub fn too_large(location: impl Into<String>, message: impl Into<String>) -> Self {
        Self { location: location.into(), message: message.into(), too_large: true }
    }
}

/// Points for one device, with labels taken from the payload (line-protocol tags).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeviceBatch {
    pub device: String,
    pub labels: BTreeMap<String, String>,
    pub points: Vec<Point>,
}
