//! `RemoteDirectory` over a real `DirectoryGrpc` socket, invalidated by
//! registry events that travel through a device-events log
//! (`publish_events` → `EmbeddedLog` → `tail_events`): what a frontend of
//! distributed mode relies on.

mod common;

use common::{device_with_token, disable_and_wait_refused, labels, within};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, oneshot};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tonic::{Code, Request};
use tributary_auth::{JwtKeys, OperatorClaims, Role};
use tributary_core::directory::{
    Authenticator, DeviceCatalog, DirectoryError, PresenceInfo, PresenceSink, Principal,
};
use tributary_core::events::{DEVICE_EVENTS_TOPIC, RegistryEvent};
use tributary_core::selector::Selector;
use tributary_log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use tributary_log::{Log, Record};
use tributary_proto::v1 as pb;
use tributary_proto::v1::directory_service_client::DirectoryServiceClient;
use tributary_registry::events::{publish_events, tail_events};
use tributary_registry::{
    CredentialKind, DirectoryConfig, DirectoryGrpc, EmbeddedRegistryStore, NewApplication,
    NewCertificate, NewTenant, NewToken, Registry, RegistryConfig, RemoteConfig, RemoteDirectory,
    TenantSettings,
};

/// How fast a change must reach the directory.
const INVALIDATION_DEADLINE: Duration = Duration::from_secs(1);

/// A registry process (store, `DirectoryGrpc`, event publisher) and what a
/// frontend process holds (an event tail and a `RemoteDirectory`).
struct Fixture {
    _dir: TempDir,
    keys: JwtKeys,
    registry: Arc<Registry>,
    log: Arc<EmbeddedLog>,
    addr: SocketAddr,
    stop_server: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
    _stop_publisher: oneshot::Sender<()>,
    directory: RemoteDirectory,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedRegistryStore::open(&dir.path().join("registry.redb")).expect("store");
    let registry = Arc::new(Registry::new(store, RegistryConfig::default()));
    for (name, auto_provision) in [("open", true), ("closed", false)] {
        registry
            .create_tenant(NewTenant {
                name: name.into(),
                display_name: String::new(),
                settings: TenantSettings {
                    auto_provision,
                    device_tag: "host".into(),
                    quotas: Default::default(),
                    retention: Default::default(),
                    lwm2m_metrics: Default::default(),
                },
            })
            .await
            .expect("tenant");
    }
    let keys = JwtKeys::from_secret(&[42u8; 32]).expect("keys");

    let log = EmbeddedLog::open(
        dir.path().join("device-events"),
        EmbeddedLogConfig::new(DEVICE_EVENTS_TOPIC, 2),
    )
    .await
    .expect("log");
    let (stop_publisher, stopped) = oneshot::channel::<()>();
    tokio::spawn(publish_events(
        Arc::clone(&registry),
        log.clone() as Arc<dyn Log>,
        async move {
            let _ = stopped.await;
        },
    ));

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = DirectoryGrpc::new(Arc::clone(&registry), keys.clone()).server();
    let (stop_server, stop) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                let _ = stop.await;
            })
            .await
            .expect("serve");
    });

    let events = tail_events(log.clone() as Arc<dyn Log>);
    let token = keys.service_token("test-frontend").expect("service token");
    let directory = remote(addr, token, events);
    Fixture {
        _dir: dir,
        keys,
        registry,
        log,
        addr,
        stop_server: Some(stop_server),
        server,
        _stop_publisher: stop_publisher,
        directory,
    }
}

fn remote(
    addr: SocketAddr,
    token: String,
    events: broadcast::Receiver<RegistryEvent>,
) -> RemoteDirectory {
    RemoteDirectory::connect_with(
        &format!("http://{addr}"),
        token,
        events,
        DirectoryConfig::default(),
        RemoteConfig {
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_secs(2),
            ..RemoteConfig::default()
        },
    )
    .expect("connect")
}

fn operator_token(keys: &JwtKeys, tenant: &str, role: Role) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    keys.issue(&OperatorClaims {
        sub: "someone".into(),
        tenant: tenant.into(),
        role,
        iat: now,
        exp: now + 600,
    })
    .expect("issue")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_certificates_and_applications_authenticate_over_grpc() {
    let f = fixture().await;
    let secret = device_with_token(&f.registry, "open", "pump-1").await;
    assert_eq!(
        f.directory.authenticate(&secret).await,
        Ok(Principal::Device {
            tenant: "open".into(),
            device: "pump-1".into()
        })
    );
    let ingest = f
        .registry
        .issue_token(NewToken {
            tenant: "open".into(),
            kind: CredentialKind::TenantIngestToken,
            device: None,
            name: "agent".into(),
            ttl: None,
        })
        .await
        .expect("ingest token");
    assert_eq!(
        f.directory.authenticate(&ingest.secret).await,
        Ok(Principal::TenantIngest {
            tenant: "open".into(),
            credential_id: ingest.credential.id.clone()
        })
    );

    for wrong in ["tbd_nope", "", "Bearer x", &"x".repeat(10_000)] {
        assert_eq!(
            f.directory.authenticate(wrong).await,
            Err(DirectoryError::Unauthenticated),
            "{wrong:.20}"
        );
    }

    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "open");
    let cert = params
        .self_signed(&rcgen::KeyPair::generate().expect("key"))
        .expect("certificate");
    let fingerprint = {
        use sha2::Digest as _;
        tributary_registry::format_fingerprint(&sha2::Sha256::digest(cert.der()).into())
    };
    f.registry
        .register_certificate(NewCertificate {
            tenant: "open".into(),
            device: "pump-1".into(),
            certificate_pem: cert.pem(),
            name: "cert".into(),
            ttl: None,
        })
        .await
        .expect("certificate");
    assert_eq!(
        f.directory.authenticate_certificate(&fingerprint).await,
        Ok(Principal::Device {
            tenant: "open".into(),
            device: "pump-1".into()
        })
    );
    assert_eq!(
        f.directory.authenticate(&fingerprint).await,
        Err(DirectoryError::Unauthenticated),
        "a certificate is not a token"
    );
    assert_eq!(
        f.directory.authenticate_certificate(&"cd".repeat(32)).await,
        Err(DirectoryError::Unauthenticated)
    );

    let app = f
        .registry
        .issue_application(NewApplication {
            tenant: "open".into(),
            name: "dashboard".into(),
            publish: vec!["devices/+/commands/#".into()],
            subscribe: vec![],
            ttl: None,
        })
        .await
        .expect("application");
    let application = f
        .directory
        .authenticate_application("dashboard", &app.secret)
        .await
        .expect("application authenticates");
    assert_eq!(application.tenant, "open");
    assert_eq!(application.credential_id, app.credential.id);
    assert_eq!(application.grants.publish, ["devices/+/commands/#"]);
    assert!(
        application.grants.subscribe.is_empty(),
        "no subscribe filters grant no subscriptions, not `#`"
    );
    assert_eq!(
        f.directory
            .authenticate_application("other-name", &app.secret)
            .await,
        Err(DirectoryError::Unauthenticated),
        "a token issued for another name"
    );
    assert_eq!(
        f.directory.authenticate(&app.secret).await,
        Err(DirectoryError::Unauthenticated),
        "an application token is not a device token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_the_cache_through_the_device_events_log_within_a_second() {
    let f = fixture().await;
    let secret = device_with_token(&f.registry, "open", "pump-1").await;
    let principal = Principal::Device {
        tenant: "open".into(),
        device: "pump-1".into(),
    };
    // Warm the caches until both the credential and the device are cached
    // (the tail's first resync may clear them once).
    within(Duration::from_secs(5), "the caches warm up", || async {
        assert_eq!(
            f.directory.authenticate(&secret).await,
            Ok(principal.clone())
        );
        let (credentials, devices, _) = f.directory.cache_sizes();
        credentials == 1 && devices == 1
    })
    .await;

    disable_and_wait_refused(&f.registry, &f.directory, &secret, INVALIDATION_DEADLINE).await;
    let refused = f
        .directory
        .ensure_device("open", "pump-1", &BTreeMap::new())
        .await;
    match refused {
        Err(DirectoryError::Forbidden(message)) => {
            assert!(message.contains("disabled"), "{message}");
        }
        other => panic!("expected Forbidden, got {other:?}"),
    }

    f.registry
        .set_disabled("open", "pump-1", false)
        .await
        .expect("enable");
    within(
        INVALIDATION_DEADLINE,
        "authenticate accepts the re-enabled device",
        || async { f.directory.authenticate(&secret).await.is_ok() },
    )
    .await;

    // A revocation, also through the log.
    let second = f
        .registry
        .issue_token(NewToken {
            tenant: "open".into(),
            kind: CredentialKind::DeviceToken,
            device: Some("pump-1".into()),
            name: "second".into(),
            ttl: None,
        })
        .await
        .expect("second token");
    assert!(f.directory.authenticate(&second.secret).await.is_ok());
    f.registry
        .revoke_token("open", &second.credential.id)
        .await
        .expect("revoke");
    within(
        INVALIDATION_DEADLINE,
        "authenticate refuses the revoked token",
        || async {
            f.directory.authenticate(&second.secret).await == Err(DirectoryError::Unauthenticated)
        },
    )
    .await;
    assert!(
        f.directory.authenticate(&secret).await.is_ok(),
        "the device's other token still works"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_lookup_and_selection_by_label() {
    let f = fixture().await;
    let policy = f.directory.tenant_policy("open").await.expect("policy");
    assert!(policy.auto_provision);
    assert_eq!(policy.device_tag, "host");
    assert!(matches!(
        f.directory.tenant_policy("missing").await,
        Err(DirectoryError::NotFound(_))
    ));

    for (id, fleet) in [("a", "west"), ("b", "east"), ("c", "west")] {
        f.directory
            .ensure_device("open", id, &labels(&[("fleet", fleet)]))
            .await
            .expect("auto-provisioned");
    }
    f.directory
        .ensure_device("open", "b", &labels(&[("rack", "r1")]))
        .await
        .expect("labels merged");
    assert_eq!(
        f.registry
            .device("open", "b")
            .await
            .expect("device")
            .record
            .labels,
        labels(&[("fleet", "east"), ("rack", "r1")])
    );

    let west = f
        .directory
        .select("open", &Selector::parse("fleet=west").expect("selector"))
        .await
        .expect("select");
    let ids: Vec<&str> = west.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["a", "c"]);
    assert_eq!(west[0].labels, labels(&[("fleet", "west")]));
    let racked = f
        .directory
        .select(
            "open",
            &Selector::parse("rack,fleet!=west").expect("selector"),
        )
        .await
        .expect("select");
    assert_eq!(racked.len(), 1);
    assert_eq!(racked[0].id, "b");

    let info = f
        .directory
        .device("open", "a")
        .await
        .expect("lookup")
        .expect("exists");
    assert_eq!(info.labels, labels(&[("fleet", "west")]));
    assert!(!info.disabled);
    assert_eq!(
        f.directory.device("open", "zzz").await.expect("lookup"),
        None
    );

    let refused = f
        .directory
        .ensure_device("closed", "new-1", &BTreeMap::new())
        .await;
    assert!(
        matches!(refused, Err(DirectoryError::NotFound(_))),
        "{refused:?}"
    );
    let bad = f
        .directory
        .ensure_device("open", "bad/id", &BTreeMap::new())
        .await;
    assert!(matches!(bad, Err(DirectoryError::Invalid(_))), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_round_trips() {
    let f = fixture().await;
    device_with_token(&f.registry, "open", "pump-1").await;
    assert_eq!(
        f.directory.presence("open", "pump-1").await,
        Ok(None),
        "never seen"
    );
    f.directory
        .report("open", "pump-1", true, 1_000, "mqtt-0")
        .await
        .expect("report");
    assert_eq!(
        f.directory.presence("open", "pump-1").await,
        Ok(Some(PresenceInfo {
            online: true,
            last_seen_ns: 1_000,
            frontend: "mqtt-0".into()
        }))
    );
    f.directory
        .report("open", "pump-1", false, 2_000, "mqtt-0")
        .await
        .expect("report");
    let offline = f
        .directory
        .presence("open", "pump-1")
        .await
        .expect("presence")
        .expect("seen");
    assert!(!offline.online && offline.last_seen_ns == 2_000);

    assert_eq!(f.directory.presence("open", "nobody").await, Ok(None));
    let unknown = f
        .directory
        .report("open", "nobody", true, 0, "mqtt-0")
        .await;
    assert!(
        matches!(unknown, Err(DirectoryError::NotFound(_))),
        "{unknown:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_service_tokens_may_call_the_directory() {
    let f = fixture().await;
    let secret = device_with_token(&f.registry, "open", "pump-1").await;
    let mut client = DirectoryServiceClient::connect(format!("http://{}", f.addr))
        .await
        .expect("client");
    let call = |token: Option<String>| {
        let mut request = Request::new(pb::AuthenticateTokenRequest {
            token: secret.clone(),
        });
        if let Some(token) = token {
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("ascii"),
            );
        }
        request
    };
    let service = f.keys.service_token("test").expect("service token");
    assert!(client.authenticate_token(call(Some(service))).await.is_ok());
    for (token, expected) in [
        (
            Some(operator_token(&f.keys, "open", Role::Admin)),
            Code::PermissionDenied,
        ),
        (
            Some(operator_token(&f.keys, "", Role::Operator)),
            Code::PermissionDenied,
        ),
        (
            Some(operator_token(&f.keys, "open", Role::Viewer)),
            Code::PermissionDenied,
        ),
        (
            Some(
                JwtKeys::from_secret(&[7u8; 32])
                    .expect("keys")
                    .service_token("impostor")
                    .expect("token"),
            ),
            Code::Unauthenticated,
        ),
        (Some("garbage".into()), Code::Unauthenticated),
        (None, Code::Unauthenticated),
    ] {
        let status = client
            .authenticate_token(call(token.clone()))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), expected, "{token:?}: {status:?}");
    }
    // The calls the processors make, one of which hands out webhook
    // secrets, refuse a tenant's admin just the same.
    let tenant_admin = operator_token(&f.keys, "open", Role::Admin);
    fn authed<T>(m: T, token: &str) -> Request<T> {
        let mut r = Request::new(m);
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
        r
    }
    let webhooks = client
        .list_all_webhooks(authed(pb::ListAllWebhooksRequest {}, &tenant_admin))
        .await
        .expect_err("refused");
    assert_eq!(webhooks.code(), Code::PermissionDenied);
    let silences = client
        .list_all_silences(authed(pb::ListAllSilencesRequest {}, &tenant_admin))
        .await
        .expect_err("refused");
    assert_eq!(silences.code(), Code::PermissionDenied);
    let mut request = Request::new(pb::ListRuleTargetsRequest {});
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {tenant_admin}").parse().expect("ascii"),
    );
    let rules = client
        .list_rule_targets(request)
        .await
        .expect_err("refused");
    assert_eq!(rules.code(), Code::PermissionDenied);

    // A directory holding a refused token reports the registry unavailable,
    // never the device's credential as invalid.
    let tenant_admin = remote(
        f.addr,
        operator_token(&f.keys, "open", Role::Admin),
        tail_events(f.log.clone() as Arc<dyn Log>),
    );
    let answer = tenant_admin.authenticate(&secret).await;
    assert!(
        matches!(answer, Err(DirectoryError::Unavailable(_))),
        "{answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_registry_is_unavailable_quickly() {
    let mut f = fixture().await;
    let secret = device_with_token(&f.registry, "open", "pump-1").await;
    assert!(f.directory.authenticate(&secret).await.is_ok());

    f.stop_server
        .take()
        .expect("running")
        .send(())
        .expect("stop");
    tokio::time::timeout(Duration::from_secs(10), &mut f.server)
        .await
        .expect("the server stops")
        .expect("server task");

    // An uncached lookup needs the registry.
    let started = Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        f.directory.authenticate("tbd_not-cached"),
    )
    .await
    .expect("answers instead of hanging");
    assert!(
        matches!(answer, Err(DirectoryError::Unavailable(_))),
        "{answer:?}"
    );
    eprintln!("unavailable after {:?}", started.elapsed());
    let presence = f.directory.presence("open", "pump-1").await;
    assert!(
        matches!(presence, Err(DirectoryError::Unavailable(_))),
        "{presence:?}"
    );

    // A registry that never was there.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let nowhere = closed.local_addr().expect("addr");
    drop(closed);
    let lonely = remote(
        nowhere,
        f.keys.service_token("test").expect("token"),
        broadcast::channel(1).1,
    );
    let answer = tokio::time::timeout(Duration::from_secs(10), lonely.authenticate(&secret))
        .await
        .expect("answers instead of hanging");
    assert!(
        matches!(answer, Err(DirectoryError::Unavailable(_))),
        "{answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_resyncs_on_open_and_skips_garbage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = EmbeddedLog::open(dir.path(), EmbeddedLogConfig::new(DEVICE_EVENTS_TOPIC, 1))
        .await
        .expect("log");
    let mut events = tail_events(log.clone() as Arc<dyn Log>);
    let first = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("an event")
        .expect("open channel");
    assert_eq!(
        first,
        RegistryEvent::Resync,
        "announced once the tail reads"
    );

    let changed = RegistryEvent::DeviceChanged {
        tenant: "open".into(),
        device: "pump-1".into(),
        disabled: true,
    };
    for value in [
        Bytes::from_static(&[0xff, 0xff, 0xff]),
        Bytes::from(changed.encode()),
        // A well-formed event of a kind this version does not know.
        Bytes::from_static(&[0x9a, 0x06, 0x00]),
    ] {
        log.append(Record {
            key: Bytes::from_static(b"open/pump-1"),
            value,
            headers: Vec::new(),
            timestamp_ms: 0,
        })
        .await
        .expect("append");
    }
    let mut received = Vec::new();
    while received.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("an event")
            .expect("open channel");
        received.push(event);
    }
    assert_eq!(received, [changed, RegistryEvent::Resync]);
}

/// A fleet reconnecting at once through a frontend whose registry is
/// remote: 300 cold token lookups and 300 presence reports made at once go
/// to the registry in a few batch calls, not one round trip per device;
/// each device gets its own answer (an unknown token its own refusal), and
/// presence is right for every device afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_fleet_is_looked_up_and_reported_in_batches() {
    const N: usize = 300;
    let f = fixture().await;
    let mut secrets = Vec::with_capacity(N);
    for i in 0..N {
        secrets.push(device_with_token(&f.registry, "open", &format!("fleet-{i}")).await);
    }
    let before = f.directory.batch_stats();
    let lookups = secrets
        .iter()
        .map(String::as_str)
        .chain(["not-a-token"])
        .map(|s| f.directory.authenticate(s));
    let answers = futures::future::join_all(lookups).await;
    for (i, answer) in answers.iter().take(N).enumerate() {
        assert_eq!(
            answer,
            &Ok(Principal::Device {
                tenant: "open".into(),
                device: format!("fleet-{i}")
            })
        );
    }
    assert_eq!(answers[N], Err(DirectoryError::Unauthenticated));

    let reports = (0..N).map(|i| {
        let device = format!("fleet-{i}");
        let directory = &f.directory;
        async move {
            directory
                .report("open", &device, true, 5_000, "mqtt-7")
                .await
        }
    });
    for r in futures::future::join_all(reports).await {
        r.expect("report");
    }
    let (tokens, presence) = f.directory.batch_stats();
    let token_calls = tokens.batches - before.0.batches;
    let report_calls = presence.batches - before.1.batches;
    assert_eq!(tokens.requests - before.0.requests, N as u64 + 1);
    assert_eq!(presence.requests - before.1.requests, N as u64);
    assert!(
        token_calls <= (N / 10) as u64 && report_calls <= (N / 10) as u64,
        "{N} devices took {token_calls} token calls and {report_calls} presence calls"
    );
    for i in 0..N {
        let p = f
            .directory
            .presence("open", &format!("fleet-{i}"))
            .await
            .expect("presence")
            .expect("seen");
        assert!(p.online && p.frontend == "mqtt-7", "fleet-{i}: {p:?}");
    }
}

/// The batch calls are bounded: more than 1,024 items in one call is
/// refused as a whole, with the directory's INVALID detail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_call_over_the_limit_is_refused() {
    let f = fixture().await;
    let mut client = DirectoryServiceClient::connect(format!("http://{}", f.addr))
        .await
        .expect("client");
    let service = f.keys.service_token("test").expect("service token");
    let mut request = Request::new(pb::AuthenticateTokensRequest {
        tokens: vec!["x".to_string(); 1_025],
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {service}").parse().expect("ascii"),
    );
    let status = client
        .authenticate_tokens(request)
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("at most 1024"), "{status:?}");
    // Only services may call them: a tenant's admin is refused.
    let mut request = Request::new(pb::AuthenticateTokensRequest {
        tokens: vec!["x".to_string()],
    });
    let tenant_admin = operator_token(&f.keys, "open", Role::Admin);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {tenant_admin}").parse().expect("ascii"),
    );
    let status = client
        .authenticate_tokens(request)
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let mut request = Request::new(pb::ReportPresencesRequest {
        reports: vec![pb::ReportPresenceRequest::default(); 1_025],
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {service}").parse().expect("ascii"),
    );
    let status = client.report_presences(request).await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}

/// What the batches carried is on the metrics endpoint of the process that
/// holds the directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_calls_are_counted_in_the_metrics() {
    let f = fixture().await;
    let secret = device_with_token(&f.registry, "open", "pump-1").await;
    let token = f
        .keys
        .service_token("test-frontend")
        .expect("service token");
    let directory = Arc::new(remote(
        f.addr,
        token,
        tail_events(f.log.clone() as Arc<dyn Log>),
    ));
    let mut metrics = prometheus_client::registry::Registry::default();
    directory.register_metrics(&mut metrics);
    let (a, b) = tokio::join!(
        directory.authenticate(&secret),
        directory.authenticate("not-a-token")
    );
    assert!(a.is_ok() && b.is_err(), "{a:?} {b:?}");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &metrics).expect("encode");
    assert!(
        text.contains("tributary_directory_batched_requests_total{call=\"authenticate_tokens\"} 2"),
        "{text}"
    );
    let calls = text
        .lines()
        .find(|l| {
            l.starts_with("tributary_directory_batch_calls_total{call=\"authenticate_tokens\"}")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(matches!(calls, Some(1 | 2)), "{text}");
}

/// A registry older than the batch calls: it answers them UNIMPLEMENTED,
/// as tonic does for a method it does not know.
#[derive(Clone)]
struct OlderRegistry {
    inner: tributary_proto::v1::directory_service_server::DirectoryServiceServer<DirectoryGrpc>,
    batch_calls: Arc<std::sync::atomic::AtomicUsize>,
}

impl tonic::server::NamedService for OlderRegistry {
    const NAME: &'static str = "tributary.v1.DirectoryService";
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for OlderRegistry {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let path = request.uri().path();
        if path.ends_with("/AuthenticateTokens") || path.ends_with("/ReportPresences") {
            self.batch_calls
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return Box::pin(async {
                Ok(tonic::Status::unimplemented("unknown method").into_http())
            });
        }
        Box::pin(self.inner.call(request))
    }
}

/// A frontend newer than its registry (a rolling upgrade): the first batch
/// call is refused UNIMPLEMENTED, and from then on the directory makes one
/// call per lookup and report, with the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_an_older_registry_lookups_go_one_call_each() {
    let f = fixture().await;
    let secrets = [
        device_with_token(&f.registry, "open", "old-1").await,
        device_with_token(&f.registry, "open", "old-2").await,
    ];
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let batch_calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let older = OlderRegistry {
        inner: DirectoryGrpc::new(Arc::clone(&f.registry), f.keys.clone()).server(),
        batch_calls: batch_calls.clone(),
    };
    tokio::spawn(
        Server::builder()
            .add_service(older)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let token = f
        .keys
        .service_token("test-frontend")
        .expect("service token");
    let directory = remote(addr, token, tail_events(f.log.clone() as Arc<dyn Log>));
    for round in 0..2 {
        let (a, b, c) = tokio::join!(
            directory.authenticate(&secrets[0]),
            directory.authenticate(&secrets[1]),
            directory.authenticate("not-a-token"),
        );
        assert_eq!(
            a,
            Ok(Principal::Device {
                tenant: "open".into(),
                device: "old-1".into()
            }),
            "round {round}"
        );
        assert!(matches!(b, Ok(Principal::Device { ref device, .. }) if device == "old-2"));
        assert_eq!(c, Err(DirectoryError::Unauthenticated));
    }
    directory
        .report("open", "old-1", true, 7_000, "mqtt-old")
        .await
        .expect("report");
    let seen = f
        .registry
        .presence("open", "old-1")
        .await
        .expect("presence");
    assert!(seen.online && seen.frontend == "mqtt-old", "{seen:?}");
    // Refused once (twice if two batches raced), then never tried again.
    let tried = batch_calls.load(std::sync::atomic::Ordering::SeqCst);
    assert!((1..=2).contains(&tried), "{tried} batch calls");
}
