//! Command routing across replicas over a real (embedded) commands log: one
//! `RoutedCommandSink` (the query side) and `CommandRelay`s of two frontends
//! share the log; each relay executes on a fake device-side sink that
//! records what it got, and a fake presence lookup says where devices are.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use prost::Message;
use tempfile::TempDir;
use tokio::sync::{Barrier, Notify, oneshot};
use tokio::task::JoinHandle;
use tributary_commands::routing::COMMANDS_TOPIC;
use tributary_commands::{
    CommandRelay, CommandServiceError, RelayConfig, RoutedCommandSink, RouterConfig,
};
use tributary_core::commands::{Command, CommandError, CommandOutcome, CommandReply, CommandSink};
use tributary_core::directory::{DirectoryError, PresenceInfo, PresenceLookup};
use tributary_core::model::ValidationError;
use tributary_log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use tributary_log::{ConsumerOptions, Log, LogRecord, Record};
use tributary_proto::v1 as pb;
use tributary_proto::v1::command_route_record::Body;

/// Bound on every wait in these tests, so a bug fails instead of hanging.
const DEADLINE: Duration = Duration::from_secs(20);

/// A frontend's device side: answers each command by its device id, and
/// records what it was sent.
#[derive(Debug, Default)]
struct FakeDevices {
    frontend: String,
    /// Scripted answers by device; other devices get an echo reply naming
    /// the frontend, the device and the payload.
    script: HashMap<String, Result<CommandOutcome, CommandError>>,
    seen: Mutex<Vec<Command>>,
    /// Signalled when a command arrives.
    arrived: Notify,
    /// When set, each command waits here before it is answered.
    gate: Option<Arc<Notify>>,
    /// When set, each command waits here before it is answered.
    barrier: Option<Arc<Barrier>>,
}

impl FakeDevices {
    fn new(frontend: &str) -> Self {
        Self {
            frontend: frontend.into(),
            ..Self::default()
        }
    }

    fn seen(&self) -> Vec<Command> {
        self.seen.lock().unwrap().clone()
    }

    fn echo(&self, command: &Command) -> CommandReply {
        let mut payload = format!("{}:{}:", self.frontend, command.device).into_bytes();
        payload.extend_from_slice(&command.payload);
        CommandReply {
            payload,
            content_type: format!("text/x-{}", self.frontend),
            latency: Duration::from_micros(1234),
        }
    }
}

#[async_trait]
impl CommandSink for FakeDevices {
    async fn send_command(&self, command: Command) -> Result<CommandOutcome, CommandError> {
        self.seen.lock().unwrap().push(command.clone());
        self.arrived.notify_one();
        if let Some(gate) = &self.gate {
            gate.notified().await;
        }
        if let Some(barrier) = &self.barrier {
            barrier.wait().await;
        }
        match self.script.get(&command.device) {
            Some(answer) => answer.clone(),
            None => Ok(CommandOutcome::Replied(self.echo(&command))),
        }
    }
}

/// Presence by device (tenant `acme`), and how many lookups were made.
#[derive(Debug, Default)]
struct FakePresence {
    frontends: Mutex<HashMap<String, String>>,
    fail: bool,
}

impl FakePresence {
    fn set(&self, device: &str, frontend: &str) {
        self.frontends
            .lock()
            .unwrap()
            .insert(device.into(), frontend.into());
    }
}

#[async_trait]
impl PresenceLookup for FakePresence {
    async fn presence(
        &self,
        tenant: &str,
        device: &str,
    ) -> Result<Option<PresenceInfo>, DirectoryError> {
        if self.fail {
            return Err(DirectoryError::Unavailable("registry down".into()));
        }
        assert_eq!(tenant, "acme");
        Ok(self
            .frontends
            .lock()
            .unwrap()
            .get(device)
            .map(|frontend| PresenceInfo {
                online: true,
                last_seen_ns: 1,
                frontend: frontend.clone(),
            }))
    }
}

async fn open_log(dir: &TempDir) -> Arc<EmbeddedLog> {
    EmbeddedLog::open(dir.path(), EmbeddedLogConfig::new(COMMANDS_TOPIC, 4))
        .await
        .expect("open log")
}

/// Records in the log, over every partition.
async fn record_count(log: &EmbeddedLog) -> u64 {
    let mut n = 0;
    for p in 0..log.partitions() {
        let w = log.watermarks(p).await.expect("watermarks");
        n += w.high - w.low;
    }
    n
}

/// Every decodable record of the log, in offset order within partitions.
async fn all_records(log: &EmbeddedLog) -> Vec<(LogRecord, pb::CommandRouteRecord)> {
    let total = record_count(log).await as usize;
    let mut consumer = log
        .consumer(ConsumerOptions::default())
        .await
        .expect("consumer");
    let mut out = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    let mut read = 0;
    while read < total && Instant::now() < deadline {
        for r in consumer
            .poll(total, Duration::from_millis(200))
            .await
            .expect("poll")
        {
            read += 1;
            if let Ok(decoded) = pb::CommandRouteRecord::decode(r.value.as_ref()) {
                out.push((r, decoded));
            }
        }
    }
    assert_eq!(read, total, "read every record");
    out
}

struct RelayHandle {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), CommandServiceError>>,
}

impl RelayHandle {
    async fn stop(mut self) {
        let _ = self.stop.take().expect("running").send(());
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("relay stops")
            .expect("relay task")
            .expect("relay ends cleanly");
    }
}

/// Starts a relay and waits until it reads the log.
async fn start_relay(
    log: &Arc<EmbeddedLog>,
    frontend: &str,
    devices: Arc<FakeDevices>,
    config: RelayConfig,
) -> RelayHandle {
    let relay = CommandRelay::new(log.clone(), frontend.into(), devices)
        .with_config(config)
        .expect("valid relay config");
    let mut connected = relay.connected();
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(relay.run(async {
        let _ = stopped.await;
    }));
    tokio::time::timeout(DEADLINE, connected.wait_for(|c| *c))
        .await
        .expect("relay connects in time")
        .expect("relay alive");
    RelayHandle {
        stop: Some(stop),
        task,
    }
}

async fn open_router(
    log: &Arc<EmbeddedLog>,
    presence: Arc<FakePresence>,
    config: RouterConfig,
) -> RoutedCommandSink {
    RoutedCommandSink::open(log.clone(), presence, "query-1", config)
        .await
        .expect("router opens")
}

fn command(device: &str, payload: &str) -> Command {
    Command {
        tenant: "acme".into(),
        device: device.into(),
        name: "reboot".into(),
        payload: payload.as_bytes().to_vec(),
        content_type: "application/json".into(),
        timeout: Duration::from_secs(5),
        ttl: Duration::from_secs(3600),
    }
}

async fn send(router: &RoutedCommandSink, cmd: Command) -> Result<CommandOutcome, CommandError> {
    tokio::time::timeout(DEADLINE, router.send_command(cmd))
        .await
        .expect("command answered in time")
}

fn replied(outcome: Result<CommandOutcome, CommandError>) -> CommandReply {
    match outcome {
        Ok(CommandOutcome::Replied(reply)) => reply,
        other => panic!("expected a reply, got {other:?}"),
    }
}

/// Two frontends `fe-a` and `fe-b`, each with a running relay and its own
/// fake devices, and a router.
struct Rig {
    _dir: TempDir,
    log: Arc<EmbeddedLog>,
    presence: Arc<FakePresence>,
    router: RoutedCommandSink,
    devices: Vec<Arc<FakeDevices>>,
    relays: Vec<RelayHandle>,
}

impl Rig {
    async fn start(devices: [FakeDevices; 2], config: RouterConfig) -> Rig {
        let dir = TempDir::new().expect("tempdir");
        let log = open_log(&dir).await;
        let presence = Arc::new(FakePresence::default());
        let router = open_router(&log, presence.clone(), config).await;
        let mut rig = Rig {
            _dir: dir,
            log,
            presence,
            router,
            devices: Vec::new(),
            relays: Vec::new(),
        };
        for d in devices {
            let d = Arc::new(d);
            let relay = start_relay(&rig.log, &d.frontend, d.clone(), RelayConfig::default()).await;
            rig.devices.push(d);
            rig.relays.push(relay);
        }
        rig
    }

    async fn plain() -> Rig {
        Self::start(
            [FakeDevices::new("fe-a"), FakeDevices::new("fe-b")],
            RouterConfig::default(),
        )
        .await
    }

    async fn stop(self) {
        for r in self.relays {
            r.stop().await;
        }
    }
}

#[tokio::test]
async fn a_command_reaches_only_the_frontend_in_presence_and_its_reply_comes_back() {
    let rig = Rig::plain().await;
    rig.presence.set("d1", "fe-b");
    let sent = command("d1", r#"{"delay":5}"#);

    let reply = replied(send(&rig.router, sent.clone()).await);
    assert_eq!(reply.payload, br#"fe-b:d1:{"delay":5}"#.to_vec());
    assert_eq!(reply.content_type, "text/x-fe-b");
    assert_eq!(reply.latency, Duration::from_micros(1234));
    assert_eq!(rig.devices[1].seen(), vec![sent]);

    // Same device (so the same partition, read in order) now on fe-a: once
    // fe-a executed this one, it has read past the first and ignored it.
    rig.presence.set("d1", "fe-a");
    let reply = replied(send(&rig.router, command("d1", "second")).await);
    assert_eq!(reply.payload, b"fe-a:d1:second".to_vec());
    let on_a: Vec<_> = rig.devices[0]
        .seen()
        .into_iter()
        .map(|c| c.payload)
        .collect();
    assert_eq!(on_a, vec![b"second".to_vec()]);
    assert_eq!(rig.devices[1].seen().len(), 1);

    // Request, accepted and result of each command, in that order, all under
    // the device's key and with one request id per command.
    let records = all_records(&rig.log).await;
    assert_eq!(records.len(), 6, "{records:?}");
    let bodies: Vec<_> = records
        .iter()
        .map(|(r, d)| {
            assert_eq!(r.key, Bytes::from_static(b"acme/d1"));
            assert_eq!(d.reply_to, "query-1");
            match &d.body {
                Some(Body::Request(_)) => "request",
                Some(Body::Accepted(_)) => "accepted",
                Some(Body::Result(_)) => "result",
                None => "none",
            }
        })
        .collect();
    assert_eq!(
        bodies,
        [
            "request", "accepted", "result", "request", "accepted", "result"
        ]
    );
    assert_eq!(records[0].1.request_id, records[2].1.request_id);
    assert_ne!(records[0].1.request_id, records[3].1.request_id);
    assert_eq!(records[0].1.frontend, "fe-b");
    assert_eq!(records[3].1.frontend, "fe-a");
    rig.stop().await;
}

#[tokio::test]
async fn every_outcome_and_local_error_round_trips() {
    let cases: Vec<(&str, Result<CommandOutcome, CommandError>)> = vec![
        ("timeout", Ok(CommandOutcome::Timeout)),
        ("offline", Ok(CommandOutcome::Offline)),
        ("unsub", Ok(CommandOutcome::NotSubscribed)),
        (
            "queued",
            Ok(CommandOutcome::Queued {
                ttl: Duration::new(3599, 123_456_789),
            }),
        ),
        (
            "binary",
            Ok(CommandOutcome::Replied(CommandReply {
                payload: vec![0, 159, 146, 150, 255],
                content_type: "application/octet-stream".into(),
                latency: Duration::new(2, 5),
            })),
        ),
        (
            "invalid",
            Err(CommandError::Invalid(ValidationError::new(
                "content_type",
                "devices here speak CBOR",
            ))),
        ),
        ("busy", Err(CommandError::Overloaded)),
        (
            "closing",
            Err(CommandError::Unavailable("frontend shutting down".into())),
        ),
    ];
    let mut devices = FakeDevices::new("fe-a");
    devices.script = cases
        .iter()
        .map(|(d, o)| (d.to_string(), o.clone()))
        .collect();
    let rig = Rig::start([devices, FakeDevices::new("fe-b")], RouterConfig::default()).await;
    for (device, expected) in &cases {
        rig.presence.set(device, "fe-a");
        assert_eq!(
            &send(&rig.router, command(device, "x")).await,
            expected,
            "{device}"
        );
    }
    assert_eq!(rig.devices[0].seen().len(), cases.len());
    rig.stop().await;
}

#[tokio::test]
async fn no_presence_is_offline_without_touching_the_log() {
    let rig = Rig::plain().await;
    let started = Instant::now();
    assert_eq!(
        send(&rig.router, command("nowhere", "x")).await,
        Ok(CommandOutcome::Offline)
    );
    // Answered at once, not after the 3 s routing timeout.
    assert!(started.elapsed() < Duration::from_secs(3));
    rig.presence.set("blank", "");
    assert_eq!(
        send(&rig.router, command("blank", "x")).await,
        Ok(CommandOutcome::Offline)
    );
    assert_eq!(record_count(&rig.log).await, 0);
    assert!(rig.devices.iter().all(|d| d.seen().is_empty()));
    rig.stop().await;
}

#[tokio::test]
async fn presence_errors_are_unavailable() {
    let dir = TempDir::new().unwrap();
    let log = open_log(&dir).await;
    let presence = Arc::new(FakePresence {
        fail: true,
        ..FakePresence::default()
    });
    let router = open_router(&log, presence, RouterConfig::default()).await;
    assert!(matches!(
        send(&router, command("d1", "x")).await,
        Err(CommandError::Unavailable(_))
    ));
    assert_eq!(record_count(&log).await, 0);
}

#[tokio::test]
async fn a_frontend_without_a_relay_is_offline_after_the_routing_timeout() {
    let config = RouterConfig {
        routing_timeout_ms: 300,
        ..RouterConfig::default()
    };
    let rig = Rig::start([FakeDevices::new("fe-a"), FakeDevices::new("fe-b")], config).await;
    rig.presence.set("d1", "fe-gone");
    let started = Instant::now();
    assert_eq!(
        send(&rig.router, command("d1", "x")).await,
        Ok(CommandOutcome::Offline)
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Only the request was appended: nobody accepted it.
    assert_eq!(record_count(&rig.log).await, 1);
    assert!(rig.devices.iter().all(|d| d.seen().is_empty()));
    rig.stop().await;
}

#[tokio::test]
async fn the_routing_timeout_never_exceeds_the_command_timeout() {
    let dir = TempDir::new().unwrap();
    let log = open_log(&dir).await;
    let presence = Arc::new(FakePresence::default());
    presence.set("d1", "fe-gone");
    let router = open_router(&log, presence, RouterConfig::default()).await;
    let started = Instant::now();
    let cmd = Command {
        timeout: Duration::from_millis(200),
        ..command("d1", "x")
    };
    assert_eq!(send(&router, cmd).await, Ok(CommandOutcome::Offline));
    // The default routing timeout is 3 s; the command allowed 200 ms.
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn an_accepted_command_without_result_times_out() {
    let gate = Arc::new(Notify::new());
    let mut slow = FakeDevices::new("fe-a");
    slow.gate = Some(gate.clone());
    let config = RouterConfig {
        result_grace_ms: 100,
        ..RouterConfig::default()
    };
    let rig = Rig::start([slow, FakeDevices::new("fe-b")], config).await;
    rig.presence.set("d1", "fe-a");
    let cmd = Command {
        timeout: Duration::from_millis(300),
        ..command("d1", "x")
    };
    let started = Instant::now();
    assert_eq!(send(&rig.router, cmd).await, Ok(CommandOutcome::Timeout));
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(rig.devices[0].seen().len(), 1);
    gate.notify_one();
    rig.stop().await;
}

#[tokio::test]
async fn concurrent_commands_to_devices_on_different_frontends_get_their_own_replies() {
    // Each device side waits for the other's command before answering, so
    // the test only passes if both commands are in flight at once.
    let barrier = Arc::new(Barrier::new(2));
    let (mut a, mut b) = (FakeDevices::new("fe-a"), FakeDevices::new("fe-b"));
    a.barrier = Some(barrier.clone());
    b.barrier = Some(barrier);
    let rig = Rig::start([a, b], RouterConfig::default()).await;
    rig.presence.set("left", "fe-a");
    rig.presence.set("right", "fe-b");

    let (l, r) = tokio::join!(
        send(&rig.router, command("left", "1")),
        send(&rig.router, command("right", "2")),
    );
    assert_eq!(replied(l).payload, b"fe-a:left:1".to_vec());
    assert_eq!(replied(r).payload, b"fe-b:right:2".to_vec());
    assert_eq!(rig.devices[0].seen().len(), 1);
    assert_eq!(rig.devices[1].seen().len(), 1);
    rig.stop().await;
}

#[tokio::test]
async fn a_relay_started_after_a_request_does_not_execute_it() {
    let dir = TempDir::new().unwrap();
    let log = open_log(&dir).await;
    let presence = Arc::new(FakePresence::default());
    presence.set("d1", "fe-late");
    let config = RouterConfig {
        routing_timeout_ms: 200,
        ..RouterConfig::default()
    };
    let router = open_router(&log, presence, config).await;
    assert_eq!(
        send(&router, command("d1", "early")).await,
        Ok(CommandOutcome::Offline)
    );

    let devices = Arc::new(FakeDevices::new("fe-late"));
    let relay = start_relay(&log, "fe-late", devices.clone(), RelayConfig::default()).await;
    // A later command to the same device (same partition) is executed; the
    // earlier one, before it in the partition, never is.
    let reply = replied(send(&router, command("d1", "late")).await);
    assert_eq!(reply.payload, b"fe-late:d1:late".to_vec());
    let payloads: Vec<_> = devices.seen().into_iter().map(|c| c.payload).collect();
    assert_eq!(payloads, vec![b"late".to_vec()]);
    relay.stop().await;
}

/// A request record for `fe-a`, as a query replica would append it.
fn raw_request(request_id: &str, device: &str, timeout: Duration, timestamp_ms: i64) -> Record {
    let record = pb::CommandRouteRecord {
        schema_version: 1,
        request_id: request_id.into(),
        frontend: "fe-a".into(),
        reply_to: "query-elsewhere".into(),
        body: Some(Body::Request(pb::CommandRouteRequest {
            tenant: "acme".into(),
            device: device.into(),
            name: "reboot".into(),
            payload: request_id.as_bytes().to_vec(),
            content_type: String::new(),
            timeout_ns: timeout.as_nanos() as u64,
            ttl_ns: timeout.as_nanos() as u64,
        })),
    };
    Record {
        key: Bytes::from(format!("acme/{device}")),
        value: Bytes::from(record.encode_to_vec()),
        headers: Vec::new(),
        timestamp_ms,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn stale_duplicate_and_garbage_records_are_skipped() {
    let rig = Rig::plain().await;
    let minute_ago = now_ms() - 60_000;
    let records = vec![
        // Older than its 1 s timeout: a replay, never executed.
        raw_request("stale", "d1", Duration::from_secs(1), minute_ago),
        // Not a CommandRouteRecord at all.
        Record {
            key: Bytes::from_static(b"acme/d1"),
            value: Bytes::from_static(b"\xff\xfe garbage"),
            headers: Vec::new(),
            timestamp_ms: now_ms(),
        },
        // Fresh, and appended twice: executed once.
        raw_request("fresh", "d1", Duration::from_secs(30), now_ms()),
        raw_request("fresh", "d1", Duration::from_secs(30), now_ms()),
    ];
    rig.log.append_batch(records).await.expect("append");

    // A routed command after them, same device, same partition: when it is
    // answered, fe-a has read everything before it.
    rig.presence.set("d1", "fe-a");
    let reply = replied(send(&rig.router, command("d1", "routed")).await);
    assert_eq!(reply.payload, b"fe-a:d1:routed".to_vec());
    let payloads: Vec<_> = rig.devices[0]
        .seen()
        .into_iter()
        .map(|c| c.payload)
        .collect();
    assert_eq!(payloads, vec![b"fresh".to_vec(), b"routed".to_vec()]);

    // The fresh request got exactly one acceptance and one result, addressed
    // to its own requester.
    let answers: Vec<_> = all_records(&rig.log)
        .await
        .into_iter()
        .filter(|(_, d)| d.request_id == "fresh" && !matches!(d.body, Some(Body::Request(_))))
        .collect();
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(answers.iter().all(|(_, d)| d.reply_to == "query-elsewhere"));
    rig.stop().await;
}

#[tokio::test]
async fn the_pending_bound_gives_overloaded() {
    let gate = Arc::new(Notify::new());
    let mut slow = FakeDevices::new("fe-a");
    slow.gate = Some(gate.clone());
    let config = RouterConfig {
        max_pending: 1,
        ..RouterConfig::default()
    };
    let rig = Rig::start([slow, FakeDevices::new("fe-b")], config).await;
    rig.presence.set("d1", "fe-a");
    rig.presence.set("d2", "fe-b");
    let router = Arc::new(rig.router);

    let first = tokio::spawn({
        let router = router.clone();
        async move { send(&router, command("d1", "first")).await }
    });
    tokio::time::timeout(DEADLINE, rig.devices[0].arrived.notified())
        .await
        .expect("first command arrives");
    let records_before = record_count(&rig.log).await;
    assert_eq!(
        send(&router, command("d2", "second")).await,
        Err(CommandError::Overloaded)
    );
    // Refused before anything was appended.
    assert_eq!(record_count(&rig.log).await, records_before);
    assert!(rig.devices[1].seen().is_empty());

    gate.notify_one();
    let reply = replied(first.await.expect("first task"));
    assert_eq!(reply.payload, b"fe-a:d1:first".to_vec());
    // The slot is free again.
    replied(send(&router, command("d2", "third")).await);
    for r in rig.relays {
        r.stop().await;
    }
}

#[tokio::test]
async fn a_busy_frontend_answers_overloaded() {
    let dir = TempDir::new().unwrap();
    let log = open_log(&dir).await;
    let presence = Arc::new(FakePresence::default());
    presence.set("d1", "fe-a");
    presence.set("d2", "fe-a");
    let router = Arc::new(open_router(&log, presence, RouterConfig::default()).await);
    let gate = Arc::new(Notify::new());
    let mut slow = FakeDevices::new("fe-a");
    slow.gate = Some(gate.clone());
    let slow = Arc::new(slow);
    let relay = start_relay(
        &log,
        "fe-a",
        slow.clone(),
        RelayConfig {
            max_concurrent: 1,
            ..RelayConfig::default()
        },
    )
    .await;

    let first = tokio::spawn({
        let router = router.clone();
        async move { send(&router, command("d1", "first")).await }
    });
    tokio::time::timeout(DEADLINE, slow.arrived.notified())
        .await
        .expect("first command arrives");
    assert_eq!(
        send(&router, command("d2", "second")).await,
        Err(CommandError::Overloaded)
    );
    assert_eq!(slow.seen().len(), 1);
    gate.notify_one();
    replied(first.await.expect("first task"));
    relay.stop().await;
}

#[tokio::test]
async fn oversize_commands_are_invalid_and_never_appended() {
    let dir = TempDir::new().unwrap();
    let log = open_log(&dir).await;
    let presence = Arc::new(FakePresence::default());
    presence.set("d1", "fe-a");
    let config = RouterConfig {
        max_record_bytes: 8 * 1024,
        ..RouterConfig::default()
    };
    let router = open_router(&log, presence, config).await;
    match send(&router, command("d1", &"x".repeat(9 * 1024))).await {
        Err(CommandError::Invalid(v)) => assert_eq!(v.field, "payload"),
        other => panic!("expected invalid payload, got {other:?}"),
    }
    assert_eq!(record_count(&log).await, 0);
}

#[tokio::test]
async fn a_reply_too_large_to_route_back_is_reported_not_lost() {
    let mut big = FakeDevices::new("fe-a");
    big.script.insert(
        "d1".into(),
        Ok(CommandOutcome::Replied(CommandReply {
            payload: vec![7; 64 * 1024],
            content_type: String::new(),
            latency: Duration::from_millis(1),
        })),
    );
    let dir = TempDir::new().unwrap();
    let log = open_log(&dir).await;
    let presence = Arc::new(FakePresence::default());
    presence.set("d1", "fe-a");
    let router = open_router(&log, presence, RouterConfig::default()).await;
    let relay = start_relay(
        &log,
        "fe-a",
        Arc::new(big),
        RelayConfig {
            max_record_bytes: 16 * 1024,
            ..RelayConfig::default()
        },
    )
    .await;
    match send(&router, command("d1", "x")).await {
        Err(CommandError::Invalid(v)) => assert_eq!(v.field, "reply_payload"),
        other => panic!("expected invalid reply_payload, got {other:?}"),
    }
    relay.stop().await;
}

#[tokio::test]
async fn bad_ids_are_refused_at_start() {
    let dir = TempDir::new().unwrap();
    let log = open_log(&dir).await;
    let err = RoutedCommandSink::open(
        log.clone(),
        Arc::new(FakePresence::default()),
        "",
        RouterConfig::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            CommandServiceError::Config {
                field: "replica_id",
                ..
            }
        ),
        "{err:?}"
    );
    let relay = CommandRelay::new(log, String::new(), Arc::new(FakeDevices::new("x")));
    let err = relay.run(std::future::pending()).await.unwrap_err();
    assert!(
        matches!(
            err,
            CommandServiceError::Config {
                field: "frontend_id",
                ..
            }
        ),
        "{err:?}"
    );
}

/// A log whose consumers fail their next poll on demand, and that counts
/// the consumers opened.
#[derive(Debug)]
struct FlakyLog {
    inner: Arc<EmbeddedLog>,
    fail: Arc<std::sync::atomic::AtomicBool>,
    opened: Arc<std::sync::atomic::AtomicUsize>,
}

impl FlakyLog {
    fn new(inner: Arc<EmbeddedLog>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            fail: Arc::default(),
            opened: Arc::default(),
        })
    }

    fn break_consumers(&self) {
        self.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn opened(&self) -> usize {
        self.opened.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn wait_opened(&self, n: usize) {
        let deadline = Instant::now() + DEADLINE;
        while self.opened() < n {
            assert!(Instant::now() < deadline, "consumer reopened in time");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[derive(Debug)]
struct FlakyConsumer {
    inner: Box<dyn tributary_log::Consumer>,
    fail: Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait]
impl tributary_log::Consumer for FlakyConsumer {
    async fn poll(
        &mut self,
        max_records: usize,
        timeout: Duration,
    ) -> Result<Vec<LogRecord>, tributary_log::LogError> {
        if self.fail.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Err(tributary_log::LogError::Backend("broker gone".into()));
        }
        // Short polls, so a failure is noticed quickly.
        self.inner
            .poll(max_records, timeout.min(Duration::from_millis(50)))
            .await
    }
    async fn commit(&mut self, offsets: &[(u32, u64)]) -> Result<(), tributary_log::LogError> {
        self.inner.commit(offsets).await
    }
    fn assignment(&self) -> Vec<u32> {
        self.inner.assignment()
    }
}

#[async_trait]
impl Log for FlakyLog {
    fn topic(&self) -> &str {
        self.inner.topic()
    }
    fn partitions(&self) -> u32 {
        self.inner.partitions()
    }
    async fn append_batch(
        &self,
        records: Vec<Record>,
    ) -> Result<Vec<tributary_log::Position>, tributary_log::LogError> {
        self.inner.append_batch(records).await
    }
    async fn consumer(
        &self,
        opts: ConsumerOptions,
    ) -> Result<Box<dyn tributary_log::Consumer>, tributary_log::LogError> {
        let inner = self.inner.consumer(opts).await?;
        self.opened
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Box::new(FlakyConsumer {
            inner,
            fail: self.fail.clone(),
        }))
    }
    async fn watermarks(
        &self,
        partition: u32,
    ) -> Result<tributary_log::Watermarks, tributary_log::LogError> {
        self.inner.watermarks(partition).await
    }
    async fn committed(
        &self,
        group: &str,
        partition: u32,
    ) -> Result<Option<u64>, tributary_log::LogError> {
        self.inner.committed(group, partition).await
    }
}

#[tokio::test]
async fn failed_tail_consumers_reconnect_and_waiting_commands_fail_cleanly() {
    let dir = TempDir::new().unwrap();
    let log = open_log(&dir).await;
    let presence = Arc::new(FakePresence::default());
    presence.set("d1", "fe-a");
    let router_log = FlakyLog::new(log.clone());
    let router = Arc::new(
        RoutedCommandSink::open(
            router_log.clone(),
            presence,
            "query-1",
            RouterConfig::default(),
        )
        .await
        .expect("router opens"),
    );
    let gate = Arc::new(Notify::new());
    let mut slow = FakeDevices::new("fe-a");
    slow.gate = Some(gate.clone());
    let slow = Arc::new(slow);
    let relay_log = FlakyLog::new(log.clone());
    let relay = CommandRelay::new(relay_log.clone(), "fe-a".into(), slow.clone());
    let mut connected = relay.connected();
    let (stop, stopped) = oneshot::channel::<()>();
    let relay_task = tokio::spawn(relay.run(async {
        let _ = stopped.await;
    }));
    tokio::time::timeout(DEADLINE, connected.wait_for(|c| *c))
        .await
        .unwrap()
        .unwrap();

    // The frontend's consumer fails: it reopens and relays again.
    relay_log.break_consumers();
    relay_log.wait_opened(2).await;
    tokio::time::timeout(DEADLINE, connected.wait_for(|c| *c))
        .await
        .unwrap()
        .unwrap();

    // The router's consumer fails while a command waits for its result:
    // that command fails as unavailable instead of waiting for an answer
    // that may be lost.
    let waiting = tokio::spawn({
        let router = router.clone();
        async move { send(&router, command("d1", "first")).await }
    });
    tokio::time::timeout(DEADLINE, slow.arrived.notified())
        .await
        .expect("command arrives");
    router_log.break_consumers();
    assert!(matches!(
        waiting.await.unwrap(),
        Err(CommandError::Unavailable(_))
    ));
    gate.notify_one();

    // Once reopened, the router routes again. (The router marks itself up
    // in the same poll that opened the consumer, and this test runs on one
    // thread, so seeing the count means it is up.)
    router_log.wait_opened(2).await;
    let next = tokio::spawn({
        let router = router.clone();
        async move { send(&router, command("d1", "second")).await }
    });
    tokio::time::timeout(DEADLINE, slow.arrived.notified())
        .await
        .expect("second command arrives");
    gate.notify_one();
    let reply = replied(next.await.unwrap());
    assert_eq!(reply.payload, b"fe-a:d1:second".to_vec());

    let _ = stop.send(());
    relay_task.await.unwrap().unwrap();
}
