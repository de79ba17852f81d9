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

mod common;

use std::error::Error;
use std::sync::Arc;
use std::time::Instant;

use tonic::transport::Channel;
use tributary_core::time::{NS_PER_DAY, NS_PER_SEC, day_bucket, now_ns};
use tributary_core::{Point, Value};
use tributary_proto::v1 as pb;
use tributary_proto::v1::query_service_client::QueryServiceClient;
use tributary_store::embedded::{EmbeddedStore, EmbeddedStoreConfig};
use tributary_store::{DevicePoints, Store};

const POINTS: usize = 8_640;
const STEP_NS: i64 = 10 * NS_PER_SEC;
const WARMUP: usize = 200;
const CALLS: usize = 2_000;

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

    let common::Served { mut client, token } = common::serve(
        Arc::clone(&store) as Arc<dyn Store>,
        Arc::new(common::OneDevice),
    )
    .await?;
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
        let req = common::authed(request.clone(), token);
        let mut client = client.clone();
        async move {
            let page = client.query_range(req?).await?.into_inner();
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
    common::report(label, &mut latencies);
    Ok(())
}
