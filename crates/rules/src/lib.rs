//! Rules over telemetry and the alerts they raise.
//!
//! - [`model`]: rule definitions (threshold, rate of change, anomaly, no
//!   data) and their validation.
//! - [`eval`]: one series under one rule, its bounded state, and the alert
//!   state machine.
//! - [`engine`]: every rule over the partitions a processor owns, indexed
//!   by device, with no-data deadlines and checkpoint rows.
//! - [`backtest`]: a rule judged over stored history.
//! - [`codec`]: the bytes a series' state is checkpointed as.
//! - [`silence`]: operators' silences, and their lookup per transition.
//! - [`convert`]: the wire forms (`tributary.v1.Rule`, `AlertEvent`).

pub mod backtest;
pub mod codec;
pub mod convert;
pub mod engine;
pub mod eval;
pub mod model;
pub mod silence;

pub use engine::{
    CheckpointRow, Engine, EngineLimits, Partitioner, StoredRows, Transition, alert_id,
};
pub use eval::{AlertState, Change, Phase, SeriesState};
pub use model::{
    Anomaly, Direction, Kind, Op, PRESENCE_METRIC, RateOfChange, Rule, Severity, Target, Threshold,
};
pub use silence::{Silence, Silences};
