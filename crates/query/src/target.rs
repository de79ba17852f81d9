//! What a request addresses: its devices, its metrics and its time range.
//!
//! Parsing ([`TargetSpec::parse`], [`parse_metrics`], [`TimeRange::new`]) is
//! pure validation that names the offending request field; resolving
//! ([`TargetSpec::resolve`]) asks the [`DeviceCatalog`].

use std::fmt;

use tributary_core::Limits;
use tributary_core::directory::{DeviceCatalog, DeviceInfo};
use tributary_core::model::{validate_device_id, validate_metric};
use tributary_core::selector::Selector;
use tributary_proto::v1 as pb;

use crate::error::QueryError;

/// Identifiers are checked against generous limits here: the ingest limits
/// are configurable, and a name that cannot exist simply matches nothing.
const LOOSE_LIMITS: Limits = Limits {
    max_body_bytes: 0,
    max_points_per_request: 0,
    max_metric_len: 1024,
    max_string_len: 0,
    max_device_id_len: 1024,
    max_devices_per_request: 0,
    max_labels: 0,
    max_point_age_ns: 0,
    max_future_ns: 0,
};

/// Longest selector accepted, in bytes.
const MAX_SELECTOR_LEN: usize = 4096;

/// The devices a request addresses, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TargetSpec {
    /// One device by id.
    Device(String),
    /// Every device of the tenant that the selector matches.
    Selector(Selector),
    /// These devices (sorted, each once), those that exist.
    Devices(Vec<String>),
}

/// Most ids in `target.device_ids`.
const MAX_DEVICE_IDS: usize = 10_000;

impl TargetSpec {
    /// Validates a request's `target`. The tenant is checked by the caller.
    pub(crate) fn parse(target: Option<&pb::Target>) -> Result<Self, QueryError> {
        let target = target.ok_or_else(|| {
            QueryError::invalid("target", "missing: set target.device or target.selector")
        })?;
        match &target.devices {
            None => Err(QueryError::invalid(
                "target",
                "set target.device or target.selector",
            )),
            Some(pb::target::Devices::Device(id)) => {
                validate_device_id(id, &LOOSE_LIMITS)
                    .map_err(|e| QueryError::invalid("target.device", e.message))?;
                Ok(Self::Device(id.clone()))
            }
            Some(pb::target::Devices::DeviceIds(d)) => {
                if d.ids.len() > MAX_DEVICE_IDS {
                    return Err(QueryError::invalid(
                        "target.device_ids",
                        format!("more than {MAX_DEVICE_IDS} ids"),
                    ));
                }
                for (i, id) in d.ids.iter().enumerate() {
                    validate_device_id(id, &LOOSE_LIMITS).map_err(|e| {
                        QueryError::invalid(format!("target.device_ids[{i}]"), e.message)
                    })?;
                }
                let mut ids = d.ids.clone();
                ids.sort_unstable();
                ids.dedup();
                Ok(Self::Devices(ids))
            }
            Some(pb::target::Devices::Selector(s)) => {
                if s.len() > MAX_SELECTOR_LEN {
                    return Err(QueryError::invalid(
                        "target.selector",
                        format!("longer than {MAX_SELECTOR_LEN} bytes"),
                    ));
                }
                let selector = Selector::parse(s)
                    .map_err(|e| QueryError::invalid("target.selector", e.message))?;
                Ok(Self::Selector(selector))
            }
        }
    }

    /// The devices of `tenant` this target covers, sorted by id. A selector
    /// that matches more than `max_devices` devices is refused.
    pub(crate) async fn resolve(
        &self,
        catalog: &dyn DeviceCatalog,
        tenant: &str,
        max_devices: usize,
    ) -> Result<Vec<DeviceInfo>, QueryError> {
        match self {
            Self::Device(id) => match catalog.device(tenant, id).await? {
                Some(device) => Ok(vec![device]),
                None => Err(QueryError::NotFound {
                    kind: "device",
                    name: id.clone(),
                }),
            },
            Self::Devices(ids) => {
                if ids.len() > max_devices {
                    return Err(QueryError::invalid(
                        "target.device_ids",
                        format!(
                            "{} devices, more than the limit of {max_devices}",
                            ids.len()
                        ),
                    ));
                }
                let mut devices = Vec::with_capacity(ids.len());
                for id in ids {
                    if let Some(device) = catalog.device(tenant, id).await? {
                        devices.push(device);
                    }
                }
                Ok(devices)
            }
            Self::Selector(selector) => {
                let mut devices = catalog.select(tenant, selector).await?;
                if devices.len() > max_devices {
                    return Err(QueryError::invalid(
                        "target.selector",
                        format!(
                            "matches {} devices, more than the limit of {max_devices}; narrow the selector",
                            devices.len()
                        ),
                    ));
                }
                devices.sort_by(|a, b| a.id.cmp(&b.id));
                devices.dedup_by(|a, b| a.id == b.id);
                Ok(devices)
            }
        }
    }
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Device(id) => write!(f, "device:{id}"),
            Self::Selector(s) => write!(f, "selector:{s}"),
            Self::Devices(ids) => write!(f, "devices:{}", ids.len()),
        }
    }
}

/// Validates a request's `metrics`: sorted and deduplicated, so that series
/// come out in (device, metric) order. Empty means every metric.
pub(crate) fn parse_metrics(metrics: &[String], max: usize) -> Result<Vec<String>, QueryError> {
    if metrics.len() > max {
        return Err(QueryError::invalid(
            "metrics",
            format!("{} metrics named, at most {max} allowed", metrics.len()),
        ));
    }
    for (i, m) in metrics.iter().enumerate() {
        validate_metric(m, &LOOSE_LIMITS)
            .map_err(|e| QueryError::invalid(format!("metrics[{i}]"), e.message))?;
    }
    let mut sorted = metrics.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    Ok(sorted)
}

/// A validated half-open time range `[from_ns, to_ns)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeRange {
    pub(crate) from_ns: i64,
    pub(crate) to_ns: i64,
}

impl TimeRange {
    /// `to_ns == 0` means `now_ns`. A range that ends before it starts is refused.
    pub(crate) fn new(from_ns: i64, to_ns: i64, now_ns: i64) -> Result<Self, QueryError> {
        let to_ns = if to_ns == 0 { now_ns } else { to_ns };
        if from_ns > to_ns {
            return Err(QueryError::invalid(
                "from_ns",
                format!("{from_ns} is after to_ns {to_ns} (to_ns = 0 means now)"),
            ));
        }
        Ok(Self { from_ns, to_ns })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::testkit::MemCatalog;

    fn target(devices: pb::target::Devices) -> pb::Target {
        pb::Target {
            tenant: String::new(),
            devices: Some(devices),
        }
    }

    fn field_of(err: QueryError) -> String {
        match err {
            QueryError::InvalidArgument { field, .. } => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn parse_names_the_bad_field() {
        assert_eq!(field_of(TargetSpec::parse(None).unwrap_err()), "target");
        let empty = pb::Target {
            tenant: String::new(),
            devices: None,
        };
        assert_eq!(
            field_of(TargetSpec::parse(Some(&empty)).unwrap_err()),
            "target"
        );
        let bad_device = target(pb::target::Devices::Device("a/b".into()));
        assert_eq!(
            field_of(TargetSpec::parse(Some(&bad_device)).unwrap_err()),
            "target.device"
        );
        let bad_selector = target(pb::target::Devices::Selector("=West".into()));
        assert_eq!(
            field_of(TargetSpec::parse(Some(&bad_selector)).unwrap_err()),
            "target.selector"
        );
        let ok = target(pb::target::Devices::Selector(
            "fleet=West, type=truck".into(),
        ));
        assert_eq!(
            TargetSpec::parse(Some(&ok)).unwrap().to_string(),
            "selector:fleet=West,type=truck"
        );
    }

    #[test]
    fn metrics_are_sorted_deduplicated_and_checked() {
        let m = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_metrics(&m(&["lon", "lat", "lon"]), 10).unwrap(),
            m(&["lat", "lon"])
        );
        assert_eq!(
            field_of(parse_metrics(&m(&["ok", "bad metric"]), 10).unwrap_err()),
            "metrics[1]"
        );
        assert_eq!(
            field_of(parse_metrics(&m(&["a", "b", "c"]), 2).unwrap_err()),
            "metrics"
        );
    }

    #[test]
    fn time_range_defaults_to_now_and_rejects_inverted_ranges() {
        assert_eq!(
            TimeRange::new(5, 0, 100).unwrap(),
            TimeRange {
                from_ns: 5,
                to_ns: 100
            }
        );
        assert_eq!(
            TimeRange::new(5, 7, 100).unwrap(),
            TimeRange {
                from_ns: 5,
                to_ns: 7
            }
        );
        assert_eq!(field_of(TimeRange::new(8, 7, 100).unwrap_err()), "from_ns");
    }

    #[tokio::test]
    async fn resolves_devices_and_selectors_within_the_tenant() {
        let catalog = MemCatalog::default();
        catalog.put("acme", "t2", &[("fleet", "West"), ("type", "truck")]);
        catalog.put("acme", "t1", &[("fleet", "West"), ("type", "truck")]);
        catalog.put("acme", "v1", &[("fleet", "West"), ("type", "van")]);
        catalog.put("acme", "e1", &[("fleet", "East"), ("type", "truck")]);
        catalog.put("other", "t9", &[("fleet", "West"), ("type", "truck")]);

        let spec = TargetSpec::Selector(Selector::parse("fleet=West,type=truck").unwrap());
        let ids: Vec<_> = spec
            .resolve(&catalog, "acme", 100)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(ids, ["t1", "t2"]);

        let all = TargetSpec::Selector(Selector::default());
        assert_eq!(all.resolve(&catalog, "acme", 100).await.unwrap().len(), 4);
        assert_eq!(
            field_of(all.resolve(&catalog, "acme", 3).await.unwrap_err()),
            "target.selector"
        );

        let one = TargetSpec::Device("e1".into());
        let found = one.resolve(&catalog, "acme", 1).await.unwrap();
        assert_eq!(
            found[0].labels,
            BTreeMap::from([
                ("fleet".into(), "East".into()),
                ("type".into(), "truck".into())
            ])
        );
        let missing = TargetSpec::Device("t9".into())
            .resolve(&catalog, "acme", 1)
            .await
            .unwrap_err();
        assert!(
            matches!(missing, QueryError::NotFound { kind: "device", ref name } if name == "t9")
        );
    }
}
