//! Append throughput of the embedded log with concurrent appenders.
//!
//! Run: `cargo bench -p tributary-log --bench append -- --warm-up-time 1 --measurement-time 5`
//!
//! Each benchmark appends records of one size from 1, 8 or 64 tasks (each
//! task its own key, over 4 partitions; every append waits for its fsync).
//! Criterion reports time per record and records/s; after each benchmark a
//! line on stderr adds MB/s, fsyncs/s and records per fsync, from the log's
//! own counters.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tributary_log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use tributary_log::{Log, Record};

const SIZES: &[(&str, usize)] = &[("200B", 200), ("100KB", 100 * 1024)];
const TASKS: &[u64] = &[1, 8, 64];

/// Totals over every measured iteration of one benchmark.
#[derive(Default)]
struct Totals {
    records: u64,
    bytes: u64,
    fsyncs: u64,
    elapsed: Duration,
}

async fn append_from_tasks(log: &Arc<EmbeddedLog>, tasks: u64, records: u64, value: &Bytes) {
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let n = records / tasks + u64::from(t < records % tasks);
        let (log, value) = (Arc::clone(log), value.clone());
        set.spawn(async move {
            let key = Bytes::from(format!("task-{t}"));
            for _ in 0..n {
                let record = Record {
                    key: key.clone(),
                    value: value.clone(),
                    headers: Vec::new(),
                    timestamp_ms: 0,
                };
                if let Err(e) = log.append(record).await {
                    panic!("append failed: {e}");
                }
            }
        });
    }
    while let Some(joined) = set.join_next().await {
        if let Err(e) = joined {
            panic!("appender task failed: {e}");
        }
    }
}

fn bench_append(c: &mut Criterion) {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    for &(label, size) in SIZES {
        let value = Bytes::from(vec![0x5a; size]);
        let mut group = c.benchmark_group(format!("append_{label}"));
        group.throughput(Throughput::Elements(1));
        group.sample_size(10);
        for &tasks in TASKS {
            let dir = match tempfile::Builder::new()
                .prefix("log-bench-")
                .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            {
                Ok(dir) => dir,
                Err(e) => panic!("tempdir: {e}"),
            };
            let log = match rt.block_on(EmbeddedLog::open(
                dir.path(),
                EmbeddedLogConfig::new("bench", 4),
            )) {
                Ok(log) => log,
                Err(e) => panic!("open: {e}"),
            };
            let mut totals = Totals::default();
            group.bench_function(BenchmarkId::new("tasks", tasks), |b| {
                b.iter_custom(|iters| {
                    let before = log.stats();
                    let start = Instant::now();
                    rt.block_on(append_from_tasks(&log, tasks, iters, &value));
                    let elapsed = start.elapsed();
                    let after = log.stats();
                    totals.records += after.appended_records() - before.appended_records();
                    totals.bytes += after.appended_bytes() - before.appended_bytes();
                    totals.fsyncs += after.fsyncs() - before.fsyncs();
                    totals.elapsed += elapsed;
                    elapsed
                });
            });
            let secs = totals.elapsed.as_secs_f64().max(f64::EPSILON);
            eprintln!(
                "append_{label}/tasks/{tasks}: {:.0} records/s, {:.1} MB/s, {:.0} fsyncs/s, {:.1} records per fsync",
                totals.records as f64 / secs,
                totals.bytes as f64 / secs / 1e6,
                totals.fsyncs as f64 / secs,
                totals.records as f64 / (totals.fsyncs.max(1)) as f64,
            );
            if let Err(e) = rt.block_on(log.close()) {
                panic!("close: {e}");
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench_append);
criterion_main!(benches);
