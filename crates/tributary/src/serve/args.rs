//! Flag groups shared by `standalone` and the service subcommands. Every
//! flag can also be set by the environment variable named in its help, or by
//! a config file (see [`crate::serve::config_file`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tributary_core::Limits;
use tributary_http_server::HttpLimits;
use tributary_ingest_mqtt::MqttConfig;

use crate::LogFormat;

/// Validation limits and retention.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitsArgs {
    /// How long points are kept, e.g. `90d`; `0` keeps them forever.
    #[arg(long, env = "TRIBUTARY_RETENTION", default_value = "90d")]
    pub retention: String,
    /// Largest request body in bytes, after decompression.
    #[arg(long, env = "TRIBUTARY_MAX_BODY_BYTES", default_value_t = Limits::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Most points in one request.
    #[arg(long, env = "TRIBUTARY_MAX_POINTS_PER_REQUEST", default_value_t = Limits::default().max_points_per_request)]
    pub max_points_per_request: usize,
    /// Longest metric name in bytes.
    #[arg(long, env = "TRIBUTARY_MAX_METRIC_LEN", default_value_t = Limits::default().max_metric_len)]
    pub max_metric_len: usize,
    /// Longest string value in bytes.
    #[arg(long, env = "TRIBUTARY_MAX_STRING_LEN", default_value_t = Limits::default().max_string_len)]
    pub max_string_len: usize,
    /// Rollup tiers the processor keeps and queries read, finest first,
    /// each a multiple of the one before and dividing a day (`none`: off).
    #[arg(long, env = "TRIBUTARY_ROLLUP_TIERS", default_value = "1m,1h,1d")]
    pub rollup_tiers: String,
}

impl LimitsArgs {
    /// The limits every service validates against.
    pub fn limits(&self) -> anyhow::Result<Limits> {
        let retention = self.retention()?;
        Ok(Limits {
            max_body_bytes: self.max_body_bytes,
            max_points_per_request: self.max_points_per_request,
            max_metric_len: self.max_metric_len,
            max_string_len: self.max_string_len,
            // Refuse what the store would drop, rather than acknowledge it.
            max_point_age_ns: retention.map_or(0, |r| r.as_nanos().min(i64::MAX as u128) as i64),
            ..Limits::default()
        })
    }

    /// The rollup tiers.
    pub fn tiers(&self) -> anyhow::Result<tributary_core::rollup::Tiers> {
        tributary_core::rollup::Tiers::parse(&self.rollup_tiers)
            .map_err(|e| anyhow::anyhow!("--rollup-tiers {:?}: {e}", self.rollup_tiers))
    }

    /// `None` keeps points forever.
    pub fn retention(&self) -> anyhow::Result<Option<Duration>> {
        if self.retention.trim() == "0" {
            return Ok(None);
        }
        let ns = tributary_core::time::parse_duration(&self.retention).with_context(|| {
            format!(
                "--retention {:?}: expected a duration such as 30d or 12h",
                self.retention
            )
        })?;
        Ok(Some(Duration::from_nanos(ns as u64)))
    }
}

/// The HTTP ingest listener.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// HTTP ingest listen address.
    #[arg(long, env = "TRIBUTARY_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Most HTTP connections open at once; past it, new ones wait in the backlog.
    #[arg(long, env = "TRIBUTARY_MAX_HTTP_CONNECTIONS", default_value_t = HttpLimits::default().max_connections)]
    pub max_http_connections: usize,
    /// Seconds a client has to send a request's line and headers, counted
    /// from when the server waits for them; also how long an idle
    /// keep-alive connection stays open.
    #[arg(long, env = "TRIBUTARY_HTTP_HEADER_TIMEOUT_SECS", default_value_t = HttpLimits::default().header_read_timeout.as_secs_f64())]
    pub http_header_timeout_secs: f64,
    /// Average bytes per second a request body must arrive at, after
    /// `--http-body-grace-secs`; slower bodies get 408. 0: no minimum.
    #[arg(long, env = "TRIBUTARY_HTTP_MIN_BODY_RATE", default_value_t = HttpLimits::default().min_body_rate)]
    pub http_min_body_rate: u64,
    /// Seconds before the minimum body rate applies.
    #[arg(long, env = "TRIBUTARY_HTTP_BODY_GRACE_SECS", default_value_t = HttpLimits::default().body_grace.as_secs_f64())]
    pub http_body_grace_secs: f64,
    /// Largest request line plus headers, in bytes (at least 8192).
    #[arg(long, env = "TRIBUTARY_HTTP_MAX_HEADER_BYTES", default_value_t = HttpLimits::default().max_header_bytes)]
    pub http_max_header_bytes: usize,
}

impl HttpArgs {
    /// The HTTP ingest listener's limits.
    pub fn limits(&self) -> anyhow::Result<HttpLimits> {
        let limits = HttpLimits {
            max_connections: self.max_http_connections,
            header_read_timeout: seconds(
                "--http-header-timeout-secs",
                self.http_header_timeout_secs,
            )?,
            max_header_bytes: self.http_max_header_bytes,
            min_body_rate: self.http_min_body_rate,
            body_grace: seconds("--http-body-grace-secs", self.http_body_grace_secs)?,
        };
        limits.validate().map_err(anyhow::Error::msg)?;
        Ok(limits)
    }
}

/// A duration flag given in seconds: finite, not negative, at most a day.
pub fn seconds(flag: &str, secs: f64) -> anyhow::Result<Duration> {
    if !(0.0..=86_400.0).contains(&secs) {
        anyhow::bail!("{flag} must be from 0 to 86400 seconds, got {secs}");
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The MQTT listeners.
#[derive(Debug, Clone, clap::Args)]
pub struct MqttArgs {
    /// MQTT listen address (MQTT 3.1.1 and 5.0 for devices).
    #[arg(long, env = "TRIBUTARY_MQTT_ADDR", default_value = "0.0.0.0:1883")]
    pub mqtt_addr: SocketAddr,
    /// MQTT over TLS listen address; the listener starts only when
    /// `--tls-cert` and `--tls-key` are given.
    #[arg(long, env = "TRIBUTARY_MQTT_TLS_ADDR", default_value = "0.0.0.0:8883")]
    pub mqtt_tls_addr: SocketAddr,
    /// MQTT over WebSocket listen address (upgrade at `/mqtt`, subprotocol
    /// `mqtt`), for browsers and gateways.
    #[arg(long, env = "TRIBUTARY_MQTT_WS_ADDR", default_value = "0.0.0.0:8083")]
    pub mqtt_ws_addr: SocketAddr,
    /// MQTT over WebSocket over TLS (`wss://…/mqtt`) listen address; started
    /// only with `--tls-cert` and `--tls-key`, with the same certificates.
    #[arg(long, env = "TRIBUTARY_MQTT_WSS_ADDR", default_value = "0.0.0.0:8084")]
    pub mqtt_wss_addr: SocketAddr,
    /// Server certificate chain (PEM) of the MQTT TLS listeners.
    #[arg(long, env = "TRIBUTARY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of `--tls-cert`.
    #[arg(long, env = "TRIBUTARY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates must chain to. Turns on
    /// client-certificate authentication on the TLS listener: a certificate
    /// registered for a device authenticates it without a password. Clients
    /// without a certificate still use their token.
    #[arg(long, env = "TRIBUTARY_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Every connection to the MQTT listeners (TCP, TLS, WebSocket) starts
    /// with a PROXY protocol header (v1 or v2) from the load balancer, which
    /// names the client's address for the logs. Connections without one are
    /// refused: turn it on only when the load balancer sends it.
    #[arg(long, env = "TRIBUTARY_MQTT_PROXY_PROTOCOL")]
    pub mqtt_proxy_protocol: bool,
    /// On shutdown, tell MQTT 5 clients the server moved here (DISCONNECT
    /// 0x9D with this Server Reference, e.g. `mqtt.new.example.com:8883`)
    /// instead of 0x8B Server shutting down: for moving a fleet to another
    /// endpoint or cluster. At most 256 bytes.
    #[arg(long, env = "TRIBUTARY_MQTT_SERVER_REFERENCE")]
    pub mqtt_server_reference: Option<String>,
    /// Most levels in an MQTT topic name or filter; deeper ones are refused
    /// (0x90 / 0x8F). At most 256.
    #[arg(long, env = "TRIBUTARY_MQTT_MAX_TOPIC_LEVELS", default_value_t = MqttConfig::default().max_topic_levels)]
    pub mqtt_max_topic_levels: usize,
    /// Most distinct topic filters in one SUBSCRIBE; the rest get 0x97.
    #[arg(long, env = "TRIBUTARY_MQTT_MAX_FILTERS_PER_SUBSCRIBE", default_value_t = MqttConfig::default().max_filters_per_subscribe)]
    pub mqtt_max_filters_per_subscribe: usize,
    /// Sockets that may wait for their CONNECT at once, in all.
    #[arg(long, env = "TRIBUTARY_MQTT_MAX_PENDING_CONNECTS", default_value_t = MqttConfig::default().max_pending_connects)]
    pub mqtt_max_pending_connects: usize,
    /// Of those, how many one source address (IPv6: one /64) may hold; 0
    /// turns the bound off (needed behind a load balancer that does not
    /// send the PROXY header).
    #[arg(long, env = "TRIBUTARY_MQTT_MAX_PENDING_CONNECTS_PER_SOURCE", default_value_t = MqttConfig::default().max_pending_connects_per_source)]
    pub mqtt_max_pending_connects_per_source: usize,
    /// Seconds a new socket has to send its CONNECT.
    #[arg(long, env = "TRIBUTARY_MQTT_CONNECT_TIMEOUT_SECS", default_value_t = MqttConfig::default().connect_timeout_secs)]
    pub mqtt_connect_timeout_secs: u64,
}

/// The fields of [`MqttConfig`] set by a flag (the rest come from `[mqtt]`).
pub const MQTT_FLAGGED: &[(&str, &str)] = &[
    ("frontend_id", "frontend-id"),
    ("proxy_protocol", "mqtt-proxy-protocol"),
    ("server_reference", "mqtt-server-reference"),
    ("max_topic_levels", "mqtt-max-topic-levels"),
    (
        "max_filters_per_subscribe",
        "mqtt-max-filters-per-subscribe",
    ),
    ("max_pending_connects", "mqtt-max-pending-connects"),
    (
        "max_pending_connects_per_source",
        "mqtt-max-pending-connects-per-source",
    ),
    ("connect_timeout_secs", "mqtt-connect-timeout-secs"),
];

/// The CoAP frontend's listener.
#[derive(Debug, Clone, clap::Args)]
pub struct CoapArgs {
    /// Plain CoAP (RFC 7252 over UDP) listen address, for example
    /// `0.0.0.0:5683`. Off unless given: plain CoAP is not encrypted, so a
    /// device's token and data cross the network in clear (docs/coap.md).
    /// Turn it on for trusted networks only.
    #[arg(long, env = "TRIBUTARY_COAP_ADDR")]
    pub coap_addr: Option<SocketAddr>,
    /// CoAP over DTLS 1.2 listen address, for example `0.0.0.0:5684`: each
    /// device authenticates with a PSK the registry issued it (`tributary
    /// tokens issue --device D --psk`). Off unless given.
    #[arg(long, env = "TRIBUTARY_COAPS_ADDR")]
    pub coaps_addr: Option<SocketAddr>,
}

impl MqttArgs {
    /// The MQTT server's settings in force: [`MqttArgs::mqtt_config`] with
    /// the `[mqtt]` section of the config file and `TRIBUTARY_MQTT__*`
    /// variables over it, validated.
    pub fn mqtt_settings(&self, frontend_id: String) -> anyhow::Result<MqttConfig> {
        let config =
            super::config_file::section("mqtt", self.mqtt_config(frontend_id), MQTT_FLAGGED)?;
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("MQTT settings: {e}"))?;
        Ok(config)
    }

    /// The MQTT server's settings: these flags over the defaults, for the
    /// frontend named `frontend_id` in presence reports.
    pub fn mqtt_config(&self, frontend_id: String) -> MqttConfig {
        MqttConfig {
            frontend_id,
            proxy_protocol: self.mqtt_proxy_protocol,
            server_reference: self.mqtt_server_reference.clone(),
            max_topic_levels: self.mqtt_max_topic_levels,
            max_filters_per_subscribe: self.mqtt_max_filters_per_subscribe,
            max_pending_connects: self.mqtt_max_pending_connects,
            max_pending_connects_per_source: self.mqtt_max_pending_connects_per_source,
            connect_timeout_secs: self.mqtt_connect_timeout_secs,
            ..Default::default()
        }
    }
}

/// The operations endpoint and logging.
#[derive(Debug, Clone, clap::Args)]
pub struct OpsArgs {
    /// Listen address of /metrics, /healthz and /readyz.
    #[arg(long, env = "TRIBUTARY_METRICS_ADDR", default_value = "0.0.0.0:9100")]
    pub metrics_addr: SocketAddr,
    /// Most connections to the operations listener at once (scrapers and
    /// probes need a few); more wait in the backlog.
    #[arg(long, env = "TRIBUTARY_METRICS_MAX_CONNECTIONS", default_value_t = 64)]
    pub metrics_max_connections: usize,
    /// Seconds a client of the operations listener has to send its request
    /// headers; also its idle keep-alive.
    #[arg(
        long,
        env = "TRIBUTARY_METRICS_HEADER_TIMEOUT_SECS",
        default_value_t = 10.0
    )]
    pub metrics_header_timeout_secs: f64,
    /// Log format on stderr.
    #[arg(long, env = "TRIBUTARY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// OTLP/gRPC collector that traces are exported to, `http://host:4317`.
    /// Unset (the default), tracing is off and costs nothing.
    #[arg(long, env = "TRIBUTARY_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Share of new traces sampled, 0 to 1. Requests arriving with a
    /// `traceparent` follow its sampled flag instead.
    #[arg(long, env = "TRIBUTARY_TRACE_SAMPLE_RATIO", default_value_t = 0.01, value_parser = parse_ratio)]
    pub trace_sample_ratio: f64,
}

impl OpsArgs {
    /// The operations listener's limits: few connections, short header
    /// time, no request bodies worth waiting for.
    pub fn limits(&self) -> anyhow::Result<HttpLimits> {
        let limits = HttpLimits {
            max_connections: self.metrics_max_connections,
            header_read_timeout: seconds(
                "--metrics-header-timeout-secs",
                self.metrics_header_timeout_secs,
            )?,
            max_header_bytes: 16 * 1024,
            min_body_rate: 1024,
            body_grace: Duration::from_secs(5),
        };
        limits.validate().map_err(anyhow::Error::msg)?;
        Ok(limits)
    }

    /// Trace export settings of the service `tributary-<role>`.
    pub fn otel_config(&self, role: &str) -> tributary_otel::OtelConfig {
        tributary_otel::OtelConfig {
            endpoint: self.otlp_endpoint.clone(),
            service_name: format!("tributary-{role}"),
            sample_ratio: self.trace_sample_ratio,
            ..tributary_otel::OtelConfig::default()
        }
    }

    /// Whether log lines are JSON (`auto`: when stderr is not a terminal).
    pub fn log_json(&self) -> bool {
        use std::io::IsTerminal;
        match self.log_format {
            LogFormat::Auto => !std::io::stderr().is_terminal(),
            LogFormat::Text => false,
            LogFormat::Json => true,
        }
    }
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("expected a number from 0 to 1, got {s:?}")),
    }
}

/// The gRPC listener of a service.
#[derive(Debug, Clone, clap::Args)]
pub struct GrpcArgs {
    /// gRPC listen address.
    #[arg(long, env = "TRIBUTARY_GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,
}

/// The operator JWT signing secret, shared by every service.
#[derive(Debug, Clone, clap::Args)]
pub struct JwtArgs {
    /// File holding the HS256 secret that signs operator and service tokens.
    /// Every service of one platform must read the same secret (a Kubernetes
    /// Secret or a shared volume); the registry creates it when missing.
    #[arg(
        long,
        env = "TRIBUTARY_JWT_SECRET_FILE",
        default_value = "./data/jwt.secret"
    )]
    pub jwt_secret_file: PathBuf,
}

impl JwtArgs {
    /// Loads the secret the registry created (services other than the
    /// registry never create it).
    pub fn load(&self) -> anyhow::Result<tributary_auth::JwtKeys> {
        tributary_auth::JwtKeys::load(&self.jwt_secret_file).with_context(|| {
            format!(
                "loading the JWT secret {} (the registry creates it; share it between services)",
                self.jwt_secret_file.display()
            )
        })
    }
}

/// Where the registry service is, for services that are not it.
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryClientArgs {
    /// gRPC endpoint of `tributary registry`.
    #[arg(
        long,
        env = "TRIBUTARY_REGISTRY_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub registry_url: String,
    /// Token lookups and presence reports made at once go to the registry
    /// together, up to this many per call (at most 1024); 0: one call each.
    #[arg(long, env = "TRIBUTARY_REGISTRY_MAX_BATCH", default_value_t = 256)]
    pub registry_max_batch: usize,
}

/// The Kafka log.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// The log: `kafka://broker1:9092,broker2:9092`.
    #[arg(
        long = "log",
        env = "TRIBUTARY_LOG_URL",
        default_value = "kafka://127.0.0.1:9092"
    )]
    pub log_url: String,
    /// Partitions of the telemetry topic when it is created; an existing
    /// topic must have this many.
    #[arg(long, env = "TRIBUTARY_KAFKA_PARTITIONS", default_value_t = 12)]
    pub kafka_partitions: u32,
    /// Replication factor of topics the services create (3 in production).
    #[arg(long, env = "TRIBUTARY_KAFKA_REPLICATION_FACTOR", default_value_t = 1)]
    pub kafka_replication_factor: u16,
    /// Producer batch compression: none, gzip, snappy or lz4.
    #[arg(long, env = "TRIBUTARY_KAFKA_COMPRESSION", default_value = "lz4")]
    pub kafka_compression: String,
    /// Producer `linger.ms`: how long a batch waits to fill.
    #[arg(long, env = "TRIBUTARY_KAFKA_LINGER_MS", default_value_t = 1)]
    pub kafka_linger_ms: u32,
    /// Most records per produced batch (`batch.num.messages`).
    #[arg(
        long,
        env = "TRIBUTARY_KAFKA_BATCH_NUM_MESSAGES",
        default_value_t = 10_000
    )]
    pub kafka_batch_num_messages: u32,
    /// Largest record in bytes; ingest splits larger requests into several
    /// records below it.
    #[arg(
        long,
        env = "TRIBUTARY_KAFKA_MAX_RECORD_BYTES",
        default_value_t = 1_000_000
    )]
    pub kafka_max_record_bytes: u32,
    /// Extra librdkafka property, `key=value`; repeat for more (for example
    /// `security.protocol=SASL_SSL`).
    #[arg(
        long = "kafka-option",
        env = "TRIBUTARY_KAFKA_OPTIONS",
        value_delimiter = ';'
    )]
    pub kafka_options: Vec<String>,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Debug, clap::Parser)]
    struct Mqtt {
        #[command(flatten)]
        mqtt: super::MqttArgs,
    }

    fn config(args: &[&str]) -> tributary_ingest_mqtt::MqttConfig {
        let argv = std::iter::once("tributary").chain(args.iter().copied());
        Mqtt::try_parse_from(argv)
            .unwrap()
            .mqtt
            .mqtt_config("ingest-0".into())
    }

    #[test]
    fn mqtt_flags_reach_the_server_config() {
        let off = config(&[]);
        assert!(!off.proxy_protocol);
        assert_eq!(off.server_reference, None);
        let on = config(&[
            "--mqtt-proxy-protocol",
            "--mqtt-server-reference",
            "mqtt.new.example.com:8883",
        ]);
        assert!(on.proxy_protocol);
        assert_eq!(
            on.server_reference.as_deref(),
            Some("mqtt.new.example.com:8883")
        );
        assert_eq!(on.frontend_id, "ingest-0");
        assert!(on.validate().is_ok());
    }
}

/// The HTTP API (`/api/v1/…`, the Prometheus-compatible query API).
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// Origins browsers may call the HTTP API from (CORS), comma-separated,
    /// such as `https://console.example.com`; `*` for any. Empty: no CORS,
    /// so only same-origin pages can call it.
    #[arg(long, env = "TRIBUTARY_API_CORS_ORIGINS", value_delimiter = ',')]
    pub api_cors_origins: Vec<String>,
}

impl ApiArgs {
    /// The API's settings: defaults, the `[api]` section of the config
    /// file, then the flags.
    pub fn config(&self) -> anyhow::Result<tributary_api_http::ApiConfig> {
        let mut config = super::config_file::section(
            "api",
            tributary_api_http::ApiConfig::default(),
            &[("cors_origins", "api-cors-origins")],
        )?;
        if !self.api_cors_origins.is_empty() {
            config.cors_origins = self
                .api_cors_origins
                .iter()
                .map(|o| o.trim().to_owned())
                .filter(|o| !o.is_empty())
                .collect();
        }
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("[api] {e}"))?;
        Ok(config)
    }
}
