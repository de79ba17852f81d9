//! Tenant application tokens: issued with grants, resolved on their own
//! path by name and token, never usable as device or ingest tokens, and
//! refused within a second of revocation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tributary_core::directory::{AppGrants, Application, Authenticator, DirectoryError};
use tributary_registry::{
    CredentialKind, DirectoryConfig, EmbeddedRegistryStore, LocalDirectory, NewApplication,
    NewTenant, NewToken, Registry, RegistryConfig, RegistryError, TenantSettings,
};

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
    let directory = LocalDirectory::new(Arc::clone(&registry), DirectoryConfig::default());
    Fixture {
        _dir: dir,
        registry,
        directory,
    }
}

fn new_app(name: &str, publish: &[&str], subscribe: &[&str]) -> NewApplication {
    NewApplication {
        tenant: "acme".into(),
        name: name.into(),
        publish: publish.iter().map(|s| (*s).to_owned()).collect(),
        subscribe: subscribe.iter().map(|s| (*s).to_owned()).collect(),
        ttl: None,
    }
}

#[tokio::test]
async fn an_application_token_resolves_by_name_with_its_grants() {
    let f = fixture().await;
    let issued = f
        .registry
        .issue_application(new_app("dash", &["devices/+/commands/#"], &[]))
        .await
        .expect("issued");
    assert!(issued.secret.starts_with("tba_"), "{}", issued.secret);
    assert_eq!(issued.credential.kind, CredentialKind::Application);
    let expected = Application {
        tenant: "acme".into(),
        name: "dash".into(),
        credential_id: issued.credential.id.clone(),
        grants: AppGrants {
            publish: vec!["devices/+/commands/#".into()],
            // An empty list grants nothing, not everything.
            subscribe: vec![],
        },
    };
    assert_eq!(
        f.directory
            .authenticate_application("dash", &issued.secret)
            .await,
        Ok(expected.clone())
    );
    assert_eq!(
        f.registry
            .authenticate_application("dash", &issued.secret)
            .await,
        Ok(expected)
    );
    // Another name, or the token as a device or ingest token: refused.
    assert_eq!(
        f.directory
            .authenticate_application("other", &issued.secret)
            .await,
        Err(DirectoryError::Unauthenticated)
    );
    assert_eq!(
        f.directory.authenticate(&issued.secret).await,
        Err(DirectoryError::Unauthenticated)
    );
    assert_eq!(
        f.registry.authenticate(&issued.secret).await,
        Err(DirectoryError::Unauthenticated)
    );
    // And an ingest token is no application token.
    let ingest = f
        .registry
        .issue_token(NewToken {
            tenant: "acme".into(),
            kind: CredentialKind::TenantIngestToken,
            device: None,
            name: "dash".into(),
            ttl: None,
        })
        .await
        .expect("ingest token");
    assert_eq!(
        f.directory
            .authenticate_application("dash", &ingest.secret)
            .await,
        Err(DirectoryError::Unauthenticated)
    );
    // Listed with the grants.
    let listed = f.registry.list_tokens("acme", None).await.expect("list");
    assert!(listed.contains(&issued.credential));
}

#[tokio::test]
async fn bad_names_and_filters_are_refused() {
    let f = fixture().await;
    for (name, publish) in [
        ("", "#"),
        ("has space", "#"),
        ("ok", "a/#/b"),
        ("ok", "a+/b"),
        ("ok", "$share/g/x"),
        ("ok", ""),
    ] {
        let result = f
            .registry
            .issue_application(new_app(name, &[publish], &[]))
            .await;
        assert!(
            matches!(result, Err(RegistryError::Invalid(_))),
            "{name:?} {publish:?}: {result:?}"
        );
    }
    let too_many: Vec<String> = (0..33).map(|i| format!("t/{i}")).collect();
    let refs: Vec<&str> = too_many.iter().map(String::as_str).collect();
    assert!(
        f.registry
            .issue_application(new_app("many", &refs, &[]))
            .await
            .is_err()
    );
    // Not through issue_token, which cannot carry grants.
    let via_token = f
        .registry
        .issue_token(NewToken {
            tenant: "acme".into(),
            kind: CredentialKind::Application,
            device: None,
            name: "dash".into(),
            ttl: None,
        })
        .await;
    assert!(via_token.is_err());
    // Unknown tenant.
    let mut unknown = new_app("dash", &[], &[]);
    unknown.tenant = "nope".into();
    assert!(matches!(
        f.registry.issue_application(unknown).await,
        Err(RegistryError::NotFound { .. })
    ));
}

#[tokio::test]
async fn a_revoked_application_token_is_refused_within_a_second() {
    let f = fixture().await;
    let issued = f
        .registry
        .issue_application(new_app("dash", &[], &[]))
        .await
        .expect("issued");
    assert!(
        f.directory
            .authenticate_application("dash", &issued.secret)
            .await
            .is_ok()
    );
    f.registry
        .revoke_token("acme", &issued.credential.id)
        .await
        .expect("revoke");
    let started = Instant::now();
    while f
        .directory
        .authenticate_application("dash", &issued.secret)
        .await
        .is_ok()
    {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "revocation took over 1 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
