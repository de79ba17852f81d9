//! `tributary standalone`: every service in one process, embedded storage.
//!
//! Wiring only: each service is a library with its own `run`/`serve`; this
//! module opens the embedded log, store and registry under the data dir,
//! binds the listeners, starts the services and, on SIGTERM or SIGINT, stops
//! accepting, drains, flushes and returns.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use prometheus_client::registry::Registry as MetricsRegistry;
use tributary_auth::JwtKeys;
use tributary_commands::{CommandConfig, CommandGrpc, CommandMetrics};
use tributary_core::live::LiveHub;
use tributary_core::series::SeriesGate;
use tributary_dlq::DeadLetterGrpc;
use tributary_ingest::{IngestConfig, IngestMetrics, Ingestor, QuotaMetrics};
use tributary_ingest_mqtt::{MqttMetrics, MqttServer};
use tributary_log::Log;
use tributary_log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use tributary_processor::{Processor, ProcessorConfig, ProcessorMetrics};
use tributary_query::{QueryConfig, QueryGrpc};
use tributary_registry::{
    EmbeddedRegistryStore, LocalDirectory, Registry, RegistryConfig, RegistryGrpc,
};
use tributary_store::Store;
use tributary_store::embedded::{EmbeddedStore, EmbeddedStoreConfig};

use super::args::{ApiArgs, CoapArgs, HttpArgs, LimitsArgs, MqttArgs, OpsArgs};
use super::frontends::FrontendAddrs;
use super::ops::{Ops, Tasks, bind, shutdown_signal, stopped};

/// Flags of `tributary standalone`. Every flag can also be set by the
/// environment variable named in its help.
#[derive(Debug, clap::Args)]
pub struct StandaloneArgs {
    /// Where the log, the store, the registry and the keys live.
    #[arg(long, env = "TRIBUTARY_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// gRPC listen address (registry, query, commands, health, reflection).
    #[arg(long, env = "TRIBUTARY_GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,
    /// Partitions of the embedded telemetry log (fixed when the log is created).
    #[arg(long, env = "TRIBUTARY_LOG_PARTITIONS", default_value_t = 4)]
    pub log_partitions: u32,
    /// Threads writing the embedded log, each group-committing its share of
    /// the partitions (0: half the CPUs, at most the partitions).
    #[arg(long, env = "TRIBUTARY_LOG_WRITER_THREADS", default_value_t = 0)]
    pub log_writer_threads: u32,
    /// Bytes of requests and messages read but not yet durable, across all
    /// clients; past it new ones are refused (HTTP 503, MQTT 0x89).
    #[arg(long, env = "TRIBUTARY_MAX_INFLIGHT_BYTES", default_value_t = IngestConfig::default().max_inflight_bytes)]
    pub max_inflight_bytes: usize,
    /// Most time series (device × metric) the store holds, for every
    /// tenant; a request that would create more is refused at ingest (and
    /// each tenant has its own `series` quota within it).
    #[arg(long, env = "TRIBUTARY_MAX_SERIES", default_value_t = EmbeddedStoreConfig::default().max_series)]
    pub max_series: u64,
    /// Let alert webhooks reach loopback and private addresses (a closed
    /// network, tests). Off, a webhook resolving only to such addresses is
    /// dead-lettered.
    #[arg(long, env = "TRIBUTARY_WEBHOOKS_ALLOW_PRIVATE")]
    pub webhooks_allow_private: bool,
    /// Serve the HTTP API (`/api/v1/…`, the Prometheus-compatible query
    /// API) on a listener of its own at this address. Unset (the default),
    /// it shares the HTTP ingest listener (`--http-addr`): one port for all
    /// of HTTP.
    #[arg(long, env = "TRIBUTARY_API_ADDR")]
    pub api_addr: Option<SocketAddr>,
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub mqtt: MqttArgs,
    #[command(flatten)]
    pub coap: CoapArgs,
    #[command(flatten)]
    pub limits: LimitsArgs,
    #[command(flatten)]
    pub ops: OpsArgs,
}

/// Runs standalone until SIGTERM or SIGINT.
pub async fn run(args: StandaloneArgs) -> anyhow::Result<()> {
    let stop = shutdown_signal();
    let platform = Platform::start(&args, stop).await?;
    let addrs = platform.frontends;
    let optional = [
        ("mqtts", addrs.mqtts),
        ("mqtt-wss", addrs.mqtt_wss),
        ("coap", addrs.coap),
        ("coaps", addrs.coaps),
    ]
    .into_iter()
    .filter_map(|(name, addr)| addr.map(|a| format!(" {name}={a}")))
    .collect::<String>();
    println!(
        "tributary standalone ready: http={} api={} grpc={} metrics={} mqtt={} mqtt-ws={}{optional} data-dir={}",
        addrs.http,
        platform.api_addr,
        platform.grpc_addr,
        platform.metrics_addr,
        addrs.mqtt,
        addrs.mqtt_ws,
        args.data_dir.display()
    );
    platform.wait().await
}

/// The running services of one standalone process.
struct Platform {
    frontends: FrontendAddrs,
    /// Where the HTTP API listens (the HTTP ingest address by default).
    api_addr: SocketAddr,
    grpc_addr: SocketAddr,
    metrics_addr: SocketAddr,
    tasks: Tasks,
    processor: tokio::task::JoinHandle<anyhow::Result<()>>,
    store: Arc<dyn Store>,
    log: Arc<EmbeddedLog>,
    dlq: Arc<EmbeddedLog>,
}

impl Platform {
    async fn start(
        args: &StandaloneArgs,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        let dir = &args.data_dir;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating data dir {}", dir.display()))?;
        let limits = args.limits.limits()?;
        let mut metrics = MetricsRegistry::default();
        let delivery_metrics = tributary_notify::DeliveryMetrics::register(&mut metrics);

        // Storage engines.
        let log = EmbeddedLog::open(
            dir.join("log/telemetry"),
            EmbeddedLogConfig {
                writer_threads: args.log_writer_threads,
                ..EmbeddedLogConfig::new("tributary.telemetry.v1", args.log_partitions)
            },
        )
        .await
        .context("opening the telemetry log")?;
        let dlq = EmbeddedLog::open(
            dir.join("log/dlq"),
            EmbeddedLogConfig::new("tributary.dlq.v1", 1),
        )
        .await
        .context("opening the dead-letter log")?;
        let alerts = EmbeddedLog::open(
            dir.join("log/alerts"),
            EmbeddedLogConfig::new("tributary.alerts.v1", 1),
        )
        .await
        .context("opening the alerts log")?;
        let alerts_dlq = EmbeddedLog::open(
            dir.join("log/alerts-dlq"),
            EmbeddedLogConfig::new("tributary.alerts.dlq.v1", 1),
        )
        .await
        .context("opening the alerts dead-letter log")?;
        let embedded_store = EmbeddedStore::open(
            &dir.join("store"),
            EmbeddedStoreConfig {
                retention: args.limits.retention()?,
                max_series: args.max_series,
                ..Default::default()
            },
        )
        .context("opening the store")?;
        // The store's series limit is checked at ingest, before the ack.
        let series_gate: Arc<dyn SeriesGate> = embedded_store.clone();
        let checkpoints: Arc<dyn tributary_store::CheckpointStore> = embedded_store.clone();
        let alert_history: Arc<dyn tributary_store::AlertStore> = embedded_store.clone();
        let store: Arc<dyn Store> = embedded_store;
        let registry_store = EmbeddedRegistryStore::open(&super::backends::registry_file(dir))
            .context("opening the registry")?;

        // Registry and credentials.
        let keys = JwtKeys::load_or_create(&dir.join("jwt.secret"))
            .context("loading the JWT signing key")?;
        let psk = tributary_auth::PskKeys::load_or_create(&dir.join("psk.secret"))
            .context("loading the DTLS PSK secret")?;
        let registry = Arc::new(
            Registry::new(
                registry_store,
                super::config_file::section("registry", RegistryConfig::default(), &[])?,
            )
            .with_psk_keys(psk),
        );
        if let Some(token) = registry
            .bootstrap(&keys, dir)
            .await
            .context("bootstrapping the registry")?
        {
            super::ops::announce_admin_token(&token, &dir.join("admin.token"));
        }
        let revocations = registry.events();
        let directory = Arc::new(LocalDirectory::new(registry.clone(), Default::default()));
        // Every tenant's retention, loaded before anything is written.
        let retention = super::retention::policy(&args.limits)?;
        store.set_retention(retention.clone());
        let retention_source = super::retention::Source::Local(registry.clone());
        if !retention_source.load_first(&retention, &stop).await {
            anyhow::bail!("stopped while loading the tenants' retention settings");
        }

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
                rollup_tiers: args.limits.tiers()?,
                retention: retention.clone(),
                ..Default::default()
            },
        )
        .with_alerting(tributary_processor::Alerting {
            source: Arc::new(super::rules::LocalRules(registry.clone())),
            alerts: alerts.clone() as Arc<dyn Log>,
            checkpoints,
            config: Default::default(),
        });
        let processor = {
            let stop = stopped(stop.clone());
            tokio::spawn(async move { processor.run(stop).await.map_err(anyhow::Error::from) })
        };

        // Frontends.
        let command_limits = limits.clone();
        let ingestor = Ingestor::with_quota_metrics(
            log.clone() as Arc<dyn Log>,
            directory.clone(),
            IngestConfig {
                limits,
                max_inflight_bytes: args.max_inflight_bytes,
                series_gate: Some(series_gate),
                retention: Some(retention.clone()),
                ..Default::default()
            },
            IngestMetrics::register(&mut metrics),
            QuotaMetrics::register(&mut metrics),
        );
        // Presence to the registry, and as `presence.online` to the log.
        let presence = Arc::new(tributary_ingest::presence::RecordedPresence::new(
            directory.clone(),
            log.clone() as Arc<dyn Log>,
        ));
        let mqtt = MqttServer::new(
            ingestor.clone(),
            presence.clone(),
            args.mqtt.mqtt_settings("standalone".into())?,
            MqttMetrics::register(&mut metrics),
        )
        .context("configuring the MQTT server")?;
        // Operator APIs. Commands reach devices through the in-process MQTT
        // server.
        let grpc = bind(args.grpc_addr, "gRPC").await?;
        let grpc_addr = grpc.local_addr()?;
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
        let reflection = super::reflection()?;
        let registry_grpc = RegistryGrpc::new(registry.clone(), keys.clone());
        let rules_grpc = tributary_registry::RulesGrpc::new(registry.clone(), keys.clone());
        let alerts_grpc = tributary_query::AlertsGrpc::new(
            (
                alerts.clone() as Arc<dyn Log>,
                alerts_dlq.clone() as Arc<dyn Log>,
            ),
            alert_history.clone(),
            keys.clone(),
        );
        let query_grpc = QueryGrpc::new(
            store.clone(),
            directory.clone(),
            live.clone(),
            keys.clone(),
            QueryConfig {
                rollup_tiers: args.limits.tiers()?.widths().to_vec(),
                ..super::config_file::section("query", QueryConfig::default(), &[])?
            },
        )
        .with_retention(retention.clone());
        let dlq_grpc = DeadLetterGrpc::new(
            dlq.clone() as Arc<dyn Log>,
            log.clone() as Arc<dyn Log>,
            keys.clone(),
        );
        let coap = super::frontends::bind_coap(
            &args.coap,
            ingestor.clone(),
            presence,
            "standalone",
            &mut metrics,
        )
        .await?;
        let sinks = super::frontends::DeviceSinks {
            mqtt: mqtt.clone(),
            coap: coap.servers(),
        };
        let command_grpc =
            CommandGrpc::new(Arc::new(sinks.clone()), directory.clone(), keys.clone())
                .with_config(super::config_file::section(
                    "commands",
                    CommandConfig::default(),
                    &[],
                )?)
                .context("configuring the command service")?
                .with_limits(command_limits)
                .with_metrics(CommandMetrics::register(&mut metrics));
        let api = tributary_api_http::router(
            tributary_api_http::Services {
                registry: Arc::new(registry_grpc.clone()),
                rules: Arc::new(rules_grpc.clone()),
                query: Arc::new(query_grpc.clone()),
                commands: Arc::new(command_grpc.clone()),
                dead_letters: Arc::new(dlq_grpc.clone()),
                alerts: Arc::new(alerts_grpc.clone()),
                keys: keys.clone(),
            },
            args.api.config()?,
            stop.clone(),
        )
        // The web console, a client of the API above.
        .merge(tributary_console::router());
        let registry_svc = registry_grpc.server();
        let rules_svc = rules_grpc.server();
        let alerts_svc = alerts_grpc.server();
        let query_svc = query_grpc.server();
        let dlq_svc = dlq_grpc.into_service();
        let command_svc = command_grpc.server();
        let mut tasks = Tasks::default();
        let (shared_api, api_addr) = match args.api_addr {
            None => (Some(api), None),
            Some(addr) => {
                let listener = bind(addr, "HTTP API").await?;
                let bound = listener.local_addr()?;
                let (limits, api_stop) = (args.http.limits()?, stopped(stop.clone()));
                tasks.spawn("api", async move {
                    tributary_http_server::serve(listener, api, limits, api_stop)
                        .await
                        .context("HTTP API server")
                });
                (None, Some(bound))
            }
        };
        let coap = super::frontends::serve_coap(coap, &stop, &mut tasks)?;
        let mut frontends = super::frontends::start(
            &args.http,
            &args.mqtt,
            (ingestor, shared_api),
            &mqtt,
            &stop,
            &mut tasks,
        )
        .await?;
        frontends.coap = coap.plain;
        frontends.coaps = coap.dtls;
        let api_addr = api_addr.unwrap_or(frontends.http);
        // The alert history, folded from the alerts log.
        {
            let alerts = alerts.clone() as Arc<dyn Log>;
            let (history, stop) = (alert_history.clone(), stopped(stop.clone()));
            tasks.spawn("alert-history", async move {
                tributary_query::keep_history(alerts, history, tributary_query::DEFAULT_KEEP, stop)
                    .await
                    .context("keeping the alert history")
            });
        }
        // Alerts to webhooks, from the alerts log.
        {
            let alerts = alerts.clone() as Arc<dyn Log>;
            let dlq = alerts_dlq.clone() as Arc<dyn Log>;
            let source = Arc::new(super::alerts::LocalWebhooks(registry.clone()));
            let config = tributary_notify::webhook::WebhookConfig {
                allow_private: args.webhooks_allow_private,
                metrics: delivery_metrics.clone(),
                ..Default::default()
            };
            let stop = stopped(stop.clone());
            tasks.spawn("alerts-webhooks", async move {
                tributary_notify::webhook::deliver(alerts, dlq, source, config, stop)
                    .await
                    .context("delivering alerts to webhooks")
            });
        }
        // Alerts to tenant applications over MQTT, from the alerts log.
        {
            let alerts = alerts.clone() as Arc<dyn Log>;
            let publisher = Arc::new(super::alerts::MqttAlerts(mqtt.clone()));
            let stop = stopped(stop.clone());
            tasks.spawn("alerts-mqtt", async move {
                tributary_notify::mqtt::deliver(
                    alerts,
                    publisher,
                    (
                        tributary_notify::mqtt::Position::standalone(),
                        delivery_metrics.clone(),
                    ),
                    stop,
                )
                .await
                .context("delivering alerts over MQTT")
            });
        }
        {
            let (sinks, stop) = (sinks.clone(), stopped(stop.clone()));
            tasks.spawn("revocations", async move {
                super::frontends::close_revoked(revocations, sinks, stop).await;
                Ok(())
            });
        }

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
        let grpc_metrics = tributary_otel::GrpcMetrics::register(&mut metrics).layer();
        tasks.spawn("grpc", async move {
            tonic::transport::Server::builder()
                .layer(tributary_otel::grpc_trace_layer())
                .layer(grpc_metrics)
                .add_service(health_service)
                .add_service(reflection)
                .add_service(registry_svc)
                .add_service(rules_svc)
                .add_service(alerts_svc)
                .add_service(query_svc)
                .add_service(command_svc)
                .add_service(dlq_svc)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true)),
                    grpc_stop,
                )
                .await
                .context("gRPC server")
        });

        // Retention: kept current from the registry, applied hourly and
        // once at start.
        {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(super::retention::run(
                Some(store),
                retention,
                retention_source,
                stop,
            ));
        }

        let ops_listener = bind(args.ops.metrics_addr, "metrics").await?;
        let metrics_addr = ops_listener.local_addr()?;
        let ops = Ops::serve(
            ops_listener,
            args.ops.limits()?,
            metrics,
            stop.clone(),
            &mut tasks,
        );
        ops.set_ready(true);
        Ok(Self {
            frontends,
            api_addr,
            grpc_addr,
            metrics_addr,
            tasks,
            processor,
            store,
            log,
            dlq,
        })
    }

    /// Waits for the services to stop (after the signal), then flushes.
    async fn wait(self) -> anyhow::Result<()> {
        let services = self.tasks.join().await;
        // Frontends are closed, so nothing new reaches the log; the processor
        // commits what it has stored and returns.
        let processor = match self.processor.await {
            Ok(r) => r,
            Err(e) => Err(anyhow::anyhow!("processor task panicked: {e}")),
        };
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
        services.and(processor)
    }
}
