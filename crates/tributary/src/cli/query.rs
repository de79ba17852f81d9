//! `query` and `tail` commands.

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::json;
use tributary_core::envelope::value_from_pb;
use tributary_core::time::{format_rfc3339, now_ns, parse_duration, parse_rfc3339};
use tributary_proto::v1 as pb;

use super::Ctx;
use crate::output::Rows;

/// Which devices: one device or a label selector.
#[derive(Debug, clap::Args)]
pub struct TargetArgs {
    /// One device.
    #[arg(
        long,
        short = 'd',
        conflicts_with = "select",
        required_unless_present = "select"
    )]
    device: Option<String>,
    /// A label selector over devices, e.g. `fleet=West,model=H-2`.
    #[arg(long, short = 's')]
    select: Option<String>,
    /// A metric (repeatable); all metrics when absent.
    #[arg(long = "metric", short = 'm')]
    metrics: Vec<String>,
}

impl TargetArgs {
    fn target(&self, tenant: &str) -> pb::Target {
        let devices = match (&self.device, &self.select) {
            (Some(d), _) => Some(pb::target::Devices::Device(d.clone())),
            (None, Some(s)) => Some(pb::target::Devices::Selector(s.clone())),
            (None, None) => None,
        };
        pb::Target {
            tenant: tenant.to_string(),
            devices,
        }
    }
}

/// A time range. Times are RFC 3339, `now`, or a duration ago such as `1h`.
#[derive(Debug, clap::Args)]
pub struct RangeArgs {
    #[arg(long, default_value = "1h")]
    from: String,
    #[arg(long, default_value = "now")]
    to: String,
}

impl RangeArgs {
    fn resolve(&self) -> anyhow::Result<(i64, i64)> {
        let now = now_ns();
        let from =
            parse_time(&self.from, now).with_context(|| format!("--from {:?}", self.from))?;
        let to = parse_time(&self.to, now).with_context(|| format!("--to {:?}", self.to))?;
        if from >= to {
            bail!("--from must be before --to");
        }
        Ok((from, to))
    }
}

pub(super) fn parse_time(s: &str, now: i64) -> anyhow::Result<i64> {
    if s == "now" {
        return Ok(now + 1);
    }
    if let Some(ns) = parse_rfc3339(s) {
        return Ok(ns);
    }
    if let Some(d) = parse_duration(s.trim_start_matches('-')) {
        return Ok(now - d);
    }
    bail!("expected RFC 3339, `now`, or a duration ago such as 15m")
}

#[derive(Debug, clap::Subcommand)]
pub enum QueryCmd {
    /// The metrics of the devices.
    Metrics {
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Raw points in a time range.
    Range {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        range: RangeArgs,
        /// Most points to print (follows pages up to this many).
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        /// Newest first.
        #[arg(long)]
        desc: bool,
    },
    /// Aggregates per window, per device or per label group.
    Agg {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        range: RangeArgs,
        /// Window such as 1m, 1h, 1d; one window over the range when absent.
        #[arg(long, default_value = "")]
        window: String,
        /// Functions: min,max,avg,sum,count,first,last,stddev.
        #[arg(
            long = "fn",
            value_delimiter = ',',
            default_value = "avg,min,max,count"
        )]
        functions: Vec<String>,
        /// Group devices by this label.
        #[arg(long, default_value = "")]
        group_by: String,
        /// `raw` scans raw points only; by default the planner reads rollup
        /// tiers (same answer, faster) and says which one answered.
        #[arg(long, default_value = "")]
        tier: String,
    },
    /// The latest value of each metric.
    Latest {
        #[command(flatten)]
        target: TargetArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct TailArgs {
    #[command(flatten)]
    target: TargetArgs,
}

fn value_text(v: Option<pb::Value>) -> String {
    value_from_pb(v).map(|v| v.to_string()).unwrap_or_default()
}

fn value_json(v: Option<pb::Value>) -> serde_json::Value {
    use tributary_core::Value;
    match value_from_pb(v) {
        Some(Value::F64(x)) => json!(x),
        Some(Value::I64(x)) => json!(x),
        Some(Value::Bool(x)) => json!(x),
        Some(Value::Str(x)) => json!(x),
        None => serde_json::Value::Null,
    }
}

fn function(name: &str) -> anyhow::Result<pb::AggregateFunction> {
    use pb::AggregateFunction as F;
    Ok(match name.trim() {
        "min" => F::Min,
        "max" => F::Max,
        "avg" | "mean" => F::Avg,
        "sum" => F::Sum,
        "count" => F::Count,
        "first" => F::First,
        "last" => F::Last,
        "stddev" => F::Stddev,
        other => {
            bail!("unknown function {other:?} (min, max, avg, sum, count, first, last, stddev)")
        }
    })
}

pub async fn query(ctx: &mut Ctx, cmd: QueryCmd) -> anyhow::Result<()> {
    match cmd {
        QueryCmd::Metrics { target } => {
            let resp = ctx
                .query
                .list_metrics(pb::ListMetricsRequest {
                    target: Some(target.target(&ctx.tenant)),
                })
                .await?
                .into_inner();
            let mut rows = Rows::new(vec!["device", "metric"]);
            for s in resp.series {
                rows.push(
                    vec![s.device.clone(), s.metric.clone()],
                    json!({"device": s.device, "metric": s.metric}),
                );
            }
            ctx.print(&rows);
        }
        QueryCmd::Range {
            target,
            range,
            limit,
            desc,
        } => {
            let (from_ns, to_ns) = range.resolve()?;
            let mut rows = Rows::new(vec!["device", "metric", "time", "value"]);
            let mut page_token = String::new();
            let mut remaining = limit;
            let mut retained_from = 0;
            while remaining > 0 {
                let resp = ctx
                    .query
                    .query_range(pb::QueryRangeRequest {
                        target: Some(target.target(&ctx.tenant)),
                        metrics: target.metrics.clone(),
                        from_ns,
                        to_ns,
                        limit: remaining.min(10_000),
                        order: if desc {
                            pb::Order::Desc as i32
                        } else {
                            pb::Order::Asc as i32
                        },
                        page_token: page_token.clone(),
                    })
                    .await?
                    .into_inner();
                retained_from = retained_from.max(resp.retained_from_ns);
                for s in resp.series {
                    for p in s.points {
                        remaining = remaining.saturating_sub(1);
                        rows.push(
                            vec![
                                s.device.clone(),
                                s.metric.clone(),
                                format_rfc3339(p.ts_ns),
                                value_text(p.value.clone()),
                            ],
                            json!({"device": s.device, "metric": s.metric, "ts_ns": p.ts_ns,
                                   "time": format_rfc3339(p.ts_ns), "value": value_json(p.value)}),
                        );
                    }
                }
                if resp.next_page_token.is_empty() {
                    break;
                }
                page_token = resp.next_page_token;
            }
            ctx.print(&rows);
            if retained_from > 0 {
                eprintln!(
                    "note: the range starts before the raw retention; raw points before {} are expired and not in this answer",
                    format_rfc3339(retained_from)
                );
            }
        }
        QueryCmd::Agg {
            target,
            range,
            window,
            functions,
            group_by,
            tier,
        } => {
            let (from_ns, to_ns) = range.resolve()?;
            let fns = functions
                .iter()
                .map(|f| function(f))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let resp = ctx
                .query
                .aggregate(pb::AggregateRequest {
                    target: Some(target.target(&ctx.tenant)),
                    metrics: target.metrics.clone(),
                    from_ns,
                    to_ns,
                    window,
                    functions: fns.iter().map(|f| *f as i32).collect(),
                    group_by_label: group_by,
                    tier,
                    combine_devices: 0,
                })
                .await?
                .into_inner();
            let mut rows = Rows::new(vec![
                "group",
                "metric",
                "window_start",
                "count",
                "min",
                "max",
                "avg",
                "sum",
                "stddev",
                "first",
                "last",
            ]);
            let num = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
            for s in resp.series {
                for b in s.buckets {
                    let first = b
                        .first
                        .clone()
                        .map(|p| value_text(p.value))
                        .unwrap_or_default();
                    let last = b
                        .last
                        .clone()
                        .map(|p| value_text(p.value))
                        .unwrap_or_default();
                    rows.push(
                        vec![
                            s.group.clone(),
                            s.metric.clone(),
                            format_rfc3339(b.start_ns),
                            b.count.to_string(),
                            num(b.min),
                            num(b.max),
                            num(b.avg),
                            num(b.sum),
                            num(b.stddev),
                            first,
                            last,
                        ],
                        json!({"group": s.group, "metric": s.metric, "devices": s.devices,
                               "start": format_rfc3339(b.start_ns), "start_ns": b.start_ns, "count": b.count,
                               "min": b.min, "max": b.max, "avg": b.avg, "sum": b.sum, "stddev": b.stddev,
                               "tier": resp.tier,
                               "first": b.first.map(|p| value_json(p.value)),
                               "last": b.last.map(|p| value_json(p.value))}),
                    );
                }
            }
            ctx.print(&rows);
            eprintln!("answered from: {}", resp.tier);
            if resp.retained_from_ns > 0 {
                eprintln!(
                    "note: the range starts before the data kept for this window; nothing before {} is in this answer (expired)",
                    format_rfc3339(resp.retained_from_ns)
                );
            }
        }
        QueryCmd::Latest { target } => {
            let resp = ctx
                .query
                .latest(pb::LatestRequest {
                    target: Some(target.target(&ctx.tenant)),
                    metrics: target.metrics.clone(),
                })
                .await?
                .into_inner();
            let mut rows = Rows::new(vec!["device", "metric", "time", "value"]);
            for v in resp.values {
                rows.push(
                    vec![
                        v.device.clone(),
                        v.metric.clone(),
                        format_rfc3339(v.ts_ns),
                        value_text(v.value.clone()),
                    ],
                    json!({"device": v.device, "metric": v.metric, "ts_ns": v.ts_ns,
                           "time": format_rfc3339(v.ts_ns), "value": value_json(v.value)}),
                );
            }
            ctx.print(&rows);
        }
    }
    Ok(())
}

/// Prints live points until interrupted, one line (or JSON object) each.
pub async fn tail(ctx: &mut Ctx, args: TailArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stream = ctx
        .query
        .subscribe(pb::SubscribeRequest {
            target: Some(args.target.target(&ctx.tenant)),
            metrics: args.target.metrics,
        })
        .await?
        .into_inner();
    let json_out = ctx.output == crate::output::Format::Json;
    while let Some(msg) = stream.next().await {
        let msg = msg?;
        let mut out = std::io::stdout().lock();
        if msg.dropped > 0 {
            eprintln!(
                "warning: {} live batches dropped (reading too slowly)",
                msg.dropped
            );
        }
        for p in msg.points {
            let line = if json_out {
                json!({"device": msg.device, "metric": p.metric, "ts_ns": p.ts_ns, "value": value_json(p.value)}).to_string()
            } else {
                format!(
                    "{}  {}  {}  {}",
                    format_rfc3339(p.ts_ns),
                    msg.device,
                    p.metric,
                    value_text(p.value)
                )
            };
            writeln!(out, "{line}")?;
        }
        out.flush()?;
    }
    Ok(())
}
