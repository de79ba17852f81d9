//! End-to-end latency: from the moment a point is sent until it comes out of
//! Tributary's `Subscribe` stream, for a sample of devices.
//!
//! A point's timestamp is the wall-clock time at which its message was
//! built, right before it was written to the network, and the generator runs
//! on the same clock as the subscriber, so the latency of a point is the time
//! it arrives minus its timestamp.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tributary_proto::v1 as pb;

use crate::provision::Query;
use crate::stats::Stats;

/// Subscribers running for a run; dropping it stops nothing by itself, stop
/// them through the watch given to [`follow`].
#[derive(Debug)]
pub struct Followers {
    tasks: JoinSet<()>,
    settled: mpsc::Receiver<()>,
    count: usize,
}

impl Followers {
    /// Waits until every subscriber has either opened its stream or learned
    /// that its device does not exist yet (line protocol creates devices on
    /// first write), or until `limit`.
    pub async fn wait_settled(&mut self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        for _ in 0..self.count {
            if tokio::time::timeout_at(deadline, self.settled.recv())
                .await
                .ok()
                .flatten()
                .is_none()
            {
                return;
            }
        }
    }

    /// Waits for every subscriber to end (after the stop signal).
    pub async fn join(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Follows `metric` of each of `devices` until `stop`, recording latencies
/// and server-side drops into `stats`.
pub fn follow(
    query: Query,
    devices: Vec<String>,
    metric: String,
    stats: Arc<Stats>,
    stop: watch::Receiver<bool>,
) -> Followers {
    let (tx, settled) = mpsc::channel(devices.len().max(1));
    let mut tasks = JoinSet::new();
    let count = devices.len();
    for device in devices {
        let (q, metric, stats, stop, tx) = (
            query.clone(),
            metric.clone(),
            stats.clone(),
            stop.clone(),
            tx.clone(),
        );
        tasks.spawn(follow_one(q, device, metric, stats, stop, tx));
    }
    Followers {
        tasks,
        settled,
        count,
    }
}

async fn follow_one(
    mut q: Query,
    device: String,
    metric: String,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
    settled: mpsc::Sender<()>,
) {
    let mut told = false;
    let tell = |told: &mut bool| {
        if !*told {
            *told = true;
            let _ = settled.try_send(());
        }
    };
    while !*stop.borrow() {
        let req = pb::SubscribeRequest {
            target: Some(pb::Target {
                devices: Some(pb::target::Devices::Device(device.clone())),
                ..Default::default()
            }),
            metrics: vec![metric.clone()],
        };
        let opened = tokio::select! {
            r = q.subscribe(req) => r,
            _ = stop.changed() => return,
        };
        let retry_in = match opened {
            Ok(resp) => {
                tell(&mut told);
                let mut stream = resp.into_inner();
                loop {
                    let msg = tokio::select! {
                        m = stream.message() => m,
                        _ = stop.changed() => return,
                    };
                    match msg {
                        Ok(Some(m)) => {
                            let now = tributary_core::time::now_ns();
                            for p in &m.points {
                                if let Ok(ns) = u64::try_from(now.saturating_sub(p.ts_ns)) {
                                    stats.e2e(Duration::from_nanos(ns));
                                }
                            }
                            stats.e2e_dropped(m.dropped);
                        }
                        Ok(None) => break,
                        Err(s) => {
                            stats.error(&format!("e2e stream: {:?}", s.code()));
                            break;
                        }
                    }
                }
                Duration::from_millis(200)
            }
            Err(s) if s.code() == tonic::Code::NotFound => {
                // Not created yet: line protocol creates it on first write.
                tell(&mut told);
                Duration::from_millis(200)
            }
            Err(s) => {
                tell(&mut told);
                stats.error(&format!("e2e subscribe: {:?}", s.code()));
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(retry_in) => {}
            _ = stop.changed() => return,
        }
    }
}

/// `k` devices spread evenly over `all`.
pub fn sample(all: &[String], k: usize) -> Vec<String> {
    let n = all.len();
    let k = k.min(n);
    (0..k).map(|i| all[i * n / k].clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_spread_over_the_fleet() {
        let all: Vec<String> = (0..10).map(|i| format!("d{i}")).collect();
        assert_eq!(sample(&all, 3), ["d0", "d3", "d6"]);
        assert_eq!(sample(&all, 20).len(), 10);
        assert!(sample(&all, 0).is_empty());
    }
}
