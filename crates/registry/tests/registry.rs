//! The registry's business rules, over the embedded store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use tokio::sync::broadcast;
use tributary_core::directory::{DirectoryError, Principal};
use tributary_core::selector::Selector;
use tributary_core::time::now_ns;
use tributary_registry::store::CredentialStore;
use tributary_registry::{
    CredentialKind, CredentialRecord, DeviceUpdate, EmbeddedRegistryStore, Entity, ListOrder,
    NewDevice, NewTenant, NewToken, Registry, RegistryConfig, RegistryError, RegistryEvent,
    TenantSettings,
};

struct Fixture {
    dir: TempDir,
    store: Arc<EmbeddedRegistryStore>,
    registry: Registry,
}

async fn fixture_with(config: RegistryConfig) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedRegistryStore::open(&dir.path().join("registry.redb")).expect("open store");
    let registry = Registry::new(store.clone(), config);
    registry
        .create_tenant(new_tenant("acme"))
        .await
        .expect("create tenant");
    Fixture {
        dir,
        store,
        registry,
    }
}

async fn fixture() -> Fixture {
    fixture_with(RegistryConfig::default()).await
}

fn new_tenant(name: &str) -> NewTenant {
    NewTenant {
        name: name.into(),
        display_name: format!("{name} Inc."),
        settings: TenantSettings::default(),
    }
}

fn new_device(id: &str) -> NewDevice {
    NewDevice {
        tenant: "acme".into(),
        id: id.into(),
        ..NewDevice::default()
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn device_token(device: &str) -> NewToken {
    NewToken {
        tenant: "acme".into(),
        kind: CredentialKind::DeviceToken,
        device: Some(device.into()),
        name: "test".into(),
        ttl: None,
    }
}

/// The field of a validation error, or a panic naming what came instead.
fn invalid_field<T: std::fmt::Debug>(result: Result<T, RegistryError>) -> String {
    match result {
        Err(RegistryError::Invalid(v)) => v.field,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

/// Every event published so far, without waiting.
fn drain(rx: &mut broadcast::Receiver<RegistryEvent>) -> Vec<RegistryEvent> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

#[tokio::test]
async fn duplicates_are_refused() {
    let f = fixture().await;
    let err = f
        .registry
        .create_tenant(new_tenant("acme"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::AlreadyExists {
                kind: Entity::Tenant,
                ..
            }
        ),
        "{err:?}"
    );

    f.registry
        .create_device(new_device("pump-1"))
        .await
        .expect("create device");
    let err = f
        .registry
        .create_device(new_device("pump-1"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::AlreadyExists {
                kind: Entity::Device,
                ..
            }
        ),
        "{err:?}"
    );

    // The same id in another tenant is a different device.
    f.registry
        .create_tenant(new_tenant("globex"))
        .await
        .expect("second tenant");
    f.registry
        .create_device(NewDevice {
            tenant: "globex".into(),
            ..new_device("pump-1")
        })
        .await
        .expect("same id in another tenant");
}

#[tokio::test]
async fn invalid_input_names_the_field() {
    let f = fixture_with(RegistryConfig {
        max_metadata_entries: 2,
        ..RegistryConfig::default()
    })
    .await;
    let r = &f.registry;

    assert_eq!(
        invalid_field(r.create_tenant(new_tenant("Acme")).await),
        "name"
    );
    let bad_tag = NewTenant {
        settings: TenantSettings {
            auto_provision: true,
            device_tag: "no spaces".into(),
            quotas: Default::default(),
            retention: Default::default(),
            lwm2m_metrics: Default::default(),
        },
        ..new_tenant("ok")
    };
    assert_eq!(
        invalid_field(r.create_tenant(bad_tag).await),
        "settings.device_tag"
    );

    assert_eq!(
        invalid_field(r.create_device(new_device("a/b")).await),
        "id"
    );
    assert_eq!(invalid_field(r.create_device(new_device("")).await), "id");
    assert_eq!(
        invalid_field(r.create_device(new_device(&"x".repeat(129))).await),
        "id"
    );
    assert_eq!(
        invalid_field(
            r.create_device(NewDevice {
                tenant: "UPPER".into(),
                ..new_device("d")
            })
            .await
        ),
        "tenant"
    );

    let bad_key = NewDevice {
        labels: labels(&[("has space", "v")]),
        ..new_device("d")
    };
    assert_eq!(invalid_field(r.create_device(bad_key).await), "labels");
    let bad_value = NewDevice {
        labels: labels(&[("fleet", "a,b")]),
        ..new_device("d")
    };
    assert_eq!(invalid_field(r.create_device(bad_value).await), "labels");
    let too_many: BTreeMap<String, String> = (0..65)
        .map(|i| (format!("k{i}"), "v".to_string()))
        .collect();
    assert_eq!(
        invalid_field(
            r.create_device(NewDevice {
                labels: too_many,
                ..new_device("d")
            })
            .await
        ),
        "labels"
    );

    let big_value = NewDevice {
        metadata: labels(&[("notes", &"x".repeat(1025))]),
        ..new_device("d")
    };
    assert_eq!(invalid_field(r.create_device(big_value).await), "metadata");
    let many_meta = NewDevice {
        metadata: labels(&[("a", "1"), ("b", "2"), ("c", "3")]),
        ..new_device("d")
    };
    assert_eq!(invalid_field(r.create_device(many_meta).await), "metadata");

    assert!(
        r.list_devices(
            "acme",
            &Selector::default(),
            "",
            ListOrder::Ascending,
            10,
            None
        )
        .await
        .expect("list")
        .devices
        .is_empty()
    );

    r.create_device(new_device("d"))
        .await
        .expect("valid device");
    let overlap = DeviceUpdate {
        set_labels: labels(&[("fleet", "west")]),
        remove_labels: vec!["fleet".into()],
        ..DeviceUpdate::default()
    };
    assert_eq!(
        invalid_field(r.update_device("acme", "d", overlap).await),
        "remove_labels"
    );
    let meta_overflow = DeviceUpdate {
        set_metadata: labels(&[("a", "1"), ("b", "2")]),
        ..DeviceUpdate::default()
    };
    r.update_device("acme", "d", meta_overflow)
        .await
        .expect("two metadata entries fit");
    let one_more = DeviceUpdate {
        set_metadata: labels(&[("c", "3")]),
        ..DeviceUpdate::default()
    };
    assert_eq!(
        invalid_field(r.update_device("acme", "d", one_more).await),
        "set_metadata"
    );

    let page_token = r
        .list_devices(
            "acme",
            &Selector::default(),
            "",
            ListOrder::Ascending,
            10,
            Some("not/a/token"),
        )
        .await;
    assert_eq!(invalid_field(page_token), "page_token");
    let no_device = NewToken {
        device: None,
        ..device_token("d")
    };
    assert_eq!(invalid_field(r.issue_token(no_device).await), "device");
    let zero_ttl = NewToken {
        ttl: Some(Duration::ZERO),
        ..device_token("d")
    };
    assert_eq!(invalid_field(r.issue_token(zero_ttl).await), "ttl_seconds");
    assert_eq!(
        invalid_field(r.report_presence("acme", "d", true, -1, "f").await),
        "at_ns"
    );
}

#[tokio::test]
async fn unknown_tenants_and_devices_are_not_found() {
    let f = fixture().await;
    let err = f
        .registry
        .create_device(NewDevice {
            tenant: "nope".into(),
            ..new_device("d")
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::NotFound {
                kind: Entity::Tenant,
                ..
            }
        ),
        "{err:?}"
    );
    let err = f.registry.device("acme", "ghost").await.unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::NotFound {
                kind: Entity::Device,
                ..
            }
        ),
        "{err:?}"
    );
    let err = f
        .registry
        .issue_token(device_token("ghost"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::NotFound {
                kind: Entity::Device,
                ..
            }
        ),
        "{err:?}"
    );
    let err = f
        .registry
        .revoke_token("acme", "0123456789abcdef")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::NotFound {
                kind: Entity::Credential,
                ..
            }
        ),
        "{err:?}"
    );
    let err = f
        .registry
        .report_presence("acme", "ghost", true, 0, "mqtt-0")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::NotFound {
                kind: Entity::Device,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn token_secrets_are_shown_once_and_stored_only_as_hashes() {
    let f = fixture().await;
    let (_, token) = f
        .registry
        .create_device(NewDevice {
            issue_token: true,
            ..new_device("pump-1")
        })
        .await
        .expect("create device with token");
    let issued = token.expect("a token was asked for");
    assert!(
        issued.secret.starts_with("tbd_"),
        "device tokens are recognisable: {}",
        issued.secret
    );
    assert!(
        !format!("{issued:?}").contains(&issued.secret),
        "Debug must not print the secret"
    );

    let stored = f
        .store
        .get_credential("acme", &issued.credential.id)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(
        stored.token_hash,
        tributary_auth::hash_token(&issued.secret),
        "stored as its SHA-256"
    );
    let as_json = serde_json::to_string(&stored).expect("json");
    assert!(
        !as_json.contains(&issued.secret),
        "the stored record holds no secret"
    );

    let ingest = f
        .registry
        .issue_token(NewToken {
            kind: CredentialKind::TenantIngestToken,
            device: None,
            ..device_token("")
        })
        .await
        .expect("ingest token");
    assert!(ingest.secret.starts_with("tbi_"));

    // Nothing on disk contains a secret, in any encoding the store might use.
    drop(f.registry);
    drop(f.store);
    let bytes = std::fs::read(f.dir.path().join("registry.redb")).expect("read file");
    for secret in [&issued.secret, &ingest.secret] {
        let needle = &secret.as_bytes()[4..];
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "the registry file contains a secret"
        );
    }
}

#[tokio::test]
async fn authentication_follows_revocation_expiry_and_device_state() {
    let f = fixture().await;
    let r = &f.registry;
    r.create_device(new_device("pump-1")).await.expect("device");
    let device = r
        .issue_token(device_token("pump-1"))
        .await
        .expect("device token");
    let ingest = r
        .issue_token(NewToken {
            kind: CredentialKind::TenantIngestToken,
            device: None,
            ..device_token("")
        })
        .await
        .expect("ingest token");

    assert_eq!(
        r.authenticate(&device.secret).await,
        Ok(Principal::Device {
            tenant: "acme".into(),
            device: "pump-1".into()
        })
    );
    assert_eq!(
        r.authenticate(&ingest.secret).await,
        Ok(Principal::TenantIngest {
            tenant: "acme".into(),
            credential_id: ingest.credential.id.clone()
        })
    );
    assert_eq!(
        r.authenticate("tbd_not-a-real-token").await,
        Err(DirectoryError::Unauthenticated)
    );
    assert_eq!(
        r.authenticate("").await,
        Err(DirectoryError::Unauthenticated)
    );
    assert_eq!(
        r.authenticate(&"x".repeat(100_000)).await,
        Err(DirectoryError::Unauthenticated)
    );

    r.set_disabled("acme", "pump-1", true)
        .await
        .expect("disable");
    assert!(matches!(
        r.authenticate(&device.secret).await,
        Err(DirectoryError::Forbidden(_))
    ));
    r.set_disabled("acme", "pump-1", false)
        .await
        .expect("enable");
    assert!(
        r.authenticate(&device.secret).await.is_ok(),
        "enabled again"
    );

    let revoked = r
        .revoke_token("acme", &ingest.credential.id)
        .await
        .expect("revoke");
    assert!(revoked.revoked_at_ns.is_some());
    assert_eq!(
        r.authenticate(&ingest.secret).await,
        Err(DirectoryError::Unauthenticated)
    );
    r.revoke_token("acme", &ingest.credential.id)
        .await
        .expect("revoking twice is fine");

    // An expired credential, written as a store would hold it after its ttl.
    let secret = "tbd_expired-token-for-this-test";
    let expired = CredentialRecord {
        id: "expired0".into(),
        tenant: "acme".into(),
        kind: CredentialKind::DeviceToken,
        device: Some("pump-1".into()),
        name: "old".into(),
        token_hash: tributary_auth::hash_token(secret),
        created_at_ns: 1,
        expires_at_ns: Some(now_ns() - 1),
        revoked_at_ns: None,
        grants: None,
    };
    f.store.put_credential(&expired).await.expect("put");
    assert_eq!(
        r.authenticate(secret).await,
        Err(DirectoryError::Unauthenticated)
    );

    let with_ttl = r
        .issue_token(NewToken {
            ttl: Some(Duration::from_secs(3600)),
            ..device_token("pump-1")
        })
        .await
        .expect("ttl token");
    let expires = with_ttl.credential.expires_at_ns.expect("has an expiry");
    let expected = now_ns() + 3600 * 1_000_000_000;
    assert!(
        (expected - expires).abs() < 60 * 1_000_000_000,
        "expiry is an hour from now"
    );
    assert!(r.authenticate(&with_ttl.secret).await.is_ok());
}

#[tokio::test]
async fn deleting_a_device_revokes_its_tokens() {
    let f = fixture().await;
    let r = &f.registry;
    r.create_device(new_device("pump-1")).await.expect("device");
    r.create_device(new_device("pump-2")).await.expect("device");
    let t1 = r.issue_token(device_token("pump-1")).await.expect("token");
    let t2 = r.issue_token(device_token("pump-1")).await.expect("token");
    let other = r.issue_token(device_token("pump-2")).await.expect("token");
    r.report_presence("acme", "pump-1", true, 0, "mqtt-0")
        .await
        .expect("presence");
    let mut events = r.events();

    r.delete_device("acme", "pump-1").await.expect("delete");

    for t in [&t1, &t2] {
        let stored = f
            .store
            .get_credential("acme", &t.credential.id)
            .await
            .expect("get")
            .expect("kept for audit");
        assert!(
            stored.is_revoked(),
            "token {} of the deleted device is revoked",
            stored.id
        );
        assert_eq!(
            r.authenticate(&t.secret).await,
            Err(DirectoryError::Unauthenticated)
        );
    }
    assert!(
        r.authenticate(&other.secret).await.is_ok(),
        "other devices' tokens are untouched"
    );
    assert!(matches!(
        r.device("acme", "pump-1").await,
        Err(RegistryError::NotFound { .. })
    ));
    assert!(matches!(
        r.delete_device("acme", "pump-1").await,
        Err(RegistryError::NotFound { .. })
    ));

    let mut seen = drain(&mut events);
    let deleted = seen.pop().expect("events");
    assert_eq!(
        deleted,
        RegistryEvent::DeviceDeleted {
            tenant: "acme".into(),
            device: "pump-1".into()
        }
    );
    let mut revoked: Vec<String> = seen
        .into_iter()
        .map(|e| match e {
            RegistryEvent::CredentialRevoked {
                credential_id,
                device,
                ..
            } => {
                assert_eq!(
                    device.as_deref(),
                    Some("pump-1"),
                    "a device token's revocation names the device"
                );
                credential_id
            }
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    revoked.sort();
    let mut expected = vec![t1.credential.id.clone(), t2.credential.id.clone()];
    expected.sort();
    assert_eq!(
        revoked, expected,
        "one revocation event per token, before the deletion event"
    );

    let recreated = r
        .create_device(new_device("pump-1"))
        .await
        .expect("re-create")
        .0;
    assert_eq!(
        recreated.presence.last_seen_ns, 0,
        "a re-created device starts without presence"
    );
}

#[tokio::test]
async fn updates_change_only_what_they_name_and_announce_changes() {
    let f = fixture().await;
    let r = &f.registry;
    let created = NewDevice {
        labels: labels(&[("fleet", "west"), ("model", "h-1")]),
        metadata: labels(&[("serial", "123")]),
        ..new_device("d")
    };
    r.create_device(created).await.expect("device");
    let mut events = r.events();

    let update = DeviceUpdate {
        set_labels: labels(&[("fleet", "east"), ("region", "eu")]),
        remove_labels: vec!["model".into(), "absent".into()],
        set_metadata: labels(&[("owner", "ops")]),
        remove_metadata: vec!["serial".into()],
    };
    let updated = r
        .update_device("acme", "d", update.clone())
        .await
        .expect("update");
    assert_eq!(
        updated.record.labels,
        labels(&[("fleet", "east"), ("region", "eu")])
    );
    assert_eq!(updated.record.metadata, labels(&[("owner", "ops")]));
    assert_eq!(updated.record.revision, 2);
    assert_eq!(
        drain(&mut events),
        [RegistryEvent::DeviceChanged {
            tenant: "acme".into(),
            device: "d".into(),
            disabled: false,
        }]
    );

    let again = r
        .update_device("acme", "d", update)
        .await
        .expect("same update again");
    assert_eq!(again.record.revision, 2, "a no-op update writes nothing");
    assert!(drain(&mut events).is_empty(), "and announces nothing");

    r.set_disabled("acme", "d", true).await.expect("disable");
    r.set_disabled("acme", "d", true)
        .await
        .expect("disable again");
    assert_eq!(
        drain(&mut events),
        [RegistryEvent::DeviceChanged {
            tenant: "acme".into(),
            device: "d".into(),
            disabled: true,
        }],
        "only the real change is announced, with the device's new state"
    );

    let event = RegistryEvent::CredentialRevoked {
        tenant: "acme".into(),
        credential_id: "c1".into(),
        device: None,
    };
    let json = serde_json::to_string(&event).expect("serialize");
    assert_eq!(
        json,
        r#"{"event":"credential_revoked","tenant":"acme","credential_id":"c1"}"#
    );
    assert_eq!(
        serde_json::from_str::<RegistryEvent>(&json).expect("deserialize"),
        event
    );
}

#[tokio::test]
async fn concurrent_label_updates_are_all_kept() {
    let f = fixture().await;
    let registry = Arc::new(f.registry);
    registry
        .create_device(new_device("d"))
        .await
        .expect("device");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let registry = Arc::clone(&registry);
        tasks.push(tokio::spawn(async move {
            let update = DeviceUpdate {
                set_labels: labels(&[(&format!("k{i}"), "v")]),
                ..DeviceUpdate::default()
            };
            registry.update_device("acme", "d", update).await
        }));
    }
    for t in tasks {
        t.await.expect("task").expect("update");
    }
    let device = registry.device("acme", "d").await.expect("device");
    assert_eq!(
        device.record.labels.len(),
        8,
        "no update was lost: {:?}",
        device.record.labels
    );
    assert_eq!(device.record.revision, 9);
}

#[tokio::test]
async fn listing_filters_by_selector_and_pages_without_gaps() {
    // A small scan budget forces short pages; the listing must still be complete.
    let f = fixture_with(RegistryConfig {
        max_scan_per_page: 5,
        ..RegistryConfig::default()
    })
    .await;
    let r = &f.registry;
    for i in 0..30 {
        let fleet = if i % 3 == 0 { "west" } else { "east" };
        let device = NewDevice {
            labels: labels(&[("fleet", fleet)]),
            ..new_device(&format!("dev-{i:02}"))
        };
        r.create_device(device).await.expect("device");
    }
    let selector = Selector::parse("fleet=west").expect("selector");
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..100 {
        let page = r
            .list_devices(
                "acme",
                &selector,
                "",
                ListOrder::Ascending,
                4,
                token.as_deref(),
            )
            .await
            .expect("list");
        assert!(page.devices.len() <= 4);
        seen.extend(page.devices.into_iter().map(|d| d.record.id));
        token = page.next_page_token;
        if token.is_none() {
            break;
        }
    }
    assert!(token.is_none(), "the listing ended");
    let expected: Vec<String> = (0..30)
        .filter(|i| i % 3 == 0)
        .map(|i| format!("dev-{i:02}"))
        .collect();
    assert_eq!(seen, expected);

    let all = r
        .select_devices("acme", &Selector::parse("fleet!=west").expect("selector"))
        .await
        .expect("select");
    assert_eq!(all.len(), 20);
    let err = r
        .list_devices(
            "nope",
            &Selector::default(),
            "",
            ListOrder::Ascending,
            10,
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::NotFound {
                kind: Entity::Tenant,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn listing_descending_with_a_prefix_and_a_selector_pages_without_gaps() {
    let f = fixture_with(RegistryConfig {
        max_scan_per_page: 3,
        ..RegistryConfig::default()
    })
    .await;
    let r = &f.registry;
    // The prefix "dev-1" is itself a device, and sorts before the others
    // that start with it; "dev-2" and "dev-09" lie just outside it.
    let mut ids: Vec<String> = (0..30).map(|i| format!("dev-{i:02}")).collect();
    ids.extend(["dev-1".to_string(), "dev-2".to_string()]);
    for id in &ids {
        let device = NewDevice {
            labels: labels(&[("fleet", if id.ends_with('1') { "east" } else { "west" })]),
            ..new_device(id)
        };
        r.create_device(device).await.expect("device");
    }
    let list = |selector: &'static str, page_size: usize| async move {
        let selector = Selector::parse(selector).expect("selector");
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..100 {
            let page = r
                .list_devices(
                    "acme",
                    &selector,
                    "dev-1",
                    ListOrder::Descending,
                    page_size,
                    token.as_deref(),
                )
                .await
                .expect("list");
            assert!(page.devices.len() <= page_size);
            seen.extend(page.devices.into_iter().map(|d| d.record.id));
            token = page.next_page_token;
            if token.is_none() {
                return seen;
            }
        }
        panic!("the listing did not end");
    };
    let all: Vec<String> = (10..20).rev().map(|i| format!("dev-{i}")).collect();
    let mut expected = all.clone();
    expected.push("dev-1".into());
    assert_eq!(
        list("", 4).await,
        expected,
        "every id with the prefix, greatest first"
    );
    expected.retain(|id| !id.ends_with('1'));
    assert_eq!(
        list("fleet=west", 2).await,
        expected,
        "a selector over short scans leaves no gaps"
    );
}

#[tokio::test]
async fn presence_keeps_the_latest_report() {
    let f = fixture().await;
    let r = &f.registry;
    r.create_device(new_device("d")).await.expect("device");
    assert_eq!(
        r.presence("acme", "d")
            .await
            .expect("presence")
            .last_seen_ns,
        0,
        "never seen"
    );

    r.report_presence("acme", "d", true, 100, "mqtt-0")
        .await
        .expect("online");
    let p = r.device("acme", "d").await.expect("device").presence;
    assert!(
        p.online && p.last_seen_ns == 100 && p.frontend == "mqtt-0",
        "{p:?}"
    );

    let stale = r
        .report_presence("acme", "d", false, 50, "mqtt-0")
        .await
        .expect("stale");
    assert!(stale.online, "an older report is ignored");
    r.report_presence("acme", "d", true, 200, "mqtt-1")
        .await
        .expect("moved");
    let late_disconnect = r
        .report_presence("acme", "d", false, 250, "mqtt-0")
        .await
        .expect("late");
    assert!(
        late_disconnect.online && late_disconnect.frontend == "mqtt-1",
        "{late_disconnect:?}"
    );
    let offline = r
        .report_presence("acme", "d", false, 300, "mqtt-1")
        .await
        .expect("offline");
    assert!(
        !offline.online && offline.last_seen_ns == 300,
        "{offline:?}"
    );
    assert_eq!(r.presence("acme", "d").await.expect("presence"), offline);
}

/// A reconnect storm's presence reports go in groups: 300 devices report
/// at once, and each report returns the device online, durable, in fewer
/// writes than reports; a device that does not exist is refused alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_presence_reports_are_written_in_groups() {
    let f = fixture().await;
    let r = Arc::new(f.registry);
    for i in 0..300 {
        r.create_device(new_device(&format!("s{i}")))
            .await
            .expect("device");
    }
    let before = r.presence_groups();
    let reports: Vec<_> = (0..301)
        .map(|i| {
            let r = r.clone();
            tokio::spawn(async move {
                r.report_presence("acme", &format!("s{i}"), true, 0, "mqtt-0")
                    .await
            })
        })
        .collect();
    let mut results = Vec::new();
    for report in reports {
        results.push(report.await.expect("task"));
    }
    let ghost = results.pop().expect("301 results");
    assert!(
        matches!(
            ghost,
            Err(RegistryError::NotFound {
                kind: Entity::Device,
                ..
            })
        ),
        "{ghost:?}"
    );
    for (i, result) in results.iter().enumerate() {
        let p = result.as_ref().unwrap_or_else(|e| panic!("s{i}: {e}"));
        assert!(p.online && p.frontend == "mqtt-0", "s{i}: {p:?}");
    }
    let groups = r.presence_groups();
    assert_eq!(groups.reports - before.reports, 301);
    assert!(
        groups.groups - before.groups < 301,
        "{} groups for 301 reports",
        groups.groups - before.groups
    );
    // In the store, not only in memory: a second registry over it reads them.
    let reopened = Registry::new(f.store.clone(), RegistryConfig::default());
    for i in [0, 150, 299] {
        assert!(
            reopened
                .presence("acme", &format!("s{i}"))
                .await
                .expect("presence")
                .online
        );
    }
}

#[tokio::test]
async fn active_tokens_per_device_are_limited() {
    let f = fixture_with(RegistryConfig {
        max_tokens_per_device: 2,
        ..RegistryConfig::default()
    })
    .await;
    let r = &f.registry;
    r.create_device(new_device("d")).await.expect("device");
    let first = r.issue_token(device_token("d")).await.expect("first");
    r.issue_token(device_token("d")).await.expect("second");
    let err = r.issue_token(device_token("d")).await.unwrap_err();
    assert!(matches!(err, RegistryError::LimitExceeded(_)), "{err:?}");
    r.revoke_token("acme", &first.credential.id)
        .await
        .expect("revoke");
    r.issue_token(device_token("d"))
        .await
        .expect("room again after a revocation");
    let listed = r.list_tokens("acme", Some("d")).await.expect("list");
    assert_eq!(listed.len(), 3, "revoked tokens stay listed");
    assert_eq!(listed.iter().filter(|c| c.is_revoked()).count(), 1);
}

#[tokio::test]
async fn the_devices_quota_holds_across_registry_replicas() {
    // Two registries over one store: two replicas of the registry service.
    let f = fixture().await;
    let other = Registry::new(f.store.clone(), RegistryConfig::default());
    let mut settings = TenantSettings::default();
    settings
        .quotas
        .set(tributary_core::quota::Quota::Devices, 3)
        .expect("quota");
    f.registry
        .create_tenant(NewTenant {
            settings,
            ..new_tenant("small")
        })
        .await
        .expect("tenant");
    let device = |id: &str| NewDevice {
        tenant: "small".into(),
        ..new_device(id)
    };
    f.registry.create_device(device("d1")).await.expect("d1");
    other.create_device(device("d2")).await.expect("d2");
    f.registry.create_device(device("d3")).await.expect("d3");
    // `other` counted 2 when it created d2; it must see d3 too.
    let fourth = other.create_device(device("d4")).await;
    assert!(
        matches!(fourth, Err(RegistryError::Quota(_))),
        "a fourth device past a quota of 3: {fourth:?}"
    );
    // A deletion on one replica makes room on the other.
    f.registry
        .delete_device("small", "d1")
        .await
        .expect("delete");
    other
        .create_device(device("d4"))
        .await
        .expect("d4 fits now");
}

#[tokio::test]
async fn a_tenants_lwm2m_metric_names_are_checked_set_cleared_and_in_its_policy() {
    let f = fixture().await;
    let set = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let t = f
        .registry
        .set_tenant_lwm2m_metrics(
            "acme",
            &set(&[("3442/1120", "flow_rate"), ("3/9", "battery integer")]),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(t.settings.lwm2m_metrics.len(), 2);
    let policy = f.registry.tenant_policy("acme").await.unwrap();
    let flow = policy.lwm2m_metrics.get(3442, 1120).unwrap();
    assert_eq!((flow.metric.as_str(), flow.integer), ("flow_rate", false));
    assert!(policy.lwm2m_metrics.get(3, 9).unwrap().integer);
    // Cleared: the default applies again.
    let t = f
        .registry
        .set_tenant_lwm2m_metrics("acme", &[], &["3/9".to_owned()])
        .await
        .unwrap();
    assert_eq!(t.settings.lwm2m_metrics.len(), 1);
    // Bad entries are refused, naming the field, and change nothing.
    for bad in [("3442", "x"), ("1/1", "not a name!"), ("1/1", "x bool")] {
        let e = f
            .registry
            .set_tenant_lwm2m_metrics("acme", &set(&[bad]), &[])
            .await
            .unwrap_err();
        assert!(matches!(e, RegistryError::Invalid(_)), "{bad:?}: {e:?}");
    }
    // So is a mapping past its limit, even when set in several calls.
    let half: Vec<(String, String)> = (0..200)
        .map(|i| (format!("5/{i}"), "m".to_owned()))
        .collect();
    f.registry
        .set_tenant_lwm2m_metrics("acme", &half, &[])
        .await
        .unwrap();
    let more: Vec<(String, String)> = (200..300)
        .map(|i| (format!("5/{i}"), "m".to_owned()))
        .collect();
    assert!(
        f.registry
            .set_tenant_lwm2m_metrics("acme", &more, &[])
            .await
            .is_err()
    );
    assert_eq!(
        f.registry
            .tenant("acme")
            .await
            .unwrap()
            .settings
            .lwm2m_metrics
            .len(),
        201
    );
}
