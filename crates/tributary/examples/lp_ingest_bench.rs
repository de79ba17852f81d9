//! Line-protocol ingest benchmark: K concurrent clients post batches of about
//! 5,000 field values of new data to a running Tributary (or any
//! InfluxDB-compatible `/write` endpoint) and report acknowledged values/s
//! and request latency percentiles.
//!
//! ```sh
//! cargo run --release -p tributary --example lp_ingest_bench -- \
//!     --url http://127.0.0.1:8080/write --token "$INGEST" --clients 8 --seconds 30
//! ```
//!
//! Each client owns 100 devices (`host-<client>-<n>`) with 10 fields each and
//! advances its timestamps on every batch, so no body is ever replayed.

#![allow(clippy::print_stdout)]

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

struct Args {
    url: String,
    token: String,
    clients: usize,
    seconds: u64,
    lines_per_batch: usize,
}

fn args() -> Args {
    let mut a = Args {
        url: "http://127.0.0.1:8080/write".into(),
        token: String::new(),
        clients: 8,
        seconds: 30,
        lines_per_batch: 500,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < argv.len() {
        let v = argv[i + 1].clone();
        match argv[i].as_str() {
            "--url" => a.url = v,
            "--token" => a.token = v,
            "--clients" => a.clients = v.parse().expect("--clients N"),
            "--seconds" => a.seconds = v.parse().expect("--seconds N"),
            "--lines-per-batch" => a.lines_per_batch = v.parse().expect("--lines-per-batch N"),
            other => panic!("unknown flag {other}"),
        }
        i += 2;
    }
    a
}

const FIELDS: [&str; 10] = [
    "usage_user",
    "usage_system",
    "usage_idle",
    "usage_nice",
    "usage_iowait",
    "usage_irq",
    "usage_softirq",
    "usage_steal",
    "usage_guest",
    "usage_guest_nice",
];

fn batch(client: usize, seq: u64, lines: usize, base_ns: i64, body: &mut String) {
    body.clear();
    for l in 0..lines {
        let device = l % 100;
        // Each batch advances time by one second per line group of 100 devices.
        let ts =
            base_ns + (seq as i64 * (lines as i64 / 100 + 1) + (l / 100) as i64) * 1_000_000_000;
        let _ = write!(
            body,
            "cpu,device=host-{client}-{device},region=eu-west,rack=r{} ",
            device % 10
        );
        for (f, name) in FIELDS.iter().enumerate() {
            let v = ((seq as usize * 31 + l * 7 + f * 13) % 10_000) as f64 / 100.0;
            let _ = write!(body, "{}{name}={v}", if f == 0 { "" } else { "," });
        }
        let _ = writeln!(body, " {ts}");
    }
}

#[tokio::main]
async fn main() {
    let a = args();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(a.clients)
        .build()
        .expect("client");
    let values = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let base_ns = tributary_core::time::now_ns() - 30 * 86_400 * 1_000_000_000;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..a.clients {
        let (http, url, token, values, errors) = (
            http.clone(),
            a.url.clone(),
            a.token.clone(),
            values.clone(),
            errors.clone(),
        );
        let lines = a.lines_per_batch;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut body = String::with_capacity(lines * 200);
            let mut seq = 0u64;
            while Instant::now() < deadline {
                batch(c, seq, lines, base_ns, &mut body);
                seq += 1;
                let t = Instant::now();
                let r = http
                    .post(&url)
                    .header("authorization", format!("Token {token}"))
                    .body(body.clone())
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 204 => {
                        latencies.push(t.elapsed());
                        values.fetch_add((lines * FIELDS.len()) as u64, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        eprintln!(
                            "HTTP {status}: {}",
                            text.chars().take(200).collect::<String>()
                        );
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("request failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            latencies
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("client task"));
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let v = values.load(Ordering::Relaxed);
    println!(
        "clients={} batch_values={} duration={secs:.1}s acked_values={v} values_per_sec={:.0} requests={} errors={} \
         latency_ms p50={:.1} p90={:.1} p99={:.1} max={:.1}",
        a.clients,
        a.lines_per_batch * FIELDS.len(),
        v as f64 / secs,
        lat.len(),
        errors.load(Ordering::Relaxed),
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.9).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}
