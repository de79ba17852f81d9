//! The store conformance suite against `EmbeddedStore`, in configurations
//! that send reads to each of its layers: the live head, chunks of every
//! size, and a head under constant background compaction.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tributary_core::rollup::{Rollup, RollupKey};
use tributary_core::{Sample, SeriesKey};
use tributary_store::embedded::{EmbeddedStore, EmbeddedStoreConfig};
use tributary_store::{DevicePoints, Latest, Order, Store, StoreError, conformance};

const NINETY_DAYS: Duration = Duration::from_secs(90 * 86_400);

fn open(dir: &tempfile::TempDir, config: EmbeddedStoreConfig) -> Arc<EmbeddedStore> {
    EmbeddedStore::open(dir.path(), config).expect("store opens")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_config_passes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir, EmbeddedStoreConfig::default());
    conformance::run_all(store.as_ref(), Some(NINETY_DAYS)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_forever_passes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(
        &dir,
        EmbeddedStoreConfig {
            retention: None,
            ..EmbeddedStoreConfig::default()
        },
    );
    conformance::run_all(store.as_ref(), None).await;
}

/// Every flush also compacts, into chunks of at most 3 points, so every
/// read comes from chunks and crosses chunk boundaries, and every overwrite
/// or replay merges into existing chunks.
#[derive(Debug)]
struct CompactOnFlush(Arc<EmbeddedStore>);

#[async_trait]
impl Store for CompactOnFlush {
    async fn write(&self, batch: &[DevicePoints]) -> Result<(), StoreError> {
        self.0.write(batch).await
    }
    async fn flush(&self) -> Result<(), StoreError> {
        self.0.flush().await?;
        self.0.compact().await
    }
    async fn list_metrics(&self, tenant: &str, device: &str) -> Result<Vec<String>, StoreError> {
        self.0.list_metrics(tenant, device).await
    }
    async fn scan(
        &self,
        k: &SeriesKey,
        from: i64,
        to: i64,
        order: Order,
        limit: usize,
    ) -> Result<Vec<Sample>, StoreError> {
        self.0.scan(k, from, to, order, limit).await
    }
    async fn latest(
        &self,
        tenant: &str,
        device: &str,
        metrics: &[String],
    ) -> Result<Vec<Latest>, StoreError> {
        self.0.latest(tenant, device, metrics).await
    }
    async fn get_rollups(&self, keys: &[RollupKey]) -> Result<Vec<Option<Rollup>>, StoreError> {
        self.0.get_rollups(keys).await
    }
    async fn write_rollups(&self, rows: &[(RollupKey, Rollup)]) -> Result<(), StoreError> {
        self.0.write_rollups(rows).await
    }
    async fn scan_rollups(
        &self,
        series: &SeriesKey,
        width_ns: i64,
        from_ns: i64,
        to_ns: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Rollup)>, StoreError> {
        self.0
            .scan_rollups(series, width_ns, from_ns, to_ns, limit)
            .await
    }
    async fn rollups_since(&self, width_ns: i64) -> Result<Option<i64>, StoreError> {
        self.0.rollups_since(width_ns).await
    }
    async fn mark_rollups_since(&self, width_ns: i64, since_ns: i64) -> Result<i64, StoreError> {
        self.0.mark_rollups_since(width_ns, since_ns).await
    }
    async fn apply_retention(&self, now_ns: i64) -> Result<u64, StoreError> {
        self.0.apply_retention(now_ns).await
    }

    fn set_retention(&self, policy: std::sync::Arc<tributary_core::retention::RetentionPolicy>) {
        self.0.set_retention(policy)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_from_tiny_chunks_pass() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(
        &dir,
        EmbeddedStoreConfig {
            chunk_max_points: 3,
            ..EmbeddedStoreConfig::default()
        },
    );
    let wrapped = CompactOnFlush(Arc::clone(&store));
    conformance::run_all(&wrapped, Some(NINETY_DAYS)).await;
    let disk = store.disk_stats().await.expect("disk stats");
    assert!(
        disk.chunks > 100,
        "the suite's points went to chunks: {disk:?}"
    );
    assert_eq!(
        disk.wal_rows, 0,
        "compaction deleted the WAL rows it covered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constant_background_compaction_passes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = EmbeddedStoreConfig {
        memtable_max_points: 600,
        chunk_max_points: 16,
        max_write_wait: Duration::from_secs(10),
        ..EmbeddedStoreConfig::default()
    };
    let store = open(&dir, config);
    conformance::run_all(store.as_ref(), Some(NINETY_DAYS)).await;
    assert!(
        store.stats().compactions > 0,
        "the background compactor ran: {:?}",
        store.stats()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_retention_hides_expired_points() {
    let dir = tempfile::tempdir().expect("temp dir");
    let retention = Duration::from_secs(3600);
    let store = open(
        &dir,
        EmbeddedStoreConfig {
            retention: Some(retention),
            ..EmbeddedStoreConfig::default()
        },
    );
    conformance::retention_hides_expired_points(store.as_ref(), retention).await;
    let wrapped = CompactOnFlush(Arc::clone(&store));
    conformance::retention_hides_expired_points(&wrapped, retention).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_series_gate_passes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir, EmbeddedStoreConfig::default());
    conformance::series_gate_run_all(store.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_alert_history_passes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir, EmbeddedStoreConfig::default());
    conformance::alerts_run_all(store.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_pass_and_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let store = open(&dir, EmbeddedStoreConfig::default());
        conformance::checkpoint_run_all(store.as_ref()).await;
        tributary_store::CheckpointStore::save_checkpoint(
            store.as_ref(),
            "g",
            1,
            42,
            vec![(b"k".to_vec(), Some(b"v".to_vec()))],
        )
        .await
        .expect("save");
    }
    let store = open(&dir, EmbeddedStoreConfig::default());
    let got = tributary_store::CheckpointStore::load_checkpoint(store.as_ref(), "g", 1)
        .await
        .expect("load")
        .expect("kept");
    assert_eq!(
        (got.offset, got.rows),
        (42, vec![(b"k".to_vec(), b"v".to_vec())])
    );
}
