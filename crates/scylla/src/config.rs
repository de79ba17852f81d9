//! Connection, keyspace and write settings, from a config file or a URL.
//!
//! ```
//! use tributary_scylla::{ConsistencyLevel, Replication, ScyllaConfig};
//!
//! let config = ScyllaConfig::from_url(
//!     "scylla://node1:9042,node2:9042/tributary?rf=3&consistency=local_quorum",
//! )?;
//! assert_eq!(config.nodes, ["node1:9042", "node2:9042"]);
//! assert_eq!(config.keyspace, "tributary");
//! assert_eq!(config.consistency, ConsistencyLevel::LocalQuorum);
//! assert_eq!(
//!     config.replication.to_cql(),
//!     "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}"
//! );
//!
//! // A single development node.
//! let dev = ScyllaConfig::from_url("scylla://127.0.0.1/dev?replication=simple&rf=1")?;
//! assert_eq!(dev.replication, Replication::SimpleStrategy { replication_factor: 1 });
//! # Ok::<(), tributary_scylla::ScyllaError>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use scylla::statement::{Consistency, SerialConsistency};
use serde::{Deserialize, Serialize};

use crate::ScyllaError;

/// The CQL port nodes listen on when a node names none.
pub const DEFAULT_PORT: u16 = 9042;

/// The longest TTL ScyllaDB and Cassandra accept: 20 years, in seconds.
pub const MAX_TTL_SECS: u32 = 630_720_000;

/// Longest keyspace name the server accepts.
const MAX_KEYSPACE_LEN: usize = 48;

/// Settings of the ScyllaDB backends. Parse one from a URL with
/// [`ScyllaConfig::from_url`], or deserialize it from a config file (every
/// field has a default; durations are strings such as `"10s"` or `"90d"`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScyllaConfig {
    /// Contact points, `host:port` (`[v6 address]:port` for IPv6). The driver
    /// discovers the rest of the cluster from them.
    pub nodes: Vec<String>,
    /// The keyspace holding every table; created at start-up when missing.
    /// Lower case letters, digits and `_`, starting with a letter, at most 48.
    pub keyspace: String,
    /// Replication of the keyspace, used when it is created. An existing
    /// keyspace keeps its own (change it with `ALTER KEYSPACE` and a repair).
    pub replication: Replication,
    /// The datacenter this process runs in: coordinators are picked there,
    /// and the `LOCAL_*` consistency levels count its replicas. Set it on
    /// multi-datacenter clusters.
    pub local_datacenter: Option<String>,
    /// Consistency level of every read and write.
    pub consistency: ConsistencyLevel,
    /// Consistency level of the Paxos phase of the registry's conditional
    /// writes (lightweight transactions).
    pub serial_consistency: SerialConsistencyLevel,
    /// How long points are kept, such as `"90d"`; `null` keeps them forever.
    /// Each point is written with the TTL that remains of it, and the
    /// `points` table is created with it as `default_time_to_live`. At most
    /// 20 years (the server's TTL limit).
    #[serde(with = "opt_duration")]
    pub retention: Option<Duration>,
    /// How long one request may take, retries included, before it fails.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// How long connecting to a node may take.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Most requests one store (or registry store) has in flight at once.
    /// A request that finds them all taken waits up to `queue_timeout`.
    pub max_in_flight: usize,
    /// How long a request waits for an in-flight slot before the call fails
    /// with backpressure.
    #[serde(with = "duration")]
    pub queue_timeout: Duration,
    /// Most rows in one UNLOGGED batch (every batch holds one partition).
    pub max_batch_rows: usize,
    /// Most bytes of values in one batch, kept under the server's
    /// `batch_size_warn_threshold_in_kb` (128 KiB by default).
    pub max_batch_bytes: usize,
    /// Most entries of the cache that remembers which (series, day) index
    /// rows this process already wrote, so that each is written once rather
    /// than with every batch. About 40 bytes an entry.
    pub index_cache_entries: usize,
    /// User name and password, when the cluster requires authentication.
    pub credentials: Option<Credentials>,
}

impl Default for ScyllaConfig {
    fn default() -> Self {
        Self {
            nodes: vec![format!("127.0.0.1:{DEFAULT_PORT}")],
            keyspace: "tributary".into(),
            replication: Replication::default(),
            local_datacenter: None,
            consistency: ConsistencyLevel::LocalQuorum,
            serial_consistency: SerialConsistencyLevel::LocalSerial,
            retention: Some(Duration::from_secs(90 * 86_400)),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            max_in_flight: 512,
            queue_timeout: Duration::from_secs(5),
            max_batch_rows: 100,
            max_batch_bytes: 64 * 1024,
            index_cache_entries: 1 << 18,
            credentials: None,
        }
    }
}

impl fmt::Debug for ScyllaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScyllaConfig")
            .field("nodes", &self.nodes)
            .field("keyspace", &self.keyspace)
            .field("replication", &self.replication)
            .field("local_datacenter", &self.local_datacenter)
            .field("consistency", &self.consistency)
            .field("serial_consistency", &self.serial_consistency)
            .field("retention", &self.retention)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("queue_timeout", &self.queue_timeout)
            .field("max_batch_rows", &self.max_batch_rows)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("index_cache_entries", &self.index_cache_entries)
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// A user name and password (plain-text authentication).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password; never printed by `Debug`.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The replication of the keyspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "class", deny_unknown_fields)]
pub enum Replication {
    /// One ring, no datacenter awareness: for a development node or a test.
    SimpleStrategy {
        /// Copies of each partition.
        replication_factor: u32,
    },
    /// Datacenter-aware replication: what production clusters use.
    NetworkTopologyStrategy {
        /// Copies in every datacenter not named in `datacenters`.
        #[serde(default)]
        replication_factor: Option<u32>,
        /// Copies per named datacenter.
        #[serde(default)]
        datacenters: BTreeMap<String, u32>,
    },
}

impl Default for Replication {
    fn default() -> Self {
        Self::NetworkTopologyStrategy {
            replication_factor: Some(3),
            datacenters: BTreeMap::new(),
        }
    }
}

impl Replication {
    /// The CQL map of `CREATE KEYSPACE ... WITH replication = <map>`.
    pub fn to_cql(&self) -> String {
        match self {
            Self::SimpleStrategy { replication_factor } => {
                format!("{{'class': 'SimpleStrategy', 'replication_factor': {replication_factor}}}")
            }
            Self::NetworkTopologyStrategy {
                replication_factor,
                datacenters,
            } => {
                let mut out = String::from("{'class': 'NetworkTopologyStrategy'");
                if let Some(rf) = replication_factor {
                    out.push_str(&format!(", 'replication_factor': {rf}"));
                }
                for (dc, rf) in datacenters {
                    // Datacenter names are validated to `[A-Za-z0-9_.-]`, so
                    // they never need quoting inside the literal.
                    out.push_str(&format!(", '{dc}': {rf}"));
                }
                out.push('}');
                out
            }
        }
    }

    fn validate(&self) -> Result<(), String> {
        match self {
            Self::SimpleStrategy { replication_factor } => {
                if *replication_factor == 0 {
                    return Err("replication_factor must be at least 1".into());
                }
            }
            Self::NetworkTopologyStrategy {
                replication_factor,
                datacenters,
            } => {
                if replication_factor.is_none() && datacenters.is_empty() {
                    return Err(
                        "NetworkTopologyStrategy needs a replication_factor or datacenters".into(),
                    );
                }
                if replication_factor.is_some_and(|rf| rf == 0) {
                    return Err("replication_factor must be at least 1".into());
                }
                for name in datacenters.keys() {
                    validate_datacenter(name)?;
                }
            }
        }
        Ok(())
    }
}

/// A consistency level of reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsistencyLevel {
    /// Writes only: any node, hints included.
    Any,
    /// One replica.
    One,
    /// Two replicas.
    Two,
    /// Three replicas.
    Three,
    /// A majority of all replicas.
    Quorum,
    /// Every replica.
    All,
    /// A majority of the replicas in the local datacenter (the default).
    LocalQuorum,
    /// A majority in each datacenter.
    EachQuorum,
    /// One replica in the local datacenter.
    LocalOne,
}

impl ConsistencyLevel {
    /// The driver's value.
    pub fn to_driver(self) -> Consistency {
        match self {
            Self::Any => Consistency::Any,
            Self::One => Consistency::One,
            Self::Two => Consistency::Two,
            Self::Three => Consistency::Three,
            Self::Quorum => Consistency::Quorum,
            Self::All => Consistency::All,
            Self::LocalQuorum => Consistency::LocalQuorum,
            Self::EachQuorum => Consistency::EachQuorum,
            Self::LocalOne => Consistency::LocalOne,
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "any" => Self::Any,
            "one" => Self::One,
            "two" => Self::Two,
            "three" => Self::Three,
            "quorum" => Self::Quorum,
            "all" => Self::All,
            "local_quorum" => Self::LocalQuorum,
            "each_quorum" => Self::EachQuorum,
            "local_one" => Self::LocalOne,
            _ => return None,
        })
    }
}

/// The consistency level of the Paxos phase of lightweight transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SerialConsistencyLevel {
    /// Linearizable across every datacenter.
    Serial,
    /// Linearizable within the local datacenter (the default).
    LocalSerial,
}

impl SerialConsistencyLevel {
    /// The driver's value.
    pub fn to_driver(self) -> SerialConsistency {
        match self {
            Self::Serial => SerialConsistency::Serial,
            Self::LocalSerial => SerialConsistency::LocalSerial,
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "serial" => Some(Self::Serial),
            "local_serial" => Some(Self::LocalSerial),
            _ => None,
        }
    }
}

impl ScyllaConfig {
    /// Parses a URL of the form
    /// `scylla://[user[:password]@]host[:port][,host[:port]...][/keyspace][?param=value&...]`.
    ///
    /// The port defaults to 9042 and the keyspace to `tributary`; user and
    /// password may be percent-encoded. Parameters (any other is an error):
    ///
    /// | parameter | meaning |
    /// | --- | --- |
    /// | `rf=N` | replication factor |
    /// | `replication=simple\|network_topology` | the replication strategy (default `network_topology`) |
    /// | `dc.NAME=N` | copies in datacenter `NAME` (network topology) |
    /// | `local_dc=NAME` | [`ScyllaConfig::local_datacenter`] |
    /// | `consistency=local_quorum\|quorum\|one\|...` | [`ScyllaConfig::consistency`] |
    /// | `serial_consistency=local_serial\|serial` | [`ScyllaConfig::serial_consistency`] |
    /// | `retention=90d\|none` | [`ScyllaConfig::retention`] |
    /// | `request_timeout=10s` | [`ScyllaConfig::request_timeout`] |
    /// | `connect_timeout=5s` | [`ScyllaConfig::connect_timeout`] |
    /// | `max_in_flight=N` | [`ScyllaConfig::max_in_flight`] |
    /// | `queue_timeout=5s` | [`ScyllaConfig::queue_timeout`] |
    ///
    /// The result is validated.
    pub fn from_url(url: &str) -> Result<Self, ScyllaError> {
        let bad = |msg: String| ScyllaError::Config(format!("{}: {msg}", redact_url(url)));
        let rest = url
            .strip_prefix("scylla://")
            .ok_or_else(|| bad("the URL must start with scylla://".into()))?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, p),
            None => (rest, ""),
        };
        let mut config = ScyllaConfig::default();
        let hosts = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let username = percent_decode(user).map_err(&bad)?;
                if username.is_empty() {
                    return Err(bad("empty user name".into()));
                }
                config.credentials = Some(Credentials {
                    username,
                    password: percent_decode(password).map_err(&bad)?,
                });
                hosts
            }
            None => authority,
        };
        config.nodes = hosts
            .split(',')
            .map(parse_node)
            .collect::<Result<_, _>>()
            .map_err(&bad)?;
        if !path.is_empty() {
            config.keyspace = path.trim_end_matches('/').to_owned();
        }

        let mut rf: Option<u32> = None;
        let mut simple = false;
        let mut datacenters = BTreeMap::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| bad(format!("parameter {pair:?} has no value")))?;
            let value = percent_decode(value).map_err(&bad)?;
            let number = |what: &str| -> Result<u64, ScyllaError> {
                value
                    .parse::<u64>()
                    .map_err(|_| bad(format!("{what} must be a whole number, got {value:?}")))
            };
            let dur = |what: &str| -> Result<Duration, ScyllaError> {
                duration::parse(&value).ok_or_else(|| {
                    bad(format!(
                        "{what} must be a duration such as 10s, got {value:?}"
                    ))
                })
            };
            match key {
                "rf" => {
                    let n = number("rf")?;
                    rf = Some(u32::try_from(n).map_err(|_| bad(format!("rf {n} is too large")))?);
                }
                "replication" => match value.as_str() {
                    "simple" | "SimpleStrategy" => simple = true,
                    "network_topology" | "NetworkTopologyStrategy" => simple = false,
                    other => {
                        return Err(bad(format!(
                            "replication must be simple or network_topology, got {other:?}"
                        )));
                    }
                },
                "local_dc" => config.local_datacenter = Some(value.clone()),
                "consistency" => {
                    config.consistency = ConsistencyLevel::parse(&value)
                        .ok_or_else(|| bad(format!("unknown consistency level {value:?}")))?;
                }
                "serial_consistency" => {
                    config.serial_consistency = SerialConsistencyLevel::parse(&value)
                        .ok_or_else(|| bad(format!("unknown serial consistency {value:?}")))?;
                }
                "retention" => {
                    config.retention = if value == "none" {
                        None
                    } else {
                        Some(dur("retention")?)
                    };
                }
                "request_timeout" => config.request_timeout = dur("request_timeout")?,
                "connect_timeout" => config.connect_timeout = dur("connect_timeout")?,
                "queue_timeout" => config.queue_timeout = dur("queue_timeout")?,
                "max_in_flight" => {
                    let n = number("max_in_flight")?;
                    config.max_in_flight = usize::try_from(n)
                        .map_err(|_| bad(format!("max_in_flight {n} is too large")))?;
                }
                other => match other.strip_prefix("dc.") {
                    Some(dc) => {
                        let n = number(other)?;
                        let n = u32::try_from(n)
                            .map_err(|_| bad(format!("{other} {n} is too large")))?;
                        datacenters.insert(dc.to_owned(), n);
                    }
                    None => return Err(bad(format!("unknown parameter {other:?}"))),
                },
            }
        }
        if simple {
            if !datacenters.is_empty() {
                return Err(bad("dc.NAME applies to network_topology replication".into()));
            }
            config.replication = Replication::SimpleStrategy {
                replication_factor: rf.unwrap_or(1),
            };
        } else if rf.is_some() || !datacenters.is_empty() {
            config.replication = Replication::NetworkTopologyStrategy {
                replication_factor: rf,
                datacenters,
            };
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), ScyllaError> {
        let bad = |msg: String| Err(ScyllaError::Config(msg));
        if self.nodes.is_empty() {
            return bad("at least one node is needed".into());
        }
        for node in &self.nodes {
            if let Err(e) = parse_node(node) {
                return bad(e);
            }
        }
        if let Err(e) = validate_keyspace(&self.keyspace) {
            return bad(e);
        }
        if let Err(e) = self.replication.validate() {
            return bad(e);
        }
        if let Some(dc) = &self.local_datacenter
            && let Err(e) = validate_datacenter(dc)
        {
            return bad(e);
        }
        if let Some(r) = self.retention
            && (r < Duration::from_secs(1) || r.as_secs() > u64::from(MAX_TTL_SECS))
        {
            return bad(format!(
                "retention must be between 1 s and {MAX_TTL_SECS} s (20 years, the server's TTL limit)"
            ));
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return bad("timeouts must be positive".into());
        }
        if !(1..=65_536).contains(&self.max_in_flight) {
            return bad("max_in_flight must be within 1..=65536".into());
        }
        if !(1..=1000).contains(&self.max_batch_rows) {
            return bad("max_batch_rows must be within 1..=1000".into());
        }
        if !(1024..=1024 * 1024).contains(&self.max_batch_bytes) {
            return bad("max_batch_bytes must be within 1024..=1048576".into());
        }
        if self.index_cache_entries > 100_000_000 {
            return bad("index_cache_entries must be at most 100000000".into());
        }
        Ok(())
    }

    /// The retention in nanoseconds, if any.
    #[cfg(test)]
    pub(crate) fn retention_ns(&self) -> Option<i64> {
        self.retention
            .map(|r| i64::try_from(r.as_nanos()).unwrap_or(i64::MAX))
    }

    /// The `default_time_to_live` of the `points` table, in seconds.
    pub(crate) fn default_ttl_secs(&self) -> u32 {
        self.retention.map_or(0, |r| {
            u32::try_from(r.as_secs()).map_or(MAX_TTL_SECS, |s| s.min(MAX_TTL_SECS))
        })
    }
}

/// Checks a `host:port` node and returns it unchanged (with the default
/// port appended when it has none).
pub(crate) fn parse_node(node: &str) -> Result<String, String> {
    let node = node.trim();
    if node.is_empty() {
        return Err("empty node address".into());
    }
    let (host, port) = if let Some(v6) = node.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("node {node:?}: unclosed '['"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("node {node:?}: expected :port after ']'"))?,
            ),
        };
        (format!("[{addr}]"), port)
    } else {
        match node.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (node.to_owned(), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err(format!("node {node:?} has no host"));
    }
    if host.contains([':', '/', '@', '?', ' ']) && !host.starts_with('[') {
        return Err(format!("node {node:?}: invalid host"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("node {node:?}: invalid port {p:?}"))?,
    };
    Ok(format!("{host}:{port}"))
}

/// Keyspace names go into CQL text unquoted, so they are restricted to what
/// needs no quoting: lower case letters, digits and `_`, starting with a letter.
pub(crate) fn validate_keyspace(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_KEYSPACE_LEN
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "keyspace {name:?} must be 1 to {MAX_KEYSPACE_LEN} lower case letters, digits or '_', starting with a letter"
        ))
    }
}

/// Datacenter names go into the replication map literal: `[A-Za-z0-9_.-]`.
fn validate_datacenter(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "datacenter name {name:?} must be letters, digits, '_', '.' or '-'"
        ))
    }
}

/// Decodes `%XX` escapes (and nothing else: `+` stays `+`).
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "invalid percent escape".to_owned())?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "percent escapes are not UTF-8".to_owned())
}

/// The URL with any password replaced, for error messages.
fn redact_url(url: &str) -> String {
    let Some(rest) = url.strip_prefix("scylla://") else {
        return "<not a scylla:// URL>".into();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, _)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            let hosts_start = userinfo.len() + 1;
            format!("scylla://{user}:***@{}", &rest[hosts_start..])
        }
        _ => url.to_owned(),
    }
}

pub(crate) mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// Formats a duration in the largest unit that divides it (`90d`, `10s`).
    pub(crate) fn format(d: Duration) -> String {
        let ns = d.as_nanos();
        const UNITS: [(&str, u128); 6] = [
            ("d", 86_400_000_000_000),
            ("h", 3_600_000_000_000),
            ("m", 60_000_000_000),
            ("s", 1_000_000_000),
            ("ms", 1_000_000),
            ("us", 1_000),
        ];
        for (unit, size) in UNITS {
            if ns >= size && ns.is_multiple_of(size) {
                return format!("{}{unit}", ns / size);
            }
        }
        format!("{ns}ns")
    }

    pub(crate) fn parse(s: &str) -> Option<Duration> {
        let ns = tributary_core::time::parse_duration(s)?;
        u64::try_from(ns).ok().map(Duration::from_nanos)
    }

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).ok_or_else(|| {
            D::Error::custom(format!("invalid duration {s:?}, expected e.g. \"10s\""))
        })
    }
}

mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&super::duration::format(*d)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => super::duration::parse(&s).map(Some).ok_or_else(|| {
                D::Error::custom(format!("invalid duration {s:?}, expected e.g. \"90d\""))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(url: &str) -> String {
        match ScyllaConfig::from_url(url) {
            Err(ScyllaError::Config(msg)) => msg,
            other => panic!("{url}: expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn the_documented_url_parses() {
        let c = ScyllaConfig::from_url(
            "scylla://node1:9042,node2:9042/tributary?rf=3&consistency=local_quorum",
        )
        .expect("valid URL");
        assert_eq!(c.nodes, ["node1:9042", "node2:9042"]);
        assert_eq!(c.keyspace, "tributary");
        assert_eq!(c.consistency, ConsistencyLevel::LocalQuorum);
        assert_eq!(
            c.replication,
            Replication::NetworkTopologyStrategy {
                replication_factor: Some(3),
                datacenters: BTreeMap::new()
            }
        );
        assert_eq!(c.credentials, None);
    }

    #[test]
    fn defaults_fill_what_the_url_leaves_out() {
        let c = ScyllaConfig::from_url("scylla://db").expect("valid URL");
        assert_eq!(c.nodes, ["db:9042"]);
        assert_eq!(c.keyspace, "tributary");
        assert_eq!(c.replication, Replication::default());
        assert_eq!(c.consistency, ConsistencyLevel::LocalQuorum);
        assert_eq!(c.serial_consistency, SerialConsistencyLevel::LocalSerial);
        assert_eq!(c.retention, Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(
            c,
            ScyllaConfig::from_url("scylla://db:9042/").expect("valid")
        );
    }

    #[test]
    fn every_parameter_is_understood() {
        let c = ScyllaConfig::from_url(
            "scylla://app:p%40ss%3Aword@[::1]:19042,10.0.0.2/iot_prod?dc.eu-west=3&dc.us_east=2\
             &local_dc=eu-west&consistency=QUORUM&serial_consistency=serial&retention=30d\
             &request_timeout=2s&connect_timeout=750ms&max_in_flight=64&queue_timeout=1s",
        )
        .expect("valid URL");
        assert_eq!(c.nodes, ["[::1]:19042", "10.0.0.2:9042"]);
        assert_eq!(c.keyspace, "iot_prod");
        let creds = c.credentials.clone().expect("credentials");
        assert_eq!(creds.username, "app");
        assert_eq!(creds.password, "p@ss:word");
        assert_eq!(
            c.replication.to_cql(),
            "{'class': 'NetworkTopologyStrategy', 'eu-west': 3, 'us_east': 2}"
        );
        assert_eq!(c.local_datacenter.as_deref(), Some("eu-west"));
        assert_eq!(c.consistency, ConsistencyLevel::Quorum);
        assert_eq!(c.serial_consistency, SerialConsistencyLevel::Serial);
        assert_eq!(c.retention, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(c.request_timeout, Duration::from_secs(2));
        assert_eq!(c.connect_timeout, Duration::from_millis(750));
        assert_eq!(c.max_in_flight, 64);
        assert_eq!(c.queue_timeout, Duration::from_secs(1));
        assert!(
            !format!("{c:?}").contains("p@ss"),
            "Debug never prints the password"
        );
    }

    #[test]
    fn simple_replication_for_a_dev_node() {
        let c =
            ScyllaConfig::from_url("scylla://127.0.0.1/dev?replication=simple").expect("valid URL");
        assert_eq!(
            c.replication.to_cql(),
            "{'class': 'SimpleStrategy', 'replication_factor': 1}"
        );
        let c =
            ScyllaConfig::from_url("scylla://127.0.0.1/dev?replication=simple&rf=2&retention=none")
                .expect("valid URL");
        assert_eq!(
            c.replication,
            Replication::SimpleStrategy {
                replication_factor: 2
            }
        );
        assert_eq!(c.retention, None);
        assert_eq!(c.default_ttl_secs(), 0);
    }

    #[test]
    fn bad_urls_name_what_is_wrong_and_hide_the_password() {
        assert!(err("http://db/ks").contains("scylla://"));
        assert!(err("scylla://db/Bad-Name").contains("keyspace"));
        assert!(err(&format!("scylla://db/{}", "k".repeat(49))).contains("keyspace"));
        assert!(err("scylla://db:0/ks").contains("invalid port"));
        assert!(err("scylla://db:x/ks").contains("invalid port"));
        assert!(err("scylla://db,,db2/ks").contains("empty node"));
        assert!(err("scylla://[::1/ks").contains("unclosed"));
        assert!(err("scylla://db/ks?rf=0").contains("at least 1"));
        assert!(err("scylla://db/ks?rf=three").contains("whole number"));
        assert!(err("scylla://db/ks?consistency=most").contains("unknown consistency"));
        assert!(err("scylla://db/ks?colour=blue").contains("unknown parameter"));
        assert!(err("scylla://db/ks?rf").contains("no value"));
        assert!(err("scylla://db/ks?dc.x'y=1").contains("datacenter name"));
        assert!(err("scylla://db/ks?replication=simple&dc.a=1").contains("network_topology"));
        assert!(err("scylla://db/ks?retention=21000d").contains("20 years"));
        assert!(err("scylla://db/ks?retention=soon").contains("duration"));
        assert!(err("scylla://db/ks?max_in_flight=0").contains("max_in_flight"));
        let msg = err("scylla://me:secret@db/ks?colour=blue");
        assert!(!msg.contains("secret"), "{msg}");
        assert!(msg.contains("me:***@db"), "{msg}");
    }

    #[test]
    fn config_files_deserialize_with_defaults_and_refuse_unknown_fields() {
        let c: ScyllaConfig = serde_json::from_str(
            r#"{"nodes": ["a:9042"], "keyspace": "k", "retention": "7d",
                "replication": {"class": "SimpleStrategy", "replication_factor": 1},
                "consistency": "one", "request_timeout": "3s"}"#,
        )
        .expect("valid config");
        assert_eq!(c.retention, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(c.consistency, ConsistencyLevel::One);
        assert_eq!(c.request_timeout, Duration::from_secs(3));
        assert_eq!(c.max_in_flight, ScyllaConfig::default().max_in_flight);
        c.validate().expect("valid");
        let forever: ScyllaConfig =
            serde_json::from_str(r#"{"retention": null}"#).expect("valid config");
        assert_eq!(forever.retention, None);
        assert!(serde_json::from_str::<ScyllaConfig>(r#"{"node": ["a"]}"#).is_err());
        // Round trip through the serializer.
        let json = serde_json::to_string(&c).expect("serializes");
        assert_eq!(
            serde_json::from_str::<ScyllaConfig>(&json).expect("parses"),
            c
        );
    }

    #[test]
    fn the_points_default_ttl_follows_retention() {
        let mut c = ScyllaConfig::default();
        assert_eq!(c.default_ttl_secs(), 90 * 86_400);
        c.retention = Some(Duration::from_millis(1500));
        assert_eq!(c.default_ttl_secs(), 1);
        assert_eq!(c.retention_ns(), Some(1_500_000_000));
    }
}
