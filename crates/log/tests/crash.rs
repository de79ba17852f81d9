//! Crash safety: a process appending concurrently is killed with SIGKILL
//! mid-stream, several times over the same directory; every append it
//! acknowledged must be in the log, with its value, after reopening.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tributary_log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use tributary_log::{ConsumerOptions, Log};

const PARTITIONS: u32 = 4;
const TASKS: &str = "32";
/// Acknowledgements to wait for before each kill.
const ACKS_PER_ROUND: usize = 1500;
const ROUNDS: usize = 3;
const DEADLINE: Duration = Duration::from_secs(60);

/// `(partition, offset)` of a record.
type Pos = (u32, u64);

/// One acknowledged append, as printed by the helper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ack {
    task: u64,
    seq: u64,
    len: usize,
    crc: u32,
}

fn parse(line: &str) -> Option<(Pos, Ack)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let [p, offset, task, seq, len, crc] = f.as_slice() else {
        return None;
    };
    let ack = Ack {
        task: task.parse().ok()?,
        seq: seq.parse().ok()?,
        len: len.parse().ok()?,
        crc: u32::from_str_radix(crc, 16).ok()?,
    };
    Some(((p.parse().ok()?, offset.parse().ok()?), ack))
}

/// Kills the child if the test fails before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the helper until it has acknowledged `ACKS_PER_ROUND` appends, then
/// SIGKILLs it and returns every acknowledgement it printed (complete lines only).
fn run_and_kill(dir: &str) -> Vec<(Pos, Ack)> {
    let child = Command::new(env!("CARGO_BIN_EXE_tributary-log-crash-appender"))
        .args([dir, &PARTITIONS.to_string(), TASKS, "100000000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the crash appender");
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel::<String>();
    // Reads complete lines until EOF (after the kill, the pipe drains and closes).
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match stdout.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                // A line cut by the kill has no newline: it was never fully printed.
                Ok(_) if line.ends_with('\n') => {
                    if tx.send(line.clone()).is_err() {
                        return;
                    }
                }
                Ok(_) => return,
            }
        }
    });

    let deadline = Instant::now() + DEADLINE;
    let mut acks = Vec::new();
    while acks.len() < ACKS_PER_ROUND {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => acks.push(parse(&line).unwrap_or_else(|| panic!("bad line {line:?}"))),
            Err(e) => panic!("only {} acknowledgements before {e:?}", acks.len()),
        }
    }
    assert!(
        child.0.try_wait().expect("try_wait").is_none(),
        "the appender exited before the kill"
    );
    child.0.kill().expect("SIGKILL");
    child.0.wait().expect("wait");
    reader.join().expect("reader thread");
    acks.extend(
        rx.try_iter()
            .map(|line| parse(&line).unwrap_or_else(|| panic!("bad line {line:?}"))),
    );
    acks
}

#[test]
fn acknowledged_appends_survive_kill_9() {
    let dir = tempfile::Builder::new()
        .prefix("log-crash-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temporary dir");
    let dir_str = dir.path().to_str().expect("UTF-8 path");
    let mut acked: BTreeMap<Pos, Ack> = BTreeMap::new();
    for round in 0..ROUNDS {
        let acks = run_and_kill(dir_str);
        // A task appends one record at a time under one key, so within a run
        // its later appends must have later offsets in the same partition.
        let mut by_task: BTreeMap<u64, Vec<(u64, Pos)>> = BTreeMap::new();
        for &(pos, ack) in &acks {
            by_task.entry(ack.task).or_default().push((ack.seq, pos));
        }
        for (task, mut appends) in by_task {
            appends.sort_unstable();
            for w in appends.windows(2) {
                let ((_, a), (_, b)) = (w[0], w[1]);
                assert!(
                    a.0 == b.0 && a.1 < b.1,
                    "round {round}, task {task}: {a:?} then {b:?}"
                );
            }
        }
        for (pos, ack) in acks {
            assert!(
                acked.insert(pos, ack).is_none(),
                "round {round}: {pos:?} acknowledged twice"
            );
        }
    }

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let config = EmbeddedLogConfig {
            segment_bytes: 256 * 1024,
            ..EmbeddedLogConfig::new("crash", PARTITIONS)
        };
        let log = EmbeddedLog::open(dir.path(), config)
            .await
            .expect("reopen after kill -9");
        let mut total = 0;
        for p in 0..PARTITIONS {
            let w = log.watermarks(p).await.expect("watermarks");
            assert_eq!(w.low, 0);
            total += w.high;
        }
        // Read everything: any corruption below the high watermark fails the read.
        let mut consumer = log
            .consumer(ConsumerOptions::default())
            .await
            .expect("consumer");
        let mut stored = BTreeMap::new();
        let deadline = Instant::now() + DEADLINE;
        while (stored.len() as u64) < total {
            assert!(
                Instant::now() < deadline,
                "read {} of {total} records",
                stored.len()
            );
            for r in consumer
                .poll(10_000, Duration::from_secs(1))
                .await
                .expect("poll")
            {
                stored.insert((r.partition, r.offset), r.value);
            }
        }
        for (pos, ack) in &acked {
            let value = stored
                .get(pos)
                .unwrap_or_else(|| panic!("acknowledged {pos:?} ({ack:?}) is missing"));
            assert_eq!(
                (value.len(), crc32fast::hash(value)),
                (ack.len, ack.crc),
                "{pos:?} holds another value"
            );
            assert!(
                value.starts_with(format!("{}/{}/", ack.task, ack.seq).as_bytes()),
                "{pos:?} holds another value"
            );
        }
        assert!(acked.len() >= ROUNDS * ACKS_PER_ROUND);
        // The log keeps working after recovery.
        let pos = log.append(tributary_log::Record {
            key: "task-0".into(),
            value: "after".into(),
            headers: vec![],
            timestamp_ms: 0,
        });
        let pos = pos.await.expect("append after recovery");
        assert_eq!(
            pos.offset,
            log.watermarks(pos.partition)
                .await
                .expect("watermarks")
                .high
                - 1
        );
    });
}
