//! Conversion between the domain model and the wire envelope
//! (`tributary.v1.TelemetryEnvelope`), the record every log carries.

use prost::Message;
use tributary_proto::v1 as pb;

use crate::limits::Limits;
use crate::model::{self, Point, ValidationError, Value};

/// The envelope schema version this code writes and understands.
pub const SCHEMA_VERSION: u32 = 1;

/// The log record key of a device: `<tenant>/<device>`. Partitioning by this
/// key keeps each device's records in order.
pub fn record_key(tenant: &str, device: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + 1 + device.len());
    k.extend_from_slice(tenant.as_bytes());
    k.push(b'/');
    k.extend_from_slice(device.as_bytes());
    k
}

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Telemetry,
    Event,
}

/// A decoded, validated envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub tenant: String,
    pub device: String,
    pub received_at_ns: i64,
    pub traceparent: String,
    pub tracestate: String,
    pub content_type: String,
    pub kind: Kind,
    pub points: Vec<Point>,
}

impl Envelope {
    /// Encodes the envelope as the protobuf record value.
    pub fn encode(&self) -> Vec<u8> {
        let msg = pb::TelemetryEnvelope {
            schema_version: SCHEMA_VERSION,
            tenant: self.tenant.clone(),
            device: self.device.clone(),
            received_at_ns: self.received_at_ns,
            trace: (!self.traceparent.is_empty()).then(|| pb::TraceContext {
                traceparent: self.traceparent.clone(),
                tracestate: self.tracestate.clone(),
            }),
            content_type: self.content_type.clone(),
            points: self.points.iter().map(point_to_pb).collect(),
            kind: match self.kind {
                Kind::Telemetry => pb::RecordKind::Telemetry as i32,
                Kind::Event => pb::RecordKind::Event as i32,
            },
        };
        msg.encode_to_vec()
    }

    /// Decodes and validates a record value. Anything a processor could not
    /// store is an error here, so that it goes to the dead-letter log.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        let msg = pb::TelemetryEnvelope::decode(bytes).map_err(DecodeError::Protobuf)?;
        if msg.schema_version != SCHEMA_VERSION {
            return Err(DecodeError::Version(msg.schema_version));
        }
        model::validate_tenant(&msg.tenant)?;
        model::validate_device_id(&msg.device, limits)?;
        if msg.points.is_empty() {
            return Err(ValidationError::new("points", "empty batch").into());
        }
        let kind = match pb::RecordKind::try_from(msg.kind) {
            Ok(pb::RecordKind::Telemetry) => Kind::Telemetry,
            Ok(pb::RecordKind::Event) => Kind::Event,
            Err(_) => {
                return Err(
                    ValidationError::new("kind", format!("unknown kind {}", msg.kind)).into(),
                );
            }
        };
        let mut points = Vec::with_capacity(msg.points.len());
        for p in msg.points {
            let p = point_from_pb(p)?;
            model::validate_point(&p, limits)?;
            points.push(p);
        }
        let (traceparent, tracestate) = msg
            .trace
            .map(|t| (t.traceparent, t.tracestate))
            .unwrap_or_default();
        Ok(Envelope {
            tenant: msg.tenant,
            device: msg.device,
            received_at_ns: msg.received_at_ns,
            traceparent,
            tracestate,
            content_type: msg.content_type,
            kind,
            points,
        })
    }
}

/// Why a record could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a TelemetryEnvelope: {0}")]
    Protobuf(prost::DecodeError),
    #[error("unsupported schema_version {0}")]
    Version(u32),
    #[error("invalid envelope: {0}")]
    Invalid(#[from] ValidationError),
}

pub fn value_to_pb(v: &Value) -> pb::Value {
    use pb::value::Kind as K;
    pb::Value {
        kind: Some(match v {
            Value::F64(x) => K::DoubleValue(*x),
            Value::I64(x) => K::IntValue(*x),
            Value::Bool(x) => K::BoolValue(*x),
            Value::Str(x) => K::StringValue(x.clone()),
        }),
    }
}

pub fn value_from_pb(v: Option<pb::Value>) -> Option<Value> {
    use pb::value::Kind as K;
    Some(match v?.kind? {
        K::DoubleValue(x) => Value::F64(x),
        K::IntValue(x) => Value::I64(x),
        K::BoolValue(x) => Value::Bool(x),
        K::StringValue(x) => Value::Str(x),
    })
}

pub fn point_to_pb(p: &Point) -> pb::Point {
    pb::Point {
        metric: p.metric.clone(),
        ts_ns: p.ts_ns,
        value: Some(value_to_pb(&p.value)),
    }
}

pub fn point_from_pb(p: pb::Point) -> Result<Point, ValidationError> {
    let value = value_from_pb(p.value)
        .ok_or_else(|| ValidationError::new(p.metric.clone(), "point has no value"))?;
    Ok(Point {
        metric: p.metric,
        ts_ns: p.ts_ns,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope {
            tenant: "acme".into(),
            device: "d1".into(),
            received_at_ns: 42,
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            tracestate: String::new(),
            content_type: "application/json".into(),
            kind: Kind::Telemetry,
            points: vec![
                Point {
                    metric: "temp".into(),
                    ts_ns: 1,
                    value: Value::F64(21.5),
                },
                Point {
                    metric: "n".into(),
                    ts_ns: 2,
                    value: Value::I64(-3),
                },
                Point {
                    metric: "door".into(),
                    ts_ns: 3,
                    value: Value::Bool(true),
                },
                Point {
                    metric: "fw".into(),
                    ts_ns: 4,
                    value: Value::Str("1.2".into()),
                },
            ],
        }
    }

    #[test]
    fn round_trip() {
        let e = sample();
        let back = Envelope::decode(&e.encode(), &Limits::default()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn rejects_garbage_and_bad_versions() {
        let l = Limits::default();
        assert!(matches!(
            Envelope::decode(b"\xff\xff\xff", &l),
            Err(DecodeError::Protobuf(_))
        ));
        let mut msg = pb::TelemetryEnvelope::decode(sample().encode().as_slice()).unwrap();
        msg.schema_version = 9;
        assert!(matches!(
            Envelope::decode(&msg.encode_to_vec(), &l),
            Err(DecodeError::Version(9))
        ));
        msg.schema_version = 1;
        msg.points.clear();
        assert!(matches!(
            Envelope::decode(&msg.encode_to_vec(), &l),
            Err(DecodeError::Invalid(_))
        ));
    }
}
