//! The processor over the real embedded log and store: points land in the
//! store, poison records go to the dead-letter log without blocking the
//! stream, offsets are committed only after a flush, and a restart replays
//! nothing twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;
use tributary_core::envelope::{self, Envelope, Kind};
use tributary_core::live::LiveHub;
use tributary_core::{Point, SeriesKey, Value};
use tributary_log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use tributary_log::{ConsumerOptions, Log, Record, StartFrom};
use tributary_processor::{Processor, ProcessorConfig, ProcessorMetrics, dlq_headers};
use tributary_store::embedded::{EmbeddedStore, EmbeddedStoreConfig};
use tributary_store::{Order, Store};

fn record(device: &str, points: Vec<Point>) -> Record {
    let env = Envelope {
        tenant: "acme".into(),
        device: device.into(),
        received_at_ns: 0,
        traceparent: String::new(),
        tracestate: String::new(),
        content_type: "application/json".into(),
        kind: Kind::Telemetry,
        points,
    };
    Record {
        key: Bytes::from(envelope::record_key("acme", device)),
        value: Bytes::from(env.encode()),
        headers: vec![],
        timestamp_ms: 0,
    }
}

fn point(ts_ns: i64, v: f64) -> Point {
    Point {
        metric: "temp".into(),
        ts_ns,
        value: Value::F64(v),
    }
}

struct Rig {
    log: Arc<EmbeddedLog>,
    dlq: Arc<EmbeddedLog>,
    store: Arc<EmbeddedStore>,
}

impl Rig {
    async fn open(dir: &std::path::Path) -> Rig {
        Rig {
            log: EmbeddedLog::open(dir.join("log"), EmbeddedLogConfig::new("telemetry", 2))
                .await
                .unwrap(),
            dlq: EmbeddedLog::open(dir.join("dlq"), EmbeddedLogConfig::new("dlq", 1))
                .await
                .unwrap(),
            store: EmbeddedStore::open(
                &dir.join("store"),
                EmbeddedStoreConfig {
                    retention: None,
                    ..Default::default()
                },
            )
            .unwrap(),
        }
    }

    fn start(&self, live: LiveHub) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        self.start_with(live, ProcessorMetrics::default())
    }

    fn start_with(
        &self,
        live: LiveHub,
        metrics: ProcessorMetrics,
    ) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let p = Processor::new(
            self.log.clone(),
            self.dlq.clone(),
            self.store.clone(),
            live,
            metrics,
            ProcessorConfig {
                flush_interval: Duration::from_millis(50),
                ..Default::default()
            },
        );
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            p.run(async {
                let _ = rx.await;
            })
            .await
            .expect("processor ran");
        });
        (tx, task)
    }
}

async fn wait_for_points(store: &EmbeddedStore, device: &str, n: usize) -> Vec<(i64, Value)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = store
            .scan(
                &SeriesKey::new("acme", device, "temp"),
                i64::MIN,
                i64::MAX,
                Order::Asc,
                10_000,
            )
            .await
            .unwrap();
        if got.len() >= n {
            return got.into_iter().map(|s| (s.ts_ns, s.value)).collect();
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} points stored",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_points_dead_letters_poison_and_keeps_going() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::open(dir.path()).await;
    let live = LiveHub::default();
    let mut live_rx = live.subscribe();
    let (stop, task) = rig.start(live);

    rig.log
        .append(record("d1", vec![point(1, 1.0), point(2, 2.0)]))
        .await
        .unwrap();
    rig.log
        .append(Record {
            key: Bytes::from_static(b"acme/d1"),
            value: Bytes::from_static(b"\x08\xff\xff not an envelope"),
            headers: vec![("content-type".into(), Bytes::from_static(b"x"))],
            timestamp_ms: 0,
        })
        .await
        .unwrap();
    rig.log
        .append(record("d1", vec![point(3, 3.0)]))
        .await
        .unwrap();

    // The record after the poison one is stored too.
    let got = wait_for_points(&rig.store, "d1", 3).await;
    assert_eq!(
        got,
        vec![
            (1, Value::F64(1.0)),
            (2, Value::F64(2.0)),
            (3, Value::F64(3.0))
        ]
    );

    // The poison record is in the DLQ with its reason and source.
    let mut dlq = rig
        .dlq
        .consumer(ConsumerOptions {
            group: None,
            start: StartFrom::Earliest,
        })
        .await
        .unwrap();
    let recs = dlq.poll(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(recs.len(), 1);
    let header = |name: &str| {
        recs[0]
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert!(
        String::from_utf8_lossy(&header(dlq_headers::REASON).unwrap())
            .contains("not a TelemetryEnvelope")
    );
    assert!(
        String::from_utf8_lossy(&header(dlq_headers::SOURCE).unwrap()).starts_with("telemetry/")
    );
    assert_eq!(header("content-type").as_deref(), Some(&b"x"[..]));

    // Live subscribers saw the stored points.
    let batch = live_rx.recv().await.unwrap();
    assert_eq!(
        (batch.tenant.as_str(), batch.device.as_str()),
        ("acme", "d1")
    );

    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_after_flush_and_resumes_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    {
        let rig = Rig::open(dir.path()).await;
        let (stop, task) = rig.start(LiveHub::default());
        for i in 0..50 {
            rig.log
                .append(record("d2", vec![point(i, i as f64)]))
                .await
                .unwrap();
        }
        wait_for_points(&rig.store, "d2", 50).await;
        stop.send(()).unwrap();
        task.await.unwrap();
        // Everything consumed was committed on the way out.
        let mut committed = 0;
        for p in 0..rig.log.partitions() {
            let w = rig.log.watermarks(p).await.unwrap();
            let c = rig
                .log
                .committed("tributary-processor", p)
                .await
                .unwrap()
                .unwrap_or(0);
            assert_eq!(c, w.high, "partition {p} fully committed");
            committed += c;
        }
        assert_eq!(committed, 50);
        rig.log.close().await.unwrap();
        rig.dlq.close().await.unwrap();
    }
    // Reopen everything: the processor resumes after the commit, new data is
    // stored, old data is there exactly once.
    let rig = Rig::open(dir.path()).await;
    let (stop, task) = rig.start(LiveHub::default());
    rig.log
        .append(record("d2", vec![point(50, 50.0), point(10, 10.5)]))
        .await
        .unwrap();
    let got = wait_for_points(&rig.store, "d2", 51).await;
    assert_eq!(got.len(), 51, "one point per timestamp");
    assert_eq!(
        got[10],
        (10, Value::F64(10.5)),
        "the rewrite of ts 10 overwrote it"
    );
    assert_eq!(got[50], (50, Value::F64(50.0)));
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_the_store_refuses_are_dead_lettered_and_the_rest_stored() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig {
        log: EmbeddedLog::open(
            dir.path().join("log"),
            EmbeddedLogConfig::new("telemetry", 1),
        )
        .await
        .unwrap(),
        dlq: EmbeddedLog::open(dir.path().join("dlq"), EmbeddedLogConfig::new("dlq", 1))
            .await
            .unwrap(),
        // Room for two series only.
        store: EmbeddedStore::open(
            &dir.path().join("store"),
            EmbeddedStoreConfig {
                retention: None,
                max_series: 2,
                ..Default::default()
            },
        )
        .unwrap(),
    };
    // All three records arrive in one poll: the batch write fails as a whole.
    let records = vec![
        record("a", vec![point(1, 1.0)]),
        record("b", vec![point(1, 2.0)]),
        record("c", vec![point(1, 3.0)]),
    ];
    rig.log.append_batch(records).await.unwrap();
    let (stop, task) = rig.start(LiveHub::default());
    assert_eq!(
        wait_for_points(&rig.store, "a", 1).await,
        vec![(1, Value::F64(1.0))]
    );
    assert_eq!(
        wait_for_points(&rig.store, "b", 1).await,
        vec![(1, Value::F64(2.0))]
    );
    let mut dlq = rig
        .dlq
        .consumer(ConsumerOptions {
            group: None,
            start: StartFrom::Earliest,
        })
        .await
        .unwrap();
    let recs = dlq.poll(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(recs.len(), 1, "only the third series was refused");
    assert_eq!(&recs[0].key[..], b"acme/c");
    let reason = recs[0]
        .headers
        .iter()
        .find(|(k, _)| k == dlq_headers::REASON)
        .unwrap();
    assert!(
        String::from_utf8_lossy(&reason.1).contains("series limit"),
        "{reason:?}"
    );
    stop.send(()).unwrap();
    task.await.unwrap();
}

/// Log lines written by the subscriber under test.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// One thread: the processor's tasks run where the test's subscriber is set.
#[tokio::test(flavor = "current_thread")]
async fn a_poison_record_is_one_dead_lettered_event_one_line_and_one_count() {
    let logs = Captured::default();
    let writer = logs.clone();
    let _subscriber = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .finish(),
    );
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::open(dir.path()).await;
    let mut registry = prometheus_client::registry::Registry::default();
    let (stop, task) = rig.start_with(
        LiveHub::default(),
        ProcessorMetrics::register(&mut registry),
    );
    rig.log
        .append(Record {
            key: Bytes::from_static(b"acme/d1"),
            value: Bytes::from_static(b"\x08\xff\xff not an envelope"),
            headers: vec![],
            timestamp_ms: 0,
        })
        .await
        .unwrap();
    rig.log
        .append(record("d1", vec![point(1, 1.0)]))
        .await
        .unwrap();
    wait_for_points(&rig.store, "d1", 1).await;
    stop.send(()).unwrap();
    task.await.unwrap();

    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    let poison: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("not an envelope") || l.contains("not a TelemetryEnvelope"))
        .collect();
    assert_eq!(poison.len(), 1, "one line for the poison record: {text}");
    assert!(
        poison[0].contains("WARN") && poison[0].contains("event=\"processor.dead_lettered\""),
        "{text}"
    );
    let mut metrics = String::new();
    prometheus_client::encoding::text::encode(&mut metrics, &registry).unwrap();
    assert!(
        metrics.contains("tributary_processor_dead_lettered_records_total 1\n"),
        "{metrics}"
    );
}
