//! `TestRule`: when a rule would have fired over stored history
//! (`tributary rules test`). Each device's series is read raw when it
//! holds at most [`MAX_RAW_POINTS`] points in the range, else from the
//! finest rollup tier that covers the range in as many buckets, and
//! replayed through the processor's own evaluation
//! ([`tributary_rules::backtest`]). Nothing is stored or delivered.

use tributary_core::SeriesKey;
use tributary_core::rollup::width_name;
use tributary_proto::v1 as pb;
use tributary_rules::backtest::{Bucket, bucket_value, replay};
use tributary_rules::convert::event_to_pb;
use tributary_rules::{Kind, Rule, Target};
use tributary_store::Order;

use crate::engine::Engine;
use crate::error::QueryError;
use crate::target::TargetSpec;

/// Most raw points of one device read; past it, rollup buckets.
pub(crate) const MAX_RAW_POINTS: usize = 100_000;
/// Most transitions one test returns.
pub(crate) const MAX_TRANSITIONS: u32 = 10_000;
/// The history tested when the request names none.
pub(crate) const DEFAULT_SPAN_NS: i64 = 7 * 24 * 3600 * 1_000_000_000;

impl Engine {
    /// Replays `rule` of `tenant` over `[from_ns, to_ns)`.
    pub(crate) async fn test_rule(
        &self,
        tenant: &str,
        rule: &Rule,
        (from_ns, to_ns): (i64, i64),
        max: usize,
    ) -> Result<pb::TestRuleResponse, QueryError> {
        let target = match &rule.target {
            Target::Device(d) => TargetSpec::Device(d.clone()),
            Target::Selector(s) => TargetSpec::Selector(s.clone()),
        };
        let devices = self.resolve(tenant, &target).await?;
        let tiers = self.rollup_tiers().await?;
        let budget = self.config().max_scanned_points;
        let mut out = pb::TestRuleResponse {
            devices: devices.len() as u32,
            ..Default::default()
        };
        let mut transitions = Vec::new();
        let mut coarsest = 0;
        for device in &devices {
            let series = SeriesKey {
                tenant: tenant.to_owned(),
                device: device.id.clone(),
                metric: rule.metric.clone(),
            };
            let raw = self
                .store()
                .scan(&series, from_ns, to_ns, Order::Asc, MAX_RAW_POINTS + 1)
                .await?;
            let points: Vec<(i64, f64)> = if raw.len() <= MAX_RAW_POINTS {
                out.samples_read += raw.len() as u64;
                let any = matches!(rule.kind, Kind::NoData { .. });
                raw.iter()
                    .filter_map(|s| Some((s.ts_ns, s.value.as_f64().or(any.then_some(0.0))?)))
                    .collect()
            } else {
                let span = to_ns.saturating_sub(from_ns);
                let Some(width) = tiers
                    .iter()
                    .map(|(w, _)| *w)
                    .filter(|w| span / w <= MAX_RAW_POINTS as i64)
                    .min()
                else {
                    return Err(QueryError::ResourceExhausted {
                        subject: "points_scanned",
                        message: format!(
                            "device {} has more than {MAX_RAW_POINTS} points in the range and no \
                             rollup tier covers it in as many buckets; test a shorter range",
                            device.id
                        ),
                    });
                };
                let rows = self
                    .store()
                    .scan_rollups(&series, width, from_ns, to_ns, MAX_RAW_POINTS)
                    .await?;
                out.samples_read += (MAX_RAW_POINTS + 1 + rows.len()) as u64;
                out.devices_on_rollups += 1;
                coarsest = coarsest.max(width);
                rows.iter()
                    .filter(|(_, r)| r.numeric > 0)
                    .map(|(start, r)| {
                        let bucket = Bucket {
                            start_ns: *start,
                            min: r.min,
                            max: r.max,
                            mean: r.mean,
                        };
                        (*start, bucket_value(rule, &bucket))
                    })
                    .collect()
            };
            if out.samples_read > budget {
                return Err(QueryError::ResourceExhausted {
                    subject: "points_scanned",
                    message: format!(
                        "the test reads more than {budget} points; test a shorter range or fewer devices"
                    ),
                });
            }
            if !replay(
                rule,
                (tenant, &device.id),
                points,
                (from_ns, to_ns),
                &mut transitions,
                max,
            ) {
                out.truncated = true;
                break;
            }
        }
        if coarsest > 0 {
            out.coarsest_resolution = width_name(coarsest);
        }
        out.transitions = transitions.iter().map(event_to_pb).collect();
        Ok(out)
    }
}
