//! Points, values and identifiers, with their validation rules.

use std::fmt;

use crate::limits::Limits;

/// A typed sample value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    F64(f64),
    I64(i64),
    Bool(bool),
    Str(String),
}

impl Value {
    /// The value as a number for numeric aggregates: doubles and ints as they
    /// are, booleans as 0 or 1, strings not at all.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::F64(v) => Some(*v),
            Value::I64(v) => Some(*v as f64),
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            Value::Str(_) => None,
        }
    }

    /// A short name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::F64(_) => "double",
            Value::I64(_) => "int",
            Value::Bool(_) => "bool",
            Value::Str(_) => "string",
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::F64(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Str(v) => f.write_str(v),
        }
    }
}

/// One sample of one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub metric: String,
    /// Nanoseconds since the Unix epoch, UTC.
    pub ts_ns: i64,
    pub value: Value,
}

/// One stored sample of a series: a point without its metric name.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub ts_ns: i64,
    pub value: Value,
}

/// Identifies one time series: a metric of a device of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub tenant: String,
    pub device: String,
    pub metric: String,
}

impl SeriesKey {
    pub fn new(
        tenant: impl Into<String>,
        device: impl Into<String>,
        metric: impl Into<String>,
    ) -> Self {
        Self {
            tenant: tenant.into(),
            device: device.into(),
            metric: metric.into(),
        }
    }
}

/// Why a value was refused. The `field` names what was wrong, so that a 400
/// or an MQTT reason string can point at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

fn check_ident(what: &str, s: &str, max: usize, extra: &[u8]) -> Result<(), ValidationError> {
    if s.is_empty() {
        return Err(ValidationError::new(what, "must not be empty"));
    }
    if s.len() > max {
        return Err(ValidationError::new(
            what,
            format!("longer than {max} bytes"),
        ));
    }
    if let Some(c) = s
        .bytes()
        .find(|b| !(b.is_ascii_alphanumeric() || extra.contains(b)))
    {
        return Err(ValidationError::new(
            what,
            format!("invalid character {:?} in {s:?}", c as char),
        ));
    }
    Ok(())
}

/// Tenant names: 1..=64 bytes of `[a-z0-9-]`, starting with a letter or digit.
pub fn validate_tenant(name: &str) -> Result<(), ValidationError> {
    check_ident("tenant", name, 64, b"-")?;
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(ValidationError::new("tenant", "must be lower case"));
    }
    if name.starts_with('-') {
        return Err(ValidationError::new(
            "tenant",
            "must start with a letter or digit",
        ));
    }
    Ok(())
}

/// Device ids: 1..=`limits.max_device_id_len` bytes of `[A-Za-z0-9_.:-]`.
/// No `/`, `+` or `#`, so that a device id is always one MQTT topic level.
pub fn validate_device_id(id: &str, limits: &Limits) -> Result<(), ValidationError> {
    check_ident("device", id, limits.max_device_id_len, b"_.:-")
}

/// The metric the frontends record a device's presence as: `true` when its
/// first connection opens, `false` when its last one closes (offline rules
/// watch it).
pub const PRESENCE_METRIC: &str = "presence.online";

/// The content type of the envelopes that carry presence: the processor
/// judges them against offline rules and does not store them.
pub const PRESENCE_CONTENT_TYPE: &str = "application/vnd.tributary.presence";

/// Metric names: 1..=`limits.max_metric_len` bytes of `[A-Za-z0-9_.:/-]`.
pub fn validate_metric(name: &str, limits: &Limits) -> Result<(), ValidationError> {
    check_ident("metric", name, limits.max_metric_len, b"_.:/-")
}

/// Label keys: 1..=63 bytes of `[A-Za-z0-9_.-/]`; values up to 256 bytes of
/// any printable UTF-8 without `,` or `=` (so selectors stay unambiguous).
pub fn validate_label(key: &str, value: &str) -> Result<(), ValidationError> {
    check_ident("label key", key, 63, b"_.-/")?;
    if value.len() > 256 {
        return Err(ValidationError::new(
            format!("label {key}"),
            "value longer than 256 bytes",
        ));
    }
    if value
        .chars()
        .any(|c| c == ',' || c == '=' || c.is_control())
    {
        return Err(ValidationError::new(
            format!("label {key}"),
            "value must not contain ',', '=' or control characters",
        ));
    }
    Ok(())
}

/// Validates one point against the limits: its metric name, its string value
/// length and a finite number.
pub fn validate_point(p: &Point, limits: &Limits) -> Result<(), ValidationError> {
    validate_metric(&p.metric, limits)?;
    match &p.value {
        Value::Str(s) if s.len() > limits.max_string_len => Err(ValidationError::new(
            p.metric.clone(),
            format!("string value longer than {} bytes", limits.max_string_len),
        )),
        Value::F64(v) if !v.is_finite() => Err(ValidationError::new(
            p.metric.clone(),
            "value is not a finite number",
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        let l = Limits::default();
        assert!(validate_tenant("acme-1").is_ok());
        assert!(validate_tenant("Acme").is_err());
        assert!(validate_tenant("").is_err());
        assert!(validate_device_id("truck-7.a:b_c", &l).is_ok());
        assert!(validate_device_id("a/b", &l).is_err());
        assert!(validate_device_id("a+", &l).is_err());
        assert!(validate_metric("cpu.usage_user", &l).is_ok());
        assert!(validate_metric(&"m".repeat(l.max_metric_len + 1), &l).is_err());
        assert!(validate_label("fleet", "West").is_ok());
        assert!(validate_label("fleet", "a,b").is_err());
    }

    #[test]
    fn point_limits() {
        let l = Limits {
            max_string_len: 3,
            ..Limits::default()
        };
        let p = |v| Point {
            metric: "m".into(),
            ts_ns: 0,
            value: v,
        };
        assert!(validate_point(&p(Value::Str("abc".into())), &l).is_ok());
        assert!(validate_point(&p(Value::Str("abcd".into())), &l).is_err());
        assert!(validate_point(&p(Value::F64(f64::NAN)), &l).is_err());
    }
}
