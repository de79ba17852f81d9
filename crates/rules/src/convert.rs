//! `tributary.v1.Rule` and `AlertEvent` to and from the model.

use tributary_core::Limits;
use tributary_core::model::ValidationError;
use tributary_core::rollup::width_name;
use tributary_core::selector::Selector;
use tributary_core::time::parse_duration;
use tributary_proto::v1 as pb;

use crate::engine::Transition;
use crate::eval::AlertState;
use crate::model::{Anomaly, Direction, Kind, Op, RateOfChange, Rule, Severity, Target, Threshold};

/// Defaults of an anomaly rule's zero fields.
pub const DEFAULT_ALPHA: f64 = 0.05;
pub const DEFAULT_K: f64 = 4.0;
pub const DEFAULT_WARMUP: u32 = 30;

/// A requested rule of `tenant`, validated. Revision and creation time are
/// the registry's, left 0.
pub fn rule_from_pb(r: &pb::Rule, tenant: &str, limits: &Limits) -> Result<Rule, ValidationError> {
    use pb::rule::{Kind as K, Target as T};
    let target = match &r.target {
        Some(T::Device(d)) => Target::Device(d.clone()),
        Some(T::Selector(s)) => Target::Selector(Selector::parse(s)?),
        None => {
            return Err(ValidationError::new(
                "target",
                "name a device or a selector",
            ));
        }
    };
    let duration = |field: &str, s: &str| -> Result<i64, ValidationError> {
        parse_duration(s).ok_or_else(|| {
            ValidationError::new(
                field,
                format!("{s:?} is not a duration such as 30s, 10m or 1h"),
            )
        })
    };
    let kind = match &r.kind {
        Some(K::Threshold(t)) => {
            use pb::threshold_rule::Op as P;
            let op = match P::try_from(t.op) {
                Ok(P::Above) => Op::Above(t.value),
                Ok(P::Below) => Op::Below(t.value),
                Ok(P::Outside) => Op::Outside(t.value, t.high),
                _ => {
                    return Err(ValidationError::new(
                        "threshold.op",
                        "use OP_ABOVE, OP_BELOW or OP_OUTSIDE",
                    ));
                }
            };
            Kind::Threshold(Threshold {
                op,
                hysteresis: t.hysteresis,
            })
        }
        Some(K::NoData(n)) => Kind::NoData {
            timeout_ns: duration("no_data.timeout", &n.timeout)?,
        },
        Some(K::Offline(o)) => Kind::Offline {
            grace_ns: if o.grace.is_empty() {
                0
            } else {
                duration("offline.grace", &o.grace)?
            },
        },
        Some(K::RateOfChange(c)) => {
            use pb::rate_of_change_rule::Direction as D;
            Kind::RateOfChange(RateOfChange {
                window_ns: duration("rate_of_change.window", &c.window)?,
                bound: c.bound,
                per_second: c.per_second,
                direction: match D::try_from(c.direction) {
                    Ok(D::Either) => Direction::Either,
                    Ok(D::Rise) => Direction::Rise,
                    Ok(D::Fall) => Direction::Fall,
                    Err(_) => {
                        return Err(ValidationError::new(
                            "rate_of_change.direction",
                            "unknown direction",
                        ));
                    }
                },
            })
        }
        Some(K::Anomaly(a)) => Kind::Anomaly(Anomaly {
            alpha: if a.alpha == 0.0 {
                DEFAULT_ALPHA
            } else {
                a.alpha
            },
            k: if a.k == 0.0 { DEFAULT_K } else { a.k },
            warmup: if a.warmup == 0 {
                DEFAULT_WARMUP
            } else {
                a.warmup
            },
        }),
        None => {
            return Err(ValidationError::new(
                "kind",
                "give one of threshold, no_data, rate_of_change or anomaly",
            ));
        }
    };
    let for_ns = if r.for_duration.is_empty() {
        0
    } else {
        duration("for", &r.for_duration)?
    };
    let severity = match pb::Severity::try_from(r.severity) {
        Ok(pb::Severity::Unspecified | pb::Severity::Warning) => Severity::Warning,
        Ok(pb::Severity::Info) => Severity::Info,
        Ok(pb::Severity::Critical) => Severity::Critical,
        Err(_) => return Err(ValidationError::new("severity", "unknown severity")),
    };
    let rule = Rule {
        tenant: tenant.to_owned(),
        name: r.name.clone(),
        revision: 0,
        target,
        metric: r.metric.clone(),
        kind,
        for_ns,
        severity,
        created_ns: 0,
        description: r.description.clone(),
    };
    rule.validate(limits)?;
    Ok(rule)
}

/// The wire form of a stored rule.
pub fn rule_to_pb(r: &Rule) -> pb::Rule {
    use pb::rule::{Kind as K, Target as T};
    let kind = match &r.kind {
        Kind::Threshold(t) => {
            use pb::threshold_rule::Op as P;
            let (op, value, high) = match t.op {
                Op::Above(x) => (P::Above, x, 0.0),
                Op::Below(x) => (P::Below, x, 0.0),
                Op::Outside(lo, hi) => (P::Outside, lo, hi),
            };
            K::Threshold(pb::ThresholdRule {
                op: op as i32,
                value,
                high,
                hysteresis: t.hysteresis,
            })
        }
        Kind::NoData { timeout_ns } => K::NoData(pb::NoDataRule {
            timeout: width_name(*timeout_ns),
        }),
        Kind::Offline { grace_ns } => K::Offline(pb::OfflineRule {
            grace: if *grace_ns == 0 {
                String::new()
            } else {
                width_name(*grace_ns)
            },
        }),
        Kind::RateOfChange(c) => {
            use pb::rate_of_change_rule::Direction as D;
            K::RateOfChange(pb::RateOfChangeRule {
                window: width_name(c.window_ns),
                bound: c.bound,
                per_second: c.per_second,
                direction: match c.direction {
                    Direction::Either => D::Either,
                    Direction::Rise => D::Rise,
                    Direction::Fall => D::Fall,
                } as i32,
            })
        }
        Kind::Anomaly(a) => K::Anomaly(pb::AnomalyRule {
            alpha: a.alpha,
            k: a.k,
            warmup: a.warmup,
        }),
    };
    pb::Rule {
        tenant: r.tenant.clone(),
        name: r.name.clone(),
        target: Some(match &r.target {
            Target::Device(d) => T::Device(d.clone()),
            Target::Selector(s) => T::Selector(s.to_string()),
        }),
        metric: r.metric.clone(),
        kind: Some(kind),
        for_duration: if r.for_ns == 0 {
            String::new()
        } else {
            width_name(r.for_ns)
        },
        severity: severity_to_pb(r.severity) as i32,
        description: r.description.clone(),
        created_at_ns: r.created_ns,
        revision: r.revision,
    }
}

fn severity_to_pb(s: Severity) -> pb::Severity {
    match s {
        Severity::Info => pb::Severity::Info,
        Severity::Warning => pb::Severity::Warning,
        Severity::Critical => pb::Severity::Critical,
    }
}

/// A silence as users see it.
pub fn silence_to_pb(s: &crate::Silence) -> pb::Silence {
    pb::Silence {
        tenant: s.tenant.clone(),
        rule: s.rule.clone(),
        device: s.device.clone(),
        until_ns: s.until_ns,
        comment: s.comment.clone(),
        created_by: s.created_by.clone(),
        created_at_ns: s.created_at_ns,
    }
}

/// A silence from the wire, as the registry sent it (already validated).
pub fn silence_from_pb(s: pb::Silence) -> crate::Silence {
    crate::Silence {
        key: crate::Silence::key_of(&s.rule, &s.device),
        tenant: s.tenant,
        rule: s.rule,
        device: s.device,
        until_ns: s.until_ns,
        comment: s.comment,
        created_by: s.created_by,
        created_at_ns: s.created_at_ns,
        revision: 0,
    }
}

/// The `tributary.alerts.v1` record value of a transition.
pub fn event_to_pb(t: &Transition) -> pb::AlertEvent {
    pb::AlertEvent {
        alert_id: t.alert_id.clone(),
        tenant: t.tenant.clone(),
        rule: t.rule.clone(),
        rule_revision: t.revision,
        device: t.device.clone(),
        metric: t.metric.clone(),
        state: match t.change.state {
            AlertState::Pending => pb::AlertState::Pending,
            AlertState::Firing => pb::AlertState::Firing,
            AlertState::Resolved => pb::AlertState::Resolved,
        } as i32,
        severity: severity_to_pb(t.severity) as i32,
        started_at_ns: t.change.started_ns,
        at_ns: t.change.at_ns,
        value: t.change.value,
        fired: t.change.fired,
        summary: t.summary.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> pb::Rule {
        pb::Rule {
            name: "freezer-warm".into(),
            target: Some(pb::rule::Target::Selector("kind=freezer".into())),
            metric: "temp".into(),
            kind: Some(pb::rule::Kind::Threshold(pb::ThresholdRule {
                op: pb::threshold_rule::Op::Above as i32,
                value: -15.0,
                high: 0.0,
                hysteresis: 0.5,
            })),
            for_duration: "10m".into(),
            severity: pb::Severity::Critical as i32,
            description: "call the night shift".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_rule_round_trips_through_the_wire_form() {
        let limits = Limits::default();
        let mut kinds = vec![request().kind];
        kinds.push(Some(pb::rule::Kind::NoData(pb::NoDataRule {
            timeout: "1h".into(),
        })));
        kinds.push(Some(pb::rule::Kind::RateOfChange(pb::RateOfChangeRule {
            window: "5m".into(),
            bound: 2.0,
            per_second: true,
            direction: pb::rate_of_change_rule::Direction::Rise as i32,
        })));
        kinds.push(Some(pb::rule::Kind::Anomaly(pb::AnomalyRule {
            alpha: 0.1,
            k: 3.0,
            warmup: 50,
        })));
        for kind in kinds {
            let no_data = matches!(kind, Some(pb::rule::Kind::NoData(_)));
            let req = pb::Rule {
                kind,
                for_duration: if no_data { String::new() } else { "10m".into() },
                ..request()
            };
            let rule = rule_from_pb(&req, "acme", &limits).unwrap();
            let back = rule_to_pb(&rule);
            assert_eq!(
                pb::Rule {
                    tenant: String::new(),
                    ..back
                },
                req
            );
        }
    }

    #[test]
    fn anomaly_defaults_fill_zero_fields() {
        let req = pb::Rule {
            kind: Some(pb::rule::Kind::Anomaly(pb::AnomalyRule::default())),
            ..request()
        };
        let rule = rule_from_pb(&req, "acme", &Limits::default()).unwrap();
        assert_eq!(
            rule.kind,
            Kind::Anomaly(Anomaly {
                alpha: DEFAULT_ALPHA,
                k: DEFAULT_K,
                warmup: DEFAULT_WARMUP
            })
        );
    }

    #[test]
    fn bad_requests_name_their_field() {
        let limits = Limits::default();
        let field = |r: pb::Rule| rule_from_pb(&r, "acme", &limits).unwrap_err().field;
        assert_eq!(
            field(pb::Rule {
                target: None,
                ..request()
            }),
            "target"
        );
        assert_eq!(
            field(pb::Rule {
                kind: None,
                ..request()
            }),
            "kind"
        );
        assert_eq!(
            field(pb::Rule {
                target: Some(pb::rule::Target::Selector("=x".into())),
                ..request()
            }),
            "selector"
        );
        assert_eq!(
            field(pb::Rule {
                for_duration: "soon".into(),
                ..request()
            }),
            "for"
        );
        assert_eq!(
            field(pb::Rule {
                severity: 9,
                ..request()
            }),
            "severity"
        );
        assert_eq!(
            field(pb::Rule {
                kind: Some(pb::rule::Kind::Threshold(pb::ThresholdRule::default())),
                ..request()
            }),
            "threshold.op"
        );
        assert_eq!(
            field(pb::Rule {
                kind: Some(pb::rule::Kind::NoData(pb::NoDataRule {
                    timeout: "".into()
                })),
                for_duration: String::new(),
                ..request()
            }),
            "no_data.timeout"
        );
    }
}
