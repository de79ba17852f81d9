//! Per-tenant quotas: how much of each shared resource one tenant may use,
//! so that no tenant can starve the others.
//!
//! Quotas are held in the registry with the tenant's settings (set with
//! `tributary tenants set-quota`) and reach every replica through the
//! directory's cached [`crate::directory::TenantPolicy`]. Each is a whole
//! number; a tenant without a value of its own gets the platform default
//! ([`Quotas::default`]). The platform's global limits stay in force on top
//! of them, as the platform's own protection.
//!
//! ```
//! use tributary_core::quota::{Quota, Quotas};
//!
//! let mut q = Quotas::default();
//! q.set(Quota::MessagesPerSec, 50).unwrap();
//! assert_eq!(q.get(Quota::MessagesPerSec), 50);
//! assert_eq!("messages_per_sec".parse::<Quota>().unwrap(), Quota::MessagesPerSec);
//! assert!(q.set(Quota::SessionsPerDevice, 0).is_err());
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! quotas {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, default $default:expr; )*) => {
        /// One quota of a tenant.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Quota {
            $( $(#[$doc])* $variant, )*
        }

        impl Quota {
            /// Every quota, in a stable order.
            pub const ALL: &'static [Quota] = &[$(Quota::$variant),*];

            /// The quota's name: its settings key and metric label.
            pub fn name(self) -> &'static str {
                match self { $(Quota::$variant => $name,)* }
            }

            /// The platform default of a tenant without a value of its own.
            pub fn default_value(self) -> u64 {
                match self { $(Quota::$variant => $default,)* }
            }
        }
    };
}

quotas! {
    /// Devices registered.
    Devices = "devices", default 1_000_000;
    /// MQTT connections open at once (per frontend replica).
    Connections = "connections", default 100_000;
    /// MQTT CONNECTs accepted per second, sustained (per frontend replica):
    /// how fast one tenant's fleet may come back after an outage, whatever
    /// the others do.
    ConnectsPerSec = "connects_per_sec", default 5_000;
    /// CONNECTs above the sustained rate in a burst.
    ConnectsBurst = "connects_burst", default 10_000;
    /// MQTT sessions, connected or kept for a reconnect (per frontend
    /// replica).
    Sessions = "sessions", default 100_000;
    /// MQTT sessions (client ids) of one device at once.
    SessionsPerDevice = "sessions_per_device", default 8;
    /// Telemetry messages and requests per second, sustained (per frontend
    /// replica).
    MessagesPerSec = "messages_per_sec", default 20_000;
    /// Messages above the sustained rate in a burst.
    MessagesBurst = "messages_burst", default 40_000;
    /// Telemetry payload bytes per second, sustained (per frontend replica).
    BytesPerSec = "bytes_per_sec", default 50 * 1024 * 1024;
    /// Payload bytes above the sustained rate in a burst.
    BytesBurst = "bytes_burst", default 100 * 1024 * 1024;
    /// Time series (device × metric).
    Series = "series", default 1_000_000;
    /// MQTT retained messages (per frontend replica).
    RetainedMessages = "retained_messages", default 10_000;
    /// Bytes of MQTT retained messages: topics, properties and payloads.
    RetainedBytes = "retained_bytes", default 64 * 1024 * 1024;
    /// Live Subscribe streams open at once (per query replica).
    LiveStreams = "live_streams", default 100;
    /// Commands waiting for a device's answer at once (per replica).
    PendingCommands = "pending_commands", default 1_000;
    /// Rules.
    Rules = "rules", default 1_000;
    /// Devices one rule may watch: a selector matching more is refused.
    RuleDevices = "rule_devices", default 10_000;
    /// Alert webhooks.
    Webhooks = "webhooks", default 20;
    /// Alert silences in force.
    Silences = "silences", default 1_000;
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown quota name, or a value a quota cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    /// No quota has this name.
    #[error("unknown quota {0:?}; quotas are: {names}", names = quota_names())]
    Unknown(String),
    /// The value is out of the quota's range.
    #[error("quota {quota} must be {rule}, got {value}")]
    OutOfRange {
        /// The quota.
        quota: Quota,
        /// What it must be.
        rule: &'static str,
        /// What was asked.
        value: u64,
    },
}

fn quota_names() -> String {
    Quota::ALL
        .iter()
        .map(|q| q.name())
        .collect::<Vec<_>>()
        .join(", ")
}

impl FromStr for Quota {
    type Err = QuotaError;

    fn from_str(s: &str) -> Result<Self, QuotaError> {
        let wanted = s.trim().replace('-', "_");
        Quota::ALL
            .iter()
            .copied()
            .find(|q| q.name() == wanted)
            .ok_or_else(|| QuotaError::Unknown(s.to_owned()))
    }
}

/// The quotas of one tenant: the values set for it, over the platform
/// defaults. Serialized as the map of values set (`{"connections": 50}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Quotas {
    set: BTreeMap<Quota, u64>,
}

/// The largest value any quota takes; more would overflow the arithmetic of
/// rates and byte counts.
pub const MAX_QUOTA: u64 = 1 << 50;

impl Quotas {
    /// The value in force: the tenant's own, or the platform default.
    pub fn get(&self, quota: Quota) -> u64 {
        self.set
            .get(&quota)
            .copied()
            .unwrap_or_else(|| quota.default_value())
    }

    /// Sets a quota for the tenant. Zero refuses everything the quota
    /// covers (a suspended tenant), except for the quotas that cannot be
    /// zero: a burst and the sessions of a device.
    pub fn set(&mut self, quota: Quota, value: u64) -> Result<(), QuotaError> {
        let at_least_one = matches!(
            quota,
            Quota::SessionsPerDevice
                | Quota::MessagesBurst
                | Quota::BytesBurst
                | Quota::ConnectsBurst
        );
        if value > MAX_QUOTA || (at_least_one && value == 0) {
            return Err(QuotaError::OutOfRange {
                quota,
                rule: if at_least_one {
                    "from 1 to 2^50"
                } else {
                    "from 0 to 2^50"
                },
                value,
            });
        }
        self.set.insert(quota, value);
        Ok(())
    }

    /// Goes back to the platform default for `quota`.
    pub fn clear(&mut self, quota: Quota) {
        self.set.remove(&quota);
    }

    /// The values set for the tenant (not the defaults).
    pub fn overrides(&self) -> impl Iterator<Item = (Quota, u64)> + '_ {
        self.set.iter().map(|(q, v)| (*q, *v))
    }

    /// Every quota with the value in force.
    pub fn effective(&self) -> impl Iterator<Item = (Quota, u64)> + '_ {
        Quota::ALL.iter().map(|q| (*q, self.get(*q)))
    }

    /// Builds quotas from named values, checking every name and value.
    pub fn from_named<'a>(
        named: impl IntoIterator<Item = (&'a str, u64)>,
    ) -> Result<Self, QuotaError> {
        let mut q = Quotas::default();
        for (name, value) in named {
            q.set(name.parse()?, value)?;
        }
        Ok(q)
    }
}

/// Why a request was refused for a quota: which one, its value, and when a
/// retry may succeed (`None`: not until something is released or the quota
/// raised).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tenant {tenant:?} is over its {quota} quota of {limit}")]
pub struct QuotaExceeded {
    /// The tenant.
    pub tenant: String,
    /// The quota.
    pub quota: Quota,
    /// Its value in force.
    pub limit: u64,
    /// Seconds after which a retry can succeed, for rates.
    pub retry_after_secs: Option<u32>,
}

impl QuotaExceeded {
    /// A rate quota refused: retry after `wait` (a token bucket's answer;
    /// `Duration::MAX`, never, is told as 60 s), in whole seconds from 1
    /// to 60.
    pub fn rate(tenant: &str, quota: Quota, limit: u64, wait: std::time::Duration) -> Self {
        let secs = if wait == std::time::Duration::MAX {
            60
        } else {
            wait.as_secs_f64().ceil().clamp(1.0, 60.0) as u32
        };
        Self {
            tenant: tenant.to_owned(),
            quota,
            limit,
            retry_after_secs: Some(secs),
        }
    }
}

/// How many of something each tenant holds right now (streams, pending
/// commands), against a quota. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct TenantCounter {
    counts: std::sync::Arc<std::sync::Mutex<BTreeMap<String, u64>>>,
}

/// One unit a tenant holds; given back when dropped.
#[derive(Debug)]
pub struct TenantSlot {
    counter: TenantCounter,
    tenant: String,
}

impl TenantCounter {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a unit for `tenant`, unless it already holds `limit` of
    /// `quota`. Returns the slot and how many the tenant holds with it.
    pub fn try_acquire(
        &self,
        tenant: &str,
        quota: Quota,
        limit: u64,
    ) -> Result<(TenantSlot, u64), QuotaExceeded> {
        self.try_acquire_within(tenant, limit)
            .ok_or_else(|| QuotaExceeded {
                tenant: tenant.to_owned(),
                quota,
                limit,
                retry_after_secs: None,
            })
    }

    /// Takes a unit for `tenant`, unless it already holds `limit`: for a
    /// platform limit per tenant that is not one of the tenant's quotas
    /// (for example the API's requests in flight). Returns the slot and how
    /// many the tenant holds with it.
    pub fn try_acquire_within(&self, tenant: &str, limit: u64) -> Option<(TenantSlot, u64)> {
        let mut counts = self.lock();
        let held = counts.get(tenant).copied().unwrap_or(0);
        if held >= limit {
            return None;
        }
        counts.insert(tenant.to_owned(), held + 1);
        let slot = TenantSlot {
            counter: self.clone(),
            tenant: tenant.to_owned(),
        };
        Some((slot, held + 1))
    }

    /// How many `tenant` holds.
    pub fn held(&self, tenant: &str) -> u64 {
        self.lock().get(tenant).copied().unwrap_or(0)
    }
}

impl Drop for TenantSlot {
    fn drop(&mut self) {
        let mut counts = self.counter.lock();
        if let Some(n) = counts.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_holds_at_most_its_limit_and_gets_slots_back() {
        let counter = TenantCounter::default();
        let (a, held) = counter.try_acquire_within("acme", 2).unwrap();
        assert_eq!(held, 1);
        let _b = counter.try_acquire_within("acme", 2).unwrap();
        assert!(counter.try_acquire_within("acme", 2).is_none());
        assert!(
            counter.try_acquire_within("globex", 2).is_some(),
            "others are not held back"
        );
        drop(a);
        assert_eq!(counter.held("acme"), 1);
        assert!(counter.try_acquire_within("acme", 2).is_some());
    }

    #[test]
    fn names_round_trip_and_unknown_names_list_the_known_ones() {
        for q in Quota::ALL {
            assert_eq!(q.name().parse::<Quota>(), Ok(*q));
            assert_eq!(q.name().replace('_', "-").parse::<Quota>(), Ok(*q));
        }
        let err = "conections".parse::<Quota>().unwrap_err().to_string();
        assert!(
            err.contains("connections") && err.contains("live_streams"),
            "{err}"
        );
    }

    #[test]
    fn serialized_as_the_values_set() {
        let q = Quotas::from_named([("connections", 50), ("bytes_per_sec", 1024)]).unwrap();
        let json = serde_json::to_string(&q).unwrap();
        assert_eq!(json, r#"{"connections":50,"bytes_per_sec":1024}"#);
        let back: Quotas = serde_json::from_str(&json).unwrap();
        assert_eq!(back, q);
        assert_eq!(back.get(Quota::Sessions), Quota::Sessions.default_value());
        assert_eq!(back.overrides().count(), 2);
        assert_eq!(back.effective().count(), Quota::ALL.len());
    }

    #[test]
    fn values_are_bounded() {
        let mut q = Quotas::default();
        assert!(q.set(Quota::Connections, 0).is_ok(), "zero suspends");
        assert!(q.set(Quota::MessagesBurst, 0).is_err());
        assert!(q.set(Quota::Devices, MAX_QUOTA + 1).is_err());
        q.clear(Quota::Connections);
        assert_eq!(
            q.get(Quota::Connections),
            Quota::Connections.default_value()
        );
    }

    #[test]
    fn a_counter_holds_each_tenant_to_its_limit() {
        let c = TenantCounter::default();
        let (a1, n) = c.try_acquire("a", Quota::LiveStreams, 2).unwrap();
        assert_eq!(n, 1);
        let (_a2, _) = c.try_acquire("a", Quota::LiveStreams, 2).unwrap();
        let e = c.try_acquire("a", Quota::LiveStreams, 2).unwrap_err();
        assert_eq!((e.quota, e.limit), (Quota::LiveStreams, 2));
        assert!(
            c.try_acquire("b", Quota::LiveStreams, 2).is_ok(),
            "other tenants"
        );
        drop(a1);
        assert_eq!(c.held("a"), 1);
        assert!(c.try_acquire("a", Quota::LiveStreams, 2).is_ok());
    }
}
