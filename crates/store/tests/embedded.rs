//! Behaviour of `EmbeddedStore` beyond the shared suite: durability across
//! reopen and `kill -9`, the memory bound, concurrency, late data and
//! retention of whole days.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tributary_core::time::{NS_PER_DAY, NS_PER_SEC, now_ns};
use tributary_core::{Point, Sample, SeriesKey, Value};
use tributary_store::embedded::{EmbeddedStore, EmbeddedStoreConfig};
use tributary_store::{DevicePoints, Order, Store, StoreError};

const ALL: usize = usize::MAX;

fn open(dir: &Path, config: EmbeddedStoreConfig) -> Arc<EmbeddedStore> {
    EmbeddedStore::open(dir, config).expect("store opens")
}

fn dp(tenant: &str, device: &str, points: Vec<Point>) -> DevicePoints {
    DevicePoints {
        tenant: tenant.into(),
        device: device.into(),
        points,
    }
}

fn pt(metric: &str, ts_ns: i64, value: Value) -> Point {
    Point {
        metric: metric.into(),
        ts_ns,
        value,
    }
}

fn key(tenant: &str, device: &str, metric: &str) -> SeriesKey {
    SeriesKey::new(tenant, device, metric)
}

/// A timestamp `days` UTC days ago, at midnight.
fn days_ago(days: i64) -> i64 {
    (now_ns().div_euclid(NS_PER_DAY) - days) * NS_PER_DAY
}

async fn write_retrying(store: &dyn Store, batch: &[DevicePoints]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match store.write(batch).await {
            Ok(()) => return,
            Err(StoreError::Backpressure) if Instant::now() < deadline => {
                tokio::task::yield_now().await
            }
            Err(e) => panic!("write failed: {e}"),
        }
    }
}

async fn scan_all(store: &dyn Store, k: &SeriesKey) -> Vec<Sample> {
    store
        .scan(k, i64::MIN, i64::MAX, Order::Asc, ALL)
        .await
        .expect("scan")
}

/// Points of device `d{device}`: metrics `temp` (double) and `state` (string),
/// one a minute from `start`, with values derived from the index.
fn device_batch(tenant: &str, device: usize, start: i64, from: i64, count: i64) -> DevicePoints {
    let points = (from..from + count)
        .flat_map(|i| {
            let t = start + i * 60 * NS_PER_SEC;
            [
                pt("temp", t, Value::F64(i as f64 * 0.25)),
                pt("state", t, Value::Str(format!("s{}", i % 3))),
            ]
        })
        .collect();
    dp(tenant, &format!("d{device}"), points)
}

async fn assert_device(store: &dyn Store, tenant: &str, device: usize, start: i64, count: i64) {
    let temps = scan_all(store, &key(tenant, &format!("d{device}"), "temp")).await;
    let want: Vec<Sample> = (0..count)
        .map(|i| Sample {
            ts_ns: start + i * 60 * NS_PER_SEC,
            value: Value::F64(i as f64 * 0.25),
        })
        .collect();
    assert_eq!(temps, want, "temp of d{device}");
    let states = scan_all(store, &key(tenant, &format!("d{device}"), "state")).await;
    assert_eq!(states.len() as i64, count, "state of d{device}");
    assert_eq!(
        store
            .list_metrics(tenant, &format!("d{device}"))
            .await
            .expect("list"),
        ["state", "temp"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_flushed_points_from_the_wal_and_from_chunks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let start = days_ago(3);
    {
        let store = open(dir.path(), EmbeddedStoreConfig::default());
        let batch: Vec<DevicePoints> = (0..5)
            .map(|d| device_batch("acme", d, start, 0, 500))
            .collect();
        store.write(&batch).await.expect("write");
        store.flush().await.expect("flush");
    }
    {
        // Only in the WAL so far.
        let store = open(dir.path(), EmbeddedStoreConfig::default());
        assert_eq!(
            store.stats().head_points,
            5 * 2 * 500,
            "the WAL was replayed into the head"
        );
        for d in 0..5 {
            assert_device(store.as_ref(), "acme", d, start, 500).await;
        }
        store.compact().await.expect("compact");
        let disk = store.disk_stats().await.expect("disk stats");
        assert_eq!(disk.wal_rows, 0, "compaction deleted the covered WAL rows");
        assert!(disk.chunks >= 10, "{disk:?}");
        // More points after the compaction: half in chunks, half in the WAL.
        let batch: Vec<DevicePoints> = (0..5)
            .map(|d| device_batch("acme", d, start, 500, 300))
            .collect();
        store.write(&batch).await.expect("write");
        store.flush().await.expect("flush");
    }
    let store = open(dir.path(), EmbeddedStoreConfig::default());
    for d in 0..5 {
        assert_device(store.as_ref(), "acme", d, start, 800).await;
    }
    let latest = store.latest("acme", "d0", &[]).await.expect("latest");
    assert_eq!(latest.len(), 2);
    assert_eq!(latest[1].ts_ns, start + 799 * 60 * NS_PER_SEC);
    assert_eq!(latest[1].value, Value::F64(799.0 * 0.25));
    assert_eq!(store.stats().series, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_points_survive_when_later_unflushed_ones_are_lost() {
    // Writes not yet flushed are allowed to be lost: the processor replays
    // them from the log, whose offsets it commits only after a flush.
    let dir = tempfile::tempdir().expect("temp dir");
    let start = days_ago(1);
    {
        let store = open(dir.path(), EmbeddedStoreConfig::default());
        store
            .write(&[device_batch("acme", 0, start, 0, 100)])
            .await
            .expect("write");
        store.flush().await.expect("flush");
        store
            .write(&[
                device_batch("acme", 0, start, 100, 100),
                device_batch("acme", 1, start, 0, 10),
            ])
            .await
            .expect("write");
        // Dropped without a flush.
    }
    let store = open(dir.path(), EmbeddedStoreConfig::default());
    let temps = scan_all(store.as_ref(), &key("acme", "d0", "temp")).await;
    assert!(
        temps.len() >= 100,
        "flushed points are all back: {}",
        temps.len()
    );
    assert_eq!(
        &temps[..100],
        &(0..100)
            .map(|i| Sample {
                ts_ns: start + i * 60 * NS_PER_SEC,
                value: Value::F64(i as f64 * 0.25)
            })
            .collect::<Vec<_>>()[..]
    );
}

const CRASH_CHILD_ENV: &str = "TRIBUTARY_STORE_CRASH_CHILD_DIR";

/// The child half of `flushed_points_survive_kill_9`: writes and flushes
/// batches forever (bounded), with constant background compaction, and
/// prints the number of each batch once its flush returned.
async fn crash_child(dir: &Path) {
    let config = EmbeddedStoreConfig {
        memtable_max_points: 4000,
        chunk_max_points: 64,
        ..EmbeddedStoreConfig::default()
    };
    let store = open(dir, config);
    let start = days_ago(2);
    let mut out = std::io::stdout();
    for batch_no in 0..100_000i64 {
        let batch: Vec<DevicePoints> = (0..4)
            .map(|d| device_batch("crash", d, start, batch_no * 10, 10))
            .collect();
        write_retrying(store.as_ref(), &batch).await;
        store.flush().await.expect("flush");
        writeln!(out, "flushed {batch_no}")
            .and_then(|()| out.flush())
            .expect("stdout");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_points_survive_kill_9() {
    if let Some(dir) = std::env::var_os(CRASH_CHILD_ENV) {
        crash_child(Path::new(&dir)).await;
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "flushed_points_survive_kill_9",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("child starts");
    let stdout = child.stdout.take().expect("child stdout");
    // Read until enough batches are flushed (and compactions ran), then kill.
    let mut last_flushed: Option<i64> = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("child output");
        if let Some(n) = line.strip_prefix("flushed ").and_then(|n| n.parse().ok()) {
            last_flushed = Some(n);
            if n >= 300 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "child too slow: {last_flushed:?}"
        );
    }
    child.kill().expect("SIGKILL the child");
    child.wait().expect("child reaped");
    let last = last_flushed.expect("the child flushed batches before it was killed");
    assert!(last >= 300, "child stopped early at {last}");

    let store = open(dir.path(), EmbeddedStoreConfig::default());
    let start = days_ago(2);
    // Every batch up to the last acknowledged flush is there, exactly once.
    let want = (last + 1) * 10;
    for d in 0..4 {
        let temps = scan_all(store.as_ref(), &key("crash", &format!("d{d}"), "temp")).await;
        assert!(
            temps.len() as i64 >= want,
            "d{d}: {} points, {want} were flushed",
            temps.len()
        );
        for (i, s) in temps.iter().enumerate() {
            assert_eq!(
                s.ts_ns,
                start + i as i64 * 60 * NS_PER_SEC,
                "d{d}: point {i}"
            );
            assert_eq!(s.value, Value::F64(i as f64 * 0.25), "d{d}: point {i}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memtable_bound_holds_under_sustained_writes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let max = 10_000usize;
    let config = EmbeddedStoreConfig {
        memtable_max_points: max,
        memtable_max_bytes: 1 << 20,
        max_write_wait: Duration::from_secs(10),
        ..EmbeddedStoreConfig::default()
    };
    let store = open(dir.path(), config);
    let start = days_ago(3);
    let mut peak_head = 0;
    let mut peak_frozen = 0;
    // 200 batches of 500 points = ten times the bound.
    for round in 0..200i64 {
        let batch: Vec<DevicePoints> = (0..25)
            .map(|d| device_batch("mem", d, start, round * 10, 10))
            .collect();
        write_retrying(store.as_ref(), &batch).await;
        let s = store.stats();
        peak_head = peak_head.max(s.head_points);
        peak_frozen = peak_frozen.max(s.frozen_points);
        assert!(
            s.head_bytes <= (1 << 20) + 100_000,
            "head bytes {} over the bound",
            s.head_bytes
        );
        if round % 20 == 0 {
            store.flush().await.expect("flush");
        }
    }
    assert!(
        peak_head <= max as u64,
        "live head peaked at {peak_head} points, bound {max}"
    );
    assert!(
        peak_frozen <= max as u64,
        "frozen head peaked at {peak_frozen} points, bound {max}"
    );
    assert!(store.stats().compactions >= 5, "{:?}", store.stats());
    store.flush().await.expect("flush");
    for d in 0..25 {
        assert_device(store.as_ref(), "mem", d, start, 2000).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_the_memtable_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(
        dir.path(),
        EmbeddedStoreConfig {
            memtable_max_points: 100,
            ..EmbeddedStoreConfig::default()
        },
    );
    let err = store
        .write(&[device_batch("big", 0, days_ago(1), 0, 51)])
        .await
        .expect_err("102 points > 100");
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    assert!(
        store
            .list_metrics("big", "d0")
            .await
            .expect("list")
            .is_empty(),
        "nothing was applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_before_anything_is_applied() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(
        dir.path(),
        EmbeddedStoreConfig {
            max_series: 3,
            ..EmbeddedStoreConfig::default()
        },
    );
    let t = days_ago(1);
    let good = dp("acme", "d", vec![pt("m", t, Value::I64(1))]);
    for bad in [
        dp("", "d", vec![pt("m", t, Value::I64(1))]),
        dp("acme", "", vec![pt("m", t, Value::I64(1))]),
        dp("acme", "d", vec![pt("", t, Value::I64(1))]),
        dp("acme", &"d".repeat(2000), vec![pt("m", t, Value::I64(1))]),
        dp(
            "acme",
            "d",
            vec![pt("m", t, Value::Str("x".repeat(2 << 20)))],
        ),
    ] {
        let err = store
            .write(&[good.clone(), bad])
            .await
            .expect_err("refused");
        assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    }
    assert!(
        store
            .list_metrics("acme", "d")
            .await
            .expect("list")
            .is_empty(),
        "the good half was not applied"
    );

    // The series limit.
    let four = dp(
        "acme",
        "d",
        ["a", "b", "c", "d"]
            .iter()
            .map(|m| pt(m, t, Value::I64(1)))
            .collect(),
    );
    let err = store
        .write(&[four])
        .await
        .expect_err("a fourth series is over the limit");
    assert!(err.to_string().contains("series limit"), "{err}");
    // The points before the failing one were stored, and counted.
    assert_eq!(store.stats().series, 3);
    assert_eq!(store.stats().head_points, 3);
    assert_eq!(
        store.list_metrics("acme", "d").await.expect("list"),
        ["a", "b", "c"]
    );
    store.compact().await.expect("compact");
    assert_eq!(store.stats().head_points, 0);
    assert_eq!(
        scan_all(store.as_ref(), &key("acme", "d", "c")).await.len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_and_readers_see_consistent_series() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A small head, so compactions run while readers read.
    let config = EmbeddedStoreConfig {
        memtable_max_points: 20_000,
        chunk_max_points: 128,
        max_write_wait: Duration::from_secs(10),
        ..EmbeddedStoreConfig::default()
    };
    let store = open(dir.path(), config);
    let start = days_ago(2);
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for round in 0..100i64 {
                    let batch: Vec<DevicePoints> = (0..5)
                        .map(|d| device_batch("conc", w * 5 + d, start, round * 20, 20))
                        .collect();
                    write_retrying(store.as_ref(), &batch).await;
                    if round % 10 == 9 {
                        store.flush().await.expect("flush");
                    }
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                // Points only get added, so what a reader saw never shrinks.
                let mut seen = vec![0usize; 20];
                let mut scans = 0;
                let deadline = Instant::now() + Duration::from_secs(60);
                while seen.iter().any(|&n| n < 2000) {
                    assert!(
                        Instant::now() < deadline,
                        "reader {r} never saw all points: {seen:?}"
                    );
                    for (d, seen_d) in seen.iter_mut().enumerate() {
                        let got =
                            scan_all(store.as_ref(), &key("conc", &format!("d{d}"), "temp")).await;
                        assert!(
                            got.len() >= *seen_d,
                            "d{d} shrank from {} to {} points",
                            seen_d,
                            got.len()
                        );
                        assert!(
                            got.windows(2).all(|w| w[0].ts_ns < w[1].ts_ns),
                            "d{d} is not sorted and unique"
                        );
                        for s in &got {
                            let i = (s.ts_ns - start) / (60 * NS_PER_SEC);
                            assert_eq!(s.value, Value::F64(i as f64 * 0.25), "d{d} at index {i}");
                        }
                        *seen_d = got.len();
                        scans += 1;
                    }
                    tokio::task::yield_now().await;
                }
                scans
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    for r in readers {
        assert!(r.await.expect("reader") > 0);
    }
    store.flush().await.expect("flush");
    assert!(store.stats().compactions > 0, "{:?}", store.stats());
    for d in 0..20 {
        assert_device(store.as_ref(), "conc", d, start, 2000).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_late_merge_matches_a_model() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path(), EmbeddedStoreConfig::default());
    let k = key("late", "d", "m");
    let start = days_ago(7);
    let step = 10 * NS_PER_SEC;
    let mut model: BTreeMap<i64, Value> = BTreeMap::new();
    let mut write = async |points: Vec<(i64, Value)>| {
        for chunk in points.chunks(20_000) {
            let batch = dp(
                "late",
                "d",
                chunk.iter().map(|(t, v)| pt("m", *t, v.clone())).collect(),
            );
            store.write(&[batch]).await.expect("write");
            model.extend(chunk.iter().cloned());
        }
    };
    // 50,000 points in order: nearly 6 days, compacted into chunks.
    write(
        (0..50_000)
            .map(|i| (start + i * step, Value::F64(i as f64)))
            .collect(),
    )
    .await;
    store.compact().await.expect("compact");
    // Late data: every 7th point of a middle stretch rewritten, points
    // between existing ones, and points before the first one.
    let mut late: Vec<(i64, Value)> = Vec::new();
    late.extend(
        (10_000..30_000)
            .step_by(7)
            .map(|i| (start + i * step, Value::I64(-i))),
    );
    late.extend((20_000..25_000).map(|i| (start + i * step + step / 2, Value::Bool(i % 2 == 0))));
    late.extend((1..=300).map(|i| (start - i * step, Value::Str(format!("early {i}")))));
    late.reverse();
    write(late).await;
    store.flush().await.expect("flush");
    let check = async |what: &str| {
        let got = scan_all(store.as_ref(), &k).await;
        let want: Vec<Sample> = model
            .iter()
            .map(|(t, v)| Sample {
                ts_ns: *t,
                value: v.clone(),
            })
            .collect();
        assert_eq!(got.len(), want.len(), "{what}: point count");
        assert!(
            got == want,
            "{what}: the merged series differs from the model"
        );
        let from = start + 19_990 * step;
        let desc = store
            .scan(&k, from, from + 100 * step, Order::Desc, 50)
            .await
            .expect("scan");
        let want_desc: Vec<i64> = model
            .range(from..from + 100 * step)
            .rev()
            .take(50)
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(
            desc.iter().map(|s| s.ts_ns).collect::<Vec<_>>(),
            want_desc,
            "{what}: desc with limit"
        );
    };
    check("head over chunks").await;
    store.compact().await.expect("compact");
    check("merged into chunks").await;
    let chunks = store.disk_stats().await.expect("disk stats").chunks;
    // 55,300 points at up to 1024 a chunk, split by day.
    assert!(chunks < 140, "{chunks} chunks");
    drop(store);
    let store = open(dir.path(), EmbeddedStoreConfig::default());
    let got = scan_all(store.as_ref(), &k).await;
    assert_eq!(got.len(), model.len(), "after reopen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frequent_small_compactions_do_not_leave_tiny_chunks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path(), EmbeddedStoreConfig::default());
    let start = days_ago(2);
    // One day at 10 s spacing, compacted 100 times in slices of 86 points.
    for part in 0..100i64 {
        let points = (part * 87..((part + 1) * 87).min(8640))
            .map(|i| {
                pt(
                    "m",
                    start + i * 10 * NS_PER_SEC,
                    Value::F64((i % 50) as f64),
                )
            })
            .collect();
        store
            .write(&[dp("small", "d", points)])
            .await
            .expect("write");
        store.compact().await.expect("compact");
    }
    let disk = store.disk_stats().await.expect("disk stats");
    // Binary-counter merging keeps at most ~log2(1024 / 87) small chunks.
    assert!(disk.chunks <= 8640 / 1024 + 6, "{disk:?}");
    let got = scan_all(store.as_ref(), &key("small", "d", "m")).await;
    assert_eq!(got.len(), 8640);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_whole_days_and_remembers_its_cutoff() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = EmbeddedStoreConfig {
        retention: Some(Duration::from_secs(5 * 86_400)),
        ..EmbeddedStoreConfig::default()
    };
    let start = days_ago(4);
    {
        let store = open(dir.path(), config.clone());
        // One point an hour for four days, in two series.
        let points: Vec<Point> = (0..96)
            .flat_map(|h| {
                let t = start + h * 3600 * NS_PER_SEC;
                [pt("a", t, Value::I64(h)), pt("b", t, Value::I64(h))]
            })
            .collect();
        store.write(&[dp("ret", "d", points)]).await.expect("write");
        store.compact().await.expect("compact");
        // Writing a point older than the retention drops it.
        store
            .write(&[dp("ret", "d", vec![pt("a", days_ago(6), Value::I64(-1))])])
            .await
            .expect("write");
        assert_eq!(
            scan_all(store.as_ref(), &key("ret", "d", "a")).await.len(),
            96
        );

        // As if it were noon three days from now (UTC): the cutoff is noon
        // two days ago, so the days starting 4 and 3 days ago are deleted
        // and half of the next one is hidden, whatever the time of day.
        let later = days_ago(-3) + NS_PER_DAY / 2;
        let cutoff = later - 5 * NS_PER_DAY;
        let removed = store.apply_retention(later).await.expect("retention");
        assert!(
            removed >= 4,
            "whole days of two series were removed: {removed}"
        );
        let a = scan_all(store.as_ref(), &key("ret", "d", "a")).await;
        assert!(
            a.iter().all(|s| s.ts_ns >= cutoff),
            "no point older than the cutoff"
        );
        let kept = (0..96)
            .filter(|h| start + h * 3600 * NS_PER_SEC >= cutoff)
            .count();
        assert_eq!(a.len(), kept, "every point newer than the cutoff is kept");
    }
    // The cutoff survives a reopen, although the clock has not moved.
    let store = open(dir.path(), config);
    let a = scan_all(store.as_ref(), &key("ret", "d", "a")).await;
    assert!(a.len() < 96 && !a.is_empty(), "{} points", a.len());
    let latest = store.latest("ret", "d", &[]).await.expect("latest");
    assert_eq!(latest.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_retention_is_applied_to_it_alone_and_survives_a_reopen() {
    use tributary_core::retention::{Keep, RetentionPolicy, RetentionSettings};
    use tributary_core::rollup::Tiers;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = EmbeddedStoreConfig {
        retention: Some(Duration::from_secs(30 * 86_400)),
        ..EmbeddedStoreConfig::default()
    };
    let policy = || {
        let p = RetentionPolicy::new(Keep::For(30 * NS_PER_DAY), Tiers::default());
        p.set(
            "short",
            &RetentionSettings::from_named([("raw", "2d")]).unwrap(),
        );
        Arc::new(p)
    };
    {
        let store = open(dir.path(), config.clone());
        // A store that holds nothing yet: every bucket will be complete.
        assert_eq!(
            store
                .mark_rollups_since(60 * NS_PER_SEC, 12_345)
                .await
                .unwrap(),
            i64::MIN
        );
        // Relative to now, not to midnight: the cutoff is now - 2 days.
        let now = now_ns();
        let points = |t| {
            (0..5)
                .map(|d| pt("m", now - d * NS_PER_DAY - 3600 * NS_PER_SEC, Value::I64(d)))
                .collect::<Vec<_>>()
                .into_iter()
                .chain(std::iter::once(pt("m", t, Value::I64(-1))))
                .collect()
        };
        store
            .write(&[
                dp("short", "d", points(days_ago(4))),
                dp("long", "d", points(days_ago(4))),
            ])
            .await
            .unwrap();
        store.compact().await.unwrap();
        // Not empty any more: a new tier is complete from the time given.
        assert_eq!(
            store
                .mark_rollups_since(3600 * NS_PER_SEC, 12_345)
                .await
                .unwrap(),
            12_345
        );
        store.set_retention(policy());
        store.apply_retention(now_ns()).await.unwrap();
        let short = scan_all(store.as_ref(), &key("short", "d", "m")).await;
        assert!(
            short.iter().all(|s| s.ts_ns >= now - 2 * NS_PER_DAY),
            "{short:?}"
        );
        assert_eq!(short.len(), 2, "today's and yesterday's points");
        assert_eq!(
            scan_all(store.as_ref(), &key("long", "d", "m")).await.len(),
            6
        );
    }
    // Reopened without the policy (as at start, before the registry is
    // read): what was deleted stays hidden, the other tenant keeps its own.
    let store = open(dir.path(), config);
    assert_eq!(
        scan_all(store.as_ref(), &key("short", "d", "m"))
            .await
            .len(),
        2
    );
    assert_eq!(
        scan_all(store.as_ref(), &key("long", "d", "m")).await.len(),
        6
    );
}

const MINUTE: i64 = 60 * NS_PER_SEC;

fn rollup_key(b0: i64, i: i64) -> tributary_core::rollup::RollupKey {
    tributary_core::rollup::RollupKey {
        series: key("r", "d", "m"),
        width_ns: MINUTE,
        start_ns: b0 + i * MINUTE,
    }
}

fn rollup_of(ts_ns: i64, v: f64) -> tributary_core::rollup::Rollup {
    tributary_core::rollup::Rollup::of(&[Sample {
        ts_ns,
        value: Value::F64(v),
    }])
}

/// Buckets 0 and 1 hold sums 2 and 3, whichever of head and table holds them.
async fn check_rollups(store: &EmbeddedStore, b0: i64, what: &str) {
    let keys = [rollup_key(b0, 0), rollup_key(b0, 1), rollup_key(b0, 2)];
    let got = store.get_rollups(&keys).await.unwrap();
    let sums: Vec<Option<f64>> = got.iter().map(|r| r.as_ref().map(|r| r.sum)).collect();
    assert_eq!(sums, [Some(2.0), Some(3.0), None], "{what}: get");
    let series = key("r", "d", "m");
    let scanned = store
        .scan_rollups(&series, MINUTE, b0, b0 + 10 * MINUTE, 10)
        .await
        .unwrap();
    let sums: Vec<(i64, f64)> = scanned
        .iter()
        .map(|(s, r)| ((s - b0) / MINUTE, r.sum))
        .collect();
    assert_eq!(sums, [(0, 2.0), (1, 3.0)], "{what}: scan");
    let limited = store
        .scan_rollups(&series, MINUTE, b0, b0 + 10 * MINUTE, 1)
        .await
        .unwrap();
    assert_eq!(limited.len(), 1, "{what}: limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_are_read_from_the_head_over_the_table_and_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let b0 = days_ago(1) - days_ago(1).rem_euclid(MINUTE);
    {
        let store = open(dir.path(), EmbeddedStoreConfig::default());
        store
            .write(&[dp("r", "d", vec![pt("m", b0, Value::F64(1.0))])])
            .await
            .unwrap();
        store.flush().await.unwrap();
        // The first value of bucket 0 reaches the table; its rewrite and
        // bucket 1 stay in the head.
        store
            .write_rollups(&[(rollup_key(b0, 0), rollup_of(b0, 1.0))])
            .await
            .unwrap();
        store.compact().await.unwrap();
        store
            .write_rollups(&[
                (rollup_key(b0, 0), rollup_of(b0, 2.0)),
                (rollup_key(b0, 1), rollup_of(b0 + MINUTE, 3.0)),
            ])
            .await
            .unwrap();
        check_rollups(&store, b0, "head over table").await;
    }
    // Reopened: the WAL is replayed into the head.
    let store = open(dir.path(), EmbeddedStoreConfig::default());
    check_rollups(&store, b0, "after a reopen").await;
    store.compact().await.unwrap();
    check_rollups(&store, b0, "after compaction").await;
    drop(store);
    let store = open(dir.path(), EmbeddedStoreConfig::default());
    check_rollups(&store, b0, "reopened after compaction").await;
}
