//! A real Kafka-protocol broker for the tests: Tansu, started on a free
//! loopback port with in-memory storage, and killed (by its pid) when the
//! guard drops.
//!
//! If the `tansu` binary is missing, tests fail with the install command,
//! unless `TRIBUTARY_SKIP_KAFKA=1` is set: then they say loudly that they
//! were skipped and return.

use std::fs::File;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tributary_log_kafka::KafkaConfig;

/// How long the broker may take to accept connections.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// The install command, for the failure message.
const INSTALL: &str = "cargo install --locked tansu --version 0.6.0 --features dynostore";

/// A running Tansu broker; killed on drop.
pub(crate) struct Tansu {
    child: Child,
    addr: SocketAddr,
    log_path: PathBuf,
}

impl Tansu {
    /// Starts a broker, or returns `None` after printing a SKIPPED line when
    /// `TRIBUTARY_SKIP_KAFKA=1`. Panics with instructions if `tansu` is not
    /// installed or does not start.
    pub(crate) fn start_or_skip() -> Option<Self> {
        if std::env::var("TRIBUTARY_SKIP_KAFKA").is_ok_and(|v| v == "1") {
            // Straight to the process's stderr: libtest captures `eprintln!`
            // of passing tests, and a skip must not look like a pass.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: Kafka suites (TRIBUTARY_SKIP_KAFKA=1)"
            );
            return None;
        }
        let Some(binary) = find_tansu() else {
            panic!(
                "the Kafka tests need the `tansu` broker, which is not on PATH nor in ~/.cargo/bin.\n\
                 Install it with `{INSTALL}` (scripts/test.sh does), \
                 or set TRIBUTARY_SKIP_KAFKA=1 to skip these suites."
            );
        };
        let mut last_error = String::new();
        // A port picked by binding :0 could be taken by someone else before
        // Tansu binds it; try a few.
        for _ in 0..3 {
            match Self::spawn(&binary) {
                Ok(broker) => return Some(broker),
                Err(e) => last_error = e,
            }
        }
        panic!("tansu did not start: {last_error}");
    }

    fn spawn(binary: &Path) -> Result<Self, String> {
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let url = format!("tcp://{addr}");
        let log_path = log_dir().join(format!("tansu-{port}-{}.log", unique()));
        let log = File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(binary)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", binary.display()))?;
        let mut broker = Self {
            child,
            addr,
            log_path,
        };
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Ok(Some(status)) = broker.child.try_wait() {
                return Err(format!(
                    "tansu exited with {status} before accepting connections; log:\n{}",
                    broker.log()
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(broker);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "tansu did not accept connections on {addr} within {START_DEADLINE:?}; log:\n{}",
                    broker.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `host:port` of the broker.
    pub(crate) fn address(&self) -> String {
        self.addr.to_string()
    }

    /// The broker's output so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Kills the broker now (for tests of a broker that goes away).
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A log configuration for `topic` with `partitions` partitions on this
    /// broker, with timeouts that suit a local broker.
    pub(crate) fn config(&self, topic: &str, partitions: u32) -> KafkaConfig {
        let mut config = KafkaConfig {
            brokers: vec![self.address()],
            topic: topic.to_owned(),
            partitions,
            connect_timeout_ms: 20_000,
            ..KafkaConfig::default()
        };
        // Members that vanish without leaving are noticed within seconds.
        config.consumer.session_timeout_ms = 6_000;
        // Tansu 0.6's storage engine mishandles record batches of more than
        // one record (see docs/kafka.md, "Tansu"): ListOffsets(latest)
        // answers the last batch's base offset + 1 instead of the high
        // watermark, and a Fetch from an offset inside a batch skips that
        // batch. One record per batch sidesteps both; Kafka has neither bug.
        config.producer.batch_num_messages = 1;
        config
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log_path);
        } else {
            eprintln!("tansu log kept at {}", self.log_path.display());
        }
    }
}

/// A topic name no other test or run uses.
pub(crate) fn unique_topic(prefix: &str) -> String {
    format!("{prefix}-{}", unique())
}

fn unique() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn log_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// `tansu` on PATH, else in `$CARGO_HOME/bin` or `~/.cargo/bin`.
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
