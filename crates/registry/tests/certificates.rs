//! Device certificates (mutual TLS): registered by SHA-256 fingerprint,
//! resolved on their own lookup path, never usable as a password, and
//! refused within a second of revocation or of their device being disabled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tributary_core::directory::{Authenticator, DirectoryError, Principal};
use tributary_registry::{
    CredentialKind, DirectoryConfig, EmbeddedRegistryStore, LocalDirectory, NewCertificate,
    NewDevice, NewTenant, NewToken, Registry, RegistryConfig, RegistryError, TenantSettings,
    format_fingerprint, parse_fingerprint,
};

const FP: &str = "3F:9A:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:01:23:45:67:89:AB:CD:EF:10:32:54:76:98:BA";
const FP_HEX: &str = "3f9a00112233445566778899aabbccddeeff0123456789abcdef1032547698ba";

struct Fixture {
    _dir: TempDir,
    registry: Arc<Registry>,
    directory: LocalDirectory,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedRegistryStore::open(&dir.path().join("registry.redb")).expect("open store");
    let registry = Arc::new(Registry::new(store, RegistryConfig::default()));
    registry
        .create_tenant(NewTenant {
            name: "acme".into(),
            display_name: String::new(),
            settings: TenantSettings::default(),
        })
        .await
        .expect("tenant");
    for id in ["d1", "d2"] {
        registry
            .create_device(NewDevice {
                tenant: "acme".into(),
                id: id.into(),
                ..NewDevice::default()
            })
            .await
            .expect("device");
    }
    let directory = LocalDirectory::new(Arc::clone(&registry), DirectoryConfig::default());
    Fixture {
        _dir: dir,
        registry,
        directory,
    }
}

fn new_certificate(device: &str, fingerprint: &str) -> NewCertificate {
    NewCertificate {
        tenant: "acme".into(),
        device: device.into(),
        fingerprint: fingerprint.into(),
        name: "factory cert".into(),
        ttl: None,
    }
}

fn d1() -> Principal {
    Principal::Device {
        tenant: "acme".into(),
        device: "d1".into(),
    }
}

/// Polls `check` until it holds, failing after `deadline`.
async fn within(deadline: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < deadline,
            "{what} took over {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn fingerprints_parse_with_or_without_colons_in_any_case() {
    let parsed = parse_fingerprint(FP).expect("colons");
    assert_eq!(format_fingerprint(&parsed), FP_HEX);
    assert_eq!(parse_fingerprint(FP_HEX).expect("plain"), parsed);
    for bad in [
        "",
        "abc",
        &FP_HEX[..62],
        &format!("{FP_HEX}00"),
        &FP_HEX.replace('f', "g"),
    ] {
        assert!(parse_fingerprint(bad).is_err(), "{bad:?}");
    }
}

#[tokio::test]
async fn a_registered_certificate_authenticates_its_device_and_is_listed() {
    let f = fixture().await;
    let credential = f
        .registry
        .register_certificate(new_certificate("d1", FP))
        .await
        .expect("registered");
    assert_eq!(credential.kind, CredentialKind::DeviceCertificate);
    assert_eq!(credential.device.as_deref(), Some("d1"));
    assert_eq!(f.directory.authenticate_certificate(FP_HEX).await, Ok(d1()));
    assert_eq!(f.registry.authenticate_certificate(FP_HEX).await, Ok(d1()));
    let listed = f
        .registry
        .list_tokens("acme", Some("d1"))
        .await
        .expect("list");
    assert_eq!(listed, vec![credential]);

    // The same certificate cannot be registered twice, not even for another device.
    let again = f
        .registry
        .register_certificate(new_certificate("d2", FP_HEX))
        .await;
    assert!(
        matches!(again, Err(RegistryError::AlreadyExists { .. })),
        "{again:?}"
    );
    // Unknown devices and bad fingerprints are refused.
    let unknown = f
        .registry
        .register_certificate(new_certificate("nope", FP_HEX))
        .await;
    assert!(
        matches!(unknown, Err(RegistryError::NotFound { .. })),
        "{unknown:?}"
    );
    let bad = f
        .registry
        .register_certificate(new_certificate("d1", "zz"))
        .await;
    assert!(matches!(bad, Err(RegistryError::Invalid(_))), "{bad:?}");
    // Certificates have no token to issue.
    let issued = f
        .registry
        .issue_token(NewToken {
            tenant: "acme".into(),
            kind: CredentialKind::DeviceCertificate,
            device: Some("d1".into()),
            name: String::new(),
            ttl: None,
        })
        .await;
    assert!(issued.is_err(), "{issued:?}");
}

#[tokio::test]
async fn a_certificate_is_never_a_password_nor_a_token_a_certificate() {
    let f = fixture().await;
    f.registry
        .register_certificate(new_certificate("d1", FP))
        .await
        .expect("registered");
    let fingerprint = parse_fingerprint(FP).expect("parse");
    // The token lookup, given the stored key itself, refuses it.
    assert_eq!(
        f.registry.resolve_token_hash(&fingerprint).await,
        Err(DirectoryError::Unauthenticated)
    );
    for password in [FP, FP_HEX] {
        assert_eq!(
            f.directory.authenticate(password).await,
            Err(DirectoryError::Unauthenticated)
        );
        assert_eq!(
            f.registry.authenticate(password).await,
            Err(DirectoryError::Unauthenticated)
        );
    }
    // And a token's hash is no certificate.
    let token = f
        .registry
        .issue_token(NewToken {
            tenant: "acme".into(),
            kind: CredentialKind::DeviceToken,
            device: Some("d2".into()),
            name: String::new(),
            ttl: None,
        })
        .await
        .expect("token");
    let hash = format_fingerprint(&token.credential.token_hash);
    assert_eq!(
        f.directory.authenticate_certificate(&hash).await,
        Err(DirectoryError::Unauthenticated)
    );
    assert_eq!(
        f.directory.authenticate_certificate("not hex").await,
        Err(DirectoryError::Unauthenticated)
    );
}

#[tokio::test]
async fn revoking_a_certificate_or_disabling_its_device_takes_effect_within_a_second() {
    let f = fixture().await;
    let credential = f
        .registry
        .register_certificate(new_certificate("d1", FP))
        .await
        .expect("registered");
    // Warm the cache, then disable the device.
    assert_eq!(f.directory.authenticate_certificate(FP_HEX).await, Ok(d1()));
    f.registry
        .set_disabled("acme", "d1", true)
        .await
        .expect("disable");
    within(Duration::from_secs(1), "disable", async || {
        matches!(
            f.directory.authenticate_certificate(FP_HEX).await,
            Err(DirectoryError::Forbidden(_))
        )
    })
    .await;
    f.registry
        .set_disabled("acme", "d1", false)
        .await
        .expect("enable");
    within(Duration::from_secs(1), "enable", async || {
        f.directory.authenticate_certificate(FP_HEX).await == Ok(d1())
    })
    .await;
    // Revocation.
    f.registry
        .revoke_token("acme", &credential.id)
        .await
        .expect("revoke");
    within(Duration::from_secs(1), "revocation", async || {
        f.directory.authenticate_certificate(FP_HEX).await == Err(DirectoryError::Unauthenticated)
    })
    .await;
}
