//! Alerts to tenant applications over MQTT.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tributary_log::{ConsumerOptions, Log, LogError, StartFrom};
use tributary_proto::v1 as pb;

/// The consumer group of MQTT delivery on the alerts log, in standalone.
/// Each ingest replica of a distributed deployment holds its own
/// applications' connections, so it reads every transition in a group of
/// its own, [`replica_group`].
pub const GROUP: &str = "tributary-alerts-mqtt";

/// The consumer group of the ingest replica `frontend_id`.
pub fn replica_group(frontend_id: &str) -> String {
    format!("{GROUP}-{frontend_id}")
}
/// Transitions taken per poll.
const POLL: usize = 512;

/// Publishes within a tenant as the platform: every matching subscription
/// of the tenant's sessions gets the message (queued for a persistent
/// session that is offline).
pub trait Publisher: Send + Sync + Debug {
    /// Publishes `payload` on `topic` at QoS 1 within `tenant`; the number
    /// of sessions reached, or why it could not (shutting down).
    fn publish(&self, tenant: &str, topic: String, payload: Bytes) -> Result<usize, String>;
}

/// The topic of a transition: `alerts/{rule}/{device}`. Rule names and
/// device ids are single topic levels (neither may hold `/`, `+` or `#`).
pub fn topic(e: &pb::AlertEvent) -> String {
    format!("alerts/{}/{}", e.rule, e.device)
}

/// Where a delivery reads the alerts log.
#[derive(Debug, Clone)]
pub struct Position {
    /// The consumer group it commits in.
    pub group: String,
    /// Where a group with no commit yet starts.
    pub start: StartFrom,
    /// Transitions appended before this time (ms since the epoch) are
    /// skipped: an ingest replica delivers those appended while it runs.
    /// 0 skips none.
    pub not_before_ms: i64,
}

impl Position {
    /// Standalone's: every transition, once, across restarts.
    pub fn standalone() -> Self {
        Self {
            group: GROUP.to_owned(),
            start: StartFrom::Earliest,
            not_before_ms: 0,
        }
    }

    /// An ingest replica's: in a group of its own (every replica holds its
    /// own applications' connections, so every replica reads every
    /// transition), those appended since `started_ms`. Its MQTT sessions
    /// live in its memory and do not outlive it, so transitions appended
    /// while it was down have no session here to go to.
    pub fn replica(frontend_id: &str, started_ms: i64) -> Self {
        Self {
            group: replica_group(frontend_id),
            start: StartFrom::Earliest,
            not_before_ms: started_ms,
        }
    }
}

/// Delivers every transition of `alerts` to `publisher` until `stop`,
/// committing in the position's group after each batch is handed over. A transition that does not
/// decode is skipped (it was not written by a processor). Returns when the
/// publisher refuses (the server is shutting down: the uncommitted batch is
/// delivered again by the next start) or on a log error.
pub async fn deliver(
    alerts: Arc<dyn Log>,
    publisher: Arc<dyn Publisher>,
    (from, metrics): (Position, crate::DeliveryMetrics),
    stop: impl Future<Output = ()>,
) -> Result<(), LogError> {
    let mut consumer = alerts
        .consumer(ConsumerOptions {
            group: Some(from.group),
            start: from.start,
        })
        .await?;
    tokio::pin!(stop);
    loop {
        let records = tokio::select! {
            () = &mut stop => return Ok(()),
            r = consumer.poll(POLL, Duration::from_millis(200)) => r?,
        };
        if records.is_empty() {
            continue;
        }
        let mut offsets = std::collections::BTreeMap::new();
        for r in &records {
            offsets.insert(r.partition, r.offset + 1);
            if r.timestamp_ms < from.not_before_ms {
                continue;
            }
            let Ok(e) = pb::AlertEvent::decode(r.value.as_ref()) else {
                tracing::warn!(
                    partition = r.partition,
                    offset = r.offset,
                    "alerts log: a record that is not an AlertEvent, skipped"
                );
                continue;
            };
            if crate::silenced(&e) {
                metrics.count("mqtt", "silenced");
                continue;
            }
            let payload = Bytes::from(crate::event_json(&e).to_string());
            if let Err(why) = publisher.publish(&e.tenant, topic(&e), payload) {
                tracing::info!(reason = %why, "alert delivery over MQTT stops; undelivered transitions go out at the next start");
                return Ok(());
            }
            metrics.count("mqtt", "delivered");
        }
        let offsets: Vec<(u32, u64)> = offsets.into_iter().collect();
        if let Err(e) = consumer.commit(&offsets).await {
            tracing::warn!(error = %e, "alerts over MQTT: commit failed; the batch may be delivered again");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tributary_log::Record;
    use tributary_log::embedded::{EmbeddedLog, EmbeddedLogConfig};

    use super::*;

    /// Keeps what it is given; refuses after `refuse_after` publishes.
    #[derive(Debug, Default)]
    struct Keep {
        got: Mutex<Vec<(String, String, serde_json::Value)>>,
        refuse_after: Option<usize>,
    }

    impl Publisher for Keep {
        fn publish(&self, tenant: &str, topic: String, payload: Bytes) -> Result<usize, String> {
            let mut got = self.got.lock().unwrap();
            if self.refuse_after.is_some_and(|n| got.len() >= n) {
                return Err("shutting down".into());
            }
            got.push((
                tenant.to_owned(),
                topic,
                serde_json::from_slice(&payload).unwrap(),
            ));
            Ok(1)
        }
    }

    fn event(device: &str, state: pb::AlertState) -> Record {
        let e = pb::AlertEvent {
            alert_id: format!("id-{device}"),
            tenant: "acme".into(),
            rule: "hot".into(),
            device: device.into(),
            metric: "temp".into(),
            state: state as i32,
            value: Some(1.5),
            ..Default::default()
        };
        Record {
            key: Bytes::from(format!("acme/{device}")),
            value: Bytes::from(e.encode_to_vec()),
            headers: Vec::new(),
            timestamp_ms: 0,
        }
    }

    #[tokio::test]
    async fn every_transition_goes_out_at_least_once_across_a_stop() {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn Log> = EmbeddedLog::open(
            dir.path().to_owned(),
            EmbeddedLogConfig::new("tributary.alerts.v1", 1),
        )
        .await
        .unwrap();
        log.append_batch(vec![
            event("d1", pb::AlertState::Firing),
            Record {
                value: Bytes::from_static(b"not an event"),
                ..event("x", pb::AlertState::Firing)
            },
            event("d2", pb::AlertState::Firing),
            event("d1", pb::AlertState::Resolved),
        ])
        .await
        .unwrap();
        // The server shuts down after one publish: nothing is committed.
        let first = Arc::new(Keep {
            refuse_after: Some(1),
            ..Keep::default()
        });
        deliver(
            log.clone(),
            first.clone(),
            (Position::standalone(), crate::DeliveryMetrics::default()),
            std::future::pending(),
        )
        .await
        .unwrap();
        assert_eq!(first.got.lock().unwrap().len(), 1);
        // The next start delivers the whole batch again, then stops when told.
        let second = Arc::new(Keep::default());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(deliver(
            log.clone(),
            second.clone(),
            (Position::standalone(), crate::DeliveryMetrics::default()),
            async move {
                let _ = stop_rx.await;
            },
        ));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while second.got.lock().unwrap().len() < 3 {
            assert!(std::time::Instant::now() < deadline, "not delivered");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop_tx.send(()).unwrap();
        run.await.unwrap().unwrap();
        let got = second.got.lock().unwrap().clone();
        let summary: Vec<(String, String, String)> = got
            .iter()
            .map(|(t, topic, v)| {
                (
                    t.clone(),
                    topic.clone(),
                    v["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("acme".into(), "alerts/hot/d1".into(), "firing".into()),
                ("acme".into(), "alerts/hot/d2".into(), "firing".into()),
                ("acme".into(), "alerts/hot/d1".into(), "resolved".into()),
            ]
        );
        assert_eq!(got[0].2["alert_id"], "id-d1");
        assert_eq!(got[0].2["value"], 1.5);
    }
}
