//! The seam between the operator command API and the frontends that hold
//! device connections.
//!
//! An operator sends a command to a device and waits for its reply
//! (cloud-to-device request/response). The gRPC service that takes the
//! operator's call depends on [`CommandSink`] only, never on a protocol
//! crate: in standalone the MQTT server implements it in-process; with
//! several frontend replicas an implementation routes the command to the
//! replica that holds the device's session (see `ARCHITECTURE.md`,
//! "Commands").

use std::time::Duration;

use async_trait::async_trait;

use crate::model::ValidationError;

/// Longest command name, in bytes.
pub const MAX_COMMAND_NAME_LEN: usize = 64;

/// Longest content type of a command or reply, in bytes.
pub const MAX_CONTENT_TYPE_LEN: usize = 256;

/// Command names: 1..=[`MAX_COMMAND_NAME_LEN`] bytes of `[A-Za-z0-9_.:-]`,
/// so that a name is always exactly one MQTT topic level
/// (`devices/{id}/commands/{name}`).
pub fn validate_command_name(name: &str) -> Result<(), ValidationError> {
    if name.is_empty() {
        return Err(ValidationError::new("name", "must not be empty"));
    }
    if name.len() > MAX_COMMAND_NAME_LEN {
        return Err(ValidationError::new(
            "name",
            format!("longer than {MAX_COMMAND_NAME_LEN} bytes"),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))
    {
        return Err(ValidationError::new(
            "name",
            format!("invalid character {c:?}: use [A-Za-z0-9_.:-]"),
        ));
    }
    Ok(())
}

/// A content type as it is passed to devices: at most
/// [`MAX_CONTENT_TYPE_LEN`] bytes of printable text (empty means none).
pub fn validate_content_type(content_type: &str) -> Result<(), ValidationError> {
    if content_type.len() > MAX_CONTENT_TYPE_LEN {
        return Err(ValidationError::new(
            "content_type",
            format!("longer than {MAX_CONTENT_TYPE_LEN} bytes"),
        ));
    }
    if content_type.chars().any(char::is_control) {
        return Err(ValidationError::new(
            "content_type",
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// One command to one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The device's tenant.
    pub tenant: String,
    /// The device id.
    pub device: String,
    /// The command name ([`validate_command_name`]).
    pub name: String,
    /// Opaque bytes for the device.
    pub payload: Vec<u8>,
    /// The payload's content type, passed to the device (MQTT 5); empty
    /// means none.
    pub content_type: String,
    /// How long the caller waits for the reply.
    pub timeout: Duration,
    /// How long the command stays queued for a device that is offline but
    /// keeps a persistent session. Never shorter than `timeout`: sinks
    /// queue for the longer of the two.
    pub ttl: Duration,
}

/// The device's answer to a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandReply {
    /// What the device answered.
    pub payload: Vec<u8>,
    /// The reply's content type, if the device set one (MQTT 5); empty
    /// otherwise.
    pub content_type: String,
    /// From sending the command to receiving the reply.
    pub latency: Duration,
}

/// What became of a command. Every case is a normal answer to the
/// operator, not an error: the command was handled as well as the device's
/// state allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandOutcome {
    /// The device got the command and replied within the timeout.
    Replied(CommandReply),
    /// The command went to a connected device, which did not reply within
    /// the timeout.
    Timeout,
    /// The device is not connected and keeps no session that would queue
    /// the command: it was dropped.
    Offline,
    /// The device is connected, but none of its sessions subscribes to its
    /// command topic: it was dropped.
    NotSubscribed,
    /// The device is offline but keeps a persistent session: the command is
    /// queued there until its TTL and delivered when the device reconnects.
    /// No reply came within the timeout (a later reply is not collected).
    Queued {
        /// How long the command stays queued from when it was sent.
        ttl: Duration,
    },
}

/// Why a command could not be handled at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The command is malformed (name, device id, content type, size).
    #[error("invalid command: {0}")]
    Invalid(#[from] ValidationError),
    /// Too many commands are waiting for replies; retry later.
    #[error("too many commands are waiting for replies")]
    Overloaded,
    /// The sink cannot take commands now (shutting down, unreachable).
    #[error("command routing unavailable: {0}")]
    Unavailable(String),
}

/// Where commands to devices go: the frontend (or router of frontends) that
/// can reach the device.
#[async_trait]
pub trait CommandSink: Send + Sync + std::fmt::Debug + 'static {
    /// Sends `command` to its device and waits, at most `command.timeout`
    /// (plus the routing time), for the reply.
    async fn send_command(&self, command: Command) -> Result<CommandOutcome, CommandError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_names_are_one_topic_level() {
        assert!(validate_command_name("reboot").is_ok());
        assert!(validate_command_name("fw.update:v2_x-1").is_ok());
        assert!(validate_command_name(&"n".repeat(MAX_COMMAND_NAME_LEN)).is_ok());
        for bad in ["", "a/b", "+", "#", "a b", "é"] {
            assert!(validate_command_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_command_name(&"n".repeat(MAX_COMMAND_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn content_types_are_short_printable_text() {
        assert!(validate_content_type("").is_ok());
        assert!(validate_content_type("application/json; charset=utf-8").is_ok());
        assert!(validate_content_type("text/plain\n").is_err());
        assert!(validate_content_type(&"x".repeat(MAX_CONTENT_TYPE_LEN + 1)).is_err());
    }
}
