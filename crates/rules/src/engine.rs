//! The rules of every tenant over the series of the partitions one
//! processor owns.
//!
//! The engine is indexed by device (`<tenant>/<device>`, the log's key), so
//! a batch of points costs one lookup, whatever the number of rules. It
//! holds state only for the partitions assigned to it, marks what changed
//! per partition, and hands the changes over as checkpoint rows
//! ([`Engine::checkpoint`]) for the processor to store with its consumer
//! offsets; [`Engine::assign`] takes them back after a restart or when a
//! partition moves here.
//!
//! No-data deadlines sit in a heap, checked lazily: a point that arrives
//! moves a series' deadline without touching the heap, and an entry popped
//! early is pushed back at the series' current deadline.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tributary_core::{Point, Value};

use crate::codec;
use crate::eval::{AlertState, Change, Phase, SeriesState};
use crate::model::{Kind, Rule, Severity};

/// The log partition of a `<tenant>/<device>` key.
pub type Partitioner = Arc<dyn Fn(&str) -> u32 + Send + Sync>;

/// An alert transition, ready to be delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// Deterministic: the same rule, device, metric and start give the same
    /// id, so a delivery replayed after a crash is recognisable.
    pub alert_id: String,
    pub tenant: String,
    pub rule: String,
    pub revision: u64,
    pub device: String,
    pub metric: String,
    pub severity: Severity,
    pub change: Change,
    /// The log partition of the device.
    pub partition: u32,
    /// Why, in words: "temp 12.5 above -15", "no data for 10m".
    pub summary: String,
}

/// The id of the alert of `rule` on a device's metric that started at
/// `started_ns`: 32 hex digits of a SHA-256 of them.
pub fn alert_id(tenant: &str, rule: &str, device: &str, metric: &str, started_ns: i64) -> String {
    let mut h = Sha256::new();
    for part in [tenant, rule, device, metric] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.update(started_ns.to_be_bytes());
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One rule over one device.
#[derive(Debug)]
struct Watch {
    rule: Arc<Rule>,
    /// `None` until the series is seen (or, for no-data, armed), and for
    /// partitions not assigned here.
    state: Option<SeriesState>,
    /// The deadline of this watch's live entry in the no-data heap; other
    /// entries of it there are stale.
    queued: Option<i64>,
    /// Listed in its partition's checkpoint rows to write.
    dirty: bool,
}

impl Watch {
    fn new(rule: Arc<Rule>, state: Option<SeriesState>) -> Self {
        Self {
            rule,
            state,
            queued: None,
            dirty: false,
        }
    }

    /// Lists the watch among its partition's rows to checkpoint.
    fn touch(&mut self, owned: &mut Owned, key: &Arc<str>) {
        if !self.dirty {
            self.dirty = true;
            owned.dirty.insert((key.clone(), self.rule.name.clone()));
        }
    }
}

type Deadlines = BinaryHeap<Reverse<(i64, Arc<str>, String)>>;

/// Puts a no-data watch's deadline in the heap, unless an entry as early
/// is there already.
fn queue(deadlines: &mut Deadlines, w: &mut Watch, key: &Arc<str>) {
    let Some(d) = w.state.as_ref().and_then(|s| s.deadline(&w.rule)) else {
        return;
    };
    if w.queued.is_some_and(|q| q <= d) {
        return;
    }
    w.queued = Some(d);
    deadlines.push(Reverse((d, key.clone(), w.rule.name.clone())));
}

/// The rules over one device.
#[derive(Debug)]
struct Watched {
    /// `<tenant>/<device>`, the key of the engine's index.
    key: Arc<str>,
    tenant: String,
    device: String,
    partition: u32,
    watches: Vec<Watch>,
}

/// A partition assigned here.
#[derive(Debug, Default)]
struct Owned {
    /// The processor's clock for this partition (ns); no-data rules fire
    /// by it.
    clock_ns: i64,
    /// Checkpoint rows to write: (device key, rule name).
    dirty: BTreeSet<(Arc<str>, String)>,
}

/// Engine limits.
#[derive(Debug, Clone, Copy)]
pub struct EngineLimits {
    /// Most series states held; a series past it is not evaluated (and
    /// counted in [`Engine::refused_states`]).
    pub max_states: usize,
}

impl Default for EngineLimits {
    fn default() -> Self {
        Self {
            max_states: 10_000_000,
        }
    }
}

/// See the [module docs](self).
pub struct Engine {
    devices: HashMap<Arc<str>, Watched>,
    owned: BTreeMap<u32, Owned>,
    partition_of: Partitioner,
    /// (deadline, device key, rule name) of armed no-data series.
    deadlines: Deadlines,
    states: usize,
    refused_states: u64,
    limits: EngineLimits,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("devices", &self.devices.len())
            .field("owned", &self.owned.keys().collect::<Vec<_>>())
            .field("states", &self.states)
            .finish_non_exhaustive()
    }
}

/// A checkpoint row: its key, and its value or `None` to delete it.
pub type CheckpointRow = (Vec<u8>, Option<Vec<u8>>);

/// The checkpoint rows stored for a partition: (key, value).
pub type StoredRows = Vec<(Vec<u8>, Vec<u8>)>;

impl Engine {
    pub fn new(partition_of: Partitioner, limits: EngineLimits) -> Self {
        Self {
            devices: HashMap::new(),
            owned: BTreeMap::new(),
            partition_of,
            deadlines: BinaryHeap::new(),
            states: 0,
            refused_states: 0,
            limits,
        }
    }

    /// Series states held.
    pub fn states(&self) -> usize {
        self.states
    }

    /// Series not evaluated because [`EngineLimits::max_states`] was reached.
    pub fn refused_states(&self) -> u64 {
        self.refused_states
    }

    /// Replaces the rules, each with the devices it targets. The state of a
    /// rule whose revision is unchanged is kept; an alert of a rule deleted
    /// or changed resolves at `now_ns`. No-data rules start counting at
    /// `now_ns` (or their creation, if later) for devices new to them.
    pub fn set_rules(&mut self, rules: Vec<(Rule, Vec<String>)>, now_ns: i64) -> Vec<Transition> {
        let mut old = std::mem::take(&mut self.devices);
        for (rule, devices) in rules {
            let rule = Arc::new(rule);
            for device in devices {
                let key: Arc<str> = format!("{}/{device}", rule.tenant).into();
                let watched = self.devices.entry(key.clone()).or_insert_with(|| Watched {
                    key: key.clone(),
                    tenant: rule.tenant.clone(),
                    device: device.clone(),
                    partition: (self.partition_of)(&key),
                    watches: Vec::new(),
                });
                if watched.watches.iter().any(|w| w.rule.name == rule.name) {
                    continue;
                }
                // The state of the same revision carries over.
                let state = old.get_mut(&key).and_then(|o| {
                    o.watches
                        .iter_mut()
                        .find(|w| w.rule.name == rule.name && w.rule.revision == rule.revision)
                        .and_then(|w| w.state.take())
                });
                let mut w = Watch::new(rule.clone(), state);
                queue(&mut self.deadlines, &mut w, &key);
                watched.watches.push(w);
            }
        }
        // What did not carry over: states dropped, alerts resolved.
        let mut out = Vec::new();
        for (key, mut watched) in old {
            for w in std::mem::take(&mut watched.watches) {
                let Some(state) = w.state else {
                    continue;
                };
                self.states -= 1;
                if let Some(owned) = self.owned.get_mut(&watched.partition) {
                    owned.dirty.insert((key.clone(), w.rule.name.clone()));
                }
                let started = match state.phase {
                    Phase::Ok => continue,
                    Phase::Pending { since_ns } | Phase::Firing { since_ns } => since_ns,
                };
                let change = Change {
                    state: AlertState::Resolved,
                    started_ns: started,
                    at_ns: now_ns,
                    value: None,
                    fired: matches!(state.phase, Phase::Firing { .. }),
                };
                out.push(transition(
                    &w.rule,
                    &watched,
                    change,
                    "the rule was changed or deleted".into(),
                ));
            }
        }
        self.arm_no_data(None, now_ns);
        out
    }

    /// Assigns partitions, with the checkpoint rows stored for each new
    /// one ([`Engine::checkpoint`]). States of partitions no longer
    /// assigned are dropped (their new owner loads them). Undecodable rows,
    /// and rows of rules since changed, are skipped and counted in the
    /// result.
    pub fn assign(
        &mut self,
        partitions: &[u32],
        loaded: Vec<(u32, StoredRows)>,
        now_ns: i64,
    ) -> usize {
        let keep: BTreeSet<u32> = partitions.iter().copied().collect();
        let revoked: Vec<u32> = self
            .owned
            .keys()
            .filter(|p| !keep.contains(p))
            .copied()
            .collect();
        for p in &revoked {
            self.owned.remove(p);
        }
        let mut dropped = 0;
        for watched in self.devices.values_mut() {
            if !keep.contains(&watched.partition) {
                for w in &mut watched.watches {
                    if w.state.take().is_some() {
                        self.states -= 1;
                    }
                }
            }
        }
        let mut new = Vec::new();
        for &p in partitions {
            if let std::collections::btree_map::Entry::Vacant(slot) = self.owned.entry(p) {
                // The clock starts unknown: records waiting in the
                // partition, or the caught-up processor, move it.
                slot.insert(Owned {
                    clock_ns: i64::MIN,
                    dirty: BTreeSet::new(),
                });
                new.push(p);
            }
        }
        for (p, rows) in loaded {
            if !new.contains(&p) {
                continue;
            }
            for (key, value) in rows {
                if !self.load_row(&key, &value) {
                    dropped += 1;
                }
            }
        }
        for p in new {
            self.arm_no_data(Some(p), now_ns);
        }
        dropped
    }

    /// Takes one checkpoint row back; false if it is corrupt or stale.
    fn load_row(&mut self, key: &[u8], value: &[u8]) -> bool {
        let Some(at) = key.iter().position(|b| *b == 0) else {
            return false;
        };
        let (Ok(device_key), Ok(rule)) = (
            std::str::from_utf8(&key[..at]),
            std::str::from_utf8(&key[at + 1..]),
        ) else {
            return false;
        };
        let Some((revision, state)) = value.split_first_chunk::<8>() else {
            return false;
        };
        let revision = u64::from_le_bytes(*revision);
        let Some(state) = codec::decode(state) else {
            return false;
        };
        let Some(watched) = self.devices.get_mut(device_key) else {
            return false;
        };
        let Some(w) = watched
            .watches
            .iter_mut()
            .find(|w| w.rule.name == rule && w.rule.revision == revision)
        else {
            return false;
        };
        if w.state.replace(state).is_none() {
            self.states += 1;
        }
        w.queued = None;
        queue(&mut self.deadlines, w, &watched.key);
        true
    }

    /// Creates the state of every no-data series of owned partitions (of
    /// `only`, if given) that has none, counting from `now_ns`.
    fn arm_no_data(&mut self, only: Option<u32>, now_ns: i64) {
        for (key, watched) in &mut self.devices {
            if only.is_some_and(|p| p != watched.partition) {
                continue;
            }
            let Some(owned) = self.owned.get_mut(&watched.partition) else {
                continue;
            };
            for w in &mut watched.watches {
                if w.state.is_some() || !matches!(w.rule.kind, Kind::NoData { .. }) {
                    continue;
                }
                if self.states >= self.limits.max_states {
                    self.refused_states += 1;
                    continue;
                }
                w.state = Some(SeriesState::new(&w.rule, now_ns.max(w.rule.created_ns)));
                queue(&mut self.deadlines, w, key);
                self.states += 1;
                w.touch(owned, key);
            }
        }
    }

    /// Judges a device's points, which arrived in the log at `arrived_ns`,
    /// against its rules (all but offline rules); appends the transitions
    /// to `out`.
    pub fn observe(
        &mut self,
        tenant: &str,
        device: &str,
        points: &[Point],
        arrived_ns: i64,
        out: &mut Vec<Transition>,
    ) {
        self.judge(tenant, device, points, (arrived_ns, false), out);
    }

    /// Judges a device's presence, as its frontend recorded it (not as the
    /// device may have sent it), against its offline rules.
    pub fn observe_presence(
        &mut self,
        tenant: &str,
        device: &str,
        points: &[Point],
        arrived_ns: i64,
        out: &mut Vec<Transition>,
    ) {
        self.judge(tenant, device, points, (arrived_ns, true), out);
    }

    fn judge(
        &mut self,
        tenant: &str,
        device: &str,
        points: &[Point],
        (arrived_ns, presence): (i64, bool),
        out: &mut Vec<Transition>,
    ) {
        if self.devices.is_empty() {
            return;
        }
        let key = format!("{tenant}/{device}");
        let Some(watched) = self.devices.get_mut(key.as_str()) else {
            return;
        };
        let key = &watched.key;
        let Some(owned) = self.owned.get_mut(&watched.partition) else {
            return;
        };
        owned.clock_ns = owned.clock_ns.max(arrived_ns);
        for w in &mut watched.watches {
            let rule = w.rule.clone();
            if matches!(rule.kind, Kind::Offline { .. }) != presence {
                continue;
            }
            for p in points.iter().filter(|p| p.metric == rule.metric) {
                let state = match &mut w.state {
                    Some(s) => s,
                    None if self.states >= self.limits.max_states => {
                        self.refused_states += 1;
                        break;
                    }
                    None => {
                        self.states += 1;
                        w.state.insert(SeriesState::new(&w.rule, arrived_ns))
                    }
                };
                let x = match &p.value {
                    Value::F64(x) => Some(*x),
                    Value::I64(x) => Some(*x as f64),
                    Value::Bool(b) => Some(f64::from(u8::from(*b))),
                    Value::Str(_) => None,
                };
                let change = state.observe(&w.rule, p.ts_ns, x, arrived_ns);
                w.touch(owned, key);
                if let Some(change) = change {
                    let summary = summarize(&w.rule, &change);
                    out.push(transition(
                        &w.rule,
                        watched_view(&watched.tenant, &watched.device, watched.partition),
                        change,
                        summary,
                    ));
                    if change.state == AlertState::Resolved {
                        // A no-data alert resolved: armed again.
                        queue(&mut self.deadlines, w, key);
                    }
                }
                if matches!(w.rule.kind, Kind::Offline { .. }) {
                    // Gone offline: the grace runs from now.
                    queue(&mut self.deadlines, w, key);
                }
            }
        }
    }

    /// Sets the processor's clock of an owned partition: the newest log
    /// append time it consumed, or the wall clock when it is caught up. It
    /// never goes back.
    pub fn advance_clock(&mut self, partition: u32, clock_ns: i64) {
        if let Some(owned) = self.owned.get_mut(&partition) {
            owned.clock_ns = owned.clock_ns.max(clock_ns);
        }
    }

    /// Fires the no-data alerts that are due by their partition's clock;
    /// appends them to `out`.
    pub fn tick(&mut self, out: &mut Vec<Transition>) {
        let Some(latest) = self.owned.values().map(|o| o.clock_ns).max() else {
            return;
        };
        let mut later = Vec::new();
        while let Some(Reverse((deadline, _, _))) = self.deadlines.peek() {
            if *deadline > latest {
                break;
            }
            let Some(Reverse((deadline, key, rule))) = self.deadlines.pop() else {
                break;
            };
            let Some(watched) = self.devices.get_mut(&key) else {
                continue;
            };
            let Some(owned) = self.owned.get_mut(&watched.partition) else {
                continue;
            };
            let Some(w) = watched.watches.iter_mut().find(|w| w.rule.name == rule) else {
                continue;
            };
            if w.queued != Some(deadline) {
                continue; // stale
            }
            w.queued = None;
            let Some(state) = &mut w.state else {
                continue;
            };
            match state.tick(&w.rule, owned.clock_ns) {
                Some(change) => {
                    w.touch(owned, &key);
                    let summary = summarize(&w.rule, &change);
                    out.push(transition(
                        &w.rule,
                        watched_view(&watched.tenant, &watched.device, watched.partition),
                        change,
                        summary,
                    ));
                }
                // Not due by its own partition's clock, or moved by a
                // point: back in the heap after this pass.
                None => later.push((key, rule)),
            }
        }
        for (key, rule) in later {
            if let Some(watched) = self.devices.get_mut(&key)
                && let Some(w) = watched.watches.iter_mut().find(|w| w.rule.name == rule)
            {
                queue(&mut self.deadlines, w, &key);
            }
        }
    }

    /// The checkpoint rows of `partition` that changed since the last call:
    /// key `<tenant>/<device>\0<rule>`, value the rule's revision (u64 LE)
    /// then the state ([`codec`]); `None` deletes a row.
    pub fn checkpoint(&mut self, partition: u32) -> Vec<CheckpointRow> {
        let Some(owned) = self.owned.get_mut(&partition) else {
            return Vec::new();
        };
        let dirty = std::mem::take(&mut owned.dirty);
        let mut rows = Vec::with_capacity(dirty.len());
        for (key, rule) in dirty {
            let mut k = Vec::with_capacity(key.len() + 1 + rule.len());
            k.extend_from_slice(key.as_bytes());
            k.push(0);
            k.extend_from_slice(rule.as_bytes());
            let value = self
                .devices
                .get_mut(&key)
                .and_then(|d| d.watches.iter_mut().find(|w| w.rule.name == rule))
                .and_then(|w| {
                    w.dirty = false;
                    let state = w.state.as_ref()?;
                    let mut v = w.rule.revision.to_le_bytes().to_vec();
                    v.extend_from_slice(&codec::encode(state));
                    Some(v)
                });
            rows.push((k, value));
        }
        rows
    }

    /// The partitions assigned here.
    pub fn owned(&self) -> Vec<u32> {
        self.owned.keys().copied().collect()
    }
}

/// What a transition needs of the device.
struct View<'a> {
    tenant: &'a str,
    device: &'a str,
    partition: u32,
}

fn watched_view<'a>(tenant: &'a str, device: &'a str, partition: u32) -> View<'a> {
    View {
        tenant,
        device,
        partition,
    }
}

impl<'a> From<&'a Watched> for View<'a> {
    fn from(w: &'a Watched) -> Self {
        watched_view(&w.tenant, &w.device, w.partition)
    }
}

/// A transition of `rule` on `device` of `tenant`, summarized, outside the
/// engine (a backtest over history): partition 0.
pub(crate) fn transition_of(rule: &Rule, tenant: &str, device: &str, change: Change) -> Transition {
    let summary = summarize(rule, &change);
    transition(rule, watched_view(tenant, device, 0), change, summary)
}

fn transition<'a>(
    rule: &Rule,
    device: impl Into<View<'a>>,
    change: Change,
    summary: String,
) -> Transition {
    let device = device.into();
    Transition {
        alert_id: alert_id(
            device.tenant,
            &rule.name,
            device.device,
            &rule.metric,
            change.started_ns,
        ),
        tenant: device.tenant.to_owned(),
        rule: rule.name.clone(),
        revision: rule.revision,
        device: device.device.to_owned(),
        metric: rule.metric.clone(),
        severity: rule.severity,
        change,
        partition: device.partition,
        summary,
    }
}

/// A transition in words.
fn summarize(rule: &Rule, change: &Change) -> String {
    use crate::model::Op;
    let value = change
        .value
        .map(|x| format!("{} {x}", rule.metric))
        .unwrap_or_default();
    let condition = match &rule.kind {
        Kind::Threshold(t) => match t.op {
            Op::Above(l) => format!("above {l}"),
            Op::Below(l) => format!("below {l}"),
            Op::Outside(lo, hi) => format!("outside [{lo}, {hi}]"),
        },
        Kind::RateOfChange(r) => format!(
            "changing by more than {}{} over {}",
            r.bound,
            if r.per_second { "/s" } else { "" },
            tributary_core::rollup::width_name(r.window_ns)
        ),
        Kind::Anomaly(a) => format!("more than {} standard deviations from its mean", a.k),
        Kind::Offline { grace_ns } => {
            return match change.state {
                AlertState::Resolved => "back online".to_owned(),
                _ if *grace_ns == 0 => "offline".to_owned(),
                _ => format!(
                    "offline for {}",
                    tributary_core::rollup::width_name(*grace_ns)
                ),
            };
        }
        Kind::NoData { timeout_ns } => {
            return match change.state {
                AlertState::Resolved => format!("{} reported again", rule.metric),
                _ => format!(
                    "no {} for {}",
                    rule.metric,
                    tributary_core::rollup::width_name(*timeout_ns)
                ),
            };
        }
    };
    match change.state {
        AlertState::Pending => format!("{value} {condition}, pending"),
        AlertState::Firing => format!("{value} {condition}"),
        AlertState::Resolved => format!("{value}: no longer {condition}")
            .trim_start_matches(": ")
            .to_owned(),
    }
}
