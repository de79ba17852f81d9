//! Silences: an operator's "not now" for a rule's alerts, on one device or
//! on all of them, until a time. A silenced alert is still evaluated,
//! appended to the alerts log and listed; its transitions carry the
//! silence's end (`silenced_until_ns`), and deliveries skip them.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The longest a silence may last from its creation.
pub const MAX_SILENCE_NS: i64 = 90 * 24 * 3600 * 1_000_000_000;

/// One silence, as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    pub tenant: String,
    /// Its key within the tenant: `<rule>/<device>`, or `<rule>/*` for
    /// every device ([`Silence::key_of`]).
    pub key: String,
    pub rule: String,
    /// Empty = every device of the rule.
    pub device: String,
    /// In force until then, ns since the epoch.
    pub until_ns: i64,
    pub comment: String,
    pub created_by: String,
    pub created_at_ns: i64,
    /// Incremented on every write.
    pub revision: u64,
}

impl Silence {
    /// The key of the silence of `rule` on `device` (empty = every device).
    /// Neither rule names nor device ids may hold `/` or `*`.
    pub fn key_of(rule: &str, device: &str) -> String {
        if device.is_empty() {
            format!("{rule}/*")
        } else {
            format!("{rule}/{device}")
        }
    }

    /// Whether it is still in force at `now_ns`.
    pub fn active(&self, now_ns: i64) -> bool {
        self.until_ns > now_ns
    }
}

/// The silences in force, indexed for one lookup per transition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Silences {
    /// (tenant, rule) → (device or empty, until).
    by_rule: HashMap<(String, String), Vec<(String, i64)>>,
}

impl Silences {
    pub fn new(silences: &[Silence]) -> Self {
        let mut by_rule: HashMap<(String, String), Vec<(String, i64)>> = HashMap::new();
        for s in silences {
            by_rule
                .entry((s.tenant.clone(), s.rule.clone()))
                .or_default()
                .push((s.device.clone(), s.until_ns));
        }
        Self { by_rule }
    }

    /// Until when the alerts of `rule` on `device` are silenced at
    /// `now_ns`: the latest end of the silences covering them, if any is in
    /// force.
    pub fn until(&self, tenant: &str, rule: &str, device: &str, now_ns: i64) -> Option<i64> {
        self.by_rule
            .get(&(tenant.to_owned(), rule.to_owned()))?
            .iter()
            .filter(|(d, until)| (d.is_empty() || d == device) && *until > now_ns)
            .map(|(_, until)| *until)
            .max()
    }

    pub fn is_empty(&self) -> bool {
        self.by_rule.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn silence(rule: &str, device: &str, until_ns: i64) -> Silence {
        Silence {
            tenant: "acme".into(),
            key: Silence::key_of(rule, device),
            rule: rule.into(),
            device: device.into(),
            until_ns,
            comment: String::new(),
            created_by: "ops".into(),
            created_at_ns: 0,
            revision: 1,
        }
    }

    #[test]
    fn a_silence_covers_its_rule_on_its_device_or_every_device_until_it_ends() {
        let s = Silences::new(&[
            silence("warm", "d1", 100),
            silence("warm", "", 50),
            silence("cold", "d2", 100),
        ]);
        assert_eq!(s.until("acme", "warm", "d1", 10), Some(100));
        assert_eq!(s.until("acme", "warm", "d9", 10), Some(50), "every device");
        assert_eq!(s.until("acme", "warm", "d9", 50), None, "ended");
        assert_eq!(s.until("acme", "warm", "d1", 60), Some(100));
        assert_eq!(s.until("acme", "cold", "d1", 10), None, "another device");
        assert_eq!(s.until("other", "warm", "d1", 10), None, "another tenant");
        assert_eq!(s.until("acme", "hot", "d1", 10), None, "another rule");
    }

    #[test]
    fn keys_tell_one_device_from_every_device() {
        assert_eq!(Silence::key_of("warm", "d1"), "warm/d1");
        assert_eq!(Silence::key_of("warm", ""), "warm/*");
    }
}
