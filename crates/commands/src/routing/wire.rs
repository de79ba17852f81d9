//! `CommandRouteRecord` ⇄ the domain: commands, outcomes and errors.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prost::Message;
use tributary_core::Limits;
use tributary_core::commands::{
    Command, CommandError, CommandOutcome, CommandReply, validate_command_name,
    validate_content_type,
};
use tributary_core::model::{ValidationError, validate_device_id, validate_tenant};
use tributary_log::Record;
use tributary_proto::v1 as pb;
use tributary_proto::v1::command_route_record::Body;
use tributary_proto::v1::command_route_result::Kind;

use super::MAX_ROUTED_TIMEOUT;

/// The format version written and understood.
pub(super) const SCHEMA_VERSION: u32 = 1;

/// Room counted for a record's framing beside its key and value (Kafka's
/// record and batch headers, the embedded log's 36 bytes).
const RECORD_OVERHEAD: usize = 128;

/// The smallest usable record limit: an accepted or result record with no
/// payload always fits.
pub(super) const MIN_RECORD_BYTES: usize = 4 * 1024;

/// A command's identity on the wire: the request id and who talks to whom.
#[derive(Debug, Clone)]
pub(super) struct Route {
    pub(super) request_id: String,
    pub(super) frontend: String,
    pub(super) reply_to: String,
}

impl Route {
    fn record(&self, body: Body) -> pb::CommandRouteRecord {
        pb::CommandRouteRecord {
            schema_version: SCHEMA_VERSION,
            request_id: self.request_id.clone(),
            frontend: self.frontend.clone(),
            reply_to: self.reply_to.clone(),
            body: Some(body),
        }
    }
}

/// A fresh request id: 128 random bits as 32 lower-case hex digits.
pub(super) fn request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The record key of a device's commands, as for its telemetry.
pub(super) fn key(tenant: &str, device: &str) -> Bytes {
    Bytes::from(format!("{tenant}/{device}"))
}

/// Now, in ms since the epoch.
pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A log record stamped now.
pub(super) fn to_record(key: Bytes, message: &pb::CommandRouteRecord) -> Record {
    Record {
        key,
        value: Bytes::from(message.encode_to_vec()),
        headers: Vec::new(),
        timestamp_ms: now_ms(),
    }
}

/// The size a record counts against `max_record_bytes`.
pub(super) fn record_size(record: &Record) -> usize {
    record.key.len() + record.value.len() + RECORD_OVERHEAD
}

/// The request record of `command`.
pub(super) fn request(route: &Route, command: &Command) -> pb::CommandRouteRecord {
    route.record(Body::Request(pb::CommandRouteRequest {
        tenant: command.tenant.clone(),
        device: command.device.clone(),
        name: command.name.clone(),
        payload: command.payload.clone(),
        content_type: command.content_type.clone(),
        timeout_ns: nanos(command.timeout),
        ttl_ns: nanos(command.ttl),
    }))
}

/// The acceptance record of a request.
pub(super) fn accepted(route: &Route) -> pb::CommandRouteRecord {
    route.record(Body::Accepted(pb::CommandRouteAccepted {}))
}

/// The result record of a request.
pub(super) fn result(
    route: &Route,
    result: &Result<CommandOutcome, CommandError>,
) -> pb::CommandRouteRecord {
    let mut r = pb::CommandRouteResult::default();
    let kind = match result {
        Ok(CommandOutcome::Replied(reply)) => {
            r.reply_payload = reply.payload.clone();
            r.reply_content_type = reply.content_type.clone();
            r.latency_ns = nanos(reply.latency);
            Kind::Replied
        }
        Ok(CommandOutcome::Timeout) => Kind::Timeout,
        Ok(CommandOutcome::Offline) => Kind::Offline,
        Ok(CommandOutcome::NotSubscribed) => Kind::NotSubscribed,
        Ok(CommandOutcome::Queued { ttl }) => {
            r.ttl_ns = nanos(*ttl);
            Kind::Queued
        }
        Err(CommandError::Invalid(v)) => {
            r.error_field = v.field.clone();
            r.error_message = v.message.clone();
            Kind::ErrorInvalid
        }
        Err(CommandError::Overloaded) => Kind::ErrorOverloaded,
        Err(CommandError::Unavailable(why)) => {
            r.error_message = why.clone();
            Kind::ErrorUnavailable
        }
    };
    r.kind = kind as i32;
    route.record(Body::Result(r))
}

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum WireError {
    #[error("not a CommandRouteRecord: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("schema version {0}, expected {SCHEMA_VERSION}")]
    Version(u32),
    #[error("no body")]
    NoBody,
    #[error("no request id")]
    NoRequestId,
    #[error("result kind {0} is unknown")]
    Kind(i32),
}

/// Decodes a record of the commands log, checking what every reader needs.
pub(super) fn decode(value: &[u8]) -> Result<pb::CommandRouteRecord, WireError> {
    let record = pb::CommandRouteRecord::decode(value)?;
    if record.schema_version != SCHEMA_VERSION {
        return Err(WireError::Version(record.schema_version));
    }
    if record.body.is_none() {
        return Err(WireError::NoBody);
    }
    if record.request_id.is_empty() {
        return Err(WireError::NoRequestId);
    }
    Ok(record)
}

/// The command a request carries, checked as the command service checks
/// it (device ids against `limits`).
pub(super) fn command(
    request: pb::CommandRouteRequest,
    limits: &Limits,
) -> Result<Command, ValidationError> {
    validate_tenant(&request.tenant)?;
    validate_device_id(&request.device, limits)?;
    validate_command_name(&request.name)?;
    validate_content_type(&request.content_type)?;
    let timeout = Duration::from_nanos(request.timeout_ns);
    check_timeout(timeout)?;
    Ok(Command {
        tenant: request.tenant,
        device: request.device,
        name: request.name,
        payload: request.payload,
        content_type: request.content_type,
        timeout,
        ttl: Duration::from_nanos(request.ttl_ns),
    })
}

/// A routed command's timeout must be positive and at most
/// [`MAX_ROUTED_TIMEOUT`].
pub(super) fn check_timeout(timeout: Duration) -> Result<(), ValidationError> {
    if timeout.is_zero() || timeout > MAX_ROUTED_TIMEOUT {
        return Err(ValidationError::new(
            "timeout_ms",
            format!(
                "must be positive and at most {} s to be routed",
                MAX_ROUTED_TIMEOUT.as_secs()
            ),
        ));
    }
    Ok(())
}

/// What a result record says.
pub(super) fn outcome(
    result: pb::CommandRouteResult,
) -> Result<Result<CommandOutcome, CommandError>, WireError> {
    let kind = Kind::try_from(result.kind).map_err(|_| WireError::Kind(result.kind))?;
    Ok(match kind {
        Kind::Unspecified => return Err(WireError::Kind(result.kind)),
        Kind::Replied => Ok(CommandOutcome::Replied(CommandReply {
            payload: result.reply_payload,
            content_type: result.reply_content_type,
            latency: Duration::from_nanos(result.latency_ns),
        })),
        Kind::Timeout => Ok(CommandOutcome::Timeout),
        Kind::Offline => Ok(CommandOutcome::Offline),
        Kind::NotSubscribed => Ok(CommandOutcome::NotSubscribed),
        Kind::Queued => Ok(CommandOutcome::Queued {
            ttl: Duration::from_nanos(result.ttl_ns),
        }),
        Kind::ErrorInvalid => Err(CommandError::Invalid(ValidationError::new(
            result.error_field,
            result.error_message,
        ))),
        Kind::ErrorOverloaded => Err(CommandError::Overloaded),
        Kind::ErrorUnavailable => Err(CommandError::Unavailable(result.error_message)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> Route {
        Route {
            request_id: request_id(),
            frontend: "fe-1".into(),
            reply_to: "q-1".into(),
        }
    }

    fn round_trip(r: Result<CommandOutcome, CommandError>) -> Result<CommandOutcome, CommandError> {
        let encoded = result(&route(), &r).encode_to_vec();
        match decode(&encoded).expect("decodes").body {
            Some(Body::Result(res)) => outcome(res).expect("known kind"),
            other => panic!("not a result: {other:?}"),
        }
    }

    #[test]
    fn every_outcome_and_error_survives_the_wire() {
        let cases = [
            Ok(CommandOutcome::Replied(CommandReply {
                payload: b"\x00ok\xff".to_vec(),
                content_type: "application/octet-stream".into(),
                latency: Duration::new(1, 234_567_891),
            })),
            Ok(CommandOutcome::Replied(CommandReply {
                payload: Vec::new(),
                content_type: String::new(),
                latency: Duration::ZERO,
            })),
            Ok(CommandOutcome::Timeout),
            Ok(CommandOutcome::Offline),
            Ok(CommandOutcome::NotSubscribed),
            Ok(CommandOutcome::Queued {
                ttl: Duration::new(3600, 7),
            }),
            Err(CommandError::Invalid(ValidationError::new(
                "name", "too long",
            ))),
            Err(CommandError::Overloaded),
            Err(CommandError::Unavailable("shutting down".into())),
        ];
        for case in cases {
            assert_eq!(round_trip(case.clone()), case);
        }
    }

    #[test]
    fn a_command_survives_the_wire_and_bad_ones_are_refused() {
        let command = Command {
            tenant: "acme".into(),
            device: "d-1".into(),
            name: "reboot".into(),
            payload: vec![1, 2, 3],
            content_type: "application/cbor".into(),
            timeout: Duration::from_millis(1500),
            ttl: Duration::from_secs(60),
        };
        let encoded = request(&route(), &command).encode_to_vec();
        let Some(Body::Request(req)) = decode(&encoded).expect("decodes").body else {
            panic!("not a request");
        };
        assert_eq!(command_of(req.clone()), Ok(command));

        let bad_name = pb::CommandRouteRequest {
            name: "a/b".into(),
            ..req.clone()
        };
        assert_eq!(command_of(bad_name).unwrap_err().field, "name");
        let bad_device = pb::CommandRouteRequest {
            device: "+".into(),
            ..req.clone()
        };
        assert_eq!(command_of(bad_device).unwrap_err().field, "device");
        let no_timeout = pb::CommandRouteRequest {
            timeout_ns: 0,
            ..req
        };
        assert_eq!(command_of(no_timeout).unwrap_err().field, "timeout_ms");
    }

    fn command_of(req: pb::CommandRouteRequest) -> Result<Command, ValidationError> {
        command(req, &Limits::default())
    }

    #[test]
    fn garbage_other_versions_and_unknown_kinds_are_refused() {
        assert!(matches!(decode(b"\xff\xff\xff"), Err(WireError::Decode(_))));
        let mut rec = accepted(&route());
        rec.schema_version = 2;
        assert!(matches!(
            decode(&rec.encode_to_vec()),
            Err(WireError::Version(2))
        ));
        let mut rec = accepted(&route());
        rec.body = None;
        assert!(matches!(
            decode(&rec.encode_to_vec()),
            Err(WireError::NoBody)
        ));
        let mut rec = accepted(&route());
        rec.request_id.clear();
        assert!(matches!(
            decode(&rec.encode_to_vec()),
            Err(WireError::NoRequestId)
        ));
        for kind in [0, 99] {
            let res = pb::CommandRouteResult {
                kind,
                ..Default::default()
            };
            assert!(matches!(outcome(res), Err(WireError::Kind(k)) if k == kind));
        }
    }

    #[test]
    fn request_ids_are_32_hex_digits_and_differ() {
        let (a, b) = (request_id(), request_id());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
