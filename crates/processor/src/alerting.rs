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
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use prost::Message;
use tributary_core::time::now_ns;
use tributary_log::{Log, LogError, Record};
use tributary_rules::convert::event_to_pb;
use tributary_rules::{Engine, EngineLimits, Rule, Transition};
use tributary_store::{CheckpointStore, StoreError};

/// How far behind the wall clock a caught-up partition's clock stays, so
/// that a record appended just before a deadline is consumed before the
/// deadline is judged.
pub const CAUGHT_UP_GRACE: Duration = Duration::from_secs(1);

/// Where the processor reads the rules, each with the devices it watches.
#[async_trait]
pub trait RuleSource: Send + Sync + Debug {
    async fn rules(&self) -> Result<Vec<(Rule, Vec<String>)>, String>;
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

/// The rules of one processor run.
pub(crate) struct Rules {
    alerting: Alerting,
    engine: Engine,
    /// Per owned partition, the first offset the engine has not judged.
    from: BTreeMap<u32, u64>,
    last_refresh: Option<Instant>,
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
    pub(crate) fn new(
        alerting: Alerting,
        log: Arc<dyn Log>,
        metrics: crate::ProcessorMetrics,
    ) -> Self {
        let partitioner: tributary_rules::Partitioner =
            Arc::new(move |key: &str| log.partition_for(key.as_bytes()));
        Self {
            engine: Engine::new(partitioner, alerting.config.limits),
            alerting,
            from: BTreeMap::new(),
            last_refresh: None,
            transitions: Vec::new(),
            refused: 0,
            metrics,
        }
    }

    /// Reads the rules again when they are due; a failed read keeps the
    /// rules in force and is retried at the next interval.
    pub(crate) async fn refresh(&mut self, force: bool) -> Result<(), AlertingError> {
        let due = force
            || self
                .last_refresh
                .is_none_or(|at| at.elapsed() >= self.alerting.config.refresh);
        if !due {
            return Ok(());
        }
        self.last_refresh = Some(Instant::now());
        match self.alerting.source.rules().await {
            Ok(rules) => {
                let resolved = self.engine.set_rules(rules, now_ns());
                self.transitions.extend(resolved);
                self.deliver().await
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the rules; keeping those in force");
                Ok(())
            }
        }
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

    /// Judges the points of a stored record.
    pub(crate) fn observe(
        &mut self,
        partition: u32,
        offset: u64,
        timestamp_ms: i64,
        points: &tributary_store::DevicePoints,
    ) {
        if self.from.get(&partition).is_some_and(|from| offset < *from) {
            return;
        }
        self.engine.observe(
            &points.tenant,
            &points.device,
            &points.points,
            timestamp_ms.saturating_mul(1_000_000),
            &mut self.transitions,
        );
    }

    /// Every owned partition is caught up: their clocks move to the wall
    /// clock, less the grace.
    pub(crate) fn caught_up(&mut self) {
        let clock = now_ns().saturating_sub(CAUGHT_UP_GRACE.as_nanos() as i64);
        for p in self.engine.owned() {
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
        let now_ms = now_ns() / 1_000_000;
        let records: Vec<Record> = self
            .transitions
            .iter()
            .map(|t| Record {
                key: Bytes::from(format!("{}/{}", t.tenant, t.device)),
                value: Bytes::from(event_to_pb(t).encode_to_vec()),
                headers: Vec::new(),
                timestamp_ms: now_ms,
            })
            .collect();
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
