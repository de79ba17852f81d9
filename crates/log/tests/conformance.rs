//! The log conformance suite, run against [`EmbeddedLog`]: one test per check.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use tempfile::TempDir;
use tributary_log::conformance::{self, LogFactory};
use tributary_log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use tributary_log::{Log, LogError};

/// Creates each topic in its own directory under one temporary root.
struct EmbeddedFactory {
    root: TempDir,
    next: AtomicU32,
    /// [`EmbeddedLogConfig::writer_threads`] of every log (0: automatic).
    writer_threads: u32,
}

impl EmbeddedFactory {
    fn new() -> Self {
        Self::with_writer_threads(0)
    }

    fn with_writer_threads(writer_threads: u32) -> Self {
        // Under target/ rather than /tmp, which may be a tmpfs: fsync should be real.
        let root = tempfile::Builder::new()
            .prefix("log-conformance-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("temporary directory");
        Self {
            root,
            next: AtomicU32::new(0),
            writer_threads,
        }
    }
}

#[async_trait]
impl LogFactory for EmbeddedFactory {
    async fn create(&self, partitions: u32) -> Result<Arc<dyn Log>, LogError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let topic = format!("conformance-{n}");
        let log = EmbeddedLog::open(
            self.root.path().join(&topic),
            EmbeddedLogConfig {
                writer_threads: self.writer_threads,
                ..EmbeddedLogConfig::new(topic, partitions)
            },
        )
        .await?;
        Ok(log)
    }
}

macro_rules! checks {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let factory = EmbeddedFactory::new();
                if let Err(e) = conformance::$name(&factory).await {
                    panic!("{e}");
                }
            }
        )*

        #[test]
        fn every_check_has_a_test() {
            assert_eq!(&[$(stringify!($name)),*], conformance::CHECKS);
        }
    };
}

checks!(
    append_assigns_consecutive_offsets,
    same_key_same_partition_in_order,
    append_batch_spans_partitions,
    concurrent_appends_get_distinct_offsets,
    earliest_reads_everything_once_in_order,
    latest_skips_existing_records,
    group_resumes_after_commit,
    ephemeral_consumer_cannot_commit,
    headers_and_timestamps_round_trip,
    empty_and_large_values_round_trip,
    poll_respects_max_records,
    poll_times_out_empty,
    poll_wakes_up_on_append,
    watermarks_track_appends,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_passes() {
    if let Err(failures) = conformance::run_all(&EmbeddedFactory::new()).await {
        panic!("{failures}");
    }
}

/// One writer thread committing every partition, and three threads sharing
/// the partitions unevenly (thread `p % 3`), must both behave as the suite
/// says, whatever the machine's automatic choice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_passes_with_one_writer_thread() {
    if let Err(failures) = conformance::run_all(&EmbeddedFactory::with_writer_threads(1)).await {
        panic!("{failures}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_passes_with_three_writer_threads() {
    if let Err(failures) = conformance::run_all(&EmbeddedFactory::with_writer_threads(3)).await {
        panic!("{failures}");
    }
}
