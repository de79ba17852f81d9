//! Latency of `Aggregate` over a year of one series, as a client sees it:
//! tonic client → loopback TCP → `QueryGrpc` → `EmbeddedStore`, through the
//! rollup planner, and the same question over raw points in the same run.
//!
//! One series, one year at 10 s (3,153,600 points), is written a day at a
//! time to an `EmbeddedStore` (kept forever) while the processor's rollup
//! maintenance (`tributary_processor::Rollups`, tiers 1m, 1h, 1d) keeps its
//! rollups, as in production; then compacted. Then:
//!
//! * 2,000 warm calls of avg/min/max/count/stddev with a 1 d window over the
//!   year (365 buckets), read from the 1 d tier;
//! * the same with a 1 h window (8,760 buckets, from the 1 h tier);
//! * 5 calls of the 1 d question with `tier = "raw"`: the raw scan.
//!
//! Prints p50/p90/p99/max of each and the raw/rollup ratio.
//!
//! Run: `cargo bench -p tributary-query --bench aggregate_year`

#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

mod common;

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tributary_core::rollup::Tiers;
use tributary_core::time::{NS_PER_DAY, NS_PER_SEC, day_bucket, now_ns};
use tributary_core::{Point, Value};
use tributary_processor::Rollups;
use tributary_proto::v1 as pb;
use tributary_proto::v1::query_service_client::QueryServiceClient;
use tributary_store::embedded::{EmbeddedStore, EmbeddedStoreConfig};
use tributary_store::{DevicePoints, Store};

const DAYS: i64 = 365;
const STEP_NS: i64 = 10 * NS_PER_SEC;
const PER_DAY: i64 = NS_PER_DAY / STEP_NS;
const WARMUP: usize = 200;
const CALLS: usize = 2_000;
const RAW_CALLS: usize = 5;

fn main() -> Result<(), Box<dyn Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(bench())
}

async fn bench() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let store = EmbeddedStore::open(
        dir.path(),
        EmbeddedStoreConfig {
            retention: None,
            ..EmbeddedStoreConfig::default()
        },
    )?;
    // The year that ended at the start of today, UTC.
    let first_day = day_bucket(now_ns()) - DAYS * NS_PER_DAY;
    let tiers = Tiers::default();
    for &w in tiers.widths() {
        store.mark_rollups_since(w, i64::MIN).await?;
    }
    let mut rollups = Rollups::new(
        tiers,
        std::sync::Arc::new(tributary_core::retention::RetentionPolicy::new(
            tributary_core::retention::Keep::Forever,
            tributary_core::rollup::Tiers::none(),
        )),
        1000,
    );
    let started = Instant::now();
    for day in 0..DAYS {
        let start = first_day + day * NS_PER_DAY;
        let points = (0..PER_DAY)
            .map(|i| Point {
                metric: "temp".into(),
                ts_ns: start + i * STEP_NS,
                value: Value::F64(20.0 + ((day * PER_DAY + i) % 1000) as f64 / 100.0),
            })
            .collect();
        let batch = [DevicePoints {
            tenant: "bench".into(),
            device: "d1".into(),
            points,
        }];
        store.write(&batch).await?;
        rollups.note(&batch);
        store.flush().await?;
        rollups.flush(store.as_ref(), now_ns()).await?;
    }
    store.compact().await?;
    println!(
        "wrote {} points and their rollups in {:.1} s",
        DAYS * PER_DAY,
        started.elapsed().as_secs_f64()
    );

    let common::Served { mut client, token } = common::serve(
        Arc::clone(&store) as Arc<dyn Store>,
        Arc::new(common::OneDevice),
    )
    .await?;
    let request = |window: &str, tier: &str| pb::AggregateRequest {
        target: Some(pb::Target {
            tenant: String::new(),
            devices: Some(pb::target::Devices::Device("d1".into())),
        }),
        metrics: vec!["temp".into()],
        from_ns: first_day,
        to_ns: first_day + DAYS * NS_PER_DAY,
        window: window.into(),
        functions: [
            pb::AggregateFunction::Avg,
            pb::AggregateFunction::Min,
            pb::AggregateFunction::Max,
            pb::AggregateFunction::Count,
            pb::AggregateFunction::Stddev,
        ]
        .iter()
        .map(|f| *f as i32)
        .collect(),
        tier: tier.into(),
        ..Default::default()
    };

    println!("Aggregate of one series over a year at 10 s, loopback gRPC");
    let day_tier = run(
        "1d window, rollups",
        &mut client,
        &request("1d", ""),
        &token,
        "1d",
        365,
        WARMUP,
        CALLS,
    )
    .await?;
    run(
        "1h window, rollups",
        &mut client,
        &request("1h", ""),
        &token,
        "1h",
        8760,
        20,
        200,
    )
    .await?;
    let raw = run(
        "1d window, raw scan",
        &mut client,
        &request("1d", "raw"),
        &token,
        "raw",
        365,
        1,
        RAW_CALLS,
    )
    .await?;
    println!(
        "raw scan / rollups, p50: {:.0}x",
        raw.as_secs_f64() / day_tier.as_secs_f64()
    );
    Ok(())
}

/// Runs `calls` timed calls after `warmup`, checks the answer, prints the
/// percentiles, returns the p50.
#[allow(clippy::too_many_arguments)]
async fn run(
    label: &str,
    client: &mut QueryServiceClient<Channel>,
    request: &pb::AggregateRequest,
    token: &str,
    tier: &str,
    buckets: usize,
    warmup: usize,
    calls: usize,
) -> Result<Duration, Box<dyn Error>> {
    let call = |client: &mut QueryServiceClient<Channel>| {
        let req = common::authed(request.clone(), token);
        let mut client = client.clone();
        async move {
            let resp = client.aggregate(req?).await?.into_inner();
            let got = resp.series.first().map_or(0, |s| s.buckets.len());
            let count: u64 = resp
                .series
                .first()
                .map_or(0, |s| s.buckets.iter().map(|b| b.count).sum());
            if resp.tier != tier || got != buckets || count != (DAYS * PER_DAY) as u64 {
                return Err(format!(
                    "expected {buckets} buckets from {tier}, got {got} from {} ({count} points)",
                    resp.tier
                )
                .into());
            }
            Ok::<_, Box<dyn Error>>(())
        }
    };
    for _ in 0..warmup {
        call(client).await?;
    }
    let mut latencies = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        call(client).await?;
        latencies.push(start.elapsed());
    }
    Ok(common::report(label, &mut latencies))
}
