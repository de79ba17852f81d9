//! Parser throughput, in values (points) per second.
//!
//! Run: `cargo bench -p tributary-core --bench parsers`
//! (add `-- --warm-up-time 1 --measurement-time 3` for a quick run).
//! Each body holds 5,000 values; criterion reports `elem/s` = values/s.
//!
//! Every parser is measured twice: `parse/*` in wall time, as criterion
//! does by default, and `parse-cpu/*` in CPU time of the benchmarking thread
//! (Linux only), which stays meaningful on a machine shared with other work,
//! where wall time also counts the time spent waiting for a core.

use std::fmt::Write;
use std::hint::black_box;

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tributary_core::Limits;
use tributary_core::formats::lineproto::{self, Precision};
use tributary_core::formats::{json, senml};

const VALUES: usize = 5_000;
const NOW: i64 = 1_700_000_000_000_000_000;

/// 500 lines of 10 fields, over 50 devices, like a Telegraf `cpu` input.
fn lineproto_body() -> String {
    let mut body = String::new();
    for i in 0..VALUES / 10 {
        let f = i as f64;
        writeln!(
            body,
            "cpu,device=host-{},region=eu usage_user={:.2},usage_system={:.2},usage_idle={:.2},usage_nice=0,\
             usage_iowait={:.3},usage_irq=0.5,usage_softirq=0.25,usage_steal=0,load={}i,up=true {}",
            i % 50,
            12.5 + f / 100.0,
            3.25 + f / 1000.0,
            84.25 - f / 100.0,
            f / 7.0,
            i % 8,
            NOW + i as i64 * 1_000_000_000,
        )
        .expect("writing to a String cannot fail");
    }
    body
}

/// 500 objects of 10 values, each with an epoch-milliseconds timestamp.
fn json_body() -> String {
    let mut body = String::from("[");
    for i in 0..VALUES / 10 {
        let f = i as f64;
        if i > 0 {
            body.push(',');
        }
        write!(
            body,
            r#"{{"ts":{},"values":{{"temp":{:.2},"humidity":{:.1},"pressure":{:.1},"battery":{},"rssi":{},"door":false,"count":{},"lux":{:.1},"co2":{},"fw":"1.2.3"}}}}"#,
            1_700_000_000_000i64 + i as i64 * 1000,
            21.5 + f / 100.0,
            40.0 + f / 50.0,
            1013.2 + f / 10.0,
            90 - (i % 10) as i64,
            -(60 + (i % 20) as i64),
            i,
            300.0 + f,
            400 + i % 100,
        )
        .expect("writing to a String cannot fail");
    }
    body.push(']');
    body
}

/// 5,000 records under one base name and base time, cycling over 10 names.
fn senml_body() -> String {
    let mut body = String::from(
        r#"[{"bn":"urn:dev:ow:10e2073a01080063:","bt":1.7e9,"bu":"Cel","n":"s0","v":21.5}"#,
    );
    for i in 1..VALUES {
        write!(
            body,
            r#",{{"n":"s{}","t":{},"v":{:.2}}}"#,
            i % 10,
            i / 10,
            20.0 + (i % 100) as f64 / 10.0
        )
        .expect("writing to a String cannot fail");
    }
    body.push(']');
    body
}

fn parsers<M: Measurement>(c: &mut Criterion<M>, group_name: &str) {
    let limits = Limits::default();
    let mut group = c.benchmark_group(group_name);
    group.throughput(Throughput::Elements(VALUES as u64));

    let body = lineproto_body();
    let count = lineproto::parse(body.as_bytes(), Precision::Ns, "device", NOW, &limits)
        .map(|batches| batches.iter().map(|b| b.points.len()).sum::<usize>());
    assert_eq!(count, Ok(VALUES), "the line-protocol body must parse");
    // `iter_with_large_drop`: freeing the points is left out of the timing
    // (ingest moves them on); `lineproto+drop` shows what freeing adds.
    group.bench_function("lineproto", |b| {
        b.iter_with_large_drop(|| {
            lineproto::parse(
                black_box(body.as_bytes()),
                Precision::Ns,
                "device",
                NOW,
                &limits,
            )
        })
    });
    group.bench_function("lineproto+drop", |b| {
        b.iter(|| {
            lineproto::parse(
                black_box(body.as_bytes()),
                Precision::Ns,
                "device",
                NOW,
                &limits,
            )
        })
    });

    let body = json_body();
    assert_eq!(
        json::parse(body.as_bytes(), NOW, &limits).map(|p| p.len()),
        Ok(VALUES)
    );
    group.bench_function("json", |b| {
        b.iter_with_large_drop(|| json::parse(black_box(body.as_bytes()), NOW, &limits))
    });

    let body = senml_body();
    assert_eq!(
        senml::parse(body.as_bytes(), NOW, &limits).map(|p| p.len()),
        Ok(VALUES)
    );
    group.bench_function("senml", |b| {
        b.iter_with_large_drop(|| senml::parse(black_box(body.as_bytes()), NOW, &limits))
    });

    group.finish();
}

fn wall_time(c: &mut Criterion) {
    parsers(c, "parse");
}

fn cpu_time(c: &mut Criterion<ThreadCpuTime>) {
    parsers(c, "parse-cpu");
}

/// CPU time of the calling thread, in nanoseconds, from
/// `/proc/thread-self/schedstat` (its first field). The kernel brings that
/// figure up to date at scheduling events, so yield first to have one.
fn thread_cpu_ns() -> u64 {
    std::thread::yield_now();
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .expect("/proc/thread-self/schedstat is readable (Linux)")
}

/// A criterion measurement of the benchmarking thread's CPU time.
struct ThreadCpuTime;

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }

    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().saturating_sub(start)
    }

    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }

    fn zero(&self) -> u64 {
        0
    }

    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuTimeFormatter
    }
}

/// Formats CPU nanoseconds as µs of CPU and throughputs per CPU second.
struct CpuTimeFormatter;

impl ValueFormatter for CpuTimeFormatter {
    fn scale_values(&self, _typical: f64, values: &mut [f64]) -> &'static str {
        values.iter_mut().for_each(|v| *v /= 1e3);
        "µs (cpu)"
    }

    fn scale_throughputs(
        &self,
        _typical: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let per_iteration = match *throughput {
            Throughput::Elements(n)
            | Throughput::Bytes(n)
            | Throughput::BytesDecimal(n)
            | Throughput::Bits(n) => n,
        } as f64;
        // ns per iteration -> millions per CPU second.
        values
            .iter_mut()
            .for_each(|v| *v = per_iteration * 1e3 / *v);
        "M/s (cpu)"
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

criterion_group!(wall, wall_time);
criterion_group! {
    name = cpu;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = cpu_time
}
criterion_main!(wall, cpu);
