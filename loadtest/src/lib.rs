//! `tributary-loadtest`: a device-fleet simulator and benchmark harness.
//!
//! It simulates N devices over MQTT (3.1.1 or 5.0, QoS 0/1/2, clean or
//! persistent sessions, optional TLS), HTTP (per-device Tributary JSON or
//! SenML, or line-protocol batches with a tenant token) or CoAP
//! (confirmable POSTs, with retransmission), paced per device,
//! at an open-loop total rate, or closed-loop with K messages in flight.
//! Every message carries new points with advancing timestamps, so the
//! server's storage does real work. It measures counts sent, acknowledged and
//! failed (by reason), throughput over time, acknowledgement latency as an
//! HDR histogram, connection setup, end-to-end latency through Tributary's
//! `Subscribe` stream, server memory per connection, and, with `--verify`,
//! loss: points acknowledged but not stored.
//!
//! It targets Tributary (devices provisioned through the registry) or, with
//! no registry, any MQTT broker or InfluxDB-compatible `/write` endpoint, so
//! that one tool measures Tributary and its peers alike.
//!
//! What it must not do: send to anything but the configured target, grow
//! without bound (every window, queue and line is bounded), or report a
//! number it did not measure.
//!
//! Layout: [`scenario`] (the TOML files), [`payload`] (bodies), [`pace`]
//! (schedules), [`mqtt`], [`http`] and [`coap`] (senders), [`engine`] (one process's
//! senders), [`workers`] (several processes), [`provision`], [`e2e`],
//! [`verify`], [`stats`], [`report`], [`plot`], and [`run`], which ties
//! them together.

pub mod coap;
pub mod e2e;
pub mod engine;
pub mod error;
pub mod http;
pub mod mqtt;
pub mod pace;
pub mod payload;
pub mod plot;
pub mod provision;
pub mod report;
pub mod run;
pub mod scenario;
pub mod stats;
pub mod verify;
pub mod workers;

pub use error::Error;
pub use report::Report;
pub use run::{RunOptions, run};
pub use scenario::{Overrides, Scenario};
