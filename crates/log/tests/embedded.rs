//! Behaviour specific to [`EmbeddedLog`]: durability across reopen, torn
//! tail recovery, segment rolling and truncation, backpressure, limits,
//! shutdown and group commit.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tempfile::TempDir;
use tokio::time::Instant;
use tributary_log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use tributary_log::{ConsumerOptions, Log, LogError, LogRecord, Record, StartFrom};

const DEADLINE: Duration = Duration::from_secs(10);

/// A temporary directory under target/ (a real disk, unlike a tmpfs /tmp).
fn tmp() -> TempDir {
    tempfile::Builder::new()
        .prefix("log-embedded-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temporary directory")
}

fn config(partitions: u32) -> EmbeddedLogConfig {
    EmbeddedLogConfig::new("test", partitions)
}

fn rec(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Record {
    Record {
        key: key.into(),
        value: value.into(),
        headers: vec![("h".into(), Bytes::from_static(b"1"))],
        timestamp_ms: 7,
    }
}

async fn open(dir: &Path, config: EmbeddedLogConfig) -> Arc<EmbeddedLog> {
    EmbeddedLog::open(dir, config).await.expect("open")
}

/// Reads exactly `n` records from `Earliest` with an ephemeral consumer.
async fn read_all(log: &EmbeddedLog, n: usize) -> Vec<LogRecord> {
    let mut consumer = log
        .consumer(ConsumerOptions::default())
        .await
        .expect("consumer");
    let deadline = Instant::now() + DEADLINE;
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "read {} of {n} records", out.len());
        out.extend(consumer.poll(n - out.len(), left).await.expect("poll"));
    }
    let extra = consumer
        .poll(10, Duration::from_millis(100))
        .await
        .expect("poll");
    assert!(
        extra.is_empty(),
        "{} records beyond the expected {n}",
        extra.len()
    );
    out.sort_by_key(|r| (r.partition, r.offset));
    out
}

fn segment_files(dir: &Path, partition: u32) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join(format!("partition-{partition}")))
        .expect("partition dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_after_close_keeps_records_and_offsets() {
    let dir = tmp();
    let records: Vec<Record> = (0..200)
        .map(|i| rec(format!("dev-{}", i % 17), format!("value-{i}")))
        .collect();
    let (positions, highs) = {
        let log = open(dir.path(), config(4)).await;
        let positions = log.append_batch(records.clone()).await.expect("append");
        let mut consumer = log
            .consumer(ConsumerOptions {
                group: Some("processor".into()),
                start: StartFrom::Earliest,
            })
            .await
            .expect("consumer");
        consumer.commit(&[(0, 3), (2, 5)]).await.expect("commit");
        let mut highs = Vec::new();
        for p in 0..4 {
            highs.push(log.watermarks(p).await.expect("watermarks").high);
        }
        log.close().await.expect("close");
        (positions, highs)
    };

    let log = open(dir.path(), config(4)).await;
    for (p, &high) in highs.iter().enumerate() {
        let w = log.watermarks(p as u32).await.expect("watermarks");
        assert_eq!((w.low, w.high), (0, high), "partition {p}");
    }
    let read = read_all(&log, records.len()).await;
    for (r, pos) in records.iter().zip(&positions) {
        let got = read
            .iter()
            .find(|x| x.partition == pos.partition && x.offset == pos.offset)
            .expect("record present");
        assert_eq!(
            (&got.key, &got.value, &got.headers, got.timestamp_ms),
            (&r.key, &r.value, &r.headers, r.timestamp_ms)
        );
    }
    assert_eq!(
        log.committed("processor", 0).await.expect("committed"),
        Some(3)
    );
    assert_eq!(
        log.committed("processor", 1).await.expect("committed"),
        None
    );
    assert_eq!(
        log.committed("processor", 2).await.expect("committed"),
        Some(5)
    );
    let mut resumed = log
        .consumer(ConsumerOptions {
            group: Some("processor".into()),
            start: StartFrom::Latest,
        })
        .await
        .expect("consumer");
    let first = resumed.poll(1000, DEADLINE).await.expect("poll");
    // Partition 0 resumes at 3, partition 2 at 5; 1 and 3 start at Latest.
    assert!(
        first
            .iter()
            .all(|r| (r.partition == 0 && r.offset >= 3) || (r.partition == 2 && r.offset >= 5))
    );
    assert_eq!(first.len() as u64, highs[0] - 3 + highs[2] - 5);
    // New appends continue the offsets.
    let pos = log
        .append(rec("dev-0", "after reopen"))
        .await
        .expect("append");
    assert_eq!(pos.offset, highs[pos.partition as usize]);
}

/// Appends `n` records to a 1-partition log, closes it and returns the
/// active segment's path and its length after `n - 1` and `n` records.
async fn log_with_records(dir: &Path, n: usize) -> (PathBuf, u64, u64) {
    let log = open(dir, config(1)).await;
    for i in 0..n - 1 {
        log.append(rec("k", format!("record-{i}")))
            .await
            .expect("append");
    }
    log.close().await.expect("close");
    drop(log);
    let path = segment_files(dir, 0).pop().expect("a segment");
    let before_last = fs::metadata(&path).expect("metadata").len();
    let log = open(dir, config(1)).await;
    log.append(rec("k", format!("record-{}", n - 1)))
        .await
        .expect("append");
    log.close().await.expect("close");
    (
        path.clone(),
        before_last,
        fs::metadata(&path).expect("metadata").len(),
    )
}

async fn check_recovered(dir: &Path, path: &Path, records: usize, valid_len: u64) {
    let log = open(dir, config(1)).await;
    let w = log.watermarks(0).await.expect("watermarks");
    assert_eq!(w.high, records as u64, "high watermark after recovery");
    assert_eq!(
        fs::metadata(path).expect("metadata").len(),
        valid_len,
        "the invalid tail is truncated"
    );
    let read = read_all(&log, records).await;
    for (i, r) in read.iter().enumerate() {
        assert_eq!(
            (r.offset, &r.value[..]),
            (i as u64, format!("record-{i}").as_bytes())
        );
    }
    let pos = log
        .append(rec("k", "next"))
        .await
        .expect("append after recovery");
    assert_eq!(pos.offset, records as u64);
    let read = read_all(&log, records + 1).await;
    assert_eq!(
        read.last().map(|r| r.value.clone()),
        Some(Bytes::from_static(b"next"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_the_last_record_is_truncated() {
    let dir = tmp();
    let (path, _, len) = log_with_records(dir.path(), 10).await;
    let mut file = OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open segment");
    std::io::Write::write_all(&mut file, &[0xab; 100]).expect("write garbage");
    drop(file);
    check_recovered(dir.path(), &path, 10, len).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_cut_in_the_middle_is_truncated() {
    let dir = tmp();
    let (path, before_last, len) = log_with_records(dir.path(), 10).await;
    let file = OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open segment");
    file.set_len(before_last + (len - before_last) / 2)
        .expect("truncate");
    drop(file);
    check_recovered(dir.path(), &path, 9, before_last).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_record_with_a_bad_checksum_is_truncated() {
    let dir = tmp();
    let (path, before_last, len) = log_with_records(dir.path(), 10).await;
    let mut bytes = fs::read(&path).expect("read segment");
    let last = (len - 1) as usize;
    bytes[last] ^= 0xff;
    fs::write(&path, bytes).expect("write segment");
    check_recovered(dir.path(), &path, 9, before_last).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_roll_and_consumed_ones_are_deleted_after_commit() {
    let dir = tmp();
    let cfg = EmbeddedLogConfig {
        segment_bytes: 4096,
        ..config(1)
    };
    let log = open(dir.path(), cfg.clone()).await;
    let value = Bytes::from(vec![b'x'; 500]);
    for _ in 0..100 {
        log.append(rec("k", value.clone())).await.expect("append");
    }
    let segments = log.stats().partitions[0].segments;
    assert!(
        segments >= 10,
        "100 records of ~540 bytes in 4 KiB segments made {segments} segments"
    );
    assert_eq!(segment_files(dir.path(), 0).len(), segments);

    // An ephemeral reader parked at offset 0 while segments go away.
    let mut parked = log
        .consumer(ConsumerOptions::default())
        .await
        .expect("consumer");
    let g = |name: &str| ConsumerOptions {
        group: Some(name.into()),
        start: StartFrom::Earliest,
    };
    let mut slow = log.consumer(g("slow")).await.expect("consumer");
    slow.commit(&[(0, 10)]).await.expect("commit");
    let mut fast = log.consumer(g("fast")).await.expect("consumer");
    fast.commit(&[(0, 50)]).await.expect("commit");
    let low = log.watermarks(0).await.expect("watermarks").low;
    assert!(
        low > 0 && low <= 10,
        "with groups at 10 and 50, low is {low}"
    );

    slow.commit(&[(0, 60)]).await.expect("commit");
    let w = log.watermarks(0).await.expect("watermarks");
    assert!(
        w.low > 10 && w.low <= 50,
        "with groups at 60 and 50, low is {}",
        w.low
    );
    assert_eq!(w.high, 100);
    let stats = log.stats().partitions[0];
    assert_eq!(
        segment_files(dir.path(), 0).len(),
        stats.segments,
        "files on disk match the stats"
    );
    assert!(stats.segments_deleted > 0);
    let first_file = segment_files(dir.path(), 0)[0].clone();
    assert_eq!(
        first_file.file_name().and_then(|n| n.to_str()),
        Some(format!("{:020}.log", w.low).as_str())
    );

    // The parked reader skips to the low watermark; nothing uncommitted is lost.
    let records = parked.poll(1000, DEADLINE).await.expect("poll");
    let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (w.low..100).collect::<Vec<_>>());
    assert!(records.iter().all(|r| r.value == value));

    // The truncation holds across reopen.
    log.close().await.expect("close");
    drop((log, parked, slow, fast));
    let log = open(dir.path(), cfg).await;
    assert_eq!(log.watermarks(0).await.expect("watermarks"), w);
    assert_eq!(
        read_all(&log, (100 - w.low) as usize).await[0].offset,
        w.low
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_offset_inside_an_unindexed_segment_is_found_after_reopen() {
    let dir = tmp();
    let cfg = EmbeddedLogConfig {
        segment_bytes: 1024 * 1024,
        ..config(1)
    };
    {
        let log = open(dir.path(), cfg.clone()).await;
        let batch: Vec<Record> = (0..3000).map(|i| rec("k", format!("{i:01000}"))).collect();
        log.append_batch(batch).await.expect("append");
        assert!(log.stats().partitions[0].segments >= 3);
        let mut c = log
            .consumer(ConsumerOptions {
                group: Some("g".into()),
                start: StartFrom::Earliest,
            })
            .await
            .expect("consumer");
        c.commit(&[(0, 1234)]).await.expect("commit");
        log.close().await.expect("close");
    }
    // Sealed segments have no index after reopen: the reader scans to 1234.
    let log = open(dir.path(), cfg).await;
    let mut c = log
        .consumer(ConsumerOptions {
            group: Some("g".into()),
            start: StartFrom::Earliest,
        })
        .await
        .expect("consumer");
    let records = c.poll(5, DEADLINE).await.expect("poll");
    let got: Vec<(u64, String)> = records
        .iter()
        .map(|r| (r.offset, String::from_utf8_lossy(&r.value).into_owned()))
        .collect();
    let want: Vec<(u64, String)> = (1234..1239).map(|i| (i, format!("{i:01000}"))).collect();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_backpressure_at_once() {
    let dir = tmp();
    let log = open(
        dir.path(),
        EmbeddedLogConfig {
            max_pending_appends: 1,
            ..config(1)
        },
    )
    .await;
    let value = Bytes::from(vec![0u8; 64 * 1024]);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (log, value) = (Arc::clone(&log), value.clone());
        tasks.spawn(async move { log.append(rec("k", value)).await });
    }
    let (mut ok, mut backpressure) = (0, 0);
    let all = tokio::time::timeout(DEADLINE, async {
        while let Some(joined) = tasks.join_next().await {
            match joined.expect("task") {
                Ok(_) => ok += 1,
                Err(LogError::Backpressure) => backpressure += 1,
                Err(e) => panic!("unexpected error {e}"),
            }
        }
    })
    .await;
    assert!(all.is_ok(), "appends blocked instead of failing fast");
    assert!(
        backpressure > 0,
        "64 concurrent appends into a queue of 1: none was refused"
    );
    assert!(ok > 0);
    assert_eq!(log.watermarks(0).await.expect("watermarks").high, ok);
    // Once the queue drains, appends succeed again.
    assert_eq!(
        log.append(rec("k", "later")).await.expect("append").offset,
        ok
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_records_reject_the_whole_batch() {
    let dir = tmp();
    let log = open(
        dir.path(),
        EmbeddedLogConfig {
            max_record_bytes: 1024,
            ..config(2)
        },
    )
    .await;
    let big = rec("k", vec![0u8; 2000]);
    match log.append(big.clone()).await {
        Err(LogError::RecordTooLarge { size, limit }) => {
            assert!(size > 2000 && limit == 1024, "{size} {limit}")
        }
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    let result = log
        .append_batch(vec![rec("a", "small"), big, rec("b", "small")])
        .await;
    assert!(
        matches!(result, Err(LogError::RecordTooLarge { .. })),
        "{result:?}"
    );
    for p in 0..2 {
        assert_eq!(
            log.watermarks(p).await.expect("watermarks").high,
            0,
            "partition {p} took part of the batch"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_larger_than_the_poll_budget_is_still_delivered() {
    let dir = tmp();
    let log = open(
        dir.path(),
        EmbeddedLogConfig {
            max_poll_bytes: 1000,
            ..config(1)
        },
    )
    .await;
    log.append_batch((0..3).map(|i| rec("k", vec![i; 5000])).collect())
        .await
        .expect("append");
    let mut c = log
        .consumer(ConsumerOptions::default())
        .await
        .expect("consumer");
    for i in 0..3u8 {
        let got = c.poll(100, DEADLINE).await.expect("poll");
        assert_eq!(got.len(), 1, "poll {i} returned {} records", got.len());
        assert_eq!(got[0].value, vec![i; 5000]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_is_locked_and_the_partition_count_fixed() {
    let dir = tmp();
    let log = open(dir.path(), config(4)).await;
    let second = EmbeddedLog::open(dir.path(), config(4)).await;
    assert!(
        matches!(second, Err(LogError::Invalid(_))),
        "a second instance opened the directory: {second:?}"
    );
    log.close().await.expect("close");
    drop(log);
    for other in [config(8), EmbeddedLogConfig::new("other", 4)] {
        let result = EmbeddedLog::open(dir.path(), other.clone()).await;
        assert!(
            matches!(result, Err(LogError::Invalid(_))),
            "{other:?} opened a 4-partition 'test' topic"
        );
    }
    open(dir.path(), config(4)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_finishes_queued_appends_then_refuses_more() {
    let dir = tmp();
    let log = open(dir.path(), config(2)).await;
    // join! polls the appends first, so they are queued before close begins.
    let (a, b, c, closed) = tokio::join!(
        log.append_batch((0..50).map(|i| rec(format!("k{i}"), "a")).collect()),
        log.append(rec("x", "b")),
        log.append(rec("y", "c")),
        log.close(),
    );
    closed.expect("close");
    let stored = a.expect("queued batch").len() + usize::from(b.is_ok()) + usize::from(c.is_ok());
    assert_eq!(stored, 52, "every queued append finished");
    assert!(matches!(
        log.append(rec("z", "late")).await,
        Err(LogError::Closed)
    ));
    drop(log);
    let log = open(dir.path(), config(2)).await;
    assert_eq!(read_all(&log, 52).await.len(), 52);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_share_fsyncs() {
    let dir = tmp();
    let log = open(dir.path(), config(1)).await;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..64 {
        let log = Arc::clone(&log);
        tasks.spawn(async move {
            for i in 0..10 {
                log.append(rec("k", format!("{t}/{i}")))
                    .await
                    .expect("append");
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("task");
    }
    let stats = log.stats();
    assert_eq!(stats.appended_records(), 640);
    // Each of 64 appenders waits for its fsync before appending again, so
    // with group commit each fsync serves many of them.
    assert!(
        stats.fsyncs() * 4 < 640,
        "{} fsyncs for 640 appends",
        stats.fsyncs()
    );
    assert_eq!(stats.bytes_on_disk(), stats.appended_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_partitions_and_bad_groups_are_rejected() {
    let dir = tmp();
    let log = open(dir.path(), config(2)).await;
    assert!(matches!(
        log.watermarks(2).await,
        Err(LogError::NoSuchPartition(2))
    ));
    assert!(matches!(
        log.committed("g", 9).await,
        Err(LogError::NoSuchPartition(9))
    ));
    let mut c = log
        .consumer(ConsumerOptions {
            group: Some("g".into()),
            start: StartFrom::Earliest,
        })
        .await
        .expect("consumer");
    assert!(matches!(
        c.commit(&[(0, 1), (5, 1)]).await,
        Err(LogError::NoSuchPartition(5))
    ));
    assert_eq!(
        log.committed("g", 0).await.expect("committed"),
        None,
        "a rejected commit stored nothing"
    );
    assert_eq!(c.assignment(), vec![0, 1]);
    let empty = ConsumerOptions {
        group: Some(String::new()),
        start: StartFrom::Earliest,
    };
    assert!(matches!(
        log.consumer(empty).await,
        Err(LogError::Invalid(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_group_releases_its_segments() {
    let dir = tmp();
    let log = open(
        dir.path(),
        EmbeddedLogConfig {
            segment_bytes: 2048,
            ..config(1)
        },
    )
    .await;
    log.append_batch((0..50).map(|_| rec("k", vec![1u8; 400])).collect())
        .await
        .expect("append");
    let g = |name: &str| ConsumerOptions {
        group: Some(name.into()),
        start: StartFrom::Earliest,
    };
    log.consumer(g("stale"))
        .await
        .expect("consumer")
        .commit(&[(0, 0)])
        .await
        .expect("commit");
    log.consumer(g("live"))
        .await
        .expect("consumer")
        .commit(&[(0, 50)])
        .await
        .expect("commit");
    assert_eq!(
        log.watermarks(0).await.expect("watermarks").low,
        0,
        "the stale group holds every segment"
    );
    assert!(log.delete_group("stale").await.expect("delete"));
    let low = log.watermarks(0).await.expect("watermarks").low;
    assert!(low > 40, "after deleting the stale group, low is {low}");
}
