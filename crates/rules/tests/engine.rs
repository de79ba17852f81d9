//! The engine over many rules and devices: indexing, checkpoints and
//! restores, partitions moving, no-data clocks and limits.

use std::sync::Arc;

use tributary_core::{Point, Value};
use tributary_rules::{
    AlertState, Engine, EngineLimits, Kind, Op, Partitioner, Rule, Severity, StoredRows, Target,
    Threshold, Transition,
};

const S: i64 = 1_000_000_000;

/// Devices `d0`, `d1`, ... are on partition = their number mod 4.
fn partitioner() -> Partitioner {
    Arc::new(|key: &str| {
        key.rsplit_once("/d")
            .and_then(|(_, n)| n.parse::<u32>().ok())
            .map_or(0, |n| n % 4)
    })
}

fn above(name: &str, limit: f64) -> Rule {
    Rule {
        tenant: "acme".into(),
        name: name.into(),
        revision: 1,
        target: Target::Device("d0".into()),
        metric: "temp".into(),
        kind: Kind::Threshold(Threshold {
            op: Op::Above(limit),
            hysteresis: 0.0,
        }),
        for_ns: 0,
        severity: Severity::Critical,
        created_ns: 0,
        description: String::new(),
    }
}

fn no_data(name: &str, timeout_s: i64) -> Rule {
    Rule {
        kind: Kind::NoData {
            timeout_ns: timeout_s * S,
        },
        ..above(name, 0.0)
    }
}

fn devices(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("d{i}")).collect()
}

fn temp(ts_s: i64, x: f64) -> Vec<Point> {
    vec![Point {
        metric: "temp".into(),
        ts_ns: ts_s * S,
        value: Value::F64(x),
    }]
}

fn states(out: &[Transition]) -> Vec<(String, AlertState)> {
    out.iter()
        .map(|t| (t.device.clone(), t.change.state))
        .collect()
}

#[test]
fn points_reach_only_the_rules_of_their_device_and_metric() {
    let mut e = Engine::new(partitioner(), EngineLimits::default());
    e.assign(&[0, 1, 2, 3], Vec::new(), 0);
    e.set_rules(
        vec![
            (above("hot", 30.0), devices(2)),
            (
                Rule {
                    metric: "humidity".into(),
                    ..above("humid", 30.0)
                },
                devices(2),
            ),
        ],
        0,
    );
    let mut out = Vec::new();
    e.observe("acme", "d1", &temp(1, 40.0), S, &mut out);
    e.observe("acme", "d5", &temp(1, 40.0), S, &mut out);
    e.observe("other", "d1", &temp(1, 40.0), S, &mut out);
    assert_eq!(states(&out), vec![("d1".into(), AlertState::Firing)]);
    let t = &out[0];
    assert_eq!(
        (t.rule.as_str(), t.metric.as_str(), t.severity, t.partition),
        ("hot", "temp", Severity::Critical, 1)
    );
    assert_eq!(t.summary, "temp 40 above 30");
    assert_eq!(
        t.alert_id,
        tributary_rules::alert_id("acme", "hot", "d1", "temp", S),
        "the id is the rule, device, metric and start"
    );
    assert_eq!(t.alert_id.len(), 32);
}

#[test]
fn a_checkpoint_restores_every_state_exactly() {
    let rules = || {
        vec![
            (above("hot", 30.0), devices(8)),
            (no_data("quiet", 60), devices(8)),
        ]
    };
    let mut a = Engine::new(partitioner(), EngineLimits::default());
    a.assign(&[0, 1, 2, 3], Vec::new(), 0);
    a.set_rules(rules(), 0);
    let mut out = Vec::new();
    for (i, d) in devices(8).iter().enumerate() {
        a.observe("acme", d, &temp(10, 25.0 + i as f64), 10 * S, &mut out);
    }
    // d6 and d7 fire (31, 32 > 30).
    assert_eq!(out.len(), 2);
    let saved: Vec<(u32, StoredRows)> = (0..4)
        .map(|p| {
            let rows = a.checkpoint(p);
            assert!(!rows.is_empty(), "partition {p} has rows");
            (
                p,
                rows.into_iter()
                    .map(|(k, v)| (k, v.expect("live")))
                    .collect(),
            )
        })
        .collect();
    assert!(a.checkpoint(0).is_empty(), "nothing changed since");

    // A fresh engine given the rows continues where `a` was: the same
    // points from here give the same transitions.
    let mut b = Engine::new(partitioner(), EngineLimits::default());
    b.set_rules(rules(), 1000 * S);
    assert_eq!(
        b.assign(&[0, 1, 2, 3], saved, 1000 * S),
        0,
        "every row taken"
    );
    assert_eq!(b.states(), a.states());
    let (mut from_a, mut from_b) = (Vec::new(), Vec::new());
    for (i, d) in devices(8).iter().enumerate() {
        let x = 35.0 - i as f64;
        a.observe("acme", d, &temp(20, x), 20 * S, &mut from_a);
        b.observe("acme", d, &temp(20, x), 20 * S, &mut from_b);
    }
    assert!(!from_a.is_empty());
    assert_eq!(from_a, from_b);
    // The no-data deadlines came back too: every device last reported at
    // 20 s, so all fire at 80 s, in either engine.
    for p in 0..4 {
        a.advance_clock(p, 85 * S);
        b.advance_clock(p, 85 * S);
    }
    let (mut qa, mut qb) = (Vec::new(), Vec::new());
    a.tick(&mut qa);
    b.tick(&mut qb);
    assert_eq!(qa.len(), 8, "{qa:?}");
    qa.sort_by(|x, y| x.device.cmp(&y.device));
    qb.sort_by(|x, y| x.device.cmp(&y.device));
    assert_eq!(qa, qb);
}

#[test]
fn replaying_points_already_judged_fires_nothing_twice() {
    let mut e = Engine::new(partitioner(), EngineLimits::default());
    e.assign(&[0], Vec::new(), 0);
    e.set_rules(vec![(above("hot", 30.0), vec!["d0".into()])], 0);
    let mut out = Vec::new();
    let stream = [(1, 20.0), (2, 40.0), (3, 20.0), (4, 41.0)];
    for (t, x) in stream {
        e.observe("acme", "d0", &temp(t, x), t * S, &mut out);
    }
    assert_eq!(out.len(), 3);
    let mut again = Vec::new();
    for (t, x) in stream {
        e.observe("acme", "d0", &temp(t, x), t * S, &mut again);
    }
    assert!(again.is_empty(), "{again:?}");
}

#[test]
fn no_data_counts_from_arming_for_devices_that_never_reported() {
    let mut e = Engine::new(partitioner(), EngineLimits::default());
    e.assign(&[0, 1], Vec::new(), 0);
    // Rule created at 50 s; devices d0..d3, of which this engine owns the
    // partitions of d0 and d1.
    let rule = Rule {
        created_ns: 50 * S,
        ..no_data("quiet", 60)
    };
    e.set_rules(vec![(rule, devices(4))], 10 * S);
    let mut out = Vec::new();
    e.observe("acme", "d0", &temp(1, 1.0), 100 * S, &mut out);
    for p in [0, 1] {
        e.advance_clock(p, 115 * S);
    }
    e.tick(&mut out);
    // d1 never reported: due 60 s after the rule's creation.
    assert_eq!(states(&out), vec![("d1".into(), AlertState::Firing)]);
    assert_eq!(out[0].change.started_ns, 110 * S);
    assert_eq!(out[0].summary, "no temp for 1m");
    out.clear();
    // d0 reported at 100 s: due at 160 s. A clock of one partition does not
    // fire another's.
    e.advance_clock(1, 200 * S);
    e.tick(&mut out);
    assert!(out.is_empty(), "{out:?}");
    e.advance_clock(0, 160 * S);
    e.tick(&mut out);
    assert_eq!(states(&out), vec![("d0".into(), AlertState::Firing)]);
    out.clear();
    // Reporting again resolves it and arms it again.
    e.observe("acme", "d0", &temp(2, 1.0), 170 * S, &mut out);
    assert_eq!(states(&out), vec![("d0".into(), AlertState::Resolved)]);
    out.clear();
    e.advance_clock(0, 229 * S);
    e.tick(&mut out);
    assert!(out.is_empty());
    e.advance_clock(0, 230 * S);
    e.tick(&mut out);
    assert_eq!(states(&out), vec![("d0".into(), AlertState::Firing)]);
}

#[test]
fn a_partition_that_moves_carries_its_alerts_to_the_new_owner() {
    let rules = || vec![(above("hot", 30.0), devices(4))];
    let mut a = Engine::new(partitioner(), EngineLimits::default());
    a.assign(&[0, 1, 2, 3], Vec::new(), 0);
    a.set_rules(rules(), 0);
    let mut out = Vec::new();
    a.observe("acme", "d2", &temp(1, 40.0), S, &mut out);
    assert_eq!(states(&out), vec![("d2".into(), AlertState::Firing)]);
    let rows: Vec<(Vec<u8>, Vec<u8>)> = a
        .checkpoint(2)
        .into_iter()
        .map(|(k, v)| (k, v.expect("live")))
        .collect();
    // Partition 2 moves from a to b.
    a.assign(&[0, 1, 3], Vec::new(), 2 * S);
    let mut b = Engine::new(partitioner(), EngineLimits::default());
    b.set_rules(rules(), 2 * S);
    b.assign(&[2], vec![(2, rows)], 2 * S);
    out.clear();
    a.observe("acme", "d2", &temp(3, 10.0), 3 * S, &mut out);
    assert!(out.is_empty(), "a no longer owns d2");
    // b resolves the alert a fired: it knew it was firing.
    b.observe("acme", "d2", &temp(3, 10.0), 3 * S, &mut out);
    assert_eq!(states(&out), vec![("d2".into(), AlertState::Resolved)]);
    assert_eq!(
        out[0].alert_id,
        tributary_rules::alert_id("acme", "hot", "d2", "temp", S)
    );
}

#[test]
fn changing_or_deleting_a_rule_resolves_its_alerts_and_drops_its_state() {
    let mut e = Engine::new(partitioner(), EngineLimits::default());
    e.assign(&[0, 1], Vec::new(), 0);
    e.set_rules(vec![(above("hot", 30.0), devices(2))], 0);
    let mut out = Vec::new();
    e.observe("acme", "d0", &temp(1, 40.0), S, &mut out);
    e.observe("acme", "d1", &temp(1, 20.0), S, &mut out);
    assert_eq!(e.states(), 2);
    // Same revision: kept.
    assert!(
        e.set_rules(vec![(above("hot", 30.0), devices(2))], 5 * S)
            .is_empty()
    );
    assert_eq!(e.states(), 2);
    // A new revision: the firing alert resolves, states start over.
    let changed = Rule {
        revision: 2,
        ..above("hot", 50.0)
    };
    let resolved = e.set_rules(vec![(changed, devices(2))], 6 * S);
    assert_eq!(states(&resolved), vec![("d0".into(), AlertState::Resolved)]);
    assert!(resolved[0].change.fired);
    assert_eq!(resolved[0].change.at_ns, 6 * S);
    assert_eq!(e.states(), 0);
    // The checkpoint deletes the old rows.
    let rows = e.checkpoint(0);
    assert!(rows.iter().all(|(_, v)| v.is_none()), "{rows:?}");
    assert!(!rows.is_empty());
    // Deleted.
    e.observe("acme", "d0", &temp(2, 60.0), 7 * S, &mut out);
    out.clear();
    let resolved = e.set_rules(Vec::new(), 8 * S);
    assert_eq!(states(&resolved), vec![("d0".into(), AlertState::Resolved)]);
}

#[test]
fn stale_or_corrupt_checkpoint_rows_are_skipped() {
    let mut a = Engine::new(partitioner(), EngineLimits::default());
    a.assign(&[0], Vec::new(), 0);
    a.set_rules(vec![(above("hot", 30.0), vec!["d0".into()])], 0);
    let mut out = Vec::new();
    a.observe("acme", "d0", &temp(1, 40.0), S, &mut out);
    let mut rows: Vec<(Vec<u8>, Vec<u8>)> = a
        .checkpoint(0)
        .into_iter()
        .map(|(k, v)| (k, v.expect("live")))
        .collect();
    rows.push((b"acme/d0\0hot".to_vec(), vec![1, 2, 3]));
    rows.push((b"no separator".to_vec(), vec![]));
    let mut b = Engine::new(partitioner(), EngineLimits::default());
    // The rule changed meanwhile: its old row is stale.
    b.set_rules(
        vec![(
            Rule {
                revision: 2,
                ..above("hot", 30.0)
            },
            vec!["d0".into()],
        )],
        0,
    );
    assert_eq!(b.assign(&[0], vec![(0, rows)], 0), 3);
    assert_eq!(b.states(), 0);
}

#[test]
fn states_past_the_limit_are_refused_and_counted() {
    let mut e = Engine::new(partitioner(), EngineLimits { max_states: 3 });
    e.assign(&[0, 1, 2, 3], Vec::new(), 0);
    e.set_rules(vec![(above("hot", 30.0), devices(10))], 0);
    let mut out = Vec::new();
    for d in devices(10) {
        e.observe("acme", &d, &temp(1, 40.0), S, &mut out);
    }
    assert_eq!(out.len(), 3);
    assert_eq!(e.states(), 3);
    assert_eq!(e.refused_states(), 7);
}

#[test]
fn ten_thousand_no_data_series_fire_each_once() {
    let mut e = Engine::new(partitioner(), EngineLimits::default());
    e.assign(&[0, 1, 2, 3], Vec::new(), 0);
    e.set_rules(vec![(no_data("quiet", 60), devices(10_000))], 0);
    let mut out = Vec::new();
    // Half report at 30 s.
    for d in devices(10_000).iter().step_by(2) {
        e.observe("acme", d, &temp(1, 1.0), 30 * S, &mut out);
    }
    for step in 0..20 {
        for p in 0..4 {
            e.advance_clock(p, (55 + step * 3) * S);
        }
        e.tick(&mut out);
        if step == 3 {
            assert_eq!(out.len(), 5_000, "only the silent half by 64 s");
        }
    }
    assert_eq!(out.len(), 10_000);
    let mut ids: Vec<&str> = out.iter().map(|t| t.alert_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 10_000, "every alert its own id");
}

#[test]
fn an_offline_rule_fires_on_the_partition_clock_after_its_grace() {
    let rule = Rule {
        metric: tributary_rules::PRESENCE_METRIC.into(),
        kind: Kind::Offline { grace_ns: 30 * S },
        ..above("gone", 0.0)
    };
    let mut engine = Engine::new(partitioner(), EngineLimits::default());
    engine.set_rules(vec![(rule, vec!["d0".into()])], 0);
    engine.assign(&[0], Vec::new(), 0);
    let presence = |ts_s: i64, online: bool| {
        vec![Point {
            metric: tributary_rules::PRESENCE_METRIC.into(),
            ts_ns: ts_s * S,
            value: Value::Bool(online),
        }]
    };
    let mut out = Vec::new();
    engine.observe_presence("acme", "d0", &presence(10, true), 10 * S, &mut out);
    engine.observe_presence("acme", "d0", &presence(20, false), 20 * S, &mut out);
    engine.advance_clock(0, 49 * S);
    engine.tick(&mut out);
    assert!(out.is_empty(), "within the grace: {out:?}");
    engine.advance_clock(0, 51 * S);
    engine.tick(&mut out);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].change.state, AlertState::Firing);
    assert_eq!(out[0].change.started_ns, 50 * S);
    assert_eq!(out[0].summary, "offline for 30s");
    engine.observe_presence("acme", "d0", &presence(60, true), 60 * S, &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].change.state, AlertState::Resolved);
    // Offline again: a new grace, a new alert.
    engine.observe_presence("acme", "d0", &presence(70, false), 70 * S, &mut out);
    engine.advance_clock(0, 101 * S);
    engine.tick(&mut out);
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(out[2].change.started_ns, 100 * S);
    assert_ne!(out[2].alert_id, out[0].alert_id);
    engine.observe_presence("acme", "d0", &presence(110, true), 110 * S, &mut out);
    assert_eq!(out.len(), 4);
    // The device sending `presence.online` itself changes nothing.
    engine.observe("acme", "d0", &presence(120, false), 120 * S, &mut out);
    engine.advance_clock(0, 300 * S);
    engine.tick(&mut out);
    assert_eq!(out.len(), 4, "a device cannot fake its presence: {out:?}");
}
