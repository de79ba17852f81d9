//! A rule judged over stored history: when it would have fired
//! (`tributary rules test`).
//!
//! Each series is replayed through the same [`SeriesState`] the processor
//! uses, with point time as the clock (history has no append times): a
//! no-data rule starts counting at the start of the range, fires when the
//! gap to the next point (or to the end of the range) exceeds its timeout,
//! and resolves at that next point.
//!
//! Long ranges are judged over rollup buckets instead of raw points (the
//! caller picks the resolution). Each bucket becomes one point at its start
//! whose value is the one the rule would react to most: the maximum for
//! "above", the minimum for "below", whichever of the two lies further
//! outside for "outside", and the mean for rate of change and anomaly.
//! That finds every breach a bucket holds, but `for` durations and
//! no-data gaps are then measured in whole buckets: an approximation the
//! answer states.

use crate::engine::{Transition, transition_of};
use crate::eval::SeriesState;
use crate::model::{Kind, Op, Rule};

/// One bucket of a rollup, as a backtest reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub start_ns: i64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
}

/// The value of a bucket the rule reacts to most.
pub fn bucket_value(rule: &Rule, b: &Bucket) -> f64 {
    match &rule.kind {
        Kind::Threshold(t) => match t.op {
            Op::Above(_) => b.max,
            Op::Below(_) => b.min,
            Op::Outside(lo, hi) => {
                if (lo - b.min).max(0.0) >= (b.max - hi).max(0.0) {
                    b.min
                } else {
                    b.max
                }
            }
        },
        // Offline at any time in the bucket.
        Kind::Offline { .. } => b.min,
        Kind::RateOfChange(_) | Kind::Anomaly(_) | Kind::NoData { .. } => b.mean,
    }
}

/// Replays `points` (time-ordered `(ts_ns, value)` within `[from_ns,
/// to_ns)`) of one device through `rule`; appends each transition to
/// `out`, at most `max` in all (returns false when it stopped there).
pub fn replay(
    rule: &Rule,
    (tenant, device): (&str, &str),
    points: impl IntoIterator<Item = (i64, f64)>,
    (from_ns, to_ns): (i64, i64),
    out: &mut Vec<Transition>,
    max: usize,
) -> bool {
    let mut state = SeriesState::new(rule, from_ns);
    let push = |change, out: &mut Vec<Transition>| {
        if out.len() >= max {
            return false;
        }
        out.push(transition_of(rule, tenant, device, change));
        true
    };
    for (ts, x) in points {
        if let Some(change) = state.tick(rule, ts)
            && !push(change, out)
        {
            return false;
        }
        if let Some(change) = state.observe(rule, ts, Some(x), ts)
            && !push(change, out)
        {
            return false;
        }
    }
    if let Some(change) = state.tick(rule, to_ns) {
        return push(change, out);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::AlertState;
    use crate::model::{Severity, Target, Threshold};

    const S: i64 = 1_000_000_000;

    fn rule(kind: Kind, for_ns: i64) -> Rule {
        Rule {
            tenant: "acme".into(),
            name: "r".into(),
            revision: 1,
            target: Target::Device("d".into()),
            metric: "temp".into(),
            kind,
            for_ns,
            severity: Severity::Warning,
            created_ns: 0,
            description: String::new(),
        }
    }

    fn states(out: &[Transition]) -> Vec<(AlertState, i64)> {
        out.iter()
            .map(|t| (t.change.state, t.change.at_ns / S))
            .collect()
    }

    #[test]
    fn a_threshold_with_for_fires_and_resolves_over_history() {
        let r = rule(
            Kind::Threshold(Threshold {
                op: Op::Above(10.0),
                hysteresis: 0.0,
            }),
            60 * S,
        );
        let points =
            [(0, 5.0), (30, 12.0), (60, 13.0), (100, 14.0), (130, 3.0)].map(|(t, x)| (t * S, x));
        let mut out = Vec::new();
        assert!(replay(
            &r,
            ("acme", "d"),
            points,
            (0, 200 * S),
            &mut out,
            100
        ));
        assert_eq!(
            states(&out),
            [
                (AlertState::Pending, 30),
                (AlertState::Firing, 100),
                (AlertState::Resolved, 130)
            ]
        );
        assert_eq!(out[1].alert_id, out[2].alert_id, "one alert");
        assert_eq!(out[1].summary, "temp 14 above 10");
    }

    #[test]
    fn no_data_fires_on_gaps_in_history_and_at_its_end() {
        let r = rule(Kind::NoData { timeout_ns: 60 * S }, 0);
        let points = [(10, 1.0), (40, 1.0), (200, 1.0)].map(|(t, x)| (t * S, x));
        let mut out = Vec::new();
        assert!(replay(
            &r,
            ("acme", "d"),
            points,
            (0, 300 * S),
            &mut out,
            100
        ));
        assert_eq!(
            states(&out),
            [
                // Silent from 40 s: due at 100 s, judged when 200 s arrives.
                (AlertState::Firing, 200),
                (AlertState::Resolved, 200),
                // Silent from 200 s until the end of the range.
                (AlertState::Firing, 300),
            ]
        );
        assert_eq!(
            out[0].change.started_ns,
            100 * S,
            "it started at the deadline"
        );
    }

    #[test]
    fn a_replay_stops_at_its_limit() {
        let r = rule(
            Kind::Threshold(Threshold {
                op: Op::Above(0.0),
                hysteresis: 0.0,
            }),
            0,
        );
        let points = (0..100).map(|i| (i * S, if i % 2 == 0 { 1.0 } else { -1.0 }));
        let mut out = Vec::new();
        assert!(!replay(
            &r,
            ("acme", "d"),
            points,
            (0, 100 * S),
            &mut out,
            10
        ));
        assert_eq!(out.len(), 10);
    }

    #[test]
    fn a_bucket_stands_for_what_the_rule_reacts_to() {
        let b = Bucket {
            start_ns: 0,
            min: -30.0,
            max: 5.0,
            mean: -1.0,
        };
        let threshold = |op| {
            rule(
                Kind::Threshold(Threshold {
                    op,
                    hysteresis: 0.0,
                }),
                0,
            )
        };
        assert_eq!(bucket_value(&threshold(Op::Above(0.0)), &b), 5.0);
        assert_eq!(bucket_value(&threshold(Op::Below(0.0)), &b), -30.0);
        assert_eq!(
            bucket_value(&threshold(Op::Outside(-10.0, 10.0)), &b),
            -30.0
        );
        assert_eq!(bucket_value(&threshold(Op::Outside(-40.0, 0.0)), &b), 5.0);
        assert_eq!(
            bucket_value(&rule(Kind::NoData { timeout_ns: S }, 0), &b),
            -1.0
        );
    }
}
