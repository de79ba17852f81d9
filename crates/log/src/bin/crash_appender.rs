//! Test helper for `tests/crash.rs`, not a tool: appends to an embedded log
//! from many concurrent tasks and prints one line per acknowledged record as
//! soon as its append returns, until it is killed or has appended
//! `max_records` records:
//!
//! ```text
//! <partition> <offset> <task> <seq> <value length> <value crc32, hex>
//! ```
//!
//! Usage: `tributary-log-crash-appender <dir> <partitions> <tasks> <max_records>`.
//! Value sizes vary (100 B to 16 KB) and segments are small (256 KiB), so a
//! kill lands mid-write and mid-roll.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tributary_log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use tributary_log::{Log, Record};

/// The value task `task` appends as its `seq`-th record.
fn value(task: u64, seq: u64) -> Bytes {
    let len = 100 + (seq * 7919 + task * 104_729) % 16_000;
    let mut v = format!("{task}/{seq}/").into_bytes();
    v.resize(len as usize, (task * 31 + seq) as u8);
    v.into()
}

fn usage() -> ExitCode {
    eprintln!("usage: tributary-log-crash-appender <dir> <partitions> <tasks> <max_records>");
    ExitCode::from(2)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, partitions, tasks, max_records] = args.as_slice() else {
        return usage();
    };
    let (Ok(partitions), Ok(tasks), Ok(max_records)) = (
        partitions.parse::<u32>(),
        tasks.parse::<u64>(),
        max_records.parse::<u64>(),
    ) else {
        return usage();
    };
    let config = EmbeddedLogConfig {
        segment_bytes: 256 * 1024,
        ..EmbeddedLogConfig::new("crash", partitions)
    };
    let log = match EmbeddedLog::open(PathBuf::from(dir), config).await {
        Ok(log) => log,
        Err(e) => {
            eprintln!("open: {e}");
            return ExitCode::FAILURE;
        }
    };
    let appended = Arc::new(AtomicU64::new(0));
    let mut set = tokio::task::JoinSet::new();
    for task in 0..tasks {
        let (log, appended) = (Arc::clone(&log), Arc::clone(&appended));
        set.spawn(async move {
            for seq in 0.. {
                if appended.fetch_add(1, Ordering::Relaxed) >= max_records {
                    return Ok(());
                }
                let value = value(task, seq);
                let record = Record {
                    key: format!("task-{task}").into(),
                    value: value.clone(),
                    headers: vec![],
                    timestamp_ms: 0,
                };
                let pos = log.append(record).await?;
                let line = format!(
                    "{} {} {task} {seq} {} {:08x}\n",
                    pos.partition,
                    pos.offset,
                    value.len(),
                    crc32fast::hash(&value)
                );
                // Stdout is line-buffered: each line leaves as one write.
                std::io::stdout()
                    .lock()
                    .write_all(line.as_bytes())
                    .map_err(tributary_log::LogError::Io)?;
            }
            Ok::<(), tributary_log::LogError>(())
        });
    }
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("append: {e}");
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("task: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Err(e) = log.close().await {
        eprintln!("close: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
