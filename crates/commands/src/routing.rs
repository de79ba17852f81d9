//! Command routing across replicas, through the commands log.
//!
//! In distributed mode the query service (which serves `CommandService`)
//! and the ingest frontends (which hold the devices' MQTT connections, in
//! several replicas, each with a unique `frontend_id`) are separate
//! processes that share only the log ([`tributary_log::Log`]: Kafka, or the
//! embedded log in tests). This module carries a command from the one to
//! the other and its outcome back.
//!
//! ```text
//!  query replica "q-1"                 topic tributary.commands.v1           frontend "fe-b"
//!  RoutedCommandSink                   (key <tenant>/<device>)               CommandRelay
//!   1 presence(tenant, device) ─▶ PresenceLookup: frontend "fe-b"
//!   2 register waiter (id)
//!   3 append Request{id, to fe-b, reply_to q-1} ──▶ ──────────────────────▶ tail: addressed to me?
//!                                                                           4 append Accepted{id}
//!   tail: reply_to q-1? ◀──────────────────────── ◀──────────────────────── 5 local.send_command
//!   6 Accepted → wait for the result                                       7 append Result{id, outcome}
//!   8 Result → complete the waiter ◀─────────────── ◀───────────────────────
//! ```
//!
//! * **Presence-directed.** Frontends report presence (online, last seen,
//!   their `frontend_id`) to the registry; [`RoutedCommandSink`] reads it
//!   through [`PresenceLookup`]. No presence, or presence without a
//!   frontend, answers [`CommandOutcome::Offline`] at once, without touching
//!   the log. Otherwise the command goes to the frontend named there, even
//!   when presence says offline: that frontend may keep a persistent session
//!   that queues the command.
//! * **One topic, three records.** A request ([`COMMANDS_TOPIC`], key
//!   `<tenant>/<device>`, so all three records of a command share a
//!   partition and stay in order) carries a random 128-bit request id, the
//!   addressed frontend and `reply_to`, the id of the query replica waiting.
//!   The addressed frontend appends `Accepted` at once, then `Result`. The
//!   format is the internal protobuf `CommandRouteRecord`
//!   (`proto/tributary/v1/command_routing.proto`), not a public contract.
//! * **One tail per process.** Each [`RoutedCommandSink`] and each
//!   [`CommandRelay`] reads the whole topic with one consumer of its own (no
//!   group, from the latest offset) and skips records not meant for it.
//!   Commands are orders of magnitude rarer than telemetry, so reading
//!   everything is cheap, and no process needs another's address. The
//!   sink's consumer is open before its first request is appended, and its
//!   waiter is registered before the append, so no answer can be missed.
//! * **Two deadlines.** No `Accepted` within the routing timeout
//!   ([`RouterConfig::routing_timeout_ms`], 3 s, never more than the
//!   command's timeout) means the frontend that held the session is gone
//!   (sessions live in its memory): [`CommandOutcome::Offline`]. Accepted
//!   but no result within the command's timeout plus
//!   [`RouterConfig::result_grace_ms`]: [`CommandOutcome::Timeout`].
//! * **Faithful outcomes.** Every [`CommandOutcome`] (reply payload, content
//!   type, latency, queue TTL) and every [`CommandError`] the frontend's
//!   local sink returns comes back unchanged.
//! * **Limits.** Waiting commands per query replica
//!   ([`RouterConfig::max_pending`] → [`CommandError::Overloaded`]),
//!   commands executing per frontend ([`RelayConfig::max_concurrent`] → an
//!   `Overloaded` result), record size (`max_record_bytes` → `Invalid` on
//!   `payload`, or on `reply_payload` for a reply too large to route back),
//!   and the longest routed timeout ([`MAX_ROUTED_TIMEOUT`]).
//! * **No replay.** A frontend reads from the latest offset, skips requests
//!   older than their timeout by the record timestamp (so clocks must agree
//!   to well within a command's timeout), and executes a request id at most
//!   once. A restarted frontend never executes commands sent before it
//!   started.
//! * **Failures.** A failed append answers [`CommandError::Unavailable`]. A
//!   failed tail consumer is reopened with backoff; meanwhile the sink fails
//!   its waiting commands and new ones with `Unavailable` (their answers may
//!   be lost), and a frontend accepts nothing (its requesters answer
//!   `Offline`). Undecodable records are logged and skipped.
//!
//! Trade-off: presence must be fresh. A device that moved to another
//! frontend after its presence was read is reported offline by the old one;
//! the operator retries. Commands queued in a persistent session live in
//! the frontend's memory, as sessions do: a frontend restart drops them.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # async fn wire(
//! #     log: Arc<dyn tributary_log::Log>,
//! #     presence: Arc<dyn tributary_core::directory::PresenceLookup>,
//! #     mqtt: Arc<dyn tributary_core::commands::CommandSink>,
//! #     shutdown: impl std::future::Future<Output = ()>,
//! # ) -> Result<(), tributary_commands::CommandServiceError> {
//! use tributary_commands::{CommandRelay, RelayConfig, RoutedCommandSink, RouterConfig};
//!
//! // Query service: the sink CommandGrpc sends through.
//! let sink = RoutedCommandSink::open(Arc::clone(&log), presence, "query-0", RouterConfig::default()).await?;
//!
//! // Ingest frontend: executes the commands addressed to it on its MQTT server.
//! let relay = CommandRelay::new(log, "frontend-0".into(), mqtt).with_config(RelayConfig::default())?;
//! relay.run(shutdown).await?;
//! # drop(sink);
//! # Ok(())
//! # }
//! ```
//!
//! [`PresenceLookup`]: tributary_core::directory::PresenceLookup
//! [`CommandOutcome`]: tributary_core::commands::CommandOutcome
//! [`CommandOutcome::Offline`]: tributary_core::commands::CommandOutcome::Offline
//! [`CommandOutcome::Timeout`]: tributary_core::commands::CommandOutcome::Timeout
//! [`CommandError`]: tributary_core::commands::CommandError
//! [`CommandError::Overloaded`]: tributary_core::commands::CommandError::Overloaded
//! [`CommandError::Unavailable`]: tributary_core::commands::CommandError::Unavailable

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::CommandServiceError;

mod relay;
mod router;
mod wire;

pub use relay::CommandRelay;
pub use router::RoutedCommandSink;

/// The topic of command routing records.
pub const COMMANDS_TOPIC: &str = "tributary.commands.v1";

/// The longest command timeout that is routed; longer ones are refused as
/// invalid, so that a request's staleness stays bounded.
pub const MAX_ROUTED_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Most records one poll of a tail consumer returns.
const POLL_RECORDS: usize = 256;
/// How long one poll waits for records.
const POLL_WAIT: Duration = Duration::from_secs(1);
/// First and longest wait before reopening a failed tail consumer.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The next backoff after `current`.
fn next_backoff(current: Duration) -> Duration {
    (current * 2).min(MAX_BACKOFF)
}

/// Settings of the query side, [`RoutedCommandSink`]. Every field has a
/// default, so an empty config section is valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// How long to wait for the addressed frontend to accept a command, in
    /// milliseconds; never more than the command's own timeout. No
    /// acceptance in time means the frontend is gone: `OFFLINE`.
    pub routing_timeout_ms: u32,
    /// Once a command is accepted, how long to wait for its result beyond
    /// the command's timeout, in milliseconds (log latency both ways).
    pub result_grace_ms: u32,
    /// Most commands this replica waits for at once; further ones get
    /// `Overloaded`.
    pub max_pending: usize,
    /// Largest record appended to the commands log (key, value and framing),
    /// in bytes; it must not exceed what the log accepts (Kafka's
    /// `message.max.bytes`, 1 MiB by default). Larger commands are refused
    /// as invalid.
    pub max_record_bytes: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            routing_timeout_ms: 3_000,
            result_grace_ms: 2_000,
            max_pending: 10_000,
            max_record_bytes: 1024 * 1024,
        }
    }
}

impl RouterConfig {
    /// Checks that every limit is usable. Call it at start-up.
    pub fn validate(&self) -> Result<(), CommandServiceError> {
        if self.routing_timeout_ms == 0 {
            return Err(config_error("routing_timeout_ms", "must be at least 1"));
        }
        if self.max_pending == 0 {
            return Err(config_error("max_pending", "must be at least 1"));
        }
        check_record_bytes(self.max_record_bytes)
    }

    pub(crate) fn routing_timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.routing_timeout_ms))
    }

    pub(crate) fn result_grace(&self) -> Duration {
        Duration::from_millis(u64::from(self.result_grace_ms))
    }
}

/// Settings of the frontend side, [`CommandRelay`]. Every field has a
/// default, so an empty config section is valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// Most commands this frontend executes at once; further requests are
    /// answered `Overloaded`.
    pub max_concurrent: usize,
    /// Largest record appended to the commands log, in bytes, as
    /// [`RouterConfig::max_record_bytes`]. A device reply too large to route
    /// back is answered as invalid on `reply_payload`.
    pub max_record_bytes: usize,
    /// On shutdown, how long executing commands may take to finish and
    /// report, in milliseconds, before they are abandoned.
    pub drain_timeout_ms: u32,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 1024,
            max_record_bytes: 1024 * 1024,
            drain_timeout_ms: 5_000,
        }
    }
}

impl RelayConfig {
    /// Checks that every limit is usable. Call it at start-up.
    pub fn validate(&self) -> Result<(), CommandServiceError> {
        if self.max_concurrent == 0 {
            return Err(config_error("max_concurrent", "must be at least 1"));
        }
        check_record_bytes(self.max_record_bytes)
    }

    pub(crate) fn drain_timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.drain_timeout_ms))
    }
}

fn check_record_bytes(bytes: usize) -> Result<(), CommandServiceError> {
    if bytes < wire::MIN_RECORD_BYTES {
        return Err(config_error(
            "max_record_bytes",
            &format!("must be at least {}", wire::MIN_RECORD_BYTES),
        ));
    }
    Ok(())
}

fn config_error(field: &'static str, message: &str) -> CommandServiceError {
    CommandServiceError::Config {
        field,
        message: message.to_owned(),
    }
}

/// Checks a replica or frontend id: 1..=255 bytes of printable text.
fn check_id(field: &'static str, id: &str) -> Result<(), CommandServiceError> {
    if id.is_empty() || id.len() > 255 || id.chars().any(char::is_control) {
        return Err(config_error(
            field,
            "must be 1 to 255 bytes of printable text",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_nonsense_is_refused() {
        assert!(RouterConfig::default().validate().is_ok());
        assert!(RelayConfig::default().validate().is_ok());
        for bad in [
            RouterConfig {
                routing_timeout_ms: 0,
                ..RouterConfig::default()
            },
            RouterConfig {
                max_pending: 0,
                ..RouterConfig::default()
            },
            RouterConfig {
                max_record_bytes: 10,
                ..RouterConfig::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        for bad in [
            RelayConfig {
                max_concurrent: 0,
                ..RelayConfig::default()
            },
            RelayConfig {
                max_record_bytes: 0,
                ..RelayConfig::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(check_id("replica_id", "").is_err());
        assert!(check_id("replica_id", "a\nb").is_err());
        assert!(check_id("replica_id", "query-0").is_ok());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(next_backoff(MIN_BACKOFF), MIN_BACKOFF * 2);
        assert_eq!(next_backoff(MAX_BACKOFF), MAX_BACKOFF);
    }
}
