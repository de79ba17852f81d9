//! Device certificates (mutual TLS): registered as PEM only in the tenant
//! their subject names, resolved on their own lookup path by fingerprint,
//! never usable as a password, and refused within a second of revocation or
//! of their device being disabled.

use std::sync::{Arc, LazyLock};
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

/// A self-signed device certificate whose subject is `O=<org>, CN=d1`,
/// valid for `days`: its PEM and fingerprint (lower-case hex).
fn certificate(org: &str, days: i64) -> (String, String) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    if !org.is_empty() {
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, org);
    }
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "d1");
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    params.not_after = time_from_unix(now + days * 86_400);
    let cert = params
        .self_signed(&rcgen::KeyPair::generate().expect("key"))
        .expect("sign");
    let fingerprint = {
        use sha2::Digest as _;
        format_fingerprint(&sha2::Sha256::digest(cert.der()).into())
    };
    (cert.pem(), fingerprint)
}

fn time_from_unix(secs: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(secs).expect("time")
}

/// One certificate for tenant acme, shared by the tests.
static ACME: LazyLock<(String, String)> = LazyLock::new(|| certificate("acme", 365));

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

fn new_certificate(device: &str, pem: &str) -> NewCertificate {
    NewCertificate {
        tenant: "acme".into(),
        device: device.into(),
        certificate_pem: pem.into(),
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
        .register_certificate(new_certificate("d1", &ACME.0))
        .await
        .expect("registered");
    assert_eq!(credential.kind, CredentialKind::DeviceCertificate);
    assert_eq!(credential.device.as_deref(), Some("d1"));
    assert_eq!(
        f.directory.authenticate_certificate(&ACME.1).await,
        Ok(d1())
    );
    assert_eq!(f.registry.authenticate_certificate(&ACME.1).await, Ok(d1()));
    let listed = f
        .registry
        .list_tokens("acme", Some("d1"))
        .await
        .expect("list");
    assert_eq!(listed, vec![credential.clone()]);

    // The same certificate cannot be registered twice, not even for another device.
    let again = f
        .registry
        .register_certificate(new_certificate("d2", &ACME.0))
        .await;
    assert!(
        matches!(again, Err(RegistryError::AlreadyExists { .. })),
        "{again:?}"
    );
    // Unknown devices and bad fingerprints are refused.
    let unknown = f
        .registry
        .register_certificate(new_certificate("nope", &ACME.0))
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
    // A fingerprint is not a certificate.
    let fingerprint_only = f
        .registry
        .register_certificate(new_certificate("d1", FP_HEX))
        .await;
    assert!(
        matches!(fingerprint_only, Err(RegistryError::Invalid(_))),
        "{fingerprint_only:?}"
    );
    // The registration lasts no longer than the certificate.
    let not_after = credential.expires_at_ns.expect("an expiry");
    let in_a_year = tributary_core::time::now_ns() + 365 * 86_400 * 1_000_000_000;
    assert!(
        (not_after - in_a_year).abs() < 86_400 * 1_000_000_000,
        "expires at the certificate's notAfter"
    );
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
        .register_certificate(new_certificate("d1", &ACME.0))
        .await
        .expect("registered");
    let fingerprint = parse_fingerprint(&ACME.1).expect("parse");
    // The token lookup, given the stored key itself, refuses it.
    assert_eq!(
        f.registry.resolve_token_hash(&fingerprint).await,
        Err(DirectoryError::Unauthenticated)
    );
    for password in [ACME.1.as_str(), &ACME.1.to_uppercase()] {
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
        .register_certificate(new_certificate("d1", &ACME.0))
        .await
        .expect("registered");
    // Warm the cache, then disable the device.
    assert_eq!(
        f.directory.authenticate_certificate(&ACME.1).await,
        Ok(d1())
    );
    f.registry
        .set_disabled("acme", "d1", true)
        .await
        .expect("disable");
    within(Duration::from_secs(1), "disable", async || {
        matches!(
            f.directory.authenticate_certificate(&ACME.1).await,
            Err(DirectoryError::Forbidden(_))
        )
    })
    .await;
    f.registry
        .set_disabled("acme", "d1", false)
        .await
        .expect("enable");
    within(Duration::from_secs(1), "enable", async || {
        f.directory.authenticate_certificate(&ACME.1).await == Ok(d1())
    })
    .await;
    // Revocation.
    f.registry
        .revoke_token("acme", &credential.id)
        .await
        .expect("revoke");
    within(Duration::from_secs(1), "revocation", async || {
        f.directory.authenticate_certificate(&ACME.1).await == Err(DirectoryError::Unauthenticated)
    })
    .await;
}

#[tokio::test]
async fn no_tenant_can_claim_or_probe_another_tenants_certificate() {
    let f = fixture().await;
    f.registry
        .create_tenant(NewTenant {
            name: "globex".into(),
            display_name: String::new(),
            settings: TenantSettings::default(),
        })
        .await
        .expect("tenant");
    f.registry
        .create_device(NewDevice {
            tenant: "globex".into(),
            id: "d1".into(),
            ..NewDevice::default()
        })
        .await
        .expect("device");
    let claim = || async {
        f.registry
            .register_certificate(NewCertificate {
                tenant: "globex".into(),
                ..new_certificate("d1", &ACME.0)
            })
            .await
    };
    // Before acme registers its certificate, globex cannot claim it...
    let before = claim().await;
    let Err(RegistryError::Invalid(before)) = before else {
        panic!("globex claimed acme's certificate: {before:?}");
    };
    f.registry
        .register_certificate(new_certificate("d1", &ACME.0))
        .await
        .expect("acme registers its own");
    // ...nor after, and the answer is the same: nothing to probe.
    let after = claim().await;
    let Err(RegistryError::Invalid(after)) = after else {
        panic!("globex claimed acme's certificate: {after:?}");
    };
    assert_eq!(before.to_string(), after.to_string());
    assert!(before.to_string().contains("another tenant"), "{before}");
    // The certificate still authenticates acme's device.
    assert_eq!(
        f.directory.authenticate_certificate(&ACME.1).await,
        Ok(d1())
    );
    // globex registers certificates issued for it.
    let (globex_pem, globex_fp) = certificate("globex", 30);
    f.registry
        .register_certificate(NewCertificate {
            tenant: "globex".into(),
            ..new_certificate("d1", &globex_pem)
        })
        .await
        .expect("globex's own certificate");
    assert_eq!(
        f.directory.authenticate_certificate(&globex_fp).await,
        Ok(Principal::Device {
            tenant: "globex".into(),
            device: "d1".into()
        })
    );
}

#[tokio::test]
async fn certificates_without_the_tenant_or_expired_are_refused() {
    let f = fixture().await;
    for (pem, why) in [
        (certificate("", 30).0, "no organization"),
        (certificate("acme", -1).0, "expired"),
    ] {
        let refused = f
            .registry
            .register_certificate(new_certificate("d1", &pem))
            .await;
        assert!(
            matches!(refused, Err(RegistryError::Invalid(_))),
            "{why}: {refused:?}"
        );
    }
}
