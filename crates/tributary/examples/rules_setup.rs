//! Sets up the rules of the "10,000 rules" ingest benchmark: raises the
//! default tenant's `rules` quota, registers the devices that
//! `lp_ingest_bench` writes (`host-<client>-<n>`, with its tags as labels),
//! and creates N threshold rules over their series, one device and field
//! each (`usage_* > 1000`, which the benchmark's values never reach, so
//! every point is judged and none fires).
//!
//! ```sh
//! cargo run --release -p tributary --example rules_setup -- \
//!     --grpc http://127.0.0.1:50051 --token "$(cat data/admin.token)" --rules 10000 --clients 8
//! ```

#![allow(clippy::print_stdout)]

use tonic::transport::Channel;
use tributary_proto::v1 as pb;
use tributary_proto::v1::registry_service_client::RegistryServiceClient;
use tributary_proto::v1::rules_service_client::RulesServiceClient;

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

fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    r
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        argv.iter()
            .position(|a| a == name)
            .and_then(|i| argv.get(i + 1))
            .cloned()
    };
    let grpc = flag("--grpc").unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let token = flag("--token").expect("--token ADMIN_TOKEN");
    let rules: usize = flag("--rules").map_or(10_000, |v| v.parse().expect("--rules N"));
    let clients: usize = flag("--clients").map_or(8, |v| v.parse().expect("--clients N"));
    let channel = Channel::from_shared(grpc)
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut registry = RegistryServiceClient::new(channel.clone());
    let mut rules_client = RulesServiceClient::new(channel);
    registry
        .set_tenant_quotas(authed(
            pb::SetTenantQuotasRequest {
                tenant: "default".into(),
                set: [("rules".to_owned(), rules as u64 + 100)].into(),
                clear: Vec::new(),
            },
            &token,
        ))
        .await
        .expect("SetTenantQuotas");
    let devices = clients * 100;
    for c in 0..clients {
        for n in 0..100 {
            let created = registry
                .create_device(authed(
                    pb::CreateDeviceRequest {
                        tenant: String::new(),
                        id: format!("host-{c}-{n}"),
                        labels: [
                            ("region".to_owned(), "eu-west".to_owned()),
                            ("rack".to_owned(), format!("r{}", n % 10)),
                        ]
                        .into(),
                        ..Default::default()
                    },
                    &token,
                ))
                .await;
            match created {
                Ok(_) => {}
                Err(s) if s.code() == tonic::Code::AlreadyExists => {}
                Err(s) => panic!("CreateDevice: {s}"),
            }
        }
    }
    for i in 0..rules {
        let d = i % devices;
        let rule = pb::Rule {
            name: format!("r{i}"),
            target: Some(pb::rule::Target::Device(format!(
                "host-{}-{}",
                d / 100,
                d % 100
            ))),
            metric: FIELDS[(i / devices) % FIELDS.len()].into(),
            kind: Some(pb::rule::Kind::Threshold(pb::ThresholdRule {
                op: pb::threshold_rule::Op::Above as i32,
                value: 1000.0,
                high: 0.0,
                hysteresis: 0.0,
            })),
            ..Default::default()
        };
        match rules_client
            .create_rule(authed(pb::CreateRuleRequest { rule: Some(rule) }, &token))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::AlreadyExists => {}
            Err(s) => panic!("CreateRule: {s}"),
        }
    }
    println!("rules={rules} devices={devices}");
}
