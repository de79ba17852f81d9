//! The log conformance suite (the same one the embedded log passes), run
//! against `KafkaLog` on a real Kafka-protocol broker (Tansu): one test per
//! check, each with its own broker, plus `run_all` on one broker.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use common::{Tansu, unique_topic};
use tributary_log::conformance::{self, LogFactory};
use tributary_log::{Log, LogError};
use tributary_log_kafka::KafkaLog;

/// Creates a uniquely named topic per call on one broker.
struct KafkaFactory<'a> {
    broker: &'a Tansu,
    prefix: String,
    next: AtomicU32,
}

impl<'a> KafkaFactory<'a> {
    fn new(broker: &'a Tansu) -> Self {
        Self {
            broker,
            prefix: unique_topic("conformance"),
            next: AtomicU32::new(0),
        }
    }
}

#[async_trait]
impl LogFactory for KafkaFactory<'_> {
    async fn create(&self, partitions: u32) -> Result<Arc<dyn Log>, LogError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let topic = format!("{}-{n}", self.prefix);
        let log = KafkaLog::connect(self.broker.config(&topic, partitions)).await?;
        Ok(log)
    }
}

macro_rules! checks {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(broker) = Tansu::start_or_skip() else { return };
                let factory = KafkaFactory::new(&broker);
                if let Err(e) = conformance::$name(&factory).await {
                    panic!("{e}\n--- tansu log ---\n{}", broker.log());
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
    let Some(broker) = Tansu::start_or_skip() else {
        return;
    };
    if let Err(failures) = conformance::run_all(&KafkaFactory::new(&broker)).await {
        panic!("{failures}");
    }
}
