//! The distributed mode as separate OS processes: a real Tansu broker (a
//! Kafka-protocol broker) and `tributary registry|ingest|processor`
//! processes on ephemeral loopback ports.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tributary_proto::v1 as pb;
use tributary_proto::v1::registry_service_client::RegistryServiceClient;

use super::Bearer;

const TANSU_INSTALL: &str = "cargo install --locked tansu --version 0.6.0 --features dynostore";

/// A running Tansu broker with in-memory storage; killed on drop.
pub struct Tansu {
    child: Child,
    pub addr: SocketAddr,
}

impl Tansu {
    /// Starts a broker on a free port. Panics with the install command when
    /// `tansu` is missing: the distributed test is not optional.
    pub fn start() -> Tansu {
        let binary = find_tansu().unwrap_or_else(|| {
            panic!("the distributed test needs the `tansu` broker; install it with `{TANSU_INSTALL}` (scripts/test.sh does)")
        });
        let mut last = String::new();
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let url = format!("tcp://{addr}");
            let log =
                File::create(std::env::temp_dir().join(format!("tansu-dist-{port}.log"))).unwrap();
            let mut child = Command::new(&binary)
                .args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &url,
                ])
                .args(["--storage-engine", "memory://tansu/"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("spawn tansu");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!("tansu exited with {status}");
                    break;
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return Tansu { child, addr };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    last = "tansu did not listen within 20 s".into();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("{last}");
    }

    /// `--log` for the services.
    /// A client configuration for `topic` on this broker, as the tests use
    /// it: one record per batch (Tansu 0.6 mishandles multi-record
    /// batches, docs/kafka.md) and a 6 s group session.
    pub fn kafka_config(&self, topic: &str, partitions: u32) -> tributary_log_kafka::KafkaConfig {
        let mut c = tributary_log_kafka::KafkaConfig {
            brokers: vec![self.addr.to_string()],
            topic: topic.into(),
            partitions,
            connect_timeout_ms: 20_000,
            ..tributary_log_kafka::KafkaConfig::default()
        };
        c.consumer.session_timeout_ms = 6_000;
        c.producer.batch_num_messages = 1;
        c
    }

    pub fn log_url(&self) -> String {
        format!("kafka://{}", self.addr)
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_tansu() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("tansu"))
        .find(|p| p.is_file())
}

/// One `tributary <role>` process; killed on drop.
pub struct Service {
    pub role: &'static str,
    pub child: Child,
    /// The `key=value` fields of its ready line.
    pub fields: HashMap<String, String>,
    pub args: Vec<OsString>,
}

impl Service {
    /// Starts `tributary <role> <args>` and waits for its ready line.
    pub fn start(role: &'static str, args: Vec<OsString>) -> Service {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tributary"))
            .arg(role)
            .args(&args)
            // TEST_SERVICE_LOG=info shows the services' logs when a test fails.
            .env(
                "TRIBUTARY_LOG",
                std::env::var("TEST_SERVICE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env("TRIBUTARY_LOG_FORMAT", "text")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tributary");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let prefix = format!("tributary {role} ready:");
        let deadline = Instant::now() + Duration::from_secs(60);
        let ready = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with(&prefix) => break line,
                Ok(_) => {}
                Err(_) => {
                    let status = child.try_wait().ok().flatten();
                    let _ = child.kill();
                    panic!("tributary {role} printed no ready line within 60 s (exit: {status:?})");
                }
            }
        };
        // Keep draining stdout so the process never blocks on it.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        let fields = ready[prefix.len()..]
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Service {
            role,
            child,
            fields,
            args,
        }
    }

    pub fn addr(&self, field: &str) -> SocketAddr {
        self.fields
            .get(field)
            .unwrap_or_else(|| panic!("{} ready line has no {field}=", self.role))
            .parse()
            .unwrap()
    }

    /// SIGTERM, then wait for the exit.
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
                "{} did not exit within 30 s of SIGTERM",
                self.role
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no drain, no flush, no commit.
    pub fn crash(mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Flags every service of one test cluster shares.
pub fn common_args(tansu: &Tansu, dir: &Path) -> Vec<OsString> {
    [
        "--log".into(),
        tansu.log_url().into(),
        "--jwt-secret-file".into(),
        dir.join("jwt.secret").into_os_string(),
        "--metrics-addr".into(),
        "127.0.0.1:0".into(),
        // Tansu 0.6 mishandles multi-record batches (docs/kafka.md).
        "--kafka-batch-num-messages".into(),
        "1".into(),
        "--kafka-partitions".into(),
        "4".into(),
    ]
    .into_iter()
    .collect()
}

pub fn os(s: impl Into<OsString>) -> OsString {
    s.into()
}

/// A registry on a fresh Tansu broker, and the other roles on demand.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub tansu: Tansu,
    pub registry: Service,
    pub admin: String,
    /// Flags every service of this cluster gets.
    extra: Vec<OsString>,
}

impl Cluster {
    pub fn start() -> Cluster {
        Self::start_with(Vec::new())
    }

    /// A cluster whose every service also gets `extra`.
    pub fn start_with(extra: Vec<OsString>) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let tansu = Tansu::start();
        let mut args = common_args(&tansu, dir.path());
        args.extend(extra.iter().cloned());
        args.extend([
            os("--store"),
            dir.path().join("registry").into_os_string(),
            os("--data-dir"),
            dir.path().into(),
            os("--grpc-addr"),
            os("127.0.0.1:0"),
        ]);
        let registry = Service::start("registry", args);
        let admin = std::fs::read_to_string(dir.path().join("admin.token"))
            .expect("the registry wrote admin.token")
            .trim()
            .to_owned();
        Cluster {
            dir,
            tansu,
            registry,
            admin,
            extra,
        }
    }

    fn args(&self) -> Vec<OsString> {
        let mut args = common_args(&self.tansu, self.dir.path());
        args.extend(self.extra.iter().cloned());
        args
    }

    /// `--registry-url` of the other roles.
    pub fn registry_url(&self) -> String {
        format!("http://{}", self.registry.addr("grpc"))
    }

    /// An ingest replica named `id`, on ephemeral ports.
    pub fn ingest(&self, id: &str) -> Service {
        self.ingest_with(id, &[])
    }

    /// [`Self::ingest`] with more flags (`--coap-addr 127.0.0.1:0`).
    pub fn ingest_with(&self, id: &str, extra: &[&str]) -> Service {
        let mut args = self.args();
        args.extend(extra.iter().map(os));
        args.extend([
            os("--frontend-id"),
            os(id),
            os("--registry-url"),
            os(self.registry_url()),
            os("--http-addr"),
            os("127.0.0.1:0"),
            os("--mqtt-addr"),
            os("127.0.0.1:0"),
            os("--mqtt-ws-addr"),
            os("127.0.0.1:0"),
        ]);
        Service::start("ingest", args)
    }

    /// `processor --with-query` on the cluster's embedded store.
    pub fn processor(&self) -> Service {
        self.processor_with(&[])
    }

    /// [`Self::processor`] with more flags.
    pub fn processor_with(&self, extra: &[&str]) -> Service {
        let mut args = self.args();
        args.extend(extra.iter().map(os));
        args.extend([
            os("--with-query"),
            os("--store"),
            self.dir.path().join("store").into_os_string(),
            os("--registry-url"),
            os(self.registry_url()),
            os("--grpc-addr"),
            os("127.0.0.1:0"),
            os("--api-addr"),
            os("127.0.0.1:0"),
        ]);
        Service::start("processor", args)
    }

    pub async fn registry_client(
        &self,
    ) -> RegistryServiceClient<InterceptedService<Channel, Bearer>> {
        RegistryServiceClient::with_interceptor(
            channel(self.registry.addr("grpc")).await,
            Bearer::new(&self.admin),
        )
    }

    /// Creates device `id` in the default tenant; returns its token.
    pub async fn device(&self, id: &str) -> String {
        self.registry_client()
            .await
            .create_device(pb::CreateDeviceRequest {
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
}

pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}
