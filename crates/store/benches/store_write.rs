//! Store write and range-read benchmarks: one redb row per value against the
//! chunked embedded store. Results and how to read them: `docs/store.md`.
//!
//! ```sh
//! cargo bench -p tributary-store --bench store_write            # everything, ~6 min
//! cargo bench -p tributary-store --bench store_write -- read/   # one group
//! ```
//!
//! Write workload: `series` series (devices of 10 metrics each), written in
//! flush intervals of 100,000 points as `Store::write` calls of 1,000
//! points (100 device messages of 10 metrics sharing a timestamp), each
//! interval ending in a durable flush (one fdatasync). Throughput is points
//! per second of wall time, flushes and waits for compaction included.
//! Besides criterion's numbers the benchmark prints, to stderr, the process
//! CPU time per point (all threads: writer, flush, background compaction),
//! which is what tells how many cores an ingest rate costs.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use redb::{Database, Durability, ReadableDatabase, TableDefinition};
use tributary_core::time::{NS_PER_DAY, NS_PER_SEC, now_ns};
use tributary_core::{Point, SeriesKey, Value};
use tributary_store::embedded::{EmbeddedStore, EmbeddedStoreConfig};
use tributary_store::{DevicePoints, Order, Store};

const METRICS: usize = 10;
const INTERVAL_POINTS: usize = 100_000;
const CALL_POINTS: usize = 1_000;
const ROWS: TableDefinition<'static, (u64, i64), &[u8]> = TableDefinition::new("rows");

/// Process CPU time (user + system, all threads) from /proc, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which ends with the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')';
    // /proc reports them in USER_HZ, which is 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// Sums wall time, CPU time and points over the timed regions of one benchmark.
#[derive(Default)]
struct CpuMeter {
    cpu: f64,
    wall: f64,
    points: u64,
}

impl CpuMeter {
    fn add(&mut self, cpu: f64, wall: f64, points: u64) {
        self.cpu += cpu;
        self.wall += wall;
        self.points += points;
    }

    fn report(&self, name: &str) {
        if self.points == 0 {
            return;
        }
        let per_point_us = self.cpu / self.points as f64 * 1e6;
        eprintln!(
            "SUMMARY {name}: {:.2} M points/s wall, {:.3} µs CPU/point = {:.2} cores at 1.5 M points/s ({} points)",
            self.points as f64 / self.wall / 1e6,
            per_point_us,
            per_point_us * 1.5,
            self.points
        );
    }
}

/// Deterministic sensor-like values: two decimals, a random walk per series.
fn value(series: usize, ts_index: i64) -> f64 {
    let mut x = (series as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (ts_index as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    let jitter = (x % 200) as f64 / 100.0 - 1.0;
    ((20.0 + (series % 50) as f64 + jitter) * 100.0).round() / 100.0
}

/// One flush interval of device messages, rewritten in place for the next.
struct Workload {
    series: usize,
    /// Timestamps per series in one interval.
    ts_per_interval: i64,
    interval: i64,
    start: i64,
    calls: Vec<Vec<DevicePoints>>,
}

impl Workload {
    fn new(series: usize) -> Self {
        assert!(
            series.is_multiple_of(METRICS)
                && (INTERVAL_POINTS.is_multiple_of(series)
                    || series.is_multiple_of(INTERVAL_POINTS))
        );
        let devices = series / METRICS;
        let ts_per_interval = (INTERVAL_POINTS / series).max(1) as i64;
        let mut messages = Vec::new();
        // With more series than an interval holds, an interval covers a
        // rotating slice of the devices.
        let devices_per_interval = (INTERVAL_POINTS / METRICS).min(devices);
        for d in 0..devices_per_interval {
            for t in 0..ts_per_interval {
                let points = (0..METRICS)
                    .map(|m| Point {
                        metric: format!("metric_{m:02}"),
                        ts_ns: t,
                        value: Value::F64(0.0),
                    })
                    .collect();
                messages.push(DevicePoints {
                    tenant: "bench".into(),
                    device: format!("device-{d:07}"),
                    points,
                });
            }
        }
        let per_call = CALL_POINTS / METRICS;
        let mut calls = Vec::new();
        let mut it = messages.into_iter().peekable();
        while it.peek().is_some() {
            calls.push(it.by_ref().take(per_call).collect());
        }
        let start = (now_ns() - 30 * NS_PER_DAY).div_euclid(NS_PER_DAY) * NS_PER_DAY;
        Self {
            series,
            ts_per_interval,
            interval: 0,
            start,
            calls,
        }
    }

    fn devices_per_interval(&self) -> usize {
        (INTERVAL_POINTS / METRICS).min(self.series / METRICS)
    }

    /// Fills in the timestamps and values of the next interval.
    fn advance(&mut self) {
        let devices = self.series / METRICS;
        let per_interval = self.devices_per_interval();
        let rounds = (devices / per_interval) as i64;
        let i = self.interval;
        let (round, slice) = (i / rounds, (i % rounds) as usize);
        let mut n = 0usize;
        for call in &mut self.calls {
            for msg in call.iter_mut() {
                let d_local = n / self.ts_per_interval as usize;
                let t_local = (n % self.ts_per_interval as usize) as i64;
                let device = slice * per_interval + d_local;
                let ts_index = round * self.ts_per_interval + t_local;
                let ts = self.start + ts_index * NS_PER_SEC;
                msg.device.clear();
                msg.device.push_str(&format!("device-{device:07}"));
                for (m, p) in msg.points.iter_mut().enumerate() {
                    p.ts_ns = ts;
                    p.value = Value::F64(value(device * METRICS + m, ts_index));
                }
                n += 1;
            }
        }
        self.interval += 1;
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// (a) One redb row per value: key (series id, ts), value = tagged f64.
fn write_rows(db: &Database, w: &Workload) -> u64 {
    let mut txn = db.begin_write().expect("txn");
    txn.set_durability(Durability::Immediate)
        .expect("durability");
    let mut n = 0u64;
    {
        let mut table = txn.open_table(ROWS).expect("table");
        for call in &w.calls {
            for msg in call {
                // The id lookup is free here: parse it from the device name.
                let device: usize = msg.device["device-".len()..]
                    .parse()
                    .expect("device number");
                for (m, p) in msg.points.iter().enumerate() {
                    let mut v = [0u8; 9];
                    if let Value::F64(x) = p.value {
                        v[1..].copy_from_slice(&x.to_le_bytes());
                    }
                    table
                        .insert(((device * METRICS + m) as u64, p.ts_ns), v.as_slice())
                        .expect("insert");
                    n += 1;
                }
            }
        }
    }
    txn.commit().expect("commit");
    n
}

async fn write_store(store: &EmbeddedStore, w: &Workload, compact_every_flush: bool) -> u64 {
    let mut n = 0u64;
    for call in &w.calls {
        loop {
            match store.write(call).await {
                Ok(()) => break,
                Err(tributary_store::StoreError::Backpressure) => tokio::task::yield_now().await,
                Err(e) => panic!("write: {e}"),
            }
        }
        n += call.iter().map(|m| m.points.len() as u64).sum::<u64>();
    }
    store.flush().await.expect("flush");
    if compact_every_flush {
        store.compact().await.expect("compact");
    }
    n
}

fn bench_writes(c: &mut Criterion) {
    let mut group = c.benchmark_group("write");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .throughput(Throughput::Elements(INTERVAL_POINTS as u64));
    group
        .measurement_time(Duration::from_secs(20))
        .warm_up_time(Duration::from_secs(3));

    for series in [10_000usize, 100_000] {
        // (a) one row per value
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Database::create(dir.path().join("rows.redb")).expect("db");
        let mut w = Workload::new(series);
        let mut meter = CpuMeter::default();
        group.bench_function(BenchmarkId::new("row_per_value", series), |b| {
            b.iter_custom(|iters| {
                let mut wall = Duration::ZERO;
                for _ in 0..iters {
                    w.advance();
                    let (t, cpu) = (Instant::now(), cpu_seconds());
                    let n = write_rows(&db, &w);
                    let elapsed = t.elapsed();
                    meter.add(cpu_seconds() - cpu, elapsed.as_secs_f64(), n);
                    wall += elapsed;
                }
                wall
            });
        });
        meter.report(&format!("write/row_per_value/{series}"));
        drop(db);

        // (b) the embedded store; (b') the same, compacting at every flush
        for (name, compact_every_flush) in
            [("chunked", false), ("chunked_compact_every_flush", true)]
        {
            let rt = runtime();
            let dir = tempfile::tempdir().expect("temp dir");
            let store =
                EmbeddedStore::open(dir.path(), EmbeddedStoreConfig::default()).expect("store");
            let mut w = Workload::new(series);
            let mut meter = CpuMeter::default();
            group.bench_function(BenchmarkId::new(name, series), |b| {
                b.iter_custom(|iters| {
                    let mut wall = Duration::ZERO;
                    for _ in 0..iters {
                        w.advance();
                        let (t, cpu) = (Instant::now(), cpu_seconds());
                        let n = rt.block_on(write_store(&store, &w, compact_every_flush));
                        let elapsed = t.elapsed();
                        meter.add(cpu_seconds() - cpu, elapsed.as_secs_f64(), n);
                        wall += elapsed;
                    }
                    wall
                });
            });
            meter.report(&format!("write/{name}/{series}"));
            if w.interval == 0 {
                continue;
            }
            let s = store.stats();
            let disk = rt.block_on(store.disk_stats()).expect("disk stats");
            let written = w.interval as f64 * INTERVAL_POINTS as f64;
            eprintln!(
                "SUMMARY write/{name}/{series}: {} compactions, {} chunks, {:.2} chunk bytes/point, {:.0} MB file \
                 for {:.1} M points",
                s.compactions,
                disk.chunks,
                disk.chunk_bytes as f64 / (written - s.head_points as f64 - s.frozen_points as f64),
                disk.file_bytes as f64 / 1e6,
                written / 1e6,
            );
        }
    }
    group.finish();
}

/// p50/p99/max of `samples` runs of `f`, in µs.
fn percentiles(mut f: impl FnMut(), samples: usize) -> (f64, f64, f64) {
    let mut lat: Vec<f64> = (0..samples)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    let at = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), lat[lat.len() - 1])
}

/// A store and a redb table holding the same three days of `OTHER_SERIES + 1`
/// series at 10 s spacing, plus the same series only in a head.
struct ReadSetup {
    _dirs: [tempfile::TempDir; 3],
    rt: tokio::runtime::Runtime,
    store: Arc<EmbeddedStore>,
    head_store: Arc<EmbeddedStore>,
    db: Database,
    day: i64,
}

const DAY_POINTS: i64 = 8_640;
const OTHER_SERIES: usize = 300;
const READ_SERIES: usize = OTHER_SERIES / 2;

impl ReadSetup {
    fn new() -> Self {
        let step = 10 * NS_PER_SEC;
        let day = (now_ns() - 10 * NS_PER_DAY).div_euclid(NS_PER_DAY) * NS_PER_DAY;
        let rt = runtime();
        let points_of = |s: usize| -> Vec<Point> {
            (-DAY_POINTS..2 * DAY_POINTS)
                .map(|i| Point {
                    metric: format!("m{s}"),
                    ts_ns: day + i * step,
                    value: Value::F64(value(s, i)),
                })
                .collect()
        };
        let batch_of = |s: usize| DevicePoints {
            tenant: "bench".into(),
            device: "d".into(),
            points: points_of(s),
        };
        let dirs = [(); 3].map(|()| tempfile::tempdir().expect("temp dir"));

        // (b) chunks, after compaction
        let store =
            EmbeddedStore::open(dirs[0].path(), EmbeddedStoreConfig::default()).expect("store");
        // (b) the read series only in the head (written and flushed, not compacted)
        let head_store =
            EmbeddedStore::open(dirs[1].path(), EmbeddedStoreConfig::default()).expect("store");
        rt.block_on(async {
            for s in 0..=OTHER_SERIES {
                store.write(&[batch_of(s)]).await.expect("write");
                if s % 50 == 0 {
                    store.compact().await.expect("compact");
                }
            }
            store.flush().await.expect("flush");
            store.compact().await.expect("compact");
            head_store
                .write(&[batch_of(READ_SERIES)])
                .await
                .expect("write");
            head_store.flush().await.expect("flush");
        });
        let disk = rt.block_on(store.disk_stats()).expect("disk stats");
        eprintln!(
            "SUMMARY read setup: {} chunks for {} series of {} points",
            disk.chunks,
            OTHER_SERIES + 1,
            3 * DAY_POINTS
        );

        // (a) one row per value
        let db = Database::create(dirs[2].path().join("rows.redb")).expect("db");
        let txn = db.begin_write().expect("txn");
        {
            let mut table = txn.open_table(ROWS).expect("table");
            for s in 0..=OTHER_SERIES {
                for p in points_of(s) {
                    let mut v = [0u8; 9];
                    if let Value::F64(x) = p.value {
                        v[1..].copy_from_slice(&x.to_le_bytes());
                    }
                    table
                        .insert((s as u64, p.ts_ns), v.as_slice())
                        .expect("insert");
                }
            }
        }
        txn.commit().expect("commit");
        Self {
            _dirs: dirs,
            rt,
            store,
            head_store,
            db,
            day,
        }
    }

    fn scan(&self, store: &EmbeddedStore, order: Order) {
        let key = SeriesKey::new("bench", "d", format!("m{READ_SERIES}"));
        let got = self
            .rt
            .block_on(store.scan(&key, self.day, self.day + NS_PER_DAY, order, usize::MAX))
            .expect("scan");
        assert_eq!(got.len() as i64, DAY_POINTS);
        black_box(got);
    }

    fn scan_rows(&self) {
        let id = READ_SERIES as u64;
        let txn = self.db.begin_read().expect("read txn");
        let table = txn.open_table(ROWS).expect("table");
        let mut out = Vec::with_capacity(DAY_POINTS as usize);
        for entry in table
            .range((id, self.day)..(id, self.day + NS_PER_DAY))
            .expect("range")
        {
            let (k, v) = entry.expect("row");
            let bytes: [u8; 8] = v.value()[1..9].try_into().expect("8 bytes");
            out.push((k.value().1, f64::from_le_bytes(bytes)));
        }
        assert_eq!(out.len() as i64, DAY_POINTS);
        black_box(out);
    }
}

fn bench_reads(c: &mut Criterion) {
    let mut group = c.benchmark_group("read");
    group
        .sample_size(100)
        .throughput(Throughput::Elements(DAY_POINTS as u64));
    // Built on first use, so that filtering the read group out skips it.
    let mut setup: Option<ReadSetup> = None;
    type Case = (&'static str, fn(&ReadSetup));
    let cases: [Case; 4] = [
        ("one_day_8640/chunked", |s| s.scan(&s.store, Order::Asc)),
        ("one_day_8640/chunked_desc", |s| {
            s.scan(&s.store, Order::Desc)
        }),
        ("one_day_8640/head", |s| s.scan(&s.head_store, Order::Asc)),
        ("one_day_8640/row_per_value", ReadSetup::scan_rows),
    ];
    for (name, run) in cases {
        let mut ran = false;
        group.bench_function(name, |b| {
            let s = setup.get_or_insert_with(ReadSetup::new);
            ran = true;
            b.iter(|| run(s));
        });
        if let (true, Some(s)) = (ran, setup.as_ref()) {
            let (p50, p99, max) = percentiles(|| run(s), 2000);
            eprintln!(
                "SUMMARY read/{name}: p50 {p50:.0} µs, p99 {p99:.0} µs, max {max:.0} µs (2000 scans)"
            );
        }
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_writes(&mut c);
    bench_reads(&mut c);
    c.final_summary();
}
