//! The stream processor.
//!
//! It consumes the telemetry log as a consumer group, decodes and validates
//! each envelope, writes the points to the store in batches, publishes them to
//! live subscribers, and sends records it cannot decode to the dead-letter log
//! with the reason. It commits log offsets only after the store has made the
//! writes durable ([`Store::flush`]), so the log is the store's write-ahead
//! log: after a crash, everything after the last commit is replayed, and the
//! store's idempotent writes make the replay harmless.
//!
//! The processor knows only the [`Log`] and [`Store`] traits, so it is the
//! same code over the embedded log and store and over Kafka and ScyllaDB.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{Span, field};
use tributary_core::Limits;
use tributary_core::envelope::Envelope;
use tributary_core::live::{LiveBatch, LiveHub};
use tributary_core::retention::{Keep, RetentionPolicy};
use tributary_core::rollup::Tiers;
use tributary_log::{Consumer, ConsumerOptions, Log, LogError, LogRecord, Record, StartFrom};
use tributary_store::{DevicePoints, Store, StoreError};

pub mod alerting;
mod live_tail;
mod metrics;
pub mod rollups;

pub use alerting::{Alerting, AlertingConfig, RuleSource};
pub use live_tail::live_tail;
pub use metrics::ProcessorMetrics;
pub use rollups::{RollupFlush, Rollups};

/// Processor settings.
#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    /// The consumer group name.
    pub group: String,
    /// Most records taken from the log per poll.
    pub max_poll_records: usize,
    /// Flush the store and commit offsets at least this often while data flows.
    pub flush_interval: Duration,
    /// Also flush once this many points are unflushed.
    pub max_unflushed_points: usize,
    /// Validation limits (a record breaking them is dead-lettered).
    pub limits: Limits,
    /// The rollup tiers kept up to date (none: no rollups).
    pub rollup_tiers: Tiers,
    /// How long each tenant's raw points and tiers are kept (shared with
    /// the store): a bucket whose raw points or finer buckets are gone
    /// cannot be recomputed, and an expired bucket is not written.
    pub retention: Arc<RetentionPolicy>,
    /// Series whose newest rollup buckets are remembered between flushes.
    pub rollup_memory_series: usize,
    /// Rollups are brought up to date (and offsets committed) at most this
    /// often, or once `max_unflushed_points` await them: a stream rewrites
    /// each open bucket once per interval, not once per store flush.
    pub rollup_interval: Duration,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            group: "tributary-processor".into(),
            max_poll_records: 1024,
            flush_interval: Duration::from_millis(500),
            max_unflushed_points: 2_000_000,
            limits: Limits::default(),
            rollup_tiers: Tiers::default(),
            retention: Arc::new(RetentionPolicy::new(Keep::Forever, Tiers::default())),
            rollup_memory_series: 1_000_000,
            rollup_interval: Duration::from_secs(5),
        }
    }
}

/// Why the processor stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    #[error("log: {0}")]
    Log(#[from] LogError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("alerting: {0}")]
    Alerting(#[from] alerting::AlertingError),
}

/// Header names on dead-lettered records.
pub mod dlq_headers {
    /// Why the record was dead-lettered.
    pub const REASON: &str = "tributary-dlq-reason";
    /// `<topic>/<partition>/<offset>` of the original record.
    pub const SOURCE: &str = "tributary-dlq-source";
}

/// The stream processor. See the crate docs.
#[derive(Debug)]
pub struct Processor {
    log: Arc<dyn Log>,
    dlq: Arc<dyn Log>,
    store: Arc<dyn Store>,
    live: LiveHub,
    metrics: ProcessorMetrics,
    config: ProcessorConfig,
    alerting: Option<Alerting>,
}

/// Offsets consumed but not yet committed, per partition.
type Pending = BTreeMap<u32, u64>;

/// How often the consumer lag gauges are refreshed.
const LAG_INTERVAL: Duration = Duration::from_secs(5);

/// How often, while every poll brings records, the partitions read to
/// their end are looked for (a watermark read per assigned partition), so
/// that their rules' clocks move and no-data alerts fire there.
const CATCH_UP_CHECK: Duration = Duration::from_secs(1);

/// What the lag reporter needs from the poll loop: the partitions this
/// replica owns and the next offset it will process on each.
#[derive(Debug, Default)]
struct Progress {
    assigned: Vec<u32>,
    next: BTreeMap<u32, u64>,
}

/// Most `processor.store_write` spans kept open until their offsets are
/// committed; past it a span ends after its store write.
const MAX_OPEN_SPANS: usize = 4096;

/// The `processor.store_write` spans of traced records written but not yet
/// committed. Empty (and never allocated) unless records carry a sampled
/// `traceparent` and trace export is on.
#[derive(Debug, Default)]
struct OpenSpans(Vec<Span>);

impl Processor {
    pub fn new(
        log: Arc<dyn Log>,
        dlq: Arc<dyn Log>,
        store: Arc<dyn Store>,
        live: LiveHub,
        metrics: ProcessorMetrics,
        config: ProcessorConfig,
    ) -> Self {
        Self {
            log,
            dlq,
            store,
            live,
            metrics,
            config,
            alerting: None,
        }
    }

    /// Evaluates rules too (see [`alerting`]).
    pub fn with_alerting(mut self, alerting: Alerting) -> Self {
        self.alerting = Some(alerting);
        self
    }

    /// The partitions of `assignment` read to their end: the next offset to
    /// read (from `positions`, else the group's committed offset, else the
    /// oldest retained) is the log's high watermark. A partition whose
    /// watermark cannot be read now is left out.
    async fn read_to_end(
        &self,
        assignment: &[u32],
        positions: &mut BTreeMap<u32, u64>,
    ) -> Vec<u32> {
        let mut done = Vec::new();
        for &p in assignment {
            let Ok(marks) = self.log.watermarks(p).await else {
                continue;
            };
            let position = match positions.get(&p) {
                Some(at) => *at,
                None => {
                    let committed = self
                        .log
                        .committed(&self.config.group, p)
                        .await
                        .ok()
                        .flatten();
                    let at = committed.unwrap_or(marks.low);
                    positions.insert(p, at);
                    at
                }
            };
            if position >= marks.high {
                done.push(p);
            }
        }
        done
    }

    /// Runs until `shutdown` resolves, then flushes, commits and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ProcessorError> {
        let mut consumer = self
            .log
            .consumer(ConsumerOptions {
                group: Some(self.config.group.clone()),
                start: StartFrom::Earliest,
            })
            .await?;
        tracing::info!(group = %self.config.group, topic = self.log.topic(), "processor started");
        tokio::pin!(shutdown);
        // Lag is measured off the poll loop: watermark requests are broker
        // round trips that must not delay the records behind them.
        let progress = Arc::new(std::sync::Mutex::new(Progress::default()));
        let lag_reporter = tokio::spawn(report_lag(
            self.log.clone(),
            self.config.group.clone(),
            progress.clone(),
            self.metrics.clone(),
        ));
        let _stop_lag = AbortOnDrop(lag_reporter);
        let mut pending = Pending::new();
        let mut open_spans = OpenSpans::default();
        let mut rollups = Rollups::new(
            self.config.rollup_tiers.clone(),
            self.config.retention.clone(),
            self.config.rollup_memory_series,
        );
        let mut assignment: Vec<u32> = Vec::new();
        let mut rules = match self.alerting.clone() {
            Some(a) => Some(alerting::Rules::new(a, self.log.clone(), self.metrics.clone()).await),
            None => None,
        };
        if let Some(r) = &mut rules {
            r.refresh(true).await?;
        }
        self.mark_rollup_tiers().await?;
        let mut unflushed_points = 0usize;
        // The next offset to read of each partition, for telling idle
        // partitions caught up while others are busy.
        let mut positions: BTreeMap<u32, u64> = BTreeMap::new();
        let mut last_catch_up = Instant::now();
        let mut last_flush = Instant::now();
        let mut last_rollup = Instant::now();
        loop {
            let poll = consumer.poll(self.config.max_poll_records, Duration::from_millis(100));
            let records = tokio::select! {
                biased;
                () = &mut shutdown => break,
                r = poll => r?,
            };
            let assigned = consumer.assignment();
            if assigned != assignment {
                // Partitions moved: another processor may have written
                // rollups of series this one remembers.
                rollups.forget();
                if let Some(r) = &mut rules {
                    r.assign(&assigned, &self.config.group).await?;
                }
                assignment = assigned;
            }
            if !records.is_empty() {
                unflushed_points += self
                    .process(&records, &mut open_spans, &mut rollups, rules.as_mut())
                    .await?;
                for r in &records {
                    pending.insert(r.partition, r.offset + 1);
                    positions.insert(r.partition, r.offset + 1);
                }
            }
            if let Some(r) = &mut rules {
                if records.is_empty() {
                    r.caught_up();
                } else if last_catch_up.elapsed() >= CATCH_UP_CHECK {
                    // Some partitions are busy, so no poll comes back
                    // empty; the others must not wait for that to move
                    // their clocks (their no-data alerts would never fire).
                    last_catch_up = Instant::now();
                    let idle = self.read_to_end(&assignment, &mut positions).await;
                    r.caught_up_partitions(&idle);
                }
                r.tick().await?;
                r.refresh(false).await?;
            }
            {
                let mut p = progress
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                p.assigned = assignment.clone();
                for r in &records {
                    p.next.insert(r.partition, r.offset + 1);
                }
            }
            let due = last_flush.elapsed() >= self.config.flush_interval
                || unflushed_points >= self.config.max_unflushed_points;
            let rollups_due = !rollups.enabled()
                || last_rollup.elapsed() >= self.config.rollup_interval
                || rollups.pending_points() >= self.config.max_unflushed_points;
            if !pending.is_empty() && due {
                self.flush_and_commit(
                    consumer.as_mut(),
                    &mut pending,
                    &mut open_spans,
                    rollups_due.then_some(&mut rollups),
                    rules.as_mut(),
                )
                .await?;
                unflushed_points = 0;
                last_flush = Instant::now();
                if rollups_due {
                    last_rollup = last_flush;
                }
            }
        }
        self.flush_and_commit(
            consumer.as_mut(),
            &mut pending,
            &mut open_spans,
            Some(&mut rollups),
            rules.as_mut(),
        )
        .await?;
        tracing::info!(group = %self.config.group, "processor stopped after final commit");
        Ok(())
    }

    /// Decodes, dead-letters and writes one poll's records. Returns the
    /// number of points written. Records with a sampled `traceparent` get a
    /// `processor.store_write` span each, left in `open_spans`.
    async fn process(
        &self,
        records: &[LogRecord],
        open_spans: &mut OpenSpans,
        rollups: &mut Rollups,
        rules: Option<&mut alerting::Rules>,
    ) -> Result<usize, ProcessorError> {
        let mut batch = Vec::with_capacity(records.len());
        // The log record each entry of `batch` came from, for dead-lettering.
        let mut sources = Vec::with_capacity(records.len());
        // (index in `batch`, span) of traced records.
        let mut spans: Vec<(usize, Span)> = Vec::new();
        // Presence records: judged by offline rules, never stored.
        let mut presence = Vec::new();
        for r in records {
            match Envelope::decode(&r.value, &self.config.limits) {
                Ok(env) if env.content_type == tributary_core::model::PRESENCE_CONTENT_TYPE => {
                    presence.push((
                        DevicePoints {
                            tenant: env.tenant,
                            device: env.device,
                            points: env.points,
                        },
                        r,
                    ));
                }
                Ok(env) => {
                    self.metrics.record_decoded(&env.tenant, env.points.len());
                    if !env.traceparent.is_empty()
                        && let Some(span) = store_write_span(r, &env)
                    {
                        spans.push((batch.len(), span));
                    }
                    batch.push(DevicePoints {
                        tenant: env.tenant,
                        device: env.device,
                        points: env.points,
                    });
                    sources.push(r);
                }
                Err(e) => self.dead_letter(r, &e.to_string()).await?,
            }
        }
        if batch.is_empty() && presence.is_empty() {
            return Ok(0);
        }
        let started = (!spans.is_empty()).then(Instant::now);
        let written = self.write_with_retry(&batch).await?;
        if let Some(started) = started {
            let write_ms = started.elapsed().as_secs_f64() * 1e3;
            for (_, span) in &spans {
                span.record("store.write_ms", write_ms);
            }
        }
        if let Err(reason) = written {
            // The store refused something in the batch (for example its
            // series limit). Find which records, dead-letter them with the
            // store's reason, and keep the stream moving. Writes are
            // idempotent, so rewriting the accepted ones costs nothing.
            self.metrics.store_refused_batch(&reason);
            let mut accepted = Vec::with_capacity(batch.len());
            let mut kept = Vec::with_capacity(batch.len());
            for (i, (b, r)) in batch.into_iter().zip(sources).enumerate() {
                match self.write_with_retry(std::slice::from_ref(&b)).await? {
                    Ok(()) => {
                        accepted.push(b);
                        kept.push(r);
                    }
                    Err(reason) => {
                        if let Some((_, span)) = spans.iter().find(|(j, _)| *j == i) {
                            span.record("otel.status_code", "ERROR");
                            span.record("dead_letter.reason", reason.as_str());
                        }
                        self.dead_letter(r, &format!("store refused: {reason}"))
                            .await?
                    }
                }
            }
            batch = accepted;
            sources = kept;
        }
        if let Some(rules) = rules {
            for (b, r) in batch.iter().zip(&sources) {
                rules.observe((r.partition, r.offset, r.timestamp_ms), b, false);
            }
            for (b, r) in &presence {
                rules.observe((r.partition, r.offset, r.timestamp_ms), b, true);
            }
            rules.deliver().await?;
        }
        for (_, span) in spans {
            // Past the bound the span ends here, after its write.
            if open_spans.0.len() < MAX_OPEN_SPANS {
                open_spans.0.push(span);
            }
        }
        rollups.note(&batch);
        let points: usize = batch.iter().map(|b| b.points.len()).sum();
        for b in &batch {
            self.metrics.points_stored(&b.tenant, b.points.len());
        }
        if self.live.has_subscribers() {
            for b in batch {
                self.live.publish(LiveBatch {
                    tenant: b.tenant,
                    device: b.device,
                    points: b.points,
                });
            }
        }
        Ok(points)
    }

    /// Writes a batch, retrying transient store failures with backoff. A
    /// batch is never skipped: losing it would lose acknowledged data. The
    /// inner `Err` is the store refusing the batch as invalid, which no retry
    /// can fix.
    async fn write_with_retry(
        &self,
        batch: &[DevicePoints],
    ) -> Result<Result<(), String>, ProcessorError> {
        let mut delay = Duration::from_millis(50);
        let started = Instant::now();
        // Queries read these points raw until their rollups are written.
        if !self.config.rollup_tiers.widths().is_empty()
            && let Some(oldest) = batch
                .iter()
                .flat_map(|d| d.points.iter().map(|p| p.ts_ns))
                .min()
        {
            self.store.note_rollups_pending(oldest);
        }
        loop {
            match self.store.write(batch).await {
                Ok(()) => {
                    self.metrics.store_written(started.elapsed());
                    return Ok(Ok(()));
                }
                Err(StoreError::Invalid(reason)) => return Ok(Err(reason)),
                Err(e) => {
                    self.metrics.store_write_retried(&e, delay);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Records, for each tier kept, from when its rollups are complete: the
    /// next bucket boundary, unless an earlier run recorded a time already.
    /// Queries read a tier only from there on.
    async fn mark_rollup_tiers(&self) -> Result<(), ProcessorError> {
        let now = tributary_core::time::now_ns();
        for &width in self.config.rollup_tiers.widths() {
            let next = tributary_core::rollup::bucket_start(now, width).saturating_add(width);
            let since = self.store.mark_rollups_since(width, next).await?;
            tracing::info!(
                tier = %tributary_core::rollup::width_name(width),
                since_ns = since,
                "rollup tier kept"
            );
        }
        Ok(())
    }

    /// Brings the rollups up to date, retrying transient store failures
    /// like writes: the offsets wait for it.
    async fn flush_rollups(&self, rollups: &mut Rollups) -> Result<(), ProcessorError> {
        if !rollups.enabled() {
            return Ok(());
        }
        let mut delay = Duration::from_millis(50);
        loop {
            let started = Instant::now();
            match rollups
                .flush(self.store.as_ref(), tributary_core::time::now_ns())
                .await
            {
                Ok(done) => {
                    self.metrics.rollups_flushed(&done, started.elapsed());
                    // Points are written in this loop only: every one so far
                    // now has its rollups.
                    self.store.rollups_caught_up();
                    return Ok(());
                }
                Err(e @ StoreError::Invalid(_)) => return Err(e.into()),
                Err(e) => {
                    self.metrics.store_write_retried(&e, delay);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Appends a poison record to the dead-letter log; the event is
    /// reported once it is there.
    async fn dead_letter(&self, r: &LogRecord, reason: &str) -> Result<(), ProcessorError> {
        let mut headers = r.headers.clone();
        headers.push((dlq_headers::REASON.into(), Bytes::from(reason.to_string())));
        headers.push((
            dlq_headers::SOURCE.into(),
            Bytes::from(format!("{}/{}/{}", self.log.topic(), r.partition, r.offset)),
        ));
        let record = Record {
            key: r.key.clone(),
            value: r.value.clone(),
            headers,
            timestamp_ms: r.timestamp_ms,
        };
        self.dlq.append(record).await?;
        self.metrics.dead_lettered(r.partition, r.offset, reason);
        Ok(())
    }

    async fn flush_and_commit(
        &self,
        consumer: &mut dyn Consumer,
        pending: &mut Pending,
        open_spans: &mut OpenSpans,
        rollups: Option<&mut Rollups>,
        rules: Option<&mut alerting::Rules>,
    ) -> Result<(), ProcessorError> {
        if pending.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        self.store.flush().await?;
        let flushed = started.elapsed();
        self.metrics.store_flushed(flushed);
        // The rollups of what was flushed, before the offsets that would
        // spare its replay are committed; when they are not due yet, the
        // offsets wait for them.
        match rollups {
            Some(rollups) => self.flush_rollups(rollups).await?,
            None => return Ok(()),
        }
        for span in &open_spans.0 {
            span.record("store.flush_ms", flushed.as_secs_f64() * 1e3);
        }
        let offsets: Vec<(u32, u64)> = pending.iter().map(|(p, o)| (*p, *o)).collect();
        // The rules' state of what is about to be committed, saved first:
        // a replay of what is not committed yet is then not judged twice.
        if let Some(rules) = rules {
            rules.checkpoint(&self.config.group, &offsets).await?;
        }
        if let Err(e) = consumer.commit(&offsets).await {
            // The points are durable in the store; only the bookkeeping
            // failed (Kafka: often a rebalance in progress). Keep the offsets
            // and commit them with the next flush. If the process dies first,
            // the records are replayed, and idempotent writes make that
            // harmless.
            self.metrics.offset_commit_failed(&e);
            return Ok(());
        }
        self.metrics.committed();
        // The traced records are durable and committed: their spans end.
        for span in open_spans.0.drain(..) {
            span.record("committed", true);
        }
        pending.clear();
        Ok(())
    }
}

/// The `processor.store_write` span of a record whose envelope carries a
/// sampled `traceparent` (the ingest span's): its child, open from the
/// store write until the record's offset is committed. `None`, at no cost
/// beyond parsing the header, when the record is not sampled or trace
/// export is off.
fn store_write_span(r: &LogRecord, env: &Envelope) -> Option<Span> {
    if !tributary_otel::is_sampled_traceparent(&env.traceparent) {
        return None;
    }
    let span = tracing::debug_span!(
        target: tributary_otel::TARGET,
        "processor.store_write",
        otel.kind = "consumer",
        otel.status_code = field::Empty,
        tenant = %env.tenant,
        device = %env.device,
        partition = r.partition,
        offset = r.offset,
        points = env.points.len(),
        store.write_ms = field::Empty,
        store.flush_ms = field::Empty,
        committed = field::Empty,
        dead_letter.reason = field::Empty,
    );
    if span.is_disabled() {
        return None;
    }
    tributary_otel::set_remote_parent(&span, &env.traceparent, &env.tracestate);
    Some(span)
}

/// Aborts a task when dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Every [`LAG_INTERVAL`], sets the lag gauges of the partitions this
/// replica owns: the high watermark minus the next offset to process (the
/// group's committed offset for a partition not read yet). Partitions that
/// moved to another replica stop being reported.
async fn report_lag(
    log: Arc<dyn Log>,
    group: String,
    progress: Arc<std::sync::Mutex<Progress>>,
    metrics: ProcessorMetrics,
) {
    loop {
        tokio::time::sleep(LAG_INTERVAL).await;
        let (assigned, next) = {
            let p = progress
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (p.assigned.clone(), p.next.clone())
        };
        let mut lags = Vec::with_capacity(assigned.len());
        for partition in assigned {
            let Ok(w) = log.watermarks(partition).await else {
                continue;
            };
            let position = match next.get(&partition) {
                Some(&o) => o,
                None => match log.committed(&group, partition).await {
                    Ok(Some(o)) => o,
                    Ok(None) => w.low,
                    Err(_) => continue,
                },
            };
            lags.push((partition, w.high.saturating_sub(position)));
        }
        metrics.set_lags(&lags);
    }
}
