//! The end-of-run report: a summary table for people, JSON for programs.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::engine::DeviceTally;
use crate::stats::{Counters, Percentiles, TimelinePoint};
use crate::verify::VerifyReport;

/// Connection setup over the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectSummary {
    /// Attempts, retries included.
    pub attempts: u64,
    /// Accepted connections.
    pub established: u64,
    /// Failed attempts.
    pub failed: u64,
    /// Accepted connections per second during ramp-up.
    pub rate_per_s: Option<f64>,
    /// Setup time: TCP, TLS, CONNECT to CONNACK.
    pub setup_ms: Option<Percentiles>,
}

/// The server's memory, from `/proc/<pid>/status` (`--server-pid`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerMemory {
    /// The server's process id.
    pub pid: u32,
    /// Resident set before the first connection.
    pub rss_before_kib: u64,
    /// Resident set at the end of the load, before disconnecting.
    pub rss_loaded_kib: u64,
    /// Largest resident set seen during the run.
    pub rss_peak_kib: u64,
    /// (loaded - before) / connections open at the end of the load.
    pub per_connection_kib: Option<f64>,
}

/// The server's CPU time (user + system, from `/proc/<pid>/stat`) over the
/// load and its catch-up (`--server-pid`): on a shared machine, steadier
/// than a rate, because it does not depend on what the generator took.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerCpu {
    /// CPU seconds from the start of the load until the server's CPU time
    /// stopped moving after it.
    pub cpu_s: f64,
    /// Seconds waited after the load for the server to settle (at most 30).
    pub catch_up_s: f64,
    /// Microseconds of server CPU per message acknowledged (QoS 0: sent).
    pub per_msg_us: Option<f64>,
    /// Microseconds of server CPU per connection established, when the
    /// run sent no messages (connection scenarios).
    pub per_connect_us: Option<f64>,
}

impl ServerCpu {
    /// Divides `cpu_s` by the messages, or by the connections when there
    /// were no messages.
    pub fn new(cpu_s: f64, catch_up_s: f64, msgs: u64, connects: u64) -> Self {
        let per = |n: u64| (n > 0).then(|| 1e6 * cpu_s / n as f64);
        Self {
            cpu_s,
            catch_up_s,
            per_msg_us: per(msgs),
            per_connect_us: if msgs == 0 { per(connects) } else { None },
        }
    }
}

/// Everything a run measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// The scenario's description.
    pub description: String,
    /// `tributary`, `mqtt-broker` or `influx`.
    pub target: String,
    /// Protocol details, e.g. `MQTT 5 QoS 1` or `HTTP line-protocol`.
    pub protocol: String,
    /// The run id (part of every device id).
    pub run_id: String,
    /// Start of the load, RFC 3339.
    pub started_at: String,
    /// Seconds from the start of the load until the last sender finished.
    pub duration_s: f64,
    /// Devices simulated.
    pub devices: usize,
    /// Senders (devices, or line-protocol clients).
    pub senders: usize,
    /// Worker processes.
    pub workers: usize,
    /// Final counters.
    pub counters: Counters,
    /// Failures by reason.
    pub errors: BTreeMap<String, u64>,
    /// Acknowledged messages per second over the run.
    pub msgs_per_s: f64,
    /// Acknowledged points per second over the run.
    pub points_per_s: f64,
    /// Payload bytes sent per second.
    pub bytes_per_s: f64,
    /// CPU seconds the generator itself used (all its threads and worker
    /// processes): on a shared machine, what the server did not get.
    pub generator_cpu_s: Option<f64>,
    /// The generator's largest resident memory (all its processes), KiB.
    pub generator_rss_peak_kib: Option<u64>,
    /// Acknowledgement latency over the run.
    pub ack_latency_ms: Option<Percentiles>,
    /// Connections.
    pub connect: ConnectSummary,
    /// End-to-end latency (sampled devices).
    pub e2e_latency_ms: Option<Percentiles>,
    /// Server memory, when `--server-pid` was given.
    pub server: Option<ServerMemory>,
    /// Server CPU, when `--server-pid` was given.
    #[serde(default)]
    pub server_cpu: Option<ServerCpu>,
    /// Loss verification, when `--verify` was given.
    pub verify: Option<VerifyReport>,
    /// Throughput and latency per interval.
    pub timeline: Vec<TimelinePoint>,
    /// The effective scenario, as TOML.
    pub scenario_toml: String,
    /// Per-device points sent and acknowledged (for `verify` later).
    pub tallies: Vec<DeviceTally>,
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn rate(x: f64) -> String {
    if x >= 100.0 {
        thousands(x.round() as u64)
    } else {
        format!("{x:.1}")
    }
}

fn latency_row(out: &mut String, name: &str, p: &Option<Percentiles>) {
    match p {
        Some(p) => {
            let _ = writeln!(
                out,
                "  {name:<12} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>12}",
                p.p50,
                p.p90,
                p.p99,
                p.p999,
                p.max,
                thousands(p.count)
            );
        }
        None => {
            let _ = writeln!(out, "  {name:<12} {:>9}", "-");
        }
    }
}

impl Report {
    /// The summary table.
    pub fn summary(&self) -> String {
        let c = &self.counters;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "{} against {} ({}), run {}",
            self.scenario, self.target, self.protocol, self.run_id
        );
        let _ = writeln!(
            o,
            "  devices {}  senders {}  workers {}  load {:.1} s",
            thousands(self.devices as u64),
            thousands(self.senders as u64),
            self.workers,
            self.duration_s
        );
        let _ = writeln!(o);
        if self.connect.attempts > 0 {
            let _ = writeln!(
                o,
                "  connections  attempted {}  established {}  failed {}  open at end {}{}",
                thousands(self.connect.attempts),
                thousands(self.connect.established),
                thousands(self.connect.failed),
                thousands(c.connected),
                self.connect
                    .rate_per_s
                    .map(|r| format!("  ramp {}/s", rate(r)))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(
            o,
            "  messages     sent {}  acked {}  failed {}",
            thousands(c.msgs_sent),
            thousands(c.msgs_acked),
            thousands(c.msgs_failed)
        );
        let _ = writeln!(
            o,
            "  points       sent {}  acked {}",
            thousands(c.points_sent),
            thousands(c.points_acked)
        );
        let _ = writeln!(
            o,
            "  throughput   {} msg/s  {} points/s  {:.1} MB/s sent",
            rate(self.msgs_per_s),
            rate(self.points_per_s),
            self.bytes_per_s / 1e6
        );
        if let Some(cpu) = self.generator_cpu_s {
            let _ = writeln!(
                o,
                "  generator    {cpu:.1} CPU s ({:.0}% of one core){}",
                100.0 * cpu / self.duration_s.max(1e-3),
                self.generator_rss_peak_kib
                    .map(|k| format!(", RSS peak {} MiB", k / 1024))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "  {:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>12}",
            "latency ms", "p50", "p90", "p99", "p99.9", "max", "samples"
        );
        latency_row(&mut o, "ack", &self.ack_latency_ms);
        if self.connect.setup_ms.is_some() {
            latency_row(&mut o, "connect", &self.connect.setup_ms);
        }
        if self.e2e_latency_ms.is_some() || c.e2e_dropped > 0 {
            latency_row(&mut o, "end-to-end", &self.e2e_latency_ms);
            if c.e2e_dropped > 0 {
                let _ = writeln!(
                    o,
                    "  (the server dropped {} live batches for the slow subscriber)",
                    thousands(c.e2e_dropped)
                );
            }
        }
        if !self.errors.is_empty() {
            let _ = writeln!(o);
            let _ = writeln!(o, "  errors");
            for (k, v) in &self.errors {
                let _ = writeln!(o, "    {k:<40} {:>10}", thousands(*v));
            }
        }
        if let Some(m) = &self.server {
            let _ = writeln!(o);
            let _ = writeln!(
                o,
                "  server pid {}  RSS before {} MiB, loaded {} MiB, peak {} MiB{}",
                m.pid,
                m.rss_before_kib / 1024,
                m.rss_loaded_kib / 1024,
                m.rss_peak_kib / 1024,
                m.per_connection_kib
                    .map(|k| format!(", {k:.1} KiB per connection"))
                    .unwrap_or_default()
            );
        }
        if let Some(cpu) = &self.server_cpu {
            let per = match (cpu.per_msg_us, cpu.per_connect_us) {
                (Some(us), _) => format!("{us:.1} µs per message"),
                (None, Some(us)) => format!("{us:.1} µs per connection"),
                (None, None) => "nothing to divide by".into(),
            };
            let _ = writeln!(
                o,
                "  server CPU   {:.2} s over the load and {:.1} s of catch-up: {per}",
                cpu.cpu_s, cpu.catch_up_s
            );
        }
        if let Some(v) = &self.verify {
            let _ = writeln!(o);
            let _ = writeln!(
                o,
                "  verify       {}: acked {}  stored {}  acked-not-stored {}  stored-not-acked {}  ({} devices, {:.1} s{})",
                if v.passed() { "PASS" } else { "LOSS" },
                thousands(v.points_acked),
                thousands(v.points_stored),
                thousands(v.acked_not_stored),
                thousands(v.stored_not_acked),
                thousands(v.devices as u64),
                v.waited_s,
                match (v.settled, v.exact) {
                    (true, true) => "",
                    (false, true) => ", not settled",
                    (true, false) => ", by count",
                    (false, false) => ", not settled, by count",
                }
            );
            for m in v.mismatches.iter().take(5) {
                let _ = writeln!(
                    o,
                    "    {}: sent {} acked {} stored {} (acked-not-stored {}, stored-not-acked {})",
                    m.device, m.sent, m.acked, m.stored, m.acked_not_stored, m.stored_not_acked
                );
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn summary_shows_what_a_reader_checks() {
        let r = Report {
            scenario: "smoke".into(),
            target: "tributary".into(),
            protocol: "MQTT 5 QoS 1".into(),
            counters: Counters {
                msgs_sent: 1200,
                msgs_acked: 1190,
                msgs_failed: 10,
                ..Counters::default()
            },
            errors: [("ack timeout".to_string(), 10)].into(),
            ack_latency_ms: Some(Percentiles {
                count: 1190,
                p50: 1.5,
                ..Percentiles::default()
            }),
            verify: Some(VerifyReport {
                points_acked: 10,
                points_stored: 9,
                acked_not_stored: 1,
                ..VerifyReport::default()
            }),
            ..Report::default()
        };
        let s = r.summary();
        assert!(s.contains("acked 1,190"), "{s}");
        assert!(s.contains("ack timeout"), "{s}");
        assert!(s.contains("LOSS"), "{s}");
        assert!(s.contains("1.50"), "{s}");
    }

    #[test]
    fn server_cpu_is_per_message_or_else_per_connection() {
        let m = ServerCpu::new(2.0, 1.0, 1_000, 10);
        assert_eq!(m.per_msg_us, Some(2_000.0));
        assert_eq!(m.per_connect_us, None);
        let c = ServerCpu::new(2.0, 1.0, 0, 10_000);
        assert_eq!(c.per_msg_us, None);
        assert_eq!(c.per_connect_us, Some(200.0));
        assert_eq!(ServerCpu::new(2.0, 1.0, 0, 0).per_connect_us, None);
        let r = Report {
            server_cpu: Some(c),
            ..Report::default()
        };
        assert!(
            r.summary().contains("200.0 µs per connection"),
            "{}",
            r.summary()
        );
    }
}
