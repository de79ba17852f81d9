//! `tributary registry`: tenants, devices, credentials and presence, for
//! operators (RegistryService) and for the other services
//! (DirectoryService), publishing every change to the device-events topic.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use prometheus_client::registry::Registry as MetricsRegistry;
use tributary_auth::JwtKeys;
use tributary_log::Log;
use tributary_registry::{DirectoryGrpc, Registry, RegistryConfig, RegistryGrpc};

use super::args::{JwtArgs, KafkaArgs, OpsArgs};
use super::backends::StoreUrl;
use super::ops::{Ops, Tasks, bind, shutdown_signal, stopped};

/// Flags of `tributary registry`.
#[derive(Debug, clap::Args)]
pub struct RegistryArgs {
    /// Where the registry lives: `scylla://host:9042/keyspace` (any number of
    /// replicas), or a directory for the embedded store (one replica).
    #[arg(long, env = "TRIBUTARY_STORE", default_value = "./data")]
    pub store: String,
    /// Where the first start writes the bootstrap admin token (`admin.token`).
    #[arg(long, env = "TRIBUTARY_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// gRPC listen address (RegistryService, DirectoryService, health,
    /// reflection).
    #[arg(long, env = "TRIBUTARY_GRPC_ADDR", default_value = "0.0.0.0:50052")]
    pub grpc_addr: SocketAddr,
    #[command(flatten)]
    pub jwt: JwtArgs,
    /// File holding the secret that DTLS pre-shared keys are derived from
    /// (docs/coap.md); `psk.secret` in the data directory unless given.
    /// Only the registry reads it; it is created when missing. Replacing
    /// it changes every device's PSK.
    #[arg(long, env = "TRIBUTARY_PSK_SECRET_FILE")]
    pub psk_secret_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub ops: OpsArgs,
}

/// Runs the registry until SIGTERM or SIGINT.
pub async fn run(args: RegistryArgs) -> anyhow::Result<()> {
    let stop = shutdown_signal();
    let mut metrics = MetricsRegistry::default();
    let mut tasks = Tasks::default();
    let ops_listener = bind(args.ops.metrics_addr, "metrics").await?;
    let metrics_addr = ops_listener.local_addr()?;

    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let keys = JwtKeys::load_or_create(&args.jwt.jwt_secret_file).with_context(|| {
        format!(
            "loading the JWT secret {}",
            args.jwt.jwt_secret_file.display()
        )
    })?;
    let store = StoreUrl::parse(&args.store)?.open_registry().await?;
    let psk_file = args
        .psk_secret_file
        .clone()
        .unwrap_or_else(|| args.data_dir.join("psk.secret"));
    let psk = tributary_auth::PskKeys::load_or_create(&psk_file)
        .with_context(|| format!("loading the DTLS PSK secret {}", psk_file.display()))?;
    let registry = Arc::new(
        Registry::new(
            store,
            super::config_file::section("registry", RegistryConfig::default(), &[])?,
        )
        .with_psk_keys(psk),
    );
    if let Some(token) = registry
        .bootstrap(&keys, &args.data_dir)
        .await
        .context("bootstrapping the registry")?
    {
        super::ops::announce_admin_token(&token, &args.data_dir.join("admin.token"));
    }

    // Every change goes to device-events, where frontends and query replicas
    // evict their caches and close revoked devices' connections.
    let events = args.kafka.device_events("tributary-registry").await? as Arc<dyn Log>;
    {
        let registry = registry.clone();
        let stop = stopped(stop.clone());
        tasks.spawn("device-events", async move {
            tributary_registry::events::publish_events(registry, events, stop).await;
            Ok(())
        });
    }

    let grpc = bind(args.grpc_addr, "gRPC").await?;
    let grpc_addr = grpc.local_addr()?;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<tributary_proto::v1::registry_service_server::RegistryServiceServer<RegistryGrpc>>()
        .await;
    let reflection = super::reflection()?;
    let registry_svc = RegistryGrpc::new(registry.clone(), keys.clone()).server();
    let rules_svc = tributary_registry::RulesGrpc::new(registry.clone(), keys.clone()).server();
    let directory_svc = DirectoryGrpc::new(registry.clone(), keys.clone()).server();
    let grpc_stop = stopped(stop.clone());
    let grpc_metrics = tributary_otel::GrpcMetrics::register(&mut metrics).layer();
    tasks.spawn("grpc", async move {
        tonic::transport::Server::builder()
            .layer(tributary_otel::grpc_trace_layer())
            .layer(grpc_metrics)
            .add_service(health_service)
            .add_service(reflection)
            .add_service(registry_svc)
            .add_service(rules_svc)
            .add_service(directory_svc)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true)),
                grpc_stop,
            )
            .await
            .context("gRPC server")
    });

    let ops = Ops::serve(
        ops_listener,
        args.ops.limits()?,
        metrics,
        stop.clone(),
        &mut tasks,
    );
    ops.set_ready(true);
    println!("tributary registry ready: grpc={grpc_addr} metrics={metrics_addr}");
    tasks.join().await
}
