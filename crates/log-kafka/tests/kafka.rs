//! Kafka-specific behaviour of `KafkaLog`, on a real Kafka-protocol broker
//! (Tansu): topic creation, consumer groups splitting partitions and taking
//! over, commits after a rebalance, lag, and the producer's bounds.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::{Tansu, unique_topic};
use tributary_log::{Consumer, ConsumerOptions, Log, LogError, LogRecord, Record, StartFrom};
use tributary_log_kafka::{
    KafkaAdmin, KafkaConsumer, KafkaLog, ProducerQueueMetrics, TopicSpec, TopicStatus,
    ensure_topics, topics, tributary_topics,
};

/// How long a test waits for something it expects.
const DEADLINE: Duration = Duration::from_secs(30);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn record(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Record {
    Record {
        key: key.into(),
        value: value.into(),
        headers: Vec::new(),
        timestamp_ms: now_ms(),
    }
}

/// One key per partition.
fn keys_covering(log: &dyn Log) -> BTreeMap<u32, Bytes> {
    let mut keys = BTreeMap::new();
    for i in 0..10_000u32 {
        let key = Bytes::from(format!("tenant/device-{i}"));
        keys.entry(log.partition_for(&key)).or_insert(key);
        if keys.len() == log.partitions() as usize {
            break;
        }
    }
    assert_eq!(
        keys.len(),
        log.partitions() as usize,
        "keys for every partition"
    );
    keys
}

fn group(name: &str) -> ConsumerOptions {
    ConsumerOptions {
        group: Some(unique_topic(name)),
        start: StartFrom::Earliest,
    }
}

/// Polls until `want` records arrived, or fails at the deadline.
async fn read_n(consumer: &mut dyn Consumer, want: usize) -> Vec<LogRecord> {
    let deadline = Instant::now() + DEADLINE;
    let mut out = Vec::new();
    while out.len() < want {
        assert!(
            Instant::now() < deadline,
            "read {} of {want} records before the deadline",
            out.len()
        );
        out.extend(
            consumer
                .poll(want - out.len(), Duration::from_millis(500))
                .await
                .expect("poll"),
        );
    }
    out
}

/// The next offset to commit for each partition in `records`.
fn next_offsets(records: &[LogRecord]) -> Vec<(u32, u64)> {
    let mut next = BTreeMap::new();
    for r in records {
        let e = next.entry(r.partition).or_insert(0);
        *e = (*e).max(r.offset + 1);
    }
    next.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_creation_is_idempotent_and_checks_partitions() {
    let Some(broker) = Tansu::start_or_skip() else {
        return;
    };
    let admin = KafkaAdmin::new(&broker.config("unused", 1)).expect("admin client");
    let specs = tributary_topics(3, 1);
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            topics::TELEMETRY,
            topics::COMMANDS,
            topics::DEVICE_EVENTS,
            topics::DLQ,
            topics::ALERTS,
            topics::ALERTS_DLQ
        ]
    );
    let first = ensure_topics(&admin, &specs).await.expect("create");
    assert_eq!(first, vec![TopicStatus::Created; 6]);
    let again = ensure_topics(&admin, &specs).await.expect("create again");
    assert_eq!(again, vec![TopicStatus::AlreadyExists; 6]);

    // An existing topic with another partition count is refused, by
    // ensure_topics and by connect: records would go to the wrong partitions.
    let wrong = ensure_topics(&admin, &[TopicSpec::new(topics::TELEMETRY, 5, 1)]).await;
    assert!(
        matches!(wrong, Err(LogError::Invalid(ref m)) if m.contains("3 partitions")),
        "{wrong:?}"
    );
    let connect = KafkaLog::connect(broker.config(topics::TELEMETRY, 4)).await;
    assert!(matches!(connect, Err(LogError::Invalid(_))), "{connect:?}");
    // The right count connects, to the topic ensure_topics made.
    let log = KafkaLog::connect(broker.config(topics::TELEMETRY, 3))
        .await
        .expect("connect");
    log.append(record("acme/dev-1", "x")).await.expect("append");

    // Without create_topic, a missing topic is an error once the connect
    // timeout passes, not a hang and not an auto-created topic.
    let mut config = broker.config(&unique_topic("missing"), 2);
    config.create_topic = false;
    config.connect_timeout_ms = 1_000;
    let started = Instant::now();
    let missing = KafkaLog::connect(config).await;
    assert!(matches!(missing, Err(LogError::Backend(_))), "{missing:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Two consumers of a group split the partitions; each fresh record is read
/// once, by the owner of its partition; a consumer's commits for partitions
/// it no longer owns are skipped; when one leaves, the other takes over
/// everything and resumes from the committed offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_in_a_group_split_the_partitions_and_fail_over() {
    let Some(broker) = Tansu::start_or_skip() else {
        return;
    };
    let log = KafkaLog::connect(broker.config(&unique_topic("group"), 4))
        .await
        .expect("connect");
    let all: BTreeSet<u32> = (0..4).collect();
    let opts = group("split");
    let group_id = opts.group.clone().expect("a group");
    let mut a = log.kafka_consumer(opts.clone()).await.expect("consumer a");

    let deadline = Instant::now() + DEADLINE;
    while a.assignment().len() < 4 {
        assert!(
            Instant::now() < deadline,
            "a was never assigned all partitions: {:?}",
            a.assignment()
        );
        assert!(
            a.poll(10, Duration::from_millis(200))
                .await
                .expect("poll")
                .is_empty()
        );
    }

    let mut b = log.kafka_consumer(opts.clone()).await.expect("consumer b");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (ra, rb) = tokio::join!(
            a.poll(10, Duration::from_millis(200)),
            b.poll(10, Duration::from_millis(200))
        );
        assert!(ra.expect("poll a").is_empty() && rb.expect("poll b").is_empty());
        let (sa, sb): (BTreeSet<u32>, BTreeSet<u32>) = (
            a.assignment().into_iter().collect(),
            b.assignment().into_iter().collect(),
        );
        if !sa.is_empty() && !sb.is_empty() && sa.is_disjoint(&sb) && &sa | &sb == all {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group did not split the partitions: a {sa:?}, b {sb:?} (tansu log:\n{})",
            broker.log()
        );
    }
    let owned_a: BTreeSet<u32> = a.assignment().into_iter().collect();
    let owned_b: BTreeSet<u32> = b.assignment().into_iter().collect();
    assert!(a.rebalances() >= 2 && b.rebalances() >= 1);

    // Fresh records on every partition: each read exactly once, by its owner.
    let keys = keys_covering(&*log);
    let batch: Vec<Record> = (0..40)
        .map(|i| record(keys[&(i % 4)].clone(), format!("fresh-{i}")))
        .collect();
    log.append_batch(batch).await.expect("append");
    let mut read_a = Vec::new();
    let mut read_b = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while read_a.len() + read_b.len() < 40 {
        assert!(
            Instant::now() < deadline,
            "read {} + {} of 40",
            read_a.len(),
            read_b.len()
        );
        let (ra, rb) = tokio::join!(
            a.poll(40, Duration::from_millis(200)),
            b.poll(40, Duration::from_millis(200))
        );
        read_a.extend(ra.expect("poll a"));
        read_b.extend(rb.expect("poll b"));
    }
    assert!(
        read_a.iter().all(|r| owned_a.contains(&r.partition)),
        "a read another's partition"
    );
    assert!(
        read_b.iter().all(|r| owned_b.contains(&r.partition)),
        "b read another's partition"
    );
    let mut seen = HashSet::new();
    for r in read_a.iter().chain(&read_b) {
        assert!(seen.insert(r.value.clone()), "{:?} read twice", r.value);
    }
    assert_eq!(seen.len(), 40);
    assert!(!read_a.is_empty() && !read_b.is_empty());

    // Each commits what it processed. A's commit for one of b's partitions
    // is skipped: only the owner moves a partition's offset.
    let b_partition = *owned_b.first().expect("b owns a partition");
    let mut commit_a = next_offsets(&read_a);
    commit_a.push((b_partition, 9_999));
    a.commit(&commit_a).await.expect("commit a");
    b.commit(&next_offsets(&read_b)).await.expect("commit b");
    for (p, next) in next_offsets(&read_a)
        .into_iter()
        .chain(next_offsets(&read_b))
    {
        assert_eq!(
            log.committed(&group_id, p).await.expect("committed"),
            Some(next)
        );
    }
    assert_eq!(a.unconfirmed_commits(), Vec::new());

    // B leaves: A takes over every partition, resuming after B's commits.
    drop(b);
    let deadline = Instant::now() + DEADLINE;
    while a.assignment().len() < 4 {
        assert!(
            Instant::now() < deadline,
            "a did not take over: {:?}",
            a.assignment()
        );
        assert!(
            a.poll(10, Duration::from_millis(200))
                .await
                .expect("poll")
                .is_empty()
        );
    }
    let more: Vec<Record> = (0..8)
        .map(|i| record(keys[&(i % 4)].clone(), format!("after-{i}")))
        .collect();
    log.append_batch(more).await.expect("append");
    let after = read_n(&mut a, 8).await;
    let values: BTreeSet<Bytes> = after.iter().map(|r| r.value.clone()).collect();
    let want: BTreeSet<Bytes> = (0..8).map(|i| Bytes::from(format!("after-{i}"))).collect();
    assert_eq!(
        values, want,
        "a replayed or missed records after taking over"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_counts_records_after_the_position() {
    let Some(broker) = Tansu::start_or_skip() else {
        return;
    };
    let log = KafkaLog::connect(broker.config(&unique_topic("lag"), 1))
        .await
        .expect("connect");
    let batch: Vec<Record> = (0..10).map(|i| record("k", format!("{i}"))).collect();
    log.append_batch(batch).await.expect("append");
    let mut consumer: KafkaConsumer = log.kafka_consumer(group("lag")).await.expect("consumer");
    let mut read = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while read.len() < 4 {
        assert!(Instant::now() < deadline);
        read.extend(
            consumer
                .poll(4 - read.len(), Duration::from_millis(500))
                .await
                .expect("poll"),
        );
    }
    assert_eq!(consumer.lag().await.expect("lag"), vec![(0, 6)]);
    read_n(&mut consumer, 6).await;
    assert_eq!(consumer.lag().await.expect("lag"), vec![(0, 0)]);
}

/// A full producer queue fails an append at once with `Backpressure`
/// (never blocks), and appends succeed again once the queue drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_producer_queue_is_backpressure() {
    let Some(broker) = Tansu::start_or_skip() else {
        return;
    };
    let mut config = broker.config(&unique_topic("backpressure"), 1);
    config.producer.queue_max_messages = 5;
    // Hold records in the queue: nothing is sent before 2 s or 10000 records.
    config.producer.linger_ms = 2_000;
    config.producer.batch_num_messages = 10_000;
    let log = KafkaLog::connect(config).await.expect("connect");
    let started = Instant::now();
    let batch: Vec<Record> = (0..20).map(|i| record("k", format!("{i}"))).collect();
    let result = log.append_batch(batch).await;
    assert!(matches!(result, Err(LogError::Backpressure)), "{result:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "backpressure took {:?}",
        started.elapsed()
    );

    let deadline = Instant::now() + DEADLINE;
    loop {
        match log.append(record("k", "after")).await {
            Ok(_) => break,
            Err(LogError::Backpressure) => {
                assert!(
                    Instant::now() < deadline,
                    "the producer queue never drained"
                );
                tokio::task::yield_now().await;
            }
            Err(e) => panic!("append: {e}"),
        }
    }
}

/// When the broker is gone, an append fails once `message.timeout.ms`
/// passes: the caller is never left waiting and nothing is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_fails_within_the_message_timeout_when_the_broker_is_gone() {
    let Some(mut broker) = Tansu::start_or_skip() else {
        return;
    };
    let mut config = broker.config(&unique_topic("gone"), 2);
    config.producer.message_timeout_ms = 2_000;
    let log = KafkaLog::connect(config).await.expect("connect");
    log.append(record("k", "before")).await.expect("append");
    broker.kill();
    let started = Instant::now();
    let result = log.append(record("k", "after")).await;
    let elapsed = started.elapsed();
    assert!(matches!(result, Err(LogError::Backend(_))), "{result:?}");
    assert!(
        // librdkafka checks a broker's queue for timed-out records when its
        // reconnect backoff (at most 1 s, as configured) expires.
        elapsed >= Duration::from_millis(1_500) && elapsed < Duration::from_secs(8),
        "failed after {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_kafka_cannot_hold_are_refused_before_sending() {
    let Some(broker) = Tansu::start_or_skip() else {
        return;
    };
    let mut config = broker.config(&unique_topic("refuse"), 1);
    config.producer.max_record_bytes = 64 * 1024;
    let log = KafkaLog::connect(config).await.expect("connect");
    let big = record("k", vec![7u8; 64 * 1024]);
    let ok = record("k", "small");
    let result = log.append_batch(vec![ok.clone(), big]).await;
    assert!(
        matches!(
            result,
            Err(LogError::RecordTooLarge { size, limit: 65_536 }) if size == 64 * 1024 + 1
        ),
        "{result:?}"
    );
    let mut zero = ok.clone();
    zero.timestamp_ms = 0;
    assert!(matches!(log.append(zero).await, Err(LogError::Invalid(_))));
    let mut nul = ok.clone();
    nul.headers.push(("a\0b".into(), Bytes::new()));
    assert!(matches!(log.append(nul).await, Err(LogError::Invalid(_))));
    // Nothing of the refused batches was sent.
    assert_eq!(log.watermarks(0).await.expect("watermarks").high, 0);
    assert_eq!(log.append(ok).await.expect("append").offset, 0);

    log.close().await.expect("close");
    assert!(matches!(
        log.append(record("k", "late")).await,
        Err(LogError::Closed)
    ));
}

/// The producer-queue gauge counts the records of an append until the
/// brokers acknowledge them, reads 0 once they have, is exported by topic,
/// and leaves the registry with its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_producer_queue_gauge_counts_unacknowledged_records() {
    let Some(broker) = Tansu::start_or_skip() else {
        return;
    };
    let topic = unique_topic("queue-depth");
    let mut config = broker.config(&topic, 1);
    // Hold records in the queue: nothing is sent before 2 s or 10000 records.
    config.producer.linger_ms = 2_000;
    config.producer.batch_num_messages = 10_000;
    let log = KafkaLog::connect(config).await.expect("connect");
    let gauge = ProducerQueueMetrics::default();
    let mut registry = prometheus_client::registry::Registry::default();
    gauge.register(&mut registry);
    gauge.watch(&log);
    let encoded = |registry: &prometheus_client::registry::Registry| {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
        text
    };
    let depth = |gauge: &ProducerQueueMetrics| gauge.sample().get(&topic).copied();
    assert_eq!(depth(&gauge), Some(0), "idle producer");

    let append = {
        let log = log.clone();
        let batch: Vec<Record> = (0..5).map(|i| record("k", format!("{i}"))).collect();
        tokio::spawn(async move { log.append_batch(batch).await })
    };
    let deadline = Instant::now() + DEADLINE;
    while depth(&gauge).unwrap_or(0) < 5 {
        assert!(
            !append.is_finished(),
            "the append was acknowledged before the gauge showed its 5 records"
        );
        assert!(
            Instant::now() < deadline,
            "the gauge never showed 5 records"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    append.await.expect("join").expect("append");
    // The last delivery report is being handled as the append returns.
    while depth(&gauge) != Some(0) {
        assert!(
            Instant::now() < deadline,
            "the gauge still shows {:?} after the append was acknowledged",
            depth(&gauge)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let text = encoded(&registry);
    assert!(
        text.contains("# TYPE tributary_log_producer_queue_messages gauge"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "tributary_log_producer_queue_messages{{topic=\"{topic}\"}} 0\n"
        )),
        "{text}"
    );

    drop(log);
    assert!(gauge.sample().is_empty());
    assert!(
        !encoded(&registry).contains("tributary_log_producer_queue_messages"),
        "a dropped log leaves the gauge"
    );
}
