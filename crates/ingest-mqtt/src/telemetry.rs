//! The device topics that are ingested, and their payloads turned into points.
//!
//! | topic | payload | stored as |
//! |---|---|---|
//! | `devices/{id}/telemetry` | Tributary JSON, SenML JSON, or a protobuf `TelemetryEnvelope` | its points |
//! | `devices/{id}/telemetry/{metric}` | a bare number, `true`/`false`, a JSON string, or UTF-8 text | one point of `{metric}` |
//! | `devices/{id}/events/{name}` | like a metric topic; other UTF-8 text (a JSON object) as a string; empty means `true` | one point of metric `event.{name}`, recorded with kind `Event` |
//!
//! The format of a `telemetry` payload is the MQTT 5 content type when there
//! is one (`application/json`, `application/senml+json`,
//! `application/x-protobuf`), else sniffed: a payload starting with `{` is
//! Tributary JSON, one starting with `[` is SenML when its first record's
//! first key is a SenML label and Tributary JSON otherwise, and anything else
//! is a protobuf envelope. Every point gets the receive time when it has
//! none.

use prost::Message;
use tributary_core::envelope::point_from_pb;
use tributary_core::formats::{ParseError, json, senml};
use tributary_core::model::{validate_metric, validate_point};
use tributary_core::{Limits, Point, Value};
use tributary_proto::v1 as pb;

/// Content types recorded in the envelope.
pub(crate) mod content_type {
    pub(crate) const JSON: &str = "application/json";
    pub(crate) const SENML: &str = "application/senml+json";
    pub(crate) const PROTOBUF: &str = "application/x-protobuf";
    pub(crate) const TEXT: &str = "text/plain";
}

/// An ingested device topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeviceTopic<'a> {
    /// `devices/{id}/telemetry`: a batch of points.
    Telemetry { device: &'a str },
    /// `devices/{id}/telemetry/{metric}`: one bare value.
    Metric { device: &'a str, metric: &'a str },
    /// `devices/{id}/events/{name}`: one event.
    Event { device: &'a str, name: &'a str },
}

impl<'a> DeviceTopic<'a> {
    /// The ingested topic `topic` names, if it is one.
    pub(crate) fn parse(topic: &'a str) -> Option<Self> {
        let rest = topic.strip_prefix("devices/")?;
        let (device, rest) = rest.split_once('/')?;
        if device.is_empty() {
            return None;
        }
        if rest == "telemetry" {
            return Some(Self::Telemetry { device });
        }
        if let Some(metric) = rest.strip_prefix("telemetry/") {
            return Some(Self::Metric { device, metric });
        }
        let name = rest.strip_prefix("events/")?;
        Some(Self::Event { device, name })
    }
}

/// Points parsed from one PUBLISH, with the content type to record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Parsed {
    pub(crate) points: Vec<Point>,
    pub(crate) content_type: &'static str,
}

/// Parses the payload of a PUBLISH to an ingested topic.
///
/// `content_type` is the MQTT 5 Content Type property, if any; `tenant` and
/// `device` are the connection's, checked against a protobuf envelope's own.
pub(crate) fn parse(
    topic: DeviceTopic<'_>,
    payload: &[u8],
    content_type: Option<&str>,
    tenant: &str,
    now_ns: i64,
    limits: &Limits,
) -> Result<Parsed, ParseError> {
    if payload.len() > limits.max_body_bytes {
        return Err(ParseError::too_large(
            "payload",
            format!(
                "payload of {} bytes exceeds the limit of {}",
                payload.len(),
                limits.max_body_bytes
            ),
        ));
    }
    match topic {
        DeviceTopic::Telemetry { device } => {
            batch(payload, content_type, tenant, device, now_ns, limits)
        }
        DeviceTopic::Metric { metric, .. } => {
            validate_metric(metric, limits).map_err(|e| ParseError::new("topic", e.to_string()))?;
            let value = bare_value(payload).ok_or_else(|| {
                ParseError::new("payload", "expected a number, true, false, or UTF-8 text")
            })?;
            single(metric.to_owned(), value, now_ns, limits)
        }
        DeviceTopic::Event { name, .. } => {
            let metric = format!("event.{name}");
            validate_metric(&metric, limits)
                .map_err(|e| ParseError::new("topic", e.to_string()))?;
            let value = if payload.iter().all(u8::is_ascii_whitespace) {
                Value::Bool(true)
            } else {
                bare_value(payload)
                    .ok_or_else(|| ParseError::new("payload", "an event payload must be UTF-8"))?
            };
            single(metric, value, now_ns, limits)
        }
    }
}

fn single(
    metric: String,
    value: Value,
    now_ns: i64,
    limits: &Limits,
) -> Result<Parsed, ParseError> {
    let content_type = match value {
        Value::Str(_) => content_type::TEXT,
        _ => content_type::JSON,
    };
    let point = Point {
        metric,
        ts_ns: now_ns,
        value,
    };
    validate_point(&point, limits).map_err(|e| ParseError::new("payload", e.to_string()))?;
    Ok(Parsed {
        points: vec![point],
        content_type,
    })
}

/// A bare value: `true`/`false`, a JSON number (an integer that fits an
/// `i64` stays an integer), a JSON string (unquoted), or any other UTF-8 text
/// as it is, trimmed. `None` for bytes that are not UTF-8.
fn bare_value(payload: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(payload).ok()?.trim();
    Some(match text {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => {
            if let Ok(i) = text.parse::<i64>() {
                Value::I64(i)
            } else if let Some(f) = text
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite() && looks_numeric(text))
            {
                Value::F64(f)
            } else if text.starts_with('"') {
                match serde_json::from_str::<String>(text) {
                    Ok(s) => Value::Str(s),
                    Err(_) => Value::Str(text.to_owned()),
                }
            } else {
                Value::Str(text.to_owned())
            }
        }
    })
}

/// Rust's float parser also takes `inf`, `NaN` and `infinity`: only digits,
/// signs, a dot and exponents count as a number here.
fn looks_numeric(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
}

/// The formats a `telemetry` payload may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Senml,
    Protobuf,
}

fn batch(
    payload: &[u8],
    content_type: Option<&str>,
    tenant: &str,
    device: &str,
    now_ns: i64,
    limits: &Limits,
) -> Result<Parsed, ParseError> {
    let format = match content_type.map(|c| {
        c.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    }) {
        Some(c) => match c.as_str() {
            "application/json" => Format::Json,
            "application/senml+json" => Format::Senml,
            "application/x-protobuf"
            | "application/protobuf"
            | "application/vnd.google.protobuf" => Format::Protobuf,
            other => {
                return Err(ParseError::new(
                    "content type",
                    format!(
                        "unsupported content type {other:?}; use application/json, application/senml+json or application/x-protobuf"
                    ),
                ));
            }
        },
        None => sniff(payload),
    };
    let (points, content_type) = match format {
        Format::Json => (json::parse(payload, now_ns, limits)?, content_type::JSON),
        Format::Senml => (senml::parse(payload, now_ns, limits)?, content_type::SENML),
        Format::Protobuf => (
            envelope_points(payload, tenant, device, now_ns, limits)?,
            content_type::PROTOBUF,
        ),
    };
    if points.is_empty() {
        return Err(ParseError::new("payload", "no points"));
    }
    Ok(Parsed {
        points,
        content_type,
    })
}

/// Picks the format of a payload without a content type.
fn sniff(payload: &[u8]) -> Format {
    let mut bytes = payload.iter().copied().skip_while(u8::is_ascii_whitespace);
    match bytes.next() {
        Some(b'{') => Format::Json,
        Some(b'[') => {
            // The first key of the first record: `ts`/`values` are Tributary
            // JSON, anything else (`n`, `bn`, `v`, `bt`, ...) is SenML.
            let mut rest = bytes.skip_while(u8::is_ascii_whitespace);
            if rest.next() != Some(b'{') {
                return Format::Json;
            }
            let mut rest = rest.skip_while(u8::is_ascii_whitespace);
            if rest.next() != Some(b'"') {
                return Format::Json;
            }
            let key: Vec<u8> = rest.take_while(|b| *b != b'"').take(8).collect();
            if key == b"ts" || key == b"values" {
                Format::Json
            } else {
                Format::Senml
            }
        }
        _ => Format::Protobuf,
    }
}

/// The points of a protobuf `TelemetryEnvelope` sent by a device. Its tenant
/// and device may be empty; when set they must be the connection's. A point
/// with `ts_ns` 0 gets the receive time.
fn envelope_points(
    payload: &[u8],
    tenant: &str,
    device: &str,
    now_ns: i64,
    limits: &Limits,
) -> Result<Vec<Point>, ParseError> {
    let msg = pb::TelemetryEnvelope::decode(payload).map_err(|e| {
        ParseError::new(
            "payload",
            format!("not JSON, SenML or a protobuf TelemetryEnvelope: {e}"),
        )
    })?;
    if !msg.tenant.is_empty() && msg.tenant != tenant {
        return Err(ParseError::new(
            "tenant",
            "the envelope names another tenant",
        ));
    }
    if !msg.device.is_empty() && msg.device != device {
        return Err(ParseError::new(
            "device",
            "the envelope names another device than the topic",
        ));
    }
    if msg.points.len() > limits.max_points_per_request {
        return Err(ParseError::too_large(
            "points",
            format!(
                "more than {} points in one message",
                limits.max_points_per_request
            ),
        ));
    }
    msg.points
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let mut point = point_from_pb(p)
                .map_err(|e| ParseError::new(format!("points[{i}]"), e.to_string()))?;
            if point.ts_ns == 0 {
                point.ts_ns = now_ns;
            }
            validate_point(&point, limits)
                .map_err(|e| ParseError::new(format!("points[{i}]"), e.to_string()))?;
            Ok(point)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000_000_000;

    fn parse_on(topic: &str, payload: &[u8], ct: Option<&str>) -> Result<Parsed, ParseError> {
        let t = DeviceTopic::parse(topic).expect("device topic");
        parse(t, payload, ct, "acme", NOW, &Limits::default())
    }

    #[test]
    fn topics_are_classified() {
        assert_eq!(
            DeviceTopic::parse("devices/d1/telemetry"),
            Some(DeviceTopic::Telemetry { device: "d1" })
        );
        assert_eq!(
            DeviceTopic::parse("devices/d1/telemetry/a/b"),
            Some(DeviceTopic::Metric {
                device: "d1",
                metric: "a/b"
            })
        );
        assert_eq!(
            DeviceTopic::parse("devices/d1/events/boot"),
            Some(DeviceTopic::Event {
                device: "d1",
                name: "boot"
            })
        );
        for other in [
            "devices/d1/commands/x",
            "devices//telemetry",
            "devices/d1",
            "other/d1/telemetry",
            "devices/d1/telemetryx",
        ] {
            assert_eq!(DeviceTopic::parse(other), None, "{other}");
        }
    }

    #[test]
    fn formats_are_sniffed() {
        let p = parse_on("devices/d1/telemetry", br#"{"values": {"t": 1.5}}"#, None).unwrap();
        assert_eq!(
            (p.content_type, p.points[0].value.clone()),
            (content_type::JSON, Value::F64(1.5))
        );
        let p = parse_on(
            "devices/d1/telemetry",
            br#" [ {"ts": 1000, "values": {"t": 2}}]"#,
            None,
        )
        .unwrap();
        assert_eq!(p.content_type, content_type::JSON);
        assert_eq!(p.points[0].ts_ns, 1_000_000_000);
        let p = parse_on(
            "devices/d1/telemetry",
            br#"[{"bn": "d1/", "n": "t", "v": 3}]"#,
            None,
        )
        .unwrap();
        assert_eq!(
            (p.content_type, p.points[0].metric.as_str()),
            (content_type::SENML, "d1/t")
        );

        let env = pb::TelemetryEnvelope {
            points: vec![tributary_core::envelope::point_to_pb(&Point {
                metric: "m".into(),
                ts_ns: 0,
                value: Value::I64(7),
            })],
            ..Default::default()
        };
        let p = parse_on("devices/d1/telemetry", &env.encode_to_vec(), None).unwrap();
        assert_eq!(p.content_type, content_type::PROTOBUF);
        assert_eq!(
            p.points,
            vec![Point {
                metric: "m".into(),
                ts_ns: NOW,
                value: Value::I64(7)
            }]
        );

        let other_device = pb::TelemetryEnvelope {
            device: "d2".into(),
            ..env
        };
        assert!(parse_on("devices/d1/telemetry", &other_device.encode_to_vec(), None).is_err());
    }

    #[test]
    fn content_type_wins_over_sniffing() {
        let body = br#"[{"n": "t", "v": 3}]"#;
        assert_eq!(
            parse_on("devices/d1/telemetry", body, Some("application/senml+json"))
                .unwrap()
                .points
                .len(),
            1
        );
        let e = parse_on("devices/d1/telemetry", body, Some("application/json")).unwrap_err();
        assert!(e.message.contains("unknown field"), "{e}");
        let e = parse_on("devices/d1/telemetry", body, Some("text/csv")).unwrap_err();
        assert_eq!(e.location, "content type");
    }

    #[test]
    fn bare_values_and_events() {
        let v = |payload: &[u8]| {
            parse_on("devices/d1/telemetry/temp", payload, None)
                .unwrap()
                .points[0]
                .value
                .clone()
        };
        assert_eq!(v(b"21"), Value::I64(21));
        assert_eq!(v(b" 21.5\n"), Value::F64(21.5));
        assert_eq!(v(b"true"), Value::Bool(true));
        assert_eq!(v(b"\"on\""), Value::Str("on".into()));
        assert_eq!(v(b"on"), Value::Str("on".into()));
        assert_eq!(v(b"NaN"), Value::Str("NaN".into()));
        assert!(parse_on("devices/d1/telemetry/temp", b"\xff", None).is_err());
        assert!(parse_on("devices/d1/telemetry/bad metric", b"1", None).is_err());

        let e = parse_on("devices/d1/events/boot", b"", None).unwrap();
        assert_eq!(
            e.points,
            vec![Point {
                metric: "event.boot".into(),
                ts_ns: NOW,
                value: Value::Bool(true)
            }]
        );
        let e = parse_on("devices/d1/events/alarm", br#"{"level": 3}"#, None).unwrap();
        assert_eq!(e.points[0].value, Value::Str(r#"{"level": 3}"#.into()));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for payload in [&b"{"[..], b"[", b"\x08\x96\x01garbage", b"[{\"", b"   "] {
            assert!(
                parse_on("devices/d1/telemetry", payload, None).is_err(),
                "{payload:?}"
            );
        }
    }
}
