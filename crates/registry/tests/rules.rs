//! RulesService over a real TCP socket: roles, tenants, quotas, validation.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Server};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;
use tributary_auth::{JwtKeys, OperatorClaims, Role};
use tributary_proto::v1 as pb;
use tributary_proto::v1::rules_service_client::RulesServiceClient;
use tributary_registry::{
    EmbeddedRegistryStore, NewDevice, NewTenant, Registry, RegistryConfig, RulesGrpc,
    TenantSettings,
};

struct TestServer {
    _dir: TempDir,
    keys: JwtKeys,
    registry: Arc<Registry>,
    client: RulesServiceClient<Channel>,
}

async fn start() -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedRegistryStore::open(&dir.path().join("registry.redb")).expect("open store");
    let registry = Arc::new(Registry::new(store, RegistryConfig::default()));
    for name in ["tenant-a", "tenant-b"] {
        registry
            .create_tenant(NewTenant {
                name: name.into(),
                display_name: String::new(),
                settings: TenantSettings::default(),
            })
            .await
            .expect("tenant");
    }
    for (id, kind) in [
        ("f1", "freezer"),
        ("f2", "freezer"),
        ("f3", "freezer"),
        ("p1", "pump"),
    ] {
        registry
            .create_device(NewDevice {
                tenant: "tenant-a".into(),
                id: id.into(),
                labels: BTreeMap::from([("kind".into(), kind.into())]),
                metadata: BTreeMap::new(),
                issue_token: false,
            })
            .await
            .expect("device");
    }
    let keys = JwtKeys::from_secret(&[42u8; 32]).expect("keys");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let service = RulesGrpc::new(Arc::clone(&registry), keys.clone()).server();
    tokio::spawn(async move {
        Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .expect("serve");
    });
    let client = RulesServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    TestServer {
        _dir: dir,
        keys,
        registry,
        client,
    }
}

fn token(keys: &JwtKeys, tenant: &str, role: Role) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    keys.issue(&OperatorClaims {
        sub: format!("{role:?}@{tenant}"),
        tenant: tenant.into(),
        role,
        iat: now,
        exp: now + 600,
    })
    .expect("issue")
}

fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut req = Request::new(message);
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    req
}

/// "Tell me when a freezer is above -15 °C for 10 minutes."
fn freezer_warm(name: &str) -> pb::Rule {
    pb::Rule {
        name: name.into(),
        target: Some(pb::rule::Target::Selector("kind=freezer".into())),
        metric: "temp".into(),
        kind: Some(pb::rule::Kind::Threshold(pb::ThresholdRule {
            op: pb::threshold_rule::Op::Above as i32,
            value: -15.0,
            high: 0.0,
            hysteresis: 0.5,
        })),
        for_duration: "10m".into(),
        severity: pb::Severity::Critical as i32,
        ..Default::default()
    }
}

fn create(rule: pb::Rule) -> pb::CreateRuleRequest {
    pb::CreateRuleRequest { rule: Some(rule) }
}

fn status<T: std::fmt::Debug>(result: Result<T, Status>) -> Status {
    match result {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(status) => status,
    }
}

#[tokio::test]
async fn operators_create_get_list_and_delete_rules_in_their_tenant() {
    let mut s = start().await;
    let operator = token(&s.keys, "tenant-a", Role::Operator);
    let created = s
        .client
        .create_rule(authed(create(freezer_warm("freezer-warm")), &operator))
        .await
        .expect("create")
        .into_inner();
    assert_eq!(created.tenant, "tenant-a");
    assert_eq!(created.revision, 1);
    assert!(created.created_at_ns > 0);
    assert_eq!(
        pb::Rule {
            tenant: String::new(),
            revision: 0,
            created_at_ns: 0,
            ..created.clone()
        },
        freezer_warm("freezer-warm"),
        "the rule reads back as asked"
    );
    let again = status(
        s.client
            .create_rule(authed(create(freezer_warm("freezer-warm")), &operator))
            .await,
    );
    assert_eq!(again.code(), Code::AlreadyExists);

    let viewer = token(&s.keys, "tenant-a", Role::Viewer);
    let got = s
        .client
        .get_rule(authed(
            pb::GetRuleRequest {
                tenant: String::new(),
                name: "freezer-warm".into(),
            },
            &viewer,
        ))
        .await
        .expect("viewers read rules")
        .into_inner();
    assert_eq!(got, created);
    let denied = status(
        s.client
            .create_rule(authed(create(freezer_warm("other")), &viewer))
            .await,
    );
    assert_eq!(denied.code(), Code::PermissionDenied);

    // Paged listing, by name.
    for name in ["b-rule", "a-rule"] {
        s.client
            .create_rule(authed(create(freezer_warm(name)), &operator))
            .await
            .expect("create");
    }
    let page = s
        .client
        .list_rules(authed(
            pb::ListRulesRequest {
                page_size: 2,
                ..Default::default()
            },
            &viewer,
        ))
        .await
        .expect("list")
        .into_inner();
    let names: Vec<&str> = page.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["a-rule", "b-rule"]);
    assert_eq!(page.next_page_token, "b-rule");
    let rest = s
        .client
        .list_rules(authed(
            pb::ListRulesRequest {
                page_size: 2,
                page_token: page.next_page_token,
                ..Default::default()
            },
            &viewer,
        ))
        .await
        .expect("list")
        .into_inner();
    let names: Vec<&str> = rest.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["freezer-warm"]);
    assert_eq!(rest.next_page_token, "");

    // Another tenant sees none of it, and cannot name tenant-a.
    let stranger = token(&s.keys, "tenant-b", Role::Operator);
    let hidden = status(
        s.client
            .get_rule(authed(
                pb::GetRuleRequest {
                    tenant: String::new(),
                    name: "freezer-warm".into(),
                },
                &stranger,
            ))
            .await,
    );
    assert_eq!(hidden.code(), Code::NotFound);
    let across = status(
        s.client
            .get_rule(authed(
                pb::GetRuleRequest {
                    tenant: "tenant-a".into(),
                    name: "freezer-warm".into(),
                },
                &stranger,
            ))
            .await,
    );
    assert_eq!(across.code(), Code::PermissionDenied);

    let deleted = s
        .client
        .delete_rule(authed(
            pb::DeleteRuleRequest {
                tenant: String::new(),
                name: "freezer-warm".into(),
            },
            &operator,
        ))
        .await
        .expect("delete")
        .into_inner();
    assert!(deleted.deleted);
    let gone = status(
        s.client
            .get_rule(authed(
                pb::GetRuleRequest {
                    tenant: String::new(),
                    name: "freezer-warm".into(),
                },
                &viewer,
            ))
            .await,
    );
    assert_eq!(gone.code(), Code::NotFound);
}

#[tokio::test]
async fn quotas_bound_rules_and_the_devices_one_rule_watches() {
    let mut s = start().await;
    s.registry
        .set_tenant_quotas(
            "tenant-a",
            &[("rules".into(), 2), ("rule_devices".into(), 2)],
            &[],
        )
        .await
        .expect("quotas");
    let operator = token(&s.keys, "tenant-a", Role::Operator);
    // Three freezers: more than a rule may watch.
    let wide = status(
        s.client
            .create_rule(authed(create(freezer_warm("wide")), &operator))
            .await,
    );
    assert_eq!(wide.code(), Code::ResourceExhausted, "{wide:?}");
    assert!(
        wide.message().contains("rule_devices"),
        "{}",
        wide.message()
    );
    let failure = wide.get_error_details().quota_failure().cloned();
    assert!(failure.is_some(), "a QuotaFailure detail: {wide:?}");

    let one = |name: &str| pb::Rule {
        target: Some(pb::rule::Target::Device("p1".into())),
        ..freezer_warm(name)
    };
    for name in ["r1", "r2"] {
        s.client
            .create_rule(authed(create(one(name)), &operator))
            .await
            .expect("within the quota");
    }
    let third = status(
        s.client
            .create_rule(authed(create(one("r3")), &operator))
            .await,
    );
    assert_eq!(third.code(), Code::ResourceExhausted);
    assert!(third.message().contains("rules"), "{}", third.message());

    // A rule on a device that does not exist is refused plainly.
    let missing = status(
        s.client
            .create_rule(authed(
                create(pb::Rule {
                    target: Some(pb::rule::Target::Device("nobody".into())),
                    ..freezer_warm("r4")
                }),
                &token(&s.keys, "tenant-b", Role::Operator),
            ))
            .await,
    );
    assert_eq!(missing.code(), Code::NotFound);
    assert!(
        missing.message().contains("nobody"),
        "{}",
        missing.message()
    );
}

#[tokio::test]
async fn invalid_rules_are_refused_naming_the_field() {
    let mut s = start().await;
    let operator = token(&s.keys, "tenant-a", Role::Operator);
    let cases = [
        (
            pb::Rule {
                name: "Not A Name".into(),
                ..freezer_warm("x")
            },
            "name",
        ),
        (
            pb::Rule {
                description: "x".repeat(100_000),
                ..freezer_warm("x")
            },
            "description",
        ),
        (
            pb::Rule {
                for_duration: "8d".into(),
                ..freezer_warm("x")
            },
            "for",
        ),
        (
            pb::Rule {
                kind: None,
                ..freezer_warm("x")
            },
            "kind",
        ),
        (
            pb::Rule {
                kind: Some(pb::rule::Kind::Anomaly(pb::AnomalyRule {
                    alpha: 2.0,
                    k: 3.0,
                    warmup: 10,
                })),
                ..freezer_warm("x")
            },
            "anomaly.alpha",
        ),
    ];
    for (rule, field) in cases {
        let refused = status(s.client.create_rule(authed(create(rule), &operator)).await);
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{field}: {refused:?}"
        );
        let violations = refused
            .get_error_details()
            .bad_request()
            .map(|b| b.field_violations.clone())
            .unwrap_or_default();
        assert_eq!(
            violations.first().map(|v| v.field.as_str()),
            Some(field),
            "{refused:?}"
        );
    }
    let empty = status(
        s.client
            .create_rule(authed(pb::CreateRuleRequest { rule: None }, &operator))
            .await,
    );
    assert_eq!(empty.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn rule_targets_follow_device_changes_and_rules_without_rescanning_otherwise() {
    let s = start().await;
    let admin = token(&s.keys, "tenant-a", Role::Admin);
    let mut client = s.client.clone();
    client
        .create_rule(authed(create(freezer_warm("warm")), &admin))
        .await
        .expect("CreateRule");
    let targets = |all: Vec<(tributary_rules::Rule, Vec<String>)>| -> Vec<(String, Vec<String>)> {
        all.into_iter().map(|(r, d)| (r.name, d)).collect()
    };
    let first = targets(s.registry.rules_with_targets().await.unwrap());
    assert_eq!(
        first,
        [("warm".into(), vec!["f1".into(), "f2".into(), "f3".into()])]
    );
    assert_eq!(
        targets(s.registry.rules_with_targets().await.unwrap()),
        first,
        "unchanged"
    );
    // A new freezer is watched at the next read; a pump that becomes a
    // freezer too; a deleted one no longer.
    s.registry
        .create_device(NewDevice {
            tenant: "tenant-a".into(),
            id: "f4".into(),
            labels: BTreeMap::from([("kind".into(), "freezer".into())]),
            metadata: BTreeMap::new(),
            issue_token: false,
        })
        .await
        .expect("device");
    s.registry
        .delete_device("tenant-a", "f1")
        .await
        .expect("delete");
    let after = targets(s.registry.rules_with_targets().await.unwrap());
    assert_eq!(
        after,
        [("warm".into(), vec!["f2".into(), "f3".into(), "f4".into()])]
    );
    // A second rule is resolved at once.
    let mut pumps = freezer_warm("pumps");
    pumps.target = Some(pb::rule::Target::Selector("kind=pump".into()));
    client
        .create_rule(authed(create(pumps), &admin))
        .await
        .expect("CreateRule");
    let both = targets(s.registry.rules_with_targets().await.unwrap());
    assert_eq!(
        both,
        [
            ("pumps".into(), vec!["p1".into()]),
            ("warm".into(), vec!["f2".into(), "f3".into(), "f4".into()])
        ]
    );
}
