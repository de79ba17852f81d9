//! The Prometheus-compatible API against gRPC `Aggregate`, on the month of
//! a 1,000-device fleet that `tributary-query`'s `fleet_aggregate` bench
//! keeps (docs/benchmarks.md), in the same run:
//!
//! 1. one series over 30 days at a 1 h step:
//!    `avg_over_time(v{device="d7"}[1h])` against `Aggregate` of that
//!    device by hour;
//! 2. the fleet's average per fleet, by hour, over 30 days:
//!    `avg by (fleet) (avg_over_time(v[1h]))` against `Aggregate` grouped
//!    by `fleet` (the same numbers here, as every device has as many points
//!    in every hour; the bench checks they agree).
//!
//! Both over loopback sockets: the HTTP API served by
//! `tributary_http_server` (registry, query and the rest as in standalone),
//! `QueryService` by tonic. Prints p50, p99 and max of each, and the ratios.
//!
//! Run:
//! ```sh
//! FLEET_DIR=/work/fleet30 FLEET_DAYS=30 cargo bench -p tributary-query --bench fleet_aggregate  # once: writes the store
//! FLEET_DIR=/work/fleet30 cargo bench -p tributary --bench prom_fleet
//! ```

#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tonic::transport::server::TcpIncoming;
use tributary_auth::{JwtKeys, OperatorClaims, Role};
use tributary_core::commands::{Command, CommandError, CommandOutcome, CommandSink};
use tributary_core::live::LiveHub;
use tributary_log::Log;
use tributary_log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use tributary_proto::v1 as pb;
use tributary_proto::v1::query_service_client::QueryServiceClient;
use tributary_registry::{EmbeddedRegistryStore, LocalDirectory, NewDevice, NewTenant, Registry};
use tributary_store::Store;
use tributary_store::embedded::{EmbeddedStore, EmbeddedStoreConfig};

const FLEETS: usize = 10;
const NS_PER_HOUR: i64 = 3_600_000_000_000;

/// Commands have nowhere to go in this bench.
#[derive(Debug)]
struct NoDevices;

#[async_trait::async_trait]
impl CommandSink for NoDevices {
    async fn send_command(&self, _: Command) -> Result<CommandOutcome, CommandError> {
        Ok(CommandOutcome::Offline)
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(bench())
}

async fn bench() -> Result<(), Box<dyn Error>> {
    let Some(dir) = std::env::var_os("FLEET_DIR").map(std::path::PathBuf::from) else {
        return Err("set FLEET_DIR to a store kept by `cargo bench -p tributary-query --bench fleet_aggregate` (see the doc comment)".into());
    };
    let kept = std::fs::read_to_string(dir.join("fleet-bench"))
        .map_err(|e| format!("{}/fleet-bench: {e}: write the store first", dir.display()))?;
    let v: Vec<i64> = kept
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let [devices, days, first_day] = v[..] else {
        return Err("fleet-bench: expected `devices days first_day`".into());
    };
    let (from, to) = (first_day, first_day + days * 24 * NS_PER_HOUR);
    println!("fleet store: {devices} devices, {days} days from {first_day}");

    let temp = tempfile::tempdir()?;
    let store = EmbeddedStore::open(
        &dir.join("store"),
        EmbeddedStoreConfig {
            retention: None,
            ..EmbeddedStoreConfig::default()
        },
    )?;
    let keys = JwtKeys::from_secret(&[7u8; 32])?;
    let registry = Arc::new(Registry::new(
        EmbeddedRegistryStore::open(&temp.path().join("registry.redb"))?,
        Default::default(),
    ));
    registry
        .create_tenant(NewTenant {
            name: "bench".into(),
            display_name: String::new(),
            settings: Default::default(),
        })
        .await?;
    let t = Instant::now();
    for i in 0..devices {
        registry
            .create_device(NewDevice {
                tenant: "bench".into(),
                id: format!("d{i}"),
                labels: [("fleet".to_owned(), format!("f{}", i as usize % FLEETS))].into(),
                ..Default::default()
            })
            .await?;
    }
    println!(
        "registered {devices} devices in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let directory = Arc::new(LocalDirectory::new(registry.clone(), Default::default()));
    let log = |name: &str| {
        let path = temp.path().join(name);
        let name = name.to_owned();
        async move {
            EmbeddedLog::open(path, EmbeddedLogConfig::new(name, 1))
                .await
                .map(|l| l as Arc<dyn Log>)
        }
    };
    let query = tributary_query::QueryGrpc::new(
        store.clone() as Arc<dyn Store>,
        directory.clone(),
        LiveHub::default(),
        keys.clone(),
        Default::default(),
    );
    let services = tributary_api_http::Services {
        registry: Arc::new(tributary_registry::RegistryGrpc::new(
            registry.clone(),
            keys.clone(),
        )),
        rules: Arc::new(tributary_registry::RulesGrpc::new(
            registry.clone(),
            keys.clone(),
        )),
        query: Arc::new(query.clone()),
        commands: Arc::new(tributary_commands::CommandGrpc::new(
            Arc::new(NoDevices),
            directory.clone(),
            keys.clone(),
        )),
        dead_letters: Arc::new(tributary_dlq::DeadLetterGrpc::new(
            log("dlq").await?,
            log("telemetry").await?,
            keys.clone(),
        )),
        alerts: Arc::new(tributary_query::AlertsGrpc::new(
            (log("alerts").await?, log("alerts-dlq").await?),
            store.clone() as Arc<dyn tributary_store::AlertStore>,
            keys.clone(),
        )),
        keys: keys.clone(),
    };
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let router = tributary_api_http::router(services, Default::default(), stop);
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let http_addr = http.local_addr()?;
    tokio::spawn(tributary_http_server::serve(
        http,
        router,
        Default::default(),
        std::future::pending::<()>(),
    ));
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let grpc_addr = grpc.local_addr()?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(query.server())
            .serve_with_incoming(TcpIncoming::from(grpc).with_nodelay(Some(true))),
    );
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let token = keys.issue(&OperatorClaims {
        sub: "bench".into(),
        tenant: "bench".into(),
        role: Role::Viewer,
        iat: now,
        exp: now + 36_000,
    })?;
    let client = QueryServiceClient::connect(format!("http://{grpc_addr}")).await?;
    let web = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let calls = std::env::var("PROM_CALLS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(50usize);

    let prom = |query: String| {
        let (web, token) = (web.clone(), token.clone());
        let url = format!("http://{http_addr}/api/v1/query_range");
        let form = [
            ("query", query),
            ("start", (from / 1_000_000_000 + 3600).to_string()),
            ("end", (to / 1_000_000_000).to_string()),
            ("step", "3600".into()),
        ];
        async move {
            let body: serde_json::Value = web
                .post(url)
                .bearer_auth(token)
                .form(&form)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            Ok::<_, Box<dyn Error>>(body)
        }
    };
    let aggregate = |target: pb::target::Devices, group_by: &str| {
        let mut req = tonic::Request::new(pb::AggregateRequest {
            target: Some(pb::Target {
                tenant: String::new(),
                devices: Some(target),
            }),
            metrics: vec!["v".into()],
            from_ns: from,
            to_ns: to,
            window: "1h".into(),
            functions: vec![pb::AggregateFunction::Avg as i32],
            group_by_label: group_by.into(),
            tier: String::new(),
            combine_devices: 0,
        });
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let mut client = client.clone();
        async move { Ok::<_, Box<dyn Error>>(client.aggregate(req).await?.into_inner()) }
    };

    // 1. One series.
    let mut p = Vec::new();
    let mut g = Vec::new();
    let mut check = None;
    for call in 0..calls + 2 {
        let t = Instant::now();
        let body = prom("avg_over_time(v{device=\"d7\"}[1h])".into()).await?;
        let took_p = t.elapsed();
        let t = Instant::now();
        let resp = aggregate(pb::target::Devices::Device("d7".into()), "").await?;
        let took_g = t.elapsed();
        if call >= 2 {
            p.push(took_p);
            g.push(took_g);
        } else {
            check = Some((body, resp));
        }
    }
    let (body, resp) = check.expect("a first call");
    let values = body["data"]["result"][0]["values"]
        .as_array()
        .map_or(0, Vec::len);
    if values != resp.series[0].buckets.len() {
        return Err(format!(
            "one series: {values} values against {} buckets",
            resp.series[0].buckets.len()
        )
        .into());
    }
    println!("\none series, 30 days at 1 h ({values} points)");
    let pp = report("  Prometheus query_range", &mut p);
    let gp = report("  gRPC Aggregate", &mut g);
    println!(
        "  ratio at p50: {:.2}x",
        pp.as_secs_f64() / gp.as_secs_f64()
    );

    // 2. Per fleet.
    let mut p = Vec::new();
    let mut g = Vec::new();
    for call in 0..calls.min(20) + 2 {
        let t = Instant::now();
        let body = prom("avg by (fleet) (avg_over_time(v[1h]))".into()).await?;
        let took_p = t.elapsed();
        let t = Instant::now();
        let resp = aggregate(pb::target::Devices::Selector(String::new()), "fleet").await?;
        let took_g = t.elapsed();
        if call == 0 {
            agree(&body, &resp)?;
        }
        if call >= 2 {
            p.push(took_p);
            g.push(took_g);
        }
    }
    println!("\navg by fleet, {devices} devices, 30 days at 1 h");
    let pp = report("  Prometheus query_range", &mut p);
    let gp = report("  gRPC Aggregate (group_by fleet)", &mut g);
    println!(
        "  ratio at p50: {:.2}x",
        pp.as_secs_f64() / gp.as_secs_f64()
    );

    // Where the Prometheus call's time goes: finding the series, and the
    // ungrouped reads it makes (100 devices per Aggregate).
    let mut parts = (Vec::new(), Vec::new());
    for call in 0..calls.min(20) + 2 {
        let t = Instant::now();
        web.get(format!("http://{http_addr}/api/v1/series?match[]=v"))
            .bearer_auth(&token)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        let took_s = t.elapsed();
        let t = Instant::now();
        let batches: Vec<_> = (0..devices)
            .collect::<Vec<_>>()
            .chunks(100)
            .map(|c| {
                aggregate(
                    pb::target::Devices::DeviceIds(pb::DeviceIds {
                        ids: c.iter().map(|i| format!("d{i}")).collect(),
                    }),
                    "",
                )
            })
            .collect();
        for b in futures::future::join_all(batches).await {
            b?;
        }
        let took_u = t.elapsed();
        if call >= 2 {
            parts.0.push(took_s);
            parts.1.push(took_u);
        }
    }
    report(
        "  (series discovery: /api/v1/series?match[]=v)",
        &mut parts.0,
    );
    report(
        "  (gRPC Aggregate ungrouped, 10 x 100 device ids at once)",
        &mut parts.1,
    );
    Ok(())
}

/// The Prometheus answer at `t` is the Aggregate bucket that starts at
/// `t − 1h`; they must agree.
fn agree(body: &serde_json::Value, resp: &pb::AggregateResponse) -> Result<(), Box<dyn Error>> {
    let result = body["data"]["result"].as_array().ok_or("no result")?;
    if result.len() != resp.series.len() {
        return Err(format!("{} fleets against {}", result.len(), resp.series.len()).into());
    }
    let mut compared = 0;
    for series in result {
        let fleet = series["metric"]["fleet"].as_str().ok_or("no fleet")?;
        let grpc = resp
            .series
            .iter()
            .find(|s| s.group == fleet)
            .ok_or("fleet missing")?;
        for pair in series["values"].as_array().ok_or("no values")? {
            let t = (pair[0].as_f64().ok_or("t")? * 1e9) as i64 - NS_PER_HOUR;
            let v: f64 = pair[1].as_str().ok_or("v")?.parse()?;
            let b = grpc
                .buckets
                .iter()
                .find(|b| b.start_ns == t)
                .ok_or("bucket missing")?;
            let want = b.avg.ok_or("no avg")?;
            if (v - want).abs() > 1e-9 * want.abs().max(1.0) {
                return Err(format!("{fleet} at {t}: {v} against {want}").into());
            }
            compared += 1;
        }
    }
    println!("(the two agree on all {compared} fleet-hours)");
    Ok(())
}

fn report(name: &str, times: &mut [Duration]) -> Duration {
    times.sort();
    let at = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize];
    let (p50, p99, max) = (at(0.5), at(0.99), times[times.len() - 1]);
    println!(
        "{name}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} calls)",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        times.len()
    );
    p50
}
