//! The registry store conformance suite against the embedded redb store,
//! plus what only a file-backed store can show: records survive a reopen.

use tributary_registry::store::{DeviceStore, Expect};
use tributary_registry::{EmbeddedRegistryStore, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedRegistryStore::open(&dir.path().join("registry.redb")).expect("open");
    conformance::run_all(store.as_ref()).await;
}

#[tokio::test]
async fn records_survive_reopening_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nested").join("registry.redb");
    let device = tributary_registry::DeviceRecord {
        tenant: "acme".into(),
        id: "pump-1".into(),
        labels: [("site".to_string(), "north".to_string())].into(),
        metadata: Default::default(),
        disabled: true,
        created_at_ns: 1,
        updated_at_ns: 2,
        revision: 1,
    };
    {
        let store = EmbeddedRegistryStore::open(&path).expect("open creates parent directories");
        store
            .put_device(&device, Expect::Absent)
            .await
            .expect("put");
    }
    let reopened = EmbeddedRegistryStore::open(&path).expect("reopen");
    assert_eq!(
        reopened.get_device("acme", "pump-1").await.expect("get"),
        Some(device)
    );
}

#[test]
fn a_second_open_of_the_same_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("registry.redb");
    let _first = EmbeddedRegistryStore::open(&path).expect("open");
    let second = EmbeddedRegistryStore::open(&path);
    assert!(
        matches!(
            second,
            Err(tributary_registry::RegistryError::Unavailable(_))
        ),
        "a file held by another store must not be opened twice: {second:?}"
    );
}
