//! The store and registry conformance suites, and the migrations, against a
//! real ScyllaDB (or Cassandra) node.
//!
//! Every test here needs `TRIBUTARY_TEST_SCYLLA=host:port` and fails loudly
//! without it: it never passes without having run. `scripts/test.sh` skips
//! them by name (`--skip scylla_conformance_`) when the variable is unset,
//! and says so. To run them:
//!
//! ```sh
//! docker run -p 9042:9042 scylladb/scylla --smp 1 --developer-mode 1
//! TRIBUTARY_TEST_SCYLLA=127.0.0.1:9042 cargo test -p tributary-scylla --test scylla_conformance
//! ```
//!
//! Each test works in a keyspace of its own (SimpleStrategy, one replica),
//! named with a random suffix, and drops it at the end, pass or fail.

use std::hash::{BuildHasher, RandomState};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use scylla::client::session::Session;
use tributary_core::rollup::Tiers;
use tributary_scylla::{
    Replication, SCHEMA_VERSION, ScyllaConfig, ScyllaError, ScyllaRegistryStore, ScyllaStore,
};

const THIRTY_DAYS: Duration = Duration::from_secs(30 * 86_400);

fn node() -> String {
    std::env::var("TRIBUTARY_TEST_SCYLLA").unwrap_or_else(|_| {
        panic!(
            "TRIBUTARY_TEST_SCYLLA is not set: these tests need a ScyllaDB node \
             (e.g. `docker run -p 9042:9042 scylladb/scylla --smp 1 --developer-mode 1`, \
             then TRIBUTARY_TEST_SCYLLA=127.0.0.1:9042), or skip them with \
             `-- --skip scylla_conformance_` as scripts/test.sh does"
        )
    })
}

fn config(tag: &str) -> ScyllaConfig {
    let suffix = RandomState::new().hash_one((tributary_core::time::now_ns(), std::process::id()));
    ScyllaConfig {
        nodes: vec![node()],
        keyspace: format!("tributary_test_{tag}_{suffix:016x}"),
        replication: Replication::SimpleStrategy {
            replication_factor: 1,
        },
        retention: Some(THIRTY_DAYS),
        ..ScyllaConfig::default()
    }
}

/// Creates the keyspace of `config`, runs `test`, and drops the keyspace
/// whether the test passed or panicked.
async fn in_keyspace<F, Fut>(config: ScyllaConfig, test: F)
where
    F: FnOnce(ScyllaConfig, Arc<Session>) -> Fut,
    Fut: Future<Output = ()>,
{
    let session = tributary_scylla::connect(&config)
        .await
        .unwrap_or_else(|e| panic!("connecting to {:?}: {e}", config.nodes));
    tributary_scylla::migrate(&session, &config)
        .await
        .unwrap_or_else(|e| panic!("migrating keyspace {}: {e}", config.keyspace));
    let outcome = AssertUnwindSafe(test(config.clone(), Arc::clone(&session)))
        .catch_unwind()
        .await;
    let dropped = session
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {}", config.keyspace), ())
        .await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    dropped.unwrap_or_else(|e| panic!("dropping keyspace {}: {e}", config.keyspace));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_conformance_store() {
    in_keyspace(config("store"), |config, session| async move {
        let store = ScyllaStore::new(Arc::clone(&session), &config)
            .await
            .expect("store opens");
        store
            .prepare_rollup_tiers(&Tiers::default())
            .await
            .expect("rollup tables");
        tributary_store::conformance::run_all(store.as_ref(), Some(THIRTY_DAYS)).await;

        // The same keyspace, through a store that keeps points forever.
        let forever = ScyllaConfig {
            retention: None,
            ..config
        };
        let store = ScyllaStore::new(session, &forever)
            .await
            .expect("store opens");
        store
            .prepare_rollup_tiers(&Tiers::default())
            .await
            .expect("rollup tables");
        tributary_store::conformance::run_all(store.as_ref(), None).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_conformance_store_with_tiny_batches() {
    // One row per batch and no index cache: every write path is exercised
    // with as many requests as it can make.
    let config = ScyllaConfig {
        max_batch_rows: 1,
        index_cache_entries: 0,
        ..config("batches")
    };
    in_keyspace(config, |config, session| async move {
        let store = ScyllaStore::new(session, &config)
            .await
            .expect("store opens");
        store
            .prepare_rollup_tiers(&Tiers::default())
            .await
            .expect("rollup tables");
        tributary_store::conformance::run_all(store.as_ref(), Some(THIRTY_DAYS)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_conformance_series_gate() {
    in_keyspace(config("gate"), |config, session| async move {
        let gate = tributary_scylla::ScyllaSeriesGate::new(Arc::clone(&session), &config)
            .await
            .expect("gate opens");
        tributary_store::conformance::series_gate_run_all(gate.as_ref()).await;
        // Without its memory of known series, every admission asks the
        // cluster, and two gates (two frontends) count a series once.
        let uncached = ScyllaConfig {
            index_cache_entries: 0,
            ..config
        };
        let (a, b) = (
            tributary_scylla::ScyllaSeriesGate::new(Arc::clone(&session), &uncached)
                .await
                .expect("gate opens"),
            tributary_scylla::ScyllaSeriesGate::new(session, &uncached)
                .await
                .expect("gate opens"),
        );
        tributary_store::conformance::series_gate_run_all(a.as_ref()).await;
        use tributary_core::series::{SeriesGate as _, SeriesRefused};
        assert_eq!(a.admit("shared", "d1", &["m"], 1).await, Ok(()));
        assert_eq!(
            b.admit("shared", "d1", &["m"], 1).await,
            Ok(()),
            "known to the cluster"
        );
        assert_eq!(
            b.admit("shared", "d1", &["n"], 1).await,
            Err(SeriesRefused::TenantQuota { limit: 1 }),
            "counted once, by whichever gate created it"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_conformance_checkpoints() {
    for rows in [100, 2] {
        // Two rows a batch: a save spans several batches.
        let config = ScyllaConfig {
            max_batch_rows: rows,
            ..config("checkpoints")
        };
        in_keyspace(config, |config, session| async move {
            let store = tributary_scylla::ScyllaCheckpoints::new(session, &config)
                .await
                .expect("checkpoints open");
            tributary_store::conformance::checkpoint_run_all(store.as_ref()).await;
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_conformance_alerts() {
    in_keyspace(config("alerts"), |config, session| async move {
        let store = tributary_scylla::ScyllaAlerts::new(
            session,
            &config,
            std::time::Duration::from_secs(30 * 86_400),
        )
        .await
        .expect("alert history open");
        tributary_store::conformance::alerts_run_all(store.as_ref()).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_conformance_registry() {
    in_keyspace(config("registry"), |config, session| async move {
        let store = ScyllaRegistryStore::new(session, &config)
            .await
            .expect("registry store opens");
        tributary_registry::conformance::run_all(store.as_ref()).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_conformance_migrations() {
    in_keyspace(config("schema"), |config, session| async move {
        let versions = tributary_scylla::schema::applied_versions(&session, &config.keyspace)
            .await
            .expect("versions");
        assert_eq!(
            versions,
            (1..=SCHEMA_VERSION).collect::<Vec<_>>(),
            "every migration is recorded once"
        );
        let again = tributary_scylla::migrate(&session, &config)
            .await
            .expect("migrating again");
        assert!(
            again.is_empty(),
            "a current schema applies nothing: {again:?}"
        );

        session
            .query_unpaged(
                format!(
                    "INSERT INTO {}.schema_migrations (version, description, applied_at_ms) \
                     VALUES (?, 'from a newer build', 0)",
                    config.keyspace
                ),
                (SCHEMA_VERSION + 1,),
            )
            .await
            .expect("recording a future version");
        match tributary_scylla::migrate(&session, &config).await {
            Err(ScyllaError::Schema(msg)) => assert!(msg.contains("upgrade"), "{msg}"),
            other => panic!("a newer schema must be refused, got {other:?}"),
        }
    })
    .await;
}
