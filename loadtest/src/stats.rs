//! Counting and timing: what every sender records, and how the records of
//! several senders (or worker processes) add up to one timeline.
//!
//! Senders record into a shared [`Stats`]: counters are atomics, latencies go
//! into HDR histograms behind short-held mutexes. Once per interval the
//! coordinator (or a worker process) takes a [`Tick`]: the cumulative counters
//! and the histograms of the interval. A [`Collector`] adds ticks from any
//! number of sources into totals and a [`TimelinePoint`] per interval, so one
//! process and sixteen look the same to the report.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The largest latency a histogram holds, in microseconds (one hour); larger
/// values are recorded as this.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// An empty latency histogram: microseconds, 1 µs to 1 h, 3 significant
/// digits (about 100 KiB).
pub fn latency_histogram() -> Histogram<u64> {
    // The bounds are constants that satisfy the constructor's rules
    // (low >= 1, high >= 2 * low, sigfig <= 5), so this cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .unwrap_or_else(|e| unreachable!("constant histogram bounds are valid: {e}"))
}

/// A histogram's contents as `(value, count)` pairs, to cross process
/// boundaries as JSON.
pub fn histogram_to_pairs(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

/// Adds `(value, count)` pairs into a histogram (values are clamped).
pub fn add_pairs(h: &mut Histogram<u64>, pairs: &[(u64, u64)]) {
    for &(v, n) in pairs {
        h.saturating_record_n(v.clamp(1, MAX_LATENCY_US), n);
    }
}

/// The resident memory of process `pid` (`self` for this one), in KiB, from
/// `/proc/<pid>/status`.
pub fn rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// CPU seconds (user + system) of a process from `/proc/<pid>/stat`, with
/// those of its waited-for children when `children` is set.
pub fn cpu_seconds(pid: &str, children: bool) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    // utime is field 14 of the line, the 12th after the name (index 11);
    // stime, cutime and cstime follow.
    let mut ticks = tick(11)? + tick(12)?;
    if children {
        ticks += tick(13)? + tick(14)?;
    }
    // The kernel reports these in USER_HZ, which is 100 on every Linux ABI.
    Some(ticks as f64 / 100.0)
}

/// Counters, cumulative since the start of the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Connection attempts (TCP, TLS, CONNECT), retries included.
    pub conn_attempts: u64,
    /// Attempts that ended in an accepted connection.
    pub conn_established: u64,
    /// Attempts that failed (see the errors for why).
    pub conn_failed: u64,
    /// Connections open now.
    pub connected: u64,
    /// Messages (MQTT publishes, HTTP requests) written to the network.
    pub msgs_sent: u64,
    /// Messages the server acknowledged as accepted (QoS 0: never).
    pub msgs_acked: u64,
    /// Messages refused, unanswered or lost with their connection.
    pub msgs_failed: u64,
    /// Points in sent messages.
    pub points_sent: u64,
    /// Points in acknowledged messages.
    pub points_acked: u64,
    /// Payload bytes in sent messages.
    pub bytes_sent: u64,
    /// Live batches the server dropped for the end-to-end subscriber.
    pub e2e_dropped: u64,
    /// Microseconds from the first connection attempt to the last accepted
    /// connection (the ramp-up as achieved); the largest over sources.
    pub connect_span_us: u64,
    /// Resident memory of the generator's processes, KiB (a gauge).
    #[serde(default)]
    pub generator_rss_kib: u64,
}

impl Counters {
    fn add(&mut self, o: &Counters) {
        self.conn_attempts += o.conn_attempts;
        self.conn_established += o.conn_established;
        self.conn_failed += o.conn_failed;
        self.connected += o.connected;
        self.msgs_sent += o.msgs_sent;
        self.msgs_acked += o.msgs_acked;
        self.msgs_failed += o.msgs_failed;
        self.points_sent += o.points_sent;
        self.points_acked += o.points_acked;
        self.bytes_sent += o.bytes_sent;
        self.e2e_dropped += o.e2e_dropped;
        self.connect_span_us = self.connect_span_us.max(o.connect_span_us);
        self.generator_rss_kib += o.generator_rss_kib;
    }
}

/// What senders record into. Shared by every sender of a process.
#[derive(Debug)]
pub struct Stats {
    epoch: std::time::Instant,
    first_attempt_us: AtomicU64,
    last_established_us: AtomicU64,
    conn_attempts: AtomicU64,
    conn_established: AtomicU64,
    conn_failed: AtomicU64,
    connected: AtomicU64,
    msgs_sent: AtomicU64,
    msgs_acked: AtomicU64,
    msgs_failed: AtomicU64,
    points_sent: AtomicU64,
    points_acked: AtomicU64,
    bytes_sent: AtomicU64,
    e2e_dropped: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    ack: Mutex<Histogram<u64>>,
    e2e: Mutex<Histogram<u64>>,
    connect: Mutex<Histogram<u64>>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            epoch: std::time::Instant::now(),
            first_attempt_us: AtomicU64::new(u64::MAX),
            last_established_us: AtomicU64::new(0),
            conn_attempts: AtomicU64::new(0),
            conn_established: AtomicU64::new(0),
            conn_failed: AtomicU64::new(0),
            connected: AtomicU64::new(0),
            msgs_sent: AtomicU64::new(0),
            msgs_acked: AtomicU64::new(0),
            msgs_failed: AtomicU64::new(0),
            points_sent: AtomicU64::new(0),
            points_acked: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            e2e_dropped: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            ack: Mutex::new(latency_histogram()),
            e2e: Mutex::new(latency_histogram()),
            connect: Mutex::new(latency_histogram()),
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves consistent data (a
    // counter map or a histogram), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Stats {
    /// A connection attempt starts.
    pub fn conn_attempt(&self) {
        self.conn_attempts.fetch_add(1, Ordering::Relaxed);
        self.first_attempt_us
            .fetch_min(micros(self.epoch.elapsed()), Ordering::Relaxed);
    }

    /// A connection was accepted after `setup` (TCP + TLS + CONNACK).
    pub fn conn_established(&self, setup: Duration) {
        self.conn_established.fetch_add(1, Ordering::Relaxed);
        self.connected.fetch_add(1, Ordering::Relaxed);
        self.last_established_us
            .fetch_max(micros(self.epoch.elapsed()), Ordering::Relaxed);
        lock(&self.connect).saturating_record(micros(setup));
    }

    /// A connection attempt failed.
    pub fn conn_failed(&self, reason: &str) {
        self.conn_failed.fetch_add(1, Ordering::Relaxed);
        self.error(reason);
    }

    /// An established connection ended.
    pub fn disconnected(&self) {
        self.connected.fetch_sub(1, Ordering::Relaxed);
    }

    /// A message of `points` points and `bytes` bytes was written.
    pub fn sent(&self, points: u64, bytes: u64) {
        self.msgs_sent.fetch_add(1, Ordering::Relaxed);
        self.points_sent.fetch_add(points, Ordering::Relaxed);
        self.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A message of `points` points was acknowledged `latency` after it was
    /// sent (or scheduled, in the open-loop modes).
    pub fn acked(&self, points: u64, latency: Duration) {
        self.msgs_acked.fetch_add(1, Ordering::Relaxed);
        self.points_acked.fetch_add(points, Ordering::Relaxed);
        lock(&self.ack).saturating_record(micros(latency));
    }

    /// A message failed for `reason`.
    pub fn failed(&self, reason: &str) {
        self.msgs_failed.fetch_add(1, Ordering::Relaxed);
        self.error(reason);
    }

    /// Counts an error that is neither a message nor a connection failure
    /// (an end-to-end subscriber retry, say).
    pub fn error(&self, reason: &str) {
        let mut e = lock(&self.errors);
        if let Some(n) = e.get_mut(reason) {
            *n += 1;
        } else {
            e.insert(reason.to_string(), 1);
        }
    }

    /// One end-to-end sample: a point seen through `Subscribe` `latency`
    /// after it was sent.
    pub fn e2e(&self, latency: Duration) {
        lock(&self.e2e).saturating_record(micros(latency));
    }

    /// Live batches the server dropped for the subscriber.
    pub fn e2e_dropped(&self, n: u64) {
        self.e2e_dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn counters(&self) -> Counters {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counters {
            conn_attempts: g(&self.conn_attempts),
            conn_established: g(&self.conn_established),
            conn_failed: g(&self.conn_failed),
            connected: g(&self.connected),
            msgs_sent: g(&self.msgs_sent),
            msgs_acked: g(&self.msgs_acked),
            msgs_failed: g(&self.msgs_failed),
            points_sent: g(&self.points_sent),
            points_acked: g(&self.points_acked),
            bytes_sent: g(&self.bytes_sent),
            e2e_dropped: g(&self.e2e_dropped),
            connect_span_us: g(&self.last_established_us).saturating_sub(g(&self.first_attempt_us)),
            generator_rss_kib: 0,
        }
    }

    /// The cumulative counters and the latencies recorded since the previous
    /// tick (the interval histograms start over).
    pub fn tick(&self) -> Tick {
        let drain = |m: &Mutex<Histogram<u64>>| {
            let mut h = lock(m);
            let pairs = histogram_to_pairs(&h);
            h.reset();
            pairs
        };
        Tick {
            counters: Counters {
                generator_rss_kib: rss_kib("self").unwrap_or(0),
                ..self.counters()
            },
            errors: lock(&self.errors).clone(),
            ack: drain(&self.ack),
            e2e: drain(&self.e2e),
            connect: drain(&self.connect),
        }
    }
}

/// One source's state at one moment: what a worker process reports each
/// interval.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Tick {
    /// Cumulative counters.
    pub counters: Counters,
    /// Cumulative errors by reason.
    pub errors: BTreeMap<String, u64>,
    /// Acknowledgement latencies (µs) of the interval.
    pub ack: Vec<(u64, u64)>,
    /// End-to-end latencies (µs) of the interval.
    pub e2e: Vec<(u64, u64)>,
    /// Connection setup times (µs) of the interval.
    pub connect: Vec<(u64, u64)>,
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
}

impl Percentiles {
    /// The percentiles of a microsecond histogram; `None` when it is empty.
    pub fn of(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1_000.0;
        Some(Self {
            count: h.len(),
            mean: h.mean() / 1_000.0,
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        })
    }
}

/// One interval of the timeline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Seconds since the start of the load, at the end of the interval.
    pub t: f64,
    /// Open connections at the end of the interval.
    pub connected: u64,
    /// Messages sent in the interval.
    pub sent: u64,
    /// Messages acknowledged in the interval.
    pub acked: u64,
    /// Messages failed in the interval.
    pub failed: u64,
    /// Acknowledged messages per second (sent, for MQTT QoS 0).
    pub msgs_per_s: f64,
    /// Acknowledged points per second (sent, for MQTT QoS 0).
    pub points_per_s: f64,
    /// Acknowledgement latency of the interval.
    pub ack_ms: Option<Percentiles>,
    /// End-to-end latency of the interval.
    pub e2e_ms: Option<Percentiles>,
    /// The server's resident memory at the end of the interval (`--server-pid`).
    pub server_rss_kib: Option<u64>,
}

/// Adds ticks of any number of sources into totals and a timeline.
#[derive(Debug)]
pub struct Collector {
    sources: Vec<Tick>,
    ack_total: Histogram<u64>,
    e2e_total: Histogram<u64>,
    connect_total: Histogram<u64>,
    ack_interval: Histogram<u64>,
    e2e_interval: Histogram<u64>,
    previous: Counters,
    previous_t: f64,
    timeline: Vec<TimelinePoint>,
    unacked: bool,
}

impl Collector {
    /// A collector of `sources` sources (worker processes, or 1). With
    /// `unacked` (MQTT QoS 0, which has no acknowledgements) throughput counts
    /// sent messages instead of acknowledged ones.
    pub fn new(sources: usize, unacked: bool) -> Self {
        Self {
            sources: vec![Tick::default(); sources],
            ack_total: latency_histogram(),
            e2e_total: latency_histogram(),
            connect_total: latency_histogram(),
            ack_interval: latency_histogram(),
            e2e_interval: latency_histogram(),
            previous: Counters::default(),
            previous_t: 0.0,
            timeline: Vec::new(),
            unacked,
        }
    }

    /// Takes in one tick of `source` (ticks of a source are cumulative in
    /// counters and disjoint in latencies). Unknown sources are ignored.
    pub fn absorb(&mut self, source: usize, tick: Tick) {
        add_pairs(&mut self.ack_total, &tick.ack);
        add_pairs(&mut self.ack_interval, &tick.ack);
        add_pairs(&mut self.e2e_total, &tick.e2e);
        add_pairs(&mut self.e2e_interval, &tick.e2e);
        add_pairs(&mut self.connect_total, &tick.connect);
        if let Some(slot) = self.sources.get_mut(source) {
            slot.counters = tick.counters;
            slot.errors = tick.errors;
        }
    }

    /// The counters of every source added up.
    pub fn totals(&self) -> Counters {
        let mut c = Counters::default();
        for s in &self.sources {
            c.add(&s.counters);
        }
        c
    }

    /// Errors by reason over every source.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for s in &self.sources {
            for (k, v) in &s.errors {
                *out.entry(k.clone()).or_insert(0) += v;
            }
        }
        out
    }

    /// Ends the current interval at `t` seconds since the start.
    pub fn close_interval(&mut self, t: f64, server_rss_kib: Option<u64>) -> &TimelinePoint {
        let now = self.totals();
        let dt = (t - self.previous_t).max(1e-3);
        let acked = now.msgs_acked.saturating_sub(self.previous.msgs_acked);
        let sent = now.msgs_sent.saturating_sub(self.previous.msgs_sent);
        let (msgs, points) = if self.unacked {
            (
                sent,
                now.points_sent.saturating_sub(self.previous.points_sent),
            )
        } else {
            (
                acked,
                now.points_acked.saturating_sub(self.previous.points_acked),
            )
        };
        let point = TimelinePoint {
            t,
            connected: now.connected,
            sent,
            acked,
            failed: now.msgs_failed.saturating_sub(self.previous.msgs_failed),
            msgs_per_s: msgs as f64 / dt,
            points_per_s: points as f64 / dt,
            ack_ms: Percentiles::of(&self.ack_interval),
            e2e_ms: Percentiles::of(&self.e2e_interval),
            server_rss_kib,
        };
        self.ack_interval.reset();
        self.e2e_interval.reset();
        self.previous = now;
        self.previous_t = t;
        self.timeline.push(point);
        self.timeline
            .last()
            .unwrap_or_else(|| unreachable!("just pushed"))
    }

    /// Every interval so far.
    pub fn timeline(&self) -> &[TimelinePoint] {
        &self.timeline
    }

    /// Acknowledgement latency over the whole run.
    pub fn ack_latency(&self) -> Option<Percentiles> {
        Percentiles::of(&self.ack_total)
    }

    /// End-to-end latency over the whole run.
    pub fn e2e_latency(&self) -> Option<Percentiles> {
        Percentiles::of(&self.e2e_total)
    }

    /// Connection setup time over the whole run.
    pub fn connect_latency(&self) -> Option<Percentiles> {
        Percentiles::of(&self.connect_total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_of_two_sources_add_up() {
        let a = Stats::default();
        let b = Stats::default();
        for i in 1..=100u64 {
            a.sent(2, 10);
            a.acked(2, Duration::from_millis(i));
        }
        b.sent(5, 50);
        b.failed("HTTP 503");
        b.failed("HTTP 503");
        let mut c = Collector::new(2, false);
        c.absorb(0, a.tick());
        c.absorb(1, b.tick());
        let p = c.close_interval(2.0, None).clone();
        assert_eq!((p.sent, p.acked, p.failed), (101, 100, 2));
        assert_eq!(p.msgs_per_s, 50.0);
        assert_eq!(p.points_per_s, 100.0);
        let lat = p.ack_ms.unwrap();
        assert_eq!(lat.count, 100);
        assert!((lat.p50 - 50.0).abs() < 0.1, "{lat:?}");
        assert!((lat.max - 100.0).abs() < 0.1, "{lat:?}");
        assert_eq!(c.errors().get("HTTP 503"), Some(&2));

        // A second tick carries cumulative counters and only new latencies.
        a.acked(2, Duration::from_secs(1));
        c.absorb(0, a.tick());
        let p = c.close_interval(3.0, Some(1024)).clone();
        assert_eq!((p.sent, p.acked), (0, 1));
        assert_eq!(p.ack_ms.unwrap().count, 1);
        assert_eq!(p.server_rss_kib, Some(1024));
        assert_eq!(c.ack_latency().unwrap().count, 101);
        assert_eq!(c.totals().points_acked, 202);
        assert_eq!(c.timeline().len(), 2);
    }

    #[test]
    fn histograms_survive_json() {
        let s = Stats::default();
        s.acked(1, Duration::from_micros(1234));
        s.acked(1, Duration::from_secs(7200));
        let tick: Tick = serde_json::from_str(&serde_json::to_string(&s.tick()).unwrap()).unwrap();
        let mut c = Collector::new(1, false);
        c.absorb(0, tick);
        let l = c.ack_latency().unwrap();
        assert_eq!(l.count, 2);
        assert!((l.p50 - 1.234).abs() < 0.01, "{l:?}");
        assert!(l.max >= 3_600_000.0 * 0.999, "clamped to an hour: {l:?}");
    }
}
