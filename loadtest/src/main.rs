//! `tributary-loadtest`: parses flags, runs a scenario, prints the summary,
//! and writes the JSON report and the plot. See the library for the rest.

#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tributary_loadtest::scenario::{LoadMode, MqttVersion, Span, TargetKind, parse_source_addrs};
use tributary_loadtest::{Overrides, Report, RunOptions, Scenario};

/// Simulates a device fleet against Tributary, an MQTT broker or an
/// InfluxDB-compatible endpoint, and reports throughput, latency and loss.
#[derive(Debug, Parser)]
#[command(name = "tributary-loadtest", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario file (see loadtest/scenarios/).
    Run {
        /// The scenario file.
        scenario: PathBuf,
        #[command(flatten)]
        flags: ScenarioFlags,
        #[command(flatten)]
        run: RunFlags,
    },
    /// Print the effective scenario (file plus flags) as TOML, and exit.
    Check {
        /// The scenario file.
        scenario: PathBuf,
        #[command(flatten)]
        flags: ScenarioFlags,
    },
    /// Count a saved report's devices back from the store again (after a
    /// server restart, say); exits 2 when acknowledged points are missing.
    Verify {
        /// A report written by `run --json`.
        report: PathBuf,
        /// gRPC endpoint; default: the report's.
        #[arg(long)]
        grpc_url: Option<String>,
        /// Operator token.
        #[arg(long, env = "TRIBUTARY_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// File with the operator token; default: the report's.
        #[arg(long)]
        admin_token_file: Option<PathBuf>,
        /// How long to wait for the store to hold everything.
        #[arg(long, default_value = "30s")]
        timeout: Span,
    },
    /// Draw a saved report's timeline again (SVG).
    Plot {
        /// A report written by `run --json`.
        report: PathBuf,
        /// The SVG file to write.
        out: PathBuf,
    },
    /// Internal: one worker process of `run --workers N`.
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        plan: PathBuf,
        #[arg(long)]
        index: usize,
        #[arg(long)]
        count: usize,
    },
}

/// Flags that override single fields of the scenario file.
#[derive(Debug, Args)]
struct ScenarioFlags {
    /// Target kind: tributary, mqtt-broker or influx.
    #[arg(long)]
    target: Option<TargetKind>,
    /// MQTT address, host:port.
    #[arg(long)]
    mqtt_addr: Option<String>,
    /// HTTP ingest base URL, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    http_url: Option<String>,
    /// CoAP address, host:port.
    #[arg(long)]
    coap_addr: Option<String>,
    /// Path and query of line-protocol writes, e.g. "/write?db=loadtest".
    #[arg(long)]
    write_path: Option<String>,
    /// gRPC endpoint of the registry and query API.
    #[arg(long)]
    grpc_url: Option<String>,
    /// gRPC endpoint of the registry when it runs apart (distributed mode).
    #[arg(long)]
    registry_url: Option<String>,
    /// File with the operator token (the server's admin.token).
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// Credentials file (`device,token` per line) instead of provisioning.
    #[arg(long)]
    credentials: Option<PathBuf>,
    /// Source addresses: a list and/or IPv4 ranges, e.g. 127.0.0.1-127.0.0.4.
    #[arg(long, value_parser = parse_source_addrs)]
    source_addrs: Option<std::vec::Vec<std::net::IpAddr>>,
    /// Number of devices.
    #[arg(long)]
    devices: Option<usize>,
    /// Pacing: closed, rate, total-rate or idle.
    #[arg(long)]
    mode: Option<LoadMode>,
    /// How long the load lasts, e.g. 30s.
    #[arg(long)]
    duration: Option<Span>,
    /// Messages in total.
    #[arg(long)]
    messages: Option<u64>,
    /// Messages per second (per sender, or total with --mode total-rate).
    #[arg(long)]
    rate: Option<f64>,
    /// Messages in flight per sender.
    #[arg(long)]
    in_flight: Option<u32>,
    /// New connections per second (0: all at once).
    #[arg(long)]
    ramp: Option<f64>,
    /// Worker processes.
    #[arg(long)]
    workers: Option<usize>,
    /// MQTT QoS.
    #[arg(long)]
    qos: Option<u8>,
    /// MQTT version: 3.1.1 or 5.
    #[arg(long)]
    mqtt_version: Option<MqttVersion>,
    /// Count every device's points back and report loss (exit 2 on loss).
    #[arg(long)]
    verify: bool,
    /// How long verification waits for the store.
    #[arg(long)]
    verify_timeout: Option<Span>,
    /// Devices sampled for end-to-end latency (0: off).
    #[arg(long)]
    e2e_devices: Option<usize>,
}

impl ScenarioFlags {
    fn overrides(&self) -> Overrides {
        Overrides {
            target: self.target,
            mqtt_addr: self.mqtt_addr.clone(),
            http_url: self.http_url.clone(),
            coap_addr: self.coap_addr.clone(),
            write_path: self.write_path.clone(),
            grpc_url: self.grpc_url.clone(),
            registry_url: self.registry_url.clone(),
            admin_token_file: self.admin_token_file.clone(),
            credentials_file: self.credentials.clone(),
            source_addrs: self.source_addrs.clone(),
            devices: self.devices,
            mode: self.mode,
            duration: self.duration,
            messages: self.messages,
            rate: self.rate,
            in_flight: self.in_flight,
            ramp: self.ramp,
            workers: self.workers,
            qos: self.qos,
            mqtt_version: self.mqtt_version,
            verify: self.verify,
            verify_timeout: self.verify_timeout,
            e2e_devices: self.e2e_devices,
        }
    }

    fn scenario(&self, path: &std::path::Path) -> anyhow::Result<Scenario> {
        let mut sc = Scenario::load(path)?;
        sc.apply(&self.overrides())?;
        Ok(sc)
    }
}

/// Flags of `run` that are not part of the scenario.
#[derive(Debug, Args)]
struct RunFlags {
    /// Operator token for the registry and query API.
    #[arg(long, env = "TRIBUTARY_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Tenant ingest token for line protocol; issued through the registry when absent.
    #[arg(long, env = "TRIBUTARY_INGEST_TOKEN", hide_env_values = true)]
    ingest_token: Option<String>,
    /// Write the provisioned devices' credentials here (mode 0600).
    #[arg(long)]
    save_credentials: Option<PathBuf>,
    /// The server's pid: report its memory per connection and its CPU
    /// time per acknowledged message (or per connection).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Run id (part of every device id); default: a fresh one.
    #[arg(long)]
    run_id: Option<String>,
    /// Write the machine-readable report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw throughput and latency over time here (SVG).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn read_report(path: &std::path::Path) -> anyhow::Result<Report> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("{} is not a report", path.display()))
}

fn write_json(path: &std::path::Path, report: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_vec_pretty(report)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

async fn run(scenario: PathBuf, flags: ScenarioFlags, run: RunFlags) -> anyhow::Result<ExitCode> {
    let sc = flags.scenario(&scenario)?;
    if let Some(plot) = &run.plot {
        anyhow::ensure!(
            plot.extension().and_then(|e| e.to_str()) == Some("svg"),
            "--plot {}: only SVG output is built in; use a .svg file name",
            plot.display()
        );
    }
    let opts = RunOptions {
        admin_token: run.admin_token,
        ingest_token: run.ingest_token,
        save_credentials: run.save_credentials,
        server_pid: run.server_pid,
        run_id: run.run_id,
        progress: !run.quiet,
    };
    let report: Report = tributary_loadtest::run(sc, opts, shutdown_signal()).await?;
    println!("{}", report.summary());
    if let Some(path) = &run.json {
        write_json(path, &report)?;
    }
    if let Some(path) = &run.plot {
        tributary_loadtest::plot::draw(&report, path)?;
    }
    Ok(match &report.verify {
        Some(v) if !v.passed() => ExitCode::from(2),
        _ => ExitCode::SUCCESS,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRIBUTARY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Run {
            scenario,
            flags,
            run: r,
        } => run(scenario, flags, r).await,
        Command::Check { scenario, flags } => flags.scenario(&scenario).map(|sc| {
            print!("{}", sc.to_toml());
            ExitCode::SUCCESS
        }),
        Command::Verify {
            report,
            grpc_url,
            admin_token,
            admin_token_file,
            timeout,
        } => {
            async {
                let text = std::fs::read(&report)
                    .with_context(|| format!("reading {}", report.display()))?;
                let saved: Report = serde_json::from_slice(&text)
                    .with_context(|| format!("{} is not a report", report.display()))?;
                let v = tributary_loadtest::run::reverify(
                    &saved,
                    grpc_url.as_deref(),
                    admin_token.as_deref(),
                    admin_token_file.as_deref(),
                    timeout.0,
                )
                .await?;
                println!("{}", serde_json::to_string_pretty(&v)?);
                Ok(if v.passed() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(2)
                })
            }
            .await
        }
        Command::Plot { report, out } => read_report(&report).and_then(|r| {
            tributary_loadtest::plot::draw(&r, &out)?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::Worker { plan, index, count } => {
            tributary_loadtest::workers::worker_main(&plan, index, count)
                .await
                .map(|()| ExitCode::SUCCESS)
                .map_err(Into::into)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tributary-loadtest: {e:#}");
            ExitCode::FAILURE
        }
    }
}
