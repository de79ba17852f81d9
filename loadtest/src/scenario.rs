//! Scenario files: what to simulate, against which server, for how long.
//!
//! A scenario is a TOML file (see `loadtest/scenarios/`). Every section and
//! field has a default except `[transport]`'s `protocol`; unknown fields are
//! refused so that a typo never silently changes a benchmark. Command-line
//! flags override single fields ([`Overrides`]); `tributary-loadtest check
//! FILE` prints the effective scenario.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The largest fleet one run simulates.
pub const MAX_DEVICES: usize = 1_000_000;
/// The most messages one MQTT connection or HTTP sender keeps unanswered.
pub const MAX_IN_FLIGHT: u32 = 1_024;
/// The most lines (or messages) in one HTTP request.
pub const MAX_BATCH: usize = 100_000;
/// The most metrics in one message.
pub const MAX_METRICS: usize = 1_000;
/// The largest padded payload, in bytes.
pub const MAX_PAYLOAD_SIZE: usize = 16 * 1024 * 1024;
/// The most worker processes.
pub const MAX_WORKERS: usize = 64;
/// The most devices sampled for end-to-end latency.
pub const MAX_E2E_DEVICES: usize = 64;

/// One load scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used in reports and plot titles.
    pub name: String,
    /// What the scenario measures, in a sentence.
    #[serde(default)]
    pub description: String,
    /// The server under test.
    #[serde(default)]
    pub target: TargetConfig,
    /// The simulated fleet.
    #[serde(default)]
    pub devices: DevicesConfig,
    /// How devices talk to the server.
    pub transport: Transport,
    /// How much they send and when.
    #[serde(default)]
    pub load: LoadConfig,
    /// What each message holds.
    #[serde(default)]
    pub payload: PayloadConfig,
    /// What is measured besides throughput and acknowledgement latency.
    #[serde(default)]
    pub measure: MeasureConfig,
}

/// Which kind of server is under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    /// Tributary: devices are provisioned through the registry, `--verify`
    /// and end-to-end latency are available.
    #[default]
    Tributary,
    /// Any MQTT broker (Mosquitto, ...): no registry, no credentials unless a
    /// credentials file gives them.
    MqttBroker,
    /// Any InfluxDB-compatible line-protocol endpoint (InfluxDB 1.x,
    /// VictoriaMetrics): no registry, no credentials.
    Influx,
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tributary => "tributary",
            Self::MqttBroker => "mqtt-broker",
            Self::Influx => "influx",
        })
    }
}

impl FromStr for TargetKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tributary" => Ok(Self::Tributary),
            "mqtt-broker" | "mosquitto" => Ok(Self::MqttBroker),
            "influx" | "influxdb" | "victoria-metrics" => Ok(Self::Influx),
            _ => Err(format!(
                "unknown target {s:?}; expected tributary, mqtt-broker or influx"
            )),
        }
    }
}

/// The server under test and how to reach it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TargetConfig {
    /// What kind of server it is.
    pub kind: TargetKind,
    /// MQTT address, `host:port`.
    pub mqtt_addr: String,
    /// Base URL of HTTP ingest, without a path.
    pub http_url: String,
    /// CoAP address, `host:port` (Tributary with `--coap-addr`).
    pub coap_addr: String,
    /// Path and query of line-protocol writes, appended to `http_url`.
    /// Empty: `/write` for Tributary, `/write?db=loadtest` for `influx`.
    pub write_path: String,
    /// gRPC endpoint of the registry and the query service (Tributary only).
    pub grpc_url: String,
    /// gRPC endpoint of the registry when it runs apart from the query
    /// service (distributed mode); empty: `grpc_url`.
    pub registry_url: String,
    /// File holding the operator token (Tributary's `admin.token`); the
    /// `--admin-token` flag or `TRIBUTARY_TOKEN` take precedence.
    pub admin_token_file: PathBuf,
    /// A credentials file (`device,token` per line) to use instead of
    /// provisioning devices; its first `devices.count` lines are used.
    pub credentials_file: Option<PathBuf>,
    /// Source addresses of outgoing connections, spread round-robin, to get
    /// past the ~28k ephemeral ports of one address. Empty: the OS chooses.
    pub source_addrs: Vec<IpAddr>,
}

impl Default for TargetConfig {
    fn default() -> Self {
        Self {
            kind: TargetKind::Tributary,
            mqtt_addr: "127.0.0.1:1883".into(),
            http_url: "http://127.0.0.1:8080".into(),
            coap_addr: "127.0.0.1:5683".into(),
            write_path: String::new(),
            grpc_url: "http://127.0.0.1:50051".into(),
            registry_url: String::new(),
            admin_token_file: PathBuf::from("data/admin.token"),
            credentials_file: None,
            source_addrs: Vec::new(),
        }
    }
}

impl TargetConfig {
    /// The full URL of line-protocol writes.
    pub fn write_url(&self) -> String {
        let path = if !self.write_path.is_empty() {
            self.write_path.as_str()
        } else if self.kind == TargetKind::Influx {
            "/write?db=loadtest"
        } else {
            "/write"
        };
        format!("{}{}", self.http_url.trim_end_matches('/'), path)
    }
}

/// The simulated fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DevicesConfig {
    /// How many devices.
    pub count: usize,
    /// Device ids are `{prefix}-{run id}-{n}`, so that runs never collide.
    pub prefix: String,
    /// Labels of provisioned devices (tags of line-protocol lines).
    pub labels: BTreeMap<String, String>,
}

impl Default for DevicesConfig {
    fn default() -> Self {
        Self {
            count: 10,
            prefix: "lt".into(),
            labels: BTreeMap::new(),
        }
    }
}

/// How devices talk to the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "protocol", rename_all = "kebab-case")]
pub enum Transport {
    /// One MQTT connection per device.
    Mqtt(MqttTransport),
    /// HTTP requests: per device (JSON, SenML) or per client (line protocol).
    Http(HttpTransport),
    /// CoAP over UDP: confirmable POSTs to `/t`, one endpoint per device.
    Coap(CoapTransport),
}

impl Transport {
    /// `mqtt`, `http` or `coap`.
    pub fn protocol(&self) -> &'static str {
        match self {
            Self::Mqtt(_) => "mqtt",
            Self::Http(_) => "http",
            Self::Coap(_) => "coap",
        }
    }
}

/// CoAP settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoapTransport {
    /// Body format: `json` (Content-Format 50) or `senml` (110).
    pub format: HttpFormat,
}

impl Default for CoapTransport {
    fn default() -> Self {
        Self {
            format: HttpFormat::Json,
        }
    }
}

/// MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum MqttVersion {
    /// MQTT 3.1.1.
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5.0.
    #[default]
    #[serde(rename = "5")]
    V5,
}

impl FromStr for MqttVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "3.1.1" | "311" | "4" => Ok(Self::V311),
            "5" | "5.0" => Ok(Self::V5),
            _ => Err(format!("unknown MQTT version {s:?}; expected 3.1.1 or 5")),
        }
    }
}

/// MQTT settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttTransport {
    /// `"3.1.1"` or `"5"`.
    pub version: MqttVersion,
    /// QoS of telemetry publishes: 0, 1 or 2.
    pub qos: u8,
    /// Clean session (3.1.1) / clean start (5.0). A persistent session
    /// re-sends unacknowledged publishes after a reconnect.
    pub clean_session: bool,
    /// Session expiry of a persistent session (5.0).
    pub session_expiry: Span,
    /// Keep alive; PINGREQ goes out after 3/4 of it without traffic.
    pub keep_alive: Span,
    /// Topic of telemetry; `{device}` is replaced by the device id.
    pub topic: String,
    /// Connect over TLS.
    pub tls: bool,
    /// PEM file of the CA that signed the server's certificate (TLS).
    pub ca_file: Option<PathBuf>,
    /// Server name to verify (TLS); default: the host of `mqtt_addr`.
    pub server_name: Option<String>,
    /// Time allowed for TCP connect, TLS and CONNACK.
    pub connect_timeout: Span,
}

impl Default for MqttTransport {
    fn default() -> Self {
        Self {
            version: MqttVersion::V5,
            qos: 1,
            clean_session: true,
            session_expiry: Span::secs(3600),
            keep_alive: Span::secs(60),
            topic: "devices/{device}/telemetry".into(),
            tls: false,
            ca_file: None,
            server_name: None,
            connect_timeout: Span::secs(10),
        }
    }
}

/// HTTP body format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HttpFormat {
    /// Tributary JSON to `/v1/telemetry`, one device token per device.
    #[default]
    Json,
    /// SenML JSON to `/v1/telemetry`, one device token per device.
    Senml,
    /// InfluxDB line protocol to `/write`, a tenant ingest token (Tributary)
    /// or none (InfluxDB, VictoriaMetrics).
    LineProtocol,
}

impl FromStr for HttpFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(Self::Json),
            "senml" => Ok(Self::Senml),
            "line-protocol" | "lp" => Ok(Self::LineProtocol),
            _ => Err(format!(
                "unknown format {s:?}; expected json, senml or line-protocol"
            )),
        }
    }
}

/// HTTP settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpTransport {
    /// Body format.
    pub format: HttpFormat,
    /// Messages per request (JSON, SenML: one object or record group per
    /// message; line protocol: one line per message).
    pub batch: usize,
    /// Line protocol: concurrent clients; each owns an equal share of the
    /// devices and sends batches that cycle over them.
    pub clients: usize,
    /// Line protocol: the measurement; stored metrics are `measurement.field`.
    pub measurement: String,
    /// Time allowed for one request, answer included.
    pub timeout: Span,
}

impl Default for HttpTransport {
    fn default() -> Self {
        Self {
            format: HttpFormat::Json,
            batch: 1,
            clients: 8,
            measurement: "lt".into(),
            timeout: Span::secs(30),
        }
    }
}

/// How senders pace their messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadMode {
    /// Closed loop: each sender keeps `in_flight` messages unanswered and
    /// sends the next as soon as one is answered.
    #[default]
    Closed,
    /// Open loop: each sender sends `rate` messages per second on a fixed
    /// schedule. Latency counts from the scheduled time, so a server that
    /// falls behind is not flattered (no coordinated omission).
    Rate,
    /// Open loop: `rate` messages per second in total, split over senders.
    TotalRate,
    /// Connect and hold the connections (keep-alive only), then disconnect.
    Idle,
}

impl FromStr for LoadMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "closed" => Ok(Self::Closed),
            "rate" => Ok(Self::Rate),
            "total-rate" => Ok(Self::TotalRate),
            "idle" => Ok(Self::Idle),
            _ => Err(format!(
                "unknown mode {s:?}; expected closed, rate, total-rate or idle"
            )),
        }
    }
}

/// How much is sent, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadConfig {
    /// Pacing.
    pub mode: LoadMode,
    /// Messages a sender keeps unanswered: the window of `closed`, a cap in
    /// the open-loop modes. MQTT also caps it at the server's Receive Maximum.
    pub in_flight: u32,
    /// Messages per second: per sender (`rate`) or in total (`total-rate`).
    pub rate: f64,
    /// How long the load lasts, connection ramp-up included.
    pub duration: Option<Span>,
    /// Messages in total over all senders; the run ends when all are
    /// answered (or `duration` is over, whichever comes first).
    pub messages: Option<u64>,
    /// New connections per second during ramp-up; 0 connects all at once.
    pub ramp: f64,
    /// A message unanswered this long counts as failed (`ack timeout`). At
    /// the end of the run senders wait this long for outstanding answers.
    pub ack_timeout: Span,
    /// Worker processes, each with its share of the senders (for more
    /// connections than one process may have open files).
    pub workers: usize,
    /// Idle mode: each device disconnects this long after its CONNACK and
    /// is done (a churning fleet: more devices than connections open at
    /// once, about `ramp` × `hold`). Unset: connections stay until the end.
    pub hold: Option<Span>,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            mode: LoadMode::Closed,
            in_flight: 1,
            rate: 1.0,
            duration: None,
            messages: None,
            ramp: 1_000.0,
            ack_timeout: Span::secs(10),
            workers: 1,
            hold: None,
        }
    }
}

/// The type of generated values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ValueKind {
    /// Doubles with two decimals.
    #[default]
    F64,
    /// 64-bit integers.
    I64,
    /// Booleans.
    Bool,
    /// Short strings.
    String,
    /// Metric `n` is a double, int, bool or string by `n % 4`.
    Mixed,
}

/// What each message holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PayloadConfig {
    /// Metrics per message (each one point).
    pub metrics: usize,
    /// Metric names; empty: `m0`, `m1`, ... Must have `metrics` entries
    /// otherwise.
    pub metric_names: Vec<String>,
    /// Value type.
    pub values: ValueKind,
    /// Minimum encoded message size in bytes; a string metric `pad` fills
    /// smaller messages up (and counts as a point). 0: no padding.
    pub size: usize,
}

impl Default for PayloadConfig {
    fn default() -> Self {
        Self {
            metrics: 3,
            metric_names: Vec::new(),
            values: ValueKind::F64,
            size: 0,
        }
    }
}

impl PayloadConfig {
    /// The metric names of every message.
    pub fn names(&self) -> Vec<String> {
        if self.metric_names.is_empty() {
            (0..self.metrics).map(|i| format!("m{i}")).collect()
        } else {
            self.metric_names.clone()
        }
    }
}

/// What is measured besides throughput and acknowledgement latency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeasureConfig {
    /// After the load, count every device's points back through the query
    /// API and report points acknowledged but not stored (Tributary only).
    pub verify: bool,
    /// How long verification waits for the processor to store everything.
    pub verify_timeout: Span,
    /// Devices whose points are followed through `Subscribe` for end-to-end
    /// latency (Tributary only); 0 turns it off.
    pub e2e_devices: usize,
    /// Width of one timeline interval (throughput and latency over time).
    pub interval: Span,
}

impl Default for MeasureConfig {
    fn default() -> Self {
        Self {
            verify: false,
            verify_timeout: Span::secs(60),
            e2e_devices: 0,
            interval: Span::secs(1),
        }
    }
}

/// A duration written as `500ms`, `10s`, `2m`, `1h` in scenario files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(pub Duration);

impl Span {
    /// Whole seconds.
    pub const fn secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }
}

impl FromStr for Span {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        tributary_core::time::parse_duration(s)
            .and_then(|ns| u64::try_from(ns).ok())
            .map(|ns| Self(Duration::from_nanos(ns)))
            .ok_or_else(|| format!("invalid duration {s:?}; expected e.g. 500ms, 10s, 2m, 1h"))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0.as_nanos();
        let (div, unit) = [
            (3_600_000_000_000u128, "h"),
            (60_000_000_000, "m"),
            (1_000_000_000, "s"),
            (1_000_000, "ms"),
            (1_000, "us"),
        ]
        .into_iter()
        .find(|(d, _)| ns >= *d && ns.is_multiple_of(*d))
        .unwrap_or((1, "ns"));
        write!(f, "{}{unit}", ns / div)
    }
}

impl Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Command-line overrides of single scenario fields; `None` keeps the file's.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `target.kind`.
    pub target: Option<TargetKind>,
    /// `target.mqtt_addr`.
    pub mqtt_addr: Option<String>,
    /// `target.http_url`.
    pub http_url: Option<String>,
    /// `target.coap_addr`.
    pub coap_addr: Option<String>,
    /// `target.write_path`.
    pub write_path: Option<String>,
    /// `target.grpc_url`.
    pub grpc_url: Option<String>,
    /// `target.registry_url`.
    pub registry_url: Option<String>,
    /// `target.admin_token_file`.
    pub admin_token_file: Option<PathBuf>,
    /// `target.credentials_file`.
    pub credentials_file: Option<PathBuf>,
    /// `target.source_addrs`.
    pub source_addrs: Option<Vec<IpAddr>>,
    /// `devices.count`.
    pub devices: Option<usize>,
    /// `load.mode`.
    pub mode: Option<LoadMode>,
    /// `load.duration`.
    pub duration: Option<Span>,
    /// `load.messages`.
    pub messages: Option<u64>,
    /// `load.rate`.
    pub rate: Option<f64>,
    /// `load.in_flight`.
    pub in_flight: Option<u32>,
    /// `load.ramp`.
    pub ramp: Option<f64>,
    /// `load.workers`.
    pub workers: Option<usize>,
    /// `transport.qos` (MQTT).
    pub qos: Option<u8>,
    /// `transport.version` (MQTT).
    pub mqtt_version: Option<MqttVersion>,
    /// `measure.verify` (only ever turned on).
    pub verify: bool,
    /// `measure.verify_timeout`.
    pub verify_timeout: Option<Span>,
    /// `measure.e2e_devices`.
    pub e2e_devices: Option<usize>,
}

impl Scenario {
    /// Parses and validates a scenario from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, Error> {
        let s: Scenario =
            toml::from_str(text).map_err(|e| Error::Scenario(e.message().to_string()))?;
        s.validate()?;
        Ok(s)
    }

    /// Reads, parses and validates a scenario file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            what: format!("reading scenario {}", path.display()),
            source: e,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            Error::Scenario(m) => Error::Scenario(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// The scenario as TOML, for `check` and reports.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# not printable: {e}"))
    }

    /// Applies command-line overrides, then validates again.
    pub fn apply(&mut self, o: &Overrides) -> Result<(), Error> {
        let t = &mut self.target;
        set(&mut t.kind, o.target);
        set(&mut t.mqtt_addr, o.mqtt_addr.clone());
        set(&mut t.http_url, o.http_url.clone());
        set(&mut t.coap_addr, o.coap_addr.clone());
        set(&mut t.write_path, o.write_path.clone());
        set(&mut t.grpc_url, o.grpc_url.clone());
        set(&mut t.registry_url, o.registry_url.clone());
        set(&mut t.admin_token_file, o.admin_token_file.clone());
        if o.credentials_file.is_some() {
            t.credentials_file = o.credentials_file.clone();
        }
        set(&mut t.source_addrs, o.source_addrs.clone());
        set(&mut self.devices.count, o.devices);
        let l = &mut self.load;
        set(&mut l.mode, o.mode);
        if o.duration.is_some() {
            l.duration = o.duration;
        }
        if o.messages.is_some() {
            l.messages = o.messages;
        }
        set(&mut l.rate, o.rate);
        set(&mut l.in_flight, o.in_flight);
        set(&mut l.ramp, o.ramp);
        set(&mut l.workers, o.workers);
        if let Transport::Mqtt(m) = &mut self.transport {
            set(&mut m.qos, o.qos);
            set(&mut m.version, o.mqtt_version);
        } else if o.qos.is_some() || o.mqtt_version.is_some() {
            return Err(Error::Scenario(
                "--qos and --mqtt-version apply to MQTT scenarios only".into(),
            ));
        }
        self.measure.verify |= o.verify;
        set(&mut self.measure.verify_timeout, o.verify_timeout);
        set(&mut self.measure.e2e_devices, o.e2e_devices);
        self.validate()
    }

    /// Checks every field's range and the combinations that make no sense.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::Scenario(m));
        if self.name.is_empty() {
            return bad("name must not be empty".into());
        }
        let d = &self.devices;
        if d.count == 0 || d.count > MAX_DEVICES {
            return bad(format!("devices.count must be 1..={MAX_DEVICES}"));
        }
        if d.prefix.is_empty()
            || d.prefix.len() > 32
            || !d
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return bad("devices.prefix must be 1..=32 characters of [A-Za-z0-9_-]".into());
        }
        for (k, v) in &d.labels {
            tributary_core::model::validate_label(k, v)
                .map_err(|e| Error::Scenario(format!("devices.labels: {e}")))?;
            if k == "device" {
                return bad("devices.labels must not set \"device\"".into());
            }
        }
        let l = &self.load;
        if l.in_flight == 0 || l.in_flight > MAX_IN_FLIGHT {
            return bad(format!("load.in_flight must be 1..={MAX_IN_FLIGHT}"));
        }
        if matches!(l.mode, LoadMode::Rate | LoadMode::TotalRate)
            && !(l.rate.is_finite() && l.rate > 0.0 && l.rate <= 10_000_000.0)
        {
            return bad("load.rate must be above 0 and at most 10,000,000 messages/s".into());
        }
        if !(l.ramp.is_finite() && l.ramp >= 0.0) {
            return bad("load.ramp must be 0 (all at once) or a positive rate".into());
        }
        if l.duration.is_none() && l.messages.is_none() {
            return bad("set load.duration, load.messages or both".into());
        }
        if l.mode == LoadMode::Idle && l.duration.is_none() {
            return bad("idle scenarios need load.duration".into());
        }
        if let Some(h) = l.hold {
            if l.mode != LoadMode::Idle {
                return bad("load.hold applies to idle mode only".into());
            }
            if h.0.is_zero() {
                return bad("load.hold must be positive".into());
            }
        }
        if l.messages == Some(0) {
            return bad("load.messages must be at least 1".into());
        }
        if l.ack_timeout.0.is_zero() {
            return bad("load.ack_timeout must be positive".into());
        }
        if l.workers == 0 || l.workers > MAX_WORKERS {
            return bad(format!("load.workers must be 1..={MAX_WORKERS}"));
        }
        let p = &self.payload;
        if p.metrics == 0 || p.metrics > MAX_METRICS {
            return bad(format!("payload.metrics must be 1..={MAX_METRICS}"));
        }
        if !p.metric_names.is_empty() && p.metric_names.len() != p.metrics {
            return bad("payload.metric_names must have payload.metrics entries".into());
        }
        let limits = tributary_core::Limits::default();
        for n in p.metric_names.iter() {
            tributary_core::model::validate_metric(n, &limits)
                .map_err(|e| Error::Scenario(format!("payload.metric_names: {e}")))?;
            if n == "pad" {
                return bad("payload.metric_names must not use \"pad\" (the padding)".into());
            }
        }
        if p.size > MAX_PAYLOAD_SIZE {
            return bad(format!("payload.size must be at most {MAX_PAYLOAD_SIZE}"));
        }
        let m = &self.measure;
        if m.e2e_devices > MAX_E2E_DEVICES {
            return bad(format!(
                "measure.e2e_devices must be at most {MAX_E2E_DEVICES}"
            ));
        }
        if m.interval.0 < Duration::from_millis(100) {
            return bad("measure.interval must be at least 100ms".into());
        }
        if self.target.kind != TargetKind::Tributary && (m.verify || m.e2e_devices > 0) {
            return bad(format!(
                "verify and e2e latency need the Tributary query API; target is {}",
                self.target.kind
            ));
        }
        match &self.transport {
            Transport::Mqtt(mq) => {
                if mq.qos > 2 {
                    return bad("transport.qos must be 0, 1 or 2".into());
                }
                if self.target.kind == TargetKind::Influx {
                    return bad("an influx target takes HTTP line protocol, not MQTT".into());
                }
                if !mq.topic.contains("{device}") {
                    return bad("transport.topic must contain {device}".into());
                }
                if mq.keep_alive.0.as_secs() > u64::from(u16::MAX) {
                    return bad("transport.keep_alive must be at most 65535s".into());
                }
                if mq.tls && mq.ca_file.is_none() {
                    return bad("transport.tls needs transport.ca_file".into());
                }
            }
            Transport::Http(h) => {
                if l.mode == LoadMode::Idle {
                    return bad("idle mode holds MQTT connections; HTTP has none".into());
                }
                if h.batch == 0 || h.batch > MAX_BATCH {
                    return bad(format!("transport.batch must be 1..={MAX_BATCH}"));
                }
                if h.format == HttpFormat::LineProtocol {
                    if h.clients == 0 || h.clients > d.count {
                        return bad("transport.clients must be 1..=devices.count".into());
                    }
                    tributary_core::model::validate_metric(&h.measurement, &limits)
                        .map_err(|e| Error::Scenario(format!("transport.measurement: {e}")))?;
                } else if self.target.kind != TargetKind::Tributary {
                    return bad("JSON and SenML go to Tributary's /v1/telemetry only".into());
                }
                if self.target.kind == TargetKind::MqttBroker {
                    return bad("an mqtt-broker target takes MQTT, not HTTP".into());
                }
                if h.timeout.0.is_zero() {
                    return bad("transport.timeout must be positive".into());
                }
            }
            Transport::Coap(c) => {
                if self.target.kind != TargetKind::Tributary {
                    return bad("CoAP goes to Tributary's /t only".into());
                }
                if l.mode == LoadMode::Idle {
                    return bad("idle mode holds MQTT connections; CoAP has none".into());
                }
                if c.format == HttpFormat::LineProtocol {
                    return bad("CoAP takes json or senml".into());
                }
            }
        }
        Ok(())
    }

    /// The number of senders: devices (MQTT, JSON, SenML) or line-protocol
    /// clients.
    pub fn senders(&self) -> usize {
        match &self.transport {
            Transport::Http(h) if h.format == HttpFormat::LineProtocol => h.clients,
            _ => self.devices.count,
        }
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

/// Parses `--source-addrs`: comma-separated addresses and IPv4 ranges such as
/// `127.0.0.1-127.0.0.8`.
pub fn parse_source_addrs(s: &str) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: Ipv4Addr = a.parse().map_err(|_| format!("bad address {a:?}"))?;
            let b: Ipv4Addr = b.parse().map_err(|_| format!("bad address {b:?}"))?;
            let (a, b) = (u32::from(a), u32::from(b));
            if b < a || b - a >= 256 {
                return Err(format!(
                    "range {part:?} must go up, by at most 256 addresses"
                ));
            }
            out.extend((a..=b).map(|v| IpAddr::V4(Ipv4Addr::from(v))));
        } else {
            out.push(part.parse().map_err(|_| format!("bad address {part:?}"))?);
        }
    }
    if out.is_empty() {
        return Err("no address given".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        name = "t"
        [transport]
        protocol = "mqtt"
        [load]
        messages = 10
    "#;

    #[test]
    fn minimal_file_gets_defaults() {
        let s = Scenario::from_toml(MINIMAL).unwrap();
        assert_eq!(s.devices.count, 10);
        assert_eq!(s.target.kind, TargetKind::Tributary);
        let Transport::Mqtt(m) = &s.transport else {
            panic!("mqtt expected")
        };
        assert_eq!(m.qos, 1);
        assert_eq!(m.version, MqttVersion::V5);
        assert_eq!(s.senders(), 10);
        // What `check` prints parses back to the same scenario.
        assert_eq!(Scenario::from_toml(&s.to_toml()).unwrap(), s);
    }

    #[test]
    fn typos_and_bad_values_are_refused_with_the_field() {
        let typo = MINIMAL.replace("messages = 10", "mesages = 10");
        let e = Scenario::from_toml(&typo).unwrap_err().to_string();
        assert!(e.contains("mesages"), "{e}");
        let bad_qos = MINIMAL.replace("protocol = \"mqtt\"", "protocol = \"mqtt\"\nqos = 3");
        let e = Scenario::from_toml(&bad_qos).unwrap_err().to_string();
        assert!(e.contains("qos"), "{e}");
        let no_end = MINIMAL.replace("messages = 10", "");
        assert!(Scenario::from_toml(&no_end).is_err());
        let verify_broker = format!("{MINIMAL}\n[measure]\nverify = true\n").replace(
            "name = \"t\"",
            "name = \"t\"\n[target]\nkind = \"mqtt-broker\"",
        );
        let e = Scenario::from_toml(&verify_broker).unwrap_err().to_string();
        assert!(e.contains("verify"), "{e}");
        let hold_closed = MINIMAL.replace("messages = 10", "messages = 10\nhold = \"1s\"");
        let e = Scenario::from_toml(&hold_closed).unwrap_err().to_string();
        assert!(e.contains("hold"), "{e}");
    }

    #[test]
    fn overrides_apply_and_are_validated() {
        let mut s = Scenario::from_toml(MINIMAL).unwrap();
        s.apply(&Overrides {
            devices: Some(3),
            qos: Some(2),
            duration: Some("5s".parse().unwrap()),
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!(s.devices.count, 3);
        assert_eq!(s.load.duration, Some(Span::secs(5)));
        let e = s
            .apply(&Overrides {
                in_flight: Some(0),
                ..Overrides::default()
            })
            .unwrap_err();
        assert!(e.to_string().contains("in_flight"), "{e}");
    }

    #[test]
    fn every_shipped_scenario_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.extension().is_some_and(|x| x == "toml") {
                Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                n += 1;
            }
        }
        assert!(n >= 9, "{n} scenarios in {}", dir.display());
    }

    #[test]
    fn spans_and_source_addresses() {
        assert_eq!(
            "250ms".parse::<Span>().unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(Span(Duration::from_millis(1500)).to_string(), "1500ms");
        assert_eq!(Span::secs(120).to_string(), "2m");
        assert!("ten".parse::<Span>().is_err());
        let a = parse_source_addrs("127.0.0.1-127.0.0.3,::1").unwrap();
        assert_eq!(a.len(), 4);
        assert_eq!(a[2], "127.0.0.3".parse::<IpAddr>().unwrap());
        assert!(parse_source_addrs("127.0.0.9-127.0.0.1").is_err());
        assert!(parse_source_addrs("").is_err());
    }

    #[test]
    fn write_url_depends_on_the_target() {
        let mut t = TargetConfig::default();
        assert_eq!(t.write_url(), "http://127.0.0.1:8080/write");
        t.kind = TargetKind::Influx;
        assert_eq!(t.write_url(), "http://127.0.0.1:8080/write?db=loadtest");
        t.write_path = "/api/v2/write?bucket=x".into();
        assert_eq!(t.write_url(), "http://127.0.0.1:8080/api/v2/write?bucket=x");
    }
}
