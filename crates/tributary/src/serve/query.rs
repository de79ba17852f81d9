//! `tributary query`: QueryService and CommandService for operators, over
//! a shared store (Scylla). Live streams come from the telemetry topic;
//! commands go to the frontend replica holding the device, through the
//! commands topic.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use prometheus_client::registry::Registry as MetricsRegistry;
use tokio::sync::watch;
use tributary_commands::routing::RoutedCommandSink;
use tributary_commands::{CommandConfig, CommandGrpc, CommandMetrics, RoutingMetrics};
use tributary_core::Limits;
use tributary_core::live::LiveHub;
use tributary_dlq::DeadLetterGrpc;
use tributary_log::Log;
use tributary_query::{QueryConfig, QueryGrpc};
use tributary_store::Store;

use super::args::{ApiArgs, JwtArgs, KafkaArgs, LimitsArgs, OpsArgs, RegistryClientArgs};
use super::backends::StoreUrl;
use super::ops::{Ops, Tasks, bind, shutdown_signal, stopped};

/// Flags of `tributary query`.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// The store: `scylla://host:9042/keyspace`. (The embedded store belongs
    /// to one process: query it with `tributary processor --with-query`.)
    #[arg(long, env = "TRIBUTARY_STORE")]
    pub store: String,
    /// gRPC listen address (QueryService, CommandService, health, reflection).
    #[arg(long, env = "TRIBUTARY_GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,
    /// HTTP API listen address (`/api/v1/…`, the Prometheus-compatible
    /// query API).
    #[arg(long, env = "TRIBUTARY_API_ADDR", default_value = "0.0.0.0:8080")]
    pub api_addr: SocketAddr,
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub limits: LimitsArgs,
    #[command(flatten)]
    pub registry: RegistryClientArgs,
    #[command(flatten)]
    pub jwt: JwtArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub ops: OpsArgs,
}

/// Runs a query replica until SIGTERM or SIGINT.
pub async fn run(args: QueryArgs) -> anyhow::Result<()> {
    let store_url = StoreUrl::parse(&args.store)?;
    if matches!(store_url, StoreUrl::Embedded(_)) {
        bail!(
            "--store {:?}: a query replica needs a shared store (scylla://…); \
             the embedded store is queried through `tributary processor --with-query`",
            args.store
        );
    }
    let stop = shutdown_signal();
    let mut metrics = MetricsRegistry::default();
    let mut tasks = Tasks::default();
    let limits = args.limits.limits()?;
    let super::backends::StoreParts {
        store,
        alerts: alert_history,
        ..
    } = store_url
        .open_store_parts(args.limits.retention()?, &args.limits.tiers()?)
        .await?;
    let client_id = format!("tributary-query-{}", tributary_auth::random_id());
    // Tenants' retention: what a query says is kept. Expiry itself is the
    // store's (Scylla TTLs) and the processor's business.
    let retention = super::retention::policy(&args.limits)?;
    store.set_retention(retention.clone());
    {
        let source = super::retention::Source::Remote {
            url: args.registry.registry_url.clone(),
            keys: Box::new(args.jwt.load()?),
            role: "query",
        };
        let (retention, stop) = (retention.clone(), stop.clone());
        tasks.spawn("retention", async move {
            if source.load_first(&retention, &stop).await {
                super::retention::run(None, retention, source, stop).await;
            }
            Ok(())
        });
    }

    // Live points straight from the log's tail.
    let live = LiveHub::default();
    {
        let telemetry = args.kafka.telemetry(&client_id).await? as Arc<dyn Log>;
        let (live, limits, stop) = (live.clone(), limits.clone(), stopped(stop.clone()));
        tasks.spawn("live-tail", async move {
            tributary_processor::live_tail(telemetry, live, limits, stop).await;
            Ok(())
        });
    }
    let (grpc_addr, api_addr) = serve_apis(
        ApiParts {
            store,
            alert_history,
            live,
            limits,
            registry: args.registry.clone(),
            jwt: args.jwt.clone(),
            kafka: args.kafka.clone(),
            grpc_addr: args.grpc_addr,
            api_addr: args.api_addr,
            api: args.api.config()?,
            client_id,
            tiers: args.limits.tiers()?,
            retention,
        },
        &mut metrics,
        &stop,
        &mut tasks,
    )
    .await?;

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
    println!("tributary query ready: grpc={grpc_addr} api={api_addr} metrics={metrics_addr}");
    tasks.join().await
}

/// What the operator APIs are built from.
pub struct ApiParts {
    pub store: Arc<dyn Store>,
    /// The alert history `ListAlerts` reads (kept by the processors).
    pub alert_history: Arc<dyn tributary_store::AlertStore>,
    pub live: LiveHub,
    pub limits: Limits,
    pub registry: super::args::RegistryClientArgs,
    pub jwt: JwtArgs,
    pub kafka: KafkaArgs,
    pub grpc_addr: SocketAddr,
    /// Where the HTTP API listens.
    pub api_addr: SocketAddr,
    pub api: tributary_api_http::ApiConfig,
    pub client_id: String,
    /// The rollup tiers the processor keeps.
    pub tiers: tributary_core::rollup::Tiers,
    /// How long each tenant's data is kept, kept current by the caller.
    pub retention: Arc<tributary_core::retention::RetentionPolicy>,
}

/// Serves QueryService, CommandService, DeadLetterService and
/// AlertsService (plus health and reflection) over gRPC, and the HTTP API
/// over them and the remote registry, until `stop`; returns the gRPC and
/// HTTP API addresses.
pub async fn serve_apis(
    parts: ApiParts,
    metrics: &mut MetricsRegistry,
    stop: &watch::Receiver<bool>,
    tasks: &mut Tasks,
) -> anyhow::Result<(SocketAddr, SocketAddr)> {
    let keys = parts.jwt.load()?;
    let device_events = parts.kafka.device_events(&parts.client_id).await? as Arc<dyn Log>;
    let commands = parts.kafka.commands(&parts.client_id).await? as Arc<dyn Log>;
    let directory = super::remote_directory(
        &parts.registry,
        &keys,
        "query",
        tributary_registry::events::tail_events(device_events),
        metrics,
    )?;
    let sink = Arc::new(
        RoutedCommandSink::open(
            commands,
            directory.clone(),
            parts.client_id.clone(),
            Default::default(),
        )
        .await
        .context("starting command routing")?
        .with_metrics(RoutingMetrics::register(metrics)),
    );

    let grpc = bind(parts.grpc_addr, "gRPC").await?;
    let grpc_addr = grpc.local_addr()?;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<tributary_proto::v1::query_service_server::QueryServiceServer<QueryGrpc>>()
        .await;
    health_reporter
        .set_serving::<tributary_proto::v1::command_service_server::CommandServiceServer<CommandGrpc>>()
        .await;
    let reflection = super::reflection()?;
    let query_grpc = QueryGrpc::new(
        parts.store,
        directory.clone(),
        parts.live.clone(),
        keys.clone(),
        QueryConfig {
            rollup_tiers: parts.tiers.widths().to_vec(),
            ..super::config_file::section("query", QueryConfig::default(), &[])?
        },
    )
    .with_retention(parts.retention);
    let dlq_grpc = DeadLetterGrpc::new(
        parts.kafka.dlq(&parts.client_id).await? as Arc<dyn Log>,
        parts.kafka.telemetry(&parts.client_id).await? as Arc<dyn Log>,
        keys.clone(),
    );
    let alerts_grpc = tributary_query::AlertsGrpc::new(
        (
            parts.kafka.alerts(&parts.client_id).await? as Arc<dyn Log>,
            parts.kafka.alerts_dlq(&parts.client_id).await? as Arc<dyn Log>,
        ),
        parts.alert_history,
        keys.clone(),
    );
    let command_grpc = CommandGrpc::new(sink, directory, keys.clone())
        .with_config(super::config_file::section(
            "commands",
            CommandConfig::default(),
            &[],
        )?)
        .context("configuring the command service")?
        .with_limits(parts.limits)
        .with_metrics(CommandMetrics::register(metrics));

    // The HTTP API: these services in process, the registry's over gRPC
    // (with each caller's own token).
    let registry_channel =
        tonic::transport::Endpoint::from_shared(parts.registry.registry_url.clone())
            .with_context(|| format!("--registry-url {:?}", parts.registry.registry_url))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(30))
            .tcp_nodelay(true)
            .connect_lazy();
    let api = tributary_api_http::router(
        tributary_api_http::Services {
            registry: Arc::new(tributary_api_http::forward::RemoteRegistryService(
                tributary_proto::v1::registry_service_client::RegistryServiceClient::new(
                    registry_channel.clone(),
                ),
            )),
            rules: Arc::new(tributary_api_http::forward::RemoteRulesService(
                tributary_proto::v1::rules_service_client::RulesServiceClient::new(
                    registry_channel,
                ),
            )),
            query: Arc::new(query_grpc.clone()),
            commands: Arc::new(command_grpc.clone()),
            dead_letters: Arc::new(dlq_grpc.clone()),
            alerts: Arc::new(alerts_grpc.clone()),
            keys: keys.clone(),
        },
        parts.api,
        stop.clone(),
    )
    // The web console, a client of the API above.
    .merge(tributary_console::router());
    let api_listener = bind(parts.api_addr, "HTTP API").await?;
    let api_addr = api_listener.local_addr()?;
    {
        let api_stop = stopped(stop.clone());
        tasks.spawn("api", async move {
            tributary_http_server::serve(
                api_listener,
                api,
                tributary_http_server::HttpLimits::default(),
                api_stop,
            )
            .await
            .context("HTTP API server")
        });
    }
    let query_svc = query_grpc.server();
    let dlq_svc = dlq_grpc.into_service();
    let alerts_svc = alerts_grpc.server();
    let command_svc = command_grpc.server();
    let grpc_stop = {
        let stop = stopped(stop.clone());
        let live = parts.live;
        async move {
            stop.await;
            live.close();
        }
    };
    let grpc_metrics = tributary_otel::GrpcMetrics::register(metrics).layer();
    tasks.spawn("grpc", async move {
        tonic::transport::Server::builder()
            .layer(tributary_otel::grpc_trace_layer())
            .layer(grpc_metrics)
            .add_service(health_service)
            .add_service(reflection)
            .add_service(query_svc)
            .add_service(command_svc)
            .add_service(dlq_svc)
            .add_service(alerts_svc)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true)),
                grpc_stop,
            )
            .await
            .context("gRPC server")
    });
    Ok((grpc_addr, api_addr))
}
