//! `tributary ingest`: the device frontends (HTTP and MQTT) as a stateless
//! replica. Appends go to Kafka, credentials are checked against the
//! registry service (cached, evicted by device-events), and commands
//! addressed to this replica arrive through the commands topic.

use std::sync::Arc;

use anyhow::Context;
use prometheus_client::registry::Registry as MetricsRegistry;
use tributary_commands::routing::CommandRelay;
use tributary_ingest::{IngestConfig, IngestMetrics, Ingestor, QuotaMetrics};
use tributary_ingest_mqtt::{MqttMetrics, MqttServer};
use tributary_log::Log;

use super::args::{
    CoapArgs, HttpArgs, JwtArgs, KafkaArgs, LimitsArgs, MqttArgs, OpsArgs, RegistryClientArgs,
};
use super::ops::{Ops, Tasks, shutdown_signal, stopped};

/// Flags of `tributary ingest`.
#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// This replica's name: presence records it, and commands for devices
    /// connected here are addressed to it. Must be unique among replicas
    /// (the pod name); defaults to `$HOSTNAME`, else a random name.
    #[arg(long, env = "TRIBUTARY_FRONTEND_ID")]
    pub frontend_id: Option<String>,
    /// Payload bytes read but not yet durable, over all requests; past it,
    /// devices are told to retry.
    #[arg(long, env = "TRIBUTARY_MAX_INFLIGHT_BYTES", default_value_t = IngestConfig::default().max_inflight_bytes)]
    pub max_inflight_bytes: usize,
    /// The time-series store (`scylla://host:9042/keyspace`), for the
    /// tenants' `series` quota: new series are admitted there before the
    /// ack. Without it this replica does not enforce the quota, and says so
    /// at start-up.
    #[arg(long, env = "TRIBUTARY_STORE")]
    pub store: Option<String>,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub mqtt: MqttArgs,
    #[command(flatten)]
    pub coap: CoapArgs,
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

/// Runs an ingest replica until SIGTERM or SIGINT, then drains: listeners
/// close, in-flight appends finish and are acknowledged, MQTT clients get
/// DISCONNECT 0x8B.
pub async fn run(args: IngestArgs) -> anyhow::Result<()> {
    let stop = shutdown_signal();
    let started_ms = tributary_core::time::now_ns() / 1_000_000;
    let mut metrics = MetricsRegistry::default();
    let mut tasks = Tasks::default();
    let frontend_id = args.frontend_id.clone().unwrap_or_else(default_frontend_id);
    let limits = args.limits.limits()?;
    let keys = args.jwt.load()?;
    let client_id = format!("tributary-ingest-{frontend_id}");
    let telemetry = args.kafka.telemetry(&client_id).await? as Arc<dyn Log>;
    let commands = args.kafka.commands(&client_id).await? as Arc<dyn Log>;
    let device_events = args.kafka.device_events(&client_id).await? as Arc<dyn Log>;

    let events = tributary_registry::events::tail_events(device_events);
    let revocations = events.resubscribe();
    let directory = super::remote_directory(&args.registry, &keys, "ingest", events, &mut metrics)?;

    let series_gate = series_gate(args.store.as_deref()).await?;
    // Presence to the registry, and as `presence.online` to the log.
    let presence = Arc::new(tributary_ingest::presence::RecordedPresence::new(
        directory.clone(),
        telemetry.clone(),
    ));
    let ingestor = Ingestor::with_quota_metrics(
        telemetry,
        directory.clone(),
        IngestConfig {
            limits: limits.clone(),
            max_inflight_bytes: args.max_inflight_bytes,
            // Leave room for the key and headers under Kafka's record limit.
            max_record_bytes: (args.kafka.kafka_max_record_bytes as usize)
                .saturating_sub(16 * 1024),
            series_gate,
            retention: Some(super::retention::policy(&args.limits)?),
        },
        IngestMetrics::register(&mut metrics),
        QuotaMetrics::register(&mut metrics),
    );
    let mqtt = MqttServer::new(
        ingestor.clone(),
        presence.clone(),
        args.mqtt.mqtt_settings(frontend_id.clone())?,
        MqttMetrics::register(&mut metrics),
    )
    .context("configuring the MQTT server")?;

    let coap = super::frontends::bind_coap(
        &args.coap,
        ingestor.clone(),
        presence,
        &frontend_id,
        &mut metrics,
    )
    .await?;
    let sinks = super::frontends::DeviceSinks {
        mqtt: mqtt.clone(),
        coap: coap.servers(),
    };
    let coap = super::frontends::serve_coap(coap, &stop, &mut tasks)?;
    let mut addrs = super::frontends::start(
        &args.http,
        &args.mqtt,
        (ingestor, None),
        &mqtt,
        &stop,
        &mut tasks,
    )
    .await?;
    addrs.coap = coap.plain;
    addrs.coaps = coap.dtls;

    // Revoked devices lose their open connections within the event's delay.
    {
        let sinks = sinks.clone();
        let stop = stopped(stop.clone());
        tasks.spawn("revocations", async move {
            super::frontends::close_revoked(revocations, sinks, stop).await;
            Ok(())
        });
    }
    // Commands addressed to this replica.
    {
        let relay =
            CommandRelay::new(commands, frontend_id.clone(), Arc::new(sinks)).with_limits(limits);
        let stop = stopped(stop.clone());
        tasks.spawn("command-relay", async move {
            relay.run(stop).await.context("command relay")
        });
    }

    // Alerts to the tenant applications connected here: the transitions
    // appended to the alerts topic since this process started, read in a
    // consumer group of this replica's own (every replica reads them all).
    {
        let alerts = args.kafka.alerts(&client_id).await? as Arc<dyn tributary_log::Log>;
        let publisher = Arc::new(super::alerts::MqttAlerts(mqtt.clone()));
        let from = tributary_notify::mqtt::Position::replica(&frontend_id, started_ms);
        let delivery_metrics = tributary_notify::DeliveryMetrics::register(&mut metrics);
        let stop = stopped(stop.clone());
        tasks.spawn("alerts-mqtt", async move {
            tributary_notify::mqtt::deliver(alerts, publisher, (from, delivery_metrics), stop)
                .await
                .context("delivering alerts over MQTT")
        });
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
    println!("tributary ingest ready: frontend-id={frontend_id} {addrs} metrics={metrics_addr}");
    tasks.join().await
}

/// The series gate of `--store`: ScyllaDB's, or none (with a warning).
async fn series_gate(
    store: Option<&str>,
) -> anyhow::Result<Option<Arc<dyn tributary_core::series::SeriesGate>>> {
    let Some(url) = store else {
        tracing::warn!(
            "no --store: this replica does not enforce the tenants' series quota \
             (give it the processor's scylla:// store)"
        );
        return Ok(None);
    };
    let url = super::backends::StoreUrl::parse(url)?;
    if let super::backends::StoreUrl::Embedded(dir) = &url {
        anyhow::bail!(
            "--store {}: an ingest replica cannot share the embedded store of another \
             process; give it scylla://…, or run `tributary standalone`",
            dir.display()
        );
    }
    Ok(Some(url.open_series_gate().await?))
}

/// `$HOSTNAME` (the pod name on Kubernetes), else a random name.
fn default_frontend_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("ingest-{}", tributary_auth::random_id()))
}
