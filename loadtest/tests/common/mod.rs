//! A real `tributary standalone` on ephemeral loopback ports in a temp dir,
//! and a way to run the `tributary-loadtest` binary against it.
//!
//! Finding the `tributary` binary: `TRIBUTARY_BIN` when set; else
//! `target/<profile>/tributary` next to this test when it is newer than
//! every source file it is built from (as under `cargo test --workspace`,
//! which builds it for the `tributary` package's own tests); else this runs
//! `cargo build -p tributary --bin tributary` into the same target directory
//! and profile first. So the server under test is never stale. (Cargo hands
//! a test only its own package's binaries, as `CARGO_BIN_EXE_*`.)

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The newest modification time of the files the `tributary` binary is
/// built from: the crates' sources and manifests, the protos, the lock file.
fn newest_source(workspace: &Path) -> std::time::SystemTime {
    fn walk(dir: &Path, newest: &mut std::time::SystemTime) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name();
            if path.is_dir() {
                // Tests, benches and fuzz targets are not part of the binary.
                if !matches!(name.to_str(), Some("tests" | "benches" | "fuzz" | "target")) {
                    walk(&path, newest);
                }
            } else if let Ok(m) = e.metadata().and_then(|m| m.modified()) {
                *newest = (*newest).max(m);
            }
        }
    }
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    walk(&workspace.join("crates"), &mut newest);
    walk(&workspace.join("proto"), &mut newest);
    for f in ["Cargo.toml", "Cargo.lock"] {
        if let Ok(m) = std::fs::metadata(workspace.join(f)).and_then(|m| m.modified()) {
            newest = newest.max(m);
        }
    }
    newest
}

/// The `tributary` binary, built if missing or stale.
pub fn tributary_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("TRIBUTARY_BIN") {
            return PathBuf::from(p);
        }
        // target/<profile>/deps/<this test>
        let exe = std::env::current_exe().expect("current exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary under target/<profile>/deps")
            .to_path_buf();
        let bin = profile_dir.join("tributary");
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root");
        let fresh = std::fs::metadata(&bin)
            .and_then(|m| m.modified())
            .is_ok_and(|built| built >= newest_source(workspace));
        if fresh {
            return bin;
        }
        let target_dir = profile_dir.parent().expect("target dir");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev".to_string(),
            Some(other) => other.to_string(),
            None => panic!("no profile directory in {}", exe.display()),
        };
        let cargo = std::env::var("CARGO")
            .ok()
            .or_else(|| option_env!("CARGO").map(str::to_string))
            .unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "tributary", "--bin", "tributary"])
            .arg("--profile")
            .arg(&profile)
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(workspace)
            .status()
            .expect("run cargo build -p tributary");
        assert!(status.success(), "cargo build -p tributary failed");
        assert!(bin.exists(), "{} was not built", bin.display());
        bin
    })
    .clone()
}

/// The loadtest binary of this package.
pub fn loadtest_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tributary-loadtest")
}

/// A running standalone; killed on drop.
pub struct Standalone {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub mqtt: SocketAddr,
    pub coap: SocketAddr,
}

impl Standalone {
    /// Starts standalone in a fresh temp dir and waits for its ready line.
    pub fn start() -> Standalone {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(tributary_bin())
            .args(["standalone", "--data-dir"])
            .arg(dir.path())
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
                "--coap-addr",
                "127.0.0.1:0",
            ])
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
        let ready = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("standalone printed its ready line within 30 s");
            if line.starts_with("tributary standalone ready:") {
                break line;
            }
        };
        let field = |name: &str| -> SocketAddr {
            ready
                .split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name}= in {ready:?}"))
        };
        Standalone {
            http: field("http"),
            grpc: field("grpc"),
            mqtt: field("mqtt"),
            coap: field("coap"),
            child,
            dir,
        }
    }

    /// The flags that point a loadtest run at this server.
    pub fn target_flags(&self) -> Vec<String> {
        vec![
            "--mqtt-addr".into(),
            self.mqtt.to_string(),
            "--coap-addr".into(),
            self.coap.to_string(),
            "--http-url".into(),
            format!("http://{}", self.http),
            "--grpc-url".into(),
            format!("http://{}", self.grpc),
            "--admin-token-file".into(),
            self.dir.path().join("admin.token").display().to_string(),
        ]
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `tributary-loadtest` with `args`, bounded by `limit`.
pub fn loadtest(args: &[String], limit: Duration) -> Output {
    let mut child = Command::new(loadtest_bin())
        .args(args)
        .env("TRIBUTARY_LOG", "warn")
        .env_remove("TRIBUTARY_TOKEN")
        .env_remove("TRIBUTARY_INGEST_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tributary-loadtest");
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "tributary-loadtest did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&stdout.join().unwrap_or_default()),
                String::from_utf8_lossy(&stderr.join().unwrap_or_default())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Reads a JSON report.
pub fn read_report(path: &Path) -> serde_json::Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).expect("report is JSON")
}

/// Prints a run's output when an assertion is about to fail.
pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
