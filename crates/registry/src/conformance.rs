//! The conformance suite every [`RegistryStore`] passes.
//!
//! Run [`run_all`] from an implementation's tests (the embedded store's in
//! `tests/conformance.rs`; the ScyllaDB store's against a live cluster). The
//! checks panic with a message naming what broke, like `assert!`. Each check
//! works in tenants with a random suffix, so several runs can share one
//! database or keyspace, and none assumes the store is empty.

use std::collections::BTreeMap;

use crate::RegistryError;
use crate::store::{
    CredentialKind, CredentialRecord, DeviceRecord, Expect, PresenceRecord, RegistryStore,
    TenantRecord, TenantSettings, TokenHash,
};

/// Runs every check.
pub async fn run_all(store: &dyn RegistryStore) {
    tenants_round_trip(store).await;
    tenant_listing_pages(store).await;
    devices_round_trip(store).await;
    device_paging(store).await;
    device_paging_descending(store).await;
    device_delete(store).await;
    credentials_round_trip(store).await;
    credential_listing(store).await;
    credential_revocation(store).await;
    presence_round_trip(store).await;
    tenant_isolation(store).await;
    rules_round_trip(store).await;
    webhooks_round_trip(store).await;
    silences_round_trip(store).await;
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", tributary_auth::random_id())
}

fn tenant(name: &str) -> TenantRecord {
    TenantRecord {
        name: name.to_owned(),
        display_name: format!("Tenant {name}"),
        created_at_ns: 1_700_000_000_000_000_000,
        settings: TenantSettings {
            auto_provision: false,
            device_tag: "host".into(),
            // Quotas are stored with the tenant, and read back exactly.
            quotas: tributary_core::quota::Quotas::from_named([
                ("connections", 7),
                ("bytes_per_sec", 1 << 40),
            ])
            .expect("valid quotas"),
            // So is how long its data is kept.
            retention: tributary_core::retention::RetentionSettings::from_named([
                ("raw", "30d"),
                ("1m", "1y"),
                ("1h", "forever"),
            ])
            .expect("valid retention"),
            // And its LwM2M metric names.
            lwm2m_metrics: [("3442/1120", "flow_rate"), ("3/9", "battery integer")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        },
        revision: 1,
    }
}

fn device(tenant: &str, id: &str) -> DeviceRecord {
    DeviceRecord {
        tenant: tenant.to_owned(),
        id: id.to_owned(),
        labels: BTreeMap::from([
            ("fleet".into(), "west".into()),
            ("model".into(), "h-1".into()),
        ]),
        metadata: BTreeMap::from([("note".into(), "ünïcödé, with = and ,".into())]),
        disabled: false,
        created_at_ns: 1_700_000_000_000_000_001,
        updated_at_ns: 1_700_000_000_000_000_002,
        revision: 1,
    }
}

fn hash(seed: &str) -> TokenHash {
    tributary_auth::hash_token(&format!("{seed}-{}", tributary_auth::random_id()))
}

fn credential(tenant: &str, id: &str, device: Option<&str>) -> CredentialRecord {
    CredentialRecord {
        id: id.to_owned(),
        tenant: tenant.to_owned(),
        kind: if device.is_some() {
            CredentialKind::DeviceToken
        } else {
            CredentialKind::TenantIngestToken
        },
        device: device.map(str::to_owned),
        name: format!("token {id}"),
        token_hash: hash(id),
        created_at_ns: 1_700_000_000_000_000_003,
        expires_at_ns: Some(1_800_000_000_000_000_000),
        revoked_at_ns: None,
        grants: None,
    }
}

fn assert_conflict<T: std::fmt::Debug>(result: Result<T, RegistryError>, what: &str) {
    match result {
        Err(RegistryError::Conflict(_)) => {}
        other => panic!("{what}: expected a Conflict error, got {other:?}"),
    }
}

/// Tenants: conditional puts, get, overwrite by revision.
pub async fn tenants_round_trip(store: &dyn RegistryStore) {
    let name = unique("rt");
    assert_eq!(
        store.get_tenant(&name).await.expect("get_tenant"),
        None,
        "unknown tenant"
    );
    let mut t = tenant(&name);
    store
        .put_tenant(&t, Expect::Absent)
        .await
        .expect("create tenant");
    assert_eq!(
        store.get_tenant(&name).await.expect("get_tenant").as_ref(),
        Some(&t),
        "tenant round trip"
    );
    assert_conflict(
        store.put_tenant(&t, Expect::Absent).await,
        "creating an existing tenant",
    );

    t.settings.auto_provision = true;
    t.revision = 2;
    store
        .put_tenant(&t, Expect::Revision(1))
        .await
        .expect("update tenant at revision 1");
    assert_conflict(
        store.put_tenant(&t, Expect::Revision(1)).await,
        "updating at a stale revision",
    );
    assert_eq!(
        store.get_tenant(&name).await.expect("get_tenant").as_ref(),
        Some(&t),
        "updated tenant"
    );
    assert_conflict(
        store
            .put_tenant(&tenant(&unique("rt")), Expect::Revision(1))
            .await,
        "updating a tenant that does not exist",
    );
}

/// Tenant listing: sorted, paged without gaps or duplicates.
pub async fn tenant_listing_pages(store: &dyn RegistryStore) {
    let prefix = unique("tl");
    let names: Vec<String> = ["c", "a", "e", "b", "d"]
        .iter()
        .map(|s| format!("{prefix}-{s}"))
        .collect();
    for name in &names {
        store
            .put_tenant(&tenant(name), Expect::Absent)
            .await
            .expect("create tenant");
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list_tenants(after.as_deref(), 2)
            .await
            .expect("list_tenants");
        assert!(
            page.len() <= 2,
            "a page holds at most `limit` tenants, got {}",
            page.len()
        );
        let Some(last) = page.last() else { break };
        after = Some(last.name.clone());
        seen.extend(page.into_iter().map(|t| t.name));
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        seen, sorted,
        "tenant pages are sorted and without duplicates"
    );
    let ours: Vec<&String> = seen.iter().filter(|n| n.starts_with(&prefix)).collect();
    let mut expected: Vec<&String> = names.iter().collect();
    expected.sort();
    assert_eq!(ours, expected, "every tenant is listed exactly once");
    assert!(
        store
            .list_tenants(None, 0)
            .await
            .expect("list_tenants")
            .is_empty(),
        "limit 0 lists nothing"
    );
}

/// Devices: conditional puts, get, overwrite by revision.
pub async fn devices_round_trip(store: &dyn RegistryStore) {
    let t = unique("dev");
    let mut d = device(&t, "truck-7.a:b_c");
    assert_eq!(
        store.get_device(&t, &d.id).await.expect("get_device"),
        None,
        "unknown device"
    );
    store
        .put_device(&d, Expect::Absent)
        .await
        .expect("create device");
    assert_eq!(
        store
            .get_device(&t, &d.id)
            .await
            .expect("get_device")
            .as_ref(),
        Some(&d),
        "device round trip"
    );
    assert_conflict(
        store.put_device(&d, Expect::Absent).await,
        "creating an existing device",
    );

    d.disabled = true;
    d.labels.insert("region".into(), "eu".into());
    d.revision = 2;
    store
        .put_device(&d, Expect::Revision(1))
        .await
        .expect("update at revision 1");
    assert_conflict(
        store.put_device(&d, Expect::Revision(1)).await,
        "updating at a stale revision",
    );
    assert_eq!(
        store
            .get_device(&t, &d.id)
            .await
            .expect("get_device")
            .as_ref(),
        Some(&d),
        "updated device"
    );

    let mut other = device(&t, "other");
    store
        .put_device(&other, Expect::Any)
        .await
        .expect("unconditional create");
    other.metadata.clear();
    store
        .put_device(&other, Expect::Any)
        .await
        .expect("unconditional overwrite");
    assert_eq!(
        store.get_device(&t, "other").await.expect("get_device"),
        Some(other),
        "overwritten device"
    );
    assert_conflict(
        store
            .put_device(&device(&t, "ghost"), Expect::Revision(1))
            .await,
        "updating a missing device",
    );
}

/// Device listing: sorted by id, paged with no gaps and no duplicates.
pub async fn device_paging(store: &dyn RegistryStore) {
    let t = unique("page");
    // Inserted out of order; ids chosen so byte order differs from insertion.
    let mut ids: Vec<String> = (0..23).map(|i| format!("d{:02}", (i * 7) % 23)).collect();
    ids.extend([
        "D-upper".to_string(),
        "a".to_string(),
        "a.b".to_string(),
        "z:9".to_string(),
    ]);
    for id in &ids {
        store
            .put_device(&device(&t, id), Expect::Absent)
            .await
            .expect("create device");
    }
    let mut expected = ids.clone();
    expected.sort();

    for limit in [1, 4, 7, 27, 100] {
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = store
                .list_devices(&t, after.as_deref(), limit)
                .await
                .expect("list_devices");
            assert!(page.len() <= limit, "a page holds at most {limit} devices");
            assert!(
                page.iter().all(|d| d.tenant == t),
                "listing stays in its tenant"
            );
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            seen.extend(page.into_iter().map(|d| d.id));
        }
        assert_eq!(
            seen, expected,
            "paging with limit {limit}: every device once, sorted by id"
        );
    }

    let from_middle = store
        .list_devices(&t, Some("d10a"), 3)
        .await
        .expect("list_devices");
    let ids_after: Vec<String> = from_middle.into_iter().map(|d| d.id).collect();
    assert_eq!(
        ids_after,
        ["d11", "d12", "d13"],
        "`after` need not be an existing id"
    );
    assert!(
        store
            .list_devices(&t, None, 0)
            .await
            .expect("list_devices")
            .is_empty(),
        "limit 0 lists nothing"
    );
    assert!(
        store
            .list_devices(&unique("empty"), None, 10)
            .await
            .expect("list_devices")
            .is_empty(),
        "a tenant without devices lists nothing"
    );
}

/// Devices list from the greatest id down, a page at a time, and never
/// reach into the tenants that sort just before or after.
pub async fn device_paging_descending(store: &dyn RegistryStore) {
    let t = unique("desc");
    // Neighbours: a tenant whose name extends this one's, and one that
    // sorts just before it.
    let longer = format!("{t}0");
    let shorter = t[..t.len() - 1].to_owned();
    for (tenant, id) in [(&longer, "a"), (&longer, "zz"), (&shorter, "zz")] {
        store
            .put_device(&device(tenant, id), Expect::Absent)
            .await
            .expect("create a neighbour's device");
    }
    let mut ids: Vec<String> = (0..23).map(|i| format!("d{:02}", (i * 7) % 23)).collect();
    ids.extend(["D-upper".to_string(), "a".to_string(), "z:9".to_string()]);
    for id in &ids {
        store
            .put_device(&device(&t, id), Expect::Absent)
            .await
            .expect("create device");
    }
    let mut expected = ids.clone();
    expected.sort();
    expected.reverse();

    for limit in [1, 4, 26, 100] {
        let mut seen = Vec::new();
        let mut before: Option<String> = None;
        loop {
            let page = store
                .list_devices_desc(&t, before.as_deref(), limit)
                .await
                .expect("list_devices_desc");
            assert!(page.len() <= limit, "a page holds at most {limit} devices");
            assert!(
                page.iter().all(|d| d.tenant == t),
                "a descending listing stays in its tenant"
            );
            let Some(last) = page.last() else { break };
            before = Some(last.id.clone());
            seen.extend(page.into_iter().map(|d| d.id));
        }
        assert_eq!(
            seen, expected,
            "descending paging with limit {limit}: every device once, greatest id first"
        );
    }
    let from_middle: Vec<String> = store
        .list_devices_desc(&t, Some("d10a"), 3)
        .await
        .expect("list_devices_desc")
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(
        from_middle,
        ["d10", "d09", "d08"],
        "`before` need not be an existing id"
    );
    assert!(
        store
            .list_devices_desc(&unique("empty"), None, 10)
            .await
            .expect("list_devices_desc")
            .is_empty(),
        "a tenant without devices lists nothing"
    );
}

/// Deleting a device removes it from lookups, listings and presence.
pub async fn device_delete(store: &dyn RegistryStore) {
    let t = unique("del");
    for id in ["a", "b", "c"] {
        store
            .put_device(&device(&t, id), Expect::Absent)
            .await
            .expect("create device");
    }
    let seen = PresenceRecord {
        online: true,
        last_seen_ns: 42,
        frontend: "mqtt-0".into(),
    };
    store
        .set_presence(&t, "b", &seen)
        .await
        .expect("set_presence");

    assert!(
        store.delete_device(&t, "b").await.expect("delete_device"),
        "deleting an existing device"
    );
    assert_eq!(
        store.get_device(&t, "b").await.expect("get_device"),
        None,
        "deleted device is gone"
    );
    let ids: Vec<String> = store
        .list_devices(&t, None, 10)
        .await
        .expect("list_devices")
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(ids, ["a", "c"], "deleted device is not listed");
    assert_eq!(
        store.get_presence(&t, "b").await.expect("get_presence"),
        None,
        "its presence is gone"
    );
    assert!(
        !store.delete_device(&t, "b").await.expect("delete_device"),
        "deleting twice reports absence"
    );

    store
        .put_device(&device(&t, "b"), Expect::Absent)
        .await
        .expect("re-create a deleted device");
    assert!(
        store
            .get_device(&t, "b")
            .await
            .expect("get_device")
            .is_some(),
        "re-created device"
    );
}

/// Credentials: insert-only puts, get by id and by hash.
pub async fn credentials_round_trip(store: &dyn RegistryStore) {
    let t = unique("cred");
    let c = credential(&t, "c1", Some("dev-1"));
    assert_eq!(
        store
            .get_credential(&t, "c1")
            .await
            .expect("get_credential"),
        None,
        "unknown credential"
    );
    assert_eq!(
        store
            .credential_by_hash(&c.token_hash)
            .await
            .expect("by hash"),
        None,
        "unknown hash"
    );
    store.put_credential(&c).await.expect("put_credential");
    assert_eq!(
        store
            .get_credential(&t, "c1")
            .await
            .expect("get_credential")
            .as_ref(),
        Some(&c),
        "by id"
    );
    assert_eq!(
        store
            .credential_by_hash(&c.token_hash)
            .await
            .expect("by hash")
            .as_ref(),
        Some(&c),
        "by hash"
    );

    let mut same_id = credential(&t, "c1", None);
    same_id.token_hash = hash("fresh");
    assert_conflict(
        store.put_credential(&same_id).await,
        "reusing a credential id",
    );
    assert_eq!(
        store
            .credential_by_hash(&same_id.token_hash)
            .await
            .expect("by hash"),
        None,
        "refused put left nothing"
    );

    let mut same_hash = credential(&t, "c2", None);
    same_hash.token_hash = c.token_hash;
    assert_conflict(
        store.put_credential(&same_hash).await,
        "reusing a token hash",
    );
    assert_eq!(
        store
            .get_credential(&t, "c2")
            .await
            .expect("get_credential"),
        None,
        "refused put left nothing"
    );

    let ingest = credential(&t, "c3", None);
    store
        .put_credential(&ingest)
        .await
        .expect("put ingest credential");
    assert_eq!(
        store
            .credential_by_hash(&ingest.token_hash)
            .await
            .expect("by hash"),
        Some(ingest),
        "ingest by hash"
    );
}

/// Credential listing: by tenant and by device, sorted and paged.
pub async fn credential_listing(store: &dyn RegistryStore) {
    let t = unique("credlist");
    let mut all = Vec::new();
    for i in 0..9 {
        let device = match i % 3 {
            0 => Some("dev-a"),
            1 => Some("dev-b"),
            _ => None,
        };
        let c = credential(&t, &format!("id{}", (i * 4) % 9), device);
        store.put_credential(&c).await.expect("put_credential");
        all.push(c);
    }
    all.sort_by(|a, b| a.id.cmp(&b.id));

    for device in [None, Some("dev-a"), Some("dev-b"), Some("dev-none")] {
        let expected: Vec<&CredentialRecord> = all
            .iter()
            .filter(|c| device.is_none() || c.device.as_deref() == device)
            .collect();
        for limit in [1, 2, 50] {
            let mut seen = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = store
                    .list_credentials(&t, device, after.as_deref(), limit)
                    .await
                    .expect("list_credentials");
                assert!(
                    page.len() <= limit,
                    "a page holds at most {limit} credentials"
                );
                let Some(last) = page.last() else { break };
                after = Some(last.id.clone());
                seen.extend(page);
            }
            let seen: Vec<&CredentialRecord> = seen.iter().collect();
            assert_eq!(
                seen, expected,
                "credentials of {device:?} with limit {limit}: each once, sorted by id"
            );
        }
    }
}

/// Revocation: marks the record, is visible by hash, keeps the first time.
pub async fn credential_revocation(store: &dyn RegistryStore) {
    let t = unique("revoke");
    let c = credential(&t, "r1", Some("dev"));
    store.put_credential(&c).await.expect("put_credential");
    let revoked = store
        .revoke_credential(&t, "r1", 1_000)
        .await
        .expect("revoke")
        .expect("revoked credential");
    assert_eq!(revoked.revoked_at_ns, Some(1_000), "revocation time");
    assert!(revoked.is_revoked());
    let by_hash = store
        .credential_by_hash(&c.token_hash)
        .await
        .expect("by hash")
        .expect("still findable");
    assert!(
        by_hash.is_revoked(),
        "revocation is visible through the hash lookup"
    );
    assert_eq!(
        store
            .get_credential(&t, "r1")
            .await
            .expect("get")
            .expect("exists")
            .revoked_at_ns,
        Some(1_000)
    );

    let again = store
        .revoke_credential(&t, "r1", 2_000)
        .await
        .expect("revoke")
        .expect("still exists");
    assert_eq!(
        again.revoked_at_ns,
        Some(1_000),
        "revoking again keeps the first revocation time"
    );
    assert_eq!(
        store
            .revoke_credential(&t, "missing", 1)
            .await
            .expect("revoke"),
        None,
        "unknown credential"
    );
    let listed = store
        .list_credentials(&t, Some("dev"), None, 10)
        .await
        .expect("list");
    assert!(
        listed.len() == 1 && listed[0].is_revoked(),
        "revoked credentials are still listed"
    );
}

/// Presence: set, get, get many.
pub async fn presence_round_trip(store: &dyn RegistryStore) {
    let t = unique("presence");
    assert_eq!(
        store.get_presence(&t, "d1").await.expect("get_presence"),
        None,
        "never seen"
    );
    let p1 = PresenceRecord {
        online: true,
        last_seen_ns: 10,
        frontend: "mqtt-0".into(),
    };
    store
        .set_presence(&t, "d1", &p1)
        .await
        .expect("set_presence");
    assert_eq!(
        store
            .get_presence(&t, "d1")
            .await
            .expect("get_presence")
            .as_ref(),
        Some(&p1)
    );
    let p1b = PresenceRecord {
        online: false,
        last_seen_ns: 20,
        frontend: String::new(),
    };
    store
        .set_presence(&t, "d1", &p1b)
        .await
        .expect("set_presence");
    assert_eq!(
        store
            .get_presence(&t, "d1")
            .await
            .expect("get_presence")
            .as_ref(),
        Some(&p1b),
        "overwritten"
    );
    let p2 = PresenceRecord {
        online: true,
        last_seen_ns: 30,
        frontend: "http-1".into(),
    };
    store
        .set_presence(&t, "d2", &p2)
        .await
        .expect("set_presence");

    let many = store
        .get_presences(&t, &["d2".into(), "d1".into(), "never".into()])
        .await
        .expect("get_presences");
    assert_eq!(
        many,
        BTreeMap::from([("d1".to_string(), p1b), ("d2".to_string(), p2)]),
        "presence of many"
    );
    assert!(
        store
            .get_presences(&t, &[])
            .await
            .expect("get_presences")
            .is_empty()
    );

    // Groups (presence reports of a reconnect storm): written at once,
    // read back in order across tenants, and devices checked at once.
    let u = unique("presence-group");
    let group: Vec<(String, String, PresenceRecord)> = (0..50)
        .map(|i| {
            let tenant = if i % 2 == 0 { &t } else { &u };
            let p = PresenceRecord {
                online: i % 3 != 0,
                last_seen_ns: 100 + i,
                frontend: format!("mqtt-{i}"),
            };
            (tenant.clone(), format!("g{i}"), p)
        })
        .collect();
    store.set_presences(&group).await.expect("set_presences");
    let mut keys: Vec<(String, String)> = group
        .iter()
        .rev()
        .map(|(t, d, _)| (t.clone(), d.clone()))
        .collect();
    keys.push((t.clone(), "never".into()));
    keys.push((u.clone(), "g0".into()));
    let got = store
        .get_presences_of(&keys)
        .await
        .expect("get_presences_of");
    let mut want: Vec<Option<PresenceRecord>> = group
        .iter()
        .rev()
        .map(|(_, _, p)| Some(p.clone()))
        .collect();
    want.extend([None, None]);
    assert_eq!(got, want, "presence of a group, in order");
    assert!(store.get_presences_of(&[]).await.expect("empty").is_empty());
    store.set_presences(&[]).await.expect("empty group");

    store
        .put_device(&device(&t, "here"), Expect::Absent)
        .await
        .expect("put_device");
    let exist = store
        .devices_exist(&[
            (t.clone(), "here".into()),
            (u.clone(), "here".into()),
            (t.clone(), "gone".into()),
            (t.clone(), "here".into()),
        ])
        .await
        .expect("devices_exist");
    assert_eq!(exist, [true, false, false, true]);
}

/// Tenants never see each other's records, even when one name is a prefix of
/// the other and ids coincide.
pub async fn tenant_isolation(store: &dyn RegistryStore) {
    let a = unique("iso");
    let b = format!("{a}-2");
    let mut da = device(&a, "shared");
    da.labels.insert("owner".into(), "a".into());
    let mut db = device(&b, "shared");
    db.labels.insert("owner".into(), "b".into());
    store
        .put_device(&da, Expect::Absent)
        .await
        .expect("create in a");
    store
        .put_device(&db, Expect::Absent)
        .await
        .expect("same id in b");
    store
        .put_device(&device(&b, "only-b"), Expect::Absent)
        .await
        .expect("create in b");

    assert_eq!(
        store.get_device(&a, "shared").await.expect("get").as_ref(),
        Some(&da),
        "a's device"
    );
    assert_eq!(
        store.get_device(&b, "shared").await.expect("get").as_ref(),
        Some(&db),
        "b's device"
    );
    assert_eq!(
        store.get_device(&a, "only-b").await.expect("get"),
        None,
        "b's device is not in a"
    );
    let in_a: Vec<String> = store
        .list_devices(&a, None, 100)
        .await
        .expect("list")
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(in_a, ["shared"], "a lists only its devices");
    let in_a_after: Vec<String> = store
        .list_devices(&a, Some("shared"), 100)
        .await
        .expect("list")
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert!(
        in_a_after.is_empty(),
        "paging past a's last device does not run into b: {in_a_after:?}"
    );

    let ca = credential(&a, "same-id", Some("shared"));
    let cb = credential(&b, "same-id", Some("shared"));
    store.put_credential(&ca).await.expect("credential in a");
    store
        .put_credential(&cb)
        .await
        .expect("same credential id in b");
    assert_eq!(
        store
            .get_credential(&a, "same-id")
            .await
            .expect("get")
            .as_ref(),
        Some(&ca)
    );
    assert_eq!(
        store
            .get_credential(&b, "same-id")
            .await
            .expect("get")
            .as_ref(),
        Some(&cb)
    );
    let a_creds = store
        .list_credentials(&a, None, None, 100)
        .await
        .expect("list");
    assert_eq!(a_creds, vec![ca.clone()], "a lists only its credentials");
    let a_dev_creds = store
        .list_credentials(&a, Some("shared"), None, 100)
        .await
        .expect("list");
    assert_eq!(
        a_dev_creds,
        vec![ca],
        "a's device lists only a's credentials"
    );

    store
        .revoke_credential(&b, "same-id", 5)
        .await
        .expect("revoke in b");
    let ca_after = store
        .get_credential(&a, "same-id")
        .await
        .expect("get")
        .expect("exists");
    assert!(
        !ca_after.is_revoked(),
        "revoking in b leaves a's credential alone"
    );

    let pa = PresenceRecord {
        online: true,
        last_seen_ns: 1,
        frontend: "f".into(),
    };
    store
        .set_presence(&a, "shared", &pa)
        .await
        .expect("presence in a");
    assert_eq!(
        store.get_presence(&b, "shared").await.expect("get"),
        None,
        "presence is per tenant"
    );
    assert!(
        store
            .delete_device(&b, "shared")
            .await
            .expect("delete in b")
    );
    assert_eq!(
        store.get_device(&a, "shared").await.expect("get").as_ref(),
        Some(&da),
        "deleting in b keeps a's"
    );
    assert_eq!(
        store.get_presence(&a, "shared").await.expect("get"),
        Some(pa),
        "and a's presence"
    );
}

fn rule(tenant: &str, name: &str) -> crate::store::Rule {
    use tributary_rules::{Kind, Op, Severity, Target, Threshold};
    crate::store::Rule {
        tenant: tenant.to_owned(),
        name: name.to_owned(),
        revision: 1,
        target: Target::Selector(
            tributary_core::selector::Selector::parse("kind=freezer,!retired").expect("selector"),
        ),
        metric: "temp".into(),
        kind: Kind::Threshold(Threshold {
            op: Op::Outside(-30.5, -15.0),
            hysteresis: 0.5,
        }),
        for_ns: 600_000_000_000,
        severity: Severity::Critical,
        created_ns: 1_700_000_000_000_000_003,
        description: "ünïcödé, the night shift's pager".into(),
    }
}

/// Rules: conditional puts, get, overwrite by revision, delete, listing
/// pages per tenant.
pub async fn rules_round_trip(store: &dyn RegistryStore) {
    let (t, other) = (unique("rules"), unique("rules-other"));
    let r = rule(&t, "freezer-warm");
    store
        .put_rule(&r, Expect::Absent)
        .await
        .expect("create rule");
    assert_eq!(
        store.get_rule(&t, "freezer-warm").await.expect("get rule"),
        Some(r.clone()),
        "a rule reads back exactly"
    );
    assert!(
        matches!(
            store.put_rule(&r, Expect::Absent).await,
            Err(RegistryError::Conflict(_))
        ),
        "creating an existing rule conflicts"
    );
    let changed = crate::store::Rule {
        revision: 2,
        metric: "humidity".into(),
        ..r.clone()
    };
    assert!(
        matches!(
            store.put_rule(&changed, Expect::Revision(7)).await,
            Err(RegistryError::Conflict(_))
        ),
        "a stale revision conflicts"
    );
    store
        .put_rule(&changed, Expect::Revision(1))
        .await
        .expect("update by revision");
    assert_eq!(
        store.get_rule(&t, "freezer-warm").await.expect("get"),
        Some(changed)
    );
    // Listing: sorted, paged, this tenant's only.
    for name in ["c", "a", "b"] {
        store
            .put_rule(&rule(&t, name), Expect::Absent)
            .await
            .expect("create");
    }
    store
        .put_rule(&rule(&other, "a"), Expect::Absent)
        .await
        .expect("create in another tenant");
    let first = store.list_rules(&t, None, 2).await.expect("list");
    let names: Vec<&str> = first.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["a", "b"], "the first page, by name");
    let rest = store.list_rules(&t, Some("b"), 10).await.expect("list");
    let names: Vec<&str> = rest.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["c", "freezer-warm"],
        "after the cursor, this tenant's only"
    );
    assert!(
        store
            .list_rules(&t, None, 0)
            .await
            .expect("list")
            .is_empty()
    );
    // Delete.
    assert!(store.delete_rule(&t, "a").await.expect("delete"));
    assert!(!store.delete_rule(&t, "a").await.expect("delete again"));
    assert_eq!(store.get_rule(&t, "a").await.expect("get"), None);
    assert_eq!(
        store
            .get_rule(&other, "a")
            .await
            .expect("get")
            .map(|r| r.tenant),
        Some(other.clone()),
        "tenants are apart"
    );
}

/// Webhooks: conditional puts, get, overwrite by revision, delete, listing
/// per tenant; the secret is stored as given.
pub async fn webhooks_round_trip(store: &dyn RegistryStore) {
    use crate::store::WebhookRecord;
    let t = unique("hooks");
    let hook = |name: &str| WebhookRecord {
        tenant: t.clone(),
        name: name.into(),
        url: "https://pager.example.com/hooks/tributary?x=ü".into(),
        secret: "whsec_0123456789abcdef".into(),
        rules: vec!["freezer-warm".into(), "meter-silent".into()],
        min_severity: tributary_rules::Severity::Critical,
        created_at_ns: 1_700_000_000_000_000_004,
        revision: 1,
    };
    store
        .put_webhook(&hook("pager"), Expect::Absent)
        .await
        .expect("create");
    assert_eq!(
        store.get_webhook(&t, "pager").await.expect("get"),
        Some(hook("pager")),
        "a webhook reads back exactly"
    );
    assert!(matches!(
        store.put_webhook(&hook("pager"), Expect::Absent).await,
        Err(RegistryError::Conflict(_))
    ));
    let changed = WebhookRecord {
        url: "http://10.0.0.1/x".into(),
        revision: 2,
        ..hook("pager")
    };
    store
        .put_webhook(&changed, Expect::Revision(1))
        .await
        .expect("update by revision");
    assert!(matches!(
        store.put_webhook(&changed, Expect::Revision(1)).await,
        Err(RegistryError::Conflict(_))
    ));
    store
        .put_webhook(&hook("a"), Expect::Absent)
        .await
        .expect("create");
    let names: Vec<String> = store
        .list_webhooks(&t, None, 10)
        .await
        .expect("list")
        .into_iter()
        .map(|h| h.name)
        .collect();
    assert_eq!(names, ["a", "pager"]);
    let after: Vec<String> = store
        .list_webhooks(&t, Some("a"), 10)
        .await
        .expect("list")
        .into_iter()
        .map(|h| h.name)
        .collect();
    assert_eq!(after, ["pager"]);
    assert!(store.delete_webhook(&t, "a").await.expect("delete"));
    assert!(!store.delete_webhook(&t, "a").await.expect("delete again"));
    assert_eq!(store.get_webhook(&t, "a").await.expect("get"), None);
}

/// Silences: written, replaced by revision, listed by key, deleted.
pub async fn silences_round_trip(store: &dyn RegistryStore) {
    use crate::store::Silence;
    let t = unique("silences");
    let silence = |rule: &str, device: &str| Silence {
        tenant: t.clone(),
        key: Silence::key_of(rule, device),
        rule: rule.into(),
        device: device.into(),
        until_ns: 1_700_000_000_000_000_009,
        comment: "maintenance, ünïcödé".into(),
        created_by: "ops@example.com".into(),
        created_at_ns: 1_700_000_000_000_000_005,
        revision: 1,
    };
    store
        .put_silence(&silence("warm", "d1"), Expect::Absent)
        .await
        .expect("create");
    assert!(matches!(
        store
            .put_silence(&silence("warm", "d1"), Expect::Absent)
            .await,
        Err(RegistryError::Conflict(_))
    ));
    let longer = Silence {
        until_ns: 1_800_000_000_000_000_000,
        revision: 2,
        ..silence("warm", "d1")
    };
    store
        .put_silence(&longer, Expect::Revision(1))
        .await
        .expect("replace by revision");
    store
        .put_silence(&silence("warm", ""), Expect::Any)
        .await
        .expect("create, any");
    store
        .put_silence(&silence("cold", "d2"), Expect::Absent)
        .await
        .expect("create");
    let listed = store.list_silences(&t, None, 10).await.expect("list");
    let keys: Vec<&str> = listed.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["cold/d2", "warm/*", "warm/d1"]);
    assert_eq!(listed[2], longer, "a silence reads back exactly");
    let after = store
        .list_silences(&t, Some("cold/d2"), 1)
        .await
        .expect("list");
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].key, "warm/*");
    assert!(store.delete_silence(&t, "warm/*").await.expect("delete"));
    assert!(
        !store
            .delete_silence(&t, "warm/*")
            .await
            .expect("delete again")
    );
    assert_eq!(
        store.list_silences(&t, None, 10).await.expect("list").len(),
        2
    );
    assert!(
        store
            .list_silences(&unique("other"), None, 10)
            .await
            .expect("list")
            .is_empty(),
        "another tenant sees none"
    );
}
