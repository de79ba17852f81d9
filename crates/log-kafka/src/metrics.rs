//! The producer queue depth of Kafka logs, sampled when `/metrics` is
//! scraped: `tributary_log_producer_queue_messages{topic}`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::KafkaLog;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabel {
    topic: String,
}

/// A gauge over the producers of every [`KafkaLog`] it
/// [watches](Self::watch): the messages each holds that the brokers have
/// not acknowledged yet ([`KafkaLog::producer_queue_messages`]), summed by
/// topic and read at scrape time, so the value is never stale.
///
/// It holds the logs weakly: a log that is dropped leaves the gauge. With no
/// live log (a process on the embedded log) nothing is exported. Cheap to
/// clone (shared): one instance per process, registered once, watching
/// every log the process connects.
#[derive(Clone, Debug, Default)]
pub struct ProducerQueueMetrics {
    logs: Arc<Mutex<Vec<Weak<KafkaLog>>>>,
}

impl ProducerQueueMetrics {
    /// Registers the gauge as `tributary_log_producer_queue_messages`.
    /// Register one instance once per registry: two would export the metric
    /// twice.
    pub fn register(&self, registry: &mut Registry) {
        registry
            .sub_registry_with_prefix("tributary_log")
            .register_collector(Box::new(self.clone()));
    }

    /// Adds `log`'s producer to the gauge (until the log is dropped).
    pub fn watch(&self, log: &Arc<KafkaLog>) {
        let mut logs = self.logs.lock().unwrap_or_else(PoisonError::into_inner);
        // Logs are connected at start-up; forgetting the dropped ones keeps
        // the list at the number of live logs anyway.
        logs.retain(|l| l.strong_count() > 0);
        logs.push(Arc::downgrade(log));
    }

    /// The current depth by topic (what a scrape shows).
    pub fn sample(&self) -> BTreeMap<String, u64> {
        let logs: Vec<Arc<KafkaLog>> = {
            let logs = self.logs.lock().unwrap_or_else(PoisonError::into_inner);
            logs.iter().filter_map(Weak::upgrade).collect()
        };
        let mut depth = BTreeMap::new();
        for log in logs {
            *depth.entry(log.config.topic.clone()).or_default() += log.producer_queue_messages();
        }
        depth
    }
}

impl Collector for ProducerQueueMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let depth = self.sample();
        if depth.is_empty() {
            return Ok(());
        }
        let mut family = encoder.encode_descriptor(
            "producer_queue_messages",
            "Messages in the Kafka producer queue not yet acknowledged by the brokers \
             (queued, in flight, or with their delivery report not yet handled), by topic",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (topic, messages) in depth {
            let gauge = ConstGauge::new(i64::try_from(messages).unwrap_or(i64::MAX));
            gauge.encode(family.encode_family(&TopicLabel { topic })?)?;
        }
        Ok(())
    }
}
