//! DTLS pre-shared keys: issued for a device only by a registry with a PSK
//! secret, never stored (derived again at each lookup), resolved on their
//! own path by identity (in process and over gRPC alike), never usable as a
//! token, and refused once revoked or while their device is disabled.

use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tributary_auth::{JwtKeys, PskKeys};
use tributary_core::directory::{Authenticator, DirectoryError, Principal};
use tributary_registry::{
    CredentialKind, DirectoryConfig, DirectoryGrpc, EmbeddedRegistryStore, LocalDirectory,
    NewDevice, NewTenant, NewToken, Registry, RegistryConfig, RegistryError, RemoteConfig,
    RemoteDirectory, TenantSettings,
};

struct Fixture {
    _dir: TempDir,
    registry: Arc<Registry>,
    /// The two directories a frontend may hold: in process, and over gRPC.
    directories: Vec<(&'static str, Arc<dyn Authenticator>)>,
    _events: broadcast::Sender<tributary_core::events::RegistryEvent>,
}

async fn fixture(psk: Option<PskKeys>) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedRegistryStore::open(&dir.path().join("registry.redb")).expect("store");
    let mut registry = Registry::new(store, RegistryConfig::default());
    if let Some(keys) = psk {
        registry = registry.with_psk_keys(keys);
    }
    let registry = Arc::new(registry);
    registry
        .create_tenant(NewTenant {
            name: "acme".into(),
            display_name: String::new(),
            settings: TenantSettings::default(),
        })
        .await
        .expect("tenant");
    for id in ["d1", "site-7.d2"] {
        registry
            .create_device(NewDevice {
                tenant: "acme".into(),
                id: id.into(),
                ..NewDevice::default()
            })
            .await
            .expect("device");
    }
    let keys = JwtKeys::from_secret(&[42u8; 32]).expect("keys");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = DirectoryGrpc::new(Arc::clone(&registry), keys.clone()).server();
    tokio::spawn(async move {
        Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .expect("serve");
    });
    // No events in this test: every lookup here reads the registry.
    let (events, _) = broadcast::channel(16);
    let remote = RemoteDirectory::connect_with(
        &format!("http://{addr}"),
        keys.service_token("test-frontend").expect("token"),
        events.subscribe(),
        DirectoryConfig::default(),
        RemoteConfig {
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_secs(2),
            ..RemoteConfig::default()
        },
    )
    .expect("connect");
    let local = LocalDirectory::new(Arc::clone(&registry), DirectoryConfig::default());
    Fixture {
        _dir: dir,
        registry,
        directories: vec![("local", Arc::new(local)), ("remote", Arc::new(remote))],
        _events: events,
    }
}

fn new_psk(device: &str) -> NewToken {
    NewToken {
        tenant: "acme".into(),
        kind: CredentialKind::DevicePsk,
        device: Some(device.into()),
        name: "dtls".into(),
        ttl: None,
    }
}

#[tokio::test]
async fn a_registry_without_a_psk_secret_issues_no_psk() {
    let f = fixture(None).await;
    let refused = f.registry.issue_token(new_psk("d1")).await;
    assert!(
        matches!(&refused, Err(RegistryError::Invalid(v)) if v.to_string().contains("PSK secret")),
        "{refused:?}"
    );
}

#[tokio::test]
async fn an_issued_psk_resolves_by_identity_to_its_device_and_key() {
    let f = fixture(Some(PskKeys::from_secret(&[9u8; 32]).unwrap())).await;
    for device in ["d1", "site-7.d2"] {
        let issued = f
            .registry
            .issue_token(new_psk(device))
            .await
            .expect("issue");
        let id = issued.credential.id.clone();
        let identity = tributary_auth::psk_identity("acme", device, &id);
        assert!(issued.secret.starts_with("tbk_"), "{}", issued.secret);
        // The registry keeps no key: what it stores does not contain it.
        assert!(!format!("{:?}", issued.credential).contains(&issued.secret));
        for (name, dir) in &f.directories {
            let grant = dir.authenticate_psk(&identity).await.expect(name);
            assert_eq!(
                grant.principal,
                Principal::Device {
                    tenant: "acme".into(),
                    device: device.into()
                },
                "{name}"
            );
            assert_eq!(grant.credential.id, id, "{name}");
            assert_eq!(grant.key, issued.secret.as_bytes(), "{name}");
            assert!(
                !format!("{grant:?}").contains(&issued.secret),
                "Debug hides the key"
            );
            // Neither the identity nor the key is a token.
            for token in [&identity, &issued.secret] {
                assert_eq!(
                    dir.authenticate(token).await,
                    Err(DirectoryError::Unauthenticated),
                    "{name}: {token}"
                );
            }
        }
    }
}

#[tokio::test]
async fn identities_that_do_not_match_their_credential_are_refused() {
    let f = fixture(Some(PskKeys::from_secret(&[9u8; 32]).unwrap())).await;
    let issued = f.registry.issue_token(new_psk("d1")).await.expect("issue");
    let id = issued.credential.id;
    // A device token's credential id, under a PSK identity.
    let token = f
        .registry
        .issue_token(NewToken {
            kind: CredentialKind::DeviceToken,
            ..new_psk("d1")
        })
        .await
        .expect("token");
    for bad in [
        format!("acme/site-7.d2/{id}"),
        format!("other/d1/{id}"),
        "acme/d1/0000000000000000".to_owned(),
        format!("acme/d1/{}", token.credential.id),
        format!("acme/d1/{id}/"),
        "x".repeat(300),
        String::new(),
    ] {
        for (name, dir) in &f.directories {
            assert_eq!(
                dir.authenticate_psk(&bad).await.map(|g| g.principal),
                Err(DirectoryError::Unauthenticated),
                "{name}: {bad:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_disabled_device_or_a_revoked_psk_is_refused() {
    let f = fixture(Some(PskKeys::from_secret(&[9u8; 32]).unwrap())).await;
    let issued = f.registry.issue_token(new_psk("d1")).await.expect("issue");
    let identity = tributary_auth::psk_identity("acme", "d1", &issued.credential.id);
    f.registry.set_disabled("acme", "d1", true).await.unwrap();
    for (name, dir) in &f.directories {
        assert!(
            matches!(
                dir.authenticate_psk(&identity).await,
                Err(DirectoryError::Forbidden(_))
            ),
            "{name}"
        );
    }
    f.registry.set_disabled("acme", "d1", false).await.unwrap();
    f.registry
        .revoke_token("acme", &issued.credential.id)
        .await
        .unwrap();
    for (name, dir) in &f.directories {
        assert_eq!(
            dir.authenticate_psk(&identity).await.map(|g| g.principal),
            Err(DirectoryError::Unauthenticated),
            "{name}"
        );
    }
}
