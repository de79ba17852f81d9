//! `tributary processor`: a member of the processor consumer group. Reads
//! telemetry from Kafka, writes the store, commits after each store flush.
//! With `--with-query` it also serves the query and command APIs from the
//! same process, which is how a deployment without Scylla queries the
//! embedded store (it cannot be shared between processes).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use prometheus_client::registry::Registry as MetricsRegistry;
use tributary_core::live::LiveHub;
use tributary_log::Log;
use tributary_processor::{Processor, ProcessorConfig, ProcessorMetrics};

use super::args::{JwtArgs, KafkaArgs, LimitsArgs, OpsArgs, RegistryClientArgs};
use super::backends::StoreUrl;
use super::ops::{Ops, Tasks, shutdown_signal, stopped};

/// Flags of `tributary processor`.
#[derive(Debug, clap::Args)]
pub struct ProcessorArgs {
    /// The store: `scylla://host:9042/keyspace`, or a directory for the
    /// embedded store (then only this process may use it; see `--with-query`).
    #[arg(long, env = "TRIBUTARY_STORE", default_value = "./data/store")]
    pub store: String,
    /// The consumer group; replicas with the same group split the partitions.
    #[arg(
        long,
        env = "TRIBUTARY_PROCESSOR_GROUP",
        default_value = "tributary-processor"
    )]
    pub group: String,
    /// Also serve QueryService and CommandService on `--grpc-addr`, from this
    /// process's store.
    #[arg(long, env = "TRIBUTARY_WITH_QUERY")]
    pub with_query: bool,
    /// gRPC listen address of `--with-query`.
    #[arg(long, env = "TRIBUTARY_GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,
    /// HTTP API listen address of `--with-query` (`/api/v1/…`, the
    /// Prometheus-compatible query API).
    #[arg(long, env = "TRIBUTARY_API_ADDR", default_value = "0.0.0.0:8080")]
    pub api_addr: SocketAddr,
    #[command(flatten)]
    pub api: super::args::ApiArgs,
    /// Let alert webhooks reach loopback and private addresses (a closed
    /// network, tests). Off, a webhook resolving only to such addresses is
    /// refused at delivery.
    #[arg(long, env = "TRIBUTARY_WEBHOOKS_ALLOW_PRIVATE")]
    pub webhooks_allow_private: bool,
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

/// Runs a processor replica until SIGTERM or SIGINT; then it flushes,
/// commits and leaves the group.
pub async fn run(args: ProcessorArgs) -> anyhow::Result<()> {
    let stop = shutdown_signal();
    let mut metrics = MetricsRegistry::default();
    let mut tasks = Tasks::default();
    let limits = args.limits.limits()?;
    let store_url = StoreUrl::parse(&args.store)?;
    let super::backends::StoreParts {
        store,
        checkpoints,
        alerts: history,
    } = store_url
        .open_store_parts(args.limits.retention()?, &args.limits.tiers()?)
        .await?;
    let client_id = format!("tributary-processor-{}", tributary_auth::random_id());
    // Every tenant's retention, loaded before anything is written: under
    // the defaults, points of a tenant that keeps them longer would drop.
    let retention = super::retention::policy(&args.limits)?;
    store.set_retention(retention.clone());
    let retention_source = super::retention::Source::Remote {
        url: args.registry.registry_url.clone(),
        keys: Box::new(args.jwt.load()?),
        role: "processor",
    };
    if !retention_source.load_first(&retention, &stop).await {
        return Ok(());
    }
    let telemetry = args.kafka.telemetry(&client_id).await? as Arc<dyn Log>;
    let dlq = args.kafka.dlq(&client_id).await? as Arc<dyn Log>;
    let alerts = args.kafka.alerts(&client_id).await? as Arc<dyn Log>;
    // Rules and webhooks, read from the registry in the background.
    let registry = Arc::new(super::rules::RemoteRegistry::new(
        &args.registry.registry_url,
        args.jwt.load()?,
        "processor",
        limits.clone(),
    )?);

    let live = LiveHub::default();
    let processor = Processor::new(
        telemetry,
        dlq,
        store.clone(),
        live.clone(),
        ProcessorMetrics::register(&mut metrics),
        ProcessorConfig {
            group: args.group.clone(),
            limits: limits.clone(),
            rollup_tiers: args.limits.tiers()?,
            retention: retention.clone(),
            ..Default::default()
        },
    )
    .with_alerting(tributary_processor::Alerting {
        source: registry.clone(),
        alerts: alerts.clone(),
        checkpoints,
        config: tributary_processor::AlertingConfig::default(),
    });
    let processor_stop = stopped(stop.clone());
    let processor_store = store.clone();
    tasks.spawn("processor", async move {
        processor.run(processor_stop).await.context("processor")?;
        processor_store.flush().await.context("final store flush")
    });

    // The alert history, folded from the alerts topic, in one consumer
    // group across the processor replicas.
    {
        let (alerts, history, stop) = (alerts.clone(), history.clone(), stopped(stop.clone()));
        tasks.spawn("alert-history", async move {
            tributary_query::keep_history(alerts, history, tributary_query::DEFAULT_KEEP, stop)
                .await
                .context("keeping the alert history")
        });
    }
    // Alerts to the tenants' webhooks, in one consumer group across the
    // processor replicas.
    {
        let dlq = args.kafka.alerts_dlq(&client_id).await? as Arc<dyn Log>;
        let config = tributary_notify::webhook::WebhookConfig {
            allow_private: args.webhooks_allow_private,
            metrics: tributary_notify::DeliveryMetrics::register(&mut metrics),
            ..tributary_notify::webhook::WebhookConfig::default()
        };
        let stop = stopped(stop.clone());
        tasks.spawn("alerts-webhooks", async move {
            tributary_notify::webhook::deliver(alerts, dlq, registry, config, stop)
                .await
                .context("delivering alerts to webhooks")
        });
    }

    let grpc_addr = if args.with_query {
        let grpc = super::query::serve_apis(
            super::query::ApiParts {
                store: store.clone(),
                alert_history: history.clone(),
                live,
                limits,
                registry: args.registry.clone(),
                jwt: args.jwt.clone(),
                kafka: args.kafka.clone(),
                grpc_addr: args.grpc_addr,
                api_addr: args.api_addr,
                api: args.api.config()?,
                client_id: client_id.clone(),
                tiers: args.limits.tiers()?,
                retention: retention.clone(),
            },
            &mut metrics,
            &stop,
            &mut tasks,
        )
        .await?;
        format!(" grpc={} api={}", grpc.0, grpc.1)
    } else {
        if matches!(store_url, StoreUrl::Embedded(_)) {
            tracing::info!(
                "the embedded store serves no queries without --with-query; use scylla:// to run query replicas apart"
            );
        }
        String::new()
    };

    // Retention: kept current from the registry; the embedded store drops
    // expired data hourly, Scylla expires it by TTL.
    {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(super::retention::run(
            Some(store),
            retention,
            retention_source,
            stop,
        ));
    }

    let ops_listener = super::ops::bind(args.ops.metrics_addr, "metrics").await?;
    let metrics_addr = ops_listener.local_addr()?;
    let ops = Ops::serve(
        ops_listener,
        args.ops.limits()?,
        metrics,
        stop.clone(),
        &mut tasks,
    );
    ops.set_ready(true);
    println!(
        "tributary processor ready: group={}{grpc_addr} metrics={metrics_addr}",
        args.group
    );
    tasks.join().await
}
