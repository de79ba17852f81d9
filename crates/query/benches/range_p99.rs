//! Latency of `QueryRange` for one full day of one series, as a client sees
//! it: generated tonic client → loopback TCP → `QueryGrpc` → `EmbeddedStore`.
//!
//! One series of 8,640 points at 10 s (one UTC day) is written and flushed to
//! an `EmbeddedStore` in a temp dir. Then 2,000 warm calls read the whole day
//! in one page, first while the points sit in the store's flushed head, then
//! again after compaction into on-disk chunks. Prints p50/p90/p99/max.
//!
//! Run: `cargo bench -p tributary-query --bench range_p99`

#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tonic::transport::Channel;
use tonic::transport::server::TcpIncoming;
use tributary_auth::{JwtKeys, OperatorClaims, Role};
use tributary_core::directory::{DeviceCatalog, DeviceInfo, DirectoryError};
use tributary_core::live::LiveHub;
use tributary_core::selector::Selector;
use tributary_core::time::{NS_PER_DAY, NS_PER_SEC, day_bucket, now_ns};
use tributary_core::{Point, Value};
use tributary_proto::v1 as pb;
use tributary_proto::v1::query_service_client::QueryServiceClient;
use tributary_query::{QueryConfig, QueryGrpc};
use tributary_store::embedded::{EmbeddedStore, EmbeddedStoreConfig};
use tributary_store::{DevicePoints, Store};

const POINTS: usize = 8_640;
const STEP_NS: i64 = 10 * NS_PER_SEC;
const WARMUP: usize = 200;
const CALLS: usize = 2_000;

/// The one device of the benchmark.
#[derive(Debug)]
struct OneDevice;

#[async_trait::async_trait]
impl DeviceCatalog for OneDevice {
    async fn device(
        &self,
        tenant: &str,
        device: &str,
    ) -> Result<Option<DeviceInfo>, DirectoryError> {
        Ok((tenant == "bench" && device == "d1").then(|| DeviceInfo {
            id: "d1".into(),
            labels: Default::default(),
            disabled: false,
        }))
    }

    async fn select(&self, tenant: &str, _: &Selector) -> Result<Vec<DeviceInfo>, DirectoryError> {
        Ok(self.device(tenant, "d1").await?.into_iter().collect())
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(bench())
}

async fn bench() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let store = EmbeddedStore::open(dir.path(), EmbeddedStoreConfig::default())?;
    // Yesterday, UTC: inside the default retention.
    let day = day_bucket(now_ns()) - NS_PER_DAY;
    let points = (0..POINTS)
        .map(|i| Point {
            metric: "temp".into(),
            ts_ns: day + i as i64 * STEP_NS,
            value: Value::F64(20.0 + i as f64 / 1000.0),
        })
        .collect();
    store
        .write(&[DevicePoints {
            tenant: "bench".into(),
            device: "d1".into(),
            points,
        }])
        .await?;
    store.flush().await?;

    let keys = JwtKeys::from_secret(&[7u8; 32])?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let token = keys.issue(&OperatorClaims {
        sub: "bench".into(),
        tenant: "bench".into(),
        role: Role::Viewer,
        iat: now,
        exp: now + 3600,
    })?;
    let service = QueryGrpc::new(
        Arc::clone(&store) as Arc<dyn Store>,
        Arc::new(OneDevice),
        LiveHub::default(),
        keys,
        QueryConfig::default(),
    );
    // TCP_NODELAY, as a production server sets it: without it, Nagle's
    // algorithm and delayed ACKs add up to 40 ms to responses of many segments.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service.server())
            .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true))),
    );
    let mut client = QueryServiceClient::connect(format!("http://{addr}")).await?;
    let request = pb::QueryRangeRequest {
        target: Some(pb::Target {
            tenant: String::new(),
            devices: Some(pb::target::Devices::Device("d1".into())),
        }),
        metrics: vec!["temp".into()],
        from_ns: day,
        to_ns: day + NS_PER_DAY,
        limit: 10_000,
        ..Default::default()
    };

    println!(
        "QueryRange of one series, {POINTS} points (one day at 10 s), {CALLS} calls over loopback gRPC"
    );
    run("flushed head", &mut client, &request, &token).await?;
    store.compact().await?;
    run("compacted chunks", &mut client, &request, &token).await?;
    Ok(())
}

async fn run(
    label: &str,
    client: &mut QueryServiceClient<Channel>,
    request: &pb::QueryRangeRequest,
    token: &str,
) -> Result<(), Box<dyn Error>> {
    let call = |client: &mut QueryServiceClient<Channel>| {
        let mut req = tonic::Request::new(request.clone());
        let auth = format!("Bearer {token}").parse();
        let mut client = client.clone();
        async move {
            req.metadata_mut().insert("authorization", auth?);
            let page = client.query_range(req).await?.into_inner();
            let points: usize = page.series.iter().map(|s| s.points.len()).sum();
            if points != POINTS || !page.next_page_token.is_empty() {
                return Err(format!("expected {POINTS} points in one page, got {points}").into());
            }
            Ok::<_, Box<dyn Error>>(())
        }
    };
    for _ in 0..WARMUP {
        call(client).await?;
    }
    let mut latencies = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let start = Instant::now();
        call(client).await?;
        latencies.push(start.elapsed());
    }
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{label:>17}: p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        ms(pct(0.50)),
        ms(pct(0.90)),
        ms(pct(0.99)),
        ms(latencies[latencies.len() - 1]),
    );
    Ok(())
}
