//! The generator's own accounting, against a real standalone: for a known
//! number of messages, sent = acknowledged = stored, in every protocol and
//! format, in one process and split over worker processes.

mod common;

use std::time::Duration;

use common::{Standalone, describe, loadtest, read_report};

struct Case {
    name: &'static str,
    toml: String,
    messages: u64,
    points_per_message: u64,
    devices: u64,
}

fn cases() -> Vec<Case> {
    let mqtt = |name: &'static str, version: &str, qos: u8, extra: &str| {
        format!(
            r#"
            name = "{name}"
            [devices]
            count = 10
            [transport]
            protocol = "mqtt"
            version = "{version}"
            qos = {qos}
            [load]
            in_flight = 3
            messages = 300
            duration = "60s"
            ramp = 0
            {extra}
            [payload]
            metrics = 3
            size = 200
            [measure]
            verify = true
            verify_timeout = "30s"
            "#
        )
    };
    vec![
        Case {
            name: "mqtt-5-qos1-padded",
            toml: mqtt("mqtt-5-qos1-padded", "5", 1, ""),
            messages: 300,
            // three metrics and the padding string
            points_per_message: 4,
            devices: 10,
        },
        Case {
            name: "mqtt-311-qos2-two-workers",
            toml: mqtt("mqtt-311-qos2-two-workers", "3.1.1", 2, "workers = 2"),
            messages: 300,
            points_per_message: 4,
            devices: 10,
        },
        Case {
            name: "http-json-batches",
            toml: r#"
                name = "http-json-batches"
                [devices]
                count = 5
                [transport]
                protocol = "http"
                format = "json"
                batch = 2
                [load]
                in_flight = 2
                messages = 50
                duration = "60s"
                [payload]
                metrics = 4
                values = "mixed"
                [measure]
                verify = true
                verify_timeout = "30s"
            "#
            .into(),
            messages: 50,
            points_per_message: 8,
            devices: 5,
        },
        Case {
            name: "http-senml",
            toml: r#"
                name = "http-senml"
                [devices]
                count = 4
                [transport]
                protocol = "http"
                format = "senml"
                [load]
                mode = "total-rate"
                rate = 400
                messages = 40
                duration = "60s"
                [payload]
                metrics = 3
                values = "mixed"
                [measure]
                verify = true
                verify_timeout = "30s"
            "#
            .into(),
            messages: 40,
            points_per_message: 3,
            devices: 4,
        },
        Case {
            name: "http-line-protocol",
            toml: r#"
                name = "http-line-protocol"
                [devices]
                count = 12
                labels = { rack = "r 1" }
                [transport]
                protocol = "http"
                format = "line-protocol"
                clients = 3
                batch = 20
                [load]
                in_flight = 2
                messages = 30
                duration = "60s"
                [payload]
                metrics = 5
                [measure]
                verify = true
                verify_timeout = "30s"
            "#
            .into(),
            messages: 30,
            points_per_message: 100,
            devices: 12,
        },
        Case {
            name: "coap-json",
            toml: r#"
                name = "coap-json"
                [devices]
                count = 6
                [transport]
                protocol = "coap"
                format = "json"
                [load]
                in_flight = 2
                messages = 120
                duration = "60s"
                [payload]
                metrics = 3
                values = "mixed"
                [measure]
                verify = true
                verify_timeout = "30s"
            "#
            .into(),
            messages: 120,
            points_per_message: 3,
            devices: 6,
        },
        Case {
            name: "coap-senml-two-workers",
            toml: r#"
                name = "coap-senml-two-workers"
                [devices]
                count = 4
                [transport]
                protocol = "coap"
                format = "senml"
                [load]
                workers = 2
                messages = 40
                duration = "60s"
                [payload]
                metrics = 2
                [measure]
                verify = true
                verify_timeout = "30s"
            "#
            .into(),
            messages: 40,
            points_per_message: 2,
            devices: 4,
        },
    ]
}

#[test]
fn sent_equals_acked_equals_stored() {
    let server = Standalone::start();
    let dir = tempfile::tempdir().unwrap();
    for case in cases() {
        let scenario = dir.path().join(format!("{}.toml", case.name));
        std::fs::write(&scenario, &case.toml).unwrap();
        let json = dir.path().join(format!("{}.json", case.name));
        let mut args = vec![
            "run".to_string(),
            scenario.display().to_string(),
            "-q".into(),
            "--json".into(),
            json.display().to_string(),
        ];
        args.extend(server.target_flags());
        let out = loadtest(&args, Duration::from_secs(120));
        assert!(out.status.success(), "{}: {}", case.name, describe(&out));
        let r = read_report(&json);
        let c = &r["counters"];
        let points = case.messages * case.points_per_message;
        let ctx = format!("{}: {}", case.name, describe(&out));
        assert_eq!(c["msgs_sent"], case.messages, "{ctx}");
        assert_eq!(c["msgs_acked"], case.messages, "{ctx}");
        assert_eq!(c["msgs_failed"], 0, "{ctx}");
        assert_eq!(c["points_sent"], points, "{ctx}");
        assert_eq!(c["points_acked"], points, "{ctx}");
        assert_eq!(r["errors"], serde_json::json!({}), "{ctx}");
        let v = &r["verify"];
        assert_eq!(v["points_stored"], points, "{ctx}");
        assert_eq!(v["acked_not_stored"], 0, "{ctx}");
        assert_eq!(v["stored_not_acked"], 0, "{ctx}");
        assert_eq!(v["settled"], true, "{ctx}");
        let tallies = r["tallies"].as_array().expect("tallies");
        assert_eq!(tallies.len() as u64, case.devices, "{ctx}");
        let acked: u64 = tallies.iter().map(|t| t["acked"].as_u64().unwrap()).sum();
        assert_eq!(acked, points, "{ctx}");
        assert!(
            tallies.iter().all(|t| t["acked"].as_u64().unwrap() > 0),
            "every device sent: {ctx}"
        );
        assert!(r["ack_latency_ms"]["count"] == case.messages, "{ctx}");
        let summary = String::from_utf8_lossy(&out.stdout);
        assert!(summary.contains("verify       PASS"), "{ctx}");
    }
}
