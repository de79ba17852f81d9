//! Shared rig: a real MQTT server on 127.0.0.1:0 over a real embedded log,
//! and a raw client built on the codec.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tributary_core::Limits;
use tributary_core::directory::{
    AppGrants, Application, Authenticator, Credential, DirectoryError, PresenceSink, Principal,
    TenantPolicy,
};
use tributary_core::envelope::Envelope;
use tributary_ingest::{IngestConfig, IngestMetrics, Ingestor};
use tributary_ingest_mqtt::{MqttConfig, MqttMetrics, MqttServer};
use tributary_log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use tributary_log::{ConsumerOptions, Log, StartFrom};
use tributary_mqtt_codec::{ConnAck, Connect, Packet, ProtocolVersion, decode, encode};

/// How long a test waits for anything before failing.
pub const WAIT: Duration = Duration::from_secs(10);

/// Device tokens: `tok-{device}` (and a second one, `tok2-{device}`, as
/// after a rotation) in tenant acme, `other-{device}` in tenant
/// other; `ingest` is a tenant ingest token. Application tokens:
/// `app-all` (application `all`, grants `#`), `app-dash` (application
/// `dash`: publish `devices/+/commands/#`, subscribe
/// `devices/+/telemetry/#` and `alerts/#`), both in acme, and
/// `app-other` (application `all` of tenant other, grants `#`).
#[derive(Debug)]
pub struct TestAuth;

#[async_trait]
impl Authenticator for TestAuth {
    async fn authenticate(&self, token: &str) -> Result<Principal, DirectoryError> {
        if let Some(device) = token
            .strip_prefix("tok-")
            .or_else(|| token.strip_prefix("tok2-"))
        {
            return Ok(Principal::Device {
                tenant: "acme".into(),
                device: device.into(),
            });
        }
        if let Some(device) = token.strip_prefix("other-") {
            return Ok(Principal::Device {
                tenant: "other".into(),
                device: device.into(),
            });
        }
        match token {
            "ingest" => Ok(Principal::TenantIngest {
                tenant: "acme".into(),
                credential_id: "c".into(),
            }),
            "disabled" => Err(DirectoryError::Forbidden("device disabled".into())),
            _ => Err(DirectoryError::Unauthenticated),
        }
    }
    async fn authenticate_application(
        &self,
        name: &str,
        token: &str,
    ) -> Result<Application, DirectoryError> {
        let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let (tenant, app, publish, subscribe) = match token {
            "app-all" => ("acme", "all", strings(&["#"]), strings(&["#"])),
            "app-other" => ("other", "all", strings(&["#"]), strings(&["#"])),
            "app-dash" => (
                "acme",
                "dash",
                strings(&["devices/+/commands/#"]),
                strings(&["devices/+/telemetry/#", "alerts/#"]),
            ),
            _ => return Err(DirectoryError::Unauthenticated),
        };
        if app != name {
            return Err(DirectoryError::Unauthenticated);
        }
        Ok(Application {
            tenant: tenant.into(),
            name: app.into(),
            credential_id: format!("cred-{token}"),
            grants: AppGrants { publish, subscribe },
        })
    }
    /// Credentials: `cred-{token}`. `exp-{device}` is device `device`'s
    /// token that expires one second after it is presented.
    async fn authenticate_credential(
        &self,
        token: &str,
    ) -> Result<(Principal, Credential), DirectoryError> {
        if let Some(device) = token.strip_prefix("exp-") {
            let principal = Principal::Device {
                tenant: "acme".into(),
                device: device.into(),
            };
            let credential = Credential {
                id: format!("cred-{token}"),
                expires_at_ns: Some(tributary_core::time::now_ns() + 1_000_000_000),
            };
            return Ok((principal, credential));
        }
        let principal = self.authenticate(token).await?;
        let credential = Credential {
            id: format!("cred-{token}"),
            expires_at_ns: None,
        };
        Ok((principal, credential))
    }
    /// The registry's view: device `gone`'s token was revoked (an event
    /// the frontend missed); every other credential is valid.
    async fn credential_valid(
        &self,
        _tenant: &str,
        credential_id: &str,
        _device: Option<&str>,
    ) -> Result<bool, DirectoryError> {
        Ok(credential_id != "cred-tok-gone")
    }
    async fn tenant_policy(&self, _tenant: &str) -> Result<TenantPolicy, DirectoryError> {
        Ok(TenantPolicy::default())
    }
    async fn ensure_device(
        &self,
        _: &str,
        _: &str,
        _: &BTreeMap<String, String>,
    ) -> Result<(), DirectoryError> {
        Ok(())
    }
}

/// Records presence reports.
#[derive(Debug, Default)]
pub struct Presence(pub Mutex<Vec<(String, String, bool)>>);

#[async_trait]
impl PresenceSink for Presence {
    async fn report(
        &self,
        tenant: &str,
        device: &str,
        online: bool,
        _at: i64,
        _f: &str,
    ) -> Result<(), DirectoryError> {
        self.0
            .lock()
            .unwrap()
            .push((tenant.into(), device.into(), online));
        Ok(())
    }
}

pub struct Rig {
    pub dir: tempfile::TempDir,
    pub log: Arc<EmbeddedLog>,
    pub server: MqttServer,
    pub addr: SocketAddr,
    pub presence: Arc<Presence>,
    /// The Prometheus registry the server's metrics are registered in.
    pub registry: prometheus_client::registry::Registry,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Rig {
    pub async fn start(config: MqttConfig) -> Rig {
        Self::start_with_auth(config, Arc::new(TestAuth)).await
    }

    /// A rig whose server authenticates with `auth`.
    pub async fn start_with_auth(config: MqttConfig, auth: Arc<dyn Authenticator>) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(dir.path().join("log"), EmbeddedLogConfig::new("t", 2))
            .await
            .unwrap();
        let ingestor = Ingestor::new(
            log.clone(),
            auth,
            IngestConfig::default(),
            IngestMetrics::default(),
        );
        let presence = Arc::new(Presence::default());
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = MqttMetrics::register(&mut registry);
        let server = MqttServer::new(ingestor, presence.clone(), config, metrics).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let s = server.clone();
        let task = tokio::spawn(async move {
            s.serve(listener, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Rig {
            dir,
            log,
            server,
            addr,
            presence,
            registry,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn default() -> Rig {
        Self::start(MqttConfig::default()).await
    }

    /// Stops the server and waits for it.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("server stops")
                .unwrap();
        }
    }

    /// The metrics in Prometheus text format.
    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).unwrap();
        out
    }

    /// Every envelope in the log.
    pub async fn envelopes(&self) -> Vec<Envelope> {
        envelopes(&self.log).await
    }

    /// Waits until the log holds `n` envelopes, and returns them.
    pub async fn wait_envelopes(&self, n: usize) -> Vec<Envelope> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let envs = self.envelopes().await;
            if envs.len() >= n || tokio::time::Instant::now() > deadline {
                return envs;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub async fn envelopes(log: &EmbeddedLog) -> Vec<Envelope> {
    let mut c = log
        .consumer(ConsumerOptions {
            group: None,
            start: StartFrom::Earliest,
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    loop {
        let recs = c.poll(1000, Duration::from_millis(50)).await.unwrap();
        if recs.is_empty() {
            return out;
        }
        out.extend(
            recs.iter()
                .map(|r| Envelope::decode(&r.value, &Limits::default()).unwrap()),
        );
    }
}

/// Waits for `cond` to hold, polling, or panics after [`WAIT`].
pub async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An MQTT client made of the codec and a socket, for precise protocol tests.
pub struct Raw {
    pub stream: TcpStream,
    pub buf: BytesMut,
    pub version: ProtocolVersion,
}

/// A CONNECT for `device` with its token, `client_id` and version.
pub fn connect_packet(
    version: ProtocolVersion,
    client_id: &str,
    device: &str,
    token: &str,
) -> Connect {
    let mut c = Connect::new(version, client_id);
    c.username = Some(device.into());
    c.password = Some(token.as_bytes().to_vec().into());
    c
}

impl Raw {
    pub async fn open(addr: SocketAddr, version: ProtocolVersion) -> Raw {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Raw {
            stream,
            buf: BytesMut::new(),
            version,
        }
    }

    /// Connects as device `device` (token `tok-{device}`), client id = device.
    pub async fn device(addr: SocketAddr, version: ProtocolVersion, device: &str) -> Raw {
        let (raw, ack) = Self::connect(
            addr,
            connect_packet(version, device, device, &format!("tok-{device}")),
        )
        .await;
        assert_eq!(
            ack.reason_code,
            tributary_mqtt_codec::ReasonCode::Success,
            "{ack:?}"
        );
        raw
    }

    /// Connects as device `device` with another client id (`{device}/x`).
    pub async fn client(
        addr: SocketAddr,
        version: ProtocolVersion,
        client_id: &str,
        device: &str,
    ) -> Raw {
        let (raw, ack) = Self::connect(
            addr,
            connect_packet(version, client_id, device, &format!("tok-{device}")),
        )
        .await;
        assert_eq!(
            ack.reason_code,
            tributary_mqtt_codec::ReasonCode::Success,
            "{ack:?}"
        );
        raw
    }

    /// Sends CONNECT and returns the CONNACK.
    pub async fn connect(addr: SocketAddr, connect: Connect) -> (Raw, ConnAck) {
        let mut raw = Self::open(addr, connect.protocol).await;
        raw.send(connect.into()).await;
        match raw.recv().await {
            Some(Packet::ConnAck(a)) => (raw, *a),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        encode(&packet, self.version, &mut out).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next packet, or `None` once the server closed the connection.
    /// Panics after [`WAIT`].
    pub async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(WAIT, self.recv_inner())
            .await
            .expect("timed out waiting for a packet")
    }

    async fn recv_inner(&mut self) -> Option<Packet> {
        loop {
            if let Some(p) = decode(&mut self.buf, Some(self.version), usize::MAX).unwrap() {
                return Some(p);
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Sends PINGREQ and returns every packet received before the PINGRESP:
    /// what the server had to send at that point.
    pub async fn drain_until_pong(&mut self) -> Vec<Packet> {
        self.send(Packet::PingReq).await;
        let mut before = Vec::new();
        loop {
            match self.recv().await {
                Some(Packet::PingResp) => return before,
                Some(p) => before.push(p),
                None => panic!("closed while waiting for PINGRESP"),
            }
        }
    }

    /// Expects the server to close the connection, after at most a
    /// DISCONNECT, whose reason code is returned.
    pub async fn expect_close(&mut self) -> Option<tributary_mqtt_codec::ReasonCode> {
        let mut reason = None;
        loop {
            match self.recv().await {
                None => return reason,
                Some(Packet::Disconnect(d)) => reason = Some(d.reason_code),
                Some(other) => panic!("expected a close, got {other:?}"),
            }
        }
    }
}
