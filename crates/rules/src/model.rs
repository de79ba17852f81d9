//! Rule definitions and their validation. Stored by the registry as JSON
//! (serde), carried over gRPC as `tributary.v1.Rule` ([`crate::convert`]).

use serde::{Deserialize, Serialize};
use tributary_core::Limits;
use tributary_core::model::{ValidationError, validate_device_id, validate_metric};
use tributary_core::selector::Selector;
use tributary_core::time::{NS_PER_DAY, NS_PER_SEC};

/// Which devices a rule watches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "TargetRepr", try_from = "TargetRepr")]
pub enum Target {
    /// One device.
    Device(String),
    /// Every device of the tenant whose labels match.
    Selector(Selector),
}

/// How bad an alert is; carried on its events for receivers to route.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    #[default]
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// A threshold's comparison.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Breached while the value is greater than the limit.
    Above(f64),
    /// Breached while the value is less than the limit.
    Below(f64),
    /// Breached while the value is outside `[low, high]`.
    Outside(f64, f64),
}

/// A value compared with limits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    pub op: Op,
    /// A firing alert clears only once the value is back inside by this
    /// much (`Above(x)` clears at or below `x - hysteresis`), so that a
    /// value hovering at the limit does not flap.
    pub hysteresis: f64,
}

/// Which way a change counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Rises and falls alike.
    #[default]
    Either,
    Rise,
    Fall,
}

/// The change of a value over a trailing window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateOfChange {
    /// How far back the change is measured.
    pub window_ns: i64,
    /// Breached when the change (or the rate) exceeds this, in the
    /// direction asked.
    pub bound: f64,
    /// Compare the change per second instead of the difference.
    pub per_second: bool,
    pub direction: Direction,
}

/// A value unusually far from its exponentially weighted mean.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// Weight of each new point, in (0, 1].
    pub alpha: f64,
    /// Breached when `|x − mean| > k·stddev`.
    pub k: f64,
    /// Points seen before any can be judged.
    pub warmup: u32,
}

/// What a rule watches for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Threshold(Threshold),
    RateOfChange(RateOfChange),
    Anomaly(Anomaly),
    /// No point of the metric within `timeout_ns` (on the processor's
    /// clock), including from a device that never reported since the rule
    /// was created.
    NoData {
        timeout_ns: i64,
    },
    /// The device has been offline (its last MQTT connection closed, or its
    /// keep-alive ran out) for `grace_ns`, by the presence its frontends
    /// record as the metric [`PRESENCE_METRIC`]; resolves when it is back.
    Offline {
        grace_ns: i64,
    },
}

pub use tributary_core::model::PRESENCE_METRIC;

/// A rule of a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub tenant: String,
    /// Unique within the tenant.
    pub name: String,
    /// Bumped by every change; the state of an older revision is dropped.
    pub revision: u64,
    pub target: Target,
    pub metric: String,
    pub kind: Kind,
    /// How long a breach must last, in point time, before the alert fires
    /// (threshold, rate of change and anomaly); 0 fires at once.
    pub for_ns: i64,
    pub severity: Severity,
    /// When the rule was created: a no-data rule counts its first timeout
    /// from here for devices that never reported.
    pub created_ns: i64,
    /// Free text for the people who get its alerts.
    #[serde(default)]
    pub description: String,
}

/// How a [`Target`] is stored: `{"device": "d1"}` or `{"selector": "k=v"}`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum TargetRepr {
    Device(String),
    Selector(String),
}

impl From<Target> for TargetRepr {
    fn from(t: Target) -> Self {
        match t {
            Target::Device(d) => Self::Device(d),
            Target::Selector(s) => Self::Selector(s.to_string()),
        }
    }
}

impl TryFrom<TargetRepr> for Target {
    type Error = String;
    fn try_from(t: TargetRepr) -> Result<Self, String> {
        Ok(match t {
            TargetRepr::Device(d) => Self::Device(d),
            TargetRepr::Selector(s) => Self::Selector(Selector::parse(&s).map_err(|e| e.message)?),
        })
    }
}

/// Bounds on what a rule may ask for.
pub mod bounds {
    use super::{NS_PER_DAY, NS_PER_SEC};
    /// Rule names: 1..=64 bytes.
    pub const MAX_NAME: usize = 64;
    /// Descriptions: at most 1 KiB.
    pub const MAX_DESCRIPTION: usize = 1024;
    /// Longest `for`.
    pub const MAX_FOR_NS: i64 = 7 * NS_PER_DAY;
    /// Shortest and longest no-data timeout.
    pub const MIN_TIMEOUT_NS: i64 = NS_PER_SEC;
    pub const MAX_TIMEOUT_NS: i64 = 30 * NS_PER_DAY;
    /// Longest offline grace (0 fires at the disconnect).
    pub const MAX_GRACE_NS: i64 = 30 * NS_PER_DAY;
    /// Shortest and longest rate-of-change window.
    pub const MIN_WINDOW_NS: i64 = NS_PER_SEC;
    pub const MAX_WINDOW_NS: i64 = NS_PER_DAY;
    /// Largest anomaly `k` and warm-up.
    pub const MAX_K: f64 = 1000.0;
    pub const MAX_WARMUP: u32 = 1_000_000;
}

impl Rule {
    /// Checks every field against [`bounds`] and `limits`; the error names
    /// the field.
    pub fn validate(&self, limits: &Limits) -> Result<(), ValidationError> {
        validate_name(&self.name)?;
        if self.description.len() > bounds::MAX_DESCRIPTION {
            return Err(ValidationError::new(
                "description",
                format!("longer than {} bytes", bounds::MAX_DESCRIPTION),
            ));
        }
        match &self.target {
            Target::Device(d) => validate_device_id(d, limits)?,
            Target::Selector(_) => {}
        }
        validate_metric(&self.metric, limits)?;
        let duration = |field: &str, ns: i64, min: i64, max: i64| {
            if ns < min || ns > max {
                Err(ValidationError::new(
                    field,
                    format!(
                        "must be from {} to {}",
                        tributary_core::rollup::width_name(min),
                        tributary_core::rollup::width_name(max)
                    ),
                ))
            } else {
                Ok(())
            }
        };
        let finite = |field: &str, x: f64| {
            if x.is_finite() {
                Ok(())
            } else {
                Err(ValidationError::new(field, "must be a finite number"))
            }
        };
        duration("for", self.for_ns, 0, bounds::MAX_FOR_NS)?;
        match &self.kind {
            Kind::Threshold(t) => {
                match t.op {
                    Op::Above(x) | Op::Below(x) => finite("threshold.value", x)?,
                    Op::Outside(low, high) => {
                        finite("threshold.low", low)?;
                        finite("threshold.high", high)?;
                        if low >= high {
                            return Err(ValidationError::new(
                                "threshold.high",
                                "must be greater than low",
                            ));
                        }
                    }
                }
                finite("threshold.hysteresis", t.hysteresis)?;
                if t.hysteresis < 0.0 {
                    return Err(ValidationError::new(
                        "threshold.hysteresis",
                        "must not be negative",
                    ));
                }
                if let Op::Outside(low, high) = t.op
                    && 2.0 * t.hysteresis >= high - low
                {
                    return Err(ValidationError::new(
                        "threshold.hysteresis",
                        "must be less than half of high - low, or the alert could never clear",
                    ));
                }
            }
            Kind::RateOfChange(r) => {
                duration(
                    "rate_of_change.window",
                    r.window_ns,
                    bounds::MIN_WINDOW_NS,
                    bounds::MAX_WINDOW_NS,
                )?;
                finite("rate_of_change.bound", r.bound)?;
                if r.bound <= 0.0 {
                    return Err(ValidationError::new(
                        "rate_of_change.bound",
                        "must be greater than 0",
                    ));
                }
            }
            Kind::Anomaly(a) => {
                if !(a.alpha > 0.0 && a.alpha <= 1.0) {
                    return Err(ValidationError::new(
                        "anomaly.alpha",
                        "must be greater than 0 and at most 1",
                    ));
                }
                if !(a.k > 0.0 && a.k <= bounds::MAX_K) {
                    return Err(ValidationError::new(
                        "anomaly.k",
                        format!("must be greater than 0 and at most {}", bounds::MAX_K),
                    ));
                }
                if a.warmup > bounds::MAX_WARMUP {
                    return Err(ValidationError::new(
                        "anomaly.warmup",
                        format!("must be at most {}", bounds::MAX_WARMUP),
                    ));
                }
            }
            Kind::NoData { timeout_ns } => {
                duration(
                    "no_data.timeout",
                    *timeout_ns,
                    bounds::MIN_TIMEOUT_NS,
                    bounds::MAX_TIMEOUT_NS,
                )?;
                if self.for_ns != 0 {
                    return Err(ValidationError::new(
                        "for",
                        "a no-data rule has a timeout instead",
                    ));
                }
            }
            Kind::Offline { grace_ns } => {
                duration("offline.grace", *grace_ns, 0, bounds::MAX_GRACE_NS)?;
                if self.metric != PRESENCE_METRIC {
                    return Err(ValidationError::new(
                        "metric",
                        format!("an offline rule watches {PRESENCE_METRIC}"),
                    ));
                }
                if self.for_ns != 0 {
                    return Err(ValidationError::new(
                        "for",
                        "an offline rule has a grace instead",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether the rule watches `device` with these labels.
    pub fn targets(
        &self,
        device: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> bool {
        match &self.target {
            Target::Device(d) => d == device,
            Target::Selector(s) => s.matches(labels),
        }
    }
}

/// Rule names: 1..=64 bytes of `[a-z0-9._-]`, starting with a letter or
/// digit (they appear in MQTT topics and URLs).
pub fn validate_name(name: &str) -> Result<(), ValidationError> {
    if name.is_empty() || name.len() > bounds::MAX_NAME {
        return Err(ValidationError::new(
            "name",
            format!("must be 1 to {} bytes", bounds::MAX_NAME),
        ));
    }
    if let Some(c) = name
        .bytes()
        .find(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(b)))
    {
        return Err(ValidationError::new(
            "name",
            format!(
                "invalid character {:?}; use a-z, 0-9, '.', '_' and '-'",
                c as char
            ),
        ));
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(ValidationError::new(
            "name",
            "must start with a letter or digit",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(kind: Kind) -> Rule {
        Rule {
            tenant: "acme".into(),
            name: "freezer-warm".into(),
            revision: 1,
            target: Target::Selector(Selector::parse("kind=freezer").unwrap()),
            metric: "temp".into(),
            kind,
            for_ns: 600 * NS_PER_SEC,
            severity: Severity::Critical,
            created_ns: 0,
            description: String::new(),
        }
    }

    #[test]
    fn rules_round_trip_through_json() {
        for kind in [
            threshold(Op::Outside(-1.0, 2.5), 0.25),
            Kind::NoData {
                timeout_ns: 60 * NS_PER_SEC,
            },
            Kind::RateOfChange(RateOfChange {
                window_ns: NS_PER_SEC,
                bound: 3.0,
                per_second: true,
                direction: Direction::Fall,
            }),
        ] {
            let r = Rule {
                description: "freezer door left open".into(),
                ..rule(kind)
            };
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Rule>(&json).unwrap(), r, "{json}");
        }
        let device = Rule {
            target: Target::Device("d1".into()),
            ..rule(threshold(Op::Above(1.0), 0.0))
        };
        let json = serde_json::to_string(&device).unwrap();
        assert!(json.contains(r#""target":{"device":"d1"}"#), "{json}");
        assert!(
            serde_json::from_str::<Rule>(
                &json.replace(r#"{"device":"d1"}"#, r#"{"selector":"=x"}"#)
            )
            .is_err()
        );
    }

    fn threshold(op: Op, hysteresis: f64) -> Kind {
        Kind::Threshold(Threshold { op, hysteresis })
    }

    fn refused(r: &Rule) -> String {
        r.validate(&Limits::default()).unwrap_err().field
    }

    #[test]
    fn the_three_questions_are_valid_rules() {
        let limits = Limits::default();
        rule(threshold(Op::Above(-15.0), 0.5))
            .validate(&limits)
            .unwrap();
        Rule {
            for_ns: 0,
            ..rule(Kind::NoData {
                timeout_ns: 3600 * NS_PER_SEC,
            })
        }
        .validate(&limits)
        .unwrap();
        rule(Kind::Anomaly(Anomaly {
            alpha: 0.05,
            k: 4.0,
            warmup: 100,
        }))
        .validate(&limits)
        .unwrap();
    }

    #[test]
    fn every_refusal_names_its_field() {
        let ok = rule(threshold(Op::Above(1.0), 0.0));
        assert_eq!(
            refused(&Rule {
                name: "Bad Name".into(),
                ..ok.clone()
            }),
            "name"
        );
        assert_eq!(
            refused(&Rule {
                name: "-x".into(),
                ..ok.clone()
            }),
            "name"
        );
        assert_eq!(
            refused(&Rule {
                name: "x".repeat(65),
                ..ok.clone()
            }),
            "name"
        );
        assert_eq!(
            refused(&Rule {
                metric: "".into(),
                ..ok.clone()
            }),
            "metric"
        );
        assert_eq!(
            refused(&Rule {
                target: Target::Device("a/b".into()),
                ..ok.clone()
            }),
            "device"
        );
        assert_eq!(
            refused(&Rule {
                for_ns: -1,
                ..ok.clone()
            }),
            "for"
        );
        assert_eq!(
            refused(&Rule {
                for_ns: 8 * NS_PER_DAY,
                ..ok.clone()
            }),
            "for"
        );
        assert_eq!(
            refused(&rule(threshold(Op::Above(f64::NAN), 0.0))),
            "threshold.value"
        );
        assert_eq!(
            refused(&rule(threshold(Op::Outside(2.0, 1.0), 0.0))),
            "threshold.high"
        );
        assert_eq!(
            refused(&rule(threshold(Op::Outside(0.0, 1.0), 0.5))),
            "threshold.hysteresis"
        );
        assert_eq!(
            refused(&rule(threshold(Op::Below(0.0), -1.0))),
            "threshold.hysteresis"
        );
        let rate = |window_ns, bound| {
            rule(Kind::RateOfChange(RateOfChange {
                window_ns,
                bound,
                per_second: false,
                direction: Direction::Either,
            }))
        };
        assert_eq!(refused(&rate(0, 1.0)), "rate_of_change.window");
        assert_eq!(refused(&rate(2 * NS_PER_DAY, 1.0)), "rate_of_change.window");
        assert_eq!(refused(&rate(NS_PER_SEC, 0.0)), "rate_of_change.bound");
        let anomaly = |alpha, k, warmup| rule(Kind::Anomaly(Anomaly { alpha, k, warmup }));
        assert_eq!(refused(&anomaly(0.0, 3.0, 10)), "anomaly.alpha");
        assert_eq!(refused(&anomaly(1.5, 3.0, 10)), "anomaly.alpha");
        assert_eq!(refused(&anomaly(0.1, f64::INFINITY, 10)), "anomaly.k");
        assert_eq!(refused(&anomaly(0.1, 3.0, 2_000_000)), "anomaly.warmup");
        let no_data = |timeout_ns, for_ns| Rule {
            for_ns,
            ..rule(Kind::NoData { timeout_ns })
        };
        assert_eq!(refused(&no_data(NS_PER_SEC / 2, 0)), "no_data.timeout");
        assert_eq!(refused(&no_data(60 * NS_PER_SEC, 5)), "for");
    }
}
