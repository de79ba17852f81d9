//! One series under one rule: what it remembers and how a point or the
//! clock moves its alert.
//!
//! Every rule kind but no-data judges each point as a *breach*, a *clear*,
//! or neither (a threshold's hysteresis band), and one state machine turns
//! those verdicts into alert transitions:
//!
//! ```text
//!          breach (for = 0)                        clear
//!   ok ─────────────────────────────▶ firing ─────────────────▶ ok
//!    │ breach            breach held `for`  ▲
//!    └────────▶ pending ────────────────────┘
//!                  │ no longer breached
//!                  └───────────────▶ ok (the pending alert resolves unfired)
//! ```
//!
//! `for` is measured in point time: an alert fires at the first point that
//! still breaches `for` after the point that started the breach. Points are
//! judged in order; a point not newer than the last one judged (late, or
//! replayed after a restart) is ignored, so that a replay changes nothing.
//!
//! No-data rules instead remember when a point last arrived (its log
//! append time) and fire once the processor's clock passes that plus the
//! timeout; the next point resolves the alert.
//!
//! The anomaly rule keeps an exponentially weighted mean and variance in
//! O(1) state, updated as in Finch (2009), "Incremental calculation of
//! weighted mean and variance", section 9:
//!
//! ```text
//! diff = x − mean
//! incr = α·diff
//! mean ← mean + incr
//! var  ← (1 − α)·(var + diff·incr)
//! ```
//!
//! A point breaches when, after at least `warmup` points, it is more than
//! `k` standard deviations from the mean *before* it is included. Every
//! point is then included, anomalous or not.

use std::collections::VecDeque;

use crate::model::{Direction, Kind, Op, Rule};

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Ok,
    /// Breached since `since_ns`, for less than the rule's `for`.
    Pending {
        since_ns: i64,
    },
    /// Fired; the alert started at `since_ns`.
    Firing {
        since_ns: i64,
    },
}

/// An alert state an event announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertState {
    Pending,
    Firing,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

/// A change of an alert, as one series' state reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Change {
    pub state: AlertState,
    /// When the alert started (part of its identity).
    pub started_ns: i64,
    /// When this change happened: a point's time, or the processor's clock.
    pub at_ns: i64,
    /// The value that caused it, if a point did.
    pub value: Option<f64>,
    /// For `Resolved`: whether the alert had fired (else it was pending).
    pub fired: bool,
}

/// What a rule kind remembers of a series.
#[derive(Debug, Clone, PartialEq)]
pub enum Memory {
    /// Thresholds remember nothing beyond the phase.
    Nothing,
    /// Rate of change: points of the trailing window, at most
    /// [`WINDOW_POINTS`], spaced at least window / [`WINDOW_POINTS`] apart.
    Window(VecDeque<(i64, f64)>),
    /// Anomaly: the exponentially weighted mean and variance of `n` points.
    Ewma { n: u64, mean: f64, var: f64 },
    /// No data: when a point last arrived.
    Seen { last_ns: i64 },
    /// Offline: since when the device is offline (its presence went
    /// false), on the processor's clock; `None` while online.
    Presence { offline_since: Option<i64> },
}

/// Most points a rate-of-change series keeps.
pub const WINDOW_POINTS: usize = 64;

/// One series' state under one rule.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesState {
    pub phase: Phase,
    /// The newest point judged (`i64::MIN` before the first).
    pub last_ts: i64,
    pub memory: Memory,
}

/// How one point stands against a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Breach,
    /// Not breached, but not clear either (a threshold's hysteresis band).
    Hold,
    Clear,
}

impl SeriesState {
    /// A series not seen yet. `armed_ns` is when a no-data rule starts
    /// counting for it.
    pub fn new(rule: &Rule, armed_ns: i64) -> Self {
        let memory = match rule.kind {
            Kind::Threshold(_) => Memory::Nothing,
            Kind::RateOfChange(_) => Memory::Window(VecDeque::new()),
            Kind::Anomaly(_) => Memory::Ewma {
                n: 0,
                mean: 0.0,
                var: 0.0,
            },
            Kind::NoData { .. } => Memory::Seen { last_ns: armed_ns },
            Kind::Offline { .. } => Memory::Presence {
                offline_since: None,
            },
        };
        Self {
            phase: Phase::Ok,
            last_ts: i64::MIN,
            memory,
        }
    }

    /// A point of the rule's metric at `ts_ns`, numeric value `x` (`None`
    /// for a string, which only a no-data rule counts), that arrived in the
    /// log at `arrived_ns`.
    pub fn observe(
        &mut self,
        rule: &Rule,
        ts_ns: i64,
        x: Option<f64>,
        arrived_ns: i64,
    ) -> Option<Change> {
        if let Memory::Seen { last_ns } = &mut self.memory {
            *last_ns = (*last_ns).max(arrived_ns);
            self.last_ts = self.last_ts.max(ts_ns);
            return match self.phase {
                Phase::Firing { since_ns } => {
                    self.phase = Phase::Ok;
                    Some(Change {
                        state: AlertState::Resolved,
                        started_ns: since_ns,
                        at_ns: arrived_ns,
                        value: x,
                        fired: true,
                    })
                }
                _ => None,
            };
        }
        if let Memory::Presence { offline_since } = &mut self.memory {
            let online = x? != 0.0;
            if ts_ns < self.last_ts {
                return None;
            }
            self.last_ts = ts_ns;
            if !online {
                offline_since.get_or_insert(arrived_ns);
                return None;
            }
            *offline_since = None;
            return match self.phase {
                Phase::Firing { since_ns } => {
                    self.phase = Phase::Ok;
                    Some(Change {
                        state: AlertState::Resolved,
                        started_ns: since_ns,
                        at_ns: arrived_ns,
                        value: x,
                        fired: true,
                    })
                }
                _ => None,
            };
        }
        let x = x?;
        if ts_ns <= self.last_ts {
            return None;
        }
        self.last_ts = ts_ns;
        let verdict = self.judge(rule, ts_ns, x);
        self.step(rule.for_ns, verdict, ts_ns, x)
    }

    /// The processor's clock reached `clock_ns`: fires a no-data alert that
    /// is due. Other kinds ignore the clock.
    pub fn tick(&mut self, rule: &Rule, clock_ns: i64) -> Option<Change> {
        let due = self.deadline(rule)?;
        if clock_ns < due {
            return None;
        }
        self.phase = Phase::Firing { since_ns: due };
        Some(Change {
            state: AlertState::Firing,
            started_ns: due,
            at_ns: clock_ns,
            value: None,
            fired: false,
        })
    }

    /// When [`SeriesState::tick`] would next fire: for an armed no-data
    /// rule, the last arrival plus the timeout.
    pub fn deadline(&self, rule: &Rule) -> Option<i64> {
        match (&rule.kind, &self.memory, self.phase) {
            (Kind::NoData { timeout_ns }, Memory::Seen { last_ns }, Phase::Ok) => {
                Some(last_ns.saturating_add(*timeout_ns))
            }
            (
                Kind::Offline { grace_ns },
                Memory::Presence {
                    offline_since: Some(since),
                },
                Phase::Ok,
            ) => Some(since.saturating_add(*grace_ns)),
            _ => None,
        }
    }

    fn judge(&mut self, rule: &Rule, ts_ns: i64, x: f64) -> Verdict {
        match (&rule.kind, &mut self.memory) {
            (Kind::Threshold(t), _) => {
                let h = t.hysteresis;
                let (breach, clear) = match t.op {
                    Op::Above(l) => (x > l, x <= l - h),
                    Op::Below(l) => (x < l, x >= l + h),
                    Op::Outside(lo, hi) => (x < lo || x > hi, x >= lo + h && x <= hi - h),
                };
                verdict(breach, clear)
            }
            (Kind::RateOfChange(r), Memory::Window(points)) => {
                let from = ts_ns.saturating_sub(r.window_ns);
                while points.front().is_some_and(|(t, _)| *t < from) {
                    points.pop_front();
                }
                let breach = points.front().is_some_and(|&(t0, x0)| {
                    let change = if r.per_second {
                        (x - x0) / ((ts_ns - t0) as f64 / 1e9)
                    } else {
                        x - x0
                    };
                    match r.direction {
                        Direction::Either => change.abs() > r.bound,
                        Direction::Rise => change > r.bound,
                        Direction::Fall => -change > r.bound,
                    }
                });
                let spacing = r.window_ns / WINDOW_POINTS as i64;
                if points
                    .back()
                    .is_none_or(|(t, _)| ts_ns >= t.saturating_add(spacing))
                {
                    if points.len() == WINDOW_POINTS {
                        points.pop_front();
                    }
                    points.push_back((ts_ns, x));
                }
                verdict(breach, !breach)
            }
            (Kind::Anomaly(a), Memory::Ewma { n, mean, var }) => {
                let breach = *n >= u64::from(a.warmup.max(1))
                    && (x - *mean).abs() > a.k * var.max(0.0).sqrt();
                if *n == 0 {
                    (*mean, *var) = (x, 0.0);
                } else {
                    let diff = x - *mean;
                    let incr = a.alpha * diff;
                    *mean += incr;
                    *var = (1.0 - a.alpha) * (*var + diff * incr);
                }
                *n += 1;
                verdict(breach, !breach)
            }
            // A memory of another kind (a changed rule's state is dropped,
            // so this is not reached): judge nothing.
            _ => Verdict::Hold,
        }
    }

    fn step(&mut self, for_ns: i64, verdict: Verdict, ts_ns: i64, x: f64) -> Option<Change> {
        let change = |state, started_ns, fired| {
            Some(Change {
                state,
                started_ns,
                at_ns: ts_ns,
                value: Some(x),
                fired,
            })
        };
        match (self.phase, verdict) {
            (Phase::Ok, Verdict::Breach) if for_ns == 0 => {
                self.phase = Phase::Firing { since_ns: ts_ns };
                change(AlertState::Firing, ts_ns, false)
            }
            (Phase::Ok, Verdict::Breach) => {
                self.phase = Phase::Pending { since_ns: ts_ns };
                change(AlertState::Pending, ts_ns, false)
            }
            (Phase::Pending { since_ns }, Verdict::Breach) => {
                if ts_ns.saturating_sub(since_ns) < for_ns {
                    return None;
                }
                self.phase = Phase::Firing { since_ns };
                change(AlertState::Firing, since_ns, false)
            }
            (Phase::Pending { since_ns }, _) => {
                self.phase = Phase::Ok;
                change(AlertState::Resolved, since_ns, false)
            }
            (Phase::Firing { since_ns }, Verdict::Clear) => {
                self.phase = Phase::Ok;
                change(AlertState::Resolved, since_ns, true)
            }
            (Phase::Ok, _) | (Phase::Firing { .. }, _) => None,
        }
    }
}

fn verdict(breach: bool, clear: bool) -> Verdict {
    if breach {
        Verdict::Breach
    } else if clear {
        Verdict::Clear
    } else {
        Verdict::Hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Anomaly, RateOfChange, Severity, Target, Threshold};

    const S: i64 = 1_000_000_000;
    const MIN: i64 = 60 * S;

    fn rule(kind: Kind, for_ns: i64) -> Rule {
        Rule {
            tenant: "acme".into(),
            name: "r".into(),
            revision: 1,
            target: Target::Device("d1".into()),
            metric: "temp".into(),
            kind,
            for_ns,
            severity: Severity::Warning,
            created_ns: 0,
            description: String::new(),
        }
    }

    fn above(limit: f64, hysteresis: f64, for_ns: i64) -> Rule {
        rule(
            Kind::Threshold(Threshold {
                op: Op::Above(limit),
                hysteresis,
            }),
            for_ns,
        )
    }

    /// Feeds (seconds, value) points; returns (second, state, started second).
    fn run(rule: &Rule, points: &[(i64, f64)]) -> Vec<(i64, AlertState, i64)> {
        let mut s = SeriesState::new(rule, 0);
        points
            .iter()
            .filter_map(|&(t, x)| s.observe(rule, t * S, Some(x), t * S))
            .map(|c| (c.at_ns / S, c.state, c.started_ns / S))
            .collect()
    }

    #[test]
    fn a_threshold_without_for_fires_at_the_first_breach_and_clears() {
        let r = above(-15.0, 0.0, 0);
        assert_eq!(
            run(
                &r,
                &[
                    (0, -20.0),
                    (10, -14.0),
                    (20, -13.0),
                    (30, -15.0),
                    (40, -10.0)
                ]
            ),
            vec![
                (10, AlertState::Firing, 10),
                (30, AlertState::Resolved, 10),
                (40, AlertState::Firing, 40),
            ]
        );
    }

    #[test]
    fn a_threshold_fires_only_once_breached_for_its_whole_for() {
        let r = above(-15.0, 0.0, 10 * MIN);
        // Breached from 0 s; the point at 540 s is not 10 minutes on yet,
        // the one at 600 s is.
        let pts: Vec<(i64, f64)> = (0..=10).map(|i| (i * 60, -14.0)).collect();
        let got = run(&r, &pts);
        assert_eq!(
            got,
            vec![(0, AlertState::Pending, 0), (600, AlertState::Firing, 0)]
        );
        // A dip below the limit before `for` ends restarts the wait, and
        // resolves the pending alert unfired.
        let got = run(
            &r,
            &[
                (0, -14.0),
                (300, -16.0),
                (360, -14.0),
                (900, -14.0),
                (960, -14.0),
            ],
        );
        assert_eq!(
            got,
            vec![
                (0, AlertState::Pending, 0),
                (300, AlertState::Resolved, 0),
                (360, AlertState::Pending, 360),
                (960, AlertState::Firing, 360),
            ]
        );
    }

    #[test]
    fn hysteresis_keeps_a_value_hovering_at_the_limit_from_flapping() {
        let hovering: Vec<(i64, f64)> = (0..20)
            .map(|i| (i, if i % 2 == 0 { -14.9 } else { -15.1 }))
            .collect();
        let flappy = run(&above(-15.0, 0.0, 0), &hovering);
        assert_eq!(flappy.len(), 20, "without hysteresis: {flappy:?}");
        let steady = run(&above(-15.0, 0.5, 0), &hovering);
        assert_eq!(steady, vec![(0, AlertState::Firing, 0)]);
        // Clears once back by the hysteresis.
        let mut pts = hovering.clone();
        pts.push((20, -15.5));
        assert_eq!(
            run(&above(-15.0, 0.5, 0), &pts),
            vec![(0, AlertState::Firing, 0), (20, AlertState::Resolved, 0)]
        );
    }

    #[test]
    fn below_and_outside_judge_both_sides() {
        let below = rule(
            Kind::Threshold(Threshold {
                op: Op::Below(2.0),
                hysteresis: 1.0,
            }),
            0,
        );
        assert_eq!(
            run(&below, &[(0, 1.0), (1, 2.5), (2, 3.0)]),
            vec![(0, AlertState::Firing, 0), (2, AlertState::Resolved, 0)]
        );
        let outside = rule(
            Kind::Threshold(Threshold {
                op: Op::Outside(0.0, 10.0),
                hysteresis: 1.0,
            }),
            0,
        );
        assert_eq!(
            run(
                &outside,
                &[(0, 5.0), (1, 10.5), (2, 9.5), (3, 9.0), (4, -1.0)]
            ),
            vec![
                (1, AlertState::Firing, 1),
                (3, AlertState::Resolved, 1),
                (4, AlertState::Firing, 4),
            ]
        );
    }

    #[test]
    fn late_and_replayed_points_change_nothing() {
        let r = above(0.0, 0.0, 0);
        let mut s = SeriesState::new(&r, 0);
        assert!(s.observe(&r, 10 * S, Some(1.0), 0).is_some());
        let snapshot = s.clone();
        assert_eq!(s.observe(&r, 10 * S, Some(-1.0), 0), None, "replayed");
        assert_eq!(s.observe(&r, 5 * S, Some(-1.0), 0), None, "late");
        assert_eq!(s, snapshot);
        // Strings are not numbers: ignored.
        assert_eq!(s.observe(&r, 11 * S, None, 0), None);
    }

    #[test]
    fn rate_of_change_compares_with_the_start_of_its_window() {
        let r = rule(
            Kind::RateOfChange(RateOfChange {
                window_ns: 60 * S,
                bound: 5.0,
                per_second: false,
                direction: Direction::Rise,
            }),
            0,
        );
        // +1 every 10 s: +6 over a minute, from 60 s on.
        let rising: Vec<(i64, f64)> = (0..10).map(|i| (i * 10, i as f64)).collect();
        assert_eq!(run(&r, &rising), vec![(60, AlertState::Firing, 60)]);
        // Falling fast breaches only in either direction.
        let falling: Vec<(i64, f64)> = (0..10).map(|i| (i * 10, -(i as f64) * 10.0)).collect();
        assert_eq!(run(&r, &falling), vec![]);
        let either = rule(
            Kind::RateOfChange(RateOfChange {
                window_ns: 60 * S,
                bound: 5.0,
                per_second: true,
                direction: Direction::Either,
            }),
            0,
        );
        // -1/s: never above 5/s. Then +540 over the minute since the
        // window's oldest point (-40 at 40 s): 9/s.
        let mut pts: Vec<(i64, f64)> = (0..10).map(|i| (i * 10, -(i as f64) * 10.0)).collect();
        pts.push((100, 500.0));
        pts.push((200, 450.0));
        assert_eq!(
            run(&either, &pts),
            vec![
                (100, AlertState::Firing, 100),
                (200, AlertState::Resolved, 100)
            ]
        );
    }

    #[test]
    fn rate_of_change_state_stays_bounded() {
        let r = rule(
            Kind::RateOfChange(RateOfChange {
                window_ns: 3600 * S,
                bound: 1e9,
                per_second: false,
                direction: Direction::Either,
            }),
            0,
        );
        let mut s = SeriesState::new(&r, 0);
        for i in 0..100_000i64 {
            s.observe(&r, i * S / 10, Some(i as f64), 0);
        }
        let Memory::Window(points) = &s.memory else {
            panic!("{s:?}");
        };
        assert!(points.len() <= WINDOW_POINTS, "{}", points.len());
    }

    #[test]
    fn an_anomaly_fires_only_after_warmup_far_from_the_weighted_mean() {
        let r = rule(
            Kind::Anomaly(Anomaly {
                alpha: 0.1,
                k: 3.0,
                warmup: 20,
            }),
            0,
        );
        // A jump during warm-up is not judged.
        let mut pts: Vec<(i64, f64)> = (0..10).map(|i| (i, 10.0 + (i % 3) as f64 * 0.1)).collect();
        pts.push((10, 50.0));
        assert_eq!(run(&r, &pts), vec![]);
        // After warm-up, a small wiggle is normal and a jump is not.
        let mut pts: Vec<(i64, f64)> = (0..100).map(|i| (i, 10.0 + (i % 3) as f64 * 0.1)).collect();
        pts.push((100, 10.15));
        pts.push((101, 14.0));
        pts.push((102, 10.1));
        assert_eq!(
            run(&r, &pts),
            vec![
                (101, AlertState::Firing, 101),
                (102, AlertState::Resolved, 101)
            ]
        );
    }

    #[test]
    fn the_weighted_mean_and_variance_follow_finch() {
        // Against the definition: weights α(1−α)^(n−1−i) for i ≥ 1 and
        // (1−α)^(n−1) for the first point.
        let alpha = 0.3;
        let r = rule(
            Kind::Anomaly(Anomaly {
                alpha,
                k: 1e3,
                warmup: 0,
            }),
            0,
        );
        let xs = [3.0, 7.0, 1.0, 4.0, 4.5, 9.0, 2.0];
        let mut s = SeriesState::new(&r, 0);
        for (i, x) in xs.iter().enumerate() {
            s.observe(&r, i as i64, Some(*x), 0);
        }
        let n = xs.len();
        let w: Vec<f64> = (0..n)
            .map(|i| {
                if i == 0 {
                    (1.0 - alpha).powi(n as i32 - 1)
                } else {
                    alpha * (1.0 - alpha).powi((n - 1 - i) as i32)
                }
            })
            .collect();
        let mean: f64 = w.iter().zip(&xs).map(|(w, x)| w * x).sum();
        let var: f64 = w.iter().zip(&xs).map(|(w, x)| w * (x - mean).powi(2)).sum();
        let Memory::Ewma {
            mean: m,
            var: v,
            n: count,
        } = s.memory
        else {
            panic!()
        };
        assert_eq!(count, n as u64);
        assert!((m - mean).abs() < 1e-12, "{m} vs {mean}");
        assert!((v - var).abs() < 1e-12, "{v} vs {var}");
    }

    #[test]
    fn no_data_fires_on_the_clock_and_resolves_on_the_next_point() {
        let r = rule(
            Kind::NoData {
                timeout_ns: 10 * MIN,
            },
            0,
        );
        // Armed at 100 s, never reported.
        let mut s = SeriesState::new(&r, 100 * S);
        assert_eq!(s.deadline(&r), Some(700 * S));
        assert_eq!(s.tick(&r, 699 * S), None);
        let fired = s.tick(&r, 705 * S).expect("due");
        assert_eq!(
            (fired.state, fired.started_ns, fired.at_ns),
            (AlertState::Firing, 700 * S, 705 * S)
        );
        assert_eq!(s.tick(&r, 900 * S), None, "fires once");
        assert_eq!(s.deadline(&r), None);
        // Any point, even a string, is data.
        let back = s.observe(&r, 1, None, 950 * S).expect("resolves");
        assert_eq!(
            (back.state, back.started_ns, back.fired),
            (AlertState::Resolved, 700 * S, true)
        );
        assert_eq!(s.deadline(&r), Some(1550 * S));
        // Points keep it quiet.
        assert_eq!(s.observe(&r, 2, Some(1.0), 1500 * S), None);
        assert_eq!(s.tick(&r, 1600 * S), None);
        assert_eq!(s.deadline(&r), Some(2100 * S));
    }

    #[test]
    fn offline_fires_after_its_grace_and_resolves_when_the_device_is_back() {
        let r = Rule {
            metric: crate::model::PRESENCE_METRIC.into(),
            ..rule(Kind::Offline { grace_ns: 5 * MIN }, 0)
        };
        let mut s = SeriesState::new(&r, 0);
        assert_eq!(s.deadline(&r), None, "never seen: nothing to wait for");
        assert_eq!(s.observe(&r, 10 * S, Some(1.0), 10 * S), None, "online");
        assert_eq!(s.deadline(&r), None);
        // Offline at 100 s, back at 200 s: within the grace, nothing.
        assert_eq!(s.observe(&r, 100 * S, Some(0.0), 100 * S), None);
        assert_eq!(s.deadline(&r), Some(400 * S));
        assert_eq!(s.observe(&r, 200 * S, Some(1.0), 200 * S), None);
        assert_eq!(s.deadline(&r), None, "back within the grace");
        assert_eq!(s.tick(&r, 500 * S), None);
        // Offline at 600 s; a repeated offline does not restart the grace.
        s.observe(&r, 600 * S, Some(0.0), 600 * S);
        s.observe(&r, 650 * S, Some(0.0), 650 * S);
        assert_eq!(s.tick(&r, 899 * S), None);
        let fired = s.tick(&r, 901 * S).expect("due at 900 s");
        assert_eq!(
            (fired.state, fired.started_ns, fired.at_ns),
            (AlertState::Firing, 900 * S, 901 * S)
        );
        assert_eq!(s.tick(&r, 2000 * S), None, "fires once");
        let back = s
            .observe(&r, 2100 * S, Some(1.0), 2100 * S)
            .expect("resolves");
        assert_eq!(
            (back.state, back.started_ns, back.fired),
            (AlertState::Resolved, 900 * S, true)
        );
    }
}
