//! The gRPC service over a real TCP socket, called with the generated client.

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
use tributary_proto::v1::registry_service_client::RegistryServiceClient;
use tributary_registry::{
    EmbeddedRegistryStore, NewTenant, Registry, RegistryConfig, RegistryGrpc, TenantSettings,
};

struct TestServer {
    _dir: TempDir,
    data_dir: std::path::PathBuf,
    keys: JwtKeys,
    registry: Arc<Registry>,
    client: RegistryServiceClient<Channel>,
    _serve: tokio::task::JoinHandle<()>,
}

async fn start() -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let store = EmbeddedRegistryStore::open(&data_dir.join("registry.redb")).expect("open store");
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
    let keys = JwtKeys::from_secret(&[42u8; 32]).expect("keys");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let service = RegistryGrpc::new(Arc::clone(&registry), keys.clone()).server();
    let serve = tokio::spawn(async move {
        Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .expect("serve");
    });
    let client = RegistryServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    TestServer {
        _dir: dir,
        data_dir,
        keys,
        registry,
        client,
        _serve: serve,
    }
}

fn token(keys: &JwtKeys, tenant: &str, role: Role) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = OperatorClaims {
        sub: format!("{role:?}@{tenant}"),
        tenant: tenant.into(),
        role,
        iat: now,
        exp: now + 600,
    };
    keys.issue(&claims).expect("issue")
}

fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut req = Request::new(message);
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    req
}

fn create_device(tenant: &str, id: &str) -> pb::CreateDeviceRequest {
    pb::CreateDeviceRequest {
        tenant: tenant.into(),
        id: id.into(),
        ..Default::default()
    }
}

fn code<T: std::fmt::Debug>(result: Result<T, Status>) -> Code {
    match result {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn admins_manage_tenants_and_others_may_not() {
    let mut s = start().await;
    let admin = token(&s.keys, "tenant-a", Role::Admin);
    let settings = pb::TenantSettings {
        auto_provision: false,
        device_tag: String::new(),
        quotas: [("connections".to_owned(), 10)].into(),
        retention: [("raw".to_owned(), "30d".to_owned())].into(),
        lwm2m_metrics: [("3442/1120".to_owned(), "flow_rate".to_owned())].into(),
    };
    let created = s
        .client
        .create_tenant(authed(
            pb::CreateTenantRequest {
                name: "globex".into(),
                display_name: "Globex".into(),
                settings: Some(settings),
            },
            &admin,
        ))
        .await
        .expect("admin creates a tenant")
        .into_inner();
    assert_eq!(created.name, "globex");
    let created_settings = created.settings.expect("settings");
    assert!(!created_settings.auto_provision);
    assert_eq!(created_settings.quotas.get("connections"), Some(&10));
    assert_eq!(
        created_settings.retention.get("raw").map(String::as_str),
        Some("30d")
    );

    // Retention: an admin sets and clears it; a tenant's own operator may
    // not; a retention outside 1h..20y or an unknown kind is refused.
    let keep = |set: &[(&str, &str)], clear: &[&str]| pb::SetTenantRetentionRequest {
        tenant: "globex".into(),
        set: set
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        clear: clear.iter().map(|c| (*c).to_owned()).collect(),
    };
    let updated = s
        .client
        .set_tenant_retention(authed(
            keep(&[("1m", "365d"), ("1h", "forever")], &["raw"]),
            &admin,
        ))
        .await
        .expect("admin sets retention")
        .into_inner();
    let retention = updated.settings.expect("settings").retention;
    assert_eq!(retention.get("1m").map(String::as_str), Some("1y"));
    assert_eq!(retention.get("1h").map(String::as_str), Some("forever"));
    assert_eq!(retention.get("raw"), None, "cleared: the default again");
    let globex_operator = token(&s.keys, "globex", Role::Operator);
    let status = s
        .client
        .set_tenant_retention(authed(keep(&[("raw", "20y")], &[]), &globex_operator))
        .await
        .expect_err("an operator may not set its tenant's retention");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    for (kind, value, says) in [
        ("raw", "10m", "1h to 20y"),
        ("7m", "1d", "rollup width"),
        ("rwa", "1d", "raw"),
    ] {
        let status = s
            .client
            .set_tenant_retention(authed(keep(&[(kind, value)], &[]), &admin))
            .await
            .expect_err("invalid retention");
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{kind}={value}"
        );
        assert!(status.message().contains(says), "{}", status.message());
    }

    // Quotas: an admin sets and clears them; a tenant's own operator may
    // not raise them; unknown names are refused, naming the known ones.
    let set = |set: &[(&str, u64)], clear: &[&str]| pb::SetTenantQuotasRequest {
        tenant: "globex".into(),
        set: set.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        clear: clear.iter().map(|c| (*c).to_owned()).collect(),
    };
    let updated = s
        .client
        .set_tenant_quotas(authed(
            set(&[("messages_per_sec", 50)], &["connections"]),
            &admin,
        ))
        .await
        .expect("admin sets quotas")
        .into_inner();
    let quotas = updated.settings.expect("settings").quotas;
    assert_eq!(quotas.get("messages_per_sec"), Some(&50));
    assert_eq!(
        quotas.get("connections"),
        None,
        "cleared: the default again"
    );
    let operator = token(&s.keys, "globex", Role::Operator);
    let status = s
        .client
        .set_tenant_quotas(authed(set(&[("connections", 1_000_000)], &[]), &operator))
        .await
        .expect_err("an operator may not set its tenant's quotas");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    let status = s
        .client
        .set_tenant_quotas(authed(set(&[("conections", 1)], &[]), &admin))
        .await
        .expect_err("unknown quota");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("connections"),
        "{}",
        status.message()
    );
    assert_eq!(
        created_settings.device_tag, "device",
        "an empty device tag means `device`"
    );

    let again = s
        .client
        .create_tenant(authed(
            pb::CreateTenantRequest {
                name: "globex".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await;
    assert_eq!(code(again), Code::AlreadyExists);

    let listed = s
        .client
        .list_tenants(authed(pb::ListTenantsRequest {}, &admin))
        .await
        .expect("list")
        .into_inner();
    let names: Vec<String> = listed.tenants.into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["globex", "tenant-a", "tenant-b"]);

    let operator = token(&s.keys, "tenant-a", Role::Operator);
    let denied = s
        .client
        .create_tenant(authed(
            pb::CreateTenantRequest {
                name: "x".into(),
                ..Default::default()
            },
            &operator,
        ))
        .await;
    assert_eq!(code(denied), Code::PermissionDenied);
    assert_eq!(
        code(
            s.client
                .list_tenants(authed(pb::ListTenantsRequest {}, &operator))
                .await
        ),
        Code::PermissionDenied
    );

    // An admin may act in any tenant.
    let d = s
        .client
        .create_device(authed(create_device("globex", "gx-1"), &admin))
        .await
        .expect("admin in another tenant");
    assert_eq!(d.into_inner().device.expect("device").tenant, "globex");
}

#[tokio::test]
async fn an_operator_cannot_touch_another_tenant() {
    let mut s = start().await;
    let operator_a = token(&s.keys, "tenant-a", Role::Operator);
    let operator_b = token(&s.keys, "tenant-b", Role::Operator);
    s.client
        .create_device(authed(create_device("tenant-b", "b-1"), &operator_b))
        .await
        .expect("b's own device");

    let c = &mut s.client;
    assert_eq!(
        code(
            c.create_device(authed(create_device("tenant-b", "a-1"), &operator_a))
                .await
        ),
        Code::PermissionDenied
    );
    let get = pb::GetDeviceRequest {
        tenant: "tenant-b".into(),
        device: "b-1".into(),
    };
    assert_eq!(
        code(c.get_device(authed(get, &operator_a)).await),
        Code::PermissionDenied
    );
    let disable = pb::DeviceRef {
        tenant: "tenant-b".into(),
        device: "b-1".into(),
    };
    assert_eq!(
        code(c.disable_device(authed(disable.clone(), &operator_a)).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(c.delete_device(authed(disable, &operator_a)).await),
        Code::PermissionDenied
    );
    let list = pb::ListDevicesRequest {
        tenant: "tenant-b".into(),
        ..Default::default()
    };
    assert_eq!(
        code(c.list_devices(authed(list, &operator_a)).await),
        Code::PermissionDenied
    );
    let issue = pb::IssueTokenRequest {
        tenant: "tenant-b".into(),
        kind: pb::CredentialKind::TenantIngestToken.into(),
        ..Default::default()
    };
    assert_eq!(
        code(c.issue_token(authed(issue, &operator_a)).await),
        Code::PermissionDenied
    );

    // An empty tenant means the caller's own: a's operator sees only a's devices.
    let own = c
        .list_devices(authed(pb::ListDevicesRequest::default(), &operator_a))
        .await
        .expect("list own");
    assert!(
        own.into_inner().devices.is_empty(),
        "b's device is invisible to a"
    );
    let b_device = s
        .registry
        .device("tenant-b", "b-1")
        .await
        .expect("still there");
    assert!(
        !b_device.record.disabled,
        "a's failed calls changed nothing"
    );
}

#[tokio::test]
async fn viewers_read_but_do_not_write() {
    let mut s = start().await;
    let operator = token(&s.keys, "tenant-a", Role::Operator);
    let viewer = token(&s.keys, "tenant-a", Role::Viewer);
    s.client
        .create_device(authed(create_device("", "pump-1"), &operator))
        .await
        .expect("operator creates");

    assert_eq!(
        code(
            s.client
                .create_device(authed(create_device("", "pump-2"), &viewer))
                .await
        ),
        Code::PermissionDenied
    );
    let update = pb::UpdateDeviceRequest {
        device: "pump-1".into(),
        ..Default::default()
    };
    assert_eq!(
        code(s.client.update_device(authed(update, &viewer)).await),
        Code::PermissionDenied
    );
    let issue = pb::IssueTokenRequest {
        kind: pb::CredentialKind::DeviceToken.into(),
        device: "pump-1".into(),
        ..Default::default()
    };
    assert_eq!(
        code(s.client.issue_token(authed(issue, &viewer)).await),
        Code::PermissionDenied
    );

    let got = s
        .client
        .get_device(authed(
            pb::GetDeviceRequest {
                tenant: String::new(),
                device: "pump-1".into(),
            },
            &viewer,
        ))
        .await
        .expect("viewer reads")
        .into_inner();
    assert_eq!(got.id, "pump-1");
    let listed = s
        .client
        .list_devices(authed(pb::ListDevicesRequest::default(), &viewer))
        .await
        .expect("viewer lists");
    assert_eq!(listed.into_inner().devices.len(), 1);
    s.client
        .list_tokens(authed(pb::ListTokensRequest::default(), &viewer))
        .await
        .expect("viewer lists tokens");
}

#[tokio::test]
async fn calls_without_a_valid_token_are_unauthenticated() {
    let mut s = start().await;
    let missing = s
        .client
        .list_devices(Request::new(pb::ListDevicesRequest::default()))
        .await;
    assert_eq!(code(missing), Code::Unauthenticated);
    let garbage = s
        .client
        .list_devices(authed(pb::ListDevicesRequest::default(), "not-a-jwt"))
        .await;
    assert_eq!(code(garbage), Code::Unauthenticated);
    let other_key = JwtKeys::from_secret(&[7u8; 32]).expect("keys");
    let forged = s
        .client
        .list_devices(authed(
            pb::ListDevicesRequest::default(),
            &token(&other_key, "tenant-a", Role::Admin),
        ))
        .await;
    assert_eq!(code(forged), Code::Unauthenticated);
}

#[tokio::test]
async fn validation_errors_carry_a_bad_request_field_violation() {
    let mut s = start().await;
    let operator = token(&s.keys, "tenant-a", Role::Operator);
    let status = s
        .client
        .create_device(authed(create_device("", "bad/id"), &operator))
        .await
        .expect_err("invalid id");
    assert_eq!(status.code(), Code::InvalidArgument);
    let details = status.get_error_details();
    let bad_request = details.bad_request().expect("a BadRequest detail");
    assert_eq!(bad_request.field_violations.len(), 1);
    assert_eq!(bad_request.field_violations[0].field, "id");
    assert!(
        bad_request.field_violations[0].description.contains('/'),
        "{:?}",
        bad_request.field_violations[0]
    );

    let mut bad_labels = create_device("", "ok");
    bad_labels.labels.insert("fleet".into(), "a,b".into());
    let status = s
        .client
        .create_device(authed(bad_labels, &operator))
        .await
        .expect_err("invalid label");
    assert_eq!(
        status
            .get_error_details()
            .bad_request()
            .expect("detail")
            .field_violations[0]
            .field,
        "labels"
    );

    let selector = pb::ListDevicesRequest {
        selector: "=x".into(),
        ..Default::default()
    };
    let status = s
        .client
        .list_devices(authed(selector, &operator))
        .await
        .expect_err("invalid selector");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status
            .get_error_details()
            .bad_request()
            .expect("detail")
            .field_violations[0]
            .field,
        "selector"
    );

    let unspecified = pb::IssueTokenRequest {
        device: "ok".into(),
        ..Default::default()
    };
    let status = s
        .client
        .issue_token(authed(unspecified, &operator))
        .await
        .expect_err("no kind");
    assert_eq!(
        status
            .get_error_details()
            .bad_request()
            .expect("detail")
            .field_violations[0]
            .field,
        "kind"
    );

    let missing = pb::GetDeviceRequest {
        tenant: String::new(),
        device: "nobody".into(),
    };
    assert_eq!(
        code(s.client.get_device(authed(missing, &operator)).await),
        Code::NotFound
    );
}

#[tokio::test]
async fn devices_and_tokens_over_the_wire() {
    let mut s = start().await;
    let operator = token(&s.keys, "tenant-a", Role::Operator);
    let c = &mut s.client;

    let mut req = create_device("", "pump-1");
    req.labels.insert("fleet".into(), "west".into());
    req.metadata.insert("serial".into(), "123".into());
    req.issue_token = true;
    let created = c
        .create_device(authed(req, &operator))
        .await
        .expect("create")
        .into_inner();
    let device = created.device.expect("device");
    assert_eq!(
        (device.tenant.as_str(), device.id.as_str()),
        ("tenant-a", "pump-1")
    );
    assert_eq!(device.labels.get("fleet").map(String::as_str), Some("west"));
    let issued = created.token.expect("a token was asked for");
    assert!(issued.token.starts_with("tbd_"));
    let credential = issued.credential.expect("credential");
    assert_eq!(credential.kind, i32::from(pb::CredentialKind::DeviceToken));
    assert_eq!(credential.device, "pump-1");
    assert!(
        s.registry.authenticate(&issued.token).await.is_ok(),
        "the returned secret authenticates"
    );

    assert_eq!(
        code(
            c.create_device(authed(create_device("", "pump-1"), &operator))
                .await
        ),
        Code::AlreadyExists
    );
    c.create_device(authed(create_device("", "pump-2"), &operator))
        .await
        .expect("second device");

    let west = pb::ListDevicesRequest {
        selector: "fleet=west".into(),
        ..Default::default()
    };
    let page = c
        .list_devices(authed(west, &operator))
        .await
        .expect("list")
        .into_inner();
    let ids: Vec<String> = page.devices.into_iter().map(|d| d.id).collect();
    assert_eq!(ids, ["pump-1"]);
    assert!(page.next_page_token.is_empty());

    let first = pb::ListDevicesRequest {
        page_size: 1,
        ..Default::default()
    };
    let page1 = c
        .list_devices(authed(first, &operator))
        .await
        .expect("page 1")
        .into_inner();
    assert_eq!(page1.devices.len(), 1);
    assert!(!page1.next_page_token.is_empty());
    let second = pb::ListDevicesRequest {
        page_size: 1,
        page_token: page1.next_page_token,
        ..Default::default()
    };
    let page2 = c
        .list_devices(authed(second, &operator))
        .await
        .expect("page 2")
        .into_inner();
    assert_eq!(page2.devices[0].id, "pump-2");
    assert!(page2.next_page_token.is_empty(), "the last page says so");
    assert_eq!(
        page2.tenant_devices, 2,
        "the tenant's total comes with a page"
    );

    // An id prefix: the prefix's own device first, then the others with
    // it, a page at a time; nothing past them.
    for id in ["pump", "pump-10", "pumpkin", "valve-1"] {
        c.create_device(authed(create_device("", id), &operator))
            .await
            .expect("device");
    }
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = c
            .list_devices(authed(
                pb::ListDevicesRequest {
                    id_prefix: "pump".into(),
                    page_size: 2,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
                &operator,
            ))
            .await
            .expect("a page by prefix")
            .into_inner();
        assert!(page.devices.len() <= 2);
        assert_eq!(page.tenant_devices, 6);
        seen.extend(page.devices.into_iter().map(|d| d.id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen, ["pump", "pump-1", "pump-10", "pump-2", "pumpkin"]);
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = c
            .list_devices(authed(
                pb::ListDevicesRequest {
                    id_prefix: "pump".into(),
                    descending: true,
                    page_size: 2,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
                &operator,
            ))
            .await
            .expect("a descending page by prefix")
            .into_inner();
        seen.extend(page.devices.into_iter().map(|d| d.id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(
        seen,
        ["pumpkin", "pump-2", "pump-10", "pump-1", "pump"],
        "descending: the same devices, greatest id first"
    );
    let narrow = pb::ListDevicesRequest {
        id_prefix: "pump-1".into(),
        selector: "fleet=west".into(),
        ..Default::default()
    };
    let page = c
        .list_devices(authed(narrow, &operator))
        .await
        .expect("prefix and selector")
        .into_inner();
    let ids: Vec<String> = page.devices.into_iter().map(|d| d.id).collect();
    assert_eq!(ids, ["pump-1"]);
    let bad = pb::ListDevicesRequest {
        id_prefix: "pump/".into(),
        ..Default::default()
    };
    assert_eq!(
        code(c.list_devices(authed(bad, &operator)).await),
        Code::InvalidArgument
    );
    let foreign_token = pb::ListDevicesRequest {
        id_prefix: "valve".into(),
        page_token: "pump-1".into(),
        ..Default::default()
    };
    assert_eq!(
        code(c.list_devices(authed(foreign_token, &operator)).await),
        Code::InvalidArgument,
        "a page token from outside the prefix"
    );
    for id in ["pump", "pump-10", "pumpkin", "valve-1"] {
        c.delete_device(authed(
            pb::DeviceRef {
                tenant: String::new(),
                device: id.into(),
            },
            &operator,
        ))
        .await
        .expect("delete");
    }

    let update = pb::UpdateDeviceRequest {
        device: "pump-1".into(),
        set_labels: [("region".to_string(), "eu".to_string())].into(),
        remove_metadata: vec!["serial".into()],
        ..Default::default()
    };
    let updated = c
        .update_device(authed(update, &operator))
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.labels.len(), 2);
    assert!(updated.metadata.is_empty());

    let pump = pb::DeviceRef {
        tenant: String::new(),
        device: "pump-1".into(),
    };
    assert!(
        c.disable_device(authed(pump.clone(), &operator))
            .await
            .expect("disable")
            .into_inner()
            .disabled
    );
    assert!(
        !c.enable_device(authed(pump.clone(), &operator))
            .await
            .expect("enable")
            .into_inner()
            .disabled
    );

    let presence = pb::ReportPresenceRequest {
        device: "pump-1".into(),
        online: true,
        at_ns: 5_000,
        frontend: "mqtt-0".into(),
        ..Default::default()
    };
    c.report_presence(authed(presence, &operator))
        .await
        .expect("presence");
    let got = c
        .get_device(authed(
            pb::GetDeviceRequest {
                tenant: String::new(),
                device: "pump-1".into(),
            },
            &operator,
        ))
        .await
        .expect("get")
        .into_inner();
    let p = got.presence.expect("presence");
    assert!(p.online && p.last_seen_ns == 5_000 && p.frontend == "mqtt-0");

    let ingest = pb::IssueTokenRequest {
        kind: pb::CredentialKind::TenantIngestToken.into(),
        name: "telegraf".into(),
        ttl_seconds: 3600,
        ..Default::default()
    };
    let ingest = c
        .issue_token(authed(ingest, &operator))
        .await
        .expect("ingest token")
        .into_inner();
    assert!(ingest.token.starts_with("tbi_"));
    let ingest_credential = ingest.credential.expect("credential");
    assert!(ingest_credential.expires_at_ns > 0);

    let tokens = c
        .list_tokens(authed(pb::ListTokensRequest::default(), &operator))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(tokens.credentials.len(), 2);
    let of_pump = pb::ListTokensRequest {
        device: "pump-1".into(),
        ..Default::default()
    };
    let of_pump = c
        .list_tokens(authed(of_pump, &operator))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(of_pump.credentials.len(), 1);

    let revoke = pb::RevokeTokenRequest {
        tenant: String::new(),
        credential_id: ingest_credential.id.clone(),
    };
    assert!(
        c.revoke_token(authed(revoke, &operator))
            .await
            .expect("revoke")
            .into_inner()
            .revoked
    );
    assert!(
        s.registry.authenticate(&ingest.token).await.is_err(),
        "the revoked token no longer authenticates"
    );

    c.delete_device(authed(pump.clone(), &operator))
        .await
        .expect("delete");
    assert_eq!(
        code(c.delete_device(authed(pump, &operator)).await),
        Code::NotFound
    );
    assert!(
        s.registry.authenticate(&issued.token).await.is_err(),
        "deleting the device revoked its token"
    );
}

#[tokio::test]
async fn bootstrap_writes_a_private_admin_token_once() {
    let mut s = start().await;
    let token = s
        .registry
        .bootstrap(&s.keys, &s.data_dir)
        .await
        .expect("bootstrap")
        .expect("a new token");
    let path = s.data_dir.join("admin.token");
    assert_eq!(std::fs::read_to_string(&path).expect("read").trim(), token);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "admin.token is readable by its owner only"
        );
    }
    let policy = s
        .registry
        .tenant_policy("default")
        .await
        .expect("default tenant exists");
    assert!(policy.auto_provision);
    assert_eq!(policy.device_tag, "device");

    // The token is an admin's: it may create tenants.
    s.client
        .create_tenant(authed(
            pb::CreateTenantRequest {
                name: "from-bootstrap".into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("the bootstrap token is an admin token");

    assert_eq!(
        s.registry
            .bootstrap(&s.keys, &s.data_dir)
            .await
            .expect("second bootstrap"),
        None
    );
    assert_eq!(
        std::fs::read_to_string(&path).expect("read").trim(),
        token,
        "the file is left alone"
    );
}
