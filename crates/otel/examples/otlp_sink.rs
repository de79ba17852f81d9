//! A minimal OTLP/gRPC trace receiver that counts what it gets: a real sink
//! for measuring the cost of trace export (docs/benchmarks.md).
//!
//! ```sh
//! cargo run --release -p tributary-otel --example otlp_sink -- 127.0.0.1:4317
//! ```
//!
//! Prints the spans received so far every 5 s, and the total on Ctrl-C.

#![allow(clippy::print_stdout)]

#[path = "../tests/receiver/mod.rs"]
mod receiver;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4317".into())
        .parse()
        .expect("usage: otlp_sink [ADDR:PORT]");
    let (addr, received) = receiver::start(addr).await;
    println!("otlp_sink listening on {addr}");
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => println!("spans={} exports={}", received.count(), received.requests()),
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    println!(
        "total spans={} exports={}",
        received.count(),
        received.requests()
    );
}
