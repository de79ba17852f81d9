//! The query side: [`RoutedCommandSink`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tributary_core::commands::{Command, CommandError, CommandOutcome, CommandSink};
use tributary_core::directory::PresenceLookup;
use tributary_core::model::ValidationError;
use tributary_log::{Consumer, ConsumerOptions, Log, LogError, LogRecord, StartFrom};
use tributary_proto::v1::command_route_record::Body;

use super::wire::{self, Route};
use super::{MIN_BACKOFF, POLL_RECORDS, POLL_WAIT, RouterConfig, check_id, next_backoff};
use crate::error::CommandServiceError;
use crate::metrics::{RoutedOutcome, RoutingMetrics};

/// What the tail consumer hands a waiting command.
#[derive(Debug)]
enum Answer {
    /// The addressed frontend took the command.
    Accepted,
    /// What became of it.
    Done(Result<CommandOutcome, CommandError>),
}

/// The commands waiting for answers, and whether the tail consumer reads.
#[derive(Debug, Default)]
struct Pending {
    /// False while the tail consumer is being reopened: answers may be lost,
    /// so no command may wait.
    up: bool,
    waiters: HashMap<String, mpsc::Sender<Answer>>,
}

#[derive(Debug)]
struct Shared {
    replica_id: String,
    max_pending: usize,
    pending: Mutex<Pending>,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        // The map stays consistent even if a holder panicked.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a waiter for `request_id`; it is removed when the returned
    /// guard drops (answered, timed out, or the caller went away).
    fn register(
        self: &Arc<Self>,
        request_id: &str,
    ) -> Result<(mpsc::Receiver<Answer>, Waiter), CommandError> {
        let mut pending = self.pending();
        if !pending.up {
            return Err(CommandError::Unavailable(
                "the commands log consumer is reconnecting".into(),
            ));
        }
        if pending.waiters.len() >= self.max_pending {
            return Err(CommandError::Overloaded);
        }
        // An acceptance and a result; duplicates beyond that are dropped.
        let (tx, rx) = mpsc::channel(2);
        pending.waiters.insert(request_id.to_owned(), tx);
        Ok((
            rx,
            Waiter {
                shared: Arc::clone(self),
                request_id: request_id.to_owned(),
            },
        ))
    }

    /// Hands an answer to its waiter, if this replica has one.
    fn deliver(&self, record: &LogRecord) {
        let decoded = match wire::decode(&record.value) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(partition = record.partition, offset = record.offset, error = %e,
                    "skipping an unreadable record of the commands log");
                return;
            }
        };
        if decoded.reply_to != self.replica_id {
            return;
        }
        let answer = match decoded.body {
            Some(Body::Accepted(_)) => Answer::Accepted,
            Some(Body::Result(result)) => match wire::outcome(result) {
                Ok(outcome) => Answer::Done(outcome),
                Err(e) => {
                    tracing::warn!(request_id = decoded.request_id, frontend = decoded.frontend,
                        error = %e, "unreadable command result");
                    Answer::Done(Err(CommandError::Unavailable(format!(
                        "frontend {:?} sent an unreadable result: {e}",
                        decoded.frontend
                    ))))
                }
            },
            Some(Body::Request(_)) | None => return,
        };
        if let Some(tx) = self.pending().waiters.get(&decoded.request_id) {
            // Full only with duplicates of answers already queued.
            let _ = tx.try_send(answer);
        }
    }

    /// Marks the tail consumer down and fails every waiting command: their
    /// answers may be lost.
    fn down(&self) {
        let mut pending = self.pending();
        pending.up = false;
        // Dropping the senders ends the waits with `Unavailable`.
        pending.waiters.clear();
    }

    fn up(&self) {
        self.pending().up = true;
    }
}

/// Removes a waiter when dropped.
#[derive(Debug)]
struct Waiter {
    shared: Arc<Shared>,
    request_id: String,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.shared.pending().waiters.remove(&self.request_id);
    }
}

/// Aborts the tail task when the sink drops.
#[derive(Debug)]
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a routed command ended, for metrics.
#[derive(Debug, Clone, Copy)]
enum Ending {
    NoPresence,
    NotAccepted,
    Answered,
}

/// The query side's [`CommandSink`] in distributed mode: sends each command
/// to the frontend replica that presence names, through the commands log,
/// and waits for its answer. See the [module docs](super).
///
/// Dropping it stops its tail consumer.
#[derive(Debug)]
pub struct RoutedCommandSink {
    shared: Arc<Shared>,
    log: Arc<dyn Log>,
    presence: Arc<dyn PresenceLookup>,
    config: RouterConfig,
    metrics: RoutingMetrics,
    _tail: AbortOnDrop,
}

impl RoutedCommandSink {
    /// Opens the tail consumer of `log` (the commands topic, from its latest
    /// offset) and starts reading the answers meant for `replica_id`, which
    /// must be unique among query replicas (a pod name). Call it within a
    /// Tokio runtime.
    pub async fn open(
        log: Arc<dyn Log>,
        presence: Arc<dyn PresenceLookup>,
        replica_id: impl Into<String>,
        config: RouterConfig,
    ) -> Result<Self, CommandServiceError> {
        let replica_id = replica_id.into();
        check_id("replica_id", &replica_id)?;
        config.validate()?;
        let consumer = log.consumer(tail_options()).await?;
        let shared = Arc::new(Shared {
            replica_id,
            max_pending: config.max_pending,
            pending: Mutex::new(Pending {
                up: true,
                waiters: HashMap::new(),
            }),
        });
        let tail = tokio::spawn(tail(Arc::clone(&shared), Arc::clone(&log), consumer));
        Ok(Self {
            shared,
            log,
            presence,
            config,
            metrics: RoutingMetrics::default(),
            _tail: AbortOnDrop(tail.abort_handle()),
        })
    }

    /// Reports routed commands to `metrics` (see
    /// [`RoutingMetrics::register`]).
    pub fn with_metrics(mut self, metrics: RoutingMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The id answers are addressed to.
    pub fn replica_id(&self) -> &str {
        &self.shared.replica_id
    }

    async fn route(&self, command: Command) -> (Result<CommandOutcome, CommandError>, Ending) {
        let presence = match self
            .presence
            .presence(&command.tenant, &command.device)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                return (
                    Err(CommandError::Unavailable(format!("presence lookup: {e}"))),
                    Ending::Answered,
                );
            }
        };
        let Some(frontend) = presence.map(|p| p.frontend).filter(|f| !f.is_empty()) else {
            return (Ok(CommandOutcome::Offline), Ending::NoPresence);
        };
        match self.send_to(frontend, command).await {
            Ok(Some(answer)) => (answer, Ending::Answered),
            Ok(None) => (Ok(CommandOutcome::Offline), Ending::NotAccepted),
            Err(e) => (Err(e), Ending::Answered),
        }
    }

    /// Appends the request for `frontend` and waits for its answer; `None`
    /// when the frontend did not accept it in time.
    async fn send_to(
        &self,
        frontend: String,
        command: Command,
    ) -> Result<Option<Result<CommandOutcome, CommandError>>, CommandError> {
        wire::check_timeout(command.timeout)?;
        let route = Route {
            request_id: wire::request_id(),
            frontend,
            reply_to: self.shared.replica_id.clone(),
        };
        let record = wire::to_record(
            wire::key(&command.tenant, &command.device),
            &wire::request(&route, &command),
        );
        let size = wire::record_size(&record);
        if size > self.config.max_record_bytes {
            return Err(too_large(size, self.config.max_record_bytes));
        }
        // Registered before the append, so no answer can beat its waiter.
        let (mut answers, _waiter) = self.shared.register(&route.request_id)?;
        self.log.append(record).await.map_err(|e| match e {
            LogError::RecordTooLarge { size, limit } => too_large(size, limit),
            e => CommandError::Unavailable(format!("commands log: {e}")),
        })?;
        tracing::debug!(
            request_id = route.request_id,
            frontend = route.frontend,
            tenant = command.tenant,
            device = command.device,
            "command routed"
        );

        let routing = self.config.routing_timeout().min(command.timeout);
        match tokio::time::timeout(routing, answers.recv()).await {
            Err(_elapsed) => {
                tracing::info!(
                    request_id = route.request_id,
                    frontend = route.frontend,
                    "no frontend accepted the command; the device is offline"
                );
                return Ok(None);
            }
            Ok(None) => return Err(tail_lost()),
            Ok(Some(Answer::Done(answer))) => return Ok(Some(answer)),
            Ok(Some(Answer::Accepted)) => {}
        }
        let wait = command.timeout.saturating_add(self.config.result_grace());
        let done = tokio::time::timeout(wait, async {
            loop {
                match answers.recv().await {
                    None => return Err(tail_lost()),
                    Some(Answer::Done(answer)) => return Ok(answer),
                    Some(Answer::Accepted) => {}
                }
            }
        })
        .await;
        match done {
            Ok(answer) => answer.map(Some),
            Err(_elapsed) => {
                tracing::info!(
                    request_id = route.request_id,
                    frontend = route.frontend,
                    "accepted command got no result in time"
                );
                Ok(Some(Ok(CommandOutcome::Timeout)))
            }
        }
    }
}

fn too_large(size: usize, limit: usize) -> CommandError {
    CommandError::Invalid(ValidationError::new(
        "payload",
        format!("the command is {size} bytes on the commands log; at most {limit}"),
    ))
}

fn tail_lost() -> CommandError {
    CommandError::Unavailable("the commands log consumer failed; the answer may be lost".into())
}

#[async_trait]
impl CommandSink for RoutedCommandSink {
    async fn send_command(&self, command: Command) -> Result<CommandOutcome, CommandError> {
        let started = Instant::now();
        let (result, ending) = self.route(command).await;
        let outcome = match (&result, ending) {
            (_, Ending::NoPresence) => RoutedOutcome::NoPresence,
            (_, Ending::NotAccepted) => RoutedOutcome::NotAccepted,
            (Ok(CommandOutcome::Replied(_)), _) => RoutedOutcome::Replied,
            (Ok(CommandOutcome::Timeout), _) => RoutedOutcome::Timeout,
            (Ok(CommandOutcome::Offline), _) => RoutedOutcome::Offline,
            (Ok(CommandOutcome::NotSubscribed), _) => RoutedOutcome::NotSubscribed,
            (Ok(CommandOutcome::Queued { .. }), _) => RoutedOutcome::Queued,
            (Err(CommandError::Invalid(_)), _) => RoutedOutcome::Invalid,
            (Err(CommandError::Overloaded), _) => RoutedOutcome::Overloaded,
            (Err(CommandError::Unavailable(_)), _) => RoutedOutcome::Unavailable,
        };
        self.metrics.routed(outcome, started.elapsed());
        result
    }
}

fn tail_options() -> ConsumerOptions {
    ConsumerOptions {
        group: None,
        start: StartFrom::Latest,
    }
}

/// Reads the commands log for answers to this replica, reopening the
/// consumer with backoff when it fails.
async fn tail(shared: Arc<Shared>, log: Arc<dyn Log>, mut consumer: Box<dyn Consumer>) {
    loop {
        match consumer.poll(POLL_RECORDS, POLL_WAIT).await {
            Ok(records) => records.iter().for_each(|r| shared.deliver(r)),
            Err(e) => {
                tracing::warn!(error = %e, "commands log consumer failed; reopening it");
                shared.down();
                consumer = reopen(&*log).await;
                shared.up();
            }
        }
    }
}

/// Opens a tail consumer, retrying with backoff until it works.
async fn reopen(log: &dyn Log) -> Box<dyn Consumer> {
    let mut backoff = MIN_BACKOFF;
    loop {
        tokio::time::sleep(backoff).await;
        match log.consumer(tail_options()).await {
            Ok(consumer) => {
                tracing::info!("commands log consumer reopened");
                return consumer;
            }
            Err(e) => {
                backoff = next_backoff(backoff);
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                    "cannot reopen the commands log consumer");
            }
        }
    }
}
