//! The command service's limits.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::CommandServiceError;

/// Limits of the command service. Every field has a default, so an empty
/// config section is valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommandConfig {
    /// Largest command payload, in bytes. Larger ones are refused with
    /// `INVALID_ARGUMENT` on `payload`.
    pub max_payload_bytes: usize,
    /// The wait for a reply when a request sets no `timeout_ms`, in
    /// milliseconds.
    pub default_timeout_ms: u32,
    /// The longest wait for a reply a request may ask for, in milliseconds.
    pub max_timeout_ms: u32,
    /// How long a command stays queued for an offline device with a
    /// persistent session when a request sets no `ttl_seconds`.
    pub default_ttl_secs: u32,
    /// The longest TTL a request may ask for, in seconds.
    pub max_ttl_secs: u32,
    /// Most `SendCommand` calls waiting for replies at once on this server;
    /// further calls get `RESOURCE_EXHAUSTED`.
    pub max_pending: usize,
}

impl Default for CommandConfig {
    fn default() -> Self {
        Self {
            max_payload_bytes: 256 * 1024,
            default_timeout_ms: 10_000,
            max_timeout_ms: 300_000,
            default_ttl_secs: 3600,
            max_ttl_secs: 7 * 24 * 3600,
            max_pending: 10_000,
        }
    }
}

impl CommandConfig {
    /// Checks that every limit is usable. Call it at start-up.
    pub fn validate(&self) -> Result<(), CommandServiceError> {
        let bad = |field: &'static str, message: &str| {
            Err(CommandServiceError::Config {
                field,
                message: message.to_owned(),
            })
        };
        if self.max_payload_bytes == 0 {
            return bad("max_payload_bytes", "must be at least 1");
        }
        if self.max_timeout_ms == 0 {
            return bad("max_timeout_ms", "must be at least 1");
        }
        if self.default_timeout_ms == 0 || self.default_timeout_ms > self.max_timeout_ms {
            return bad("default_timeout_ms", "must be in 1..=max_timeout_ms");
        }
        if self.max_ttl_secs == 0 {
            return bad("max_ttl_secs", "must be at least 1");
        }
        if self.default_ttl_secs == 0 || self.default_ttl_secs > self.max_ttl_secs {
            return bad("default_ttl_secs", "must be in 1..=max_ttl_secs");
        }
        if self.max_pending == 0 {
            return bad("max_pending", "must be at least 1");
        }
        Ok(())
    }

    /// The wait a request asks for (0 = the default), or why it may not.
    pub(crate) fn timeout(&self, requested_ms: u32) -> Result<Duration, CommandServiceError> {
        match requested_ms {
            0 => Ok(Duration::from_millis(u64::from(self.default_timeout_ms))),
            ms if ms > self.max_timeout_ms => Err(CommandServiceError::invalid(
                "timeout_ms",
                format!("at most {} ms", self.max_timeout_ms),
            )),
            ms => Ok(Duration::from_millis(u64::from(ms))),
        }
    }

    /// The TTL a request asks for (0 = the default), or why it may not.
    pub(crate) fn ttl(&self, requested_secs: u32) -> Result<Duration, CommandServiceError> {
        match requested_secs {
            0 => Ok(Duration::from_secs(u64::from(self.default_ttl_secs))),
            s if s > self.max_ttl_secs => Err(CommandServiceError::invalid(
                "ttl_seconds",
                format!("at most {} s", self.max_ttl_secs),
            )),
            s => Ok(Duration::from_secs(u64::from(s))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_nonsense_is_refused() {
        assert!(CommandConfig::default().validate().is_ok());
        for bad in [
            CommandConfig {
                max_payload_bytes: 0,
                ..CommandConfig::default()
            },
            CommandConfig {
                default_timeout_ms: 500_000,
                ..CommandConfig::default()
            },
            CommandConfig {
                default_ttl_secs: 0,
                ..CommandConfig::default()
            },
            CommandConfig {
                max_pending: 0,
                ..CommandConfig::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn zero_means_default_and_the_maximum_holds() {
        let c = CommandConfig::default();
        assert_eq!(c.timeout(0).unwrap(), Duration::from_secs(10));
        assert_eq!(c.timeout(250).unwrap(), Duration::from_millis(250));
        assert!(c.timeout(300_001).is_err());
        assert_eq!(c.ttl(0).unwrap(), Duration::from_secs(3600));
        assert_eq!(c.ttl(60).unwrap(), Duration::from_secs(60));
        assert!(c.ttl(7 * 24 * 3600 + 1).is_err());
    }
}
