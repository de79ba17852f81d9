//! One run from start to report: provision, load (in this process or in
//! workers), follow end-to-end samples, verify, and sum it all up.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::e2e;
use crate::engine::{Credential, DeviceTally, Plan, Shard, run_shard};
use crate::error::Error;
use crate::provision::{self, Grpc};
use crate::report::{ConnectSummary, Report, ServerCpu, ServerMemory, thousands};
use crate::scenario::{HttpFormat, LoadMode, Scenario, TargetKind, Transport};
use crate::stats::{Collector, Stats};
use crate::verify::{self, VerifyReport};
use crate::workers::{WorkerMsg, Workers};

/// Everything a run needs besides the scenario file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The operator token (flag or `TRIBUTARY_TOKEN`); else the token file.
    pub admin_token: Option<String>,
    /// The tenant ingest token for line protocol; issued when absent.
    pub ingest_token: Option<String>,
    /// Write the credentials of provisioned devices here.
    pub save_credentials: Option<PathBuf>,
    /// The server's pid, for its memory per connection and CPU per message.
    pub server_pid: Option<u32>,
    /// The run id; a fresh one when absent.
    pub run_id: Option<String>,
    /// Show a live progress bar on stderr (when it is a terminal).
    pub progress: bool,
}

/// A fresh run id: six hex digits from the clock and the pid.
pub fn new_run_id() -> String {
    let x = (tributary_core::time::now_ns() as u64) ^ (u64::from(std::process::id()) << 40);
    let x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("{:06x}", x >> 40)
}

/// The operator gRPC connection, made on first use.
struct Operator<'a> {
    sc: &'a Scenario,
    token: Option<&'a str>,
    grpc: Option<Grpc>,
}

impl Operator<'_> {
    async fn get(&mut self) -> Result<&Grpc, Error> {
        if self.grpc.is_none() {
            let token = provision::admin_token(self.token, &self.sc.target.admin_token_file)?;
            self.grpc = Some(
                Grpc::connect(&self.sc.target.grpc_url, &token)
                    .await?
                    .with_registry(&self.sc.target.registry_url)
                    .await?,
            );
        }
        self.grpc
            .as_ref()
            .ok_or_else(|| Error::NoAdminToken("no connection".into()))
    }
}

fn bar(enabled: bool, len: u64, template: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        b.set_style(style.progress_chars("=> "));
    }
    b
}

/// Device credentials: from the credentials file, provisioned through the
/// registry, or made up (line protocol and servers without authentication).
async fn credentials(
    sc: &Scenario,
    run_id: &str,
    op: &mut Operator<'_>,
    progress: bool,
) -> Result<(Vec<Credential>, bool), Error> {
    let n = sc.devices.count;
    if let Some(path) = &sc.target.credentials_file {
        let mut creds = provision::read_credentials(path)?;
        if creds.len() < n {
            return Err(Error::Scenario(format!(
                "{} has {} devices; the scenario needs {n}",
                path.display(),
                creds.len()
            )));
        }
        creds.truncate(n);
        return Ok((creds, false));
    }
    let ids: Vec<String> = (0..n)
        .map(|i| format!("{}-{run_id}-{i}", sc.devices.prefix))
        .collect();
    let needs_tokens = sc.target.kind == TargetKind::Tributary
        && !matches!(&sc.transport, Transport::Http(h) if h.format == HttpFormat::LineProtocol);
    if !needs_tokens {
        let creds = ids
            .into_iter()
            .map(|device| Credential {
                device,
                token: String::new(),
            })
            .collect();
        return Ok((creds, false));
    }
    let registry = op.get().await?.registry();
    let b = bar(
        progress,
        n as u64,
        "provisioning [{bar:30}] {pos}/{len} devices {per_sec}",
    );
    let creds = provision::create_devices(&registry, &ids, &sc.devices.labels, || b.inc(1)).await;
    b.finish_and_clear();
    Ok((creds?, true))
}

/// CPU seconds of this process and its waited-for children (worker
/// processes), from `/proc/self/stat` (utime, stime, cutime, cstime, in the
/// kernel's fixed 100 Hz user ticks).
fn cpu_seconds() -> Option<f64> {
    crate::stats::cpu_seconds("self", true)
}

fn server_cpu_seconds(pid: u32) -> Option<f64> {
    crate::stats::cpu_seconds(&pid.to_string(), false)
}

/// Waits until the server's CPU time stops moving (at most `limit`): the
/// processor and the store finish behind the acknowledgements, and their
/// work belongs to the messages. Returns the CPU seconds at that point.
async fn server_settled(pid: u32, limit: Duration) -> Option<f64> {
    let deadline = Instant::now() + limit;
    let mut last = server_cpu_seconds(pid)?;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = server_cpu_seconds(pid)?;
        // Two ticks in 250 ms is under 10% of one core: idle housekeeping.
        if now - last <= 0.02 || Instant::now() >= deadline {
            return Some(now);
        }
        last = now;
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    crate::stats::rss_kib(&pid.to_string())
}

fn protocol(sc: &Scenario) -> String {
    match &sc.transport {
        Transport::Mqtt(m) => format!(
            "MQTT {} QoS {}{}{}",
            match m.version {
                crate::scenario::MqttVersion::V311 => "3.1.1",
                crate::scenario::MqttVersion::V5 => "5",
            },
            m.qos,
            if m.clean_session { "" } else { " persistent" },
            if m.tls { " TLS" } else { "" }
        ),
        Transport::Coap(c) => format!(
            "CoAP CON, {}",
            match c.format {
                HttpFormat::Senml => "SenML",
                _ => "JSON",
            }
        ),
        Transport::Http(h) => format!(
            "HTTP {}, {} per request",
            match h.format {
                HttpFormat::Json => "JSON",
                HttpFormat::Senml => "SenML",
                HttpFormat::LineProtocol => "line protocol",
            },
            h.batch
        ),
    }
}

/// The load phase's tasks: the in-process shard, or worker processes.
enum Load {
    Local(tokio::task::JoinHandle<Result<Vec<DeviceTally>, Error>>),
    Workers(Workers, Vec<Option<Vec<DeviceTally>>>),
}

/// Runs `sc` and returns its report. `shutdown` (Ctrl-C) ends the load
/// early; the report then covers what ran.
pub async fn run(
    sc: Scenario,
    opts: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<Report, Error> {
    sc.validate()?;
    let run_id = opts.run_id.clone().unwrap_or_else(new_run_id);
    let mut op = Operator {
        sc: &sc,
        token: opts.admin_token.as_deref(),
        grpc: None,
    };
    let (creds, provisioned) = credentials(&sc, &run_id, &mut op, opts.progress).await?;
    if let Some(path) = &opts.save_credentials {
        provision::write_credentials(path, &creds)?;
    }
    let is_lp = matches!(&sc.transport, Transport::Http(h) if h.format == HttpFormat::LineProtocol);
    let ingest_token = match (&opts.ingest_token, sc.target.kind, is_lp) {
        (Some(t), _, _) => Some(t.clone()),
        (None, TargetKind::Tributary, true) => Some(
            provision::issue_ingest_token(
                &op.get().await?.registry(),
                &format!("tributary-loadtest {run_id}"),
            )
            .await?,
        ),
        _ => None,
    };
    tracing::debug!(run_id, devices = creds.len(), provisioned, "devices ready");
    let plan = Plan {
        scenario: sc.clone(),
        run_id: run_id.clone(),
        credentials: creds,
        ingest_token,
    };

    let stats = Arc::new(Stats::default());
    let (stop_tx, stop_rx) = watch::channel(false);

    // End-to-end followers first, so that they see the first points.
    let followers = if sc.measure.e2e_devices > 0 {
        let ids: Vec<String> = plan.credentials.iter().map(|c| c.device.clone()).collect();
        let sample = e2e::sample(&ids, sc.measure.e2e_devices);
        let metric = match &sc.transport {
            Transport::Http(h) if h.format == HttpFormat::LineProtocol => {
                format!("{}.{}", h.measurement, sc.payload.names()[0])
            }
            _ => sc.payload.names()[0].clone(),
        };
        let query = op.get().await?.query();
        let mut f = e2e::follow(query, sample, metric, stats.clone(), stop_rx.clone());
        f.wait_settled(Duration::from_secs(10)).await;
        Some(f)
    } else {
        None
    };

    let workers = sc.load.workers;
    let rss_before = opts.server_pid.and_then(rss_kib);
    let server_cpu_before = opts.server_pid.and_then(server_cpu_seconds);
    let cpu_before = cpu_seconds();
    let started_at = tributary_core::time::format_rfc3339(tributary_core::time::now_ns());
    let start = Instant::now();
    let mut load = if workers > 1 {
        Load::Workers(Workers::spawn(&plan, workers)?, vec![None; workers])
    } else {
        let (plan, stats, stop) = (plan.clone(), stats.clone(), stop_rx.clone());
        Load::Local(tokio::spawn(async move {
            run_shard(&plan, Shard { index: 0, count: 1 }, stats, stop).await
        }))
    };

    let unacked = matches!(&sc.transport, Transport::Mqtt(m) if m.qos == 0);
    let mut collector = Collector::new(workers + 1, unacked);
    let interval = sc.measure.interval.0;
    let deadline = sc.load.duration.map(|d| start + d.0);
    let progress = match (sc.load.duration, sc.load.messages) {
        (Some(d), _) => bar(
            opts.progress,
            d.0.as_millis() as u64,
            "{spinner} [{elapsed_precise}] [{bar:30}] {percent:>3}% {msg}",
        ),
        (None, Some(m)) => bar(
            opts.progress,
            m,
            "{spinner} [{elapsed_precise}] [{bar:30}] {pos}/{len} {msg}",
        ),
        (None, None) => ProgressBar::hidden(),
    };
    let mut rss_peak = rss_before.unwrap_or(0);
    let mut rss_loaded = rss_before;
    let mut connected_loaded = 0u64;
    let mut generator_rss_peak = 0u64;
    let mut ticker = tokio::time::interval_at(start + interval, interval);
    let mut stopped = false;
    let mut failure: Option<Error> = None;
    tokio::pin!(shutdown);
    let tallies: Vec<DeviceTally> = loop {
        let finished = match &mut load {
            Load::Local(handle) => {
                tokio::select! {
                    r = &mut *handle => Some(match r {
                        Ok(Ok(t)) => t,
                        Ok(Err(e)) => { failure = Some(e); Vec::new() }
                        Err(e) => { failure = Some(Error::Worker { index: 0, message: e.to_string() }); Vec::new() }
                    }),
                    _ = ticker.tick() => None,
                    _ = &mut shutdown, if !stopped => {
                        stopped = true;
                        let _ = stop_tx.send(true);
                        None
                    }
                }
            }
            Load::Workers(w, done) => {
                tokio::select! {
                    m = w.rx.recv() => {
                        match m {
                            Some((i, WorkerMsg::Tick(t))) => collector.absorb(i + 1, t),
                            Some((i, WorkerMsg::Done(t))) => done[i] = Some(t),
                            Some((i, WorkerMsg::Failed(message))) => {
                                failure.get_or_insert(Error::Worker { index: i, message });
                                done[i] = Some(Vec::new());
                            }
                            None => {
                                for (i, d) in done.iter_mut().enumerate() {
                                    if d.is_none() {
                                        failure.get_or_insert(Error::Worker { index: i, message: "exited without a report".into() });
                                        *d = Some(Vec::new());
                                    }
                                }
                            }
                        }
                        done.iter().all(Option::is_some).then(|| done.iter_mut().flat_map(|d| d.take().unwrap_or_default()).collect())
                    }
                    _ = ticker.tick() => None,
                    _ = &mut shutdown, if !stopped => {
                        stopped = true;
                        let _ = stop_tx.send(true);
                        w.stop();
                        None
                    }
                }
            }
        };
        if let Some(t) = finished {
            break t;
        }
        let now = Instant::now();
        if !stopped && deadline.is_some_and(|d| now >= d) {
            stopped = true;
            let _ = stop_tx.send(true);
            if let Load::Workers(w, _) = &mut load {
                w.stop();
            }
        }
        // Close an interval when the ticker fired (at most one per interval).
        let elapsed = now.duration_since(start).as_secs_f64();
        let last_t = collector.timeline().last().map_or(0.0, |p| p.t);
        if elapsed - last_t >= interval.as_secs_f64() * 0.999 {
            collector.absorb(0, stats.tick());
            let rss = opts.server_pid.and_then(rss_kib);
            if let Some(r) = rss {
                rss_peak = rss_peak.max(r);
                if !stopped {
                    rss_loaded = Some(r);
                    connected_loaded = collector.totals().connected;
                }
            }
            let p = collector.close_interval(elapsed, rss).clone();
            let totals = collector.totals();
            generator_rss_peak = generator_rss_peak.max(totals.generator_rss_kib);
            match (sc.load.duration, sc.load.messages) {
                (Some(_), _) => progress.set_position(now.duration_since(start).as_millis() as u64),
                _ => progress.set_position(
                    totals.msgs_acked
                        + totals.msgs_failed
                        + if unacked { totals.msgs_sent } else { 0 },
                ),
            }
            progress.set_message(format!(
                "{} conn | {} msg/s | {} points/s | ack p99 {} | errors {}",
                thousands(totals.connected),
                thousands(p.msgs_per_s.round() as u64),
                thousands(p.points_per_s.round() as u64),
                p.ack_ms.map_or("-".into(), |l| format!("{:.1} ms", l.p99)),
                thousands(totals.msgs_failed + totals.conn_failed),
            ));
        }
    };
    let duration = start.elapsed();
    let _ = stop_tx.send(true);
    progress.finish_and_clear();
    if let Load::Workers(w, _) = load {
        w.wait().await;
    }
    if let Some(f) = followers {
        f.join().await;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let generator_cpu_s = cpu_seconds()
        .zip(cpu_before)
        .map(|(after, before)| (after - before).max(0.0));
    collector.absorb(0, stats.tick());
    generator_rss_peak = generator_rss_peak.max(collector.totals().generator_rss_kib);
    let rss_end = opts.server_pid.and_then(rss_kib);
    collector.close_interval(duration.as_secs_f64(), rss_end);
    if connected_loaded == 0 {
        // A load shorter than one interval: the final sample is all there is.
        rss_loaded = rss_end.or(rss_loaded);
        connected_loaded = collector.totals().conn_established;
    }
    // The server's CPU over the load and its catch-up, before verification
    // adds queries of its own.
    let catch_up = Instant::now();
    let server_cpu_after = match opts.server_pid {
        Some(pid) if server_cpu_before.is_some() => {
            server_settled(pid, Duration::from_secs(30)).await
        }
        _ => None,
    };
    let catch_up_s = catch_up.elapsed().as_secs_f64();

    let verify = if sc.measure.verify {
        let query = op.get().await?.query();
        let b = bar(opts.progress, 0, "verifying {spinner} {msg}");
        let r = verify::verify(&query, &tallies, sc.measure.verify_timeout.0, |missing| {
            b.set_message(format!(
                "{} acknowledged points not stored yet",
                thousands(missing)
            ));
            b.tick();
        })
        .await;
        b.finish_and_clear();
        Some(r?)
    } else {
        None
    };

    let totals = collector.totals();
    let secs = duration.as_secs_f64().max(1e-3);
    let (msgs, points) = if unacked {
        (totals.msgs_sent, totals.points_sent)
    } else {
        (totals.msgs_acked, totals.points_acked)
    };
    let server = opts.server_pid.map(|pid| {
        let before = rss_before.unwrap_or(0);
        let loaded = rss_loaded.unwrap_or(0);
        ServerMemory {
            pid,
            rss_before_kib: before,
            rss_loaded_kib: loaded,
            rss_peak_kib: rss_peak.max(loaded),
            // Only idle connections tell what a connection costs; under load
            // the server's memory is mostly data in flight and caches.
            per_connection_kib: (sc.load.mode == LoadMode::Idle
                && connected_loaded > 0
                && loaded > 0)
                .then(|| loaded.saturating_sub(before) as f64 / connected_loaded as f64),
        }
    });
    let server_cpu = server_cpu_before
        .zip(server_cpu_after)
        .map(|(before, after)| {
            ServerCpu::new(
                (after - before).max(0.0),
                catch_up_s,
                msgs,
                totals.conn_established,
            )
        });
    Ok(Report {
        scenario: sc.name.clone(),
        description: sc.description.clone(),
        target: sc.target.kind.to_string(),
        protocol: protocol(&sc),
        run_id,
        started_at,
        duration_s: secs,
        devices: sc.devices.count,
        senders: sc.senders(),
        workers,
        counters: totals,
        errors: collector.errors(),
        msgs_per_s: msgs as f64 / secs,
        points_per_s: points as f64 / secs,
        bytes_per_s: totals.bytes_sent as f64 / secs,
        generator_cpu_s,
        generator_rss_peak_kib: (generator_rss_peak > 0).then_some(generator_rss_peak),
        ack_latency_ms: collector.ack_latency(),
        connect: ConnectSummary {
            attempts: totals.conn_attempts,
            established: totals.conn_established,
            failed: totals.conn_failed,
            rate_per_s: (totals.conn_established > 1 && totals.connect_span_us > 0)
                .then(|| totals.conn_established as f64 / (totals.connect_span_us as f64 / 1e6)),
            setup_ms: collector.connect_latency(),
        },
        e2e_latency_ms: collector.e2e_latency(),
        server,
        server_cpu,
        verify,
        timeline: collector.timeline().to_vec(),
        scenario_toml: sc.to_toml(),
        tallies,
    })
}

/// Re-verifies a saved report's tallies against the store (after a restart,
/// say): `tributary-loadtest verify report.json`.
pub async fn reverify(
    report: &Report,
    grpc_url: Option<&str>,
    admin_token: Option<&str>,
    admin_token_file: Option<&std::path::Path>,
    timeout: Duration,
) -> Result<VerifyReport, Error> {
    let mut sc = Scenario::from_toml(&report.scenario_toml)?;
    if let Some(u) = grpc_url {
        sc.target.grpc_url = u.to_string();
    }
    if let Some(f) = admin_token_file {
        sc.target.admin_token_file = f.to_path_buf();
    }
    let token = provision::admin_token(admin_token, &sc.target.admin_token_file)?;
    let grpc = Grpc::connect(&sc.target.grpc_url, &token).await?;
    verify::verify(&grpc.query(), &report.tallies, timeout, |_| {}).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_and_grows() {
        let before = cpu_seconds().expect("/proc/self/stat is readable on Linux");
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let after = cpu_seconds().unwrap();
        assert!(after >= before, "{before} -> {after} ({x})");
    }

    #[test]
    fn run_ids_are_six_hex_digits() {
        let id = new_run_id();
        assert_eq!(id.len(), 6, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }
}
