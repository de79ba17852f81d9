//! Two processor replicas in one consumer group on a real Kafka-protocol
//! broker (Tansu) split the telemetry partitions between them; when one
//! leaves, the other takes its partitions over, and every record is stored
//! exactly once (the store holds each acknowledged point once, with its
//! value; a count over the series equals what was appended).
//!
//! Both replicas write one shared store here, as two processor processes
//! write one Scylla cluster in production.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::cluster::Tansu;
use common::eventually;
use tributary_core::envelope::{self, Envelope, Kind};
use tributary_core::live::LiveHub;
use tributary_core::{Point, SeriesKey, Value};
use tributary_log::{Log, Record};
use tributary_log_kafka::{KafkaConfig, KafkaLog};
use tributary_processor::{Processor, ProcessorConfig, ProcessorMetrics};
use tributary_store::embedded::{EmbeddedStore, EmbeddedStoreConfig};
use tributary_store::{Order, Store};

const TOPIC: &str = "tributary.telemetry.v1";
const PARTITIONS: u32 = 4;
const DEVICES: usize = 16;

fn config(tansu: &Tansu, topic: &str, partitions: u32) -> KafkaConfig {
    tansu.kafka_config(topic, partitions)
}

/// Appends one point per device at `ts_ns`, value `v`.
async fn append_round(log: &KafkaLog, base_ns: i64, round: i64) {
    let mut records = Vec::new();
    for d in 0..DEVICES {
        let device = format!("dev-{d}");
        let env = Envelope {
            tenant: "acme".into(),
            device: device.clone(),
            received_at_ns: base_ns,
            traceparent: String::new(),
            tracestate: String::new(),
            content_type: "application/json".into(),
            kind: Kind::Telemetry,
            points: vec![Point {
                metric: "v".into(),
                ts_ns: base_ns + round * 1_000_000,
                value: Value::F64(round as f64),
            }],
        };
        records.push(Record {
            key: Bytes::from(envelope::record_key("acme", &device)),
            value: Bytes::from(env.encode()),
            headers: Vec::new(),
            timestamp_ms: base_ns / 1_000_000,
        });
    }
    log.append_batch(records).await.expect("append");
}

struct Replica {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    stored: prometheus_client::registry::Registry,
}

impl Replica {
    async fn start(tansu: &Tansu, store: Arc<dyn Store>) -> Replica {
        let log = KafkaLog::connect(config(tansu, TOPIC, PARTITIONS))
            .await
            .unwrap();
        let dlq = KafkaLog::connect(config(tansu, "tributary.dlq.v1", 1))
            .await
            .unwrap();
        let mut registry = prometheus_client::registry::Registry::default();
        let processor = Processor::new(
            log,
            dlq,
            store,
            LiveHub::default(),
            ProcessorMetrics::register(&mut registry),
            ProcessorConfig {
                flush_interval: Duration::from_millis(100),
                ..ProcessorConfig::default()
            },
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            processor
                .run(async move {
                    let _ = stopped.await;
                })
                .await
                .expect("processor");
        });
        Replica {
            stop,
            task,
            stored: registry,
        }
    }

    /// Points this replica stored, from its metrics.
    fn points_stored(&self) -> u64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.stored).unwrap();
        text.lines()
            .filter(|l| l.starts_with("tributary_processor_points_stored_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the processor stops (commits, leaves the group) within 30 s")
            .unwrap();
    }
}

/// Every device's series holds exactly rounds `0..rounds`, each once.
async fn all_stored_once(store: &Arc<dyn Store>, base_ns: i64, rounds: i64) -> bool {
    for d in 0..DEVICES {
        let series = SeriesKey {
            tenant: "acme".into(),
            device: format!("dev-{d}"),
            metric: "v".into(),
        };
        let samples = store
            .scan(
                &series,
                base_ns,
                base_ns + rounds * 1_000_000,
                Order::Asc,
                1_000_000,
            )
            .await
            .unwrap();
        let want: Vec<(i64, f64)> = (0..rounds)
            .map(|r| (base_ns + r * 1_000_000, r as f64))
            .collect();
        let got: Vec<(i64, f64)> = samples
            .iter()
            .map(|s| (s.ts_ns, s.value.as_f64().unwrap_or(f64::NAN)))
            .collect();
        if got != want {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_split_the_partitions_and_one_takes_over_when_the_other_leaves() {
    let tansu = Tansu::start();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        EmbeddedStore::open(dir.path(), EmbeddedStoreConfig::default()).unwrap();
    let producer = KafkaLog::connect(config(&tansu, TOPIC, PARTITIONS))
        .await
        .unwrap();
    let base = tributary_core::time::now_ns() - 3_600_000_000_000;

    let first = Replica::start(&tansu, store.clone()).await;
    let second = Replica::start(&tansu, store.clone()).await;
    // Keep appending until both replicas have stored some of the load:
    // the group gave each of them partitions.
    let mut rounds = 0;
    eventually(
        Duration::from_secs(60),
        "both replicas store a share",
        || {
            let (a, b) = (first.points_stored(), second.points_stored());
            let producer = producer.clone();
            let round = rounds;
            rounds += 1;
            async move {
                append_round(&producer, base, round).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                (a > 0 && b > 0).then_some(())
            }
        },
    )
    .await;
    let split = (first.points_stored(), second.points_stored());

    // The first replica leaves; the second must take every partition.
    first.stop().await;
    for _ in 0..20 {
        append_round(&producer, base, rounds).await;
        rounds += 1;
    }
    let store2 = store.clone();
    eventually(
        Duration::from_secs(60),
        "every record stored exactly once",
        || {
            let store = store2.clone();
            async move { all_stored_once(&store, base, rounds).await.then_some(()) }
        },
    )
    .await;
    let after = second.points_stored();
    eprintln!("split before the handover: {split:?}; the survivor stored {after} in all");
    assert!(
        after > split.1,
        "the survivor stored the records of the partitions it took over"
    );
    second.stop().await;
}
