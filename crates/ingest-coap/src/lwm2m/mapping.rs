//! Which LwM2M resources become which metrics, and how a notification's
//! payload becomes values.
//!
//! The defaults follow the IPSO Smart Objects: the Sensor Value (5700) of
//! temperature (3303), humidity (3304), barometer (3315), voltage (3316)
//! and current (3317), and the Device object's (3) battery level (9).
//! Instance 0 is the bare name (`temperature`); instance N > 0 is
//! `temperature_N`. A tenant's own entries
//! ([`tributary_core::lwm2m::Lwm2mMetrics`]) come first: they name more
//! resources, rename a default, or turn one off.

use tributary_coap_codec::content_format;
use tributary_core::formats;
use tributary_core::model::Value;

use tributary_core::lwm2m::Lwm2mMetrics;

use super::link::ObjectLink;
use super::tlv;

/// The most resources observed for one registration.
pub(crate) const MAX_OBSERVED: usize = 32;

/// The default metric of an object's resource, and whether its LwM2M type
/// is Float (else Integer).
pub(crate) fn metric(object: u16, resource: u16) -> Option<(&'static str, bool)> {
    Some(match (object, resource) {
        (3303, 5700) => ("temperature", true),
        (3304, 5700) => ("humidity", true),
        (3315, 5700) => ("pressure", true),
        (3316, 5700) => ("voltage", true),
        (3317, 5700) => ("current", true),
        (3, 9) => ("battery_level", false),
        _ => return None,
    })
}

/// The metric of a resource for a tenant: its own entry, else the default.
/// An entry with an empty name turns the default off.
pub(crate) fn metric_for(
    tenant: &Lwm2mMetrics,
    object: u16,
    resource: u16,
) -> Option<(String, bool)> {
    match tenant.get(object, resource) {
        Some(e) if e.metric.is_empty() => None,
        Some(e) => Some((e.metric.clone(), !e.integer)),
        None => metric(object, resource).map(|(n, float)| (n.to_owned(), float)),
    }
}

/// The resources of a registration's objects that have a metric, for the
/// tenant: what is observed after it registers. At most [`MAX_OBSERVED`].
pub(crate) fn observable(
    objects: &[ObjectLink],
    tenant: &Lwm2mMetrics,
) -> Vec<((u16, u16, u16), String, bool)> {
    let mut out = Vec::new();
    for link in objects {
        let Some(instance) = link.instance else {
            continue;
        };
        let mut resources: Vec<u16> = [5700, 9]
            .into_iter()
            .chain(
                tenant
                    .iter()
                    .filter(|((o, _), _)| *o == link.object)
                    .map(|((_, r), _)| r),
            )
            .collect();
        resources.sort_unstable();
        resources.dedup();
        for resource in resources {
            if let Some((name, float)) = metric_for(tenant, link.object, resource) {
                let name = if instance == 0 {
                    name.to_owned()
                } else {
                    format!("{name}_{instance}")
                };
                out.push(((link.object, instance, resource), name, float));
            }
        }
        if out.len() >= MAX_OBSERVED {
            out.truncate(MAX_OBSERVED);
            break;
        }
    }
    out
}

/// The value of resource `path` in a Read or Observe answer, by its
/// Content-Format: plain text (0, or none), TLV (11542), SenML JSON (110)
/// or SenML CBOR (112).
pub(crate) fn value(
    path: (u16, u16, u16),
    float: bool,
    format: Option<u16>,
    payload: &[u8],
    limits: &tributary_core::Limits,
) -> Result<Value, String> {
    match format {
        None | Some(content_format::TEXT) => {
            let text = std::str::from_utf8(payload).map_err(|_| "text: not UTF-8")?;
            text.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .map(Value::F64)
                .ok_or_else(|| format!("text: not a number: {:?}", truncate(text)))
        }
        Some(content_format::LWM2M_TLV) => {
            let entries = tlv::decode(payload).map_err(|e| e.to_string())?;
            let entry = entries
                .iter()
                .find(|e| {
                    e.resource == path.2
                        && e.instance.is_none_or(|i| i == path.1)
                        && e.resource_instance.is_none()
                })
                .ok_or("TLV: the observed resource is not in the answer")?;
            tlv::number(entry.value, float)
                .map(Value::F64)
                .ok_or_else(|| "TLV: not a number of the resource's type".to_owned())
        }
        Some(f @ (content_format::SENML_JSON | content_format::SENML_CBOR)) => {
            let json = if f == content_format::SENML_JSON {
                payload.to_vec()
            } else {
                formats::cbor::senml_to_json(payload).map_err(|e| format!("SenML: {e}"))?
            };
            // LwM2M names are paths, `/3303/0/5700`; RFC 8428 wants names
            // to start with a letter or digit, so the leading `/` goes.
            let mut pack: serde_json::Value =
                serde_json::from_slice(&json).map_err(|e| format!("SenML: {e}"))?;
            for record in pack.as_array_mut().into_iter().flatten() {
                for key in ["bn", "n"] {
                    if let Some(serde_json::Value::String(name)) = record.get_mut(key)
                        && let Some(rest) = name.strip_prefix('/')
                    {
                        *name = rest.to_owned();
                    }
                }
            }
            let json = serde_json::to_vec(&pack).map_err(|e| format!("SenML: {e}"))?;
            let points = formats::senml::parse(&json, tributary_core::time::now_ns(), limits)
                .map_err(|e| format!("SenML: {e}"))?;
            let want = format!("{}/{}/{}", path.0, path.1, path.2);
            let point = points
                .into_iter()
                .find(|p| p.metric == want)
                .ok_or("SenML: the observed resource is not in the answer")?;
            Ok(point.value)
        }
        Some(other) => Err(format!(
            "Content-Format {other}: the server reads 0 (text), 11542 (TLV), 110 (SenML JSON) and 112 (SenML CBOR)"
        )),
    }
}

fn truncate(s: &str) -> &str {
    s.char_indices().nth(32).map_or(s, |(i, _)| &s[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipso_objects_map_to_metrics_by_instance() {
        let links = [
            ObjectLink {
                object: 1,
                instance: Some(0),
            },
            ObjectLink {
                object: 3,
                instance: Some(0),
            },
            ObjectLink {
                object: 3303,
                instance: Some(0),
            },
            ObjectLink {
                object: 3303,
                instance: Some(2),
            },
            ObjectLink {
                object: 3304,
                instance: None,
            },
        ];
        let o = observable(&links, &Lwm2mMetrics::default());
        let names: Vec<_> = o.iter().map(|(p, n, _)| (*p, n.as_str())).collect();
        assert_eq!(
            names,
            [
                ((3, 0, 9), "battery_level"),
                ((3303, 0, 5700), "temperature"),
                ((3303, 2, 5700), "temperature_2"),
            ]
        );
        let many: Vec<_> = (0..100)
            .map(|i| ObjectLink {
                object: 3303,
                instance: Some(i),
            })
            .collect();
        assert_eq!(
            observable(&many, &Lwm2mMetrics::default()).len(),
            MAX_OBSERVED
        );
        // A tenant's entries name more resources, rename or turn off
        // defaults.
        let tenant = Lwm2mMetrics::from_named(
            [
                ("3303/5701", "unit_code integer"),
                ("3/9", ""),
                ("3303/5700", "temp_c"),
            ],
            &tributary_core::Limits::default(),
        )
        .unwrap();
        let o = observable(&links, &tenant);
        let names: Vec<_> = o.iter().map(|(p, n, f)| (*p, n.as_str(), *f)).collect();
        assert_eq!(
            names,
            [
                ((3303, 0, 5700), "temp_c", true),
                ((3303, 0, 5701), "unit_code", false),
                ((3303, 2, 5700), "temp_c_2", true),
                ((3303, 2, 5701), "unit_code_2", false),
            ]
        );
    }

    #[test]
    fn values_decode_from_every_format() {
        let limits = tributary_core::Limits::default();
        let path = (3303, 0, 5700);
        assert_eq!(
            value(path, true, None, b"21.5", &limits),
            Ok(Value::F64(21.5))
        );
        assert_eq!(
            value(path, true, Some(0), b" 22 ", &limits),
            Ok(Value::F64(22.0))
        );
        assert!(value(path, true, Some(0), b"warm", &limits).is_err());
        let mut tlv = vec![0b1110_0100, 0x16, 0x44];
        tlv.extend_from_slice(&23.25f32.to_be_bytes());
        assert_eq!(
            value(path, true, Some(11542), &tlv, &limits),
            Ok(Value::F64(23.25))
        );
        let senml = br#"[{"bn":"/3303/0/","n":"5700","v":24.5}]"#;
        assert_eq!(
            value(path, true, Some(110), senml, &limits),
            Ok(Value::F64(24.5))
        );
        // The same pack in CBOR: [{-2: "/3303/0/", 0: "5700", 2: 24.5}].
        let mut cbor = vec![0x81, 0xa3, 0x21, 0x68];
        cbor.extend_from_slice(b"/3303/0/");
        cbor.extend_from_slice(&[0x00, 0x64]);
        cbor.extend_from_slice(b"5700");
        cbor.extend_from_slice(&[0x02, 0xfb]);
        cbor.extend_from_slice(&24.5f64.to_be_bytes());
        assert_eq!(
            value(path, true, Some(112), &cbor, &limits),
            Ok(Value::F64(24.5))
        );
        let other = br#"[{"bn":"/3303/0/","n":"5701","vs":"Cel"}]"#;
        assert!(value(path, true, Some(110), other, &limits).is_err());
        assert!(value(path, true, Some(50), b"{}", &limits).is_err());
    }
}
