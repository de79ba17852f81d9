//! `Subscribe`: the live feed of stored points, filtered for one client.
//!
//! Each stream is a task between the [`LiveHub`](tributary_core::live::LiveHub)
//! broadcast and a bounded channel to the client. The task never blocks the
//! hub: when the client reads too slowly, the channel fills, the task waits,
//! and the broadcast drops the oldest batches for this subscriber only; the
//! number lost is reported in the `dropped` field of the next message. A
//! selector target is resolved again periodically so that devices that gain
//! the labels later appear. The task ends when the client goes away or the
//! hub closes.

use std::collections::HashSet;
use std::future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, broadcast, mpsc};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tributary_core::directory::DeviceInfo;
use tributary_core::envelope::point_to_pb;
use tributary_core::live::LiveBatch;
use tributary_core::quota::TenantSlot;
use tributary_proto::v1 as pb;

use crate::engine::Engine;
use crate::target::TargetSpec;

/// The stream handed to tonic.
pub(crate) type SubscribeStream = ReceiverStream<Result<pb::SubscribeResponse, Status>>;

/// Which points one subscriber wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Filter {
    tenant: String,
    devices: HashSet<String>,
    /// Sorted; empty means every metric.
    metrics: Vec<String>,
}

impl Filter {
    /// `metrics` must be sorted (as [`parse_metrics`](crate::target::parse_metrics) returns them).
    pub(crate) fn new(tenant: String, devices: &[DeviceInfo], metrics: Vec<String>) -> Self {
        Self {
            tenant,
            devices: devices.iter().map(|d| d.id.clone()).collect(),
            metrics,
        }
    }

    /// The wanted points of a batch, or `None` if it has none.
    fn apply(&self, batch: &LiveBatch) -> Option<Vec<pb::Point>> {
        if batch.tenant != self.tenant || !self.devices.contains(&batch.device) {
            return None;
        }
        let points: Vec<_> = batch
            .points
            .iter()
            .filter(|p| self.metrics.is_empty() || self.metrics.binary_search(&p.metric).is_ok())
            .map(point_to_pb)
            .collect();
        (!points.is_empty()).then_some(points)
    }
}

/// One subscriber's task.
#[derive(Debug)]
pub(crate) struct Subscription {
    pub(crate) engine: Engine,
    pub(crate) target: TargetSpec,
    pub(crate) filter: Filter,
    /// How often a selector is resolved again.
    pub(crate) refresh: Duration,
    /// When the token that opened the stream expires: the stream ends then
    /// with `UNAUTHENTICATED`.
    pub(crate) expires_at: Instant,
}

impl Subscription {
    /// Starts the task and returns the client's stream. `feed` must have been
    /// subscribed before the target was resolved, so that no batch stored in
    /// between is missed.
    /// `permit` is held until the task ends.
    pub(crate) fn spawn(
        self,
        feed: broadcast::Receiver<Arc<LiveBatch>>,
        buffer: usize,
        permit: Option<(OwnedSemaphorePermit, TenantSlot)>,
    ) -> SubscribeStream {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        tokio::spawn(async move {
            self.run(feed, tx).await;
            drop(permit);
        });
        ReceiverStream::new(rx)
    }

    async fn run(
        mut self,
        mut feed: broadcast::Receiver<Arc<LiveBatch>>,
        tx: mpsc::Sender<Result<pb::SubscribeResponse, Status>>,
    ) {
        let mut refresh = match self.target {
            TargetSpec::Selector(_) => {
                let mut interval =
                    tokio::time::interval_at(Instant::now() + self.refresh, self.refresh);
                interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
                Some(interval)
            }
            TargetSpec::Device(_) | TargetSpec::Devices(_) => None,
        };
        let mut dropped = 0u64;
        tracing::debug!(tenant = %self.filter.tenant, target = %self.target, "subscription started");
        loop {
            tokio::select! {
                biased;
                () = tx.closed() => break,
                () = tokio::time::sleep_until(self.expires_at) => {
                    let _ = tx
                        .send(Err(Status::unauthenticated(
                            "the token that opened this stream expired; subscribe again with a fresh one",
                        )))
                        .await;
                    break;
                }
                () = tick(&mut refresh) => self.refresh_devices().await,
                received = feed.recv() => match received {
                    Ok(batch) => {
                        let Some(points) = self.filter.apply(&batch) else { continue };
                        let message = pb::SubscribeResponse { device: batch.device.clone(), points, dropped };
                        if tx.send(Ok(message)).await.is_err() {
                            break;
                        }
                        dropped = 0;
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => dropped = dropped.saturating_add(n),
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
        tracing::debug!(tenant = %self.filter.tenant, target = %self.target, "subscription ended");
    }

    /// Resolves the selector again. On failure the previous devices stay:
    /// a registry hiccup must not end a live view.
    async fn refresh_devices(&mut self) {
        match self.engine.resolve(&self.filter.tenant, &self.target).await {
            Ok(devices) => self.filter.devices = devices.into_iter().map(|d| d.id).collect(),
            Err(e) => tracing::warn!(
                tenant = %self.filter.tenant,
                target = %self.target,
                error = %e,
                "subscription keeps its devices: could not resolve the selector again"
            ),
        }
    }
}

/// The next tick, or never without an interval.
async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio_stream::StreamExt as _;
    use tributary_core::live::LiveHub;
    use tributary_core::selector::Selector;
    use tributary_core::{Point, Value};

    use super::*;
    use crate::QueryConfig;
    use crate::testkit::{MemCatalog, MemStore};

    const REFRESH: Duration = Duration::from_secs(5);

    fn batch(tenant: &str, device: &str, metrics: &[&str]) -> LiveBatch {
        LiveBatch {
            tenant: tenant.into(),
            device: device.into(),
            points: metrics
                .iter()
                .enumerate()
                .map(|(i, m)| Point {
                    metric: m.to_string(),
                    ts_ns: i as i64,
                    value: Value::F64(1.0),
                })
                .collect(),
        }
    }

    async fn start(
        catalog: Arc<MemCatalog>,
        hub: &LiveHub,
        target: TargetSpec,
        metrics: &[&str],
        buffer: usize,
    ) -> SubscribeStream {
        let engine = Engine::new(
            Arc::new(MemStore::default()),
            catalog,
            QueryConfig::default(),
        );
        let feed = hub.subscribe();
        let devices = engine.resolve("acme", &target).await.unwrap();
        let filter = Filter::new(
            "acme".into(),
            &devices,
            metrics.iter().map(|m| m.to_string()).collect(),
        );
        Subscription {
            engine,
            target,
            filter,
            refresh: REFRESH,
            expires_at: Instant::now() + Duration::from_secs(3600),
        }
        .spawn(feed, buffer, None)
    }

    async fn next(stream: &mut SubscribeStream) -> pb::SubscribeResponse {
        tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a message within the deadline")
            .expect("the stream is open")
            .expect("not an error")
    }

    #[tokio::test]
    async fn filters_by_tenant_device_and_metric() {
        let catalog = Arc::new(MemCatalog::default());
        catalog.put("acme", "d1", &[]);
        catalog.put("acme", "d2", &[]);
        let hub = LiveHub::new(16);
        let mut stream = start(
            catalog,
            &hub,
            TargetSpec::Device("d1".into()),
            &["lat", "lon"],
            8,
        )
        .await;
        hub.publish(batch("other", "d1", &["lat"]));
        hub.publish(batch("acme", "d2", &["lat"]));
        hub.publish(batch("acme", "d1", &["temp"]));
        hub.publish(batch("acme", "d1", &["temp", "lon", "lat"]));
        let m = next(&mut stream).await;
        assert_eq!(m.device, "d1");
        assert_eq!(
            m.points
                .iter()
                .map(|p| p.metric.as_str())
                .collect::<Vec<_>>(),
            ["lon", "lat"]
        );
        assert_eq!(m.dropped, 0);
    }

    #[tokio::test]
    async fn lagging_subscribers_are_told_how_many_batches_they_lost() {
        let catalog = Arc::new(MemCatalog::default());
        catalog.put("acme", "d1", &[]);
        let hub = LiveHub::new(4);
        // A channel of one message: the task blocks on the second message
        // while the hub overruns its four-batch buffer.
        let mut stream = start(catalog, &hub, TargetSpec::Device("d1".into()), &[], 1).await;
        for _ in 0..20 {
            hub.publish(batch("acme", "d1", &["m"]));
        }
        let mut received = 0u64;
        let mut dropped = 0u64;
        while received + dropped < 20 {
            let m = next(&mut stream).await;
            received += 1;
            dropped += m.dropped;
        }
        assert!(dropped > 0, "nothing dropped");
        assert_eq!(received + dropped, 20);
    }

    #[tokio::test(start_paused = true)]
    async fn selector_subscriptions_pick_up_newly_labelled_devices() {
        let catalog = Arc::new(MemCatalog::default());
        catalog.put("acme", "a", &[("fleet", "West")]);
        catalog.put("acme", "b", &[("fleet", "East")]);
        let hub = LiveHub::new(16);
        let target = TargetSpec::Selector(Selector::parse("fleet=West").unwrap());
        let mut stream = start(catalog.clone(), &hub, target, &[], 8).await;

        hub.publish(batch("acme", "b", &["before"]));
        hub.publish(batch("acme", "a", &["a"]));
        // `a` arrives alone: `b` was filtered out before it.
        assert_eq!(next(&mut stream).await.points[0].metric, "a");

        catalog.put("acme", "b", &[("fleet", "West")]);
        tokio::time::advance(REFRESH).await;
        hub.publish(batch("acme", "b", &["after"]));
        let m = next(&mut stream).await;
        assert_eq!(
            (m.device.as_str(), m.points[0].metric.as_str()),
            ("b", "after")
        );
    }

    #[tokio::test]
    async fn the_task_ends_when_the_client_goes_away() {
        let catalog = Arc::new(MemCatalog::default());
        catalog.put("acme", "d1", &[]);
        let engine = Engine::new(
            Arc::new(MemStore::default()),
            catalog,
            QueryConfig::default(),
        );
        let (hub, feed) = broadcast::channel::<Arc<LiveBatch>>(16);
        let target = TargetSpec::Device("d1".into());
        let devices = engine.resolve("acme", &target).await.unwrap();
        let filter = Filter::new("acme".into(), &devices, Vec::new());
        let stream = Subscription {
            engine,
            target,
            filter,
            refresh: REFRESH,
            expires_at: Instant::now() + Duration::from_secs(3600),
        }
        .spawn(feed, 8, None);
        assert_eq!(hub.receiver_count(), 1);
        drop(stream);
        // The task drops its receiver of the feed when it ends.
        let deadline = Instant::now() + Duration::from_secs(10);
        while hub.receiver_count() > 0 {
            assert!(
                Instant::now() < deadline,
                "the subscription task is still running"
            );
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_ends_when_its_token_expires() {
        let catalog = Arc::new(MemCatalog::default());
        catalog.put("acme", "d1", &[]);
        let engine = Engine::new(
            Arc::new(MemStore::default()),
            catalog,
            QueryConfig::default(),
        );
        let (_hub, feed) = broadcast::channel::<Arc<LiveBatch>>(16);
        let target = TargetSpec::Device("d1".into());
        let devices = engine.resolve("acme", &target).await.unwrap();
        let filter = Filter::new("acme".into(), &devices, Vec::new());
        let mut stream = Subscription {
            engine,
            target,
            filter,
            refresh: REFRESH,
            expires_at: Instant::now() + Duration::from_secs(30),
        }
        .spawn(feed, 8, None);
        let status = stream
            .next()
            .await
            .expect("an item")
            .expect_err("an error when the token expires");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(stream.next().await.is_none(), "the stream ends");
    }
}
