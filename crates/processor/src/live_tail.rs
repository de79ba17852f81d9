//! The live feed for a query service that runs apart from the processor.
//!
//! In one process the processor publishes every batch it stores to the
//! [`LiveHub`]. A query replica of its own instead tails the telemetry log:
//! a consumer with no group, from the newest records, decoding envelopes
//! and publishing their points. Those points are durable (they are in the
//! log) and will be stored, but a subscriber may see a point a moment
//! before a range query returns it. Records that do not decode are skipped
//! here; the processor dead-letters them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tributary_core::Limits;
use tributary_core::envelope::Envelope;
use tributary_core::live::{LiveBatch, LiveHub};
use tributary_log::{ConsumerOptions, Log, StartFrom};

use crate::metrics::live_tail_events;

/// Most records taken per poll.
const MAX_POLL_RECORDS: usize = 1024;

/// Publishes every envelope appended to `log` from now on to `live`, until
/// `stop`. A failing consumer is reopened with backoff (points appended
/// meanwhile are not replayed: live streams are best effort, and say so).
pub async fn live_tail(
    log: Arc<dyn Log>,
    live: LiveHub,
    limits: Limits,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut backoff = Duration::from_millis(100);
    loop {
        let opened = tokio::select! {
            () = &mut stop => return,
            c = log.consumer(ConsumerOptions { group: None, start: StartFrom::Latest }) => c,
        };
        let mut consumer = match opened {
            Ok(c) => c,
            Err(e) => {
                live_tail_events::open_failed(&e, backoff);
                tokio::select! {
                    () = &mut stop => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        loop {
            let polled = tokio::select! {
                () = &mut stop => return,
                r = consumer.poll(MAX_POLL_RECORDS, Duration::from_millis(500)) => r,
            };
            let records = match polled {
                Ok(r) => r,
                Err(e) => {
                    live_tail_events::poll_failed(&e);
                    break;
                }
            };
            backoff = Duration::from_millis(100);
            if !live.has_subscribers() {
                continue;
            }
            for r in records {
                match Envelope::decode(&r.value, &limits) {
                    Ok(env) => live.publish(LiveBatch {
                        tenant: env.tenant,
                        device: env.device,
                        points: env.points,
                    }),
                    Err(e) => live_tail_events::skipped(&e),
                }
            }
        }
    }
}
