//! Rules in distributed mode: two processor replicas in one consumer group
//! on a real Kafka-protocol broker (Tansu) evaluate a threshold rule with a
//! `for` duration. Alerts are pending on both replicas' partitions, some
//! firing, when one replica dies without committing (its task is aborted,
//! as a kill -9 would). The survivor takes its partitions over, loads their
//! checkpoints, and goes on: every transition the rule implies appears in
//! the alerts topic under one alert id per device, none is lost, and no
//! second alert is opened for a device whose alert was pending or firing.
//!
//! Both replicas share one store and one checkpoint store here, as two
//! processor processes share one Scylla cluster in production.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use common::cluster::Tansu;
use common::eventually;
use prost::Message;
use tributary_core::envelope::{self, Envelope, Kind as RecordKind};
use tributary_core::live::LiveHub;
use tributary_core::{Point, Value};
use tributary_log::{ConsumerOptions, Log, Record, StartFrom};
use tributary_log_kafka::{KafkaConfig, KafkaLog};
use tributary_processor::{
    Alerting, AlertingConfig, Processor, ProcessorConfig, ProcessorMetrics, RuleSource,
};
use tributary_proto::v1 as pb;
use tributary_rules::{Kind, Op, Rule, Severity, Target, Threshold};
use tributary_store::embedded::{EmbeddedStore, EmbeddedStoreConfig};
use tributary_store::{CheckpointStore, Store};

const TOPIC: &str = "tributary.telemetry.v1";
const ALERTS: &str = "tributary.alerts.v1";
const PARTITIONS: u32 = 4;
const DEVICES: usize = 16;
const MS: i64 = 1_000_000;

fn config(tansu: &Tansu, topic: &str, partitions: u32) -> KafkaConfig {
    tansu.kafka_config(topic, partitions)
}

fn device(d: usize) -> String {
    format!("dev-{d}")
}

/// `hot` above 100 for 10 ms of point time, on every device.
#[derive(Debug)]
struct OneRule;

#[async_trait]
impl RuleSource for OneRule {
    async fn rules(&self) -> Result<Vec<(Rule, Vec<String>)>, String> {
        let rule = Rule {
            tenant: "acme".into(),
            name: "hot".into(),
            revision: 1,
            target: Target::Selector(
                tributary_core::selector::Selector::parse("").expect("the empty selector"),
            ),
            metric: "t".into(),
            kind: Kind::Threshold(Threshold {
                op: Op::Above(100.0),
                hysteresis: 0.0,
            }),
            for_ns: 10 * MS,
            severity: Severity::Critical,
            created_ns: 0,
            description: String::new(),
        };
        Ok(vec![(rule, (0..DEVICES).map(device).collect())])
    }
}

/// Appends one point of `t` for each of `devices`, at `base + at_ms`.
async fn append(log: &KafkaLog, base_ns: i64, at_ms: i64, value: f64, devices: &[usize]) {
    let records = devices
        .iter()
        .map(|&d| {
            let env = Envelope {
                tenant: "acme".into(),
                device: device(d),
                received_at_ns: base_ns,
                traceparent: String::new(),
                tracestate: String::new(),
                content_type: "application/json".into(),
                kind: RecordKind::Telemetry,
                points: vec![Point {
                    metric: "t".into(),
                    ts_ns: base_ns + at_ms * MS,
                    value: Value::F64(value),
                }],
            };
            Record {
                key: Bytes::from(envelope::record_key("acme", &device(d))),
                value: Bytes::from(env.encode()),
                headers: Vec::new(),
                timestamp_ms: tributary_core::time::now_ns() / MS,
            }
        })
        .collect();
    log.append_batch(records).await.expect("append");
}

struct Replica {
    task: tokio::task::JoinHandle<()>,
    metrics: prometheus_client::registry::Registry,
}

impl Replica {
    async fn start(
        tansu: &Tansu,
        store: Arc<dyn Store>,
        checkpoints: Arc<dyn CheckpointStore>,
    ) -> Replica {
        let log = KafkaLog::connect(config(tansu, TOPIC, PARTITIONS))
            .await
            .unwrap();
        let dlq = KafkaLog::connect(config(tansu, "tributary.dlq.v1", 1))
            .await
            .unwrap();
        let alerts = KafkaLog::connect(config(tansu, ALERTS, 1)).await.unwrap();
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
        )
        .with_alerting(Alerting {
            source: Arc::new(OneRule),
            alerts,
            checkpoints,
            config: AlertingConfig {
                refresh: Duration::from_millis(200),
                ..AlertingConfig::default()
            },
        });
        let task = tokio::spawn(async move {
            processor
                .run(std::future::pending())
                .await
                .expect("processor");
        });
        Replica {
            task,
            metrics: registry,
        }
    }

    /// Points this replica stored, from its metrics.
    fn points_stored(&self) -> u64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.metrics).unwrap();
        text.lines()
            .filter(|l| l.starts_with("tributary_processor_points_stored_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// Dies at once: nothing is flushed, committed or checkpointed, and the
    /// group hands its partitions over once its session ends.
    fn crash(self) {
        self.task.abort();
    }
}

/// Every (alert id, state) in the alerts topic, per device, and how many
/// records were read.
async fn transitions(alerts: &KafkaLog) -> (BTreeMap<String, BTreeSet<(String, i32)>>, usize) {
    let end = alerts.watermarks(0).await.unwrap().high;
    let mut out: BTreeMap<String, BTreeSet<(String, i32)>> = BTreeMap::new();
    let mut read = 0;
    if end == 0 {
        return (out, 0);
    }
    let mut consumer = alerts
        .consumer(ConsumerOptions {
            group: None,
            start: StartFrom::Earliest,
        })
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        let records = consumer
            .poll(1024, Duration::from_millis(200))
            .await
            .unwrap();
        let done = records.iter().any(|r| r.offset + 1 >= end);
        for r in records {
            read += 1;
            let e = pb::AlertEvent::decode(r.value.as_ref()).expect("an AlertEvent");
            out.entry(e.device)
                .or_default()
                .insert((e.alert_id, e.state));
        }
        if done {
            break;
        }
    }
    (out, read)
}

fn count(t: &BTreeMap<String, BTreeSet<(String, i32)>>, state: pb::AlertState) -> usize {
    t.values()
        .flatten()
        .filter(|(_, s)| *s == state as i32)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_moving_to_another_replica_loses_no_transition_and_opens_no_second_alert() {
    let tansu = Tansu::start();
    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedStore::open(dir.path(), EmbeddedStoreConfig::default()).unwrap();
    let store: Arc<dyn Store> = embedded.clone();
    let checkpoints: Arc<dyn CheckpointStore> = embedded;
    let producer = KafkaLog::connect(config(&tansu, TOPIC, PARTITIONS))
        .await
        .unwrap();
    let alerts = KafkaLog::connect(config(&tansu, ALERTS, 1)).await.unwrap();
    let base = tributary_core::time::now_ns() - 3_600_000_000_000;
    let all: Vec<usize> = (0..DEVICES).collect();
    let even: Vec<usize> = all.iter().copied().filter(|d| d % 2 == 0).collect();
    let odd: Vec<usize> = all.iter().copied().filter(|d| d % 2 == 1).collect();
    let evens = even.len();

    let first = Replica::start(&tansu, store.clone(), checkpoints.clone()).await;
    let second = Replica::start(&tansu, store.clone(), checkpoints.clone()).await;

    // Every device breaches: pending. Repeated until both replicas have
    // stored a share (the group gave each of them partitions) and every
    // device's alert is pending; a repeat of the same breach at the same
    // time changes nothing.
    eventually(
        Duration::from_secs(90),
        "both replicas judge a share, and every device's alert is pending",
        || {
            let (producer, alerts, all) = (producer.clone(), alerts.clone(), all.clone());
            let shared = first.points_stored() > 0 && second.points_stored() > 0;
            async move {
                append(&producer, base, 0, 150.0, &all).await;
                let (t, _) = transitions(&alerts).await;
                (shared && count(&t, pb::AlertState::Pending) == DEVICES).then_some(())
            }
        },
    )
    .await;
    eprintln!(
        "before the crash: points stored {} and {}",
        first.points_stored(),
        second.points_stored()
    );
    // The even devices stay above for 20 ms: their alerts fire.
    append(&producer, base, 20, 160.0, &even).await;
    eventually(
        Duration::from_secs(30),
        "the even devices' alerts fire",
        || {
            let alerts = alerts.clone();
            async move {
                let (t, _) = transitions(&alerts).await;
                (count(&t, pb::AlertState::Firing) == evens).then_some(())
            }
        },
    )
    .await;

    // One replica dies; the other takes every partition over.
    first.crash();
    // The odd devices stay above (their pending alerts fire), the even ones
    // drop back (their firing alerts resolve).
    append(&producer, base, 20, 170.0, &odd).await;
    append(&producer, base, 30, 50.0, &even).await;

    eventually(
        Duration::from_secs(90),
        "every alert fires, and the even devices' resolve",
        || {
            let alerts = alerts.clone();
            async move {
                let (t, _) = transitions(&alerts).await;
                (count(&t, pb::AlertState::Firing) == DEVICES
                    && count(&t, pb::AlertState::Resolved) == evens)
                    .then_some(())
            }
        },
    )
    .await;
    // Whatever else is still to come (a late replay) has come by now.
    second.task.abort();
    let (t, read) = transitions(&alerts).await;
    for d in 0..DEVICES {
        let seen = &t[&device(d)];
        let ids: BTreeSet<&String> = seen.iter().map(|(id, _)| id).collect();
        assert_eq!(
            ids.len(),
            1,
            "{}: one alert, not a second one opened after the move: {seen:?}",
            device(d)
        );
        let states: Vec<i32> = seen.iter().map(|(_, s)| *s).collect();
        let mut want = vec![
            pb::AlertState::Pending as i32,
            pb::AlertState::Firing as i32,
        ];
        if d % 2 == 0 {
            want.push(pb::AlertState::Resolved as i32);
        }
        assert_eq!(states, want, "{}: every transition, once", device(d));
    }
    eprintln!(
        "{read} transition records for {} distinct transitions (repeats are replays after the crash)",
        t.values().map(BTreeSet::len).sum::<usize>()
    );
}
