//! Concurrent directory calls coalesced into batch calls.
//!
//! When a fleet reconnects at once, a frontend whose registry is remote
//! would otherwise make one `AuthenticateToken` and one `ReportPresence`
//! round trip per device. A [`Batcher`] queues what its callers ask and
//! sends everything queued (up to `max_batch`) as one call, with at most
//! `in_flight` batch calls under way: a lone call goes out at once, alone,
//! and under a storm each round trip carries the calls that queued while
//! the previous ones were answered.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tributary_core::directory::DirectoryError;

/// Calls that may wait for a batch; more make their callers wait.
const QUEUE: usize = 16_384;

/// One batch call: the answers, one per request and in order, or the error
/// of the whole call.
pub(crate) type BatchFuture<Resp> =
    Pin<Box<dyn Future<Output = Result<Vec<Result<Resp, DirectoryError>>, DirectoryError>> + Send>>;

type Call<Req, Resp> = Arc<dyn Fn(Vec<Req>) -> BatchFuture<Resp> + Send + Sync>;

struct Item<Req, Resp> {
    request: Req,
    done: oneshot::Sender<Result<Resp, DirectoryError>>,
}

/// Batch calls made so far, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Batch calls sent.
    pub batches: u64,
    /// Requests they carried.
    pub requests: u64,
}

/// Coalesces concurrent requests into batch calls. The task that sends
/// them starts on first use, on the caller's runtime, and again if that
/// runtime ended.
pub(crate) struct Batcher<Req, Resp> {
    queue: Mutex<Option<mpsc::Sender<Item<Req, Resp>>>>,
    call: Call<Req, Resp>,
    max_batch: usize,
    in_flight: usize,
    timeout: Duration,
    stats: Arc<Mutex<BatchStats>>,
}

impl<Req, Resp> std::fmt::Debug for Batcher<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("max_batch", &self.max_batch)
            .field("in_flight", &self.in_flight)
            .field("stats", &*lock(&self.stats))
            .finish_non_exhaustive()
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Batcher<Req, Resp> {
    /// Batches of at most `max_batch` requests, `in_flight` batch calls at
    /// once; a request not answered within `timeout` (queueing included)
    /// is [`DirectoryError::Unavailable`].
    pub(crate) fn new(
        max_batch: usize,
        in_flight: usize,
        timeout: Duration,
        call: impl Fn(Vec<Req>) -> BatchFuture<Resp> + Send + Sync + 'static,
    ) -> Self {
        Self {
            queue: Mutex::new(None),
            call: Arc::new(call),
            max_batch: max_batch.max(1),
            in_flight: in_flight.max(1),
            timeout,
            stats: Arc::default(),
        }
    }

    /// Sends `request` in the next batch and waits for its answer.
    pub(crate) async fn submit(&self, request: Req) -> Result<Resp, DirectoryError> {
        let (done, answer) = oneshot::channel();
        let mut item = Item { request, done };
        let timeout = self.timeout;
        let answered = tokio::time::timeout(timeout, async {
            // A second try only if the task ended with the runtime it was
            // started on (a directory that outlives one, as in tests).
            for _ in 0..2 {
                match self.sender().send(item).await {
                    Ok(()) => return answer.await.unwrap_or_else(|_| Err(stopped())),
                    Err(mpsc::error::SendError(back)) => {
                        item = back;
                        lock(&self.queue).take();
                    }
                }
            }
            Err(stopped())
        })
        .await;
        answered.unwrap_or_else(|_| {
            Err(DirectoryError::Unavailable(format!(
                "the registry did not answer within {timeout:?}"
            )))
        })
    }

    /// Batch calls made so far.
    pub(crate) fn stats(&self) -> BatchStats {
        *lock(&self.stats)
    }

    fn sender(&self) -> mpsc::Sender<Item<Req, Resp>> {
        let mut queue = lock(&self.queue);
        if let Some(tx) = queue.as_ref().filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(send_batches(
            rx,
            self.call.clone(),
            self.max_batch,
            self.in_flight,
            self.stats.clone(),
        ));
        *queue = Some(tx.clone());
        tx
    }
}

/// Takes everything queued (up to `max_batch`) once a batch slot is free,
/// and sends it as one call, until the queue closes.
async fn send_batches<Req: Send + 'static, Resp: Send + 'static>(
    mut queue: mpsc::Receiver<Item<Req, Resp>>,
    call: Call<Req, Resp>,
    max_batch: usize,
    in_flight: usize,
    stats: Arc<Mutex<BatchStats>>,
) {
    let slots = Arc::new(Semaphore::new(in_flight));
    let mut items = Vec::with_capacity(max_batch);
    // The slot first: what queues while every slot is busy joins the next
    // batch.
    while let Ok(slot) = slots.clone().acquire_owned().await {
        if queue.recv_many(&mut items, max_batch).await == 0 {
            return;
        }
        {
            let mut stats = lock(&stats);
            stats.batches += 1;
            stats.requests += items.len() as u64;
        }
        let (requests, answers): (Vec<Req>, Vec<_>) = std::mem::take(&mut items)
            .into_iter()
            .map(|i| (i.request, i.done))
            .unzip();
        let batch = call(requests);
        tokio::spawn(async move {
            let _slot = slot;
            let n = answers.len();
            match batch.await {
                Ok(results) if results.len() == n => {
                    for (answer, result) in answers.into_iter().zip(results) {
                        let _ = answer.send(result);
                    }
                }
                Ok(results) => {
                    tracing::error!(
                        asked = n,
                        answered = results.len(),
                        "malformed directory answer: a batch answered with another count"
                    );
                    let e = DirectoryError::Unavailable(format!(
                        "malformed directory answer: {} results for {n} requests",
                        results.len()
                    ));
                    for answer in answers {
                        let _ = answer.send(Err(e.clone()));
                    }
                }
                Err(e) => {
                    for answer in answers {
                        let _ = answer.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

fn stopped() -> DirectoryError {
    DirectoryError::Unavailable("the directory's batch sender stopped".into())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A batch call that doubles each number after `delay`, refuses 13, and
    /// records the size of every batch.
    fn doubler(
        delay: Duration,
        sizes: Arc<Mutex<Vec<usize>>>,
    ) -> impl Fn(Vec<u32>) -> BatchFuture<u32> + Send + Sync + 'static {
        move |batch: Vec<u32>| {
            let sizes = sizes.clone();
            Box::pin(async move {
                sizes.lock().unwrap().push(batch.len());
                tokio::time::sleep(delay).await;
                Ok(batch
                    .into_iter()
                    .map(|n| {
                        if n == 13 {
                            Err(DirectoryError::Unauthenticated)
                        } else {
                            Ok(n * 2)
                        }
                    })
                    .collect())
            })
        }
    }

    #[tokio::test]
    async fn a_lone_request_goes_at_once_and_a_crowd_goes_in_few_batches() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let b = Arc::new(Batcher::new(
            64,
            2,
            Duration::from_secs(5),
            doubler(Duration::from_millis(20), sizes.clone()),
        ));
        assert_eq!(b.submit(4).await, Ok(8));
        assert_eq!(*sizes.lock().unwrap(), vec![1]);

        let answers = futures::future::join_all((0..500u32).map(|n| {
            let b = b.clone();
            async move { (n, b.submit(n).await) }
        }))
        .await;
        for (n, answer) in answers {
            if n == 13 {
                assert_eq!(
                    answer,
                    Err(DirectoryError::Unauthenticated),
                    "only its own error"
                );
            } else {
                assert_eq!(answer, Ok(n * 2));
            }
        }
        let sizes = sizes.lock().unwrap().clone();
        assert!(sizes.iter().all(|&s| s <= 64), "{sizes:?}");
        assert!(sizes.len() < 20, "500 requests in {} batches", sizes.len());
        let stats = b.stats();
        assert_eq!(stats.requests, 501);
        assert_eq!(stats.batches, sizes.len() as u64);
    }

    #[tokio::test]
    async fn a_failed_or_malformed_batch_fails_each_of_its_requests() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let b = Batcher::new(8, 1, Duration::from_secs(5), move |batch: Vec<u32>| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if n == 0 {
                    Err(DirectoryError::Unavailable("down".into()))
                } else {
                    // One answer short.
                    Ok(batch.iter().skip(1).map(|_| Ok(0u32)).collect())
                }
            })
        });
        assert_eq!(
            b.submit(1).await,
            Err(DirectoryError::Unavailable("down".into()))
        );
        assert!(
            matches!(b.submit(1).await, Err(DirectoryError::Unavailable(m)) if m.contains("malformed"))
        );
    }

    #[tokio::test]
    async fn a_silent_directory_times_out() {
        let b = Batcher::new(8, 1, Duration::from_millis(50), |_batch: Vec<u32>| {
            Box::pin(std::future::pending()) as BatchFuture<u32>
        });
        assert!(
            matches!(b.submit(1).await, Err(DirectoryError::Unavailable(m)) if m.contains("within"))
        );
    }
}
