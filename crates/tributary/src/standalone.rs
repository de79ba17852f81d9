//! `tributary standalone`: every service in one process, embedded storage.
//!
//! Wiring only: each service is a library with its own `run`/`serve`; this
//! module opens the embedded log, store and registry under the data dir,
//! binds the listeners, starts the services and, on SIGTERM or SIGINT, stops
//! accepting, drains, flushes and returns.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use prometheus_client::registry::Registry as MetricsRegistry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tributary_auth::JwtKeys;
use tributary_commands::{CommandConfig, CommandGrpc, CommandMetrics};
use tributary_core::Limits;
use tributary_core::live::LiveHub;
use tributary_ingest::{IngestConfig, IngestMetrics, Ingestor};
use tributary_ingest_mqtt::{MqttConfig, MqttMetrics, MqttServer, MqttTls};
use tributary_log::Log;
use tributary_log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use tributary_processor::{Processor, ProcessorConfig, ProcessorMetrics};
use tributary_query::{QueryConfig, QueryGrpc};
use tributary_registry::{EmbeddedRegistryStore, LocalDirectory, Registry, RegistryGrpc};
use tributary_store::Store;
use tributary_store::embedded::{EmbeddedStore, EmbeddedStoreConfig};

use crate::LogFormat;

/// Flags of `tributary standalone`. Every flag can also be set by the
/// environment variable named in its help.
#[derive(Debug, clap::Args)]
pub struct StandaloneArgs {
    /// Where the log, the store, the registry and the keys live.
    #[arg(long, env = "TRIBUTARY_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// HTTP ingest listen address.
    #[arg(long, env = "TRIBUTARY_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
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
    /// gRPC listen address (registry, query, health, reflection).
    #[arg(long, env = "TRIBUTARY_GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,
    /// Listen address of /metrics, /healthz and /readyz.
    #[arg(long, env = "TRIBUTARY_METRICS_ADDR", default_value = "0.0.0.0:9100")]
    pub metrics_addr: SocketAddr,
    /// Partitions of the embedded telemetry log (fixed when the log is created).
    #[arg(long, env = "TRIBUTARY_LOG_PARTITIONS", default_value_t = 4)]
    pub log_partitions: u32,
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
    /// Most HTTP connections open at once; past it, new ones wait in the backlog.
    #[arg(long, env = "TRIBUTARY_MAX_HTTP_CONNECTIONS", default_value_t = tributary_ingest_http::DEFAULT_MAX_CONNECTIONS)]
    pub max_http_connections: usize,
    /// Log format on stderr.
    #[arg(long, env = "TRIBUTARY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
}

impl StandaloneArgs {
    fn limits(&self) -> anyhow::Result<Limits> {
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

    fn retention(&self) -> anyhow::Result<Option<Duration>> {
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

/// Runs standalone until SIGTERM or SIGINT.
pub async fn run(args: StandaloneArgs) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received; draining");
        let _ = stop_tx.send(true);
    });
    let platform = Platform::start(&args, stop_rx).await?;
    let optional = [
        ("mqtts", platform.mqtts_addr),
        ("mqtt-wss", platform.mqtt_wss_addr),
    ]
    .into_iter()
    .filter_map(|(name, addr)| addr.map(|a| format!(" {name}={a}")))
    .collect::<String>();
    println!(
        "tributary standalone ready: http={} grpc={} metrics={} mqtt={} mqtt-ws={}{optional} data-dir={}",
        platform.http_addr,
        platform.grpc_addr,
        platform.metrics_addr,
        platform.mqtt_addr,
        platform.mqtt_ws_addr,
        args.data_dir.display()
    );
    platform.wait().await
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A resolved future when `stop` turns true.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The running services of one standalone process.
struct Platform {
    http_addr: SocketAddr,
    grpc_addr: SocketAddr,
    metrics_addr: SocketAddr,
    mqtt_addr: SocketAddr,
    mqtt_ws_addr: SocketAddr,
    /// The MQTT TLS listener, when configured.
    mqtts_addr: Option<SocketAddr>,
    /// The MQTT over WebSocket over TLS listener, when configured.
    mqtt_wss_addr: Option<SocketAddr>,
    tasks: Vec<(&'static str, tokio::task::JoinHandle<anyhow::Result<()>>)>,
    processor: tokio::task::JoinHandle<anyhow::Result<()>>,
    store: Arc<dyn Store>,
    log: Arc<EmbeddedLog>,
    dlq: Arc<EmbeddedLog>,
}

impl Platform {
    async fn start(args: &StandaloneArgs, stop: watch::Receiver<bool>) -> anyhow::Result<Self> {
        let dir = &args.data_dir;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating data dir {}", dir.display()))?;
        let limits = args.limits()?;
        let mut metrics = MetricsRegistry::default();

        // Storage engines.
        let log = EmbeddedLog::open(
            dir.join("log/telemetry"),
            EmbeddedLogConfig::new("tributary.telemetry.v1", args.log_partitions),
        )
        .await
        .context("opening the telemetry log")?;
        let dlq = EmbeddedLog::open(
            dir.join("log/dlq"),
            EmbeddedLogConfig::new("tributary.dlq.v1", 1),
        )
        .await
        .context("opening the dead-letter log")?;
        let store: Arc<dyn Store> = EmbeddedStore::open(
            &dir.join("store"),
            EmbeddedStoreConfig {
                retention: args.retention()?,
                ..Default::default()
            },
        )
        .context("opening the store")?;
        let registry_store = EmbeddedRegistryStore::open(&dir.join("registry.redb"))
            .context("opening the registry")?;

        // Registry and credentials.
        let keys = JwtKeys::load_or_create(&dir.join("jwt.secret"))
            .context("loading the JWT signing key")?;
        let registry = Arc::new(Registry::new(registry_store, Default::default()));
        if let Some(token) = registry
            .bootstrap(&keys, dir)
            .await
            .context("bootstrapping the registry")?
        {
            println!(
                "\nAdmin token (shown once; also saved to {}):\n\n{token}\n",
                dir.join("admin.token").display()
            );
        }
        let directory = Arc::new(LocalDirectory::new(registry.clone(), Default::default()));

        // Processor.
        let live = LiveHub::default();
        let processor = Processor::new(
            log.clone() as Arc<dyn Log>,
            dlq.clone() as Arc<dyn Log>,
            store.clone(),
            live.clone(),
            ProcessorMetrics::register(&mut metrics),
            ProcessorConfig {
                limits: limits.clone(),
                ..Default::default()
            },
        );
        let processor = {
            let stop = stopped(stop.clone());
            tokio::spawn(async move { processor.run(stop).await.map_err(anyhow::Error::from) })
        };

        // Frontends and APIs.
        let command_limits = limits.clone();
        let ingestor = Ingestor::new(
            log.clone() as Arc<dyn Log>,
            directory.clone(),
            IngestConfig {
                limits,
                ..Default::default()
            },
            IngestMetrics::register(&mut metrics),
        );
        let mqtt = MqttServer::new(
            ingestor.clone(),
            directory.clone(),
            MqttConfig {
                frontend_id: "standalone".into(),
                ..Default::default()
            },
            MqttMetrics::register(&mut metrics),
        )
        .context("configuring the MQTT server")?;
        let http = bind(args.http_addr, "HTTP ingest").await?;
        let mqtt_listener = bind(args.mqtt_addr, "MQTT").await?;
        let mqtt_addr = mqtt_listener.local_addr()?;
        let mqtt_tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => {
                let tls = MqttTls::from_pem_files(cert, key, args.tls_client_ca.as_deref())
                    .context("loading the MQTT TLS certificate")?;
                let tls_listener = bind(args.mqtt_tls_addr, "MQTT TLS").await?;
                let wss_listener = bind(args.mqtt_wss_addr, "MQTT over WebSocket over TLS").await?;
                Some((tls_listener, wss_listener, tls))
            }
            _ => None,
        };
        let mqtt_ws_listener = bind(args.mqtt_ws_addr, "MQTT over WebSocket").await?;
        let mqtt_ws_addr = mqtt_ws_listener.local_addr()?;
        let (mqtts_addr, mqtt_wss_addr) = match &mqtt_tls {
            Some((tls, wss, _)) => (Some(tls.local_addr()?), Some(wss.local_addr()?)),
            None => (None, None),
        };
        let grpc = bind(args.grpc_addr, "gRPC").await?;
        let metrics_listener = bind(args.metrics_addr, "metrics").await?;
        let (http_addr, grpc_addr, metrics_addr) = (
            http.local_addr()?,
            grpc.local_addr()?,
            metrics_listener.local_addr()?,
        );

        let mut tasks = Vec::new();
        let max_http_connections = args.max_http_connections;
        let http_stop = stopped(stop.clone());
        tasks.push((
            "http",
            tokio::spawn(async move {
                tributary_ingest_http::serve(http, max_http_connections, ingestor, http_stop)
                    .await
                    .context("HTTP ingest server")
            }),
        ));

        // Commands reach devices through the in-process MQTT server.
        let command_sink = Arc::new(mqtt.clone());
        let ws_mqtt = mqtt.clone();
        let ws_stop = stopped(stop.clone());
        tasks.push((
            "mqtt-ws",
            tokio::spawn(async move {
                ws_mqtt
                    .serve_ws(mqtt_ws_listener, ws_stop)
                    .await
                    .context("MQTT over WebSocket server")
            }),
        ));
        if let Some((tls_listener, wss_listener, tls)) = mqtt_tls {
            let (tls_mqtt, tls_stop) = (mqtt.clone(), stopped(stop.clone()));
            let wss_tls = tls.clone();
            tasks.push((
                "mqtt-tls",
                tokio::spawn(async move {
                    tls_mqtt
                        .serve_tls(tls_listener, tls, tls_stop)
                        .await
                        .context("MQTT TLS server")
                }),
            ));
            let (wss_mqtt, wss_stop) = (mqtt.clone(), stopped(stop.clone()));
            tasks.push((
                "mqtt-wss",
                tokio::spawn(async move {
                    wss_mqtt
                        .serve_wss(wss_listener, wss_tls, wss_stop)
                        .await
                        .context("MQTT over WebSocket over TLS server")
                }),
            ));
        }
        let mqtt_stop = stopped(stop.clone());
        tasks.push((
            "mqtt",
            tokio::spawn(async move {
                mqtt.serve(mqtt_listener, mqtt_stop)
                    .await
                    .context("MQTT server")
            }),
        ));

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<tributary_proto::v1::registry_service_server::RegistryServiceServer<RegistryGrpc>>()
            .await;
        health_reporter
            .set_serving::<tributary_proto::v1::query_service_server::QueryServiceServer<QueryGrpc>>()
            .await;
        health_reporter
            .set_serving::<tributary_proto::v1::command_service_server::CommandServiceServer<CommandGrpc>>()
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tributary_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("building gRPC reflection")?;
        let registry_svc = RegistryGrpc::new(registry.clone(), keys.clone()).server();
        let query_svc = QueryGrpc::new(
            store.clone(),
            directory.clone(),
            live.clone(),
            keys.clone(),
            QueryConfig::default(),
        )
        .server();
        let command_svc = CommandGrpc::new(command_sink, directory.clone(), keys.clone())
            .with_config(CommandConfig::default())
            .context("configuring the command service")?
            .with_limits(command_limits)
            .with_metrics(CommandMetrics::register(&mut metrics))
            .server();
        // Live streams never end on their own: end them on shutdown so the
        // gRPC server's graceful stop does not wait for them forever.
        let grpc_stop = {
            let stop = stopped(stop.clone());
            let live = live.clone();
            async move {
                stop.await;
                live.close();
            }
        };
        tasks.push((
            "grpc",
            tokio::spawn(async move {
                tonic::transport::Server::builder()
                    .add_service(health_service)
                    .add_service(reflection)
                    .add_service(registry_svc)
                    .add_service(query_svc)
                    .add_service(command_svc)
                    .serve_with_incoming_shutdown(
                        tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true)),
                        grpc_stop,
                    )
                    .await
                    .context("gRPC server")
            }),
        ));

        let ready = Arc::new(AtomicBool::new(false));
        let metrics = Arc::new(metrics);
        let metrics_stop = stopped(stop.clone());
        let ready_flag = ready.clone();
        tasks.push((
            "metrics",
            tokio::spawn(async move {
                axum::serve(metrics_listener, ops_router(metrics, ready_flag))
                    .with_graceful_shutdown(metrics_stop)
                    .await
                    .context("metrics server")
            }),
        ));

        // Retention runs hourly, and once at start.
        let retention_store = store.clone();
        let retention_stop = stop.clone();
        tokio::spawn(async move { retention_loop(retention_store, retention_stop).await });

        ready.store(true, Ordering::Release);
        Ok(Self {
            http_addr,
            grpc_addr,
            metrics_addr,
            mqtt_addr,
            mqtt_ws_addr,
            mqtts_addr,
            mqtt_wss_addr,
            tasks,
            processor,
            store,
            log,
            dlq,
        })
    }

    /// Waits for the services to stop (after the signal), then flushes.
    async fn wait(self) -> anyhow::Result<()> {
        let mut first_error = None;
        for (name, task) in self.tasks {
            match task.await {
                Ok(Ok(())) => tracing::info!(service = name, "stopped"),
                Ok(Err(e)) => {
                    tracing::error!(service = name, error = format!("{e:#}"), "service failed");
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    first_error.get_or_insert(anyhow::anyhow!("{name} task panicked: {e}"));
                }
            }
        }
        // Frontends are closed, so nothing new reaches the log; the processor
        // commits what it has stored and returns.
        match self.processor.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(anyhow::anyhow!("processor task panicked: {e}"));
            }
        }
        self.store.flush().await.context("final store flush")?;
        self.log
            .close()
            .await
            .context("closing the telemetry log")?;
        self.dlq
            .close()
            .await
            .context("closing the dead-letter log")?;
        tracing::info!("standalone stopped cleanly");
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {what} listener on {addr}"))
}

async fn retention_loop(store: Arc<dyn Store>, mut stop: watch::Receiver<bool>) {
    loop {
        match store.apply_retention(tributary_core::time::now_ns()).await {
            Ok(n) if n > 0 => tracing::info!(removed = n, "retention removed expired data"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention failed; will retry"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// `/metrics` (Prometheus text), `/healthz` (alive) and `/readyz` (serving).
fn ops_router(metrics: Arc<MetricsRegistry>, ready: Arc<AtomicBool>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    let mut body = String::new();
                    match prometheus_client::encoding::text::encode(&mut body, &metrics) {
                        Ok(()) => (
                            StatusCode::OK,
                            [(
                                "content-type",
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            body,
                        )
                            .into_response(),
                        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                    }
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready.load(Ordering::Acquire) {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "starting")
                    }
                }
            }),
        )
}
