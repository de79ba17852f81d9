//! `LocalDirectory`: what an ingest frontend and the query service see,
//! including how fast registry changes reach its caches.

mod common;

use common::{device_with_token, disable_and_wait_refused, labels, within};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tributary_core::directory::{
    Authenticator, DeviceCatalog, DirectoryError, PresenceSink, Principal,
};
use tributary_core::selector::Selector;
use tributary_registry::store::{DeviceStore, Expect};
use tributary_registry::{
    CredentialKind, DirectoryConfig, EmbeddedRegistryStore, LocalDirectory, NewDevice, NewTenant,
    NewToken, Registry, RegistryConfig, TenantSettings,
};

/// How fast a change must reach the directory.
const INVALIDATION_DEADLINE: Duration = Duration::from_secs(1);

struct Fixture {
    _dir: TempDir,
    store: Arc<EmbeddedRegistryStore>,
    registry: Arc<Registry>,
    directory: LocalDirectory,
}

async fn fixture_with(config: DirectoryConfig) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedRegistryStore::open(&dir.path().join("registry.redb")).expect("open store");
    let registry = Arc::new(Registry::new(store.clone(), RegistryConfig::default()));
    for (name, auto_provision) in [("open", true), ("closed", false)] {
        let settings = TenantSettings {
            auto_provision,
            device_tag: "host".into(),
            quotas: Default::default(),
            retention: Default::default(),
            lwm2m_metrics: Default::default(),
        };
        registry
            .create_tenant(NewTenant {
                name: name.into(),
                display_name: String::new(),
                settings,
            })
            .await
            .expect("tenant");
    }
    let directory = LocalDirectory::new(Arc::clone(&registry), config);
    Fixture {
        _dir: dir,
        store,
        registry,
        directory,
    }
}

async fn fixture() -> Fixture {
    fixture_with(DirectoryConfig::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_device_is_refused_within_a_second() {
    let f = fixture().await;
    let secret = device_with_token(&f.registry, "open", "pump-1").await;
    let principal = Principal::Device {
        tenant: "open".into(),
        device: "pump-1".into(),
    };
    // Warm the caches.
    for _ in 0..3 {
        assert_eq!(
            f.directory.authenticate(&secret).await,
            Ok(principal.clone())
        );
    }
    f.directory
        .ensure_device("open", "pump-1", &BTreeMap::new())
        .await
        .expect("enabled device");

    disable_and_wait_refused(&f.registry, &f.directory, &secret, INVALIDATION_DEADLINE).await;
    assert!(matches!(
        f.directory
            .ensure_device("open", "pump-1", &BTreeMap::new())
            .await,
        Err(DirectoryError::Forbidden(_))
    ));

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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_within_a_second() {
    let f = fixture().await;
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
    let other = device_with_token(&f.registry, "open", "pump-2").await;
    for _ in 0..3 {
        assert!(f.directory.authenticate(&ingest.secret).await.is_ok());
        assert!(f.directory.authenticate(&other).await.is_ok());
    }

    f.registry
        .revoke_token("open", &ingest.credential.id)
        .await
        .expect("revoke");
    let took = within(
        INVALIDATION_DEADLINE,
        "authenticate refuses the revoked token",
        || async {
            f.directory.authenticate(&ingest.secret).await == Err(DirectoryError::Unauthenticated)
        },
    )
    .await;
    eprintln!("revoked token refused after {took:?}");
    assert!(
        f.directory.authenticate(&other).await.is_ok(),
        "other tokens still work"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_device_is_refused_within_a_second() {
    let f = fixture().await;
    let secret = device_with_token(&f.registry, "open", "pump-3").await;
    assert!(f.directory.authenticate(&secret).await.is_ok());
    assert!(
        f.directory
            .device("open", "pump-3")
            .await
            .expect("lookup")
            .is_some()
    );

    f.registry
        .delete_device("open", "pump-3")
        .await
        .expect("delete");
    within(
        INVALIDATION_DEADLINE,
        "the deleted device's token is refused",
        || async {
            f.directory.authenticate(&secret).await == Err(DirectoryError::Unauthenticated)
        },
    )
    .await;
    within(
        INVALIDATION_DEADLINE,
        "the deleted device is gone from lookups",
        || async {
            f.directory
                .device("open", "pump-3")
                .await
                .expect("lookup")
                .is_none()
        },
    )
    .await;
}

#[tokio::test]
async fn unknown_tokens_are_refused_and_not_cached() {
    let f = fixture().await;
    for token in ["", "tbd_nope", "Bearer x"] {
        assert_eq!(
            f.directory.authenticate(token).await,
            Err(DirectoryError::Unauthenticated),
            "{token:?}"
        );
    }
    assert_eq!(
        f.directory.authenticate(&"x".repeat(10_000)).await,
        Err(DirectoryError::Unauthenticated)
    );
    assert_eq!(
        f.directory.cache_sizes().0,
        0,
        "failed lookups leave nothing in the token cache"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_provisioning_follows_the_tenant_policy() {
    let f = fixture().await;
    let policy = f.directory.tenant_policy("open").await.expect("policy");
    assert!(policy.auto_provision);
    assert_eq!(policy.device_tag, "host");
    assert!(
        !f.directory
            .tenant_policy("closed")
            .await
            .expect("policy")
            .auto_provision
    );
    assert!(matches!(
        f.directory.tenant_policy("missing").await,
        Err(DirectoryError::NotFound(_))
    ));

    f.directory
        .ensure_device("open", "new-1", &labels(&[("fleet", "west")]))
        .await
        .expect("auto-provisioned");
    let created = f
        .registry
        .device("open", "new-1")
        .await
        .expect("device exists");
    assert_eq!(created.record.labels, labels(&[("fleet", "west")]));

    let refused = f
        .directory
        .ensure_device("closed", "new-1", &BTreeMap::new())
        .await;
    assert!(
        matches!(refused, Err(DirectoryError::NotFound(_))),
        "{refused:?}"
    );
    assert!(
        f.registry
            .find_device("closed", "new-1")
            .await
            .expect("lookup")
            .is_none(),
        "nothing was created"
    );

    // Once an operator creates it, the closed tenant accepts it.
    f.registry
        .create_device(NewDevice {
            tenant: "closed".into(),
            id: "new-1".into(),
            ..NewDevice::default()
        })
        .await
        .expect("create");
    within(
        INVALIDATION_DEADLINE,
        "the created device is accepted",
        || async {
            f.directory
                .ensure_device("closed", "new-1", &BTreeMap::new())
                .await
                .is_ok()
        },
    )
    .await;

    let bad = f
        .directory
        .ensure_device("open", "bad/id", &BTreeMap::new())
        .await;
    assert!(matches!(bad, Err(DirectoryError::Invalid(_))), "{bad:?}");
    let bad_label = f
        .directory
        .ensure_device("open", "ok", &labels(&[("fleet", "a=b")]))
        .await;
    assert!(
        matches!(bad_label, Err(DirectoryError::Invalid(_))),
        "{bad_label:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_tag_values_are_merged_and_steady_state_writes_nothing() {
    let f = fixture().await;
    let d = &f.directory;
    d.ensure_device("open", "host-1", &labels(&[("fleet", "west")]))
        .await
        .expect("provision");
    d.ensure_device(
        "open",
        "host-1",
        &labels(&[("fleet", "west"), ("rack", "r1")]),
    )
    .await
    .expect("merge new key");
    d.ensure_device("open", "host-1", &labels(&[("fleet", "east")]))
        .await
        .expect("merge new value");
    let device = f.registry.device("open", "host-1").await.expect("device");
    assert_eq!(
        device.record.labels,
        labels(&[("fleet", "east"), ("rack", "r1")]),
        "labels are merged, never dropped"
    );
    let revision = device.record.revision;

    // Same labels (or a subset) again and again: served from the cache.
    for _ in 0..50 {
        d.ensure_device("open", "host-1", &labels(&[("fleet", "east")]))
            .await
            .expect("steady state");
        d.ensure_device("open", "host-1", &BTreeMap::new())
            .await
            .expect("no labels");
    }
    let after = f.registry.device("open", "host-1").await.expect("device");
    assert_eq!(
        after.record.revision, revision,
        "steady-state writes cost no registry write"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_expire_after_the_ttl_even_without_events() {
    let ttl = Duration::from_millis(300);
    let f = fixture_with(DirectoryConfig {
        ttl,
        ..DirectoryConfig::default()
    })
    .await;
    let secret = device_with_token(&f.registry, "open", "pump-9").await;
    let warmed = Instant::now();
    assert!(f.directory.authenticate(&secret).await.is_ok());

    // Disable behind the registry's back: no event is published.
    let mut record = f
        .store
        .get_device("open", "pump-9")
        .await
        .expect("get")
        .expect("exists");
    record.disabled = true;
    record.revision += 1;
    f.store.put_device(&record, Expect::Any).await.expect("put");
    if warmed.elapsed() < ttl {
        assert!(
            f.directory.authenticate(&secret).await.is_ok(),
            "the cached state is used until it expires"
        );
    }
    within(
        ttl + INVALIDATION_DEADLINE,
        "the expired entry is re-read",
        || async {
            matches!(
                f.directory.authenticate(&secret).await,
                Err(DirectoryError::Forbidden(_))
            )
        },
    )
    .await;
}

#[tokio::test]
async fn catalog_and_presence_reach_the_registry() {
    let f = fixture().await;
    for (id, fleet) in [("a", "west"), ("b", "east"), ("c", "west")] {
        f.directory
            .ensure_device("open", id, &labels(&[("fleet", fleet)]))
            .await
            .expect("provision");
    }
    let info = f
        .directory
        .device("open", "a")
        .await
        .expect("lookup")
        .expect("exists");
    assert_eq!(info.id, "a");
    assert_eq!(info.labels, labels(&[("fleet", "west")]));
    assert!(!info.disabled);
    assert_eq!(
        f.directory.device("open", "zzz").await.expect("lookup"),
        None
    );

    let west = f
        .directory
        .select("open", &Selector::parse("fleet=west").expect("selector"))
        .await
        .expect("select");
    let ids: Vec<&str> = west.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["a", "c"]);

    f.directory
        .report("open", "b", true, 1_000, "mqtt-0")
        .await
        .expect("report");
    let presence = f.registry.presence("open", "b").await.expect("presence");
    assert!(presence.online && presence.last_seen_ns == 1_000 && presence.frontend == "mqtt-0");
    let unknown = f
        .directory
        .report("open", "nobody", true, 0, "mqtt-0")
        .await;
    assert!(
        matches!(unknown, Err(DirectoryError::NotFound(_))),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn caches_stay_within_their_bound() {
    let f = fixture_with(DirectoryConfig {
        max_entries: 16,
        ..DirectoryConfig::default()
    })
    .await;
    for i in 0..100 {
        assert_eq!(
            f.directory
                .device("open", &format!("ghost-{i}"))
                .await
                .expect("lookup"),
            None
        );
    }
    let (_, devices, _) = f.directory.cache_sizes();
    assert!(devices <= 16, "device cache holds {devices} entries");
}
