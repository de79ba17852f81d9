//! The frontend side: [`CommandRelay`].

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tributary_core::Limits;
use tributary_core::commands::{Command, CommandError, CommandSink};
use tributary_core::model::ValidationError;
use tributary_log::{ConsumerOptions, Log, LogError, LogRecord, Record, StartFrom};
use tributary_proto::v1::command_route_record::Body;

use super::wire::{self, Route};
use super::{MIN_BACKOFF, POLL_RECORDS, POLL_WAIT, RelayConfig, check_id, next_backoff};
use crate::error::CommandServiceError;

/// Request ids remembered to execute each request at most once. Older
/// duplicates are stale by then (requests live as long as their timeout).
const REMEMBERED_REQUESTS: usize = 16 * 1024;

/// Attempts at appending a result before it is given up.
const RESULT_ATTEMPTS: u32 = 3;

/// The frontend side of command routing: tails the commands log and
/// executes, on this frontend's own [`CommandSink`] (its MQTT server), the
/// requests addressed to its `frontend_id`, appending `Accepted` at once and
/// then the outcome. See the [module docs](super).
#[derive(Debug)]
pub struct CommandRelay {
    log: Arc<dyn Log>,
    frontend_id: String,
    local: Arc<dyn CommandSink>,
    config: RelayConfig,
    limits: Limits,
    connected: watch::Sender<bool>,
}

impl CommandRelay {
    /// A relay for the frontend `frontend_id` (the id it reports presence
    /// with), reading requests from `log` (the commands topic) and
    /// executing them on `local`, with the default [`RelayConfig`].
    pub fn new(log: Arc<dyn Log>, frontend_id: String, local: Arc<dyn CommandSink>) -> Self {
        Self {
            log,
            frontend_id,
            local,
            config: RelayConfig::default(),
            limits: Limits::default(),
            connected: watch::Sender::new(false),
        }
    }

    /// Replaces the settings, once they are validated.
    pub fn with_config(mut self, config: RelayConfig) -> Result<Self, CommandServiceError> {
        config.validate()?;
        self.config = config;
        Ok(self)
    }

    /// Device ids of requests are checked against these limits (those of
    /// the frontend, so that every device that can connect can be named).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Whether the relay is reading the commands log now: false before
    /// [`run`](Self::run) opened its consumer, while it reopens a failed
    /// one, and after it stopped. Requests appended while it is false are
    /// never executed. A readiness probe can watch it.
    pub fn connected(&self) -> watch::Receiver<bool> {
        self.connected.subscribe()
    }

    /// Relays commands until `stop` completes, then waits up to
    /// [`RelayConfig::drain_timeout_ms`] for executing commands to report.
    /// A failing consumer is reopened with backoff; the only errors are
    /// unusable settings.
    pub async fn run(self, stop: impl Future<Output = ()>) -> Result<(), CommandServiceError> {
        check_id("frontend_id", &self.frontend_id)?;
        self.config.validate()?;
        let connected = self.connected;
        let drain_timeout = self.config.drain_timeout();
        let mut relay = Relay {
            exec: Arc::new(Exec {
                log: self.log,
                frontend_id: self.frontend_id,
                local: self.local,
                max_record_bytes: self.config.max_record_bytes,
            }),
            permits: Arc::new(Semaphore::new(self.config.max_concurrent)),
            tasks: JoinSet::new(),
            max_concurrent: self.config.max_concurrent,
            seen: RecentIds::new(REMEMBERED_REQUESTS),
            limits: self.limits,
        };
        let log = Arc::clone(&relay.exec.log);
        let options = ConsumerOptions {
            group: None,
            start: StartFrom::Latest,
        };
        let mut stop = pin!(stop);
        let mut backoff = MIN_BACKOFF;
        'run: loop {
            let opened = tokio::select! {
                () = &mut stop => break 'run,
                opened = log.consumer(options.clone()) => opened,
            };
            match opened {
                Ok(mut consumer) => {
                    connected.send_replace(true);
                    tracing::info!(
                        frontend = relay.exec.frontend_id,
                        "relaying commands from the commands log"
                    );
                    loop {
                        relay.reap();
                        let polled = tokio::select! {
                            () = &mut stop => break 'run,
                            polled = consumer.poll(POLL_RECORDS, POLL_WAIT) => polled,
                        };
                        match polled {
                            Ok(records) => {
                                backoff = MIN_BACKOFF;
                                relay.handle(records).await;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "commands log consumer failed; reopening it");
                                break;
                            }
                        }
                    }
                    connected.send_replace(false);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open the commands log consumer");
                }
            }
            tokio::select! {
                () = &mut stop => break 'run,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = next_backoff(backoff);
        }
        connected.send_replace(false);
        relay.drain(drain_timeout).await;
        Ok(())
    }
}

/// What an executing command needs.
#[derive(Debug)]
struct Exec {
    log: Arc<dyn Log>,
    frontend_id: String,
    local: Arc<dyn CommandSink>,
    max_record_bytes: usize,
}

/// The state of a running relay.
#[derive(Debug)]
struct Relay {
    exec: Arc<Exec>,
    permits: Arc<Semaphore>,
    tasks: JoinSet<()>,
    max_concurrent: usize,
    seen: RecentIds,
    limits: Limits,
}

impl Relay {
    /// Starts the requests among `records` that are addressed to this
    /// frontend, fresh and new; answers the ones it refuses at once.
    async fn handle(&mut self, records: Vec<LogRecord>) {
        let mut refusals = Vec::new();
        let now_ms = wire::now_ms();
        for record in records {
            let decoded = match wire::decode(&record.value) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(partition = record.partition, offset = record.offset, error = %e,
                        "skipping an unreadable record of the commands log");
                    continue;
                }
            };
            let Some(Body::Request(request)) = decoded.body else {
                continue;
            };
            if decoded.frontend != self.exec.frontend_id {
                continue;
            }
            if decoded.reply_to.is_empty() {
                tracing::warn!(
                    request_id = decoded.request_id,
                    "skipping a command request without reply_to"
                );
                continue;
            }
            let route = Route {
                request_id: decoded.request_id,
                frontend: decoded.frontend,
                reply_to: decoded.reply_to,
            };
            if !self.seen.insert(&route.request_id) {
                tracing::debug!(
                    request_id = route.request_id,
                    "skipping a duplicate command request"
                );
                continue;
            }
            let age = Duration::from_millis(
                u64::try_from(now_ms.saturating_sub(record.timestamp_ms)).unwrap_or(0),
            );
            if age > Duration::from_nanos(request.timeout_ns) {
                tracing::info!(
                    request_id = route.request_id,
                    age_ms = age.as_millis() as u64,
                    "skipping a command request older than its timeout"
                );
                continue;
            }
            let command = match wire::command(request, &self.limits) {
                Ok(c) => c,
                Err(v) => {
                    tracing::warn!(request_id = route.request_id, error = %v,
                        "refusing an invalid command request");
                    let refusal = Err(CommandError::Invalid(v));
                    refusals.push(wire::to_record(record.key, &wire::result(&route, &refusal)));
                    continue;
                }
            };
            match Arc::clone(&self.permits).try_acquire_owned() {
                Ok(permit) => {
                    let exec = Arc::clone(&self.exec);
                    self.tasks
                        .spawn(execute(exec, route, record.key, command, permit));
                }
                Err(_) => {
                    tracing::warn!(
                        request_id = route.request_id,
                        limit = self.max_concurrent,
                        "too many commands executing; refusing one"
                    );
                    let refusal = Err(CommandError::Overloaded);
                    refusals.push(wire::to_record(record.key, &wire::result(&route, &refusal)));
                }
            }
        }
        if !refusals.is_empty()
            && let Err(e) = self.exec.log.append_batch(refusals).await
        {
            tracing::warn!(error = %e, "cannot append command refusals");
        }
    }

    /// Collects finished commands, reporting panics.
    fn reap(&mut self) {
        while let Some(done) = self.tasks.try_join_next() {
            if let Err(e) = done
                && e.is_panic()
            {
                tracing::error!(error = %e, "a relayed command panicked");
            }
        }
    }

    /// Waits up to `within` for executing commands, then abandons them.
    async fn drain(&mut self, within: Duration) {
        let tasks = &mut self.tasks;
        let drained =
            tokio::time::timeout(within, async { while tasks.join_next().await.is_some() {} })
                .await;
        if drained.is_err() {
            tracing::warn!(
                abandoned = self.tasks.len(),
                "stopping with commands still executing"
            );
            self.tasks.abort_all();
        }
    }
}

/// Accepts, executes and reports one command.
async fn execute(
    exec: Arc<Exec>,
    route: Route,
    key: Bytes,
    command: Command,
    _permit: OwnedSemaphorePermit,
) {
    let accepted = wire::to_record(key.clone(), &wire::accepted(&route));
    if let Err(e) = exec.log.append(accepted).await {
        // Unaccepted, the requester answers OFFLINE: the device must not get it.
        tracing::warn!(request_id = route.request_id, error = %e,
            "cannot accept a command; not delivering it");
        return;
    }
    let result = exec.local.send_command(command).await;
    let mut record = wire::to_record(key.clone(), &wire::result(&route, &result));
    let size = wire::record_size(&record);
    if size > exec.max_record_bytes {
        record = reply_too_large(&route, key.clone(), size, exec.max_record_bytes);
    }
    let mut backoff = MIN_BACKOFF;
    for attempt in 1..=RESULT_ATTEMPTS {
        match exec.log.append(record.clone()).await {
            Ok(_) => return,
            Err(LogError::RecordTooLarge { size, limit }) => {
                record = reply_too_large(&route, key.clone(), size, limit);
            }
            Err(e) if attempt < RESULT_ATTEMPTS => {
                tracing::warn!(request_id = route.request_id, error = %e,
                    "cannot append a command result; retrying");
                tokio::time::sleep(backoff).await;
                backoff = next_backoff(backoff);
            }
            Err(e) => {
                tracing::warn!(request_id = route.request_id, error = %e,
                    "cannot append a command result; the requester will time out");
            }
        }
    }
}

/// The result that replaces a reply too large to route back.
fn reply_too_large(route: &Route, key: Bytes, size: usize, limit: usize) -> Record {
    tracing::warn!(
        request_id = route.request_id,
        size,
        limit,
        "the device's reply is too large for the commands log"
    );
    let refusal = Err(CommandError::Invalid(ValidationError::new(
        "reply_payload",
        format!("the device's reply is {size} bytes on the commands log; at most {limit}"),
    )));
    wire::to_record(key, &wire::result(route, &refusal))
}

/// The last `cap` request ids seen.
#[derive(Debug)]
struct RecentIds {
    set: HashSet<String>,
    order: VecDeque<String>,
    cap: usize,
}

impl RecentIds {
    fn new(cap: usize) -> Self {
        Self {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    /// Remembers `id`; false if it was already remembered.
    fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() >= self.cap
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        self.set.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_ids_remember_the_last_ones() {
        let mut ids = RecentIds::new(2);
        assert!(ids.insert("a"));
        assert!(!ids.insert("a"));
        assert!(ids.insert("b"));
        assert!(ids.insert("c"));
        // "a" was forgotten, "b" and "c" are remembered.
        assert!(!ids.insert("c"));
        assert!(!ids.insert("b"));
        assert!(ids.insert("a"));
    }
}
