//! A tenant's LwM2M metric names: which resource of which object becomes
//! which metric when its client is observed, beyond the IPSO defaults the
//! CoAP frontend knows.
//!
//! Written as `"OBJECT/RESOURCE" = "metric"` (a Float resource) or
//! `"metric integer"` (an Integer one: the type decides how a TLV value is
//! read). An empty metric turns a default off.

use std::collections::BTreeMap;

use crate::limits::Limits;

/// The most entries a tenant may set.
pub const MAX_ENTRIES: usize = 256;

/// One resource's metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lwm2mMetric {
    /// The metric name; empty: not observed (a default turned off).
    pub metric: String,
    /// The resource's LwM2M type is Integer (else Float).
    pub integer: bool,
}

/// A tenant's mapping, by (object, resource).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lwm2mMetrics(BTreeMap<(u16, u16), Lwm2mMetric>);

impl Lwm2mMetrics {
    /// Parses `"3442/1120" = "flow_rate"` entries, checking every one.
    pub fn from_named<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
        limits: &Limits,
    ) -> Result<Self, String> {
        let mut out = BTreeMap::new();
        for (key, value) in entries {
            let (o, r) = parse_key(key)?;
            out.insert((o, r), parse_value(key, value, limits)?);
            if out.len() > MAX_ENTRIES {
                return Err(format!("more than {MAX_ENTRIES} entries"));
            }
        }
        Ok(Lwm2mMetrics(out))
    }

    /// The entries as written.
    pub fn to_named(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .map(|((o, r), m)| {
                let value = if m.integer {
                    format!("{} integer", m.metric)
                } else {
                    m.metric.clone()
                };
                (format!("{o}/{r}"), value)
            })
            .collect()
    }

    /// The tenant's entry for a resource, if it set one.
    pub fn get(&self, object: u16, resource: u16) -> Option<&Lwm2mMetric> {
        self.0.get(&(object, resource))
    }

    /// Every entry.
    pub fn iter(&self) -> impl Iterator<Item = ((u16, u16), &Lwm2mMetric)> {
        self.0.iter().map(|(k, v)| (*k, v))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn parse_key(key: &str) -> Result<(u16, u16), String> {
    let (o, r) = key
        .split_once('/')
        .ok_or_else(|| format!("{key:?}: write OBJECT/RESOURCE, such as 3303/5700"))?;
    let number = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("{key:?}: {p:?} is not a number from 0 to 65535"))
    };
    Ok((number(o)?, number(r)?))
}

fn parse_value(key: &str, value: &str, limits: &Limits) -> Result<Lwm2mMetric, String> {
    let (metric, integer) = match value.split_once(' ') {
        Some((m, "integer")) => (m, true),
        Some((m, "float")) => (m, false),
        Some((_, other)) => {
            return Err(format!(
                "{key:?}: type {other:?}: write `integer` or `float`"
            ));
        }
        None => (value, false),
    };
    if !metric.is_empty() {
        crate::model::validate_metric(metric, limits).map_err(|e| format!("{key:?}: {e}"))?;
    }
    Ok(Lwm2mMetric {
        metric: metric.to_owned(),
        integer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_bad_ones_say_why() {
        let limits = Limits::default();
        let m = Lwm2mMetrics::from_named(
            [
                ("3442/1120", "flow_rate"),
                ("3/9", "battery integer"),
                ("3303/5700", ""),
            ],
            &limits,
        )
        .unwrap();
        assert_eq!(
            m.get(3, 9),
            Some(&Lwm2mMetric {
                metric: "battery".into(),
                integer: true
            })
        );
        assert_eq!(m.get(3303, 5700).map(|e| e.metric.as_str()), Some(""));
        let again = Lwm2mMetrics::from_named(
            m.to_named().iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &limits,
        )
        .unwrap();
        assert_eq!(again, m);
        for (k, v) in [
            ("3442", "x"),
            ("3442/x", "x"),
            ("70000/1", "x"),
            ("1/1", "bad name!"),
            ("1/1", "x bool"),
        ] {
            assert!(
                Lwm2mMetrics::from_named([(k, v)], &limits).is_err(),
                "{k} {v}"
            );
        }
        let many: Vec<(String, String)> = (0..=MAX_ENTRIES as u16)
            .map(|i| (format!("1/{i}"), "m".to_owned()))
            .collect();
        assert!(
            Lwm2mMetrics::from_named(many.iter().map(|(k, v)| (k.as_str(), v.as_str())), &limits)
                .is_err()
        );
    }
}
