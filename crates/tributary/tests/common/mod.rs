//! A real `tributary standalone` process on ephemeral ports in a temp dir,
//! and clients for it.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tributary_proto::v1 as pb;
use tributary_proto::v1::query_service_client::QueryServiceClient;
use tributary_proto::v1::registry_service_client::RegistryServiceClient;

pub mod cluster;
pub mod device;
pub mod mqtt;

pub struct Standalone {
    pub child: Child,
    pub dir: PathBuf,
    pub http: SocketAddr,
    /// The HTTP API (the HTTP port unless `--api-addr` was given).
    pub api: SocketAddr,
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
    /// The MQTT listener (3.1.1 and 5.0).
    pub mqtt: SocketAddr,
    /// The MQTT over WebSocket listener (`/mqtt`).
    pub mqtt_ws: SocketAddr,
    /// The MQTT over TLS listener, when started with a certificate.
    pub mqtts: Option<SocketAddr>,
    /// The plain CoAP listener, when started with `--coap-addr`.
    pub coap: Option<SocketAddr>,
    /// The CoAP over DTLS listener, when started with `--coaps-addr`.
    pub coaps: Option<SocketAddr>,
    pub admin_token: String,
    /// What the process printed on stdout up to its ready line.
    pub startup_output: Vec<String>,
}

impl Standalone {
    /// Starts standalone on `dir` and waits for its ready line.
    pub fn start(dir: &Path) -> Standalone {
        Self::start_with(dir, &[])
    }

    /// Starts standalone on `dir` with extra flags, and waits for its ready line.
    pub fn start_with(dir: &Path, extra: &[&std::ffi::OsStr]) -> Standalone {
        Self::start_with_env(dir, extra, &[])
    }

    /// Starts standalone on `dir` with extra flags and environment
    /// variables (`TRIBUTARY_<SECTION>__<FIELD>` settings), and waits for
    /// its ready line.
    pub fn start_with_env(
        dir: &Path,
        extra: &[&std::ffi::OsStr],
        env: &[(&str, &str)],
    ) -> Standalone {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tributary"))
            .args(["standalone", "--data-dir"])
            .arg(dir)
            .args([
                "--http-addr",
                "127.0.0.1:0",
                "--grpc-addr",
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
                "--mqtt-addr",
                "127.0.0.1:0",
                "--mqtt-ws-addr",
                "127.0.0.1:0",
            ])
            .args(extra)
            .envs(env.iter().copied())
            .env("TRIBUTARY_LOG", "warn")
            .env("TRIBUTARY_LOG_FORMAT", "text")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tributary standalone");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let started = Instant::now();
        let mut startup_output = Vec::new();
        let ready = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("standalone printed its ready line within 30 s");
            if line.starts_with("tributary standalone ready:") {
                break line;
            }
            startup_output.push(line);
        };
        eprintln!("standalone ready in {:?}", started.elapsed());
        let optional = |name: &str| -> Option<SocketAddr> {
            ready
                .split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse().ok())
        };
        let field = |name: &str| -> SocketAddr {
            optional(name).unwrap_or_else(|| panic!("no {name}= in {ready:?}"))
        };
        let admin_token = std::fs::read_to_string(dir.join("admin.token"))
            .expect("admin.token")
            .trim()
            .to_string();
        Standalone {
            http: field("http"),
            api: field("api"),
            grpc: field("grpc"),
            metrics: field("metrics"),
            mqtt: field("mqtt"),
            mqtt_ws: field("mqtt-ws"),
            mqtts: optional("mqtts"),
            coap: optional("coap"),
            coaps: optional("coaps"),
            child,
            dir: dir.to_path_buf(),
            admin_token,
            startup_output,
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "standalone did not exit within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn crash(mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// `http://<api>/api/v1<path>`.
    pub fn api_url(&self, path: &str) -> String {
        format!("http://{}/api/v1{path}", self.api)
    }

    /// An operator token of `tenant` with `role` (`viewer`, `operator`,
    /// `admin`), signed with the platform's key; an empty tenant is a
    /// platform admin.
    pub fn operator_token(&self, tenant: &str, role: &str) -> String {
        let keys = tributary_auth::JwtKeys::load_or_create(&self.dir.join("jwt.secret"))
            .expect("the platform's JWT key");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        keys.issue(&tributary_auth::OperatorClaims {
            sub: format!("test-{role}@{tenant}"),
            tenant: tenant.into(),
            role: role.parse().expect("a role"),
            iat: now,
            exp: now + 3600,
        })
        .expect("issue a token")
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect()
            .await
            .expect("gRPC connect")
    }

    pub async fn registry(
        &self,
        token: &str,
    ) -> RegistryServiceClient<InterceptedService<Channel, Bearer>> {
        RegistryServiceClient::with_interceptor(self.channel().await, Bearer::new(token))
    }

    pub async fn query(
        &self,
        token: &str,
    ) -> QueryServiceClient<InterceptedService<Channel, Bearer>> {
        QueryServiceClient::with_interceptor(self.channel().await, Bearer::new(token))
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone)]
pub struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl Bearer {
    pub fn new(token: &str) -> Self {
        Bearer(format!("Bearer {token}").parse().unwrap())
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

pub fn device_target(device: &str) -> Option<pb::Target> {
    Some(pb::Target {
        tenant: String::new(),
        devices: Some(pb::target::Devices::Device(device.into())),
    })
}

pub fn selector_target(selector: &str) -> Option<pb::Target> {
    Some(pb::Target {
        tenant: String::new(),
        devices: Some(pb::target::Devices::Selector(selector.into())),
    })
}

/// Waits until `check` returns Some, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// All points of one device and metric in [from, to), following pages.
pub async fn range_all(
    q: &mut QueryServiceClient<InterceptedService<Channel, Bearer>>,
    device: &str,
    metrics: &[&str],
    from_ns: i64,
    to_ns: i64,
) -> Vec<(String, i64, Option<pb::Value>)> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let resp = q
            .query_range(pb::QueryRangeRequest {
                target: device_target(device),
                metrics: metrics.iter().map(|m| m.to_string()).collect(),
                from_ns,
                to_ns,
                limit: 10_000,
                order: pb::Order::Asc as i32,
                page_token: page_token.clone(),
            })
            .await
            .expect("QueryRange")
            .into_inner();
        for s in resp.series {
            for p in s.points {
                out.push((s.metric.clone(), p.ts_ns, p.value));
            }
        }
        if resp.next_page_token.is_empty() {
            return out;
        }
        page_token = resp.next_page_token;
    }
}

/// Waits (30 s at most) until every acknowledged `(ts_ns, value)` of metric
/// `v` of `device` is readable, and checks each value: nothing acknowledged
/// was lost or changed.
pub async fn assert_all_stored(s: &Standalone, device: &str, points: &[(i64, f64)]) {
    let q = s.query(&s.admin_token).await;
    let from = points
        .iter()
        .map(|p| p.0)
        .min()
        .expect("some acknowledged points");
    let to = points
        .iter()
        .map(|p| p.0)
        .max()
        .expect("some acknowledged points")
        + 1;
    let stored = eventually(
        Duration::from_secs(30),
        "every acknowledged point readable",
        || {
            let mut q = q.clone();
            let want = points.len();
            async move {
                let got = range_all(&mut q, device, &["v"], from, to).await;
                (got.len() >= want).then_some(got)
            }
        },
    )
    .await;
    let by_ts: std::collections::HashMap<i64, Option<pb::Value>> =
        stored.into_iter().map(|(_, ts, v)| (ts, v)).collect();
    for (ts, v) in points {
        assert_eq!(
            by_ts.get(ts),
            Some(&f64v(*v)),
            "{device}: acknowledged point at ts={ts} missing or changed"
        );
    }
}

pub fn f64v(v: f64) -> Option<pb::Value> {
    Some(pb::Value {
        kind: Some(pb::value::Kind::DoubleValue(v)),
    })
}
pub fn i64v(v: i64) -> Option<pb::Value> {
    Some(pb::Value {
        kind: Some(pb::value::Kind::IntValue(v)),
    })
}
pub fn boolv(v: bool) -> Option<pb::Value> {
    Some(pb::Value {
        kind: Some(pb::value::Kind::BoolValue(v)),
    })
}
pub fn strv(v: &str) -> Option<pb::Value> {
    Some(pb::Value {
        kind: Some(pb::value::Kind::StringValue(v.into())),
    })
}

/// Creates tenant `name` (as the admin), unless it is `default`.
/// An HTTP client for the API, with a deadline on every request.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A device created over the HTTP API with `labels`, and its new token.
pub async fn http_device(s: &Standalone, id: &str, labels: serde_json::Value) -> String {
    let resp = http_client()
        .post(s.api_url("/devices"))
        .bearer_auth(&s.admin_token)
        .json(&serde_json::json!({"id": id, "labels": labels, "issue_token": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::CREATED, "creating {id}");
    let made: serde_json::Value = resp.json().await.unwrap();
    made["token"]["token"].as_str().expect("a token").to_owned()
}

pub async fn create_tenant(s: &Standalone, name: &str) {
    if name == "default" {
        return;
    }
    s.registry(&s.admin_token)
        .await
        .create_tenant(pb::CreateTenantRequest {
            name: name.into(),
            ..Default::default()
        })
        .await
        .expect("CreateTenant");
}

/// Sends the command `blink` (payload `twice`) to `device` through the HTTP
/// API as the admin, and checks the call succeeds. A device that does not
/// answer makes it end after `timeout_ms`.
pub async fn send_blink(s: &Standalone, device: &str, timeout_ms: u64) {
    let resp = http_client()
        .post(s.api_url(&format!("/devices/{device}/commands")))
        .bearer_auth(&s.admin_token)
        .json(&serde_json::json!({"name": "blink", "payload": "twice", "timeout_ms": timeout_ms}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
}

/// Creates device `id` in `tenant` (as the admin) and returns its token.
pub async fn create_device_in(s: &Standalone, tenant: &str, id: &str) -> String {
    s.registry(&s.admin_token)
        .await
        .create_device(pb::CreateDeviceRequest {
            tenant: tenant.into(),
            id: id.into(),
            issue_token: true,
            ..Default::default()
        })
        .await
        .expect("CreateDevice")
        .into_inner()
        .token
        .expect("token")
        .token
}

/// Runs the CLI as the admin against the platform, with JSON output, and
/// returns its stdout; fails on error.
pub async fn cli(s: &Standalone, args: &[&str]) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tributary"));
    cmd.args(args)
        .args(["--endpoint", &format!("http://{}", s.grpc)])
        .args(["--token", &s.admin_token, "-o", "json"]);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run the CLI"))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "tributary {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// A webhook receiver on loopback: every JSON body it got, in order.
pub async fn json_receiver() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
) {
    use std::sync::{Arc, Mutex};
    type Got = Arc<Mutex<Vec<serde_json::Value>>>;
    let got: Got = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(got): axum::extract::State<Got>, body: String| async move {
                    got.lock()
                        .unwrap()
                        .push(serde_json::from_str(&body).expect("a JSON body"));
                    axum::http::StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, got)
}

/// The value of one series of a metric on the standalone's ops listener
/// (`name` with its labels as exposed, e.g. `x_total{reason="y"}`).
pub async fn metric(s: &Standalone, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{}/metrics", s.metrics))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
