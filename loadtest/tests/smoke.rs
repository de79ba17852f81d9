//! CI runs the smoke scenario, as shipped, against a freshly started
//! standalone: `tributary-loadtest run loadtest/scenarios/smoke.toml`, with
//! only the addresses and the token file pointed at the test's server.

mod common;

use std::time::Duration;

use common::{Standalone, describe, loadtest, read_report};

#[test]
fn smoke_scenario_passes_against_a_fresh_standalone() {
    let server = Standalone::start();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("smoke.json");
    let svg = dir.path().join("smoke.svg");
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/smoke.toml");
    let mut args = vec![
        "run".to_string(),
        scenario.to_string(),
        "-q".into(),
        "--json".into(),
        json.display().to_string(),
        "--plot".into(),
        svg.display().to_string(),
    ];
    args.extend(server.target_flags());
    args.extend(["--server-pid".into(), server.child.id().to_string()]);
    let out = loadtest(&args, Duration::from_secs(120));
    let ctx = describe(&out);
    assert!(out.status.success(), "{ctx}");

    let summary = String::from_utf8_lossy(&out.stdout);
    for line in [
        "smoke against tributary (MQTT 5 QoS 1)",
        "acked 1,000",
        "verify       PASS",
        "µs per message",
    ] {
        assert!(summary.contains(line), "summary lacks {line:?}: {ctx}");
    }
    let r = read_report(&json);
    assert_eq!(r["counters"]["msgs_acked"], 1000, "{ctx}");
    assert_eq!(r["connect"]["established"], 20, "{ctx}");
    assert_eq!(r["verify"]["acked_not_stored"], 0, "{ctx}");
    assert_eq!(r["verify"]["points_stored"], 3000, "{ctx}");
    let e2e = r["e2e_latency_ms"]["count"].as_u64().unwrap_or(0);
    assert!(e2e > 0, "end-to-end samples arrived: {ctx}");
    assert!(!r["timeline"].as_array().unwrap().is_empty(), "{ctx}");
    // The server's CPU per acknowledged message: something, and less than
    // a second each (the whole run is a few seconds of CPU).
    let per_msg = r["server_cpu"]["per_msg_us"].as_f64().unwrap_or(0.0);
    assert!(
        per_msg > 0.0 && per_msg < 1e6,
        "server CPU per message {per_msg}: {ctx}"
    );
    let plot = std::fs::read_to_string(&svg).expect("plot written");
    assert!(plot.contains("acknowledged throughput"), "{ctx}");
}

/// A churning fleet: every device connects, holds its connection for
/// `load.hold`, says goodbye and is done, so the run ends once the last one
/// has left, long before its duration, with nothing open.
#[test]
fn churning_devices_leave_after_their_hold() {
    let server = Standalone::start();
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("churn.toml");
    std::fs::write(
        &scenario,
        r#"
name = "churn"
[devices]
count = 40
[transport]
protocol = "mqtt"
[load]
mode = "idle"
duration = "60s"
ramp = 200
hold = "300ms"
"#,
    )
    .unwrap();
    let json = dir.path().join("churn.json");
    let mut args = vec![
        "run".to_string(),
        scenario.display().to_string(),
        "-q".into(),
        "--json".into(),
        json.display().to_string(),
    ];
    args.extend(server.target_flags());
    args.extend(["--server-pid".into(), server.child.id().to_string()]);
    let out = loadtest(&args, Duration::from_secs(120));
    let ctx = describe(&out);
    assert!(out.status.success(), "{ctx}");
    let r = read_report(&json);
    assert_eq!(r["connect"]["established"], 40, "{ctx}");
    assert_eq!(r["connect"]["failed"], 0, "{ctx}");
    assert_eq!(r["counters"]["connected"], 0, "all left: {ctx}");
    let took = r["duration_s"].as_f64().unwrap_or(f64::MAX);
    assert!(
        took < 30.0,
        "the run ended when the devices left, after {took} s: {ctx}"
    );
    let per_connect = r["server_cpu"]["per_connect_us"].as_f64().unwrap_or(0.0);
    assert!(per_connect > 0.0, "server CPU per connection: {ctx}");
}
