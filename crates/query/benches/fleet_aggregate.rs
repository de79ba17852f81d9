//! Average per fleet over a month of a fleet of devices, Tributary against
//! InfluxDB 1.6 on the same data in the same run.
//!
//! `FLEET_DEVICES` devices (default 1,000) labelled `fleet=f0..f9`, one
//! metric each at 10 s for `FLEET_DAYS` days (default 30): 259 M points by
//! default. They are written a day and 100 devices at a time to an
//! `EmbeddedStore`, with the processor's rollup maintenance, and, when
//! `INFLUX_URL` names an InfluxDB 1.x, to its database `bench` as line
//! protocol (`m,device=…,fleet=… v=… <s>`). Then the question "average of
//! `v` per fleet per hour over the whole range" is asked:
//!
//! * of Tributary: `Aggregate` over loopback gRPC, selector over every
//!   device, `group_by_label = fleet`, 1 h window (read from the 1 h tier);
//! * of InfluxDB: `SELECT mean(v) FROM m WHERE time >= … AND time < …
//!   GROUP BY time(1h), fleet`.
//!
//! Prints p50/p90/max of each and the ratio of the medians.
//!
//! Run: `bash loadtest/fleet-aggregate.sh` (installs and starts InfluxDB),
//! or `cargo bench -p tributary-query --bench fleet_aggregate` for
//! Tributary alone. With `FLEET_DIR` set, Tributary's store is kept in that
//! directory, and a later run without `INFLUX_URL` that finds it there (with
//! the same devices and days) asks its questions without writing again.

#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

mod common;

use std::error::Error;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tributary_core::directory::{DeviceCatalog, DeviceInfo, DirectoryError};
use tributary_core::rollup::Tiers;
use tributary_core::selector::Selector;
use tributary_core::time::{NS_PER_DAY, NS_PER_SEC, day_bucket, now_ns};
use tributary_core::{Point, Value};
use tributary_processor::Rollups;
use tributary_proto::v1 as pb;
use tributary_store::embedded::{EmbeddedStore, EmbeddedStoreConfig};
use tributary_store::{DevicePoints, Store, StoreError};

const STEP_NS: i64 = 10 * NS_PER_SEC;
const PER_DAY: i64 = NS_PER_DAY / STEP_NS;
const FLEETS: usize = 10;
const CHUNK: usize = 100;

/// Devices `d0..dN`, fleet `f(i % 10)`.
#[derive(Debug)]
struct Fleet(Vec<DeviceInfo>);

#[async_trait::async_trait]
impl DeviceCatalog for Fleet {
    async fn device(&self, _: &str, device: &str) -> Result<Option<DeviceInfo>, DirectoryError> {
        Ok(self.0.iter().find(|d| d.id == device).cloned())
    }

    async fn select(&self, _: &str, _: &Selector) -> Result<Vec<DeviceInfo>, DirectoryError> {
        Ok(self.0.clone())
    }
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Box<dyn Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(bench())
}

/// A deterministic pseudo-random value of device `d` at step `i`.
fn value(d: usize, i: i64) -> f64 {
    let x = (d as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    ((x >> 11) % 10_000) as f64 / 100.0
}

async fn bench() -> Result<(), Box<dyn Error>> {
    let devices = env("FLEET_DEVICES", 1000);
    let days = env("FLEET_DAYS", 30) as i64;
    let influx = std::env::var("INFLUX_URL").ok();
    let temp = tempfile::tempdir()?;
    let dir = std::env::var_os("FLEET_DIR").map_or_else(|| temp.path().to_owned(), Into::into);
    // A kept store: "devices days first_day" of what it holds.
    let kept_file = dir.join("fleet-bench");
    let kept = std::fs::read_to_string(&kept_file)
        .ok()
        .and_then(|s| {
            let v: Vec<i64> = s
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            (v.len() == 3 && v[0] == devices as i64 && v[1] == days).then_some(v[2])
        })
        .filter(|_| influx.is_none());
    if kept.is_none() && dir.join("store").exists() {
        std::fs::remove_dir_all(dir.join("store"))?;
    }
    let store = EmbeddedStore::open(
        &dir.join("store"),
        EmbeddedStoreConfig {
            retention: None,
            ..EmbeddedStoreConfig::default()
        },
    )?;
    let fleet: Vec<DeviceInfo> = (0..devices)
        .map(|i| DeviceInfo {
            id: format!("d{i}"),
            labels: [("fleet".to_owned(), format!("f{}", i % FLEETS))].into(),
            disabled: false,
        })
        .collect();
    let first_day = kept.unwrap_or_else(|| day_bucket(now_ns()) - days * NS_PER_DAY);
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
        1_000_000,
    );
    let http = reqwest::Client::new();
    let total = devices as i64 * days * PER_DAY;
    println!(
        "writing {total} points ({devices} devices, {days} days at 10 s){}",
        if influx.is_some() {
            " to Tributary and InfluxDB"
        } else {
            ""
        }
    );
    let started = Instant::now();
    let (mut ours, mut theirs) = (Duration::ZERO, Duration::ZERO);
    if kept.is_some() {
        println!("  (kept in {}: not written again)", dir.display());
    }
    for day in (0..days).filter(|_| kept.is_none()) {
        let start = first_day + day * NS_PER_DAY;
        for chunk in fleet.chunks(CHUNK) {
            let t = Instant::now();
            let batch: Vec<DevicePoints> = chunk
                .iter()
                .map(|d| {
                    let n: usize = d.id[1..].parse().unwrap_or(0);
                    DevicePoints {
                        tenant: "bench".into(),
                        device: d.id.clone(),
                        points: (0..PER_DAY)
                            .map(|i| Point {
                                metric: "v".into(),
                                ts_ns: start + i * STEP_NS,
                                value: Value::F64(value(n, day * PER_DAY + i)),
                            })
                            .collect(),
                    }
                })
                .collect();
            for dp in &batch {
                write(store.as_ref(), std::slice::from_ref(dp)).await?;
            }
            rollups.note(&batch);
            store.flush().await?;
            rollups.flush(store.as_ref(), now_ns()).await?;
            ours += t.elapsed();
            if let Some(url) = &influx {
                let t = Instant::now();
                write_influx(&http, url, &batch).await?;
                theirs += t.elapsed();
            }
        }
        if day % 5 == 4 || day == days - 1 {
            println!(
                "  day {}/{days}: {:.0} s (Tributary {:.0} s, InfluxDB {:.0} s)",
                day + 1,
                started.elapsed().as_secs_f64(),
                ours.as_secs_f64(),
                theirs.as_secs_f64()
            );
        }
    }
    let t = Instant::now();
    store.compact().await?;
    println!("compacted in {:.1} s", t.elapsed().as_secs_f64());
    if kept.is_none() {
        std::fs::write(&kept_file, format!("{devices} {days} {first_day}"))?;
    }

    let common::Served { client, token } =
        common::serve(Arc::clone(&store) as Arc<dyn Store>, Arc::new(Fleet(fleet))).await?;
    let (from, to) = (first_day, first_day + days * NS_PER_DAY);
    let request = pb::AggregateRequest {
        target: Some(pb::Target {
            tenant: String::new(),
            devices: Some(pb::target::Devices::Selector(String::new())),
        }),
        metrics: vec!["v".into()],
        from_ns: from,
        to_ns: to,
        window: "1h".into(),
        functions: vec![pb::AggregateFunction::Avg as i32],
        group_by_label: "fleet".into(),
        ..Default::default()
    };
    let hours = (days * 24) as usize;
    let mut tributary = Vec::new();
    for call in 0..env("FLEET_CALLS", 20) + 2 {
        let req = common::authed(request.clone(), &token)?;
        let t = Instant::now();
        let resp = client.clone().aggregate(req).await?.into_inner();
        let took = t.elapsed();
        let buckets: usize = resp.series.iter().map(|s| s.buckets.len()).sum();
        let count: u64 = resp
            .series
            .iter()
            .flat_map(|s| &s.buckets)
            .map(|b| b.count)
            .sum();
        if resp.series.len() != FLEETS.min(devices)
            || buckets != FLEETS.min(devices) * hours
            || count != total as u64
        {
            return Err(format!(
                "Tributary: {} fleets, {buckets} buckets, {count} points (tier {})",
                resp.series.len(),
                resp.tier
            )
            .into());
        }
        if call >= 2 {
            tributary.push(took);
        }
        if call == 0 {
            println!("Tributary answered from the {} tier", resp.tier);
        }
    }
    let ours = common::report("Tributary Aggregate", &mut tributary);
    if let Some(url) = &influx {
        let q = format!(
            "SELECT mean(v) FROM m WHERE time >= {from} AND time < {to} GROUP BY time(1h), fleet"
        );
        let mut influx_times = Vec::new();
        for call in 0..7 {
            let t = Instant::now();
            let body: serde_json::Value = http
                .get(format!("{url}/query"))
                .query(&[("db", "bench"), ("q", q.as_str()), ("epoch", "ns")])
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let took = t.elapsed();
            let series = body["results"][0]["series"].as_array().map_or(0, Vec::len);
            let rows: usize = body["results"][0]["series"].as_array().map_or(0, |s| {
                s.iter()
                    .map(|s| s["values"].as_array().map_or(0, Vec::len))
                    .sum()
            });
            if series != FLEETS.min(devices) || rows != FLEETS.min(devices) * hours {
                return Err(format!("InfluxDB: {series} fleets, {rows} rows: {body:.300}").into());
            }
            if call >= 2 {
                influx_times.push(took);
            }
        }
        let theirs = common::report("InfluxDB 1.6 SELECT", &mut influx_times);
        println!(
            "InfluxDB / Tributary, p50: {:.1}x",
            theirs.as_secs_f64() / ours.as_secs_f64()
        );
    }
    Ok(())
}

/// A store write, retried while the store asks to wait (compaction).
async fn write(store: &dyn Store, batch: &[DevicePoints]) -> Result<(), StoreError> {
    loop {
        match store.write(batch).await {
            Err(StoreError::Backpressure) => tokio::time::sleep(Duration::from_millis(20)).await,
            other => return other,
        }
    }
}

/// The batch as line protocol, 10,000 lines a request, 4 requests at once.
async fn write_influx(
    http: &reqwest::Client,
    url: &str,
    batch: &[DevicePoints],
) -> Result<(), Box<dyn Error>> {
    let mut bodies = Vec::new();
    let mut body = String::new();
    let mut lines = 0;
    for dp in batch {
        let n: usize = dp.device[1..].parse().unwrap_or(0);
        for p in &dp.points {
            let Value::F64(v) = p.value else { continue };
            let _ = writeln!(
                body,
                "m,device={},fleet=f{} v={v} {}",
                dp.device,
                n % FLEETS,
                p.ts_ns / NS_PER_SEC
            );
            lines += 1;
            if lines == 10_000 {
                bodies.push(std::mem::take(&mut body));
                lines = 0;
            }
        }
    }
    if !body.is_empty() {
        bodies.push(body);
    }
    for group in bodies.chunks(4) {
        let sends = group.iter().map(|b| {
            http.post(format!("{url}/write?db=bench&precision=s"))
                .body(b.clone())
                .send()
        });
        for r in futures::future::join_all(sends).await {
            let r = r?;
            if !r.status().is_success() {
                return Err(format!("InfluxDB write: {}", r.status()).into());
            }
        }
    }
    Ok(())
}
