//! Retention: how long each kind of a tenant's data is kept.
//!
//! A tenant's settings may name a retention for its raw points (`raw`) and
//! for each rollup tier (by width: `1m`, `1h`, `1d`), for example
//! `raw=30d 1m=1y 1h=forever`. A kind the tenant does not name keeps the
//! platform default: the store's `--retention` for raw points, for ever for
//! rollups. [`RetentionPolicy`] holds what every tenant resolved to, and is
//! shared by the store (which drops expired data), the processor (which
//! does not recompute a rollup from data already gone) and the query
//! service (which says where an answer's data ends).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, PoisonError, RwLock};

use serde::{Deserialize, Serialize};

use crate::rollup::{Tiers, width_name};
use crate::time::{NS_PER_DAY, NS_PER_SEC};

/// Shortest retention a tenant may set: one hour.
pub const MIN_RETENTION_NS: i64 = 3600 * NS_PER_SEC;
/// Longest retention a tenant may set: 20 years, ScyllaDB's TTL limit.
pub const MAX_RETENTION_NS: i64 = 630_720_000 * NS_PER_SEC;

/// `s` quoted for an error message, cut at 64 characters: a client's text
/// is never echoed whole.
fn quoted(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((at, _)) => format!("{:?}…", &s[..at]),
        None => format!("{s:?}"),
    }
}

/// How long one kind of data is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Keep {
    /// This long, in nanoseconds (positive).
    For(i64),
    /// For ever.
    Forever,
}

impl Keep {
    /// From an optional duration: `None` is for ever.
    pub fn from_duration(d: Option<std::time::Duration>) -> Self {
        match d.map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)) {
            Some(ns) if ns > 0 => Self::For(ns),
            _ => Self::Forever,
        }
    }

    /// The retention in nanoseconds; `None` for ever.
    pub fn ns(self) -> Option<i64> {
        match self {
            Self::For(ns) => Some(ns),
            Self::Forever => None,
        }
    }

    /// Data older than this, at `now_ns`, is expired (`i64::MIN` for ever).
    pub fn floor(self, now_ns: i64) -> i64 {
        match self {
            Self::For(ns) => now_ns.saturating_sub(ns),
            Self::Forever => i64::MIN,
        }
    }
}

impl Keep {
    /// The first bucket of width `width_ns` still kept at `now_ns`: older
    /// buckets end at or before the floor (`i64::MIN` for ever).
    pub fn bucket_floor(self, now_ns: i64, width_ns: i64) -> i64 {
        match self {
            Self::For(_) => {
                let floor = self.floor(now_ns);
                floor.saturating_sub(floor.rem_euclid(width_ns.max(1)))
            }
            Self::Forever => i64::MIN,
        }
    }
}

impl fmt::Display for Keep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Forever => f.write_str("forever"),
            Self::For(ns) if ns % (365 * NS_PER_DAY) == 0 => {
                write!(f, "{}y", ns / (365 * NS_PER_DAY))
            }
            Self::For(ns) if ns % NS_PER_DAY == 0 => write!(f, "{}d", ns / NS_PER_DAY),
            Self::For(ns) if ns % (3600 * NS_PER_SEC) == 0 => {
                write!(f, "{}h", ns / (3600 * NS_PER_SEC))
            }
            Self::For(ns) if ns % NS_PER_SEC == 0 => write!(f, "{}s", ns / NS_PER_SEC),
            Self::For(ns) => write!(f, "{ns}ns"),
        }
    }
}

impl FromStr for Keep {
    type Err = String;

    /// `forever`, or a duration from 1h to 20y: `36h`, `30d`, `52w`, `1y`
    /// (365 days).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "forever" {
            return Ok(Self::Forever);
        }
        let ns = match s.strip_suffix('y') {
            Some(years) => years
                .parse::<i64>()
                .ok()
                .and_then(|y| y.checked_mul(365 * NS_PER_DAY))
                .filter(|ns| *ns > 0),
            None => crate::time::parse_duration(s),
        }
        .ok_or_else(|| {
            format!(
                "{} is not a retention such as 30d, 1y or forever",
                quoted(s)
            )
        })?;
        if !(MIN_RETENTION_NS..=MAX_RETENTION_NS).contains(&ns) {
            return Err(format!(
                "a retention of {} is outside 1h to 20y (or forever)",
                quoted(s)
            ));
        }
        Ok(Self::For(ns))
    }
}

/// A kind of data with its own retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DataKind {
    /// Raw points.
    Raw,
    /// The rollup tier of this bucket width, in nanoseconds.
    Rollup(i64),
}

impl fmt::Display for DataKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Raw => f.write_str("raw"),
            Self::Rollup(width) => f.write_str(&width_name(width)),
        }
    }
}

impl FromStr for DataKind {
    type Err = String;

    /// `raw`, or a rollup width such as `1m`, `1h` or `1d` (whole seconds,
    /// 1s to 1d, dividing a day).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "raw" {
            return Ok(Self::Raw);
        }
        let width = crate::time::parse_duration(s).ok_or_else(|| {
            format!(
                "{} is neither raw nor a rollup width such as 1m or 1h",
                quoted(s)
            )
        })?;
        Tiers::new(vec![width]).map_err(|_| {
            format!(
                "{} is not a rollup width (whole seconds from 1s to 1d, dividing a day)",
                quoted(s)
            )
        })?;
        Ok(Self::Rollup(width))
    }
}

/// What a tenant sets: a retention per kind of data. A kind it does not
/// name keeps the platform default. Stored and sent as a map of names to
/// retentions (`{"raw": "30d", "1m": "1y"}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    try_from = "BTreeMap<String, String>",
    into = "BTreeMap<String, String>"
)]
pub struct RetentionSettings(BTreeMap<DataKind, Keep>);

/// Most kinds a tenant may name (raw and six tiers, with room to spare).
pub const MAX_RETENTION_KINDS: usize = 16;

impl RetentionSettings {
    /// From `(kind, retention)` names, checked.
    pub fn from_named<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, String> {
        let mut out = Self::default();
        for (kind, keep) in pairs {
            let kind: DataKind = kind.parse()?;
            let keep: Keep = keep.parse().map_err(|e| format!("{kind}: {e}"))?;
            out.set(kind, keep)?;
        }
        Ok(out)
    }

    /// Sets the retention of `kind`.
    pub fn set(&mut self, kind: DataKind, keep: Keep) -> Result<(), String> {
        if !self.0.contains_key(&kind) && self.0.len() >= MAX_RETENTION_KINDS {
            return Err(format!("at most {MAX_RETENTION_KINDS} retentions"));
        }
        self.0.insert(kind, keep);
        Ok(())
    }

    /// Returns `kind` to the platform default.
    pub fn clear(&mut self, kind: DataKind) {
        self.0.remove(&kind);
    }

    /// The retention set for `kind`, if any.
    pub fn get(&self, kind: DataKind) -> Option<Keep> {
        self.0.get(&kind).copied()
    }

    /// What is set, by kind.
    pub fn iter(&self) -> impl Iterator<Item = (DataKind, Keep)> + '_ {
        self.0.iter().map(|(k, v)| (*k, *v))
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// As names: `{"raw": "30d", "1m": "1y"}`.
    pub fn to_named(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

impl TryFrom<BTreeMap<String, String>> for RetentionSettings {
    type Error = String;

    fn try_from(map: BTreeMap<String, String>) -> Result<Self, String> {
        Self::from_named(map.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }
}

impl From<RetentionSettings> for BTreeMap<String, String> {
    fn from(s: RetentionSettings) -> Self {
        s.to_named()
    }
}

/// What a tenant's data resolves to: its settings over the platform
/// defaults, for the configured tiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Raw points.
    pub raw: Keep,
    /// Each configured tier, finest first: width and retention.
    pub rollups: Vec<(i64, Keep)>,
}

impl Retention {
    /// `settings` over the defaults: `raw_default` for raw points, for ever
    /// for each of `tiers`.
    pub fn resolve(settings: &RetentionSettings, raw_default: Keep, tiers: &Tiers) -> Self {
        Self {
            raw: settings.get(DataKind::Raw).unwrap_or(raw_default),
            rollups: tiers
                .widths()
                .iter()
                .map(|&w| {
                    (
                        w,
                        settings.get(DataKind::Rollup(w)).unwrap_or(Keep::Forever),
                    )
                })
                .collect(),
        }
    }

    /// The retention of the tier of `width` (for ever if not configured).
    pub fn tier(&self, width_ns: i64) -> Keep {
        self.rollups
            .iter()
            .find(|(w, _)| *w == width_ns)
            .map_or(Keep::Forever, |(_, k)| *k)
    }

    /// The longest retention of any kind: how old a point may be and still
    /// be useful.
    pub fn longest(&self) -> Keep {
        self.rollups
            .iter()
            .map(|(_, k)| *k)
            .fold(self.raw, Keep::max)
    }
}

/// Every tenant's [`Retention`], shared by the parts of a process that
/// keep, drop or read data, and replaced as the registry's settings change.
#[derive(Debug)]
pub struct RetentionPolicy {
    raw_default: Keep,
    tiers: Tiers,
    default: Arc<Retention>,
    tenants: RwLock<Arc<HashMap<String, Arc<Retention>>>>,
}

impl RetentionPolicy {
    /// Every tenant at the defaults: `raw_default` for raw points, for ever
    /// for the rollups of `tiers`.
    pub fn new(raw_default: Keep, tiers: Tiers) -> Self {
        let default = Arc::new(Retention::resolve(
            &RetentionSettings::default(),
            raw_default,
            &tiers,
        ));
        Self {
            raw_default,
            tiers,
            default,
            tenants: RwLock::new(Arc::new(HashMap::new())),
        }
    }

    /// The platform default for raw points.
    pub fn raw_default(&self) -> Keep {
        self.raw_default
    }

    /// The configured tiers.
    pub fn tiers(&self) -> &Tiers {
        &self.tiers
    }

    /// What `tenant`'s data resolves to.
    pub fn of(&self, tenant: &str) -> Arc<Retention> {
        self.tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .cloned()
            .unwrap_or_else(|| self.default.clone())
    }

    /// The tenants with settings of their own, and what they resolve to.
    pub fn overrides(&self) -> Arc<HashMap<String, Arc<Retention>>> {
        self.tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// What `settings` resolve to under this policy's defaults.
    pub fn resolve(&self, settings: &RetentionSettings) -> Retention {
        Retention::resolve(settings, self.raw_default, &self.tiers)
    }

    /// Replaces every tenant's settings (tenants not named get the
    /// defaults).
    pub fn replace<'a>(
        &self,
        settings: impl IntoIterator<Item = (&'a str, &'a RetentionSettings)>,
    ) {
        let map: HashMap<String, Arc<Retention>> = settings
            .into_iter()
            .filter(|(_, s)| !s.is_empty())
            .map(|(t, s)| (t.to_owned(), Arc::new(self.resolve(s))))
            .collect();
        *self.tenants.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(map);
    }

    /// Sets one tenant's settings.
    pub fn set(&self, tenant: &str, settings: &RetentionSettings) {
        let mut guard = self.tenants.write().unwrap_or_else(PoisonError::into_inner);
        let mut map = HashMap::clone(&guard);
        if settings.is_empty() {
            map.remove(tenant);
        } else {
            map.insert(tenant.to_owned(), Arc::new(self.resolve(settings)));
        }
        *guard = Arc::new(map);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3600 * NS_PER_SEC;

    #[test]
    fn retentions_parse_and_print() {
        assert_eq!("30d".parse::<Keep>(), Ok(Keep::For(30 * NS_PER_DAY)));
        assert_eq!("1y".parse::<Keep>(), Ok(Keep::For(365 * NS_PER_DAY)));
        assert_eq!("forever".parse::<Keep>(), Ok(Keep::Forever));
        assert_eq!(Keep::For(365 * NS_PER_DAY).to_string(), "1y");
        assert_eq!(Keep::For(36 * H).to_string(), "36h");
        assert!("59m".parse::<Keep>().unwrap_err().contains("1h to 20y"));
        assert!("21y".parse::<Keep>().is_err());
        assert!("0d".parse::<Keep>().is_err());
        assert!("99999999999999999999y".parse::<Keep>().is_err());
        assert!("soon".parse::<Keep>().is_err());
        assert_eq!("1h".parse::<DataKind>(), Ok(DataKind::Rollup(H)));
        assert_eq!("raw".parse::<DataKind>(), Ok(DataKind::Raw));
        assert!(
            "7m".parse::<DataKind>().is_err(),
            "7 minutes do not divide a day"
        );
        assert!("2d".parse::<DataKind>().is_err());
    }

    #[test]
    fn settings_round_trip_through_their_stored_form() {
        let s = RetentionSettings::from_named([("raw", "30d"), ("1m", "1y"), ("1h", "forever")])
            .expect("valid");
        let json = serde_json::to_string(&s).expect("serialize");
        assert_eq!(json, r#"{"1h":"forever","1m":"1y","raw":"30d"}"#);
        let back: RetentionSettings = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, s);
        assert!(serde_json::from_str::<RetentionSettings>(r#"{"raw":"1s"}"#).is_err());
    }

    #[test]
    fn a_tenant_resolves_over_the_defaults() {
        let policy = RetentionPolicy::new(Keep::For(90 * NS_PER_DAY), Tiers::default());
        let settings = RetentionSettings::from_named([("raw", "7d"), ("1m", "1y")]).expect("valid");
        policy.replace([("acme", &settings)]);
        let acme = policy.of("acme");
        assert_eq!(acme.raw, Keep::For(7 * NS_PER_DAY));
        assert_eq!(acme.tier(60 * NS_PER_SEC), Keep::For(365 * NS_PER_DAY));
        assert_eq!(acme.tier(H), Keep::Forever);
        assert_eq!(acme.longest(), Keep::Forever);
        let other = policy.of("other");
        assert_eq!(other.raw, Keep::For(90 * NS_PER_DAY));
        policy.set("acme", &RetentionSettings::default());
        assert_eq!(policy.of("acme").raw, Keep::For(90 * NS_PER_DAY));
        let none = RetentionPolicy::new(Keep::For(NS_PER_DAY), Tiers::none());
        assert_eq!(none.of("x").longest(), Keep::For(NS_PER_DAY));
        assert_eq!(Keep::For(NS_PER_DAY).floor(10 * NS_PER_DAY), 9 * NS_PER_DAY);
        assert_eq!(Keep::Forever.floor(10), i64::MIN);
        assert_eq!(Keep::For(H).bucket_floor(10 * H + 5, 4 * H), 8 * H);
        assert_eq!(Keep::Forever.bucket_floor(10, 4), i64::MIN);
        assert!(Keep::For(H).bucket_floor(i64::MIN + 1, H) <= i64::MIN + H);
    }
}
