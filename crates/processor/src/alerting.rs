//! Rules evaluated where the telemetry is: on the partitions this processor
//! owns, as their records are stored (docs/alerts.md).
//!
//! - Points reach the [`Engine`] after the store accepted them, with their
//!   record's append time (the clock of no-data rules).
//! - Every transition is appended to the alerts log (`tributary.alerts.v1`)
//!   as an `AlertEvent` as soon as it happens, durably, before the state
//!   that produced it is checkpointed.
//! - Before the processor commits offsets, each partition's changed state is
//!   saved with the offset it covers ([`CheckpointStore`]). A partition
//!   assigned here (at start, or moved from another replica) loads its
//!   checkpoint, and records below the checkpoint's offset, replayed because
//!   their commit did not happen, are stored again but not judged again.
//!   A crash after a transition was appended but before its checkpoint
//!   replays it: the same alert id and state appear again, which receivers
//!   drop.
//! - No-data rules fire on a partition's clock: the newest append time it
//!   consumed, or the wall clock less [`CAUGHT_UP_GRACE`] once a poll finds
//!   nothing waiting. A processor catching up after downtime therefore
//!   judges silence by the records' times, not by how long it was away.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use prost::Message;
use tributary_core::time::now_ns;
use tributary_log::{Log, LogError, Record};
use tributary_rules::convert::event_to_pb;
use tributary_rules::{Engine, EngineLimits, Rule, Silence, Silences, Transition};
use tributary_store::{CheckpointStore, StoreError};

/// How far behind the wall clock a caught-up partition's clock stays, so
/// that a record appended just before a deadline is consumed before the
/// deadline is judged.
pub const CAUGHT_UP_GRACE: Duration = Duration::from_secs(1);

/// Where the processor reads the rules, each with the devices it watches,
/// and the operators' silences.
#[async_trait]
pub trait RuleSource: Send + Sync + Debug {
    async fn rules(&self) -> Result<Vec<(Rule, Vec<String>)>, String>;

    /// The silences in force; none by default.
    async fn silences(&self) -> Result<Vec<Silence>, String> {
        Ok(Vec::new())
    }
}

/// Alerting settings.
#[derive(Debug, Clone)]
pub struct AlertingConfig {
    /// How often the rules are read again.
    pub refresh: Duration,
    pub limits: EngineLimits,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        Self {
            refresh: Duration::from_secs(5),
            limits: EngineLimits::default(),
        }
    }
}

/// What the processor needs to evaluate rules.
#[derive(Debug, Clone)]
pub struct Alerting {
    pub source: Arc<dyn RuleSource>,
    /// The alerts log, `tributary.alerts.v1`.
    pub alerts: Arc<dyn Log>,
    pub checkpoints: Arc<dyn CheckpointStore>,
    pub config: AlertingConfig,
}

/// The rules and their devices, as last read.
type RuleSet = Arc<Vec<(Rule, Vec<String>)>>;

/// The rules of one processor run.
pub(crate) struct Rules {
    alerting: Alerting,
    engine: Engine,
    /// Per owned partition, the first offset the engine has not judged.
    from: BTreeMap<u32, u64>,
    /// The rule sets read in the background, when they change.
    updates: tokio::sync::watch::Receiver<Option<RuleSet>>,
    /// The silences, as last read in the background.
    silences: Arc<std::sync::RwLock<Silences>>,
    _reader: AbortOnDrop,
    transitions: Vec<Transition>,
    /// Series refused by the state limit, as last reported.
    refused: u64,
    metrics: crate::ProcessorMetrics,
}

impl Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules")
            .field("engine", &self.engine)
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

/// Why alerting stopped the processor.
#[derive(Debug, thiserror::Error)]
pub enum AlertingError {
    #[error("alerts log: {0}")]
    Log(#[from] LogError),
    #[error("checkpoint: {0}")]
    Store(#[from] StoreError),
}

impl Rules {
    /// Reads the rules once, then keeps reading them in the background
    /// every [`AlertingConfig::refresh`], off the processor's loop.
    pub(crate) async fn new(
        alerting: Alerting,
        log: Arc<dyn Log>,
        metrics: crate::ProcessorMetrics,
    ) -> Self {
        let partitioner: tributary_rules::Partitioner =
            Arc::new(move |key: &str| log.partition_for(key.as_bytes()));
        let first = read(alerting.source.as_ref()).await;
        let silences = Arc::new(std::sync::RwLock::new(Silences::default()));
        read_silences(alerting.source.as_ref(), &silences).await;
        let (tx, updates) = tokio::sync::watch::channel(first.clone());
        let reader = tokio::spawn(keep_reading(
            alerting.source.clone(),
            alerting.config.refresh,
            first,
            (tx, silences.clone()),
        ));
        Self {
            engine: Engine::new(partitioner, alerting.config.limits),
            alerting,
            from: BTreeMap::new(),
            updates,
            silences,
            _reader: AbortOnDrop(reader),
            transitions: Vec::new(),
            refused: 0,
            metrics,
        }
    }

    /// Takes the rules read in the background, if they changed (or, with
    /// `force`, the last read in any case).
    pub(crate) async fn refresh(&mut self, force: bool) -> Result<(), AlertingError> {
        if !force && !self.updates.has_changed().unwrap_or(false) {
            return Ok(());
        }
        let Some(rules) = self.updates.borrow_and_update().clone() else {
            return Ok(());
        };
        let resolved = self.engine.set_rules(rules.as_ref().clone(), now_ns());
        self.transitions.extend(resolved);
        self.deliver().await
    }

    /// Takes the partitions assigned now: loads the checkpoints of new ones.
    pub(crate) async fn assign(
        &mut self,
        partitions: &[u32],
        group: &str,
    ) -> Result<(), AlertingError> {
        let mut loaded = Vec::new();
        self.from.retain(|p, _| partitions.contains(p));
        for &p in partitions {
            if self.from.contains_key(&p) {
                continue;
            }
            match self.alerting.checkpoints.load_checkpoint(group, p).await? {
                Some(c) => {
                    self.from.insert(p, c.offset);
                    loaded.push((p, c.rows));
                }
                None => {
                    self.from.insert(p, 0);
                }
            }
        }
        let skipped = self.engine.assign(partitions, loaded, now_ns());
        if skipped > 0 {
            tracing::warn!(
                skipped,
                "checkpoint rows of changed rules or in no known form were skipped"
            );
        }
        Ok(())
    }

    /// Judges the points of a stored record, or (`presence`) the presence
    /// a frontend recorded.
    pub(crate) fn observe(
        &mut self,
        (partition, offset, timestamp_ms): (u32, u64, i64),
        points: &tributary_store::DevicePoints,
        presence: bool,
    ) {
        if self.from.get(&partition).is_some_and(|from| offset < *from) {
            return;
        }
        let arrived = timestamp_ms.saturating_mul(1_000_000);
        if presence {
            self.engine.observe_presence(
                &points.tenant,
                &points.device,
                &points.points,
                arrived,
                &mut self.transitions,
            );
        } else {
            self.engine.observe(
                &points.tenant,
                &points.device,
                &points.points,
                arrived,
                &mut self.transitions,
            );
        }
    }

    /// Every owned partition is caught up: their clocks move to the wall
    /// clock, less the grace.
    pub(crate) fn caught_up(&mut self) {
        let owned = self.engine.owned();
        self.caught_up_partitions(&owned);
    }

    /// These partitions are read to their end (others may not be): their
    /// clocks move to the wall clock, less the grace.
    pub(crate) fn caught_up_partitions(&mut self, partitions: &[u32]) {
        let clock = now_ns().saturating_sub(CAUGHT_UP_GRACE.as_nanos() as i64);
        for &p in partitions {
            self.engine.advance_clock(p, clock);
        }
    }

    /// Fires due no-data alerts and appends every waiting transition to the
    /// alerts log.
    pub(crate) async fn tick(&mut self) -> Result<(), AlertingError> {
        self.engine.tick(&mut self.transitions);
        let refused = self.engine.refused_states();
        if refused > self.refused {
            tracing::warn!(
                refused = refused - self.refused,
                states = self.engine.states(),
                "series not judged: the rule state limit is reached"
            );
            self.refused = refused;
        }
        self.deliver().await
    }

    /// Appends the waiting transitions, durably.
    pub(crate) async fn deliver(&mut self) -> Result<(), AlertingError> {
        if self.transitions.is_empty() {
            return Ok(());
        }
        let now = now_ns();
        let now_ms = now / 1_000_000;
        let records: Vec<Record> = {
            let silences = self
                .silences
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.transitions
                .iter()
                .map(|t| {
                    let mut event = event_to_pb(t);
                    event.silenced_until_ns = silences
                        .until(&t.tenant, &t.rule, &t.device, now)
                        .unwrap_or(0);
                    Record {
                        key: Bytes::from(format!("{}/{}", t.tenant, t.device)),
                        value: Bytes::from(event.encode_to_vec()),
                        headers: Vec::new(),
                        timestamp_ms: now_ms,
                    }
                })
                .collect()
        };
        self.alerting.alerts.append_batch(records).await?;
        for t in self.transitions.drain(..) {
            self.metrics.alert_transition(t.change.state.as_str());
            tracing::info!(
                tenant = %t.tenant,
                rule = %t.rule,
                device = %t.device,
                state = t.change.state.as_str(),
                alert_id = %t.alert_id,
                summary = %t.summary,
                "alert"
            );
        }
        Ok(())
    }

    /// Saves the changed state of each partition about to be committed at
    /// its offset. Nothing to save without rules or state.
    pub(crate) async fn checkpoint(
        &mut self,
        group: &str,
        offsets: &[(u32, u64)],
    ) -> Result<(), AlertingError> {
        for &(p, offset) in offsets {
            let rows = self.engine.checkpoint(p);
            if rows.is_empty() && self.engine.states() == 0 && self.from.get(&p) == Some(&0) {
                continue;
            }
            self.alerting
                .checkpoints
                .save_checkpoint(group, p, offset, rows)
                .await?;
            self.from.insert(p, offset);
        }
        Ok(())
    }
}

/// One read of the rules; `None` (logged) when it fails.
async fn read(source: &dyn RuleSource) -> Option<RuleSet> {
    match source.rules().await {
        Ok(rules) => Some(Arc::new(rules)),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the rules; keeping those in force");
            None
        }
    }
}

/// One read of the silences into `into`; kept as they were (logged) when
/// it fails.
async fn read_silences(source: &dyn RuleSource, into: &std::sync::RwLock<Silences>) {
    match source.silences().await {
        Ok(list) => {
            let silences = Silences::new(&list);
            *into
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = silences;
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not read the silences; keeping those in force");
        }
    }
}

/// Reads the rules every `every`, and hands over a set that differs from
/// the last one; reads the silences too.
async fn keep_reading(
    source: Arc<dyn RuleSource>,
    every: Duration,
    mut last: Option<RuleSet>,
    (tx, silences): (
        tokio::sync::watch::Sender<Option<RuleSet>>,
        Arc<std::sync::RwLock<Silences>>,
    ),
) {
    loop {
        tokio::time::sleep(every).await;
        read_silences(source.as_ref(), &silences).await;
        let Some(now) = read(source.as_ref()).await else {
            continue;
        };
        if last.as_deref() != Some(now.as_ref()) {
            last = Some(now.clone());
            if tx.send(Some(now)).is_err() {
                return;
            }
        }
    }
}

/// Aborts the background reader when the processor stops.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
