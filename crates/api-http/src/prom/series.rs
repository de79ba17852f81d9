//! Tributary's model seen as Prometheus series.
//!
//! A series is one device's metric. Its labels are:
//! - `__name__`: the metric, with `.` and every other character outside
//!   `[a-zA-Z0-9_:]` mapped to `_` (`engine.temp` → `engine_temp`);
//! - `device`: the device id;
//! - the device's labels, names mapped the same way (and `:` to `_`). A
//!   device label named `device` or starting `__` gets the prefix `label_`.
//!
//! Two metrics of one device that map to the same name (`a.b` and `a_b`)
//! would be one series twice: both then carry `tributary_metric` with the
//! metric's own name, so they stay apart.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::StreamExt as _;
use tributary_promql::{MatchOp, Selector, sanitize_label_name, sanitize_metric_name};
use tributary_proto::v1 as pb;

use super::PromError;
use crate::Api;
use crate::extract::Caller;

/// A series' labels, sorted by name.
pub(crate) type Labels = BTreeMap<String, String>;

/// One device's metric, and its Prometheus labels.
#[derive(Debug, Clone)]
pub(crate) struct SeriesRef {
    pub device: String,
    pub metric: String,
    pub labels: Labels,
    /// Every label name is the device label's own (none was renamed, and
    /// no `tributary_metric` was added).
    pub verbatim: bool,
}

/// The label names Tributary sets itself.
pub(crate) const DEVICE: &str = "device";
pub(crate) const NAME: &str = "__name__";
const CLASH: &str = "tributary_metric";

/// Devices read per ListDevices call.
const PAGE: u32 = 1000;

/// A device label's Prometheus name.
pub(crate) fn label_name(key: &str) -> String {
    let name = sanitize_label_name(key);
    if name == DEVICE || name == CLASH || name.starts_with("__") {
        format!("label_{}", name.trim_start_matches('_'))
    } else {
        name
    }
}

/// What the registry can narrow down before the matchers run: one device,
/// or a label selector of the equality matchers it can express exactly.
fn pushdown(selector: &Selector) -> (Option<String>, String) {
    let mut device = None;
    let mut parts = Vec::new();
    for m in &selector.matchers {
        if m.op() != MatchOp::Equal || m.value().is_empty() {
            continue;
        }
        if m.name() == DEVICE {
            device = Some(m.value().to_owned());
        } else if m.name() != NAME
            && label_name(m.name()) == m.name()
            && !m.value().contains([',', '=', '!'])
            && !m.value().trim().is_empty()
            && m.value().trim() == m.value()
        {
            parts.push(format!("{}={}", m.name(), m.value()));
        }
    }
    (device, parts.join(","))
}

/// The devices a selector may cover, with their labels, within `max`.
async fn devices(
    api: &Api,
    caller: &Caller,
    device: Option<&str>,
    selector: &str,
    max: usize,
) -> Result<Vec<pb::Device>, PromError> {
    if let Some(id) = device {
        return match api
            .registry
            .get_device(caller.request(pb::GetDeviceRequest {
                tenant: String::new(),
                device: id.to_owned(),
            }))
            .await
        {
            Ok(d) => Ok(vec![d.into_inner()]),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(Vec::new()),
            Err(s) => Err(s.into()),
        };
    }
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let resp = api
            .registry
            .list_devices(caller.request(pb::ListDevicesRequest {
                tenant: String::new(),
                selector: selector.to_owned(),
                page_size: PAGE,
                page_token,
                id_prefix: String::new(),
                descending: false,
            }))
            .await?
            .into_inner();
        out.extend(resp.devices);
        if out.len() > max {
            return Err(PromError::too_many(format!(
                "the selector covers more than {max} devices; narrow it (an equality matcher on a device label, or device=\"…\")"
            )));
        }
        if resp.next_page_token.is_empty() {
            return Ok(out);
        }
        page_token = resp.next_page_token;
    }
}

/// The series a selector matches: at most `max`.
pub(crate) async fn select(
    api: &Api,
    caller: &Caller,
    selector: &Selector,
    max: usize,
) -> Result<Vec<SeriesRef>, PromError> {
    let (device, pushed) = pushdown(selector);
    let devices = devices(api, caller, device.as_deref(), &pushed, max).await?;
    if devices.is_empty() {
        return Ok(Vec::new());
    }
    // The metrics of each device, from the store.
    let target = match &device {
        Some(id) => pb::target::Devices::Device(id.clone()),
        None => pb::target::Devices::Selector(pushed.clone()),
    };
    let metrics = match api
        .query
        .list_metrics(caller.request(pb::ListMetricsRequest {
            target: Some(pb::Target {
                tenant: String::new(),
                devices: Some(target),
            }),
        }))
        .await
    {
        Ok(r) => r.into_inner().series,
        Err(s) if s.code() == tonic::Code::NotFound => Vec::new(),
        Err(s) => return Err(s.into()),
    };
    let mut by_device: HashMap<&str, Vec<&str>> = HashMap::new();
    for s in &metrics {
        by_device.entry(&s.device).or_default().push(&s.metric);
    }
    let mut out = Vec::new();
    for d in &devices {
        let Some(metrics) = by_device.get(d.id.as_str()) else {
            continue;
        };
        let mut base = Labels::new();
        let mut verbatim = true;
        for (k, v) in &d.labels {
            let name = label_name(k);
            verbatim &= name == *k;
            base.insert(name, v.clone());
        }
        base.insert(DEVICE.into(), d.id.clone());
        let mut names: HashMap<String, usize> = HashMap::new();
        for m in metrics {
            *names.entry(sanitize_metric_name(m)).or_default() += 1;
        }
        for m in metrics {
            let mut labels = base.clone();
            let name = sanitize_metric_name(m);
            let clash = names.get(&name).copied().unwrap_or(0) > 1;
            if clash {
                labels.insert(CLASH.into(), (*m).to_owned());
            }
            labels.insert(NAME.into(), name);
            if selector.matches_labels(|k| labels.get(k).map(String::as_str)) {
                out.push(SeriesRef {
                    device: d.id.clone(),
                    metric: (*m).to_owned(),
                    labels,
                    verbatim: verbatim && !clash,
                });
                if out.len() > max {
                    return Err(PromError::too_many(format!(
                        "the selector matches more than {max} series; narrow it"
                    )));
                }
            }
        }
    }
    Ok(out)
}

/// The series of several selectors (`match[]`), each once; with a range,
/// only those with a sample in `[from, to)`.
pub(crate) async fn select_all(
    api: &Api,
    caller: &Caller,
    selectors: &[Selector],
    range: Option<(i64, i64)>,
    max: usize,
) -> Result<Vec<SeriesRef>, PromError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for s in selectors {
        for series in select(api, caller, s, max).await? {
            if seen.insert((series.device.clone(), series.metric.clone())) {
                out.push(series);
            }
        }
        if out.len() > max {
            return Err(PromError::too_many(format!(
                "the selectors match more than {max} series; narrow them"
            )));
        }
    }
    if let Some((from, to)) = range {
        out = with_data(api, caller, out, from, to).await?;
    }
    Ok(out)
}

/// Of `series`, those with at least one sample in `[from, to)` (counted
/// from the rollups where they answer).
async fn with_data(
    api: &Api,
    caller: &Caller,
    series: Vec<SeriesRef>,
    from: i64,
    to: i64,
) -> Result<Vec<SeriesRef>, PromError> {
    if from >= to || series.is_empty() {
        return Ok(Vec::new());
    }
    let mut devices: Vec<String> = series.iter().map(|s| s.device.clone()).collect();
    devices.sort_unstable();
    devices.dedup();
    let metrics: BTreeSet<String> = series.iter().map(|s| s.metric.clone()).collect();
    // One window per series: as many devices per call as keep the answer
    // small.
    let per_call = (10_000 / metrics.len().max(1)).clamp(1, 1000);
    let calls: Vec<_> = devices
        .chunks(per_call)
        .map(|ids| {
            let (api, caller) = (api.clone(), caller.clone());
            let request = pb::AggregateRequest {
                target: Some(pb::Target {
                    tenant: String::new(),
                    devices: Some(pb::target::Devices::DeviceIds(pb::DeviceIds {
                        ids: ids.to_vec(),
                    })),
                }),
                metrics: metrics.iter().cloned().collect(),
                from_ns: from,
                to_ns: to,
                functions: vec![pb::AggregateFunction::Count as i32],
                ..Default::default()
            };
            async move {
                let resp = api
                    .query
                    .aggregate(caller.request(request))
                    .await?
                    .into_inner();
                // Ungrouped, a series' group is its device.
                Ok::<_, PromError>(
                    resp.series
                        .into_iter()
                        .filter(|s| s.buckets.iter().any(|b| b.count > 0))
                        .map(|s| (s.group, s.metric))
                        .collect::<Vec<_>>(),
                )
            }
        })
        .collect();
    let mut present = BTreeSet::new();
    let mut results = futures::stream::iter(calls).buffer_unordered(super::CONCURRENCY);
    while let Some(r) = results.next().await {
        present.extend(r?);
    }
    Ok(series
        .into_iter()
        .filter(|s| present.contains(&(s.device.clone(), s.metric.clone())))
        .collect())
}
