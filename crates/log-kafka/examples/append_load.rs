//! Append load against a Kafka-protocol broker: concurrent appenders, each
//! waiting for its acknowledgement (`acks=all`) before the next append, as
//! ingest frontends do. Prints throughput and append latency percentiles.
//!
//! ```sh
//! tansu broker --listener-url tcp://127.0.0.1:19092 \
//!   --advertised-listener-url tcp://127.0.0.1:19092 --storage-engine memory://tansu/ &
//! cargo run -p tributary-log-kafka --example append_load -- \
//!   --brokers 127.0.0.1:19092 --seconds 10 --concurrency 64 --batch 1 --linger-ms 1
//! ```
#![allow(
    clippy::print_stdout,
    reason = "a command-line tool that prints its report"
)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use tributary_log::{Log, LogError, Record};
use tributary_log_kafka::{Compression, KafkaConfig, KafkaLog};

#[derive(Debug, Parser)]
struct Args {
    /// Bootstrap broker, host:port.
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// How long to load, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent appenders.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Records per append_batch call.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Bytes per record value.
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
    /// Partitions of the (new) topic.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Producer linger.ms.
    #[arg(long, default_value_t = 1)]
    linger_ms: u32,
    /// Compression: none, gzip, snappy or lz4.
    #[arg(long, default_value = "lz4")]
    compression: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let mut config = KafkaConfig {
        brokers: vec![args.brokers.clone()],
        topic: format!("append-load-{nanos}"),
        partitions: args.partitions,
        ..KafkaConfig::default()
    };
    config.producer.linger_ms = args.linger_ms;
    config.producer.compression =
        serde_json::from_value(serde_json::Value::String(args.compression.clone()))
            .context("compression")?;
    let compression: Compression = config.producer.compression;
    let log = KafkaLog::connect(config).await.context("connect")?;

    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let value = Bytes::from(
        (0..args.value_bytes)
            .map(|i| b"0123456789abcdef"[i % 16])
            .collect::<Vec<u8>>(),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..args.concurrency {
        let log = Arc::clone(&log);
        let value = value.clone();
        let batch = args.batch;
        tasks.spawn(async move {
            let mut latencies_us = Vec::new();
            let (mut records, mut backpressure) = (0u64, 0u64);
            let mut n = 0u64;
            while Instant::now() < deadline {
                let now_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(1, |d| d.as_millis() as i64);
                let recs: Vec<Record> = (0..batch)
                    .map(|i| {
                        n += 1;
                        Record {
                            key: Bytes::from(format!("acme/device-{t}-{}", (n + i as u64) % 50)),
                            value: value.clone(),
                            headers: vec![
                                (
                                    "content-type".into(),
                                    Bytes::from_static(b"application/x-protobuf"),
                                ),
                                ("tenant".into(), Bytes::from_static(b"acme")),
                            ],
                            timestamp_ms: now_ms,
                        }
                    })
                    .collect();
                let started = Instant::now();
                match log.append_batch(recs).await {
                    Ok(positions) => {
                        records += positions.len() as u64;
                        latencies_us.push(started.elapsed().as_micros() as u64);
                    }
                    Err(LogError::Backpressure) => {
                        backpressure += 1;
                        tokio::task::yield_now().await;
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok((records, backpressure, latencies_us))
        });
    }
    let started = Instant::now();
    let (mut records, mut backpressure, mut latencies) = (0u64, 0u64, Vec::new());
    while let Some(joined) = tasks.join_next().await {
        let (r, b, l) = joined.context("task")?.context("append")?;
        records += r;
        backpressure += b;
        latencies.extend(l);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[i] as f64 / 1000.0
    };
    println!(
        "concurrency={} batch={} value_bytes={} linger_ms={} compression={:?}: \
         {:.0} records/s, {:.1} MB/s, append p50 {:.2} ms p99 {:.2} ms max {:.2} ms, \
         {} backpressure refusals",
        args.concurrency,
        args.batch,
        args.value_bytes,
        args.linger_ms,
        compression,
        records as f64 / elapsed,
        records as f64 * args.value_bytes as f64 / elapsed / 1e6,
        pct(0.5),
        pct(0.99),
        pct(1.0),
        backpressure,
    );
    Ok(())
}
