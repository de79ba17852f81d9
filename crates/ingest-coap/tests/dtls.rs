//! The CoAP frontend's DTLS 1.2 PSK listener against a DTLS client nobody
//! here wrote: libcoap's `coap-client-openssl` (Debian's libcoap3-bin).
//! Telemetry in a session is durable before its ACK; a wrong key or an
//! unknown identity gets no session; revoking the credential ends it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::net::UdpSocket;
use tributary_core::Limits;
use tributary_core::directory::{
    Authenticator, Credential, DirectoryError, Principal, PskGrant, TenantPolicy,
};
use tributary_core::envelope::Envelope;
use tributary_ingest::{IngestConfig, IngestMetrics, Ingestor};
use tributary_ingest_coap::{CoapConfig, CoapMetrics, CoapServer};
use tributary_log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use tributary_log::{ConsumerOptions, Log, StartFrom};

const IDENTITY: &str = "acme/d1/k1";
const KEY: &str = "tbk_secret-key-of-d1";

/// One PSK: identity `acme/d1/k1`, key [`KEY`], until `revoked`; no
/// tokens.
#[derive(Debug, Default)]
struct PskAuth {
    revoked: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Authenticator for PskAuth {
    async fn authenticate(&self, _token: &str) -> Result<Principal, DirectoryError> {
        Err(DirectoryError::Unauthenticated)
    }
    async fn authenticate_psk(&self, identity: &str) -> Result<PskGrant, DirectoryError> {
        if identity != IDENTITY || self.revoked.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(DirectoryError::Unauthenticated);
        }
        Ok(PskGrant {
            principal: Principal::Device {
                tenant: "acme".into(),
                device: "d1".into(),
            },
            credential: Credential {
                id: "k1".into(),
                expires_at_ns: None,
            },
            key: KEY.as_bytes().to_vec(),
        })
    }
    async fn tenant_policy(&self, _tenant: &str) -> Result<TenantPolicy, DirectoryError> {
        Ok(TenantPolicy::default())
    }
    async fn ensure_device(
        &self,
        _t: &str,
        _device: &str,
        _l: &BTreeMap<String, String>,
    ) -> Result<(), DirectoryError> {
        Ok(())
    }
}

struct Rig {
    auth: Arc<PskAuth>,
    metrics: prometheus_client::registry::Registry,
    _dir: tempfile::TempDir,
    log: Arc<EmbeddedLog>,
    server: CoapServer,
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn rig(config: CoapConfig) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path().join("log"), EmbeddedLogConfig::new("t", 2))
        .await
        .unwrap();
    let auth = Arc::new(PskAuth::default());
    let ingestor = Ingestor::new(
        log.clone(),
        auth.clone(),
        IngestConfig::default(),
        IngestMetrics::default(),
    );
    let mut metrics = prometheus_client::registry::Registry::default();
    let server = CoapServer::new(ingestor, config, CoapMetrics::register(&mut metrics)).unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let s = server.clone();
    tokio::spawn(async move {
        s.serve_dtls(socket, async {
            let _ = stopped.await;
        })
        .await
    });
    Rig {
        auth,
        metrics,
        _dir: dir,
        log,
        server,
        addr,
        _stop: stop,
    }
}

async fn envelopes(log: &EmbeddedLog) -> Vec<Envelope> {
    let mut c = log
        .consumer(ConsumerOptions {
            group: None,
            start: StartFrom::Earliest,
        })
        .await
        .unwrap();
    let recs = c.poll(1000, Duration::from_millis(200)).await.unwrap();
    recs.iter()
        .map(|r| Envelope::decode(&r.value, &Limits::default()).unwrap())
        .collect()
}

/// Runs coap-client-openssl off the runtime; returns (success, output).
async fn client(args: Vec<String>) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("coap-client-openssl")
            .args(["-B", "10"])
            .args(&args)
            .output()
            .expect("run coap-client-openssl (apt install libcoap3-bin; scripts/test.sh does)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    })
    .await
    .unwrap()
}

fn post(addr: SocketAddr, identity: &str, key: &str, body: &str) -> Vec<String> {
    [
        "-m",
        "post",
        "-u",
        identity,
        "-k",
        key,
        "-t",
        "json",
        "-e",
        body,
        &format!("coaps://{addr}/t"),
    ]
    .map(String::from)
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_with_its_psk_posts_telemetry_that_is_durable_before_the_ack() {
    let rig = rig(CoapConfig::default()).await;
    let (ok, out) = client(post(rig.addr, IDENTITY, KEY, r#"{"values":{"temp":21.5}}"#)).await;
    assert!(ok, "coap-client-openssl failed: {out}");
    // The 2.04 came only once the append was durable: the point is there.
    let stored = envelopes(&rig.log).await;
    assert_eq!(stored.len(), 1, "{out}");
    assert_eq!(stored[0].tenant, "acme");
    assert_eq!(stored[0].device, "d1");
    drop(rig.server);
}

/// The value of a metric sample, by its exposition line's start.
fn metric(rig: &Rig, sample: &str) -> f64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &rig.metrics).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Polls `check` until it holds, for up to `limit`.
async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_or_an_unknown_identity_gets_no_session() {
    let rig = rig(CoapConfig {
        dtls_handshake_secs: 1,
        ..CoapConfig::default()
    })
    .await;
    let mut wrong = post(
        rig.addr,
        IDENTITY,
        "tbk_not-the-key",
        r#"{"values":{"temp":1}}"#,
    );
    let mut unknown = post(rig.addr, "acme/d1/nope", KEY, r#"{"values":{"temp":1}}"#);
    for args in [&mut wrong, &mut unknown] {
        args.splice(0..0, ["-B".to_owned(), "3".to_owned()]);
    }
    let (ok, out) = client(wrong).await;
    assert!(
        !ok || !out.contains("2.04"),
        "a wrong key got through: {out}"
    );
    let (ok, out) = client(unknown).await;
    assert!(
        !ok || !out.contains("2.04"),
        "an unknown identity got through: {out}"
    );
    assert!(envelopes(&rig.log).await.is_empty());
    // Refused by the registry: the unknown identity. Never finished: the
    // wrong key, whose Finished record does not decrypt, and DTLS drops
    // such records without a word (RFC 6347 4.1.2.7), so the handshake
    // runs out its time.
    let handshakes = "tributary_coap_dtls_handshakes_total{outcome=";
    assert_eq!(metric(&rig, &format!("{handshakes}\"bad_psk\"}}")), 1.0);
    eventually(
        Duration::from_secs(10),
        "the wrong key's handshake dropped",
        || metric(&rig, &format!("{handshakes}\"timeout\"}}")) == 1.0,
    )
    .await;
    assert_eq!(metric(&rig, &format!("{handshakes}\"established\"}}")), 0.0);
    eventually(Duration::from_secs(10), "no session left", || {
        metric(&rig, "tributary_coap_dtls_sessions ") == 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reach_a_psk_device_through_observe_and_revocation_ends_its_session() {
    use tokio::io::AsyncReadExt;
    use tributary_core::commands::{Command, CommandOutcome, CommandSink};
    let rig = rig(CoapConfig::default()).await;
    // (stdbuf: the client's stdout is a pipe, which libc would buffer.)
    let mut observer = tokio::process::Command::new("stdbuf")
        .args(["-o0", "coap-client-openssl"])
        .args([
            "-m", "get", "-s", "60", "-B", "60", "-u", IDENTITY, "-k", KEY,
        ])
        .arg(format!("coaps://{}/c", rig.addr))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("run coap-client-openssl");
    let mut printed = observer.stdout.take().unwrap();
    eventually(Duration::from_secs(20), "the device registered", || {
        rig.server.observed("acme", "d1")
    })
    .await;
    assert_eq!(
        metric(&rig, "tributary_coap_dtls_sessions "),
        1.0,
        "one session"
    );
    // The device does not reply (libcoap's client only prints): the
    // command is delivered and then times out.
    let outcome = rig
        .server
        .send_command(Command {
            tenant: "acme".into(),
            device: "d1".into(),
            name: "blink".into(),
            payload: b"3 times".to_vec(),
            content_type: "text/plain".into(),
            timeout: Duration::from_secs(2),
            ttl: Duration::ZERO,
        })
        .await
        .unwrap();
    assert!(matches!(outcome, CommandOutcome::Timeout), "{outcome:?}");
    let text = tokio::time::timeout(Duration::from_secs(10), async {
        let mut text = String::new();
        let mut chunk = [0u8; 4096];
        while !text.contains("3 times") {
            let n = printed.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the observer ended without the command: {text:?}");
            text.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
        text
    })
    .await
    .expect("the notification within 10 s");
    assert!(text.contains(r#""name":"blink""#), "{text}");
    // Revoking another credential of the device changes nothing...
    assert!(!rig.server.end_registration("acme", "d1", Some("k2")).await);
    assert!(rig.server.observed("acme", "d1"));
    assert_eq!(metric(&rig, "tributary_coap_dtls_sessions "), 1.0);
    // ...revoking its own ends the registration and the session (and the
    // client's attempts to handshake again are refused).
    rig.auth
        .revoked
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(rig.server.end_registration("acme", "d1", Some("k1")).await);
    assert!(!rig.server.observed("acme", "d1"));
    eventually(Duration::from_secs(10), "the session closed", || {
        metric(
            &rig,
            "tributary_coap_dtls_sessions_ended_total{outcome=\"revoked\"}",
        ) == 1.0
    })
    .await;
    eventually(Duration::from_secs(15), "no session left", || {
        metric(&rig, "tributary_coap_dtls_sessions ") == 0.0
    })
    .await;
    assert_eq!(
        metric(
            &rig,
            "tributary_coap_dtls_handshakes_total{outcome=\"established\"}"
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_restarts_on_the_same_port_gets_a_new_session() {
    let rig = rig(CoapConfig::default()).await;
    // A fixed local port, as LwM2M clients often bind.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let mut first = tokio::process::Command::new("coap-client-openssl")
        .args(["-m", "get", "-s", "60", "-B", "60", "-p", &port])
        .args(["-u", IDENTITY, "-k", KEY])
        .arg(format!("coaps://{}/c", rig.addr))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("run coap-client-openssl");
    eventually(
        Duration::from_secs(20),
        "the first session registered",
        || rig.server.observed("acme", "d1"),
    )
    .await;
    // It dies without a word (no close_notify), and starts again on the
    // same port: its new handshake gets a session at once.
    first.kill().await.unwrap();
    let mut args = post(rig.addr, IDENTITY, KEY, r#"{"values":{"temp":3}}"#);
    args.splice(
        0..0,
        [
            "-p".to_owned(),
            port.clone(),
            "-B".to_owned(),
            "5".to_owned(),
        ],
    );
    let (ok, out) = client(args).await;
    assert!(ok, "the restarted device: {out}");
    assert_eq!(envelopes(&rig.log).await.len(), 1, "{out}");
    assert_eq!(
        metric(
            &rig,
            "tributary_coap_dtls_handshakes_total{outcome=\"established\"}"
        ),
        2.0
    );
}
