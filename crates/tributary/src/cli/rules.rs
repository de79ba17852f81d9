//! `rules` commands: conditions on telemetry that raise alerts.

use anyhow::{Context, bail};
use serde_json::json;
use tributary_proto::v1 as pb;

use super::Ctx;
use crate::output::Rows;

#[derive(Debug, clap::Subcommand)]
pub enum RulesCmd {
    /// Create a rule. Give its target (--device or --selector), the metric,
    /// and one condition: --above, --below, --outside, --no-data, --rate or
    /// --anomaly.
    ///
    /// Examples:
    ///   tributary rules create freezer-warm --selector kind=freezer --metric temp --above -15 --for 10m --hysteresis 0.5
    ///   tributary rules create meter-silent --selector kind=meter --metric kwh --no-data 1h
    ///   tributary rules create pump-odd --selector kind=pump --metric vibration --anomaly --k 4
    #[command(verbatim_doc_comment)]
    Create(Box<CreateArgs>),
    /// List the tenant's rules.
    List {
        /// Rules per page (the CLI reads every page).
        #[arg(long, default_value_t = 100)]
        page_size: u32,
    },
    /// Show one rule.
    Get {
        /// The rule's name.
        name: String,
    },
    /// Delete a rule; its open alerts resolve.
    Delete {
        /// The rule's name.
        name: String,
    },
    /// Judge a rule over stored history, before creating it: when it
    /// would have fired. Takes the flags of `create`, and the range.
    ///
    /// Example:
    ///   tributary rules test freezer-warm --selector kind=freezer --metric temp --above -15 --for 10m --from 7d
    #[command(verbatim_doc_comment)]
    Test(Box<TestArgs>),
}

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    #[command(flatten)]
    rule: CreateArgs,
    /// From: RFC 3339, or a duration ago such as `7d`.
    #[arg(long, default_value = "7d")]
    from: String,
    /// To: RFC 3339, `now`, or a duration ago.
    #[arg(long, default_value = "now")]
    to: String,
    /// Most transitions shown.
    #[arg(long, default_value_t = 1000)]
    max_transitions: u32,
}

#[derive(Debug, clap::Args)]
#[command(group(
    clap::ArgGroup::new("target").required(true).args(["device", "selector"])
))]
#[command(group(
    clap::ArgGroup::new("condition")
        .required(true)
        .args(["above", "below", "outside", "no_data", "offline", "rate", "anomaly"])
))]
pub struct CreateArgs {
    /// The rule's name: 1 to 64 of a-z, 0-9, '.', '_', '-'.
    name: String,
    /// Watch one device.
    #[arg(long, short = 'd')]
    device: Option<String>,
    /// Watch every device whose labels match: `kind=freezer,site!=lab`.
    #[arg(long, short = 's')]
    selector: Option<String>,
    /// The metric to watch (not for --offline).
    #[arg(long, short = 'm', required_unless_present = "offline")]
    metric: Option<String>,
    /// Fire while the value is above this.
    #[arg(long, allow_hyphen_values = true)]
    above: Option<f64>,
    /// Fire while the value is below this.
    #[arg(long, allow_hyphen_values = true)]
    below: Option<f64>,
    /// Fire while the value is outside LOW,HIGH.
    #[arg(long, allow_hyphen_values = true, value_name = "LOW,HIGH")]
    outside: Option<String>,
    /// For thresholds: clear only once back inside by this much.
    #[arg(long, default_value_t = 0.0)]
    hysteresis: f64,
    /// Fire when no point arrives for this long: `10m`, `1h`.
    #[arg(long, value_name = "DURATION")]
    no_data: Option<String>,
    /// Fire when a device has been offline this long (`0s` at once): its
    /// last MQTT connection closed, by the presence its frontend records
    /// as the metric `presence.online`.
    #[arg(long, value_name = "GRACE", conflicts_with = "metric")]
    offline: Option<String>,
    /// Fire when the value changes by more than this over --window.
    #[arg(long, allow_hyphen_values = true, value_name = "BOUND")]
    rate: Option<f64>,
    /// For --rate: the trailing window, e.g. `5m`.
    #[arg(long, default_value = "5m")]
    window: String,
    /// For --rate: compare the change per second.
    #[arg(long)]
    per_second: bool,
    /// For --rate: `either`, `rise` or `fall`.
    #[arg(long, default_value = "either")]
    direction: String,
    /// Fire on values far from the series' exponentially weighted mean.
    #[arg(long)]
    anomaly: bool,
    /// For --anomaly: the weight of each new point, in (0, 1].
    #[arg(long, default_value_t = 0.05)]
    alpha: f64,
    /// For --anomaly: how many standard deviations count as anomalous.
    #[arg(long, default_value_t = 4.0)]
    k: f64,
    /// For --anomaly: points seen before any is judged.
    #[arg(long, default_value_t = 30)]
    warmup: u32,
    /// How long the condition must hold before the alert fires: `10m`.
    #[arg(long = "for", value_name = "DURATION")]
    for_duration: Option<String>,
    /// `info`, `warning` or `critical`.
    #[arg(long, default_value = "warning")]
    severity: String,
    /// Free text for the people who get its alerts.
    #[arg(long, default_value = "")]
    description: String,
}

pub async fn rules(ctx: &mut Ctx, cmd: RulesCmd) -> anyhow::Result<()> {
    match cmd {
        RulesCmd::Test(args) => {
            let TestArgs {
                rule,
                from,
                to,
                max_transitions,
            } = *args;
            let now = tributary_core::time::now_ns();
            let from_ns =
                super::query::parse_time(&from, now).with_context(|| format!("--from {from:?}"))?;
            let to_ns =
                super::query::parse_time(&to, now).with_context(|| format!("--to {to:?}"))?;
            let rule = request(rule, &ctx.tenant)?;
            let tested = ctx
                .query
                .test_rule(pb::TestRuleRequest {
                    rule: Some(rule),
                    from_ns,
                    to_ns,
                    max_transitions,
                })
                .await?
                .into_inner();
            let mut rows = Rows::new(vec!["at", "state", "device", "alert_id", "summary"]);
            for e in &tested.transitions {
                let state = match pb::AlertState::try_from(e.state) {
                    Ok(pb::AlertState::Pending) => "pending",
                    Ok(pb::AlertState::Firing) => "firing",
                    Ok(pb::AlertState::Resolved) => "resolved",
                    _ => "unknown",
                };
                rows.push(
                    vec![
                        tributary_core::time::format_rfc3339(e.at_ns),
                        state.to_owned(),
                        e.device.clone(),
                        e.alert_id.clone(),
                        e.summary.clone(),
                    ],
                    json!({
                        "at_ns": e.at_ns,
                        "state": state,
                        "device": e.device,
                        "alert_id": e.alert_id,
                        "started_at_ns": e.started_at_ns,
                        "value": e.value,
                        "summary": e.summary,
                    }),
                );
            }
            ctx.print(&rows);
            let fired = tested
                .transitions
                .iter()
                .filter(|e| e.state == pb::AlertState::Firing as i32)
                .count();
            eprintln!(
                "{fired} alerts would have fired over {} devices ({} samples read)",
                tested.devices, tested.samples_read
            );
            if tested.devices_on_rollups > 0 {
                eprintln!(
                    "note: {} devices were judged over {} rollup buckets (too many points): \
                     `for` and no-data gaps count in whole buckets there",
                    tested.devices_on_rollups, tested.coarsest_resolution
                );
            }
            if tested.truncated {
                eprintln!("note: more transitions than --max-transitions; the rest are not shown");
            }
        }
        RulesCmd::Create(args) => {
            let rule = request(*args, &ctx.tenant)?;
            let created = ctx
                .rules
                .create_rule(pb::CreateRuleRequest { rule: Some(rule) })
                .await?
                .into_inner();
            ctx.print(&rows(&[created]));
        }
        RulesCmd::List { page_size } => {
            let mut all = Vec::new();
            let mut token = String::new();
            loop {
                let page = ctx
                    .rules
                    .list_rules(pb::ListRulesRequest {
                        tenant: ctx.tenant.clone(),
                        page_size,
                        page_token: token,
                    })
                    .await?
                    .into_inner();
                all.extend(page.rules);
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            ctx.print(&rows(&all));
        }
        RulesCmd::Get { name } => {
            let rule = ctx
                .rules
                .get_rule(pb::GetRuleRequest {
                    tenant: ctx.tenant.clone(),
                    name,
                })
                .await?
                .into_inner();
            ctx.print(&rows(&[rule]));
        }
        RulesCmd::Delete { name } => {
            let deleted = ctx
                .rules
                .delete_rule(pb::DeleteRuleRequest {
                    tenant: ctx.tenant.clone(),
                    name: name.clone(),
                })
                .await?
                .into_inner()
                .deleted;
            if !deleted {
                bail!("no rule {name:?}");
            }
            eprintln!("deleted rule {name}");
        }
    }
    Ok(())
}

/// The request of `tributary rules create`.
fn request(a: CreateArgs, tenant: &str) -> anyhow::Result<pb::Rule> {
    use pb::rule::Kind;
    use pb::threshold_rule::Op;
    let threshold = |op: Op, value: f64, high: f64| {
        Kind::Threshold(pb::ThresholdRule {
            op: op as i32,
            value,
            high,
            hysteresis: a.hysteresis,
        })
    };
    let kind = if let Some(x) = a.above {
        threshold(Op::Above, x, 0.0)
    } else if let Some(x) = a.below {
        threshold(Op::Below, x, 0.0)
    } else if let Some(range) = &a.outside {
        let (low, high) = range
            .split_once(',')
            .and_then(|(l, h)| Some((l.trim().parse().ok()?, h.trim().parse().ok()?)))
            .with_context(|| format!("--outside {range:?}: expected LOW,HIGH such as -30,-15"))?;
        threshold(Op::Outside, low, high)
    } else if let Some(timeout) = &a.no_data {
        Kind::NoData(pb::NoDataRule {
            timeout: timeout.clone(),
        })
    } else if let Some(grace) = &a.offline {
        Kind::Offline(pb::OfflineRule {
            grace: if grace
                .trim_start_matches('0')
                .trim_start_matches(|c: char| c.is_alphabetic())
                .is_empty()
            {
                String::new()
            } else {
                grace.clone()
            },
        })
    } else if let Some(bound) = a.rate {
        use pb::rate_of_change_rule::Direction as D;
        Kind::RateOfChange(pb::RateOfChangeRule {
            window: a.window.clone(),
            bound,
            per_second: a.per_second,
            direction: match a.direction.as_str() {
                "either" => D::Either,
                "rise" => D::Rise,
                "fall" => D::Fall,
                other => bail!("--direction {other:?}: use either, rise or fall"),
            } as i32,
        })
    } else if a.anomaly {
        Kind::Anomaly(pb::AnomalyRule {
            alpha: a.alpha,
            k: a.k,
            warmup: a.warmup,
        })
    } else {
        bail!(
            "give a condition: --above, --below, --outside, --no-data, --offline, --rate or --anomaly"
        )
    };
    let severity = match a.severity.as_str() {
        "info" => pb::Severity::Info,
        "warning" => pb::Severity::Warning,
        "critical" => pb::Severity::Critical,
        other => bail!("--severity {other:?}: use info, warning or critical"),
    };
    Ok(pb::Rule {
        tenant: tenant.to_owned(),
        name: a.name,
        target: Some(match (a.device, a.selector) {
            (Some(d), _) => pb::rule::Target::Device(d),
            (None, Some(s)) => pb::rule::Target::Selector(s),
            (None, None) => bail!("give --device or --selector"),
        }),
        metric: if a.offline.is_some() {
            tributary_core::model::PRESENCE_METRIC.to_owned()
        } else {
            a.metric.unwrap_or_default()
        },
        kind: Some(kind),
        for_duration: a.for_duration.unwrap_or_default(),
        severity: severity as i32,
        description: a.description,
        ..Default::default()
    })
}

/// A rule's condition in words: `temp > -15 for 10m (clears at ≤ -15.5)`.
pub fn condition(r: &pb::Rule) -> String {
    use pb::rule::Kind;
    use pb::threshold_rule::Op;
    let m = &r.metric;
    let mut text = match &r.kind {
        Some(Kind::Threshold(t)) => {
            let h = t.hysteresis;
            let (cond, clear) = match Op::try_from(t.op) {
                Ok(Op::Above) => (format!("{m} > {}", t.value), format!("≤ {}", t.value - h)),
                Ok(Op::Below) => (format!("{m} < {}", t.value), format!("≥ {}", t.value + h)),
                Ok(Op::Outside) => (
                    format!("{m} outside [{}, {}]", t.value, t.high),
                    format!("inside [{}, {}]", t.value + h, t.high - h),
                ),
                _ => (format!("{m} ?"), String::new()),
            };
            if h > 0.0 {
                format!("{cond} (clears at {clear})")
            } else {
                cond
            }
        }
        Some(Kind::NoData(n)) => format!("no {m} for {}", n.timeout),
        Some(Kind::Offline(o)) if o.grace.is_empty() => "offline".to_owned(),
        Some(Kind::Offline(o)) => format!("offline for {}", o.grace),
        Some(Kind::RateOfChange(c)) => {
            use pb::rate_of_change_rule::Direction as D;
            let way = match D::try_from(c.direction) {
                Ok(D::Rise) => "rises",
                Ok(D::Fall) => "falls",
                _ => "changes",
            };
            let unit = if c.per_second { "/s" } else { "" };
            format!("{m} {way} by > {}{unit} over {}", c.bound, c.window)
        }
        Some(Kind::Anomaly(a)) => format!(
            "{m} > {}σ from its mean (α {}, after {} points)",
            a.k, a.alpha, a.warmup
        ),
        None => String::new(),
    };
    if !r.for_duration.is_empty() {
        text.push_str(&format!(" for {}", r.for_duration));
    }
    text
}

fn target(r: &pb::Rule) -> String {
    match &r.target {
        Some(pb::rule::Target::Device(d)) => format!("device {d}"),
        Some(pb::rule::Target::Selector(s)) => s.clone(),
        None => String::new(),
    }
}

fn severity(r: &pb::Rule) -> &'static str {
    match pb::Severity::try_from(r.severity) {
        Ok(pb::Severity::Info) => "info",
        Ok(pb::Severity::Critical) => "critical",
        _ => "warning",
    }
}

fn rows(rules: &[pb::Rule]) -> Rows {
    let mut rows = Rows::new(vec!["name", "target", "condition", "severity", "revision"]);
    for r in rules {
        rows.push(
            vec![
                r.name.clone(),
                target(r),
                condition(r),
                severity(r).to_owned(),
                r.revision.to_string(),
            ],
            json!({
                "tenant": r.tenant,
                "name": r.name,
                "target": target(r),
                "metric": r.metric,
                "condition": condition(r),
                "for": r.for_duration,
                "severity": severity(r),
                "description": r.description,
                "created_at_ns": r.created_at_ns,
                "revision": r.revision,
            }),
        );
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: RulesCmd,
    }

    fn create(args: &str) -> anyhow::Result<pb::Rule> {
        let argv = std::iter::once("rules").chain(args.split_whitespace());
        let Cli {
            cmd: RulesCmd::Create(a),
        } = Cli::try_parse_from(argv)?
        else {
            bail!("not create")
        };
        request(*a, "")
    }

    #[test]
    fn the_three_questions_parse_and_read_back() {
        let warm = create(
            "create freezer-warm --selector kind=freezer --metric temp --above -15 --for 10m --hysteresis 0.5 --severity critical",
        )
        .unwrap();
        assert_eq!(condition(&warm), "temp > -15 (clears at ≤ -15.5) for 10m");
        let silent = create("create meter-silent -s kind=meter -m kwh --no-data 1h").unwrap();
        assert_eq!(condition(&silent), "no kwh for 1h");
        let odd = create("create pump-odd -d p1 -m vibration --anomaly --k 3").unwrap();
        assert_eq!(
            condition(&odd),
            "vibration > 3σ from its mean (α 0.05, after 30 points)"
        );
        let ramp =
            create("create ramp -d p1 -m temp --rate 2 --window 10m --per-second --direction rise")
                .unwrap();
        assert_eq!(condition(&ramp), "temp rises by > 2/s over 10m");
        let band = create("create band -d p1 -m temp --outside -30,-15").unwrap();
        assert_eq!(condition(&band), "temp outside [-30, -15]");
    }

    #[test]
    fn one_target_and_one_condition_are_required() {
        assert!(
            create("create x --metric temp --above 1").is_err(),
            "no target"
        );
        assert!(
            create("create x -d a -s k=v --metric temp --above 1").is_err(),
            "two targets"
        );
        assert!(
            create("create x -d a --metric temp").is_err(),
            "no condition"
        );
        assert!(
            create("create x -d a --metric temp --above 1 --no-data 1m").is_err(),
            "two conditions"
        );
        let err = create("create x -d a -m t --outside 1").unwrap_err();
        assert!(err.to_string().contains("LOW,HIGH"), "{err}");
        let err = create("create x -d a -m t --above 1 --severity loud").unwrap_err();
        assert!(err.to_string().contains("--severity"), "{err}");
    }
}
