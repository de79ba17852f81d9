//! `CommandService` over a real gRPC socket, with a scripted sink and an
//! in-memory catalog: authorization, validation, and how each outcome
//! reaches the operator.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic_types::StatusExt;
use tributary_auth::{JwtKeys, OperatorClaims, Role};
use tributary_commands::{CommandConfig, CommandGrpc};
use tributary_core::commands::{Command, CommandError, CommandOutcome, CommandReply, CommandSink};
use tributary_core::directory::{DeviceCatalog, DeviceInfo, DirectoryError};
use tributary_core::selector::Selector;
use tributary_proto::v1 as pb;
use tributary_proto::v1::command_service_client::CommandServiceClient;

/// Answers every command with the scripted outcome, after `gate` opens
/// (when set), and records what it was sent.
#[derive(Debug)]
struct ScriptedSink {
    outcome: Result<CommandOutcome, CommandError>,
    seen: Mutex<Vec<Command>>,
    gate: Option<Arc<Notify>>,
}

#[async_trait]
impl CommandSink for ScriptedSink {
    async fn send_command(&self, command: Command) -> Result<CommandOutcome, CommandError> {
        self.seen.lock().unwrap().push(command);
        if let Some(gate) = &self.gate {
            gate.notified().await;
        }
        self.outcome.clone()
    }
}

/// Devices `d1` (enabled) and `off` (disabled) in tenant `acme`.
#[derive(Debug)]
struct Catalog;

#[async_trait]
impl DeviceCatalog for Catalog {
    async fn device(
        &self,
        tenant: &str,
        device: &str,
    ) -> Result<Option<DeviceInfo>, DirectoryError> {
        Ok(match (tenant, device) {
            ("acme", "d1" | "off") => Some(DeviceInfo {
                id: device.into(),
                labels: BTreeMap::new(),
                disabled: device == "off",
            }),
            _ => None,
        })
    }
    async fn select(&self, _: &str, _: &Selector) -> Result<Vec<DeviceInfo>, DirectoryError> {
        Ok(Vec::new())
    }
}

struct Rig {
    keys: JwtKeys,
    sink: Arc<ScriptedSink>,
    channel: Channel,
}

impl Rig {
    async fn start(outcome: Result<CommandOutcome, CommandError>, config: CommandConfig) -> Rig {
        Self::start_gated(outcome, config, None).await
    }

    async fn start_gated(
        outcome: Result<CommandOutcome, CommandError>,
        config: CommandConfig,
        gate: Option<Arc<Notify>>,
    ) -> Rig {
        let keys = JwtKeys::from_secret(&[7u8; 32]).unwrap();
        let sink = Arc::new(ScriptedSink {
            outcome,
            seen: Mutex::new(Vec::new()),
            gate,
        });
        let svc = CommandGrpc::new(sink.clone(), Arc::new(Catalog), keys.clone())
            .with_config(config)
            .unwrap()
            .server();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Rig {
            keys,
            sink,
            channel,
        }
    }

    fn token(&self, tenant: &str, role: Role) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        self.keys
            .issue(&OperatorClaims {
                sub: "test".into(),
                tenant: tenant.into(),
                role,
                iat: now,
                exp: now + 600,
            })
            .unwrap()
    }

    async fn call(
        &self,
        token: Option<&str>,
        req: pb::SendCommandRequest,
    ) -> Result<pb::SendCommandResponse, tonic::Status> {
        let mut request = tonic::Request::new(req);
        if let Some(t) = token {
            let v: MetadataValue<_> = format!("Bearer {t}").parse().unwrap();
            request.metadata_mut().insert("authorization", v);
        }
        CommandServiceClient::new(self.channel.clone())
            .send_command(request)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn operator(
        &self,
        req: pb::SendCommandRequest,
    ) -> Result<pb::SendCommandResponse, tonic::Status> {
        let token = self.token("acme", Role::Operator);
        self.call(Some(&token), req).await
    }
}

fn request(device: &str, name: &str) -> pb::SendCommandRequest {
    pb::SendCommandRequest {
        device: device.into(),
        name: name.into(),
        payload: b"{}".to_vec(),
        content_type: "application/json".into(),
        ..Default::default()
    }
}

fn replied() -> Result<CommandOutcome, CommandError> {
    Ok(CommandOutcome::Replied(CommandReply {
        payload: b"done".to_vec(),
        content_type: "text/plain".into(),
        latency: Duration::from_millis(12),
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_reaches_the_operator_with_defaults_applied() {
    let rig = Rig::start(replied(), CommandConfig::default()).await;
    let resp = rig.operator(request("d1", "reboot")).await.unwrap();
    assert_eq!(resp.status(), pb::CommandStatus::DeliveredReplied);
    assert_eq!(resp.reply_payload, b"done");
    assert_eq!(resp.reply_content_type, "text/plain");
    assert_eq!(resp.latency_us, 12_000);
    let seen = rig.sink.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![Command {
            tenant: "acme".into(),
            device: "d1".into(),
            name: "reboot".into(),
            payload: b"{}".to_vec(),
            content_type: "application/json".into(),
            timeout: Duration::from_secs(10),
            ttl: Duration::from_secs(3600),
        }]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_is_a_status_not_an_error() {
    for (outcome, status) in [
        (CommandOutcome::Timeout, pb::CommandStatus::Timeout),
        (CommandOutcome::Offline, pb::CommandStatus::Offline),
        (
            CommandOutcome::NotSubscribed,
            pb::CommandStatus::NotSubscribed,
        ),
    ] {
        let rig = Rig::start(Ok(outcome), CommandConfig::default()).await;
        let resp = rig.operator(request("d1", "x")).await.unwrap();
        assert_eq!(resp.status(), status);
        assert!(resp.reply_payload.is_empty());
    }
    let rig = Rig::start(
        Ok(CommandOutcome::Queued {
            ttl: Duration::from_secs(120),
        }),
        CommandConfig::default(),
    )
    .await;
    let resp = rig
        .operator(pb::SendCommandRequest {
            timeout_ms: 250,
            ttl_seconds: 120,
            ..request("d1", "x")
        })
        .await
        .unwrap();
    assert_eq!(resp.status(), pb::CommandStatus::Queued);
    assert_eq!(resp.ttl_seconds, 120);
    let seen = rig.sink.seen.lock().unwrap()[0].clone();
    assert_eq!(
        (seen.timeout, seen.ttl),
        (Duration::from_millis(250), Duration::from_secs(120))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ttl_is_never_shorter_than_the_timeout() {
    let rig = Rig::start(Ok(CommandOutcome::Timeout), CommandConfig::default()).await;
    rig.operator(pb::SendCommandRequest {
        timeout_ms: 30_000,
        ttl_seconds: 5,
        ..request("d1", "x")
    })
    .await
    .unwrap();
    let seen = rig.sink.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.ttl, Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_operators_of_the_tenant_may_send() {
    let rig = Rig::start(replied(), CommandConfig::default()).await;
    let err = rig.call(None, request("d1", "x")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = rig
        .call(Some("garbage"), request("d1", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let viewer = rig.token("acme", Role::Viewer);
    let err = rig
        .call(Some(&viewer), request("d1", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let other = rig.token("other", Role::Operator);
    let err = rig
        .call(
            Some(&other),
            pb::SendCommandRequest {
                tenant: "acme".into(),
                ..request("d1", "x")
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // A device of another tenant is simply not found.
    let err = rig
        .call(Some(&other), request("d1", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let admin = rig.token("ops", Role::Admin);
    let resp = rig
        .call(
            Some(&admin),
            pb::SendCommandRequest {
                tenant: "acme".into(),
                ..request("d1", "x")
            },
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), pb::CommandStatus::DeliveredReplied);
    assert!(
        rig.sink.seen.lock().unwrap().len() == 1,
        "only the admin's call got through"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_name_the_field() {
    let config = CommandConfig {
        max_payload_bytes: 16,
        ..CommandConfig::default()
    };
    let rig = Rig::start(replied(), config).await;
    let cases = [
        (request("d1", "a/b"), "name"),
        (request("d1", ""), "name"),
        (request("d/1", "x"), "device"),
        (request("", "x"), "device"),
        (
            pb::SendCommandRequest {
                payload: vec![b'x'; 17],
                ..request("d1", "x")
            },
            "payload",
        ),
        (
            pb::SendCommandRequest {
                timeout_ms: 300_001,
                ..request("d1", "x")
            },
            "timeout_ms",
        ),
        (
            pb::SendCommandRequest {
                ttl_seconds: 8 * 24 * 3600,
                ..request("d1", "x")
            },
            "ttl_seconds",
        ),
        (
            pb::SendCommandRequest {
                content_type: "a\nb".into(),
                ..request("d1", "x")
            },
            "content_type",
        ),
        (
            pb::SendCommandRequest {
                tenant: "Not A Tenant".into(),
                ..request("d1", "x")
            },
            "tenant",
        ),
    ];
    for (req, field) in cases {
        let err = rig.operator(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        let bad = err.get_details_bad_request().expect("field violations");
        assert_eq!(bad.field_violations[0].field, field);
    }
    assert!(rig.sink.seen.lock().unwrap().is_empty(), "nothing was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_disabled_devices_are_refused() {
    let rig = Rig::start(replied(), CommandConfig::default()).await;
    let err = rig.operator(request("ghost", "x")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = rig.operator(request("off", "x")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(rig.sink.seen.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_failures_are_retryable_statuses() {
    let rig = Rig::start(
        Err(CommandError::Unavailable("mqtt-7 is draining".into())),
        CommandConfig::default(),
    )
    .await;
    let err = rig.operator(request("d1", "x")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(!err.message().contains("mqtt-7"), "{}", err.message());
    assert!(err.get_details_retry_info().is_some());
    let rig = Rig::start(Err(CommandError::Overloaded), CommandConfig::default()).await;
    let err = rig.operator(request("d1", "x")).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_commands_are_bounded() {
    let gate = Arc::new(Notify::new());
    let config = CommandConfig {
        max_pending: 1,
        ..CommandConfig::default()
    };
    let rig = Arc::new(Rig::start_gated(replied(), config, Some(gate.clone())).await);
    let first = {
        let rig = rig.clone();
        tokio::spawn(async move { rig.operator(request("d1", "slow")).await })
    };
    // Wait until the first call is inside the sink.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while rig.sink.seen.lock().unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "first call never reached the sink"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let err = rig.operator(request("d1", "second")).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    gate.notify_one();
    let resp = first.await.unwrap().unwrap();
    assert_eq!(resp.status(), pb::CommandStatus::DeliveredReplied);
}
