//! Tributary's core data model.
//!
//! What lives here: the domain types every service shares ([`Point`],
//! [`Value`], identifiers), their validation and [`Limits`], the payload
//! formats devices send ([`formats`]), the conversion to and from the wire
//! envelope ([`envelope`]), label selectors ([`selector`]), and the small
//! traits a frontend or query service depends on instead of a concrete
//! registry ([`directory`]) or on the frontend that reaches a device
//! ([`commands`]), and the registry's change events with their wire
//! encoding ([`events`]).
//!
//! What must not live here: I/O, storage engines, network servers. This crate
//! is pure so that every other crate, and fuzzers, can use it cheaply.

pub mod commands;
pub mod directory;
pub mod envelope;
pub mod events;
pub mod formats;
pub mod limits;
pub mod live;
pub mod lwm2m;
pub mod model;
pub mod quota;
pub mod rate;
pub mod retention;
pub mod rollup;
pub mod selector;
pub mod series;
pub mod time;

pub use limits::Limits;
pub use model::{Point, Sample, SeriesKey, ValidationError, Value};
