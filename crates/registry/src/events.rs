//! Registry events across processes: [`publish_events`] forwards the
//! registry's in-process events to the log topic
//! `tributary.device-events.v1` ([`DEVICE_EVENTS_TOPIC`]), and
//! [`tail_events`] reads them back in another process, as the event channel
//! a [`crate::RemoteDirectory`] is invalidated by.
//!
//! Records are keyed by [`RegistryEvent::key`] (`<tenant>/<device>` or
//! `<tenant>`) and encoded with [`RegistryEvent::encode`] (protobuf
//! `tributary.v1.RegistryEvent`).
//!
//! **Lost events become a resync.** Wherever events may have been lost the
//! carrier says so with [`RegistryEvent::Resync`], on which caches drop
//! everything (a cache that lags behind its own channel does the same):
//!
//! * the publisher fell behind the registry's bounded channel, or a record
//!   could not be appended for a permanent reason: it appends a `Resync`;
//! * the tail (re)opened its consumer: changes made while no consumer was
//!   open were not seen, so it announces a `Resync` locally, first thing
//!   after every open;
//! * the tail read an event of a kind it does not know (a newer publisher):
//!   it announces a `Resync` in its place. Records that do not decode at all
//!   are logged and skipped.
//!
//! Not covered: an event the registry published and its process died
//! before appending. The caches' TTL bounds how long that change goes unseen.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tributary_core::events::EventDecodeError;
pub use tributary_core::events::{DEVICE_EVENTS_TOPIC, RegistryEvent};
use tributary_core::time::now_ns;
use tributary_log::{ConsumerOptions, Log, LogError, Record, StartFrom};

use crate::service::Registry;

/// Most events appended in one batch.
const MAX_BATCH: usize = 256;
/// Most records one poll of the tail returns.
const MAX_POLL_RECORDS: usize = 256;
/// How long one poll of the tail waits; also how soon the tail notices that
/// nobody listens any more.
const POLL_TIMEOUT: Duration = Duration::from_millis(500);
/// Events the tail keeps for slow receivers; one further behind lags and
/// clears its cache.
const TAIL_CAPACITY: usize = 4096;

/// Exponential backoff between retries: 100 ms doubling to 5 s.
#[derive(Debug)]
struct Backoff(Duration);

impl Backoff {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    fn new() -> Self {
        Self(Self::MIN)
    }

    fn next(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(Self::MAX);
        wait
    }

    fn reset(&mut self) {
        self.0 = Self::MIN;
    }
}

/// Whether an append may succeed if retried.
fn transient(e: &LogError) -> bool {
    matches!(
        e,
        LogError::Backpressure | LogError::Io(_) | LogError::Backend(_)
    )
}

fn record(event: &RegistryEvent) -> Record {
    Record {
        key: Bytes::from(event.key()),
        value: Bytes::from(event.encode()),
        headers: Vec::new(),
        timestamp_ms: now_ns() / 1_000_000,
    }
}

/// Forwards every event of `registry` to `log` (the
/// [`DEVICE_EVENTS_TOPIC`] topic) until `stop` completes.
///
/// Batches what has accumulated (up to 256 events per append), keeps order,
/// and retries transient append failures (backpressure, I/O, broker errors)
/// with backoff, forever: events that arrive meanwhile wait in the
/// registry's bounded channel. Falling behind it is logged and announced
/// with a [`RegistryEvent::Resync`]; so is a batch refused for a permanent
/// reason. Returns when `stop` completes or the log is closed (logged as an
/// error: caches elsewhere then only have their TTL).
pub async fn publish_events(
    registry: Arc<Registry>,
    log: Arc<dyn Log>,
    stop: impl Future<Output = ()>,
) {
    let mut events = registry.events();
    tokio::pin!(stop);
    let mut pending: Vec<RegistryEvent> = Vec::new();
    let mut backoff = Backoff::new();
    loop {
        if pending.is_empty() {
            let item = tokio::select! {
                biased;
                () = &mut stop => return,
                item = events.recv() => item,
            };
            match item {
                Ok(event) => pending.push(event),
                Err(RecvError::Lagged(missed)) => lagged(&mut pending, missed),
                Err(RecvError::Closed) => return,
            }
        }
        while pending.len() < MAX_BATCH {
            match events.try_recv() {
                Ok(event) => pending.push(event),
                Err(TryRecvError::Lagged(missed)) => lagged(&mut pending, missed),
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        let records = pending.iter().map(record).collect();
        let appended = tokio::select! {
            biased;
            () = &mut stop => return,
            appended = log.append_batch(records) => appended,
        };
        match appended {
            Ok(_) => {
                pending.clear();
                backoff.reset();
                continue;
            }
            Err(LogError::Closed) => {
                tracing::error!(
                    topic = log.topic(),
                    "the device-events log is closed; registry events are no longer published"
                );
                return;
            }
            Err(e) if transient(&e) => {
                tracing::warn!(
                    error = %e,
                    events = pending.len(),
                    "cannot publish registry events yet; retrying"
                );
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    events = pending.len(),
                    "registry events refused by the log; announcing a resync instead"
                );
                pending.clear();
                pending.push(RegistryEvent::Resync);
            }
        }
        tokio::select! {
            biased;
            () = &mut stop => return,
            () = tokio::time::sleep(backoff.next()) => {}
        }
    }
}

/// Notes that the publisher missed `missed` events of the registry.
fn lagged(pending: &mut Vec<RegistryEvent>, missed: u64) {
    tracing::warn!(
        missed,
        "registry event publisher fell behind; announcing a resync"
    );
    if pending.last() != Some(&RegistryEvent::Resync) {
        pending.push(RegistryEvent::Resync);
    }
}

/// Reads registry events from `log` (the [`DEVICE_EVENTS_TOPIC`] topic) and
/// re-broadcasts them: the channel to give a [`crate::RemoteDirectory`].
/// More receivers come from [`broadcast::Receiver::resubscribe`].
///
/// A background task reads with a consumer of no group from the latest
/// offset, so only events appended after it opened are seen; right after it
/// opens (at start and after every reconnection) it sends a
/// [`RegistryEvent::Resync`], so that whatever a cache read before then is
/// dropped. If reading fails it reconnects with backoff. Records that do not
/// decode are logged and skipped; well-formed events of an unknown kind
/// become a `Resync`. The task ends once every receiver is dropped.
///
/// # Panics
///
/// When called outside a Tokio runtime (it spawns a task).
pub fn tail_events(log: Arc<dyn Log>) -> broadcast::Receiver<RegistryEvent> {
    let (sender, receiver) = broadcast::channel(TAIL_CAPACITY);
    tokio::spawn(tail(log, sender));
    receiver
}

async fn tail(log: Arc<dyn Log>, sender: broadcast::Sender<RegistryEvent>) {
    let mut backoff = Backoff::new();
    let opts = ConsumerOptions {
        group: None,
        start: StartFrom::Latest,
    };
    while sender.receiver_count() > 0 {
        let mut consumer = match log.consumer(opts.clone()).await {
            Ok(consumer) => consumer,
            Err(e) => {
                tracing::warn!(error = %e, topic = log.topic(), "cannot read registry events; retrying");
                tokio::time::sleep(backoff.next()).await;
                continue;
            }
        };
        // Changes made while no consumer was open went unseen.
        let _ = sender.send(RegistryEvent::Resync);
        while sender.receiver_count() > 0 {
            let records = match consumer.poll(MAX_POLL_RECORDS, POLL_TIMEOUT).await {
                Ok(records) => records,
                Err(e) => {
                    tracing::warn!(error = %e, topic = log.topic(), "reading registry events failed; reconnecting");
                    break;
                }
            };
            backoff.reset();
            for r in records {
                let event = match RegistryEvent::decode(&r.value) {
                    Ok(event) => event,
                    Err(EventDecodeError::UnknownKind) => {
                        tracing::warn!(
                            partition = r.partition,
                            offset = r.offset,
                            "registry event of an unknown kind; resyncing"
                        );
                        RegistryEvent::Resync
                    }
                    Err(e) => {
                        tracing::warn!(
                            error = %e,
                            partition = r.partition,
                            offset = r.offset,
                            "skipping an undecodable registry event"
                        );
                        continue;
                    }
                };
                // An error only means nobody listens any more.
                let _ = sender.send(event);
            }
        }
        drop(consumer);
        if sender.receiver_count() > 0 {
            tokio::time::sleep(backoff.next()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_ceiling_and_resets() {
        let mut b = Backoff::new();
        let waits: Vec<Duration> = (0..8).map(|_| b.next()).collect();
        assert_eq!(waits[0], Backoff::MIN);
        assert_eq!(waits[1], Backoff::MIN * 2);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*waits.last().expect("waits"), Backoff::MAX);
        b.reset();
        assert_eq!(b.next(), Backoff::MIN);
    }

    #[test]
    fn only_retryable_append_failures_are_retried() {
        assert!(transient(&LogError::Backpressure));
        assert!(transient(&LogError::Backend("broker down".into())));
        assert!(!transient(&LogError::RecordTooLarge { size: 2, limit: 1 }));
        assert!(!transient(&LogError::Invalid("x".into())));
    }
}
