//! `--workers N`: the run split over N child processes of this binary, for
//! more connections than one process may have open files.
//!
//! The parent provisions the devices and writes the [`Plan`] to a private
//! temporary file; each child (`tributary-loadtest worker --plan FILE
//! --index I --count N`) runs its shard and writes one JSON object per line
//! to its stdout: a [`Tick`] per interval, then its device tallies. Closing a
//! child's stdin tells it to stop; a child whose parent dies stops the same
//! way.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, watch};

use crate::engine::{DeviceTally, Plan, Shard, run_shard};
use crate::error::Error;
use crate::stats::{Stats, Tick};

/// The longest line a worker may write (its final tallies are the largest).
const MAX_LINE: usize = 256 * 1024 * 1024;

/// One line of a worker's output.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerMsg {
    /// Counters and latencies of one interval.
    Tick(Tick),
    /// The shard is done; its device tallies.
    Done(Vec<DeviceTally>),
    /// The shard could not run.
    Failed(String),
}

/// Running worker processes.
#[derive(Debug)]
pub struct Workers {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    /// Messages of every worker, with the worker's index.
    pub rx: mpsc::Receiver<(usize, WorkerMsg)>,
    _plan: tempfile::NamedTempFile,
}

impl Workers {
    /// Writes the plan and starts `count` workers.
    pub fn spawn(plan: &Plan, count: usize) -> Result<Self, Error> {
        let mut file = tempfile::Builder::new()
            .prefix("tributary-loadtest-plan-")
            .suffix(".json")
            .tempfile()
            .map_err(|e| Error::io("creating the plan file", e))?;
        serde_json::to_writer(file.as_file_mut(), plan)
            .map_err(|e| Error::Report(format!("writing the plan: {e}")))?;
        let exe = std::env::current_exe().map_err(|e| Error::io("finding this executable", e))?;
        // Every worker's messages go through one bounded channel: a parent
        // that falls behind slows the workers' stdout, never grows memory.
        let (tx, rx) = mpsc::channel(1024);
        let mut children = Vec::new();
        let mut stdins = Vec::new();
        for index in 0..count {
            let mut child = Command::new(&exe)
                .arg("worker")
                .arg("--plan")
                .arg(file.path())
                .args(["--index", &index.to_string(), "--count", &count.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| Error::io("starting a worker process", e))?;
            let stdout = child.stdout.take().ok_or_else(|| Error::Worker {
                index,
                message: "no stdout".into(),
            })?;
            let stdin = child.stdin.take().ok_or_else(|| Error::Worker {
                index,
                message: "no stdin".into(),
            })?;
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stdout);
                loop {
                    let msg = match read_line(&mut reader).await {
                        Ok(Some(line)) => serde_json::from_slice::<WorkerMsg>(&line)
                            .unwrap_or_else(|e| WorkerMsg::Failed(format!("bad output: {e}"))),
                        Ok(None) => break,
                        Err(e) => WorkerMsg::Failed(format!("reading its output: {e}")),
                    };
                    let last = !matches!(msg, WorkerMsg::Tick(_));
                    if tx.send((index, msg)).await.is_err() || last {
                        break;
                    }
                }
            });
            children.push(child);
            stdins.push(stdin);
        }
        Ok(Self {
            children,
            stdins,
            rx,
            _plan: file,
        })
    }

    /// Tells every worker to stop (closes their stdin).
    pub fn stop(&mut self) {
        self.stdins.clear();
    }

    /// Waits for every worker process to exit.
    pub async fn wait(mut self) {
        self.stdins.clear();
        for c in &mut self.children {
            let _ = c.wait().await;
        }
    }
}

/// One `\n`-terminated line, at most [`MAX_LINE`] bytes; `None` at the end.
async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let n = (&mut *r)
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if line.len() > MAX_LINE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "line too long",
        ));
    }
    Ok(Some(line))
}

/// The worker side: runs shard `index` of `count` of the plan in `plan_path`
/// and reports on stdout until done or until stdin closes.
pub async fn worker_main(plan_path: &Path, index: usize, count: usize) -> Result<(), Error> {
    let text = std::fs::read(plan_path)
        .map_err(|e| Error::io(format!("reading {}", plan_path.display()), e))?;
    let plan: Plan = serde_json::from_slice(&text)
        .map_err(|e| Error::Report(format!("{}: {e}", PathBuf::from(plan_path).display())))?;
    let interval = plan.scenario.measure.interval.0;
    let stats = Arc::new(Stats::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    // Stdin closing (the parent says stop, or died) stops the shard.
    tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut sink).await;
        let _ = stop_tx.send(true);
    });
    let (out_tx, mut out_rx) = mpsc::channel::<WorkerMsg>(64);
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(msg) = out_rx.recv().await {
            let Ok(mut line) = serde_json::to_vec(&msg) else {
                continue;
            };
            line.push(b'\n');
            if stdout.write_all(&line).await.is_err() || stdout.flush().await.is_err() {
                break;
            }
        }
    });
    let ticker = {
        let (stats, out_tx) = (stats.clone(), out_tx.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(interval);
            every.tick().await;
            loop {
                every.tick().await;
                if out_tx.send(WorkerMsg::Tick(stats.tick())).await.is_err() {
                    break;
                }
            }
        })
    };
    let result = run_shard(&plan, Shard { index, count }, stats.clone(), stop_rx).await;
    ticker.abort();
    let _ = out_tx.send(WorkerMsg::Tick(stats.tick())).await;
    let last = match result {
        Ok(tallies) => WorkerMsg::Done(tallies),
        Err(e) => WorkerMsg::Failed(e.to_string()),
    };
    let _ = out_tx.send(last).await;
    drop(out_tx);
    let _ = tokio::time::timeout(Duration::from_secs(30), writer).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_bounded_and_split() {
        let mut r = BufReader::new(&b"{\"a\":1}\nlast"[..]);
        assert_eq!(read_line(&mut r).await.unwrap().unwrap(), b"{\"a\":1}\n");
        assert_eq!(read_line(&mut r).await.unwrap().unwrap(), b"last");
        assert!(read_line(&mut r).await.unwrap().is_none());
    }

    #[test]
    fn messages_round_trip() {
        let m = WorkerMsg::Done(vec![DeviceTally {
            device: "d".into(),
            sent: 3,
            acked: 2,
            min_ts: 1,
            max_ts: 9,
            unacked: Default::default(),
        }]);
        let back: WorkerMsg = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert!(matches!(back, WorkerMsg::Done(t) if t[0].acked == 2));
    }
}
